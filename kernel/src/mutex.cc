// The owner-word locks (spindle/mutex.h): user-space fast paths, the brief
// spin, and the calls into futex_lock/futex_unlock.
#include "spindle/mutex.h"

#include <arch/arch.h>

#include "spindle/panic.h"

namespace spindle {
namespace detail {
namespace {

using namespace lock_word;

// How long a contended Mutex spins before sleeping: about the cost of a
// sleep and wake-up, so a short critical section on another CPU is waited
// out rather than slept through.
constexpr unsigned kSpins = 200;
// The spin looks at the word after 1, 2, 4 ... up to kMaxBackoff pauses
// (8 looks in all). Each look pulls the lock's cache line away from the
// owner's CPU; fewer looks let the owner keep the line and make longer
// runs, the way a sleeping waiter does. With a look after every pause the
// lock changed CPU every ~16 increments in the contended counter benchmark
// and lost to std::mutex (0.87-0.98x); see docs/benchmarks.md.
constexpr unsigned kMaxBackoff = 64;

unsigned long long ull(std::uint64_t v) { return static_cast<unsigned long long>(v); }

}  // namespace

OwnerLock::~OwnerLock() {
  std::uint32_t v = word_.load(std::memory_order_relaxed);
  if (v & kOwnerMask) {
    panic("%s '%s' destroyed while held by thread %llu", kind_, policy_.name, ull(v & kOwnerMask));
  }
  if (v & kWaiters) panic("%s '%s' destroyed while threads wait for it", kind_, policy_.name);
  if constexpr (kLockdep) lockdep_forget(this);
}

Status OwnerLock::acquire_slow(std::uint32_t me, TimePoint deadline) {
  std::uint32_t v = word_.load(std::memory_order_relaxed);
  if ((v & kOwnerMask) == me) {
    panic("thread %llu ('%s') locked %s '%s', which it already holds (self-deadlock)", ull(me),
          this_thread::name(), kind_, policy_.name);
  }
  if (spin_ && arch::cpu_count() > 1) {
    unsigned pause = 1;
    for (unsigned spent = 0; spent < kSpins; spent += pause) {
      // Free, perhaps with waiters queued: take it, keeping kWaiters so
      // our unlock wakes the next one. Owner-died words go to the kernel.
      if ((v & ~kWaiters) == 0 &&
          word_.compare_exchange_weak(v, me | v, std::memory_order_acquire, std::memory_order_relaxed)) {
        return Status::kOk;
      }
      for (unsigned k = 0; k < pause; ++k) arch::cpu_relax();
      if (pause < kMaxBackoff) pause <<= 1;
      v = word_.load(std::memory_order_relaxed);
    }
  }
  return futex_lock(&word_, policy_, deadline);
}

void OwnerLock::release_slow(std::uint32_t me, std::uint32_t v) {
  if ((v & kOwnerMask) != me) {
    std::uint32_t owner = v & kOwnerMask;
    if (owner == 0) panic("thread %llu ('%s') unlocked %s '%s', which nobody holds", ull(me), this_thread::name(), kind_, policy_.name);
    panic("thread %llu ('%s') unlocked %s '%s', held by thread %llu", ull(me), this_thread::name(), kind_,
          policy_.name, ull(owner));
  }
  futex_unlock(&word_);
}

void OwnerLock::release_as_slow(ThreadId owner) {
  std::uint32_t v = word_.load(std::memory_order_relaxed);
  if ((v & kOwnerMask) != owner) {
    panic("coroutine job %llu unlocked %s '%s', held by %llu", ull(owner), kind_, policy_.name, ull(v & kOwnerMask));
  }
  if (job_unlock(&word_, owner) != Status::kOk) {
    panic("coroutine job %llu unlocked %s '%s', which it does not hold", ull(owner), kind_, policy_.name);
  }
}

void OwnerLock::lock_failed(Status s) {
  if (s == Status::kOwnerDied) return;
  panic("thread %llu ('%s') could not lock %s '%s': %s", ull(current_thread_id()), this_thread::name(), kind_,
        policy_.name, to_string(s));
}

bool OwnerLock::try_lock(const Site& site) {
  auto me = static_cast<std::uint32_t>(current_thread_id());
  std::uint32_t v = 0;
  if (!word_.compare_exchange_strong(v, me, std::memory_order_acquire, std::memory_order_relaxed)) {
    if ((v & kOwnerMask) == me) {
      panic("thread %llu ('%s') try-locked %s '%s', which it already holds (self-deadlock)", ull(me),
            this_thread::name(), kind_, policy_.name);
    }
    return false;
  }
  if constexpr (kLockdep) lockdep_acquire(this, policy_.name, site, true);
  return true;
}

Status OwnerLock::lock_until(TimePoint deadline, const Site& site) {
  if constexpr (kLockdep) lockdep_acquire(this, policy_.name, site, false);
  Status s = acquire(deadline);
  if constexpr (kLockdep) {
    if (!acquired(s)) lockdep_release(this, policy_.name);
  }
  return s;
}

}  // namespace detail

void RecursiveMutex::lock(const Site& site) {
  if (held_by_caller()) {
    ++depth_;
    return;
  }
  OwnerLock::lock(site);
  depth_ = 1;
}

bool RecursiveMutex::try_lock(const Site& site) {
  if (held_by_caller()) {
    ++depth_;
    return true;
  }
  if (!OwnerLock::try_lock(site)) return false;
  depth_ = 1;
  return true;
}

Status RecursiveMutex::lock_until(TimePoint deadline, const Site& site) {
  if (held_by_caller()) {
    ++depth_;
    return Status::kOk;
  }
  Status s = OwnerLock::lock_until(deadline, site);
  if (acquired(s)) depth_ = 1;
  return s;
}

void RecursiveMutex::unlock() {
  if (held_by_caller() && --depth_ > 0) return;
  OwnerLock::unlock();  // panics naming it when the caller does not hold it
}

}  // namespace spindle
