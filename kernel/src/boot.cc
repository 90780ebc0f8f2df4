// Kernel start and stop: per-CPU bring-up, the idle loop, the main thread,
// shutdown and teardown.
#include <new>

#include "kernel.h"
#include "spindle/console.h"

namespace spindle::kernel {
namespace {

Tcb g_idle[kMaxCpus];
// The CPU structure the boot code runs on before the CPUs start (hosted:
// the process's main host thread, which then only waits).
Cpu g_boot_cpu;
std::atomic<unsigned> g_cpus_up{0};

struct MainCall {
  int (*fn)(void*);
  void* arg;
};

void idle_loop(Cpu& c) SPINDLE_NO_THREAD_SAFETY_ANALYSIS {
  arch::WatchedWord watch[arch::kMaxWatched];  // words parked coroutine jobs wait on (hosted)
  for (;;) {
    arch::irq_save();
    g.lock.lock();
    if (g.shutting_down.load(std::memory_order_relaxed)) {
      g.lock.unlock();
      return;
    }
    schedule(SwitchReason::kYield);  // returns when nothing else is runnable here
    bool again = c.need_resched || g.shutting_down.load(std::memory_order_relaxed);
    unlock_keep_irqs_masked();
    // Sleep until an interrupt and take it: handle_irq may run threads here
    // and come back to this thread once none is left. No second look at
    // the queues after that, under the lock: whatever makes a thread
    // runnable for this CPU posts it an interrupt (place() sees an idle CPU
    // as committed to nothing, so a thread queued here always preempts),
    // and the schedule() that switched back here has just tried to steal.
    while (!again) {
      arch::idle_wait(watch, foreign_watch(watch, arch::kMaxWatched));
      arch::irq_enable();
      arch::irq_save();
      again = g.shutting_down.load(std::memory_order_relaxed);
    }
    arch::irq_enable();
  }
}

// The thread identity of code that runs outside every Spindle thread.
Tcb g_outside;

void cpu_main(unsigned id) SPINDLE_NO_THREAD_SAFETY_ANALYSIS {
  Cpu& c = g.cpus[id];
  c.arch.kernel = &c;
  arch::cpu_init_local(&c.arch, id);
  Tcb* idle = &g_idle[id];
  new (idle) Tcb;
  idle->is_idle = true;
  idle->magic = kTcbMagic;
  idle->state = ThreadState::kRunning;
  idle->cpu = id;
  idle->run.priority = -1;
  format(idle->name, sizeof idle->name, "idle/%u", id);
  arch::context_adopt(&idle->ctx);
  arch::irq_save();
  g.lock.lock();
  c.id = id;
  c.idle = c.current = idle;
  set_current_thread(idle);
  c.switched_in_at = c.clock_hint = arch::now_ns();
  c.online = true;
  g.online = g.online | CpuMask::only(id);
  g.lock.unlock();
  // No CPU runs threads before all are online, so placement never sees a
  // CPU that cannot take an IPI.
  g_cpus_up.fetch_add(1, std::memory_order_acq_rel);
  while (g_cpus_up.load(std::memory_order_acquire) < g.ncpus) arch::cpu_relax();
  idle_loop(c);
  arch::context_destroy(&idle->ctx);
}

}  // namespace

void shutdown(int code) {
  LockGuard guard;
  if (g.shutting_down.load(std::memory_order_relaxed)) return;
  g.exit_code = code;
  g.shutting_down.store(true, std::memory_order_relaxed);
  for (unsigned i = 0; i < g.ncpus; ++i) resched_cpu(i);
}

int kmain(const BootArgs& args) SPINDLE_NO_THREAD_SAFETY_ANALYSIS {
  g.~Kernel();
  new (&g) Kernel;
  new (&g_boot_cpu) Cpu;
  g_cpus_up.store(0);
  forget_external_wakes();
  g_boot_cpu.arch.kernel = &g_boot_cpu;
  g_boot_cpu.id = 0;
  arch::cpu_init_local(&g_boot_cpu.arch, 0);
  // Code on the boot thread outside any Spindle thread (before the CPUs
  // run, and static destructors after they stopped) runs as "outside".
  if (g_outside.magic != kTcbMagic) {
    g_outside.magic = kTcbMagic;
    g_outside.head.id = kOutsideThreadId;
    format(g_outside.name, sizeof g_outside.name, "outside");
  }
  set_current_thread(&g_outside);
  g.ncpus = arch::cpu_count();
  if (g.ncpus == 0 || g.ncpus > kMaxCpus) panic("cannot run on %u CPUs (1..%u)", g.ncpus, kMaxCpus);
  g.lock.set_single_cpu(g.ncpus == 1);
  g.timeslice_ns = args.timeslice_ns;
  g.cpu_time = args.cpu_time;
  g.thread_limit = args.thread_limit;
  if (args.first_id == 0 || args.first_id >= args.id_end || args.id_end > kOutsideThreadId ||
      args.next_id < args.first_id || args.next_id >= args.id_end) {
    panic("bad thread id range [%llu, %llu) from the backend", static_cast<unsigned long long>(args.first_id),
          static_cast<unsigned long long>(args.id_end));
  }
  g.first_id = args.first_id;
  g.id_end = args.id_end;
  g.next_id = args.next_id;
  g.boot_ns = arch::now_ns();
  for (unsigned i = 0; i < g.ncpus; ++i) {
    new (&g.cpus[i]) Cpu;
    g.cpus[i].rq.attach(&g.queued_cpus, 1ull << i);
  }
  jobs_boot();

  // The main thread goes straight into CPU 0's queue: no CPU is online yet.
  g.online = CpuMask::only(0);
  ThreadOptions opts;
  opts.name = args.main_name;
  void* slot = nullptr;
  Result<detail::Tcb*> h = detail::thread_create(opts, sizeof(MainCall), alignof(MainCall), &slot);
  if (!h.ok()) panic("cannot create the main thread: %s", to_string(h.status()));
  new (slot) MainCall{args.main, args.main_arg};
  Tcb* t = Tcb::from(*h);
  t->invoke = [](void* p) -> int {
    auto* m = static_cast<MainCall*>(p);
    int code = m->fn(m->arg);
    shutdown(code);
    return code;
  };
  t->destroy = [](void*) {};
  g.online = CpuMask();
  t->state = ThreadState::kReady;
  t->cpu = 0;
  register_thread(t);
  g.cpus[0].rq.push_back(&t->run);

  arch::run_cpus(cpu_main);

  // Every CPU has stopped (hosted). Return what is left: threads still
  // alive (their stacks are released as the lock is dropped), then the
  // stack cache, which nobody else can touch any more.
  arch::irq_save();
  g.lock.lock();
  jobs_shutdown();
  futex_forget_waiters();
  forget_external_wakes();
  while (Tcb* left = g.threads.front()) free_thread(left);
  release_lock_states();
  unlock_keep_irqs_masked();
  while (g.stack_cache) {
    void* base = g.stack_cache;
    g.stack_cache = *static_cast<void**>(base);
    arch::stack_free({base, kDefaultStackSize});
  }
  g.stack_cache_count = 0;
  return g.exit_code;
}

}  // namespace spindle::kernel
