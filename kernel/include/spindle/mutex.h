// Mutex: a sleeping lock. Uncontended lock+unlock is two atomic operations
// in the caller's memory; a contended lock waits in the kernel, most urgent
// waiter first. Satisfies BasicLockable / Lockable / TimedLockable, so
// std::scoped_lock, std::unique_lock and std::lock_guard work with it.
//
// Misuse panics with the mutex's name: unlocking a mutex the caller does not
// hold, locking it again from the thread that holds it (a self-deadlock),
// destroying it while held.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "spindle/thread.h"
#include "spindle/thread_annotations.h"
#include "spindle/time.h"

namespace spindle {

class SPINDLE_CAPABILITY("mutex") Mutex {
 public:
  constexpr explicit Mutex(const char* name = "mutex") : name_(name) {}
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;
  ~Mutex();

  // Blocks until the caller holds the mutex. Thread context only.
  void lock() SPINDLE_ACQUIRE();
  // Never blocks; true if the caller now holds the mutex.
  bool try_lock() SPINDLE_TRY_ACQUIRE(true);
  // Blocks until held or until the deadline; true if held.
  template <class C, class D>
  bool try_lock_until(const std::chrono::time_point<C, D>& t) SPINDLE_TRY_ACQUIRE(true) {
    return lock_until(to_spindle_time(t));
  }
  template <class R, class P>
  bool try_lock_for(const std::chrono::duration<R, P>& d) SPINDLE_TRY_ACQUIRE(true) {
    return lock_until(deadline_after(std::chrono::duration_cast<Duration>(d)));
  }
  // The caller must hold the mutex (else: panic naming it).
  void unlock() SPINDLE_RELEASE();

  const char* name() const { return name_; }
  // The holder's id, or 0. A snapshot: may change at once.
  ThreadId owner() const { return owner_.load(std::memory_order_relaxed); }

 private:
  bool lock_until(TimePoint deadline);
  bool lock_slow(ThreadId self, TimePoint deadline);

  // 0: free; 1: held; 2: held and maybe waited for.
  std::atomic<std::uint32_t> state_{0};
  std::atomic<ThreadId> owner_{0};
  const char* name_;
};

}  // namespace spindle
