// Monotonic time and the per-CPU one-shot: the ARM generic timer's virtual
// counter and CNTV compare timer (PPI 27). Tickless: the timer is armed for
// the kernel's next deadline only.
#include <atomic>

#include "aarch64.h"
#include "drivers/arm_generic_timer.h"

namespace spindle::arch {
namespace {
constexpr std::uint64_t kNsPerSec = 1'000'000'000;
std::uint64_t g_freq = 1;
// ns = (ticks * g_ns_mult) >> 32, a 128-bit product: no overflow for the
// counter's whole range. Exact when the frequency divides 1 GHz (QEMU:
// 62.5 MHz, i.e. 16 ns per tick). 0 until computed: at boot in the kernel,
// at the first now_ns in a process's copy (which starts with the image's
// initial values; EL0 may read CNTFRQ and the virtual counter, so its
// clock needs no system call). Threads of a process may compute it at
// once: they store the same value.
std::atomic<std::uint64_t> g_ns_mult{0};

std::uint64_t frequency() {
  std::uint64_t freq = drivers::arm_timer::frequency();
  return freq != 0 ? freq : 62'500'000;  // firmware left CNTFRQ unset
}
std::uint64_t ns_mult(std::uint64_t freq) { return (kNsPerSec << 32) / freq; }
}  // namespace

void time_init() {
  g_freq = frequency();
  g_ns_mult.store(ns_mult(g_freq), std::memory_order_relaxed);
  drivers::arm_timer::mask();
}

std::uint64_t now_ns() {
  std::uint64_t ticks = drivers::arm_timer::count();
  std::uint64_t mult = g_ns_mult.load(std::memory_order_relaxed);
  if (mult == 0) [[unlikely]] {
    mult = ns_mult(frequency());
    g_ns_mult.store(mult, std::memory_order_relaxed);
  }
  return static_cast<std::uint64_t>((static_cast<unsigned __int128>(ticks) * mult) >> 32);
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
