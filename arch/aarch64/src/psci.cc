// PSCI calls. The conduit follows from the EL QEMU entered us at: at EL1
// the firmware interface is at EL2 (hvc); entered at EL2 (virtualization=on)
// we dropped to EL1 ourselves and QEMU's PSCI sits at EL3 (smc).
#include "aarch64.h"

namespace spindle::arch::psci {

std::int64_t call(std::uint64_t fn, std::uint64_t a1, std::uint64_t a2, std::uint64_t a3) {
  register std::uint64_t x0 asm("x0") = fn;
  register std::uint64_t x1 asm("x1") = a1;
  register std::uint64_t x2 asm("x2") = a2;
  register std::uint64_t x3 asm("x3") = a3;
  // SMCCC 1.0 allows x4..x17 to come back changed.
  if (spindle_boot_el == 2) {
    asm volatile("smc #0"
                 : "+r"(x0), "+r"(x1), "+r"(x2), "+r"(x3)
                 :
                 : "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13", "x14", "x15", "x16", "x17",
                   "memory");
  } else {
    asm volatile("hvc #0"
                 : "+r"(x0), "+r"(x1), "+r"(x2), "+r"(x3)
                 :
                 : "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13", "x14", "x15", "x16", "x17",
                   "memory");
  }
  return static_cast<std::int64_t>(x0);
}

}  // namespace spindle::arch::psci
