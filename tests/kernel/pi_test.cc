// Priority inheritance on Mutex (transitive chains, several locks held,
// boost undone on timeout and on re-prioritisation, re-sorting the queue of
// a boosted waiter), owner-died recovery, and the hand-off locks'
// service order (PriorityMutex with and without aging).
//
// Lock holders park on a Semaphore while holding their locks, so the
// chain is in place before anything is checked; the main thread runs at
// the top priority and polls with short sleeps, so every other thread gets
// to run even on one CPU. Priorities are read back with Thread::priority()
// (the effective priority).
#include "sync_util.h"

using namespace spindle;
using namespace spindle::ktest;
using namespace std::chrono_literals;

namespace {

bool blocked(const Thread& t) { return is_blocked(t.id()); }

void top_priority() { KREQUIRE(this_thread::set_priority(kMaxPriority) == Status::kOk); }

// A thread that takes `hold`, then (optionally) waits for `want`, then
// parks on `park` until released; releases what it took.
struct Holder {
  Mutex* hold = nullptr;
  Mutex* want = nullptr;
  Semaphore* park = nullptr;
  Status want_status = Status::kInvalidState;
};

Thread start_holder(const char* name, int prio, Holder* h) {
  return spawn(name, prio, CpuMask::all(), [h] {
    if (h->hold) h->hold->lock();
    if (h->want) {
      h->want_status = h->want->lock_until(kForever);
      if (h->want_status == Status::kOk) h->want->unlock();
    }
    if (h->park) h->park->acquire();
    if (h->hold) h->hold->unlock();
  });
}

}  // namespace

KTEST(pi_boost_and_fallback_on_timeout, 1) {
  top_priority();
  static Mutex m("pi");
  static Semaphore park(0, 1, "park");
  static Holder low_h{&m, nullptr, &park};
  Thread low = start_holder("low", 2, &low_h);
  KREQUIRE(settle([] { return m.owner() != 0; }));
  // A: priority 10, gives up after a while; B: priority 6, waits forever.
  static std::atomic<int> a_result{-1};
  a_result = -1;
  Thread a = spawn("a", 10, CpuMask::all(), [] { a_result = static_cast<int>(m.lock_for(300ms)); });
  KCHECK(settle([&] { return low.priority() == 10; }));
  Thread b = spawn("b", 6, CpuMask::all(), [] { Guard hold(m); });
  KCHECK(settle([&] { return blocked(b); }));
  KCHECK_EQ(low.priority(), 10);
  // A times out: the boost falls back to B's level, not to the base.
  KCHECK(settle([] { return a_result.load() != -1; }));
  KCHECK_EQ(a_result.load(), static_cast<int>(Status::kTimedOut));
  KCHECK_EQ(low.priority(), 6);
  KCHECK(park.release() == Status::kOk);  // low unlocks: B gets it, low is back to 2
  KCHECK(b.join() == Status::kOk);
  KCHECK(a.join() == Status::kOk);
  KCHECK(low.join() == Status::kOk);
  KCHECK_EQ(m.owner(), ThreadId{0});
}

KTEST(pi_chain_of_four_mutexes, 1) {
  top_priority();
  // T0 (2) holds M1; T1 (4) holds M2, waits M1; T2 (6) holds M3, waits M2;
  // T3 (8) holds M4, waits M3; T4 (10) waits M4 with a timeout.
  static Mutex m[4] = {Mutex("m1"), Mutex("m2"), Mutex("m3"), Mutex("m4")};
  static Semaphore park(0, 4, "park");
  static Holder h[4];
  Thread t[4];
  const int prio[4] = {2, 4, 6, 8};
  for (int i = 0; i < 4; ++i) {
    h[i] = Holder{&m[i], i > 0 ? &m[i - 1] : nullptr, i == 0 ? &park : nullptr};
    t[i] = start_holder("chain", prio[i], &h[i]);
    KREQUIRE(settle([&] { return m[i].owner() != 0 && (i == 0 || blocked(t[i])); }));
    // Step by step: every owner below the new waiter now runs at its level.
    for (int j = 0; j < i; ++j) KCHECK_EQ(t[j].priority(), prio[i]);
  }
  static std::atomic<int> top_result{-1};
  top_result = -1;
  Thread top = spawn("top", 10, CpuMask::all(), [] { top_result = static_cast<int>(m[3].lock_for(300ms)); });
  KCHECK(settle([&] { return t[0].priority() == 10; }));
  for (int j = 0; j < 4; ++j) KCHECK_EQ(t[j].priority(), 10);
  // The top waiter gives up: every boost falls back to T3's 8.
  KCHECK(settle([] { return top_result.load() != -1; }));
  KCHECK_EQ(top_result.load(), static_cast<int>(Status::kTimedOut));
  for (int j = 0; j < 3; ++j) KCHECK_EQ(t[j].priority(), 8);
  KCHECK_EQ(t[3].priority(), 8);
  KCHECK(park.release() == Status::kOk);  // the chain unwinds
  for (int i = 0; i < 4; ++i) {
    KCHECK(t[i].join() == Status::kOk);
    if (i > 0) KCHECK(h[i].want_status == Status::kOk);
  }
  KCHECK(top.join() == Status::kOk);
}

KTEST(pi_several_mutexes_released_in_any_order, 1) {
  top_priority();
  static Mutex m1("m1"), m2("m2");
  static Semaphore step(0, 2, "step");
  static std::atomic<int> stage{0};
  stage = 0;
  for (int order = 0; order < 2; ++order) {
    // Owner (base 3) holds both; W1 (10) waits on m1, W2 (20) on m2.
    Thread owner = spawn("owner", 3, CpuMask::all(), [order] {
      m1.lock();
      m2.lock();
      stage = 1;
      step.acquire();
      if (order == 0) m2.unlock(); else m1.unlock();
      stage = 2;
      step.acquire();
      if (order == 0) m1.unlock(); else m2.unlock();
    });
    KREQUIRE(settle([] { return stage.load() == 1; }));
    Thread w1 = spawn("w1", 10, CpuMask::all(), [] { Guard h(m1); });
    Thread w2 = spawn("w2", 20, CpuMask::all(), [] { Guard h(m2); });
    KCHECK(settle([&] { return blocked(w1) && blocked(w2); }));
    KCHECK_EQ(owner.priority(), 20);
    KCHECK(step.release() == Status::kOk);
    KCHECK(settle([] { return stage.load() == 2; }));
    // Released m2 first: W2's boost goes, W1's stays; and the reverse.
    KCHECK_EQ(owner.priority(), order == 0 ? 10 : 20);
    KCHECK(step.release() == Status::kOk);
    KCHECK(owner.join() == Status::kOk);
    KCHECK(w1.join() == Status::kOk);
    KCHECK(w2.join() == Status::kOk);
    stage = 0;
  }
}

KTEST(pi_waiter_reprioritised, 1) {
  top_priority();
  static Mutex m("pi");
  static Semaphore park(0, 1, "park");
  static Holder h{&m, nullptr, &park};
  Thread owner = start_holder("owner", 2, &h);
  KREQUIRE(settle([] { return m.owner() != 0; }));
  Thread w = spawn("waiter", 10, CpuMask::all(), [] { Guard hold(m); });
  KCHECK(settle([&] { return owner.priority() == 10; }));
  KCHECK(w.set_priority(25) == Status::kOk);
  KCHECK_EQ(owner.priority(), 25);
  KCHECK(w.set_priority(5) == Status::kOk);
  KCHECK_EQ(owner.priority(), 5);
  // The owner's own base change combines with the boost.
  KCHECK(owner.set_priority(8) == Status::kOk);
  KCHECK_EQ(owner.priority(), 8);
  KCHECK(w.set_priority(12) == Status::kOk);
  KCHECK_EQ(owner.priority(), 12);
  KCHECK(park.release() == Status::kOk);
  KCHECK(owner.join() == Status::kOk);
  KCHECK(w.join() == Status::kOk);
}

KTEST(pi_boost_resorts_the_queue_the_owner_waits_in, 1) {
  top_priority();
  // Y (1) holds mb. W (5) waits on mb first, then X (3), which holds ma.
  // H (20) waits on ma: X is boosted to 20 and moves ahead of W in mb's
  // queue (and Y inherits 20 through X). When Y releases mb, X gets it first.
  static Mutex ma("ma"), mb("mb");
  static Semaphore park(0, 1, "park");
  static EventLog<4> log;
  log.n = 0;
  static Holder y_h{&mb, nullptr, &park};
  Thread y = start_holder("y", 1, &y_h);
  KREQUIRE(settle([] { return mb.owner() != 0; }));
  Thread w = spawn("w", 5, CpuMask::all(), [] {
    Guard hold(mb);
    log.add(5);
  });
  KREQUIRE(settle([&] { return blocked(w); }));
  Thread x = spawn("x", 3, CpuMask::all(), [] {
    Guard hold_a(ma);
    Guard hold_b(mb);
    log.add(3);
  });
  KREQUIRE(settle([&] { return blocked(x) && ma.owner() == x.id(); }));
  KCHECK_EQ(y.priority(), 5);
  Thread h = spawn("h", 20, CpuMask::all(), [] { Guard hold(ma); });
  KCHECK(settle([&] { return x.priority() == 20; }));
  KCHECK_EQ(y.priority(), 20);
  KCHECK(park.release() == Status::kOk);
  for (Thread* t : {&y, &x, &w, &h}) KCHECK(t->join() == Status::kOk);
  KREQUIRE(log.size() == 2);
  KCHECK_EQ(log[0], 3);
  KCHECK_EQ(log[1], 5);
}

KTEST(fair_and_priority_mutex_do_not_boost, 1) {
  top_priority();
  static FairMutex fm("fair");
  static PriorityMutex pm("prio");
  static Semaphore park(0, 1, "park");
  Thread owner = spawn("owner", 2, CpuMask::all(), [] {
    Guard hold_f(fm);
    Guard hold_p(pm);
    park.acquire();
  });
  KREQUIRE(settle([] { return fm.owner() != 0 && pm.owner() != 0; }));
  Thread a = spawn("a", 20, CpuMask::all(), [] { Guard h(fm); });
  Thread b = spawn("b", 22, CpuMask::all(), [] { Guard h(pm); });
  KCHECK(settle([&] { return blocked(a) && blocked(b); }));
  KCHECK_EQ(owner.priority(), 2);
  KCHECK(park.release() == Status::kOk);
  for (Thread* t : {&owner, &a, &b}) KCHECK(t->join() == Status::kOk);
}

namespace {
// Queues one waiter per entry of prios on pm (held by the caller), in that
// order, each after the previous is blocked; returns the service order.
template <unsigned N>
void queue_waiters(PriorityMutex& pm, const int (&prios)[N], Thread (&t)[N], EventLog<N>& log) {
  for (unsigned i = 0; i < N; ++i) {
    int tag = static_cast<int>(i);
    PriorityMutex* p = &pm;
    EventLog<N>* l = &log;
    t[i] = spawn("waiter", prios[i], CpuMask::all(), [p, l, tag] {
      Guard hold(*p);
      l->add(tag);
    });
    KREQUIRE(settle([&] { return blocked(t[i]); }));
  }
}
}  // namespace

KTEST(priority_mutex_serves_most_urgent_first, 1) {
  top_priority();
  static PriorityMutex pm("prio");
  static EventLog<6> log;
  log.n = 0;
  pm.lock();
  // Tag 0 is the low one, queued first; tags 1..5 are urgent.
  const int prios[6] = {2, 10, 10, 12, 10, 10};
  Thread t[6];
  queue_waiters(pm, prios, t, log);
  pm.unlock();
  for (auto& x : t) KCHECK(x.join() == Status::kOk);
  const int want[6] = {3, 1, 2, 4, 5, 0};
  KREQUIRE(log.size() == 6);
  for (unsigned i = 0; i < 6; ++i) KCHECK_EQ(log[i], want[i]);
}

KTEST(priority_mutex_aging_bounds_the_wait, 1) {
  top_priority();
  // aging 3: the low waiter is passed over by at most 3 hand-offs.
  static PriorityMutex pm("aged", 3);
  static EventLog<6> log;
  log.n = 0;
  pm.lock();
  const int prios[6] = {2, 10, 10, 10, 10, 10};
  Thread t[6];
  queue_waiters(pm, prios, t, log);
  pm.unlock();
  for (auto& x : t) KCHECK(x.join() == Status::kOk);
  const int want[6] = {1, 2, 3, 0, 4, 5};
  KREQUIRE(log.size() == 6);
  for (unsigned i = 0; i < 6; ++i) KCHECK_EQ(log[i], want[i]);
}

KTEST(mutex_owner_died, 1) {
  top_priority();
  static Mutex m("orphan");
  // Uncontended: the owner exits holding it; the next lock reports it.
  Thread quitter = spawn("quitter", 10, CpuMask::all(), [] { m.lock(); });
  KCHECK(quitter.join() == Status::kOk);
  KCHECK(m.lock_for(100ms) == Status::kOwnerDied);
  KCHECK_EQ(m.owner(), this_thread::id());
  m.unlock();
  KCHECK(m.lock_for(100ms) == Status::kOk);
  m.unlock();
  // Contended: a waiter is blocked when the owner exits.
  static Semaphore go(0, 1, "go");
  static std::atomic<int> waiter_status{-1};
  waiter_status = -1;
  Thread owner = spawn("owner", 10, CpuMask::all(), [] {
    m.lock();
    go.acquire();
  });
  KREQUIRE(settle([] { return m.owner() != 0; }));
  Thread waiter = spawn("waiter", 12, CpuMask::all(), [] {
    Status s = m.lock_until(kForever);
    waiter_status = static_cast<int>(s);
    if (s == Status::kOk || s == Status::kOwnerDied) m.unlock();
  });
  KREQUIRE(settle([&] { return blocked(waiter); }));
  KCHECK(go.release() == Status::kOk);
  KCHECK(owner.join() == Status::kOk);
  KCHECK(waiter.join() == Status::kOk);
  KCHECK_EQ(waiter_status.load(), static_cast<int>(Status::kOwnerDied));
  KCHECK_EQ(m.owner(), ThreadId{0});
}

KTEST(futex_lock_rejects_bad_calls, 1) {
  static std::atomic<std::uint32_t> word{0};
  word = 0;
  LockPolicy policy;
  // Unlocking a word the caller does not own changes nothing.
  KCHECK(futex_unlock(&word) == Status::kInvalidState);
  KCHECK_EQ(word.load(), 0u);
  word = static_cast<std::uint32_t>(this_thread::id());
  KCHECK(futex_lock(&word, policy, kForever) == Status::kDeadlock);  // self
  KCHECK(futex_unlock(&word) == Status::kOk);
  KCHECK_EQ(word.load(), 0u);
}
