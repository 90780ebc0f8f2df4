// The console: the PL011 UART, written synchronously (polled). The kernel
// serialises writers (kernel/src/console.cc); this layer takes no lock.
#include "aarch64.h"
#include "drivers/pl011.h"

namespace spindle::arch {
namespace {
constinit drivers::Pl011 g_uart{kKernelOffset + kPl011Base};
}  // namespace

void console_init() { g_uart.init(); }

void console_write(const char* s, std::size_t n) { g_uart.write(s, n); }

void console_put_raw(const char* s) {
  while (*s) g_uart.put(*s++);
}

}  // namespace spindle::arch
