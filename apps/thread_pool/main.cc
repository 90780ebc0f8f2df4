// thread_pool: a spindle::ThreadPool of 3 workers runs 10 jobs; the
// results are printed as they complete, with as_completed().
//
// Pattern: each job sleeps a different time (standing in for I/O), then
// computes something (the longest Collatz chain below a bound). The jobs
// are submitted in index order but finish in the order of their sleeps,
// so as_completed() yields them out of order; a job's Result carries its
// value.
//
// Checks (exit 1 if any fails):
//  - never more than 3 jobs running at once (the pool has 3 workers), and
//    all 3 busy at some point;
//  - every result equals the same computation done by main afterwards,
//    and every job was yielded exactly once;
//  - after shutdown() a submit is refused with kClosed.
#include <atomic>
#include <chrono>

#include <spindle/spindle.h>

namespace {

using namespace std::chrono_literals;

constexpr int kWorkers = 3;
constexpr int kJobs = 10;
constexpr int kSleepMs[kJobs] = {40, 12, 30, 5, 25, 18, 35, 8, 22, 15};

std::atomic<int> g_running{0}, g_max_running{0};

struct Chain {
  long start;   // the number below the bound with the longest chain
  long length;  // its number of steps to 1
};

Chain longest_collatz_below(long bound) {
  Chain best{1, 0};
  for (long n = 1; n < bound; ++n) {
    long steps = 0;
    for (long x = n; x > 1; ++steps) x = (x % 2 == 0) ? x / 2 : 3 * x + 1;
    if (steps > best.length) best = {n, steps};
  }
  return best;
}

long bound_of(int job) { return 2000 + 700L * job; }

spindle::Result<Chain> job(int i) {
  int now = g_running.fetch_add(1) + 1;
  int seen = g_max_running.load();
  while (now > seen && !g_max_running.compare_exchange_weak(seen, now)) {
  }
  spindle::this_thread::sleep_for(std::chrono::milliseconds(kSleepMs[i]));
  Chain c = longest_collatz_below(bound_of(i));
  g_running.fetch_sub(1);
  return c;
}

}  // namespace

int spindle_main(int, char**) {
  spindle::print("thread_pool: %d jobs on a ThreadPool of %d workers, printed as they complete\n", kJobs, kWorkers);
  bool ok = true;
  spindle::ThreadPool pool(kWorkers, {.name = "pool"});
  if (pool.status() != spindle::Status::kOk) {
    spindle::print("FAIL: cannot build the pool: %s\n", spindle::to_string(pool.status()));
    return 1;
  }
  spindle::FutureList<Chain> results(kJobs);
  if (results.status() != spindle::Status::kOk) {
    spindle::print("FAIL: no memory for the futures\n");
    return 1;
  }
  for (int i = 0; i < kJobs; ++i) results[i] = pool.submit(job, i);

  auto start = spindle::Clock::now();
  bool yielded[kJobs] = {};
  int count = 0;
  auto done = spindle::as_completed(results);
  for (spindle::Future<Chain>& f : done) {
    std::size_t i = done.index_of(f);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(spindle::Clock::now() - start).count();
    spindle::Result<Chain> r = f.get();
    if (!r.ok()) {
      spindle::print("FAIL: job %zu: %s\n", i, spindle::to_string(r.status()));
      ok = false;
      continue;
    }
    spindle::print("  %3lld ms  job %zu (slept %2d ms): longest Collatz chain below %ld starts at %ld, %ld steps\n",
                   static_cast<long long>(ms), i, kSleepMs[i], bound_of(static_cast<int>(i)), r->start, r->length);
    Chain want = longest_collatz_below(bound_of(static_cast<int>(i)));
    if (r->start != want.start || r->length != want.length) {
      spindle::print("FAIL: job %zu computed (%ld, %ld), expected (%ld, %ld)\n", i, r->start, r->length, want.start,
                     want.length);
      ok = false;
    }
    if (yielded[i]) {
      spindle::print("FAIL: job %zu yielded twice\n", i);
      ok = false;
    }
    yielded[i] = true;
    ++count;
  }
  if (done.status() != spindle::Status::kOk || count != kJobs) {
    spindle::print("FAIL: as_completed yielded %d of %d jobs (%s)\n", count, kJobs, spindle::to_string(done.status()));
    ok = false;
  }

  spindle::print("  at most %d jobs ran at once\n", g_max_running.load());
  if (g_max_running.load() > kWorkers) {
    spindle::print("FAIL: %d jobs ran at once on %d workers\n", g_max_running.load(), kWorkers);
    ok = false;
  }
  if (g_max_running.load() < kWorkers) {
    spindle::print("FAIL: never saw all %d workers busy\n", kWorkers);
    ok = false;
  }

  spindle::Status shut = pool.shutdown();
  spindle::Status late = pool.submit(job, 0).status();
  spindle::print("  shutdown: %s; a submit afterwards: %s\n", spindle::to_string(shut), spindle::to_string(late));
  if (shut != spindle::Status::kOk || late != spindle::Status::kClosed) {
    spindle::print("FAIL: expected shutdown ok and the late submit closed\n");
    ok = false;
  }
  if (ok) {
    spindle::print("OK: every result right, at most %d at once\n", kWorkers);
  } else {
    spindle::print("FAILED\n");
  }
  return ok ? 0 : 1;
}
