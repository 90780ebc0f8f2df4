// Helpers of the process and channel cases (tests/qemu): running a
// process to its end, and the virtual counter.
#pragma once

#include <spindle/spindle.h>

#include <cstdint>

#include "../kernel/ktest.h"

namespace spindle::ktest {

// Joins a spawned process; a failed spawn or join is a test failure (and
// an empty ExitStatus).
inline ExitStatus run_to_end(Result<Process> p) {
  if (!p.ok()) {
    KFAIL("spawn failed: %s", to_string(p.status()));
    return {};
  }
  auto st = p->join();
  if (!st.ok()) {
    KFAIL("join failed: %s", to_string(st.status()));
    return {};
  }
  return *st;
}

// The virtual counter (EL0 may read it): a tick is 16 ns of virtual time,
// 16 instructions under -icount shift=0.
inline std::uint64_t ticks() {
  std::uint64_t v;
  asm volatile("isb\n\tmrs %0, cntvct_el0" : "=r"(v));
  return v;
}

}  // namespace spindle::ktest
