// Sync objects in a SharedMemory region, used by several processes at once:
// a Mutex, a CondVar and a Semaphore across processes, and a Mutex whose
// owner died (its process crashed or exited, or only its thread ended, in
// this process or in another that lives on). On
// both targets: hosted, each process runs its own kernel and the words go
// to the host's futex (arch.h: Words shared with other kernels); aarch64,
// one kernel keys them by physical page.
#include <atomic>
#include <new>

#include "ktest.h"
#include "sync_util.h"
#include "spindle/async.h"
#include "spindle/task.h"
#include "spindle/cond_var.h"
#include "spindle/mutex.h"
#include "spindle/process.h"
#include "spindle/semaphore.h"
#include "spindle/shared_memory.h"
#include "spindle/thread.h"

using namespace spindle;
using namespace spindle::ktest;
using namespace std::chrono_literals;

namespace {

constexpr int kRing = 8;

struct Shared {
  Mutex lock{"shared lock"};
  CondVar not_empty{"not empty"};
  CondVar not_full{"not full"};
  Semaphore ping{0, 1, "ping"};
  Semaphore pong{0, 1, "pong"};
  Semaphore units{3, 3, "three units"};  // shared_semaphore_units_conserved_across_processes
  std::atomic<int> inside{0}, worst{0};
  std::atomic<long> taken{0}, errors{0};
  std::uint64_t guarded = 0;         // under lock
  int ring[kRing] = {};              // under lock
  int head = 0, count = 0;           // under lock
  std::atomic<int> stage{0};         // test choreography, polled
  std::atomic<int> ready{0};
  int data = 0;                      // what a dying owner leaves behind
};

Shared* attach(SharedMemory& shm) { return reinterpret_cast<Shared*>(shm.data()); }

// Every entry adopts the region it was given as handle 0; 100 means that failed.
#define ADOPT_SHARED()                                            \
  auto shm = SharedMemory::adopt(this_process::handle(0));        \
  if (!shm.ok()) return 100;                                      \
  Shared* s = attach(*shm)

void wait_stage(const Shared* s, int at_least) {
  while (s->stage.load(std::memory_order_acquire) < at_least) this_thread::sleep_for(1ms);
}

// n increments of s->guarded, each a read and a later write (a window for
// a lost update if exclusion failed). 1 if a lock did not come back kOk
// (taken over from an owner wrongly thought dead).
int add_locked(Shared* s, int n) {
  for (int i = 0; i < n; ++i) {
    if (s->lock.lock_for(10s) != Status::kOk) return 1;
    std::uint64_t v = s->guarded;
    for (int k = 0; k < 20; ++k) asm volatile("" ::: "memory");  // a short delay inside the section
    s->guarded = v + 1;
    s->lock.unlock();
  }
  return 0;
}

int add_locked_entry(int n) {
  ADOPT_SHARED();
  s->ready.fetch_add(1, std::memory_order_acq_rel);
  wait_stage(s, 1);  // all start together, so the processes really contend
  return add_locked(s, n);
}

int produce(int n) {
  ADOPT_SHARED();
  for (int i = 1; i <= n; ++i) {
    Guard g(s->lock);
    while (s->count == kRing) s->not_full.wait(s->lock);
    s->ring[(s->head + s->count) % kRing] = i;
    ++s->count;
    s->not_empty.notify_one();
  }
  return 0;
}

int ponger(int rounds) {
  ADOPT_SHARED();
  for (int i = 0; i < rounds; ++i) {
    if (s->ping.acquire_for(10s) != Status::kOk) return 1;
    s->pong.release();
  }
  return 0;
}

// One round of the units test: takes a unit with a short random timeout
// (0-255 us: some end inside foreign_wait's look at the word, some in the
// host futex), notes how many are inside, holds it for up to 63 us every
// other round, gives it back.
// With a unit: one more inside (the most at once kept in worst).
void enter_with_unit(Shared* s) {
  int now = s->inside.fetch_add(1) + 1;
  for (int m = s->worst.load(); now > m && !s->worst.compare_exchange_weak(m, now);) {
  }
  s->taken.fetch_add(1);
}

void use_a_unit(Shared* s, std::uint32_t& r) {
  r = r * 1664525u + 1013904223u;
  Status st = s->units.acquire_for(std::chrono::microseconds(r >> 24));
  if (st == Status::kTimedOut) return;
  if (st != Status::kOk) {
    s->errors.fetch_add(1);
    return;
  }
  enter_with_unit(s);
  if (r & 0x100) this_thread::sleep_for(std::chrono::microseconds((r >> 8) & 63));  // others must wait
  s->inside.fetch_sub(1);
  if (s->units.release() != Status::kOk) s->errors.fetch_add(1);
}

// Two threads of a spawned process use units `rounds` times each.
int use_units(int rounds, std::uint32_t seed) {
  ADOPT_SHARED();
  auto body = [s, rounds, seed](std::uint32_t salt) {
    std::uint32_t r = seed * 0x9e3779b9u + salt;
    for (int k = 0; k < rounds; ++k) use_a_unit(s, r);
  };
  Thread t = Thread::create(ThreadOptions{.name = "unit user"}, [&] { body(1); }).value();
  body(2);
  return t.join() == Status::kOk ? 0 : 1;
}

// Takes the lock, writes data, says so, then ends the way `how` says while
// still holding it: 0 crash, 1 return from the entry (the process exits).
__attribute__((no_sanitize("address", "thread", "undefined"))) int die_holding(int how) {
  ADOPT_SHARED();
  s->lock.lock();
  s->data = 1234;
  s->stage.store(1, std::memory_order_release);
  wait_stage(s, 2);
  if (how == 0) *static_cast<volatile int*>(nullptr) = 1;
  return 7;
}

// Holds the lock until told to let go.
int hold_until_told() {
  ADOPT_SHARED();
  s->lock.lock();
  s->stage.store(1, std::memory_order_release);
  wait_stage(s, 2);
  s->lock.unlock();
  return 0;
}

// A thread of this process takes the lock and ends holding it, once told
// to; the process itself lives on until told to end.
int thread_dies_holding() {
  ADOPT_SHARED();
  Thread t = Thread::create(ThreadOptions{.name = "dies holding"}, [s] {
    s->lock.lock();
    s->data = 4321;
    s->stage.store(1, std::memory_order_release);
    wait_stage(s, 2);
  }).value();
  if (t.join() != Status::kOk) return 1;
  s->stage.store(3, std::memory_order_release);
  wait_stage(s, 4);
  return 0;
}

struct Region {
  SharedMemory shm;
  Shared* s;
  Region() : shm(SharedMemory::create(sizeof(Shared)).value()), s(new (shm.data()) Shared) {}
  ~Region() { s->~Shared(); }
};

template <typename... A>
Process spawn_with(Region& r, int (*entry)(A...), A... args) {
  ProcessOptions o;
  Handle give[] = {r.shm.handle()};
  o.handles = give;
  auto p = Process::spawn(o, entry, args...);
  if (!p.ok()) KFAIL("spawn: %s", to_string(p.status()));
  return std::move(*p);
}

ExitStatus end_of(Process& p) {
  auto st = p.join_for(30s);
  if (!st.ok()) {
    KFAIL("join: %s", to_string(st.status()));
    return {};
  }
  return *st;
}

}  // namespace

// 4 processes and this one count under one shared Mutex: nothing is lost.
KTEST(shared_mutex_counts_exactly_across_processes, 1) {
  constexpr int kProcs = 4, kAdds = 100000;
  Region r;
  Process ps[kProcs];
  for (auto& p : ps) p = spawn_with(r, add_locked_entry, kAdds);
  while (r.s->ready.load(std::memory_order_acquire) < kProcs) this_thread::sleep_for(1ms);
  r.s->stage.store(1, std::memory_order_release);
  KCHECK_EQ(add_locked(r.s, kAdds), 0);
  for (auto& p : ps) KCHECK(end_of(p).success());
  KCHECK_EQ(r.s->guarded, std::uint64_t{kProcs + 1} * kAdds);
}

// A producer process and this consumer through a bounded ring, with a
// shared Mutex and two CondVars: every item arrives once and in order.
KTEST(shared_condvar_carries_a_ring_between_processes, 1) {
  constexpr int kItems = 5000;
  Region r;
  Process producer = spawn_with(r, produce, kItems);
  for (int want = 1; want <= kItems; ++want) {
    Guard g(r.s->lock);
    while (r.s->count == 0) {
      if (r.s->not_empty.wait_for(r.s->lock, 10s) == Status::kTimedOut) {
        KFAIL("no item %d within 10 s", want);
        return;
      }
    }
    int got = r.s->ring[r.s->head];
    r.s->head = (r.s->head + 1) % kRing;
    --r.s->count;
    r.s->not_full.notify_one();
    if (got != want) {
      KFAIL("item %d arrived as %d", want, got);
      break;
    }
  }
  KCHECK(end_of(producer).success());
}

// Two Semaphores bounce a token between processes, each side blocked in
// turn.
KTEST(shared_semaphores_ping_pong_between_processes, 1) {
  constexpr int kRounds = 2000;
  Region r;
  Process p = spawn_with(r, ponger, kRounds);
  int done = 0;
  for (; done < kRounds; ++done) {
    r.s->ping.release();
    if (r.s->pong.acquire_for(10s) != Status::kOk) break;
  }
  KCHECK_EQ(done, kRounds);
  KCHECK(end_of(p).success());
}

// The owner's process crashes while this thread waits for the lock: the
// wait ends with kOwnerDied, the lock is ours, the data is there.
KTEST(shared_mutex_owner_crash_wakes_a_waiter_with_owner_died, 1) {
  Region r;
  Process p = spawn_with(r, die_holding, 0);
  wait_stage(r.s, 1);
  KCHECK(r.s->lock.try_lock() == false);  // held by the other process, which lives
  KCHECK(r.s->lock.lock_for(30ms) == Status::kTimedOut);
  Thread poke = Thread::create(ThreadOptions{}, [&] {
    this_thread::sleep_for(20ms);  // let the main thread block first
    r.s->stage.store(2, std::memory_order_release);
  }).value();
  KCHECK(r.s->lock.lock_for(10s) == Status::kOwnerDied);
  KCHECK_EQ(r.s->data, 1234);
  r.s->lock.unlock();
  KCHECK(r.s->lock.lock_for(1s) == Status::kOk);  // consistent again
  r.s->lock.unlock();
  ExitStatus st = end_of(p);
  KCHECK(st.kind == ExitKind::kFaulted);
  KCHECK(poke.join() == Status::kOk);
}

// The owner's process exits normally with the lock held: the next owner is
// told.
KTEST(shared_mutex_owner_exit_is_owner_died, 1) {
  Region r;
  Process p = spawn_with(r, die_holding, 1);
  wait_stage(r.s, 1);
  r.s->stage.store(2, std::memory_order_release);
  ExitStatus st = end_of(p);
  KCHECK(st.kind == ExitKind::kExited && st.code == 7);
  KCHECK(r.s->lock.lock_for(1s) == Status::kOwnerDied);
  KCHECK_EQ(r.s->data, 1234);
  r.s->lock.unlock();
}

// A live owner in another process: a timed lock times out, then succeeds
// once the owner lets go.
KTEST(shared_mutex_times_out_while_another_process_holds_it, 1) {
  Region r;
  Process p = spawn_with(r, hold_until_told);
  wait_stage(r.s, 1);
  KCHECK(r.s->lock.lock_for(50ms) == Status::kTimedOut);
  r.s->stage.store(2, std::memory_order_release);
  KCHECK(r.s->lock.lock_for(10s) == Status::kOk);
  r.s->lock.unlock();
  KCHECK(end_of(p).success());
}

// A thread of this process ends holding the shared lock: owner died too.
KTEST(shared_mutex_owner_thread_end_is_owner_died, 1) {
  Region r;
  Thread t = Thread::create(ThreadOptions{}, [&] { r.s->lock.lock(); }).value();
  KCHECK(t.join() == Status::kOk);
  KCHECK(r.s->lock.lock_for(1s) == Status::kOwnerDied);
  r.s->lock.unlock();
}

// A thread of another process ends holding the shared lock while that
// process runs on: a waiter already blocked is told kOwnerDied, without
// waiting for the process to end.
KTEST(shared_mutex_owner_thread_end_in_a_live_process_is_owner_died, 1) {
  Region r;
  Process p = spawn_with(r, thread_dies_holding);
  wait_stage(r.s, 1);
  KCHECK(r.s->lock.lock_for(30ms) == Status::kTimedOut);  // its owner still runs
  Thread poke = Thread::create(ThreadOptions{}, [&] {
    this_thread::sleep_for(20ms);  // let the main thread block first
    r.s->stage.store(2, std::memory_order_release);
  }).value();
  KCHECK(r.s->lock.lock_for(10s) == Status::kOwnerDied);
  KCHECK_EQ(r.s->data, 4321);
  wait_stage(r.s, 3);  // the process is still there
  KCHECK(p.join_for(1ms).status() == Status::kTimedOut);
  r.s->lock.unlock();
  r.s->stage.store(4, std::memory_order_release);
  KCHECK(end_of(p).success());
  KCHECK(poke.join() == Status::kOk);
}

// Units are neither lost nor made up across processes: two spawned
// processes and this one (two threads and a coroutine) take units of one
// shared Semaphore(3, 3) with short random timeouts and give them back; at
// most three are ever inside, and the count ends where it started.
KTEST(shared_semaphore_units_conserved_across_processes, 1) {
  Region r;
  const int rounds = static_cast<int>(scaled(1'500));
  Process a = spawn_with(r, use_units, rounds, 11u);
  Process b = spawn_with(r, use_units, rounds, 23u);
  Shared* s = r.s;
  Thread t = Thread::create(ThreadOptions{.name = "unit user"}, [s, rounds] {
    std::uint32_t x = 0x1234567u;
    for (int k = 0; k < rounds; ++k) use_a_unit(s, x);
  }).value();
  auto job = [s, rounds]() -> Task<int> {
    std::uint32_t x = 0x7654321u;
    for (int k = 0; k < rounds; ++k) {
      x = x * 1664525u + 1013904223u;
      Status st = co_await s->units.acquire_async_for(std::chrono::microseconds(x >> 24));
      if (st == Status::kTimedOut) continue;
      if (st != Status::kOk) co_return 1;
      enter_with_unit(s);
      if (x & 0x100) co_await sleep_for(std::chrono::microseconds((x >> 8) & 63));
      s->inside.fetch_sub(1);
      if (s->units.release() != Status::kOk) co_return 2;
    }
    co_return 0;
  };
  JoinHandle<int> coro = spawn(job());
  std::uint32_t x = 0xabcdefu;
  for (int k = 0; k < rounds; ++k) use_a_unit(s, x);
  KCHECK_EQ(coro.join().value(), 0);
  KJOIN(t);
  KCHECK(end_of(a).success());
  KCHECK(end_of(b).success());
  KCHECK_EQ(s->errors.load(), 0L);
  KCHECK(s->worst.load() <= 3);
  KCHECK(s->taken.load() > 0);
  KCHECK_EQ(s->units.value(), 3u);
  KCHECK(s->units.try_acquire() && s->units.try_acquire() && s->units.try_acquire() && !s->units.try_acquire());
}

// Coroutines wait on shared objects too: a lock held by another process,
// then a semaphore it releases, then a lock whose owner process crashed.
KTEST(shared_objects_from_coroutines, 1) {
  Region r;
  Process holder = spawn_with(r, hold_until_told);
  wait_stage(r.s, 1);
  auto take = [&]() -> Task<Status> {
    auto timed = co_await r.s->lock.lock_async_for(30ms);  // the holder lives: times out
    if (timed) co_return Status::kInvalidState;
    if (timed.status() != Status::kTimedOut) co_return timed.status();
    r.s->stage.store(2, std::memory_order_release);  // now let go
    auto g = co_await r.s->lock.lock_async_for(10s);
    co_return g.status();
  };
  KCHECK_STATUS(run(take()), Status::kOk);
  KCHECK(end_of(holder).success());

  Process pong = spawn_with(r, ponger, 50);
  auto ping = [&]() -> Task<int> {
    int n = 0;
    for (; n < 50; ++n) {
      r.s->ping.release();
      if (co_await r.s->pong.acquire_async_for(10s) != Status::kOk) break;
    }
    co_return n;
  };
  KCHECK_EQ(run(ping()).value(), 50);
  KCHECK(end_of(pong).success());

  r.s->stage.store(0, std::memory_order_release);
  Process dying = spawn_with(r, die_holding, 0);
  wait_stage(r.s, 1);
  auto after_death = [&]() -> Task<Status> {
    r.s->stage.store(2, std::memory_order_release);  // crash now
    auto g = co_await r.s->lock.lock_async_for(10s);
    co_return g.status();
  };
  KCHECK_STATUS(run(after_death()), Status::kOwnerDied);
  KCHECK(end_of(dying).kind == ExitKind::kFaulted);
}
