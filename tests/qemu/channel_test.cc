// Handles and channels on aarch64 (kernel/src/uchannel.cc), between the
// kernel's first process (the test) and processes: handles given at spawn
// and passed in messages, forged and stale handles, a peer's death, bad
// buffers from a process, shared memory across four processes, coroutines,
// and the call / reply_and_recv fast path. The portable channel, shared
// memory and ProcessPool cases are in tests/kernel/channel_test.cc.
#include <arch/arch.h>
#include <spindle/spindle.h>

#include <atomic>

#include "../kernel/ktest.h"
#include "../kernel/ktest_util.h"
#include "../kernel/process_entries.h"
#include "process_util.h"

using namespace spindle;
using namespace std::chrono_literals;
using ktest::echo_server;
using ktest::run_to_end;
using ktest::ticks;

namespace {

// Receives a channel end in a message on handle 0, says hello on it.
int receive_an_end() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return 1;
  Handle got[1];
  std::byte b[8];
  auto r = ch->recv(b, got);
  if (!r.ok() || r->handles != 1) return 2;
  auto other = Channel::adopt(got[0]);
  if (!other.ok()) return 3;
  if (other->send_value(1234) != Status::kOk) return 4;
  // A made-up handle, and one past the spawned ones.
  if (handle_kind(Handle{0x7777}) != HandleKind::kNone) return 5;
  if (this_process::handle(1).valid()) return 6;
  return 0;
}

// Bad buffers to channel calls from a process: refused, nothing lost.
int bad_buffers() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return 1;
  auto* kern = reinterpret_cast<std::byte*>(this_process::kernel_space_address());
  if (ch->send(std::span<const std::byte>(kern, 64)) != Status::kInvalidArgument) return 2;
  if (ch->send_value(7) != Status::kOk) return 3;  // the peer echoes it
  auto* null_page = reinterpret_cast<std::byte*>(std::uintptr_t{16});
  auto r = ch->recv(std::span<std::byte>(null_page, 64));
  if (r.ok() || r.status() != Status::kInvalidArgument) return 4;
  auto again = ch->recv_value<int>();  // still queued
  if (!again.ok() || *again != 7) return 5;
  Handle forged[] = {Handle{0x12345}};
  if (ch->send(std::as_bytes(std::span("x", 1)), forged) != Status::kNotFound) return 6;
  return 0;
}

int crash_with_channel() {
  *static_cast<volatile int*>(nullptr) = 1;
  return 0;
}

int square(int x) { return x * x; }

}  // namespace

KTEST(channel_to_a_process_handles_and_death, 1) {
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

  // A channel end passed in a message.
  auto [to_child, child_end] = Channel::create().value();
  auto [hello_mine, hello_theirs] = Channel::create().value();
  Handle g1[] = {child_end.handle()};
  o.handles = g1;
  auto q = Process::spawn(o, receive_an_end);
  KREQUIRE(q.ok());
  child_end.close();
  Handle pass[] = {hello_theirs.handle()};
  KCHECK(to_child.send(std::as_bytes(std::span("h", 1)), pass) == Status::kOk);
  hello_theirs.close();  // the child holds its own now
  auto hello = hello_mine.recv_value<int>();
  KCHECK(hello.ok() && *hello == 1234);
  KCHECK(run_to_end(std::move(q)).success());
  std::byte b8[8];
  KCHECK(hello_mine.recv(b8).status() == Status::kClosed);  // its process is gone

  // A peer that dies: our receive says kClosed instead of hanging.
  auto [m2, t2] = Channel::create().value();
  Handle g2[] = {t2.handle()};
  o.handles = g2;
  auto crasher = Process::spawn(o, crash_with_channel);
  KREQUIRE(crasher.ok());
  t2.close();
  KCHECK(m2.recv_for(b8, 10s).status() == Status::kClosed);
  KCHECK(crasher->join().ok());

  // Bad buffers from a process are refused.
  auto [m3, t3] = Channel::create().value();
  Handle g3[] = {t3.handle()};
  o.handles = g3;
  auto bad = Process::spawn(o, bad_buffers);
  KREQUIRE(bad.ok());
  t3.close();
  auto echo = m3.recv_value<int>();
  KCHECK(echo.ok() && m3.send_value(*echo) == Status::kOk);
  ExitStatus st = run_to_end(std::move(bad));
  char why[160];
  if (!st.success()) KFAIL("bad buffers: %s", st.describe(why, sizeof why));
  // A forged handle at spawn.
  Handle forged[] = {Handle{0x12345}};
  o.handles = forged;
  KCHECK(Process::spawn(o, square, 1).status() == Status::kNotFound);
}

namespace {

// Adds 1 to a shared counter `n` times, and as often under a shared Mutex.
struct Shared {
  std::atomic<std::uint64_t> counter;
  Mutex lock{"shared"};
  std::uint64_t guarded;
};
int add_shared(int n) {
  auto shm = SharedMemory::adopt(this_process::handle(0));
  if (!shm.ok()) return 1;
  auto* s = reinterpret_cast<Shared*>(shm->data());
  for (int i = 0; i < n; ++i) {
    s->counter.fetch_add(1, std::memory_order_relaxed);
    Guard g(s->lock);
    ++s->guarded;
  }
  return 0;
}

// Takes the shared Mutex and dies holding it.
int die_holding() {
  auto shm = SharedMemory::adopt(this_process::handle(0));
  if (!shm.ok()) return 1;
  reinterpret_cast<Shared*>(shm->data())->lock.lock();
  *static_cast<volatile int*>(nullptr) = 1;
  return 0;
}

}  // namespace

// Four processes hammer one shared counter and one shared Mutex; a
// process that dies holding the Mutex leaves it owner-died.
KTEST(shared_memory_four_processes_and_owner_died, 1) {
  constexpr int kProcs = 4;
  constexpr int kAdds = 3000;
  auto shm = SharedMemory::create(sizeof(Shared)).value();
  auto* s = new (shm.data()) Shared{};
  Process adders[kProcs];
  for (auto& p : adders) {
    ProcessOptions o;
    Handle give[] = {shm.handle()};
    o.handles = give;
    p = Process::spawn(o, add_shared, kAdds).value();
  }
  for (int i = 0; i < kAdds; ++i) {
    Guard g(s->lock);
    ++s->guarded;
  }
  for (auto& p : adders) KCHECK(run_to_end(std::move(p)).success());
  KCHECK_EQ(s->counter.load(), std::uint64_t{kProcs} * kAdds);
  KCHECK_EQ(s->guarded, std::uint64_t{kProcs + 1} * kAdds);

  ProcessOptions o;
  Handle give[] = {shm.handle()};
  o.handles = give;
  ExitStatus st = run_to_end(Process::spawn(o, die_holding));
  KCHECK(st.kind == ExitKind::kFaulted);
  KCHECK(s->lock.lock_for(1s) == Status::kOwnerDied);  // taken, with the news
  s->lock.unlock();
  s->~Shared();
}

namespace {

// A thread gives units to a counting word in a region (futex_give: a
// system call each) while a more urgent thread of the same process, woken
// by a timer at a varying moment, destroys the region (unmapped and
// closed: its pages go back to the kernel) and creates a fresh one of the
// same size, which the kernel heap tends to build from those pages. A
// give that translated its word before the unmap and takes the kernel
// lock after it must not write the old pages (they may be the fresh
// region's, or anything else's): each give returns kOk (done while the
// region was mapped) or kInvalidArgument (not a word of the process any
// more), and the fresh region reads all zeros. With one CPU, the timer's
// preemption lands inside the give's system call, between its
// translation and its lock, in a good share of the rounds.
int give_across_unmap(int rounds) {
  constexpr std::size_t kSize = 4096;
  constexpr std::size_t kOffset = 256;
  std::uint32_t seed = 12345;
  for (int i = 0; i < rounds; ++i) {
    auto shm = SharedMemory::create(kSize);
    if (!shm.ok()) return 1;
    auto* word = reinterpret_cast<std::atomic<std::uint32_t>*>(shm->data() + kOffset);
    std::atomic<int> outcome{0};  // 1: stopped by kInvalidArgument; 2: another status
    auto giver = Thread::create({.name = "giver", .priority = kDefaultPriority - 1}, [word, &outcome] {
      for (;;) {
        Status s = futex_give(word, 1, count_word::kCountMask);
        if (s == Status::kOk) continue;
        outcome.store(s == Status::kInvalidArgument ? 1 : 2);
        return;
      }
    });
    if (!giver.ok()) return 2;
    seed = seed * 1664525u + 1013904223u;
    (void)this_thread::sleep_for(std::chrono::microseconds(20 + (seed >> 16) % 200));
    *shm = SharedMemory{};  // unmapped and closed: the pages are free
    auto fresh = SharedMemory::create(kSize);
    if (!fresh.ok()) return 1;
    if (giver->join() != Status::kOk) return 5;
    if (outcome.load() != 1) return 3;
    for (std::byte b : fresh->bytes()) {
      if (b != std::byte{0}) return 4;  // a give wrote pages that were no longer its region's
    }
  }
  return 0;
}

}  // namespace

// The unmap check's other half (tests/kernel/channel_test.cc: a waiter
// already queued): a futex system call racing with the unmap of its word.
KTEST(futex_call_racing_an_unmap_of_its_word_never_writes_the_freed_pages, 1) {
  ProcessOptions o;
  o.affinity = CpuMask::only(0);
  ExitStatus st = run_to_end(Process::spawn(o, give_across_unmap, 300));
  char why[160];
  print("  %s\n", st.describe(why, sizeof why));
  KCHECK(st.success());
}

namespace {
Task<int> echo_async(Channel& ch, int rounds) {
  for (int i = 0; i < rounds; ++i) {
    if (co_await ch.send_async(std::as_bytes(std::span<const int, 1>(&i, 1))) != Status::kOk) co_return -1;
    int v = -1;
    auto r = co_await ch.recv_async(std::as_writable_bytes(std::span<int, 1>(&v, 1)));
    if (!r.ok() || v != i) co_return -2;
  }
  std::byte b[4];
  auto late = co_await ch.recv_async(b, {}, deadline_after(10ms));
  co_return late.status() == Status::kTimedOut ? rounds : -3;
}
}  // namespace

// Coroutines (the kernel's) send and receive without blocking their executor.
KTEST(channel_from_coroutines_to_a_process, 1) {
  auto [mine, theirs] = Channel::create().value();
  Handle give[] = {theirs.handle()};
  ProcessOptions o;
  o.handles = give;
  auto p = Process::spawn(o, echo_server);
  KREQUIRE(p.ok());
  theirs.close();
  Result<int> r = run(echo_async(mine, 50));
  KCHECK(r.ok() && *r == 50);
  mine.close();
  KCHECK_EQ(run_to_end(std::move(p)).code, 50);
}

namespace {
// Inside a process: its coroutines send and receive through the kernel's
// proxies (kSysJobWait with kJobWaitChannel). Handle 0: an end whose peer
// is echo_server in another process. Returns rounds when all went well.
int echo_async_in_process(int rounds) {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return -10;
  Result<int> r = run(echo_async(*ch, rounds));  // ends with a recv_async that times out
  if (!r.ok() || *r != rounds) return r.ok() ? *r : -11;
  // send_async on a full queue nobody reads: times out; then one that a
  // thread of this process makes room for.
  auto pair = Channel::create();
  if (!pair.ok()) return -12;
  static std::byte chunk[kMaxMessageBytes];
  auto fill = [&]() -> Task<Status> {
    for (int i = 0; i < 10000; ++i) {
      Status st = co_await pair->first.send_async(chunk, {}, deadline_after(5ms));
      if (st != Status::kOk) co_return st;
    }
    co_return Status::kLimit;
  };
  if (run(fill()) != Status::kTimedOut) return -13;
  auto one_more = [&]() -> Task<Status> { co_return co_await pair->first.send_async(chunk, {}, deadline_after(10s)); };
  JoinHandle<Status> h = spawn(one_more());
  auto parked = [] { return coroutine_stats().waiting == 1; };
  if (!ktest::settle(parked)) return -14;
  static std::byte buf[kMaxMessageBytes];
  if (!pair->second.recv(buf).ok()) return -15;
  if (h.join() != Status::kOk) return -16;
  // A recv_async woken by a thread's send, and one woken by the peer's close.
  auto take = [&]() -> Task<Status> {
    std::byte small[8];
    auto got = co_await pair->first.recv_async(small, {}, deadline_after(10s));
    co_return got.status();
  };
  JoinHandle<Status> t = spawn(take());
  if (!ktest::settle(parked)) return -20;  // woken by the send, not finding it queued
  if (pair->second.send(std::as_bytes(std::span<const int, 1>(&rounds, 1))) != Status::kOk) return -17;
  if (t.join() != Status::kOk) return -18;
  t = spawn(take());
  if (!ktest::settle(parked)) return -21;
  pair->second.close();
  if (t.join() != Status::kClosed) return -19;
  return rounds;
}
}  // namespace

// A process's coroutines send and receive on a channel to another process.
KTEST(channel_from_a_process_coroutines_to_another_process, 1) {
  auto [mine, theirs] = Channel::create().value();
  Handle give_server[] = {theirs.handle()}, give_client[] = {mine.handle()};
  ProcessOptions so, co;
  so.handles = give_server;
  co.handles = give_client;
  auto server = Process::spawn(so, echo_server);
  KREQUIRE(server.ok());
  auto client = Process::spawn(co, echo_async_in_process, 30);
  KREQUIRE(client.ok());
  theirs.close();
  mine.close();
  KCHECK_EQ(run_to_end(std::move(client)).code, 30);
  KCHECK_EQ(run_to_end(std::move(server)).code, 30);
}

namespace {
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


// One side of a ping-pong between two processes; the pinger returns the
// virtual nanoseconds of one round trip (instructions under -icount).
int ping(int rounds) {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return -1;
  std::uint64_t t0 = ticks();
  for (int i = 0; i < rounds; ++i) {
    if (ch->send_value(i) != Status::kOk) return -2;
    auto v = ch->recv_value<int>();
    if (!v.ok() || *v != i) return -3;
  }
  return static_cast<int>((ticks() - t0) * 16 / static_cast<std::uint64_t>(rounds));
}

}  // namespace

KTEST(channels_four_processes_stress, 1) {
  constexpr int kProcs = 4;
  constexpr int kMsgs = 500;
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
  for (int k = 0; k < kMsgs; ++k) {
    for (int i = 0; i < kProcs; ++i) {
      int m[2];
      auto r = ends[i].recv(std::as_writable_bytes(std::span(m)));
      KREQUIRE(r.ok());
      if (m[0] != i || m[1] != k) {
        KFAIL("channel %d: message %d was (%d, %d)", i, k, m[0], m[1]);
        return;
      }
    }
  }
  for (int i = 0; i < kProcs; ++i) {
    KCHECK(run_to_end(std::move(senders[i])).success());
    std::byte b[8];
    KCHECK(ends[i].recv(b).status() == Status::kClosed);
  }
}

KTEST(channel_round_trip_between_two_processes, 1) {
  auto [a, b] = Channel::create().value();
  Handle ga[] = {a.handle()};
  Handle gb[] = {b.handle()};
  ProcessOptions oa, ob;
  oa.handles = ga;
  ob.handles = gb;
  oa.affinity = CpuMask::only(0);
  ob.affinity = CpuMask::only(0);  // one CPU: the time is the instructions of the round trip
  auto echo = Process::spawn(ob, echo_server);
  auto pinger = Process::spawn(oa, ping, 2000);
  KREQUIRE(echo.ok() && pinger.ok());
  a.close();
  b.close();
  ExitStatus st = run_to_end(std::move(pinger));
  KCHECK(st.kind == ExitKind::kExited && st.code > 0);
  print("  channel round trip between two processes on one CPU: %d ns (= instructions under -icount)\n", st.code);
  KCHECK_EQ(run_to_end(std::move(echo)).code, 2000);
}

// ---------------------------------------------------------------------------
// Channel::call / reply_and_recv (system call 25): replies matched to
// requests on 1, 2 and 4 CPUs, the server on another CPU, concurrent
// callers, the general paths the fast one falls back to, timeouts, a
// peer's death during a call, and bad arguments from a process.

namespace {

// Serves calls on `ch`: a request is an int v, the reply v * 3 + 1 (never
// the request itself). Returns the count once the channel closes.
int serve_triple(Channel& ch) {
  int v = 0;
  auto first = ch.recv(std::as_writable_bytes(std::span(&v, 1)));
  if (!first.ok()) return first.status() == Status::kClosed ? 0 : -2;
  for (int n = 1;; ++n) {
    int reply = v * 3 + 1;
    auto r = ch.reply_and_recv(std::as_bytes(std::span(&reply, 1)), std::as_writable_bytes(std::span(&v, 1)));
    if (!r.ok()) return r.status() == Status::kClosed ? n : -3;
    if (r->bytes != sizeof v) return -4;
  }
}

int triple_server() {
  auto ch = Channel::adopt(this_process::handle(0));
  return ch.ok() ? serve_triple(*ch) : -1;
}

// `threads` threads, each serving the channel of handle i.
int triple_servers(int threads) {
  Thread t[4];
  std::atomic<int> total{0};
  for (int i = 0; i < threads; ++i) {
    t[i] = Thread::create(ThreadOptions{}, [i, &total] {
             auto ch = Channel::adopt(this_process::handle(static_cast<unsigned>(i)));
             int n = ch.ok() ? serve_triple(*ch) : -1;
             total += n < 0 ? -1000000 : n;
             return 0;
           }).value();
  }
  for (int i = 0; i < threads; ++i) (void)t[i].join();
  return total.load();
}

// Calls the server on handle 0 `rounds` times with base + i; every reply
// must be the one for its request. Returns 0, or with `timed` the virtual
// ns (instructions on one CPU under -icount) of one call; < 0 on a failure.
int triple_caller(int rounds, int base, bool timed) {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return -1;
  std::uint64_t t0 = ticks();
  for (int i = 0; i < rounds; ++i) {
    auto r = ch->call_value<int>(base + i);
    if (!r.ok() || *r != (base + i) * 3 + 1) return -2;
  }
  return timed ? static_cast<int>((ticks() - t0) * 16 / static_cast<std::uint64_t>(rounds)) : 0;
}

// Spawns entry (with o's options) holding the far end of a new channel as
// its handle 0; *mine gets the near end.
template <typename... A>
Result<Process> spawn_peer(Channel* mine, ProcessOptions o, int (*entry)(A...), A... args) {
  auto [near, far] = Channel::create().value();
  Handle give[] = {far.handle()};
  o.handles = give;
  *mine = std::move(near);
  return Process::spawn(o, entry, args...);
}

// Spawns a server and a caller, each with one end of a new channel as its
// handle 0, on the given CPUs.
struct CallPair {
  Result<Process> server;
  Result<Process> caller;
};
template <typename... A>
CallPair spawn_pair(int (*server)(), CpuMask server_cpus, CpuMask caller_cpus, int (*caller)(A...), A... args) {
  auto [a, b] = Channel::create().value();
  Handle ga[] = {a.handle()};
  Handle gb[] = {b.handle()};
  ProcessOptions os, oc;
  os.handles = gb;
  os.affinity = server_cpus;
  oc.handles = ga;
  oc.affinity = caller_cpus;
  // a and b close on return: each process holds its own end (so the
  // server sees kClosed when the caller ends).
  return CallPair{Process::spawn(os, server), Process::spawn(oc, caller, args...)};
}
// The same with a triple server.
template <typename... A>
CallPair spawn_call_pair(CpuMask server_cpus, CpuMask caller_cpus, int (*caller)(A...), A... args) {
  return spawn_pair(triple_server, server_cpus, caller_cpus, caller, args...);
}

}  // namespace

namespace {
// A triple server and a timed triple_caller on the given CPUs, 2000 calls:
// the virtual ns of one call (0 after a failure, reported).
int timed_call_round_trip(CpuMask server_cpus, CpuMask caller_cpus) {
  CallPair p = spawn_call_pair(server_cpus, caller_cpus, triple_caller, 2000, 0, true);
  if (!p.server.ok() || !p.caller.ok()) {
    KFAIL("spawn failed");
    return 0;
  }
  ExitStatus c = run_to_end(std::move(p.caller));
  KCHECK(c.kind == ExitKind::kExited && c.code > 0);
  KCHECK_EQ(run_to_end(std::move(p.server)).code, 2000);
  return c.code;
}
}  // namespace

KTEST(channel_call_round_trip_between_two_processes, 1) {
  // One CPU: the time is the instructions of the round trip.
  int ns = timed_call_round_trip(CpuMask::only(0), CpuMask::only(0));
  print("  channel call round trip (call / reply_and_recv) between two processes on one CPU: %d ns (= instructions under -icount)\n", ns);
}

KTEST(channel_call_replies_match_requests, 1) {
  CpuMask all = CpuMask::all();
  CallPair p = spawn_call_pair(all, all, triple_caller, 3000, 7, false);
  KREQUIRE(p.server.ok() && p.caller.ok());
  ExitStatus c = run_to_end(std::move(p.caller));
  KCHECK(c.kind == ExitKind::kExited && c.code == 0);
  KCHECK_EQ(run_to_end(std::move(p.server)).code, 3000);
}

// The server pinned to CPU 1, the caller to CPU 0: no direct switch (the
// server may not run on the caller's CPU), every step a cross-CPU wake-up.
KTEST(channel_call_with_the_server_on_another_cpu, 2) {
  int ns = timed_call_round_trip(CpuMask::only(1), CpuMask::only(0));
  print("  channel call round trip, server on another CPU: %d ns of virtual time\n", ns);
}

// Four caller processes, each with its own channel to one of four server
// threads of one process; and two threads of this process calling on one
// end at once: every request is answered exactly once (which of the two
// threads gets which reply is not fixed: a reply goes to whichever caller
// waits on the end first; channel.h says so).
KTEST(channel_call_concurrent_callers, 1) {
  constexpr int kCallers = 4;
  constexpr int kRounds = 500;
  Channel mine[kCallers];
  Channel theirs[kCallers];
  Handle server_ends[kCallers];
  for (int i = 0; i < kCallers; ++i) {
    auto [a, b] = Channel::create().value();
    mine[i] = std::move(a);
    theirs[i] = std::move(b);
    server_ends[i] = theirs[i].handle();
  }
  ProcessOptions os;
  os.handles = server_ends;
  auto server = Process::spawn(os, triple_servers, kCallers);
  KREQUIRE(server.ok());
  Process callers[kCallers];
  for (int i = 0; i < kCallers; ++i) {
    Handle g[] = {mine[i].handle()};
    ProcessOptions oc;
    oc.handles = g;
    callers[i] = Process::spawn(oc, triple_caller, kRounds, i * 100000, false).value();
    mine[i].close();
    theirs[i].close();
  }
  for (auto& c : callers) KCHECK(run_to_end(std::move(c)).code == 0);
  KCHECK_EQ(run_to_end(std::move(server)).code, kCallers * kRounds);

  // Two threads on one end.
  Channel a;
  auto one = spawn_peer(&a, ProcessOptions{}, triple_server);
  KREQUIRE(one.ok());
  static bool seen[2][kRounds];
  for (auto& row : seen) {
    for (bool& s : row) s = false;
  }
  std::atomic<int> bad{0};
  Mutex seen_lock;
  auto body = [&a, &bad, &seen_lock](int t) {
    for (int i = 0; i < kRounds; ++i) {
      auto r = a.call_value<int>(t * 100000 + i);
      int v = r.ok() ? *r : 1;
      if (!r.ok() || (v - 1) % 3 != 0) {
        ++bad;
        continue;
      }
      int req = (v - 1) / 3;
      int rt = req / 100000, ri = req % 100000;
      seen_lock.lock();
      if (rt < 0 || rt > 1 || ri >= kRounds || seen[rt][ri]) {
        ++bad;
      } else {
        seen[rt][ri] = true;
      }
      seen_lock.unlock();
    }
    return 0;
  };
  Thread t0 = Thread::create(ThreadOptions{}, [&body] { return body(0); }).value();
  Thread t1 = Thread::create(ThreadOptions{}, [&body] { return body(1); }).value();
  KCHECK(t0.join() == Status::kOk && t1.join() == Status::kOk);
  KCHECK_EQ(bad.load(), 0);
  int answered = 0;
  for (auto& row : seen) {
    for (bool s : row) answered += s;
  }
  KCHECK_EQ(answered, 2 * kRounds);
  a.close();
  KCHECK_EQ(run_to_end(std::move(one)).code, 2 * kRounds);
}

namespace {

// Receives one request (a handle with it: checked and closed), replies
// with a fresh channel end attached, then one without.
int handle_server() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return 1;
  std::byte buf[16];
  Handle got[1];
  auto r = ch->recv(buf, got);
  if (!r.ok() || r->handles != 1) return 2;
  if (handle_close(got[0]) != Status::kOk) return 3;
  auto [x, y] = Channel::create().value();
  Handle give[] = {x.handle()};
  if (ch->send(std::as_bytes(std::span("h", 1)), give) != Status::kOk) return 4;
  auto r2 = ch->recv(buf);  // the plain call's request
  if (!r2.ok()) return 5;
  return ch->send_value(99) == Status::kOk ? 0 : 6;
}

// Not receiving yet when the first request comes.
int late_triple_server() {
  this_thread::sleep_for(5ms);
  return triple_server();
}

// Its first receive is too small for the request: kOverflow, then a
// buffer that fits; replies with the length it got.
int picky_server() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return 1;
  std::byte small[4];
  if (ch->recv(small).status() != Status::kOverflow) return 2;
  std::byte big[64];
  auto r = ch->recv(big);
  if (!r.ok()) return 3;
  return ch->send_value(static_cast<int>(r->bytes)) == Status::kOk ? 0 : 4;
}

}  // namespace

// The general paths: a request behind a queued one, a large one, one with
// handles, a reply with handles, a server that is not waiting, a server
// buffer too small; each still answers correctly, in order.
KTEST(channel_call_fallback_paths, 1) {
  // Queue not empty: two plain sends first (the first may go straight to
  // the waiting server, the second is queued), then a call, whose reply
  // is the first one the server sends: a call takes the next message.
  ProcessOptions o;
  Channel a;
  auto server = spawn_peer(&a, o, triple_server);
  KREQUIRE(server.ok());
  this_thread::sleep_for(2ms);  // the server waits in recv
  KCHECK(a.send_value(1) == Status::kOk);
  KCHECK(a.send_value(2) == Status::kOk);
  auto r3 = a.call_value<int>(3);
  KCHECK(r3.ok() && *r3 == 4);  // the reply to 1
  KCHECK(a.recv_value<int>().value() == 7);
  KCHECK(a.recv_value<int>().value() == 10);
  a.close();
  KCHECK_EQ(run_to_end(std::move(server)).code, 3);

  // A large request and reply (past the direct 256 bytes) through echo_server.
  Channel c;
  auto echo = spawn_peer(&c, o, echo_server);
  KREQUIRE(echo.ok());
  static std::byte req[1000], rep[1000];
  for (std::size_t i = 0; i < sizeof req; ++i) req[i] = static_cast<std::byte>(i * 7);
  for (int round = 0; round < 3; ++round) {
    auto r = c.call(req, rep);
    KREQUIRE(r.ok());
    KCHECK_EQ(r->bytes, sizeof req);
    KCHECK(std::memcmp(req, rep, sizeof req) == 0);
  }
  // A reply buffer too small: kOverflow, the reply stays queued.
  std::byte tiny[8];
  KCHECK(c.call(req, tiny).status() == Status::kOverflow);
  auto rest = c.recv(rep);
  KCHECK(rest.ok() && rest->bytes == sizeof req);
  c.close();
  KCHECK_EQ(run_to_end(std::move(echo)).code, 4);

  // Handles in the request (send then recv), and in the reply (kOverflow
  // for call, then recv with room for it).
  Channel e;
  auto hs = spawn_peer(&e, o, handle_server);
  KREQUIRE(hs.ok());
  auto [spare, spare2] = Channel::create().value();
  Handle carry[] = {spare.handle()};
  std::byte buf[16];
  KCHECK(e.call(std::as_bytes(std::span("q", 1)), buf, kForever, carry).status() == Status::kOverflow);
  Handle got[1];
  auto withh = e.recv(buf, got);
  KCHECK(withh.ok() && withh->handles == 1 && handle_kind(got[0]) == HandleKind::kChannel);
  (void)handle_close(got[0]);
  auto plain = e.call_value<int>(5);
  KCHECK(plain.ok() && *plain == 99);
  KCHECK(run_to_end(std::move(hs)).code == 0);

  // The server is not waiting yet, then a server buffer too small.
  {
    Channel g1;
    auto ls = spawn_peer(&g1, o, late_triple_server);
    KREQUIRE(ls.ok());
    auto v = g1.call_value<int>(11);
    KCHECK(v.ok() && *v == 34);
    g1.close();
    KCHECK_EQ(run_to_end(std::move(ls)).code, 1);
  }
  {
    Channel g1;
    auto ps = spawn_peer(&g1, o, picky_server);
    KREQUIRE(ps.ok());
    this_thread::sleep_for(2ms);  // the server waits with its 4-byte buffer
    std::byte sixteen[16] = {};
    int n = 0;
    auto r = g1.call(sixteen, std::as_writable_bytes(std::span(&n, 1)));
    KCHECK(r.ok() && n == 16);
    KCHECK_EQ(run_to_end(std::move(ps)).code, 0);
  }
}

namespace {

// Receives a request, replies 30 ms later, then waits for the end.
int slow_replier() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return 1;
  int v = 0;
  if (!ch->recv(std::as_writable_bytes(std::span(&v, 1))).ok()) return 2;
  this_thread::sleep_for(30ms);
  if (ch->send_value(v + 1) != Status::kOk) return 3;
  std::byte b[4];
  return ch->recv(b).status() == Status::kClosed ? 0 : 4;
}

// Dies with a request in hand.
int die_on_request() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return 1;
  std::byte b[8];
  (void)ch->recv(b);
  *static_cast<volatile int*>(nullptr) = 1;
  return 2;
}

// One call, then dies (its server waits in reply_and_recv).
int call_once_then_die() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return 1;
  if (!ch->call_value<int>(1).ok()) return 2;
  *static_cast<volatile int*>(nullptr) = 1;
  return 3;
}

// Calls and waits forever (nobody answers).
int call_forever() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return 1;
  (void)ch->call_value<int>(1);
  return 2;
}

}  // namespace

KTEST(channel_call_timeouts_and_peer_death, 1) {
  // Both ends here: the request is queued, the wait times out; the same
  // for reply_and_recv.
  auto [a, b] = Channel::create().value();
  std::byte buf[8];
  KCHECK(a.call(std::as_bytes(std::span("ab", 2)), buf, deadline_after(5ms)).status() == Status::kTimedOut);
  auto req = b.recv(buf);
  KCHECK(req.ok() && req->bytes == 2);
  KCHECK(b.reply_and_recv(std::as_bytes(std::span("cd", 2)), buf, deadline_after(5ms)).status() == Status::kTimedOut);
  auto rep = a.recv(buf);
  KCHECK(rep.ok() && rep->bytes == 2);
  // A deadline already passed: the request still goes out (as send would).
  KCHECK(a.call(std::as_bytes(std::span("x", 1)), buf, deadline_after(0ns)).status() == Status::kTimedOut);
  KCHECK(b.recv(buf).ok());

  // A server slower than the deadline: kTimedOut, and its late reply is
  // what the next receive on the end takes.
  ProcessOptions o;
  Channel c;
  auto slow = spawn_peer(&c, o, slow_replier);
  KREQUIRE(slow.ok());
  KCHECK(c.call_value<int>(41, deadline_after(5ms)).status() == Status::kTimedOut);
  auto late = c.recv_value<int>();
  KCHECK(late.ok() && *late == 42);
  c.close();
  KCHECK_EQ(run_to_end(std::move(slow)).code, 0);

  // The server dies holding the request: the caller's call says kClosed.
  Channel e;
  auto dies = spawn_peer(&e, o, die_on_request);
  KREQUIRE(dies.ok());
  KCHECK(e.call_value<int>(1).status() == Status::kClosed);
  KCHECK(run_to_end(std::move(dies)).kind == ExitKind::kFaulted);

  // The caller dies while its server waits in reply_and_recv: kClosed there.
  CallPair p = spawn_call_pair(CpuMask::all(), CpuMask::all(), call_once_then_die);
  KREQUIRE(p.server.ok() && p.caller.ok());
  KCHECK(run_to_end(std::move(p.caller)).kind == ExitKind::kFaulted);
  KCHECK_EQ(run_to_end(std::move(p.server)).code, 1);

  // A process killed while it waits in a call ends (the wait is interrupted).
  Channel g;
  auto waiting = spawn_peer(&g, o, call_forever);
  KREQUIRE(waiting.ok());
  KCHECK(g.recv_value<int>().value() == 1);  // the request came: it now waits for the reply
  this_thread::sleep_for(1ms);
  KCHECK(waiting->kill() == Status::kOk);
  KCHECK(run_to_end(std::move(waiting)).kind == ExitKind::kKilled);
  KCHECK(g.call_value<int>(2).status() == Status::kClosed);
}

namespace {

// Bad arguments to call from a process (handle 0: a triple server; 1: a
// shared region): refused with kInvalidArgument or kNotFound, never a
// kernel fault, nothing lost.
int bad_calls() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return 1;
  auto* kern = reinterpret_cast<std::byte*>(this_process::kernel_space_address());
  int v = 5;
  auto vb = std::as_bytes(std::span(&v, 1));
  int out = 0;
  auto ob = std::as_writable_bytes(std::span(&out, 1));
  // An unreadable request: nothing sent.
  if (ch->call(std::span<const std::byte>(kern, 4), ob).status() != Status::kInvalidArgument) return 2;
  auto* null_page = reinterpret_cast<std::byte*>(std::uintptr_t{16});
  if (ch->call(std::span<const std::byte>(null_page, 4), ob).status() != Status::kInvalidArgument) return 3;
  // Too long.
  static std::byte huge[kMaxMessageBytes + 1];
  if (ch->call(huge, ob).status() != Status::kInvalidArgument) return 4;
  // Forged, closed and wrong-kind handles.
  if (detail::channel_call(Handle{0x12345}, vb, ob, kForever).status() != Status::kNotFound) return 5;
  if (detail::channel_call(this_process::handle(1), vb, ob, kForever).status() != Status::kInvalidArgument) return 6;
  // An unwritable reply buffer (kernel, null page, read-only code): the
  // request went, the reply stays queued for a good buffer.
  std::byte* bad_bufs[] = {kern, null_page, reinterpret_cast<std::byte*>(&bad_calls)};
  for (int i = 0; i < 3; ++i) {
    if (ch->call(vb, std::span<std::byte>(bad_bufs[i], 4)).status() != Status::kInvalidArgument) return 10 + i;
    auto kept = ch->recv_value<int>();
    if (!kept.ok() || *kept != 16) return 20 + i;
  }
  // Raw system calls with absurd lengths.
  using kernel::kSysChannelCall;
  std::uint64_t h = ch->handle().value;
  auto user_arg = [](const void* p) { return reinterpret_cast<std::uint64_t>(p); };
  auto status_from = [](std::uint64_t r) { return static_cast<Status>(static_cast<int>(r & 0xff)); };
  if (status_from(arch::user_syscall(kSysChannelCall, h, user_arg(&v), ~0ull, user_arg(&out), 4, ~0ull >> 1)) !=
      Status::kInvalidArgument) {
    return 30;
  }
  if (status_from(arch::user_syscall(kSysChannelCall, h, ~0ull - 2, 4, user_arg(&out), 4, ~0ull >> 1)) !=
      Status::kInvalidArgument) {
    return 31;
  }
  // A reply buffer of absurd capacity at a bad address: still the reply is
  // kept (the buffer is checked for the reply's length).
  if (status_from(arch::user_syscall(kSysChannelCall, h, user_arg(&v), 4, ~0ull - 100, ~0ull, ~0ull >> 1)) !=
      Status::kInvalidArgument) {
    return 32;
  }
  if (ch->recv_value<int>().value() != 16) return 33;
  // And a good call still works.
  auto ok = ch->call_value<int>(2);
  return ok.ok() && *ok == 7 ? 0 : 40;
}

}  // namespace

KTEST(channel_call_bad_arguments_from_a_process, 1) {
  auto [a, b] = Channel::create().value();
  auto shm = SharedMemory::create(4096);
  KREQUIRE(shm.ok());
  Handle ga[] = {a.handle()};
  Handle gb[] = {b.handle(), shm->handle()};
  ProcessOptions os, oc;
  os.handles = ga;
  oc.handles = gb;
  auto server = Process::spawn(os, triple_server);
  auto bad = Process::spawn(oc, bad_calls);
  KREQUIRE(server.ok() && bad.ok());
  a.close();
  b.close();
  ExitStatus st = run_to_end(std::move(bad));
  char why[160];
  if (!st.success()) KFAIL("bad calls: %s", st.describe(why, sizeof why));
  KCHECK_EQ(run_to_end(std::move(server)).code, 5);
}

// ---------------------------------------------------------------------------
// The call fast path (kernel::syscall_fast, uchannel.cc "The call fast
// path") between two processes: every case it must leave to the general
// path, and waits of a caller parked by it that end otherwise than by a
// reply (overflow, the server's death, a kill).

namespace {

// Echoes each request back with reply_and_recv (so it waits parked, as the
// fast path wants its peer); a request starting with 'D' kills it. After a
// request starting with 'B' it waits for the next one with an unwritable
// buffer (read-only code): the caller that completes that wait cannot
// deliver, so the wait ends with kInvalidArgument and the request stays
// queued, to be received with a good buffer.
int echo_reply_server() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return -1;
  static std::byte buf[2048];
  auto first = ch->recv(buf);
  if (!first.ok()) return -2;
  std::size_t n = first->bytes;
  for (;;) {
    if (n > 0 && buf[0] == std::byte{'D'}) *static_cast<volatile int*>(nullptr) = 1;
    bool bad_next = n > 0 && buf[0] == std::byte{'B'};
    auto* code = reinterpret_cast<std::byte*>(&echo_reply_server);
    auto r = ch->reply_and_recv(std::span<const std::byte>(buf, n),
                                bad_next ? std::span<std::byte>(code, 16) : std::span<std::byte>(buf));
    if (bad_next) {
      if (r.status() != Status::kInvalidArgument) return -4;
      auto kept = ch->recv(buf);  // the request that could not be delivered
      if (!kept.ok()) return -5;
      n = kept->bytes;
      continue;
    }
    if (!r.ok()) return r.status() == Status::kClosed ? 0 : -3;
    n = r->bytes;
  }
}

// Calls echo_reply_server on handle 0 with the sizes and options the fast
// path takes and refuses. 0 when every reply is right.
int fast_path_client() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return 1;
  static std::byte req[1000], rep[1000];
  for (std::size_t i = 0; i < sizeof req; ++i) req[i] = static_cast<std::byte>(i * 13 + 1);
  // Sizes around the direct limit (256), with and without a deadline.
  std::size_t sizes[] = {0, 1, 4, 5, 16, 255, 256, 257, 1000};
  for (std::size_t n : sizes) {
    for (int timed = 0; timed < 2; ++timed) {
      std::memset(rep, 0, sizeof rep);
      auto r = ch->call(std::span<const std::byte>(req, n), rep, timed ? deadline_after(1s) : kForever);
      if (!r.ok() || r->bytes != n || std::memcmp(req, rep, n) != 0) return 10;
    }
  }
  // A reply longer than the caller's buffer: kOverflow, the reply stays queued.
  if (ch->call(std::span<const std::byte>(req, 8), std::span<std::byte>(rep, 4)).status() != Status::kOverflow) return 20;
  auto kept = ch->recv(rep);
  if (!kept.ok() || kept->bytes != 8 || std::memcmp(req, rep, 8) != 0) return 21;
  // An unwritable reply buffer (kernel, null page, read-only code): the
  // reply arrives by the fast path, which cannot deliver it, so the call
  // says kInvalidArgument and the reply stays queued for a good buffer.
  auto* kern = reinterpret_cast<const std::byte*>(this_process::kernel_space_address());
  std::byte* bad_bufs[] = {const_cast<std::byte*>(kern), reinterpret_cast<std::byte*>(std::uintptr_t{16}),
                           reinterpret_cast<std::byte*>(&fast_path_client)};
  for (int i = 0; i < 3; ++i) {
    if (ch->call(std::span<const std::byte>(req, 4), std::span<std::byte>(bad_bufs[i], 4)).status() !=
        Status::kInvalidArgument) {
      return 22 + i;
    }
    auto reply = ch->recv(rep);
    if (!reply.ok() || reply->bytes != 4 || std::memcmp(req, rep, 4) != 0) return 25 + i;
  }
  // The server waits with an unwritable buffer after 'B': this call's
  // request cannot be delivered to it, is queued, and the server takes it
  // from there and answers.
  std::byte b_req[6] = {std::byte{'B'}, std::byte{1}, std::byte{2}};
  auto b = ch->call(b_req, rep);
  if (!b.ok() || b->bytes != sizeof b_req || std::memcmp(b_req, rep, sizeof b_req) != 0) return 28;
  auto after_b = ch->call(std::span<const std::byte>(req, 12), rep);
  if (!after_b.ok() || after_b->bytes != 12 || std::memcmp(req, rep, 12) != 0) return 29;
  // An unreadable request: nothing sent; then a good call still works.
  if (ch->call(std::span<const std::byte>(kern, 4), rep).status() != Status::kInvalidArgument) return 30;
  auto again = ch->call(std::span<const std::byte>(req, 4), rep);
  if (!again.ok() || again->bytes != 4) return 31;
  // The server dies holding the request: kClosed for the parked caller.
  std::byte die[4] = {std::byte{'D'}};
  auto st = ch->call(die, rep).status();
  return st == Status::kClosed ? 0 : 40;
}

// Receives one request, says so on handle 1, and then waits for more,
// never replying.
int swallow_server() {
  auto ch = Channel::adopt(this_process::handle(0));
  auto note = Channel::adopt(this_process::handle(1));
  if (!ch.ok() || !note.ok()) return -1;
  std::byte b[8];
  if (!ch->recv(b).ok()) return -2;
  if (note->send_value(1) != Status::kOk) return -4;
  auto r = ch->recv(b);
  return r.status() == Status::kClosed ? 0 : -3;
}

}  // namespace

KTEST(channel_call_fast_path_fallbacks_between_processes, 1) {
  {
    // One CPU: the direct hand-off applies.
    CallPair p = spawn_pair(echo_reply_server, CpuMask::only(0), CpuMask::only(0), fast_path_client);
    KREQUIRE(p.server.ok() && p.caller.ok());
    ExitStatus c = run_to_end(std::move(p.caller));
    KCHECK(c.kind == ExitKind::kExited);
    KCHECK_EQ(c.code, 0);
    KCHECK(run_to_end(std::move(p.server)).kind == ExitKind::kFaulted);
  }
  {
    // A caller parked by the fast path (the server took the request and
    // waits elsewhere) is killed: its wait ends, it ends. The kill waits
    // for the server's word that it has the request (a fixed sleep lost
    // that race on a loaded host: the caller died before its call, and the
    // server's first recv said kClosed).
    auto [a, b] = Channel::create().value();
    auto [note_here, note_there] = Channel::create().value();
    Handle ga[] = {a.handle()};
    Handle gb[] = {b.handle(), note_there.handle()};
    ProcessOptions os, oc;
    os.handles = gb;
    oc.handles = ga;
    os.affinity = oc.affinity = CpuMask::only(0);
    CallPair p{Process::spawn(os, swallow_server), Process::spawn(oc, call_forever)};
    KREQUIRE(p.server.ok() && p.caller.ok());
    a.close();  // the processes hold their own: the server sees kClosed when the caller dies
    b.close();
    note_there.close();
    auto noted = note_here.recv_value<int>(deadline_after(30s));
    KCHECK(noted.ok() && *noted == 1);
    KCHECK(p.caller->kill() == Status::kOk);
    KCHECK(run_to_end(std::move(p.caller)).kind == ExitKind::kKilled);
    KCHECK_EQ(run_to_end(std::move(p.server)).code, 0);
  }
}

// ---------------------------------------------------------------------------
// call_value / reply_and_recv_value in registers (system call 26,
// kSysChannelCallRegs): values of up to 16 bytes with no deadline go to the
// peer's registers or buffer and come back in the caller's registers when
// the fast path applies; otherwise the call is made with buffers (or the
// reply received with kSysChannelRecv), with the same results.

namespace {

// The triple server in registers: reply_and_recv_value. With
// `alternate`, its odd-numbered waits have a deadline 50 ms ahead and its
// even-numbered ones none (see timed_triple_server). Returns the requests
// served; a wait that timed out: -100 - its number.
int serve_triple_values(bool alternate) {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return -1;
  auto first = ch->recv_value<int>();
  if (!first.ok()) return first.status() == Status::kClosed ? 0 : -2;
  int v = *first;
  for (int n = 1;; ++n) {
    auto r = ch->reply_and_recv_value<int>(v * 3 + 1, alternate && n % 2 ? deadline_after(50ms) : kForever);
    if (!r.ok()) return r.status() == Status::kClosed ? n : r.status() == Status::kTimedOut ? -100 - n : -3;
    v = *r;
  }
}
int value_triple_server() { return serve_triple_values(false); }

// triple_caller with buffers (Channel::call), against value_triple_server.
int span_triple_caller(int rounds) {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return -1;
  for (int i = 0; i < rounds; ++i) {
    int reply = 0;
    auto r = ch->call(std::as_bytes(std::span(&i, 1)), std::as_writable_bytes(std::span(&reply, 1)));
    if (!r.ok() || r->bytes != sizeof reply || reply != i * 3 + 1) return -2;
  }
  return 0;
}

struct Four {
  std::uint32_t a, b, c, d;
};

// Against echo_reply_server (which echoes bytes with buffers, dies on a
// request whose first byte is 'D' and changes its buffer after one whose
// first byte is 'B': no other request here starts with either byte, the
// last one does): every size up to 16 bytes, replies of another
// size, the register words past a reply, bad arguments, the server's death.
int value_echo_client() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return 1;
  // 1, 4, 8, 12 and 16 bytes each way.
  for (int i = 0; i < 50; ++i) {
    auto c = ch->call_value<char>(static_cast<char>('a' + i % 26));
    if (!c.ok() || *c != 'a' + i % 26) return 2;
    auto n = ch->call_value<int>(i * 1000 + 7);
    if (!n.ok() || *n != i * 1000 + 7) return 3;
    auto l = ch->call_value<std::uint64_t>(0x0123456789abcdefull + i);
    if (!l.ok() || *l != 0x0123456789abcdefull + i) return 4;
    struct Twelve {
      std::uint32_t w[3];
    };
    auto t = ch->call_value<Twelve>(Twelve{{1u + i, 2u, 3u}});
    if (!t.ok() || t->w[0] != 1u + i || t->w[1] != 2 || t->w[2] != 3) return 5;
    auto f = ch->call_value<Four>(Four{0xa0u + i, 0xb0, 0xc0, 0xd0});
    if (!f.ok() || f->a != 0xa0u + i || f->b != 0xb0 || f->c != 0xc0 || f->d != 0xd0) return 6;
  }
  // A reply shorter than R: kInvalidArgument, the reply consumed.
  if (ch->call_value<std::uint64_t>(5).status() != Status::kInvalidArgument) return 10;
  // A reply longer than R: kOverflow, the reply stays queued.
  if (ch->call_value<char>(0x11223355).status() != Status::kOverflow) return 11;
  auto kept = ch->recv_value<int>();
  if (!kept.ok() || *kept != 0x11223355) return 12;
  // The raw call: the request's bytes past its length (x3 here) never
  // reach the server, and the reply's registers hold its byte and zeros
  // (no stale kernel data). Each round the server is parked in its
  // reply_and_recv, so the fast path runs; the other answers say to make
  // the call with buffers or to receive the reply, and count as misses.
  using kernel::kSysChannelCallRegs;
  const std::uint64_t h = ch->handle().value;
  int fast = 0;
  for (int i = 0; i < 20; ++i) {
    arch::UserRegs r = arch::user_syscall_regs(kSysChannelCallRegs, h, 1, 0x61 + i, 0x5a5a5a5a5a5a5a5aull, 16);
    if ((r.x0 & 0xff) >= 0xfd) {  // not fast: take the reply off the end and go on
      std::byte b[16];
      if (r.x0 == 0xfe && !ch->call(std::as_bytes(std::span("A", 1)), b).ok()) return 20;
      if (r.x0 == 0xfd && !ch->recv(b).ok()) return 21;
      continue;
    }
    if (r.x0 != (1u << 8) || r.x1 != 0x61u + i || r.x2 != 0) return 22;
    ++fast;
  }
  if (fast == 0) return 23;
  // Lengths past 16 bytes: kInvalidArgument, nothing sent.
  if ((arch::user_syscall_regs(kSysChannelCallRegs, h, 17, 0, 0, 4).x0 & 0xff) != 6) return 24;
  if ((arch::user_syscall_regs(kSysChannelCallRegs, h, 4, 0, 0, 17).x0 & 0xff) != 6) return 25;
  // A forged handle: kNotFound (through the call with buffers).
  std::uint64_t words[2];
  if ((detail::channel_call_regs(Handle{0x12345}, 4, 1, 0, 4, words) & 0xff) != 10) return 26;
  // Still in step: a good call.
  auto ok = ch->call_value<int>(77);
  if (!ok.ok() || *ok != 77) return 27;
  // The server dies holding the request: kClosed for the caller parked by
  // the fast path in registers (its wait ends without a reply, and the
  // receive it then makes finds the end closed).
  return ch->call_value<char>('D').status() == Status::kClosed ? 0 : 40;
}

}  // namespace

KTEST(channel_call_value_in_registers, 1) {
  const CpuMask all = CpuMask::all(), one = CpuMask::only(0);  // one CPU: the direct hand-off applies
  {  // Values both ways, on any CPUs.
    CallPair p = spawn_pair(value_triple_server, all, all, triple_caller, 3000, 5, false);
    KREQUIRE(p.server.ok() && p.caller.ok());
    KCHECK_EQ(run_to_end(std::move(p.caller)).code, 0);
    KCHECK_EQ(run_to_end(std::move(p.server)).code, 3000);
  }
  {  // A caller with buffers, the server in registers.
    CallPair p = spawn_pair(value_triple_server, one, one, span_triple_caller, 1000);
    KREQUIRE(p.server.ok() && p.caller.ok());
    KCHECK_EQ(run_to_end(std::move(p.caller)).code, 0);
    KCHECK_EQ(run_to_end(std::move(p.server)).code, 1000);
  }
  {  // Sizes, mismatches, raw registers, bad arguments, the server's death.
    CallPair p = spawn_pair(echo_reply_server, one, one, value_echo_client);
    KREQUIRE(p.server.ok() && p.caller.ok());
    ExitStatus c = run_to_end(std::move(p.caller));
    KCHECK(c.kind == ExitKind::kExited);
    KCHECK_EQ(c.code, 0);
    KCHECK(run_to_end(std::move(p.server)).kind == ExitKind::kFaulted);
  }
}

KTEST(channel_call_value_round_trip_between_two_processes, 1) {
  // One CPU: the time is the instructions of the round trip.
  CallPair p = spawn_pair(value_triple_server, CpuMask::only(0), CpuMask::only(0), triple_caller, 2000, 0, true);
  KREQUIRE(p.server.ok() && p.caller.ok());
  ExitStatus c = run_to_end(std::move(p.caller));
  KCHECK(c.kind == ExitKind::kExited && c.code > 0);
  KCHECK_EQ(run_to_end(std::move(p.server)).code, 2000);
  print("  channel call round trip (call_value / reply_and_recv_value, registers) between two processes on one CPU: "
        "%d ns (= instructions under -icount)\n",
        c.code);
}

// ---------------------------------------------------------------------------
// Calls with a deadline on the fast path: call_value (system call 26 with
// the deadline flag, 1 << 8 in its length) and call with buffers (25). The
// caller's timer is armed as it parks; a peer that waits with a deadline of
// its own has its timer disarmed when a fast call hands it the CPU.

namespace {

// A deadline a second ahead, as system call 26 takes it in x5.
std::uint64_t raw_deadline_1s() { return static_cast<std::uint64_t>(deadline_after(1s).time_since_epoch().count()); }

// Against value_triple_server: call_value and call (buffers) with a
// deadline, every reply right; then raw register calls with the deadline
// flag, most of them answered by the fast path in registers.
int timed_triple_caller(int rounds) {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return -1;
  for (int i = 0; i < rounds; ++i) {
    auto r = ch->call_value<int>(i, deadline_after(1s));
    if (!r.ok() || *r != i * 3 + 1) return -2;
    int reply = 0;
    auto b = ch->call(std::as_bytes(std::span(&i, 1)), std::as_writable_bytes(std::span(&reply, 1)),
                      deadline_after(1s));
    if (!b.ok() || b->bytes != sizeof reply || reply != i * 3 + 1) return -3;
  }
  const std::uint64_t h = ch->handle().value;
  int fast = 0;
  for (std::uint64_t i = 0; i < 20; ++i) {
    arch::UserRegs r = arch::user_syscall_regs(kernel::kSysChannelCallRegs, h, 4 | 1u << 8, i, 0, 4, raw_deadline_1s());
    if ((r.x0 & 0xff) >= 0xfd) {  // not fast: take the reply off the end and go on
      int v = static_cast<int>(i), reply = 0;
      auto out = std::as_writable_bytes(std::span(&reply, 1));
      if (r.x0 == 0xfe && !ch->call(std::as_bytes(std::span(&v, 1)), out).ok()) return -4;
      if (r.x0 == 0xfd && !ch->recv(out).ok()) return -5;
      continue;
    }
    if (r.x0 != (4u << 8) || r.x1 != i * 3 + 1 || r.x2 != 0) return -6;
    ++fast;
  }
  return fast > 0 ? 0 : -7;
}

// The triple server; its odd-numbered waits have a deadline 50 ms ahead
// (and a request within 1 ms: spaced_caller), its even-numbered ones none
// (and a request 60 ms later). No wait may time out: a timer armed for a
// timed wait and left armed when a fast call handed this thread the CPU
// would end the untimed wait after it.
int timed_triple_server() { return serve_triple_values(true); }

// call_value with no deadline, `rounds` times, then 1 ms apart after an
// even-numbered call and 60 ms apart after an odd-numbered one (see
// timed_triple_server).
int spaced_caller(int rounds) {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return -1;
  for (int i = 0; i < rounds; ++i) {
    auto r = ch->call_value<int>(i);
    if (!r.ok() || *r != i * 3 + 1) return -2;
    this_thread::sleep_for(i % 2 ? 60ms : 1ms);
  }
  return 0;
}

// Receives one request and answers it 30 ms late (v + 1), then triples.
int late_first_server() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return -1;
  auto first = ch->recv_value<int>();
  if (!first.ok()) return -2;
  this_thread::sleep_for(30ms);
  if (ch->send_value(*first + 1) != Status::kOk) return -3;
  return serve_triple(*ch) >= 0 ? 0 : -4;
}

// Against late_first_server, which is parked in its receive when the call
// comes (so the caller parks on the fast path): a 5 ms deadline ends the
// call with kTimedOut, not the reply 30 ms later, which the next receive
// takes. A deadline already past: kTimedOut, the request still sent (the
// general path's rule, which the fast path leaves such calls to).
int timing_out_caller() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return 1;
  this_thread::sleep_for(10ms);  // the server parks in its receive
  TimePoint t0 = Clock::now();
  if (ch->call_value<int>(41, deadline_after(5ms)).status() != Status::kTimedOut) return 2;
  if (Clock::now() - t0 < 5ms) return 3;
  auto late = ch->recv_value<int>();
  if (!late.ok() || *late != 42) return 4;
  if (ch->call_value<int>(7, deadline_after(0ns)).status() != Status::kTimedOut) return 5;
  auto r = ch->recv_value<int>();
  if (!r.ok() || *r != 22) return 6;
  // In step again: a timed call that the server answers at once.
  auto ok = ch->call_value<int>(5, deadline_after(1s));
  return ok.ok() && *ok == 16 ? 0 : 7;
}

// A call with a 300 ms deadline that nobody answers (the test holds the
// other end and kills this process while it waits).
int call_timed_unanswered() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return 1;
  (void)ch->call_value<int>(1, deadline_after(300ms));
  return 2;
}

}  // namespace

KTEST(channel_call_with_a_deadline_takes_the_fast_path, 1) {
  const CpuMask all = CpuMask::all(), one = CpuMask::only(0);
  for (CpuMask cpus : {one, all}) {  // timed calls in registers and with buffers
    CallPair p = spawn_pair(value_triple_server, cpus, cpus, timed_triple_caller, 500);
    KREQUIRE(p.server.ok() && p.caller.ok());
    KCHECK_EQ(run_to_end(std::move(p.caller)).code, 0);
    KCHECK_EQ(run_to_end(std::move(p.server)).code, 1000 + 20);
  }
  for (CpuMask cpus : {one, all}) {  // a server waiting with deadlines: none ends early
    CallPair p = spawn_pair(timed_triple_server, cpus, cpus, spaced_caller, 16);
    KREQUIRE(p.server.ok() && p.caller.ok());
    KCHECK_EQ(run_to_end(std::move(p.caller)).code, 0);
    KCHECK_EQ(run_to_end(std::move(p.server)).code, 16);
  }
  {  // a timeout while parked by the fast path; a deadline already past
    CallPair p = spawn_pair(late_first_server, one, one, timing_out_caller);
    KREQUIRE(p.server.ok() && p.caller.ok());
    KCHECK_EQ(run_to_end(std::move(p.caller)).code, 0);
    KCHECK_EQ(run_to_end(std::move(p.server)).code, 0);
  }
  {  // killed while parked with its timer armed: the timer goes with the
     // thread (it would fire into a freed thread 300 ms later otherwise)
    Channel g;
    ProcessOptions o;
    o.affinity = CpuMask::only(0);
    auto waiting = spawn_peer(&g, o, call_timed_unanswered);
    KREQUIRE(waiting.ok());
    KCHECK(g.recv_value<int>().value() == 1);
    KCHECK(waiting->kill() == Status::kOk);
    KCHECK(run_to_end(std::move(waiting)).kind == ExitKind::kKilled);
    this_thread::sleep_for(400ms);
    auto [a, b] = Channel::create().value();  // the kernel still works
    KCHECK(a.send_value(3) == Status::kOk);
    KCHECK(b.recv_value<int>().value() == 3);
  }
}
