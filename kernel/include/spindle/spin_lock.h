// SpinLock: a ticket lock for very short critical sections. Waiters are
// served in the order they arrived, whatever CPU they run on, so no CPU
// starves. It never sleeps: a waiter burns its CPU until served, and when
// the lock has not changed hands for 16 pauses it yields, so that
// a preempted holder, or a preempted waiter whose turn has come, of equal
// priority gets to run (with more spinning threads than CPUs, every later
// ticket waits for that one).
// Prefer Mutex unless the section is a handful of instructions.
//
// There is no timed variant: a ticket, once drawn, cannot be given back
// without stalling every later waiter. try_lock draws one only when the
// lock is free.
#pragma once

#include <atomic>
#include <cstdint>

#include "spindle/mutex.h"

namespace spindle {

class SPINDLE_CAPABILITY("spin lock") SpinLock {
 public:
  explicit SpinLock(const char* name = "spin lock") : name_(name) {}
  SpinLock(const SpinLock&) = delete;
  SpinLock& operator=(const SpinLock&) = delete;
  ~SpinLock();

  void lock(const Site& site = Site::current()) SPINDLE_ACQUIRE();
  bool try_lock(const Site& site = Site::current()) SPINDLE_TRY_ACQUIRE(true);
  void unlock() SPINDLE_RELEASE();

  const char* name() const { return name_; }
  ThreadId owner() const { return owner_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint32_t> next_{0};
  std::atomic<std::uint32_t> serving_{0};
  std::atomic<ThreadId> owner_{0};
  const char* name_;
};

}  // namespace spindle
