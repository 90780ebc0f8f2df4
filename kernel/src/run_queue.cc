#include "run_queue.h"

namespace spindle::kernel {

void RunQueue::push_back(RunNode* n) {
  levels_[n->priority].push_back(n);
  set_bitmap(bitmap() | 1u << n->priority);
  if (count_++ == 0 && occupied_) *occupied_ |= bit_;
}

void RunQueue::push_front(RunNode* n) {
  levels_[n->priority].push_front(n);
  set_bitmap(bitmap() | 1u << n->priority);
  if (count_++ == 0 && occupied_) *occupied_ |= bit_;
}

void RunQueue::remove(RunNode* n) {
  Level::remove(n);
  if (levels_[n->priority].empty()) set_bitmap(bitmap() & ~(1u << n->priority));
  if (--count_ == 0 && occupied_) *occupied_ &= ~bit_;
}

RunNode* RunQueue::peek() const {
  int p = top_priority();
  return p < 0 ? nullptr : levels_[p].front();
}

RunNode* RunQueue::pop() {
  RunNode* n = peek();
  if (n) remove(n);
  return n;
}

RunNode* RunQueue::peek_for_cpu(unsigned cpu, int min_priority) const {
  std::uint32_t bits = bitmap();
  while (bits) {
    int p = 31 - std::countl_zero(bits);
    if (p < min_priority) break;
    for (RunNode* n = levels_[p].front(); n; n = levels_[p].next(n)) {
      if (n->affinity.has(cpu)) return n;
    }
    bits &= ~(1u << p);
  }
  return nullptr;
}

}  // namespace spindle::kernel
