// C++20 stackless coroutines as kernel citizens.
//
//   Task<T>          a lazy, move-only coroutine returning T; `co_await task`
//                    runs it by symmetric transfer (no stack growth) and
//                    yields its T.
//   spawn(task)      runs a task as a job on the executors (one per vCPU,
//                    work stealing; SpawnOptions::cpu pins it); returns a
//                    JoinHandle<T> (drop it to detach).
//   run(task)        drives a task to completion from ordinary code, like
//                    asyncio.run: Result<T>.
//   co_await sleep_for(d) / sleep_until(t) / yield()
//
// A job is one chain of awaiting coroutines with one current suspension
// point, waiting in the same kernel wait queues as threads (so an object's
// FIFO or priority order holds across threads and coroutines). Its status,
// as its JoinHandle reports it: kOk (finished), kInterrupted (cancelled),
// kNoMemory (a coroutine frame in the chain could not be allocated).
//
// Failure and cancellation unwind: the job's root frame is destroyed at
// the suspension point, which destroys every frame of the chain with their
// locals (guards unlock, waits are withdrawn), and the job ends with the
// status. Cancellation is cooperative: it takes effect at the job's next
// suspension point (a wait, sleep or yield), or at once if it is waiting.
//
// Frames come from a kernel allocator with per-size pools and per-CPU
// caches (no general heap needed on bare metal); allocation failure is a
// status, never a crash.
//
// Context: the awaitables below may only be awaited inside a job (a task
// run by spawn or run); awaiting one elsewhere panics, naming it. They are
// not for interrupt handlers. From inside a job never block its executor
// (thread-style lock(), join(), this_thread::sleep_for): use the async form.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>
#include <utility>

#include "spindle/futex.h"
#include "spindle/status.h"
#include "spindle/thread.h"
#include "spindle/time.h"

namespace spindle {

struct SpawnOptions {
  int cpu = -1;                     // run only on this CPU's executor; -1: any (work stealing)
  int priority = kDefaultPriority;  // its place among waiters of priority-ordered objects
};

template <class T = void>
class Task;

namespace detail {

struct CoJob;

// Frame pool (coro.cc).
void* frame_alloc(std::size_t n) noexcept;
void frame_free(void* p, std::size_t n) noexcept;
[[noreturn]] void coroutine_exception() noexcept;
// Testing: the next n frame (or job) allocations fail.
void fail_frame_allocations(unsigned n);
// Testing: with false, a job waiting on a word shared with another process
// is not looked at by its own timer (which still ends the wait at its
// deadline): only an idle CPU's watch wakes it (kernel/src/coro.cc,
// Foreign polls). Back to true at every boot.
void foreign_poll_timers(bool on);

// Jobs (coro.cc). A job holds one reference for itself until it ends;
// job_spawn returns a second one for the caller.
// kInvalidArgument (bad options), kNoMemory, or kOk with *out set.
Status job_spawn(std::coroutine_handle<> root, const SpawnOptions& o, bool signal_parent, CoJob** out) noexcept;
void job_release(CoJob* j) noexcept;
void job_cancel(CoJob* j) noexcept;
bool job_done(const CoJob* j) noexcept;
Status job_status(const CoJob* j) noexcept;  // once done
// Suspends the running job at h until j has ended (false: it has).
bool job_wait_done(std::coroutine_handle<> h, CoJob* j, Status* now) noexcept;
void* job_root(const CoJob* j) noexcept;  // the finished root frame's address (status kOk)
Status job_join(CoJob* j, TimePoint deadline) noexcept;  // blocks a thread until done

// Suspension points of the running job, called from await_suspend. They
// return true when the job is suspended (it resumes on an executor; the
// caller must not touch the frame any more) and false with *now set when
// it is not (the condition did not hold: kWouldBlock; or an immediate
// result).
bool job_wait(std::coroutine_handle<> h, const std::atomic<std::uint32_t>* word, std::uint32_t expected,
              TimePoint deadline, WaitOrder order, const char* name, Status* now) noexcept;
bool job_lock(std::coroutine_handle<> h, std::atomic<std::uint32_t>* word, const LockPolicy& policy,
              TimePoint deadline, Status* now) noexcept;
// Takes a unit of a counting word (futex.h) for the running job: false
// with *now = kOk (a counted unit taken at once), kTimedOut or an error;
// else suspended as a taker until a give hands it a unit, or the deadline.
bool job_take(std::coroutine_handle<> h, std::atomic<std::uint32_t>* word, TimePoint deadline, WaitOrder order,
              const char* name, Status* now) noexcept;
// After a job_take suspension: kOk (a unit is the job's), kWouldBlock
// (woken without one: take again), kTimedOut.
Status job_take_status() noexcept;
// In a process only (channel_wait_async): suspends until channel end
// `handle` may be written (or read), as far as the kernel can tell, or the
// deadline; false with *now = kWouldBlock when it may be now.
bool job_wait_channel(std::coroutine_handle<> h, std::uint32_t handle, bool writable, TimePoint deadline,
                      Status* now) noexcept;
void job_sleep(std::coroutine_handle<> h, TimePoint deadline) noexcept;
void job_yield(std::coroutine_handle<> h) noexcept;
// The running job fails with s (its root is destroyed); returns the handle
// to transfer to (a no-op: the job is over).
std::coroutine_handle<> job_fail(Status s) noexcept;
// The root coroutine of the running job finished.
std::coroutine_handle<> job_finished() noexcept;
// After a suspension: how the job was resumed (kOk, kTimedOut, kOwnerDied).
Status job_wake_status() noexcept;
// The running job's identity as a lock owner (allocated on first use).
ThreadId job_lock_id() noexcept;
Status job_unlock(std::atomic<std::uint32_t>* word, ThreadId owner) noexcept;
// The running job's signal word, bumped when a child spawned with
// signal_parent ends.
std::atomic<std::uint32_t>* job_signal_word() noexcept;
bool in_job() noexcept;

inline constexpr Status kPending = static_cast<Status>(-1);

// Awaits `*word != expected` (or the deadline) like futex_wait: the wait
// ends when a futex_wake on word reaches it. Result: kOk (woken),
// kWouldBlock (the word had changed), kTimedOut.
class WordWait {
 public:
  WordWait(const std::atomic<std::uint32_t>* word, std::uint32_t expected, TimePoint deadline, WaitOrder order,
           const char* name)
      : word_(word), expected_(expected), deadline_(deadline), order_(order), name_(name) {}
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h) noexcept {
    status_ = kPending;
    return job_wait(h, word_, expected_, deadline_, order_, name_, &status_);
  }
  Status await_resume() const noexcept { return status_ == kPending ? job_wake_status() : status_; }

 private:
  const std::atomic<std::uint32_t>* word_;
  std::uint32_t expected_;
  TimePoint deadline_;
  WaitOrder order_;
  const char* name_;
  Status status_ = kPending;
};

// Awaits a unit of the counting word at `word` (futex_take for a job):
// kOk (taken, at once or handed over by a give in wait order), kWouldBlock
// (woken without one: take again), kTimedOut, or an error.
class WordTake {
 public:
  WordTake(std::atomic<std::uint32_t>* word, TimePoint deadline, WaitOrder order, const char* name)
      : word_(word), deadline_(deadline), order_(order), name_(name) {}
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h) noexcept {
    status_ = kPending;
    return job_take(h, word_, deadline_, order_, name_, &status_);
  }
  Status await_resume() const noexcept { return status_ == kPending ? job_take_status() : status_; }

 private:
  std::atomic<std::uint32_t>* word_;
  TimePoint deadline_;
  WaitOrder order_;
  const char* name_;
  Status status_ = kPending;
};

// Increments a waiter count for as long as it lives (also when the frame
// holding it is destroyed by cancellation).
class CountWaiter {
 public:
  explicit CountWaiter(std::atomic<std::uint32_t>& n) : n_(n) { n_.fetch_add(1, std::memory_order_seq_cst); }
  CountWaiter(const CountWaiter&) = delete;
  ~CountWaiter() { n_.fetch_sub(1, std::memory_order_relaxed); }

 private:
  std::atomic<std::uint32_t>& n_;
};

// Symmetric transfer keeps the stack flat only if the compiler turns the
// transfer into a tail call. GCC does at -O2, but not with AddressSanitizer
// or ThreadSanitizer instrumentation: there a child that completes without
// suspending hands control back through a flag instead (the await_suspend
// that started it returns false), which bounds the stack the same way for
// loops of awaits; deep recursion of awaits needs the tail calls.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSymmetricTransfer = false;
#else
inline constexpr bool kSymmetricTransfer = true;
#endif

struct NoFlag {};

class PromiseBase {
 public:
  static void* operator new(std::size_t n) noexcept { return frame_alloc(n); }
  static void operator delete(void* p, std::size_t n) noexcept { frame_free(p, n); }

  std::suspend_always initial_suspend() noexcept { return {}; }
  struct FinalAwaiter {
    bool await_ready() const noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
      P& p = h.promise();  // dependent: the flag exists only without tail calls
      std::coroutine_handle<> c = p.continuation_;
      if (!c) return job_finished();
      if constexpr (!kSymmetricTransfer) {
        // Second to arrive resumes the awaiter; first: it is still inside
        // the await_suspend that started us and continues by itself.
        if (!p.ended_.exchange(true, std::memory_order_acq_rel)) return std::noop_coroutine();
      }
      return c;
    }
    void await_resume() const noexcept {}
  };
  FinalAwaiter final_suspend() noexcept { return {}; }
  void unhandled_exception() noexcept { coroutine_exception(); }

  std::coroutine_handle<> continuation_;
  [[no_unique_address]] std::conditional_t<kSymmetricTransfer, NoFlag, std::atomic<bool>> ended_{};
};

template <class T>
class TaskPromise : public PromiseBase {
 public:
  TaskPromise() = default;
  TaskPromise(const TaskPromise&) = delete;
  ~TaskPromise() {
    if (has_) ptr()->~T();
  }
  Task<T> get_return_object() noexcept;
  static Task<T> get_return_object_on_allocation_failure() noexcept;
  template <class U>
    requires std::is_constructible_v<T, U&&>
  void return_value(U&& v) {
    new (storage_) T(std::forward<U>(v));
    has_ = true;
  }
  T take() { return std::move(*ptr()); }

 private:
  T* ptr() { return std::launder(reinterpret_cast<T*>(storage_)); }
  alignas(T) unsigned char storage_[sizeof(T)];
  bool has_ = false;
};

template <>
class TaskPromise<void> : public PromiseBase {
 public:
  Task<void> get_return_object() noexcept;
  static Task<void> get_return_object_on_allocation_failure() noexcept;
  void return_void() noexcept {}
  void take() noexcept {}
};

}  // namespace detail

// A lazy coroutine: it starts when awaited (or spawned), runs in the
// awaiting job, and hands the awaiter its result. Destroying a Task that
// was never awaited frees its frame.
template <class T>
class [[nodiscard]] Task {
 public:
  using promise_type = detail::TaskPromise<T>;
  using Handle = std::coroutine_handle<promise_type>;
  using value_type = T;

  Task() = default;
  Task(Task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  Task& operator=(Task&& o) noexcept {
    if (this != &o) {
      if (h_) h_.destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  ~Task() {
    if (h_) h_.destroy();
  }

  // False when the frame could not be allocated (awaiting it then fails
  // the job with kNoMemory; spawning it reports kNoMemory).
  bool valid() const { return static_cast<bool>(h_); }

  class Awaiter {
   public:
    explicit Awaiter(Handle h) : h_(h) {}
    bool await_ready() const noexcept { return false; }
    auto await_suspend(std::coroutine_handle<> awaiting) noexcept {
      if constexpr (detail::kSymmetricTransfer) {
        if (!h_) return detail::job_fail(Status::kNoMemory);
        h_.promise().continuation_ = awaiting;
        return std::coroutine_handle<>(h_);  // symmetric transfer: no stack growth
      } else {
        if (!h_) {
          (void)detail::job_fail(Status::kNoMemory);
          return true;
        }
        h_.promise().continuation_ = awaiting;
        h_.resume();  // runs until it ends or suspends
        // Suspend unless it already ended (then it left us to go on).
        return h_.promise().ended_.exchange(true, std::memory_order_acq_rel) == false;
      }
    }
    T await_resume() { return h_.promise().take(); }

   private:
    Handle h_;
  };
  Awaiter operator co_await() & noexcept { return Awaiter(h_); }
  Awaiter operator co_await() && noexcept { return Awaiter(h_); }

  // Gives up ownership of the frame (for spawn).
  Handle release() { return std::exchange(h_, {}); }
  Handle handle() const { return h_; }

 private:
  friend promise_type;
  explicit Task(Handle h) : h_(h) {}
  Handle h_;
};

namespace detail {
template <class T>
Task<T> TaskPromise<T>::get_return_object() noexcept {
  return Task<T>(std::coroutine_handle<TaskPromise<T>>::from_promise(*this));
}
template <class T>
Task<T> TaskPromise<T>::get_return_object_on_allocation_failure() noexcept {
  return Task<T>();
}
inline Task<void> TaskPromise<void>::get_return_object() noexcept {
  return Task<void>(std::coroutine_handle<TaskPromise<void>>::from_promise(*this));
}
inline Task<void> TaskPromise<void>::get_return_object_on_allocation_failure() noexcept { return Task<void>(); }

// What a job's result is reported as: Result<T> for a value type, Status
// for void; a task that returns Status or Result<U> itself is flattened
// (its own status and the job's share one channel).
template <class T>
struct ResultOf {
  using type = Result<T>;
};
template <>
struct ResultOf<void> {
  using type = Status;
};
template <>
struct ResultOf<Status> {
  using type = Status;
};
template <class U>
struct ResultOf<Result<U>> {
  using type = Result<U>;
};
template <class T>
inline constexpr bool kFlattened = std::is_same_v<typename ResultOf<T>::type, T>;
}  // namespace detail

template <class T>
using ResultOf = typename detail::ResultOf<T>::type;

// A spawned job: wait for it (a thread: join; a coroutine: co_await),
// read its result once, cancel it. Dropping the handle detaches the job
// (it runs on); a handle made with cancel_on_drop cancels it instead.
template <class T = void>
class [[nodiscard]] JoinHandle {
 public:
  JoinHandle() = default;
  explicit JoinHandle(Status failed) : bits_(failed_bits(failed)) {}
  JoinHandle(detail::CoJob* j, bool cancel_on_drop)
      : bits_(reinterpret_cast<std::uintptr_t>(j) | (cancel_on_drop ? kCancelOnDrop : 0)) {}
  JoinHandle(JoinHandle&& o) noexcept : bits_(std::exchange(o.bits_, failed_bits(Status::kInvalidState))) {}
  JoinHandle& operator=(JoinHandle&& o) noexcept {
    if (this != &o) {
      drop();
      bits_ = std::exchange(o.bits_, failed_bits(Status::kInvalidState));
    }
    return *this;
  }
  ~JoinHandle() { drop(); }

  // kOk when the job was started; kNoMemory when it could not be.
  Status status() const { return job() ? Status::kOk : failed(); }
  bool done() const { return !job() || detail::job_done(job()); }
  // Asks the job to stop: it unwinds at its next suspension point (at once
  // if it waits) and ends with kInterrupted. No effect once done.
  void cancel() {
    if (job()) detail::job_cancel(job());
  }
  void detach() {
    if (detail::CoJob* j = job()) detail::job_release(j);
    bits_ = failed_bits(Status::kInvalidState);
  }

  // From a thread: waits for the job and returns its result (once).
  // Inside a job it would block the executor: kDeadlock (co_await instead).
  ResultOf<T> join() {
    if (!job()) return failed();
    if (Status s = detail::job_join(job(), kForever); s != Status::kOk) return s;  // kDeadlock: not ended
    return result();
  }
  // From a thread, waits until the deadline: kOk (done), kTimedOut, or
  // kDeadlock inside a job.
  Status wait_until(TimePoint deadline) { return job() ? detail::job_join(job(), deadline) : Status::kOk; }

  // From a coroutine: co_await handle -> its result (once);
  // co_await handle.wait_async() only waits until the job has ended.
  class DoneAwaiter {
   public:
    explicit DoneAwaiter(JoinHandle* h) : h_(h) {}
    bool await_ready() const noexcept { return h_->done(); }
    bool await_suspend(std::coroutine_handle<> c) noexcept {
      Status now = detail::kPending;
      return detail::job_wait_done(c, h_->job(), &now);
    }
    void await_resume() const noexcept {}

   protected:
    JoinHandle* h_;
  };
  class Awaiter : public DoneAwaiter {
   public:
    using DoneAwaiter::DoneAwaiter;
    ResultOf<T> await_resume() { return this->h_->result(); }
  };
  Awaiter operator co_await() & noexcept { return Awaiter(this); }
  Awaiter operator co_await() && noexcept { return Awaiter(this); }
  DoneAwaiter wait_async() noexcept { return DoneAwaiter(this); }

  // The result of a finished job (once): its value, or how it ended.
  ResultOf<T> result() {
    if (!job()) return failed();
    Status s = detail::job_status(job());
    if (s != Status::kOk) return s;
    auto h = std::coroutine_handle<detail::TaskPromise<T>>::from_address(detail::job_root(job()));
    if constexpr (std::is_void_v<T>) {
      return Status::kOk;
    } else if constexpr (detail::kFlattened<T>) {
      return h.promise().take();
    } else {
      return Result<T>(h.promise().take());
    }
  }

 private:
  // One word: the job pointer with bit 0 = cancel on drop, or, with bit 1
  // set, the status of a handle without a job in the bits above.
  static constexpr std::uintptr_t kCancelOnDrop = 1, kNoJob = 2;
  static std::uintptr_t failed_bits(Status s) { return static_cast<std::uintptr_t>(s) << 2 | kNoJob; }
  Status failed() const { return static_cast<Status>(bits_ >> 2); }
  detail::CoJob* job() const {
    return bits_ & kNoJob ? nullptr : reinterpret_cast<detail::CoJob*>(bits_ & ~kCancelOnDrop);
  }
  void drop() {
    if (detail::CoJob* j = job()) {
      if (bits_ & kCancelOnDrop) detail::job_cancel(j);
      detail::job_release(j);
    }
    bits_ = failed_bits(Status::kInvalidState);
  }
  std::uintptr_t bits_ = failed_bits(Status::kInvalidState);
};

namespace detail {
// A child (of the running job) is cancelled when its handle is dropped;
// with signal_parent it also bumps the parent's signal word when it ends.
template <class T>
JoinHandle<T> spawn_job(Task<T> task, const SpawnOptions& o, bool child, bool signal_parent = false) {
  if (!task.valid()) return JoinHandle<T>(Status::kNoMemory);
  auto h = task.release();
  CoJob* j = nullptr;
  if (Status s = job_spawn(h, o, signal_parent, &j); s != Status::kOk) {
    h.destroy();
    return JoinHandle<T>(s);
  }
  return JoinHandle<T>(j, child);
}
}  // namespace detail

// Runs task as a new job on the executors. The handle's status() is
// kNoMemory or kInvalidArgument (a bad option; nothing started) on failure.
template <class T>
JoinHandle<T> spawn(Task<T> task, const SpawnOptions& o = {}) {
  return detail::spawn_job(std::move(task), o, false);
}

// What the coroutine runtime holds now.
struct CoroutineStats {
  std::uint64_t jobs = 0;         // spawned and not yet released
  std::uint64_t waiting = 0;      // suspended on a wait, a sleep or a lock
  std::uint64_t frame_bytes = 0;  // coroutine frames and job records in use
  unsigned executors = 0;
  // Jobs waiting on a word shared with other processes (hosted) that an
  // idle CPU's watch woke, before their own timer looked (since boot).
  std::uint64_t watch_wakes = 0;
};
CoroutineStats coroutine_stats();

// Stops the executor threads once no job is left; the next spawn starts
// them again. kOk; kInvalidState (jobs remain or executors are being
// started: nothing changed); kDeadlock from inside a coroutine.
Status stop_executors();

// Runs task to completion from a thread and returns its result.
template <class T>
ResultOf<T> run(Task<T> task, const SpawnOptions& o = {}) {
  return spawn(std::move(task), o).join();
}

// co_await sleep_for(d): suspends the job (not the executor) for d.
class SleepAwaiter {
 public:
  explicit SleepAwaiter(TimePoint deadline) : deadline_(deadline) {}
  bool await_ready() const noexcept { return deadline_ <= Clock::now(); }
  void await_suspend(std::coroutine_handle<> h) noexcept { detail::job_sleep(h, deadline_); }
  void await_resume() const noexcept {}

 private:
  TimePoint deadline_;
};
inline SleepAwaiter sleep_until(TimePoint t) { return SleepAwaiter(t); }
inline SleepAwaiter sleep_for(Duration d) { return SleepAwaiter(deadline_after(d)); }

// co_await yield(): lets the other ready jobs of this executor run first.
struct YieldAwaiter {
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) noexcept { detail::job_yield(h); }
  void await_resume() const noexcept {}
};
inline YieldAwaiter yield() { return {}; }

namespace detail {

// The coroutine form of a wait on an object's word: while word == value,
// waits (counted in `waiters`, so the waker knows to call futex_wake).
// kOk once the word changed, or kTimedOut.
Task<Status> wait_while_equal_async(const std::atomic<std::uint32_t>& word, std::uint32_t value,
                                   std::atomic<std::uint32_t>& waiters, TimePoint deadline, WaitOrder order,
                                   const char* name);

// An awaitable operation with a fast path: `fast()` completes it without
// suspending (true), else the coroutine `slow()` (a Task<Status>) runs in
// the awaiting job and its status is the result.
template <class Fast, class Slow>
class FastOrSlow {
 public:
  FastOrSlow(Fast f, Slow s) : fast_(std::move(f)), slow_fn_(std::move(s)) {}
  bool await_ready() { return fast_(); }
  auto await_suspend(std::coroutine_handle<> h) noexcept {
    slow_ = slow_fn_();
    return typename Task<Status>::Awaiter(slow_.handle()).await_suspend(h);
  }
  Status await_resume() { return slow_.valid() ? slow_.handle().promise().take() : Status::kOk; }

 private:
  Fast fast_;
  Slow slow_fn_;
  Task<Status> slow_;
};

}  // namespace detail
}  // namespace spindle
