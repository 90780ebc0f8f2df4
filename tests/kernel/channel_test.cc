// Channels, shared memory and ProcessPool through the portable API, on both
// targets: message boundaries, order and errors, bounded queues, read-write
// and read-only grants, and a pool whose worker crashes. What only one
// target can check (hosted: bad buffers from the first process; aarch64:
// the call fast path, system-call inputs from a process) is in
// tests/hosted/process_test.cc and tests/qemu/channel_test.cc.
#include <string_view>

#include <spindle/spindle.h>

#include "ktest.h"
#include "ktest_util.h"

using namespace spindle;
using namespace std::chrono_literals;
using ktest::run_to_end;

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
  // A read-only grant cannot be raised.
  if (shm->access() == Access::kReadOnly) {
    if (handle_duplicate(shm->handle(), Access::kReadWrite).status() != Status::kInvalidArgument) return 4;
    if (std::to_integer<int>(shm->data()[0]) != 42) return 5;
  }
  shm->data()[0] = std::byte{99};  // faults on a read-only mapping
  return 0;
}

// Destroys a SharedMemory while a thread (how 0) or a coroutine (how 1) of
// this process waits on a Semaphore inside it: a misuse (the wait would
// outlive the mapping), which must end the process with a panic naming the
// region, not with a stray fault later. Returns only if it did not.
int unmap_under_waiter(int how) {
  auto shm = SharedMemory::create(64);
  if (!shm.ok()) return 1;
  auto* sem = new (shm->data()) Semaphore(0, 1, "in-region");
  Thread waiter;
  if (how == 0) {
    auto t = Thread::create({.name = "waiter"}, [sem] { (void)sem->acquire_for(10s); });
    if (!t.ok()) return 2;
    waiter = std::move(*t);
    ThreadId id = waiter.id();
    if (!ktest::wait_until([id] {
          ThreadStats ts;
          return thread_stats(id, &ts) == Status::kOk && std::string_view(ts.state) == "blocked";
        })) {
      return 3;
    }
  } else {
    auto t = Thread::create({.name = "runner"}, [sem] {
      auto job = [sem]() -> Task<int> { co_return static_cast<int>(co_await sem->acquire_async_for(10s)); };
      (void)run(job());
    });
    if (!t.ok()) return 2;
    waiter = std::move(*t);
    // Suspended, and its executor past the wait's system call (aarch64)
    // or kernel call (hosted): every other thread is blocked.
    if (!ktest::wait_until([] {
          if (coroutine_stats().waiting == 0) return false;
          ThreadStats ts[16];
          std::size_t n = thread_stats(ts);
          for (std::size_t i = 0; i < n && i < 16; ++i) {
            std::string_view state(ts[i].state);
            if (ts[i].id != this_thread::id() && state != "blocked" && state != "dead") return false;
          }
          return true;
        })) {
      return 3;
    }
  }
  *shm = SharedMemory();  // panics
  return 4;
}

int square(int x) { return x * x; }
// The bad access must reach the hardware: no sanitizer check first.
__attribute__((no_sanitize("address", "thread", "undefined"))) int crash_on(int x) {
  if (x == 3) *static_cast<volatile int*>(nullptr) = 1;
  return x;
}

}  // namespace

KTEST(channel_round_trip_boundaries_and_errors, 1) {
  auto pair = Channel::create();
  KREQUIRE(pair.ok());
  Channel& a = pair->first;
  Channel& b = pair->second;
  // Boundaries kept, FIFO.
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
  while ((s = pair.first.send(chunk, {}, deadline_after(50ms))) == Status::kOk) ++sent;
  KCHECK(s == Status::kTimedOut);
  KCHECK(sent > 0);
  static std::byte buf[kMaxMessageBytes];
  KCHECK(pair.second.recv(buf).ok());
  KCHECK(pair.first.send(chunk, {}, deadline_after(1s)) == Status::kOk);  // room again
}

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

KTEST(unmapping_a_region_under_a_waiter_of_its_process_panics, 2) {
  char why[160];
  for (int how : {0, 1}) {
    ExitStatus st = run_to_end(Process::spawn(unmap_under_waiter, how));
    print("  %s waiting: %s\n", how == 0 ? "a thread" : "a coroutine", st.describe(why, sizeof why));
    KCHECK(st.kind == ExitKind::kFaulted && st.fault == FaultKind::kPanic);
  }
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
  KCHECK(st.jobs >= 15);
  KCHECK(pool.shutdown() == Status::kOk);
  KCHECK(pool.submit(square, 2).status() == Status::kClosed);
  ProcessPool none(0);
  KCHECK(none.status() == Status::kInvalidArgument);
  KCHECK(none.submit(square, 2).status() == Status::kInvalidArgument);
}
