// Processes on backends with user mode, the kernel's side: shared by the
// process layer (uprocess.cc) and the system-call handlers (usyscall.cc).
//
// A process is an address space with a copy of the image at kImageBase
// (arch::user_map_image), its arguments at kStartBase, a heap growing from
// kHeapBase and one user stack per thread from kStackBase (each above an
// unmapped guard), and kernel threads that run in it (each a Tcb with
// `process` and `user` set, and a kernel stack of its own).
//
// Ownership and locking:
//  - A ProcessRecord belongs to its Process handle (process_join frees it).
//    Its threads point at it; all of them are dead and reaped before it is
//    freed.
//  - The kernel lock guards threads, alive, ended, status and every
//    UserThread's flags; end_process runs under it. A thread counts itself
//    out of alive as it dies (exit_current calls process_thread_exited).
//  - mem_lock (a kernel Mutex, never taken under the kernel lock) guards
//    the memory bookkeeping: heap_end, stack_next, free_stacks. A
//    thread of an ending process gives up waiting for it (kInterrupted):
//    kernel code on a system call's path never blocks an ending thread.
//  - User pages are freed only with the address space, once every thread
//    is dead: the kernel's aliases of user words (futex keys) stay valid
//    while any thread of the process can use them.
//  - A UserThread belongs to its process's `threads` list until it is
//    reaped: by kSysThreadJoin (the joiner), by the next thread creation
//    (a dead detached one) or by process_join (all the rest).
//  - Nested processes: a process spawned by a process is in its parent's
//    `children` (kernel lock) until it is joined, by the parent
//    (kSysProcessJoin) or, once the parent is over, by whoever joins the
//    parent (join_process reaps the whole subtree). A parent's end kills
//    its children (end_process), so no process outlives its parent's end;
//    a record is freed only after all its children's. A process joins and
//    kills only its own children (by pid; another pid is kNotFound).
//  - Limits are hierarchical: tree_alive and tree_charged (kernel lock)
//    count the threads and bytes of a process and all its descendants, and
//    a new thread or page is refused (kLimit / no memory) if any ancestor's
//    limit would pass. A child gives its bytes back to its ancestors when
//    it is destroyed, its threads as they die.
#pragma once

#include <atomic>
#include <cstdint>

#include "kernel.h"
#include "spindle/mutex.h"
#include "spindle/handle.h"
#include "spindle/process.h"

namespace spindle::kernel {

// Every process's user address layout.
inline constexpr std::uintptr_t kImageBase = 0x400000;
inline constexpr std::uintptr_t kHeapBase = 0x10'0000'0000;
inline constexpr std::uintptr_t kHeapLimit = 0x20'0000'0000;
inline constexpr std::uintptr_t kStartBase = 0x20'0000'0000;  // ProcessStart and the arguments, read-only
inline constexpr std::uintptr_t kShmBase = 0x30'0000'0000;  // shared regions, mapped a page apart
inline constexpr std::uintptr_t kShmLimit = 0x40'0000'0000;
inline constexpr std::uintptr_t kStackBase = 0x40'0000'0000;
inline constexpr std::uintptr_t kStackLimit = 0x7f'0000'0000;
inline constexpr std::size_t kUserGuard = 64 * 1024;  // unmapped below every user stack

struct HandleTable;  // uchannel.cc
struct JobPort;      // ujobs.cc

struct FreeStack {
  std::uintptr_t lo;
  std::size_t size;
  FreeStack* next;
};

struct UserThread {
  detail::ProcessRecord* process = nullptr;
  Tcb* tcb = nullptr;            // freed (join, reap) only after the UserThread left `threads`
  ThreadId id = 0;
  std::uintptr_t stack_lo = 0;  // user stack [stack_lo, stack_lo + stack_size), guard below
  std::size_t stack_size = 0;
  std::uintptr_t block = 0;     // its UserThreadBlock (user.h)
  bool main = false;            // the process's first thread
  bool detached = false;        // kernel lock
  bool joining = false;         // kernel lock: a kSysThreadJoin waits for it
  std::atomic<std::uint32_t> go{0};  // 1: kSysThreadStart came (the callable is in place)
  ListNode link;                // in process->threads
};

}  // namespace spindle::kernel

namespace spindle::detail {

struct ProcessRecord {
  ProcessId pid = 0;
  char name[32] = {};
  arch::AddressSpace* as = nullptr;
  std::size_t memory_limit = 0;
  unsigned thread_limit = 0;
  CpuMask affinity;
  int priority = kDefaultPriority;
  // Kernel lock.
  kernel::List<kernel::UserThread, &kernel::UserThread::link> threads;  // not yet reaped
  unsigned alive = 0;  // created and not yet dead (process_thread_exited)
  bool ended = false;
  ExitStatus status;
  kernel::ListNode all_link;  // in g_processes
  ProcessRecord* parent = nullptr;  // the process that spawned it; nullptr: the kernel (set once)
  kernel::ListNode child_link;      // in parent->children
  kernel::List<ProcessRecord, &ProcessRecord::child_link> children;  // not yet joined
  bool joining = false;             // a join of it is under way (kSysProcessJoin)
  unsigned tree_alive = 0;          // alive threads of it and its descendants
  std::size_t tree_charged = 0;     // bytes charged to it and its descendants (heap, stacks, mapped regions)
  kernel::JobPort* jobs = nullptr;  // its coroutines' kernel waits (ujobs.cc); freed when no thread is left
  kernel::HandleTable* handles = nullptr;  // its handles (uchannel.cc); closed once no thread is left
  // Shared regions unmapped from it so far (uchannel.cc: shm_unmap_in),
  // written under the kernel lock in the hold that unmaps one; read by a
  // futex system call that translated a shared word before taking the
  // lock (UserWord, below; usyscall.cc and ujobs.cc).
  std::atomic<std::uint32_t> unmaps{0};
  // Set once (under the kernel lock) and waited on by process_join.
  std::atomic<std::uint32_t> end_word{0};   // the end is decided
  std::atomic<std::uint32_t> gone_word{0};  // ... and no thread is left alive
  // mem_lock.
  Mutex mem_lock{"process memory"};
  std::uintptr_t heap_end = kernel::kHeapBase;
  std::uintptr_t stack_next = kernel::kStackBase;
  kernel::FreeStack* free_stacks = nullptr;
};

}  // namespace spindle::detail

namespace spindle::kernel {

using Proc = detail::ProcessRecord;

inline Proc* process_of(const Tcb* t) { return static_cast<Proc*>(t->process); }

// A futex word of a process, as a system call gets it: translated to the
// kernel's alias of the word (arch::user_word) without the kernel lock,
// then rechecked under it before the word is touched. A shared region is
// unmapped, and its pages may go back to the kernel, in one hold of the
// kernel lock that also counts Proc::unmaps up (uchannel.cc:
// shm_unmap_in); so a translation of a shared word made before such a
// hold may point into freed pages, and is made again under the lock,
// where no region can go meanwhile. (Private words stay mapped while the
// process has threads.) The pattern:
//   UserWord w;
//   if (!w.translate(p, va, write)) return <bad word>;
//   LockGuard guard;
//   if (!w.recheck(p, va, write)) return <bad word>;
//   ... use w.word ...
struct UserWord {
  std::atomic<std::uint32_t>* word = nullptr;
  bool shared = false;  // in memory shared between processes (a SharedMemory region)
  std::uint32_t unmaps = 0;

  // False: va is not a word of p with that access.
  bool translate(Proc* p, std::uint64_t va, bool write) {
    unmaps = p->unmaps.load(std::memory_order_acquire);  // before the page table is read
    word = static_cast<std::atomic<std::uint32_t>*>(arch::user_word(p->as, va, write, &shared));
    return word != nullptr;
  }
  // Under the kernel lock: false if va is no longer a word of p.
  bool recheck(Proc* p, std::uint64_t va, bool write) SPINDLE_REQUIRES(g.lock) {
    return !shared || p->unmaps.load(std::memory_order_relaxed) == unmaps || translate(p, va, write);
  }
};
// The process a waiter (thread or coroutine job) belongs to; nullptr: the
// kernel's (ujobs.cc).
Proc* waiter_process(const Waiter* w) SPINDLE_REQUIRES(g.lock);

// Decides how p ends (the first call wins) and makes every thread of it
// end: waits interrupted, suspensions lifted, running ones preempted.
void end_process(Proc* p, const ExitStatus& st) SPINDLE_REQUIRES(g.lock);
// A process thread's Tcb::on_exit (exit_current, whatever the cause): it
// counts itself out of `alive`; the first thread's end is the process's
// (kExited with `code`, or kFaulted if a fault in the kernel killed it),
// unless the end was decided before.
void process_thread_exited(Tcb* self, int code, bool faulted) SPINDLE_REQUIRES(g.lock);
// A new thread of p (not started: it waits for kSysThreadStart unless
// `main`). kLimit past the thread limit, kNoMemory, kInvalidState when p
// is ending. The user stack is stack_size bytes; the callable gets
// callable_size/align bytes below the thread's block (*callable_at).
struct UserThreadSpec {
  const char* name;
  int priority;
  CpuMask affinity;
  bool start_suspended;
  std::size_t stack_size;
  std::size_t callable_size;
  std::size_t callable_align;
  std::uintptr_t pc;     // user entry
  std::uintptr_t arg;    // its argument; 0: the thread's block
  bool main;
};
Result<UserThread*> create_user_thread(Proc* p, const UserThreadSpec& spec, std::uintptr_t* callable_at);
// The live thread of p with this id (0: the caller), or nullptr.
UserThread* find_user_thread(Proc* p, ThreadId id) SPINDLE_REQUIRES(g.lock);
// Returns a thread's user stack to its process's cache and frees ut, which
// has left `threads` and whose Tcb is freed.
void release_user_thread(UserThread* ut) SPINDLE_EXCLUDES(g.lock);
// Frees the dead detached threads of p (at thread creation).
void reap_detached(Proc* p) SPINDLE_EXCLUDES(g.lock);
// Maps `bytes` more heap (kSysHeapGrow): the new pages' user address, or
// 0 past the memory limit or when memory runs out.
std::uintptr_t grow_heap(Proc* p, std::size_t bytes);
// Charges `bytes` to p and every ancestor: false, with nothing charged, if
// that would pass any of their memory limits. uncharge_memory gives bytes
// back (an unmapped region).
bool charge_memory(Proc* p, std::size_t bytes) SPINDLE_EXCLUDES(g.lock);
void uncharge_memory(Proc* p, std::size_t bytes) SPINDLE_EXCLUDES(g.lock);
// The process system calls (syscall.cc: 28..30); false for another number.
bool process_syscall(Proc* p, arch::SyscallFrame& f);
// The coroutine and stats system calls (31..33, ujobs.cc); false for another number.
bool jobs_syscall(Proc* p, arch::SyscallFrame& f);
// Ends p's kernel waits for coroutines (its last thread is dead) and frees them.
void close_job_port(Proc* p) SPINDLE_REQUIRES(g.lock);
// The entry of a thread the process creates: user address of the code that
// runs its callable (uprocess.cc).
std::uintptr_t user_thread_entry_address();

// Handles (uchannel.cc). A new process's table holds its own handles to the
// objects of `given` (the kernel's handles; kNotFound for a bad one) at
// this_process::handle(0..). close_all_handles runs once its last thread
// is dead (the objects' other holders see it closed); the table, and the
// references its shared-memory mappings hold, go with the process, after
// its address space.
// `from`: the spawning process's table (nullptr: the kernel's); a handle
// not in it is kNotFound.
Result<HandleTable*> handle_table_for_spawn(HandleTable* from, std::span<const Handle> given);
void close_all_handles(HandleTable* t) SPINDLE_REQUIRES(g.lock);
void free_handle_table(HandleTable* t);
unsigned spawned_handles(const HandleTable* t);
// The channel, handle and shared-memory system calls (syscall.cc: 20..24); false for
// another number.
bool channel_syscall(Proc* p, arch::SyscallFrame& f);
// Whether channel end h of table t can be written (writable) or read now:
// kOk; kWouldBlock with the word to wait on and its value (a wake of it
// means: look again); or kNotFound/kInvalidArgument for a bad handle. The
// word is the core's: it is a futex key only once the lock is dropped (the
// core may go when its ends close).
Status channel_wait_word(HandleTable* t, Handle h, bool writable, const std::atomic<std::uint32_t>** word,
                         std::uint32_t* seen) SPINDLE_REQUIRES(g.lock);
// kSysChannelCall (25), dispatched first by handle_syscall: its result.
std::uint64_t channel_call_syscall(Proc* p, const std::uint64_t* args);

}  // namespace spindle::kernel
