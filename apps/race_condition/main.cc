// race_condition: why "counter = counter + 1" from several threads needs a
// lock, shown by losing updates and then fixing it with a spindle::Mutex.
//
// Pattern: 4 threads each add 1 to a shared counter many times.
//  1. unsafe: each increment is a separate load and store (relaxed atomics,
//     so the program has no undefined behaviour; the race is a logic race)
//     with a little work in between. Two threads that load the same value
//     both store value+1: one increment is lost. The threads are spread over
//     the CPUs with an affinity each, so with 2+ CPUs they truly run at the
//     same time and updates are lost. On 1 CPU an update is lost only when
//     a time slice ends between a load and its store, so it may or may not
//     happen: the app says which.
//  2. safe: the same load-work-store under a spindle::Mutex (fewer rounds:
//     each is a lock round trip, and exactness needs no more).
//
// Checks: the unsafe result is only reported, never judged (it is allowed
// to be right by luck). The mutex-protected total must be exact, else the
// app exits 1.
#include <atomic>
#include <mutex>

#include <spindle/spindle.h>

namespace {

constexpr int kThreads = 4;
constexpr long kUnsafeIncrements = 1000000;  // enough to overlap on a busy host
constexpr long kSafeIncrements = 250000;     // each is a lock round trip

std::atomic<long> g_counter{0};
spindle::Mutex g_lock("counter");

// A little work between the load and the store (volatile: not optimised
// away), which widens the window in which another thread can interfere.
void think() {
  volatile int scratch = 0;
  for (int k = 0; k < 16; ++k) scratch = scratch + k;
}

void unsafe_increment() {
  long v = g_counter.load(std::memory_order_relaxed);
  think();
  g_counter.store(v + 1, std::memory_order_relaxed);
}

void safe_increment() {
  std::lock_guard<spindle::Mutex> hold(g_lock);
  unsafe_increment();  // the same code, now inside the lock
}

// Runs kThreads threads doing `increment` `count` times each, started
// together, thread i pinned to CPU i % cpus. Returns the final count.
long run(void (*increment)(), long count, unsigned cpus, long* elapsed_ms) {
  g_counter.store(0);
  auto begin = spindle::Clock::now();
  spindle::Latch start(kThreads, "start");
  spindle::Thread threads[kThreads];
  for (int i = 0; i < kThreads; ++i) {
    spindle::ThreadOptions opts;
    opts.name = "incrementer";
    opts.affinity = spindle::CpuMask::only(static_cast<unsigned>(i) % cpus);
    auto t = spindle::Thread::create(opts, [&start, increment, count] {
      (void)start.arrive_and_wait();
      for (long n = 0; n < count; ++n) increment();
    });
    if (!t.ok()) {
      spindle::print("cannot start thread %d: %s\n", i, spindle::to_string(t.status()));
      return -1;
    }
    threads[i] = std::move(t).value();
  }
  for (auto& t : threads) t.join();
  *elapsed_ms = std::chrono::duration_cast<std::chrono::milliseconds>(spindle::Clock::now() - begin).count();
  return g_counter.load();
}

}  // namespace

int spindle_main(int, char**) {
  const unsigned cpus = spindle::system_stats().cpus;
  spindle::print("race_condition: %d threads share one counter, on %u CPU%s\n", kThreads, cpus, cpus == 1 ? "" : "s");

  long ms = 0;
  long expected = kThreads * kUnsafeIncrements;
  long unsafe = run(unsafe_increment, kUnsafeIncrements, cpus, &ms);
  if (unsafe < 0) return 1;
  long lost = expected - unsafe;
  spindle::print("  1. unsafe load/store, %ld increments each: total %ld of %ld, %ld updates lost (%ld ms)\n",
                 kUnsafeIncrements, unsafe, expected, lost, ms);
  if (lost > 0) {
    spindle::print("     -> lost updates: threads read the same value and overwrote each other%s\n",
                   cpus == 1 ? " (a time slice ended between a load and its store)" : "");
  } else if (cpus == 1) {
    spindle::print("     -> none lost this time: on one CPU that takes a preemption between load and store\n");
  } else {
    spindle::print("     -> none lost this time, by luck: the code is still wrong\n");
  }

  expected = kThreads * kSafeIncrements;
  long safe = run(safe_increment, kSafeIncrements, cpus, &ms);
  if (safe < 0) return 1;
  spindle::print("  2. under spindle::Mutex, %ld increments each: total %ld of %ld -> %s (%ld ms)\n", kSafeIncrements,
                 safe, expected, safe == expected ? "exact" : "WRONG", ms);
  if (safe != expected) {
    spindle::print("FAIL: the mutex let %ld updates get lost\n", expected - safe);
    return 1;
  }
  spindle::print("OK: the mutex-protected counter is exact\n");
  return 0;
}
