// Console output: one formatted call is written as one unit. Console
// input: readers one at a time, through a small buffer.
#include <atomic>

#include <arch/arch.h>

#include "spindle/console.h"
#include "spindle/mutex.h"
#include "user.h"

namespace spindle {
namespace {

// Serialises writers so lines do not interleave. Interrupts are masked
// while held so a preempted writer can never block the others.
std::atomic<bool> g_console_busy{false};

struct ConsoleGuard {
  arch::IrqState saved;
  bool owned = false;
  ConsoleGuard() : saved(arch::irq_save()) {
    // Bounded spin: a panic inside a print must still get its report out.
    for (unsigned i = 0; i < (1u << 26); ++i) {
      if (!g_console_busy.exchange(true, std::memory_order_acquire)) {
        owned = true;
        return;
      }
      while (g_console_busy.load(std::memory_order_relaxed) && ++i < (1u << 26)) arch::cpu_relax();
    }
  }
  ~ConsoleGuard() {
    if (owned) g_console_busy.store(false, std::memory_order_release);
    arch::irq_restore(saved);
  }
};

// Input. g_reader serialises readers and guards the buffer: bytes the
// backend delivered that no reader has taken yet ([g_in_pos, g_in_len)),
// whether the last line ended with '\r' (its '\n' is still due), and an
// end of input that ended a line and is still to be reported (the UART's
// Ctrl-D is a one-time event, unlike the end of stdin). Only the reader
// holding g_reader calls arch::console_read. g_reader is never destroyed:
// static destructors run after the kernel has stopped (or in a process
// that never booted one), where a Mutex's destructor may not run.
alignas(Mutex) unsigned char g_reader_storage[sizeof(Mutex)];
Mutex& g_reader = *new (g_reader_storage) Mutex("console input");
char g_in[256];
std::size_t g_in_pos = 0;
std::size_t g_in_len = 0;
bool g_after_cr = false;
bool g_end_due = false;

// Input from the backend; in a process, the kernel's console_read (through
// which all processes' readers are served one at a time).
std::size_t backend_read(char* buf, std::size_t n) {
  if (kernel::in_user_process()) {
    std::uint64_t r = kernel::sys(kernel::kSysRead, kernel::user_arg(buf), n);
    return r > n ? 0 : static_cast<std::size_t>(r);
  }
  return arch::console_read(buf, n);
}

// Holds g_reader unless the wait for it was refused: a reader whose process
// is ending (its waits return kInterrupted, kernel/src/uprocess.cc) gives
// up and reads nothing.
class SPINDLE_SCOPED_CAPABILITY ReaderLock {
 public:
  ReaderLock() SPINDLE_ACQUIRE(g_reader) {
    Status s = g_reader.lock_until(kForever);
    held_ = s == Status::kOk || s == Status::kOwnerDied;
  }
  ~ReaderLock() SPINDLE_RELEASE() {
    if (held_) g_reader.unlock();
  }
  bool held() const { return held_; }

 private:
  bool held_;
};

// The next input byte, or -1 at the end of input. g_reader held.
int next_byte() {
  if (g_end_due) {
    g_end_due = false;
    return -1;
  }
  if (g_in_pos == g_in_len) {
    g_in_pos = 0;
    g_in_len = backend_read(g_in, sizeof g_in);
    if (g_in_len == 0) return -1;
  }
  return static_cast<unsigned char>(g_in[g_in_pos++]);
}

}  // namespace

std::size_t console_read(char* buf, std::size_t n) {
  ReaderLock l;
  if (n == 0 || !l.held()) return 0;
  if (g_end_due) {
    g_end_due = false;
    return 0;
  }
  if (g_in_pos == g_in_len) {
    // Nothing buffered: straight from the backend.
    g_after_cr = false;
    return backend_read(buf, n);
  }
  std::size_t k = 0;
  for (; k < n && g_in_pos < g_in_len; ++k) buf[k] = g_in[g_in_pos++];
  g_after_cr = false;
  return k;
}

long read_line(char* buf, std::size_t n) {
  ReaderLock l;
  if (n == 0 || !l.held()) return -1;
  std::size_t len = 0;
  bool any = false;
  for (;;) {
    int c = next_byte();
    if (c < 0) {
      g_end_due = any;  // this line first; the end at the next call
      break;
    }
    if (c == '\n' && g_after_cr && !any) {
      g_after_cr = false;  // the second half of "\r\n"
      continue;
    }
    any = true;
    g_after_cr = c == '\r';
    if (c == '\n' || c == '\r') break;
    if (len + 1 < n) buf[len++] = static_cast<char>(c);
  }
  buf[len] = '\0';
  return any ? static_cast<long>(len) : -1;
}

void write(const char* s, std::size_t n) {
  if (kernel::in_user_process()) {
    (void)kernel::sys(kernel::kSysWrite, kernel::user_arg(s), n);
    return;
  }
  ConsoleGuard g;
  arch::console_write(s, n);
}

void vprint(const char* fmt, va_list ap) {
  char buf[512];
  va_list copy;
  va_copy(copy, ap);
  int n = vformat(buf, sizeof buf, fmt, ap);
  if (n >= 0 && static_cast<std::size_t>(n) < sizeof buf) {
    write(buf, static_cast<std::size_t>(n));
  } else {
    // Too long for the stack buffer: format in pieces under one guard by
    // formatting into a larger scratch buffer, truncating beyond it.
    char big[4096];
    int m = vformat(big, sizeof big, fmt, copy);
    std::size_t len = m < 0 ? 0 : (static_cast<std::size_t>(m) < sizeof big ? static_cast<std::size_t>(m) : sizeof big - 1);
    write(big, len);
  }
  va_end(copy);
}

void print(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprint(fmt, ap);
  va_end(ap);
}

}  // namespace spindle
