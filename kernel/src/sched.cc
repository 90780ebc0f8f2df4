// The scheduler: placement of runnable threads on CPUs, the switch itself,
// time slices and interrupt-time preemption.
//
// Global rule: the N most urgent runnable threads run on the N CPUs. It is
// kept by two mechanisms: a thread that becomes runnable is placed on the
// allowed CPU whose most urgent thread (running or queued) is least urgent,
// preempting there if it is more urgent (an IPI); and a CPU that schedules
// takes a more urgent waiting thread from another CPU's queue before its own.
#include <climits>
#include <type_traits>

#include "kernel.h"
#include "user.h"

namespace spindle::kernel {

Kernel g;

static_assert(std::is_standard_layout_v<Waiter>, "RunNode and Timer are reached from a Waiter by offset");

namespace {

Tcb* tcb_of(RunNode* n) { return Tcb::from_run(n); }

// Chooses the CPU for runnable thread t; *preempt tells whether t is more
// urgent than what that CPU is committed to run.
unsigned place(const Tcb* t, bool* preempt) {
  CpuMask allowed = t->run.affinity & g.online;
  // One choice (a one-CPU kernel, a pinned thread): the loop below would
  // pick it; only the preemption question is left. ~15 instructions less
  // per wake-up. (Not allowed.count() == 1: without POPCNT that is a
  // libgcc call.)
  if (std::uint64_t one = allowed.bits(); one != 0 && (one & (one - 1)) == 0) {
    unsigned c = static_cast<unsigned>(__builtin_ctzll(one));
    *preempt = committed_priority(g.cpus[c], t) < t->run.priority;
    return c;
  }
  unsigned best = kMaxCpus;
  int best_p = INT_MAX;
  for (std::uint64_t bits = allowed.bits(); bits; bits &= bits - 1) {
    unsigned c = static_cast<unsigned>(__builtin_ctzll(bits));
    int p = committed_priority(g.cpus[c], t);
    if (p < best_p || (p == best_p && c == t->cpu)) {
      best = c;
      best_p = p;
    }
  }
  *preempt = best_p < t->run.priority;
  // Nowhere to run at once: wait where it last ran (its cache is there).
  if (!*preempt && allowed.has(t->cpu)) best = t->cpu;
  return best;
}

// enqueue() with the placement: t may run on another CPU than this one.
[[gnu::noinline]] void enqueue_placed(Tcb* t, bool front, bool in_schedule) SPINDLE_REQUIRES(g.lock) {
  Cpu& self = this_cpu();
  bool preempt = false;
  unsigned target = place(t, &preempt);
  t->state = ThreadState::kReady;
  t->cpu = target;
  Cpu& tc = g.cpus[target];
  if (front) {
    tc.rq.push_front(&t->run);
  } else {
    tc.rq.push_back(&t->run);
  }
  // A CPU inside schedule(), or whose current thread is blocking or
  // exiting (so schedule() follows under this lock hold), picks anyway.
  bool picks_anyway = target == self.id && (in_schedule || self.current->state != ThreadState::kRunning);
  if (preempt && !picks_anyway) resched_cpu(target);
}

// Queues runnable t where it should run: on the CPU place() picks,
// preempting there if t is more urgent than what that CPU is committed to,
// unless that CPU picks anyway (it is in schedule(), in_schedule, or its
// current thread is blocking or exiting under this lock hold). front: t
// keeps its turn (it was preempted). Inline for the case of a thread that
// may run only on this CPU (a one-CPU kernel, a thread pinned here, as in
// a same-CPU hand-off): no placement to make, and no frame to build.
[[gnu::always_inline]] inline void enqueue(Tcb* t, bool front, bool in_schedule) SPINDLE_REQUIRES(g.lock) {
  Cpu& self = this_cpu();
  if (!only_here(self, t)) [[unlikely]] {
    enqueue_placed(t, front, in_schedule);
    return;
  }
  enqueue_here(self, t, front, in_schedule);
}

[[gnu::always_inline]] inline Tcb* pick_next(Cpu& c) {
  if (g.shutting_down.load(std::memory_order_relaxed)) return c.idle;
  RunQueue* from = &c.rq;
  int best_p = c.rq.top_priority();
  RunNode* best = c.rq.peek_at(best_p);
  for (std::uint64_t bits = g.queued_cpus & ~(1ull << c.id); bits; bits &= bits - 1) {
    Cpu& o = g.cpus[__builtin_ctzll(bits)];
    if (o.rq.top_priority() <= best_p) continue;
    if (RunNode* n = o.rq.peek_for_cpu(c.id, best_p + 1)) {
      best = n;
      best_p = n->priority;
      from = &o.rq;
    }
  }
  if (!best) return c.idle;
  from->remove(best);
  return tcb_of(best);
}

// One more on a counter only this CPU writes, interrupts masked.
void bump(std::atomic<std::uint64_t>& n) { n.store(n.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); }

}  // namespace

void resched_cpu(unsigned cpu) {
  g.cpus[cpu].need_resched = true;
  this_cpu().ipi_out |= 1ull << cpu;
}

void make_ready(Tcb* t, bool front) {
  if (t->suspend_requested) {
    t->state = ThreadState::kSuspended;
    return;
  }
  enqueue(t, front, false);
}

namespace {
inline void switch_to(Cpu& c, Tcb* prev, Tcb* next, SwitchReason why) SPINDLE_REQUIRES(g.lock);

// Whether a yield by self (running on c) keeps self on c's queue and picks
// the first thread of self's level there, as enqueue() and pick_next()
// would: someone of exactly self's priority queued here, no pending
// reschedule or suspend, no other allowed CPU less committed than self's
// priority (place() would move self there), no other CPU with a more
// urgent queued thread (pick_next() might steal it).
bool turn_stays_here(const Cpu& c, const Tcb* self) SPINDLE_REQUIRES(g.lock) {
  int p = self->run.priority;
  if (self == c.idle || self->state != ThreadState::kRunning || c.rq.top_priority() != p) return false;
  if (self->suspend_requested || c.need_resched || g.shutting_down.load(std::memory_order_relaxed)) return false;
  // Only CPUs with something queued can have a more urgent thread, and only
  // CPUs self may run on can draw it away: a pinned thread looks at none
  // but the busy ones, however many CPUs there are.
  std::uint64_t others = g.online.bits() & ~(1ull << c.id);
  if (others) others &= g.queued_cpus | self->run.affinity.bits();  // (a one-CPU kernel skips the loads)
  for (std::uint64_t bits = others; bits; bits &= bits - 1) {
    unsigned o = static_cast<unsigned>(__builtin_ctzll(bits));
    if (g.cpus[o].rq.has_above(p)) return false;
    if (self->run.affinity.has(o) && committed_priority(g.cpus[o], nullptr) < p) return false;
  }
  return true;
}

// Every schedule() ends the requests that led to it, and a spin.
[[gnu::always_inline]] inline void clear_resched(Cpu& c) SPINDLE_REQUIRES(g.lock) {
  c.need_resched = false;
  c.slice_expired = false;
  c.waiter_spinning.store(false, std::memory_order_relaxed);  // a spin ends at any reschedule
}

}  // namespace

void schedule(SwitchReason why) {
  Cpu& c = this_cpu();
  Tcb* prev = c.current;
  // A yield's common case in one step: prev to the back of its level, the
  // level's first thread off it (what enqueue() and pick_next() would do).
  bool take_turn = why == SwitchReason::kYield && turn_stays_here(c, prev);
  clear_resched(c);
  if (take_turn) {
    prev->state = ThreadState::kReady;
    switch_to(c, prev, tcb_of(c.rq.take_turn(&prev->run)), why);
    return;
  }
  if (prev->state == ThreadState::kRunning && prev != c.idle) {
    if (prev->suspend_requested) {
      prev->state = ThreadState::kSuspended;
    } else {
      // Preempted threads keep their turn; yielding and expired ones go last.
      enqueue(prev, why == SwitchReason::kPreempt, true);
    }
  }
  switch_to(c, prev, pick_next(c), why);
}

namespace {
// The second half of schedule(): next (taken off any queue, or blocked
// with no queue) runs on c in place of prev, which is already placed
// (queued, blocked, suspended or dead). begin_switch (kernel.h) and the
// register switch.
[[gnu::always_inline]] inline void switch_to(Cpu& c, Tcb* prev, Tcb* next, SwitchReason why) SPINDLE_REQUIRES(g.lock) {
  if (!begin_switch(c, prev, next, why)) return;
  if (prev->state == ThreadState::kDead) arch::context_switch_final(&next->ctx);
  arch::context_switch(&prev->ctx, &next->ctx);
  finish_switch();
}
}  // namespace

void handle_irq(unsigned sources) {
  Cpu& c = this_cpu();
  g.lock.lock();
  ++c.irqs;
  ++c.irq_depth;
  note_stack_depth(c.current);
  if (sources & arch::kIrqTimer) {
    c.programmed = UINT64_MAX;  // the one-shot has fired
    std::uint64_t now = arch::now_ns();
    c.clock_hint = now;
    while (TimerNode* n = c.timers.pop_expired(now)) {
      Timer* t = reinterpret_cast<Timer*>(n);
      t->node.owner = -1;
      timer_fire(t);
    }
    if (c.slice_end == kSliceFromNextTick) {
      c.slice_end = now + g.timeslice_ns;  // the running thread's slice starts here
    } else if (c.slice_end != 0 && now >= c.slice_end) {
      if (c.rq.top_priority() >= c.current->run.priority) {
        c.need_resched = true;
        c.slice_expired = true;
      } else {
        c.slice_end = now + g.timeslice_ns;  // nobody to share with: renew
      }
    }
    program_timer(c);
  }
  if (sources & arch::kIrqForeign) {
    ++c.watch_wakeups;
    foreign_polls_now();
  }
  // An IPI carries no message: the sender set need_resched (or shutdown),
  // or queued external completions.
  deliver_external_wakes();
  --c.irq_depth;
  if (c.need_resched) schedule(c.slice_expired ? SwitchReason::kSliceEnd : SwitchReason::kPreempt);
  unlock_keep_irqs_masked();
}

bool wait_spin_begin(TimePoint deadline) {
  if (in_user_process() || arch::cpu_count() < 2 || !arch::irqs_enabled()) return false;
  if (deadline != kForever && deadline_after(Duration(kWaitSpinMinTimeout)) > deadline) return false;
  arch::IrqState s = arch::irq_save();  // the mark goes on the CPU we run on
  Cpu& c = this_cpu();
  bool spin = c.irq_depth == 0 && c.current != c.idle && c.rq.empty();
  if (spin) {
    c.waiter_spinning.store(true, std::memory_order_relaxed);
    bump(c.wait_spins);
  }
  arch::irq_restore(s);
  return spin;
}

void wait_spin_end(bool satisfied) {
  // Only the current thread sets its CPU's mark, and every schedule()
  // clears it: a mark on the CPU we run on now is ours.
  arch::IrqState s = arch::irq_save();
  Cpu& c = this_cpu();
  c.waiter_spinning.store(false, std::memory_order_relaxed);
  if (satisfied) bump(c.wait_spin_hits);
  arch::irq_restore(s);
}

Status block_current(WaitQueue* wq, TimePoint deadline) {
  Cpu& c = this_cpu();
  Tcb* self = c.current;
  if (c.irq_depth != 0 || self == c.idle) panic("a blocking call from an interrupt handler or the idle thread");
  // An ending thread leaves at once, unlinked through wait_queue: a waiter
  // left linked would stay in the queue after its Tcb is freed and reused.
  if (self->wait_queue != wq) panic("kernel: thread '%s' blocks on a wait queue it is not linked on", self->name);
  if (self->ending) {
    // As wake() would undo the wait, without the switch.
    if (self->wait_queue) self->wait_queue->remove(self);
    if (self->lock_wait) lock_waiter_left(self);
    return Status::kInterrupted;
  }
  self->state = ThreadState::kBlocked;
  self->wait_queue = wq;
  self->wake_status = Status::kOk;
  if (deadline != kForever) timer_arm(&self->timer, static_cast<std::uint64_t>(deadline.time_since_epoch().count()));
  if (wq) watchdog_arm(self);
  // schedule(kBlock) inline: self is not running, so nothing to place.
  clear_resched(c);
  switch_to(c, self, pick_next(c), SwitchReason::kBlock);
  return self->wake_status;
}

Status switch_directly(Tcb* next) {
  Cpu& c = this_cpu();
  Tcb* self = block_for_direct(c, next);
  switch_to(c, self, next, SwitchReason::kBlock);
  return self->wake_status;
}

Status block_and_switch_to(Tcb* next, TimePoint deadline) {
  Cpu& c = this_cpu();
  Tcb* self = c.current;
  bool direct = direct_switch_ok(c, self, next);
  if (!direct) {
    wake(next, Status::kOk);
    return block_current(nullptr, deadline);
  }
  // next's wait ends as wake() would end it (no queue, no watchdog: it
  // blocked with none), then it runs here instead of being queued.
  // (Under the lock, self's timer cannot fire before it has blocked.)
  if (next->timer.cpu() >= 0) timer_cancel(&next->timer);
  if (deadline != kForever) timer_arm(&self->timer, static_cast<std::uint64_t>(deadline.time_since_epoch().count()));
  return switch_directly(next);
}

void wake(Waiter* w, Status s) {
  // A second wake of one wait would queue a thread that is already
  // queued or running, and corrupt a run queue far from the cause.
  if (!w->async && static_cast<Tcb*>(w)->state != ThreadState::kBlocked) {
    const Tcb* t = static_cast<Tcb*>(w);
    panic("kernel: wake of thread '%s', which is %s, not blocked", t->name, to_string(t->state));
  }
  if (w->wait_queue) w->wait_queue->remove(w);
  if (w->lock_wait) lock_waiter_left(w);
  timer_cancel(&w->timer);
  w->wake_status = s;
  if (w->async) {
    job_woken(w);
    return;
  }
  Tcb* t = static_cast<Tcb*>(w);
  timer_cancel(&t->watchdog.timer);
  make_ready(t);
}

namespace {
// Takes t out of the run queue it is waiting in, if any; returns whether it was.
bool unqueue_ready(Tcb* t) {
  if (t->state != ThreadState::kReady) return false;
  g.cpus[t->cpu].rq.remove(&t->run);
  return true;
}

// After t's priority or affinity changed: put it back where it belongs.
void requeue(Tcb* t, bool was_queued) SPINDLE_REQUIRES(g.lock) {
  if (was_queued) {
    enqueue(t, false, false);
  } else if (t->state == ThreadState::kRunning) {
    resched_cpu(t->cpu);  // its CPU re-evaluates; it may keep running
  } else if (t->state == ThreadState::kBlocked && t->wait_queue) {
    t->wait_queue->reposition(t);
  }
}
}  // namespace

void set_effective_priority(Tcb* t, int priority) {
  bool queued = unqueue_ready(t);
  t->run.priority = priority;
  requeue(t, queued);
}

void update_priority(Tcb* t) {
  // Walks the chain t -> the owner of the lock t waits for -> ... A chain
  // longer than the thread count is a cycle (a deadlock nobody detected):
  // stop rather than loop.
  for (unsigned hops = 0; t && hops <= g.live_threads; ++hops) {
    int p = t->base_priority;
    t->held_locks.for_each([&p](LockState* s) {
      if (!s->inherit) return;
      if (Waiter* top = s->waiters.front(); top && top->run.priority > p) p = top->run.priority;
    });
    if (p == t->run.priority) return;
    set_effective_priority(t, p);  // re-sorts the queue t waits in
    LockState* next = t->blocked_lock();
    t = next && next->inherit ? next->owner : nullptr;
  }
}

void set_thread_affinity(Tcb* t, CpuMask mask) {
  bool queued = unqueue_ready(t);
  t->run.affinity = mask;
  requeue(t, queued);
}

}  // namespace spindle::kernel

namespace spindle {

Status set_timeslice(Duration slice) {
  if (slice < kMinTimeslice || slice > kMaxTimeslice) return Status::kInvalidArgument;
  if (kernel::in_user_process()) return Status::kInvalidState;  // the kernel's setting, not a process's
  kernel::LockGuard guard;
  kernel::g.timeslice_ns = static_cast<std::uint64_t>(slice.count());
  return Status::kOk;
}

Status set_cpu_time_accounting(bool on) {
  if (kernel::in_user_process()) return Status::kInvalidState;  // the kernel's setting, not a process's
  kernel::LockGuard guard;
  if (on != kernel::g.cpu_time) {
    // Running threads: switched on, they are charged from now; switched
    // off, their run so far is added. An idle CPU keeps its idle period.
    std::uint64_t now = arch::now_ns();
    for (unsigned i = 0; i < kernel::g.ncpus; ++i) {
      kernel::Cpu& c = kernel::g.cpus[i];
      if (c.current == c.idle) continue;
      if (!on) c.current->cpu_ns += now - c.switched_in_at;
      c.switched_in_at = now;
    }
  }
  kernel::g.cpu_time = on;
  return Status::kOk;
}

bool cpu_time_accounting() {
  if (kernel::in_user_process()) return kernel::sys(kernel::kSysInfo, kernel::kInfoCpuTime) != 0;
  kernel::LockGuard guard;
  return kernel::g.cpu_time;
}

Duration timeslice() {
  if (kernel::in_user_process()) {
    return Duration(static_cast<Duration::rep>(kernel::sys(kernel::kSysInfo, kernel::kInfoTimeslice)));
  }
  kernel::LockGuard guard;
  return Duration(static_cast<Duration::rep>(kernel::g.timeslice_ns));
}

}  // namespace spindle
