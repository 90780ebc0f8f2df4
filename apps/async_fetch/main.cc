// async_fetch: asyncio-style concurrency with Spindle coroutines.
//
// Pattern: five "fetches" each wait 1 s (a coroutine sleep stands in for
// network I/O). Awaited one after the other they would take 5 s; gathered,
// they wait together and finish in about 1 s, and gather still returns
// the results in the order the fetches were listed, not the order they
// completed. Then 100000 coroutines sleep at once and are gathered the
// same way: the cost of an idle coroutine is a few hundred bytes, not a
// thread stack.
//
// Checks (exit 1 if any fails):
//  - the five results arrive in argument order, each correct;
//  - the gather took at least 1 s and less than 2 s;
//  - all 100000 sleepers finished, each result in its own slot;
//  - every coroutine's frame and job record is returned afterwards.
#include <chrono>

#include <spindle/spindle.h>

namespace {

using namespace std::chrono_literals;
using spindle::Task;

constexpr int kPages = 5;
constexpr std::size_t kMany = 100'000;

// A fetch whose "latency" is 1 s; later ones complete first (the delay
// shrinks by 10 ms per index), so completion order is the reverse of the
// argument order.
Task<int> fetch(int page) {
  co_await spindle::sleep_for(1s - page * 10ms);
  co_return page * page;
}

Task<int> idle(std::size_t i) {
  co_await spindle::sleep_for(200ms);
  co_return static_cast<int>(i % 1000);
}

long ms_since(spindle::TimePoint t) { return static_cast<long>((spindle::Clock::now() - t) / 1ms); }

Task<bool> main_task() {
  bool ok = true;
  spindle::TimePoint t0 = spindle::Clock::now();
  auto [a, b, c, d, e] = co_await spindle::gather(fetch(0), fetch(1), fetch(2), fetch(3), fetch(4));
  long took = ms_since(t0);
  spindle::Result<int>* results[kPages] = {&a, &b, &c, &d, &e};
  spindle::print("gathered %d fetches of ~1 s each in %ld ms:", kPages, took);
  for (int i = 0; i < kPages; ++i) {
    if (!results[i]->ok()) {
      spindle::print("\nfetch %d failed: %s\n", i, spindle::to_string(results[i]->status()));
      co_return false;
    }
    spindle::print(" %d", results[i]->value());
    if (results[i]->value() != i * i) ok = false;
  }
  spindle::print("\n");
  if (!ok) spindle::print("FAIL: results out of order\n");
  if (took < 1000 - 40 || took >= 2000) {
    spindle::print("FAIL: the gather took %ld ms, not about 1 s\n", took);
    ok = false;
  }

  spindle::CoroutineStats before = spindle::coroutine_stats();
  t0 = spindle::Clock::now();
  auto many = spindle::gather_n(kMany, idle);
  // Sample the memory while they sleep: a helper coroutine looks every
  // millisecond and keeps the peak (all 100000 are parked by then unless
  // spawning them took longer than their sleep).
  std::uint64_t peak_bytes = 0, peak_waiting = 0, peak_jobs = 0;
  auto sampler = [&]() -> Task<> {
    for (int i = 0; i < 150; ++i) {
      spindle::CoroutineStats s = spindle::coroutine_stats();
      if (s.frame_bytes - before.frame_bytes > peak_bytes) {
        peak_bytes = s.frame_bytes - before.frame_bytes;
        peak_waiting = s.waiting;
        peak_jobs = s.jobs;
      }
      if (s.waiting >= kMany) break;
      co_await spindle::sleep_for(1ms);
    }
  };
  auto [rs, sampled] = co_await spindle::gather(std::move(many), sampler());
  took = ms_since(t0);
  if (!rs.ok() || rs.value().status() != spindle::Status::kOk || rs.value().size() != kMany) {
    spindle::print("FAIL: gather of %zu coroutines: %s\n", kMany,
                   spindle::to_string(rs.ok() ? rs.value().status() : rs.status()));
    co_return false;
  }
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < kMany; ++i) {
    if (!rs.value()[i].ok() || rs.value()[i].value() != static_cast<int>(i % 1000)) ++wrong;
  }
  // Bytes per coroutine alive at the peak (its frame and job record; the
  // gather's slots for all of them are counted too).
  spindle::print("gathered %zu coroutines sleeping 200 ms in %ld ms; at the peak %llu were alive (%llu waiting), "
                 "%llu bytes each\n",
                 kMany, took, static_cast<unsigned long long>(peak_jobs), static_cast<unsigned long long>(peak_waiting),
                 static_cast<unsigned long long>(peak_jobs ? peak_bytes / peak_jobs : 0));
  if (wrong) {
    spindle::print("FAIL: %zu results wrong\n", wrong);
    ok = false;
  }
  co_return ok;
}

}  // namespace

int spindle_main(int, char**) {
  spindle::print("async_fetch: coroutines that wait together (gather)\n");
  spindle::Result<bool> r = spindle::run(main_task());
  if (!r.ok()) {
    spindle::print("FAIL: the main coroutine ended with %s\n", spindle::to_string(r.status()));
    return 1;
  }
  // Every frame and job record is back once the handles are gone.
  bool drained = false;
  for (int i = 0; i < 100 && !drained; ++i) {
    drained = spindle::coroutine_stats().jobs == 0;
    if (!drained) spindle::this_thread::sleep_for(1ms);
  }
  if (!drained) {
    spindle::print("FAIL: %llu coroutine jobs left\n", static_cast<unsigned long long>(spindle::coroutine_stats().jobs));
    return 1;
  }
  spindle::print("async_fetch: %s (%u executors)\n", r.value() ? "ok" : "FAILED", spindle::coroutine_stats().executors);
  return r.value() ? 0 : 1;
}
