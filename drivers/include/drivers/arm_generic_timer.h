// ARM generic timer, EL1 virtual view (CNTV): the counter and this CPU's
// one-shot compare timer. All register accesses are CPU-local.
#pragma once

#include <cstdint>

namespace spindle::drivers::arm_timer {

inline std::uint64_t frequency() {
  std::uint64_t v;
  asm volatile("mrs %0, cntfrq_el0" : "=r"(v));
  return v;
}

// The isb keeps the read from being taken early (before preceding
// instructions), so a time read is ordered after what the caller did.
inline std::uint64_t count() {
  std::uint64_t v;
  asm volatile("isb\n\tmrs %0, cntvct_el0" : "=r"(v)::"memory");
  return v;
}

// Fires (level, PPI 27) once the counter reaches cval, until re-armed or
// masked.
inline void arm_at(std::uint64_t cval) {
  asm volatile("msr cntv_cval_el0, %0\n\tmsr cntv_ctl_el0, %1\n\tisb" ::"r"(cval), "r"(std::uint64_t{1}) : "memory");
}

// Enabled but masked: the line drops, nothing fires until the next arm_at.
inline void mask() { asm volatile("msr cntv_ctl_el0, %0\n\tisb" ::"r"(std::uint64_t{3}) : "memory"); }

inline void disable() { asm volatile("msr cntv_ctl_el0, xzr\n\tisb" ::: "memory"); }

}  // namespace spindle::drivers::arm_timer
