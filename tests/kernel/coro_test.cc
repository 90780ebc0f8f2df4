// Coroutines: Task, run, spawn, executors, sleep, yield, cancellation,
// frame allocation failure.
#include "sync_util.h"

using namespace spindle;
using namespace spindle::ktest;
using namespace std::chrono_literals;

namespace {

Task<int> answer() { co_return 42; }

Task<int> add_children(int depth) {
  if (depth == 0) co_return 1;
  int a = co_await add_children(depth - 1);
  co_return a + 1;
}

// A chain of n awaits of a trivial child, each finishing synchronously:
// only symmetric transfer keeps the stack flat.
Task<long> sum_chain(long n) {
  long s = 0;
  for (long i = 0; i < n; ++i) s += co_await answer();
  co_return s;
}

// Recursion depth n: each level awaits the next.
Task<long> deep(long n) {
  if (n == 0) co_return 0;
  co_return 1 + co_await deep(n - 1);
}

}  // namespace

KTEST(coro_run_returns_value, 1) {
  Result<int> r = run(answer());
  KREQUIRE(r.ok());
  KCHECK_EQ(r.value(), 42);
  Result<int> n = run(add_children(10));
  KREQUIRE(n.ok());
  KCHECK_EQ(n.value(), 11);
  Status v = run([]() -> Task<> { co_return; }());
  KCHECK_STATUS(v, Status::kOk);
}

KTEST(coro_symmetric_transfer_1e6_awaits, 1) {
  // 1e6 chained awaits of a child that completes at once, then a
  // recursion 100000 frames deep: with symmetric transfer neither grows
  // the executor's 64 KiB stack (without it, both overflow). Sanitizer
  // builds have no tail calls: the loop is bounded by the completion flag
  // (see task.h), the recursion is only checked where transfer is real.
  const long n = 1'000'000;
  Result<long> r = run(sum_chain(n));
  KREQUIRE(r.ok());
  KCHECK_EQ(r.value(), 42 * n);
  const long depth = detail::kSymmetricTransfer ? 100'000 : 100;
  Result<long> d = run(deep(depth));
  KREQUIRE(d.ok());
  KCHECK_EQ(d.value(), depth);
}

KTEST(coro_unawaited_task_frees_frame, 1) {
  CoroutineStats before = coroutine_stats();
  {
    Task<int> t = answer();
    KCHECK(t.valid());
    KCHECK(coroutine_stats().frame_bytes > before.frame_bytes);
  }
  KCHECK_EQ(coroutine_stats().frame_bytes, before.frame_bytes);
  // A spawned and finished job holds its frame until its handle goes.
  {
    JoinHandle<int> h = spawn(answer());
    KCHECK_EQ(h.join().value(), 42);
  }
  KCHECK(settle([&] { return coroutine_stats().jobs == 0; }));
  KCHECK_EQ(coroutine_stats().frame_bytes, before.frame_bytes);
}

KTEST(coro_sleep_overlaps, 1) {
  // Five coroutines sleeping 100 ms each finish in about 100 ms together,
  // even on one vCPU.
  auto sleeper = [](int i) -> Task<int> {
    co_await sleep_for(100ms);
    co_return i;
  };
  TimePoint t0 = Clock::now();
  JoinHandle<int> h[5] = {spawn(sleeper(0)), spawn(sleeper(1)), spawn(sleeper(2)), spawn(sleeper(3)),
                          spawn(sleeper(4))};
  for (int i = 0; i < 5; ++i) KCHECK_EQ(h[i].join().value(), i);
  Duration took = Clock::now() - t0;
  KCHECK(took >= 100ms);
  if (took > 400ms * kSlowdown) KFAIL("5 sleeps of 100 ms took %lld ms", static_cast<long long>(took / 1ms));
}

KTEST(coro_yield_interleaves, 1) {
  // Two jobs pinned to one executor alternate at each yield. They start
  // together (both wait for `go` first), so neither runs ahead alone.
  EventLog<64> log;
  Event go("go");
  auto worker = [&log, &go](int id) -> Task<> {
    co_await go.wait_async();
    for (int i = 0; i < 4; ++i) {
      log.add(id);
      co_await yield();
    }
  };
  SpawnOptions pin{.cpu = 0};
  JoinHandle<> a = spawn(worker(1), pin);
  KREQUIRE(settle([] { return coroutine_stats().waiting == 1; }));
  JoinHandle<> b = spawn(worker(2), pin);
  KREQUIRE(settle([] { return coroutine_stats().waiting == 2; }));
  go.set();
  KCHECK_STATUS(a.join(), Status::kOk);
  KCHECK_STATUS(b.join(), Status::kOk);
  KREQUIRE(log.size() == 8);
  for (unsigned i = 0; i < 8; ++i) KCHECK_EQ(log[i], static_cast<int>(i % 2 + 1));
}

KTEST(coro_many_jobs_all_cpus, 1) {
  // 10000 jobs that each yield a few times; every one ends, on whichever
  // executor stole it.
  const int n = static_cast<int>(scaled(10'000));
  std::atomic<int> sum{0};
  auto job = [&sum](int i) -> Task<> {
    for (int k = 0; k < 3; ++k) co_await yield();
    sum.fetch_add(i, std::memory_order_relaxed);
  };
  auto* handles = new (std::nothrow) JoinHandle<>[static_cast<std::size_t>(n)];
  KREQUIRE(handles);
  for (int i = 0; i < n; ++i) handles[i] = spawn(job(i));
  for (int i = 0; i < n; ++i) KCHECK_STATUS(handles[i].join(), Status::kOk);
  KCHECK_EQ(sum.load(), n * (n - 1) / 2);
  delete[] handles;
}

KTEST(coro_cancel_sleeping, 1) {
  std::atomic<bool> resumed{false};
  std::atomic<int> unwound{0};
  struct OnExit {
    std::atomic<int>* n;
    ~OnExit() { n->fetch_add(1); }
  };
  auto sleeper = [&]() -> Task<int> {
    OnExit guard{&unwound};
    co_await sleep_for(1h);
    resumed = true;
    co_return 1;
  };
  JoinHandle<int> h = spawn(sleeper());
  KCHECK(settle([&] { return unwound.load() == 0 && coroutine_stats().jobs == 1; }));
  this_thread::sleep_for(10ms);
  h.cancel();
  Result<int> r = h.join();
  KCHECK_STATUS(r.status(), Status::kInterrupted);
  KCHECK(!resumed.load());
  KCHECK_EQ(unwound.load(), 1);  // the frame's locals were destroyed
}

KTEST(coro_cancel_before_start_and_after_end, 1) {
  auto forever = []() -> Task<> {
    for (;;) co_await yield();
  };
  JoinHandle<> h = spawn(forever());
  h.cancel();
  KCHECK_STATUS(h.join(), Status::kInterrupted);
  JoinHandle<int> done = spawn(answer());
  KCHECK_EQ(done.join().value(), 42);
  done.cancel();  // no effect once ended
  KCHECK(done.done());
}

KTEST(coro_frame_allocation_failure, 1) {
  // The root frame: run reports kNoMemory without starting anything.
  detail::fail_frame_allocations(1);
  Result<int> r = run(answer());
  KCHECK_STATUS(r.status(), Status::kNoMemory);
  // The job record.
  Task<int> t = answer();
  detail::fail_frame_allocations(1);
  JoinHandle<int> h = spawn(std::move(t));
  KCHECK_STATUS(h.status(), Status::kNoMemory);
  KCHECK_STATUS(h.join().status(), Status::kNoMemory);
  // A child deep in the chain: the job unwinds (destructors run) and ends
  // with kNoMemory.
  std::atomic<int> unwound{0};
  struct OnExit {
    std::atomic<int>* n;
    ~OnExit() { n->fetch_add(1); }
  };
  auto parent = [&]() -> Task<int> {
    OnExit guard{&unwound};
    int a = co_await answer();
    detail::fail_frame_allocations(1);
    int b = co_await answer();  // cannot be allocated
    co_return a + b;
  };
  Result<int> p = run(parent());
  KCHECK_STATUS(p.status(), Status::kNoMemory);
  KCHECK_EQ(unwound.load(), 1);
  KCHECK(settle([] { return coroutine_stats().jobs == 0; }));
}

KTEST(coro_bad_spawn_options, 1) {
  JoinHandle<int> h = spawn(answer(), SpawnOptions{.cpu = 64});
  KCHECK_STATUS(h.status(), Status::kInvalidArgument);
  JoinHandle<int> p = spawn(answer(), SpawnOptions{.priority = 99});
  KCHECK_STATUS(p.status(), Status::kInvalidArgument);
  JoinHandle<int> n = spawn(answer(), SpawnOptions{.cpu = -2});
  KCHECK_STATUS(n.status(), Status::kInvalidArgument);
  KCHECK(settle([] { return coroutine_stats().jobs == 0; }));  // nothing was started, no frame kept
}

KTEST(coro_join_from_coroutine_is_refused, 1) {
  auto inner = []() -> Task<Status> {
    JoinHandle<int> h = spawn(answer());
    Status s = h.wait_until(kForever);  // a thread-style join inside a job
    JoinHandle<int> slow = spawn([]() -> Task<int> {
      co_await sleep_for(std::chrono::milliseconds(20));
      co_return 7;
    }());
    Result<int> j = slow.join();        // refused, and the job's result is not touched
    Result<int> r = co_await h;         // the right way
    Result<int> later = co_await slow;  // still there
    bool ok = s == Status::kDeadlock && j.status() == Status::kDeadlock && r.ok() && r.value() == 42 &&
              later.ok() && later.value() == 7;
    co_return ok ? Status::kOk : Status::kInvalidState;
  };
  KCHECK_STATUS(run(inner()), Status::kOk);
}
