// starvation: a low-priority thread competing with busy high-priority ones
// for one lock, under three lock policies.
//
// Pattern: 3 "high" threads (priority 20) and 1 "low" thread (priority 5)
// loop for a fixed window: lock, count one service, hold the lock for a
// short sleep, unlock, and lock again at once. Holding while sleeping makes
// the others queue up in the lock, on one CPU as on many.
//  1. PriorityMutex, no aging: every unlock hands the lock to the most
//     urgent waiter; there is always a high one queued, so the low thread
//     starves. The starvation watchdog (set_starvation_bound) reports it.
//  2. PriorityMutex with aging_bound 4: a waiter passed over 4 hand-offs is
//     served next whatever its priority, so the low thread gets turns.
//  3. FairMutex: strict arrival order; everyone is served about equally.
//
// Checks (exit 1 if any fails): part 1 only prints the counts (the low
// thread may slip in if a high one is briefly delayed) but, when the
// watchdog is built in, it must have printed a report; in part 2 the low thread was served; in part 3
// it was served at least half as often as the average high thread. Every
// part: each high thread was served (the lock made progress).
#include <atomic>
#include <chrono>

#include <spindle/spindle.h>

namespace {

using namespace std::chrono_literals;

constexpr int kHigh = 3;
constexpr int kThreads = kHigh + 1;  // index kHigh is the low thread
constexpr int kHighPriority = 20;
constexpr int kLowPriority = 5;
constexpr auto kWindow = 300ms;
constexpr auto kHold = 500us;

struct Counts {
  long served[kThreads] = {};
  long high_total() const { return served[0] + served[1] + served[2]; }
  long low() const { return served[kHigh]; }
};

// Runs the four threads on `lock` for kWindow; fills the service counts.
template <class Lock>
bool contend(Lock& lock, Counts& out) {
  std::atomic<long> served[kThreads] = {};
  std::atomic<bool> stop{false};
  spindle::Event go("go");
  spindle::Thread threads[kThreads];
  static const char* const kNames[kThreads] = {"high-1", "high-2", "high-3", "low"};
  for (int i = 0; i < kThreads; ++i) {
    spindle::ThreadOptions opts;
    opts.name = kNames[i];
    opts.priority = i < kHigh ? kHighPriority : kLowPriority;
    auto t = spindle::Thread::create(opts, [&, i] {
      go.wait();
      for (;;) {
        lock.lock();
        if (stop.load()) {  // served after the window: does not count
          lock.unlock();
          return;
        }
        served[i].fetch_add(1);
        spindle::this_thread::sleep_for(kHold);
        lock.unlock();
      }
    });
    if (!t.ok()) {
      spindle::print("cannot start %s: %s\n", kNames[i], spindle::to_string(t.status()));
      stop.store(true);
      go.set();
      for (auto& started : threads) {
        if (started.joinable()) started.join();
      }
      return false;
    }
    threads[i] = std::move(t).value();
  }
  go.set();
  spindle::this_thread::sleep_for(kWindow);
  stop.store(true);
  for (auto& t : threads) t.join();
  for (int i = 0; i < kThreads; ++i) out.served[i] = served[i].load();
  return true;
}

void show(const Counts& c) {
  spindle::print("    services in %lld ms: high-1 %ld, high-2 %ld, high-3 %ld, low %ld\n",
                 static_cast<long long>(std::chrono::milliseconds(kWindow).count()), c.served[0], c.served[1],
                 c.served[2], c.low());
}

}  // namespace

int spindle_main(int, char**) {
  // Main only keeps time: run it above the workers so the window is exact.
  (void)spindle::this_thread::set_priority(spindle::kMaxPriority - 1);
  bool ok = true;
  Counts c1, c2, c3;

  spindle::print("part 1: PriorityMutex without aging, 3 high threads and 1 low thread\n");
  std::uint64_t reports_before = spindle::starvation_reports();
  if (spindle::kWatchdog) (void)spindle::set_starvation_bound(50ms);
  {
    spindle::PriorityMutex lock("no aging");
    if (!contend(lock, c1)) return 1;
  }
  if (spindle::kWatchdog) (void)spindle::set_starvation_bound(spindle::Duration::zero());
  std::uint64_t reports = spindle::starvation_reports() - reports_before;
  show(c1);
  spindle::print("    -> the low thread %s; watchdog reports: %llu\n",
                 c1.low() == 0 ? "starved completely" : "was served only rarely",
                 static_cast<unsigned long long>(reports));
  if (spindle::kWatchdog && reports == 0) {
    spindle::print("FAIL: the starvation watchdog did not report the starving thread\n");
    ok = false;
  }

  spindle::print("part 2: PriorityMutex with aging_bound 4\n");
  {
    spindle::PriorityMutex lock("aging 4", 4);
    if (!contend(lock, c2)) return 1;
  }
  show(c2);
  spindle::print("    -> %s\n", c2.low() > 0 ? "aging lets the low thread in" : "the low thread STILL STARVES");
  if (c2.low() == 0) ok = false;

  spindle::print("part 3: FairMutex (strict FIFO hand-off)\n");
  {
    spindle::FairMutex lock("fair");
    if (!contend(lock, c3)) return 1;
  }
  show(c3);
  bool fair = c3.low() * 2 * kHigh >= c3.high_total();  // low >= half the high average
  spindle::print("    -> %s\n", fair ? "everyone is served about equally" : "the low thread is served far LESS");
  if (!fair) ok = false;

  for (const Counts* c : {&c1, &c2, &c3}) {
    for (int i = 0; i < kHigh; ++i) {
      if (c->served[i] == 0) {
        spindle::print("FAIL: a high thread was never served\n");
        ok = false;
      }
    }
  }
  if (ok) spindle::print("OK: starvation shown and reported; aging and FIFO both serve the low thread\n");
  else spindle::print("FAILED\n");
  return ok ? 0 : 1;
}
