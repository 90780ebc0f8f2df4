// spindle_process_bench: isolated processes against Linux, side by side in
// one Google Benchmark binary (hosted: a Spindle process is a child Linux
// process running its own Spindle kernel).
//
//   1. Spawn + join of a process that returns at once. Spindle:
//      Process::spawn + join (one vCPU in the child). Anchors: posix_spawn +
//      waitpid of this same executable told to exit before anything else
//      (the exec and dynamic-linking floor every hosted spawn pays), and of
//      /bin/true.
//   2. Channel round trip: 8 bytes to an echo process and back. Anchor: the
//      same over two pipes to an echo child.
//   3. Uncontended Mutex lock+unlock inside a spawned process, against the
//      same loop on a thread of the app's first process, both on host core
//      1: the fast path is a CAS in the process's own memory, so the two
//      must match. Each times 10^7 pairs itself (the child sends its figure
//      back on a channel).
//   4. Two Semaphores in a SharedMemory region bounce a token between this
//      process and a spawned one (a thread there), one op = a round trip.
//      This side waits as a thread (the host's futex, through a helper
//      host thread) or as a coroutine (which polls the word from its
//      timer: docs/architecture.md, "Processes (hosted)"). No anchor: the
//      two are compared with each other and with the channel.
//
// Timed benchmarks run 5 repetitions; the summary compares medians.
// Usage: spindle_process_bench [--benchmark_filter=REGEX] [other Google Benchmark flags]
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <tuple>

#include <spindle/hosted.h>
#include <spindle/spindle.h>

#include <benchmark/benchmark.h>

#include "bench_report.h"

extern char** environ;

namespace {

namespace sp = spindle;
using spindle_bench::find;
using spindle_bench::g_load_at_start;
using spindle_bench::kRepetitions;
using spindle_bench::Result;
using spindle_bench::timed;

constexpr int kLockPairs = 10'000'000;

int boot(int (*fn)(void*), void* arg, unsigned cpus = 2) {
  sp::hosted::Options o;
  o.cpus = cpus;
  return sp::hosted::run(o, fn, arg);
}

sp::ProcessOptions one_cpu() {
  sp::ProcessOptions o;
  // The child's vCPU on host core 1, which it shares with the parent's
  // second vCPU (the parent's threads may run on either).
  o.affinity = sp::CpuMask::only(1);
  return o;
}

// ======================================================================
// 1. Spawn + join
// ======================================================================

int returns_at_once() { return 0; }

int spindle_spawn_main(void* p) {
  auto& state = *static_cast<benchmark::State*>(p);
  for (auto _ : state) {
    auto proc = sp::Process::spawn(one_cpu(), returns_at_once);
    if (!proc.ok() || !proc->join().ok()) {
      state.SkipWithError("spawn or join failed");
      break;
    }
  }
  return 0;
}

void BM_SpindleSpawnJoin(benchmark::State& state) { boot(spindle_spawn_main, &state); }

void posix_spawn_wait(benchmark::State& state, const char* path, const char* arg) {
  for (auto _ : state) {
    char a0[] = "child";
    char* argv[] = {a0, const_cast<char*>(arg), nullptr};
    pid_t pid;
    if (posix_spawn(&pid, path, nullptr, nullptr, argv, environ) != 0 || waitpid(pid, nullptr, 0) != pid) {
      state.SkipWithError("posix_spawn failed");
      break;
    }
  }
}
void BM_PosixSpawnWaitSelf(benchmark::State& state) { posix_spawn_wait(state, "/proc/self/exe", "--exit-now"); }
void BM_PosixSpawnWaitTrue(benchmark::State& state) { posix_spawn_wait(state, "/bin/true", nullptr); }

// ======================================================================
// 2. Channel round trip vs a pipe round trip
// ======================================================================

int echo() {
  auto ch = sp::Channel::adopt(sp::this_process::handle(0));
  if (!ch.ok()) return 1;
  for (;;) {
    auto v = ch->recv_value<std::uint64_t>();
    if (!v.ok()) return 0;
    if (ch->send_value(*v + 1) != sp::Status::kOk) return 0;
  }
}

int spindle_channel_main(void* p) {
  auto& state = *static_cast<benchmark::State*>(p);
  auto [mine, theirs] = sp::Channel::create().value();
  sp::Handle give[] = {theirs.handle()};
  sp::ProcessOptions o = one_cpu();
  o.handles = give;
  auto proc = sp::Process::spawn(o, echo);
  if (!proc.ok()) {
    state.SkipWithError(sp::to_string(proc.status()));
    return 1;
  }
  theirs.close();
  std::uint64_t x = 0;
  for (auto _ : state) {
    if (mine.send_value(x) != sp::Status::kOk) {
      state.SkipWithError("send failed");
      break;
    }
    auto r = mine.recv_value<std::uint64_t>();
    if (!r.ok()) {
      state.SkipWithError("recv failed");
      break;
    }
    x = *r;
  }
  mine.close();
  (void)proc->join();
  return 0;
}

void BM_SpindleChannelRoundTrip(benchmark::State& state) { boot(spindle_channel_main, &state); }

// The pipe echo child: fds 3 (in) and 4 (out).
int pipe_echo() {
  std::uint64_t v;
  while (read(3, &v, sizeof v) == sizeof v) {
    ++v;
    if (write(4, &v, sizeof v) != sizeof v) return 1;
  }
  return 0;
}

void BM_PipeRoundTrip(benchmark::State& state) {
  // Every end close-on-exec and above the child's 3 and 4, so the child
  // gets exactly its two dup2'ed ends: had it kept the write end of its
  // input (an inherited descriptor that happened not to be 3 or 4), it
  // would never see end-of-file and the waitpid below would hang.
  int to[2], from[2];
  if (pipe(to) != 0 || pipe(from) != 0) {
    state.SkipWithError("pipe failed");
    return;
  }
  for (int* fd : {&to[0], &to[1], &from[0], &from[1]}) {
    int high = fcntl(*fd, F_DUPFD_CLOEXEC, 10);
    close(*fd);
    *fd = high;
  }
  if (to[0] < 0 || to[1] < 0 || from[0] < 0 || from[1] < 0) {
    state.SkipWithError("fcntl(F_DUPFD_CLOEXEC) failed");
    return;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, to[0], 3);
  posix_spawn_file_actions_adddup2(&fa, from[1], 4);
  char a0[] = "child", a1[] = "--pipe-echo";
  char* argv[] = {a0, a1, nullptr};
  pid_t pid;
  int e = posix_spawn(&pid, "/proc/self/exe", &fa, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(to[0]);
  close(from[1]);
  if (e != 0) {
    state.SkipWithError("posix_spawn failed");
    return;
  }
  spindle_bench::pin_self_to(0);
  std::uint64_t x = 0;
  for (auto _ : state) {
    if (write(to[1], &x, sizeof x) != sizeof x || read(from[0], &x, sizeof x) != sizeof x) {
      state.SkipWithError("pipe round trip failed");
      break;
    }
  }
  close(to[1]);
  close(from[0]);
  waitpid(pid, nullptr, 0);
}

// ======================================================================
// 3. Uncontended mutex inside a process vs in the first process
// ======================================================================

// ns per lock+unlock pair over kLockPairs, after as many untimed ones (a
// fresh process starts with cold caches and a slow clock).
double time_lock_pairs() {
  sp::Mutex m("bench");
  for (int i = 0; i < kLockPairs; ++i) {
    m.lock();
    m.unlock();
  }
  std::uint64_t t0 = spindle_bench::steady_ns();
  for (int i = 0; i < kLockPairs; ++i) {
    m.lock();
    m.unlock();
  }
  return static_cast<double>(spindle_bench::steady_ns() - t0) / kLockPairs;
}

int timed_locks_child() {
  auto ch = sp::Channel::adopt(sp::this_process::handle(0));
  if (!ch.ok()) return 1;
  return ch->send_value(time_lock_pairs()) == sp::Status::kOk ? 0 : 1;
}

struct LockRun {
  benchmark::State* state;
  bool in_child;
};

int spindle_lock_main(void* p) {
  auto& run = *static_cast<LockRun*>(p);
  auto& state = *run.state;
  for (auto _ : state) {
    double ns;
    if (run.in_child) {
      auto [mine, theirs] = sp::Channel::create().value();
      sp::Handle give[] = {theirs.handle()};
      sp::ProcessOptions o = one_cpu();
      o.handles = give;
      auto proc = sp::Process::spawn(o, timed_locks_child);
      theirs.close();
      auto r = proc.ok() ? mine.recv_value<double>() : sp::Result<double>(proc.status());
      if (!r.ok()) {
        state.SkipWithError(sp::to_string(r.status()));
        break;
      }
      auto st = proc->join();
      if (!st.ok() || !st->success()) {
        char why[128];
        state.SkipWithError(st.ok() ? st->describe(why, sizeof why) : sp::to_string(st.status()));
        break;
      }
      ns = *r;
    } else {
      // The same host core as the child's vCPU (one_cpu), for a fair match.
      sp::ThreadOptions o;
      o.affinity = sp::CpuMask::only(1);
      auto t = sp::Thread::create(o, [&ns] { ns = time_lock_pairs(); });
      if (!t.ok() || t->join() != sp::Status::kOk) {
        state.SkipWithError("thread failed");
        break;
      }
    }
    state.SetIterationTime(ns * 1e-9);  // one iteration = one pair, timed by whoever ran it
  }
  return 0;
}

void BM_MutexInSpawnedProcess(benchmark::State& state) {
  LockRun r{&state, true};
  boot(spindle_lock_main, &r);
}
void BM_MutexInFirstProcess(benchmark::State& state) {
  LockRun r{&state, false};
  boot(spindle_lock_main, &r);
}

// ======================================================================
// 4. Semaphores shared between processes: a thread or a coroutine waits
// ======================================================================

struct PingPong {
  sp::Semaphore ping{0, 1, "ping"};
  sp::Semaphore pong{0, 1, "pong"};
};

// Answers every ping with a pong, after `delay_us` (0: at once).
int ponger(std::uint32_t delay_us) {
  auto shm = sp::SharedMemory::adopt(sp::this_process::handle(0));
  if (!shm.ok()) return 1;
  auto* pp = reinterpret_cast<PingPong*>(shm->data());
  for (;;) {
    if (pp->ping.acquire_for(std::chrono::seconds(10)) != sp::Status::kOk) return 2;
    if (delay_us != 0) sp::this_thread::sleep_for(std::chrono::microseconds(delay_us));
    if (pp->pong.release() != sp::Status::kOk) return 3;
  }
}

// The delayed rows' answer time: long enough that the waiting side has
// gone to sleep (a thread in the host futex, an idle vCPU in futex_waitv),
// so they measure how fast a sleeping waiter in this process is woken.
constexpr std::uint32_t kDelayUs = 300;

struct SharedRun {
  benchmark::State* state;
  bool coroutine;
  std::uint32_t delay_us = 0;
};


int spindle_shared_sem_main(void* p) {
  auto& run = *static_cast<SharedRun*>(p);
  auto& state = *run.state;
  auto shm = sp::SharedMemory::create(sizeof(PingPong), "ping-pong");
  if (!shm.ok()) {
    state.SkipWithError(sp::to_string(shm.status()));
    return 1;
  }
  auto* pp = new (shm->data()) PingPong;
  sp::Handle give[] = {shm->handle()};
  sp::ProcessOptions o = one_cpu();
  o.handles = give;
  auto proc = sp::Process::spawn(o, ponger, run.delay_us);
  if (!proc.ok()) {
    state.SkipWithError(sp::to_string(proc.status()));
    return 1;
  }
  sp::Status s = sp::Status::kOk;
  if (run.coroutine) {
    // The whole timed loop in one coroutine (the benchmark's thread waits in run()).
    auto loop = [pp, &state]() -> sp::Task<sp::Status> {
      while (state.KeepRunning()) {
        if (sp::Status s = pp->ping.release(); s != sp::Status::kOk) co_return s;
        if (sp::Status s = co_await pp->pong.acquire_async_for(std::chrono::seconds(10)); s != sp::Status::kOk) {
          co_return s;
        }
      }
      co_return sp::Status::kOk;
    };
    std::uint64_t w0 = sp::coroutine_stats().watch_wakes;
    s = sp::run(loop());  // a Task<Status>'s run() is the Status itself
    // The share of the waits that an idle vCPU's watch ended (the rest: a
    // timer's look, or a unit there at once).
    state.counters["watch_wakes_per_op"] = static_cast<double>(sp::coroutine_stats().watch_wakes - w0) /
                                           static_cast<double>(state.iterations());
  } else {
    for (auto _ : state) {
      s = pp->ping.release();
      if (s == sp::Status::kOk) s = pp->pong.acquire_for(std::chrono::seconds(10));
      if (s != sp::Status::kOk) break;
    }
  }
  if (s != sp::Status::kOk) state.SkipWithError(sp::to_string(s));
  (void)proc->kill();
  (void)proc->join();
  return 0;
}

// This process on 2 vCPUs (the second shares host core 1 with the other
// process's vCPU) or on 1 (core 0: each process has a core of its own).
void shared_sem(benchmark::State& state, bool coroutine, std::uint32_t delay_us, unsigned cpus) {
  SharedRun r{&state, coroutine, delay_us};
  boot(spindle_shared_sem_main, &r, cpus);
}

void BM_SharedSemPingPongThread(benchmark::State& state) { shared_sem(state, false, 0, 2); }
void BM_SharedSemPingPongCoroutine(benchmark::State& state) { shared_sem(state, true, 0, 2); }
void BM_SharedSemPingPongThreadOwnCores(benchmark::State& state) { shared_sem(state, false, 0, 1); }
void BM_SharedSemPingPongCoroutineOwnCores(benchmark::State& state) { shared_sem(state, true, 0, 1); }
void BM_SharedSemDelayedThread(benchmark::State& state) { shared_sem(state, false, kDelayUs, 2); }
void BM_SharedSemDelayedCoroutine(benchmark::State& state) { shared_sem(state, true, kDelayUs, 2); }

// ------------------------------------------------------------ registry ---

void register_benchmarks() {
  timed("BM_SpindleSpawnJoin", BM_SpindleSpawnJoin)->Unit(benchmark::kMicrosecond);
  timed("BM_PosixSpawnWaitSelf", BM_PosixSpawnWaitSelf)->Unit(benchmark::kMicrosecond);
  timed("BM_PosixSpawnWaitTrue", BM_PosixSpawnWaitTrue)->Unit(benchmark::kMicrosecond);
  timed("BM_SpindleChannelRoundTrip", BM_SpindleChannelRoundTrip);
  timed("BM_PipeRoundTrip", BM_PipeRoundTrip);
  timed("BM_SharedSemPingPongThread", BM_SharedSemPingPongThread);
  timed("BM_SharedSemPingPongCoroutine", BM_SharedSemPingPongCoroutine);
  timed("BM_SharedSemPingPongThreadOwnCores", BM_SharedSemPingPongThreadOwnCores);
  timed("BM_SharedSemPingPongCoroutineOwnCores", BM_SharedSemPingPongCoroutineOwnCores);
  timed("BM_SharedSemDelayedThread", BM_SharedSemDelayedThread)->Unit(benchmark::kMicrosecond);
  timed("BM_SharedSemDelayedCoroutine", BM_SharedSemDelayedCoroutine)->Unit(benchmark::kMicrosecond);
  using Fn = void (*)(benchmark::State&);
  for (auto [name, fn] : {std::pair<const char*, Fn>{"BM_MutexInSpawnedProcess", BM_MutexInSpawnedProcess},
                          std::pair<const char*, Fn>{"BM_MutexInFirstProcess", BM_MutexInFirstProcess}}) {
    benchmark::RegisterBenchmark(name, fn)
        ->UseManualTime()
        ->Iterations(3)
        ->Repetitions(kRepetitions)
        ->DisplayAggregatesOnly()
        ->Unit(benchmark::kNanosecond);
  }
}

// ------------------------------------------------------------- summary ---

void print_summary(const std::map<std::string, Result>& res, std::FILE* out) {
  std::fprintf(out, "\nProcesses (medians of %d repetitions, real time; host load average %.2f at the start)\n",
               kRepetitions, g_load_at_start);
  const Result* sj = find(res, "BM_SpindleSpawnJoin");
  const Result* ps = find(res, "BM_PosixSpawnWaitSelf");
  const Result* pt = find(res, "BM_PosixSpawnWaitTrue");
  if (sj && ps && pt) {
    std::fprintf(out,
                 "  (info)  spawn+join: Spindle %.0f us; posix_spawn+waitpid of the same executable %.0f us "
                 "(%.2fx), of /bin/true %.0f us (%.2fx)\n",
                 sj->real_ns / 1e3, ps->real_ns / 1e3, sj->real_ns / ps->real_ns, pt->real_ns / 1e3,
                 sj->real_ns / pt->real_ns);
  }
  const Result* ch = find(res, "BM_SpindleChannelRoundTrip");
  const Result* pp = find(res, "BM_PipeRoundTrip");
  if (ch && pp) {
    std::fprintf(out, "  (info)  8-byte round trip to another process: Spindle channel %.0f ns, pipes %.0f ns (%.2fx)\n",
                 ch->real_ns, pp->real_ns, ch->real_ns / pp->real_ns);
  }
  for (auto [tk, ck, where] :
       {std::tuple{"BM_SharedSemPingPongThread", "BM_SharedSemPingPongCoroutine",
                   "this process on 2 vCPUs, one on the other's host core"},
        std::tuple{"BM_SharedSemPingPongThreadOwnCores", "BM_SharedSemPingPongCoroutineOwnCores",
                   "each process on a host core of its own"}}) {
    const Result* st = find(res, tk);
    const Result* sc = find(res, ck);
    if (st && sc) {
      std::fprintf(out,
                   "  (info)  semaphore ping-pong with another process, shared memory, %s: this side a thread %.0f ns, "
                   "a coroutine %.0f ns (%.2fx)\n",
                   where, st->real_ns, sc->real_ns, sc->real_ns / st->real_ns);
    }
  }
  const Result* dt = find(res, "BM_SharedSemDelayedThread");
  const Result* dc = find(res, "BM_SharedSemDelayedCoroutine");
  if (dt && dc) {
    std::fprintf(out,
                 "  (info)  semaphore ping-pong, 2 vCPUs, the other process answering after %u us: a thread %.1f us, "
                 "a coroutine %.1f us "
                 "(beyond the delay: %.1f and %.1f us)\n",
                 kDelayUs, dt->real_ns / 1e3, dc->real_ns / 1e3, dt->real_ns / 1e3 - kDelayUs,
                 dc->real_ns / 1e3 - kDelayUs);
  }
  const Result* mc = find(res, "BM_MutexInSpawnedProcess");
  const Result* mf = find(res, "BM_MutexInFirstProcess");
  if (mc && mf) {
    double ratio = mc->real_ns / mf->real_ns;
    bool met = ratio <= 1.10;
    std::fprintf(out,
                 "  %-7s uncontended Mutex lock+unlock: in a spawned process %.2f ns, in the first process %.2f ns "
                 "(%.2fx); target: equal (within 10%%)\n",
                 met ? "MET" : "NOT MET", mc->real_ns, mf->real_ns, ratio);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--exit-now") == 0) return 0;
  if (argc == 2 && std::strcmp(argv[1], "--pipe-echo") == 0) return pipe_echo();
  if (int code; sp::hosted::run_if_spawned(argc, argv, &code)) return code;
  return spindle_bench::run_benchmarks(argc, argv, register_benchmarks, print_summary);
}
