// connection_pool: a counting spindle::Semaphore limits how many threads use
// a scarce resource at once.
//
// Pattern: a pool of 3 "connections" is guarded by Semaphore(3). Each of 10
// workers acquires a permit, claims a free connection slot, uses it for a
// few milliseconds, gives the slot back and releases the permit. While all
// permits are taken, a newcomer waits; try_acquire_for gives up after a
// timeout instead of waiting forever.
//
// Checks (exit 1 if any fails):
//  - never more than 3 workers inside at once (tracked with an atomic), and
//    a free connection slot always exists for a permit holder;
//  - the pool was really used concurrently: the maximum reached 3;
//  - with every permit held, try_acquire_for(20 ms) fails and waited at
//    least 20 ms; try_acquire fails at once; releasing past the maximum is
//    refused with kOverflow;
//  - every worker got its turn, and all 3 permits are back at the end.
#include <atomic>
#include <chrono>

#include <spindle/spindle.h>

namespace {

using namespace std::chrono_literals;

constexpr int kConnections = 3;
constexpr int kWorkers = 10;
constexpr int kUsesPerWorker = 4;

spindle::Semaphore g_pool(kConnections, kConnections, "connection pool");
std::atomic<bool> g_slot_busy[kConnections];
std::atomic<int> g_inside{0}, g_max_inside{0};
std::atomic<int> g_no_free_slot{0}, g_uses{0};

void use_connection(int worker) {
  g_pool.acquire();
  int now = g_inside.fetch_add(1) + 1;
  int seen = g_max_inside.load();
  while (now > seen && !g_max_inside.compare_exchange_weak(seen, now)) {
  }
  // A permit means one slot is free; claim it.
  int slot = -1;
  for (int i = 0; i < kConnections && slot < 0; ++i) {
    if (!g_slot_busy[i].exchange(true)) slot = i;
  }
  if (slot < 0) g_no_free_slot.fetch_add(1);
  spindle::this_thread::sleep_for(std::chrono::milliseconds(2 + worker % 3));
  g_uses.fetch_add(1);
  if (slot >= 0) g_slot_busy[slot].store(false);
  g_inside.fetch_sub(1);
  g_pool.release();
}

}  // namespace

int spindle_main(int, char**) {
  spindle::print("connection_pool: %d workers share %d connections through Semaphore(%d)\n", kWorkers,
                 kConnections, kConnections);
  bool ok = true;

  // All workers start at one signal, so they really compete for the pool
  // (thread creation may be slower than a use, e.g. under sanitizers).
  spindle::Event go("go");
  spindle::Thread workers[kWorkers];
  for (int i = 0; i < kWorkers; ++i) {
    spindle::ThreadOptions opts;
    opts.name = "worker";
    auto t = spindle::Thread::create(opts, [i, &go] {
      go.wait();
      for (int n = 0; n < kUsesPerWorker; ++n) use_connection(i);
    });
    if (!t.ok()) {
      spindle::print("cannot start worker %d: %s\n", i, spindle::to_string(t.status()));
      go.set();
      for (auto& started : workers) {
        if (started.joinable()) started.join();
      }
      return 1;
    }
    workers[i] = std::move(t).value();
  }
  go.set();
  for (auto& t : workers) t.join();
  spindle::print("  %d uses done; at most %d workers were inside at once\n", g_uses.load(), g_max_inside.load());
  if (g_max_inside.load() > kConnections) {
    spindle::print("FAIL: %d workers inside, the semaphore allows %d\n", g_max_inside.load(), kConnections);
    ok = false;
  }
  if (g_max_inside.load() < kConnections) {
    spindle::print("FAIL: never saw %d workers inside at once: no real concurrency\n", kConnections);
    ok = false;
  }
  if (g_no_free_slot.load() != 0) {
    spindle::print("FAIL: %d times a permit holder found no free connection\n", g_no_free_slot.load());
    ok = false;
  }
  if (g_uses.load() != kWorkers * kUsesPerWorker) {
    spindle::print("FAIL: %d uses, expected %d\n", g_uses.load(), kWorkers * kUsesPerWorker);
    ok = false;
  }

  // The timeout path: hold every permit, then ask for one more.
  spindle::print("  main takes all %d permits; a 20 ms try_acquire_for must time out...\n", kConnections);
  for (int i = 0; i < kConnections; ++i) g_pool.acquire();
  bool instant = g_pool.try_acquire();
  auto start = spindle::Clock::now();
  bool got = g_pool.try_acquire_for(20ms);
  auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(spindle::Clock::now() - start);
  spindle::print("  try_acquire: %s; try_acquire_for(20 ms): %s after %lld ms\n", instant ? "GOT ONE" : "none free",
                 got ? "GOT ONE" : "timed out", static_cast<long long>(waited.count()));
  if (instant || got || waited < 20ms) {
    spindle::print("FAIL: a permit was handed out while all %d were held (or the wait was cut short)\n",
                   kConnections);
    ok = false;
  }
  for (int i = 0; i < kConnections; ++i) g_pool.release();
  spindle::Status over = g_pool.release();
  spindle::print("  one release too many: %s\n", spindle::to_string(over));
  if (over != spindle::Status::kOverflow || g_pool.value() != kConnections) {
    spindle::print("FAIL: expected kOverflow and %d permits, got %s and %u\n", kConnections,
                   spindle::to_string(over), g_pool.value());
    ok = false;
  }
  if (ok) spindle::print("OK: the pool never exceeded %d users and reached the limit\n", kConnections);
  else spindle::print("FAILED\n");
  return ok ? 0 : 1;
}
