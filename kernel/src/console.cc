// Console output: one formatted call is written as one unit.
#include <atomic>

#include <arch/arch.h>

#include "spindle/console.h"

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

}  // namespace

void write(const char* s, std::size_t n) {
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
