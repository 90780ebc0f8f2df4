// The one wait mechanism: every blocking call parks the thread on a
// WaitQueue, ordered by priority then arrival (default) or by arrival only.
#include "kernel.h"

namespace spindle::kernel {

namespace {
Tcb* tcb_of(RunNode* n) { return Tcb::from_run(n); }
}  // namespace

void WaitQueue::insert(Tcb* t) {
  if (order_ == Order::kFifo) {
    waiters_.push_back(&t->run);
    return;
  }
  // Behind every waiter of equal or higher priority: FIFO within a level.
  // Scanned from the back, so waiters of one priority queue up in O(1).
  RunNode* after = waiters_.back();
  while (after && after->priority < t->run.priority) after = waiters_.prev(after);
  waiters_.insert_before(after ? waiters_.next(after) : waiters_.front(), &t->run);
}

void WaitQueue::remove(Tcb* t) {
  decltype(waiters_)::remove(&t->run);
  t->wait_queue = nullptr;
}

Status WaitQueue::wait(TimePoint deadline) {
  if (deadline != kForever && deadline <= Clock::now()) return Status::kTimedOut;
  Tcb* self = this_cpu().current;
  insert(self);
  return block_current(this, deadline);
}

Tcb* WaitQueue::wake_one(Status s) {
  RunNode* n = waiters_.front();
  if (!n) return nullptr;
  Tcb* t = tcb_of(n);
  wake(t, s);
  return t;
}

unsigned WaitQueue::wake_all(Status s) {
  unsigned n = 0;
  while (wake_one(s)) ++n;
  return n;
}

Tcb* WaitQueue::front() const {
  RunNode* n = waiters_.front();
  return n ? tcb_of(n) : nullptr;
}

Tcb* WaitQueue::next(const Tcb* t) const {
  RunNode* n = waiters_.next(&t->run);
  return n ? tcb_of(n) : nullptr;
}

Tcb* WaitQueue::first_with_key(const void* key) const {
  for (RunNode* n = waiters_.front(); n; n = waiters_.next(n)) {
    if (tcb_of(n)->futex_key == key) return tcb_of(n);
  }
  return nullptr;
}

void WaitQueue::reposition(Tcb* t) {
  if (order_ == Order::kFifo) return;
  decltype(waiters_)::remove(&t->run);
  insert(t);
}

}  // namespace spindle::kernel
