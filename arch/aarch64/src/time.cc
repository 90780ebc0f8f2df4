// Monotonic time and the per-CPU one-shot: the ARM generic timer's virtual
// counter and CNTV compare timer (PPI 27). Tickless: the timer is armed for
// the kernel's next deadline only.
#include "aarch64.h"
#include "drivers/arm_generic_timer.h"

namespace spindle::arch {
namespace {
constexpr std::uint64_t kNsPerSec = 1'000'000'000;
std::uint64_t g_freq = 1;
// ns = (ticks * g_ns_mult) >> 32, a 128-bit product: no overflow for the
// counter's whole range. Exact when the frequency divides 1 GHz (QEMU:
// 62.5 MHz, i.e. 16 ns per tick).
std::uint64_t g_ns_mult = 0;
}  // namespace

void time_init() {
  g_freq = drivers::arm_timer::frequency();
  if (g_freq == 0) g_freq = 62'500'000;  // firmware left CNTFRQ unset
  g_ns_mult = (kNsPerSec << 32) / g_freq;
  drivers::arm_timer::mask();
}

std::uint64_t now_ns() {
  std::uint64_t ticks = drivers::arm_timer::count();
  return static_cast<std::uint64_t>((static_cast<unsigned __int128>(ticks) * g_ns_mult) >> 32);
}

void set_timer(std::uint64_t deadline_ns) {
  // The first counter value at or after the deadline (rounding up), so the
  // interrupt is not early.
  std::uint64_t secs = deadline_ns / kNsPerSec;
  if (secs > UINT64_MAX / g_freq - 1) {
    drivers::arm_timer::mask();  // beyond the counter's range: never
    return;
  }
  std::uint64_t frac = deadline_ns % kNsPerSec;
  std::uint64_t cval = secs * g_freq + (frac * g_freq + kNsPerSec - 1) / kNsPerSec;
  drivers::arm_timer::arm_at(cval);
}

void timer_disarm_local() { drivers::arm_timer::mask(); }

}  // namespace spindle::arch
