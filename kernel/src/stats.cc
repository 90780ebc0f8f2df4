// spindle::stats: snapshots of the scheduler's accounting. In a process
// (in_user_process()) each call is a system call (kSysStats, ujobs.cc)
// that shows the process's own threads only, and the CPUs.
#include <new>

#include "kernel.h"
#include "spindle/console.h"
#include "spindle/stats.h"
#include "user.h"

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

void fill_thread_stats(const Tcb* t, std::uint64_t now, ThreadStats* s) {
  s->id = t->head.id;
  for (std::size_t i = 0; i < sizeof s->name; ++i) s->name[i] = t->name[i];
  s->state = to_string(t->state);
  s->priority = t->run.priority;
  s->base_priority = t->base_priority;
  s->cpu = t->cpu;
  s->cpu_time_ns = t->cpu_ns;
  if (g.cpu_time && t->state == ThreadState::kRunning) s->cpu_time_ns += now - g.cpus[t->cpu].switched_in_at;
  s->switches = t->switches_in;
  s->preemptions = t->preemptions;
  s->stack_size = t->stack.size;
  auto top = reinterpret_cast<std::uintptr_t>(t->stack.base) + t->stack.size;
  s->stack_high_water = t->lowest_sp ? top - t->lowest_sp : 0;
}

namespace {

// A process's view: its row with the state named in its own copy.
void from_user(const UserThreadStats& u, ThreadStats* out) {
  *out = u.stats;
  out->state = to_string(static_cast<ThreadState>(u.state));
}

std::size_t user_thread_stats(std::span<ThreadStats> out) {
  std::size_t cap = out.size() < 4096 ? out.size() : 4096;
  UserThreadStats* rows = cap ? new (std::nothrow) UserThreadStats[cap] : nullptr;
  if (cap && !rows) cap = 0;
  std::uint64_t n = sys(kSysStats, kStatsThreads, user_arg(rows), cap);
  if (n == ~std::uint64_t{0}) n = 0;
  for (std::size_t i = 0; i < n && i < cap; ++i) from_user(rows[i], &out[i]);
  delete[] rows;
  return static_cast<std::size_t>(n);
}

}  // namespace
}  // namespace kernel

using namespace kernel;

std::size_t thread_stats(std::span<ThreadStats> out) {
  if (in_user_process()) return user_thread_stats(out);
  LockGuard guard;
  std::uint64_t now = arch::now_ns();
  std::size_t n = 0;
  g.threads.for_each([&](Tcb* t) SPINDLE_NO_THREAD_SAFETY_ANALYSIS {
    if (n < out.size()) fill_thread_stats(t, now, &out[n]);
    ++n;
  });
  return n;
}

Status thread_stats(ThreadId id, ThreadStats* out) {
  if (in_user_process()) {
    UserThreadStats row;
    Status st = status_from(sys(kSysStats, kStatsThread, id, user_arg(&row)));
    if (st == Status::kOk) from_user(row, out);
    return st;
  }
  LockGuard guard;
  std::uint64_t now = arch::now_ns();
  Status st = Status::kNotFound;
  g.threads.for_each([&](Tcb* t) SPINDLE_NO_THREAD_SAFETY_ANALYSIS {
    if (t->head.id == id) {
      fill_thread_stats(t, now, out);
      st = Status::kOk;
    }
  });
  return st;
}

SystemStats system_stats() {
  SystemStats s;
  if (in_user_process()) {
    (void)sys(kSysStats, kStatsSystem, user_arg(&s));
    return s;
  }
  LockGuard guard;
  std::uint64_t now = arch::now_ns();
  s.cpus = g.ncpus;
  s.cpu_time = g.cpu_time;
  s.uptime_ns = now - g.boot_ns;
  s.threads = g.live_threads;
  for (unsigned i = 0; i < g.ncpus; ++i) {
    const Cpu& c = g.cpus[i];
    s.cpu[i].idle_ns = c.idle_ns + (c.current == c.idle ? now - c.switched_in_at : 0);
    s.cpu[i].switches = c.switches;
    s.cpu[i].interrupts = c.irqs;
    s.cpu[i].wait_spins = c.wait_spins.load(std::memory_order_relaxed);
    s.cpu[i].wait_spin_hits = c.wait_spin_hits.load(std::memory_order_relaxed);
    s.cpu[i].watch_wakeups = c.watch_wakeups;
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
    char cpu_us[24] = "-";
    if (sys.cpu_time) format(cpu_us, sizeof cpu_us, "%llu", static_cast<unsigned long long>(r.cpu_time_ns / 1000));
    print("%6llu %-20s %-9s %4d %4u %12s %9llu %8llu %5zu/%zuK\n", static_cast<unsigned long long>(r.id), r.name,
          r.state, r.priority, r.cpu, cpu_us, static_cast<unsigned long long>(r.switches),
          static_cast<unsigned long long>(r.preemptions), r.stack_high_water, r.stack_size / 1024);
  }
  if (!sys.cpu_time) print("(CPU-TIME: accounting is off; set_cpu_time_accounting(true) or --cpu_time)\n");
  if (n > kMax) print("... and %zu more threads\n", n - kMax);
  print("uptime %llu ms, %u threads alive\n", static_cast<unsigned long long>(sys.uptime_ns / 1'000'000), sys.threads);
  for (unsigned i = 0; i < sys.cpus; ++i) {
    print("cpu%-3u idle %8llu ms  switches %10llu  interrupts %8llu  wait spins %llu (%llu hits)\n", i,
          static_cast<unsigned long long>(sys.cpu[i].idle_ns / 1'000'000),
          static_cast<unsigned long long>(sys.cpu[i].switches), static_cast<unsigned long long>(sys.cpu[i].interrupts),
          static_cast<unsigned long long>(sys.cpu[i].wait_spins),
          static_cast<unsigned long long>(sys.cpu[i].wait_spin_hits));
  }
  busy.store(false, std::memory_order_release);
}

}  // namespace spindle
