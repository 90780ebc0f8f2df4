// spindle_bench: Spindle threads against the usual user-space and OS anchors,
// side by side in one Google Benchmark binary.
//
//   1. Yield round trip between two threads on one CPU (one op = A->B->A):
//      Spindle this_thread::yield on a 1-vCPU kernel; Boost.Context
//      fiber::resume; Boost.Fiber this_fiber::yield; two std::threads pinned
//      to one core ping-ponging with std::binary_semaphore.
//   2. Thread create + join of an empty body: Spindle (1 and 2 vCPUs, plus
//      two affinity variants on 2 vCPUs), std::thread, boost::fibers::fiber,
//      boost::context::fiber (create + resume to its end).
//   3. Memory: resident bytes per idle (blocked) thread for 10000 Spindle
//      threads and 10000 Boost fibers, and whether 100000 Spindle threads
//      can be alive at once (each Spindle stack is an mmap with a PROT_NONE
//      guard, i.e. two of the process's vm.max_map_count mappings).
//
// Every Spindle benchmark boots its own kernel with spindle::hosted::run()
// from the Google Benchmark thread; the `for (auto _ : state)` loop runs
// inside the Spindle main thread (priority 16), which gets &state as its
// argument. Boot and shutdown are outside the timed loop.
//
// Timed benchmarks run 5 repetitions (only mean/median/stddev/cv are
// displayed; --benchmark_out=FILE gets every run). After the runs a summary
// compares the medians with the project's targets (docs/benchmarks.md); it
// goes to stdout, or to stderr with --benchmark_format=json|csv.
// Usage: spindle_bench [--benchmark_filter=REGEX] [other Google Benchmark flags]
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <semaphore>
#include <string>
#include <thread>
#include <vector>

// Spindle first: Boost.Fiber defines a function-like macro cpu_relax().
#include <spindle/hosted.h>
#include <spindle/spindle.h>

#include <benchmark/benchmark.h>
#include <boost/context/fiber.hpp>
#include <boost/context/stack_traits.hpp>
#include <boost/fiber/all.hpp>

#include "bench_report.h"

namespace {

namespace sp = spindle;
namespace ctx = boost::context;
namespace fibers = boost::fibers;
using spindle_bench::pin_self_to;
using spindle_bench::kMinTime;
using spindle_bench::kRepetitions;
using spindle_bench::Result;
using spindle_bench::timed;
using spindle_bench::g_load_at_start;
using spindle_bench::read_long_file;
using spindle_bench::rss_bytes;
using spindle_bench::steady_ns;

constexpr unsigned kIdleThreads = 10000;
constexpr unsigned kAliveThreads = 100000;
// Time slice of the kernels in the memory benchmarks: long enough that main
// is not rotated behind its new threads while it creates them, so the
// create / park / wake+join phases are timed separately. (Memory does not
// depend on it.)
constexpr std::uint64_t kParkTimeslice = 10'000'000'000;

// ------------------------------------------------------------- helpers ---

// The host core the std::thread ping-pong runs on.
unsigned pingpong_core() { return sp::hosted::host_cpus() > 1 ? 1 : 0; }

int boot(unsigned cpus, int (*fn)(void*), void* arg, std::uint64_t timeslice_ns = 10'000'000) {
  sp::hosted::Options o;
  o.cpus = cpus;
  o.timeslice_ns = timeslice_ns;
  return sp::hosted::run(o, fn, arg);
}

std::uint64_t total_switches() {
  sp::SystemStats s = sp::system_stats();
  std::uint64_t n = 0;
  for (unsigned i = 0; i < s.cpus; ++i) n += s.cpu[i].switches;
  return n;
}

// ======================================================================
// 1. Yield round trip
// ======================================================================

// Spindle, 1 vCPU: main and a peer of the same priority; every yield() of
// main runs the peer once, whose own yield() hands back: main->peer->main.
int spindle_yield_main(void* p) {
  auto& state = *static_cast<benchmark::State*>(p);
  std::atomic<bool> stop{false};
  sp::ThreadOptions o;
  o.name = "yield-peer";
  o.priority = sp::this_thread::priority();
  auto r = sp::Thread::create(o, [&stop] {
    while (!stop.load(std::memory_order_relaxed)) sp::this_thread::yield();
  });
  if (!r.ok()) {
    state.SkipWithError(sp::to_string(r.status()));
    return 1;
  }
  sp::Thread peer = std::move(r).value();
  std::uint64_t sw0 = total_switches();
  for (auto _ : state) sp::this_thread::yield();
  std::uint64_t sw1 = total_switches();
  stop.store(true, std::memory_order_relaxed);
  peer.join();
  // Sanity check: a round trip is two context switches.
  state.counters["switches_per_op"] = static_cast<double>(sw1 - sw0) / static_cast<double>(state.iterations());
  return 0;
}

void BM_SpindleYieldRoundTrip(benchmark::State& state) { boot(1, spindle_yield_main, &state); }

// Boost.Context: the raw stack switch. resume() goes main->fiber, the fiber
// resumes main straight back.
void BM_BoostContextRoundTrip(benchmark::State& state) {
  bool stop = false;
  ctx::fiber f{[&stop](ctx::fiber&& caller) {
    while (!stop) caller = std::move(caller).resume();
    return std::move(caller);
  }};
  for (auto _ : state) f = std::move(f).resume();
  stop = true;
  f = std::move(f).resume();  // runs to its end; f is empty afterwards
}

// Boost.Fiber: the benchmark thread's main fiber and one peer fiber, both
// yielding through the default round-robin scheduler.
void BM_BoostFiberYieldRoundTrip(benchmark::State& state) {
  std::atomic<bool> stop{false};
  fibers::fiber peer([&stop] {
    while (!stop.load(std::memory_order_relaxed)) boost::this_fiber::yield();
  });
  for (auto _ : state) boost::this_fiber::yield();
  stop.store(true, std::memory_order_relaxed);
  peer.join();
}

// Two OS threads pinned to the same core, handing a token back and forth
// with two binary semaphores. The timed loop runs in one of them.
void BM_StdThreadPingPong(benchmark::State& state) {
  std::binary_semaphore to_peer{0};
  std::binary_semaphore to_main{0};
  std::atomic<bool> stop{false};
  unsigned core = pingpong_core();
  std::thread peer([&] {
    pin_self_to(core);
    for (;;) {
      to_peer.acquire();
      if (stop.load(std::memory_order_relaxed)) return;
      to_main.release();
    }
  });
  std::thread driver([&] {
    pin_self_to(core);
    for (auto _ : state) {
      to_peer.release();
      to_main.acquire();
    }
    stop.store(true, std::memory_order_relaxed);
    to_peer.release();
  });
  driver.join();
  peer.join();
}

// ======================================================================
// 2. Create + join
// ======================================================================

enum class Placement {
  kFree,          // default affinity for main and child
  kChildOnMyCpu,  // each child restricted to the vCPU main is on
  kAllOnCpu0,     // main and every child restricted to vCPU 0
};

struct CreateJoinArgs {
  benchmark::State* state;
  Placement placement;
};

int spindle_create_join_main(void* p) {
  auto& a = *static_cast<CreateJoinArgs*>(p);
  auto& state = *a.state;
  sp::ThreadOptions o;
  o.name = "empty";
  o.priority = sp::this_thread::priority();
  if (a.placement == Placement::kAllOnCpu0) {
    o.affinity = sp::CpuMask::only(0);
    if (sp::this_thread::set_affinity(sp::CpuMask::only(0)) != sp::Status::kOk) {
      state.SkipWithError("set_affinity failed");
      return 1;
    }
  }
  std::uint64_t migrations = 0;
  std::uint64_t sw0 = total_switches();
  for (auto _ : state) {
    unsigned cpu = sp::this_thread::cpu();
    if (a.placement == Placement::kChildOnMyCpu) o.affinity = sp::CpuMask::only(cpu);
    auto r = sp::Thread::create(o, [] {});
    if (!r.ok()) {
      state.SkipWithError(sp::to_string(r.status()));
      break;
    }
    sp::Thread t = std::move(r).value();
    t.join();
    migrations += sp::this_thread::cpu() != cpu;
  }
  std::uint64_t sw1 = total_switches();
  double iters = static_cast<double>(state.iterations());
  state.counters["switches_per_op"] = static_cast<double>(sw1 - sw0) / iters;
  // How often main came back from join() on another vCPU than the one it
  // created the child on (always 0 on one vCPU).
  state.counters["main_migrations_per_op"] = static_cast<double>(migrations) / iters;
  return 0;
}

// range(0) = vCPUs. On 2 vCPUs the child starts on the idle vCPU (the N
// most urgent threads run on the N CPUs) and main is woken back on its own:
// two cross-vCPU wake-ups per op.
void BM_SpindleCreateJoin(benchmark::State& state) {
  CreateJoinArgs a{&state, Placement::kFree};
  boot(static_cast<unsigned>(state.range(0)), spindle_create_join_main, &a);
}

// 2 vCPUs, each child restricted to main's vCPU; main itself may move.
void BM_SpindleCreateJoinSameCpu(benchmark::State& state) {
  CreateJoinArgs a{&state, Placement::kChildOnMyCpu};
  boot(static_cast<unsigned>(state.range(0)), spindle_create_join_main, &a);
}

// 2 vCPUs, main and children all restricted to vCPU 0: the SMP kernel's
// cost with no cross-vCPU traffic at all.
void BM_SpindleCreateJoinPinned(benchmark::State& state) {
  CreateJoinArgs a{&state, Placement::kAllOnCpu0};
  boot(static_cast<unsigned>(state.range(0)), spindle_create_join_main, &a);
}

void BM_StdThreadCreateJoin(benchmark::State& state) {
  for (auto _ : state) {
    std::thread t([] {});
    t.join();
  }
}

void BM_BoostFiberCreateJoin(benchmark::State& state) {
  for (auto _ : state) {
    fibers::fiber f([] {});
    f.join();
  }
}

void BM_BoostContextCreateResume(benchmark::State& state) {
  for (auto _ : state) {
    ctx::fiber f{[](ctx::fiber&& caller) { return std::move(caller); }};
    f = std::move(f).resume();  // to the end: the stack is freed here
    benchmark::DoNotOptimize(f);
  }
}

// ======================================================================
// 3. Memory per idle thread; many threads alive at once
// ======================================================================

struct ParkArgs {
  benchmark::State* state;
  unsigned n;
  sp::WaitOrder order;
};

// Creates up to a.n threads that each block in futex_wait on one shared
// word, measures the RSS growth once all are blocked, then wakes and joins
// them. Stops creating at the first failure (e.g. kNoMemory when the host
// runs out of mappings) and reports it instead of crashing.
int spindle_park_main(void* p) {
  auto& a = *static_cast<ParkArgs*>(p);
  auto& state = *a.state;
  // Allocated and touched before the first RSS sample: the handles are not
  // part of a thread's cost.
  std::vector<sp::Thread> threads(a.n);
  std::atomic<std::uint32_t> release{0};
  std::atomic<unsigned> parked{0};
  const sp::WaitOrder order = a.order;
  unsigned created = 0;
  sp::Status failure = sp::Status::kOk;
  long rss0 = 0, rss1 = 0, maps = 0;
  std::uint64_t create_ns = 0, park_ns = 0, wake_join_ns = 0;
  for (auto _ : state) {
    release.store(0);
    parked.store(0);
    created = 0;
    failure = sp::Status::kOk;
    sp::ThreadOptions o;
    o.name = "idle";
    o.priority = sp::this_thread::priority();  // none runs until main yields
    rss0 = rss_bytes();
    std::uint64_t t0 = steady_ns();
    for (unsigned i = 0; i < a.n; ++i) {
      auto r = sp::Thread::create(o, [&release, &parked, order] {
        parked.fetch_add(1, std::memory_order_relaxed);
        while (release.load(std::memory_order_acquire) == 0) sp::futex_wait(&release, 0, sp::kForever, order);
      });
      if (!r.ok()) {
        failure = r.status();
        break;
      }
      threads[i] = std::move(r).value();
      ++created;
    }
    std::uint64_t t1 = steady_ns();
    // Yielding puts main behind every new thread: each runs and blocks.
    while (parked.load(std::memory_order_relaxed) < created) sp::this_thread::yield();
    std::uint64_t t2 = steady_ns();
    // The last one may have been preempted between its count and its wait.
    sp::this_thread::sleep_for(std::chrono::milliseconds(2));
    rss1 = rss_bytes();
    maps = spindle_bench::host_mappings();
    std::uint64_t t3 = steady_ns();
    release.store(1, std::memory_order_release);
    sp::futex_wake(&release, UINT_MAX);
    for (unsigned i = 0; i < created; ++i) threads[i].join();
    std::uint64_t t4 = steady_ns();
    create_ns = t1 - t0;
    park_ns = t2 - t1;
    wake_join_ns = t4 - t3;
  }
  double n = created ? static_cast<double>(created) : 1.0;
  state.counters["threads"] = static_cast<double>(created);
  state.counters["bytes_per_thread"] = static_cast<double>(rss1 - rss0) / n;
  state.counters["create_ns_per_thread"] = static_cast<double>(create_ns) / n;
  state.counters["park_ns_per_thread"] = static_cast<double>(park_ns) / n;
  state.counters["wake_join_ns_per_thread"] = static_cast<double>(wake_join_ns) / n;
  state.counters["stack_size"] = static_cast<double>(sp::kDefaultStackSize);
  state.counters["host_mappings"] = static_cast<double>(maps);  // with all threads parked
  state.counters["alive"] = (created == a.n && failure == sp::Status::kOk) ? 1 : 0;
  state.counters["no_memory"] = failure == sp::Status::kNoMemory ? 1 : 0;
  if (failure != sp::Status::kOk) {
    state.SetLabel(std::string("creation stopped at ") + std::to_string(created) + ": " + sp::to_string(failure));
  }
  return 0;
}

// range(0): 0 = futex_wait in FIFO order (O(1) insert), 1 = priority order
// (the default, what Mutex uses).
void BM_SpindleIdleThreadMemory(benchmark::State& state) {
  ParkArgs a{&state, kIdleThreads, state.range(0) ? sp::WaitOrder::kPriority : sp::WaitOrder::kFifo};
  boot(1, spindle_park_main, &a, kParkTimeslice);
}

void BM_SpindleThreadsAlive(benchmark::State& state) {
  ParkArgs a{&state, kAliveThreads, sp::WaitOrder::kFifo};
  boot(1, spindle_park_main, &a, kParkTimeslice);
  state.counters["max_map_count"] = static_cast<double>(read_long_file("/proc/sys/vm/max_map_count"));
}

void BM_BoostFiberIdleMemory(benchmark::State& state) {
  const unsigned n = kIdleThreads;
  std::vector<fibers::fiber> fs(n);  // touched before the first sample
  fibers::mutex m;
  fibers::condition_variable cv;
  bool go = false;
  unsigned parked = 0;
  long rss0 = 0, rss1 = 0;
  std::uint64_t create_ns = 0, park_ns = 0;
  for (auto _ : state) {
    go = false;
    parked = 0;
    rss0 = rss_bytes();
    std::uint64_t t0 = steady_ns();
    for (unsigned i = 0; i < n; ++i) {
      fs[i] = fibers::fiber([&] {
        std::unique_lock<fibers::mutex> lk(m);
        ++parked;
        cv.wait(lk, [&] { return go; });
      });
    }
    std::uint64_t t1 = steady_ns();
    while (parked < n) boost::this_fiber::yield();
    std::uint64_t t2 = steady_ns();
    rss1 = rss_bytes();
    {
      std::unique_lock<fibers::mutex> lk(m);
      go = true;
    }
    cv.notify_all();
    for (auto& f : fs) f.join();
    create_ns = t1 - t0;
    park_ns = t2 - t1;
  }
  state.counters["threads"] = n;
  state.counters["bytes_per_thread"] = static_cast<double>(rss1 - rss0) / n;
  state.counters["create_ns_per_thread"] = static_cast<double>(create_ns) / n;
  state.counters["park_ns_per_thread"] = static_cast<double>(park_ns) / n;
  state.counters["stack_size"] = static_cast<double>(ctx::stack_traits::default_size());
}

// ------------------------------------------------------------ registry ---

#define TIMED(fn) BENCHMARK(fn)->UseRealTime()->MinTime(kMinTime)->Repetitions(kRepetitions)->DisplayAggregatesOnly()

TIMED(BM_SpindleYieldRoundTrip)->Unit(benchmark::kNanosecond);
TIMED(BM_BoostContextRoundTrip)->Unit(benchmark::kNanosecond);
TIMED(BM_BoostFiberYieldRoundTrip)->Unit(benchmark::kNanosecond);
TIMED(BM_StdThreadPingPong)->Unit(benchmark::kNanosecond);

TIMED(BM_SpindleCreateJoin)->ArgName("cpus")->Arg(1)->Arg(2)->Unit(benchmark::kNanosecond);
TIMED(BM_SpindleCreateJoinSameCpu)->ArgName("cpus")->Arg(2)->Unit(benchmark::kNanosecond);
TIMED(BM_SpindleCreateJoinPinned)->ArgName("cpus")->Arg(2)->Unit(benchmark::kNanosecond);
TIMED(BM_StdThreadCreateJoin)->Unit(benchmark::kNanosecond);
TIMED(BM_BoostFiberCreateJoin)->Unit(benchmark::kNanosecond);
TIMED(BM_BoostContextCreateResume)->Unit(benchmark::kNanosecond);

BENCHMARK(BM_SpindleIdleThreadMemory)
    ->ArgName("prio_order")
    ->Arg(0)
    ->Arg(1)
    ->UseRealTime()
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BoostFiberIdleMemory)->UseRealTime()->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SpindleThreadsAlive)->UseRealTime()->Iterations(1)->Unit(benchmark::kMillisecond);

// ------------------------------------------------------------- summary ---

// One line per target: what was measured, the ratio, MET / NOT MET.
// Times are medians of the repetitions (real time, as reported above); for
// the single-threaded yield benchmarks the CPU-time ratio is shown too, as
// it is less disturbed by other load on the host.
void print_summary(const std::map<std::string, Result>& res, std::FILE* out) {
  auto get = [&](const char* k) { return spindle_bench::find(res, k); };
  auto counter = [&](const char* k, const char* c) { return spindle_bench::counter_of(res, k, c); };
  auto verdict = [](bool ok) { return ok ? "MET" : "NOT MET"; };
  std::fprintf(out, "\nTargets (medians; real time unless marked cpu)\n");
  const Result* sy = get("BM_SpindleYieldRoundTrip");
  const Result* bc = get("BM_BoostContextRoundTrip");
  const Result* bf = get("BM_BoostFiberYieldRoundTrip");
  const Result* pp = get("BM_StdThreadPingPong");
  if (sy && bc) {
    std::fprintf(out, "  %-7s yield RT: Spindle %.1f ns / Boost.Context %.1f ns = %.2fx (cpu %.2fx); target <= 3x\n",
                 verdict(sy->real_ns <= 3 * bc->real_ns), sy->real_ns, bc->real_ns, sy->real_ns / bc->real_ns,
                 sy->cpu_ns / bc->cpu_ns);
  }
  if (sy && bf) {
    std::fprintf(out, "  %-7s yield RT: Boost.Fiber %.1f ns / Spindle %.1f ns = %.2fx (cpu %.2fx); target >= 5x\n",
                 verdict(bf->real_ns >= 5 * sy->real_ns), bf->real_ns, sy->real_ns, bf->real_ns / sy->real_ns,
                 bf->cpu_ns / sy->cpu_ns);
  }
  if (sy && pp) {
    std::fprintf(out, "  %-7s yield RT: std::thread ping-pong %.0f ns / Spindle %.1f ns = %.0fx\n", "(info)",
                 pp->real_ns, sy->real_ns, pp->real_ns / sy->real_ns);
  }
  const Result* bfc = get("BM_BoostFiberCreateJoin");
  const Result* stc = get("BM_StdThreadCreateJoin");
  for (const char* k : {"BM_SpindleCreateJoin/cpus:1", "BM_SpindleCreateJoin/cpus:2"}) {
    const Result* s = get(k);
    if (!s) continue;
    const char* name = k + 3;
    if (bfc) {
      std::fprintf(out, "  %-7s create+join %s %.0f ns vs Boost.Fiber %.0f ns: %.2fx faster; target > 1x\n",
                   verdict(s->real_ns < bfc->real_ns), name, s->real_ns, bfc->real_ns, bfc->real_ns / s->real_ns);
    }
    if (stc) {
      std::fprintf(out, "  %-7s create+join %s %.0f ns vs std::thread %.0f ns: %.1fx faster; target >= 50x\n",
                   verdict(stc->real_ns >= 50 * s->real_ns), name, s->real_ns, stc->real_ns, stc->real_ns / s->real_ns);
    }
  }
  double bpt = counter("BM_SpindleIdleThreadMemory/prio_order:0", "bytes_per_thread");
  double fbpt = counter("BM_BoostFiberIdleMemory", "bytes_per_thread");
  if (bpt >= 0) {
    std::fprintf(out, "  %-7s memory: %.0f resident bytes per idle Spindle thread (Boost.Fiber: %.0f); target <= 8192\n",
                 verdict(bpt <= 8192), bpt, fbpt);
  }
  double alive = counter("BM_SpindleThreadsAlive", "alive");
  if (alive >= 0) {
    std::fprintf(out, "  %-7s alive: %.0f of %u Spindle threads created and blocked at once%s; target all\n",
                 verdict(alive == 1), counter("BM_SpindleThreadsAlive", "threads"), kAliveThreads,
                 counter("BM_SpindleThreadsAlive", "no_memory") == 1 ? " (then kNoMemory)" : "");
  }
}

}  // namespace

int main(int argc, char** argv) {
  return spindle_bench::run_benchmarks(argc, argv, [] {}, print_summary);
}
