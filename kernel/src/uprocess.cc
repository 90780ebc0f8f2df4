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
//
// Nested processes (a process calling Process::spawn, kSysProcessSpawn):
// the child is in its parent's `children`; end_process kills a process's
// children with it, and join_process reaps a whole subtree, children
// first, so every record, page and handle of the subtree is returned by
// the join of its root. A process names its children by pid; the system
// calls refuse any other pid (kNotFound).
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
    // No thread of it can use a handle any more: its channel ends close,
    // its coroutines' kernel waits go.
    close_all_handles(p->handles);
    close_job_port(p);
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
  std::uintptr_t at = p->stack_next + kUserGuard;
  if (at > kStackLimit || size > kStackLimit - at) return false;
  if (charge && !charge_memory(p, size)) return false;
  p->stack_next = at + size;  // taken even if mapping fails: part of it may be mapped
  if (!arch::user_map(p->as, at, size, arch::UserAccess::kReadWrite)) {
    if (charge) uncharge_memory(p, size);
    return false;
  }
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
  if (p->as) arch::address_space_destroy(p->as);
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
  // No process outlives its parent's end: its children are killed with it
  // (and theirs with them); whoever joins p reaps them (join_process).
  p->children.for_each([](Proc* c) SPINDLE_NO_THREAD_SAFETY_ANALYSIS {
    ExitStatus killed;
    killed.kind = ExitKind::kKilled;
    end_process(c, killed);
  });
  p->end_word.store(1, std::memory_order_release);
  futex_wake_locked(&p->end_word, ~0u);
  mark_gone_if_done(p);
}

bool charge_memory(Proc* p, std::size_t bytes) {
  LockGuard guard;
  for (Proc* a = p; a; a = a->parent) {
    if (a->memory_limit != 0 && (bytes > a->memory_limit || a->tree_charged > a->memory_limit - bytes)) return false;
  }
  for (Proc* a = p; a; a = a->parent) a->tree_charged += bytes;
  return true;
}

void uncharge_memory(Proc* p, std::size_t bytes) {
  LockGuard guard;
  for (Proc* a = p; a; a = a->parent) a->tree_charged -= bytes;
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
  for (Proc* a = p; a; a = a->parent) --a->tree_alive;
  mark_gone_if_done(p);
}

Result<UserThread*> create_user_thread(Proc* p, const UserThreadSpec& spec, std::uintptr_t* callable_at) {
  {
    LockGuard guard;
    if (p->ended) return Status::kInvalidState;
    // Its process's limit and every ancestor's (their trees hold it).
    for (Proc* a = p; a; a = a->parent) {
      if (a->thread_limit != 0 && a->tree_alive >= a->thread_limit) return Status::kLimit;
    }
    ++p->alive;
    for (Proc* a = p; a; a = a->parent) ++a->tree_alive;
  }
  auto undo = [p] {
    LockGuard guard;
    --p->alive;
    for (Proc* a = p; a; a = a->parent) --a->tree_alive;
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
  // A first thread's stack is charged only in a nested process, to the
  // tree it grows (a process the kernel spawns starts within its limit).
  if (!alloc_user_stack(p, spec.stack_size, !spec.main || p->parent != nullptr, &ut->stack_lo)) {
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
    // Invariant: every thread of an ended process is `ending`. end_process
    // marks the threads in p->threads; one counted in `alive` above but
    // not yet listed here is missed when the process ends in between (a
    // kill from another CPU while its creator is in this call), and would
    // wait for its `go` forever, keeping `alive` above 0 and its joiner
    // blocked. Mark it now, before it can run: its wait for `go` returns
    // kInterrupted and its first return to user mode ends it.
    if (p->ended) t->ending.store(true, std::memory_order_relaxed);
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
  if (!charge_memory(p, bytes)) return 0;
  std::uintptr_t at = p->heap_end;
  p->heap_end += bytes;  // taken even if mapping fails: part of it may be mapped
  if (!arch::user_map(p->as, at, bytes, arch::UserAccess::kReadWrite)) {
    uncharge_memory(p, bytes);
    return 0;
  }
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

// ---------------------------------------------------------------------------
// Spawn, join and kill: the kernel's side, for the kernel's own first
// process (parent nullptr) and for processes (their system calls).

namespace {

// A new process running main(entry, args) (user addresses: every copy of
// the image is at kImageBase, so the caller's copy's addresses are the
// child's), a child of `parent` (nullptr: the kernel's). opts.handles are
// handles of the parent's table; args is kernel memory.
Result<Proc*> spawn_process(Proc* parent, const ProcessOptions& opts, std::uintptr_t main_at,
                            std::uintptr_t entry_at, const std::byte* args, std::size_t len) {
  if (opts.priority < kMinPriority || opts.priority > kMaxPriority || len > kMaxProcessArgBytes ||
      opts.handles.size() > kMaxHandlesPerTransfer) {
    return Status::kInvalidArgument;
  }
  CpuMask affinity;
  {
    LockGuard guard;
    affinity = opts.affinity & g.online;
    if (parent) affinity = affinity & parent->affinity;  // a child runs where its parent may
  }
  if (affinity.empty()) return Status::kInvalidArgument;

  Result<HandleTable*> handles = handle_table_for_spawn(parent ? parent->handles : nullptr, opts.handles);
  if (!handles.ok()) return handles.status();
  auto* p = new (std::nothrow) Proc;
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
    destroy_process(p);
    return Status::kNoMemory;
  }
  // The image, its copy told that it is a process's, and the start block
  // with the arguments (read-only for the process).
  const bool yes = true;
  ProcessStart ps{main_at, entry_at, kStartBase + sizeof(ProcessStart), len};
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
    p->parent = parent;  // its limits are counted against the parent's from its first thread on
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
    destroy_process(p);  // nobody else could name it: it is in no `children` yet
    return first.status();
  }
  if (parent) {
    // Only now can the parent's other threads name it (join, kill), so
    // none of them sees a child that is still being built or torn down.
    // A parent that began ending meanwhile did not kill it: it is killed
    // here, and whoever joins the parent reaps it.
    LockGuard guard;
    parent->children.push_back(p);
    if (parent->ended) {
      ExitStatus killed;
      killed.kind = ExitKind::kKilled;
      end_process(p, killed);
    }
  }
  return p;
}

// Waits for p's end (interruptible: a waiter whose own process ends gets
// kInterrupted, and p stays for whoever joins next), then reaps p's
// children (killed with it), its threads, and p. The caller has p to
// itself (the Process handle, or `joining`).
Result<ExitStatus> join_process(Proc* p, TimePoint deadline) {
  while (p->end_word.load(std::memory_order_acquire) == 0) {
    Status s = futex_wait(&p->end_word, 0, deadline);
    if (p->end_word.load(std::memory_order_acquire) != 0) break;
    if (s == Status::kTimedOut || s == Status::kInterrupted) return s;
  }
  while (p->gone_word.load(std::memory_order_acquire) == 0) {
    // Its threads are leaving; only the waiter's own end stops the wait.
    if (futex_wait(&p->gone_word, 0) == Status::kInterrupted && p->gone_word.load(std::memory_order_acquire) == 0) {
      return Status::kInterrupted;
    }
  }
  for (;;) {
    Proc* c;
    {
      LockGuard guard;
      c = p->children.front();
      if (!c) break;
      c->joining = true;
    }
    Result<ExitStatus> r = join_process(c, kForever);  // killed with p: ends soon
    if (!r.ok()) {
      LockGuard guard;
      c->joining = false;
      return r.status();
    }
  }
  reap_all(p);
  ExitStatus st;
  std::size_t charged;
  {
    LockGuard guard;
    st = p->status;
    charged = p->tree_charged;  // its own: its children gave theirs back
    decltype(g_processes)::remove(p);
    if (p->parent) decltype(p->parent->children)::remove(p);
  }
  if (p->parent) uncharge_memory(p->parent, charged);
  destroy_process(p);
  return st;
}

// p's child with this pid, not being joined; nullptr for any other pid.
Proc* find_child(Proc* p, std::uint64_t pid) SPINDLE_REQUIRES(g.lock) {
  Proc* found = nullptr;
  p->children.for_each([&](Proc* c) {
    if (c->pid == pid) found = c;
  });
  return found;
}

std::uint64_t result(Status s) { return static_cast<std::uint64_t>(static_cast<int>(s)); }

std::uint64_t sys_process_spawn(Proc* p, std::uint64_t arg) {
  UserProcessSpawn u;
  if (!arch::user_accessible(p->as, arg, sizeof u, true) || !arch::user_read(&u, arg, sizeof u)) {
    return result(Status::kInvalidArgument);
  }
  if (u.len > kMaxProcessArgBytes || u.nhandles > kMaxHandlesPerTransfer) return result(Status::kInvalidArgument);
  char name[32] = "process";
  if (u.name != 0) {
    for (std::size_t n = 0;; ++n) {
      if (n + 1 == sizeof name) {
        name[n] = '\0';
        break;
      }
      if (!arch::user_read(&name[n], u.name + n, 1)) return result(Status::kInvalidArgument);
      if (name[n] == '\0') break;
    }
  }
  Handle hs[kMaxHandlesPerTransfer];
  if (u.nhandles != 0 && !arch::user_read(hs, u.handles, u.nhandles * sizeof(Handle))) {
    return result(Status::kInvalidArgument);
  }
  std::byte small[256];
  std::byte* args = small;
  if (u.len > sizeof small) {
    args = new (std::nothrow) std::byte[u.len];
    if (!args) return result(Status::kNoMemory);
  }
  Status st = Status::kOk;
  ProcessId pid = 0;
  if (u.len != 0 && !arch::user_read(args, u.args, u.len)) {
    st = Status::kInvalidArgument;
  } else {
    ProcessOptions o;
    o.name = name;
    o.memory_limit = u.memory_limit;
    o.thread_limit = u.thread_limit;
    o.affinity = CpuMask(u.affinity);
    o.priority = u.priority;
    o.handles = std::span<const Handle>(hs, u.nhandles);
    Result<Proc*> r = spawn_process(p, o, u.main, u.entry, args, u.len);
    if (r.ok()) {
      pid = (*r)->pid;
    } else {
      st = r.status();
    }
  }
  if (args != small) delete[] args;
  if (st == Status::kOk) {
    std::uint64_t v = pid;
    (void)arch::user_write(arg + offsetof(UserProcessSpawn, pid), &v, sizeof v);  // checked writable above
  }
  return result(st);
}

std::uint64_t sys_process_join(Proc* p, std::uint64_t pid, TimePoint deadline, std::uint64_t out) {
  if (!arch::user_accessible(p->as, out, sizeof(ExitStatus), true)) return result(Status::kInvalidArgument);
  Proc* c;
  {
    LockGuard guard;
    c = find_child(p, pid);
    if (!c) return result(Status::kNotFound);
    if (c->joining) return result(Status::kInvalidState);  // another thread joins it
    c->joining = true;
  }
  Result<ExitStatus> r = join_process(c, deadline);
  if (!r.ok()) {
    LockGuard guard;
    c->joining = false;
    return result(r.status());
  }
  (void)arch::user_write(out, &*r, sizeof(ExitStatus));
  return result(Status::kOk);
}

std::uint64_t sys_process_kill(Proc* p, std::uint64_t pid) {
  LockGuard guard;
  Proc* c = find_child(p, pid);
  if (!c) return result(Status::kNotFound);
  ExitStatus st;
  st.kind = ExitKind::kKilled;
  end_process(c, st);
  return result(Status::kOk);
}

}  // namespace

bool process_syscall(Proc* p, arch::SyscallFrame& f) {
  std::uint64_t* a = f.arg;
  switch (f.number) {
    case kSysProcessSpawn: f.result = sys_process_spawn(p, a[0]); return true;
    case kSysProcessJoin: f.result = sys_process_join(p, a[0], deadline_from(a[1]), a[2]); return true;
    case kSysProcessKill: f.result = sys_process_kill(p, a[0]); return true;
    default: return false;
  }
}

}  // namespace kernel

// ---------------------------------------------------------------------------
// The process API (spindle/process.h). In the kernel's copy a
// ProcessRecord* is the record; in a process's copy it is the child's pid
// (the system calls check that it names a child of the caller).

namespace detail {

using namespace kernel;

namespace {
ProcessId pid_of(const ProcessRecord* p) { return static_cast<ProcessId>(reinterpret_cast<std::uintptr_t>(p)); }
}  // namespace

Result<ProcessRecord*> process_spawn(const ProcessOptions& opts, ProcessMain main, std::uintptr_t entry,
                                     const std::byte* args, std::size_t len) {
  if (in_user_process()) {
    UserProcessSpawn u{};
    u.name = user_arg(opts.name);
    u.memory_limit = opts.memory_limit;
    u.affinity = opts.affinity.bits();
    u.thread_limit = opts.thread_limit;
    u.priority = opts.priority;
    u.handles = user_arg(opts.handles.data());
    u.nhandles = opts.handles.size();
    u.main = reinterpret_cast<std::uintptr_t>(main);  // this copy's: at the same address in the child's
    u.entry = entry;
    u.args = user_arg(args);
    u.len = len;
    Status s = status_from(sys(kSysProcessSpawn, user_arg(&u)));
    if (s != Status::kOk) return s;
    return reinterpret_cast<ProcessRecord*>(static_cast<std::uintptr_t>(u.pid));
  }
  return spawn_process(nullptr, opts, in_copy(reinterpret_cast<std::uintptr_t>(main)), in_copy(entry), args, len);
}

Result<ExitStatus> process_join(ProcessRecord* p, TimePoint deadline) {
  if (in_user_process()) {
    ExitStatus st;
    Status s = status_from(sys(kSysProcessJoin, pid_of(p), deadline_arg(deadline), user_arg(&st)));
    if (s != Status::kOk) return s;
    return st;
  }
  if (!arch::irqs_enabled()) return Status::kInvalidState;
  return join_process(p, deadline);
}

Status process_kill(ProcessRecord* p) {
  if (in_user_process()) return status_from(sys(kSysProcessKill, pid_of(p)));
  ExitStatus st;
  st.kind = ExitKind::kKilled;
  LockGuard guard;
  end_process(p, st);
  return Status::kOk;
}

void process_release(ProcessRecord* p) {
  (void)process_kill(p);
  (void)process_join(p, kForever);  // a process's: kInterrupted if it is ending (its teardown reaps p)
}

ProcessId process_id(const ProcessRecord* p) { return in_user_process() ? pid_of(p) : p->pid; }

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
