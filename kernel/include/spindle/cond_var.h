// Condition variable that works with any lockable (Mutex, FairMutex,
// SpinLock, std::unique_lock<...>, ...). notify_one wakes the most urgent
// waiter (or the longest waiting with WaitOrder::kFifo), notify_all every
// waiter. Notifying with nobody waiting costs one atomic load.
//
// The wait is a sequence-count futex: a waiter records the count before it
// unlocks, and any notify after that point changes the count, so a notify
// is never lost between the unlock and the sleep. Spurious wake-ups are
// possible: wait in a loop, or use the predicate forms.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <utility>

#include "spindle/futex.h"
#include "spindle/status.h"
#include "spindle/task.h"
#include "spindle/time.h"

namespace spindle {

class CondVar {
 public:
  explicit CondVar(const char* name = "condvar", WaitOrder order = WaitOrder::kPriority)
      : name_(name), order_(order) {}
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;
  ~CondVar();  // panics if threads still wait

  // Atomically unlocks `lock` and waits; relocks before returning. kOk
  // (notified, or spuriously) or kTimedOut.
  template <class Lock>
  Status wait_until(Lock& lock, TimePoint deadline) {
    std::uint32_t seq = seq_.load(std::memory_order_relaxed);
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    lock.unlock();
    Status s = futex_wait(&seq_, seq, deadline, order_, name_);
    waiters_.fetch_sub(1, std::memory_order_relaxed);
    lock.lock();
    return s == Status::kTimedOut ? Status::kTimedOut : Status::kOk;
  }
  template <class Lock>
  void wait(Lock& lock) {
    (void)wait_until(lock, kForever);
  }
  template <class Lock>
  Status wait_for(Lock& lock, Duration d) {
    return wait_until(lock, deadline_after(d));
  }

  // From a coroutine: co_await cv.wait_async(lock) unlocks `lock`,
  // suspends the coroutine (not its executor) until notified, and relocks
  // (blocking the executor while the lock is taken: use it with locks held
  // for short sections, as Queue does). kOk or kTimedOut. If the coroutine
  // is cancelled while it waits, it unwinds without the lock.
  template <class Lock>
  class AsyncWait {
   public:
    AsyncWait(CondVar* cv, Lock& lock, TimePoint deadline) : cv_(cv), lock_(lock), deadline_(deadline) {}
    AsyncWait(const AsyncWait&) = delete;
    ~AsyncWait() {
      if (counted_) cv_->waiters_.fetch_sub(1, std::memory_order_relaxed);  // unwound while waiting
    }
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) noexcept {
      std::uint32_t seq = cv_->seq_.load(std::memory_order_relaxed);
      cv_->waiters_.fetch_add(1, std::memory_order_seq_cst);
      counted_ = true;
      lock_.unlock();
      status_ = detail::kPending;
      return detail::job_wait(h, &cv_->seq_, seq, deadline_, cv_->order_, cv_->name_, &status_);
    }
    Status await_resume() {
      Status s = status_ == detail::kPending ? detail::job_wake_status() : status_;
      counted_ = false;
      cv_->waiters_.fetch_sub(1, std::memory_order_relaxed);
      lock_.lock();
      return s == Status::kTimedOut ? Status::kTimedOut : Status::kOk;
    }

   private:
    CondVar* cv_;
    Lock& lock_;
    TimePoint deadline_;
    bool counted_ = false;
    Status status_ = detail::kPending;
  };
  template <class Lock>
  AsyncWait<Lock> wait_async(Lock& lock, TimePoint deadline = kForever) {
    return AsyncWait<Lock>(this, lock, deadline);
  }

  // Predicate forms: wait until pred() holds (checked with the lock held).
  // The timed ones return pred()'s final value.
  template <class Lock, class Pred>
  void wait(Lock& lock, Pred pred) {
    while (!pred()) wait(lock);
  }
  template <class Lock, class Pred>
  bool wait_until(Lock& lock, TimePoint deadline, Pred pred) {
    while (!pred()) {
      if (wait_until(lock, deadline) == Status::kTimedOut) return pred();
    }
    return true;
  }
  template <class Lock, class Pred>
  bool wait_for(Lock& lock, Duration d, Pred pred) {
    return wait_until(lock, deadline_after(d), std::move(pred));
  }

  void notify_one() { notify(1); }
  void notify_all() { notify(UINT32_MAX); }

  const char* name() const { return name_; }

 private:
  void notify(std::uint32_t n);

  std::atomic<std::uint32_t> seq_{0};
  std::atomic<std::uint32_t> waiters_{0};
  const char* name_;
  WaitOrder order_;
};

}  // namespace spindle
