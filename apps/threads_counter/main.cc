// threads_counter: the classic. Five threads each add 1 to a shared counter
// 100000 times under a mutex. The total must be exactly 500000; anything
// else is a lost update and the app exits with status 1.
#include <mutex>

#include <spindle/spindle.h>

namespace {

constexpr int kThreads = 5;
constexpr long kIncrements = 100000;

spindle::Mutex g_lock("counter");
long g_counter = 0;  // guarded by g_lock

}  // namespace

int spindle_main(int, char**) {
  spindle::Thread threads[kThreads];
  for (int i = 0; i < kThreads; ++i) {
    spindle::ThreadOptions opts;
    opts.name = "incrementer";
    auto t = spindle::Thread::create(opts, [] {
      for (long n = 0; n < kIncrements; ++n) {
        std::lock_guard<spindle::Mutex> hold(g_lock);
        ++g_counter;
      }
    });
    if (!t.ok()) {
      spindle::print("cannot start thread %d: %s\n", i, spindle::to_string(t.status()));
      return 1;
    }
    threads[i] = std::move(t).value();
  }
  for (auto& t : threads) t.join();
  long expected = kThreads * kIncrements;
  spindle::print("final counter: %ld (expected %ld) -> %s\n", g_counter, expected,
                 g_counter == expected ? "correct" : "LOST UPDATES");
  return g_counter == expected ? 0 : 1;
}
