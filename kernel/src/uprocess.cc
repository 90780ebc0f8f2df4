// Processes on backends with user mode (spindle/process.h; invariants in
// uprocess.h): spawn, join, kill, the process's threads and memory, how a
// process ends, user faults, and the code a process's threads start in.
//
// How a process ends: end_process decides the ExitStatus once (entry
// returned, a fault, a kill, a panic) and marks every thread `ending`: a
// blocked one is woken (kInterrupted), a suspended one released, a running
// one preempted. Each leaves at its next return to user mode
// (returning_to_user), counting itself out of `alive`. process_join waits
// for the decision and for alive == 0, reaps every thread and only then
// destroys the address space, which returns the pages and the ASID.
#include "uprocess.h"

#include <cstring>
#include <new>

#include "spindle/console.h"
#include "spindle/process_pool.h"
#include "user.h"

namespace spindle {
namespace kernel {
namespace {

// What a process's first thread finds at kStartBase.
struct ProcessStart {
  std::uint64_t main;   // detail::ProcessMain, in the process's copy
  std::uint64_t entry;  // entry, in the process's copy
  std::uint64_t args;   // the argument bytes (right after this block)
  std::uint64_t len;
};

// Kernel lock.
List<Proc, &Proc::all_link> g_processes;
ProcessId g_next_pid = 2;  // 1: the kernel's own (the app's first process)

constexpr ProcessId kKernelPid = 1;

std::size_t page_round(std::size_t n) { return (n + arch::kPageSize - 1) & ~(arch::kPageSize - 1); }

// The user address, in a process's copy, of code or data of the image.
std::uintptr_t in_copy(std::uintptr_t kernel_address) { return kImageBase + (kernel_address - arch::image_base()); }

ProcessId new_pid() SPINDLE_REQUIRES(g.lock) {
  for (;;) {
    ProcessId pid = g_next_pid;
    g_next_pid = pid == ~ProcessId{0} ? 2 : pid + 1;
    bool used = false;
    g_processes.for_each([&](Proc* q) { used = used || q->pid == pid; });
    if (!used) return pid;
  }
}

void mark_gone_if_done(Proc* p) SPINDLE_REQUIRES(g.lock) {
  if (p->ended && p->alive == 0) {
    // No thread of it can use a handle any more: its channel ends close.
    close_all_handles(p->handles);
    p->gone_word.store(1, std::memory_order_release);
    futex_wake_locked(&p->gone_word, ~0u);
  }
}

// ---------------------------------------------------------------------------
// The process's side: where its threads start (user mode, its own copy).

[[noreturn]] void process_entry(const ProcessStart* s) {
  arch::image_constructors();
  auto main = reinterpret_cast<detail::ProcessMain>(s->main);
  int code = main(static_cast<std::uintptr_t>(s->entry), reinterpret_cast<const std::byte*>(s->args),
                  static_cast<std::size_t>(s->len));
  (void)sys(kSysProcessExit, static_cast<std::uint64_t>(static_cast<std::int64_t>(code)));
  __builtin_trap();  // not reached
}

[[noreturn]] void thread_entry(UserThreadBlock* b) {
  int code = b->invoke(b->callable);
  b->destroy(b->callable);
  (void)sys(kSysExit, static_cast<std::uint64_t>(static_cast<std::int64_t>(code)));
  __builtin_trap();  // not reached
}

// ---------------------------------------------------------------------------
// The kernel's side of a process thread: its kernel thread's body.

struct ThreadBody {
  UserThread* ut;
  arch::UserEntry entry;
};

int run_process_thread(void* arg) {
  auto* b = static_cast<ThreadBody*>(arg);
  UserThread* ut = b->ut;
  // A created thread runs once kSysThreadStart says its callable is in
  // place; if its process ends first, its first return to user mode ends it.
  while (ut->go.load(std::memory_order_acquire) == 0) {
    if (futex_wait(&ut->go, 0) == Status::kInterrupted) break;
  }
  run_user(ut->process->as, b->entry);
}

// Holds p->mem_lock unless the wait for it was refused (the caller's
// process is ending: its waits return kInterrupted); then the caller gives
// up, and its thread ends on the way back to user mode.
class SPINDLE_SCOPED_CAPABILITY MemLock {
 public:
  explicit MemLock(Proc* p) SPINDLE_ACQUIRE(p->mem_lock) : p_(p) {
    Status s = p->mem_lock.lock_until(kForever);
    held_ = s == Status::kOk || s == Status::kOwnerDied;
  }
  ~MemLock() SPINDLE_RELEASE() {
    if (held_) p_->mem_lock.unlock();
  }
  bool held() const { return held_; }

 private:
  Proc* p_;
  bool held_;
};

// A user stack of `size` bytes: a cached one of that size, or fresh pages
// above a guard (charged against the memory limit if `charge`).
bool alloc_user_stack(Proc* p, std::size_t size, bool charge, std::uintptr_t* lo) {
  MemLock l(p);
  if (!l.held()) return false;
  for (FreeStack** f = &p->free_stacks; *f; f = &(*f)->next) {
    if ((*f)->size == size) {
      FreeStack* s = *f;
      *f = s->next;
      *lo = s->lo;
      delete s;
      return true;
    }
  }
  if (charge && p->memory_limit != 0 && p->charged + size > p->memory_limit) return false;
  std::uintptr_t at = p->stack_next + kUserGuard;
  if (at > kStackLimit || size > kStackLimit - at) return false;
  p->stack_next = at + size;  // taken even if mapping fails: part of it may be mapped
  if (!arch::user_map(p->as, at, size, arch::UserAccess::kReadWrite)) return false;
  if (charge) p->charged += size;
  *lo = at;
  return true;
}

void free_user_stack(Proc* p, std::uintptr_t lo, std::size_t size) {
  auto* s = new (std::nothrow) FreeStack{lo, size, nullptr};
  if (!s) return;  // not reused: its pages go with the address space
  MemLock l(p);
  if (!l.held()) {
    delete s;  // likewise
    return;
  }
  s->next = p->free_stacks;
  p->free_stacks = s;
}

// Joins and frees every thread of an ended process (all past their exit).
void reap_all(Proc* p) {
  for (;;) {
    UserThread* ut;
    {
      LockGuard guard;
      ut = p->threads.pop_front();
    }
    if (!ut) return;
    (void)join_thread(ut->tcb, kForever, nullptr);  // dead already, or about to be
    delete ut;  // its stack goes with the address space
  }
}

void destroy_process(Proc* p) {
  arch::address_space_destroy(p->as);
  if (p->handles) free_handle_table(p->handles);  // after the mappings of its regions are gone
  while (FreeStack* s = p->free_stacks) {
    p->free_stacks = s->next;
    delete s;
  }
  delete p;
}

ExitStatus exited(int code) {
  ExitStatus st;
  st.kind = ExitKind::kExited;
  st.code = code;
  return st;
}

}  // namespace

// ---------------------------------------------------------------------------

void end_process(Proc* p, const ExitStatus& st) {
  if (p->ended) return;
  p->ended = true;
  p->status = st;
  Tcb* self = this_cpu().current;
  p->threads.for_each([&](UserThread* ut) SPINDLE_NO_THREAD_SAFETY_ANALYSIS {
    Tcb* t = ut->tcb;
    if (t->state == ThreadState::kDead) return;
    t->ending.store(true, std::memory_order_relaxed);
    t->suspend_requested = false;
    switch (t->state) {
      case ThreadState::kBlocked: wake(t, Status::kInterrupted); break;
      case ThreadState::kSuspended: make_ready(t); break;
      case ThreadState::kRunning:
        if (t != self) resched_cpu(t->cpu);  // to its return to user mode
        break;
      default: break;  // queued: it runs, and leaves on its way back to user mode
    }
  });
  p->end_word.store(1, std::memory_order_release);
  futex_wake_locked(&p->end_word, ~0u);
  mark_gone_if_done(p);
}

void process_thread_exited(Tcb* self, int code, bool faulted) {
  Proc* p = process_of(self);
  // A user fault decided the end already; only a fault in the kernel (its
  // stack overflowing) comes here undecided: the process cannot go on.
  if (faulted) {
    ExitStatus st;
    st.kind = ExitKind::kFaulted;
    st.fault = FaultKind::kStackOverflow;
    format(st.thread, sizeof st.thread, "%s", self->name);
    end_process(p, st);
  } else if (self->user->main) {
    end_process(p, exited(code));
  }
  --p->alive;
  mark_gone_if_done(p);
}

Result<UserThread*> create_user_thread(Proc* p, const UserThreadSpec& spec, std::uintptr_t* callable_at) {
  {
    LockGuard guard;
    if (p->ended) return Status::kInvalidState;
    if (p->thread_limit != 0 && p->alive >= p->thread_limit) return Status::kLimit;
    ++p->alive;
  }
  auto undo = [p] {
    LockGuard guard;
    --p->alive;
    mark_gone_if_done(p);
  };
  auto* ut = new (std::nothrow) UserThread;
  if (!ut) {
    undo();
    return Status::kNoMemory;
  }
  ut->process = p;
  ut->main = spec.main;
  ut->stack_size = spec.stack_size;
  if (!alloc_user_stack(p, spec.stack_size, !spec.main, &ut->stack_lo)) {
    delete ut;
    undo();
    return Status::kNoMemory;
  }
  // The block at the top of the stack, the callable below it, then the stack.
  std::uintptr_t top = ut->stack_lo + ut->stack_size;
  ut->block = (top - sizeof(UserThreadBlock)) & ~std::uintptr_t{63};
  std::uintptr_t slot = (ut->block - spec.callable_size) & ~(spec.callable_align - 1);
  std::uintptr_t sp = slot & ~std::uintptr_t{63};

  ThreadOptions ko;
  ko.name = spec.name;
  ko.priority = spec.priority;
  ko.affinity = spec.affinity;
  ko.start_suspended = spec.start_suspended;
  void* body_slot = nullptr;
  Result<detail::Tcb*> h = detail::thread_create(ko, sizeof(ThreadBody), alignof(ThreadBody), &body_slot);
  if (!h.ok()) {
    free_user_stack(p, ut->stack_lo, ut->stack_size);
    delete ut;
    undo();
    return h.status();
  }
  Tcb* t = Tcb::from(*h);
  ut->tcb = t;
  ut->id = t->head.id;
  t->process = p;
  t->user = ut;
  t->on_exit = process_thread_exited;
  UserThreadBlock blk{};
  blk.head.id = t->head.id;
  std::memcpy(blk.name, t->name, sizeof blk.name);
  blk.callable = reinterpret_cast<void*>(slot);
  // The stack is mapped and nothing runs in it yet: this cannot fail.
  (void)arch::user_copy_to(p->as, ut->block, &blk, sizeof blk);
  new (body_slot) ThreadBody{ut, arch::UserEntry{spec.pc, sp, spec.arg ? spec.arg : ut->block, ut->block}};
  if (spec.main) ut->go.store(1, std::memory_order_relaxed);
  {
    LockGuard guard;
    p->threads.push_back(ut);  // before it can run: end_process must see it
  }
  detail::thread_start(*h, [](void* b) -> int { return run_process_thread(b); }, [](void*) {});
  if (callable_at) *callable_at = slot;
  return ut;
}

UserThread* find_user_thread(Proc* p, ThreadId id) {
  if (id == 0) return current_thread()->user;
  UserThread* found = nullptr;
  p->threads.for_each([&](UserThread* ut) {
    if (ut->id == id) found = ut;
  });
  return found;
}

void release_user_thread(UserThread* ut) {
  free_user_stack(ut->process, ut->stack_lo, ut->stack_size);
  delete ut;
}

void reap_detached(Proc* p) {
  for (;;) {
    UserThread* dead = nullptr;
    {
      LockGuard guard;
      p->threads.for_each([&](UserThread* ut) SPINDLE_NO_THREAD_SAFETY_ANALYSIS {
        if (!dead && ut->detached && ut->tcb->state == ThreadState::kDead) dead = ut;
      });
      if (dead) decltype(p->threads)::remove(dead);
    }
    if (!dead) return;
    (void)join_thread(dead->tcb, kForever, nullptr);
    release_user_thread(dead);
  }
}

std::uintptr_t grow_heap(Proc* p, std::size_t bytes) {
  bytes = page_round(bytes);
  MemLock l(p);
  if (!l.held()) return 0;
  if (bytes == 0 || bytes > kHeapLimit - p->heap_end) return 0;
  if (p->memory_limit != 0 && (bytes > p->memory_limit || p->charged > p->memory_limit - bytes)) return 0;
  std::uintptr_t at = p->heap_end;
  p->heap_end += bytes;  // taken even if mapping fails: part of it may be mapped
  if (!arch::user_map(p->as, at, bytes, arch::UserAccess::kReadWrite)) return 0;
  p->charged += bytes;
  return at;
}

std::uintptr_t user_thread_entry_address() { return in_copy(reinterpret_cast<std::uintptr_t>(&thread_entry)); }

// ---------------------------------------------------------------------------
// Entry to user mode and the ways back that end a thread.

void run_user(arch::AddressSpace* as, const arch::UserEntry& entry) {
  arch::IrqState s = arch::irq_save();
  current_thread()->address_space = as;
  arch::address_space_activate(as);
  arch::irq_restore(s);
  arch::enter_user(entry);
}

void returning_to_user() {
  Tcb* t = current_thread();
  if (t->ending.load(std::memory_order_relaxed)) exit_current(-1, false);
}

void user_fault(const arch::UserFault& f) {
  Tcb* t = current_thread();
  Proc* p = process_of(t);
  if (!p) {
    // A bare user thread (run_user without a process): only it ends.
    print("*** user fault in thread '%s' (id %llu): %s (ESR 0x%llx, class 0x%llx), address 0x%llx, pc 0x%llx; thread killed\n",
          t->name, static_cast<unsigned long long>(t->head.id), f.what, static_cast<unsigned long long>(f.syndrome),
          static_cast<unsigned long long>(f.syndrome >> 26), static_cast<unsigned long long>(f.address),
          static_cast<unsigned long long>(f.pc));
    exit_current(-1, true);
  }
  ExitStatus st;
  st.kind = ExitKind::kFaulted;
  switch (f.kind) {
    case arch::UserFaultKind::kDataAbort: {
      UserThread* ut = t->user;
      bool guard = f.address < ut->stack_lo && f.address >= ut->stack_lo - kUserGuard;
      st.fault = guard ? FaultKind::kStackOverflow : FaultKind::kBadAccess;
      st.address = f.address;
      break;
    }
    case arch::UserFaultKind::kInstructionAbort:
      st.fault = FaultKind::kBadAccess;
      st.address = f.address;
      break;
    case arch::UserFaultKind::kAlignment:
      st.fault = FaultKind::kBadAccess;
      st.address = f.address ? f.address : f.pc;
      break;
    case arch::UserFaultKind::kUndefined:
    case arch::UserFaultKind::kOther:  // brk (__builtin_trap), a trapped system instruction, ...
      st.fault = FaultKind::kIllegalInstruction;
      st.address = f.pc;
      break;
  }
  format(st.thread, sizeof st.thread, "%s", t->name);
  print("*** process %u ('%s'): %s (%s) at 0x%llx in thread '%s', pc 0x%llx: process ended\n", p->pid, p->name,
        to_string(st.fault), f.what, static_cast<unsigned long long>(st.address), t->name,
        static_cast<unsigned long long>(f.pc));
  {
    LockGuard guard;
    end_process(p, st);
  }
  exit_current(-1, true);
}

}  // namespace kernel

// ---------------------------------------------------------------------------
// The process API (spindle/process.h). A process cannot spawn, join or
// kill one yet (a Process is not a handle on this target): kInvalidState.

namespace detail {

using namespace kernel;

Result<ProcessRecord*> process_spawn(const ProcessOptions& opts, ProcessMain main, std::uintptr_t entry,
                                     const std::byte* args, std::size_t len) {
  if (in_user_process()) return Status::kInvalidState;
  if (opts.priority < kMinPriority || opts.priority > kMaxPriority || len > kMaxProcessArgBytes ||
      opts.handles.size() > kMaxHandlesPerTransfer) {
    return Status::kInvalidArgument;
  }
  CpuMask affinity;
  {
    LockGuard guard;
    affinity = opts.affinity & g.online;
  }
  if (affinity.empty()) return Status::kInvalidArgument;

  Result<HandleTable*> handles = handle_table_for_spawn(opts.handles);
  if (!handles.ok()) return handles.status();
  auto* p = new (std::nothrow) ProcessRecord;
  if (!p) {
    free_handle_table(*handles);
    return Status::kNoMemory;
  }
  p->handles = *handles;
  format(p->name, sizeof p->name, "%s", opts.name ? opts.name : "process");
  p->memory_limit = opts.memory_limit;
  p->thread_limit = opts.thread_limit;
  p->affinity = affinity;
  p->priority = opts.priority;
  p->as = arch::address_space_create();
  if (!p->as) {
    delete p;
    return Status::kNoMemory;
  }
  // The image, its copy told that it is a process's, and the start block
  // with the arguments (read-only for the process).
  const bool yes = true;
  ProcessStart ps{in_copy(reinterpret_cast<std::uintptr_t>(main)), in_copy(entry), kStartBase + sizeof(ProcessStart),
                  len};
  bool ok = arch::user_map_image(p->as, kImageBase) &&
            arch::user_copy_to(p->as, in_copy(reinterpret_cast<std::uintptr_t>(&g_in_user_process)), &yes, sizeof yes) &&
            arch::user_map(p->as, kStartBase, page_round(sizeof ps + len), arch::UserAccess::kRead) &&
            arch::user_copy_to(p->as, kStartBase, &ps, sizeof ps) &&
            (len == 0 || arch::user_copy_to(p->as, ps.args, args, len));
  if (!ok) {
    destroy_process(p);
    return Status::kNoMemory;
  }
  {
    LockGuard guard;
    p->pid = new_pid();
    g_processes.push_back(p);
  }
  UserThreadSpec spec{p->name, opts.priority, affinity, false, kDefaultStackSize, 0, 1,
                      in_copy(reinterpret_cast<std::uintptr_t>(&process_entry)), kStartBase, true};
  Result<UserThread*> first = create_user_thread(p, spec, nullptr);
  if (!first.ok()) {
    {
      LockGuard guard;
      decltype(g_processes)::remove(p);
    }
    destroy_process(p);
    return first.status();
  }
  return p;
}

Result<ExitStatus> process_join(ProcessRecord* p, TimePoint deadline) {
  if (in_user_process() || !arch::irqs_enabled()) return Status::kInvalidState;
  while (p->end_word.load(std::memory_order_acquire) == 0) {
    Status s = futex_wait(&p->end_word, 0, deadline);
    if (p->end_word.load(std::memory_order_acquire) != 0) break;
    if (s == Status::kTimedOut || s == Status::kInterrupted) return s;
  }
  while (p->gone_word.load(std::memory_order_acquire) == 0) (void)futex_wait(&p->gone_word, 0);
  reap_all(p);
  ExitStatus st;
  {
    LockGuard guard;
    st = p->status;
    decltype(g_processes)::remove(p);
  }
  destroy_process(p);
  return st;
}

Status process_kill(ProcessRecord* p) {
  if (in_user_process()) return Status::kInvalidState;
  ExitStatus st;
  st.kind = ExitKind::kKilled;
  LockGuard guard;
  end_process(p, st);
  return Status::kOk;
}

void process_release(ProcessRecord* p) {
  (void)process_kill(p);
  (void)process_join(p, kForever);
}

ProcessId process_id(const ProcessRecord* p) { return p->pid; }

std::intptr_t code_offset(std::uintptr_t address) { return static_cast<std::intptr_t>(address - arch::image_base()); }
std::uintptr_t code_address(std::intptr_t offset) { return arch::image_base() + static_cast<std::uintptr_t>(offset); }

}  // namespace detail

namespace this_process {
ProcessId id() {
  if (kernel::in_user_process()) return static_cast<ProcessId>(kernel::sys(kernel::kSysInfo, kernel::kInfoProcessId));
  return kernel::kKernelPid;
}
bool is_spawned() { return kernel::in_user_process(); }
std::uintptr_t kernel_space_address() { return arch::kernel_space_address(); }
}  // namespace this_process

}  // namespace spindle
