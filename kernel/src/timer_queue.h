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
  TimerNode* child = nullptr;
  TimerNode* sibling = nullptr;
  TimerNode* prev = nullptr;   // parent when first child, else left sibling
  std::uint32_t seq = 0;       // insertion order, assigned by the queue (compared modulo 2^32)
  // Not used by the queue: free for its user (the kernel: which CPU's
  // queue holds it, and what it does when it fires).
  std::int16_t owner = -1;
  std::uint8_t kind = 0;
  bool queued = false;
};
static_assert(sizeof(void*) != 8 || sizeof(TimerNode) == 40, "a TimerNode is 40 bytes on 64-bit targets");

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
    // seq wraps: of two nodes queued at once (fewer than 2^31 apart) the
    // one inserted first has the smaller seq modulo 2^32.
    return a->deadline < b->deadline ||
           (a->deadline == b->deadline && static_cast<std::int32_t>(a->seq - b->seq) < 0);
  }
  static TimerNode* meld(TimerNode* a, TimerNode* b);
  static TimerNode* merge_pairs(TimerNode* first);

  TimerNode* root_ = nullptr;
  std::uint32_t next_seq_ = 0;
  std::size_t size_ = 0;
};

}  // namespace spindle::kernel
