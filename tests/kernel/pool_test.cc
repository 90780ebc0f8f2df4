// ThreadPool, Future<T>, FutureList, map and as_completed.
#include "sync_util.h"

using namespace spindle;
using namespace spindle::ktest;
using namespace std::chrono_literals;

namespace {

// How many jobs run at once, and the most seen.
struct Concurrency {
  std::atomic<int> now{0}, max{0};
  void enter() {
    int n = now.fetch_add(1) + 1;
    int m = max.load();
    while (n > m && !max.compare_exchange_weak(m, n)) {
    }
  }
  void leave() { now.fetch_sub(1); }
};

bool starts_with(const char* s, const char* prefix) {
  while (*prefix) {
    if (*s++ != *prefix++) return false;
  }
  return true;
}

long collatz_steps(long n) {
  long steps = 0;
  for (; n > 1; ++steps) n = (n % 2 == 0) ? n / 2 : 3 * n + 1;
  return steps;
}

template <class T>
bool ready_within(const Future<T>& f, Duration d = 10s) {
  return f.wait_for(d) == Status::kOk && f.ready();
}

// A job that counts itself started, waits for the gate, and returns `result`.
auto gated_job(std::atomic<int>& started, Event& gate, int result) {
  return [&started, &gate, result] {
    started.fetch_add(1);
    gate.wait();
    return result;
  };
}

// A job that counts its runs and returns its token's value.
auto token_job(std::atomic<int>& ran) {
  return [&ran](Token t) {
    ran.fetch_add(1);
    return t.v;
  };
}

// Waits until `n` jobs have started (each bumps `started`).
bool started_n(const std::atomic<int>& started, int n) { return settle([&] { return started.load() >= n; }, 10s); }

}  // namespace

// Many jobs on 3 workers: every result right, each computed on one of the
// pool's workers, never more than 3 at once (and, with jobs that sleep,
// exactly 3 at once at some point).
KTEST(pool_many_jobs_results_and_concurrency, 2) {
  Concurrency c;
  std::atomic<int> foreign{0};
  ThreadPool pool(3, {.name = "sums"});
  KREQUIRE(pool.status() == Status::kOk);
  KCHECK_EQ(pool.size(), 3u);
  KCHECK_EQ(pool.capacity(), std::size_t{64});
  const ThreadId main_id = this_thread::id();
  constexpr long kJobs = 1000;
  FutureList<long> results(kJobs);
  KREQUIRE(results.status() == Status::kOk);
  for (long i = 0; i < kJobs; ++i) {
    results[static_cast<std::size_t>(i)] = pool.submit(
        [&c, &foreign, main_id](long n) {
          c.enter();
          if (this_thread::id() == main_id || !starts_with(this_thread::name(), "sums-")) foreign.fetch_add(1);
          long r = collatz_steps(n) * 1000 + n;
          c.leave();
          return r;
        },
        i + 1);
  }
  KCHECK_STATUS(results.wait_for(30s), Status::kOk);
  for (long i = 0; i < kJobs; ++i) {
    Result<long> r = results[static_cast<std::size_t>(i)].get();
    KREQUIRE(r.ok());
    if (*r != collatz_steps(i + 1) * 1000 + i + 1) KFAIL("job %ld: got %ld", i, *r);
  }
  KCHECK_EQ(foreign.load(), 0);
  KCHECK(c.max.load() <= 3);

  // Jobs that sleep overlap on any number of CPUs: the pool must run
  // exactly its 3 at once, no more.
  Concurrency s;
  FutureList<void> sleepers(30);
  KREQUIRE(sleepers.status() == Status::kOk);
  for (auto& f : sleepers) {
    f = pool.submit([&s] {
      s.enter();
      this_thread::sleep_for(2ms);
      s.leave();
    });
  }
  KCHECK_STATUS(sleepers.wait_for(30s), Status::kOk);
  for (auto& f : sleepers) KCHECK_STATUS(f.get(), Status::kOk);
  KCHECK_EQ(s.max.load(), 3);
  KCHECK_STATUS(pool.shutdown(), Status::kOk);
  KCHECK_EQ(pool.running(), 0u);
}

// A full queue: submit blocks, try_submit says kWouldBlock, submit_for
// times out; a failed submit leaves its arguments untouched.
KTEST(pool_back_pressure, 1) {
  Token::live = 0;
  Event gate("gate");
  std::atomic<int> started{0};
  {
    ThreadPool pool(1, {.name = "narrow", .queue_capacity = 2});
    KREQUIRE(pool.status() == Status::kOk);
    Future<int> blocker = pool.submit(gated_job(started, gate, 1));
    KREQUIRE(started_n(started, 1));  // the worker is busy: the queue alone holds what follows
    Future<int> q1 = pool.submit([] { return 2; });
    Future<int> q2 = pool.try_submit([] { return 3; });
    KCHECK_STATUS(q1.status(), Status::kOk);
    KCHECK_STATUS(q2.status(), Status::kOk);
    KCHECK_EQ(pool.queued(), std::size_t{2});

    Token t(7);
    Future<int> full = pool.try_submit([](Token x) { return x.v; }, std::move(t));
    KCHECK(!full.valid());
    KCHECK_STATUS(full.status(), Status::kWouldBlock);
    KCHECK_STATUS(full.get().status(), Status::kWouldBlock);
    KCHECK_EQ(t.v, 7);  // not moved from

    TimePoint t0 = Clock::now();
    Future<int> timed = pool.submit_for(20ms, [](Token x) { return x.v; }, std::move(t));
    KCHECK_STATUS(timed.status(), Status::kTimedOut);
    KCHECK_WAITED(Clock::now() - t0, 20ms, "submit_for");
    KCHECK_EQ(t.v, 7);
    KCHECK_STATUS(pool.submit_until(Clock::now() - 1ms, [] { return 0; }).status(), Status::kTimedOut);
    KCHECK_EQ(pool.queued(), std::size_t{2});

    // A blocking submit waits for room, and gets it when a job starts.
    std::atomic<int> submitted{0};
    Future<int> late;
    Thread s = spawn("submitter", kDefaultPriority, CpuMask::all(), [&] {
      late = pool.submit([](Token x) { return x.v * 10; }, std::move(t));
      submitted = 1;
    });
    KCHECK(wait_blocked_sleeping(s));
    KCHECK_EQ(submitted.load(), 0);
    KCHECK_EQ(t.v, 7);
    gate.set();
    KJOIN(s);
    KCHECK_EQ(submitted.load(), 1);
    Result<int> r0 = blocker.get(), r1 = q1.get(), r2 = q2.get(), r3 = late.get();
    KREQUIRE(r0.ok() && r1.ok() && r2.ok() && r3.ok());
    KCHECK_EQ(*r0, 1);
    KCHECK_EQ(*r1, 2);
    KCHECK_EQ(*r2, 3);
    KCHECK_EQ(*r3, 70);
    KCHECK_EQ(t.v, -1);  // moved into the job that ran
  }
  KCHECK_EQ(Token::live.load(), 0);
}

// shutdown(true) with queued work: new submits fail with kClosed at once,
// every queued job still runs, in submission order (FIFO).
KTEST(pool_shutdown_wait_runs_queued_jobs, 1) {
  Event gate("gate");
  std::atomic<int> started{0};
  EventLog<5> order;
  ThreadPool pool(1, {.name = "drain"});
  Future<int> blocker = pool.submit(gated_job(started, gate, -1));
  KREQUIRE(started_n(started, 1));
  Future<int> queued[5];
  for (int i = 0; i < 5; ++i) {
    queued[i] = pool.submit([i, &order] {
      order.add(i);
      return i * i;
    });
  }
  KCHECK_EQ(pool.queued(), std::size_t{5});
  Status shut = Status::kInvalidState;
  Thread closer = spawn("closer", kDefaultPriority, CpuMask::all(), [&] { shut = pool.shutdown(true); });
  KCHECK(settle([&] { return pool.closed(); }));
  KCHECK(wait_blocked_sleeping(closer));  // joining: the blocker still runs
  KCHECK_STATUS(pool.submit([] { return 0; }).status(), Status::kClosed);
  for (auto& f : queued) KCHECK(!f.ready());
  gate.set();
  KJOIN(closer);
  KCHECK_STATUS(shut, Status::kOk);
  Result<int> b = blocker.get();
  KCHECK(b.ok() && *b == -1);
  for (int i = 0; i < 5; ++i) {
    KCHECK(queued[i].ready());
    Result<int> r = queued[i].get();
    KREQUIRE(r.ok());
    KCHECK_EQ(*r, i * i);
  }
  KCHECK_EQ(order.size(), 5u);
  for (unsigned i = 0; i < order.size(); ++i) KCHECK_EQ(order[i], static_cast<int>(i));
  KCHECK_EQ(pool.queued(), std::size_t{0});
}

// shutdown(false): queued jobs are dropped at once (kInterrupted, their
// arguments destroyed, never run); the running ones finish; the call
// returns only after them.
KTEST(pool_shutdown_nowait_interrupts_queued_jobs, 1) {
  Token::live = 0;
  Event gate("gate");
  std::atomic<int> started{0}, ran_queued{0};
  {
    ThreadPool pool(2, {.name = "dropper"});
    Future<int> running[2];
    for (int i = 0; i < 2; ++i) running[i] = pool.submit(gated_job(started, gate, 100 + i));
    KREQUIRE(started_n(started, 2));
    FutureList<int> queued(6);
    for (std::size_t i = 0; i < queued.size(); ++i) {
      queued[i] = pool.submit(token_job(ran_queued), Token(static_cast<int>(i)));
    }
    KCHECK_EQ(Token::live.load(), 6);
    Status shut = Status::kInvalidState;
    Thread closer = spawn("closer", kDefaultPriority, CpuMask::all(), [&] { shut = pool.shutdown(false); });
    // Dropped ones complete before the running ones end.
    KCHECK_STATUS(queued.wait_for(10s), Status::kOk);
    KCHECK_EQ(Token::live.load(), 0);
    for (auto& f : queued) KCHECK_STATUS(f.get().status(), Status::kInterrupted);
    KCHECK(!running[0].ready() && !running[1].ready());
    KCHECK(wait_blocked_sleeping(closer));
    KCHECK_STATUS(pool.try_submit([] { return 0; }).status(), Status::kClosed);
    gate.set();
    KJOIN(closer);
    KCHECK_STATUS(shut, Status::kOk);
    for (int i = 0; i < 2; ++i) {
      KCHECK(running[i].ready());  // shutdown returned after them
      Result<int> r = running[i].get();
      KCHECK(r.ok() && *r == 100 + i);
    }
    KCHECK_EQ(ran_queued.load(), 0);
    KCHECK_STATUS(pool.shutdown(true), Status::kOk);  // idempotent
  }
  KCHECK_EQ(Token::live.load(), 0);
}

// After shutdown every way of submitting says kClosed; shutdown again is
// kOk; the pool was built fine (status() kOk) but is closed.
KTEST(pool_submit_after_shutdown_is_closed, 1) {
  ThreadPool pool(2, {.name = "closed"});
  Future<int> before = pool.submit([] { return 5; });
  KCHECK_STATUS(pool.shutdown(), Status::kOk);
  KCHECK(before.ready());
  Result<int> r = before.get();
  KCHECK(r.ok() && *r == 5);
  KCHECK(pool.closed());
  KCHECK_STATUS(pool.status(), Status::kOk);
  KCHECK_STATUS(pool.submit([] { return 1; }).status(), Status::kClosed);
  KCHECK_STATUS(pool.try_submit([] { return 1; }).status(), Status::kClosed);
  KCHECK_STATUS(pool.submit_for(1s, [] { return 1; }).status(), Status::kClosed);
  int xs[3] = {1, 2, 3};
  FutureList<int> m = pool.map([](int x) { return x; }, xs);
  KCHECK_STATUS(m.status(), Status::kOk);
  KCHECK_EQ(m.size(), std::size_t{3});
  for (auto& f : m) KCHECK_STATUS(f.get().status(), Status::kClosed);
  KCHECK_STATUS(pool.shutdown(false), Status::kOk);
  KCHECK_STATUS(pool.shutdown(true), Status::kOk);
}

// A pool that could not be built says why, and so does every submit.
KTEST(pool_construction_failures, 1) {
  ThreadPool none(0, {.name = "none"});
  KCHECK_STATUS(none.status(), Status::kInvalidArgument);
  KCHECK_EQ(none.size(), 0u);
  KCHECK(none.closed());
  KCHECK_STATUS(none.submit([] { return 1; }).status(), Status::kInvalidArgument);
  KCHECK_STATUS(none.shutdown(), Status::kOk);

  ThreadPool no_queue(2, {.name = "no queue", .queue_capacity = 0});
  KCHECK_STATUS(no_queue.status(), Status::kInvalidArgument);
  KCHECK_STATUS(no_queue.try_submit([] {}).status(), Status::kInvalidArgument);

  // A worker option out of range: the first thread fails, nothing runs.
  ThreadPool bad_priority(3, {.name = "bad prio", .priority = kMaxPriority + 1});
  KCHECK_STATUS(bad_priority.status(), Status::kInvalidArgument);
  KCHECK_EQ(bad_priority.size(), 0u);
  KCHECK_STATUS(bad_priority.submit([] { return 1; }).status(), Status::kInvalidArgument);
  ThreadPool bad_stack(2, {.name = "bad stack", .stack_size = kMaxStackSize + 1});
  KCHECK_STATUS(bad_stack.status(), Status::kInvalidArgument);

  // Options reach the workers.
  ThreadPool tuned(2, {.name = "tuned", .priority = 12});
  KREQUIRE(tuned.status() == Status::kOk);
  Future<int> prio = tuned.submit([] { return this_thread::priority(); });
  Future<bool> named = tuned.submit([] { return starts_with(this_thread::name(), "tuned-"); });
  Result<int> p = prio.get();
  Result<bool> n = named.get();
  KCHECK(p.ok() && *p == 12);
  KCHECK(n.ok() && *n);
}

// wait_for / wait_until time out while the job runs; ready() tracks it;
// get() consumes the future; invalid futures report their status.
KTEST(pool_future_waits_and_validity, 2) {
  Event gate("gate");
  ThreadPool pool(1, {.name = "waits"});
  Future<int> f = pool.submit([&] {
    gate.wait();
    return 9;
  });
  KCHECK(f.valid());
  KCHECK_STATUS(f.status(), Status::kOk);
  KCHECK(!f.ready());
  TimePoint t0 = Clock::now();
  KCHECK_STATUS(f.wait_for(20ms), Status::kTimedOut);
  KCHECK_WAITED(Clock::now() - t0, 20ms, "Future::wait_for");
  t0 = Clock::now();
  KCHECK_STATUS(f.wait_until(Clock::now() + 10ms), Status::kTimedOut);
  KCHECK_WAITED(Clock::now() - t0, 10ms, "Future::wait_until");
  KCHECK_STATUS(f.wait_until(Clock::now() - 1ms), Status::kTimedOut);
  KCHECK(!f.ready());

  // A waiter on another thread is woken by the completion.
  std::atomic<int> woke{0};
  Thread w = spawn("waiter", kDefaultPriority, CpuMask::all(), [&] {
    KCHECK_STATUS(f.wait(), Status::kOk);
    woke = 1;
  });
  KCHECK(wait_blocked_sleeping(w));
  KCHECK_EQ(woke.load(), 0);
  gate.set();
  KJOIN(w);
  KCHECK_EQ(woke.load(), 1);
  KCHECK(f.ready());
  KCHECK_STATUS(f.wait_for(0ns), Status::kOk);

  Future<int> moved = std::move(f);
  KCHECK(!f.valid());  // NOLINT(bugprone-use-after-move): checking the moved-from state
  KCHECK_STATUS(f.status(), Status::kInvalidState);
  KCHECK(!f.ready());
  KCHECK_STATUS(f.wait(), Status::kInvalidState);
  Result<int> r = moved.get();
  KCHECK(r.ok() && *r == 9);
  KCHECK(!moved.valid());
  KCHECK_STATUS(moved.get().status(), Status::kInvalidState);

  Future<void> empty;
  KCHECK(!empty.valid());
  KCHECK_STATUS(empty.get(), Status::kInvalidState);
  Future<long> why(Status::kNoMemory);
  KCHECK_STATUS(why.wait_for(1s), Status::kNoMemory);
  KCHECK_STATUS(why.get().status(), Status::kNoMemory);
}

// Result<U> and Status returned by jobs reach get(); values and arguments
// may be move-only; member functions work as with std::async.
KTEST(pool_result_and_status_propagation, 1) {
  Token::live = 0;
  struct Counter {
    int base;
    int add(int x) const { return base + x; }
  };
  Counter counter{40};
  {
    ThreadPool pool(2, {.name = "results"});
    Future<void> ok = pool.submit([] { return Status::kOk; });
    Future<void> not_found = pool.submit([] { return Status::kNotFound; });
    Future<void> plain = pool.submit([] {});
    Future<int> good = pool.submit([](int x) -> Result<int> { return x + 1; }, 41);
    Future<int> bad = pool.submit([](int) -> Result<int> { return Status::kOverflow; }, 41);
    Future<Token> token = pool.submit([](Token t) { return Token(t.v * 2); }, Token(21));
    Future<Token> token_result = pool.submit([]() -> Result<Token> { return Token(5); });
    Future<int> member = pool.submit(&Counter::add, &counter, 2);
    KCHECK_STATUS(ok.get(), Status::kOk);
    KCHECK_STATUS(not_found.get(), Status::kNotFound);
    KCHECK_STATUS(plain.get(), Status::kOk);
    Result<int> g = good.get();
    KCHECK(g.ok() && *g == 42);
    KCHECK_STATUS(bad.get().status(), Status::kOverflow);
    Result<Token> t = token.get();
    KREQUIRE(t.ok());
    KCHECK_EQ(t->v, 42);
    Result<Token> tr = token_result.get();
    KREQUIRE(tr.ok());
    KCHECK_EQ(tr->v, 5);
    Result<int> m = member.get();
    KCHECK(m.ok() && *m == 42);
    // A future dropped before its job finished: the job still runs, its
    // result is destroyed with the state.
    Event gate("gate");
    {
      Future<Token> dropped = pool.submit([&] {
        gate.wait();
        return Token(1);
      });
    }
    gate.set();
    KCHECK_STATUS(pool.shutdown(), Status::kOk);
  }
  KCHECK_EQ(Token::live.load(), 0);
}

namespace {

// Jobs 0..5 each wait for their own event and log when they finish; main
// releases them in `order`, one at a time, each only once the previous
// one's future is ready, so the finishing order is known.
struct OrderedJobs {
  static constexpr int kN = 6;
  static constexpr int kOrder[kN] = {3, 0, 5, 1, 4, 2};
  Event go[kN];
  EventLog<kN> finished;
  ThreadPool pool{kN, {.name = "ordered"}};  // one worker per job: all start at once
  Future<int> futures[kN];

  OrderedJobs() {
    for (int i = 0; i < kN; ++i) {
      futures[i] = pool.submit([this, i] {
        go[i].wait();
        finished.add(i);
        return i * 11;
      });
    }
  }
  // Lets every job end (the pool's destructor waits for them).
  ~OrderedJobs() {
    for (auto& e : go) e.set();
  }
  // Lets the k-th job of the order finish.
  void open(int k) { go[kOrder[k]].set(); }
  // Lets the k-th job finish and waits until its future is ready.
  bool release(int k) {
    open(k);
    return ready_within(futures[kOrder[k]]);
  }
};

}  // namespace

// as_completed yields exactly the finishing order: futures completing
// while it watches, and ones that had completed before it was made (in
// their completion order, not index order).
KTEST(pool_as_completed_order, 1) {
  {
    OrderedJobs jobs;
    auto ac = as_completed(jobs.futures);
    KREQUIRE(ac.status() == Status::kOk);
    KCHECK_EQ(ac.size(), std::size_t{OrderedJobs::kN});
    for (int k = 0; k < OrderedJobs::kN; ++k) KCHECK(jobs.release(k));
    int k = 0;
    for (Future<int>& f : ac) {
      KREQUIRE(k < OrderedJobs::kN);
      std::size_t i = ac.index_of(f);
      KCHECK_EQ(static_cast<int>(i), jobs.finished[static_cast<unsigned>(k)]);
      KCHECK_EQ(static_cast<int>(i), OrderedJobs::kOrder[k]);
      KCHECK(f.ready());
      Result<int> r = f.get();
      KCHECK(r.ok() && *r == static_cast<int>(i) * 11);
      ++k;
    }
    KCHECK_EQ(k, OrderedJobs::kN);
    KCHECK_STATUS(ac.next().status(), Status::kClosed);
  }
  // Half done before as_completed is made (3, 0, 5: not index order).
  {
    OrderedJobs jobs;
    for (int k = 0; k < 3; ++k) KCHECK(jobs.release(k));
    AsCompleted<int> ac(jobs.futures);
    KREQUIRE(ac.status() == Status::kOk);
    for (int k = 0; k < 3; ++k) {
      Result<std::size_t> i = ac.next_for(1s);
      KREQUIRE(i.ok());
      KCHECK_EQ(static_cast<int>(*i), OrderedJobs::kOrder[k]);
    }
    KCHECK_STATUS(ac.next_for(10ms).status(), Status::kTimedOut);  // the rest still wait
    for (int k = 3; k < OrderedJobs::kN; ++k) KCHECK(jobs.release(k));
    for (int k = 3; k < OrderedJobs::kN; ++k) {
      Result<std::size_t> i = ac.next_for(10s);
      KREQUIRE(i.ok());
      KCHECK_EQ(static_cast<int>(*i), OrderedJobs::kOrder[k]);
      KCHECK_EQ(static_cast<int>(*i), jobs.finished[static_cast<unsigned>(k)]);
    }
    KCHECK_EQ(ac.remaining(), std::size_t{0});
  }
  // Invalid futures come first, in index order; an as_completed that
  // is dropped early unregisters (a second one can watch the same futures).
  {
    OrderedJobs jobs;
    Future<int> mixed[4];
    mixed[0] = std::move(jobs.futures[1]);
    mixed[1] = Future<int>(Status::kWouldBlock);
    mixed[2] = std::move(jobs.futures[3]);
    {
      AsCompleted<int> first(mixed);
      KREQUIRE(first.status() == Status::kOk);
      AsCompleted<int> second(mixed);  // the same futures, watched twice at once
      KCHECK_STATUS(second.status(), Status::kInvalidState);
      KCHECK_STATUS(second.next().status(), Status::kInvalidState);
      Result<std::size_t> a = first.next_for(1s), b = first.next_for(1s);
      KCHECK(a.ok() && *a == 1);
      KCHECK(b.ok() && *b == 3);
    }
    jobs.go[3].set();
    KCHECK(ready_within(mixed[2]));
    jobs.go[1].set();
    KCHECK(ready_within(mixed[0]));
    AsCompleted<int> again(mixed);
    KREQUIRE(again.status() == Status::kOk);
    std::size_t want[4] = {1, 3, 2, 0};
    for (std::size_t w : want) {
      Result<std::size_t> i = again.next_for(1s);
      KCHECK(i.ok() && *i == w);
    }
    for (int i : {0, 2, 4, 5}) jobs.go[i].set();
  }
}

// A consumer iterating as_completed blocks until the next job finishes
// and sees each one as it does. (Main leaves the futures to the consumer
// and waits for its progress instead.)
KTEST(pool_as_completed_blocks_for_next, 2) {
  OrderedJobs jobs;
  std::atomic<int> seen{0};
  int got[OrderedJobs::kN] = {-1, -1, -1, -1, -1, -1};
  Thread consumer = spawn("consumer", kDefaultPriority, CpuMask::all(), [&] {
    for (Future<int>& f : as_completed(jobs.futures)) {
      Result<int> r = f.get();
      int n = seen.load();
      if (n < OrderedJobs::kN) got[n] = r.ok() ? *r / 11 : -2;
      seen.store(n + 1);
    }
  });
  for (int k = 0; k < OrderedJobs::kN; ++k) {
    KCHECK(wait_blocked_sleeping(consumer));
    KCHECK_EQ(seen.load(), k);
    jobs.open(k);
    KCHECK(settle([&] { return seen.load() == k + 1; }, 10s));
  }
  KJOIN(consumer);
  for (int k = 0; k < OrderedJobs::kN; ++k) KCHECK_EQ(got[k], OrderedJobs::kOrder[k]);
}

namespace {
struct Squares {
  int items[5] = {1, 2, 3, 4, 5};
  const int* begin() const { return items; }
  const int* end() const { return items + 5; }
};
struct NoItems {
  const int* begin() const { return nullptr; }
  const int* end() const { return nullptr; }
};
}  // namespace

// map: one future per element, in element order; works with containers
// and arrays, with more elements than the queue holds, and with
// as_completed.
KTEST(pool_map, 1) {
  ThreadPool pool(3, {.name = "mapper", .queue_capacity = 4});
  Squares sq;
  FutureList<int> a = pool.map([](int x) { return x * x; }, sq);
  KREQUIRE(a.status() == Status::kOk);
  KCHECK_EQ(a.size(), std::size_t{5});
  for (std::size_t i = 0; i < a.size(); ++i) {
    Result<int> r = a[i].get();
    KCHECK(r.ok() && *r == static_cast<int>((i + 1) * (i + 1)));
  }
  long xs[40];
  for (int i = 0; i < 40; ++i) xs[i] = i;
  FutureList<long> b = pool.map([](long x) -> Result<long> {
    if (x % 7 == 3) return Status::kNotFound;
    return x * 3;
  }, xs);
  KREQUIRE(b.status() == Status::kOk);
  KCHECK_EQ(b.size(), std::size_t{40});
  int yielded = 0;
  bool seen[40] = {};
  for (Future<long>& f : as_completed(b)) {
    std::size_t i = static_cast<std::size_t>(&f - b.begin());
    KREQUIRE(i < 40);
    KCHECK(!seen[i]);
    seen[i] = true;
    Result<long> r = f.get();
    if (i % 7 == 3) {
      KCHECK_STATUS(r.status(), Status::kNotFound);
    } else {
      KCHECK(r.ok() && *r == static_cast<long>(i) * 3);
    }
    ++yielded;
  }
  KCHECK_EQ(yielded, 40);
  FutureList<int> none = pool.map([](int x) { return x; }, NoItems());
  KCHECK_STATUS(none.status(), Status::kOk);
  KCHECK_EQ(none.size(), std::size_t{0});
}

// Destroying a pool with queued work runs it all first (the destructor
// is shutdown(true)); futures outlive the pool.
KTEST(pool_destroyed_with_queued_work, 1) {
  Token::live = 0;
  Event gate("gate");
  std::atomic<int> started{0}, ran{0};
  FutureList<int> futures(10);
  KREQUIRE(futures.status() == Status::kOk);
  Thread opener;
  {
    ThreadPool pool(1, {.name = "doomed"});
    futures[0] = pool.submit(gated_job(started, gate, 0));
    KREQUIRE(started_n(started, 1));
    for (std::size_t i = 1; i < futures.size(); ++i) {
      futures[i] = pool.submit(token_job(ran), Token(static_cast<int>(i)));
    }
    // Unreferenced results too: the jobs run, their futures are gone.
    for (int i = 0; i < 3; ++i) (void)pool.submit([&ran](Token t) { ran.fetch_add(t.v); }, Token(100));
    ThreadId main_id = this_thread::id();
    opener = spawn("opener", kDefaultPriority, CpuMask::all(), [&gate, main_id] {
      settle([main_id] { return is_blocked(main_id); });  // main is inside ~ThreadPool
      gate.set();
    });
  }
  KJOIN(opener);
  KCHECK_EQ(ran.load(), 9 + 300);
  for (std::size_t i = 0; i < futures.size(); ++i) {
    KCHECK(futures[i].ready());
    Result<int> r = futures[i].get();
    KCHECK(r.ok() && *r == static_cast<int>(i));
  }
  KCHECK_EQ(Token::live.load(), 0);
}

// shutdown from a job of the pool itself is refused (it would join its
// own thread); the pool keeps working.
KTEST(pool_shutdown_from_own_worker_is_refused, 1) {
  ThreadPool pool(2, {.name = "selfish"});
  Future<void> f = pool.submit([&pool] { return pool.shutdown(false); });
  KCHECK_STATUS(f.get(), Status::kDeadlock);
  KCHECK(!pool.closed());
  Result<int> r = pool.submit([] { return 3; }).get();
  KCHECK(r.ok() && *r == 3);
}

// Several submitters (blocking, try and timed) race a shutdown, over a
// small queue: every job runs at most once; every valid future completes,
// with its value or (shutdown(false)) kInterrupted; failed submits say
// kClosed, kWouldBlock or kTimedOut; nothing leaks. Two shutdowns race
// each other too.
KTEST(pool_stress_submitters_vs_shutdown, 2) {
  Token::live = 0;
  const int per_thread = static_cast<int>(scaled(1500));
  constexpr int kSubmitters = 4;
  for (int round = 0; round < 4; ++round) {
    const bool wait = round % 2 == 0;
    std::atomic<int>* runs = new std::atomic<int>[kSubmitters * per_thread];
    for (int i = 0; i < kSubmitters * per_thread; ++i) runs[i] = 0;
    std::atomic<long> done_ok{0}, interrupted{0}, refused{0}, bad{0};
    std::atomic<int> submitted{0};
    {
      ThreadPool pool(3, {.name = "stress", .queue_capacity = 8});
      KREQUIRE(pool.status() == Status::kOk);
      Thread subs[kSubmitters];
      for (int s = 0; s < kSubmitters; ++s) {
        subs[s] = spawn("submitter", kDefaultPriority, CpuMask::all(), [&, s] {
          FutureList<int> mine(static_cast<std::size_t>(per_thread));
          if (mine.status() != Status::kOk) {
            bad.fetch_add(1);
            return;
          }
          for (int i = 0; i < per_thread; ++i) {
            int id = s * per_thread + i;
            auto job = [runs, id](Token t) {
              runs[id].fetch_add(1);
              return t.v;
            };
            Future<int>& f = mine[static_cast<std::size_t>(i)];
            switch (i % 3) {
              case 0: f = pool.submit(job, Token(id)); break;
              case 1: f = pool.try_submit(job, Token(id)); break;
              default: f = pool.submit_for(50us, job, Token(id)); break;
            }
            submitted.fetch_add(1);
          }
          for (int i = 0; i < per_thread; ++i) {
            int id = s * per_thread + i;
            Future<int>& f = mine[static_cast<std::size_t>(i)];
            if (!f.valid()) {
              Status st = f.status();
              if (st == Status::kClosed || st == Status::kWouldBlock || st == Status::kTimedOut) {
                refused.fetch_add(1);
              } else {
                bad.fetch_add(1);
              }
              continue;
            }
            if (f.wait_for(20s) != Status::kOk) {
              bad.fetch_add(1);
              continue;
            }
            Result<int> r = f.get();
            if (r.ok() && *r == id && runs[id].load() == 1) {
              done_ok.fetch_add(1);
            } else if (!r.ok() && r.status() == Status::kInterrupted && !wait && runs[id].load() == 0) {
              interrupted.fetch_add(1);
            } else {
              bad.fetch_add(1);
            }
          }
        });
      }
      // Shut down somewhere in the middle of the submissions (a different
      // point each round).
      const int shut_at = kSubmitters * per_thread * (round + 1) / 6;
      settle([&] { return submitted.load() >= shut_at; }, 20s);
      Status other = Status::kInvalidState;
      Thread second = spawn("second shutdown", kDefaultPriority, CpuMask::all(), [&] { other = pool.shutdown(true); });
      KCHECK_STATUS(pool.shutdown(wait), Status::kOk);
      KJOIN(second);
      KCHECK_STATUS(other, Status::kOk);
      for (auto& t : subs) KJOIN(t);
      KCHECK_EQ(pool.running(), 0u);
      KCHECK_EQ(pool.queued(), std::size_t{0});
    }
    KCHECK_EQ(bad.load(), 0L);
    KCHECK_EQ(done_ok.load() + interrupted.load() + refused.load(), static_cast<long>(kSubmitters) * per_thread);
    KCHECK(done_ok.load() > 0);
    KCHECK(refused.load() > 0);  // the shutdown came before the end
    int twice = 0;
    for (int i = 0; i < kSubmitters * per_thread; ++i) twice += runs[i].load() > 1;
    KCHECK_EQ(twice, 0);
    delete[] runs;
    KCHECK_EQ(Token::live.load(), 0);
  }
}

// as_completed under load: many jobs on several CPUs completing while the
// consumer iterates; each future is yielded exactly once, ready, with its
// result.
KTEST(pool_stress_as_completed, 2) {
  const std::size_t n = static_cast<std::size_t>(scaled(2000));
  Event go("go");
  ThreadPool pool(3, {.name = "flood", .queue_capacity = n});
  FutureList<std::size_t> list(n);
  KREQUIRE(list.status() == Status::kOk);
  for (std::size_t i = 0; i < n; ++i) {
    list[i] = pool.submit(
        [&go](std::size_t x) {
          go.wait();
          return x ^ 0x5a5a;
        },
        i);
  }
  auto ac = as_completed(list);
  KREQUIRE(ac.status() == Status::kOk);
  go.set();  // completions now race the iteration
  bool* seen = new bool[n]();
  std::size_t count = 0;
  for (Future<std::size_t>& f : ac) {
    std::size_t i = ac.index_of(f);
    if (i >= n || seen[i] || !f.ready()) {
      KFAIL("yielded index %zu (seen before or not ready)", i);
      break;
    }
    seen[i] = true;
    Result<std::size_t> r = f.get();
    if (!r.ok() || *r != (i ^ 0x5a5a)) KFAIL("future %zu: wrong result", i);
    ++count;
  }
  KCHECK_EQ(count, n);
  delete[] seen;
}
