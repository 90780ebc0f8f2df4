// Hosted processes, channels, shared memory, handles and ProcessPool: the
// cases that check what only hosted has (divide-by-zero faults, a host
// process per child, the hosted leak count). The portable process cases
// are in tests/kernel/process_test.cc; the portable channel, shared memory
// and ProcessPool cases in tests/kernel/channel_test.cc. The children are
// this test binary, started through run_if_spawned in its main().
#include <malloc.h>
#include <dirent.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <new>

#include "../kernel/sync_util.h"
#include "../kernel/process_entries.h"
#include "spindle/channel.h"
#include "spindle/hosted.h"
#include "spindle/process.h"
#include "spindle/process_pool.h"
#include "spindle/semaphore.h"
#include "spindle/shared_memory.h"
#include "spindle/task.h"

using namespace spindle;
using namespace spindle::ktest;
using namespace std::chrono_literals;
using ktest::echo_server;

namespace {

// ---------------------------------------------------------------------------
// Entries the tests spawn.

int exit_with(int code) { return code; }

// The bad access must reach the hardware: no sanitizer check first.
__attribute__((no_sanitize("address", "thread", "undefined"))) int null_write() {
  *static_cast<volatile int*>(nullptr) = 1;
  return 0;
}
// The bad access must reach the hardware: no sanitizer check first.
__attribute__((no_sanitize("address", "thread", "undefined"))) int kernel_write() {
  *reinterpret_cast<volatile int*>(this_process::kernel_space_address()) = 1;
  return 0;
}
int deep(int n) {
  volatile char pad[512];
  pad[0] = static_cast<char>(n);
  if (n < 0) return 0;  // never: n only grows
  return deep(n + 1) + pad[0];
}
int overflow_stack() { return deep(0); }
int trap() {
  __builtin_trap();
  return 0;
}
__attribute__((no_sanitize("undefined"))) int divide(int d) {
  volatile int n = 10;
  return n / d;
}
char* volatile g_keep;
int hog() {
  for (;;) {
    char* c = new char[256 * 1024];
    std::memset(c, 1, 256 * 1024);
    g_keep = c;
  }
}


// Serves calls (reply_and_recv): the reply to int v is v * 3 + 1. Returns
// the count once the channel closes.
int triple_server() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return -1;
  int v = 0;
  auto first = ch->recv(std::as_writable_bytes(std::span(&v, 1)));
  if (!first.ok()) return first.status() == Status::kClosed ? 0 : -2;
  for (int n = 1;; ++n) {
    int reply = v * 3 + 1;
    auto r = ch->reply_and_recv(std::as_bytes(std::span(&reply, 1)), std::as_writable_bytes(std::span(&v, 1)));
    if (!r.ok()) return r.status() == Status::kClosed ? n : -3;
  }
}

// Adds 1 to a shared counter `n` times.
int add_shared(int n) {
  auto shm = SharedMemory::adopt(this_process::handle(0));
  if (!shm.ok()) return 1;
  auto* c = reinterpret_cast<std::atomic<std::uint64_t>*>(shm->data());
  for (int i = 0; i < n; ++i) c->fetch_add(1, std::memory_order_relaxed);
  return 0;
}

// Sends `n` numbered messages.
int send_numbers(int id, int n) {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return 1;
  for (int i = 0; i < n; ++i) {
    int m[2] = {id, i};
    if (ch->send(std::as_bytes(std::span(m))) != Status::kOk) return 2;
  }
  return 0;
}

// Two semaphores for a ping-pong across processes, in a SharedMemory region.
struct PingPong {
  Semaphore ping{0, 1, "ping"};
  Semaphore pong{0, 1, "pong"};
};

// Answers `rounds` pings with a pong each, `delay_us` after the ping.
int slow_ponger(int rounds, int delay_us) {
  auto shm = SharedMemory::adopt(this_process::handle(0));
  if (!shm.ok()) return 1;
  auto* pp = reinterpret_cast<PingPong*>(shm->data());
  for (int i = 0; i < rounds; ++i) {
    if (pp->ping.acquire_for(10s) != Status::kOk) return 2;
    this_thread::sleep_for(std::chrono::microseconds(delay_us));
    if (pp->pong.release() != Status::kOk) return 3;
  }
  return 0;
}

// A PingPong region and a process running slow_ponger on it. ok() false
// (a failure recorded) if either could not be made.
struct SlowPonger {
  Result<SharedMemory> shm;
  PingPong* pp;
  Result<Process> child;
  SlowPonger(int rounds, int delay_us)
      : shm(SharedMemory::create(sizeof(PingPong))),
        pp(shm.ok() ? new (shm->data()) PingPong : nullptr),
        child(spawn_child(rounds, delay_us)) {
    if (!shm.ok()) {
      KFAIL("SharedMemory::create: %s", to_string(shm.status()));
    } else if (!child.ok()) {
      KFAIL("spawn: %s", to_string(child.status()));
    }
  }
  Result<Process> spawn_child(int rounds, int delay_us) {
    if (!shm.ok()) return shm.status();
    ProcessOptions o;
    Handle give[] = {shm->handle()};
    o.handles = give;
    return Process::spawn(o, slow_ponger, rounds, delay_us);
  }
  bool ok() const { return shm.ok() && child.ok(); }
  // Joins the child and checks that it answered every ping.
  void finish() {
    auto st = child->join_for(30s);
    KCHECK(st.ok() && st->success());
  }
  ~SlowPonger() {
    if (pp) pp->~PingPong();
  }
};

}  // namespace

// A coroutine waiting on a word another process changes is woken by an
// idle vCPU watching the word: with the job's own timer looking no more
// (testing switch), every one of the answers, 2 ms after each ping, when
// both vCPUs have gone to sleep on the word (futex_waitv), must reach it
// that way. Where the host has no futex_waitv, the timers stay on and
// serve alone.
KTEST(idle_vcpus_watch_words_that_coroutines_wait_on, 1) {
  constexpr int kRounds = 10;
  errno = 0;
  bool waitv = !(syscall(SYS_futex_waitv, nullptr, 0, 0, nullptr, 0) == -1 && errno == ENOSYS);
  SlowPonger other(kRounds, 2000);
  if (!other.ok()) return;
  PingPong* pp = other.pp;
  if (waitv) detail::foreign_poll_timers(false);
  std::uint64_t before = coroutine_stats().watch_wakes;
  auto rounds = [pp]() -> Task<int> {
    int n = 0;
    for (; n < kRounds; ++n) {
      if (pp->ping.release() != Status::kOk) break;
      if (co_await pp->pong.acquire_async_for(3s) != Status::kOk) break;  // (the deadline also looks)
    }
    co_return n;
  };
  KCHECK_EQ(run(rounds()).value(), kRounds);
  std::uint64_t woken = coroutine_stats().watch_wakes - before;
  detail::foreign_poll_timers(true);
  if (waitv) {
    KCHECK_EQ(woken, std::uint64_t{kRounds});
  } else {
    print("  (no futex_waitv on this host: the jobs' own looks served all %d rounds)\n", kRounds);
  }
  other.finish();
}

// A thread waiting on a semaphore another process releases sleeps in the
// host futex through a helper host thread; while it does, its word is
// published for idle vCPUs to sleep on as well (so the give wakes one of
// them together with the helper), and withdrawn when the wait ends. The
// answer comes 50 ms after the ping.
KTEST(threads_on_shared_semaphores_are_watched_by_idle_vcpus, 1) {
  SlowPonger other(1, 50'000);
  if (!other.ok()) return;
  PingPong* pp = other.pp;
  unsigned before = hosted::threads_on_watched_words();
  std::atomic<int> got{-1};
  Thread waiter = Thread::create({.name = "waiter"}, [pp, &got] {
    got.store(static_cast<int>(pp->pong.acquire_for(10s)));
  }).value();
  KCHECK_STATUS(pp->ping.release(), Status::kOk);
  bool seen = false;
  for (int i = 0; i < 5000 && !seen && got.load() < 0; ++i) {
    seen = hosted::threads_on_watched_words() > before;
    if (!seen) this_thread::sleep_for(100us);
  }
  KCHECK(seen);
  KJOIN(waiter);
  KCHECK_EQ(got.load(), static_cast<int>(Status::kOk));
  KCHECK_EQ(hosted::threads_on_watched_words(), before);
  other.finish();
}

// The fault matrix: each fault ends only its process, reported by kind.
KTEST(process_faults_are_contained_and_reported, 2) {
  struct Row {
    const char* what;
    Result<Process> (*spawn)();
    FaultKind fault;
  } rows[] = {
      {"null write", [] { return Process::spawn(null_write); }, FaultKind::kBadAccess},
      {"kernel write", [] { return Process::spawn(kernel_write); }, FaultKind::kBadAccess},
      {"stack overflow", [] { return Process::spawn(overflow_stack); }, FaultKind::kStackOverflow},
      {"trap", [] { return Process::spawn(trap); }, FaultKind::kIllegalInstruction},
      {"divide by zero", [] { return Process::spawn(divide, 0); }, FaultKind::kArithmetic},
      {"memory limit",
       [] {
         ProcessOptions o;
         o.memory_limit = 8 << 20;
         o.name = "hog";
         return Process::spawn(o, hog);
       },
       FaultKind::kMemoryLimit},
  };
  for (const Row& r : rows) {
    ExitStatus st = run_to_end(r.spawn());
    char why[160];
    if (st.kind != ExitKind::kFaulted || st.fault != r.fault) {
      KFAIL("%s: %s (want %s)", r.what, st.describe(why, sizeof why), to_string(r.fault));
    }
  }
  ExitStatus st = run_to_end(Process::spawn(null_write));
  KCHECK_EQ(st.address, 0u);
  KCHECK(std::strcmp(st.thread, "process") == 0);
  st = run_to_end(Process::spawn(kernel_write));
  KCHECK_EQ(st.address, this_process::kernel_space_address());
  // We are still here, and can still spawn.
  KCHECK_EQ(run_to_end(Process::spawn(exit_with, 3)).code, 3);
}

// Bad buffers from the first process (a user process here) are refused,
// and nothing is lost. (aarch64: from a spawned process, in
// tests/qemu/channel_test.cc; the rest of the round trip is portable, in
// tests/kernel/channel_test.cc.)
KTEST(channel_bad_buffers_from_the_first_process, 2) {
  auto [a, b] = Channel::create().value();
  auto* bad = reinterpret_cast<std::byte*>(this_process::kernel_space_address());
  KCHECK(a.send(std::span<const std::byte>(bad, 8)) == Status::kInvalidArgument);
  KCHECK(a.send_value(5) == Status::kOk);
  KCHECK(b.recv(std::span<std::byte>(bad, 8)).status() == Status::kInvalidArgument);
  KCHECK(b.recv_value<int>().value() == 5);
}

// Channel::call / reply_and_recv (on hosted: a send then a receive).
KTEST(channel_call_and_reply_and_recv, 2) {
  auto [mine, theirs] = Channel::create().value();
  Handle give[] = {theirs.handle()};
  auto p = Process::spawn(ProcessOptions{.handles = give}, triple_server);
  KREQUIRE(p.ok());
  theirs.close();
  for (int i = 0; i < 100; ++i) KCHECK(mine.call_value<int>(i).value() == i * 3 + 1);
  std::byte tiny[2];
  int big = 5;
  KCHECK(mine.call(std::as_bytes(std::span(&big, 1)), tiny).status() == Status::kOverflow);  // the reply stays
  KCHECK(mine.recv_value<int>().value() == 16);
  KCHECK(detail::channel_call(Handle{0x12345}, {}, tiny, kForever).status() == Status::kNotFound);
  mine.close();
  KCHECK_EQ(run_to_end(std::move(p)).code, 101);
  // Both ends here: the request is queued, the wait for the reply times out.
  auto [a, b] = Channel::create().value();
  KCHECK(a.call_value<int>(1, deadline_after(10ms)).status() == Status::kTimedOut);
  KCHECK(b.recv_value<int>().value() == 1);
  b.close();
  KCHECK(a.call_value<int>(2).status() == Status::kClosed);
}

KTEST(channel_to_a_process_and_its_death, 2) {
  auto [mine, theirs] = Channel::create().value();
  Handle give[] = {theirs.handle()};
  ProcessOptions o;
  o.handles = give;
  auto p = Process::spawn(o, echo_server);
  KREQUIRE(p.ok());
  theirs.close();
  for (int i = 0; i < 100; ++i) {
    KCHECK(mine.send_value(i) == Status::kOk);
    auto v = mine.recv_value<int>();
    KREQUIRE(v.ok());
    KCHECK_EQ(*v, i);
  }
  mine.close();  // the server sees kClosed and returns its count
  KCHECK_EQ(run_to_end(std::move(p)).code, 100);

  // A peer that dies: our receive says kClosed instead of hanging.
  auto [m2, t2] = Channel::create().value();
  Handle g2[] = {t2.handle()};
  o.handles = g2;
  auto crasher = Process::spawn(o, null_write);
  KREQUIRE(crasher.ok());
  t2.close();
  std::byte buf[8];
  KCHECK(m2.recv_for(buf, 10s).status() == Status::kClosed);
  KCHECK(crasher->join().ok());
}

// Four processes hammer one shared counter and one channel each.
KTEST(processes_stress_shared_memory_and_channels, 2) {
  constexpr int kProcs = 4;
  constexpr int kAdds = 200000;
  auto shm = SharedMemory::create(sizeof(std::uint64_t)).value();
  Process adders[kProcs];
  for (auto& p : adders) {
    ProcessOptions o;
    Handle give[] = {shm.handle()};
    o.handles = give;
    p = Process::spawn(o, add_shared, kAdds).value();
  }
  for (auto& p : adders) KCHECK(run_to_end(std::move(p)).code == 0);
  KCHECK_EQ(reinterpret_cast<std::atomic<std::uint64_t>*>(shm.data())->load(), std::uint64_t{kProcs} * kAdds);

  constexpr int kMsgs = 2000;
  Channel ends[kProcs];
  Process senders[kProcs];
  for (int i = 0; i < kProcs; ++i) {
    auto [mine, theirs] = Channel::create().value();
    Handle give[] = {theirs.handle()};
    ProcessOptions o;
    o.handles = give;
    senders[i] = Process::spawn(o, send_numbers, i, kMsgs).value();
    ends[i] = std::move(mine);
  }
  for (int i = 0; i < kProcs; ++i) {
    for (int k = 0; k < kMsgs; ++k) {
      int m[2];
      auto r = ends[i].recv(std::as_writable_bytes(std::span(m)));
      KREQUIRE(r.ok());
      if (m[0] != i || m[1] != k) {
        KFAIL("channel %d: message %d was (%d, %d)", i, k, m[0], m[1]);
        return;
      }
    }
    KCHECK(run_to_end(std::move(senders[i])).code == 0);
    std::byte b[8];
    KCHECK(ends[i].recv(b).status() == Status::kClosed);
  }
}

namespace {
int open_fds() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (readdir(d)) ++n;
    closedir(d);
  }
  return n;
}
}  // namespace

// Sequential spawn/join returns every resource: descriptors and heap.
KTEST(process_spawn_join_does_not_leak, 2) {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr int kRounds = 200;  // a sanitized child takes ~10x longer to start
#else
  constexpr int kRounds = 10000;
#endif
  (void)run_to_end(Process::spawn(exit_with, 0));  // warm up lazily allocated state
  int fds = open_fds();
  std::size_t heap = mallinfo2().uordblks;
  ProcessOptions one_cpu;
  one_cpu.affinity = CpuMask::only(0);
  for (int i = 0; i < kRounds; ++i) {
    auto p = Process::spawn(one_cpu, exit_with, i & 0x7f);
    KREQUIRE(p.ok());
    auto st = p->join();
    KREQUIRE(st.ok());
    if (st->code != (i & 0x7f)) {
      KFAIL("round %d: exit code %d", i, st->code);
      return;
    }
  }
  KCHECK_EQ(open_fds(), fds);
  std::size_t after = mallinfo2().uordblks;
  if (after > heap + 64 * 1024) KFAIL("heap grew from %zu to %zu bytes over %d spawns", heap, after, kRounds);
}

// Channels from coroutines: a round trip with another process, a timeout,
// a cancelled receive that takes nothing, and a wait that leaves its
// executor free for other coroutines.
KTEST(channel_from_coroutines, 2) {
  auto [mine, theirs] = Channel::create().value();
  Handle give[] = {theirs.handle()};
  ProcessOptions o;
  o.handles = give;
  auto server = Process::spawn(o, echo_server);
  KREQUIRE(server.ok());
  theirs.close();

  auto client = [&]() -> Task<int> {
    int ok = 0;
    for (int i = 0; i < 50; ++i) {
      int v = i, back = -1;
      if (co_await mine.send_async(std::as_bytes(std::span(&v, 1))) != Status::kOk) co_return -1;
      Result<Received> r = co_await mine.recv_async(std::as_writable_bytes(std::span(&back, 1)));
      if (r.ok() && r->bytes == sizeof back && back == i) ++ok;
    }
    co_return ok;
  };
  KCHECK_EQ(run(client()).value(), 50);

  // Nothing arrives: the deadline ends the wait.
  auto waiter = [&](TimePoint deadline) -> Task<Status> {
    int v;
    Result<Received> r = co_await mine.recv_async(std::as_writable_bytes(std::span(&v, 1)), {}, deadline);
    co_return r.status();
  };
  KCHECK(run(waiter(deadline_after(30ms))) == Status::kTimedOut);

  // While one coroutine waits, another on the same (single) executor runs.
  std::atomic<int> ticks{0};
  auto ticker = [&]() -> Task<> {
    for (int i = 0; i < 5; ++i) {
      co_await sleep_for(2ms);
      ticks.fetch_add(1);
    }
  };
  JoinHandle<Status> blocked = spawn(waiter(kForever), SpawnOptions{.cpu = 0});
  JoinHandle<> other = spawn(ticker(), SpawnOptions{.cpu = 0});
  KCHECK(other.join() == Status::kOk);
  KCHECK_EQ(ticks.load(), 5);
  // Cancelled while waiting: it takes nothing from the channel.
  blocked.cancel();
  KCHECK(blocked.join() == Status::kInterrupted);
  int probe = 77;
  KCHECK(mine.send(std::as_bytes(std::span(&probe, 1))) == Status::kOk);
  auto echoed = mine.recv_value<int>(deadline_after(5s));
  KCHECK(echoed.ok() && *echoed == 77);

  mine.close();
  KCHECK_EQ(run_to_end(std::move(*server)).code, 51);
}
