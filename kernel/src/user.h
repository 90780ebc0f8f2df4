// User mode, the process's side: what the shared code does when it runs in
// a process's copy of the image (arch.h: Image copies; kernel::
// g_in_user_process). The API entry points that need the kernel check
// in_user_process() first and make a system call (table: syscall.cc);
// everything that only touches the caller's memory (a Mutex's uncontended
// CAS, this_thread::id()) runs unchanged. Also the layouts both sides of a
// system call share.
#pragma once

#include <arch/arch.h>

#include <cstdint>

#include "spindle/futex.h"
#include "spindle/stats.h"
#include "spindle/status.h"
#include "spindle/thread.h"
#include "spindle/time.h"

namespace spindle::kernel {

inline bool in_user_process() { return g_in_user_process; }

// A system call with integer or pointer arguments.
template <typename... A>
std::uint64_t sys(SyscallNumber n, A... args) {
  return arch::user_syscall(n, static_cast<std::uint64_t>(args)...);
}
template <typename T>
std::uint64_t user_arg(T* p) {
  return reinterpret_cast<std::uintptr_t>(p);
}
inline std::uint64_t deadline_arg(TimePoint t) { return static_cast<std::uint64_t>(t.time_since_epoch().count()); }
inline TimePoint deadline_from(std::uint64_t v) { return TimePoint(Duration(static_cast<std::int64_t>(v))); }
inline Status status_from(std::uint64_t v) { return static_cast<Status>(static_cast<int>(v)); }

// The block at the top of a process thread's user stack, which its user
// thread pointer addresses. The kernel writes head, name and callable (the
// callable's place, just below the block) before the thread runs; the
// creating thread constructs the callable there and writes invoke and
// destroy before kSysThreadStart.
struct UserThreadBlock {
  detail::ThreadHead head;  // first: this_thread::id() and the lock fast paths read it
  char name[32];
  detail::Invoke invoke;
  detail::Destroy destroy;
  void* callable;
};

// kSysThreadCreate's argument, in the caller's memory.
struct UserThreadCreate {
  // In.
  std::uint64_t name;  // user address of a NUL-terminated name, or 0
  std::int32_t priority;
  std::uint32_t start_suspended;
  std::uint64_t stack_size;
  std::uint64_t affinity;
  std::uint64_t callable_size;
  std::uint64_t callable_align;
  // Out.
  std::uint64_t id;
  std::uint64_t block;     // the UserThreadBlock's user address: the thread's handle
  std::uint64_t callable;  // where the caller constructs the callable
};

// kSysProcessSpawn's argument, in the caller's memory. main and entry are
// addresses in the caller's copy of the image, which are the child's too
// (every copy is at the same user address).
struct UserProcessSpawn {
  // In.
  std::uint64_t name;  // user address of a NUL-terminated name, or 0
  std::uint64_t memory_limit;
  std::uint64_t affinity;
  std::uint32_t thread_limit;
  std::int32_t priority;
  std::uint64_t handles;  // user address of nhandles Handles of the caller's table
  std::uint64_t nhandles;
  std::uint64_t main;
  std::uint64_t entry;
  std::uint64_t args;  // user address of len argument bytes
  std::uint64_t len;
  // Out.
  std::uint64_t pid;
};

// kSysThreadCtl's operations (thread 0: the caller).
enum ThreadCtl : std::uint64_t {
  kCtlSetPriority = 0,  // value: the priority
  kCtlPriority = 1,     // returns the effective priority
  kCtlSetAffinity = 2,  // value: CpuMask bits
  kCtlSuspend = 3,
  kCtlResume = 4,
  kCtlCpu = 5,          // returns the CPU it runs on
};

// kSysJobWait's flag (its order argument): a[0] is a channel end's handle
// and a[1] 1 for writable, 0 for readable; the proxy waits on the end's
// word unless it is ready (kWouldBlock).
inline constexpr std::uint64_t kJobWaitChannel = 2;
// kSysJobWait's other flag: a take of a unit of the counting word at a[0]
// (futex_take_async; a[1] unused): kOk, taken at once; kWouldBlock, the
// proxy waits as a taker, posted kOk only when a give handed it a unit
// (kWouldBlock when woken without one, kTimedOut, kInterrupted).
inline constexpr std::uint64_t kJobWaitTake = 4;

// kSysJobCtl's operations (coroutines in a process, ujobs.cc).
enum JobCtl : std::uint64_t {
  kJobCollect = 0,  // UserJobDone* out, n: waits for woken jobs; how many (0: kicked)
  kJobCancel = 1,   // token: wakes that job's proxy with kInterrupted, if it waits
  kJobKick = 2,     // the collector's wait returns 0
  kJobId = 3,       // -: a lock identity for a job (kJobId's id; 0: none left)
  kJobIdFree = 4,   // id: the job ended; its locks pass as owner-died, the id is freed
  kJobUnlock = 5,   // word, id: futex_unlock as that job (one of the caller's ids)
};
// A woken job, as kJobCollect hands it over.
struct UserJobDone {
  std::uint64_t token;   // the job's address (kSysJobWait's token)
  std::uint64_t status;  // its wake status
};

// kSysStats's operations and the user's view of a ThreadStats (the state
// as a number: a kernel pointer means nothing in a process).
enum StatsOp : std::uint64_t { kStatsThreads = 0, kStatsThread = 1, kStatsSystem = 2 };
struct UserThreadStats {
  ThreadStats stats;  // state: nullptr
  std::uint32_t state;  // ThreadState
};

// kSysShm's operations.
enum ShmOp : std::uint64_t { kShmCreate = 0, kShmMap = 1, kShmUnmap = 2 };

// kSysHandle's operations.
enum HandleOp : std::uint64_t { kHandleKind = 0, kHandleClose = 1, kHandleDuplicate = 2 };

// kSysFutexLock's policy word: order, inherit, handoff (bits 0..2);
// policy_from_bits reads them back (the rest of the policy left default).
inline std::uint64_t policy_bits(const LockPolicy& p) {
  return (p.order == WaitOrder::kFifo ? 1u : 0u) | (p.inherit ? 2u : 0u) | (p.handoff ? 4u : 0u);
}
inline LockPolicy policy_from_bits(std::uint64_t bits) {
  LockPolicy p;
  p.order = bits & 1 ? WaitOrder::kFifo : WaitOrder::kPriority;
  p.inherit = bits & 2;
  p.handoff = bits & 4;
  return p;
}

}  // namespace spindle::kernel
