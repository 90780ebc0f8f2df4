#include "run_queue.h"

namespace spindle::kernel {

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
