// spindle_pool_bench: a Spindle ThreadPool against std::async
// (std::launch::async), side by side in one Google Benchmark binary.
//
//   1. Round trip: submit one small job and get() its result, again and
//      again (one op = submit + run + get). Spindle: a pool of one worker,
//      on the caller's vCPU (cpus:1) or pinned to the other vCPU (cpus:2,
//      the caller pinned to vCPU 0); std::async: a new host thread per job,
//      which is what it does on Linux (libstdc++ has no pool).
//   2. Throughput: submit a batch of 64 jobs, then get() all 64 (one op =
//      one batch; items_per_second and the summary count jobs). Spindle: one worker per vCPU (1 or 2), queue capacity 64;
//      std::async: 64 launches, then 64 gets.
//
// Every Spindle benchmark boots its own kernel with spindle::hosted::run()
// on the vCPUs it needs (vCPU i is pinned to host core i) from the Google
// Benchmark thread; the timed loop runs in the Spindle main thread
// (priority 16), the pool is built before it and shut down after it. The
// std::async runs use the benchmark thread, unpinned, with every host core.
//
// Timed benchmarks run 5 repetitions; the summary at the end compares the
// medians (real time) with the target: a Spindle round trip at least 10x
// faster than std::async's. It goes to stdout, or to stderr with
// --benchmark_format=json|csv.
// Usage: spindle_pool_bench [--benchmark_filter=REGEX] [other Google Benchmark flags]
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <map>
#include <string>
#include <thread>

#include <spindle/hosted.h>
#include <spindle/spindle.h>

#include <benchmark/benchmark.h>

#include "bench_report.h"

namespace {

namespace sp = spindle;
using spindle_bench::kMinTime;
using spindle_bench::kRepetitions;
using spindle_bench::Result;
using spindle_bench::timed;
using spindle_bench::g_load_at_start;
using spindle_bench::rss_bytes;
using spindle_bench::steady_ns;

constexpr int kBatch = 64;        // jobs per throughput op

// The job: small, so the benchmarks measure the pool, not the work.
long step(long x) { return x * 3 + 1; }

struct Args {
  benchmark::State* state;
  unsigned cpus;
};

int boot(unsigned cpus, int (*fn)(void*), void* arg) {
  sp::hosted::Options o;
  o.cpus = cpus;
  return sp::hosted::run(o, fn, arg);
}

// Restricts the calling Spindle thread to vCPU `cpu`; false if it did not
// end up there.
bool pin_spindle_self(unsigned cpu) {
  if (sp::this_thread::set_affinity(sp::CpuMask::only(cpu)) != sp::Status::kOk) return false;
  for (int i = 0; i < 100 && sp::this_thread::cpu() != cpu; ++i) sp::this_thread::yield();
  return sp::this_thread::cpu() == cpu;
}

// ======================================================================
// 1. Round trip
// ======================================================================

int spindle_round_trip_main(void* p) {
  auto& a = *static_cast<Args*>(p);
  auto& state = *a.state;
  sp::ThreadPoolOptions o;
  o.name = "bench";
  if (a.cpus > 1) {
    if (!pin_spindle_self(0)) {
      state.SkipWithError("cannot pin main to vCPU 0");
      return 1;
    }
    o.affinity = sp::CpuMask::only(1);
  }
  sp::ThreadPool pool(1, o);
  if (pool.status() != sp::Status::kOk) {
    state.SkipWithError(sp::to_string(pool.status()));
    return 1;
  }
  long x = 0;
  for (auto _ : state) {
    sp::Result<long> r = pool.submit(step, x).get();
    if (!r.ok()) {
      state.SkipWithError(sp::to_string(r.status()));
      break;
    }
    x = *r;
  }
  benchmark::DoNotOptimize(x);
  return 0;
}

// range(0) = vCPUs.
void BM_SpindlePoolRoundTrip(benchmark::State& state) {
  Args a{&state, static_cast<unsigned>(state.range(0))};
  boot(a.cpus, spindle_round_trip_main, &a);
}

void BM_StdAsyncRoundTrip(benchmark::State& state) {
  long x = 0;
  for (auto _ : state) x = std::async(std::launch::async, step, x).get();
  benchmark::DoNotOptimize(x);
}

// ======================================================================
// 2. Throughput: a batch of submits, then the gets
// ======================================================================

int spindle_batch_main(void* p) {
  auto& a = *static_cast<Args*>(p);
  auto& state = *a.state;
  sp::ThreadPoolOptions o;
  o.name = "bench";
  o.queue_capacity = kBatch;
  sp::ThreadPool pool(a.cpus, o);
  sp::FutureList<long> futures(kBatch);
  if (pool.status() != sp::Status::kOk || futures.status() != sp::Status::kOk) {
    state.SkipWithError("cannot build the pool");
    return 1;
  }
  long sum = 0;
  sp::Status failed = sp::Status::kOk;
  for (auto _ : state) {
    for (long i = 0; i < kBatch; ++i) futures[static_cast<std::size_t>(i)] = pool.submit(step, i);
    for (auto& f : futures) {
      sp::Result<long> r = f.get();
      if (!r.ok()) {
        failed = r.status();
      } else {
        sum += *r;
      }
    }
    if (failed != sp::Status::kOk) {
      state.SkipWithError(sp::to_string(failed));
      break;
    }
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations() * kBatch);
  return 0;
}

void BM_SpindlePoolBatch(benchmark::State& state) {
  Args a{&state, static_cast<unsigned>(state.range(0))};
  boot(a.cpus, spindle_batch_main, &a);
}

void BM_StdAsyncBatch(benchmark::State& state) {
  std::future<long> futures[kBatch];
  long sum = 0;
  for (auto _ : state) {
    for (long i = 0; i < kBatch; ++i) futures[i] = std::async(std::launch::async, step, i);
    for (auto& f : futures) sum += f.get();
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations() * kBatch);
}

// ------------------------------------------------------------ registry ---

void register_benchmarks() {
  timed("BM_SpindlePoolRoundTrip", BM_SpindlePoolRoundTrip)->ArgName("cpus")->Arg(1)->Arg(2);
  timed("BM_StdAsyncRoundTrip", BM_StdAsyncRoundTrip);
  timed("BM_SpindlePoolBatch", BM_SpindlePoolBatch)->ArgName("cpus")->Arg(1)->Arg(2);
  timed("BM_StdAsyncBatch", BM_StdAsyncBatch);
}

// ------------------------------------------------------------- summary ---

void print_summary(const std::map<std::string, Result>& res, std::FILE* out) {
  auto get = [&](const char* k) -> const Result* {
    auto it = res.find(k);
    return it == res.end() ? nullptr : &it->second;
  };
  std::fprintf(out, "\nTargets (medians of %d repetitions, real time; host load average %.2f at the start)\n",
               kRepetitions, g_load_at_start);
  const Result* sa = get("BM_StdAsyncRoundTrip");
  for (auto [k, what] : {std::pair{"BM_SpindlePoolRoundTrip/cpus:1", "worker on the caller's vCPU"},
                         std::pair{"BM_SpindlePoolRoundTrip/cpus:2", "worker on the other vCPU"}}) {
    const Result* sp_r = get(k);
    if (!sa || !sp_r) continue;
    double ratio = sa->real_ns / sp_r->real_ns;
    std::fprintf(out, "  %-7s submit+get round trip, %s: std::async %.0f ns / Spindle %.0f ns = %.1fx; target >= 10x\n",
                 ratio >= 10 ? "MET" : "NOT MET", what, sa->real_ns, sp_r->real_ns, ratio);
  }
  const Result* sb = get("BM_StdAsyncBatch");
  for (auto [k, what] : {std::pair{"BM_SpindlePoolBatch/cpus:1", "1 worker on 1 vCPU"},
                         std::pair{"BM_SpindlePoolBatch/cpus:2", "2 workers on 2 vCPUs"}}) {
    const Result* sp_b = get(k);
    if (!sb || !sp_b) continue;
    std::fprintf(out,
                 "  (info)  %d submits then %d gets, %s: std::async %.0f ns/job / Spindle %.0f ns/job = %.1fx\n",
                 kBatch, kBatch, what, sb->real_ns / kBatch, sp_b->real_ns / kBatch, sb->real_ns / sp_b->real_ns);
  }
}

}  // namespace

int main(int argc, char** argv) {
  return spindle_bench::run_benchmarks(argc, argv, register_benchmarks, print_summary);
}
