// Running the Spindle kernel inside a Linux process.
//
// Apps normally do not call this: they define spindle_main (spindle/app.h)
// and link the hosted runtime, whose main() parses --cpus/--timeslice and
// boots the kernel. Tests and tools use run() to boot a kernel around a
// function, several times in one process if they like (one at a time).
#pragma once

#include <cstdint>
#include <type_traits>

#include <arch/arch.h>

namespace spindle::hosted {

struct Options {
  unsigned cpus = 0;                    // virtual CPUs; 0 = all host cores
  std::uint64_t timeslice_ns = 10'000'000;
  bool cpu_time = false;                // per-thread CPU-time accounting (spindle::set_cpu_time_accounting)
  std::uint64_t pin_mask = 0;           // vCPU i on the i-th core of this set (cyclically); 0 = all
  unsigned thread_limit = 0;            // live Spindle threads allowed; 0 = no limit
  const char* main_name = "main";       // the first thread's name
};

// Boots the kernel on opts.cpus vCPUs, runs fn(arg) as the first thread
// ("main", priority kDefaultPriority), and returns its result once it has
// returned and every vCPU has stopped. Threads still alive then are
// discarded. Must be called from a thread that is not a vCPU.
int run(const Options& opts, int (*fn)(void*), void* arg);

// Whether this host process was started by Process::spawn (its command
// line is the spawn token). If so, runs the spawned entry in a fresh kernel
// and returns true with the entry's result in *code. A program with its
// own main() (tests, tools) that spawns processes calls this first.
bool run_if_spawned(int argc, char** argv, int* code);

// Number of cores the host offers this process.
unsigned host_cpus();

// Diagnostics: how many of this process's threads sleep, through a helper
// host thread, on a word shared with another process that idle vCPUs
// sleep on too (a semaphore's; arch.h: foreign_wait). A snapshot; any
// thread, never blocks. At most 32 (more such waits still work, without
// the idle vCPUs' help).
unsigned threads_on_watched_words();

// Runs fn(arg) on a helper host thread (never a vCPU) and blocks the
// calling Spindle thread, not its vCPU, until it returns; returns its
// result. For host system calls that block: waiting for a child process, a
// futex in memory shared with another process, a read from a pipe. fn must
// not call Spindle. Spindle thread context.
long host_call(long (*fn)(void*), void* arg);

// Starts fn(arg) on a helper host thread and returns at once; when fn
// returns, done is posted (kernel::post_external_wake). For waiters that
// cannot block a thread (coroutines). fn must not call Spindle.
void host_call_async(long (*fn)(void*), void* arg, kernel::ExternalWake* done);

// Same as host_call, for any callable returning something convertible to long.
template <typename F>
long host_call(F&& f) {
  using Fn = std::remove_reference_t<F>;
  return host_call([](void* p) -> long { return static_cast<long>((*static_cast<Fn*>(p))()); },
                   const_cast<void*>(static_cast<const void*>(&f)));
}

}  // namespace spindle::hosted
