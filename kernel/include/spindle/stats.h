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
  std::uint64_t cpu_time_ns = 0;  // time it has run, including the current slice
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
};

struct SystemStats {
  unsigned cpus = 0;
  std::uint64_t uptime_ns = 0;
  unsigned threads = 0;  // alive (not yet exited)
  CpuStats cpu[kMaxCpus];
};

// Fills `out` with up to out.size() threads (creation order, exited but
// unjoined ones included); returns how many threads exist in all.
std::size_t thread_stats(std::span<ThreadStats> out);
// One thread by id; kNotFound if it does not exist (or was joined).
Status thread_stats(ThreadId id, ThreadStats* out);
SystemStats system_stats();

// Prints a ps-like table of every thread and CPU to the console.
void print_stats();

}  // namespace spindle
