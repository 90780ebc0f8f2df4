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

#include "spindle/status.h"

namespace spindle::arch {
// The user range (see User mode), here so that backends' inline user
// copies can check it.
inline constexpr std::uintptr_t kUserBase = 0x1000;            // page 0 stays unmapped
inline constexpr std::uintptr_t kUserLimit = 0x8000000000ull;  // 512 GiB (aarch64: T0SZ = 25)

// A word shared with other kernels that a parked coroutine job waits to
// see differ from `expected` (idle_wait; Words shared with other kernels).
// wakes_all: every wake of this word wakes all its sleepers (a counting
// word's give), so a backend may sleep on it in the host's futex; on any
// other word it only looks, since a sleep there could take a wake-one
// (a lock's unlock, a condvar's notify_one) meant for a thread of another
// process.
struct WatchedWord {
  const std::atomic<std::uint32_t>* word;
  std::uint32_t expected;
  bool wakes_all;
};
}  // namespace spindle::arch

#include <arch/backend.h>

namespace spindle::arch {

// ---------------------------------------------------------------------------
// Per-CPU area. Each CPU owns a CpuArea (backend-defined contents) that the
// kernel embeds in its own per-CPU structure. `kernel` is the kernel's
// back-pointer to that structure; `id` is the CPU's number (cpu_init_local
// sets it).
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
//   void set_thread_pointers(void* kernel, void* visible);
//                                           irqs-off, by the scheduler only:
//                                           sets both below at once.
//   void* kernel_thread_pointer();          any, kernel code (EL1) only.
//       The kernel's "current thread" (its Tcb). Kept where code running
//       in user mode cannot read it (aarch64: SP_EL0 while at EL1, as
//       Linux arm64 does).
//   void* thread_pointer();                 any; also user mode.
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
//   void idle_wait(const WatchedWord* watch, unsigned n);
//                                   irqs-off, idle thread only. Returns when
//       an interrupt is pending (delivered by the caller's next unmask), or
//       spuriously. `watch` (n entries, n <= kMaxWatched) are foreign words
//       (below) that parked coroutine jobs wait on: a snapshot, so a word
//       may have been unmapped since, and reading one must not fault. A
//       backend that can wait on them returns with kIrqForeign pending once
//       one differs from its expected value; one that cannot ignores them
//       (the jobs' timers look anyway). Hosted: polls briefly (looking at
//       the words every ~2 us), then sleeps in futex_waitv on the words
//       that wake all and the pending bits (ppoll when there are none, or
//       no futex_waitv).
//   void cpu_relax();               any. Spin-wait hint.
//   constexpr bool kAtomicRmwCostly; Whether an uncontended atomic
//       read-modify-write costs much more than a plain load and store
//       (x86's `lock` prefix: ~20 cycles). Where it does, a kernel booted
//       on one CPU takes its lock and updates counting words under it
//       with plain loads and stores (kernel.h, KernelLock); where it does
//       not (aarch64: an exclusive pair is one instruction more than the
//       plain pair, and the CPU-count test would cost more), it keeps the
//       atomic path.

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
//       0 at the end of input (or at once when the reading thread's process
//       is ending: its waits return kInterrupted). No polling: aarch64 takes the PL011 receive
//       interrupt into a buffer and wakes the reader (a Ctrl-D byte is the
//       end of input); hosted reads stdin on a helper host thread
//       (host_call).
//   [[noreturn]] void halt(int exit_code);          any. Ends the system
//       now (hosted: the process) with this exit code.

// ---------------------------------------------------------------------------
// User mode: address spaces, entry to user mode, and the way back in
// (system calls, faults). aarch64: EL0 with TTBR0 tables and ASIDs. Hosted
// has no user mode (a process is a host process): its address_space_create
// returns nullptr and address_space_activate does nothing.
//
// AddressSpace (backend type) is one user address space: its translation
// tables and an address-space id (aarch64: 16-bit ASIDs where
// ID_AA64MMFR0_EL1.ASIDBits says so, else 8, recycled by generations, so
// running out only costs a TLB flush per CPU). The kernel half of the
// address space is shared and never visible to user mode. User addresses
// are [kUserBase, kUserLimit), page granular.
//
//   AddressSpace* address_space_create();          thread. nullptr when out
//       of memory (or without user mode).
//   void address_space_destroy(AddressSpace*);     thread. No thread may run
//       in it any more (none active on any CPU); unmaps and frees every
//       page still mapped, its tables and its ASID (TLB entries of the ASID
//       invalidated on every CPU).
//   bool user_map(AddressSpace*, uintptr_t va, size_t size, UserAccess);
//       thread. Maps fresh zeroed pages at [va, va + size) (page aligned,
//       inside the user range, not mapped yet: else it panics, a caller
//       bug). false: out of memory (what was mapped of the range stays).
//       Never writable and executable at once; never executable by the
//       kernel; entries are not global (tagged with the ASID).
//   void user_unmap(AddressSpace*, uintptr_t va, size_t size);   thread.
//       Unmaps what is mapped in the range and frees the pages, after the
//       TLB entries are invalidated (by ASID and address, on every CPU).
//   bool user_copy_to(AddressSpace*, uintptr_t va, const void* src, size_t n);
//       thread. Writes into the address space's pages through the kernel's
//       own mapping, whatever their user access (a loader writing code),
//       and makes the instruction side see it. false if a page is not mapped.
//   void address_space_activate(AddressSpace*);    irqs-off, by the
//       scheduler on every switch: the address space of the thread that
//       is about to run (nullptr: a kernel thread, no user mappings).
//   [[noreturn]] void enter_user(const UserEntry&); thread, with the
//       caller's address space active (kernel::run_user). Drops to user
//       mode at entry.pc with sp = entry.sp, the first argument register =
//       entry.arg, every other register zero, interrupts enabled, and
//       entry.thread_pointer as the thread pointer user code reads (see
//       Thread pointers). The calling thread's own stack becomes its
//       kernel stack: exceptions from user mode push their frame there, so
//       a thread preempted in user mode is switched like any other.
//   void context_switch_to_user(Context* from, void* frame);   irqs-off,
//       kernel lock held, only from kernel::syscall_fast (so only backends
//       that call it need it). As context_switch(from, ...), but the
//       thread to run, already made current by the kernel
//       (kernel::switch_directly_begin), is one blocked inside
//       syscall_fast whose system call the kernel has completed: it
//       resumes at `frame`, the regs its syscall_fast was given (its saved
//       user registers), not at its kernel context, which is dropped. On
//       that thread's kernel stack the backend first calls
//       kernel::resumed_at_user_frame (which releases the kernel lock),
//       then returns to user mode as after any system call. Returns when
//       `from` runs again through its own context (not resumed this way).
//
//   std::uint64_t user_syscall(std::uint64_t number, std::uint64_t a0 = 0,
//                              ..., std::uint64_t a5 = 0);
//       user mode only (code of a process's copy, see Image copies): a
//       system call, kernel::handle_syscall's result. Hosted: never called
//       (no process code runs in a hosted kernel).
//   UserRegs user_syscall_regs(std::uint64_t number, std::uint64_t a0,
//                              ..., std::uint64_t a4[, std::uint64_t a5]);
//       the same, for a system call whose results are the first three
//       argument registers (kSysChannelCallRegs).
//
// Checked access to user memory, for system calls. The range must lie in
// [kUserBase, kUserLimit) and be mapped with the access user mode would
// need (an empty range always passes); the kernel never faults on a bad
// one.
//   bool user_read(void* dst, std::uintptr_t src, std::size_t n);   thread,
//       with the caller's own address space active (a system call).
//   bool user_write(std::uintptr_t dst, const void* src, std::size_t n);
//       thread, likewise. Each copies with user mode's permissions (aarch64:
//       LDTR/STTR inside a probe, arch/probe.h); false at the first byte user
//       mode could not read (write), some bytes may have been copied.
//   bool user_accessible(AddressSpace*, std::uintptr_t va, std::size_t n,
//                        bool write);   thread or irqs-off. Whether user
//       mode may read (write) every byte of the range, from the tables.
//   void* user_word(AddressSpace*, std::uintptr_t va, bool write,
//                   bool* shared = nullptr);
//       thread or irqs-off. The kernel's address of the 4-byte aligned
//       32-bit word at user address va if user mode may read (write) it,
//       else nullptr. The same for every address space mapping that page
//       (futex keys are these addresses), valid until the page is unmapped.
//       *shared: whether the page is one of user_map_kernel_pages'.
//   bool user_map_kernel_pages(AddressSpace*, std::uintptr_t va,
//                              const void* pages, std::size_t size,
//                              UserAccess);   thread. Maps kernel memory
//       (page aligned and physically contiguous: a page run of the kernel
//       heap) at va, R or RW; the pages stay the kernel's (user_unmap and
//       address_space_destroy leave them). false: out of memory.
//
// Image copies (backends with user mode). The kernel and every process run
// one image: the kernel its own copy at the link address, a process a copy
// that user_map_image builds at a user address. Code addresses cross
// copies as offsets from image_base().
//   std::uintptr_t image_base();        any, also user mode: where the
//       running copy starts.
//   std::size_t image_size();           any: the bytes a process's copy
//       spans from its base (a page multiple).
//   bool user_map_image(AddressSpace*, std::uintptr_t base);   thread. Maps
//       a fresh copy at base (page aligned, [base, base + image_size()) in
//       the user range and unmapped): the code the kernel's own pages,
//       read-only and executable; constant data the kernel's pages,
//       read-only; the image's relocated constants a private copy,
//       read-only; its data private and read-write, with the values the
//       image was loaded with (not the kernel's current ones) and zeroed
//       .bss; every address in them relocated for base. false: out of
//       memory (what was mapped stays, for address_space_destroy).
//   void image_constructors();          user mode, once, by a process's
//       first thread: the global constructors of its copy.
//   std::uintptr_t kernel_space_address();   any: an address the kernel
//       maps and user mode may never access.
//
// From user mode back to the kernel (backend calls, on the thread's kernel
// stack; interrupts from user mode are delivered as from kernel code and
// may preempt the thread as usual):
//   - a system call instruction (aarch64 `svc #0`: number in x8, arguments
//     in x0..x5, result in x0) calls kernel::handle_syscall with interrupts
//     enabled; on return the thread goes back to user mode. For number
//     kSysChannelCall the backend first calls kernel::syscall_fast, with
//     interrupts still masked, and goes on to handle_syscall only if that
//     returns false;
//   - any other exception (abort, undefined instruction, misaligned pc or
//     sp, trapped instruction, breakpoint) calls kernel::user_fault with
//     interrupts masked, which never returns: the thread ends. The system
//     goes on;
//   - right before every return to user mode (after either, after an
//     interrupt taken from user mode, and at the first entry) the backend
//     calls kernel::returning_to_user with interrupts masked, which may
//     end the thread instead.
// ---------------------------------------------------------------------------
// Words shared with other kernels. Hosted, each process runs its own kernel,
// and a SharedMemory region mapped by several of them holds words (a Mutex,
// a CondVar) that threads of every one of them wait on and lock. No kernel's
// wait queues can hold all those waiters, so futex calls on such a word go
// to the backend, which waits on the host's futex instead; the lock
// protocol on top (kernel/src/futex.cc) stays the kernel's. aarch64 runs
// every process under one kernel, which keys a shared word by its physical
// address: foreign_word is always false there and the rest is never called.
//
//   bool foreign_word(const void* word);    any. Whether other kernels may
//       map the 4-byte word (a region registered by the backend).
//   Status foreign_wait(const std::atomic<uint32_t>* word, uint32_t expected,
//                       uint64_t deadline_ns, bool look, bool wakes_all);   thread.
//       Blocks the calling thread (never its CPU) while *word == expected, until a
//       foreign_wake from any kernel or the deadline (now_ns base; ~0:
//       none): kOk (woken, maybe spuriously, or the word changed),
//       kWouldBlock (*word differed at the call), kTimedOut. Hosted, with
//       `look`: looks at the word for up to 30 us first, yielding between
//       looks (the kernel asks for it before a caller's first sleep only).
//       `wakes_all` as WatchedWord's: hosted, idle vCPUs then sleep on the
//       word too while the thread's helper host thread does, so the one
//       that takes the helper's wake-up is already awake.
//   unsigned foreign_wake(const std::atomic<uint32_t>* word, unsigned n);
//       any. Wakes up to n waiters of the word in every kernel.
//   OwnerLiveness owner_liveness(uint64_t id);   any. For a thread id found
//       in a shared lock word: kLocal (one of this kernel's: the kernel
//       knows), kAlive (another kernel's, which still runs), kDead (another
//       kernel's that ended, or no kernel's: a forged id).
//   void owner_id_used(uint64_t id);     kernel lock. The kernel gave id to
//       a new thread or job (before it can own anything).
//   void owner_id_ended(uint64_t id);    kernel lock. The thread or job
//       with id ended (may be called again for the same end). With these
//       two, owner_liveness tells a dead thread of a live kernel too.
enum class OwnerLiveness : std::uint8_t { kLocal, kAlive, kDead };

enum class UserAccess : std::uint8_t { kRead, kReadWrite, kReadExecute };

struct UserEntry {
  std::uintptr_t pc = 0;
  std::uintptr_t sp = 0;              // 16-byte aligned
  std::uint64_t arg = 0;
  std::uintptr_t thread_pointer = 0;  // a user address: the thread's visible ThreadHead
};

// A system call's registers, as the kernel sees them.
struct SyscallFrame {
  std::uint64_t number;
  std::uint64_t arg[6];
  std::uint64_t result;  // returned to user mode
};

enum class UserFaultKind : std::uint8_t {
  kDataAbort,         // a load or store the user mapping does not allow (or nothing mapped)
  kInstructionAbort,  // a fetch from memory that is not user-executable
  kUndefined,         // an undefined or (at this level) not allowed instruction
  kAlignment,         // a misaligned pc or sp
  kOther,             // a breakpoint, trapped system instruction, ...
};

struct UserFault {
  UserFaultKind kind;
  const char* what;        // the exception class, for reports
  std::uint64_t syndrome;  // aarch64: ESR_EL1 (class = syndrome >> 26)
  std::uintptr_t address;  // the faulting data or instruction address (FAR), if any
  std::uintptr_t pc;       // where user mode was (ELR)
};

inline constexpr unsigned kIrqTimer = 1u << 0;
inline constexpr unsigned kIrqIpi = 1u << 1;
inline constexpr unsigned kIrqForeign = 1u << 2;  // a watched word changed (idle_wait)
inline constexpr unsigned kMaxWatched = 63;       // words one idle_wait watches

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
// Words shared with other kernels (see arch: foreign words): how many
// coroutine jobs of this kernel wait on a word in [lo, lo + size), so that
// a backend can refuse to unmap a region under them. Thread context; takes
// the kernel lock.
unsigned foreign_jobs_in(const void* lo, std::size_t size);

// A completion posted from outside the kernel's threads: a device
// interrupt handler, or (hosted) a host thread that is not a vCPU, such as
// one that finished a blocking host system call for a Spindle thread.
// The waiter blocks in futex_wait(&word, 0) while word is 0; the kernel
// sets word to 1 and wakes it, then calls `delivered` (if set) with the
// kernel lock held, after its last use of the object. Without `delivered`
// the object must live until the waiter has seen word == 1; with it (for a
// waiter that may go away first, such as a cancelled coroutine) the object
// may be freed by `delivered`. The poster never touches it after posting.
struct ExternalWake {
  std::atomic<std::uint32_t> word{0};
  ExternalWake* next = nullptr;  // kernel's
  void (*delivered)(ExternalWake*) = nullptr;
};
// Any context (see ExternalWake), lock-free: queues ev and sends an IPI to
// CPU 0, whose handle_irq delivers every queued completion.
void post_external_wake(ExternalWake* ev);

struct BootArgs {
  std::uint64_t timeslice_ns = 10'000'000;
  bool cpu_time = false;         // per-thread CPU-time accounting from boot (spindle::set_cpu_time_accounting)
  unsigned thread_limit = 0;     // live threads allowed (0: no limit); Thread::create beyond it gets kLimit
  int (*main)(void*) = nullptr;  // the first thread's body; its result is the exit code
  void* main_arg = nullptr;
  const char* main_name = "main";
  // The thread ids this kernel hands out: [first_id, id_end), starting at
  // next_id. Kernels that share lock words (hosted processes of one tree,
  // see "Words shared with other kernels") get disjoint ranges, so a lock
  // word's owner id names one thread of one kernel.
  std::uint64_t first_id = 1;
  std::uint64_t id_end = (std::uint64_t{1} << 30) - 1;  // spindle::kMaxThreadId: the "outside" identity
  std::uint64_t next_id = 1;
};
// Called once by the backend on the boot CPU: brings the kernel up on
// arch::cpu_count() CPUs (via run_cpus), runs args.main as the first thread
// and, when it returns, stops every CPU. Returns the exit code where
// run_cpus returns (hosted); bare-metal backends halt with it instead.
int kmain(const BootArgs& args);

// User mode: processes (kernel/src/uprocess.cc, usyscall.cc, uheap.cc,
// compiled for backends with user mode only) and the system-call table
// (documented in kernel/src/syscall.cc).
//
// Which copy of the image the code runs in (see arch: Image copies): false
// in the kernel's, true in a process's (its loader sets it there). Shared
// code that needs the kernel (blocking, threads, the console) checks it and
// makes a system call instead. Defined in kernel/src/syscall.cc.
extern bool g_in_user_process;
//
// System call numbers (x8 on aarch64); arguments and results in
// kernel/src/syscall.cc.
enum SyscallNumber : std::uint64_t {
  kSysNull = 0,          // returns 0: the round trip alone
  kSysEcho = 1,          // returns ~arg[0]: a value in, another out
  kSysExit = 2,          // ends the calling thread (a process's first thread: the process)
  kSysProcessExit = 3,   // ends the calling process
  kSysWrite = 4,         // console output
  kSysRead = 5,          // console input
  kSysFutexWait = 6,
  kSysFutexWake = 7,
  kSysFutexLock = 8,
  kSysFutexUnlock = 9,
  kSysThreadCreate = 10,
  kSysThreadStart = 11,
  kSysThreadJoin = 12,
  kSysThreadDetach = 13,
  kSysYield = 14,
  kSysSleep = 15,
  kSysThreadCtl = 16,    // priority, affinity, suspend/resume, cpu
  kSysHeapGrow = 17,
  kSysInfo = 18,         // process id, CPU count, time slice
  kSysPanic = 19,        // ends the process as kPanic
  kSysChannelPair = 20,
  kSysChannelSend = 21,
  kSysChannelRecv = 22,
  kSysHandle = 23,       // kind, close, duplicate
  kSysShm = 24,          // create, map, unmap a shared region
  kSysChannelCall = 25,  // send then receive on one end, one call (Channel::call, reply_and_recv)
  kSysChannelCallRegs = 26,  // the same, request and reply of up to 16 bytes in registers (call_value)
  // 27: reserved (channels).
  kSysProcessSpawn = 28,  // a child process (nested)
  kSysProcessJoin = 29,   // a child's end
  kSysProcessKill = 30,   // a child
  kSysJobWait = 31,       // a coroutine's kernel wait (ujobs.cc)
  kSysJobCtl = 32,        // cancel a job's wait, collect completions, wake the collector
  kSysStats = 33,         // the process's threads, the system
  kSysJobLock = 34,       // a coroutine's owner-aware lock (lock_async; ujobs.cc)
  kSysFutexTake = 35,     // a unit of a counting word (Semaphore), handed over by kSysFutexGive
  kSysFutexGive = 36,
  kSysFutexWaiters = 37,  // how many wait on a word (diagnostics)
};
// kSysInfo's argument: what to return.
enum SysInfo : std::uint64_t {
  kInfoProcessId = 0,
  kInfoCpuCount = 1,
  kInfoTimeslice = 2,
  kInfoSpawnHandles = 3,
  kInfoCpuTime = 4,  // whether CPU-time accounting is on (spindle::cpu_time_accounting)
};
// A system call from the running thread (see arch: User mode). Interrupts
// enabled; may block. Unknown numbers return -1 (all ones).
void handle_syscall(arch::SyscallFrame& frame);
// The channel fast path (see arch: User mode): a backend may offer system
// calls kSysChannelCall and kSysChannelCallRegs here first, interrupts masked (as the exception left
// them), before it enables them for handle_syscall. regs: the caller's
// saved x0..x30 (arguments in regs[0..5]). True: done, the result is in
// regs[0] (the thread may have blocked and run again meanwhile, maybe on
// another CPU); false: the fast path does not apply and nothing changed,
// so the backend goes on to handle_syscall as for any other call.
bool syscall_fast(std::uint64_t* regs);
// arch::context_switch_to_user's hand-over, on the resumed thread's kernel
// stack: releases the kernel lock (interrupts stay masked); the switch
// needs no other finishing, its previous thread being alive.
void resumed_at_user_frame();
// The running thread faulted in user mode. Interrupts masked. Reports it;
// a process's thread ends its whole process (join: kFaulted with the
// fault's kind, address and thread), a bare user thread (run_user) only
// itself (join: kFaulted). Never returns; nothing else is disturbed.
[[noreturn]] void user_fault(const arch::UserFault& fault);
// See arch: User mode. Interrupts masked. Ends the thread when its process
// is ending (never returns then), else returns at once.
void returning_to_user();
// Runs the calling thread in user mode in `as` (which stays the thread's
// address space from now on: the scheduler activates it whenever the thread
// runs) from `entry`. Thread context. Never returns: the thread ends by
// kSysExit or by a fault.
[[noreturn]] void run_user(arch::AddressSpace* as, const arch::UserEntry& entry);
// operator new/delete in a process's copy (backends whose operator new is
// their own): the process's user heap, in its own pages, grown by system
// calls. must: the throwing form, which ends the process with
// FaultKind::kMemoryLimit past ProcessOptions::memory_limit (or when memory
// runs out); otherwise nullptr then. User mode only.
void* user_heap_alloc(std::size_t n, std::size_t align, bool must);
void user_heap_free(void* p);
}  // namespace spindle::kernel
