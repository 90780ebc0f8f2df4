// Coroutines on the synchronization objects: awaitables, mixed
// thread/coroutine waiters in one order, cancellation while waiting on each
// kind of awaitable, locks held across suspension.
#include "sync_util.h"

using namespace spindle;
using namespace spindle::ktest;
using namespace std::chrono_literals;

namespace {

// Waits until n jobs are suspended on a wait, sleep or lock.
bool jobs_waiting(std::uint64_t n) {
  return settle([n] { return coroutine_stats().waiting == n; });
}

struct OnExit {
  std::atomic<int>* n;
  ~OnExit() { n->fetch_add(1); }
};

// Four waiters arrive in turn on one object: thread 1, coroutine 2, thread
// 3, coroutine 4, each started once the previous one waits. thread_wait(id)
// blocks a thread until served; coro_wait(id) is the coroutine's Task.
// serve(i) releases (at least) the next waiter, then served() must reach
// i + 1; the caller checks the ids came out as 1, 2, 3, 4.
template <class ThreadWait, class CoroWait, class Serve, class Served>
void check_fifo_across_kinds(ThreadWait thread_wait, CoroWait coro_wait, Serve serve, Served served) {
  Thread t1 = spawn("t1", kDefaultPriority, CpuMask::all(), [&] { thread_wait(1); });
  KREQUIRE(wait_blocked_sleeping(t1));
  JoinHandle<> c2 = spawn(coro_wait(2));
  KREQUIRE(jobs_waiting(1));
  Thread t3 = spawn("t3", kDefaultPriority, CpuMask::all(), [&] { thread_wait(3); });
  KREQUIRE(wait_blocked_sleeping(t3));
  JoinHandle<> c4 = spawn(coro_wait(4));
  KREQUIRE(jobs_waiting(2));
  for (unsigned i = 0; i < 4; ++i) {
    serve(i);
    KCHECK(settle([&] { return served() >= i + 1; }));
  }
  KJOIN(t1);
  KJOIN(t3);
  KCHECK_STATUS(c2.join(), Status::kOk);
  KCHECK_STATUS(c4.join(), Status::kOk);
}

}  // namespace

KTEST(coro_semaphore_async, 1) {
  Semaphore sem(2, 10, "coro sem");
  auto take = [&sem](int n) -> Task<int> {
    int got = 0;
    for (int i = 0; i < n; ++i) {
      if (co_await sem.acquire_async() == Status::kOk) ++got;
    }
    co_return got;
  };
  // Uncontended: no suspension.
  KCHECK_EQ(run(take(2)).value(), 2);
  KCHECK_EQ(sem.value(), 0u);
  // Contended: the coroutine waits until a thread releases.
  JoinHandle<int> h = spawn(take(3));
  KREQUIRE(jobs_waiting(1));
  for (int i = 0; i < 3; ++i) {
    KCHECK_STATUS(sem.release(), Status::kOk);
    this_thread::sleep_for(2ms);
  }
  KCHECK_EQ(h.join().value(), 3);
  // Timeout.
  auto timed = [&sem]() -> Task<Status> { co_return co_await sem.acquire_async_for(20ms); };
  TimePoint t0 = Clock::now();
  KCHECK_STATUS(run(timed()), Status::kTimedOut);
  KCHECK(Clock::now() - t0 >= 20ms);
  // A semaphore made with bad counts refuses.
  Semaphore bad(5, 2, "bad sem");
  auto bad_take = [&bad]() -> Task<Status> { co_return co_await bad.acquire_async(); };
  KCHECK_STATUS(run(bad_take()), Status::kInvalidArgument);
}

KTEST(coro_mixed_waiters_fifo_semaphore, 1) {
  // Thread, coroutine, thread, coroutine queue on a FIFO semaphore; each
  // release serves the longest waiter, whichever kind it is.
  Semaphore sem(0, 10, "fifo sem", WaitOrder::kFifo);
  EventLog<8> order;
  check_fifo_across_kinds(
      [&](int id) {
        sem.acquire();
        order.add(id);
      },
      [&](int id) -> Task<> {
        co_await sem.acquire_async();
        order.add(id);
      },
      [&](unsigned) { KCHECK_STATUS(sem.release(), Status::kOk); }, [&] { return order.size(); });
  KREQUIRE(order.size() == 4);
  for (unsigned i = 0; i < 4; ++i) KCHECK_EQ(order[i], static_cast<int>(i + 1));
}

KTEST(coro_mixed_waiters_priority_semaphore, 1) {
  // On a priority-ordered semaphore a coroutine's spawn priority places it
  // among the threads.
  Semaphore sem(0, 10, "prio sem");
  EventLog<8> order;
  Thread low = spawn("low", 5, CpuMask::all(), [&] {
    sem.acquire();
    order.add(5);
  });
  KREQUIRE(wait_blocked_sleeping(low));
  auto coro = [&](int id) -> Task<> {
    co_await sem.acquire_async();
    order.add(id);
  };
  JoinHandle<> mid = spawn(coro(10), SpawnOptions{.priority = 10});
  KREQUIRE(jobs_waiting(1));
  Thread high = spawn("high", 20, CpuMask::all(), [&] {
    sem.acquire();
    order.add(20);
  });
  KREQUIRE(wait_blocked_sleeping(high));
  for (unsigned i = 0; i < 3; ++i) {
    KCHECK_STATUS(sem.release(), Status::kOk);
    KCHECK(settle([&] { return order.size() == i + 1; }));
  }
  KJOIN(low);
  KJOIN(high);
  KCHECK_STATUS(mid.join(), Status::kOk);
  KREQUIRE(order.size() == 3);
  KCHECK_EQ(order[0], 20);
  KCHECK_EQ(order[1], 10);
  KCHECK_EQ(order[2], 5);
}

// A release hands its unit to a waiting coroutine, as it does to a
// waiting thread: on one CPU, with the releaser more urgent than the
// executor, the job has not run yet but the unit is its own already (a
// release that only counted it would let try_acquire take it here). A job
// handed a unit and cancelled before it runs gives the unit back.
KTEST(coro_semaphore_hands_a_release_to_a_waiting_job, 1) {
  KCHECK(this_thread::set_affinity(CpuMask::only(0)) == Status::kOk);
  KCHECK(this_thread::set_priority(kDefaultPriority + 2) == Status::kOk);  // above the executors
  Semaphore s(0, 4, "job hand-off");
  std::atomic<int> through{0};
  auto take = [&]() -> Task<Status> {
    Status st = co_await s.acquire_async_for(30s);
    through.fetch_add(1);
    co_return st;
  };
  JoinHandle<Status> h = spawn(take(), SpawnOptions{.cpu = 0});
  KREQUIRE(jobs_waiting(1));
  KCHECK_STATUS(s.release(), Status::kOk);
  KCHECK_EQ(through.load(), 0);
  KCHECK_EQ(s.value(), 0u);
  KCHECK(!s.try_acquire());
  KCHECK_STATUS(h.join(), Status::kOk);
  KCHECK_EQ(through.load(), 1);

  // Handed a unit, then cancelled before it ran: the unit is counted again.
  JoinHandle<Status> c = spawn(take(), SpawnOptions{.cpu = 0});
  KREQUIRE(jobs_waiting(1));
  KCHECK_STATUS(s.release(), Status::kOk);
  KCHECK_EQ(s.value(), 0u);  // the job's
  c.cancel();
  KCHECK_STATUS(c.join(), Status::kInterrupted);
  KCHECK_EQ(through.load(), 1);  // it never ran on
  KCHECK_EQ(s.value(), 1u);
  KCHECK(s.try_acquire());

  // Cancelled while it waits: nothing was handed over, nothing comes back.
  JoinHandle<Status> w = spawn(take(), SpawnOptions{.cpu = 0});
  KREQUIRE(jobs_waiting(1));
  w.cancel();
  KCHECK_STATUS(w.join(), Status::kInterrupted);
  KCHECK_EQ(s.value(), 0u);
  KCHECK_STATUS(s.release(), Status::kOk);  // nobody waits: counted
  KCHECK(s.try_acquire());
}

// The take protocol on a bare counting word (detail::WordTake, what
// acquire_async awaits): kOk only with a unit (taken at once, or handed
// over by futex_give), kWouldBlock when a futex_wake woke it without one,
// kTimedOut.
KTEST(coro_word_take_protocol, 1) {
  static std::atomic<std::uint32_t> word{1};
  word.store(1);
  auto take = [](TimePoint deadline) -> Task<Status> {
    co_return co_await detail::WordTake(&word, deadline, WaitOrder::kFifo, "bare word");
  };
  KCHECK_STATUS(run(take(kForever)), Status::kOk);  // counted: at once
  KCHECK_EQ(word.load(), 0u);
  KCHECK_STATUS(run(take(deadline_after(5ms))), Status::kTimedOut);
  JoinHandle<Status> woken = spawn(take(kForever));
  KREQUIRE(jobs_waiting(1));
  KCHECK_EQ(futex_wake(&word, 1), 1u);  // no unit with it
  KCHECK_STATUS(woken.join(), Status::kWouldBlock);
  JoinHandle<Status> given = spawn(take(kForever));
  KREQUIRE(jobs_waiting(1));
  KCHECK_STATUS(futex_give(&word, 1, 10), Status::kOk);
  KCHECK_STATUS(given.join(), Status::kOk);
  KCHECK_EQ(word.load() & count_word::kCountMask, 0u);  // handed over, not counted
}

// Units are conserved with threads and coroutines taking and giving on
// two CPUs, random timeouts racing the hand-offs, and waiting coroutines
// cancelled at random moments (one handed a unit just before its cancel
// gives it back): never more than 3 inside, and the count ends at 3.
KTEST(coro_semaphore_units_conserved_with_timeouts_and_cancels, 2) {
  Semaphore s(3, 3, "three units, mixed takers");
  std::atomic<int> inside{0}, worst{0};
  std::atomic<long> taken{0}, errors{0};
  auto enter = [&] {
    int now = inside.fetch_add(1) + 1;
    for (int m = worst.load(); now > m && !worst.compare_exchange_weak(m, now);) {
    }
    taken.fetch_add(1);
  };
  auto leave = [&] {
    inside.fetch_sub(1);
    if (s.release() != Status::kOk) errors.fetch_add(1);
  };
  const int iters = static_cast<int>(scaled(2'000));
  auto job = [&](std::uint32_t seed) -> Task<> {
    std::uint32_t r = seed;
    for (int k = 0; k < iters; ++k) {
      r = r * 1664525u + 1013904223u;
      Status st = co_await s.acquire_async_for(std::chrono::microseconds(r >> 24));  // 0..255 us
      if (st == Status::kTimedOut) continue;
      if (st != Status::kOk) {
        errors.fetch_add(1);
        continue;
      }
      enter();
      if (r & 0x100) co_await yield();
      leave();
    }
  };
  // Waits long; a cancel ends it at its wait (or, handed a unit, before it
  // runs on: then the unit goes back). Once it has a unit it runs to its
  // release without suspending, so a cancel cannot land in between.
  auto victim = [&]() -> Task<> {
    if (co_await s.acquire_async_for(10s) != Status::kOk) co_return;
    enter();
    leave();
  };
  Thread threads[3];
  for (int i = 0; i < 3; ++i) {
    threads[i] = spawn("unit user", kDefaultPriority, CpuMask::all(), [&, i] {
      std::uint32_t r = 0x85ebca6bu * static_cast<std::uint32_t>(i + 1);
      for (int k = 0; k < iters; ++k) {
        r = r * 1664525u + 1013904223u;
        Status st = s.acquire_for(std::chrono::microseconds(r >> 24));
        if (st == Status::kTimedOut) continue;
        if (st != Status::kOk) {
          errors.fetch_add(1);
          continue;
        }
        enter();
        if (r & 0x100) this_thread::yield();
        leave();
      }
    });
  }
  JoinHandle<> jobs[4];
  for (int i = 0; i < 4; ++i) jobs[i] = spawn(job(0x9e3779b9u * static_cast<std::uint32_t>(i + 1)));
  std::uint32_t r = 12345;
  const int rounds = static_cast<int>(scaled(200));
  for (int k = 0; k < rounds; ++k) {
    JoinHandle<> v[3];
    for (auto& h : v) h = spawn(victim());
    r = r * 1664525u + 1013904223u;
    this_thread::sleep_for(std::chrono::microseconds(r >> 25));  // 0..127 us
    for (auto& h : v) h.cancel();
    for (auto& h : v) {
      Status st = h.join();
      if (st != Status::kOk && st != Status::kInterrupted) errors.fetch_add(1);
    }
  }
  for (auto& t : threads) KJOIN(t);
  for (auto& h : jobs) KCHECK_STATUS(h.join(), Status::kOk);
  KCHECK_EQ(errors.load(), 0L);
  KCHECK(worst.load() <= 3);
  KCHECK(taken.load() > 0);
  KCHECK_EQ(s.value(), 3u);
  KCHECK(s.try_acquire() && s.try_acquire() && s.try_acquire() && !s.try_acquire());
}

KTEST(coro_mixed_waiters_fifo_fair_mutex_and_queue, 1) {
  // A FairMutex hands itself over in arrival order across threads and
  // coroutines; a FIFO queue built on it serves getters the same way.
  FairMutex m("fair");
  EventLog<8> order;
  m.lock();
  check_fifo_across_kinds(
      [&](int id) {
        m.lock();
        order.add(id);
        m.unlock();
      },
      [&](int id) -> Task<> {
        auto g = co_await m.lock_async();
        order.add(id);
      },
      [&](unsigned i) {
        if (i == 0) m.unlock();  // the rest pass it on themselves
      },
      [&] { return order.size(); });
  KREQUIRE(order.size() == 4);
  for (unsigned i = 0; i < 4; ++i) KCHECK_EQ(order[i], static_cast<int>(i + 1));

  Queue<int, FairMutex> q(4, "fair queue", WaitOrder::kFifo);
  EventLog<8> got;
  check_fifo_across_kinds(
      [&](int id) {
        Result<int> r = q.get();
        if (r.ok()) got.add(id * 100 + r.value());
      },
      [&](int id) -> Task<> {
        Result<int> r = co_await q.get_async();
        if (r.ok()) got.add(id * 100 + r.value());
      },
      [&](unsigned i) { KCHECK_STATUS(q.put(static_cast<int>(i)), Status::kOk); }, [&] { return got.size(); });
  KREQUIRE(got.size() == 4);
  for (unsigned i = 0; i < 4; ++i) KCHECK_EQ(got[i], static_cast<int>((i + 1) * 100 + i));
}

KTEST(coro_lock_async_held_across_suspension, 1) {
  // Coroutines hold the mutex across a yield (so it is owned by the job,
  // not the executor thread) while threads contend with lock(): the count
  // is exact and nobody is ever inside with another.
  Mutex m("counter");
  long counter = 0;
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  const int rounds = static_cast<int>(scaled(500));
  auto coro = [&]() -> Task<> {
    for (int i = 0; i < rounds; ++i) {
      auto g = co_await m.lock_async();
      if (inside.fetch_add(1) != 0) overlaps.fetch_add(1);
      long v = counter;
      co_await yield();
      counter = v + 1;
      inside.fetch_sub(1);
    }
  };
  JoinHandle<> c[4] = {spawn(coro()), spawn(coro()), spawn(coro()), spawn(coro())};
  auto thread_body = [&] {
    for (int i = 0; i < rounds; ++i) {
      Guard g(m);
      if (inside.fetch_add(1) != 0) overlaps.fetch_add(1);
      counter = counter + 1;
      inside.fetch_sub(1);
    }
  };
  Thread t1 = spawn("t1", kDefaultPriority, CpuMask::all(), thread_body);
  Thread t2 = spawn("t2", kDefaultPriority, CpuMask::all(), thread_body);
  for (auto& h : c) KCHECK_STATUS(h.join(), Status::kOk);
  KJOIN(t1);
  KJOIN(t2);
  KCHECK_EQ(counter, 6L * rounds);
  KCHECK_EQ(overlaps.load(), 0);
  KCHECK_EQ(m.owner(), ThreadId{0});
}

KTEST(coro_lock_async_timeout_and_self_deadlock, 1) {
  Mutex m("held");
  m.lock();
  auto timed = [&]() -> Task<Status> {
    auto g = co_await m.lock_async_for(20ms);
    co_return g.owns_lock() ? Status::kOk : g.status();
  };
  KCHECK_STATUS(run(timed()), Status::kTimedOut);
  m.unlock();
  auto twice = [&]() -> Task<Status> {
    auto a = co_await m.lock_async();
    auto b = co_await m.lock_async();  // the same job again
    co_return b.owns_lock() ? Status::kOk : b.status();
  };
  KCHECK_STATUS(run(twice()), Status::kDeadlock);
  KCHECK_EQ(m.owner(), ThreadId{0});
}

KTEST(coro_lock_owner_died, 1) {
  // A job that ends while it owns a contended lock (its guard leaked):
  // the waiting thread takes it over with kOwnerDied.
  Mutex m("orphan");
  Event go("go");
  alignas(detail::OwnerLock::AsyncGuard) static unsigned char leak[sizeof(detail::OwnerLock::AsyncGuard)];
  auto owner = [&]() -> Task<> {
    auto g = co_await m.lock_async();
    new (leak) detail::OwnerLock::AsyncGuard(std::move(g));  // never unlocked
    co_await go.wait_async();
  };
  JoinHandle<> h = spawn(owner());
  KREQUIRE(jobs_waiting(1));
  Status got = Status::kInvalidState;
  Thread t = spawn("waiter", kDefaultPriority, CpuMask::all(), [&] {
    got = m.lock_until(kForever);
    m.unlock();
  });
  KREQUIRE(wait_blocked_sleeping(t));
  go.set();
  KCHECK_STATUS(h.join(), Status::kOk);
  KJOIN(t);
  KCHECK_STATUS(got, Status::kOwnerDied);
}

KTEST(coro_event_latch_barrier, 1) {
  Event ev("start");
  Latch done(3, "done");
  std::atomic<int> started{0};
  auto waiter = [&]() -> Task<> {
    co_await ev.wait_async();
    started.fetch_add(1);
    (void)done.count_down();
  };
  JoinHandle<> w[3] = {spawn(waiter()), spawn(waiter()), spawn(waiter())};
  KREQUIRE(jobs_waiting(3));
  KCHECK_EQ(started.load(), 0);
  ev.set();
  done.wait();
  KCHECK_EQ(started.load(), 3);
  for (auto& h : w) KCHECK_STATUS(h.join(), Status::kOk);
  // A latch awaited by a coroutine.
  Latch l(2, "l");
  auto lw = [&]() -> Task<Status> { co_return co_await l.wait_async_for(5s); };
  JoinHandle<Status> lh = spawn(lw());
  KREQUIRE(jobs_waiting(1));
  (void)l.count_down();
  (void)l.count_down();
  KCHECK_STATUS(lh.join(), Status::kOk);
  // Barrier phases shared by three coroutines and a thread: nobody leaves
  // a phase before all four arrived.
  const int phases = 20;
  std::atomic<int> arrived[phases] = {};
  std::atomic<int> early{0};
  Barrier b(4, "phases");
  auto party = [&]() -> Task<> {
    for (int p = 0; p < phases; ++p) {
      arrived[p].fetch_add(1);
      co_await b.arrive_and_wait_async();
      if (arrived[p].load() != 4) early.fetch_add(1);
    }
  };
  JoinHandle<> ps[3] = {spawn(party()), spawn(party()), spawn(party())};
  for (int p = 0; p < phases; ++p) {
    arrived[p].fetch_add(1);
    b.arrive_and_wait();
    if (arrived[p].load() != 4) early.fetch_add(1);
  }
  for (auto& h : ps) KCHECK_STATUS(h.join(), Status::kOk);
  KCHECK_EQ(early.load(), 0);
  KCHECK_EQ(b.generation(), static_cast<std::uint32_t>(phases));
}

KTEST(coro_queue_async_producer_consumer, 1) {
  // Coroutine producers and a thread consumer, then the reverse, through a
  // small queue: every item arrives exactly once, in order per producer.
  Queue<int> q(2, "pc");
  const int n = static_cast<int>(scaled(2000));
  auto producer = [&](int base) -> Task<Status> {
    for (int i = 0; i < n; ++i) {
      if (Status s = co_await q.put_async(base + i); s != Status::kOk) co_return s;
    }
    co_return Status::kOk;
  };
  JoinHandle<Status> p1 = spawn(producer(0));
  JoinHandle<Status> p2 = spawn(producer(1'000'000));
  int next[2] = {0, 1'000'000};
  for (int i = 0; i < 2 * n; ++i) {
    Result<int> r = q.get();
    KREQUIRE(r.ok());
    int k = r.value() >= 1'000'000 ? 1 : 0;
    if (r.value() != next[k]) KFAIL("got %d, want %d", r.value(), next[k]);
    next[k] = r.value() + 1;
  }
  KCHECK_STATUS(p1.join(), Status::kOk);
  KCHECK_STATUS(p2.join(), Status::kOk);

  auto consumer = [&]() -> Task<long> {
    long sum = 0;
    for (;;) {
      Result<int> r = co_await q.get_async();
      if (!r.ok()) co_return r.status() == Status::kClosed ? sum : -1;
      sum += r.value();
    }
  };
  JoinHandle<long> c1 = spawn(consumer());
  JoinHandle<long> c2 = spawn(consumer());
  long want = 0;
  for (int i = 0; i < n; ++i) {
    KCHECK_STATUS(q.put(i), Status::kOk);
    want += i;
  }
  q.close();
  long a = c1.join().value(), b = c2.join().value();
  KCHECK_EQ(a + b, want);
  // Timeouts.
  Queue<int> e(1, "empty");
  auto late = [&]() -> Task<Status> { co_return (co_await e.get_async_for(10ms)).status(); };
  KCHECK_STATUS(run(late()), Status::kTimedOut);
  KCHECK_STATUS(e.put(1), Status::kOk);
  auto full = [&]() -> Task<Status> { co_return co_await e.put_async_for(2, 10ms); };
  KCHECK_STATUS(run(full()), Status::kTimedOut);
}

KTEST(coro_cancel_while_waiting_on_each_kind, 1) {
  // For each awaitable: a coroutine waits, is cancelled, unwinds (its
  // locals are destroyed, it never resumes), and the object is left
  // consistent: nobody counted as waiting, the next waiter is served.
  std::atomic<int> unwound{0};
  std::atomic<int> resumed{0};
  Semaphore sem(0, 10, "c sem");
  Mutex m("c mutex");
  Event ev("c event");
  Barrier b(2, "c barrier");
  Queue<int> q(1, "c queue");
  CondVar cv("c condvar");
  Mutex cv_lock("c cv lock");
  Latch latch(1, "c latch");
  Event release("c release");
  ThreadPool pool(1, ThreadPoolOptions{.name = "c pool"});
  Future<int> pending = pool.submit([&] {
    release.wait();
    return 1;
  });
  JoinHandle<int> never = spawn([]() -> Task<int> {
    co_await sleep_for(1h);
    co_return 0;
  }());
  auto waiter = [&](int kind) -> Task<> {
    OnExit guard{&unwound};
    switch (kind) {
      case 0: (void)co_await sem.acquire_async(); break;
      case 1: (void)co_await m.lock_async(); break;
      case 2: (void)co_await ev.wait_async(); break;
      case 3: (void)co_await b.arrive_and_wait_async(); break;
      case 4: (void)co_await q.get_async(); break;
      case 5: {
        cv_lock.lock();
        (void)co_await cv.wait_async(cv_lock);
        cv_lock.unlock();
        break;
      }
      case 6: co_await sleep_for(1h); break;
      case 7: (void)co_await never; break;
      case 8: (void)co_await latch.wait_async(); break;
      case 9: (void)co_await pending; break;
    }
    resumed.fetch_add(1);
  };
  m.lock();
  const int kinds = 10;
  for (int k = 0; k < kinds; ++k) {
    JoinHandle<> h = spawn(waiter(k));
    if (!jobs_waiting(2)) KFAIL("kind %d: the coroutine did not wait", k);
    h.cancel();
    KCHECK_STATUS(h.join(), Status::kInterrupted);
    KCHECK_EQ(unwound.load(), k + 1);
  }
  KCHECK_EQ(resumed.load(), 0);
  // Each object still works and counts no waiter (their destructors would
  // panic otherwise).
  m.unlock();
  KCHECK(m.try_lock());
  m.unlock();
  KCHECK_STATUS(sem.release(), Status::kOk);
  KCHECK(sem.try_acquire());
  KCHECK_STATUS(q.put(1), Status::kOk);
  KCHECK_EQ(q.get().value(), 1);
  never.cancel();
  KCHECK_STATUS(never.join().status(), Status::kInterrupted);
  KCHECK(jobs_waiting(0));
  KCHECK_STATUS(latch.count_down(), Status::kOk);
  KCHECK_STATUS(latch.wait_for(std::chrono::seconds(1)), Status::kOk);
  release.set();  // the job the cancelled coroutine awaited still ends; its future still works
  KCHECK_EQ(pending.get().value(), 1);
  // The barrier counted the cancelled arrival (like a thread that timed
  // out): one more arrival completes the phase.
  b.arrive_and_wait();
  KCHECK_EQ(b.generation(), 1u);
}
