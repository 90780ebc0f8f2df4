// Deadlock and starvation tooling: wait-for cycle detection (kDeadlock for
// the acquire that would close a cycle, of two or three threads; off at run
// time means the wait is not refused), the starvation watchdog (one report
// per over-long wait, with or without an owner) and the lock-order
// validator (reports an inversion once, transitively, not for try-locks,
// forgets destroyed locks). Each part checks it is compiled in and, when it
// is not, that its calls say so.
#include <new>

#include "sync_util.h"

using namespace spindle;
using namespace spindle::ktest;
using namespace std::chrono_literals;

namespace {

// Thread i holds locks[i], then (once every thread holds its own) wants
// locks[(i + 1) % n]. The last thread closes the cycle.
template <unsigned N>
struct Ring {
  Mutex* locks[N];
  Latch* all_hold;
  std::atomic<int> result[N];
};

template <unsigned N>
Thread ring_member(Ring<N>* r, unsigned i, Duration patience) {
  return spawn("ring", 10, CpuMask::all(), [r, i, patience] {
    r->locks[i]->lock();
    r->all_hold->arrive_and_wait();
    Mutex* next = r->locks[(i + 1) % N];
    Status s = next->lock_for(patience);
    r->result[i] = static_cast<int>(s);
    if (s == Status::kOk) next->unlock();
    r->locks[i]->unlock();
  });
}

}  // namespace

KTEST(deadlock_ab_ba_is_refused, 1) {
  if (!kDeadlockDetection) {
    KCHECK(set_deadlock_detection(true) == Status::kInvalidState);
    return;
  }
  KREQUIRE(this_thread::set_priority(kMaxPriority) == Status::kOk);
  static Mutex a("A"), b("B");
  static Latch all_hold(2, "all hold");
  static Ring<2> r{{&a, &b}, &all_hold, {}};
  for (auto& x : r.result) x = -1;
  std::uint64_t before = deadlocks_detected();
  Thread t0 = ring_member(&r, 0, 10s);
  Thread t1 = ring_member(&r, 1, 10s);
  KCHECK(t0.join() == Status::kOk);
  KCHECK(t1.join() == Status::kOk);
  // Exactly one acquire closed the cycle and was refused; the other went
  // through once the refused thread backed off.
  int refused = (r.result[0] == static_cast<int>(Status::kDeadlock)) + (r.result[1] == static_cast<int>(Status::kDeadlock));
  int ok = (r.result[0] == static_cast<int>(Status::kOk)) + (r.result[1] == static_cast<int>(Status::kOk));
  KCHECK_EQ(refused, 1);
  KCHECK_EQ(ok, 1);
  KCHECK_EQ(deadlocks_detected(), before + 1);
}

KTEST(deadlock_cycle_of_three_is_refused, 2) {
  if (!kDeadlockDetection) return;
  static Mutex m0("m0"), m1("m1"), m2("m2");
  static Latch all_hold(3, "all hold");
  static Ring<3> r{{&m0, &m1, &m2}, &all_hold, {}};
  for (auto& x : r.result) x = -1;
  std::uint64_t before = deadlocks_detected();
  Thread t[3];
  for (unsigned i = 0; i < 3; ++i) t[i] = ring_member(&r, i, 10s);
  for (auto& x : t) KCHECK(x.join() == Status::kOk);
  int refused = 0, ok = 0;
  for (auto& x : r.result) {
    refused += x == static_cast<int>(Status::kDeadlock);
    ok += x == static_cast<int>(Status::kOk);
  }
  KCHECK_EQ(refused, 1);
  KCHECK_EQ(ok, 2);
  KCHECK_EQ(deadlocks_detected(), before + 1);
}

KTEST(deadlock_detection_off_lets_the_wait_time_out, 1) {
  if (!kDeadlockDetection) return;
  KREQUIRE(set_deadlock_detection(false) == Status::kOk);
  static Mutex a("A"), b("B");
  static Latch all_hold(2, "all hold");
  static Ring<2> r{{&a, &b}, &all_hold, {}};
  for (auto& x : r.result) x = -1;
  std::uint64_t before = deadlocks_detected();
  // Both waits would last forever; short patience ends them (one or both
  // time out, whoever times out first lets the other through).
  Thread t0 = ring_member(&r, 0, 50ms);
  Thread t1 = ring_member(&r, 1, 50ms);
  KCHECK(t0.join() == Status::kOk);
  KCHECK(t1.join() == Status::kOk);
  KCHECK(set_deadlock_detection(true) == Status::kOk);
  KCHECK_EQ(deadlocks_detected(), before);
  int timed_out = 0;
  for (auto& x : r.result) {
    KCHECK(x == static_cast<int>(Status::kTimedOut) || x == static_cast<int>(Status::kOk));
    timed_out += x == static_cast<int>(Status::kTimedOut);
  }
  KCHECK(timed_out >= 1);
}

KTEST(starvation_watchdog_reports_once_per_wait, 1) {
  if (!kWatchdog) {
    KCHECK(set_starvation_bound(10ms) == Status::kInvalidState);
    return;
  }
  KCHECK(set_starvation_bound(-1ms) == Status::kInvalidArgument);
  KREQUIRE(set_starvation_bound(20ms) == Status::kOk);
  std::uint64_t before = starvation_reports();
  // A semaphore waiter (no owner), well past the bound: one report.
  static Semaphore never(0, 1, "never given");
  KCHECK(never.acquire_for(80ms) == Status::kTimedOut);
  KCHECK_EQ(starvation_reports(), before + 1);
  // A lock waiter, reported with the owner.
  static Mutex held("held");
  held.lock();
  Thread waiter = spawn("waiter", 10, CpuMask::all(), [] { KCHECK(held.lock_for(80ms) == Status::kTimedOut); });
  KCHECK(waiter.join() == Status::kOk);
  held.unlock();
  KCHECK_EQ(starvation_reports(), before + 2);
  // A wait shorter than the bound: nothing.
  KCHECK(never.acquire_for(5ms) == Status::kTimedOut);
  KCHECK_EQ(starvation_reports(), before + 2);
  // Off again.
  KREQUIRE(set_starvation_bound(Duration::zero()) == Status::kOk);
  KCHECK(never.acquire_for(40ms) == Status::kTimedOut);
  KCHECK_EQ(starvation_reports(), before + 2);
}

KTEST(lockdep_reports_an_inversion_once, 1) {
  static Mutex a("A"), b("B"), c("C");
  std::uint64_t before = lock_order_reports();
  {
    Guard ha(a);
    Guard hb(b);  // learns A before B
  }
  KCHECK_EQ(lock_order_reports(), before);
  {
    Guard hb(b);
    Guard ha(a);  // the reverse: a possible deadlock, though none happened
  }
  std::uint64_t want = before + (kLockdep ? 1 : 0);
  KCHECK_EQ(lock_order_reports(), want);
  {
    Guard hb(b);
    Guard ha(a);  // the same inversion again: already reported
  }
  KCHECK_EQ(lock_order_reports(), want);
  // Transitive: B before C is new and fine; C then A closes A -> B -> C -> A.
  {
    Guard hb(b);
    Guard hc(c);
  }
  KCHECK_EQ(lock_order_reports(), want);
  {
    Guard hc(c);
    Guard ha(a);
  }
  want += kLockdep ? 1 : 0;
  KCHECK_EQ(lock_order_reports(), want);
}

KTEST(lockdep_across_lock_types_and_threads, 1) {
  static SpinLock s("spin");
  static RwLock rw("table");
  static FairMutex f("fair");
  std::uint64_t before = lock_order_reports();
  Thread t = spawn("first", 16, CpuMask::all(), [] {
    Guard hs(s);
    rw.lock_shared();
    rw.unlock_shared();
    Guard hf(f);
  });
  KCHECK(t.join() == Status::kOk);
  KCHECK_EQ(lock_order_reports(), before);
  {
    Guard hf(f);
    Guard hs(s);  // f before s, but another thread took s before f
  }
  KCHECK_EQ(lock_order_reports(), before + (kLockdep ? 1 : 0));
  {
    Guard hw(rw);
    Guard hs(s);  // rw before s; s before rw was seen
  }
  KCHECK_EQ(lock_order_reports(), before + (kLockdep ? 2 : 0));
}

KTEST(lockdep_ignores_try_locks_and_forgets_destroyed_locks, 1) {
  static Mutex a("A");
  alignas(Mutex) static unsigned char storage[sizeof(Mutex)];
  std::uint64_t before = lock_order_reports();
  Mutex* b = new (storage) Mutex("B");
  {
    Guard ha(a);
    Guard hb(*b);  // A before B
  }
  {
    Guard hb(*b);
    KCHECK(a.try_lock());  // a try-lock cannot deadlock: no report
    a.unlock();
  }
  KCHECK_EQ(lock_order_reports(), before);
  b->~Mutex();
  // A new lock at the same address starts with no history.
  Mutex* b2 = new (storage) Mutex("B2");
  {
    Guard hb(*b2);
    Guard ha(a);
  }
  KCHECK_EQ(lock_order_reports(), before);
  b2->~Mutex();
}
