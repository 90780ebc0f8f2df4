// Sleeping locks with an owner: Mutex (priority inheritance), RecursiveMutex,
// FairMutex (strict FIFO hand-off) and PriorityMutex (most urgent waiter
// first, optional aging).
//
// All keep their state in one 32-bit word holding the owner's thread id
// (spindle/futex.h): an uncontended lock is one CAS and an uncontended
// unlock another, in the caller's memory; only contention enters the
// kernel. Each satisfies Lockable / TimedLockable, so std::scoped_lock,
// std::unique_lock and std::lock_guard work with them.
//
// Blocking acquisitions exist in two forms: the std ones (lock() returns
// nothing, try_lock_for/_until return bool) and Status ones (lock_for,
// lock_until) that say why a lock was not taken: kTimedOut, kDeadlock
// (waiting would close a cycle of lock waits; see spindle/diagnostics.h),
// or kOwnerDied (taken, but the previous owner exited holding it).
//
// Misuse panics naming the lock: unlocking a lock the caller does not hold,
// locking a non-recursive lock again from its holder (a self-deadlock),
// destroying a held lock. lock() also panics when cycle detection refuses
// the wait, since it cannot return kDeadlock.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <source_location>

#include "spindle/diagnostics.h"
#include "spindle/futex.h"
#include "spindle/task.h"
#include "spindle/thread.h"
#include "spindle/thread_annotations.h"
#include "spindle/time.h"

namespace spindle {

using Site = std::source_location;

namespace detail {

// Lock-order validator hooks (kernel/src/lockdep.cc), called only when
// kLockdep. acquire: check the order against every lock the caller holds
// and record it held; release: forget it held; forget: the lock is gone.
void lockdep_acquire(const void* lock, const char* name, const Site& site, bool trying);
void lockdep_release(const void* lock, const char* name);
void lockdep_forget(const void* lock);

// The shared body of the owner-word locks.
class SPINDLE_CAPABILITY("mutex") OwnerLock {
 public:
  OwnerLock(const OwnerLock&) = delete;
  OwnerLock& operator=(const OwnerLock&) = delete;

  void lock(const Site& site = Site::current()) SPINDLE_ACQUIRE() {
    if constexpr (kLockdep) lockdep_acquire(this, policy_.name, site, false);
    if (Status s = acquire(kForever); s != Status::kOk) [[unlikely]] lock_failed(s);
  }
  bool try_lock(const Site& site = Site::current()) SPINDLE_TRY_ACQUIRE(true);
  template <class R, class P>
  bool try_lock_for(const std::chrono::duration<R, P>& d, const Site& site = Site::current())
      SPINDLE_TRY_ACQUIRE(true) {
    return acquired(lock_until(deadline_after(std::chrono::duration_cast<Duration>(d)), site));
  }
  template <class C, class D>
  bool try_lock_until(const std::chrono::time_point<C, D>& t, const Site& site = Site::current())
      SPINDLE_TRY_ACQUIRE(true) {
    return acquired(lock_until(to_spindle_time(t), site));
  }
  // kOk or kOwnerDied: held. kTimedOut, kDeadlock, kNoMemory: not held.
  Status lock_for(Duration d, const Site& site = Site::current()) { return lock_until(deadline_after(d), site); }
  Status lock_until(TimePoint deadline, const Site& site = Site::current());
  void unlock() SPINDLE_RELEASE() {
    if constexpr (kLockdep) lockdep_release(this, policy_.name);
    release();
  }

  const char* name() const { return policy_.name; }
  // The holder's id, or 0. A snapshot: may change at once.
  ThreadId owner() const { return word_.load(std::memory_order_relaxed) & lock_word::kOwnerMask; }

  // From a coroutine: `auto g = co_await m.lock_async();` suspends the
  // coroutine (not its executor) until it owns the lock, queued among
  // threads in the lock's order, and returns a guard that unlocks. The
  // owner is the coroutine's job (it may resume on another executor), so
  // a thread or another job that unlocks it is refused. A job waiting is
  // always handed the lock on unlock. A job owner takes no part in
  // priority inheritance or cycle detection, and the lock-order validator
  // does not see it.
  class AsyncGuard;
  class LockAwaiter;
  LockAwaiter lock_async_until(TimePoint deadline);
  LockAwaiter lock_async();
  LockAwaiter lock_async_for(Duration d);

 protected:
  constexpr OwnerLock(const char* kind, const LockPolicy& p, bool spin) : kind_(kind), policy_(p), spin_(spin) {}
  ~OwnerLock();
  static bool acquired(Status s) { return s == Status::kOk || s == Status::kOwnerDied; }
  bool held_by_caller() const {
    return (word_.load(std::memory_order_relaxed) & lock_word::kOwnerMask) == current_thread_id();
  }
  // The word protocol alone, without lockdep (callers add it).
  Status acquire(TimePoint deadline) {
    auto me = static_cast<std::uint32_t>(current_thread_id());
    std::uint32_t v = 0;
    if (word_.compare_exchange_strong(v, me, std::memory_order_acquire, std::memory_order_relaxed)) [[likely]] {
      return Status::kOk;
    }
    return acquire_slow(me, deadline);
  }
  void release() {
    auto me = static_cast<std::uint32_t>(current_thread_id());
    std::uint32_t v = me;
    if (word_.compare_exchange_strong(v, 0, std::memory_order_release, std::memory_order_relaxed)) [[likely]] {
      return;
    }
    release_slow(me, v);
  }
  // lock() could not take it: kOwnerDied is accepted, the rest panic.
  void lock_failed(Status s);
  // Unlock for a job owner (AsyncGuard).
  void release_as(ThreadId owner) {
    std::uint32_t v = static_cast<std::uint32_t>(owner);
    if (word_.compare_exchange_strong(v, 0, std::memory_order_release, std::memory_order_relaxed)) return;
    release_as_slow(owner);
  }

 private:
  void release_as_slow(ThreadId owner);
  Status acquire_slow(std::uint32_t me, TimePoint deadline);
  void release_slow(std::uint32_t me, std::uint32_t v);

  std::atomic<std::uint32_t> word_{0};
  const char* kind_;  // "mutex", "fair mutex", ... for reports
  LockPolicy policy_;
  bool spin_;  // spin briefly before sleeping (and barge on a free lock)
};

// Owns an OwnerLock for a coroutine job (see lock_async).
class OwnerLock::AsyncGuard {
 public:
  AsyncGuard() = default;
  AsyncGuard(OwnerLock* l, ThreadId owner, Status s) : l_(l), owner_(owner), status_(s) {}
  AsyncGuard(AsyncGuard&& o) noexcept
      : l_(std::exchange(o.l_, nullptr)), owner_(std::exchange(o.owner_, 0)), status_(o.status_) {}
  AsyncGuard& operator=(AsyncGuard&& o) noexcept {
    if (this != &o) {
      unlock();
      l_ = std::exchange(o.l_, nullptr);
      owner_ = std::exchange(o.owner_, 0);
      status_ = o.status_;
    }
    return *this;
  }
  ~AsyncGuard() { unlock(); }

  bool owns_lock() const { return l_ != nullptr; }
  explicit operator bool() const { return owns_lock(); }
  // kOk; kOwnerDied (acquired, but its previous owner ended holding it);
  // kTimedOut or kDeadlock (not acquired).
  Status status() const { return status_; }
  void unlock() {
    if (l_) std::exchange(l_, nullptr)->release_as(owner_);
  }

 private:
  OwnerLock* l_ = nullptr;
  ThreadId owner_ = 0;
  Status status_ = Status::kInvalidState;
};

class OwnerLock::LockAwaiter {
 public:
  LockAwaiter(OwnerLock* l, TimePoint deadline) : l_(l), deadline_(deadline) {}
  bool await_ready() {
    id_ = job_lock_id();
    std::uint32_t v = 0;
    if (l_->word_.compare_exchange_strong(v, static_cast<std::uint32_t>(id_), std::memory_order_acquire,
                                          std::memory_order_relaxed)) {
      status_ = Status::kOk;
      return true;
    }
    return false;
  }
  bool await_suspend(std::coroutine_handle<> h) noexcept {
    status_ = kPending;
    return job_lock(h, &l_->word_, l_->policy_, deadline_, &status_);
  }
  AsyncGuard await_resume() {
    Status s = status_ == kPending ? job_wake_status() : status_;
    return acquired(s) ? AsyncGuard(l_, id_, s) : AsyncGuard(nullptr, 0, s);
  }

 private:
  OwnerLock* l_;
  TimePoint deadline_;
  ThreadId id_ = 0;
  Status status_ = kPending;
};

inline OwnerLock::LockAwaiter OwnerLock::lock_async_until(TimePoint deadline) { return LockAwaiter(this, deadline); }
inline OwnerLock::LockAwaiter OwnerLock::lock_async() { return LockAwaiter(this, kForever); }
inline OwnerLock::LockAwaiter OwnerLock::lock_async_for(Duration d) { return LockAwaiter(this, deadline_after(d)); }

}  // namespace detail

// The default lock: the most urgent waiter is woken first, and waiters lend
// their priority to the holder (priority inheritance, transitive along
// chains of locks, undone when a waiter leaves). An unlock wakes the top
// waiter to compete; a running thread may take the lock first (barging),
// which keeps contended throughput high. Spins briefly on multi-CPU systems.
class SPINDLE_CAPABILITY("mutex") Mutex : public detail::OwnerLock {
 public:
  explicit Mutex(const char* name = "mutex")
      : OwnerLock("mutex", {.order = WaitOrder::kPriority, .inherit = true, .handoff = false, .aging = 0, .name = name},
                  true) {}
};

// Served strictly in arrival order: an unlock hands the lock to the longest
// waiting thread, and nobody can take it in between. No priority
// inheritance (order is the point). Slower under contention than Mutex.
class SPINDLE_CAPABILITY("mutex") FairMutex : public detail::OwnerLock {
 public:
  explicit FairMutex(const char* name = "fair mutex")
      : OwnerLock("fair mutex", {.order = WaitOrder::kFifo, .inherit = false, .handoff = true, .aging = 0, .name = name},
                  false) {}
};

// An unlock hands the lock to the most urgent waiter (FIFO among equals).
// With aging_bound > 0, a waiter passed over that many hand-offs is served
// next whatever its priority, so no waiter starves.
class SPINDLE_CAPABILITY("mutex") PriorityMutex : public detail::OwnerLock {
 public:
  explicit PriorityMutex(const char* name = "priority mutex", std::uint32_t aging_bound = 0)
      : OwnerLock(
            "priority mutex", {.order = WaitOrder::kPriority, .inherit = false, .handoff = true, .aging = aging_bound, .name = name},
            false) {}
};

// A Mutex its holder may lock again; it is released when unlocked as many
// times as it was locked.
class SPINDLE_CAPABILITY("mutex") RecursiveMutex : private detail::OwnerLock {
 public:
  explicit RecursiveMutex(const char* name = "recursive mutex")
      : OwnerLock("recursive mutex", {.order = WaitOrder::kPriority, .inherit = true, .handoff = false, .aging = 0, .name = name},
                  true) {}

  void lock(const Site& site = Site::current()) SPINDLE_ACQUIRE();
  bool try_lock(const Site& site = Site::current()) SPINDLE_TRY_ACQUIRE(true);
  template <class R, class P>
  bool try_lock_for(const std::chrono::duration<R, P>& d, const Site& site = Site::current())
      SPINDLE_TRY_ACQUIRE(true) {
    return acquired(lock_until(deadline_after(std::chrono::duration_cast<Duration>(d)), site));
  }
  template <class C, class D>
  bool try_lock_until(const std::chrono::time_point<C, D>& t, const Site& site = Site::current())
      SPINDLE_TRY_ACQUIRE(true) {
    return acquired(lock_until(to_spindle_time(t), site));
  }
  Status lock_for(Duration d, const Site& site = Site::current()) { return lock_until(deadline_after(d), site); }
  Status lock_until(TimePoint deadline, const Site& site = Site::current());
  void unlock() SPINDLE_RELEASE();

  using OwnerLock::name;
  using OwnerLock::owner;
  // How many times the holder has locked it (0 when free). Snapshot.
  unsigned depth() const { return depth_; }

 private:
  unsigned depth_ = 0;  // written by the holder only
};

// A scoped lock for any BasicLockable. Unlike std::scoped_lock it needs no
// <mutex> (bare metal), and it passes its own call site on to Spindle
// locks, so lock-order reports name the line of the Guard rather than a
// line inside a standard header.
template <class L>
class SPINDLE_SCOPED_CAPABILITY Guard {
 public:
  explicit Guard(L& l, const Site& site = Site::current()) SPINDLE_ACQUIRE(l) : l_(l) {
    if constexpr (requires { l.lock(site); }) {
      l_.lock(site);
    } else {
      l_.lock();
    }
  }
  ~Guard() SPINDLE_RELEASE() { l_.unlock(); }
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;

 private:
  L& l_;
};

}  // namespace spindle
