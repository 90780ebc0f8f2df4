// The per-CPU timer queue: an intrusive pairing heap ordered by deadline,
// ties broken by insertion order (so equal deadlines expire FIFO).
// insert O(1), pop and remove O(log n) amortised, no allocation, no
// recursion (100000 sleeping threads must not overflow a stack). Pure data
// structure: the caller provides locking; unit-tested on the host by itself.
#pragma once

#include <cstddef>
#include <cstdint>

namespace spindle::kernel {

struct TimerNode {
  std::uint64_t deadline = 0;  // ns on the kernel clock
  std::uint64_t seq = 0;       // insertion order, assigned by the queue
  TimerNode* child = nullptr;
  TimerNode* sibling = nullptr;
  TimerNode* prev = nullptr;   // parent when first child, else left sibling
  bool queued = false;
};

class TimerQueue {
 public:
  bool empty() const { return root_ == nullptr; }
  std::size_t size() const { return size_; }
  // The earliest node, or nullptr.
  TimerNode* top() const { return root_; }
  // Earliest deadline, or UINT64_MAX when empty.
  std::uint64_t next_deadline() const { return root_ ? root_->deadline : UINT64_MAX; }

  // n must not be queued.
  void insert(TimerNode* n, std::uint64_t deadline);
  // n must be queued here.
  void remove(TimerNode* n);
  TimerNode* pop();
  // Pops the earliest node if its deadline is <= now; nullptr otherwise.
  TimerNode* pop_expired(std::uint64_t now);

 private:
  static bool before(const TimerNode* a, const TimerNode* b) {
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
  }
  static TimerNode* meld(TimerNode* a, TimerNode* b);
  static TimerNode* merge_pairs(TimerNode* first);

  TimerNode* root_ = nullptr;
  std::uint64_t next_seq_ = 0;
  std::size_t size_ = 0;
};

}  // namespace spindle::kernel
