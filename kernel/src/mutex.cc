// Mutex: the classic three-state futex lock (Drepper, "Futexes Are Tricky").
#include "spindle/mutex.h"

#include "spindle/futex.h"
#include "spindle/panic.h"

namespace spindle {

Mutex::~Mutex() {
  if (state_.load(std::memory_order_relaxed) != 0) {
    panic("mutex '%s' destroyed while held by thread %llu", name_,
          static_cast<unsigned long long>(owner_.load(std::memory_order_relaxed)));
  }
}

void Mutex::lock() { lock_until(kForever); }

bool Mutex::try_lock() {
  std::uint32_t expected = 0;
  if (!state_.compare_exchange_strong(expected, 1, std::memory_order_acquire, std::memory_order_relaxed)) {
    return false;
  }
  owner_.store(this_thread::id(), std::memory_order_relaxed);
  return true;
}

bool Mutex::lock_until(TimePoint deadline) {
  ThreadId self = this_thread::id();
  std::uint32_t expected = 0;
  if (!state_.compare_exchange_strong(expected, 1, std::memory_order_acquire, std::memory_order_relaxed) &&
      !lock_slow(self, deadline)) {
    return false;
  }
  owner_.store(self, std::memory_order_relaxed);
  return true;
}

bool Mutex::lock_slow(ThreadId self, TimePoint deadline) {
  if (owner_.load(std::memory_order_relaxed) == self) {
    panic("thread %llu locked mutex '%s' that it already holds (self-deadlock)",
          static_cast<unsigned long long>(self), name_);
  }
  // From here the state is 2 whenever we may be waiting, so the holder's
  // unlock knows to wake someone.
  while (state_.exchange(2, std::memory_order_acquire) != 0) {
    if (futex_wait(&state_, 2, deadline) == Status::kTimedOut) return false;
  }
  return true;
}

void Mutex::unlock() {
  ThreadId self = this_thread::id();
  ThreadId owner = owner_.load(std::memory_order_relaxed);
  if (owner != self) {
    panic("thread %llu unlocked mutex '%s' held by %s%llu", static_cast<unsigned long long>(self), name_,
          owner ? "thread " : "nobody", static_cast<unsigned long long>(owner));
  }
  owner_.store(0, std::memory_order_relaxed);
  if (state_.exchange(0, std::memory_order_release) == 2) futex_wake(&state_, 1);
}

}  // namespace spindle
