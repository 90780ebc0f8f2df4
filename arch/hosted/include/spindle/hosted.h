// Running the Spindle kernel inside a Linux process.
//
// Apps normally do not call this: they define spindle_main (spindle/app.h)
// and link the hosted runtime, whose main() parses --cpus/--timeslice and
// boots the kernel. Tests and tools use run() to boot a kernel around a
// function, several times in one process if they like (one at a time).
#pragma once

#include <cstdint>

namespace spindle::hosted {

struct Options {
  unsigned cpus = 0;                    // virtual CPUs; 0 = all host cores
  std::uint64_t timeslice_ns = 10'000'000;
};

// Boots the kernel on opts.cpus vCPUs, runs fn(arg) as the first thread
// ("main", priority kDefaultPriority), and returns its result once it has
// returned and every vCPU has stopped. Threads still alive then are
// discarded. Must be called from a thread that is not a vCPU.
int run(const Options& opts, int (*fn)(void*), void* arg);

// Number of cores the host offers this process.
unsigned host_cpus();

}  // namespace spindle::hosted
