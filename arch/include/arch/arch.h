// The arch contract: everything the portable kernel needs from a machine.
//
// kernel/ includes only this header for machine access. Each backend
// (arch/hosted, arch/aarch64, ...) supplies <arch/backend.h> with the types
// and the inline fast paths declared below, and implements the rest in its
// own sources. CMake picks exactly one backend per build, so no call here is
// virtual.
//
// Contexts in which a function may be called:
//   any        - thread code, kernel code with interrupts disabled, or an
//                interrupt handler;
//   irqs-off   - only with this CPU's interrupts disabled (which also keeps
//                the caller on this CPU);
//   thread     - Spindle thread code with interrupts enabled;
//   boot       - once, during kernel start, before the CPUs run threads.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <arch/backend.h>

namespace spindle::arch {

// ---------------------------------------------------------------------------
// Per-CPU area. Each CPU owns a CpuArea (backend-defined contents) that the
// kernel embeds in its own per-CPU structure. `kernel` is the kernel's
// back-pointer to that structure.
//
//   CpuArea* cpu_area();          any. One instruction; never stale for
//                                 irqs-off callers. A thread that may be
//                                 preempted can migrate right after reading.
//   void cpu_init_local(CpuArea*, unsigned id);   boot, on that CPU.
//
// Thread pointers. Two per-thread words the scheduler sets on every switch,
// each read in one migration-safe access (a thread preempted and resumed on
// another CPU reads that CPU's register, which holds its own value):
//
//   void* kernel_thread_pointer();          any, kernel code (EL1) only.
//   void set_kernel_thread_pointer(void*);  irqs-off, by the scheduler only.
//       The kernel's "current thread" (its Tcb). Kept where code running
//       in user mode cannot read it (aarch64: SP_EL0 while at EL1, as
//       Linux arm64 does).
//   void* thread_pointer();                 any; also user mode.
//   void set_thread_pointer(void*);         irqs-off, by the scheduler only.
//       Points at a detail::ThreadHead the running thread itself may read,
//       so this_thread::id() and the lock fast paths are one load at EL1
//       and at EL0 alike (aarch64: TPIDRRO_EL0, read-only at EL0). Rule:
//       while a thread runs kernel code it is the value the scheduler set
//       (the thread's Tcb, whose first member is its ThreadHead); while a
//       thread runs in user mode it is that thread's user thread pointer
//       (a per-thread block in user memory, given at user-mode entry),
//       which the backend installs on every return to user mode and
//       replaces with the scheduler's value on every entry from it. So the
//       kernel never sees a user-forged head, and user code never sees a
//       kernel address.
//   Hosted has no user mode: both are one %gs slot, and the kernel always
//   gives the two the same value.

// ---------------------------------------------------------------------------
// Interrupts. Masking is per CPU. While masked, interrupts are held pending
// and are delivered when unmasked.
//
//   IrqState irq_save();           any. Masks, returns the previous state.
//   void irq_restore(IrqState);    any. Back to a saved state; delivers
//                                  pending interrupts if that unmasks.
//   void irq_enable();             any. Unmasks and delivers pending ones.
//   bool irqs_enabled();           any.
//
// Delivery calls kernel::handle_irq(sources) with interrupts masked on the
// interrupted thread's stack (or the CPU's interrupt stack). handle_irq may
// context-switch: that is preemption, and the interrupted thread resumes
// later, possibly on another CPU, exactly where it was.

// ---------------------------------------------------------------------------
// Contexts. A Context is the saved state of a thread that is not running.
//
//   void context_init(Context*, void* stack_lo, size_t size,
//                     void (*entry)(void*), void* arg);      any
//       Prepares a context that, when first switched to, calls entry(arg)
//       on the given stack with interrupts masked. entry never returns.
//   void context_switch(Context* from, Context* to);          irqs-off
//       Saves the caller into `from` and resumes `to`. Returns when some CPU
//       switches back to `from`.
//   [[noreturn]] void context_switch_final(Context* to);      irqs-off
//       As context_switch, for a thread that will never run again.
//   void context_destroy(Context*);                           any
//       Releases backend bookkeeping of a context that is not running.
//   void context_adopt(Context*);                             boot
//       Makes the CPU's boot stack into a context (the idle thread's).

// ---------------------------------------------------------------------------
// CPUs.
//
//   unsigned cpu_count();           any. CPUs the backend will start.
//   void run_cpus(void (*entry)(unsigned cpu));   boot
//       Starts every CPU in entry(cpu) (the calling CPU included where the
//       backend runs on it). On hosted it returns once every entry returned.
//   void send_ipi(unsigned cpu);    any. Makes `cpu` call handle_irq with
//       kIrqIpi soon. Coalesces: several IPIs before delivery are one.
//       Sending to yourself is allowed and is delivered at the next unmask.
//       Hosted: also from host threads that are not vCPUs (a no-op when
//       the kernel is not running).
//   void idle_wait();               irqs-off, idle thread only. Returns when
//       an interrupt is pending (delivered by the caller's next unmask), or
//       spuriously. Hosted: polls briefly, then sleeps in ppoll.
//   void cpu_relax();               any. Spin-wait hint.

// ---------------------------------------------------------------------------
// Time.
//
//   uint64_t now_ns();              any. Monotonic, same base on all CPUs.
//   void set_timer(uint64_t ns);    irqs-off. This CPU's one-shot deadline
//       (absolute, now_ns time base), replacing the previous one. The timer
//       interrupt (kIrqTimer) may come late and, on some backends, slightly
//       early: the kernel checks now_ns() itself.

// ---------------------------------------------------------------------------
// Stacks. A StackRegion is usable memory [base, base + size) with an
// inaccessible guard region just below base, so an overflow faults.
//
//   StackRegion stack_alloc(size_t size);   thread or boot. size is a
//       multiple of the page size. {nullptr, 0} when memory is exhausted.
//   void stack_free(StackRegion);           thread or boot.
//   bool in_guard(const StackRegion&, uintptr_t addr);   any.

// ---------------------------------------------------------------------------
// Console and lifecycle.
//
//   void console_write(const char* s, size_t n);   any. Unbuffered; takes no
//       lock that could be held across a context switch.
//   size_t console_read(char* buf, size_t n);       thread; one caller at a
//       time (kernel/src/console.cc serialises readers). Blocks the calling
//       thread, never its CPU, until input is there; returns 1..n bytes, or
//       0 at the end of input. No polling: aarch64 takes the PL011 receive
//       interrupt into a buffer and wakes the reader (a Ctrl-D byte is the
//       end of input); hosted reads stdin on a helper host thread
//       (host_call).
//   [[noreturn]] void halt(int exit_code);          any. Ends the system
//       now (hosted: the process) with this exit code.

inline constexpr unsigned kIrqTimer = 1u << 0;
inline constexpr unsigned kIrqIpi = 1u << 1;

}  // namespace spindle::arch

// The kernel's side of the contract: entry points a backend calls.
namespace spindle::kernel {
// Interrupt delivery (see above). Interrupts masked; may context-switch.
void handle_irq(unsigned sources);
// A stack overflow was detected in the running thread (the fault address is
// in its guard region). Interrupts masked. Kills the thread; never returns.
[[noreturn]] void stack_overflow(std::uintptr_t fault_addr);
// Whether the running thread's guard region contains addr.
bool current_stack_guard_contains(std::uintptr_t addr);

// A completion posted from outside the kernel's threads: a device
// interrupt handler, or (hosted) a host thread that is not a vCPU, such as
// one that finished a blocking host system call for a Spindle thread.
// The waiter blocks in futex_wait(&word, 0) while word is 0; the kernel
// sets word to 1 and wakes it. The poster must keep the object alive until
// the waiter has seen word == 1, and never touches it after posting.
struct ExternalWake {
  std::atomic<std::uint32_t> word{0};
  ExternalWake* next = nullptr;  // kernel's
};
// Any context (see ExternalWake), lock-free: queues ev and sends an IPI to
// CPU 0, whose handle_irq delivers every queued completion.
void post_external_wake(ExternalWake* ev);

struct BootArgs {
  std::uint64_t timeslice_ns = 10'000'000;
  unsigned thread_limit = 0;     // live threads allowed (0: no limit); Thread::create beyond it gets kLimit
  int (*main)(void*) = nullptr;  // the first thread's body; its result is the exit code
  void* main_arg = nullptr;
  const char* main_name = "main";
};
// Called once by the backend on the boot CPU: brings the kernel up on
// arch::cpu_count() CPUs (via run_cpus), runs args.main as the first thread
// and, when it returns, stops every CPU. Returns the exit code where
// run_cpus returns (hosted); bare-metal backends halt with it instead.
int kmain(const BootArgs& args);
}  // namespace spindle::kernel
