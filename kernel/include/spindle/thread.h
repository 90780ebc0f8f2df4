// Threads: preemptive, prioritised, SMP. Each Spindle thread has its own
// guarded stack and runs until it returns, calls this_thread::exit, or faults.
//
// Priorities run from 0 (least urgent) to 31 (most urgent). On every CPU the
// most urgent runnable thread runs; among the N CPUs the N most urgent
// runnable threads run. Equal priorities share a CPU by round-robin slices.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>
#include <utility>

#include <arch/arch.h>

#include "spindle/cpu_mask.h"
#include "spindle/status.h"
#include "spindle/time.h"

namespace spindle {

inline constexpr int kMinPriority = 0;
inline constexpr int kMaxPriority = 31;
inline constexpr int kDefaultPriority = 16;
inline constexpr std::size_t kDefaultStackSize = 64 * 1024;
// The smallest stack a thread may ask for: room for the thread's own
// bookkeeping, its start frame and a preemption (hosted: a signal frame).
inline constexpr std::size_t kMinStackSize = 32 * 1024;
inline constexpr std::size_t kMaxStackSize = 64 * 1024 * 1024;

// 1..kMaxThreadId; 0 = none. An id is not reused while its thread is
// alive or unjoined; ids wrap (skipping live ones) within the kernel's
// range. It fits the owner field of a lock word (spindle/futex.h). Hosted
// processes of one tree share the range, 2^20 ids each (a lock word in
// shared memory names one thread of one process): a process may have
// that many threads and lock-holding coroutines alive at once.
using ThreadId = std::uint64_t;
inline constexpr ThreadId kMaxThreadId = (ThreadId{1} << 30) - 1;

struct ThreadOptions {
  const char* name = "thread";     // copied; truncated to 31 characters
  int priority = kDefaultPriority;  // kMinPriority..kMaxPriority
  std::size_t stack_size = kDefaultStackSize;  // kMinStackSize..kMaxStackSize
  CpuMask affinity = CpuMask::all();  // must contain at least one online CPU
  bool start_suspended = false;       // created Suspended; resume() starts it
};

namespace detail {
struct Tcb;
// The first bytes of every thread's control block, which the arch thread
// pointer addresses: the running thread's id is one migration-safe load away.
struct ThreadHead {
  ThreadId id = 0;
};
inline ThreadId current_thread_id() { return static_cast<const ThreadHead*>(arch::thread_pointer())->id; }
// The kernel's thread entry: runs a type-erased callable stored in the new
// thread's stack and returns its exit code.
using Invoke = int (*)(void* callable);
using Destroy = void (*)(void* callable);
Result<Tcb*> thread_create(const ThreadOptions& opts, std::size_t callable_size, std::size_t callable_align,
                           void** callable_slot);
void thread_start(Tcb* t, Invoke invoke, Destroy destroy);
ThreadId thread_id(const Tcb* t);
}  // namespace detail

// An owning handle to a thread, like std::thread: move-only; must be joined
// or detached before it is destroyed (destroying a joinable handle panics
// with the thread's name).
class Thread {
 public:
  Thread() = default;
  Thread(Thread&& o) noexcept : tcb_(std::exchange(o.tcb_, nullptr)), id_(std::exchange(o.id_, 0)) {}
  Thread& operator=(Thread&& o) noexcept;
  Thread(const Thread&) = delete;
  Thread& operator=(const Thread&) = delete;
  ~Thread();

  // Creates a thread that runs fn(). fn may return void (exit code 0) or
  // something convertible to int (the exit code). fn is moved into the new
  // thread's stack: no heap allocation. Does not block.
  // Returns kInvalidArgument for a priority, stack size or affinity out of
  // range (nothing is created), kNoMemory when no stack can be had, kLimit
  // past the process's thread limit or when every thread id is in use.
  template <typename F>
  static Result<Thread> create(const ThreadOptions& opts, F&& fn);

  // Classic form: entry(arg) returning the exit code.
  static Result<Thread> create(const ThreadOptions& opts, int (*entry)(void*), void* arg);

  // Blocks until the thread has finished. kOk with *exit_code set (if given)
  // when it returned or called exit; kFaulted (exit code -1) when a fault
  // killed it. kInvalidState if the handle is empty or was detached;
  // kDeadlock if a thread joins itself. After a kOk/kFaulted the handle is
  // empty. May not be called from an interrupt handler.
  Status join(int* exit_code = nullptr);

  // Like join, but gives up at the deadline with kTimedOut (handle unchanged).
  Status join_until(TimePoint deadline, int* exit_code = nullptr);
  Status join_for(Duration d, int* exit_code = nullptr) { return join_until(deadline_after(d), exit_code); }

  // The thread runs on; its resources are returned when it ends. The handle
  // becomes empty. kInvalidState if the handle is empty.
  Status detach();

  bool joinable() const { return tcb_ != nullptr; }
  ThreadId id() const { return id_; }

  // Changes the thread's base priority (0..31); takes effect at once, on
  // every CPU (a thread lowered below a waiting one is preempted).
  // kInvalidArgument for an out-of-range value, kInvalidState on an empty handle.
  Status set_priority(int priority);
  int priority() const;  // effective priority; -1 for an empty handle

  // Stops the thread from running until resume(). A blocked thread stays
  // blocked and is held back when its wait ends. Suspending yourself blocks
  // at once. Counted: not nested (one resume undoes any number of suspends).
  // kInvalidState for an empty handle or a finished thread.
  Status suspend();
  Status resume();

  // Restricts the thread to the given CPUs. kInvalidArgument if the mask has
  // no online CPU.
  Status set_affinity(CpuMask mask);

 private:
  explicit Thread(detail::Tcb* t, ThreadId id) : tcb_(t), id_(id) {}
  detail::Tcb* tcb_ = nullptr;
  ThreadId id_ = 0;
};

template <typename F>
Result<Thread> Thread::create(const ThreadOptions& opts, F&& fn) {
  using Fn = std::decay_t<F>;
  static_assert(std::is_invocable_v<Fn&>, "Thread::create needs a callable taking no arguments");
  using R = std::invoke_result_t<Fn&>;
  static_assert(std::is_void_v<R> || std::is_convertible_v<R, int>,
                "a thread's callable must return void or an int exit code");
  void* slot = nullptr;
  Result<detail::Tcb*> t = detail::thread_create(opts, sizeof(Fn), alignof(Fn), &slot);
  if (!t.ok()) return t.status();
  new (slot) Fn(std::forward<F>(fn));
  detail::Invoke invoke = [](void* p) -> int {
    if constexpr (std::is_void_v<R>) {
      (*static_cast<Fn*>(p))();
      return 0;
    } else {
      return static_cast<int>((*static_cast<Fn*>(p))());
    }
  };
  detail::Destroy destroy = [](void* p) { static_cast<Fn*>(p)->~Fn(); };
  detail::Tcb* tcb = *t;
  ThreadId id = detail::thread_id(tcb);
  detail::thread_start(tcb, invoke, destroy);
  return Thread(tcb, id);
}

// The round-robin time slice among runnable threads of equal priority, the
// same on every CPU (hosted apps start with --timeslice, default 10 ms).
// A change applies from each CPU's next switch. Any thread; does not block.
// kInvalidArgument (nothing changed) outside kMinTimeslice..kMaxTimeslice.
inline constexpr Duration kMinTimeslice = std::chrono::microseconds(50);
inline constexpr Duration kMaxTimeslice = std::chrono::seconds(10);
Status set_timeslice(Duration slice);
Duration timeslice();

namespace this_thread {

// Gives the CPU to the next thread of the same priority, if any. Never blocks.
void yield();

// Block the calling thread for at least d / until t. Never returns early.
// Returns kOk; kInvalidState when called from an interrupt handler.
Status sleep_for(Duration d);
Status sleep_until(TimePoint t);

inline ThreadId id() { return detail::current_thread_id(); }
const char* name();
int priority();
unsigned cpu();  // the CPU running the caller right now (may change at once)

// Change the calling thread's base priority / affinity; as the Thread
// methods of the same names (the caller may be preempted at once).
Status set_priority(int priority);
Status set_affinity(CpuMask mask);

// Ends the calling thread with this exit code. Does not return. Objects on
// its stack are not destroyed (as with pthread_exit).
[[noreturn]] void exit(int code);

}  // namespace this_thread

}  // namespace spindle
