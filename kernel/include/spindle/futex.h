// The futex-like pair every blocking object is built on: wait on a 32-bit
// word while it holds an expected value; wake waiters of a word. Objects
// keep their state in that word with atomics, so an uncontended operation
// never enters the kernel; only a real wait or wake does.
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
// after the caller's store to the word is never lost.
// Returns kOk (woken), kWouldBlock (*word != expected at the call),
// kTimedOut, or kInvalidState when called from an interrupt handler.
// Spurious kOk returns are possible: callers re-check their condition.
Status futex_wait(const std::atomic<std::uint32_t>* word, std::uint32_t expected, TimePoint deadline = kForever,
                  WaitOrder order = WaitOrder::kPriority);

// Wakes up to n waiters of word (in their wait order). Returns how many.
// Any Spindle thread. Does not block.
unsigned futex_wake(const std::atomic<std::uint32_t>* word, unsigned n);

}  // namespace spindle
