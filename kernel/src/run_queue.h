// The per-CPU run queue: one FIFO list per priority level and a 32-bit
// bitmap of the non-empty levels, so finding the most urgent ready thread is
// a count-leading-zeros. Pure data structure: no locking (the caller holds
// the kernel lock), no knowledge of CPUs or threads beyond RunNode, so it is
// unit-tested on the host by itself. The bitmap is a relaxed atomic (plain
// loads and stores, no read-modify-write) only so that empty() may be read
// without the lock (the wait spin's look at its own CPU: a snapshot).
#pragma once

#include <atomic>
#include <bit>
#include <cstdint>

#include "list.h"
#include "spindle/cpu_mask.h"

namespace spindle::kernel {

inline constexpr int kPriorityLevels = 32;

// What the run queue needs of a thread. The Tcb embeds one.
struct RunNode {
  ListNode link;        // in a run queue (or, when blocked, a wait queue)
  int priority = 0;     // effective priority, 0..31, read while queued
  CpuMask affinity = CpuMask::all();
};

class RunQueue {
 public:
  // From now on (the queue empty) bit is set in *mask while anything is
  // queued here and clear while nothing is: a mask of the non-empty queues.
  void attach(std::uint64_t* mask, std::uint64_t bit) {
    occupied_ = mask;
    bit_ = bit;
  }
  bool empty() const { return bitmap() == 0; }
  // Highest priority with a queued node, or -1.
  int top_priority() const {
    std::uint32_t b = bitmap();
    return b ? 31 - std::countl_zero(b) : -1;
  }
  // Whether a node more urgent than priority p (0..31) is queued:
  // top_priority() > p without the bit scan.
  bool has_above(int p) const { return (bitmap() >> p) > 1; }
  std::uint32_t bitmap() const { return bitmap_.load(std::memory_order_relaxed); }
  // Walks the levels: for tests and diagnostics, not for the scheduler.
  unsigned size() const {
    unsigned n = 0;
    for (const Level& l : levels_) n += static_cast<unsigned>(l.size());
    return n;
  }

  // Queues n at the back (fresh slice) or front (it was preempted and keeps
  // its turn) of its priority level. n must not be queued anywhere.
  // (Inline: every wake-up and switch takes one of them.)
  [[gnu::always_inline]] void push_back(RunNode* n) {
    levels_[n->priority].push_back(n);
    queued(n->priority);
  }
  [[gnu::always_inline]] void push_front(RunNode* n) {
    levels_[n->priority].push_front(n);
    queued(n->priority);
  }
  void remove(RunNode* n) {  // n must be queued here
    Level::remove(n);
    if (levels_[n->priority].empty()) {
      std::uint32_t b = bitmap() & ~(1u << n->priority);
      set_bitmap(b);
      if (b == 0) *occupied_ &= ~bit_;
    }
  }

  // The first node of the highest level, without removing it; nullptr if empty.
  RunNode* peek() const { return peek_at(top_priority()); }
  // peek() given top_priority()'s answer p.
  RunNode* peek_at(int p) const { return p < 0 ? nullptr : levels_[p].front(); }
  RunNode* pop();

  // A yield's turn-taking in one step: n (not queued) goes to the back of
  // its level and the level's first node, which must exist, comes off and
  // is returned. The bitmap and the count do not change.
  RunNode* take_turn(RunNode* n) {
    Level& level = levels_[n->priority];
    RunNode* first = level.front();
    Level::remove(first);
    level.push_back(n);
    return first;
  }

  // The first node, in priority-then-FIFO order, whose affinity allows cpu
  // and whose priority is at least min_priority; nullptr if none.
  RunNode* peek_for_cpu(unsigned cpu, int min_priority) const;

  // Whether any node is queued at exactly this priority.
  bool has_level(int priority) const { return (bitmap() >> priority) & 1; }

 private:
  using Level = List<RunNode, &RunNode::link>;
  void set_bitmap(std::uint32_t b) { bitmap_.store(b, std::memory_order_relaxed); }
  [[gnu::always_inline]] void queued(int priority) {
    std::uint32_t b = bitmap();
    if (b == 0) *occupied_ |= bit_;
    set_bitmap(b | 1u << priority);
  }

  Level levels_[kPriorityLevels];
  std::atomic<std::uint32_t> bitmap_{0};
  std::uint64_t unattached_ = 0;           // the mask until attach() (unit tests)
  std::uint64_t* occupied_ = &unattached_;  // bit_ set here iff bitmap_ != 0
  std::uint64_t bit_ = 0;
};

}  // namespace spindle::kernel
