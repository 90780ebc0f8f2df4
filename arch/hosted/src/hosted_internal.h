// Private to the hosted backend.
#pragma once

#include <cstdint>

namespace spindle::arch {

inline constexpr unsigned kMaxVcpus = 64;

void hosted_set_cpu_count(unsigned n);

// Whether the calling host thread is a vCPU. A host-thread property, not a
// per-vCPU one, so a thread_local is right even across migrations.
bool hosted_is_vcpu();
void hosted_mark_vcpu();
void hosted_unmark_vcpu();

// Clock: calibrated once per process; now_ns() is in CLOCK_MONOTONIC's time
// base (up to the calibration error, a few ppm).
void hosted_calibrate_clock();
std::uint64_t hosted_to_monotonic(std::uint64_t ns);

}  // namespace spindle::arch
