// The one wait mechanism: every blocking call parks the thread (or a
// suspended coroutine job) on a WaitQueue, ordered by priority then arrival (default) or by arrival only.
#include "kernel.h"

namespace spindle::kernel {

namespace {
Waiter* waiter_of(RunNode* n) { return n ? Waiter::from_run(n) : nullptr; }
}  // namespace

void WaitQueue::insert_by_priority(Waiter* t) {
  // Behind every waiter of equal or higher priority: FIFO within a level.
  // Scanned from the back, so waiters of one priority queue up in O(1).
  RunNode* after = waiters_.back();
  while (after && after->priority < t->run.priority) after = waiters_.prev(after);
  waiters_.insert_before(after ? waiters_.next(after) : waiters_.front(), &t->run);
}

void WaitQueue::remove(Waiter* t) {
  decltype(waiters_)::remove(&t->run);
  t->wait_queue = nullptr;
}

Waiter* WaitQueue::wake_one(Status s) {
  Waiter* w = front();
  if (w) wake(w, s);
  return w;
}

unsigned WaitQueue::wake_all(Status s) {
  unsigned n = 0;
  while (wake_one(s)) ++n;
  return n;
}

Waiter* WaitQueue::front() const { return waiter_of(waiters_.front()); }

Waiter* WaitQueue::next(const Waiter* w) const { return waiter_of(waiters_.next(&w->run)); }

Waiter* WaitQueue::first_with_key(const void* key) const {
  Waiter* w = front();
  while (w && w->futex_key != key) w = next(w);
  return w;
}

Waiter* WaitQueue::next_with_key(const Waiter* w, const void* key) const {
  Waiter* n = next(w);
  while (n && n->futex_key != key) n = next(n);
  return n;
}

void WaitQueue::reposition(Waiter* t) {
  if (order_ == Order::kFifo) return;
  decltype(waiters_)::remove(&t->run);
  insert(t);
}

}  // namespace spindle::kernel
