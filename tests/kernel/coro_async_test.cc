// Coroutine combinators (gather, when_any, with_timeout) and generators.
#include "sync_util.h"

using namespace spindle;
using namespace spindle::ktest;
using namespace std::chrono_literals;

namespace {

Task<int> after(Duration d, int v) {
  co_await sleep_for(d);
  co_return v;
}

Task<> nap(Duration d) { co_await sleep_for(d); }

struct OnExit {
  std::atomic<int>* n;
  ~OnExit() { n->fetch_add(1); }
};

Generator<int> count_to(int n) {
  for (int i = 0; i < n; ++i) co_yield i;
}

Generator<long> fibonacci() {
  long a = 0, b = 1;
  for (;;) {
    co_yield a;
    long c = a + b;
    a = b;
    b = c;
  }
}

}  // namespace

KTEST(coro_gather_pack_keeps_order, 1) {
  // The slowest first: results still come back in argument order, and
  // the total is about the longest, not the sum.
  auto main_task = []() -> Task<int> {
    TimePoint t0 = Clock::now();
    auto [a, b, c, d] = co_await gather(after(60ms, 1), after(10ms, 2), after(30ms, 3), nap(20ms));
    Duration took = Clock::now() - t0;
    if (!a.ok() || !b.ok() || !c.ok() || d != Status::kOk) co_return -1;
    if (took < 60ms || took > 60ms + 200ms * kSlowdown) co_return -2;
    co_return a.value() * 100 + b.value() * 10 + c.value();
  };
  Result<int> r = run(main_task());
  KREQUIRE(r.ok());
  KCHECK_EQ(r.value(), 123);
}

KTEST(coro_gather_range_and_many, 1) {
  auto main_task = []() -> Task<long> {
    Task<int> tasks[5] = {after(5ms, 0), after(1ms, 1), after(4ms, 2), after(2ms, 3), after(3ms, 4)};
    Results<int> rs = co_await gather(tasks);
    if (rs.status() != Status::kOk || rs.size() != 5 || !rs.all_ok()) co_return -1;
    for (int i = 0; i < 5; ++i) {
      if (rs[static_cast<std::size_t>(i)].value() != i) co_return -2;
    }
    // Many coroutines sleeping at once.
    const std::size_t n = static_cast<std::size_t>(scaled(20'000));
    Results<int> many = co_await gather_n(n, [](std::size_t i) { return after(20ms, static_cast<int>(i)); });
    if (many.size() != n) co_return -3;
    long sum = 0;
    for (auto& r : many) sum += r.value();
    co_return sum;
  };
  Result<long> r = run(main_task());
  KREQUIRE(r.ok());
  const long n = scaled(20'000);
  KCHECK_EQ(r.value(), n * (n - 1) / 2);
  KCHECK(settle([] { return coroutine_stats().jobs == 0; }));
}

KTEST(coro_gather_reports_child_failure, 1) {
  // A child that cannot be allocated shows as kNoMemory in its slot; the
  // others run.
  auto main_task = []() -> Task<Status> {
    Task<int> ok1 = after(1ms, 7);
    detail::fail_frame_allocations(1);
    Task<int> bad = after(1ms, 8);  // its frame fails
    auto [x, y] = co_await gather(std::move(ok1), std::move(bad));
    if (!x.ok() || x.value() != 7) co_return Status::kInvalidState;
    co_return y.status();
  };
  KCHECK_STATUS(run(main_task()), Status::kNoMemory);
}

KTEST(coro_when_any_first_wins_others_cancelled, 1) {
  std::atomic<int> unwound{0};
  auto slow = [&](int v) -> Task<int> {
    OnExit g{&unwound};
    co_await sleep_for(1h);
    co_return v;
  };
  auto main_task = [&]() -> Task<long> {
    WhenAny<int> w = co_await when_any(slow(1), after(10ms, 2), slow(3));
    if (!w.result.ok()) co_return -1;
    co_return static_cast<long>(w.index) * 10 + w.result.value();
  };
  TimePoint t0 = Clock::now();
  Result<long> r = run(main_task());
  KREQUIRE(r.ok());
  KCHECK_EQ(r.value(), 12L);
  KCHECK_EQ(unwound.load(), 2);  // both losers unwound before when_any returned
  KCHECK(Clock::now() - t0 < 1s);
}

KTEST(coro_with_timeout, 1) {
  std::atomic<int> unwound{0};
  auto slow = [&]() -> Task<int> {
    OnExit g{&unwound};
    co_await sleep_for(1h);
    co_return 1;
  };
  auto main_task = [&]() -> Task<Status> {
    Result<int> fast = co_await with_timeout(after(1ms, 5), 5s);
    if (!fast.ok() || fast.value() != 5) co_return Status::kInvalidState;
    Result<int> late = co_await with_timeout(slow(), 20ms);
    co_return late.status();
  };
  TimePoint t0 = Clock::now();
  KCHECK_STATUS(run(main_task()), Status::kTimedOut);
  KCHECK_EQ(unwound.load(), 1);
  KCHECK(Clock::now() - t0 >= 20ms);
}

KTEST(coro_cancel_gather_cancels_children, 1) {
  std::atomic<int> unwound{0};
  auto slow = [&]() -> Task<int> {
    OnExit g{&unwound};
    co_await sleep_for(1h);
    co_return 1;
  };
  auto parent = [&]() -> Task<> {
    OnExit g{&unwound};
    (void)co_await gather(slow(), slow(), slow());
  };
  JoinHandle<> h = spawn(parent());
  KREQUIRE(settle([] { return coroutine_stats().waiting == 4; }));  // 3 sleeping, the parent joining
  h.cancel();
  KCHECK_STATUS(h.join(), Status::kInterrupted);
  KCHECK(settle([&] { return unwound.load() == 4; }));
  KCHECK(settle([] { return coroutine_stats().jobs == 1; }));  // only h's finished job is left
}

KTEST(coro_generator, 1) {
  int sum = 0, n = 0;
  for (int v : count_to(100)) {
    sum += v;
    ++n;
  }
  KCHECK_EQ(n, 100);
  KCHECK_EQ(sum, 4950);
  Generator<long> fib = fibonacci();
  long last = 0;
  for (int i = 0; i < 50; ++i) last = *fib.next();
  KCHECK_EQ(last, 7778742049L);
  // Destroying an unfinished generator frees its frame.
  std::uint64_t before = coroutine_stats().frame_bytes;
  {
    Generator<long> g = fibonacci();
    (void)g.next();
    KCHECK(coroutine_stats().frame_bytes > before);
  }
  KCHECK_EQ(coroutine_stats().frame_bytes, before);
  // Allocation failure: an empty generator that says so.
  detail::fail_frame_allocations(1);
  Generator<int> none = count_to(3);
  KCHECK_STATUS(none.status(), Status::kNoMemory);
  KCHECK(none.next() == nullptr);
  // A generator used from inside a coroutine.
  auto in_coro = []() -> Task<int> {
    int s = 0;
    for (int v : count_to(10)) {
      s += v;
      co_await yield();
    }
    co_return s;
  };
  KCHECK_EQ(run(in_coro()).value(), 45);
}

KTEST(coro_await_future, 1) {
  // A coroutine awaits thread-pool futures without blocking its executor:
  // while it waits, another coroutine on the same (only) executor runs.
  ThreadPool pool(2, ThreadPoolOptions{.name = "await pool"});
  KREQUIRE(pool.status() == Status::kOk);
  Event release("release");
  std::atomic<int> ticks{0};
  auto ticker = [&]() -> Task<> {
    while (!release.is_set()) {
      ticks.fetch_add(1);
      co_await sleep_for(1ms);
    }
  };
  auto waiter = [&]() -> Task<long> {
    Future<int> slow = pool.submit([&] {
      release.wait();
      return 7;
    });
    Future<void> failing = pool.submit([] { return Status::kOverflow; });
    Result<int> a = co_await slow;
    Status b = co_await failing;
    Result<int> c = co_await pool.submit([] { return 5; });
    Future<int> invalid;
    Result<int> d = co_await invalid;
    if (!a.ok() || b != Status::kOverflow || !c.ok() || d.status() != Status::kInvalidState) co_return -1;
    co_return a.value() * 10 + c.value();
  };
  SpawnOptions pin{.cpu = 0};
  JoinHandle<> t = spawn(ticker(), pin);
  JoinHandle<long> w = spawn(waiter(), pin);
  KCHECK(settle([&] { return ticks.load() >= 20; }));  // the ticker ran while the waiter waited
  release.set();
  KCHECK_EQ(w.join().value(), 75L);
  KCHECK_STATUS(t.join(), Status::kOk);
}
