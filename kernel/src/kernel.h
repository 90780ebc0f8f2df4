// Kernel-internal declarations: the thread control block, the per-CPU
// structure, the kernel lock and the scheduler's entry points.
//
// Locking rule (the one rule): every field below marked GUARDED_BY(lock) -
// run queues, timer queues, wait queues, thread scheduling state - is
// protected by the single kernel lock `g.lock`, taken with this CPU's
// interrupts masked. The uncontended paths of user-visible objects never
// take it; only blocking, waking, timers and thread lifecycle do. See
// docs/architecture.md for why one lock and not one per run queue.
//
// The lock is held across a context switch: the thread that calls
// schedule() holds it, and the thread that resumes releases it. So a
// thread's saved context is complete before any other CPU can see the
// thread as runnable.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <arch/arch.h>

#include "list.h"
#include "run_queue.h"
#include "spindle/cpu_mask.h"
#include "spindle/diagnostics.h"
#include "spindle/futex.h"
#include "spindle/panic.h"
#include "spindle/stats.h"
#include "spindle/status.h"
#include "spindle/thread.h"
#include "spindle/thread_annotations.h"
#include "spindle/time.h"
#include "timer_queue.h"

namespace spindle::detail {
struct CoJob;
}

namespace spindle::kernel {

// A ticket lock: FIFO among CPUs, so no CPU starves under contention.
// A kernel booted on one CPU has nobody to exclude but its own interrupt
// handlers, which lock_irqsave masks: there (set_single_cpu, at boot,
// before any CPU runs), on backends where an atomic read-modify-write is
// costly (arch::kAtomicRmwCostly), the ticket is taken with a plain load
// and store; the release was a plain store already. Everything else,
// held() included, is the same.
class SPINDLE_CAPABILITY("kernel lock") KernelLock {
 public:
  void lock() SPINDLE_ACQUIRE();
  void unlock() SPINDLE_RELEASE();
  void set_single_cpu(bool single) { single_cpu_ = single; }
  // Whether, while this lock is held, plain loads and stores may stand in
  // for atomic read-modify-writes of this kernel's words (one CPU, and
  // worth it): a constant false where they are not costly.
  bool plain_updates() const { return arch::kAtomicRmwCostly && single_cpu_; }
  bool held() const { return next_.load(std::memory_order_relaxed) != serving_.load(std::memory_order_relaxed); }
  int owner_cpu() const { return owner_.load(std::memory_order_relaxed); }

 private:
  // Spins until ticket is served (lock.cc): out of line, so that the
  // uncontended lock() carries none of the spin's setup.
  [[gnu::noinline]] void wait_for(std::uint32_t ticket);

  std::atomic<std::uint32_t> next_{0};
  std::atomic<std::uint32_t> serving_{0};
  std::atomic<int> owner_{-1};
  bool single_cpu_ = false;
};

enum class ThreadState : std::uint8_t { kReady, kRunning, kBlocked, kSuspended, kDead };
const char* to_string(ThreadState s);
struct Tcb;
// One thread's row of spindle::thread_stats (stats.cc). Kernel lock.
void fill_thread_stats(const Tcb* t, std::uint64_t now, ThreadStats* s);

struct Tcb;
struct Waiter;
struct UserThread;  // uprocess.cc (bare-metal backends)

// What a kernel timer does when it fires (a kind rather than a function
// pointer keeps every waiter 8 bytes smaller).
enum class TimerKind : std::uint8_t {
  kNone,
  kThreadTimeout,  // a thread's sleep or wait timeout (the Tcb's timer)
  kWatchdog,       // a thread's starvation report (Tcb::watchdog)
  kJobTimeout,     // a coroutine job's sleep or wait timeout
  kJobForeignPoll, // a coroutine job's next look at a word other kernels map (coro.cc)
  kProxyTimeout,   // the same for a process's job's kernel proxy (ujobs.cc); also
                   // what tells a proxy from a job (no room for a flag in a job)
};

// A one-shot kernel timer; it fires under the kernel lock, irqs masked, on
// the CPU whose queue holds it (node.owner, -1 when not queued).
struct Timer {
  TimerNode node;
  int cpu() const { return node.owner; }
  void set_kind(TimerKind k) { node.kind = static_cast<std::uint8_t>(k); }
  TimerKind kind() const { return static_cast<TimerKind>(node.kind); }
};

// An ordered queue of waiters: threads blocked in the kernel and suspended
// coroutine jobs alike (both are Waiters), so an object's ordering policy
// holds across both kinds.
class WaitQueue {
 public:
  enum class Order : std::uint8_t { kPriority, kFifo };
  explicit WaitQueue(Order o = Order::kPriority) : order_(o) {}
  WaitQueue(const WaitQueue&) = delete;

  bool empty() const { return waiters_.empty(); }
  Order order() const { return order_; }
  void set_order(Order o) { order_ = o; }  // only while empty
  // The waiter wake_one would pick, or nullptr.
  Waiter* front() const;
  // Iteration in queue order (f may not unlink).
  Waiter* next(const Waiter* w) const;
  std::size_t size() const { return waiters_.size(); }
  // Blocks the current thread on this queue until woken or until the
  // deadline (then kTimedOut). Kernel lock held; returns with it held.
  // (Inline, below: its few callers are blocking paths.)
  [[gnu::always_inline]] inline Status wait(TimePoint deadline);
  // Wakes the first waiter (priority-then-FIFO or FIFO) with status s.
  Waiter* wake_one(Status s = Status::kOk);
  unsigned wake_all(Status s = Status::kOk);
  // Called when a waiter's priority changed, to keep priority order.
  void reposition(Waiter* w);
  // Internal: unlink w (woken or timed out).
  void remove(Waiter* w);
  // Links w (about to block or suspend on this queue) in order. Inline
  // for the common cases, where w goes last: a FIFO queue, an empty one,
  // or one whose last waiter is at least as urgent as w.
  inline void insert(Waiter* w);
  // The first waiter (in queue order) whose futex_key is key, or nullptr;
  // next_with_key: the first such after w.
  Waiter* first_with_key(const void* key) const;
  Waiter* next_with_key(const Waiter* w, const void* key) const;

 private:
  void insert_by_priority(Waiter* w);  // insert's general case

  List<RunNode, &RunNode::link> waiters_;
  Order order_;
};

// The kernel side of an owner-aware futex lock (futex_lock/futex_unlock)
// while it is contended: who the kernel knows as the owner, and the queue
// of waiters. Created when the first waiter blocks, recycled when the last
// one leaves. Guarded by the kernel lock.
struct LockState {
  const void* key = nullptr;  // the lock word's address
  Tcb* owner = nullptr;       // as last read from the word (a user-space steal is seen at the
                              // next block); nullptr while a coroutine job owns it (no PI)
  WaitQueue waiters;
  bool inherit = false;       // waiters lend their priority to the owner
  bool handoff = false;       // unlock passes ownership to the chosen waiter
  std::uint32_t aging = 0;    // hand-offs a waiter may be passed over (0: unbounded)
  std::uint64_t handoffs = 0;
  const char* name = nullptr;
  ListNode owner_link;        // in owner->held_locks
  ListNode hash_link;         // in its hash bucket, or the free list
};

// Lock-order validator: one lock the thread holds (lockdep.cc). No default
// member initializers: a Tcb holds kLockdepDepth of them, only the first
// lockdep_depth are ever read, and zeroing 768 bytes on every thread
// creation was a third of Thread::create.
struct HeldLock {
  const void* lock;
  const char* name;
  const char* file;
  unsigned line;
};
inline constexpr unsigned kLockdepDepth = 24;
// Lock-order validator: a pair (held, taking) this thread already checked,
// valid while no lock has been destroyed since (`generation`).
// Cleared by Tcb() only in lockdep builds (see HeldLock).
struct CheckedOrder {
  const void* held;
  const void* taking;
  std::uint32_t generation;
};
inline constexpr unsigned kLockdepCache = 8;  // power of two

// Something that waits on a WaitQueue and can own an owner-aware lock: a
// thread (Tcb) or a coroutine job (Job, coro.cc; `async` set). The wait
// fields are guarded by the kernel lock.
// One wait for an owner-aware lock (futex_lock). A thread's lives in its
// Tcb; a coroutine job's is allocated for the wait from the frame pool.
struct LockWait {
  LockState* lock = nullptr;  // the lock waited for
  std::uint32_t arrival = 0;  // lock->handoffs when it queued (aging; modulo 2^32)
  std::uint32_t seq = 0;      // global arrival order of lock waits (aging; modulo 2^32)
};

// Something that waits on a WaitQueue and can own an owner-aware lock: a
// thread (Tcb) or a coroutine job (CoJob, coro.cc; `async` set). The wait
// fields are guarded by the kernel lock. Small fields come last, so a job's
// own small fields fill the tail (jobs are many: every byte counts).
struct Waiter {
  static Waiter* from_run(RunNode* n) {
    return reinterpret_cast<Waiter*>(reinterpret_cast<char*>(n) - offsetof(Waiter, run));
  }
  static Waiter* from_timer(Timer* t) {
    return reinterpret_cast<Waiter*>(reinterpret_cast<char*>(t) - offsetof(Waiter, timer));
  }
  LockState* blocked_lock() const { return lock_wait ? lock_wait->lock : nullptr; }

  detail::ThreadHead head;  // first: a thread's id, or a job's lock identity (0: none yet)
  RunNode run;              // queue link, effective priority, affinity
  WaitQueue* wait_queue = nullptr;  // the queue it waits on, if any
  const void* futex_key = nullptr;  // the word it waits on
  LockWait* lock_wait = nullptr;    // set while it waits for an owner-aware lock
  Waiter* id_next = nullptr;        // chain in g.by_id
  Timer timer;                      // sleeps and wait timeouts
  Status wake_status = Status::kOk;
  bool async = false;       // a coroutine job, not a thread
  bool parked = false;      // async: suspended on a kernel wait (queue and/or timer)
  bool takes_units = false; // it waits to take a unit of a counting word (futex_take, futex_take_async)
};

inline void WaitQueue::insert(Waiter* w) {
  RunNode* last = waiters_.back();
  if (order_ == Order::kFifo || !last || last->priority >= w->run.priority) {
    waiters_.push_back(&w->run);
  } else {
    insert_by_priority(w);
  }
}

struct Tcb : Waiter {
  detail::Tcb* as_handle() { return reinterpret_cast<detail::Tcb*>(this); }
  static Tcb* from(detail::Tcb* h) { return reinterpret_cast<Tcb*>(h); }
  static Tcb* from_run(RunNode* n) { return static_cast<Tcb*>(Waiter::from_run(n)); }
  Tcb() {
    if constexpr (kLockdep) {
      for (CheckedOrder& c : lockdep_checked) c = {};
    }
  }

  arch::Context ctx;
  ThreadState state = ThreadState::kReady;
  bool suspend_requested = false;
  bool detached = false;
  bool handle_released = false;  // joined, or detached
  bool faulted = false;
  bool is_idle = false;
  bool handed_off = false;          // an unlock made it the owner (futex_lock), or a give handed it a unit (futex_take)
  const char* wait_name = nullptr;  // what it waits on, for reports
  LockWait own_lock_wait;           // its lock_wait while it waits for a lock
  int base_priority = kDefaultPriority;
  unsigned cpu = 0;                 // where it runs, is queued, or last ran
  List<LockState, &LockState::owner_link> held_locks;  // contended locks it owns
  std::uint64_t blocked_since = 0;  // now_ns() when it last blocked
  struct Watchdog {
    Timer timer;  // first: the timer callback finds the thread from it
    Tcb* thread = nullptr;
  } watchdog;                       // starvation report
  HeldLock lockdep[kLockdepDepth];  // locks held, innermost last (lockdep builds); [lockdep_depth..] uninitialized
  unsigned lockdep_depth = 0;
  CheckedOrder lockdep_checked[kLockdepCache];  // known orders, checked without the graph lock
  char name[32] = {};
  int exit_code = 0;
  WaitQueue joiners{WaitQueue::Order::kFifo};  // threads in join()
  arch::StackRegion stack;          // the whole region; the Tcb is at its top
  arch::AddressSpace* address_space = nullptr;  // user mode's (run_user); nullptr: kernel only
  // A process's thread (uprocess.cc): its process (opaque here; the futex
  // calls only compare it) and its user-side state; nullptr for a kernel
  // thread. Set before the thread starts, never changed.
  void* process = nullptr;
  UserThread* user = nullptr;
  // Its process is ending: every wait returns kInterrupted at once, and the
  // thread ends at its next return to user mode. Set under the kernel lock
  // (end_process), never cleared; read without it on the way to user mode.
  std::atomic<bool> ending{false};
  // Called by exit_current with the kernel lock held, the thread already
  // dead: its process's bookkeeping (uprocess.cc). nullptr: none.
  void (*on_exit)(Tcb* self, int code, bool faulted) = nullptr;
  void* callable = nullptr;
  detail::CoJob* job = nullptr;       // the coroutine job it runs (an executor), if any
  detail::Invoke invoke = nullptr;
  detail::Destroy destroy = nullptr;
  // Accounting.
  std::uint64_t cpu_ns = 0;
  std::uint64_t switches_in = 0;
  std::uint64_t preemptions = 0;
  std::uintptr_t lowest_sp = 0;     // deepest stack pointer seen at a switch
  ListNode all_link;                // in g.threads
  std::uint32_t magic = 0;
};

inline constexpr std::uint32_t kTcbMagic = 0x5350444cu;  // "SPDL"
// The id of the boot thread's "outside" identity (never a real thread's).
inline constexpr ThreadId kOutsideThreadId = kMaxThreadId;

enum class SwitchReason : std::uint8_t { kBlock, kYield, kPreempt, kSliceEnd };

// Cpu::slice_end of a thread switched in without a clock read.
inline constexpr std::uint64_t kSliceFromNextTick = 1;

// Cache-line aligned: each CPU writes its own Cpu constantly (the interrupt
// mask, the spin mark, counters). Unaligned, one CPU's last fields shared a
// line with the next CPU's first, and a cross-vCPU semaphore ping-pong
// spent half its time moving that line (956 -> 480 ns when aligned).
struct alignas(64) Cpu {
  arch::CpuArea arch;
  unsigned id = 0;
  bool online = false;
  Tcb* current = nullptr;
  Tcb* idle = nullptr;
  RunQueue rq;
  TimerQueue timers;
  bool need_resched = false;
  bool slice_expired = false;
  // When the running thread's slice ends: 0 if no slice runs (idle), or
  // kSliceFromNextTick if it was switched in without a clock read (see
  // switch_to): its slice then counts from this CPU's next timer interrupt.
  std::uint64_t slice_end = 0;
  std::uint64_t programmed = UINT64_MAX;  // deadline given to arch::set_timer
  // The latest clock reading on this CPU (a timed switch or a timer
  // interrupt): never in the future, so a deadline derived from it is
  // never later than one derived from now.
  std::uint64_t clock_hint = 0;
  // The clock at the last timed switch: the start of the running thread's
  // charged time when CPU-time accounting is on, of the idle period when
  // the idle thread runs (those switches are always timed).
  std::uint64_t switched_in_at = 0;
  std::uint64_t ipi_out = 0;          // CPUs to interrupt once the lock is dropped
  Tcb* zombie = nullptr;              // dead detached thread, freed after the switch
  void* unmap_list = nullptr;         // stacks to return to the arch once the lock is dropped
  std::uint64_t idle_ns = 0;
  std::uint64_t switches = 0;
  std::uint64_t irqs = 0;
  unsigned irq_depth = 0;             // > 0 while in handle_irq's handlers
  // Set by the current thread while it spins before a wait (sched.cc:
  // wait spin); cleared by it and by every schedule() here. Read by other
  // CPUs without the lock: while set, this CPU counts as idle for placement.
  std::atomic<bool> waiter_spinning{false};
  // Wait spins begun here, and those that saw what they waited for.
  // Written only by this CPU's current thread, interrupts masked (load +
  // store, no locked add); atomics so that stats() may read them.
  std::atomic<std::uint64_t> wait_spins{0};
  std::atomic<std::uint64_t> wait_spin_hits{0};
  std::uint64_t watch_wakeups = 0;  // kIrqForeign interrupts taken here (kernel lock)
};

inline constexpr unsigned kIdBuckets = 1024;
inline constexpr unsigned kLockBuckets = 256;

struct Kernel {
  KernelLock lock;
  Cpu cpus[kMaxCpus];
  // CPUs whose run queue is not empty (each RunQueue keeps its bit): the
  // loops that look at other CPUs' queues (stealing, the direct-switch
  // check) skip the empty ones.
  std::uint64_t queued_cpus = 0;
  unsigned ncpus = 0;
  CpuMask online;
  std::uint64_t timeslice_ns = 10'000'000;
  // Per-thread CPU time: a clock read at every switch (set_cpu_time_accounting).
  bool cpu_time = false;
  std::uint64_t boot_ns = 0;
  List<Tcb, &Tcb::all_link> threads;  // every thread but the idle ones
  ThreadId next_id = 1;
  ThreadId first_id = 1;              // ids handed out: [first_id, id_end) (BootArgs)
  ThreadId id_end = kMaxThreadId;
  Waiter* by_id[kIdBuckets] = {};     // threads by id until freed; jobs by lock identity
  List<LockState, &LockState::hash_link> lock_states[kLockBuckets];
  List<LockState, &LockState::hash_link> free_lock_states;
  std::uint64_t starvation_bound_ns = 0;  // 0: watchdog off
  bool deadlock_detection = true;
  std::uint64_t starvation_reports = 0;
  std::uint64_t lock_waits = 0;       // numbers lock waits in arrival order
  std::uint64_t deadlocks_detected = 0;
  unsigned live_threads = 0;
  unsigned starting_threads = 0;      // created, not yet started (counted against thread_limit)
  unsigned thread_limit = 0;          // 0: none (a process's limit, BootArgs::thread_limit)
  std::atomic<bool> shutting_down{false};
  int exit_code = 0;
  // Stack cache: regions of the default size, reused without a system call.
  void* stack_cache = nullptr;
  unsigned stack_cache_count = 0;
};

extern Kernel g;

inline Cpu& this_cpu() { return *static_cast<Cpu*>(arch::cpu_area()->kernel); }

// Inline: every kernel entry takes it.
inline void KernelLock::lock() {
  std::uint32_t ticket;
  if (plain_updates()) {
    ticket = next_.load(std::memory_order_relaxed);
    next_.store(ticket + 1, std::memory_order_relaxed);
  } else {
    ticket = next_.fetch_add(1, std::memory_order_relaxed);
  }
  if (serving_.load(std::memory_order_acquire) != ticket) [[unlikely]] wait_for(ticket);
  owner_.store(static_cast<int>(arch::cpu_area()->id), std::memory_order_relaxed);
}

inline void KernelLock::unlock() {
  owner_.store(-1, std::memory_order_relaxed);
  serving_.store(serving_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

// Releases the lock and sends pending IPIs but leaves interrupts masked.
// Inline for the common case, nothing pending (no IPI, no stack to unmap).
void unlock_with_pending() SPINDLE_RELEASE(g.lock);
[[gnu::always_inline]] inline void unlock_keep_irqs_masked() SPINDLE_RELEASE(g.lock) {
  Cpu& c = this_cpu();
  if (c.ipi_out == 0 && c.unmap_list == nullptr) [[likely]] {
    g.lock.unlock();
    return;
  }
  unlock_with_pending();
}
// Lock helpers, inline (every kernel entry but a system call takes one
// pair). lock_irqsave masks interrupts and takes the lock;
// unlock_irqrestore releases it, sends IPIs the critical section decided
// on, and restores the interrupt state (delivering a pending preemption).
inline arch::IrqState lock_irqsave() SPINDLE_ACQUIRE(g.lock) {
  arch::IrqState s = arch::irq_save();
  g.lock.lock();
  return s;
}
inline void unlock_irqrestore(arch::IrqState s) SPINDLE_RELEASE(g.lock) {
  unlock_keep_irqs_masked();
  arch::irq_restore(s);
}

struct SPINDLE_SCOPED_CAPABILITY LockGuard {
  LockGuard() SPINDLE_ACQUIRE(g.lock) : saved(lock_irqsave()) {}
  ~LockGuard() SPINDLE_RELEASE() { unlock_irqrestore(saved); }
  arch::IrqState saved;
};

// Scheduler (sched.cc). All require the kernel lock.
void schedule(SwitchReason why) SPINDLE_REQUIRES(g.lock);
// The wait spin (sched.cc). A thread about to block whose CPU has nothing
// else queued would hand the CPU to the idle loop, which spins anyway;
// spinning in the waiter instead lets a release from another CPU be seen
// without a block, an IPI and a wake-up. While it spins its CPU counts as
// idle, so a thread placed there preempts it, and the spin stops once
// anything is queued on its CPU or it was switched out. No lock; kernel
// threads only (not user processes, interrupt handlers or one CPU).
// spin_before_wait(ready, give_up, deadline): spins until ready() (returns
// true), give_up(), or kWaitSpins pauses (false); no spin for a deadline
// closer than kWaitSpinMinTimeout.
inline constexpr unsigned kWaitSpins = 256;
inline constexpr std::uint64_t kWaitSpinMinTimeout = 50'000;
bool wait_spin_begin(TimePoint deadline);
void wait_spin_end(bool satisfied);
inline bool wait_spin_allowed() {
  Cpu& c = this_cpu();  // stale after a migration: then the flag read is false, or the next look is right
  return c.waiter_spinning.load(std::memory_order_relaxed) && c.rq.empty();
}
template <class Ready, class GiveUp>
bool spin_before_wait(Ready ready, GiveUp give_up, TimePoint deadline) {
  if (!wait_spin_begin(deadline)) return false;
  bool got = false;
  for (unsigned i = 0; i < kWaitSpins && wait_spin_allowed() && !give_up(); ++i) {
    if (ready()) {
      got = true;
      break;
    }
    arch::cpu_relax();
  }
  wait_spin_end(got);
  return got;
}
// t became runnable: queue it on the best CPU, preempting there if it is
// more urgent than what runs (honours a pending suspend).
void make_ready(Tcb* t, bool front = false) SPINDLE_REQUIRES(g.lock);
// Ends a wait: unlink from its wait queue, cancel its timeout, make ready.
void wake(Waiter* w, Status s) SPINDLE_REQUIRES(g.lock);
// Blocks the current thread until woken or until the deadline. If wq is
// set the thread is already linked on it with wait_queue == wq (else
// wait_queue is null; a mismatch panics). Returns the wake status;
// kInterrupted at once (unlinked again, nothing waited) when the thread is
// `ending`: every caller's loop must then give up, so an ending thread
// reaches its exit.
Status block_current(WaitQueue* wq, TimePoint deadline) SPINDLE_REQUIRES(g.lock);
// Direct hand-off (channel calls): the current thread blocks as
// block_current(nullptr, deadline) and `next`, blocked with no wait queue,
// runs in its place on this CPU at once, its wait ended with kOk, without
// passing through a run queue. Only when that is what schedule() would do
// anyway (next may run here, no pending suspend or reschedule, nothing
// queued here or stealable from another CPU is more urgent than next);
// otherwise it is wake(next, kOk) then block_current. Ties among equal
// priorities go to next (a call's server runs before a queued peer).
Status block_and_switch_to(Tcb* next, TimePoint deadline) SPINDLE_REQUIRES(g.lock);
// The two halves of block_and_switch_to's direct case, for the channel
// fast path, which must know before it changes anything whether the
// hand-off will be direct: can_switch_directly(next) is that test (the
// current thread not ending, next blocked, and the conditions above; a
// timeout armed on next is the caller's to disarm, timer_cancel, as
// wake() would); switch_directly(next), only right after it said yes
// under the same lock hold, blocks the current thread (with the timeout
// the caller armed on it, if any, as block_and_switch_to does) and runs
// next here. Returns the current thread's wake status.
inline bool can_switch_directly(Cpu& c, Tcb* next) SPINDLE_REQUIRES(g.lock);
Status switch_directly(Tcb* next) SPINDLE_REQUIRES(g.lock);
// (switch_directly_begin, its first half for the system-call fast path:
// with the switch's bookkeeping, below.)
// What schedule() would pick once self (running on c) blocks: next, if
// nothing here (or stealable from another CPU) is more urgent.
[[gnu::always_inline]] inline bool direct_switch_ok(Cpu& c, Tcb* self, Tcb* next) SPINDLE_REQUIRES(g.lock) {
  int p = next->run.priority;
  bool direct = !next->suspend_requested && next->run.affinity.has(c.id) && !c.need_resched &&
                !c.rq.has_above(p) && !self->ending.load(std::memory_order_relaxed) && c.irq_depth == 0 &&
                !g.shutting_down.load(std::memory_order_relaxed);
  for (std::uint64_t bits = g.queued_cpus & ~(1ull << c.id); direct && bits; bits &= bits - 1) {
    if (g.cpus[__builtin_ctzll(bits)].rq.has_above(p)) direct = false;
  }
  return direct;
}
[[gnu::always_inline]] inline bool can_switch_directly(Cpu& c, Tcb* next) {
  return next->state == ThreadState::kBlocked && direct_switch_ok(c, c.current, next);
}
// Change a thread's effective priority / affinity, wherever it is (queued,
// running, blocked), keeping every queue's order and the global rule.
void set_effective_priority(Tcb* t, int priority) SPINDLE_REQUIRES(g.lock);
void set_thread_affinity(Tcb* t, CpuMask mask) SPINDLE_REQUIRES(g.lock);
// The running thread (one migration-safe load of the kernel's thread
// pointer, which user mode cannot read). The visible thread pointer points
// at the thread's head (ThreadHead, first in Waiter), so the fast paths
// read the id with one load (arch.h says what user mode sees there).
inline Tcb* current_thread() { return static_cast<Tcb*>(static_cast<Waiter*>(arch::kernel_thread_pointer())); }
inline void set_current_thread(Tcb* t) {
  arch::set_thread_pointers(static_cast<Waiter*>(t), static_cast<Waiter*>(t));
}
// Counts t among the live threads and makes it findable by id.
void register_thread(Tcb* t) SPINDLE_REQUIRES(g.lock);
// Returns every LockState to the allocator (at shutdown, nobody waits).
void release_lock_states() SPINDLE_REQUIRES(g.lock);
// Counts the waiters (threads and coroutine jobs, on a plain or counting
// futex word or an owner-aware lock) whose word lies in [lo, lo + size)
// and for which mine(w, ctx) holds: a shared region about to be unmapped
// (uchannel.cc) must have none of its unmapper's.
unsigned waiters_in(const void* lo, std::size_t size, bool (*mine)(const Waiter* w, const void* ctx),
                    const void* ctx) SPINDLE_REQUIRES(g.lock);
// The live (not yet freed) thread with this id, or nullptr.
Tcb* find_thread(ThreadId id) SPINDLE_REQUIRES(g.lock);
// The thread or coroutine job that holds this id, or nullptr.
Waiter* find_owner(ThreadId id) SPINDLE_REQUIRES(g.lock);
// A fresh id (for a thread, or a job's lock identity), not held by anyone.
ThreadId allocate_id() SPINDLE_REQUIRES(g.lock);
void register_id(Waiter* w) SPINDLE_REQUIRES(g.lock);
void unregister_id(Waiter* w) SPINDLE_REQUIRES(g.lock);
// Recomputes t's effective priority (base, or inherited from the waiters
// of the locks it holds) and propagates a change along the chain of owners.
void update_priority(Tcb* t) SPINDLE_REQUIRES(g.lock);
// t left blocked_lock's queue (woken, timed out): drop the state if it was
// the last waiter, and undo the boost it lent the owner.
void lock_waiter_left(Waiter* w) SPINDLE_REQUIRES(g.lock);
// A coroutine job with this lock identity ended: the contended locks it
// still owns become owner-died, as release_held_locks does for a thread.
void release_job_locks(ThreadId id) SPINDLE_REQUIRES(g.lock);
// Coroutine jobs (coro.cc): w (async) was woken; queue it on an executor.
void job_woken(Waiter* w) SPINDLE_REQUIRES(g.lock);
void job_foreign_poll(Timer* t) SPINDLE_REQUIRES(g.lock);
// The words parked jobs' foreign polls watch, for arch::idle_wait: up to
// max into out; how many. Takes the kernel lock if any job is parked so
// (none: 0 at once). Interrupts masked.
unsigned foreign_watch(arch::WatchedWord* out, unsigned max);
// kIrqForeign: every parked foreign poll looks at its word now.
void foreign_polls_now() SPINDLE_REQUIRES(g.lock);
// A process's job proxy was woken (job_woken): posts the job to its
// process's collector (ujobs.cc; backends without user mode have none).
void user_proxy_woken(Waiter* w) SPINDLE_REQUIRES(g.lock);
// Coroutine jobs' side of the futex calls (futex.cc), kernel lock held.
// futex_wait_async queues w on word if *word == expected (else
// kWouldBlock), leaving the timer to the caller. futex_lock_async is one
// acquisition attempt: kOk/kOwnerDied (acquired), an error, or kWouldBlock:
// queued (timer armed for the deadline); the wake status then says whether
// the lock was handed over (kOk, kOwnerDied) or not (kTimedOut,
// kInterrupted). A process's job proxy (ujobs.cc) passes the process and
// whether the word is shared between processes, as a process's thread's
// futex_lock does (kernel jobs: nullptr). futex_unlock_as releases the
// lock for owner id.
// Words other kernels map too (arch.h; futex.cc: Foreign words). One
// attempt to take the lock at word for id `me`: kOk or kOwnerDied (taken;
// kWaiters kept, or set with keep_waiters), kDeadlock (me holds it), or
// kWouldBlock with the word's value in *seen.
Status foreign_try_lock(std::atomic<std::uint32_t>* word, std::uint32_t me, bool keep_waiters, std::uint32_t* seen)
    SPINDLE_REQUIRES(g.lock);
Status futex_wait_async(Waiter* w, const std::atomic<std::uint32_t>* word, std::uint32_t expected, WaitOrder order,
                        const char* name) SPINDLE_REQUIRES(g.lock);
// futex_take_async: a job's (or a process's job proxy's) take of a unit
// of a counting word of this kernel: kOk, a counted unit taken at once;
// kWouldBlock, w queued as a taker (the timer left to the caller), whose
// wake status will be kOk only if a give handed it a unit: a wake that
// hands none (futex_wake) says kWouldBlock to a job.
Status futex_take_async(Waiter* w, std::atomic<std::uint32_t>* word, WaitOrder order) SPINDLE_REQUIRES(g.lock);
Status futex_lock_async(Waiter* w, std::atomic<std::uint32_t>* word, const LockPolicy& policy, TimePoint deadline,
                        const void* process = nullptr, bool shared = false) SPINDLE_REQUIRES(g.lock);
Status futex_unlock_as(std::atomic<std::uint32_t>* word, ThreadId id) SPINDLE_REQUIRES(g.lock);
// At shutdown (the CPUs have stopped): empties the futex queues, which
// outlive a boot, of the threads and jobs still waiting.
void futex_forget_waiters() SPINDLE_REQUIRES(g.lock);
// futex_wake with the kernel lock held.
unsigned futex_wake_locked(const void* word, unsigned n) SPINDLE_REQUIRES(g.lock);
// The futex calls of a thread with the kernel lock held (a wait returns
// with it held again): the system calls of processes translate the word
// and recheck it under the same hold (uprocess.h: UserWord). `shared`:
// the word is in memory shared between processes (futex_lock's owner rules).
Status futex_wait_locked(const std::atomic<std::uint32_t>* word, std::uint32_t expected, TimePoint deadline,
                         WaitOrder order, const char* name) SPINDLE_REQUIRES(g.lock);
Status futex_take_locked(std::atomic<std::uint32_t>* word, TimePoint deadline, WaitOrder order, const char* name)
    SPINDLE_REQUIRES(g.lock);
Status futex_give_locked(std::atomic<std::uint32_t>* word, std::uint32_t n, std::uint32_t max) SPINDLE_REQUIRES(g.lock);
Status futex_lock_locked(std::atomic<std::uint32_t>* word, const LockPolicy& policy, TimePoint deadline, bool shared)
    SPINDLE_REQUIRES(g.lock);
unsigned futex_waiters_locked(const void* word) SPINDLE_REQUIRES(g.lock);
// Delivers completions queued by post_external_wake (handle_irq).
void deliver_external_wakes() SPINDLE_REQUIRES(g.lock);
// Drops undelivered completions at boot and shutdown: their waiters belong
// to a kernel that is gone (a host call still running when it stopped).
void forget_external_wakes();
// A thread is exiting holding contended locks: they become owner-died.
void release_held_locks(Tcb* t) SPINDLE_REQUIRES(g.lock);
// Starvation watchdog: arm / disarm t's report timer for a wait.
void watchdog_arm(Tcb* t) SPINDLE_REQUIRES(g.lock);
// Ask `cpu` to reschedule (IPI sent when the lock is dropped).
void resched_cpu(unsigned cpu) SPINDLE_REQUIRES(g.lock);
// The priority a CPU will be running once pending preemptions land: its
// current thread's (unless that is `leaving`, which is being re-placed, or
// it is no longer running: blocking or exiting, or spinning before a wait)
// or its most urgent queued thread's, whichever is higher; -1 when idle.
[[gnu::always_inline]] inline int committed_priority(const Cpu& c, const Tcb* leaving) {
  const Tcb* cur = c.current;
  bool counts = cur && cur != c.idle && cur != leaving && cur->state == ThreadState::kRunning &&
                !c.waiter_spinning.load(std::memory_order_relaxed);
  int p = counts ? cur->run.priority : -1;
  int q = c.rq.top_priority();
  return p > q ? p : q;
}
// Whether t may run on c and nowhere else (a one-CPU kernel, a thread
// pinned there): then making it ready needs no placement.
[[gnu::always_inline]] inline bool only_here(const Cpu& c, const Tcb* t) {
  return (t->run.affinity.bits() & g.online.bits()) == 1ull << c.id;
}
// make_ready's queueing for a t that only_here(c, t), c this CPU (no
// pending suspend: the caller looked): queued on c (at the front if it
// keeps its turn), c rescheduling if t is more urgent than what it is
// committed to and does not pick anyway (in_schedule, or its current
// thread blocking or exiting under this lock hold).
[[gnu::always_inline]] inline void enqueue_here(Cpu& c, Tcb* t, bool front, bool in_schedule) SPINDLE_REQUIRES(g.lock) {
  bool preempt = committed_priority(c, t) < t->run.priority;
  t->state = ThreadState::kReady;
  t->cpu = c.id;
  if (front) {
    c.rq.push_front(&t->run);
  } else {
    c.rq.push_back(&t->run);
  }
  if (preempt && !in_schedule && c.current->state == ThreadState::kRunning) resched_cpu(c.id);
}

void timer_arm(Timer* t, std::uint64_t deadline) SPINDLE_REQUIRES(g.lock);
// Runs what an expired timer is for (by its kind).
void timer_fire(Timer* t) SPINDLE_REQUIRES(g.lock);
void thread_timeout(Timer* t) SPINDLE_REQUIRES(g.lock);  // thread.cc
void watchdog_fire(Timer* t) SPINDLE_REQUIRES(g.lock);   // futex.cc
void job_timeout(Timer* t) SPINDLE_REQUIRES(g.lock);     // coro.cc
// Disarms t if armed (inline: every wake cancels two timers, rarely armed).
void timer_disarm(Timer* t) SPINDLE_REQUIRES(g.lock);  // t armed
inline void timer_cancel(Timer* t) SPINDLE_REQUIRES(g.lock) {
  if (t->cpu() >= 0) timer_disarm(t);
}

// Thread lifecycle (thread.cc).
[[noreturn]] void exit_current(int code, bool faulted) SPINDLE_EXCLUDES(g.lock);
// Thread::join_until on t (not the caller): kOk or kFaulted, t freed and
// *exit_code set (if given); kTimedOut; kInterrupted (the caller is ending).
Status join_thread(Tcb* t, TimePoint deadline, int* exit_code) SPINDLE_EXCLUDES(g.lock);
// The Thread methods on t (it may be the caller: suspend_thread then
// switches away until resumed), checks included.
Status change_priority(Tcb* t, int priority) SPINDLE_REQUIRES(g.lock);
Status change_affinity(Tcb* t, CpuMask mask) SPINDLE_REQUIRES(g.lock);
Status suspend_thread(Tcb* t) SPINDLE_REQUIRES(g.lock);  // kInvalidState for an ending thread too
Status resume_thread(Tcb* t) SPINDLE_REQUIRES(g.lock);
// Returns t's memory: its stack goes to the cache, or to this CPU's unmap
// list, released by release_unmapped_stacks once the lock is dropped.
void free_thread(Tcb* t) SPINDLE_REQUIRES(g.lock);
void release_unmapped_stacks(void* list) SPINDLE_EXCLUDES(g.lock);
// Runs after every switch in the resumed context: reaps a dead thread.
inline void finish_switch() SPINDLE_REQUIRES(g.lock) {
  Cpu& c = this_cpu();
  if (Tcb* z = c.zombie) [[unlikely]] {
    c.zombie = nullptr;
    free_thread(z);
  }
}

inline Status WaitQueue::wait(TimePoint deadline) {
  if (deadline != kForever && deadline <= Clock::now()) return Status::kTimedOut;
  Tcb* self = this_cpu().current;
  insert(self);
  self->wait_queue = this;  // linked: block_current and wake unlink through it
  return block_current(this, deadline);
}

// ---------------------------------------------------------------------------
// The switch's bookkeeping, inline for the scheduler (sched.cc) and the
// system-call fast path (uchannel.cc, syscall_fast). All need the lock.

[[gnu::always_inline]] inline void program_timer(Cpu& c) SPINDLE_REQUIRES(g.lock) {
  std::uint64_t want = c.timers.next_deadline();
  // An unstamped slice needs an interrupt to start it; clock_hint + slice
  // is due within a slice (and may be due at once: that interrupt stamps).
  std::uint64_t slice = c.slice_end == kSliceFromNextTick ? c.clock_hint + g.timeslice_ns : c.slice_end;
  if (slice != 0 && slice < want) want = slice;
  // Only ever move the hardware deadline earlier: a later slice end is
  // handled when the earlier interrupt arrives, so a switch costs no
  // timer reprogramming (a system call on hosted).
  if (want < c.programmed) {
    c.programmed = want;
    arch::set_timer(want);
  }
}

inline std::uintptr_t stack_pointer() { return reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0)); }

// The deepest this thread's stack was seen (Stats).
inline void note_stack_depth(Tcb* t) SPINDLE_REQUIRES(g.lock) {
  std::uintptr_t sp = stack_pointer();
  if (t->lowest_sp == 0 || sp < t->lowest_sp) t->lowest_sp = sp;
}

// Everything of a switch from prev to next on c but the register switch:
// afterwards next is c's current thread and its address space is active,
// though the CPU still runs on prev's stack. false: next is prev (nothing
// to switch).
//
// The clock is read only where its value is needed: with CPU-time
// accounting on, and at the idle thread's switches (idle time is always
// kept; those switches wait or were waited for anyway). A switch between
// two threads with accounting off reads no clock (a TSC read is a third of
// a hosted yield). At a slice end the interrupt's reading serves; after a
// yield, a block or a preemption next's slice starts at the next timer
// interrupt, so it gets between one and two slices, never less than one.
[[gnu::always_inline]] inline bool begin_switch(Cpu& c, Tcb* prev, Tcb* next, SwitchReason why) SPINDLE_REQUIRES(g.lock) {
  next->state = ThreadState::kRunning;
  next->cpu = c.id;
  bool timed = g.cpu_time || next == c.idle || prev == c.idle;
  bool retime = true;
  std::uint64_t now = 0;
  if (timed) {
    now = arch::now_ns();
    c.clock_hint = now;
    c.slice_end = next == c.idle ? 0 : now + g.timeslice_ns;
  } else if (why == SwitchReason::kSliceEnd) {
    c.slice_end = c.clock_hint + g.timeslice_ns;  // handle_irq read the clock just now
  } else {
    // Already unstamped (a yield ping-pong's case): the timer's inputs are
    // unchanged, so it needs no look.
    retime = c.slice_end != kSliceFromNextTick;
    c.slice_end = kSliceFromNextTick;
  }
  if (retime) program_timer(c);
  if (next == prev) return false;

  if (timed) {
    std::uint64_t ran = now - c.switched_in_at;
    if (prev == c.idle) {
      c.idle_ns += ran;
    } else if (g.cpu_time) {
      prev->cpu_ns += ran;
    }
    c.switched_in_at = now;
  }
  ++next->switches_in;
  ++c.switches;
  if (why == SwitchReason::kPreempt || why == SwitchReason::kSliceEnd) ++prev->preemptions;
  note_stack_depth(prev);
  c.current = next;
  set_current_thread(next);
  arch::address_space_activate(next->address_space);
  return true;
}

// switch_directly's changes of state: self blocks (no queue, no deadline),
// next's wait ends with kOk.
[[gnu::always_inline]] inline Tcb* block_for_direct(Cpu& c, Tcb* next) SPINDLE_REQUIRES(g.lock) {
  Tcb* self = c.current;
  next->wake_status = Status::kOk;
  self->state = ThreadState::kBlocked;
  self->wait_queue = nullptr;
  self->wake_status = Status::kOk;
  return self;
}

// switch_directly in two halves, for a next that will resume straight at
// its saved user frame rather than through its kernel continuation (the
// system-call fast path: kernel::syscall_fast). switch_directly_begin(c, next)
// blocks the current thread as switch_directly does and does all of the
// switch but the register switch: next is then this CPU's current thread
// and its address space is active, while the CPU still runs on the
// caller's stack, lock held. Returns the caller (now blocked), for the
// backend's arch::context_switch_to_user, which completes it.
[[gnu::always_inline]] inline Tcb* switch_directly_begin(Cpu& c, Tcb* next) SPINDLE_REQUIRES(g.lock) {
  Tcb* self = block_for_direct(c, next);
  // Neither is the idle thread, which never blocks: begin_switch's idle
  // tests fold away.
  if (self == c.idle || next == c.idle) __builtin_unreachable();
  (void)begin_switch(c, self, next, SwitchReason::kBlock);  // next != self: next was blocked
  return self;
}

// Coroutine jobs (coro.cc): state reset at boot; after the CPUs stopped,
// jobs still suspended are withdrawn from the kernel's queues.
void jobs_boot();
void jobs_shutdown() SPINDLE_REQUIRES(g.lock);

// Boot (boot.cc): kmain and BootArgs are declared in arch/arch.h.
// Ends the system: every CPU stops scheduling and kmain returns `code`.
void shutdown(int code);

using spindle::panic;

}  // namespace spindle::kernel
