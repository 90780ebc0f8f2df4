// spindle_sync_bench: Spindle's synchronization objects against std::,
// Abseil and Boost.Fiber, side by side in one Google Benchmark binary.
// spindle_sync_bench_lockdep is the same source linked with the kernel built
// with SPINDLE_LOCKDEP=1 (the lock-order validator on); it runs family 1
// and the Spindle Mutex / std::mutex part of family 2 only: the validator
// does not touch semaphores or condvar waits.
//
//   1. Uncontended lock+unlock on one thread: spindle::Mutex, FairMutex,
//      SpinLock; std::mutex; absl::Mutex with its deadlock detector off
//      (kIgnore) and as the installed library ships it; two bare CASes (the
//      floor of a lock word). The same with one nested pair (A then B), and
//      that pair on both of 2 vCPUs at once, each thread with its own two
//      locks (only state shared inside the kernel can slow that down).
//   2. Contended counter on 2 CPUs: two threads, one per CPU, increment one
//      counter under one lock; ns per increment over both threads, and how
//      many increments a thread makes in a row before the other gets the
//      lock (incs_per_turn).
//   3. Semaphore ping-pong (one op = a round trip A->B->A): two Spindle
//      threads on one vCPU, then on two vCPUs, with two BinarySemaphores;
//      two Linux threads pinned to one core, then to two cores, with two
//      std::binary_semaphores; two Boost.Fiber fibers with two channels;
//      the floor: the same on a bone-minimal one-CPU scheduler (no kernel).
//   4. CondVar ping-pong: Mutex + CondVar passing a turn (one op = a round
//      trip), 1 and 2 vCPUs, against std::mutex + std::condition_variable
//      on one and two host cores.
//
// Every Spindle benchmark boots its own kernel with spindle::hosted::run()
// on the vCPUs it needs (1 or 2; vCPU i is pinned to host core i) from the
// Google Benchmark thread; the timed loop runs in the Spindle main thread
// (priority 16). Two-thread benchmarks pin their threads with affinity
// masks (Spindle) or pthread_setaffinity_np (host threads). Boot and
// shutdown are outside the timed loop.
//
// Timed benchmarks run 5 repetitions; the summary at the end compares the
// medians with the targets (docs/benchmarks.md, "Synchronization"). It goes
// to stdout, or to stderr with --benchmark_format=json|csv.
// Usage: spindle_sync_bench [--benchmark_filter=REGEX] [other Google Benchmark flags]
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <semaphore>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

// Spindle first: Boost.Fiber defines a function-like macro cpu_relax().
#include <spindle/hosted.h>
#include <spindle/spindle.h>

#include <absl/synchronization/mutex.h>
#include <benchmark/benchmark.h>
#include <boost/fiber/all.hpp>

#include "bench_report.h"

namespace {

namespace sp = spindle;
namespace fibers = boost::fibers;
using spindle_bench::pin_self_to;
using spindle_bench::kMinTime;
using spindle_bench::kRepetitions;
using spindle_bench::Result;
using spindle_bench::timed;
using spindle_bench::g_load_at_start;
using spindle_bench::rss_bytes;
using spindle_bench::steady_ns;


// ------------------------------------------------------------- helpers ---

// Host cores for the Linux anchors: "one core" means both threads on core
// 1 (as spindle_bench's ping-pong), "two cores" means cores 0 and 1.
unsigned second_core() { return sp::hosted::host_cpus() > 1 ? 1 : 0; }

int boot(unsigned cpus, int (*fn)(void*), void* arg) {
  sp::hosted::Options o;
  o.cpus = cpus;
  return sp::hosted::run(o, fn, arg);
}

// One CpuStats counter summed over the CPUs.
std::uint64_t total(std::uint64_t sp::CpuStats::*counter) {
  sp::SystemStats s = sp::system_stats();
  std::uint64_t n = 0;
  for (unsigned i = 0; i < s.cpus; ++i) n += s.cpu[i].*counter;
  return n;
}
std::uint64_t total_switches() { return total(&sp::CpuStats::switches); }
std::uint64_t total_idle_ns() { return total(&sp::CpuStats::idle_ns); }
std::uint64_t total_interrupts() { return total(&sp::CpuStats::interrupts); }

// (sp::arch::cpu_relax)() below is parenthesised because Boost.Fiber
// defines a function-like macro cpu_relax.

// Restricts the calling Spindle thread to vCPU `cpu`; false if it did not
// end up there.
bool pin_spindle_self(unsigned cpu) {
  if (sp::this_thread::set_affinity(sp::CpuMask::only(cpu)) != sp::Status::kOk) return false;
  for (int i = 0; i < 100 && sp::this_thread::cpu() != cpu; ++i) sp::this_thread::yield();
  return sp::this_thread::cpu() == cpu;
}

// Starts fn on a peer of main's priority: on main's vCPU when the kernel
// has one, else restricted to vCPU 1 (main is on vCPU 0).
template <class F>
sp::Result<sp::Thread> start_peer(unsigned cpus, F&& fn) {
  sp::ThreadOptions o;
  o.name = "peer";
  o.priority = sp::this_thread::priority();
  if (cpus > 1) o.affinity = sp::CpuMask::only(1);
  return sp::Thread::create(o, std::forward<F>(fn));
}

// Runs driver() (which holds the timed loop) and peer() on two host threads
// pinned to the given cores, and returns when both have ended.
template <class D, class P>
void run_host_pair(unsigned driver_core, unsigned peer_core, D driver, P peer) {
  std::thread p([&] {
    pin_self_to(peer_core);
    peer();
  });
  std::thread d([&] {
    pin_self_to(driver_core);
    driver();
  });
  d.join();
  p.join();
}

// std-style lock()/unlock() over absl::Mutex (this Abseil has only Lock/Unlock).
class AbslLock {
 public:
  void lock() { m_.Lock(); }
  void unlock() { m_.Unlock(); }

 private:
  absl::Mutex m_;
};

// What Abseil's deadlock detector does when nobody sets a mode: probed in
// main() before anything else, by taking two absl::Mutexes in both orders
// in a child process. Debian 12 builds Abseil without NDEBUG, so the
// detector is compiled in and its default is kAbort.
enum class AbslDefault { kUnknown, kAborts, kSilent };
AbslDefault g_absl_default = AbslDefault::kUnknown;
// The host's 1-minute load average when the run started: this machine is
// shared, and results across vCPUs/cores move with other load.

AbslDefault probe_absl_default() {
  pid_t pid = ::fork();
  if (pid < 0) return AbslDefault::kUnknown;
  if (pid == 0) {
    int fd = ::open("/dev/null", O_WRONLY);
    if (fd >= 0) ::dup2(fd, STDERR_FILENO);
    absl::Mutex a, b;
    a.Lock();
    b.Lock();
    b.Unlock();
    a.Unlock();
    b.Lock();
    a.Lock();  // closes the cycle a->b->a
    a.Unlock();
    b.Unlock();
    ::_exit(0);
  }
  int st = 0;
  if (::waitpid(pid, &st, 0) != pid) return AbslDefault::kUnknown;
  if (WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT) return AbslDefault::kAborts;
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return AbslDefault::kSilent;
  return AbslDefault::kUnknown;
}

// The "no detector" absl benchmarks turn it off and put the default back.
struct AbslDetectorOff {
  AbslDetectorOff() { absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore); }
  ~AbslDetectorOff() {
    if (g_absl_default == AbslDefault::kAborts) absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kAbort);
  }
};

// A lock and the counter it guards, on their own cache lines. `turns`
// counts how often the incrementing thread changed (each thread passes its
// own `me`), i.e. how often the lock went to the other CPU.
template <class L>
struct alignas(64) Guarded {
  L m;
  std::uint64_t value = 0;
  std::uint64_t turns = 0;
  const void* last = nullptr;
};

struct Counts {
  std::uint64_t value, turns;
};

template <class L>
inline void locked_increment(Guarded<L>& g, const void* me) {
  g.m.lock();
  ++g.value;
  if (g.last != me) {
    g.last = me;
    ++g.turns;
  }
  g.m.unlock();
}

template <class L>
Counts locked_read(Guarded<L>& g) {
  g.m.lock();
  Counts c{g.value, g.turns};
  g.m.unlock();
  return c;
}

struct alignas(64) Flag {
  std::atomic<bool> v{false};
};

// An object on its own cache line. The ping-pong pairs keep each direction's
// object (and the stop flag) apart, for Spindle and the anchors alike: two
// semaphores side by side in one line measure the line's false sharing
// between the CPUs, and whether they share one depended on their sizes.
template <class T>
struct alignas(64) OwnLine : T {
  using T::T;
};

// ns per increment over both threads, the driver's share of them, and how
// many increments a thread made in a row on average before the lock went
// to the other thread.
void report_increments(benchmark::State& state, Counts c0, Counts c1, std::uint64_t ns) {
  double n = c1.value > c0.value ? static_cast<double>(c1.value - c0.value) : 1.0;
  double turns = c1.turns > c0.turns ? static_cast<double>(c1.turns - c0.turns) : 1.0;
  state.counters["ns_per_inc"] = static_cast<double>(ns) / n;
  state.counters["driver_share"] = static_cast<double>(state.iterations()) / n;
  state.counters["incs_per_turn"] = n / turns;
}

// ======================================================================
// 1. Uncontended lock + unlock
// ======================================================================

template <class L>
void lock_unlock_loop(benchmark::State& state, L& m) {
  for (auto _ : state) {
    m.lock();
    m.unlock();
  }
}

template <class L>
void nested_loop(benchmark::State& state, L& a, L& b) {
  for (auto _ : state) {
    a.lock();
    b.lock();
    b.unlock();
    a.unlock();
  }
}

// Two CASes on one word (0->1, 1->0): what an owner-word lock costs at
// least.
void BM_CasPair(benchmark::State& state) {
  std::atomic<std::uint32_t> w{0};
  for (auto _ : state) {
    std::uint32_t v = 0;
    w.compare_exchange_strong(v, 1, std::memory_order_acquire, std::memory_order_relaxed);
    v = 1;
    w.compare_exchange_strong(v, 0, std::memory_order_release, std::memory_order_relaxed);
  }
}

void BM_StdMutex(benchmark::State& state) {
  std::mutex m;
  lock_unlock_loop(state, m);
}

void BM_StdMutexNested(benchmark::State& state) {
  std::mutex a, b;
  nested_loop(state, a, b);
}

void BM_AbslMutexAsShipped(benchmark::State& state) {
  AbslLock m;
  lock_unlock_loop(state, m);
}

void BM_AbslMutexNestedAsShipped(benchmark::State& state) {
  AbslLock a, b;
  nested_loop(state, a, b);
}

void BM_AbslMutexNoDetector(benchmark::State& state) {
  AbslDetectorOff off;
  AbslLock m;
  lock_unlock_loop(state, m);
}

void BM_AbslMutexNestedNoDetector(benchmark::State& state) {
  AbslDetectorOff off;
  AbslLock a, b;
  nested_loop(state, a, b);
}

// Spindle, 1 vCPU, in the main thread.
template <class L>
int spindle_lock_unlock_main(void* p) {
  auto& state = *static_cast<benchmark::State*>(p);
  L m("bench");
  lock_unlock_loop(state, m);
  state.counters["lock_order_reports"] = static_cast<double>(sp::lock_order_reports());
  return 0;
}

template <class L>
void BM_SpindleLockUnlock(benchmark::State& state) {
  boot(1, spindle_lock_unlock_main<L>, &state);
}

int spindle_nested_main(void* p) {
  auto& state = *static_cast<benchmark::State*>(p);
  sp::Mutex a("A"), b("B");
  nested_loop(state, a, b);
  state.counters["lock_order_reports"] = static_cast<double>(sp::lock_order_reports());
  return 0;
}

void BM_SpindleMutexNested(benchmark::State& state) { boot(1, spindle_nested_main, &state); }

// The nested pair on both of 2 vCPUs at once, each thread with its own two
// locks: no lock is shared, so only state shared inside the kernel (the
// lock-order graph, when lockdep is on) can make it slower than alone.
int spindle_nested_both_main(void* p) {
  auto& state = *static_cast<benchmark::State*>(p);
  if (!pin_spindle_self(0)) {
    state.SkipWithError("cannot pin main to vCPU 0");
    return 1;
  }
  sp::Mutex a("A"), b("B");
  Flag started, stop;
  auto r = start_peer(2, [&] {
    sp::Mutex pa("peer A"), pb("peer B");
    started.v.store(true, std::memory_order_release);
    while (!stop.v.load(std::memory_order_relaxed)) {
      pa.lock();
      pb.lock();
      pb.unlock();
      pa.unlock();
    }
  });
  if (!r.ok()) {
    state.SkipWithError(sp::to_string(r.status()));
    return 1;
  }
  sp::Thread peer = std::move(r).value();
  while (!started.v.load(std::memory_order_acquire)) (sp::arch::cpu_relax)();
  nested_loop(state, a, b);
  stop.v.store(true, std::memory_order_relaxed);
  peer.join();
  state.counters["lock_order_reports"] = static_cast<double>(sp::lock_order_reports());
  return 0;
}

void BM_SpindleMutexNestedBothCpus(benchmark::State& state) { boot(2, spindle_nested_both_main, &state); }

// ======================================================================
// 2. Contended counter on 2 CPUs
// ======================================================================

// Spindle, 2 vCPUs: main on vCPU 0 runs the timed loop; kPeers peers
// increment the same counter until told to stop, the first on vCPU 1, a
// second on vCPU 0 beside main (more threads than vCPUs: a waiter whose
// turn comes while it is not running holds up every later one). All run
// all along; the increments of all threads inside the timed window are
// counted.
template <class L, int kPeers>
int spindle_counter_main(void* p) {
  auto& state = *static_cast<benchmark::State*>(p);
  if (!pin_spindle_self(0)) {
    state.SkipWithError("cannot pin main to vCPU 0");
    return 1;
  }
  Guarded<L> g;
  Flag stop;
  std::atomic<int> started{0};
  sp::Thread peers[kPeers];
  for (int i = 0; i < kPeers; ++i) {
    sp::ThreadOptions o;
    o.name = "peer";
    o.priority = sp::this_thread::priority();
    o.affinity = sp::CpuMask::only(i == 0 ? 1 : 0);
    auto r = sp::Thread::create(o, [&] {
      int me;
      locked_increment(g, &me);
      started.fetch_add(1, std::memory_order_release);
      while (!stop.v.load(std::memory_order_relaxed)) locked_increment(g, &me);
    });
    if (!r.ok()) {
      state.SkipWithError(sp::to_string(r.status()));
      stop.v.store(true, std::memory_order_relaxed);
      for (int j = 0; j < i; ++j) peers[j].join();
      return 1;
    }
    peers[i] = std::move(r).value();
  }
  while (started.load(std::memory_order_acquire) < kPeers) sp::this_thread::yield();
  int me;
  Counts c0 = locked_read(g);
  std::uint64_t t0 = steady_ns();
  for (auto _ : state) locked_increment(g, &me);
  std::uint64_t t1 = steady_ns();
  Counts c1 = locked_read(g);
  stop.v.store(true, std::memory_order_relaxed);
  for (auto& x : peers) x.join();
  report_increments(state, c0, c1, t1 - t0);
  return 0;
}

template <class L>
void BM_SpindleCounter(benchmark::State& state) {
  boot(2, spindle_counter_main<L, 1>, &state);
}

// Three threads on two vCPUs.
template <class L>
void BM_SpindleCounterOversubscribed(benchmark::State& state) {
  boot(2, spindle_counter_main<L, 2>, &state);
}

// The same with two host threads pinned to cores 0 and 1.
template <class L>
void host_counter(benchmark::State& state) {
  Guarded<L> g;
  Flag started, stop;
  Counts c0{}, c1{};
  std::uint64_t t0 = 0, t1 = 0;
  run_host_pair(
      0, second_core(),
      [&] {
        int me;
        while (!started.v.load(std::memory_order_acquire)) std::this_thread::yield();
        c0 = locked_read(g);
        t0 = steady_ns();
        for (auto _ : state) locked_increment(g, &me);
        t1 = steady_ns();
        c1 = locked_read(g);
        stop.v.store(true, std::memory_order_relaxed);
      },
      [&] {
        int me;
        locked_increment(g, &me);
        started.v.store(true, std::memory_order_release);
        while (!stop.v.load(std::memory_order_relaxed)) locked_increment(g, &me);
      });
  report_increments(state, c0, c1, t1 - t0);
}

void BM_StdMutexCounter(benchmark::State& state) { host_counter<std::mutex>(state); }
void BM_AbslMutexCounterAsShipped(benchmark::State& state) { host_counter<AbslLock>(state); }
void BM_AbslMutexCounterNoDetector(benchmark::State& state) {
  AbslDetectorOff off;
  host_counter<AbslLock>(state);
}

// ======================================================================
// 3. Semaphore ping-pong
// ======================================================================

struct PairArgs {
  benchmark::State* state;
  unsigned cpus;
};

// Spindle: main and a peer pass a token with two BinarySemaphores; on 2
// vCPUs main is on vCPU 0 and the peer on vCPU 1.
int spindle_sem_main(void* p) {
  auto& a = *static_cast<PairArgs*>(p);
  auto& state = *a.state;
  if (a.cpus > 1 && !pin_spindle_self(0)) {
    state.SkipWithError("cannot pin main to vCPU 0");
    return 1;
  }
  OwnLine<sp::BinarySemaphore> to_peer(false, "to-peer"), to_main(false, "to-main");
  OwnLine<std::atomic<bool>> stop{false};
  auto r = start_peer(a.cpus, [&] {
    for (;;) {
      to_peer.acquire();
      if (stop.load(std::memory_order_relaxed)) return;
      to_main.release();
    }
  });
  if (!r.ok()) {
    state.SkipWithError(sp::to_string(r.status()));
    return 1;
  }
  sp::Thread peer = std::move(r).value();
  std::uint64_t sw0 = total_switches(), irq0 = total_interrupts(), idle0 = total_idle_ns();
  sp::TimePoint t0 = sp::Clock::now();
  for (auto _ : state) {
    to_peer.release();
    to_main.acquire();
  }
  std::uint64_t sw1 = total_switches(), irq1 = total_interrupts(), idle1 = total_idle_ns();
  auto wall = static_cast<double>((sp::Clock::now() - t0).count());
  // The share of the vCPUs' time spent in the idle loop during the run.
  state.counters["idle_share"] = static_cast<double>(idle1 - idle0) / (wall * a.cpus);
  stop.store(true, std::memory_order_relaxed);
  to_peer.release();
  peer.join();
  double iters = static_cast<double>(state.iterations());
  state.counters["switches_per_op"] = static_cast<double>(sw1 - sw0) / iters;
  state.counters["irqs_per_op"] = static_cast<double>(irq1 - irq0) / iters;
  return 0;
}

// range(0) = vCPUs.
void BM_SpindleSemPingPong(benchmark::State& state) {
  PairArgs a{&state, static_cast<unsigned>(state.range(0))};
  boot(a.cpus, spindle_sem_main, &a);
}

// range(0) = host cores: 1 = both threads on one core, 2 = one on each.
void BM_LinuxSemPingPong(benchmark::State& state) {
  OwnLine<std::binary_semaphore> to_peer{0}, to_main{0};
  OwnLine<std::atomic<bool>> stop{false};
  bool two = state.range(0) > 1;
  run_host_pair(
      two ? 0 : second_core(), second_core(),
      [&] {
        for (auto _ : state) {
          to_peer.release();
          to_main.acquire();
        }
        stop.store(true, std::memory_order_relaxed);
        to_peer.release();
      },
      [&] {
        for (;;) {
          to_peer.acquire();
          if (stop.load(std::memory_order_relaxed)) return;
          to_main.release();
        }
      });
}

// Boost.Fiber: the benchmark thread's main fiber and a peer fiber, each
// direction a buffered channel (capacity 2, the smallest allowed).
void BM_BoostFiberChannelPingPong(benchmark::State& state) {
  fibers::buffered_channel<int> to_peer{2}, to_main{2};
  fibers::fiber peer([&] {
    int v = 0;
    while (to_peer.pop(v) == fibers::channel_op_status::success) to_main.push(v);
  });
  int v = 0;
  for (auto _ : state) {
    to_peer.push(v);
    to_main.pop(v);
  }
  to_peer.close();
  peer.join();
}

// The floor under every kernel here: the same ping-pong on a one-CPU
// scheduler cut to the bone. A FIFO list of ready fibers and a semaphore
// that is a count and a FIFO of waiters; no lock, no interrupt mask, no
// priorities, timeouts, placement, counters or checks; Spindle's own
// register switch (spindle_hosted_switch). give() and take() are calls, and
// the two sides loop in different functions, as in BM_SpindleSemPingPong
// (so each switch pays the same mispredicted return). What it measures is
// what two switches, two wakes and two blocks cost on this host with no
// kernel at all: a kernel's ping-pong can approach it, not beat it.
extern "C" void spindle_hosted_switch(void** save_sp, void* load_sp);  // arch/hosted/src/switch_x86_64.S

namespace floor_sched {

struct Fiber {
  void* sp = nullptr;
  Fiber* next = nullptr;
};

struct FifoList {
  FifoList() = default;
  FifoList(const FifoList&) = delete;  // tail points into the object
  void clear() {
    head = nullptr;
    tail = &head;
  }
  Fiber* head = nullptr;
  Fiber** tail = &head;
  void push(Fiber* f) {
    f->next = nullptr;
    *tail = f;
    tail = &f->next;
  }
  Fiber* pop() {  // not empty
    Fiber* f = head;
    head = f->next;
    if (!head) tail = &head;
    return f;
  }
};

struct Sem {
  unsigned count = 0;
  FifoList waiters;
};

Fiber* g_current = nullptr;
FifoList g_ready;

[[gnu::noinline]] void give(Sem& s) {
  if (s.waiters.head) {
    g_ready.push(s.waiters.pop());
  } else {
    ++s.count;
  }
}

// The caller blocks if no unit is left: someone must be ready (one CPU, no idle loop).
[[gnu::noinline]] void take(Sem& s) {
  if (s.count) {
    --s.count;
    return;
  }
  Fiber* self = g_current;
  s.waiters.push(self);
  Fiber* next = g_ready.pop();
  g_current = next;
  spindle_hosted_switch(&self->sp, next->sp);
}

// The caller goes to the back of the ready list and the front one runs.
[[gnu::noinline]] void yield() {
  Fiber* self = g_current;
  g_ready.push(self);
  Fiber* next = g_ready.pop();
  g_current = next;
  spindle_hosted_switch(&self->sp, next->sp);
}

Sem g_to_peer, g_to_main, g_done, g_never;
bool g_stop = false;

[[noreturn]] void peer_main() {
  for (;;) {
    take(g_to_peer);
    if (g_stop) break;
    give(g_to_main);
  }
  give(g_done);
  take(g_never);  // main runs on; this fiber's stack is freed with it blocked here
  __builtin_trap();
}

}  // namespace floor_sched

void BM_FloorSemPingPong(benchmark::State& state) {
  using namespace floor_sched;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // Its switch tells no sanitizer about the change of stacks.
  state.SkipWithError("not under a sanitizer (the floor's switch is not annotated)");
  return;
#endif
  constexpr std::size_t kStack = 64 * 1024;
  std::vector<std::uint64_t> stack(kStack / sizeof(std::uint64_t));
  // The frame spindle_hosted_switch pops (switch_x86_64.S): control words,
  // six callee-saved registers, then the return address, peer_main's entry,
  // with %rsp = 8 mod 16 after the `ret`, as after a call.
  std::uint64_t* top = stack.data() + stack.size();
  top[-1] = 0;
  top[-2] = reinterpret_cast<std::uint64_t>(&peer_main);
  for (int i = 3; i <= 8; ++i) top[-i] = 0;
  std::uint32_t mxcsr = 0;
  std::uint16_t fpucw = 0;
  asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(mxcsr), "=m"(fpucw));
  top[-9] = mxcsr | (std::uint64_t{fpucw} << 32);
  Fiber main_fiber, peer;
  peer.sp = &top[-9];
  for (Sem* s : {&g_to_peer, &g_to_main, &g_done, &g_never}) {
    s->count = 0;
    s->waiters.clear();
  }
  g_stop = false;
  g_current = &main_fiber;
  g_ready.clear();
  g_ready.push(&peer);
  yield();  // the peer runs up to its first take and blocks there
  for (auto _ : state) {
    give(g_to_peer);
    take(g_to_main);
  }
  g_stop = true;
  give(g_to_peer);
  take(g_done);
}

// The same two ping-pongs with both sides looping in one function: after
// every switch the resumed side returns to the call site the other side
// used, so the CPU's return-stack predictions stay right. In the rows
// above, the two sides loop in different functions (as real code does),
// and every switch costs a mispredicted return on the way back to the
// caller. Both runtimes pay it; these rows show how much (for the record:
// the targets use the rows above). Main runs batches of kRelayBatch.
constexpr long kRelayBatch = 1000;

// n exchanges, or fewer if stop is seen set after one.
[[gnu::noinline]] void relay_tokens(sp::BinarySemaphore& give, sp::BinarySemaphore& take, long n,
                                    const std::atomic<bool>& stop) {
  for (long i = 0; i < n; ++i) {
    give.release();
    take.acquire();
    if (stop.load(std::memory_order_relaxed)) return;
  }
}

// n exchanges, or fewer if a channel closes.
[[gnu::noinline]] void relay_values(fibers::buffered_channel<int>& give, fibers::buffered_channel<int>& take, long n) {
  int v = 0;
  for (long i = 0; i < n; ++i) {
    if (give.push(v) != fibers::channel_op_status::success) return;
    if (take.pop(v) != fibers::channel_op_status::success) return;
  }
}

int spindle_sem_one_site_main(void* p) {
  auto& state = *static_cast<benchmark::State*>(p);
  OwnLine<sp::BinarySemaphore> to_peer(false, "to-peer"), to_main(false, "to-main");
  OwnLine<std::atomic<bool>> stop{false};
  auto r = start_peer(1, [&] {
    to_peer.acquire();
    relay_tokens(to_main, to_peer, LONG_MAX, stop);
  });
  if (!r.ok()) {
    state.SkipWithError(sp::to_string(r.status()));
    return 1;
  }
  sp::Thread peer = std::move(r).value();
  while (state.KeepRunningBatch(kRelayBatch)) relay_tokens(to_peer, to_main, kRelayBatch, stop);
  stop.store(true, std::memory_order_relaxed);
  to_peer.release();
  peer.join();
  return 0;
}

void BM_SpindleSemPingPongOneSite(benchmark::State& state) { boot(1, spindle_sem_one_site_main, &state); }

void BM_BoostFiberChannelPingPongOneSite(benchmark::State& state) {
  fibers::buffered_channel<int> to_peer{2}, to_main{2};
  fibers::fiber peer([&] {
    int v = 0;
    if (to_peer.pop(v) == fibers::channel_op_status::success) relay_values(to_main, to_peer, LONG_MAX);
  });
  while (state.KeepRunningBatch(kRelayBatch)) relay_values(to_peer, to_main, kRelayBatch);
  to_peer.close();
  peer.join();
}

// ======================================================================
// 4. CondVar ping-pong
// ======================================================================

// A turn passed back and forth under one Mutex, each side waiting on its
// own CondVar: main sets turn = 1 and notifies the peer, waits until the
// peer has set it back to 0.
int spindle_cv_main(void* p) {
  auto& a = *static_cast<PairArgs*>(p);
  auto& state = *a.state;
  if (a.cpus > 1 && !pin_spindle_self(0)) {
    state.SkipWithError("cannot pin main to vCPU 0");
    return 1;
  }
  sp::Mutex m("cv-mutex");
  sp::CondVar to_main("to-main"), to_peer("to-peer");
  int turn = 0;  // guarded by m
  bool stop = false;
  auto r = start_peer(a.cpus, [&] {
    m.lock();
    for (;;) {
      while (turn != 1 && !stop) to_peer.wait(m);
      if (stop) break;
      turn = 0;
      to_main.notify_one();
    }
    m.unlock();
  });
  if (!r.ok()) {
    state.SkipWithError(sp::to_string(r.status()));
    return 1;
  }
  sp::Thread peer = std::move(r).value();
  std::uint64_t sw0 = total_switches();
  for (auto _ : state) {
    m.lock();
    turn = 1;
    to_peer.notify_one();
    while (turn != 0) to_main.wait(m);
    m.unlock();
  }
  std::uint64_t sw1 = total_switches();
  m.lock();
  stop = true;
  to_peer.notify_one();
  m.unlock();
  peer.join();
  state.counters["switches_per_op"] = static_cast<double>(sw1 - sw0) / static_cast<double>(state.iterations());
  return 0;
}

void BM_SpindleCondVarPingPong(benchmark::State& state) {
  PairArgs a{&state, static_cast<unsigned>(state.range(0))};
  boot(a.cpus, spindle_cv_main, &a);
}

void BM_LinuxCondVarPingPong(benchmark::State& state) {
  std::mutex m;
  std::condition_variable to_main, to_peer;
  int turn = 0;
  bool stop = false;
  bool two = state.range(0) > 1;
  run_host_pair(
      two ? 0 : second_core(), second_core(),
      [&] {
        for (auto _ : state) {
          std::unique_lock lk(m);
          turn = 1;
          to_peer.notify_one();
          to_main.wait(lk, [&] { return turn == 0; });
        }
        std::lock_guard lk(m);
        stop = true;
        to_peer.notify_one();
      },
      [&] {
        std::unique_lock lk(m);
        for (;;) {
          to_peer.wait(lk, [&] { return turn == 1 || stop; });
          if (stop) return;
          turn = 0;
          to_main.notify_one();
        }
      });
}

// ------------------------------------------------------------ registry ---

// The lockdep build runs the lock families only: its point is the
// validator's cost, which semaphores and condvar waits do not pay.
void register_benchmarks() {
  timed("BM_CasPair", BM_CasPair);
  timed("BM_StdMutex", BM_StdMutex);
  // As shipped before "no detector", which sets the mode (and puts it back).
  timed("BM_AbslMutexAsShipped", BM_AbslMutexAsShipped);
  timed("BM_AbslMutexNoDetector", BM_AbslMutexNoDetector);
  timed("BM_SpindleMutex", BM_SpindleLockUnlock<sp::Mutex>);
  timed("BM_SpindleFairMutex", BM_SpindleLockUnlock<sp::FairMutex>);
  timed("BM_SpindleSpinLock", BM_SpindleLockUnlock<sp::SpinLock>);

  timed("BM_StdMutexNested", BM_StdMutexNested);
  timed("BM_AbslMutexNestedAsShipped", BM_AbslMutexNestedAsShipped);
  timed("BM_AbslMutexNestedNoDetector", BM_AbslMutexNestedNoDetector);
  timed("BM_SpindleMutexNested", BM_SpindleMutexNested);
  timed("BM_SpindleMutexNestedBothCpus", BM_SpindleMutexNestedBothCpus);

  timed("BM_SpindleMutexCounter", BM_SpindleCounter<sp::Mutex>);
  timed("BM_StdMutexCounter", BM_StdMutexCounter);
  if (sp::kLockdep) return;
  timed("BM_SpindleFairMutexCounter", BM_SpindleCounter<sp::FairMutex>);
  timed("BM_SpindleSpinLockCounter", BM_SpindleCounter<sp::SpinLock>);
  timed("BM_SpindleMutexCounter3on2", BM_SpindleCounterOversubscribed<sp::Mutex>);
  timed("BM_SpindleSpinLockCounter3on2", BM_SpindleCounterOversubscribed<sp::SpinLock>);
  timed("BM_AbslMutexCounterAsShipped", BM_AbslMutexCounterAsShipped);
  timed("BM_AbslMutexCounterNoDetector", BM_AbslMutexCounterNoDetector);

  timed("BM_SpindleSemPingPong", BM_SpindleSemPingPong)->ArgName("cpus")->Arg(1)->Arg(2);
  timed("BM_LinuxSemPingPong", BM_LinuxSemPingPong)->ArgName("cores")->Arg(1)->Arg(2);
  timed("BM_BoostFiberChannelPingPong", BM_BoostFiberChannelPingPong);
  timed("BM_FloorSemPingPong", BM_FloorSemPingPong);
  timed("BM_SpindleSemPingPongOneSite", BM_SpindleSemPingPongOneSite);
  timed("BM_BoostFiberChannelPingPongOneSite", BM_BoostFiberChannelPingPongOneSite);

  timed("BM_SpindleCondVarPingPong", BM_SpindleCondVarPingPong)->ArgName("cpus")->Arg(1)->Arg(2);
  timed("BM_LinuxCondVarPingPong", BM_LinuxCondVarPingPong)->ArgName("cores")->Arg(1)->Arg(2);
}

// ------------------------------------------------------------- summary ---

class Summary {
 public:
  Summary(const std::map<std::string, Result>& res, std::FILE* out) : res_(res), out_(out) {}

  const Result* get(const char* k) const {
    auto it = res_.find(k);
    return it == res_.end() ? nullptr : &it->second;
  }
  double counter(const char* k, const char* c) const {
    const Result* r = get(k);
    if (!r) return -1;
    auto it = r->counters.find(c);
    return it == r->counters.end() ? -1 : it->second;
  }
  // A ratio line against a target; `ok` decides MET / NOT MET.
  void target(bool ok, const char* fmt, auto... args) const { line(ok ? "MET" : "NOT MET", fmt, args...); }
  void info(const char* fmt, auto... args) const { line("(info)", fmt, args...); }

 private:
  void line(const char* tag, const char* fmt, auto... args) const {
    std::fprintf(out_, "  %-7s ", tag);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#pragma GCC diagnostic ignored "-Wformat-security"
    std::fprintf(out_, fmt, args...);
#pragma GCC diagnostic pop
    std::fputc('\n', out_);
  }

  const std::map<std::string, Result>& res_;
  std::FILE* out_;
};

const char* absl_default_text() {
  switch (g_absl_default) {
    case AbslDefault::kAborts: return "on (a lock-order inversion aborts: kAbort)";
    case AbslDefault::kSilent: return "off or report-only (a lock-order inversion did not abort)";
    case AbslDefault::kUnknown: break;
  }
  return "unknown (probe failed)";
}

// Uncontended lock+unlock times relative to std::mutex, for the record.
void print_uncontended_info(const Summary& s) {
  const Result* sm = s.get("BM_StdMutex");
  if (!sm) return;
  for (auto [k, name] : {std::pair{"BM_CasPair", "two CASes"}, std::pair{"BM_SpindleFairMutex", "Spindle FairMutex"},
                         std::pair{"BM_SpindleSpinLock", "Spindle SpinLock"},
                         std::pair{"BM_AbslMutexNoDetector", "absl::Mutex, detector off"},
                         std::pair{"BM_AbslMutexAsShipped", "absl::Mutex as shipped"}}) {
    if (const Result* r = s.get(k)) {
      s.info("uncontended lock+unlock: %s %.1f ns / std::mutex %.1f ns = %.2fx (cpu %.2fx)", name, r->real_ns,
             sm->real_ns, r->real_ns / sm->real_ns, r->cpu_ns / sm->cpu_ns);
    }
  }
}

// The nested pair run on both vCPUs at once (own locks) against alone.
void print_nested_both_info(const Summary& s) {
  const Result* one = s.get("BM_SpindleMutexNested");
  const Result* both = s.get("BM_SpindleMutexNestedBothCpus");
  if (one && both) {
    // cpu: main's vCPU thread's CPU time, which does not count the time
    // the host took that vCPU away (both vCPUs are busy here).
    s.info("nested pair A,B, own locks on both vCPUs at once: %.1f ns vs %.1f ns alone = %.2fx (cpu %.2fx)",
           both->real_ns, one->real_ns, both->real_ns / one->real_ns, both->cpu_ns / one->cpu_ns);
  }
}

void print_summary_release(const Summary& s) {
  const Result* sm = s.get("BM_StdMutex");
  const Result* sp_m = s.get("BM_SpindleMutex");
  if (sm && sp_m) {
    s.target(sp_m->real_ns <= sm->real_ns,
             "uncontended lock+unlock: Spindle Mutex %.1f ns / std::mutex %.1f ns = %.2fx (cpu %.2fx); target <= 1x",
             sp_m->real_ns, sm->real_ns, sp_m->real_ns / sm->real_ns, sp_m->cpu_ns / sm->cpu_ns);
  }
  print_uncontended_info(s);
  const Result* smn = s.get("BM_StdMutexNested");
  const Result* spn = s.get("BM_SpindleMutexNested");
  if (smn && spn) {
    s.info("nested pair A,B: Spindle Mutex %.1f ns / std::mutex %.1f ns = %.2fx (cpu %.2fx)", spn->real_ns,
           smn->real_ns, spn->real_ns / smn->real_ns, spn->cpu_ns / smn->cpu_ns);
  }
  print_nested_both_info(s);

  double spc = s.counter("BM_SpindleMutexCounter", "ns_per_inc");
  double stc = s.counter("BM_StdMutexCounter", "ns_per_inc");
  if (spc > 0 && stc > 0) {
    s.target(spc <= stc,
             "contended counter, 2 CPUs: Spindle Mutex %.1f ns/inc vs std::mutex %.1f ns/inc: throughput %.2fx; "
             "target >= 1x",
             spc, stc, stc / spc);
  }
  for (auto [k, name] : {std::pair{"BM_SpindleFairMutexCounter", "Spindle FairMutex"},
                         std::pair{"BM_SpindleSpinLockCounter", "Spindle SpinLock"},
                         std::pair{"BM_AbslMutexCounterNoDetector", "absl::Mutex, detector off"},
                         std::pair{"BM_AbslMutexCounterAsShipped", "absl::Mutex as shipped"}}) {
    double v = s.counter(k, "ns_per_inc");
    if (v > 0 && spc > 0) {
      s.info("contended counter, 2 CPUs: %s %.1f ns/inc; Spindle Mutex throughput %.2fx of it", name, v, v / spc);
    }
  }
  double m3 = s.counter("BM_SpindleMutexCounter3on2", "ns_per_inc");
  double s3 = s.counter("BM_SpindleSpinLockCounter3on2", "ns_per_inc");
  if (m3 > 0 && s3 > 0) {
    s.info("contended counter, 3 threads on 2 CPUs: Spindle Mutex %.1f ns/inc, SpinLock %.1f ns/inc", m3, s3);
  }

  const Result* ss1 = s.get("BM_SpindleSemPingPong/cpus:1");
  const Result* ls1 = s.get("BM_LinuxSemPingPong/cores:1");
  const Result* bfc = s.get("BM_BoostFiberChannelPingPong");
  if (ss1 && ls1) {
    s.target(ls1->real_ns >= 20 * ss1->real_ns,
             "semaphore ping-pong, one CPU: Linux %.0f ns / Spindle %.1f ns = %.1fx; target >= 20x", ls1->real_ns,
             ss1->real_ns, ls1->real_ns / ss1->real_ns);
  }
  if (ss1 && bfc) {
    s.target(bfc->real_ns >= 4 * ss1->real_ns,
             "semaphore ping-pong, one CPU: Boost.Fiber channel %.1f ns / Spindle %.1f ns = %.2fx; target >= 4x",
             bfc->real_ns, ss1->real_ns, bfc->real_ns / ss1->real_ns);
  }
  const Result* fl = s.get("BM_FloorSemPingPong");
  if (ss1 && bfc && fl) {
    s.info("the floor (a bone-minimal one-CPU scheduler, same register switch): %.1f ns; 4x Boost.Fiber needs "
           "<= %.1f ns, %.1f ns above it; Spindle is %.1f ns above it",
           fl->real_ns, bfc->real_ns / 4, bfc->real_ns / 4 - fl->real_ns, ss1->real_ns - fl->real_ns);
  }
  const Result* ss1o = s.get("BM_SpindleSemPingPongOneSite");
  const Result* bfco = s.get("BM_BoostFiberChannelPingPongOneSite");
  if (ss1 && ss1o && bfc && bfco) {
    s.info("ping-pong with one call site (no mispredicted return per switch): Spindle %.1f ns (%.1f ns less), "
           "Boost.Fiber %.1f ns (%.1f ns less): %.2fx",
           ss1o->real_ns, ss1->real_ns - ss1o->real_ns, bfco->real_ns, bfc->real_ns - bfco->real_ns,
           bfco->real_ns / ss1o->real_ns);
  }
  const Result* ss2 = s.get("BM_SpindleSemPingPong/cpus:2");
  const Result* ls2 = s.get("BM_LinuxSemPingPong/cores:2");
  if (ss2 && ls2) {
    s.target(ls2->real_ns >= 2 * ss2->real_ns,
             "semaphore ping-pong, two CPUs: Linux %.0f ns / Spindle %.0f ns = %.2fx; target >= 2x", ls2->real_ns,
             ss2->real_ns, ls2->real_ns / ss2->real_ns);
  }
  for (auto [sk, lk, what] : {std::tuple{"BM_SpindleCondVarPingPong/cpus:1", "BM_LinuxCondVarPingPong/cores:1", "one CPU"},
                              std::tuple{"BM_SpindleCondVarPingPong/cpus:2", "BM_LinuxCondVarPingPong/cores:2",
                                         "two CPUs"}}) {
    const Result* sc = s.get(sk);
    const Result* lc = s.get(lk);
    if (sc && lc) {
      s.info("condvar ping-pong, %s: std::mutex+condition_variable %.0f ns / Spindle %.0f ns = %.2fx", what,
             lc->real_ns, sc->real_ns, lc->real_ns / sc->real_ns);
    }
  }
}

void print_summary_lockdep(const Summary& s) {
  for (auto [sk, ak, what] : {std::tuple{"BM_SpindleMutex", "BM_AbslMutexAsShipped", "one lock"},
                              std::tuple{"BM_SpindleMutexNested", "BM_AbslMutexNestedAsShipped", "nested pair A,B"}}) {
    const Result* sr = s.get(sk);
    const Result* ar = s.get(ak);
    if (sr && ar) {
      s.target(sr->real_ns < 2.5 * ar->real_ns,
               "lockdep on, uncontended %s: Spindle Mutex %.1f ns / absl::Mutex as shipped %.1f ns = %.2fx "
               "(cpu %.2fx); target < 2.5x",
               what, sr->real_ns, ar->real_ns, sr->real_ns / ar->real_ns, sr->cpu_ns / ar->cpu_ns);
    }
  }
  const Result* sm = s.get("BM_StdMutex");
  const Result* sp_m = s.get("BM_SpindleMutex");
  if (sm && sp_m) {
    s.info("lockdep on, uncontended: Spindle Mutex %.1f ns / std::mutex %.1f ns = %.2fx (cpu %.2fx)", sp_m->real_ns,
           sm->real_ns, sp_m->real_ns / sm->real_ns, sp_m->cpu_ns / sm->cpu_ns);
  }
  print_uncontended_info(s);
  print_nested_both_info(s);
  double spc = s.counter("BM_SpindleMutexCounter", "ns_per_inc");
  double stc = s.counter("BM_StdMutexCounter", "ns_per_inc");
  if (spc > 0 && stc > 0) {
    s.info("lockdep on, contended counter, 2 CPUs: Spindle Mutex %.1f ns/inc vs std::mutex %.1f ns/inc: "
           "throughput %.2fx",
           spc, stc, stc / spc);
  }
  double reports = s.counter("BM_SpindleMutexNestedBothCpus", "lock_order_reports");
  if (reports < 0) reports = s.counter("BM_SpindleMutexNested", "lock_order_reports");
  if (reports >= 0) s.info("lock-order reports during the nested runs: %.0f (expected 0)", reports);
}

void print_summary(const std::map<std::string, Result>& res, std::FILE* out) {
  Summary s(res, out);
  std::fprintf(out, "\nTargets (%s; medians of %d repetitions, real time; host load average %.2f at the start)\n",
               sp::kLockdep ? "kernel built with SPINDLE_LOCKDEP=1" : "kernel built without lockdep", kRepetitions,
               g_load_at_start);
  if (sp::kLockdep) {
    print_summary_lockdep(s);
  } else {
    print_summary_release(s);
  }
  s.info("absl deadlock detector as installed: %s", absl_default_text());
}

}  // namespace

int main(int argc, char** argv) {
  // Before any thread and any absl::Mutex use in this process.
  g_absl_default = probe_absl_default();
  return spindle_bench::run_benchmarks(argc, argv, register_benchmarks, print_summary);
}
