// Coroutines and stats inside processes, the kernel's side (system calls
// 31..33; the process's side is coro.cc and stats.cc in its own copy).
//
// A process's coroutine job lives in the process's memory, so the kernel
// cannot queue it on a futex word the way it queues a kernel job. Instead
// kSysJobWait queues a Proxy: a kernel Waiter (async, its timer of kind
// kProxyTimeout) that
// stands for the job on the word, with the job's priority and deadline.
// When a wake, the timer or a cancel wakes it, job_woken hands it to
// user_proxy_woken, which moves it to its port's `done` list and wakes the
// process's collector thread, waiting in kJobCollect; the collector copies
// out the job's address (the token) and status and pushes the job to an
// executor of the process. The kernel never reads or writes the job
// itself, except the one byte of its cancel flag after queueing a proxy
// (so a cancel that raced with the wait is not lost), through a checked
// user read.
//
// Ownership and locking: a JobPort belongs to its process (created at the
// first wait or collect, freed with close_job_port when the process has
// no thread left, before its address space goes: every proxy's futex key
// is a kernel alias of the process's memory). A Proxy is in exactly one of
// the port's lists: `parked` (queued on a word and/or its timer armed) or
// `done` (woken, not yet collected). The kernel lock guards both lists,
// the counts and every proxy's Waiter fields. At most kMaxProxies proxies
// per process (kLimit past it).
//
// Owner-aware locks (lock_async, kSysJobLock): a job's lock identity is a
// kernel id (kJobId) with an Identity registered under it, so owner checks
// find it alive and a lock word naming it is not owner-died; it is in its
// port's `ids` until the job ends (kJobIdFree) or the process goes
// (close_job_port): then every contended lock naming it passes to its next
// waiter with kOwnerDied (release_job_locks), and an uncontended one is
// found owner-died by its next locker (the id is unregistered). A lock
// wait queues a Proxy whose head.id is the job's id on the lock's
// LockState, like a kernel job's futex_lock_async: an unlock hands it the
// lock (the word names the job), and the post carries kOk or kOwnerDied.
// A job owner takes no part in priority inheritance (no held_locks); a
// waiting proxy counts like a kernel job's wait (its priority). Identities
// are counted with the proxies against kMaxProxies.
#include <new>

#include "spindle/stats.h"
#include "uprocess.h"
#include "user.h"

namespace spindle::kernel {

struct Proxy : Waiter {
  JobPort* port = nullptr;
  std::uint64_t token = 0;  // the job's user address
  ListNode link;            // in port->parked or port->done
};

// A job's lock identity; its timer kind (kProxyTimeout, never armed) and
// async mark it as a process's job's (find_owner finds only identities,
// threads and kernel jobs, never proxies).
struct Identity : Waiter {
  JobPort* port = nullptr;
  ListNode link;  // in port->ids
};

struct JobPort {
  Proc* proc = nullptr;  // its process
  List<Proxy, &Proxy::link> parked;
  List<Proxy, &Proxy::link> done;
  List<Identity, &Identity::link> ids;
  unsigned count = 0;                 // proxies in both lists, and ids
  unsigned kicks = 0;                 // kJobKick calls not yet seen by a collect
  std::atomic<std::uint32_t> seq{0};  // bumped at every post and kick: collectors wait on it
};

Proc* waiter_process(const Waiter* w) {
  if (!w->async) return process_of(static_cast<const Tcb*>(w));
  if (w->timer.kind() == TimerKind::kProxyTimeout) return static_cast<const Proxy*>(w)->port->proc;
  return nullptr;  // a kernel coroutine job
}

namespace {

constexpr unsigned kMaxProxies = 16384;

std::uint64_t result(Status s) { return static_cast<std::uint64_t>(static_cast<int>(s)); }

// p's port, created on first use; nullptr when memory runs out.
JobPort* port_of(Proc* p) {
  {
    LockGuard guard;
    if (p->jobs) return p->jobs;
  }
  auto* fresh = new (std::nothrow) JobPort;
  if (!fresh) return nullptr;
  LockGuard guard;
  if (p->jobs) {
    delete fresh;  // another thread made one meanwhile (the kernel heap never sleeps)
  } else {
    fresh->proc = p;
    p->jobs = fresh;
  }
  return p->jobs;
}

void cancel_token(JobPort* port, std::uint64_t token) SPINDLE_REQUIRES(g.lock) {
  Proxy* found = nullptr;
  port->parked.for_each([&](Proxy* x) {
    if (x->token == token) found = x;
  });
  if (found) wake(found, Status::kInterrupted);  // -> user_proxy_woken
}

// A proxy for the job at token (its priority checked), or nullptr with
// *why set. Not yet queued.
Proxy* new_proxy(Proc* p, std::uint64_t priority_bits, std::uint64_t token, Status* why) {
  auto priority = static_cast<int>(static_cast<std::int32_t>(static_cast<std::uint32_t>(priority_bits) >> 8));
  if (priority < kMinPriority || priority > kMaxPriority) {
    *why = Status::kInvalidArgument;
    return nullptr;
  }
  JobPort* port = port_of(p);
  auto* x = port ? new (std::nothrow) Proxy : nullptr;
  if (!x) {
    *why = Status::kNoMemory;
    return nullptr;
  }
  x->async = true;
  x->run.priority = priority;
  x->timer.set_kind(TimerKind::kProxyTimeout);  // marks it a proxy (job_woken)
  x->port = port;
  x->token = token;
  return x;
}

// x was queued (a word or a lock, its timer armed): it is parked now.
void park_proxy(Proxy* x) SPINDLE_REQUIRES(g.lock) {
  x->parked = true;
  x->port->parked.push_back(x);
  ++x->port->count;
}

// After a proxy was queued, outside the kernel lock: a cancel that came
// before it found nothing to wake; the job's flag (a byte at cancel_at)
// tells, since job_cancel sets it before it looks.
void check_cancelled(JobPort* port, std::uint64_t token, std::uint64_t cancel_at) {
  std::uint8_t cancelled = 0;
  if (cancel_at != 0 && arch::user_read(&cancelled, cancel_at, 1) && cancelled != 0) {
    LockGuard guard;
    cancel_token(port, token);
  }
}

// kSysJobWait: word, expected, deadline, order | priority << 8, token, the
// job's cancel flag (a byte); kOk: a proxy waits for the job. With
// kJobWaitChannel in the order argument: handle, writable, ... (a channel
// end's word, channel_wait_word; ready now: kWouldBlock). With
// kJobWaitTake: a take of a unit of the counting word (user.h; the word
// must be writable): kOk, taken at once; kWouldBlock, the proxy waits as a
// taker (futex_take_async).
std::uint64_t sys_job_wait(Proc* p, const std::uint64_t* a) {
  const bool channel = a[3] & kJobWaitChannel;
  const bool take = !channel && (a[3] & kJobWaitTake);
  UserWord uw;
  if (!channel && !uw.translate(p, a[0], take)) return result(Status::kInvalidArgument);
  const Status queued = take ? Status::kWouldBlock : Status::kOk;
  WaitOrder order = a[3] & 1 ? WaitOrder::kFifo : WaitOrder::kPriority;
  TimePoint deadline = deadline_from(a[2]);
  Status why = Status::kOk;
  Proxy* x = new_proxy(p, a[3], a[4], &why);
  if (!x) return result(why);
  JobPort* port = x->port;  // x may be collected and freed once parked
  {
    LockGuard guard;
    if (!channel && !uw.recheck(p, a[0], take)) {
      delete x;
      return result(Status::kInvalidArgument);
    }
    std::atomic<std::uint32_t>* word = uw.word;
    const std::atomic<std::uint32_t>* on = word;
    auto expected = static_cast<std::uint32_t>(a[1]);
    Status now = channel ? channel_wait_word(p->handles, Handle{static_cast<std::uint32_t>(a[0])}, a[1] != 0, &on,
                                             &expected)
                         : Status::kWouldBlock;
    const bool passed = deadline != kForever && deadline <= Clock::now();
    if (now != Status::kWouldBlock) {
      now = now == Status::kOk ? Status::kWouldBlock : now;  // ready: not queued
    } else if (port->count >= kMaxProxies) {
      now = Status::kLimit;
    } else if (take) {
      now = !passed                         ? futex_take_async(x, word, order)
            : count_word::try_take(*word) ? Status::kOk
                                          : Status::kTimedOut;
    } else if (passed) {
      now = on->load(std::memory_order_seq_cst) != expected ? Status::kWouldBlock : Status::kTimedOut;
    } else {
      now = futex_wait_async(x, on, expected, order, "job");
    }
    if (now != queued) {
      delete x;
      return result(now);
    }
    if (deadline != kForever) timer_arm(&x->timer, static_cast<std::uint64_t>(deadline.time_since_epoch().count()));
    park_proxy(x);
  }
  check_cancelled(port, a[4], a[5]);  // the port outlives the call (this thread is alive)
  return result(queued);
}

// The identity registered under id if it is one of port's; else nullptr.
Identity* identity_of(JobPort* port, std::uint64_t id) SPINDLE_REQUIRES(g.lock) {
  if (id == 0 || id > lock_word::kOwnerMask) return nullptr;
  Waiter* w = find_owner(id);
  if (!w || !w->async || w->timer.kind() != TimerKind::kProxyTimeout) return nullptr;
  auto* i = static_cast<Identity*>(w);
  return i->port == port ? i : nullptr;
}

// kJobId: a new identity; its id, or 0 (no memory, no id left, kMaxProxies).
std::uint64_t new_identity(Proc* p) {
  JobPort* port = port_of(p);
  auto* i = port ? new (std::nothrow) Identity : nullptr;
  if (!i) return 0;
  i->async = true;
  i->timer.set_kind(TimerKind::kProxyTimeout);
  i->port = port;
  LockGuard guard;
  i->head.id = port->count < kMaxProxies ? allocate_id() : 0;
  if (i->head.id == 0) {
    delete i;
    return 0;
  }
  register_id(i);
  port->ids.push_back(i);
  ++port->count;
  return i->head.id;
}

// The identity's job ended or its process goes: the locks naming it pass
// as owner-died, and the id is free.
void free_identity(JobPort* port, Identity* i) SPINDLE_REQUIRES(g.lock) {
  release_job_locks(i->head.id);
  unregister_id(i);
  decltype(port->ids)::remove(i);
  --port->count;
  delete i;
}

// kSysJobLock: word, policy bits | priority << 8 | aging << 32, id,
// deadline, token, the job's cancel flag. One attempt (futex_lock_async)
// for the job's identity id; kWouldBlock: its proxy is queued on the lock.
std::uint64_t sys_job_lock(Proc* p, const std::uint64_t* a) {
  UserWord uw;
  if (!uw.translate(p, a[0], true)) return result(Status::kInvalidArgument);
  LockPolicy policy = policy_from_bits(a[1]);
  policy.aging = static_cast<std::uint32_t>(a[1] >> 32);
  policy.name = "job lock";
  Status why = Status::kOk;
  Proxy* x = new_proxy(p, a[1] & 0xffff'ff00u, a[4], &why);
  if (!x) return result(why);
  JobPort* port = x->port;  // x may be collected and freed once parked
  {
    LockGuard guard;
    Status now = Status::kWouldBlock;
    if (!identity_of(port, a[2]) || !uw.recheck(p, a[0], true)) {
      now = Status::kInvalidArgument;
    } else if (port->count >= kMaxProxies) {
      now = Status::kLimit;
    } else {
      x->head.id = a[2];  // a hand-off writes it to the word
      now = futex_lock_async(x, uw.word, policy, deadline_from(a[3]), p, uw.shared);
    }
    if (now != Status::kWouldBlock) {
      delete x;
      return result(now);
    }
    park_proxy(x);
  }
  check_cancelled(port, a[4], a[5]);
  return result(Status::kWouldBlock);
}

// kJobCollect: waits until a proxy was woken (or a kick), then hands over
// up to n of them. How many; 0 after a kick; ~0 for a bad buffer.
std::uint64_t collect(Proc* p, std::uint64_t out, std::uint64_t n) {
  if (n == 0 || n > 256 || !arch::user_accessible(p->as, out, n * sizeof(UserJobDone), true)) {
    return ~std::uint64_t{0};
  }
  JobPort* port = port_of(p);
  if (!port) return ~std::uint64_t{0};
  UserJobDone buf[32];
  if (n > sizeof buf / sizeof buf[0]) n = sizeof buf / sizeof buf[0];
  for (;;) {
    std::uint32_t seen;
    unsigned got = 0;
    {
      LockGuard guard;
      while (got < n) {
        Proxy* x = port->done.pop_front();
        if (!x) break;
        buf[got++] = UserJobDone{x->token, static_cast<std::uint64_t>(static_cast<int>(x->wake_status))};
        --port->count;
        delete x;
      }
      if (got == 0 && port->kicks != 0) {
        port->kicks = 0;
        return 0;
      }
      seen = port->seq.load(std::memory_order_relaxed);
    }
    if (got != 0) {
      (void)arch::user_write(out, buf, got * sizeof(UserJobDone));  // checked writable above
      return got;
    }
    // An ending process's collector gives up here (and ends on its way out).
    if (futex_wait(&port->seq, seen) == Status::kInterrupted) return 0;
  }
}

std::uint64_t sys_job_ctl(Proc* p, const std::uint64_t* a) {
  switch (a[0]) {
    case kJobCollect: return collect(p, a[1], a[2]);
    case kJobCancel: {
      LockGuard guard;
      if (p->jobs) cancel_token(p->jobs, a[1]);
      return result(Status::kOk);
    }
    case kJobId: return new_identity(p);
    case kJobIdFree: {
      LockGuard guard;
      Identity* i = p->jobs ? identity_of(p->jobs, a[1]) : nullptr;
      if (!i) return result(Status::kNotFound);
      free_identity(p->jobs, i);
      return result(Status::kOk);
    }
    case kJobUnlock: {
      UserWord uw;
      if (!uw.translate(p, a[1], true)) return result(Status::kInvalidArgument);
      LockGuard guard;
      if (!uw.recheck(p, a[1], true)) return result(Status::kInvalidArgument);
      if (!p->jobs || !identity_of(p->jobs, a[2])) return result(Status::kInvalidState);
      return result(futex_unlock_as(uw.word, a[2]));
    }
    case kJobKick: {
      JobPort* port = port_of(p);
      if (!port) return result(Status::kNoMemory);
      LockGuard guard;
      ++port->kicks;
      port->seq.fetch_add(1, std::memory_order_relaxed);
      futex_wake_locked(&port->seq, ~0u);
      return result(Status::kOk);
    }
    default: return result(Status::kInvalidArgument);
  }
}

// ---------------------------------------------------------------------------
// Stats of the process's own threads (its kernel threads' accounting).

void fill_user(const Tcb* t, std::uint64_t now, UserThreadStats* u) SPINDLE_REQUIRES(g.lock) {
  fill_thread_stats(t, now, &u->stats);
  u->stats.state = nullptr;
  u->state = static_cast<std::uint32_t>(t->state);
}

std::uint64_t sys_stats(Proc* p, const std::uint64_t* a) {
  switch (a[0]) {
    case kStatsThreads: {  // out, n: how many threads the process has (fills up to n)
      std::uint64_t cap = a[2];
      if (cap > 4096 || !arch::user_accessible(p->as, a[1], cap * sizeof(UserThreadStats), true)) {
        return ~std::uint64_t{0};
      }
      std::uint64_t n = 0;
      for (;;) {
        UserThreadStats row;
        bool more;
        {
          LockGuard guard;
          // The n-th live thread (unreaped, in creation order).
          UserThread* ut = p->threads.front();
          for (std::uint64_t i = 0; ut && i < n; ++i) ut = p->threads.next(ut);
          more = ut != nullptr;
          if (more && n < cap) fill_user(ut->tcb, arch::now_ns(), &row);
        }
        if (!more) return n;
        if (n < cap) (void)arch::user_write(a[1] + n * sizeof row, &row, sizeof row);
        ++n;
      }
    }
    case kStatsThread: {  // id, out: kNotFound unless a thread of this process
      if (!arch::user_accessible(p->as, a[2], sizeof(UserThreadStats), true)) return result(Status::kInvalidArgument);
      UserThreadStats row;
      {
        LockGuard guard;
        UserThread* ut = a[1] != 0 ? find_user_thread(p, a[1]) : nullptr;
        if (!ut) return result(Status::kNotFound);
        fill_user(ut->tcb, arch::now_ns(), &row);
      }
      (void)arch::user_write(a[2], &row, sizeof row);
      return result(Status::kOk);
    }
    case kStatsSystem: {  // out: the CPUs, and the process's live threads
      if (!arch::user_accessible(p->as, a[1], sizeof(SystemStats), true)) return result(Status::kInvalidArgument);
      SystemStats s = system_stats();
      {
        LockGuard guard;
        s.threads = p->alive;
      }
      (void)arch::user_write(a[1], &s, sizeof s);
      return result(Status::kOk);
    }
    default: return result(Status::kInvalidArgument);
  }
}

}  // namespace

void user_proxy_woken(Waiter* w) {
  auto* x = static_cast<Proxy*>(w);
  JobPort* port = x->port;
  x->parked = false;
  x->futex_key = nullptr;
  decltype(port->parked)::remove(x);
  port->done.push_back(x);
  port->seq.fetch_add(1, std::memory_order_relaxed);
  futex_wake_locked(&port->seq, 1);
}

void close_job_port(Proc* p) {
  JobPort* port = p->jobs;
  if (!port) return;
  p->jobs = nullptr;
  while (Proxy* x = port->parked.pop_front()) {
    if (x->wait_queue) x->wait_queue->remove(x);
    if (x->lock_wait) lock_waiter_left(x);  // a lock wait: its LockState may go
    timer_cancel(&x->timer);
    delete x;
  }
  while (Proxy* x = port->done.pop_front()) delete x;
  // After the proxies: a lock passed on as owner-died goes to another
  // process's waiter, never to a proxy of this one.
  while (Identity* i = port->ids.front()) free_identity(port, i);
  delete port;
}

bool jobs_syscall(Proc* p, arch::SyscallFrame& f) {
  switch (f.number) {
    case kSysJobWait: f.result = sys_job_wait(p, f.arg); return true;
    case kSysJobCtl: f.result = sys_job_ctl(p, f.arg); return true;
    case kSysJobLock: f.result = sys_job_lock(p, f.arg); return true;
    case kSysStats: f.result = sys_stats(p, f.arg); return true;
    default: return false;
  }
}

}  // namespace spindle::kernel
