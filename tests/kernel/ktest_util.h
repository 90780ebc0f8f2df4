// Helpers shared by the kernel test cases.
#pragma once

#include <atomic>
#include <utility>

#include <spindle/spindle.h>

#include "ktest.h"

namespace spindle::ktest {

// Creates a thread or records a failure (returns an empty handle).
template <typename F>
Thread spawn(const char* name, int priority, CpuMask affinity, F&& fn, bool suspended = false) {
  ThreadOptions o;
  o.name = name;
  o.priority = priority;
  o.affinity = affinity;
  o.start_suspended = suspended;
  Result<Thread> r = Thread::create(o, std::forward<F>(fn));
  if (!r.ok()) {
    record_failure(__FILE__, __LINE__, "Thread::create(%s) failed: %s", name, to_string(r.status()));
    return Thread();
  }
  return std::move(r).value();
}

// Spins (yielding the CPU to equals) until pred() or the timeout; returns pred().
template <typename P>
bool wait_until(P&& pred, Duration timeout = std::chrono::seconds(10)) {
  TimePoint end = deadline_after(timeout);
  while (!pred()) {
    if (Clock::now() >= end) return pred();
    this_thread::yield();
  }
  return true;
}

// An append-only event log safe to write from many threads.
template <unsigned N>
struct EventLog {
  std::atomic<unsigned> n{0};
  int items[N] = {};
  void add(int v) {
    unsigned i = n.fetch_add(1, std::memory_order_relaxed);
    if (i < N) __atomic_store_n(&items[i], v, __ATOMIC_RELEASE);
  }
  unsigned size() const { return n.load() < N ? n.load() : N; }
  int operator[](unsigned i) const { return __atomic_load_n(&items[i], __ATOMIC_ACQUIRE); }
};

// CPU-time accounting on (or off) for a test's scope, then back to what it
// was (off unless the kernel booted with it).
struct CpuTimeAccounting {
  bool was = cpu_time_accounting();
  explicit CpuTimeAccounting(bool on = true) {
    if (set_cpu_time_accounting(on) != Status::kOk) record_failure(__FILE__, __LINE__, "accounting not switched");
  }
  ~CpuTimeAccounting() { (void)set_cpu_time_accounting(was); }
  CpuTimeAccounting(const CpuTimeAccounting&) = delete;
  CpuTimeAccounting& operator=(const CpuTimeAccounting&) = delete;
};

inline std::uint64_t cpu_time_of(ThreadId id) {
  ThreadStats s;
  if (thread_stats(id, &s) != Status::kOk) return 0;
  return s.cpu_time_ns;
}

// Joins a spawned process; a failed spawn or join is a test failure (and
// an empty ExitStatus).
inline ExitStatus run_to_end(Result<Process> p) {
  if (!p.ok()) {
    KFAIL("spawn failed: %s", to_string(p.status()));
    return {};
  }
  auto st = p->join();
  if (!st.ok()) {
    KFAIL("join failed: %s", to_string(st.status()));
    return {};
  }
  return *st;
}

// Polls pred with 1 ms sleeps until it holds or the timeout passes; returns
// pred(). Unlike wait_until it lets threads less urgent than
// the caller run on the caller's CPU (a yield would not); and unlike a fixed
// sleep it says how far another CPU got (without -icount QEMU's vCPUs are
// host threads, and a 5 ms sleep was not always enough).
template <typename P>
bool settle(P&& pred, Duration timeout = std::chrono::seconds(5)) {
  TimePoint end = deadline_after(timeout);
  while (!pred()) {
    if (Clock::now() >= end) return pred();
    this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace spindle::ktest
