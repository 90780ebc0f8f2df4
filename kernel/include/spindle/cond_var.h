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
