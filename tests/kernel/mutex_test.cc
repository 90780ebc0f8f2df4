// The basic Mutex: exact counting under contention, try/timed paths,
// std lock adaptors.
#include <mutex>

#include "ktest_util.h"

using namespace spindle;
using namespace spindle::ktest;
using namespace std::chrono_literals;

KTEST(mutex_exact_count, 2) {
  static Mutex m("count");
  static long counter = 0;
  counter = 0;
  Thread t[5];
  for (auto& x : t) {
    x = spawn("inc", 16, CpuMask::all(), [] {
      for (int i = 0; i < 200000; ++i) {
        std::scoped_lock hold(m);
        ++counter;
      }
    });
  }
  for (auto& x : t) KCHECK(x.join() == Status::kOk);
  KCHECK_EQ(counter, 1000000L);
}

KTEST(mutex_try_and_timeout, 2) {
  static Mutex m("held");
  m.lock();
  KCHECK_EQ(m.owner(), this_thread::id());
  static std::atomic<int> result{-1};
  result = -1;
  Thread t = spawn("trier", 16, CpuMask::all(), [] {
    int r = 0;
    if (!m.try_lock()) r |= 1;
    TimePoint start = Clock::now();
    if (!m.try_lock_for(20ms)) r |= 2;
    if (Clock::now() - start >= 20ms) r |= 4;
    if (!m.try_lock_until(std::chrono::steady_clock::now() + 5ms)) r |= 8;
    result = r;
    std::unique_lock<Mutex> later(m);  // blocks until main unlocks
    return 0;
  });
  KCHECK(wait_until([] { return result.load() != -1; }));
  KCHECK_EQ(result.load(), 15);
  m.unlock();
  KCHECK(t.join() == Status::kOk);
  KCHECK_EQ(m.owner(), ThreadId{0});
  KCHECK(m.try_lock());
  m.unlock();
}
