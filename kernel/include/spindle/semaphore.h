// Counting semaphore with a maximum, and BinarySemaphore. acquire takes one
// unit, waiting while there is none; release returns units and hands them
// to waiters (most urgent first, or in arrival order with WaitOrder::kFifo).
// Uncontended acquire and release are one atomic each; a release enters the
// kernel only when someone waits. A unit released while threads or
// coroutines (acquire_async) wait goes straight to the first of them, so
// one that arrives later cannot take it first: waiters are served in the
// semaphore's order, whichever kind they are. (A coroutine handed a unit
// and cancelled before it runs gives it back.) The count and a "someone
// waits" bit share one word (futex.h: counting words).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "spindle/futex.h"
#include "spindle/status.h"
#include "spindle/task.h"
#include "spindle/time.h"

namespace spindle {

class Semaphore {
 public:
  static constexpr std::uint32_t kMaxCount = count_word::kCountMask;  // 2^31 - 1

  // initial <= max <= kMaxCount, max > 0 (else every call returns
  // kInvalidArgument and the semaphore holds nothing).
  explicit Semaphore(std::uint32_t initial, std::uint32_t max = kMaxCount, const char* name = "semaphore",
                     WaitOrder order = WaitOrder::kPriority);
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;
  ~Semaphore();  // panics if threads still wait

  void acquire() { (void)acquire_until(kForever); }
  bool try_acquire();
  template <class R, class P>
  bool try_acquire_for(const std::chrono::duration<R, P>& d) {
    return acquire_until(deadline_after(std::chrono::duration_cast<Duration>(d))) == Status::kOk;
  }
  template <class C, class D>
  bool try_acquire_until(const std::chrono::time_point<C, D>& t) {
    return acquire_until(to_spindle_time(t)) == Status::kOk;
  }
  // kOk, kTimedOut, kInvalidArgument (bad construction), kInvalidState
  // (from an interrupt handler while none is available), kInterrupted (the
  // caller's process is ending).
  Status acquire_for(Duration d) { return acquire_until(deadline_after(d)); }
  Status acquire_until(TimePoint deadline);

  // Returns n units. kOverflow (nothing released) if the count would pass
  // the maximum. Any context, including interrupt handlers.
  Status release(std::uint32_t n = 1);

  // From a coroutine: co_await sem.acquire_async() suspends the coroutine,
  // not its executor; it queues among threads in the semaphore's order.
  // kOk, kTimedOut, or kInvalidArgument (a semaphore made with bad counts).
  auto acquire_async_until(TimePoint deadline) {
    return detail::FastOrSlow([this] { return valid_ && try_acquire(); },
                              [this, deadline] { return acquire_async_slow(deadline); });
  }
  auto acquire_async() { return acquire_async_until(kForever); }
  auto acquire_async_for(Duration d) { return acquire_async_until(deadline_after(d)); }

  std::uint32_t value() const { return count_.load(std::memory_order_relaxed) & count_word::kCountMask; }
  std::uint32_t max() const { return max_; }
  const char* name() const { return name_; }

 private:
  Task<Status> acquire_async_slow(TimePoint deadline);

  std::atomic<std::uint32_t> count_;  // a counting word (futex.h)
  std::uint32_t max_;
  const char* name_;
  WaitOrder order_;
  bool valid_;
};

class BinarySemaphore : public Semaphore {
 public:
  explicit BinarySemaphore(bool available = false, const char* name = "binary semaphore",
                           WaitOrder order = WaitOrder::kPriority)
      : Semaphore(available ? 1 : 0, 1, name, order) {}
};

}  // namespace spindle
