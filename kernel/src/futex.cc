// The futex-like interface every blocking object is built on.
//
// Plain waits (futex_wait/futex_wake): a fixed hash of wait queues keyed by
// the word's address; waiters of different words may share a bucket and
// wake filters by key.
//
// Owner-aware locks (futex_lock/futex_unlock): the lock word holds the
// owner's id, so the kernel can find the owner when a thread blocks. A
// contended word gets a LockState (its own wait queue and the owner the
// kernel knows of), linked into the owner's held_locks so priority
// inheritance can compute the owner's effective priority as the maximum of
// its base priority and the top waiter of every lock it holds.
//
// Invariants (all under the kernel lock):
//  - a LockState exists for a word iff its queue has waiters;
//  - the word's kWaiters bit is set whenever a LockState exists (it may be
//    set spuriously, which only costs the next unlock a kernel call);
//  - the kernel only sets kWaiters under the lock; user space only ever
//    swaps 0 -> id and id -> 0 (or id -> id|... via futex_lock), so a
//    kernel CAS on the word races only with those;
//  - s->owner, when set, has s in its held_locks; a thread blocked on s
//    has blocked_lock() == s and wait_queue == &s->waiters.
//
// Words shared with other kernels (arch.h; hosted processes' SharedMemory)
// take none of the above: see "Foreign words" below.
#include <new>

#include "kernel.h"
#include "spindle/console.h"
#include "spindle/diagnostics.h"
#include "spindle/futex.h"
#include "spindle/task.h"
#include "user.h"

namespace spindle {
namespace kernel {
namespace {

constexpr unsigned kBuckets = 256;

struct Bucket {
  WaitQueue prio{WaitQueue::Order::kPriority};
  WaitQueue fifo{WaitQueue::Order::kFifo};
};
Bucket g_buckets[kBuckets];

// Fibonacci hashing: the top bits of the word index times 2^64 / phi
// (every address bit above the alignment moves them).
template <unsigned kBits>
unsigned hash_key(const void* key) {
  std::uint64_t a = reinterpret_cast<std::uintptr_t>(key) >> 2;
  return static_cast<unsigned>((a * 0x9E3779B97F4A7C15ull) >> (64 - kBits));
}

static_assert(kBuckets == 256);
Bucket& bucket_of(const void* key) { return g_buckets[hash_key<8>(key)]; }

WaitQueue::Order to_order(WaitOrder o) {
  return o == WaitOrder::kFifo ? WaitQueue::Order::kFifo : WaitQueue::Order::kPriority;
}

// ---------------------------------------------------------------------------
// LockState lookup and lifetime.

static_assert(kLockBuckets == 256);
auto& lock_bucket(const void* key) { return g.lock_states[hash_key<8>(key)]; }

LockState* find_state(const void* key) SPINDLE_REQUIRES(g.lock) {
  LockState* found = nullptr;
  lock_bucket(key).for_each([&](LockState* s) {
    if (s->key == key) found = s;
  });
  return found;
}

// A state for key with the caller's policy, or nullptr when memory is out.
LockState* create_state(const void* key, const LockPolicy& p) SPINDLE_REQUIRES(g.lock) {
  LockState* s = g.free_lock_states.pop_front();
  if (!s) {
    // The kernel allocator never sleeps; it is safe under the lock.
    s = new (std::nothrow) LockState;
    if (!s) return nullptr;
  }
  s->key = key;
  s->owner = nullptr;
  s->waiters.set_order(to_order(p.order));
  s->inherit = p.inherit;
  s->handoff = p.handoff;
  s->aging = p.aging;
  s->handoffs = 0;
  s->name = p.name ? p.name : "lock";
  lock_bucket(key).push_back(s);
  return s;
}

void set_owner(LockState* s, Tcb* owner) SPINDLE_REQUIRES(g.lock) {
  if (s->owner == owner) return;
  Tcb* old = s->owner;
  if (old) decltype(old->held_locks)::remove(s);
  s->owner = owner;
  if (owner) owner->held_locks.push_back(s);
  if (old) update_priority(old);
  if (owner) update_priority(owner);
}

std::atomic<std::uint32_t>* word_of(LockState* s) {
  return static_cast<std::atomic<std::uint32_t>*>(const_cast<void*>(s->key));
}

// The thread behind w for priority inheritance and cycle detection; a
// coroutine job takes part in neither.
Tcb* thread_of(Waiter* w) { return w && !w->async ? static_cast<Tcb*>(w) : nullptr; }

// Whether the owner found for a lock word's id is gone: no thread or job
// has the id, or its thread has exited (unjoined).
bool owner_ended(Waiter* w) {
  Tcb* t = thread_of(w);
  return !w || (t && t->state == ThreadState::kDead);
}

// Direct hand-off: the word names w as the owner before w runs, so no
// newcomer can take the lock ahead of the queue. `st` is kOk or kOwnerDied.
void hand_off(LockState* s, Waiter* w, Status st) SPINDLE_REQUIRES(g.lock) {
  using namespace lock_word;
  bool more = s->waiters.size() > 1;
  word_of(s)->store(static_cast<std::uint32_t>(w->head.id) | (more ? kWaiters : 0) |
                        (st == Status::kOwnerDied ? kOwnerDied : 0),
                    std::memory_order_release);
  ++s->handoffs;
  if (Tcb* t = thread_of(w)) t->handed_off = true;  // a job reads its wake status
  set_owner(s, thread_of(w));
  wake(w, st);  // may release s if w was the last waiter
}

// The owner of s is gone: the next owner learns it with kOwnerDied. A job
// waiting is handed the lock (it cannot retry by itself); a thread is woken
// and takes it over in futex_lock.
void pass_dead_lock(LockState* s) SPINDLE_REQUIRES(g.lock) {
  word_of(s)->fetch_or(lock_word::kOwnerDied, std::memory_order_relaxed);
  set_owner(s, nullptr);
  Waiter* w = s->waiters.front();
  if (!w) return;
  if (w->async) {
    hand_off(s, w, Status::kOwnerDied);
  } else {
    wake(w, Status::kOk);
  }
}

// Recycles s once nobody waits on it, clearing the word's kWaiters.
void drop_if_unused(LockState* s) SPINDLE_REQUIRES(g.lock) {
  if (!s->waiters.empty()) return;
  word_of(s)->fetch_and(~lock_word::kWaiters, std::memory_order_relaxed);
  set_owner(s, nullptr);
  decltype(g.free_lock_states)::remove(s);  // from its hash bucket
  s->key = nullptr;
  g.free_lock_states.push_back(s);
}

// The waiter an unlock serves: the queue's front, unless aging is on and
// some waiters have been passed over `aging` hand-offs: then the one of
// those that arrived first.
Waiter* choose_waiter(LockState* s) SPINDLE_REQUIRES(g.lock) {
  Waiter* pick = s->waiters.front();
  if (s->aging == 0) return pick;
  Waiter* aged = nullptr;
  for (Waiter* t = pick; t; t = s->waiters.next(t)) {
    // 32-bit counters, compared modulo 2^32 (waiters arrive fewer than 2^31 apart).
    bool passed_over = static_cast<std::uint32_t>(s->handoffs) - t->lock_wait->arrival >= s->aging;
    if (passed_over && (!aged || static_cast<std::int32_t>(t->lock_wait->seq - aged->lock_wait->seq) < 0)) aged = t;
  }
  return aged ? aged : pick;
}

// ---------------------------------------------------------------------------
// Deadlock detection: would `self` waiting for `owner` close a cycle?

bool closes_cycle(Tcb* self, Tcb* owner) SPINDLE_REQUIRES(g.lock) {
  Tcb* t = owner;
  for (unsigned hops = 0; t && hops <= g.live_threads; ++hops) {
    if (t == self) return true;
    t = t->blocked_lock() ? t->blocked_lock()->owner : nullptr;
  }
  return false;
}

void report_cycle(Tcb* self, LockState* want, const char* want_name) SPINDLE_REQUIRES(g.lock) {
  char buf[512];
  int n = format(buf, sizeof buf, "spindle: deadlock: thread '%s' (id %llu) would wait for '%s'", self->name,
                 static_cast<unsigned long long>(self->head.id), want_name);
  for (Tcb* t = want->owner; t && n < static_cast<int>(sizeof buf);) {
    n += format(buf + n, sizeof buf - static_cast<unsigned>(n), ", held by '%s' (id %llu)", t->name,
                static_cast<unsigned long long>(t->head.id));
    if (t == self || !t->blocked_lock() || n >= static_cast<int>(sizeof buf)) break;
    n += format(buf + n, sizeof buf - static_cast<unsigned>(n), ", which waits for '%s'", t->blocked_lock()->name);
    t = t->blocked_lock()->owner;
  }
  print("%s: a cycle; the call returns kDeadlock\n", buf);
  ++g.deadlocks_detected;
}

// ---------------------------------------------------------------------------
// Starvation watchdog.


}  // namespace

void watchdog_fire(Timer* tm) {
  Tcb* t = reinterpret_cast<Tcb::Watchdog*>(tm)->thread;
  if (t->state != ThreadState::kBlocked && t->state != ThreadState::kSuspended) return;
  auto waited_ms = static_cast<unsigned long long>((arch::now_ns() - t->blocked_since) / 1'000'000);
  Tcb* owner = t->blocked_lock() ? t->blocked_lock()->owner : nullptr;
  if (owner) {
    print("spindle: starvation: thread '%s' (id %llu, priority %d) has waited %llu ms for '%s', held by '%s' (id %llu)\n",
          t->name, static_cast<unsigned long long>(t->head.id), t->run.priority, waited_ms,
          t->wait_name ? t->wait_name : "?", owner->name, static_cast<unsigned long long>(owner->head.id));
  } else {
    print("spindle: starvation: thread '%s' (id %llu, priority %d) has waited %llu ms for '%s'\n", t->name,
          static_cast<unsigned long long>(t->head.id), t->run.priority, waited_ms,
          t->wait_name ? t->wait_name : "?");
  }
  ++g.starvation_reports;
}

void watchdog_arm(Tcb* t) {
  if constexpr (kWatchdog) {
    if (g.starvation_bound_ns == 0 || !t->futex_key) return;
    t->blocked_since = arch::now_ns();
    t->watchdog.timer.set_kind(TimerKind::kWatchdog);
    t->watchdog.thread = t;
    timer_arm(&t->watchdog.timer, t->blocked_since + g.starvation_bound_ns);
  }
}

unsigned waiters_in(const void* lo, std::size_t size, bool (*mine)(const Waiter*, const void*), const void* ctx) {
  auto in = [&](const void* key) {
    return reinterpret_cast<std::uintptr_t>(key) - reinterpret_cast<std::uintptr_t>(lo) < size;
  };
  unsigned n = 0;
  auto count = [&](const WaitQueue& q, bool all) {
    for (Waiter* w = q.front(); w; w = q.next(w)) {
      if ((all || in(w->futex_key)) && mine(w, ctx)) ++n;
    }
  };
  for (Bucket& b : g_buckets) {
    count(b.prio, false);
    count(b.fifo, false);
  }
  for (auto& bucket : g.lock_states) {
    bucket.for_each([&](LockState* s) {
      if (in(s->key)) count(s->waiters, true);
    });
  }
  return n;
}

void release_lock_states() {
  for (auto& bucket : g.lock_states) {
    while (LockState* s = bucket.pop_front()) delete s;
  }
  while (LockState* s = g.free_lock_states.pop_front()) delete s;
}

void lock_waiter_left(Waiter* t) {
  LockWait* lw = t->lock_wait;
  LockState* s = lw->lock;
  t->lock_wait = nullptr;
  if (t->async) detail::frame_free(lw, sizeof(LockWait));
  if (s->waiters.empty()) {
    drop_if_unused(s);
  } else if (s->inherit && s->owner) {
    update_priority(s->owner);  // t's boost is gone; the next waiter's remains
  }
}

void release_held_locks(Tcb* t) {
  // Each lock it held with waiters: the owner field keeps the dead id and
  // gains kOwnerDied; the next futex_lock sees a dead owner and takes it
  // over with Status::kOwnerDied. Wake one waiter to do so.
  while (LockState* s = t->held_locks.front()) pass_dead_lock(s);
}

void release_job_locks(ThreadId id) {
  // A job owns no held_locks list (it takes no part in inheritance): find
  // the contended words that name it.
  for (auto& bucket : g.lock_states) {
    for (LockState* s = bucket.front(); s;) {
      LockState* next = bucket.next(s);
      if ((word_of(s)->load(std::memory_order_relaxed) & lock_word::kOwnerMask) == id) pass_dead_lock(s);
      s = next;
    }
  }
}

void futex_forget_waiters() {
  for (Bucket& b : g_buckets) {
    for (WaitQueue* q : {&b.fifo, &b.prio}) {
      while (Waiter* w = q->front()) q->remove(w);
    }
  }
}

unsigned futex_wake_locked(const void* word, unsigned n) {
  Bucket& b = bucket_of(word);
  unsigned woken = 0;
  // FIFO waiters of this word first, then priority ones: one word is only
  // ever waited on with one order by a well-formed object.
  for (WaitQueue* q : {&b.fifo, &b.prio}) {
    while (woken < n) {
      Waiter* w = q->first_with_key(word);
      if (!w) break;
      // No unit for a taker: a thread sees handed_off clear, a job kWouldBlock.
      wake(w, w->async && w->takes_units ? Status::kWouldBlock : Status::kOk);
      ++woken;
    }
  }
  return woken;
}

namespace {
// External completions not yet delivered (a Treiber stack; the drain takes
// it whole, so there is no ABA).
std::atomic<ExternalWake*> g_external{nullptr};
}  // namespace

void post_external_wake(ExternalWake* ev) {
  ExternalWake* head = g_external.load(std::memory_order_relaxed);
  do {
    ev->next = head;
  } while (!g_external.compare_exchange_weak(head, ev, std::memory_order_release, std::memory_order_relaxed));
  // The first of a batch sends the IPI; later ones ride on it (the drain
  // takes the whole stack, and a post after the drain finds it empty).
  if (!head) arch::send_ipi(0);
}

void forget_external_wakes() { g_external.store(nullptr, std::memory_order_relaxed); }

void deliver_external_wakes() {
  if (!g_external.load(std::memory_order_relaxed)) return;
  ExternalWake* ev = g_external.exchange(nullptr, std::memory_order_acquire);
  while (ev) {
    ExternalWake* next = ev->next;  // read first: once word is 1 the waiter may free ev
    void (*delivered)(ExternalWake*) = ev->delivered;
    ev->word.store(1, std::memory_order_release);
    futex_wake_locked(&ev->word, ~0u);  // uses the address only as a key
    if (delivered) delivered(ev);
    ev = next;
  }
}

namespace {
// Links a job (or a process's job proxy) on word's queue of its order; it
// does not block: the caller parks it.
void queue_async(Waiter* w, const std::atomic<std::uint32_t>* word, WaitOrder order) SPINDLE_REQUIRES(g.lock) {
  w->futex_key = word;
  Bucket& b = bucket_of(word);
  WaitQueue* q = order == WaitOrder::kFifo ? &b.fifo : &b.prio;
  q->insert(w);
  w->wait_queue = q;
}
}  // namespace

Status futex_wait_async(Waiter* w, const std::atomic<std::uint32_t>* word, std::uint32_t expected,
                        WaitOrder order, const char* name) {
  if (word->load(std::memory_order_seq_cst) != expected) return Status::kWouldBlock;
  (void)name;  // a job's wait is not reported by name (only threads have a watchdog)
  queue_async(w, word, order);
  return Status::kOk;
}

// ---------------------------------------------------------------------------
// Foreign words: words other kernels map too (arch.h: Words shared with
// other kernels). Their waiters are spread over several kernels, so none of
// this kernel's queues can hold them all: waits go to arch::foreign_wait,
// and a lock runs on its word alone, as a classic futex mutex. The word
// layout is the same (owner id, kOwnerDied, kWaiters), so user space's two
// CASes are unchanged; kWaiters means "someone may sleep: wake one at
// unlock", and a thread that slept sets it again when it takes the lock,
// since others may sleep still. Owner ids are unique across the kernels
// that share words (BootArgs: disjoint id ranges).
//
// What one word cannot carry is given up there, and documented: priority
// inheritance, hand-off and queue order (the host wakes in its own order),
// wait-cycle detection and the starvation watchdog. A dead owner wakes
// nobody, so a waiter looks again at least every kForeignRecheckNs. A
// coroutine job cannot sleep in the host's futex: its waits poll
// (coro.cc: foreign polls).
namespace {

// Whether the owner a foreign word names has ended.
bool foreign_owner_gone(std::uint32_t id) SPINDLE_REQUIRES(g.lock) {
  switch (arch::owner_liveness(id)) {
    case arch::OwnerLiveness::kAlive: return false;
    case arch::OwnerLiveness::kDead: return true;
    case arch::OwnerLiveness::kLocal: break;
  }
  return owner_ended(find_owner(id));
}

}  // namespace

Status foreign_try_lock(std::atomic<std::uint32_t>* word, std::uint32_t me, bool keep_waiters, std::uint32_t* seen) {
  using namespace lock_word;
  for (;;) {
    std::uint32_t v = word->load(std::memory_order_relaxed);
    *seen = v;
    std::uint32_t owner = v & kOwnerMask;
    if (owner == me) return Status::kDeadlock;
    bool gone = owner != 0 && foreign_owner_gone(owner);
    if (owner != 0 && !gone) return Status::kWouldBlock;
    std::uint32_t nv = me | (keep_waiters || (v & kWaiters) ? kWaiters : 0) | (gone ? kOwnerDied : 0);
    if (word->compare_exchange_strong(v, nv, std::memory_order_acquire, std::memory_order_relaxed)) {
      return gone ? Status::kOwnerDied : Status::kOk;
    }
  }
}

namespace {

constexpr std::int64_t kForeignRecheckNs = 10'000'000;

std::int64_t deadline_ns(TimePoint deadline) {
  return deadline == kForever ? INT64_MAX : deadline.time_since_epoch().count();
}

Status foreign_lock(std::atomic<std::uint32_t>* word, std::uint32_t me, TimePoint deadline) {
  using namespace lock_word;
  const std::int64_t end = deadline_ns(deadline);
  bool slept = false;
  for (;;) {
    std::uint32_t v;
    Status st;
    {
      LockGuard guard;
      st = foreign_try_lock(word, me, slept, &v);
    }
    if (st != Status::kWouldBlock) return st;
    auto now = static_cast<std::int64_t>(arch::now_ns());
    if (now >= end) return Status::kTimedOut;
    if (!(v & kWaiters)) {
      if (!word->compare_exchange_strong(v, v | kWaiters, std::memory_order_relaxed, std::memory_order_relaxed)) {
        continue;
      }
      v |= kWaiters;
    }
    std::int64_t until = end - now > kForeignRecheckNs ? now + kForeignRecheckNs : end;
    st = arch::foreign_wait(word, v, static_cast<std::uint64_t>(until), !slept, false);
    if (st == Status::kInvalidState) return st;
    if (st != Status::kWouldBlock) slept = true;
  }
}

Status foreign_unlock(std::atomic<std::uint32_t>* word, std::uint32_t me) {
  std::uint32_t v = word->load(std::memory_order_relaxed);
  do {
    if ((v & lock_word::kOwnerMask) != me) return Status::kInvalidState;
  } while (!word->compare_exchange_weak(v, 0, std::memory_order_release, std::memory_order_relaxed));
  if (v & lock_word::kWaiters) arch::foreign_wake(word, 1);
  return Status::kOk;
}

}  // namespace
}  // namespace kernel

using namespace kernel;

Status futex_wait(const std::atomic<std::uint32_t>* word, std::uint32_t expected, TimePoint deadline,
                  WaitOrder order, const char* name) {
  if (in_user_process()) {
    return status_from(sys(kSysFutexWait, user_arg(word), expected, deadline_arg(deadline), static_cast<unsigned>(order)));
  }
  if (!arch::irqs_enabled()) return Status::kInvalidState;
  if (arch::foreign_word(word)) {
    return arch::foreign_wait(word, expected, static_cast<std::uint64_t>(deadline_ns(deadline)), true, false);
  }
  LockGuard guard;
  return futex_wait_locked(word, expected, deadline, order, name);
}

namespace kernel {
Status futex_wait_locked(const std::atomic<std::uint32_t>* word, std::uint32_t expected, TimePoint deadline,
                         WaitOrder order, const char* name) {
  if (word->load(std::memory_order_seq_cst) != expected) return Status::kWouldBlock;
  Tcb* self = this_cpu().current;
  self->futex_key = word;
  self->wait_name = name;
  Bucket& b = bucket_of(word);
  Status s = (order == WaitOrder::kFifo ? b.fifo : b.prio).wait(deadline);
  self->futex_key = nullptr;
  return s;
}
}  // namespace kernel

unsigned futex_wake(const std::atomic<std::uint32_t>* word, unsigned n) {
  if (in_user_process()) return static_cast<unsigned>(sys(kSysFutexWake, user_arg(word), n));
  if (arch::foreign_word(word)) return arch::foreign_wake(word, n);
  LockGuard guard;
  return futex_wake_locked(word, n);
}

// ---------------------------------------------------------------------------
// Counting words (futex.h). For a word of this kernel:
//  - kSleepers is set (by futex_take, under the lock) before a taker
//    queues, and cleared (by futex_give or a leaving taker, under the lock)
//    only when no waiter of the word is queued. A spurious kSleepers (a
//    waiter that left some other way) costs the next give a kernel call.
//  - While the word reads kSleepers, user space does not write it (a take
//    finds no unit, a give comes here), so a store under the lock is safe.
//  - A taker (Waiter::takes_units) is handed a unit only by a give: a
//    thread in futex_take by handed_off, set before its wake; a coroutine
//    job or a process's job proxy (futex_take_async) by its wake status,
//    kOk only from a give, kWouldBlock from futex_wake (and a foreign
//    poll). Any other wake hands nothing and it takes again.
// A foreign word keeps no queue here: kSleepers means "someone may sleep
// in the host's futex"; a give clears it and wakes every sleeper, and those
// that find no unit set it again before they sleep.
namespace kernel {
namespace {

using count_word::kCountMask;
using count_word::kSleepers;
using count_word::take_or_mark;

// take_or_mark for a word of this kernel (not foreign), under the kernel
// lock. On one CPU nothing else can write the word while the lock is held
// with interrupts masked (its other users are threads of this CPU), so
// plain loads and stores do what the CAS loop does, without the atomic
// read-modify-write (where that is costly: KernelLock::plain_updates).
[[gnu::always_inline]] inline bool take_or_mark_locked(std::atomic<std::uint32_t>* word) SPINDLE_REQUIRES(g.lock) {
  if (!g.lock.plain_updates()) return take_or_mark(*word);
  std::uint32_t c = word->load(std::memory_order_relaxed);
  if (c & kCountMask) {
    word->store(c - 1, std::memory_order_relaxed);
    return true;
  }
  if (!(c & kSleepers)) word->store(c | kSleepers, std::memory_order_relaxed);
  return false;
}

bool has_waiters(const void* word) SPINDLE_REQUIRES(g.lock) {
  Bucket& b = bucket_of(word);
  return b.fifo.first_with_key(word) || b.prio.first_with_key(word);
}

// Adds `units` to the count; clears kSleepers when `idle`. false: the count
// would pass max (nothing changed).
[[gnu::always_inline]] inline bool add_units(std::atomic<std::uint32_t>* word, std::uint32_t units, std::uint32_t max, bool idle) {
  std::uint32_t c = word->load(std::memory_order_relaxed);
  if (c == kSleepers) {  // only kernels write it now (see above)
    if (units > max) return false;
    word->store(units | (idle ? 0 : kSleepers), std::memory_order_release);
    return true;
  }
  std::uint32_t nv;
  do {
    if (units > max - (c & kCountMask)) return false;
    nv = ((c & kCountMask) + units) | (idle ? 0 : c & kSleepers);
  } while (!word->compare_exchange_weak(c, nv, std::memory_order_release, std::memory_order_relaxed));
  return true;
}

Status foreign_take(std::atomic<std::uint32_t>* word, TimePoint deadline) {
  const std::int64_t end = deadline_ns(deadline);
  // Looks at the word before the first sleep only: a give wakes every
  // sleeper, and those that find no unit go straight back to sleep.
  for (bool first = true;; first = false) {
    if (take_or_mark(*word)) return Status::kOk;
    if (static_cast<std::int64_t>(arch::now_ns()) >= end) return Status::kTimedOut;
    Status s = arch::foreign_wait(word, kSleepers, static_cast<std::uint64_t>(end), first, true);  // a give wakes all
    if (s == Status::kInvalidState) return s;
  }
}

Status foreign_give(std::atomic<std::uint32_t>* word, std::uint32_t n, std::uint32_t max) {
  std::uint32_t c = word->load(std::memory_order_relaxed);
  do {
    if (n > max - (c & kCountMask)) return Status::kOverflow;
  } while (!word->compare_exchange_weak(c, (c & kCountMask) + n, std::memory_order_release, std::memory_order_relaxed));
  if (c & kSleepers) arch::foreign_wake(word, UINT32_MAX);
  return Status::kOk;
}

// futex_take_locked and futex_give_locked's bodies, inline in futex_take
// and futex_give (the kernel's own semaphores' path); the external ones are
// for the system calls of processes.
[[gnu::always_inline]] inline Status take_locked(std::atomic<std::uint32_t>* word, TimePoint deadline, WaitOrder order,
                                                 const char* name) SPINDLE_REQUIRES(g.lock) {
  Tcb* self = this_cpu().current;
  Bucket& b = bucket_of(word);
  WaitQueue& q = order == WaitOrder::kFifo ? b.fifo : b.prio;
  for (;;) {
    if (take_or_mark_locked(word)) return Status::kOk;
    self->futex_key = word;
    self->wait_name = name;
    self->takes_units = true;
    self->handed_off = false;
    Status s = q.wait(deadline);
    self->futex_key = nullptr;
    self->takes_units = false;
    if (self->handed_off) {
      self->handed_off = false;
      return Status::kOk;
    }
    if (s == Status::kOk) continue;  // a plain futex_wake: look again
    // Leaving with nothing handed over: a unit counted meanwhile is still ours to take.
    if (s == Status::kTimedOut && take_or_mark_locked(word)) s = Status::kOk;
    if (!has_waiters(word)) add_units(word, 0, kCountMask, true);
    return s;
  }
}

[[gnu::always_inline]] inline Status give_locked(std::atomic<std::uint32_t>* word, std::uint32_t n, std::uint32_t max)
    SPINDLE_REQUIRES(g.lock);

}  // namespace

Status futex_take_locked(std::atomic<std::uint32_t>* word, TimePoint deadline, WaitOrder order, const char* name) {
  return take_locked(word, deadline, order, name);
}
Status futex_give_locked(std::atomic<std::uint32_t>* word, std::uint32_t n, std::uint32_t max) {
  return give_locked(word, n, max);
}

Status futex_take_async(Waiter* w, std::atomic<std::uint32_t>* word, WaitOrder order) SPINDLE_REQUIRES(g.lock) {
  if (take_or_mark_locked(word)) return Status::kOk;
  w->takes_units = true;
  queue_async(w, word, order);
  return Status::kWouldBlock;
}

namespace {
// give_locked's common case in one flat step: one unit for the word's only
// waiter, a thread that takes units, blocked with no timer and allowed only
// on this CPU (a same-CPU hand-off). It does what the general loop below
// and wake() would do for it; anything else (another waiter in the bucket,
// a job, a waiter that takes no units or waits for a lock, a timeout or
// watchdog armed, a pending suspend, placement to decide) is left to them:
// false, nothing changed.
[[gnu::always_inline]] inline bool give_to_lone_local_waiter(std::atomic<std::uint32_t>* word)
    SPINDLE_REQUIRES(g.lock) {
  if (word->load(std::memory_order_relaxed) != kSleepers) return false;  // count 0, someone sleeps
  Bucket& b = bucket_of(word);
  Waiter* w = b.prio.front();
  if (!b.fifo.empty() || !w || w->futex_key != word || b.prio.next(w) || w->async || !w->takes_units ||
      w->lock_wait) {
    return false;
  }
  Tcb* t = static_cast<Tcb*>(w);
  Cpu& c = this_cpu();
  if (t->state != ThreadState::kBlocked || t->timer.cpu() >= 0 || t->watchdog.timer.cpu() >= 0 ||
      t->suspend_requested || !only_here(c, t)) {
    return false;
  }
  b.prio.remove(w);
  t->handed_off = true;
  t->wake_status = Status::kOk;
  enqueue_here(c, t, false, false);
  word->store(0, std::memory_order_release);  // no unit counted, nobody left asleep
  return true;
}

Status give_locked(std::atomic<std::uint32_t>* word, std::uint32_t n, std::uint32_t max) {
  if (n == 1 && max != 0 && give_to_lone_local_waiter(word)) return Status::kOk;
  std::uint32_t c = word->load(std::memory_order_relaxed);
  if (n > max - (c & kCountMask)) return Status::kOverflow;
  Bucket& b = bucket_of(word);
  // The word's waiters in wake order: its FIFO waiters, then its priority-ordered ones.
  WaitQueue* q = &b.fifo;
  Waiter* w = b.fifo.first_with_key(word);
  if (!w) {
    q = &b.prio;
    w = b.prio.first_with_key(word);
  }
  std::uint32_t counted = 0;  // units for the count: those of waiters that take their own
  for (; w && n != 0; --n) {
    Waiter* next = q->next_with_key(w, word);  // before wake() unlinks w
    if (!next && q == &b.fifo) {
      q = &b.prio;
      next = b.prio.first_with_key(word);
    }
    if (w->takes_units) {
      if (Tcb* t = thread_of(w)) t->handed_off = true;  // a job's is its wake status, kOk
    } else {
      ++counted;
    }
    wake(w, Status::kOk);
    w = next;
  }
  add_units(word, counted + n, max, !w);  // fits: checked above, under the lock
  return Status::kOk;
}
}  // namespace

}  // namespace kernel

Status futex_take(std::atomic<std::uint32_t>* word, TimePoint deadline, WaitOrder order, const char* name) {
  if (in_user_process()) {
    return status_from(sys(kSysFutexTake, user_arg(word), deadline_arg(deadline), static_cast<unsigned>(order)));
  }
  if (!arch::irqs_enabled()) return Status::kInvalidState;
  if (arch::foreign_word(word)) return foreign_take(word, deadline);
  LockGuard guard;
  return take_locked(word, deadline, order, name);
}

Status futex_give(std::atomic<std::uint32_t>* word, std::uint32_t n, std::uint32_t max) {
  if (in_user_process()) return status_from(sys(kSysFutexGive, user_arg(word), n, max));
  if (max > count_word::kCountMask) return Status::kInvalidArgument;
  if (arch::foreign_word(word)) return foreign_give(word, n, max);
  LockGuard guard;
  return give_locked(word, n, max);
}

unsigned futex_waiters(const std::atomic<std::uint32_t>* word) {
  if (in_user_process()) return static_cast<unsigned>(sys(kSysFutexWaiters, user_arg(word)));
  if (arch::foreign_word(word)) return 0;
  LockGuard guard;
  return kernel::futex_waiters_locked(word);
}

namespace kernel {
unsigned futex_waiters_locked(const void* word) {
  unsigned n = 0;
  Bucket& b = bucket_of(word);
  for (WaitQueue* q : {&b.fifo, &b.prio}) {
    for (Waiter* w = q->first_with_key(word); w; w = q->next_with_key(w, word)) ++n;
  }
  return n;
}
}  // namespace kernel

namespace kernel {
namespace {

// One attempt to take the lock at word for self (a thread or a job).
// Returns kOk or kOwnerDied (acquired), kDeadlock, kNoMemory, kTimedOut
// (nothing changed), or kWouldBlock: self is queued on the lock's waiters
// (lock_wait, wait_queue set) and must now block or suspend.
// self_process: the process self acts for (nullptr: the kernel), and
// self_shared whether the word is in memory it shares with other processes.
Status lock_step(Waiter* self, std::atomic<std::uint32_t>* word, const LockPolicy& policy, TimePoint deadline,
                 const void* self_process, bool self_shared) SPINDLE_REQUIRES(g.lock) {
  using namespace lock_word;
  const auto me = static_cast<std::uint32_t>(self->head.id);
  for (;;) {
    std::uint32_t v = word->load(std::memory_order_relaxed);
    std::uint32_t owner_id = v & kOwnerMask;
    LockState* s = find_state(word);
    Waiter* owner = owner_id ? find_owner(owner_id) : nullptr;
    // A word in a process's private memory can only name that process's
    // threads: an id it made up (or a stale one) is a dead owner, never
    // another process's thread to lend priority to or to follow for
    // cycles. In a region shared between processes any thread may own it.
    if (owner && !owner->async && self_process && !self_shared && static_cast<Tcb*>(owner)->process != self_process) {
      owner = nullptr;
    }
    Tcb* owner_thread = thread_of(owner);
    bool owner_dead = owner_id != 0 && owner_ended(owner);
    if (owner_id == 0 || owner_dead) {
      // Free (or its owner is gone): take it, keeping kWaiters for the
      // waiters still queued.
      std::uint32_t died = owner_dead || (v & kOwnerDied) ? kOwnerDied : 0;
      std::uint32_t nv = me | (s ? kWaiters : 0) | died;
      if (!word->compare_exchange_strong(v, nv, std::memory_order_acquire, std::memory_order_relaxed)) continue;
      if (s) set_owner(s, thread_of(self));
      return died ? Status::kOwnerDied : Status::kOk;
    }
    if (owner_id == me) return Status::kDeadlock;
    if (!(v & kWaiters) &&
        !word->compare_exchange_strong(v, v | kWaiters, std::memory_order_relaxed, std::memory_order_relaxed)) {
      continue;
    }
    if (!s && !(s = create_state(word, policy))) return Status::kNoMemory;  // kWaiters stays: harmless
    set_owner(s, owner_thread);  // it may have been taken in user space since
    const char* name = policy.name ? policy.name : s->name;
    if (kDeadlockDetection && g.deadlock_detection && !self->async && closes_cycle(static_cast<Tcb*>(self), owner_thread)) {
      report_cycle(static_cast<Tcb*>(self), s, name);
      drop_if_unused(s);
      return Status::kDeadlock;
    }
    if (deadline != kForever && deadline <= Clock::now()) {
      drop_if_unused(s);
      return Status::kTimedOut;
    }
    LockWait* lw = self->async ? static_cast<LockWait*>(detail::frame_alloc(sizeof(LockWait)))
                               : &static_cast<Tcb*>(self)->own_lock_wait;
    if (!lw) {
      drop_if_unused(s);
      return Status::kNoMemory;
    }
    lw->lock = s;
    lw->arrival = static_cast<std::uint32_t>(s->handoffs);
    lw->seq = static_cast<std::uint32_t>(++g.lock_waits);
    self->lock_wait = lw;
    self->futex_key = word;
    if (Tcb* t = thread_of(self)) {
      t->wait_name = name;
      t->handed_off = false;
    }
    s->waiters.insert(self);
    self->wait_queue = &s->waiters;
    if (s->inherit && owner_thread) update_priority(owner_thread);  // lend our priority along the chain
    return Status::kWouldBlock;
  }
}

Status unlock_as(std::atomic<std::uint32_t>* word, std::uint32_t me) SPINDLE_REQUIRES(g.lock) {
  using namespace lock_word;
  std::uint32_t v = word->load(std::memory_order_relaxed);
  if ((v & kOwnerMask) != me) return Status::kInvalidState;
  LockState* s = find_state(word);
  if (!s) {
    word->store(0, std::memory_order_release);  // nobody queued: a spurious kWaiters
    return Status::kOk;
  }
  set_owner(s, nullptr);  // drops the boost this lock lent us
  Waiter* w = choose_waiter(s);
  // A job is always handed the lock: it cannot compete for it by itself.
  if (s->handoff || w->async) {
    hand_off(s, w, Status::kOk);
  } else {
    // Wake the most urgent waiter to compete; kWaiters stays while others
    // remain queued.
    word->store(s->waiters.size() > 1 ? kWaiters : 0, std::memory_order_release);
    wake(w, Status::kOk);
  }
  return Status::kOk;
}

}  // namespace

Status futex_lock_async(Waiter* w, std::atomic<std::uint32_t>* word, const LockPolicy& policy, TimePoint deadline,
                        const void* process, bool shared) {
  Status st = lock_step(w, word, policy, deadline, process, shared);
  if (st == Status::kWouldBlock && deadline != kForever) {
    timer_arm(&w->timer, static_cast<std::uint64_t>(deadline.time_since_epoch().count()));
  }
  return st;
}

Status futex_unlock_as(std::atomic<std::uint32_t>* word, ThreadId id) {
  if (arch::foreign_word(word)) return foreign_unlock(word, static_cast<std::uint32_t>(id));
  return unlock_as(word, static_cast<std::uint32_t>(id));
}

}  // namespace kernel

Status futex_lock(std::atomic<std::uint32_t>* word, const LockPolicy& policy, TimePoint deadline) {
  if (in_user_process()) {
    return status_from(sys(kSysFutexLock, user_arg(word), policy_bits(policy), policy.aging, deadline_arg(deadline)));
  }
  if (!arch::irqs_enabled()) return Status::kInvalidState;
  if (arch::foreign_word(word)) return foreign_lock(word, static_cast<std::uint32_t>(this_thread::id()), deadline);
  LockGuard guard;
  return kernel::futex_lock_locked(word, policy, deadline, false);
}

namespace kernel {
Status futex_lock_locked(std::atomic<std::uint32_t>* word, const LockPolicy& policy, TimePoint deadline, bool shared) {
  Tcb* self = this_cpu().current;
  for (;;) {
    Status st = lock_step(self, word, policy, deadline, self->process, shared);
    if (st != Status::kWouldBlock) return st;
    Status r = block_current(self->wait_queue, deadline);  // wake() runs lock_waiter_left
    self->futex_key = nullptr;
    if (self->handed_off) {
      self->handed_off = false;
      return word->load(std::memory_order_relaxed) & lock_word::kOwnerDied ? Status::kOwnerDied : Status::kOk;
    }
    if (r == Status::kTimedOut || r == Status::kInterrupted) return r;  // kInterrupted: the caller's process ends
    // Woken to compete (no hand-off): try again.
  }
}
}  // namespace kernel

Status futex_unlock(std::atomic<std::uint32_t>* word) {
  if (in_user_process()) return status_from(sys(kSysFutexUnlock, user_arg(word)));
  if (arch::foreign_word(word)) return foreign_unlock(word, static_cast<std::uint32_t>(this_thread::id()));
  LockGuard guard;
  return unlock_as(word, static_cast<std::uint32_t>(this_cpu().current->head.id));
}

// ---------------------------------------------------------------------------
// Diagnostics settings.

// The diagnostics settings are the kernel's: a process may not change them
// (kInvalidState) and its counts read 0.
Status set_starvation_bound(Duration bound) {
  if constexpr (!kWatchdog) return Status::kInvalidState;
  if (in_user_process()) return Status::kInvalidState;
  if (bound < Duration::zero()) return Status::kInvalidArgument;
  LockGuard guard;
  g.starvation_bound_ns = static_cast<std::uint64_t>(bound.count());
  return Status::kOk;
}

std::uint64_t starvation_reports() {
  if (in_user_process()) return 0;
  LockGuard guard;
  return g.starvation_reports;
}

std::uint64_t deadlocks_detected() {
  if (in_user_process()) return 0;
  LockGuard guard;
  return g.deadlocks_detected;
}

Status set_deadlock_detection(bool on) {
  if constexpr (!kDeadlockDetection) return on ? Status::kInvalidState : Status::kOk;
  if (in_user_process()) return Status::kInvalidState;
  LockGuard guard;
  g.deadlock_detection = on;
  return Status::kOk;
}

}  // namespace spindle
