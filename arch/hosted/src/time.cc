// Hosted clock: the TSC, scaled to nanoseconds in CLOCK_MONOTONIC's time
// base. Reading it costs one rdtsc (12-19 ns on the VMs measured) instead
// of a vDSO clock_gettime (~30 ns); the scheduler reads it at timer
// interrupts, at the idle thread's switches, and at every switch while
// CPU-time accounting is on.
// The host must have an invariant TSC (constant_tsc + nonstop_tsc); without
// one we fall back to clock_gettime.
#include <cpuid.h>
#include <time.h>
#include <x86intrin.h>

#include <cstdint>

#include <arch/arch.h>

#include "hosted_internal.h"

namespace spindle::arch {
namespace {

bool g_use_tsc = false;
std::uint64_t g_tsc0 = 0;
std::uint64_t g_mono0 = 0;
// ns = mono0 + ((tsc - tsc0) * mult) >> 32
std::uint64_t g_mult = 0;

std::uint64_t mono_now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

bool invariant_tsc() {
  unsigned a, b, c, d;
  if (!__get_cpuid(0x80000007, &a, &b, &c, &d)) return false;
  return (d >> 8) & 1;
}

// One (monotonic, tsc) pair, taken where the clock_gettime was fastest, so
// the pairing error is a few ns.
void sample(std::uint64_t* mono, std::uint64_t* tsc) {
  std::uint64_t best = UINT64_MAX;
  for (int i = 0; i < 16; ++i) {
    std::uint64_t t0 = __rdtsc();
    std::uint64_t m = mono_now();
    std::uint64_t t1 = __rdtsc();
    if (t1 - t0 < best) {
      best = t1 - t0;
      *mono = m;
      *tsc = t0 + (t1 - t0) / 2;
    }
  }
}

}  // namespace

void hosted_calibrate_clock() {
  if (g_mult != 0 || !invariant_tsc()) return;
  std::uint64_t m0, t0, m1, t1;
  sample(&m0, &t0);
  while (mono_now() - m0 < 20'000'000) {
  }
  sample(&m1, &t1);
  if (t1 <= t0) return;
  unsigned __int128 mult = (static_cast<unsigned __int128>(m1 - m0) << 32) / (t1 - t0);
  g_mult = static_cast<std::uint64_t>(mult);
  g_tsc0 = t1;
  g_mono0 = m1;
  g_use_tsc = true;
}

// A spawned process takes its parent's calibration (same host, same
// invariant TSC) instead of spending 20 ms on its own.
ClockCalibration hosted_clock_calibration() { return {g_use_tsc ? g_mult : 0, g_tsc0, g_mono0}; }
void hosted_adopt_clock_calibration(const ClockCalibration& c) {
  if (c.mult == 0 || !invariant_tsc()) return;
  g_mult = c.mult;
  g_tsc0 = c.tsc0;
  g_mono0 = c.mono0;
  g_use_tsc = true;
}

std::uint64_t now_ns() {
  if (!g_use_tsc) return mono_now();
  std::uint64_t d = __rdtsc() - g_tsc0;
  return g_mono0 + static_cast<std::uint64_t>((static_cast<unsigned __int128>(d) * g_mult) >> 32);
}

std::uint64_t hosted_to_monotonic(std::uint64_t ns) { return ns; }

}  // namespace spindle::arch
