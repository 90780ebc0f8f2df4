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

// Polls pred() every millisecond until it holds or `patience` has passed;
// returns pred(). For checks like "the job is parked by now": without
// -icount the vCPUs are host threads, and a fixed sleep says nothing about
// how far another CPU got (a 5 ms sleep was not always enough).
template <typename P>
bool settles(P&& pred, Duration patience = std::chrono::seconds(5)) {
  TimePoint end = deadline_after(patience);
  while (!pred()) {
    if (Clock::now() >= end) return pred();
    this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace spindle::ktest
