// Helpers shared by the sync-object cases (sync_test.cc, rwlock_test.cc,
// queue_test.cc, mutex_test.cc): scaling for sanitizer builds, "is that
// thread blocked yet" handshakes, timed joins that turn a hang into a
// failure, and a timing check for timeouts.
#pragma once

#include <atomic>
#include <chrono>
#include <string_view>

#include "ktest_util.h"

namespace spindle::ktest {

// Sanitizer builds are several times slower, and so is QEMU (aarch64 is
// only ever emulated here, under -icount, where spinning CPUs share one
// instruction clock): stress loops divide their iteration counts by this.
#if defined(__SANITIZE_THREAD__)
inline constexpr int kSlowdown = 10;
#elif defined(__SANITIZE_ADDRESS__)
inline constexpr int kSlowdown = 4;
#elif defined(__aarch64__)
inline constexpr int kSlowdown = 5;
#else
inline constexpr int kSlowdown = 1;
#endif

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

inline constexpr long scaled(long n) { return n / kSlowdown > 0 ? n / kSlowdown : 1; }

// Wait spins (kernel.h: the wait spin) begun and hit, summed over the CPUs.
struct WaitSpins {
  std::uint64_t spins = 0, hits = 0;
};
inline WaitSpins wait_spins() {
  SystemStats sys = system_stats();
  WaitSpins w;
  for (unsigned i = 0; i < sys.cpus; ++i) {
    w.spins += sys.cpu[i].wait_spins;
    w.hits += sys.cpu[i].wait_spin_hits;
  }
  return w;
}

// The thread's state string ("ready", "running", "blocked", ...), or "gone".
inline const char* state_of(ThreadId id) {
  ThreadStats s;
  if (thread_stats(id, &s) != Status::kOk) return "gone";
  return s.state;
}

inline bool is_blocked(ThreadId id) { return state_of(id)[0] == 'b'; }

// Waits until t sleeps in the kernel (on whatever it was told to wait for).
// Used to make arrival orders deterministic: start the next waiter only
// once the previous one is queued.
inline bool wait_blocked(const Thread& t, Duration timeout = std::chrono::seconds(10)) {
  ThreadId id = t.id();
  return wait_until([id] { return is_blocked(id); }, timeout);
}

// wait_blocked for a thread less urgent than the caller on the caller's CPU.
inline bool wait_blocked_sleeping(const Thread& t, Duration timeout = std::chrono::seconds(10)) {
  ThreadId id = t.id();
  return settle([id] { return is_blocked(id); }, timeout);
}

// Waits until t is blocked, giving up at `deadline` (for a thread that
// stops waiting then).
inline bool wait_blocked_until(const Thread& t, TimePoint deadline) {
  ThreadId id = t.id();
  while (!is_blocked(id)) {
    if (Clock::now() >= deadline) return is_blocked(id);
    this_thread::yield();
  }
  return true;
}

// For a scenario with a waiter that gives up at a deadline and must still
// be waiting once the rest is set up: attempt(timeout) runs the scenario
// with that timeout and returns whether the setup was complete in time
// (conclusive). An inconclusive attempt (a loaded host delayed the setup)
// is repeated with a four times longer timeout: 50 ms, 200 ms, 800 ms, 3.2 s.
template <class F>
void with_growing_timeout(F attempt, const char* file, int line) {
  Duration t = std::chrono::milliseconds(50);
  for (int i = 0; i < 4; ++i, t *= 4) {
    if (attempt(t)) return;
  }
  record_failure(file, line, "the setup was never complete before the timed waiter's deadline");
}
#define KWITH_GROWING_TIMEOUT(attempt) ::spindle::ktest::with_growing_timeout((attempt), __FILE__, __LINE__)

// Joins t, or (if it shows no sign of life for `timeout`: a hang, i.e. a
// bug) records a failure and detaches it, so the case still ends. A thread
// that is still being switched in, or is running when looked at, is
// progressing, only slowly (a host with other load on its cores: each
// cross-vCPU wake-up then waits for the host scheduler, ~1 ms instead of
// ~5 us; a spinner alone on its CPU yields to nobody and is never switched
// again), so it gets more time, up to `kJoinCap` in all. A thread blocked
// forever (a lost wake-up) is switched no longer and fails at its first
// timeout.
inline constexpr Duration kJoinCap = std::chrono::minutes(2);
inline Status join_within(Thread& t, const char* file, int line, Duration timeout = std::chrono::seconds(20)) {
  if (!t.joinable()) return Status::kInvalidState;
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  int code = 0;
  Duration waited{0};
  ThreadStats ts;
  std::uint64_t seen = thread_stats(t.id(), &ts) == Status::kOk ? ts.switches : 0;
  Status s;
  for (;;) {
    s = t.join_for(timeout, &code);
    waited += timeout;
    if (s != Status::kTimedOut) break;
    bool moved = thread_stats(t.id(), &ts) == Status::kOk &&
                 (ts.switches != seen || std::string_view(ts.state) == "running");
    if (!moved || waited >= kJoinCap) {
      record_failure(file, line, "thread %llu did not finish within %lld ms (%s)",
                     static_cast<unsigned long long>(t.id()),
                     static_cast<long long>(duration_cast<milliseconds>(waited).count()),
                     moved ? "still running or being switched in: too slow" : "not switched in since the last look: hung?");
      (void)t.detach();
      return s;
    }
    seen = ts.switches;
  }
  if (s != Status::kOk) record_failure(file, line, "join failed: %s", to_string(s));
  if (code != 0) record_failure(file, line, "thread exited with code %d", code);
  return s;
}
#define KJOIN(t) ::spindle::ktest::join_within((t), __FILE__, __LINE__)

// Checks that a timed operation took at least `wanted` (it must never
// return early) and not absurdly long (it did time out, not hang until
// something else happened).
inline void check_waited(Duration took, Duration wanted, const char* what, const char* file, int line) {
  using std::chrono::duration_cast;
  using std::chrono::microseconds;
  if (took < wanted) {
    record_failure(file, line, "%s returned after %lld us, before its %lld us timeout", what,
                   static_cast<long long>(duration_cast<microseconds>(took).count()),
                   static_cast<long long>(duration_cast<microseconds>(wanted).count()));
  }
  if (took > wanted + std::chrono::seconds(5)) {
    record_failure(file, line, "%s took %lld us for a %lld us timeout", what,
                   static_cast<long long>(duration_cast<microseconds>(took).count()),
                   static_cast<long long>(duration_cast<microseconds>(wanted).count()));
  }
}
#define KCHECK_WAITED(took, wanted, what) ::spindle::ktest::check_waited((took), (wanted), (what), __FILE__, __LINE__)

// Like KCHECK_EQ for Status values, printing their names.
#define KCHECK_STATUS(expr, expected)                                                                  \
  do {                                                                                                 \
    ::spindle::Status ktest_s = (expr);                                                                \
    ::spindle::Status ktest_e = (expected);                                                            \
    if (ktest_s != ktest_e) {                                                                          \
      ::spindle::ktest::record_failure(__FILE__, __LINE__, "%s: got '%s', want '%s'", #expr,           \
                                       ::spindle::to_string(ktest_s), ::spindle::to_string(ktest_e)); \
    }                                                                                                  \
  } while (0)

// A value that a test thread publishes and the main thread waits for.
template <class T>
bool wait_for_value(const std::atomic<T>& a, T v, Duration timeout = std::chrono::seconds(10)) {
  return wait_until([&] { return a.load() == v; }, timeout);
}

// A move-only payload that counts live instances, so leaks and double
// destruction of queued items, job arguments and results show.
struct Token {
  static inline std::atomic<int> live{0};
  int v;
  explicit Token(int x) : v(x) { live.fetch_add(1); }
  Token(Token&& o) noexcept : v(o.v) {
    o.v = -1;
    live.fetch_add(1);
  }
  Token& operator=(Token&& o) noexcept {
    v = o.v;
    o.v = -1;
    return *this;
  }
  Token(const Token&) = delete;
  Token& operator=(const Token&) = delete;
  ~Token() { live.fetch_sub(1); }
};

}  // namespace spindle::ktest
