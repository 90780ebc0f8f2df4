// The coroutine runtime: jobs, executors and the frame pool.
//
// A job (CoJob) is a Waiter (kernel.h) with `async` set: when it suspends on a
// kernel object it is linked into the same WaitQueue as threads, in the
// queue's order, and wake() hands it to job_woken instead of the run queue.
//
// Executors: one Spindle thread per vCPU, pinned, each with a ready queue
// of jobs (guarded by the executor's own spin lock, taken with interrupts
// masked; lock order: kernel lock, then an executor lock). An executor runs
// its own jobs in FIFO order, steals unpinned jobs from the others when it
// has none, and sleeps on its `sleeping` word (futex) when there is nothing
// to steal. Pushing a job to a sleeping executor wakes it; pushing to a
// busy one wakes one sleeping executor to steal.
//
// Job lifetime: a reference for the job itself (dropped when it ends) and
// one per JoinHandle; the last release destroys the root frame (holding
// the result) and returns the record to the pool.
//
// Invariants (kernel lock): a job is `parked` iff it waits on a kernel
// queue and/or its timer and nothing has woken it; a parked job is in no
// executor queue; `resume` is written before the job can be woken.
// Cancellation sets `cancel` and wakes a parked job; an executor never
// resumes a job whose `cancel` (or `fail`) is set, it destroys its root.
//
// In a process (in_user_process(), aarch64) the same runtime runs in the
// process's copy, on its own globals: executors are threads of the
// process, the executor locks are futex locks (no interrupt masking at
// EL0), frames come from the process's heap, and the running job is found
// by the executor's thread id (no Tcb at EL0). A kernel wait cannot queue
// a job of user memory, so it queues a kernel proxy for it instead
// (kSysJobWait, ujobs.cc): when the proxy is woken, timed out or cancelled
// the kernel posts the job's address and status, and the process's
// collector thread (collector_main) takes them (kSysJobCtl) and pushes the
// jobs to their executors. Owner-aware async locks (lock_async) work the
// same way: a job's lock identity is a kernel id (kJobId), its lock wait a
// proxy queued on the lock (kSysJobLock) and handed the lock for it, its
// slow unlock kJobUnlock, and its end frees the id (kJobIdFree: its locks
// pass as owner-died).
#include <coroutine>
#include <new>

#include "kernel.h"
#include "spindle/console.h"
#include "spindle/task.h"
#include "user.h"

namespace spindle {
namespace detail {

// Field order matters for size: the one-byte fields first fill the tail of
// the Waiter (an idle coroutine's whole cost is its frame plus this).
struct CoJob : kernel::Waiter {
  std::uint8_t fail = 0;     // a Status set by job_fail before it is requeued (0: none)
  std::coroutine_handle<> resume;  // where the job continues
  std::coroutine_handle<> root;    // its outermost frame; null once destroyed
  CoJob* parent = nullptr;         // signalled when it ends (a reference held)
  std::atomic<std::uint32_t> refs{2};
  std::atomic<std::uint32_t> done{0};    // kRunning, kJoined (someone waits on it) or kEnded
  std::atomic<std::uint32_t> signal{0};  // bumped when a child with signal_parent ends
  std::int8_t home = 0;      // executor it is queued on / last ran on (kMaxCpus <= 64)
  std::int8_t pinned = -1;   // executor it must run on, or -1
  std::atomic<bool> cancel{false};
  std::uint8_t status = 0;   // the Status it ended with
};
static_assert(sizeof(void*) != 8 || sizeof(CoJob) <= 160, "a job record should stay within 160 bytes");

// The done word: a joiner marks it kJoined before it waits, so a job that
// ends with nobody waiting wakes nobody (no kernel lock).
constexpr std::uint32_t kRunning = 0, kEnded = 1, kJoined = 2;

}  // namespace detail

namespace kernel {
namespace {

using detail::CoJob;

CoJob* job_of(Waiter* w) { return static_cast<CoJob*>(w); }
CoJob* job_of(RunNode* n) { return job_of(Waiter::from_run(n)); }

// A test-and-set lock taken with this CPU's interrupts masked, so a timer
// interrupt that wakes a job cannot find it held on the same CPU. In a
// process (EL0 cannot mask, and no interrupt handler takes it there) a
// futex lock on the same word: 0 free, 1 held, 2 held with sleepers.
class IrqSpin {
 public:
  arch::IrqState lock() {
    if (in_user_process()) {
      if (flag_.exchange(1, std::memory_order_acquire) != 0) {
        while (flag_.exchange(2, std::memory_order_acquire) != 0) (void)futex_wait(&flag_, 2);
      }
      return 0;
    }
    arch::IrqState s = arch::irq_save();
    while (flag_.exchange(1, std::memory_order_acquire)) {
      while (flag_.load(std::memory_order_relaxed)) arch::cpu_relax();
    }
    return s;
  }
  void unlock(arch::IrqState s) {
    if (in_user_process()) {
      if (flag_.exchange(0, std::memory_order_release) == 2) (void)futex_wake(&flag_, 1);
      return;
    }
    flag_.store(0, std::memory_order_release);
    arch::irq_restore(s);
  }

 private:
  std::atomic<std::uint32_t> flag_{0};
};

struct Executor {
  IrqSpin lock;
  List<RunNode, &RunNode::link> ready;  // jobs, FIFO
  std::atomic<std::uint32_t> queued{0};  // ready's length, for a peek without the lock
  std::atomic<std::uint32_t> sleeping{0};  // 1: waits on this word for work
  // In a process: the executor's thread and the job it runs (the kernel's
  // copy keeps the running job in the thread's Tcb).
  std::atomic<ThreadId> thread{0};
  CoJob* current = nullptr;
};

// Frame pool: size classes of 8 bytes up to 1 KiB, with a free list per
// class per CPU (interrupts masked while a CPU touches its own lists).
// Bigger frames come straight from the kernel heap.
constexpr std::size_t kGranule = 8;
constexpr unsigned kClasses = 128;
constexpr unsigned kCacheMax = 8192;  // blocks per class per CPU beyond which frees go back to the heap

struct FreeBlock {
  FreeBlock* next;
};
struct FrameCache {
  FreeBlock* head[kClasses] = {};
  std::uint32_t count[kClasses] = {};
  std::atomic<std::int64_t> bytes{0};  // allocated minus freed on this CPU (may go negative)
  std::atomic<std::int64_t> jobs{0};        // job records allocated minus freed (on this CPU)
  std::atomic<std::int64_t> unfinished{0};  // jobs spawned minus ended (on this CPU)
};
FrameCache g_frames[kMaxCpus];

// Only this CPU writes its counts (interrupts masked): a load and a store,
// no atomic read-modify-write on the hot path; readers sum relaxed loads.
// In a process every count is slot 0's, changed atomically.
void add(std::atomic<std::int64_t>& n, std::int64_t delta) {
  n.store(n.load(std::memory_order_relaxed) + delta, std::memory_order_relaxed);
}
void account(FrameCache& c, std::int64_t delta) { add(c.bytes, delta); }

// Job counts move on the running CPU's cache; only their sums mean anything.
void count_job(std::atomic<std::int64_t> FrameCache::*which, std::int64_t delta) {
  if (in_user_process()) {
    (g_frames[0].*which).fetch_add(delta, std::memory_order_relaxed);
    return;
  }
  arch::IrqState s = arch::irq_save();
  add(g_frames[this_cpu().id].*which, delta);
  arch::irq_restore(s);
}
std::atomic<unsigned> g_fail_frames{0};  // testing: allocations still to fail

Executor g_exec[kMaxCpus];
std::atomic<unsigned> g_nexec_{0};  // executors started; read with nexec()
unsigned nexec() { return g_nexec_.load(std::memory_order_acquire); }
std::atomic<unsigned> g_exec_state{0};  // 0: none, 1: being started, 2: running
std::atomic<unsigned> g_sleepers{0};
std::atomic<bool> g_stopping{false};          // executors exit when idle
std::atomic<std::uint32_t> g_running_execs{0};  // executor threads alive (futex word)
std::uint64_t g_parked = 0;  // jobs parked on kernel waits (kernel lock)
std::atomic<std::uint64_t> g_user_parked{0};  // in a process: jobs whose kernel proxy waits
std::atomic<std::uint32_t> g_next_home{0};     // in a process: where the next spawned job goes
std::atomic<std::uint32_t> g_sleep_word{0};    // in a process: what a sleeping job waits on (never woken)

CoJob* current_job() {
  if (in_user_process()) {
    ThreadId me = this_thread::id();
    for (unsigned i = 0, n = nexec(); i < n; ++i) {
      if (g_exec[i].thread.load(std::memory_order_relaxed) == me) return g_exec[i].current;
    }
    return nullptr;
  }
  return current_thread()->job;
}

CoJob* running_job(const char* what) {
  CoJob* j = current_job();
  if (!j) panic("%s: co_await of a Spindle awaitable outside a spawned coroutine (use spawn or run)", what);
  return j;
}

void wake_executor(Executor& e, bool locked) SPINDLE_NO_THREAD_SAFETY_ANALYSIS {
  if (locked) {
    futex_wake_locked(&e.sleeping, 1);
  } else {
    futex_wake(&e.sleeping, 1);
  }
}

// Wakes one sleeping executor (if any) so it steals from a busy one.
void wake_thief(bool locked) {
  if (g_sleepers.load(std::memory_order_seq_cst) == 0) return;
  for (unsigned i = 0, n = nexec(); i < n; ++i) {
    Executor& o = g_exec[i];
    if (o.sleeping.load(std::memory_order_relaxed) != 0 && o.sleeping.exchange(0, std::memory_order_seq_cst) != 0) {
      wake_executor(o, locked);
      return;
    }
  }
}

// Queues j on its executor and makes sure someone will run it. `locked`:
// the caller holds the kernel lock.
void push(CoJob* j, bool locked) {
  Executor& e = g_exec[j->home];
  arch::IrqState s = e.lock.lock();
  e.ready.push_back(&j->run);
  e.queued.fetch_add(1, std::memory_order_relaxed);
  e.lock.unlock(s);
  if (e.sleeping.load(std::memory_order_seq_cst) != 0) {
    if (e.sleeping.exchange(0, std::memory_order_seq_cst) != 0) wake_executor(e, locked);
    return;
  }
  if (j->pinned < 0) wake_thief(locked);  // its executor is busy
}

CoJob* pop(unsigned i) {
  Executor& e = g_exec[i];
  arch::IrqState s = e.lock.lock();
  RunNode* n = e.ready.pop_front();
  if (n) e.queued.fetch_sub(1, std::memory_order_relaxed);
  e.lock.unlock(s);
  return n ? job_of(n) : nullptr;
}

// Takes unpinned jobs from another executor's queue, oldest first: half of
// what it has queued (at least one), so a thief does not come back for
// every job. Returns one to run; the rest go to the thief's own queue.
CoJob* steal(unsigned thief) {
  unsigned n = nexec();
  for (unsigned k = 1; k < n; ++k) {
    unsigned v = (thief + k) % n;
    Executor& e = g_exec[v];
    if (e.queued.load(std::memory_order_relaxed) == 0) continue;  // a peek; the lock decides
    List<RunNode, &RunNode::link> taken;
    unsigned count = 0;
    arch::IrqState s = e.lock.lock();
    unsigned want = (e.queued.load(std::memory_order_relaxed) + 1) / 2;
    for (RunNode* r = e.ready.front(); r && count < want;) {
      RunNode* next = e.ready.next(r);
      if (job_of(r)->pinned < 0) {
        decltype(e.ready)::remove(r);
        taken.push_back(r);
        ++count;
      }
      r = next;
    }
    e.queued.fetch_sub(count, std::memory_order_relaxed);
    e.lock.unlock(s);
    if (count == 0) continue;
    for (RunNode* r = taken.front(); r; r = taken.next(r)) job_of(r)->home = static_cast<std::int8_t>(thief);
    CoJob* first = job_of(taken.pop_front());
    if (count > 1) {
      Executor& mine = g_exec[thief];
      s = mine.lock.lock();
      while (RunNode* r = taken.pop_front()) mine.ready.push_back(r);
      mine.queued.fetch_add(count - 1, std::memory_order_relaxed);
      mine.lock.unlock(s);
    }
    return first;
  }
  return nullptr;
}

void free_job(CoJob* j) {
  if (j->root) j->root.destroy();
  count_job(&FrameCache::jobs, -1);
  j->~CoJob();
  detail::frame_free(j, sizeof(CoJob));
}

// The job ended with `status` (its root frame is at its final suspension
// point, or destroyed): release its lock identity, wake its joiners and its
// parent, drop its own reference.
void end_job(CoJob* j, Status status) {
  j->status = static_cast<std::uint8_t>(status);
  count_job(&FrameCache::unfinished, -1);
  CoJob* parent = j->parent;
  if (j->head.id != 0 && in_user_process()) {
    (void)sys(kSysJobCtl, kJobIdFree, j->head.id);
  } else if (j->head.id != 0) {
    LockGuard guard;
    release_job_locks(j->head.id);
    unregister_id(j);
  }
  if (j->done.exchange(detail::kEnded, std::memory_order_acq_rel) == detail::kJoined) {
    futex_wake(&j->done, UINT32_MAX);
  }
  if (parent) {
    parent->signal.fetch_add(1, std::memory_order_seq_cst);
    futex_wake(&parent->signal, UINT32_MAX);
  }
  if (parent) detail::job_release(parent);
  detail::job_release(j);
}

// Destroys the frames of a cancelled or failed job (running their
// destructors: guards unlock, waiter counts drop) and ends it.
void unwind(CoJob* j) {
  Status s = j->cancel.load(std::memory_order_acquire) ? Status::kInterrupted : static_cast<Status>(j->fail);
  if (j->takes_units && j->wake_status == Status::kOk) {
    // A give handed it a unit (job_take) and it was cancelled before it
    // ran: the unit goes back to the word (its next taker, or the count).
    j->takes_units = false;
    auto* word = static_cast<std::atomic<std::uint32_t>*>(const_cast<void*>(j->futex_key));
    j->futex_key = nullptr;
    (void)futex_give(word, 1, count_word::kCountMask);
  }
  std::coroutine_handle<> root = std::exchange(j->root, {});
  root.destroy();
  end_job(j, s);
}

void run_job(Executor& e, Tcb* self, CoJob* j) {
  if (self) {
    self->job = j;
  } else {
    e.current = j;
  }
  if (j->fail != 0 || j->cancel.load(std::memory_order_acquire)) {
    unwind(j);
  } else {
    j->resume.resume();  // j may be gone once this returns
  }
  if (self) {
    self->job = nullptr;
  } else {
    e.current = nullptr;
  }
}

int executor_main(unsigned i) {
  Executor& e = g_exec[i];
  Tcb* self = in_user_process() ? nullptr : current_thread();
  if (!self) e.thread.store(this_thread::id(), std::memory_order_relaxed);
  for (;;) {
    CoJob* j = pop(i);
    if (!j) j = steal(i);
    if (!j) {
      e.sleeping.store(1, std::memory_order_seq_cst);
      g_sleepers.fetch_add(1, std::memory_order_seq_cst);
      j = pop(i);
      if (!j) j = steal(i);
      if (!j && g_stopping.load(std::memory_order_acquire)) break;
      if (!j) (void)futex_wait(&e.sleeping, 1, kForever, WaitOrder::kFifo, "executor idle");
      e.sleeping.store(0, std::memory_order_relaxed);
      g_sleepers.fetch_sub(1, std::memory_order_relaxed);
      if (!j) continue;
    }
    // More work is queued here while another executor may sleep: wake it
    // to steal (a push wakes one only at the moment it happens).
    if (e.queued.load(std::memory_order_relaxed) != 0) wake_thief(false);
    run_job(e, self, j);
  }
  e.sleeping.store(0, std::memory_order_relaxed);
  g_sleepers.fetch_sub(1, std::memory_order_relaxed);
  if (g_running_execs.fetch_sub(1, std::memory_order_acq_rel) == 1) futex_wake(&g_running_execs, UINT32_MAX);
  return 0;
}

// In a process: takes the jobs whose kernel proxies were woken (their
// addresses and statuses, kSysJobCtl) and pushes them to their executors,
// until stop_executors wakes it with nothing to take.
int collector_main() {
  UserJobDone done[32];
  for (;;) {
    std::uint64_t r = sys(kSysJobCtl, kJobCollect, user_arg(done), sizeof done / sizeof done[0]);
    if (r == ~std::uint64_t{0}) {
      panic("coroutines: the kernel refused to hand over the woken jobs");
    }
    if (r == 0 && g_stopping.load(std::memory_order_acquire)) break;
    for (std::uint64_t k = 0; k < r; ++k) {
      auto* j = reinterpret_cast<CoJob*>(static_cast<std::uintptr_t>(done[k].token));
      j->wake_status = static_cast<Status>(done[k].status);
      j->parked = false;
      g_user_parked.fetch_sub(1, std::memory_order_relaxed);
      push(j, false);
    }
  }
  if (g_running_execs.fetch_sub(1, std::memory_order_acq_rel) == 1) futex_wake(&g_running_execs, UINT32_MAX);
  return 0;
}

bool ensure_executors() {
  unsigned state = g_exec_state.load(std::memory_order_acquire);
  if (state == 2) return nexec() > 0;
  if (state == 0 && g_exec_state.compare_exchange_strong(state, 1, std::memory_order_acq_rel)) {
    const bool user = in_user_process();
    unsigned n = 0;
    // A process's executors are not pinned: it may not have every CPU.
    unsigned ncpus = user ? static_cast<unsigned>(sys(kSysInfo, kInfoCpuCount)) : g.ncpus;
    if (ncpus > kMaxCpus) ncpus = kMaxCpus;
    if (user) {
      ThreadOptions o;
      o.name = "job-collector";
      g_running_execs.fetch_add(1, std::memory_order_relaxed);
      Result<Thread> t = Thread::create(o, [] { return collector_main(); });
      if (!t.ok()) {
        g_running_execs.fetch_sub(1, std::memory_order_relaxed);
        g_exec_state.store(0, std::memory_order_release);
        return false;
      }
      (void)t->detach();
    }
    for (unsigned i = 0; i < ncpus; ++i) {
      char name[16];
      format(name, sizeof name, "executor-%u", i);
      ThreadOptions o;
      o.name = name;
      if (!user) o.affinity = CpuMask::only(i);
      g_running_execs.fetch_add(1, std::memory_order_relaxed);
      Result<Thread> t = Thread::create(o, [i] { return executor_main(i); });
      if (!t.ok()) {
        g_running_execs.fetch_sub(1, std::memory_order_relaxed);
        break;
      }
      (void)t->detach();
      ++n;
    }
    // Executors only ever run their own CPU's queue index; jobs are homed
    // on CPUs < n.
    g_nexec_.store(n, std::memory_order_release);
    g_exec_state.store(2, std::memory_order_release);
    if (n < ncpus) print("spindle: only %u of %u coroutine executors could be started\n", n, ncpus);
    return n > 0;
  }
  // Another thread is starting them. Sleep, not yield: it may be less
  // urgent than this thread and on this CPU.
  while (g_exec_state.load(std::memory_order_acquire) != 2) this_thread::sleep_for(Duration(1'000'000));
  return nexec() > 0;
}

// A job cancelled before it suspends unwinds on its executor instead
// (true: it was pushed there).
bool unwinds_instead(CoJob* j) SPINDLE_REQUIRES(g.lock) {
  if (!j->cancel.load(std::memory_order_relaxed)) return false;
  push(j, true);
  return true;
}

// Marks j suspended at h until a wake (its wait was set up by the caller).
bool park(CoJob* j, std::coroutine_handle<> h) SPINDLE_REQUIRES(g.lock) {
  j->resume = h;
  j->wake_status = Status::kOk;
  j->parked = true;
  ++g_parked;
  return true;
}

// Foreign polls. A word other kernels map (futex.cc: Foreign words) is
// woken through the host's futex, which only a thread can sleep in; a job
// parked on such a word is not in any wait queue but looks at the word
// from its timer until its wait is over, first kForeignPollFirstNs after
// it parked, each look then twice as long after the last, up to
// kForeignPollNs apart (a hand-off that comes soon is seen soon; a long
// wait costs one look per kForeignPollNs): the word
// changed (a wait: kOk, the caller re-checks), the lock could be taken for
// it (kOk or kOwnerDied: it owns the lock, as after a hand-off), or the
// deadline passed (kTimedOut). While parked so, its futex_key points at
// its ForeignPoll (a frame allocation, freed when it wakes), which is on
// g_foreign_polls, and its timer kind is kJobForeignPoll.
//
// The timers are the backstop. An idle CPU also watches the words
// (foreign_watch, arch::idle_wait): when one differs from what its job
// waits to see change, the backend raises kIrqForeign and every parked
// job looks at once (foreign_polls_now). A taker's word may be slept on
// (hosted: futex_waitv): it reads kSleepers while the job waits, and a
// give wakes every sleeper. A lock's or a plain wait's word is only
// looked at: their wakes may wake one, which an idle CPU must not take
// from a thread of another process.
constexpr std::uint32_t kForeignPollFirstNs = 20'000;
constexpr std::uint32_t kForeignPollNs = 1'000'000;

struct ForeignPoll {
  std::atomic<std::uint32_t>* word;
  std::uint32_t expected;  // a wait: until the word differs from it; a lock: the value last seen
  bool lock;               // a lock: until it is taken
  std::uint32_t interval;  // ns from this look to the next
  std::uint64_t deadline;  // now_ns base; ~0: none
  CoJob* job;
  ListNode link;           // on g_foreign_polls while its job is parked
};

List<ForeignPoll, &ForeignPoll::link> g_foreign_polls;  // kernel lock
std::atomic<unsigned> g_foreign_parked{0};              // its length (written under the lock)
std::uint64_t g_foreign_watch_wakes = 0;                 // jobs woken by foreign_polls_now (kernel lock)

std::atomic<bool> g_poll_timers{true};  // testing: detail::foreign_poll_timers

void arm_poll(CoJob* j, ForeignPoll* fp) SPINDLE_REQUIRES(g.lock) {
  if (!g_poll_timers.load(std::memory_order_relaxed)) {
    if (fp->deadline != ~std::uint64_t{0}) timer_arm(&j->timer, fp->deadline);
    return;
  }
  std::uint64_t next = arch::now_ns() + fp->interval;
  fp->interval = fp->interval < kForeignPollNs / 2 ? fp->interval * 2 : kForeignPollNs;
  timer_arm(&j->timer, next < fp->deadline ? next : fp->deadline);
}

// Parks j at h polling word (see above); false with *now set if it cannot.
// A lock poll's `expected` is the word as its failed attempt saw it.
bool park_foreign(CoJob* j, std::coroutine_handle<> h, const std::atomic<std::uint32_t>* word,
                  std::uint32_t expected, bool lock, TimePoint deadline, Status* now) SPINDLE_REQUIRES(g.lock) {
  auto* fp = static_cast<ForeignPoll*>(detail::frame_alloc(sizeof(ForeignPoll)));
  if (!fp) {
    *now = Status::kNoMemory;
    return false;
  }
  new (fp) ForeignPoll{const_cast<std::atomic<std::uint32_t>*>(word), expected, lock, kForeignPollFirstNs,
                       deadline == kForever ? ~std::uint64_t{0}
                                            : static_cast<std::uint64_t>(deadline.time_since_epoch().count()),
                       j, {}};
  g_foreign_polls.push_back(fp);
  g_foreign_parked.store(g_foreign_parked.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  j->futex_key = fp;
  j->timer.set_kind(TimerKind::kJobForeignPoll);
  arm_poll(j, fp);
  return park(j, h);
}

// One look for fp's job: true if it woke the job (its wait is over).
bool look_once(ForeignPoll* fp) SPINDLE_REQUIRES(g.lock) {
  CoJob* j = fp->job;
  if (fp->lock) {
    std::uint32_t seen;
    Status s = foreign_try_lock(fp->word, static_cast<std::uint32_t>(j->head.id), false, &seen);
    if (s != Status::kWouldBlock) {
      wake(j, s);
      return true;
    }
    fp->expected = seen;
    return false;
  }
  if (fp->word->load(std::memory_order_seq_cst) != fp->expected) {
    wake(j, j->takes_units ? Status::kWouldBlock : Status::kOk);  // a taker gets no unit here: take again
    return true;
  }
  return false;
}

}  // namespace

unsigned foreign_watch(arch::WatchedWord* out, unsigned max) {
  if (g_foreign_parked.load(std::memory_order_relaxed) == 0) return 0;  // (aarch64: always)
  LockGuard guard;
  unsigned n = 0;
  for (ForeignPoll* fp = g_foreign_polls.front(); fp && n < max; fp = g_foreign_polls.next(fp)) {
    out[n++] = {fp->word, fp->expected, fp->job->takes_units};
  }
  return n;
}

unsigned foreign_jobs_in(const void* lo, std::size_t size) {
  if (g_foreign_parked.load(std::memory_order_relaxed) == 0) return 0;
  auto a = reinterpret_cast<std::uintptr_t>(lo);
  LockGuard guard;
  unsigned n = 0;
  g_foreign_polls.for_each([&](ForeignPoll* fp) {
    if (reinterpret_cast<std::uintptr_t>(fp->word) - a < size) ++n;
  });
  return n;
}

void foreign_polls_now() {
  g_foreign_polls.for_each([](ForeignPoll* fp) {
    if (look_once(fp)) ++g_foreign_watch_wakes;
  });
}

void job_timeout(Timer* t) {
  Waiter* w = Waiter::from_timer(t);
  if (w->parked) wake(w, Status::kTimedOut);
}

void job_foreign_poll(Timer* t) {
  auto* j = job_of(Waiter::from_timer(t));
  if (!j->parked) return;
  auto* fp = static_cast<ForeignPoll*>(const_cast<void*>(j->futex_key));
  if (look_once(fp)) return;
  if (arch::now_ns() >= fp->deadline) {
    wake(j, Status::kTimedOut);
    return;
  }
  arm_poll(j, fp);
}

// Backends with user mode define the real one (ujobs.cc); elsewhere no
// proxy exists.
[[gnu::weak]] void user_proxy_woken(Waiter*) {}

void job_woken(Waiter* w) {
  if (w->timer.kind() == TimerKind::kProxyTimeout) {
    user_proxy_woken(w);  // a process's job waits on it (ujobs.cc)
    return;
  }
  CoJob* j = job_of(w);
  j->parked = false;
  --g_parked;
  if (j->timer.kind() == TimerKind::kJobForeignPoll) {  // its poll is over
    auto* fp = static_cast<ForeignPoll*>(const_cast<void*>(j->futex_key));
    decltype(g_foreign_polls)::remove(fp);
    g_foreign_parked.store(g_foreign_parked.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
    detail::frame_free(fp, sizeof(ForeignPoll));
    j->timer.set_kind(TimerKind::kJobTimeout);
  }
  // A job handed a unit keeps the word until it runs (job_take_status), so
  // that a cancel before then can give the unit back (unwind).
  if (!(j->takes_units && j->wake_status == Status::kOk)) j->futex_key = nullptr;
  push(j, true);
}

void jobs_boot() {
  for (auto& e : g_exec) new (&e) Executor;
  g_nexec_.store(0, std::memory_order_relaxed);
  g_exec_state.store(0, std::memory_order_relaxed);
  g_sleepers.store(0, std::memory_order_relaxed);
  g_stopping.store(false, std::memory_order_relaxed);
  g_running_execs.store(0, std::memory_order_relaxed);
  g_parked = 0;
  // Polls of jobs that were parked when the last kernel stopped (their
  // frames are not freed: the jobs just stopped, as threads do).
  new (&g_foreign_polls) decltype(g_foreign_polls);
  g_foreign_parked.store(0, std::memory_order_relaxed);
  g_foreign_watch_wakes = 0;
  g_poll_timers.store(true, std::memory_order_relaxed);
}

void jobs_shutdown() {
  // The CPUs have stopped. Jobs still suspended are not unwound (like the
  // threads still blocked, they just stop); futex_forget_waiters takes them
  // and the threads out of the futex queues, which outlive this boot.
  std::int64_t left = 0;
  for (auto& c : g_frames) left += c.unfinished.load(std::memory_order_relaxed);
  if (left > 0) print("spindle: %lld coroutine job(s) unfinished at shutdown\n", static_cast<long long>(left));
}

}  // namespace kernel

namespace detail {

using namespace kernel;

void* frame_alloc(std::size_t n) noexcept {
  if (g_fail_frames.load(std::memory_order_relaxed) != 0) [[unlikely]] {
    unsigned f = g_fail_frames.load(std::memory_order_relaxed);
    while (f != 0 && !g_fail_frames.compare_exchange_weak(f, f - 1, std::memory_order_relaxed)) {
    }
    if (f != 0) return nullptr;
  }
  std::size_t cls = (n + kGranule - 1) / kGranule;
  if (in_user_process()) {
    // The process's heap; no per-CPU cache (no masking at EL0).
    std::size_t size = cls < kClasses ? cls * kGranule : n;
    void* p = ::operator new(size, std::nothrow);
    if (p) g_frames[0].bytes.fetch_add(static_cast<std::int64_t>(size), std::memory_order_relaxed);
    return p;
  }
  if (cls >= kClasses) {
    void* p = ::operator new(n, std::nothrow);
    if (p) {
      arch::IrqState s = arch::irq_save();
      account(g_frames[this_cpu().id], static_cast<std::int64_t>(n));
      arch::irq_restore(s);
    }
    return p;
  }
  std::size_t size = cls * kGranule;
  arch::IrqState s = arch::irq_save();
  FrameCache& c = g_frames[this_cpu().id];
  FreeBlock* b = c.head[cls];
  if (b) {
    c.head[cls] = b->next;
    --c.count[cls];
    account(c, static_cast<std::int64_t>(size));
    arch::irq_restore(s);
    return b;
  }
  arch::irq_restore(s);
  void* p = ::operator new(size, std::nothrow);
  if (!p) return nullptr;
  s = arch::irq_save();
  account(g_frames[this_cpu().id], static_cast<std::int64_t>(size));
  arch::irq_restore(s);
  return p;
}

void frame_free(void* p, std::size_t n) noexcept {
  if (!p) return;
  std::size_t cls = (n + kGranule - 1) / kGranule;
  std::size_t size = cls < kClasses ? cls * kGranule : n;
  if (in_user_process()) {
    g_frames[0].bytes.fetch_sub(static_cast<std::int64_t>(size), std::memory_order_relaxed);
    ::operator delete(p);
    return;
  }
  arch::IrqState s = arch::irq_save();
  FrameCache& c = g_frames[this_cpu().id];
  account(c, -static_cast<std::int64_t>(size));
  if (cls < kClasses && c.count[cls] < kCacheMax) {
    auto* b = static_cast<FreeBlock*>(p);
    b->next = c.head[cls];
    c.head[cls] = b;
    ++c.count[cls];
    arch::irq_restore(s);
    return;
  }
  arch::irq_restore(s);
  ::operator delete(p);
}

void fail_frame_allocations(unsigned n) { g_fail_frames.store(n, std::memory_order_relaxed); }
void foreign_poll_timers(bool on) { g_poll_timers.store(on, std::memory_order_relaxed); }

void coroutine_exception() noexcept { panic("an exception escaped a coroutine (Spindle coroutines do not throw)"); }

Status job_spawn(std::coroutine_handle<> root, const SpawnOptions& o, bool signal_parent, CoJob** out) noexcept {
  *out = nullptr;
  if (o.priority < kMinPriority || o.priority > kMaxPriority) {
    print("spindle: spawn: priority %d is outside %d..%d\n", o.priority, kMinPriority, kMaxPriority);
    return Status::kInvalidArgument;
  }
  if (!ensure_executors()) return Status::kNoMemory;
  const unsigned executors = nexec();
  if (o.cpu < -1 || (o.cpu >= 0 && static_cast<unsigned>(o.cpu) >= executors)) {
    print("spindle: spawn: no executor on CPU %d (%u executors)\n", o.cpu, executors);
    return Status::kInvalidArgument;
  }
  void* mem = frame_alloc(sizeof(CoJob));
  if (!mem) return Status::kNoMemory;
  CoJob* j = new (mem) CoJob;
  j->async = true;
  j->run.priority = o.priority;
  j->timer.set_kind(TimerKind::kJobTimeout);
  j->root = j->resume = root;
  j->pinned = static_cast<std::int8_t>(o.cpu);
  // One masked section: where we are (the job's home unless pinned) and
  // this CPU's counts.
  unsigned here;
  if (in_user_process()) {
    here = g_next_home.fetch_add(1, std::memory_order_relaxed) % executors;
    g_frames[0].jobs.fetch_add(1, std::memory_order_relaxed);
    g_frames[0].unfinished.fetch_add(1, std::memory_order_relaxed);
  } else {
    arch::IrqState irq = arch::irq_save();
    here = this_cpu().id;
    add(g_frames[here].jobs, 1);
    add(g_frames[here].unfinished, 1);
    arch::irq_restore(irq);
  }
  j->home = static_cast<std::int8_t>(o.cpu >= 0 ? static_cast<unsigned>(o.cpu) : (here < executors ? here : 0));
  if (signal_parent) {
    if (CoJob* p = current_job()) {
      p->refs.fetch_add(1, std::memory_order_relaxed);
      j->parent = p;
    }
  }
  push(j, false);
  *out = j;
  return Status::kOk;
}

void job_release(CoJob* j) noexcept {
  if (j->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) free_job(j);
}

void job_cancel(CoJob* j) noexcept {
  if (job_done(j)) return;
  j->cancel.store(true, std::memory_order_seq_cst);
  if (in_user_process()) {
    // Its proxy, if it has one by now; one registered later sees the flag.
    if (j->parked) (void)sys(kSysJobCtl, kJobCancel, user_arg(j));
    return;
  }
  LockGuard guard;
  if (j->parked) wake(j, Status::kInterrupted);
}

bool job_done(const CoJob* j) noexcept { return j->done.load(std::memory_order_acquire) == kEnded; }
Status job_status(const CoJob* j) noexcept { return static_cast<Status>(j->status); }
// Marks the done word kJoined unless the job has ended: the value to wait
// while it holds, or kEnded.
std::uint32_t announce_joiner(CoJob* j) {
  std::uint32_t v = kRunning;
  if (j->done.compare_exchange_strong(v, kJoined, std::memory_order_acq_rel)) return kJoined;
  return v;  // kJoined (another joiner announced) or kEnded
}

bool job_wait_done(std::coroutine_handle<> h, CoJob* j, Status* now) noexcept {
  std::uint32_t v = announce_joiner(j);
  if (v == kEnded) {
    *now = Status::kOk;
    return false;
  }
  return job_wait(h, &j->done, v, kForever, WaitOrder::kFifo, "join", now);
}
void* job_root(const CoJob* j) noexcept { return j->root.address(); }

Status job_join(CoJob* j, TimePoint deadline) noexcept {
  if (current_job()) {
    print("spindle: join of a coroutine from inside a coroutine would block its executor; co_await the handle\n");
    return Status::kDeadlock;
  }
  for (std::uint32_t v; (v = announce_joiner(j)) != kEnded;) {
    Status s = futex_wait(&j->done, v, deadline, WaitOrder::kFifo, "join");
    if (s == Status::kTimedOut) return job_done(j) ? Status::kOk : Status::kTimedOut;
    if (s == Status::kInvalidState) return s;
  }
  return Status::kOk;
}

namespace {
// A job's kernel wait in a process: its proxy waits (kSysJobWait, or
// kSysJobLock for a lock), and the collector pushes the job when the
// kernel posts it. `call` makes the system call and returns its Status;
// `queued` is the one that means the proxy waits. false: not suspended
// (*now says why: the word differs, the deadline passed, a bad word, or
// the lock was taken at once).
template <class Call>
bool user_job_park(CoJob* j, std::coroutine_handle<> h, Status queued, Status* now, Call call) {
  if (j->cancel.load(std::memory_order_seq_cst)) {
    push(j, false);  // unwinds on the executor
    return true;
  }
  j->resume = h;
  j->wake_status = Status::kOk;
  g_user_parked.fetch_add(1, std::memory_order_relaxed);
  j->parked = true;  // before the call: the collector may push j before it returns
  std::atomic_thread_fence(std::memory_order_seq_cst);  // parked, then cancel read (job_cancel: the reverse)
  Status s = call();
  if (s == queued) return true;  // j is the collector's now
  j->parked = false;
  g_user_parked.fetch_sub(1, std::memory_order_relaxed);
  *now = s;
  return false;
}

std::uint64_t priority_arg(const CoJob* j) {
  return static_cast<std::uint64_t>(static_cast<std::uint32_t>(j->run.priority)) << 8;
}

bool user_job_wait(CoJob* j, std::coroutine_handle<> h, const std::atomic<std::uint32_t>* word,
                   std::uint32_t expected, TimePoint deadline, WaitOrder order, Status* now) {
  return user_job_park(j, h, Status::kOk, now, [&] {
    std::uint64_t how = static_cast<std::uint64_t>(order == WaitOrder::kFifo ? 1 : 0) | priority_arg(j);
    return status_from(sys(kSysJobWait, user_arg(word), expected, deadline_arg(deadline), how, user_arg(j),
                           user_arg(&j->cancel)));
  });
}

// The job's own record of the take (takes_units, futex_key) is made only
// once it really waits: after the cancel check, with wake_status reset.
bool user_job_take(CoJob* j, std::coroutine_handle<> h, std::atomic<std::uint32_t>* word, TimePoint deadline,
                   WaitOrder order, Status* now) {
  bool parked = user_job_park(j, h, Status::kWouldBlock, now, [&] {
    j->takes_units = true;
    j->futex_key = word;
    std::uint64_t how = kJobWaitTake | static_cast<std::uint64_t>(order == WaitOrder::kFifo ? 1 : 0) | priority_arg(j);
    return status_from(
        sys(kSysJobWait, user_arg(word), 0, deadline_arg(deadline), how, user_arg(j), user_arg(&j->cancel)));
  });
  if (!parked) {  // taken at once, timed out or refused: not waiting
    j->takes_units = false;
    j->futex_key = nullptr;
  }
  return parked;
}

bool user_job_wait_channel(CoJob* j, std::coroutine_handle<> h, std::uint32_t handle, bool writable,
                           TimePoint deadline, Status* now) {
  return user_job_park(j, h, Status::kOk, now, [&] {
    return status_from(sys(kSysJobWait, handle, writable ? 1 : 0, deadline_arg(deadline),
                           kJobWaitChannel | priority_arg(j), user_arg(j), user_arg(&j->cancel)));
  });
}

// The job's lock identity in a process: a kernel id, made at its first
// lock (kJobId) and freed when it ends (end_job).
ThreadId user_lock_id(CoJob* j) {
  if (j->head.id == 0) {
    j->head.id = sys(kSysJobCtl, kJobId);
    if (j->head.id == 0) panic("a coroutine needs a lock identity, and the kernel has none left for this process");
  }
  return j->head.id;
}
}  // namespace

bool job_wait(std::coroutine_handle<> h, const std::atomic<std::uint32_t>* word, std::uint32_t expected,
              TimePoint deadline, WaitOrder order, const char* name, Status* now) noexcept {
  CoJob* j = running_job(name ? name : "wait");
  if (in_user_process()) return user_job_wait(j, h, word, expected, deadline, order, now);
  LockGuard guard;
  if (unwinds_instead(j)) return true;
  if (deadline != kForever && deadline <= Clock::now()) {
    *now = word->load(std::memory_order_seq_cst) != expected ? Status::kWouldBlock : Status::kTimedOut;
    return false;
  }
  if (arch::foreign_word(word)) {
    if (word->load(std::memory_order_seq_cst) != expected) {
      *now = Status::kWouldBlock;
      return false;
    }
    return park_foreign(j, h, word, expected, false, deadline, now);
  }
  Status s = futex_wait_async(j, word, expected, order, name);
  if (s != Status::kOk) {
    *now = s;
    return false;
  }
  if (deadline != kForever) timer_arm(&j->timer, static_cast<std::uint64_t>(deadline.time_since_epoch().count()));
  return park(j, h);
}

bool job_take(std::coroutine_handle<> h, std::atomic<std::uint32_t>* word, TimePoint deadline, WaitOrder order,
              const char* name, Status* now) noexcept {
  CoJob* j = running_job(name ? name : "take");
  if (in_user_process()) return user_job_take(j, h, word, deadline, order, now);
  LockGuard guard;
  if (unwinds_instead(j)) return true;
  if (deadline != kForever && deadline <= Clock::now()) {
    *now = count_word::try_take(*word) ? Status::kOk : Status::kTimedOut;
    return false;
  }
  if (arch::foreign_word(word)) {
    // Takers in other kernels sleep in the host's futex, so no give hands
    // units over here: poll while the word reads "no units, sleepers", and
    // take again once it changes (the wake says kWouldBlock).
    if (count_word::take_or_mark(*word)) {
      *now = Status::kOk;
      return false;
    }
    j->takes_units = true;
    if (park_foreign(j, h, word, count_word::kSleepers, false, deadline, now)) return true;
    j->takes_units = false;
    return false;
  }
  if (futex_take_async(j, word, order) == Status::kOk) {
    *now = Status::kOk;
    return false;
  }
  if (deadline != kForever) timer_arm(&j->timer, static_cast<std::uint64_t>(deadline.time_since_epoch().count()));
  return park(j, h);
}

bool job_lock(std::coroutine_handle<> h, std::atomic<std::uint32_t>* word, const LockPolicy& policy,
              TimePoint deadline, Status* now) noexcept {
  CoJob* j = running_job(policy.name ? policy.name : "lock");
  if (in_user_process()) {
    ThreadId id = user_lock_id(j);
    return user_job_park(j, h, Status::kWouldBlock, now, [&] {
      std::uint64_t how = policy_bits(policy) | priority_arg(j) | static_cast<std::uint64_t>(policy.aging) << 32;
      return status_from(
          sys(kSysJobLock, user_arg(word), how, id, deadline_arg(deadline), user_arg(j), user_arg(&j->cancel)));
    });
  }
  LockGuard guard;
  if (unwinds_instead(j)) return true;
  if (j->head.id == 0) {
    j->head.id = allocate_id();
    if (j->head.id == 0) panic("a coroutine needs a lock identity, and every thread id is in use");
    register_id(j);
  }
  if (arch::foreign_word(word)) {
    std::uint32_t seen;
    Status s = foreign_try_lock(word, static_cast<std::uint32_t>(j->head.id), false, &seen);
    if (s == Status::kWouldBlock && (deadline == kForever || deadline > Clock::now())) {
      return park_foreign(j, h, word, seen, true, deadline, now);
    }
    *now = s == Status::kWouldBlock ? Status::kTimedOut : s;
    return false;
  }
  Status s = futex_lock_async(j, word, policy, deadline);
  if (s != Status::kWouldBlock) {
    *now = s;
    return false;
  }
  return park(j, h);
}

bool job_wait_channel(std::coroutine_handle<> h, std::uint32_t handle, bool writable, TimePoint deadline,
                      Status* now) noexcept {
  CoJob* j = running_job("channel");
  if (!in_user_process()) panic("job_wait_channel: only a process's coroutines wait through the kernel's proxy");
  return user_job_wait_channel(j, h, handle, writable, deadline, now);
}

void job_sleep(std::coroutine_handle<> h, TimePoint deadline) noexcept {
  CoJob* j = running_job("sleep");
  if (in_user_process()) {
    // A wait on a word nobody wakes, until the deadline.
    Status now;
    if (!user_job_wait(j, h, &g_sleep_word, 0, deadline, WaitOrder::kFifo, &now)) {
      j->resume = h;
      push(j, false);  // the deadline passed already
    }
    return;
  }
  LockGuard guard;
  if (unwinds_instead(j)) return;
  timer_arm(&j->timer, static_cast<std::uint64_t>(deadline.time_since_epoch().count()));
  park(j, h);
}

void job_yield(std::coroutine_handle<> h) noexcept {
  CoJob* j = running_job("yield");
  j->resume = h;
  push(j, false);
}

std::coroutine_handle<> job_fail(Status s) noexcept {
  CoJob* j = running_job("task");
  j->fail = static_cast<std::uint8_t>(s);
  push(j, false);
  return std::noop_coroutine();
}

std::coroutine_handle<> job_finished() noexcept {
  end_job(running_job("task"), Status::kOk);
  return std::noop_coroutine();
}

Status job_wake_status() noexcept { return running_job("wait")->wake_status; }
Status job_take_status() noexcept {
  CoJob* j = running_job("take");
  j->takes_units = false;  // the unit, if any, is the job's now
  j->futex_key = nullptr;
  return j->wake_status;
}

ThreadId job_lock_id() noexcept {
  CoJob* j = running_job("lock");
  if (in_user_process()) return user_lock_id(j);
  if (j->head.id == 0) {
    LockGuard guard;
    j->head.id = allocate_id();
    if (j->head.id == 0) panic("a coroutine needs a lock identity, and every thread id is in use");
    register_id(j);
  }
  return j->head.id;
}

Status job_unlock(std::atomic<std::uint32_t>* word, ThreadId owner) noexcept {
  if (in_user_process()) return status_from(sys(kSysJobCtl, kJobUnlock, user_arg(word), owner));
  LockGuard guard;
  return futex_unlock_as(word, owner);
}

std::atomic<std::uint32_t>* job_signal_word() noexcept { return &running_job("gather")->signal; }

bool in_job() noexcept { return current_job() != nullptr; }

Task<Status> wait_while_equal_async(const std::atomic<std::uint32_t>& word, std::uint32_t value,
                                   std::atomic<std::uint32_t>& waiters, TimePoint deadline, WaitOrder order,
                                   const char* name) {
  CountWaiter counted(waiters);
  while (word.load(std::memory_order_acquire) == value) {
    Status s = co_await WordWait(&word, value, deadline, order, name);
    if (s == Status::kTimedOut && word.load(std::memory_order_acquire) == value) co_return Status::kTimedOut;
  }
  co_return Status::kOk;
}

}  // namespace detail

Status stop_executors() {
  using namespace kernel;
  unsigned expected = 2;
  if (detail::in_job()) return Status::kDeadlock;
  if (!g_exec_state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
    return expected == 0 ? Status::kOk : Status::kInvalidState;  // none / being started
  }
  if (coroutine_stats().jobs != 0) {
    g_exec_state.store(2, std::memory_order_release);
    return Status::kInvalidState;
  }
  g_stopping.store(true, std::memory_order_release);
  for (unsigned i = 0, n = nexec(); i < n; ++i) {
    g_exec[i].sleeping.store(0, std::memory_order_seq_cst);
    futex_wake(&g_exec[i].sleeping, 1);
  }
  if (in_user_process()) (void)sys(kSysJobCtl, kJobKick);  // the collector returns with nothing
  for (;;) {
    std::uint32_t left = g_running_execs.load(std::memory_order_acquire);
    if (left == 0) break;
    (void)futex_wait(&g_running_execs, left);
  }
  g_stopping.store(false, std::memory_order_relaxed);
  g_nexec_.store(0, std::memory_order_relaxed);
  g_exec_state.store(0, std::memory_order_release);
  return Status::kOk;
}

CoroutineStats coroutine_stats() {
  using namespace kernel;
  CoroutineStats st;
  std::int64_t bytes = 0, jobs = 0;
  for (auto& c : g_frames) {
    bytes += c.bytes.load(std::memory_order_relaxed);
    jobs += c.jobs.load(std::memory_order_relaxed);
  }
  st.jobs = jobs > 0 ? static_cast<std::uint64_t>(jobs) : 0;
  st.frame_bytes = bytes > 0 ? static_cast<std::uint64_t>(bytes) : 0;
  st.executors = nexec();
  if (in_user_process()) {
    st.waiting = g_user_parked.load(std::memory_order_relaxed);
    return st;
  }
  LockGuard guard;
  st.waiting = g_parked;
  st.watch_wakes = g_foreign_watch_wakes;
  return st;
}

}  // namespace spindle
