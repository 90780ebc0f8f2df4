// Future<T>: the result of a job run by a ThreadPool (spindle/thread_pool.h),
// FutureList<T> (an owning array of futures, what ThreadPool::map returns)
// and as_completed() (futures in the order their jobs finished).
//
// A future and the job that completes it share one heap block, the shared
// state (detail::FutureState<T>), reference-counted by its two (or more)
// holders: dropping a Future before its job ran is fine, the job still runs
// and its result is thrown away (unlike std::async, a Future's destructor
// never blocks).
//
// Errors travel without exceptions. A job returning:
//   void            -> Future<void>, get() returns kOk;
//   Status          -> Future<void>, get() returns that status;
//   Result<U>       -> Future<U>,    get() returns that Result's status/value;
//   any other U     -> Future<U>,    get() returns the value (kOk).
// A job dropped by ThreadPool::shutdown(false) before it started completes
// with kInterrupted. Jobs must not throw.
//
// Completion is one 32-bit word per state (ready_word()): waiting is a
// futex_wait on it and completing a futex_wake, so a finished future costs
// a waiter one atomic load, and waiting takes no lock. The out-of-line
// parts live in kernel/src/thread_pool.cc.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <tuple>
#include <type_traits>
#include <utility>

#include "spindle/futex.h"
#include "spindle/status.h"
#include "spindle/task.h"
#include "spindle/thread_annotations.h"
#include "spindle/time.h"

namespace spindle {

template <class T>
class Future;
template <class T>
class AsCompleted;
class ThreadPool;

namespace detail {

// A futex lock without an owner, priority inheritance or lock-order
// tracking, for the few instructions of a future's listener hand-over. It
// sleeps when contended (instead of spinning), so a waiter more urgent
// than a preempted holder on the same CPU cannot livelock. Word: 0 free,
// 1 held, 2 held with sleepers. Thread context only.
class SPINDLE_CAPABILITY("word lock") WordLock {
 public:
  WordLock() = default;
  WordLock(const WordLock&) = delete;
  WordLock& operator=(const WordLock&) = delete;
  void lock() SPINDLE_ACQUIRE() {
    std::uint32_t v = 0;
    if (!word_.compare_exchange_strong(v, 1, std::memory_order_acquire, std::memory_order_relaxed)) lock_slow();
  }
  void unlock() SPINDLE_RELEASE() {
    if (word_.exchange(0, std::memory_order_release) == 2) unlock_slow();
  }

 private:
  void lock_slow();
  void unlock_slow();
  std::atomic<std::uint32_t> word_{0};
};

// Whoever wants to hear when a future completes (as_completed). notify is
// called once, by the completing thread, with the state's listener lock
// held, after the outcome is stored and just before the ready word says
// so; it returns the completion ticket it took (take_completion_ticket),
// so ticket order is listener order.
struct CompletionListener {
  using Notify = std::uint64_t (*)(CompletionListener* self, std::size_t tag);
  Notify notify;
};

// Completion tickets: one global, strictly increasing count. Every state
// takes one when it completes; their order is the completion order
// as_completed reports.
std::uint64_t take_completion_ticket();

// The part of a shared state that does not depend on T.
//
// Awaiting a future from a coroutine (wait_async) follows the same wait
// protocol on ready_word() with an asynchronous futex wait. Values:
//   kPending   not complete, nobody sleeps;
//   kSleepers  not complete, someone may sleep on the word;
//   kReady     complete (final; the result is published with release order).
// A waiter: load (acquire); while not kReady: CAS kPending -> kSleepers,
// then wait while the word == kSleepers (futex_wait or an async equivalent
// woken by futex_wake). The completer exchanges kReady in and, iff it saw
// kSleepers, calls futex_wake(&ready_word(), all). An awaiter must keep a
// reference (retain/release) while it waits.
class FutureStateBase {
 public:
  static constexpr std::uint32_t kPending = 0;
  static constexpr std::uint32_t kReady = 1;
  static constexpr std::uint32_t kSleepers = 2;

  FutureStateBase(const FutureStateBase&) = delete;
  FutureStateBase& operator=(const FutureStateBase&) = delete;

  const std::atomic<std::uint32_t>& ready_word() const { return word_; }
  bool is_ready() const { return word_.load(std::memory_order_acquire) == kReady; }

  // Blocks until ready or the deadline. kOk, kTimedOut, or kInvalidState
  // from an interrupt handler (a ready state returns kOk anywhere).
  Status wait_until(TimePoint deadline);
  // From a coroutine: the same wait, suspending the coroutine (not its
  // executor). kOk once ready.
  Task<Status> wait_async();

  // The job's outcome; meaningful once is_ready().
  Status outcome() const { return outcome_; }
  // The name of what completes it (the pool), for reports.
  const char* name() const { return name_; }

  void retain() { refs_.fetch_add(1, std::memory_order_relaxed); }
  // Drops a reference; the last one frees the state.
  void release() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) destroy_(this);
  }

  // Registers l (one listener per state) to be notified with `tag` when the
  // state completes. kOk; kWouldBlock if it has completed already (nothing
  // registered; *ticket = its completion ticket); kInvalidState if another
  // listener is registered.
  Status listen(CompletionListener* l, std::size_t tag, std::uint64_t* ticket) SPINDLE_EXCLUDES(lock_);
  // Removes l if it is still registered. Once this returns, l's notify is
  // not running and will not run for this state.
  void unlisten(CompletionListener* l) SPINDLE_EXCLUDES(lock_);

  // Job side (ThreadPool). run(): execute and complete, or, when
  // execute is false, complete with kInterrupted without running. Either
  // way the job's callable is destroyed and the job's reference dropped.
  void run(bool execute) { run_(this, execute); }
  // Frees a job that was never queued (both references at once).
  void discard() { destroy_(this); }

 protected:
  using RunFn = void (*)(FutureStateBase*, bool execute);
  using DestroyFn = void (*)(FutureStateBase*);
  FutureStateBase(const char* name, RunFn run, DestroyFn destroy) : run_(run), destroy_(destroy), name_(name) {}
  ~FutureStateBase() = default;

  // Publishes the outcome (any value must be stored before), wakes the
  // waiters and notifies the listener. Once per state.
  void complete(Status outcome) SPINDLE_EXCLUDES(lock_);

 private:
  friend class spindle::ThreadPool;

  std::atomic<std::uint32_t> word_{kPending};
  std::atomic<std::uint32_t> refs_{2};  // the Future and the job
  Status outcome_ = Status::kOk;        // written once, before word_ becomes kReady
  WordLock lock_;
  CompletionListener* listener_ SPINDLE_GUARDED_BY(lock_) = nullptr;
  std::size_t tag_ SPINDLE_GUARDED_BY(lock_) = 0;
  std::uint64_t ticket_ SPINDLE_GUARDED_BY(lock_) = 0;  // set when complete
  RunFn run_;
  DestroyFn destroy_;
  const char* name_;
  FutureStateBase* next_ = nullptr;  // the pool's queue link, guarded by the pool's lock
};

// A state with room for the value.
template <class T>
class FutureState : public FutureStateBase {
 public:
  // Moves the value out; only after is_ready() with outcome() kOk.
  T take_value() { return std::move(*value()); }

 protected:
  using FutureStateBase::FutureStateBase;
  ~FutureState() {
    if (has_value_) value()->~T();
  }
  template <class U>
  void set_value(U&& v) {
    new (storage_) T(std::forward<U>(v));
    has_value_ = true;
  }

 private:
  T* value() { return std::launder(reinterpret_cast<T*>(storage_)); }
  bool has_value_ = false;
  alignas(T) unsigned char storage_[sizeof(T)];
};

template <>
class FutureState<void> : public FutureStateBase {
 protected:
  using FutureStateBase::FutureStateBase;
  ~FutureState() = default;
};

// What a job's return type R becomes in its Future (see the top).
template <class R>
struct FutureValue {
  using type = R;
};
template <>
struct FutureValue<Status> {
  using type = void;
};
template <class U>
struct FutureValue<Result<U>> {
  using type = U;
};
template <class R>
inline constexpr bool kIsResult = false;
template <class U>
inline constexpr bool kIsResult<Result<U>> = true;

// The future value type of f(args...) run as a job (decayed copies, called
// as rvalues, as std::async does).
template <class F, class... A>
using job_value_t = typename FutureValue<std::invoke_result_t<std::decay_t<F>, std::decay_t<A>...>>::type;

// A job: the shared state plus the callable and its arguments, moved in at
// submit time and destroyed as soon as the job ran (or was dropped), before
// the future becomes ready.
template <class T, class Fn, class... A>
class PoolJob final : public FutureState<T> {
  using R = std::invoke_result_t<Fn, A...>;
  static_assert(!std::is_reference_v<R>, "a pooled job may not return a reference (return a value or a pointer)");
  static_assert(std::is_void_v<T> || std::is_move_constructible_v<T>, "a job's result must be move-constructible");

 public:
  template <class F2, class... A2>
  explicit PoolJob(const char* name, F2&& f, A2&&... a)
      : FutureState<T>(name, &run_job, &destroy_job),
        call_{Fn(std::forward<F2>(f)), std::tuple<A...>(std::forward<A2>(a)...)} {}
  ~PoolJob() {
    if (call_alive_) call_.~Call();
  }

  static void* allocate() noexcept {
    return ::operator new(sizeof(PoolJob), std::align_val_t(alignof(PoolJob)), std::nothrow);
  }
  static void deallocate(void* p) noexcept { ::operator delete(p, std::align_val_t(alignof(PoolJob))); }

 private:
  struct Call {
    Fn fn;
    std::tuple<A...> args;
  };

  Status invoke() {
    if constexpr (std::is_void_v<R>) {
      std::apply(std::move(call_.fn), std::move(call_.args));
      return Status::kOk;
    } else if constexpr (std::is_same_v<R, Status>) {
      return std::apply(std::move(call_.fn), std::move(call_.args));
    } else if constexpr (kIsResult<R>) {
      R r = std::apply(std::move(call_.fn), std::move(call_.args));
      if (!r.ok()) return r.status();
      this->set_value(std::move(r).value());
      return Status::kOk;
    } else {
      this->set_value(std::apply(std::move(call_.fn), std::move(call_.args)));
      return Status::kOk;
    }
  }

  static void run_job(FutureStateBase* base, bool execute) {
    auto* self = static_cast<PoolJob*>(base);
    Status s = execute ? self->invoke() : Status::kInterrupted;
    self->call_.~Call();
    self->call_alive_ = false;
    self->complete(s);
    self->release();
  }
  static void destroy_job(FutureStateBase* base) {
    auto* self = static_cast<PoolJob*>(base);
    self->~PoolJob();
    deallocate(self);
  }

  union {
    Call call_;
  };
  bool call_alive_ = true;
};

}  // namespace detail

// The result of a submitted job. Move-only. A valid future refers to a
// job; an invalid one carries why there is none (status()). Like
// std::future, one Future object is used by one thread at a time (get()
// and moves change it); ready() may also be called from an interrupt
// handler.
template <class T>
class [[nodiscard]] Future {
 public:
  // What get() returns: Result<T>, or Status for Future<void>.
  using GetResult = std::conditional_t<std::is_void_v<T>, Status, Result<T>>;

  // An invalid future (status kInvalidState).
  Future() = default;
  // An invalid future carrying why there is no job; `why` must not be kOk
  // (kOk is replaced by kInvalidState).
  explicit Future(Status why) : status_(why == Status::kOk ? Status::kInvalidState : why) {}
  Future(Future&& o) noexcept : state_(std::exchange(o.state_, nullptr)), status_(o.status_) {
    o.status_ = Status::kInvalidState;
  }
  Future& operator=(Future&& o) noexcept {
    if (this != &o) {
      drop();
      state_ = std::exchange(o.state_, nullptr);
      status_ = std::exchange(o.status_, Status::kInvalidState);
    }
    return *this;
  }
  Future(const Future&) = delete;
  Future& operator=(const Future&) = delete;
  // Does not wait: the job runs on and its result is discarded.
  ~Future() { drop(); }

  bool valid() const { return state_ != nullptr; }
  // kOk for a valid future (whatever its job's outcome: see get()).
  // Otherwise why it has no job: kWouldBlock (try_submit found the queue
  // full), kTimedOut (submit_for/_until), kClosed (the pool was shut
  // down), kNoMemory, kInvalidArgument (the pool was not constructed), or
  // kInvalidState (default-constructed, moved from, or get() was called).
  Status status() const { return status_; }
  // The job has completed (false for an invalid future). Never blocks.
  bool ready() const { return state_ != nullptr && state_->is_ready(); }

  // Blocks until the job has completed. kOk (done: its outcome comes from
  // get()), kTimedOut, or status() for an invalid future; kInvalidState
  // from an interrupt handler while not ready.
  Status wait() const { return wait_until(kForever); }
  Status wait_for(Duration d) const { return wait_until(deadline_after(d)); }
  Status wait_until(TimePoint deadline) const {
    if (!state_) return status_;
    return state_->wait_until(deadline);
  }

  // Waits, then hands over the job's outcome: its value (Result<T>), or
  // the status it failed with (kInterrupted if it was dropped by
  // shutdown(false)). Consumes the future: afterwards valid() is false
  // and another get() returns kInvalidState. On an invalid future returns
  // status(). From an interrupt handler, a future that is not ready
  // returns kInvalidState and stays valid.
  GetResult get() {
    if (!state_) return status_;
    if (Status w = state_->wait_until(kForever); w != Status::kOk) return w;
    Status outcome = state_->outcome();
    if constexpr (std::is_void_v<T>) {
      drop();
      return outcome;
    } else {
      if (outcome != Status::kOk) {
        drop();
        return outcome;
      }
      Result<T> r(state_->take_value());
      drop();
      return r;
    }
  }

  // From a coroutine: `co_await future` is get() without blocking the
  // executor: the coroutine suspends until the job has completed.
  class Awaiter {
   public:
    explicit Awaiter(Future* f) : f_(f) {}
    bool await_ready() const { return !f_->valid() || f_->ready(); }
    auto await_suspend(std::coroutine_handle<> h) noexcept {
      wait_ = f_->state_->wait_async();
      return typename Task<Status>::Awaiter(wait_.handle()).await_suspend(h);
    }
    GetResult await_resume() { return f_->get(); }

   private:
    Future* f_;
    Task<Status> wait_;
  };
  Awaiter operator co_await() & { return Awaiter(this); }
  Awaiter operator co_await() && { return Awaiter(this); }

  // The shared state (nullptr if invalid): for code that waits on it by
  // other means (see detail::FutureStateBase).
  detail::FutureState<T>* state() const { return state_; }

 private:
  friend class ThreadPool;
  // Takes over one reference to s.
  explicit Future(detail::FutureState<T>* s) : state_(s), status_(Status::kOk) {}
  void drop() {
    if (state_) std::exchange(state_, nullptr)->release();
    status_ = Status::kInvalidState;
  }

  detail::FutureState<T>* state_ = nullptr;
  Status status_ = Status::kInvalidState;
};

// An owning, fixed-size array of futures (what ThreadPool::map returns;
// also usable to collect submits). Storage is allocated once; if that
// fails (or n is absurd) status() is kNoMemory and the list is empty.
// Movable, not copyable.
template <class T>
class FutureList {
 public:
  FutureList() = default;
  explicit FutureList(std::size_t n) {
    if (n == 0) return;
    if (n > SIZE_MAX / sizeof(Future<T>)) {
      status_ = Status::kNoMemory;
      return;
    }
    items_ = static_cast<Future<T>*>(::operator new(n * sizeof(Future<T>), std::nothrow));
    if (!items_) {
      status_ = Status::kNoMemory;
      return;
    }
    for (std::size_t i = 0; i < n; ++i) new (&items_[i]) Future<T>();
    size_ = n;
  }
  FutureList(FutureList&& o) noexcept
      : items_(std::exchange(o.items_, nullptr)), size_(std::exchange(o.size_, 0)), status_(o.status_) {}
  FutureList& operator=(FutureList&& o) noexcept {
    if (this != &o) {
      clear();
      items_ = std::exchange(o.items_, nullptr);
      size_ = std::exchange(o.size_, 0);
      status_ = o.status_;
    }
    return *this;
  }
  FutureList(const FutureList&) = delete;
  FutureList& operator=(const FutureList&) = delete;
  ~FutureList() { clear(); }

  // kOk, or kNoMemory if the storage could not be allocated.
  Status status() const { return status_; }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  Future<T>& operator[](std::size_t i) { return items_[i]; }
  const Future<T>& operator[](std::size_t i) const { return items_[i]; }
  Future<T>* begin() { return items_; }
  Future<T>* end() { return items_ + size_; }
  const Future<T>* begin() const { return items_; }
  const Future<T>* end() const { return items_ + size_; }

  // Waits until every valid future in the list is ready. kOk, kTimedOut,
  // or kInvalidState from an interrupt handler.
  Status wait() const { return wait_until(kForever); }
  Status wait_for(Duration d) const { return wait_until(deadline_after(d)); }
  Status wait_until(TimePoint deadline) const {
    for (const Future<T>& f : *this) {
      if (!f.valid()) continue;
      if (Status s = f.wait_until(deadline); s != Status::kOk) return s;
    }
    return Status::kOk;
  }

 private:
  void clear() {
    for (std::size_t i = 0; i < size_; ++i) items_[i].~Future<T>();
    if (items_) ::operator delete(items_);
    items_ = nullptr;
    size_ = 0;
  }

  Future<T>* items_ = nullptr;
  std::size_t size_ = 0;
  Status status_ = Status::kOk;
};

namespace detail {

// The type-independent part of AsCompleted: registration, the completion
// order and the blocking wait for the next one (thread_pool.cc).
//
// Order: the states' completion tickets. A state that completes while
// registered takes its ticket inside notify under order_lock_, so those
// arrive in ticket order; states that had completed before registration
// (and invalid futures, ticket 0) are merged in by ticket when
// registration ends, before anything is yielded. Any completion after that
// merge takes a ticket larger than every merged one, so the yielded order
// is exactly the ticket order.
class AsCompletedBase : private CompletionListener {
 public:
  AsCompletedBase(const AsCompletedBase&) = delete;
  AsCompletedBase& operator=(const AsCompletedBase&) = delete;

  // kOk; kNoMemory (no room to track them: nothing is yielded);
  // kInvalidState (one of the futures is watched by another
  // as_completed at the same time: nothing is yielded).
  Status status() const { return status_; }
  std::size_t size() const { return n_; }
  // How many have not been yielded yet.
  std::size_t remaining() const { return n_ - yielded_; }

  // Blocks until the next future completes and returns its index (that
  // future is ready). kClosed
  // once every future was yielded; kTimedOut; status() if that is not kOk;
  // kInvalidState from an interrupt handler. One consumer at a time.
  Result<std::size_t> next() { return next_until(kForever); }
  Result<std::size_t> next_for(Duration d) { return next_until(deadline_after(d)); }
  Result<std::size_t> next_until(TimePoint deadline);

 protected:
  // states[i] is future i's state or nullptr (invalid future: yielded first).
  template <class S>
  AsCompletedBase(std::size_t n, S state_of) : CompletionListener{&on_complete} {
    if (!allocate(n)) return;
    for (std::size_t i = 0; i < n && status_ == Status::kOk; ++i) watch(i, state_of(i));
    finish_registration();
  }
  ~AsCompletedBase();

 private:
  struct Entry {
    FutureStateBase* state;  // a reference we hold, or nullptr
    std::uint64_t ticket;    // completion ticket of future i (by index)
    std::size_t order;       // the index completed k-th (by position k)
    bool early;              // complete (or invalid) when registered
  };

  bool allocate(std::size_t n);
  void watch(std::size_t i, FutureStateBase* s);
  void finish_registration();
  static std::uint64_t on_complete(CompletionListener* self, std::size_t tag);

  Entry* entries_ = nullptr;
  std::size_t n_ = 0;
  std::size_t yielded_ = 0;  // the consumer's
  Status status_ = Status::kOk;
  WordLock order_lock_;  // appends to the order (completers, the merge)
  std::atomic<std::uint32_t> delivered_{0};  // entries[0..delivered_).order are final
  std::atomic<std::uint32_t> waiters_{0};
};

}  // namespace detail

// Yields futures in the order their jobs completed: the order of their
// completion tickets, a total order taken just before each future becomes
// ready, so a job whose future anyone saw ready before another job ended
// is yielded before that one. Futures that had completed before, and
// invalid ones (first), are yielded in that order too. Each future is
// yielded once, and is ready when yielded. Iterating blocks until the next
// one completes:
//
//   for (Future<int>& f : as_completed(list)) print("%d\n", *f.get());
//
// It watches the futures' shared states (holding references), not the
// Future objects: the array must outlive it, and a future moved out of it
// meanwhile is yielded as the (now invalid) slot. One as_completed per
// future at a time. Neither copyable nor movable (the states point at it);
// as_completed() returns it as a prvalue, so `auto ac = as_completed(l);`
// and range-for over the call both work.
template <class T>
class AsCompleted : public detail::AsCompletedBase {
 public:
  AsCompleted(Future<T>* futures, std::size_t n)
      : AsCompletedBase(n, [futures](std::size_t i) -> detail::FutureStateBase* { return futures[i].state(); }),
        futures_(futures) {}
  explicit AsCompleted(FutureList<T>& list) : AsCompleted(list.begin(), list.size()) {}
  template <std::size_t N>
  explicit AsCompleted(Future<T> (&futures)[N]) : AsCompleted(futures, N) {}

  // The position of f in the watched array.
  std::size_t index_of(const Future<T>& f) const { return static_cast<std::size_t>(&f - futures_); }

  class iterator {
   public:
    Future<T>& operator*() const { return owner_->futures_[index_]; }
    Future<T>* operator->() const { return &owner_->futures_[index_]; }
    iterator& operator++() {
      advance();
      return *this;
    }
    bool operator==(const iterator& o) const { return index_ == o.index_; }
    std::size_t index() const { return index_; }

   private:
    friend class AsCompleted;
    static constexpr std::size_t kEnd = SIZE_MAX;
    explicit iterator(AsCompleted* owner) : owner_(owner) {}
    void advance() {
      Result<std::size_t> r = owner_->next();
      index_ = r.ok() ? *r : kEnd;
    }
    AsCompleted* owner_;
    std::size_t index_ = kEnd;
  };

  // Blocks for the first completion. Call once: iteration consumes.
  iterator begin() {
    iterator it(this);
    it.advance();
    return it;
  }
  iterator end() { return iterator(this); }

 private:
  Future<T>* futures_;
};

template <class T>
AsCompleted<T> as_completed(FutureList<T>& list) {
  return AsCompleted<T>(list);
}
template <class T, std::size_t N>
AsCompleted<T> as_completed(Future<T> (&futures)[N]) {
  return AsCompleted<T>(futures);
}
template <class T>
AsCompleted<T> as_completed(Future<T>* futures, std::size_t n) {
  return AsCompleted<T>(futures, n);
}

}  // namespace spindle
