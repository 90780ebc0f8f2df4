// RwLock: readers share, writers exclude, and each policy's admission
// order when both sides wait. Arrival orders are made deterministic by
// starting each party only once the previous one sleeps (wait_blocked);
// entry orders are read from an event log.
#include <mutex>
#include <shared_mutex>

#include "sync_util.h"

using namespace spindle;
using namespace spindle::ktest;
using namespace std::chrono_literals;

namespace {

constexpr RwPolicy kPolicies[3] = {RwPolicy::kReaderPreferring, RwPolicy::kWriterPreferring, RwPolicy::kPhaseFair};

// Log tags.
constexpr int kR1 = 1, kR2 = 2, kR3 = 3, kW1 = 11, kW2 = 12;

using Log = EventLog<32>;

// A reader that logs its tag on entry, then leaves at once (or, with
// `hold`, once *hold becomes true).
Thread reader(RwLock& rw, Log& log, int tag, std::atomic<bool>* hold = nullptr) {
  return spawn("reader", 16, CpuMask::all(), [&rw, &log, tag, hold] {
    rw.lock_shared();
    log.add(tag);
    if (hold) KCHECK(wait_until([hold] { return hold->load(); }));
    rw.unlock_shared();
  });
}

Thread writer(RwLock& rw, Log& log, int tag, std::atomic<bool>* hold = nullptr) {
  return spawn("writer", 16, CpuMask::all(), [&rw, &log, tag, hold] {
    rw.lock();
    log.add(tag);
    if (hold) KCHECK(wait_until([hold] { return hold->load(); }));
    rw.unlock();
  });
}

void check_log(const Log& log, std::initializer_list<int> want, RwPolicy p, const char* what) {
  bool same = log.size() == want.size();
  unsigned i = 0;
  for (int w : want) {
    if (same && log[i] != w) same = false;
    ++i;
  }
  if (!same) {
    char got[96] = {};
    int n = 0;
    for (unsigned k = 0; k < log.size() && n < 80; ++k) n += format(got + n, sizeof got - n, "%d ", log[k]);
    KFAIL("%s (%s): entry order was [ %s]", what, to_string(p), got);
  }
}

}  // namespace

KTEST(rwlock_basics, 1) {
  RwLock rw("basic rw");
  KCHECK(rw.policy() == RwPolicy::kPhaseFair);  // the default
  KCHECK_EQ(rw.readers(), 0u);
  KCHECK_EQ(rw.writer(), ThreadId{0});
  KCHECK(rw.try_lock());
  KCHECK_EQ(rw.writer(), this_thread::id());
  rw.unlock();
  KCHECK(rw.try_lock_shared());
  KCHECK_EQ(rw.readers(), 1u);
  KCHECK(!rw.try_lock());
  rw.unlock_shared();
  KCHECK_EQ(rw.readers(), 0u);
  for (RwPolicy p : kPolicies) {
    RwLock each("each", p);
    KCHECK(each.policy() == p);
    each.lock();
    each.unlock();
    each.lock_shared();
    each.unlock_shared();
  }
}

// Readers are inside together: each holds the lock until main lets them
// go, and main waits until all three are in (impossible unless they share
// it; nobody leaves before that, so the count cannot be missed).
// Meanwhile a writer cannot enter, and while a writer holds it no reader can.
KTEST(rwlock_readers_concurrent_writer_exclusive, 2) {
  for (RwPolicy p : kPolicies) {
    RwLock rw("concurrent", p);
    std::atomic<int> inside{0};
    std::atomic<bool> leave{false};
    Thread r[3];
    for (auto& x : r) {
      x = spawn("reader", 16, CpuMask::all(), [&] {
        rw.lock_shared();
        inside.fetch_add(1);
        KCHECK(wait_until([&] { return leave.load(); }, 20s));
        inside.fetch_sub(1);
        rw.unlock_shared();
      });
    }
    if (!wait_for_value(inside, 3)) KFAIL("%s: only %d readers inside together", to_string(p), inside.load());
    KCHECK_EQ(rw.readers(), 3u);
    KCHECK(!rw.try_lock());
    TimePoint t0 = Clock::now();
    bool wrote = rw.try_lock_for(5ms);
    KCHECK(!wrote);
    KCHECK_WAITED(Clock::now() - t0, 5ms, "writer try_lock_for vs three readers");
    leave = true;
    for (auto& x : r) KJOIN(x);
    if (wrote) rw.unlock();  // (it got in only after the readers left: the failure is reported above)
    KCHECK_EQ(rw.readers(), 0u);

    rw.lock();
    std::atomic<int> probe{-1};
    Thread t = spawn("probe", 16, CpuMask::all(), [&] {
      probe = (rw.try_lock_shared() ? 1 : 0) | (rw.try_lock() ? 2 : 0);
    });
    KJOIN(t);
    KCHECK_EQ(probe.load(), 0);
    rw.unlock();
    KCHECK_EQ(rw.writer(), ThreadId{0});
  }
}

// Writers and readers on both CPUs: a writer never finds anyone inside, a
// reader never finds a writer inside nor a half-written pair, and the
// writers' count is exact.
KTEST(rwlock_stress, 2) {
  for (RwPolicy p : kPolicies) {
    RwLock rw("stress", p);
    std::atomic<int> writers_in{0}, readers_in{0};
    std::atomic<long> violations{0};
    long a = 0, b = 0;  // written by writers only, always equal outside a write
    const long n = scaled(5'000);
    auto w = [&] {
      for (long i = 0; i < n; ++i) {
        rw.lock();
        if (writers_in.fetch_add(1) != 0 || readers_in.load() != 0) violations.fetch_add(1);
        ++a;
        ++b;
        writers_in.fetch_sub(1);
        rw.unlock();
      }
    };
    auto r = [&] {
      for (long i = 0; i < n; ++i) {
        rw.lock_shared();
        readers_in.fetch_add(1);
        if (writers_in.load() != 0 || a != b) violations.fetch_add(1);
        readers_in.fetch_sub(1);
        rw.unlock_shared();
        if (i % 8 == 0) this_thread::yield();
      }
    };
    Thread t[5] = {spawn("w", 16, CpuMask::all(), w), spawn("r", 16, CpuMask::all(), r),
                   spawn("w", 16, CpuMask::all(), w), spawn("r", 16, CpuMask::all(), r),
                   spawn("r", 16, CpuMask::all(), r)};
    for (auto& x : t) KJOIN(x);
    KCHECK_EQ(violations.load(), 0L);
    KCHECK_EQ(a, 2 * n);
    KCHECK_EQ(b, 2 * n);
    KCHECK_EQ(rw.readers(), 0u);
    KCHECK_EQ(rw.writer(), ThreadId{0});
  }
}

// A reader holds the lock and a writer waits: does a new reader get in?
// Reader-preferring: yes. Writer-preferring and phase-fair: no, it waits
// behind the writer.
KTEST(rwlock_new_reader_while_writer_waits, 2) {
  for (RwPolicy p : kPolicies) {
    RwLock rw("admission", p);
    Log log;
    rw.lock_shared();
    Thread w = writer(rw, log, kW1);
    KCHECK(wait_blocked(w));
    std::atomic<int> tried{-1};
    Thread probe = spawn("probe", 16, CpuMask::all(), [&] {
      bool in = rw.try_lock_shared();
      if (in) rw.unlock_shared();
      tried = in ? 1 : 0;
    });
    KJOIN(probe);
    KCHECK_EQ(tried.load(), p == RwPolicy::kReaderPreferring ? 1 : 0);
    Thread r = reader(rw, log, kR2);
    if (p == RwPolicy::kReaderPreferring) {
      KJOIN(r);  // in and out while the writer still waits
      KCHECK(is_blocked(w.id()));
    } else {
      KCHECK(wait_blocked(r));
    }
    KCHECK_EQ(log.size(), p == RwPolicy::kReaderPreferring ? 1u : 0u);
    rw.unlock_shared();
    KJOIN(w);
    KJOIN(r);
    if (p == RwPolicy::kReaderPreferring) {
      check_log(log, {kR2, kW1}, p, "new reader while a writer waits");
    } else {
      check_log(log, {kW1, kR2}, p, "new reader while a writer waits");
    }
  }
}

// A writer holds the lock; a reader, a writer and another reader queue up
// in that order; the writer leaves. Reader-preferring: both readers, then
// the writer. Writer-preferring: the writer first. Phase-fair: the readers
// that waited at the release go before the next writer.
KTEST(rwlock_release_order_by_policy, 2) {
  for (RwPolicy p : kPolicies) {
    RwLock rw("release order", p);
    Log log;
    rw.lock();
    Thread r1 = reader(rw, log, kR1);
    KCHECK(wait_blocked(r1));
    Thread w1 = writer(rw, log, kW1);
    KCHECK(wait_blocked(w1));
    Thread r2 = reader(rw, log, kR2);
    KCHECK(wait_blocked(r2));
    KCHECK_EQ(log.size(), 0u);
    rw.unlock();
    KJOIN(r1);
    KJOIN(w1);
    KJOIN(r2);
    KREQUIRE(log.size() == 3);
    if (p == RwPolicy::kWriterPreferring) {
      KCHECK_EQ(log[0], kW1);
    } else {
      // Both readers (in either order) before the writer.
      KCHECK_EQ(log[2], kW1);
      KCHECK(log[0] != kW1 && log[1] != kW1);
    }
  }
}

// Phase-fair over several phases: readers waiting when a writer leaves all
// enter (together) before the next writer; a reader arriving during that
// read phase while a writer waits is held back until after that writer.
KTEST(rwlock_phase_fair_alternation, 2) {
  RwLock rw("phases", RwPolicy::kPhaseFair);
  Log log;
  std::atomic<bool> release_readers{false}, release_w1{false};
  rw.lock();
  Thread r1 = reader(rw, log, kR1, &release_readers);
  KCHECK(wait_blocked(r1));
  Thread w1 = writer(rw, log, kW1, &release_w1);
  KCHECK(wait_blocked(w1));
  Thread r2 = reader(rw, log, kR2, &release_readers);
  KCHECK(wait_blocked(r2));
  rw.unlock();
  // Read phase: r1 and r2 inside together (each holds until released).
  KCHECK(wait_until([&] { return log.size() == 2; }));
  KCHECK(is_blocked(w1.id()));
  // A newcomer now waits behind w1 ...
  std::atomic<int> tried{-1};
  Thread probe = spawn("probe", 16, CpuMask::all(), [&] {
    bool in = rw.try_lock_shared();
    if (in) rw.unlock_shared();
    tried = in ? 1 : 0;
  });
  KJOIN(probe);
  KCHECK_EQ(tried.load(), 0);
  Thread r3 = reader(rw, log, kR3);
  KCHECK(wait_blocked(r3));
  // ... as does a second writer, queued after it.
  Thread w2 = writer(rw, log, kW2);
  KCHECK(wait_blocked(w2));
  release_readers = true;
  KJOIN(r1);
  KJOIN(r2);
  // Write phase: w1 alone.
  KCHECK(wait_until([&] { return log.size() == 3; }));
  KCHECK(is_blocked(r3.id()));
  KCHECK(is_blocked(w2.id()));
  release_w1 = true;
  KJOIN(w1);
  KJOIN(r3);
  KJOIN(w2);
  KREQUIRE(log.size() == 5);
  KCHECK(log[0] == kR1 || log[0] == kR2);
  KCHECK(log[1] == kR1 || log[1] == kR2);
  KCHECK_EQ(log[2], kW1);
  KCHECK_EQ(log[3], kR3);  // waited at w1's release: before w2
  KCHECK_EQ(log[4], kW2);
}

// Every timed acquisition on both sides times out correctly while the
// other side holds the lock, leaves it usable, and succeeds once the
// holder lets go.
KTEST(rwlock_timeouts, 2) {
  for (RwPolicy p : kPolicies) {
    RwLock rw("timed rw", p);
    const ThreadId main_id = this_thread::id();
    // A writer holds it: both sides time out.
    rw.lock();
    std::atomic<int> stage{0};
    Thread t = spawn("timed", 16, CpuMask::all(), [&] {
      KCHECK(!rw.try_lock_shared());
      TimePoint t0 = Clock::now();
      KCHECK(!rw.try_lock_shared_for(20ms));
      KCHECK_WAITED(Clock::now() - t0, 20ms, "try_lock_shared_for");
      t0 = Clock::now();
      KCHECK(!rw.try_lock_shared_until(std::chrono::steady_clock::now() + 10ms));
      KCHECK_WAITED(Clock::now() - t0, 10ms, "try_lock_shared_until");
      t0 = Clock::now();
      KCHECK_STATUS(rw.lock_shared_for(10ms), Status::kTimedOut);
      KCHECK_WAITED(Clock::now() - t0, 10ms, "lock_shared_for");
      KCHECK_STATUS(rw.lock_shared_until(Clock::now() - 1ms), Status::kTimedOut);
      KCHECK(!rw.try_lock());
      t0 = Clock::now();
      KCHECK(!rw.try_lock_for(20ms));
      KCHECK_WAITED(Clock::now() - t0, 20ms, "try_lock_for");
      t0 = Clock::now();
      KCHECK(!rw.try_lock_until(std::chrono::steady_clock::now() + 10ms));
      KCHECK_WAITED(Clock::now() - t0, 10ms, "try_lock_until");
      t0 = Clock::now();
      KCHECK_STATUS(rw.lock_for(10ms), Status::kTimedOut);
      KCHECK_WAITED(Clock::now() - t0, 10ms, "lock_for");
      KCHECK_STATUS(rw.lock_until(Clock::now() - 1ms), Status::kTimedOut);
      KCHECK_EQ(rw.writer(), main_id);
      stage = 1;
      // Ended early by main's unlock.
      KCHECK_STATUS(rw.lock_shared_for(30s), Status::kOk);
      KCHECK_EQ(rw.readers(), 1u);
      rw.unlock_shared();
    });
    KCHECK(wait_for_value(stage, 1));
    KCHECK(wait_blocked(t));
    rw.unlock();
    KJOIN(t);

    // A reader holds it: writers time out; afterwards readers still get in
    // (the timed-out writer no longer holds them back).
    rw.lock_shared();
    Thread t2 = spawn("timed writer", 16, CpuMask::all(), [&] {
      TimePoint t0 = Clock::now();
      KCHECK(!rw.try_lock_for(20ms));
      KCHECK_WAITED(Clock::now() - t0, 20ms, "try_lock_for vs a reader");
      t0 = Clock::now();
      KCHECK_STATUS(rw.lock_for(10ms), Status::kTimedOut);
      KCHECK_WAITED(Clock::now() - t0, 10ms, "lock_for vs a reader");
      KCHECK(rw.try_lock_shared());
      rw.unlock_shared();
      KCHECK_STATUS(rw.lock_shared_for(1s), Status::kOk);
      rw.unlock_shared();
    });
    KJOIN(t2);
    KCHECK_EQ(rw.readers(), 1u);
    rw.unlock_shared();
    // Free again: every form succeeds at once.
    KCHECK(rw.try_lock_for(0ns));
    rw.unlock();
    KCHECK(rw.try_lock_shared_for(0ns));
    rw.unlock_shared();
    KCHECK_STATUS(rw.lock_for(1ms), Status::kOk);
    rw.unlock();
    KCHECK_EQ(rw.readers(), 0u);
    KCHECK_EQ(rw.writer(), ThreadId{0});
  }
}

// A waiting writer holds back new readers (writer-preferring, phase-fair);
// when it gives up, those readers must be let in at once, not when the
// current reader leaves.
KTEST(rwlock_writer_timeout_releases_held_back_readers, 2) {
  for (RwPolicy p : {RwPolicy::kWriterPreferring, RwPolicy::kPhaseFair}) {
    KWITH_GROWING_TIMEOUT([&](Duration timeout) {
      RwLock rw("held back", p);
      Log log;
      rw.lock_shared();
      const TimePoint deadline = deadline_after(timeout);
      Thread w = spawn("impatient writer", 16, CpuMask::all(), [&] {
        KCHECK_STATUS(rw.lock_until(deadline), Status::kTimedOut);
        KCHECK(Clock::now() >= deadline);
      });
      bool w_queued = wait_blocked_until(w, deadline);
      Thread r = reader(rw, log, kR2);
      // Held back (unless the writer already gave up: then it walks in).
      bool r_held = wait_blocked_until(r, deadline);
      const bool conclusive = w_queued && r_held && Clock::now() < deadline;
      KJOIN(w);
      // Main still reads; the held-back reader must get in now.
      if (!wait_until([&] { return log.size() == 1; }, 5s)) {
        KFAIL("%s: a reader held back by a writer that timed out stayed blocked", to_string(p));
      }
      rw.unlock_shared();
      KJOIN(r);
      return conclusive;
    });
  }
}

// Reader-preferring writers wait until no reader waits; a waiting reader
// that gives up must not keep the writer out.
KTEST(rwlock_reader_timeout_lets_writer_in, 2) {
  for (RwPolicy p : kPolicies) {
    KWITH_GROWING_TIMEOUT([&](Duration timeout) {
      RwLock rw("reader gives up", p);
      Log log;
      rw.lock();
      const TimePoint deadline = deadline_after(timeout);
      Thread r = spawn("impatient reader", 16, CpuMask::all(), [&] {
        KCHECK_STATUS(rw.lock_shared_until(deadline), Status::kTimedOut);
        KCHECK(Clock::now() >= deadline);
      });
      bool r_queued = wait_blocked_until(r, deadline);
      Thread w = writer(rw, log, kW1);
      KCHECK(wait_blocked(w));
      const bool conclusive = r_queued && Clock::now() < deadline;  // r gave up while w waited
      KJOIN(r);
      rw.unlock();
      KJOIN(w);
      check_log(log, {kW1}, p, "writer after a reader timed out");
      KCHECK_EQ(rw.writer(), ThreadId{0});
      KCHECK(rw.try_lock_shared());
      rw.unlock_shared();
      return conclusive;
    });
  }
}

// The releasing writer tries to re-enter at once, before the reader it
// woke has run (main is more urgent, on the same CPU). Phase-fair and
// reader-preferring must keep it out (a reader was waiting at the
// release); writer-preferring lets it in.
KTEST(rwlock_releasing_writer_cannot_overtake_waiting_reader, 1) {
  KREQUIRE(this_thread::set_affinity(CpuMask::only(0)) == Status::kOk);
  KREQUIRE(this_thread::set_priority(20) == Status::kOk);
  for (RwPolicy p : kPolicies) {
    RwLock rw("re-entry", p);
    Log log;
    rw.lock();
    Thread r = spawn("reader", 10, CpuMask::only(0), [&] {
      rw.lock_shared();
      log.add(kR1);
      rw.unlock_shared();
    });
    KCHECK(wait_blocked_sleeping(r));
    rw.unlock();
    bool again = rw.try_lock();
    if (again) {
      log.add(kW1);
      rw.unlock();
    }
    KCHECK_EQ(again, p == RwPolicy::kWriterPreferring);
    KJOIN(r);
    if (p == RwPolicy::kWriterPreferring) {
      check_log(log, {kW1, kR1}, p, "writer re-entry");
    } else {
      check_log(log, {kR1}, p, "writer re-entry");
    }
  }
}

KTEST(rwlock_std_adaptors, 2) {
  RwLock rw("std rw");
  const ThreadId me = this_thread::id();
  {
    std::shared_lock<RwLock> s(rw);
    KCHECK(s.owns_lock());
    KCHECK_EQ(rw.readers(), 1u);
    std::atomic<int> got{-1};
    Thread t = spawn("shared too", 16, CpuMask::all(), [&] {
      std::shared_lock<RwLock> s2(rw, 10ms);
      std::unique_lock<RwLock> u(rw, 5ms);
      got = (s2.owns_lock() ? 1 : 0) | (u.owns_lock() ? 2 : 0);
    });
    KJOIN(t);
    KCHECK_EQ(got.load(), 1);
  }
  KCHECK_EQ(rw.readers(), 0u);
  {
    std::unique_lock<RwLock> u(rw);
    KCHECK(u.owns_lock());
    KCHECK_EQ(rw.writer(), me);
    std::atomic<int> got{-1};
    Thread t = spawn("excluded", 16, CpuMask::all(), [&] {
      std::shared_lock<RwLock> s1(rw, std::try_to_lock);
      std::shared_lock<RwLock> s2(rw, 5ms);
      std::shared_lock<RwLock> s3(rw, std::chrono::steady_clock::now() + 5ms);
      std::unique_lock<RwLock> u2(rw, 5ms);
      got = (s1.owns_lock() ? 1 : 0) | (s2.owns_lock() ? 2 : 0) | (s3.owns_lock() ? 4 : 0) |
            (u2.owns_lock() ? 8 : 0);
    });
    KJOIN(t);
    KCHECK_EQ(got.load(), 0);
    u.unlock();
    KCHECK_EQ(rw.writer(), ThreadId{0});
    KCHECK(u.try_lock_for(5ms));
    KCHECK_EQ(rw.writer(), me);
  }
  Mutex m("with rw");
  {
    std::scoped_lock both(m, rw);
    KCHECK_EQ(m.owner(), me);
    KCHECK_EQ(rw.writer(), me);
  }
  KCHECK_EQ(rw.writer(), ThreadId{0});
  KCHECK_EQ(m.owner(), ThreadId{0});
}
