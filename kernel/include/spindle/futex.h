// The futex-like calls every blocking object is built on. Objects keep
// their state in 32-bit words in their own memory and change it with
// atomics, so an uncontended operation never enters the kernel; only a real
// wait or wake does. This is the boundary isolated processes will cross as
// system calls: it takes addresses and values, never kernel objects.
#pragma once

#include <atomic>
#include <cstdint>

#include "spindle/status.h"
#include "spindle/time.h"

namespace spindle {

enum class WaitOrder : std::uint8_t {
  kPriority,  // most urgent waiter first, FIFO among equals (default)
  kFifo,      // strict arrival order
};

// Blocks while *word == expected, until woken or the deadline passes.
// The check and the sleep are atomic with respect to futex_wake: a wake
// after the caller's store to the word is never lost. `name` names the
// object in diagnostics (starvation reports); it must outlive the wait.
// Returns kOk (woken), kWouldBlock (*word != expected at the call),
// kTimedOut, or kInvalidState when called from an interrupt handler.
// Spurious kOk returns are possible: callers re-check their condition.
Status futex_wait(const std::atomic<std::uint32_t>* word, std::uint32_t expected, TimePoint deadline = kForever,
                  WaitOrder order = WaitOrder::kPriority, const char* name = nullptr);

// Wakes up to n waiters of word (in their wait order). Returns how many.
// Any Spindle thread. Does not block.
unsigned futex_wake(const std::atomic<std::uint32_t>* word, unsigned n);

// ---------------------------------------------------------------------------
// Counting words (Semaphore). The word holds a count of free units and a
// kSleepers bit, set while threads may wait for a unit in the kernel.
// Protocol:
//   take: CAS count -> count - 1 in user space while the count is not 0;
//         else futex_take.
//   give: CAS count -> count + n in user space while kSleepers is clear;
//         else futex_give.
// While a word reads exactly kSleepers (no units, sleepers) user space
// never writes it: only the kernel does, under its lock. A futex_give
// hands its units straight to the futex_take callers it wakes, in their
// wait order, so a newcomer cannot take a unit a waiter was given; the
// rest go to the count, and kSleepers is cleared when nobody waits.
namespace count_word {
inline constexpr std::uint32_t kCountMask = (1u << 31) - 1;  // free units
inline constexpr std::uint32_t kSleepers = 1u << 31;          // give must call futex_give

// Takes a counted unit if there is one (true); false if none (the word
// unchanged).
inline bool try_take(std::atomic<std::uint32_t>& word) {
  std::uint32_t c = word.load(std::memory_order_relaxed);
  while (c & kCountMask) {
    if (word.compare_exchange_weak(c, c - 1, std::memory_order_acquire, std::memory_order_relaxed)) return true;
  }
  return false;
}

// Takes a counted unit if there is one (true); else makes sure kSleepers
// is set (false), so that a give comes to the kernel: what a waiter does
// before it sleeps on the word (futex_take does it under the kernel lock).
inline bool take_or_mark(std::atomic<std::uint32_t>& word) {
  std::uint32_t c = word.load(std::memory_order_relaxed);
  for (;;) {
    if (c & kCountMask) {
      if (word.compare_exchange_weak(c, c - 1, std::memory_order_acquire, std::memory_order_relaxed)) return true;
    } else if (c & kSleepers ||
               word.compare_exchange_weak(c, c | kSleepers, std::memory_order_relaxed, std::memory_order_relaxed)) {
      return false;
    }
  }
}
}  // namespace count_word

// Takes one unit from the counting word, blocking in `order` until one is
// handed over or the deadline passes (a unit already counted is taken at
// once). Returns kOk (one unit is the caller's), kTimedOut, kInterrupted
// (the caller's process is ending), kInvalidState from an interrupt
// handler, or kInvalidArgument (in a process: a word it may not write).
// `name` as for futex_wait.
Status futex_take(std::atomic<std::uint32_t>* word, TimePoint deadline = kForever,
                  WaitOrder order = WaitOrder::kPriority, const char* name = nullptr);

// Gives n units: one to each of up to n waiters (takers, i.e. futex_take
// callers and coroutines in Semaphore::acquire_async, are handed theirs;
// futex_wait callers on the word are woken and find theirs in the count),
// the rest to the count. kOverflow (nothing given) if the
// count would pass max; kInvalidArgument (nothing given) if max is above
// kCountMask (the count would reach the sleepers bit), or in a process for
// a word it may not write; kOk otherwise. Any Spindle thread, and
// interrupt handlers. Does not block.
Status futex_give(std::atomic<std::uint32_t>* word, std::uint32_t n, std::uint32_t max);

// How many threads and coroutines of this kernel wait on word (futex_wait,
// futex_take): for diagnostics, such as a destructor's check. Waiters in
// other kernels (hosted processes sharing the word) are not counted. Any
// Spindle thread; does not block. In a process, ~0u for a word it may not
// read.
unsigned futex_waiters(const std::atomic<std::uint32_t>* word);

// ---------------------------------------------------------------------------
// Owner-aware locks. The lock word holds the owner's thread id, so the
// kernel can find the owner of a contended lock (priority inheritance,
// deadlock detection, owner-died recovery). Protocol:
//   lock:   CAS 0 -> id in user space; if that fails, futex_lock.
//   unlock: CAS id -> 0 in user space; if that fails (kWaiters is set),
//           futex_unlock.
// Words are only changed by those two CASes and by the kernel.
namespace lock_word {
inline constexpr std::uint32_t kOwnerMask = (1u << 30) - 1;  // owner's ThreadId; 0 = free
inline constexpr std::uint32_t kOwnerDied = 1u << 30;        // the previous owner died holding it
inline constexpr std::uint32_t kWaiters = 1u << 31;          // unlock must call futex_unlock
}  // namespace lock_word

struct LockPolicy {
  WaitOrder order = WaitOrder::kPriority;
  bool inherit = true;     // waiters lend their priority to the owner, transitively
  bool handoff = false;    // unlock makes the chosen waiter the owner (no barging)
  std::uint32_t aging = 0; // with handoff: a waiter passed over this many hand-offs is served next (0: never)
  const char* name = nullptr;  // the lock's name in reports; must outlive the lock
};

// Acquires the lock at word for the caller, blocking in the policy's order
// until it is free (or handed over) or until the deadline. The policy of
// the first thread to block applies while the lock stays contended.
// Returns kOk; kOwnerDied (acquired, but the previous owner exited holding
// it: the protected data may be inconsistent); kTimedOut; kDeadlock (the
// caller holds it already, or waiting would close a cycle of lock waits;
// nothing changed); kNoMemory; kInvalidState from an interrupt handler.
Status futex_lock(std::atomic<std::uint32_t>* word, const LockPolicy& policy, TimePoint deadline = kForever);

// Releases the lock at word, which the caller must own (else
// kInvalidState, nothing changed): hands it to the next waiter (handoff
// policy) or wakes the most urgent waiter to compete for it.
Status futex_unlock(std::atomic<std::uint32_t>* word);

}  // namespace spindle
