// spindle::stats: snapshots of the scheduler's accounting.
#include "kernel.h"
#include "spindle/console.h"
#include "spindle/stats.h"

namespace spindle {
namespace kernel {

const char* to_string(ThreadState s) {
  switch (s) {
    case ThreadState::kReady: return "ready";
    case ThreadState::kRunning: return "running";
    case ThreadState::kBlocked: return "blocked";
    case ThreadState::kSuspended: return "suspended";
    case ThreadState::kDead: return "dead";
  }
  return "?";
}

namespace {

void fill(const Tcb* t, std::uint64_t now, ThreadStats* s) SPINDLE_REQUIRES(g.lock) {
  s->id = t->head.id;
  for (std::size_t i = 0; i < sizeof s->name; ++i) s->name[i] = t->name[i];
  s->state = to_string(t->state);
  s->priority = t->run.priority;
  s->base_priority = t->base_priority;
  s->cpu = t->cpu;
  s->cpu_time_ns = t->cpu_ns;
  if (t->state == ThreadState::kRunning) s->cpu_time_ns += now - g.cpus[t->cpu].switched_in_at;
  s->switches = t->switches_in;
  s->preemptions = t->preemptions;
  s->stack_size = t->stack.size;
  auto top = reinterpret_cast<std::uintptr_t>(t->stack.base) + t->stack.size;
  s->stack_high_water = t->lowest_sp ? top - t->lowest_sp : 0;
}

}  // namespace
}  // namespace kernel

using namespace kernel;

std::size_t thread_stats(std::span<ThreadStats> out) {
  LockGuard guard;
  std::uint64_t now = arch::now_ns();
  std::size_t n = 0;
  g.threads.for_each([&](Tcb* t) SPINDLE_NO_THREAD_SAFETY_ANALYSIS {
    if (n < out.size()) fill(t, now, &out[n]);
    ++n;
  });
  return n;
}

Status thread_stats(ThreadId id, ThreadStats* out) {
  LockGuard guard;
  std::uint64_t now = arch::now_ns();
  Status st = Status::kNotFound;
  g.threads.for_each([&](Tcb* t) SPINDLE_NO_THREAD_SAFETY_ANALYSIS {
    if (t->head.id == id) {
      fill(t, now, out);
      st = Status::kOk;
    }
  });
  return st;
}

SystemStats system_stats() {
  SystemStats s;
  LockGuard guard;
  std::uint64_t now = arch::now_ns();
  s.cpus = g.ncpus;
  s.uptime_ns = now - g.boot_ns;
  s.threads = g.live_threads;
  for (unsigned i = 0; i < g.ncpus; ++i) {
    const Cpu& c = g.cpus[i];
    s.cpu[i].idle_ns = c.idle_ns + (c.current == c.idle ? now - c.switched_in_at : 0);
    s.cpu[i].switches = c.switches;
    s.cpu[i].interrupts = c.irqs;
  }
  return s;
}

void print_stats() {
  constexpr std::size_t kMax = 256;
  static ThreadStats rows[kMax];  // too big for a thread stack; guarded below
  static std::atomic<bool> busy{false};
  while (busy.exchange(true, std::memory_order_acquire)) this_thread::yield();
  std::size_t n = thread_stats(std::span<ThreadStats>(rows, kMax));
  SystemStats sys = system_stats();
  print("%6s %-20s %-9s %4s %4s %12s %9s %8s %10s\n", "ID", "NAME", "STATE", "PRIO", "CPU", "CPU-TIME(us)",
        "SWITCHES", "PREEMPT", "STACK(B)");
  for (std::size_t i = 0; i < n && i < kMax; ++i) {
    const ThreadStats& r = rows[i];
    print("%6llu %-20s %-9s %4d %4u %12llu %9llu %8llu %5zu/%zuK\n", static_cast<unsigned long long>(r.id), r.name,
          r.state, r.priority, r.cpu, static_cast<unsigned long long>(r.cpu_time_ns / 1000),
          static_cast<unsigned long long>(r.switches), static_cast<unsigned long long>(r.preemptions),
          r.stack_high_water, r.stack_size / 1024);
  }
  if (n > kMax) print("... and %zu more threads\n", n - kMax);
  print("uptime %llu ms, %u threads alive\n", static_cast<unsigned long long>(sys.uptime_ns / 1'000'000), sys.threads);
  for (unsigned i = 0; i < sys.cpus; ++i) {
    print("cpu%-3u idle %8llu ms  switches %10llu  interrupts %8llu\n", i,
          static_cast<unsigned long long>(sys.cpu[i].idle_ns / 1'000'000),
          static_cast<unsigned long long>(sys.cpu[i].switches), static_cast<unsigned long long>(sys.cpu[i].interrupts));
  }
  busy.store(false, std::memory_order_release);
}

}  // namespace spindle
