// Helpers of the process and channel cases (tests/qemu): the virtual
// counter (run_to_end is in ../kernel/ktest_util.h).
#pragma once

#include <spindle/spindle.h>

#include <cstdint>

#include "../kernel/ktest.h"
#include "../kernel/ktest_util.h"  // run_to_end

namespace spindle::ktest {

// The virtual counter (EL0 may read it): a tick is 16 ns of virtual time,
// 16 instructions under -icount shift=0.
inline std::uint64_t ticks() {
  std::uint64_t v;
  asm volatile("isb\n\tmrs %0, cntvct_el0" : "=r"(v));
  return v;
}

}  // namespace spindle::ktest
