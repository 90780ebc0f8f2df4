#include "timer_queue.h"

namespace spindle::kernel {

// Both a and b are roots (no parent, no siblings). The later one becomes the
// first child of the earlier one.
TimerNode* TimerQueue::meld(TimerNode* a, TimerNode* b) {
  if (before(b, a)) {
    TimerNode* t = a;
    a = b;
    b = t;
  }
  b->prev = a;
  b->sibling = a->child;
  if (a->child) a->child->prev = b;
  a->child = b;
  return a;
}

// The standard two-pass merge of a sibling list, done iteratively: first
// meld neighbours pairwise left to right (stacking the results), then meld
// the stack right to left.
TimerNode* TimerQueue::merge_pairs(TimerNode* first) {
  TimerNode* stack = nullptr;
  while (first) {
    TimerNode* a = first;
    TimerNode* b = a->sibling;
    first = b ? b->sibling : nullptr;
    a->sibling = a->prev = nullptr;
    if (b) {
      b->sibling = b->prev = nullptr;
      a = meld(a, b);
    }
    a->sibling = stack;  // the stack is linked through sibling
    stack = a;
  }
  if (!stack) return nullptr;
  TimerNode* root = stack;
  stack = stack->sibling;
  root->sibling = nullptr;
  while (stack) {
    TimerNode* n = stack;
    stack = n->sibling;
    n->sibling = nullptr;
    root = meld(root, n);
  }
  return root;
}

void TimerQueue::insert(TimerNode* n, std::uint64_t deadline) {
  n->deadline = deadline;
  n->seq = next_seq_++;
  n->child = n->sibling = n->prev = nullptr;
  n->queued = true;
  root_ = root_ ? meld(root_, n) : n;
  ++size_;
}

TimerNode* TimerQueue::pop() {
  TimerNode* r = root_;
  if (!r) return nullptr;
  root_ = merge_pairs(r->child);
  r->child = nullptr;
  r->queued = false;
  --size_;
  return r;
}

TimerNode* TimerQueue::pop_expired(std::uint64_t now) {
  return (root_ && root_->deadline <= now) ? pop() : nullptr;
}

void TimerQueue::remove(TimerNode* n) {
  if (n == root_) {
    pop();
    return;
  }
  // Unlink n (with its subtree) from its parent's child list.
  if (n->prev->child == n) {
    n->prev->child = n->sibling;
  } else {
    n->prev->sibling = n->sibling;
  }
  if (n->sibling) n->sibling->prev = n->prev;
  TimerNode* sub = merge_pairs(n->child);
  if (sub) root_ = meld(root_, sub);
  n->child = n->sibling = n->prev = nullptr;
  n->queued = false;
  --size_;
}

}  // namespace spindle::kernel
