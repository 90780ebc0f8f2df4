// Handles and channels on aarch64 (kernel/src/uchannel.cc), between the
// kernel's first process (the test) and processes: boundaries, order and
// errors, bounded queues, handles given at spawn and passed in messages,
// forged and stale handles, a peer's death, bad buffers from a process, and
// ProcessPool on top of them.
#include <arch/arch.h>
#include <spindle/spindle.h>

#include <atomic>

#include "../kernel/ktest.h"
#include "../kernel/ktest_util.h"
#include "process_util.h"

using namespace spindle;
using namespace std::chrono_literals;
using ktest::run_to_end;
using ktest::ticks;

namespace {

constexpr std::size_t kDirectBytesForTests = 256;  // uchannel.cc: kDirectBytes

// Echoes every message back until the channel closes; returns the count.
int echo_server() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return -1;
  static std::byte buf[kMaxMessageBytes];  // a thread's stack is 64 KiB
  int n = 0;
  for (;;) {
    auto r = ch->recv(buf);
    if (!r.ok()) return r.status() == Status::kClosed ? n : -2;
    if (ch->send(std::span<const std::byte>(buf, r->bytes)) != Status::kOk) return -3;
    ++n;
  }
}

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
int crash_on(int x) {
  if (x == 3) *static_cast<volatile int*>(nullptr) = 1;
  return x;
}


}  // namespace

KTEST(channel_round_trip_boundaries_and_errors, 1) {
  auto pair = Channel::create();
  KREQUIRE(pair.ok());
  Channel& a = pair->first;
  Channel& b = pair->second;
  KCHECK(a.send_value(1) == Status::kOk);
  KCHECK(a.send(std::as_bytes(std::span("hello", 5))) == Status::kOk);
  KCHECK(b.recv_value<int>().value() == 1);
  std::byte buf[16];
  auto r = b.recv(buf);
  KREQUIRE(r.ok());
  KCHECK_EQ(r->bytes, 5u);
  // Too small a buffer: kOverflow, the message stays.
  KCHECK(a.send(std::as_bytes(std::span("0123456789", 10))) == Status::kOk);
  KCHECK(b.recv(std::span(buf, 4)).status() == Status::kOverflow);
  auto r10 = b.recv(buf);
  KCHECK(r10.ok() && r10->bytes == 10);
  // Too long, timeouts, forged and closed handles, duplicates.
  static std::byte huge[kMaxMessageBytes + 1];
  KCHECK(a.send(huge) == Status::kInvalidArgument);
  KCHECK(b.recv_for(buf, 20ms).status() == Status::kTimedOut);
  KCHECK(detail::channel_try_send(a.handle(), {}, {}) == Status::kOk);
  KCHECK(detail::channel_try_recv(b.handle(), buf, {}).ok());
  KCHECK(detail::channel_try_recv(b.handle(), buf, {}).status() == Status::kWouldBlock);
  KCHECK(detail::channel_send(Handle{0xdead01}, {}, {}, kForever) == Status::kNotFound);
  auto dup = handle_duplicate(a.handle(), Access::kReadOnly);
  KREQUIRE(dup.ok());
  KCHECK(handle_duplicate(*dup, Access::kReadWrite).status() == Status::kInvalidArgument);
  KCHECK(handle_close(*dup) == Status::kOk);
  Handle stale = a.handle();
  a.close();
  KCHECK(handle_kind(stale) == HandleKind::kNone);
  KCHECK(handle_close(stale) == Status::kNotFound);
  KCHECK(detail::channel_send(stale, {}, {}, kForever) == Status::kNotFound);
  // The peer is gone: kClosed.
  KCHECK(b.recv(buf).status() == Status::kClosed);
  KCHECK(b.send_value(1) == Status::kClosed);
}

KTEST(channel_full_queue_blocks_until_deadline, 1) {
  auto pair = Channel::create().value();
  static std::byte chunk[kMaxMessageBytes];
  int sent = 0;
  Status s;
  while ((s = pair.first.send(chunk, {}, deadline_after(20ms))) == Status::kOk) ++sent;
  KCHECK(s == Status::kTimedOut);
  KCHECK(sent > 0);
  static std::byte buf[kMaxMessageBytes];
  KCHECK(pair.second.recv(buf).ok());
  KCHECK(pair.first.send(chunk, {}, deadline_after(1s)) == Status::kOk);  // room again
}

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

KTEST(process_pool_results_crash_and_replacement, 2) {
  ProcessPool pool(3);
  KREQUIRE(pool.status() == Status::kOk);
  int xs[] = {1, 2, 3, 4, 5, 6, 7, 8};
  auto sq = pool.map(square, xs);
  for (int i = 0; i < 8; ++i) KCHECK_EQ(sq[i].get().value(), xs[i] * xs[i]);
  auto mixed = pool.map(crash_on, xs);
  for (int i = 0; i < 8; ++i) {
    auto r = mixed[i].get();
    if (xs[i] == 3) {
      KCHECK(r.status() == Status::kFaulted);
    } else {
      KCHECK(r.ok() && *r == xs[i]);
    }
  }
  ProcessPoolStats st = pool.stats();
  KCHECK_EQ(st.crashes, 1u);
  KCHECK_EQ(st.replaced, 1u);
  KCHECK(st.last_crash.kind == ExitKind::kFaulted && st.last_crash.fault == FaultKind::kBadAccess);
  KCHECK(pool.shutdown() == Status::kOk);
  KCHECK(pool.submit(square, 2).status() == Status::kClosed);
}

namespace {

// Receives a shared-memory handle in a message and writes to the region.
int write_granted() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return 1;
  Handle h[1];
  std::byte b[8];
  auto r = ch->recv(b, h);
  if (!r.ok() || r->handles != 1) return 2;
  auto shm = SharedMemory::adopt(h[0]);
  if (!shm.ok()) return 3;
  if (shm->access() == Access::kReadOnly) {
    if (handle_duplicate(shm->handle(), Access::kReadWrite).status() != Status::kInvalidArgument) return 4;
    if (std::to_integer<int>(shm->data()[0]) != 42) return 5;
  }
  shm->data()[0] = std::byte{99};  // faults on a read-only mapping
  return 0;
}

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

KTEST(shared_memory_grants_read_write_and_read_only, 1) {
  auto shm = SharedMemory::create(100);
  KREQUIRE(shm.ok());
  KCHECK_EQ(shm->size(), arch::kPageSize);
  shm->data()[0] = std::byte{42};
  for (Access access : {Access::kReadWrite, Access::kReadOnly}) {
    auto [mine, theirs] = Channel::create().value();
    Handle give[] = {theirs.handle()};
    ProcessOptions o;
    o.handles = give;
    auto p = Process::spawn(o, write_granted);
    KREQUIRE(p.ok());
    auto grant = handle_duplicate(shm->handle(), access);
    KREQUIRE(grant.ok());
    Handle hs[] = {*grant};
    KCHECK(mine.send(std::as_bytes(std::span("x", 1)), hs) == Status::kOk);
    KCHECK(handle_close(*grant) == Status::kOk);
    ExitStatus st = run_to_end(std::move(p));
    if (access == Access::kReadWrite) {
      KCHECK(st.kind == ExitKind::kExited && st.code == 0);
      KCHECK(std::to_integer<int>(shm->data()[0]) == 99);  // the child's write is visible here
      shm->data()[0] = std::byte{42};
    } else {
      KCHECK(st.kind == ExitKind::kFaulted && st.fault == FaultKind::kBadAccess);
      KCHECK(std::to_integer<int>(shm->data()[0]) == 42);
    }
  }
  KCHECK(SharedMemory::create(0).status() == Status::kInvalidArgument);
  KCHECK(SharedMemory::adopt(Handle{77}).status() == Status::kNotFound);
  auto ch = Channel::create().value();
  KCHECK(SharedMemory::adopt(ch.first.handle()).status() == Status::kInvalidArgument);
  KCHECK(ch.first.send_value(1) == Status::kOk);
  KCHECK(detail::channel_send(shm->handle(), {}, {}, kForever) == Status::kInvalidArgument);
}

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

// The same ping-pong with call / reply_and_recv (one system call each way).
int call_ping(int rounds) {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return -1;
  std::uint64_t t0 = ticks();
  for (int i = 0; i < rounds; ++i) {
    auto v = ch->call_value<int>(i);
    if (!v.ok() || *v != i) return -3;
  }
  return static_cast<int>((ticks() - t0) * 16 / static_cast<std::uint64_t>(rounds));
}

// Serves calls: echoes each request as the reply until the channel closes;
// returns the count.
int call_server() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return -1;
  std::byte buf[kDirectBytesForTests];
  auto first = ch->recv(buf);
  if (!first.ok()) return first.status() == Status::kClosed ? 0 : -2;
  std::size_t bytes = first->bytes;
  for (int n = 1;; ++n) {
    auto r = ch->reply_and_recv(std::span<const std::byte>(buf, bytes), buf);
    if (!r.ok()) return r.status() == Status::kClosed ? n : -2;
    bytes = r->bytes;
  }
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

KTEST(channel_call_round_trip_between_two_processes, 1) {
  auto [a, b] = Channel::create().value();
  Handle ga[] = {a.handle()};
  Handle gb[] = {b.handle()};
  ProcessOptions oa, ob;
  oa.handles = ga;
  ob.handles = gb;
  oa.affinity = CpuMask::only(0);
  ob.affinity = CpuMask::only(0);  // one CPU: the time is the instructions of the round trip
  auto server = Process::spawn(ob, call_server);
  auto pinger = Process::spawn(oa, call_ping, 2000);
  KREQUIRE(server.ok() && pinger.ok());
  a.close();
  b.close();
  ExitStatus st = run_to_end(std::move(pinger));
  KCHECK(st.kind == ExitKind::kExited && st.code > 0);
  print("  channel call round trip (call / reply_and_recv) between two processes on one CPU: %d ns (= instructions under -icount)\n", st.code);
  KCHECK_EQ(run_to_end(std::move(server)).code, 2000);
}
