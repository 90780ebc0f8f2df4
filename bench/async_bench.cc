// spindle_async_bench: Spindle coroutines against a bare C++20 coroutine
// baseline, Boost.Fiber and std::async, side by side in one binary.
//
//   1. Resume + suspend: a bare generator loop (coroutine_handle::resume of
//      a coroutine that suspends again) vs Spindle Generator<T>::next().
//   2. Frame create + destroy, never run: a bare task whose promise takes
//      frames from a thread-local free list vs Spindle Task (kernel frame
//      pool).
//   3. co_await of a child task (create, transfer in and out, destroy),
//      measured inside a coroutine: bare task with free-list frames vs
//      Spindle Task in a job.
//   4. co_await of an uncontended semaphore (acquire_async + release) in a
//      job; Boost.Fiber semaphore-like (fibers::mutex lock+unlock) for scale.
//   5. Coroutine ping-pong through two Queue<int>(1) on one vCPU (one op =
//      a round trip) vs two Boost.Fiber fibers over buffered_channels.
//   6. Gather of 100000 coroutines sleeping 50 ms: time per coroutine and
//      bytes per coroutine (frame pool accounting: the slope between gathers
//      of 50000 and 100000; and RSS growth) vs 10000
//      Boost.Fiber fibers sleeping 50 ms (RSS per fiber); std::async with
//      1000 threads for scale.
//
// Spindle benchmarks boot their own kernel (spindle::hosted::run) and run
// the timed loop inside a Spindle coroutine job (or thread), as in
// spindle_sync_bench. After the runs a summary compares medians with the
// targets of docs/benchmarks.md.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <map>
#include <string>
#include <thread>
#include <vector>

// Spindle first: Boost.Fiber defines a function-like macro cpu_relax().
#include <spindle/hosted.h>
#include <spindle/spindle.h>

#include <benchmark/benchmark.h>
#include <boost/fiber/all.hpp>

#include "bench_report.h"

namespace {

namespace sp = spindle;
namespace fibers = boost::fibers;
using spindle_bench::kMinTime;
using spindle_bench::kRepetitions;
using spindle_bench::Result;
using spindle_bench::timed;
using spindle_bench::g_load_at_start;
using spindle_bench::rss_bytes;
using spindle_bench::steady_ns;
using namespace std::chrono_literals;

constexpr std::size_t kGathered = 100'000;
constexpr unsigned kFibers = 10'000;
constexpr unsigned kAsyncThreads = 1'000;

int boot(unsigned cpus, int (*fn)(void*), void* arg) {
  sp::hosted::Options o;
  o.cpus = cpus;
  return sp::hosted::run(o, fn, arg);
}

// Runs `make(state)` (a Task<>) as a job on a 1-vCPU kernel.
template <auto Make>
void in_job(benchmark::State& state) {
  boot(
      1,
      [](void* p) {
        auto& st = *static_cast<benchmark::State*>(p);
        sp::Status s = sp::run(Make(st));
        if (s != sp::Status::kOk) st.SkipWithError(sp::to_string(s));
        return 0;
      },
      &state);
}

// ------------------------------------------------ the bare baseline ---

// Frames from a thread-local free list per size (what a tuned hand-written
// task type does).
struct FreeList {
  void* head[64] = {};
};
thread_local FreeList t_free;

void* bare_alloc(std::size_t n) {
  std::size_t c = (n + 15) / 16;
  if (c < 64 && t_free.head[c]) {
    void* p = t_free.head[c];
    t_free.head[c] = *static_cast<void**>(p);
    return p;
  }
  return ::operator new(c * 16);
}
void bare_free(void* p, std::size_t n) {
  std::size_t c = (n + 15) / 16;
  if (c < 64) {
    *static_cast<void**>(p) = t_free.head[c];
    t_free.head[c] = p;
    return;
  }
  ::operator delete(p);
}

template <class T>
struct BareTask {
  struct promise_type {
    std::coroutine_handle<> cont;
    T value{};
    static void* operator new(std::size_t n) { return bare_alloc(n); }
    static void operator delete(void* p, std::size_t n) { bare_free(p, n); }
    BareTask get_return_object() { return BareTask{std::coroutine_handle<promise_type>::from_promise(*this)}; }
    std::suspend_always initial_suspend() noexcept { return {}; }
    struct Final {
      bool await_ready() noexcept { return false; }
      std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) noexcept {
        return h.promise().cont ? h.promise().cont : std::noop_coroutine();
      }
      void await_resume() noexcept {}
    };
    Final final_suspend() noexcept { return {}; }
    void return_value(T v) { value = v; }
    void unhandled_exception() { std::abort(); }
  };
  std::coroutine_handle<promise_type> h;
  BareTask(BareTask&& o) noexcept : h(std::exchange(o.h, {})) {}
  explicit BareTask(std::coroutine_handle<promise_type> x) : h(x) {}
  ~BareTask() {
    if (h) h.destroy();
  }
  bool await_ready() { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> c) {
    h.promise().cont = c;
    return h;
  }
  T await_resume() { return h.promise().value; }
};

struct BareGen {
  struct promise_type {
    int value = 0;
    BareGen get_return_object() { return BareGen{std::coroutine_handle<promise_type>::from_promise(*this)}; }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    std::suspend_always yield_value(int v) {
      value = v;
      return {};
    }
    void return_void() {}
    void unhandled_exception() { std::abort(); }
  };
  std::coroutine_handle<promise_type> h;
  ~BareGen() { h.destroy(); }
};

BareGen bare_counter() {
  for (int i = 0;; ++i) co_yield i;
}

BareTask<int> bare_child() { co_return 1; }

BareTask<int> bare_await_loop(benchmark::State& state) {
  int sum = 0;
  for (auto _ : state) sum += co_await bare_child();
  co_return sum;
}

// ------------------------------------------------ 1. resume ---

void BM_BareResume(benchmark::State& state) {
  BareGen g = bare_counter();
  long sum = 0;
  for (auto _ : state) {
    g.h.resume();
    sum += g.h.promise().value;
  }
  benchmark::DoNotOptimize(sum);
}

sp::Generator<int> spindle_counter() {
  for (int i = 0;; ++i) co_yield i;
}

int spindle_resume_main(void* p) {
  auto& state = *static_cast<benchmark::State*>(p);
  sp::Generator<int> g = spindle_counter();
  long sum = 0;
  for (auto _ : state) sum += *g.next();
  benchmark::DoNotOptimize(sum);
  return 0;
}
void BM_SpindleGeneratorNext(benchmark::State& state) { boot(1, spindle_resume_main, &state); }

// ------------------------------------------------ 2. create + destroy ---

void BM_BareCreateDestroy(benchmark::State& state) {
  for (auto _ : state) {
    BareTask<int> t = bare_child();
    benchmark::DoNotOptimize(t.h);
  }
}

sp::Task<int> spindle_child() { co_return 1; }

int spindle_create_main(void* p) {
  auto& state = *static_cast<benchmark::State*>(p);
  for (auto _ : state) {
    sp::Task<int> t = spindle_child();
    benchmark::DoNotOptimize(t);
  }
  return 0;
}
void BM_SpindleCreateDestroy(benchmark::State& state) { boot(1, spindle_create_main, &state); }

// ------------------------------------------------ 3. await a child ---

void BM_BareAwaitChild(benchmark::State& state) {
  BareTask<int> t = bare_await_loop(state);
  t.h.resume();  // runs the whole loop
  benchmark::DoNotOptimize(t.h.promise().value);
}

sp::Task<> spindle_await_loop(benchmark::State& state) {
  int sum = 0;
  for (auto _ : state) sum += co_await spindle_child();
  benchmark::DoNotOptimize(sum);
}
void BM_SpindleAwaitChild(benchmark::State& state) { in_job<spindle_await_loop>(state); }

// ------------------------------------------------ 4. uncontended semaphore ---

sp::Task<> spindle_sem_loop(benchmark::State& state) {
  sp::Semaphore sem(1, 1, "bench");
  for (auto _ : state) {
    (void)co_await sem.acquire_async();
    (void)sem.release();
  }
}
void BM_SpindleSemAwaitUncontended(benchmark::State& state) { in_job<spindle_sem_loop>(state); }

void BM_BoostFiberMutexUncontended(benchmark::State& state) {
  fibers::mutex m;
  for (auto _ : state) {
    m.lock();
    m.unlock();
  }
}

// ------------------------------------------------ 5. queue ping-pong ---

sp::Task<> spindle_ping_pong(benchmark::State& state) {
  sp::Queue<int> to_peer(1, "to peer"), to_main(1, "to main");
  auto peer = [&]() -> sp::Task<> {
    for (;;) {
      sp::Result<int> v = co_await to_peer.get_async();
      if (!v.ok()) co_return;
      (void)co_await to_main.put_async(v.value());
    }
  };
  sp::JoinHandle<> h = sp::spawn(peer(), sp::SpawnOptions{.cpu = 0});
  int x = 0;
  for (auto _ : state) {
    (void)co_await to_peer.put_async(x);
    x = (co_await to_main.get_async()).value() + 1;
  }
  to_peer.close();
  (void)co_await h;
}
void BM_SpindleQueuePingPong(benchmark::State& state) { in_job<spindle_ping_pong>(state); }

void BM_BoostFiberChannelPingPong(benchmark::State& state) {
  fibers::buffered_channel<int> to_peer(2), to_main(2);
  fibers::fiber peer([&] {
    int v;
    while (to_peer.pop(v) == fibers::channel_op_status::success) to_main.push(v);
  });
  int x = 0;
  for (auto _ : state) {
    to_peer.push(x);
    to_main.pop(x);
    ++x;
  }
  to_peer.close();
  peer.join();
}

// ------------------------------------------------ 6. gather of sleepers ---

sp::Task<int> sleeper(std::size_t i) {
  co_await sp::sleep_for(50ms);
  co_return static_cast<int>(i & 0xff);
}

struct GatherPeak {
  std::uint64_t bytes = 0;  // frame pool bytes above the start, at the peak
  long rss = 0;             // RSS growth at the peak
  std::uint64_t ns = 0;     // the whole gather
};

// Gathers n sleepers while a sampler coroutine records the peak of the
// frame pool (it stops once all n are parked).
sp::Task<GatherPeak> gather_sleepers(std::size_t n) {
  GatherPeak p;
  std::uint64_t base = sp::coroutine_stats().frame_bytes;
  long rss0 = rss_bytes();
  auto sampler = [&]() -> sp::Task<> {
    for (int i = 0; i < 200; ++i) {
      sp::CoroutineStats s = sp::coroutine_stats();
      if (s.frame_bytes - base > p.bytes) {
        p.bytes = s.frame_bytes - base;
        p.rss = rss_bytes() - rss0;
      }
      if (s.waiting >= n) break;
      co_await sp::sleep_for(1ms);
    }
  };
  std::uint64_t t0 = steady_ns();
  auto [rs, sampled] = co_await sp::gather(sp::gather_n(n, sleeper), sampler());
  p.ns = steady_ns() - t0;
  if (!rs.ok() || rs.value().size() != n) p.bytes = 0;
  co_return p;
}

// The cost of one more sleeping coroutine is the slope between a gather of
// kGathered and one of half as many (the gather's own fixed cost cancels);
// the average over kGathered is reported too.
sp::Task<> spindle_gather(benchmark::State& state) {
  double marginal = 0, average = 0, rss = 0;
  std::uint64_t ns = 0;
  for (auto _ : state) {
    GatherPeak half = co_await gather_sleepers(kGathered / 2);
    GatherPeak full = co_await gather_sleepers(kGathered);
    if (half.bytes == 0 || full.bytes == 0) state.SkipWithError("gather failed");
    marginal = static_cast<double>(full.bytes - half.bytes) / static_cast<double>(kGathered - kGathered / 2);
    average = static_cast<double>(full.bytes) / static_cast<double>(kGathered);
    rss = static_cast<double>(full.rss) / static_cast<double>(kGathered);
    ns += full.ns;
  }
  state.counters["coroutines"] = static_cast<double>(kGathered);
  state.counters["bytes_per_coroutine"] = marginal;
  state.counters["bytes_average"] = average;
  state.counters["rss_per_coroutine"] = rss;
  state.counters["ns_per_coroutine"] = static_cast<double>(ns) / static_cast<double>(state.iterations()) /
                                       static_cast<double>(kGathered);
}
void BM_SpindleGather100k(benchmark::State& state) { in_job<spindle_gather>(state); }

void BM_BoostFiberSleepers10k(benchmark::State& state) {
  std::vector<fibers::fiber> fs(kFibers);
  double rss = 0;
  std::uint64_t ns = 0;
  for (auto _ : state) {
    long rss0 = rss_bytes();
    std::atomic<unsigned> started{0};
    std::uint64_t t0 = steady_ns();
    for (unsigned i = 0; i < kFibers; ++i) {
      fs[i] = fibers::fiber([&started] {
        started.fetch_add(1);
        boost::this_fiber::sleep_for(50ms);
      });
    }
    while (started.load() < kFibers) boost::this_fiber::yield();
    long rss1 = rss_bytes();
    for (auto& f : fs) f.join();
    ns += steady_ns() - t0;
    rss = static_cast<double>(rss1 - rss0) / kFibers;
  }
  state.counters["fibers"] = kFibers;
  state.counters["rss_per_fiber"] = rss;
  state.counters["ns_per_fiber"] = static_cast<double>(ns) / static_cast<double>(state.iterations()) / kFibers;
}

void BM_StdAsyncSleepers1k(benchmark::State& state) {
  std::vector<std::future<int>> fs(kAsyncThreads);
  std::uint64_t ns = 0;
  for (auto _ : state) {
    std::uint64_t t0 = steady_ns();
    for (unsigned i = 0; i < kAsyncThreads; ++i) {
      fs[i] = std::async(std::launch::async, [i] {
        std::this_thread::sleep_for(50ms);
        return static_cast<int>(i);
      });
    }
    long sum = 0;
    for (auto& f : fs) sum += f.get();
    benchmark::DoNotOptimize(sum);
    ns += steady_ns() - t0;
  }
  state.counters["threads"] = kAsyncThreads;
  state.counters["ns_per_thread"] = static_cast<double>(ns) / static_cast<double>(state.iterations()) / kAsyncThreads;
}

// ------------------------------------------------ registry + summary ---

benchmark::internal::Benchmark* once(const char* name, void (*fn)(benchmark::State&)) {
  return benchmark::RegisterBenchmark(name, fn)->UseRealTime()->Iterations(1)->Repetitions(3)->Unit(
      benchmark::kMillisecond);
}

void register_benchmarks() {
  timed("BM_BareResume", BM_BareResume);
  timed("BM_SpindleGeneratorNext", BM_SpindleGeneratorNext);
  timed("BM_BareCreateDestroy", BM_BareCreateDestroy);
  timed("BM_SpindleCreateDestroy", BM_SpindleCreateDestroy);
  timed("BM_BareAwaitChild", BM_BareAwaitChild);
  timed("BM_SpindleAwaitChild", BM_SpindleAwaitChild);
  timed("BM_SpindleSemAwaitUncontended", BM_SpindleSemAwaitUncontended);
  timed("BM_BoostFiberMutexUncontended", BM_BoostFiberMutexUncontended);
  timed("BM_SpindleQueuePingPong", BM_SpindleQueuePingPong);
  timed("BM_BoostFiberChannelPingPong", BM_BoostFiberChannelPingPong);
  once("BM_SpindleGather100k", BM_SpindleGather100k);
  once("BM_BoostFiberSleepers10k", BM_BoostFiberSleepers10k);
  once("BM_StdAsyncSleepers1k", BM_StdAsyncSleepers1k);
}

void line(const char* tag, const char* fmt, auto... args) {
  std::printf("  %-7s ", tag);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#pragma GCC diagnostic ignored "-Wformat-security"
  std::printf(fmt, args...);
#pragma GCC diagnostic pop
  std::printf("\n");
}

void print_summary(const std::map<std::string, Result>& res) {
  auto get = [&](const char* k) { return spindle_bench::find(res, k); };
  auto counter = [&](const char* k, const char* c) { return spindle_bench::counter_of(res, k, c); };
  std::printf("\nTargets (medians of %d repetitions, real time; host load average %.2f at the start)\n", kRepetitions,
              g_load_at_start);
  auto ratio = [&](const char* what, const char* sk, const char* bk, double limit) {
    const Result* s = get(sk);
    const Result* b = get(bk);
    if (!s || !b) return;
    double r = s->real_ns / b->real_ns;
    line(limit > 0 ? (r <= limit ? "MET" : "NOT MET") : "(info)", "%s: Spindle %.1f ns / bare %.1f ns = %.2fx%s", what,
         s->real_ns, b->real_ns, r, limit > 0 ? (limit == 2 ? "; target <= 2x" : "") : "");
  };
  ratio("resume (Generator::next vs coroutine_handle::resume)", "BM_SpindleGeneratorNext", "BM_BareResume", 2);
  ratio("co_await of a child task", "BM_SpindleAwaitChild", "BM_BareAwaitChild", 2);
  ratio("frame create + destroy (pooled frames both)", "BM_SpindleCreateDestroy", "BM_BareCreateDestroy", 0);
  if (const Result* s = get("BM_SpindleSemAwaitUncontended")) {
    const Result* f = get("BM_BoostFiberMutexUncontended");
    line("(info)", "co_await sem.acquire_async() + release, uncontended: %.1f ns (Boost.Fiber mutex lock+unlock %.1f ns)",
         s->real_ns, f ? f->real_ns : -1.0);
  }
  if (const Result* s = get("BM_SpindleQueuePingPong")) {
    const Result* f = get("BM_BoostFiberChannelPingPong");
    line("(info)", "queue ping-pong round trip, one vCPU: Spindle coroutines %.1f ns, Boost.Fiber channels %.1f ns = %.2fx",
         s->real_ns, f ? f->real_ns : -1.0, f ? f->real_ns / s->real_ns : -1.0);
  }
  double bytes = counter("BM_SpindleGather100k", "bytes_per_coroutine");
  if (bytes > 0) {
    line(bytes <= 256 ? "MET" : "NOT MET",
         "memory per idle sleeping coroutine: %.1f B (frame + job record + gather slot, the slope between gathers of "
         "%zu and %zu; average with the gather's fixed cost %.2f B, RSS growth %.0f B); target <= 256 B",
         bytes, kGathered / 2, kGathered, counter("BM_SpindleGather100k", "bytes_average"),
         counter("BM_SpindleGather100k", "rss_per_coroutine"));
    line("(info)", "Boost.Fiber: %.0f B RSS per sleeping fiber (%u fibers)", counter("BM_BoostFiberSleepers10k", "rss_per_fiber"),
         kFibers);
    line("(info)", "time per sleeper, gather of 50 ms sleeps: Spindle %.0f ns (%zu), Boost.Fiber %.0f ns (%u), std::async %.0f ns (%u threads)",
         counter("BM_SpindleGather100k", "ns_per_coroutine"), kGathered, counter("BM_BoostFiberSleepers10k", "ns_per_fiber"),
         kFibers, counter("BM_StdAsyncSleepers1k", "ns_per_thread"), kAsyncThreads);
  }
}

}  // namespace

int main(int argc, char** argv) {
  return spindle_bench::run_benchmarks(argc, argv, register_benchmarks, [](const auto& res, std::FILE*) { print_summary(res); });
}
