// Observability: per-thread CPU time, context switches, state and stack
// depth; per-CPU idle time; a ps-style dump. All calls take a consistent
// snapshot under the kernel lock (briefly), from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "spindle/cpu_mask.h"
#include "spindle/thread.h"

namespace spindle {

struct ThreadStats {
  ThreadId id = 0;
  char name[32] = {};
  const char* state = "";      // "ready", "running", "blocked", "suspended", "dead"
  int priority = 0;            // effective
  int base_priority = 0;
  unsigned cpu = 0;            // running on / queued on / last ran on
  // Time it has run (including now, if running) while CPU-time accounting
  // was on; 0 if it never was.
  std::uint64_t cpu_time_ns = 0;
  std::uint64_t switches = 0;     // times it was switched in
  std::uint64_t preemptions = 0;  // times it was switched out involuntarily
  std::size_t stack_size = 0;
  // Deepest stack use observed at a context switch or interrupt (a lower
  // bound on the true high-water mark, exact for a thread's blocked depth).
  std::size_t stack_high_water = 0;
};

struct CpuStats {
  std::uint64_t idle_ns = 0;
  std::uint64_t switches = 0;
  std::uint64_t interrupts = 0;
  // Waits that spun before blocking (a semaphore acquire on a CPU with
  // nothing else to run), and those that saw their release while spinning.
  std::uint64_t wait_spins = 0;
  std::uint64_t wait_spin_hits = 0;
  // Hosted: times this CPU, idle, saw a word shared with another process
  // change (or its region go away) that a coroutine or (through its helper
  // host thread) a thread of this process waited on (arch::idle_wait's
  // watch). Always 0 on aarch64, where no word is shared that way.
  std::uint64_t watch_wakeups = 0;
};

struct SystemStats {
  unsigned cpus = 0;
  std::uint64_t uptime_ns = 0;
  unsigned threads = 0;  // alive (not yet exited)
  bool cpu_time = false; // CPU-time accounting is on
  CpuStats cpu[kMaxCpus];
};

// Fills `out` with up to out.size() threads (creation order, exited but
// unjoined ones included); returns how many threads exist in all.
std::size_t thread_stats(std::span<ThreadStats> out);
// One thread by id; kNotFound if it does not exist (or was joined).
Status thread_stats(ThreadId id, ThreadStats* out);
SystemStats system_stats();

// Per-thread CPU-time accounting (ThreadStats::cpu_time_ns). It reads the
// clock at every context switch, which is a third of a yield's cost on the
// hosted target (a TSC read in a VM is ~17 ns), so it is off unless turned
// on here, by BootArgs / hosted::Options::cpu_time, or by a hosted app's
// --cpu_time flag. Turning it on charges running threads from that moment;
// turning it off keeps the totals. Per-CPU idle time is always kept.
// kInvalidState (nothing changed) inside a user process: it is the
// kernel's setting. Any thread; does not block.
Status set_cpu_time_accounting(bool on);
bool cpu_time_accounting();

// Prints a ps-like table of every thread and CPU to the console.
void print_stats();

}  // namespace spindle
