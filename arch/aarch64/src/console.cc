// The console: the PL011 UART. Output is written synchronously (polled);
// the kernel serialises writers (kernel/src/console.cc), this layer takes
// no lock.
//
// Input is interrupt-driven. The receive interrupt (SPI, routed to CPU 0)
// drains the UART's FIFO into g_rx, a single-producer single-consumer ring:
// the handler produces (one CPU, interrupts masked), and the one reader the
// kernel admits at a time consumes. A reader that finds the ring empty
// leaves an ExternalWake in g_rx_waiter and blocks its thread on it; the
// handler, after adding bytes, takes the waiter out (an exchange: exactly
// one side owns it) and posts it. Bytes that find the ring full are
// dropped and counted.
#include <atomic>

#include "aarch64.h"
#include "drivers/pl011.h"
#include "spindle/futex.h"

namespace spindle::arch {
namespace {
constinit drivers::Pl011 g_uart{kKernelOffset + kPl011Base};

constexpr std::uint32_t kRxSize = 1024;  // a power of two: indices wrap modulo 2^32
constexpr char kEndOfInput = 0x04;       // Ctrl-D
char g_rx[kRxSize];
std::atomic<std::uint32_t> g_rx_head{0};  // next byte to write: the handler's
std::atomic<std::uint32_t> g_rx_tail{0};  // next byte to read: the reader's
std::atomic<std::uint32_t> g_rx_dropped{0};
std::atomic<kernel::ExternalWake*> g_rx_waiter{nullptr};
}  // namespace

void console_init() { g_uart.init(); }

void console_enable_input() {
  g_uart.enable_rx_interrupt();
  console_rx_interrupt();  // bytes that came before the interrupt was on
}

void console_write(const char* s, std::size_t n) { g_uart.write(s, n); }

void console_put_raw(const char* s) {
  while (*s) g_uart.put(*s++);
}

// Interrupt handler (or boot), interrupts masked.
void console_rx_interrupt() {
  std::uint32_t head = g_rx_head.load(std::memory_order_relaxed);
  g_uart.clear_rx();  // first (pl011.h)
  for (int c; (c = g_uart.get()) >= 0;) {
    if (head - g_rx_tail.load(std::memory_order_acquire) == kRxSize) {
      g_rx_dropped.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    g_rx[head % kRxSize] = static_cast<char>(c);
    ++head;
  }
  // seq_cst store, then seq_cst exchange: ordered against the reader's
  // store of its waiter and reload of head (console_read), so either the
  // reader sees the bytes or this sees the waiter.
  g_rx_head.store(head, std::memory_order_seq_cst);
  if (kernel::ExternalWake* w = g_rx_waiter.exchange(nullptr, std::memory_order_seq_cst)) kernel::post_external_wake(w);
}

std::size_t console_read(char* buf, std::size_t n) {
  for (;;) {
    std::uint32_t tail = g_rx_tail.load(std::memory_order_relaxed);
    std::uint32_t head = g_rx_head.load(std::memory_order_acquire);
    if (head != tail) {
      std::size_t k = 0;
      while (k < n && tail != head) {
        char c = g_rx[tail % kRxSize];
        if (c == kEndOfInput) {
          if (k == 0) ++tail;  // reported now; a later one stays for the next read
          break;
        }
        buf[k++] = c;
        ++tail;
      }
      g_rx_tail.store(tail, std::memory_order_release);
      return k;
    }
    kernel::ExternalWake ev;
    g_rx_waiter.store(&ev, std::memory_order_seq_cst);
    if (g_rx_head.load(std::memory_order_seq_cst) != tail) {
      // Bytes came in between: withdraw the waiter, unless the handler has
      // already taken it (then its post is on the way and ev must live
      // until it lands).
      if (g_rx_waiter.exchange(nullptr, std::memory_order_seq_cst) == &ev) continue;
    }
    while (ev.word.load(std::memory_order_acquire) == 0) {
      if (futex_wait(&ev.word, 0) != Status::kInterrupted) continue;
      // The reader's process is ending (its waits no longer block): give
      // up, unless the handler has already taken the waiter (then its
      // post is on the way, and ev must live until it lands).
      if (g_rx_waiter.exchange(nullptr, std::memory_order_seq_cst) == &ev) return 0;
      while (ev.word.load(std::memory_order_acquire) == 0) cpu_relax();
    }
  }
}

}  // namespace spindle::arch
