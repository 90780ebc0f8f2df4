// Deadlock and starvation tooling. Each part is a build option (CMake:
// SPINDLE_LOCKDEP, SPINDLE_DEADLOCK_DETECT, SPINDLE_WATCHDOG); compiled out
// it costs nothing, and its setting calls return Status::kInvalidState.
//
//  - Lock-order validator (lockdep): learns "A is taken before B" from
//    every lock acquisition (all lock types) and prints a report the first
//    time an acquisition could close a cycle of such orders, naming both
//    locks and both acquisition sites, whether or not a deadlock happened.
//    Uncontended locks pay for it (a per-thread held-lock stack); off by
//    default in the release preset, on in hosted-debug and hosted-tsan.
//  - Wait-for cycle detection: when a thread is about to block on an
//    owner-aware lock (Mutex, RecursiveMutex, FairMutex, PriorityMutex),
//    the kernel follows owner -> the lock that owner
//    waits for -> its owner ...; reaching the caller means the wait would
//    never end: the call returns Status::kDeadlock (lock() panics, having
//    no way to return it) and a report names every thread and lock in the
//    cycle. Only the blocking path pays. On by default.
//  - Starvation watchdog: a thread blocked on a sync object longer than the
//    bound is reported (once per wait) with the object and, for locks, the
//    owner. Off until set_starvation_bound() is called.
#pragma once

#include <cstdint>

#include "spindle/status.h"
#include "spindle/time.h"

#ifndef SPINDLE_LOCKDEP
#define SPINDLE_LOCKDEP 0
#endif
#ifndef SPINDLE_DEADLOCK_DETECT
#define SPINDLE_DEADLOCK_DETECT 1
#endif
#ifndef SPINDLE_WATCHDOG
#define SPINDLE_WATCHDOG 1
#endif

namespace spindle {

inline constexpr bool kLockdep = SPINDLE_LOCKDEP != 0;
inline constexpr bool kDeadlockDetection = SPINDLE_DEADLOCK_DETECT != 0;
inline constexpr bool kWatchdog = SPINDLE_WATCHDOG != 0;

// Starvation watchdog bound; zero turns it off. kInvalidArgument for a
// negative bound, kInvalidState when built without the watchdog.
Status set_starvation_bound(Duration bound);
// Reports the watchdog printed since boot.
std::uint64_t starvation_reports();

// Cycle detection on (default) or off at run time.
Status set_deadlock_detection(bool on);
// Cycles found (and refused with kDeadlock) since boot.
std::uint64_t deadlocks_detected();

// Inversions the lock-order validator reported since boot (0 when built
// without it).
std::uint64_t lock_order_reports();

}  // namespace spindle
