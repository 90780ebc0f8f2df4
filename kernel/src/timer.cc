// Kernel timers (tickless: each CPU's hardware one-shot is set to its
// earliest deadline or slice end) and the sleep calls built on them.
#include "kernel.h"
#include "user.h"

namespace spindle {

Clock::time_point Clock::now() noexcept {
  return time_point(duration(static_cast<rep>(arch::now_ns())));
}

TimePoint deadline_after(Duration d) noexcept {
  TimePoint now = Clock::now();
  if (d <= Duration::zero()) return now;
  if (d >= kForever - now) return kForever;
  return now + d;
}

namespace kernel {

void timer_arm(Timer* t, std::uint64_t deadline) {
  if (t->cpu() >= 0) timer_cancel(t);
  Cpu& c = this_cpu();
  t->node.owner = static_cast<std::int16_t>(c.id);
  c.timers.insert(&t->node, deadline);
  if (deadline < c.programmed) {
    c.programmed = deadline;
    arch::set_timer(deadline);
  }
}

void timer_fire(Timer* t) {
  switch (t->kind()) {
    case TimerKind::kThreadTimeout: thread_timeout(t); return;
    case TimerKind::kWatchdog: watchdog_fire(t); return;
    case TimerKind::kJobTimeout:
    case TimerKind::kProxyTimeout: job_timeout(t); return;
    case TimerKind::kJobForeignPoll: job_foreign_poll(t); return;
    case TimerKind::kNone: break;
  }
  panic("a kernel timer without a kind fired");
}

void timer_disarm(Timer* t) {
  g.cpus[t->cpu()].timers.remove(&t->node);
  t->node.owner = -1;
}

}  // namespace kernel

namespace this_thread {

Status sleep_until(TimePoint t) {
  using namespace kernel;
  if (in_user_process()) return status_from(sys(kSysSleep, deadline_arg(t)));
  if (!arch::irqs_enabled()) return Status::kInvalidState;  // interrupt context
  LockGuard guard;
  if (t <= Clock::now()) return Status::kOk;
  // A sleep is a wait on no queue that only its timer ends (or the end of
  // the sleeper's process: kInterrupted).
  for (;;) {
    Status s = block_current(nullptr, t);
    if (s == Status::kTimedOut) return Status::kOk;
    if (s == Status::kInterrupted) return s;
  }
}

Status sleep_for(Duration d) { return sleep_until(deadline_after(d)); }

}  // namespace this_thread
}  // namespace spindle
