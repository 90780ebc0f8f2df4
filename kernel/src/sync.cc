// The counting and signalling objects: SpinLock, Semaphore, CondVar, Latch,
// Event and the Barrier helpers. Each keeps its state in atomics in its own
// memory and enters the kernel (futex_wait/futex_wake) only to sleep or to
// wake a sleeper; a `waiters` count tells a waker whether anyone sleeps.
//
// The pattern that makes that safe (no lost wake-up): a waiter increments
// `waiters` (seq_cst), then re-reads the state word inside futex_wait; a
// waker changes the state word (seq_cst), then reads `waiters`. One of the
// two sees the other's write.
#include <arch/arch.h>

#include "spindle/barrier.h"
#include "spindle/cond_var.h"
#include "spindle/diagnostics.h"
#include "spindle/panic.h"
#include "spindle/semaphore.h"
#include "spindle/spin_lock.h"
#include "kernel.h"

namespace spindle {
namespace {
unsigned long long ull(std::uint64_t v) { return static_cast<unsigned long long>(v); }
}  // namespace

namespace detail {

void wake_all_waiters(const std::atomic<std::uint32_t>& word, const std::atomic<std::uint32_t>& waiters) {
  if (waiters.load(std::memory_order_seq_cst) != 0) futex_wake(&word, UINT32_MAX);
}

Status wait_while_equal(const std::atomic<std::uint32_t>& word, std::uint32_t value,
                        std::atomic<std::uint32_t>& waiters, TimePoint deadline, const char* name) {
  while (word.load(std::memory_order_acquire) == value) {
    waiters.fetch_add(1, std::memory_order_seq_cst);
    Status s = futex_wait(&word, value, deadline, WaitOrder::kPriority, name);
    waiters.fetch_sub(1, std::memory_order_relaxed);
    if (s == Status::kTimedOut && word.load(std::memory_order_acquire) == value) return Status::kTimedOut;
    if (s == Status::kInvalidState) return s;
  }
  return Status::kOk;
}

void destroyed_with_waiters(const char* kind, const char* name, std::uint32_t waiters) {
  panic("%s '%s' destroyed while %u thread(s) wait on it", kind, name, waiters);
}

}  // namespace detail

// ---------------------------------------------------------------------------
// SpinLock

SpinLock::~SpinLock() {
  if (ThreadId o = owner_.load(std::memory_order_relaxed)) {
    panic("spin lock '%s' destroyed while held by thread %llu", name_, ull(o));
  }
  if constexpr (kLockdep) detail::lockdep_forget(this);
}

namespace {
// SpinLock: pauses without a hand-off before a waiter yields its CPU.
constexpr unsigned kSpinsBeforeYield = 16;
}  // namespace

void SpinLock::lock(const Site& site) {
  ThreadId me = this_thread::id();
  if (owner_.load(std::memory_order_relaxed) == me) {
    panic("thread %llu ('%s') locked spin lock '%s', which it already holds (self-deadlock)", ull(me),
          this_thread::name(), name_);
  }
  if constexpr (kLockdep) detail::lockdep_acquire(this, name_, site, false);
  std::uint32_t ticket = next_.fetch_add(1, std::memory_order_relaxed);
  std::uint32_t seen = serving_.load(std::memory_order_acquire);
  for (unsigned still = 0; seen != ticket;) {
    arch::cpu_relax();
    std::uint32_t now = serving_.load(std::memory_order_acquire);
    if (now != seen) {
      seen = now;
      still = 0;
      continue;
    }
    // No hand-off for a while: the lock's holder, or the waiter whose turn
    // it is, may be a thread that is not running (preempted here, by an
    // equal-priority spinner like this one). Give such threads a turn:
    // with more spinning threads than CPUs, a waiter that only yielded
    // after a fixed 1024 pauses cost every later ticket that much per
    // round (3 threads on 2 vCPUs: 16 us per increment; now 0.5 us).
    if (++still == kSpinsBeforeYield) {
      this_thread::yield();
      still = 0;
    }
  }
  owner_.store(me, std::memory_order_relaxed);
}

bool SpinLock::try_lock(const Site& site) {
  std::uint32_t serving = serving_.load(std::memory_order_acquire);
  std::uint32_t expected = serving;
  if (!next_.compare_exchange_strong(expected, serving + 1, std::memory_order_acquire, std::memory_order_relaxed)) {
    return false;
  }
  owner_.store(this_thread::id(), std::memory_order_relaxed);
  if constexpr (kLockdep) detail::lockdep_acquire(this, name_, site, true);
  return true;
}

void SpinLock::unlock() {
  ThreadId me = this_thread::id();
  ThreadId owner = owner_.load(std::memory_order_relaxed);
  if (owner != me) {
    if (owner == 0) panic("thread %llu ('%s') unlocked spin lock '%s', which nobody holds", ull(me), this_thread::name(), name_);
    panic("thread %llu ('%s') unlocked spin lock '%s', held by thread %llu", ull(me), this_thread::name(), name_,
          ull(owner));
  }
  if constexpr (kLockdep) detail::lockdep_release(this, name_);
  owner_.store(0, std::memory_order_relaxed);
  serving_.store(serving_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

// ---------------------------------------------------------------------------
// Semaphore

Semaphore::Semaphore(std::uint32_t initial, std::uint32_t max, const char* name, WaitOrder order)
    : count_(initial <= max && max <= kMaxCount ? initial : 0),
      max_(max),
      name_(name),
      order_(order),
      valid_(initial <= max && max > 0 && max <= kMaxCount) {}

Semaphore::~Semaphore() {
  if (count_.load(std::memory_order_relaxed) & count_word::kSleepers) {
    if (unsigned w = futex_waiters(&count_)) detail::destroyed_with_waiters("semaphore", name_, w);
  }
}

bool Semaphore::try_acquire() { return count_word::try_take(count_); }

Status Semaphore::acquire_until(TimePoint deadline) {
  if (!valid_) return Status::kInvalidArgument;
  if (try_acquire()) return Status::kOk;
  // Spin first only while nobody sleeps here: a spinner must not overtake
  // the queued waiters a release hands its units to.
  auto units = [this] { return (count_.load(std::memory_order_relaxed) & count_word::kCountMask) != 0; };
  auto sleepers = [this] { return (count_.load(std::memory_order_relaxed) & count_word::kSleepers) != 0; };
  if (!sleepers() && kernel::spin_before_wait(units, sleepers, deadline) && try_acquire()) return Status::kOk;
  return futex_take(&count_, deadline, order_, name_);
}

Task<Status> Semaphore::acquire_async_slow(TimePoint deadline) {
  if (!valid_) co_return Status::kInvalidArgument;
  for (;;) {
    // A unit taken at once, or handed over by a release in wait order (as
    // futex_take hands one to a thread); kWouldBlock: woken without one.
    Status s = co_await detail::WordTake(&count_, deadline, order_, name_);
    if (s == Status::kTimedOut) co_return try_acquire() ? Status::kOk : Status::kTimedOut;
    if (s != Status::kWouldBlock) co_return s;
  }
}

Status Semaphore::release(std::uint32_t n) {
  if (!valid_) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  std::uint32_t c = count_.load(std::memory_order_relaxed);
  do {
    if (c & count_word::kSleepers) return futex_give(&count_, n, max_);
    if (n > max_ - c) return Status::kOverflow;
  } while (!count_.compare_exchange_weak(c, c + n, std::memory_order_release, std::memory_order_relaxed));
  return Status::kOk;
}

// ---------------------------------------------------------------------------
// CondVar

CondVar::~CondVar() {
  if (auto w = waiters_.load(std::memory_order_relaxed)) detail::destroyed_with_waiters("condvar", name_, w);
}

void CondVar::notify(std::uint32_t n) {
  if (waiters_.load(std::memory_order_seq_cst) == 0) return;
  seq_.fetch_add(1, std::memory_order_seq_cst);
  futex_wake(&seq_, n);
}

// ---------------------------------------------------------------------------
// Latch

Latch::~Latch() {
  if (auto w = waiters_.load(std::memory_order_relaxed)) detail::destroyed_with_waiters("latch", name_, w);
}

Status Latch::count_down(std::uint32_t n) {
  std::uint32_t c = count_.load(std::memory_order_relaxed);
  do {
    if (n > c) return Status::kOverflow;
  } while (!count_.compare_exchange_weak(c, c - n, std::memory_order_seq_cst, std::memory_order_relaxed));
  if (c == n) detail::wake_all_waiters(count_, waiters_);
  return Status::kOk;
}

Status Latch::wait_until(TimePoint deadline) {
  for (;;) {
    std::uint32_t c = count_.load(std::memory_order_acquire);
    if (c == 0) return Status::kOk;
    // Counting down changes the word: a stale value just returns and retries.
    Status s = detail::wait_while_equal(count_, c, waiters_, deadline, name_);
    if (s != Status::kOk) return s;
  }
}

Task<Status> Latch::wait_async_slow(TimePoint deadline) {
  for (;;) {
    std::uint32_t c = count_.load(std::memory_order_acquire);
    if (c == 0) co_return Status::kOk;
    Status s = co_await detail::wait_while_equal_async(count_, c, waiters_, deadline, WaitOrder::kPriority, name_);
    if (s != Status::kOk) co_return s;
  }
}

Status Latch::arrive_and_wait(std::uint32_t n) {
  if (Status s = count_down(n); s != Status::kOk) return s;
  return wait_until(kForever);
}

// ---------------------------------------------------------------------------
// Event

Event::~Event() {
  if (auto w = waiters_.load(std::memory_order_relaxed)) detail::destroyed_with_waiters("event", name_, w);
}

// The word is (generation << 1) | flag. set() bumps the generation, so a
// waiter that saw the flag clear returns once the word changes at all,
// even if clear() follows at once: every thread waiting when set() was
// called is released (a clear on a clear flag changes nothing).
void Event::set() {
  std::uint32_t v = flag_.load(std::memory_order_relaxed);
  do {
    if (v & 1) return;
  } while (!flag_.compare_exchange_weak(v, (v + 2) | 1, std::memory_order_seq_cst, std::memory_order_relaxed));
  detail::wake_all_waiters(flag_, waiters_);
}

Task<Status> Event::wait_async_slow(TimePoint deadline) {
  std::uint32_t v = flag_.load(std::memory_order_acquire);
  if (v & 1) co_return Status::kOk;
  co_return co_await detail::wait_while_equal_async(flag_, v, waiters_, deadline, WaitOrder::kPriority, name_);
}

void Event::clear() { flag_.fetch_and(~1u, std::memory_order_release); }

Status Event::wait_until(TimePoint deadline) {
  std::uint32_t v = flag_.load(std::memory_order_acquire);
  if (v & 1) return Status::kOk;
  return detail::wait_while_equal(flag_, v, waiters_, deadline, name_);
}

}  // namespace spindle
