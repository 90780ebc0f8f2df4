// The system calls of processes (table and conventions: syscall.cc). Each
// handler runs in the kernel's copy of the code, on the calling thread's
// kernel stack with its address space active and interrupts enabled, and
// may block like any kernel call; an ending process's thread gets
// kInterrupted from every wait and leaves on its way back to user mode.
//
// Every user pointer is checked before use: words through user_word (the
// kernel then works on its own alias of the word, which stays mapped while
// the process has threads), buffers through user_read/user_write (probes
// with user mode's permissions). A bad one is kInvalidArgument.
#include <cstddef>

#include "spindle/console.h"
#include "spindle/futex.h"
#include "uprocess.h"
#include "user.h"

namespace spindle::kernel {
namespace {

constexpr std::uint64_t kBad = ~std::uint64_t{0};
constexpr std::uint64_t kInvalid = static_cast<std::uint64_t>(static_cast<int>(Status::kInvalidArgument));

std::uint64_t result(Status s) { return static_cast<std::uint64_t>(static_cast<int>(s)); }

// A futex system call on p's word at va: op(word, shared) runs under the
// kernel lock with the word translated and still mapped (UserWord); `bad`
// if va is not a word of p with that access.
template <class Op>
std::uint64_t on_user_word(Proc* p, std::uint64_t va, bool write, std::uint64_t bad, Op op) {
  UserWord w;
  if (!w.translate(p, va, write)) return bad;
  LockGuard guard;
  return w.recheck(p, va, write) ? op(w.word, w.shared) : bad;
}

// A NUL-terminated user string into dst (truncated); false if unreadable.
bool read_name(char (&dst)[32], std::uint64_t va) {
  std::size_t n = 0;
  for (; n + 1 < sizeof dst; ++n) {
    if (!arch::user_read(&dst[n], va + n, 1)) return false;
    if (dst[n] == '\0') return true;
  }
  dst[n] = '\0';
  return true;
}

ExitStatus faulted(FaultKind kind, std::uintptr_t address) {
  ExitStatus st;
  st.kind = ExitKind::kFaulted;
  st.fault = kind;
  st.address = address;
  format(st.thread, sizeof st.thread, "%s", current_thread()->name);
  return st;
}

[[noreturn]] void end_with(Proc* p, const ExitStatus& st) {
  {
    LockGuard guard;
    end_process(p, st);
  }
  exit_current(st.kind == ExitKind::kExited ? st.code : -1, st.kind == ExitKind::kFaulted);
}

std::uint64_t sys_write(Proc* p, std::uint64_t buf, std::uint64_t len) {
  static constexpr std::size_t kChunk = 4096;  // a print up to this size stays one unit
  // The whole range first: a bad one prints nothing.
  if (!arch::user_accessible(p->as, buf, len, false)) return result(Status::kInvalidArgument);
  char chunk[kChunk];
  while (len > 0) {
    std::size_t k = len < kChunk ? static_cast<std::size_t>(len) : kChunk;
    if (!arch::user_read(chunk, buf, k)) return result(Status::kInvalidArgument);
    write(chunk, k);
    buf += k;
    len -= k;
  }
  return result(Status::kOk);
}

std::uint64_t sys_read(Proc* p, std::uint64_t buf, std::uint64_t len) {
  char tmp[256];
  std::size_t k = len < sizeof tmp ? static_cast<std::size_t>(len) : sizeof tmp;
  if (k == 0) return 0;
  // Checked first: input taken is not lost on a bad buffer.
  if (!arch::user_accessible(p->as, buf, k, true)) return kBad;
  std::size_t n = console_read(tmp, k);
  return arch::user_write(buf, tmp, n) ? n : kBad;
}

std::uint64_t sys_thread_create(Proc* p, std::uint64_t arg) {
  UserThreadCreate c;
  if (!arch::user_accessible(p->as, arg, sizeof c, true) || !arch::user_read(&c, arg, sizeof c)) {
    return result(Status::kInvalidArgument);
  }
  if (c.priority < kMinPriority || c.priority > kMaxPriority || c.stack_size < kMinStackSize ||
      c.stack_size > kMaxStackSize || c.callable_size > c.stack_size / 4 || c.callable_align == 0 ||
      c.callable_align > 64 || (c.callable_align & (c.callable_align - 1)) != 0) {
    return result(Status::kInvalidArgument);
  }
  char name[32] = "thread";
  if (c.name != 0 && !read_name(name, c.name)) return result(Status::kInvalidArgument);
  reap_detached(p);
  UserThreadSpec spec{name,
                      c.priority,
                      CpuMask(c.affinity) & p->affinity,
                      c.start_suspended != 0,
                      (static_cast<std::size_t>(c.stack_size) + arch::kPageSize - 1) & ~(arch::kPageSize - 1),
                      static_cast<std::size_t>(c.callable_size),
                      static_cast<std::size_t>(c.callable_align),
                      user_thread_entry_address(),
                      0,
                      false};
  std::uintptr_t callable = 0;
  Result<UserThread*> ut = create_user_thread(p, spec, &callable);
  if (!ut.ok()) return result(ut.status());
  c.id = (*ut)->id;
  c.block = (*ut)->block;
  c.callable = callable;
  // Checked writable above; the caller's memory cannot be unmapped meanwhile.
  (void)arch::user_write(arg + offsetof(UserThreadCreate, id), &c.id, sizeof c - offsetof(UserThreadCreate, id));
  return result(Status::kOk);
}

std::uint64_t sys_thread_start(Proc* p, ThreadId id) {
  LockGuard guard;
  UserThread* ut = id != 0 ? find_user_thread(p, id) : nullptr;
  if (!ut || ut->main || ut->go.load(std::memory_order_relaxed) != 0) return result(Status::kInvalidState);
  ut->go.store(1, std::memory_order_release);
  futex_wake_locked(&ut->go, 1);
  return result(Status::kOk);
}

std::uint64_t sys_thread_join(Proc* p, ThreadId id, TimePoint deadline, std::uint64_t code_at) {
  if (code_at != 0 && !arch::user_accessible(p->as, code_at, sizeof(int), true)) return result(Status::kInvalidArgument);
  UserThread* ut;
  int code;
  bool was_faulted;
  {
    // Waits, unlinks and frees under one lock hold, so no other thread of
    // the process can find the UserThread with its Tcb gone.
    LockGuard guard;
    ut = id != 0 ? find_user_thread(p, id) : nullptr;
    if (!ut || ut->main || ut->detached || ut->joining) return result(Status::kInvalidState);
    Tcb* t = ut->tcb;
    if (t == current_thread()) return result(Status::kDeadlock);
    ut->joining = true;
    while (t->state != ThreadState::kDead) {
      Status s = t->joiners.wait(deadline);
      if (t->state == ThreadState::kDead) break;
      if (s == Status::kTimedOut || s == Status::kInterrupted) {
        ut->joining = false;
        return result(s);
      }
    }
    was_faulted = t->faulted;
    code = was_faulted ? -1 : t->exit_code;
    decltype(p->threads)::remove(ut);
    free_thread(t);
  }
  release_user_thread(ut);
  if (code_at != 0) (void)arch::user_write(code_at, &code, sizeof code);
  return result(was_faulted ? Status::kFaulted : Status::kOk);
}

std::uint64_t sys_thread_detach(Proc* p, ThreadId id) {
  {
    LockGuard guard;
    UserThread* ut = id != 0 ? find_user_thread(p, id) : nullptr;
    if (!ut || ut->main || ut->detached || ut->joining) return result(Status::kInvalidState);
    ut->detached = true;
  }
  reap_detached(p);  // it may have ended already
  return result(Status::kOk);
}

std::uint64_t sys_thread_ctl(Proc* p, std::uint64_t op, ThreadId id, std::uint64_t value) {
  LockGuard guard;
  UserThread* ut = find_user_thread(p, id);
  if (!ut) return op == kCtlPriority ? static_cast<std::uint64_t>(-1) : result(Status::kInvalidState);
  Tcb* t = ut->tcb;
  switch (op) {
    case kCtlSetPriority: return result(change_priority(t, static_cast<int>(static_cast<std::int64_t>(value))));
    case kCtlPriority: return static_cast<std::uint64_t>(t->run.priority);
    case kCtlSetAffinity: return result(change_affinity(t, CpuMask(value) & p->affinity));
    case kCtlSuspend: return result(suspend_thread(t));
    case kCtlResume: return result(resume_thread(t));
    case kCtlCpu: return t->cpu;
    default: return result(Status::kInvalidArgument);
  }
}

std::uint64_t sys_heap_grow(Proc* p, std::uint64_t bytes, bool must, std::uint64_t asked) {
  std::uintptr_t at = bytes <= kHeapLimit ? grow_heap(p, static_cast<std::size_t>(bytes)) : 0;
  // An ending thread never sees the answer (it ends on its way back).
  if (at != 0 || !must || current_thread()->ending.load(std::memory_order_relaxed)) return at;
  print("*** process %u ('%s'): memory limit (%zu bytes) reached asking for %llu bytes in thread '%s': process ended\n",
        p->pid, p->name, p->memory_limit, static_cast<unsigned long long>(asked), current_thread()->name);
  end_with(p, faulted(FaultKind::kMemoryLimit, static_cast<std::uintptr_t>(asked)));
}

[[noreturn]] void sys_panic(Proc* p, std::uint64_t msg, std::uint64_t len) {
  char text[256];
  std::size_t n = len < sizeof text - 1 ? static_cast<std::size_t>(len) : sizeof text - 1;
  if (!arch::user_read(text, msg, n)) n = 0;
  text[n] = '\0';
  print("\n*** panic in process %u ('%s'), thread '%s': %s\n", p->pid, p->name, current_thread()->name, text);
  end_with(p, faulted(FaultKind::kPanic, 0));
}

std::uint64_t sys_info(Proc* p, std::uint64_t what) {
  switch (what) {
    case kInfoProcessId: return p->pid;
    case kInfoCpuCount: return g.ncpus;
    case kInfoSpawnHandles: return spawned_handles(p->handles);
    case kInfoTimeslice: {
      LockGuard guard;
      return g.timeslice_ns;
    }
    case kInfoCpuTime: {
      LockGuard guard;
      return g.cpu_time ? 1 : 0;
    }
    default: return kBad;
  }
}

// The futex calls (futex.h: wait, wake, the owner-aware lock and unlock,
// the counting-word take, give and waiters), out of line: their word
// translations and lock holds would otherwise grow handle_syscall's frame
// for every system call. ~0 (unknown) for other numbers.
[[gnu::noinline]] std::uint64_t futex_syscall(Proc* p, const Tcb* self, std::uint64_t number, const std::uint64_t* a) {
  auto order_of = [](std::uint64_t o) {
    return o == static_cast<unsigned>(WaitOrder::kFifo) ? WaitOrder::kFifo : WaitOrder::kPriority;
  };
  switch (number) {
    case kSysFutexWait:
      return on_user_word(p, a[0], false, kInvalid, [&](auto* w, bool) SPINDLE_NO_THREAD_SAFETY_ANALYSIS {
        return result(futex_wait_locked(w, static_cast<std::uint32_t>(a[1]), deadline_from(a[2]), order_of(a[3]), nullptr));
      });
    case kSysFutexWake:
      return on_user_word(p, a[0], false, kBad, [&](auto* w, bool) SPINDLE_NO_THREAD_SAFETY_ANALYSIS {
        return std::uint64_t{futex_wake_locked(w, a[1] > ~0u ? ~0u : static_cast<unsigned>(a[1]))};
      });
    case kSysFutexLock: {
      LockPolicy policy = policy_from_bits(a[1]);
      policy.aging = static_cast<std::uint32_t>(a[2]);
      return on_user_word(p, a[0], true, kInvalid, [&](auto* w, bool shared) SPINDLE_NO_THREAD_SAFETY_ANALYSIS {
        return result(futex_lock_locked(w, policy, deadline_from(a[3]), shared));
      });
    }
    case kSysFutexUnlock:
      return on_user_word(p, a[0], true, kInvalid, [&](auto* w, bool) SPINDLE_NO_THREAD_SAFETY_ANALYSIS {
        return result(futex_unlock_as(w, self->head.id));
      });
    case kSysFutexTake:
      return on_user_word(p, a[0], true, kInvalid, [&](auto* w, bool) SPINDLE_NO_THREAD_SAFETY_ANALYSIS {
        return result(futex_take_locked(w, deadline_from(a[1]), order_of(a[2]), nullptr));
      });
    case kSysFutexGive:
      if (a[1] > ~0u || a[2] > count_word::kCountMask) return kInvalid;
      return on_user_word(p, a[0], true, kInvalid, [&](auto* w, bool) SPINDLE_NO_THREAD_SAFETY_ANALYSIS {
        return result(futex_give_locked(w, static_cast<std::uint32_t>(a[1]), static_cast<std::uint32_t>(a[2])));
      });
    case kSysFutexWaiters:
      return on_user_word(p, a[0], false, kBad, [](auto* w, bool) SPINDLE_NO_THREAD_SAFETY_ANALYSIS {
        return std::uint64_t{futex_waiters_locked(w)};
      });
    default: return kBad;
  }
}

}  // namespace

void handle_syscall(arch::SyscallFrame& f) {
  std::uint64_t* a = f.arg;
  if (f.number == kSysNull) {
    f.result = 0;
    return;
  }
  if (f.number == kSysChannelCall) [[likely]] {  // the IPC fast path: no further dispatch
    if (Proc* p = process_of(current_thread())) {
      f.result = channel_call_syscall(p, a);
      return;
    }
  }
  if (f.number == kSysEcho) {
    f.result = ~a[0];
    return;
  }
  Tcb* self = current_thread();
  Proc* p = process_of(self);
  if (!p) {
    // A bare user thread (run_user without a process): exit only.
    if (f.number == kSysExit) exit_current(static_cast<int>(a[0]), false);
    f.result = kBad;
    return;
  }
  switch (f.number) {
    case kSysExit: exit_current(static_cast<int>(a[0]), false);  // the first thread's: the process's end
    case kSysProcessExit: {
      ExitStatus st;
      st.code = static_cast<int>(a[0]);
      end_with(p, st);
    }
    case kSysWrite: f.result = sys_write(p, a[0], a[1]); return;
    case kSysRead: f.result = sys_read(p, a[0], a[1]); return;
    case kSysFutexWait:
    case kSysFutexWake:
    case kSysFutexLock:
    case kSysFutexUnlock: f.result = futex_syscall(p, self, f.number, a); return;
    case kSysThreadCreate: f.result = sys_thread_create(p, a[0]); return;
    case kSysThreadStart: f.result = sys_thread_start(p, a[0]); return;
    case kSysThreadJoin: f.result = sys_thread_join(p, a[0], deadline_from(a[1]), a[2]); return;
    case kSysThreadDetach: f.result = sys_thread_detach(p, a[0]); return;
    case kSysYield:
      this_thread::yield();
      f.result = 0;
      return;
    case kSysSleep: f.result = result(this_thread::sleep_until(deadline_from(a[0]))); return;
    case kSysThreadCtl: f.result = sys_thread_ctl(p, a[0], a[1], a[2]); return;
    case kSysHeapGrow: f.result = sys_heap_grow(p, a[0], a[1] != 0, a[2]); return;
    case kSysInfo: f.result = sys_info(p, a[0]); return;
    case kSysPanic: sys_panic(p, a[0], a[1]);
    default:
      if (f.number >= kSysFutexTake && f.number <= kSysFutexWaiters) {
        f.result = futex_syscall(p, self, f.number, a);
      } else if (!channel_syscall(p, f) && !process_syscall(p, f) && !jobs_syscall(p, f)) {
        f.result = kBad;
      }
      return;
  }
}

}  // namespace spindle::kernel
