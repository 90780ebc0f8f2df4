// The owner locks: Mutex, FairMutex (FIFO hand-off), RecursiveMutex (depth),
// PriorityMutex basics: exact counting under contention, every try/timed
// path, std lock adaptors. (Priority inheritance and PriorityMutex order and
// aging: pi_test.cc.)
#include <mutex>

#include "ktest_util.h"
#include "sync_util.h"

using namespace spindle;
using namespace spindle::ktest;
using namespace std::chrono_literals;

KTEST(mutex_exact_count, 2) {
  static Mutex m("count");
  static long counter = 0;
  counter = 0;
  Thread t[5];
  for (auto& x : t) {
    x = spawn("inc", 16, CpuMask::all(), [] {
      for (int i = 0; i < 200000; ++i) {
        std::scoped_lock hold(m);
        ++counter;
      }
    });
  }
  for (auto& x : t) KCHECK(x.join() == Status::kOk);
  KCHECK_EQ(counter, 1000000L);
}

KTEST(mutex_try_and_timeout, 2) {
  static Mutex m("held");
  m.lock();
  KCHECK_EQ(m.owner(), this_thread::id());
  static std::atomic<int> result{-1};
  result = -1;
  Thread t = spawn("trier", 16, CpuMask::all(), [] {
    int r = 0;
    if (!m.try_lock()) r |= 1;
    TimePoint start = Clock::now();
    if (!m.try_lock_for(20ms)) r |= 2;
    if (Clock::now() - start >= 20ms) r |= 4;
    if (!m.try_lock_until(std::chrono::steady_clock::now() + 5ms)) r |= 8;
    result = r;
    std::unique_lock<Mutex> later(m);  // blocks until main unlocks
    return 0;
  });
  KCHECK(wait_until([] { return result.load() != -1; }));
  KCHECK_EQ(result.load(), 15);
  m.unlock();
  KCHECK(t.join() == Status::kOk);
  KCHECK_EQ(m.owner(), ThreadId{0});
  KCHECK(m.try_lock());
  m.unlock();
}

// ---------------------------------------------------------------------------
// FairMutex, RecursiveMutex, and the timeout paths of every owner lock.

namespace {

// n threads each take `lock` per_thread times around a plain increment.
template <class L>
void exact_count(L& lock, int threads, long per_thread) {
  long counter = 0;
  Thread t[8];
  for (int i = 0; i < threads; ++i) {
    t[i] = spawn("inc", 16, CpuMask::all(), [&] {
      for (long k = 0; k < per_thread; ++k) {
        std::scoped_lock hold(lock);
        ++counter;
      }
    });
  }
  for (int i = 0; i < threads; ++i) KJOIN(t[i]);
  KCHECK_EQ(counter, threads * per_thread);
  KCHECK_EQ(lock.owner(), ThreadId{0});
}

// Every timed acquisition of an owner lock held by someone else times out
// with the right result, no earlier than asked, and leaves the lock held by
// its owner; a later timed wait that the owner ends by unlocking succeeds,
// and the uncontended paths work afterwards.
template <class L>
void owner_lock_timeouts(L& m) {
  const ThreadId main_id = this_thread::id();
  m.lock();
  std::atomic<int> stage{0};
  Thread t = spawn("timed", 16, CpuMask::all(), [&] {
    KCHECK(!m.try_lock());
    TimePoint t0 = Clock::now();
    KCHECK(!m.try_lock_for(20ms));
    KCHECK_WAITED(Clock::now() - t0, 20ms, "try_lock_for");
    t0 = Clock::now();
    KCHECK(!m.try_lock_until(std::chrono::steady_clock::now() + 15ms));
    KCHECK_WAITED(Clock::now() - t0, 15ms, "try_lock_until(steady_clock)");
    t0 = Clock::now();
    KCHECK(!m.try_lock_until(Clock::now() + 10ms));
    KCHECK_WAITED(Clock::now() - t0, 10ms, "try_lock_until(Clock)");
    t0 = Clock::now();
    KCHECK_STATUS(m.lock_for(10ms), Status::kTimedOut);
    KCHECK_WAITED(Clock::now() - t0, 10ms, "lock_for");
    t0 = Clock::now();
    KCHECK_STATUS(m.lock_until(Clock::now() + 10ms), Status::kTimedOut);
    KCHECK_WAITED(Clock::now() - t0, 10ms, "lock_until");
    // Deadlines already due: no wait at all.
    KCHECK_STATUS(m.lock_until(Clock::now() - 1ms), Status::kTimedOut);
    KCHECK(!m.try_lock_for(0ns));
    KCHECK(!m.try_lock_for(-5ms));
    KCHECK_EQ(m.owner(), main_id);
    stage = 1;
    // This one is ended by main's unlock, long before its deadline.
    t0 = Clock::now();
    KCHECK(m.try_lock_for(30s));
    KCHECK(Clock::now() - t0 < 20s);
    KCHECK_EQ(m.owner(), this_thread::id());
    m.unlock();
  });
  KCHECK(wait_for_value(stage, 1));
  KCHECK(wait_blocked(t));
  KCHECK_EQ(m.owner(), main_id);  // five timeouts later, still ours
  m.unlock();
  KJOIN(t);
  KCHECK_EQ(m.owner(), ThreadId{0});
  KCHECK(m.try_lock_for(0ns));  // free: a zero timeout takes it
  m.unlock();
  KCHECK_STATUS(m.lock_for(1ms), Status::kOk);
  m.unlock();
  m.lock();
  m.unlock();
  KCHECK_EQ(m.owner(), ThreadId{0});
}

// A timed waiter queued ahead of an untimed one gives up; the holder's
// unlock then serves the untimed one (for a hand-off lock: at once, in the
// unlock), and the one that gave up can lock normally afterwards.
template <class L>
void timed_waiter_leaves_queue(L& m, bool handoff) {
  KWITH_GROWING_TIMEOUT([&](Duration timeout) {
    m.lock();
    std::atomic<int> b_has{0};
    const TimePoint deadline = deadline_after(timeout);
    Thread c = spawn("gives-up", 16, CpuMask::all(), [&] {
      KCHECK(!m.try_lock_until(deadline));
      KCHECK(Clock::now() >= deadline);
    });
    bool c_queued = wait_blocked_until(c, deadline);
    Thread b = spawn("stays", 16, CpuMask::all(), [&] {
      m.lock();
      b_has = 1;
      KCHECK(wait_until([&] { return b_has.load() == 2; }));
      m.unlock();
    });
    KCHECK(wait_blocked(b));
    const bool conclusive = c_queued && Clock::now() < deadline;  // c gave up while b waited behind it
    KJOIN(c);
    KCHECK_EQ(b_has.load(), 0);
    m.unlock();
    if (handoff) KCHECK_EQ(m.owner(), b.id());  // handed over inside unlock
    KCHECK(wait_for_value(b_has, 1));
    b_has = 2;
    KJOIN(b);
    // The one that gave up can take it now.
    Thread again = spawn("again", 16, CpuMask::all(), [&] {
      m.lock();
      KCHECK_EQ(m.owner(), this_thread::id());
      m.unlock();
    });
    KJOIN(again);
    KCHECK_EQ(m.owner(), ThreadId{0});
    return conclusive;
  });
}

}  // namespace

KTEST(mutex_exact_count_5x1m, 2) {
  Mutex m("count-1m");
  exact_count(m, 5, scaled(1'000'000));
}

KTEST(fair_mutex_exact_count, 2) {
  FairMutex m("fair-count");
  exact_count(m, 5, scaled(20'000));
}

KTEST(recursive_mutex_exact_count, 2) {
  RecursiveMutex m("recursive-count");
  exact_count(m, 5, scaled(200'000));
}

KTEST(priority_mutex_exact_count, 2) {
  PriorityMutex m("priority-count");
  exact_count(m, 5, scaled(20'000));
}

KTEST(mutex_timeouts, 2) {
  Mutex m("timed mutex");
  owner_lock_timeouts(m);
}

KTEST(fair_mutex_timeouts, 2) {
  FairMutex m("timed fair");
  owner_lock_timeouts(m);
}

KTEST(priority_mutex_timeouts, 2) {
  PriorityMutex m("timed priority");
  owner_lock_timeouts(m);
}

KTEST(recursive_mutex_timeouts, 2) {
  RecursiveMutex m("timed recursive");
  owner_lock_timeouts(m);
}

KTEST(mutex_timed_waiter_leaves_queue, 2) {
  Mutex m("queue mutex");
  timed_waiter_leaves_queue(m, false);
}

KTEST(fair_mutex_timed_waiter_leaves_queue, 2) {
  FairMutex m("queue fair");
  timed_waiter_leaves_queue(m, true);
}

KTEST(recursive_mutex_timed_waiter_leaves_queue, 2) {
  RecursiveMutex m("queue recursive");
  timed_waiter_leaves_queue(m, false);
}

// Eight waiters of mixed priorities queue one after another (each starts
// only once the previous one sleeps on the lock); they must be served in
// exactly that order, and an unlock hands the lock to the first of them
// directly (no barging: not even the unlocker can take it back).
KTEST(fair_mutex_fifo_8_waiters, 2) {
  FairMutex fm("fifo");
  EventLog<16> log;
  std::atomic<bool> go{false};
  const int prios[8] = {12, 20, 8, 24, 16, 4, 28, 10};
  Thread t[8];
  fm.lock();
  for (int i = 0; i < 8; ++i) {
    t[i] = spawn("fifo-waiter", prios[i], CpuMask::all(), [&, i] {
      fm.lock();
      log.add(i);
      if (i == 0) KCHECK(wait_until([&] { return go.load(); }));
      fm.unlock();
    });
    KCHECK(wait_blocked(t[i]));
  }
  KCHECK_EQ(log.size(), 0u);
  fm.unlock();
  KCHECK_EQ(fm.owner(), t[0].id());  // handed over before unlock returned
  KCHECK(!fm.try_lock());
  go = true;
  for (auto& x : t) KJOIN(x);
  KREQUIRE(log.size() == 8);
  for (unsigned i = 0; i < 8; ++i) KCHECK_EQ(log[i], static_cast<int>(i));
  KCHECK_EQ(fm.owner(), ThreadId{0});
  KCHECK(fm.try_lock());
  fm.unlock();
}

// The holder of a contended FairMutex cannot re-take it after unlocking:
// the waiter was there first. (A Mutex lets it barge.)
KTEST(fair_mutex_no_barging_relock, 2) {
  FairMutex fm("no-barge");
  EventLog<8> log;
  fm.lock();
  Thread w = spawn("waiter", 16, CpuMask::all(), [&] {
    fm.lock();
    log.add(2);
    fm.unlock();
  });
  KCHECK(wait_blocked(w));
  log.add(1);
  fm.unlock();
  KCHECK(fm.try_lock_for(20s));  // queues behind the waiter, which goes first
  log.add(3);
  fm.unlock();
  KJOIN(w);
  KREQUIRE(log.size() == 3);
  KCHECK_EQ(log[0], 1);
  KCHECK_EQ(log[1], 2);
  KCHECK_EQ(log[2], 3);
}

KTEST(recursive_mutex_depth, 2) {
  RecursiveMutex rm("nested");
  const ThreadId me = this_thread::id();
  KCHECK_EQ(rm.depth(), 0u);
  KCHECK_EQ(rm.owner(), ThreadId{0});
  rm.lock();
  KCHECK_EQ(rm.depth(), 1u);
  KCHECK_EQ(rm.owner(), me);
  rm.lock();
  KCHECK_EQ(rm.depth(), 2u);
  KCHECK(rm.try_lock());
  KCHECK_EQ(rm.depth(), 3u);
  KCHECK(rm.try_lock_for(10ms));
  KCHECK_EQ(rm.depth(), 4u);
  KCHECK_STATUS(rm.lock_for(1ms), Status::kOk);
  KCHECK_EQ(rm.depth(), 5u);
  KCHECK_STATUS(rm.lock_until(Clock::now() - 1ms), Status::kOk);  // the holder never waits
  KCHECK_EQ(rm.depth(), 6u);
  {
    std::scoped_lock again(rm);
    KCHECK_EQ(rm.depth(), 7u);
  }
  KCHECK_EQ(rm.depth(), 6u);

  std::atomic<int> stage{0};
  std::atomic<bool> acquired{false};
  Thread t = spawn("other", 16, CpuMask::all(), [&] {
    KCHECK(!rm.try_lock());
    TimePoint t0 = Clock::now();
    KCHECK(!rm.try_lock_for(15ms));
    KCHECK_WAITED(Clock::now() - t0, 15ms, "try_lock_for on a nested lock");
    KCHECK_STATUS(rm.lock_for(5ms), Status::kTimedOut);
    stage = 1;
    rm.lock();  // until main's depth reaches 0
    acquired = true;
    KCHECK_EQ(rm.depth(), 1u);
    KCHECK_EQ(rm.owner(), this_thread::id());
    rm.lock();
    KCHECK_EQ(rm.depth(), 2u);
    rm.unlock();
    KCHECK_EQ(rm.depth(), 1u);
    rm.unlock();
  });
  KCHECK(wait_for_value(stage, 1));
  for (unsigned d = 6; d > 1; --d) {
    rm.unlock();
    KCHECK_EQ(rm.depth(), d - 1);
    KCHECK_EQ(rm.owner(), me);
  }
  KCHECK(wait_blocked(t));
  KCHECK(!acquired.load());  // depth 1: still held
  rm.unlock();
  KJOIN(t);
  KCHECK(acquired.load());
  KCHECK_EQ(rm.depth(), 0u);
  KCHECK_EQ(rm.owner(), ThreadId{0});
}

// std::scoped_lock over two different Spindle locks, taken in opposite
// orders by two threads: std::lock's back-off avoids the deadlock, and
// both are held inside.
KTEST(scoped_lock_two_spindle_locks, 2) {
  Mutex a("pair-a");
  FairMutex b("pair-b");
  long counter = 0;
  std::atomic<long> not_held{0};
  const long n = scaled(20'000);
  auto body = [&](bool a_first) {
    return [&, a_first] {
      const ThreadId me = this_thread::id();
      for (long i = 0; i < n; ++i) {
        if (a_first) {
          std::scoped_lock both(a, b);
          if (a.owner() != me || b.owner() != me) not_held.fetch_add(1);
          ++counter;
        } else {
          std::scoped_lock both(b, a);
          if (a.owner() != me || b.owner() != me) not_held.fetch_add(1);
          ++counter;
        }
      }
    };
  };
  Thread t1 = spawn("ab", 16, CpuMask::all(), body(true));
  Thread t2 = spawn("ba", 16, CpuMask::all(), body(false));
  KJOIN(t1);
  KJOIN(t2);
  KCHECK_EQ(counter, 2 * n);
  KCHECK_EQ(not_held.load(), 0L);
  KCHECK_EQ(a.owner(), ThreadId{0});
  KCHECK_EQ(b.owner(), ThreadId{0});

  // Other pairings, and the std adaptors' try/timed forms.
  RecursiveMutex r("pair-r");
  SpinLock s("pair-s");
  {
    std::scoped_lock both(r, s);
    KCHECK_EQ(r.owner(), this_thread::id());
    KCHECK_EQ(s.owner(), this_thread::id());
  }
  KCHECK_EQ(r.owner(), ThreadId{0});
  KCHECK_EQ(s.owner(), ThreadId{0});
  {
    Guard<FairMutex> g(b);
    KCHECK_EQ(b.owner(), this_thread::id());
    std::atomic<int> got{-1};
    Thread probe = spawn("probe", 16, CpuMask::all(), [&] {
      std::unique_lock<FairMutex> try_it(b, std::try_to_lock);
      std::unique_lock<FairMutex> timed(b, 5ms);
      std::unique_lock<Mutex> free_one(a, 5ms);
      got = (try_it.owns_lock() ? 1 : 0) | (timed.owns_lock() ? 2 : 0) | (free_one.owns_lock() ? 4 : 0);
    });
    KJOIN(probe);
    KCHECK_EQ(got.load(), 4);
  }
  KCHECK_EQ(b.owner(), ThreadId{0});
}
