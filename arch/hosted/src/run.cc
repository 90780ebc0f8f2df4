// Boots the kernel in this process (see spindle/hosted.h).
#include <sched.h>
#include <unistd.h>

#include <arch/arch.h>

#include "hosted_internal.h"
#include "spindle/hosted.h"
#include "spindle/panic.h"

namespace spindle::hosted {

unsigned host_cpus() {
  cpu_set_t set;
  // The process's main thread: vCPU threads are pinned to one core each.
  if (sched_getaffinity(getpid(), sizeof set, &set) == 0) return static_cast<unsigned>(CPU_COUNT(&set));
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<unsigned>(n) : 1;
}

int run(const Options& opts, int (*fn)(void*), void* arg) {
  unsigned cpus = opts.cpus ? opts.cpus : host_cpus();
  if (cpus > arch::kMaxVcpus) cpus = arch::kMaxVcpus;
  arch::hosted_calibrate_clock();
  arch::hosted_set_cpu_count(cpus);
  arch::hosted_set_pin_mask(opts.pin_mask);
  kernel::BootArgs args;
  args.timeslice_ns = opts.timeslice_ns;
  args.cpu_time = opts.cpu_time;
  args.thread_limit = opts.thread_limit;
  args.main_name = opts.main_name;
  args.main = fn;
  args.main_arg = arg;
  tree_id_range(&args);
  return kernel::kmain(args);
}

}  // namespace spindle::hosted
