// Barrier (reusable, with a completion step), Latch (single use) and Event
// (set/clear/wait, like Python's threading.Event). All wait on a futex
// word; arriving or counting down without waking anyone is one atomic.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <utility>

#include "spindle/futex.h"
#include "spindle/panic.h"
#include "spindle/status.h"
#include "spindle/task.h"
#include "spindle/time.h"

namespace spindle {

namespace detail {
struct NoCompletion {
  void operator()() const {}
};
// Wakes every waiter of word if any is registered in `waiters`.
void wake_all_waiters(const std::atomic<std::uint32_t>& word, const std::atomic<std::uint32_t>& waiters);
// Waits while word == value, registered in waiters. kOk or kTimedOut.
Status wait_while_equal(const std::atomic<std::uint32_t>& word, std::uint32_t value,
                        std::atomic<std::uint32_t>& waiters, TimePoint deadline, const char* name);
[[noreturn]] void destroyed_with_waiters(const char* kind, const char* name, std::uint32_t waiters);
}  // namespace detail

// A reusable barrier for `count` threads. Each phase ends when `count`
// threads have arrived: the last to arrive runs completion() (before anyone
// is released), then all waiters of the phase go on. arrive_and_drop()
// arrives and lowers the count for later phases.
template <class Completion = detail::NoCompletion>
class Barrier {
 public:
  using Token = std::uint32_t;  // the phase an arrival belongs to

  explicit Barrier(std::uint32_t count, Completion completion = Completion(), const char* name = "barrier")
      : pending_(count), expected_(count), completion_(std::move(completion)), name_(name) {}
  explicit Barrier(std::uint32_t count, const char* name) : Barrier(count, Completion(), name) {}
  Barrier(const Barrier&) = delete;
  Barrier& operator=(const Barrier&) = delete;
  ~Barrier() {
    if (auto w = waiters_.load(std::memory_order_relaxed)) detail::destroyed_with_waiters("barrier", name_, w);
  }

  // Arrives without waiting. Returns the token of the phase arrived at.
  [[nodiscard]] Token arrive() {
    Token phase = phase_.load(std::memory_order_acquire);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) complete(phase);
    return phase;
  }
  // Waits until the phase of `token` has completed. kOk or kTimedOut (the
  // arrival still counts; the phase completes without this waiter).
  Status wait(Token token, TimePoint deadline = kForever) {
    return detail::wait_while_equal(phase_, token, waiters_, deadline, name_);
  }
  void arrive_and_wait() { (void)wait(arrive()); }
  Status arrive_and_wait_for(Duration d) { return wait(arrive(), deadline_after(d)); }
  Status arrive_and_wait_until(TimePoint deadline) { return wait(arrive(), deadline); }
  // From a coroutine: co_await barrier.arrive_and_wait_async() arrives now
  // and suspends the coroutine (not its executor) until the phase ends.
  auto wait_async(Token token, TimePoint deadline = kForever) {
    return detail::FastOrSlow(
        [this, token] { return phase_.load(std::memory_order_acquire) != token; },
        [this, token, deadline] {
          return detail::wait_while_equal_async(phase_, token, waiters_, deadline, WaitOrder::kPriority, name_);
        });
  }
  auto arrive_and_wait_async() { return wait_async(arrive()); }
  auto arrive_and_wait_async_for(Duration d) { return wait_async(arrive(), deadline_after(d)); }
  // Arrives, and this thread takes no part in later phases.
  void arrive_and_drop() {
    expected_.fetch_sub(1, std::memory_order_acq_rel);
    (void)arrive();
  }

  // Phases completed so far.
  std::uint32_t generation() const { return phase_.load(std::memory_order_acquire); }
  const char* name() const { return name_; }

 private:
  void complete(Token phase) {
    completion_();
    pending_.store(expected_.load(std::memory_order_acquire), std::memory_order_relaxed);
    phase_.store(phase + 1, std::memory_order_seq_cst);
    detail::wake_all_waiters(phase_, waiters_);
  }

  std::atomic<std::uint32_t> phase_{0};
  std::atomic<std::uint32_t> pending_;   // arrivals still due in this phase
  std::atomic<std::uint32_t> expected_;  // participants of the next phase
  std::atomic<std::uint32_t> waiters_{0};
  Completion completion_;
  const char* name_;
};

Barrier(std::uint32_t) -> Barrier<>;
Barrier(std::uint32_t, const char*) -> Barrier<>;
template <class F>
Barrier(std::uint32_t, F) -> Barrier<F>;
template <class F>
Barrier(std::uint32_t, F, const char*) -> Barrier<F>;

// A single-use countdown: wait() returns once the count reaches zero.
class Latch {
 public:
  explicit Latch(std::uint32_t count, const char* name = "latch") : count_(count), name_(name) {}
  Latch(const Latch&) = delete;
  Latch& operator=(const Latch&) = delete;
  ~Latch();

  // kOverflow (nothing changed) if n exceeds the remaining count.
  Status count_down(std::uint32_t n = 1);
  bool try_wait() const { return count_.load(std::memory_order_acquire) == 0; }
  void wait() { (void)wait_until(kForever); }
  Status wait_for(Duration d) { return wait_until(deadline_after(d)); }
  Status wait_until(TimePoint deadline);
  Status arrive_and_wait(std::uint32_t n = 1);
  // From a coroutine: co_await latch.wait_async().
  auto wait_async_until(TimePoint deadline) {
    return detail::FastOrSlow([this] { return try_wait(); }, [this, deadline] { return wait_async_slow(deadline); });
  }
  auto wait_async() { return wait_async_until(kForever); }
  auto wait_async_for(Duration d) { return wait_async_until(deadline_after(d)); }

  std::uint32_t count() const { return count_.load(std::memory_order_acquire); }
  const char* name() const { return name_; }

 private:
  Task<Status> wait_async_slow(TimePoint deadline);

  std::atomic<std::uint32_t> count_;
  std::atomic<std::uint32_t> waiters_{0};
  const char* name_;
};

// A flag threads can wait for. set() releases every waiter and keeps
// releasing new ones until clear().
class Event {
 public:
  explicit Event(const char* name = "event") : name_(name) {}
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event();

  void set();    // any context, including interrupt handlers
  void clear();
  bool is_set() const { return (flag_.load(std::memory_order_acquire) & 1) != 0; }
  void wait() { (void)wait_until(kForever); }
  Status wait_for(Duration d) { return wait_until(deadline_after(d)); }
  Status wait_until(TimePoint deadline);  // kOk once set, or kTimedOut
  // From a coroutine: co_await event.wait_async().
  auto wait_async_until(TimePoint deadline) {
    return detail::FastOrSlow([this] { return is_set(); }, [this, deadline] { return wait_async_slow(deadline); });
  }
  auto wait_async() { return wait_async_until(kForever); }
  auto wait_async_for(Duration d) { return wait_async_until(deadline_after(d)); }

  const char* name() const { return name_; }

 private:
  Task<Status> wait_async_slow(TimePoint deadline);

  std::atomic<std::uint32_t> flag_{0};  // (generation << 1) | set
  std::atomic<std::uint32_t> waiters_{0};
  const char* name_;
};

}  // namespace spindle
