// ThreadPool: a fixed set of worker threads running submitted jobs, like
// Python's concurrent.futures.ThreadPoolExecutor:
//
//   ThreadPool pool(3, {.name = "crunch"});
//   Future<int> f = pool.submit(square, 7);      // f.get() -> Result<int> 49
//   FutureList<int> all = pool.map(square, inputs);
//   for (Future<int>& r : as_completed(all)) use(*r.get());
//   pool.shutdown();                             // or let the destructor do it
//
// Jobs wait in one bounded FIFO queue (back-pressure): submit blocks while
// it is full, try_submit fails at once with kWouldBlock, submit_for /
// submit_until give up with kTimedOut. The callable and its arguments are
// moved (or copied) into the job only once it has a place in the queue: a
// submit that fails leaves them untouched. A job is one heap allocation
// (its future's shared state, spindle/future.h); failing to get it is
// kNoMemory, never a crash.
//
// Shutdown: shutdown(true) (and the destructor) stop new submits (kClosed),
// run every queued job and join the workers; shutdown(false) also drops the
// jobs that have not started (their futures complete with kInterrupted) and
// joins once the running ones have finished. Submitters blocked on a full
// queue are released with kClosed. Idempotent, and safe to call from
// several threads at once.
//
// Misuse: shutdown() from one of the pool's own workers would wait for
// itself: it prints a report naming the pool and the worker and returns
// kDeadlock, changing nothing; destroying the pool from one of its workers
// panics with the same report. Not detected: a job that waits for a future
// of its own pool, or submits to it while the queue is full, when every
// worker does the same (all wait for a worker).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "spindle/cond_var.h"
#include "spindle/cpu_mask.h"
#include "spindle/future.h"
#include "spindle/mutex.h"
#include "spindle/status.h"
#include "spindle/thread.h"
#include "spindle/thread_annotations.h"
#include "spindle/time.h"

namespace spindle {

namespace detail {
// The element type of a range (a container with begin(), or an array),
// without <iterator>.
template <class R>
auto begin_of(R& r) -> decltype(r.begin()) {
  return r.begin();
}
template <class E, std::size_t N>
E* begin_of(E (&a)[N]) {
  return a;
}
template <class R>
using range_element_t = decltype(*begin_of(std::declval<std::remove_reference_t<R>&>()));
}  // namespace detail

struct ThreadPoolOptions {
  // The pool's name in reports and waits; must outlive the pool. Workers
  // are named "<name>-0", "<name>-1", ... (truncated to 31 characters).
  const char* name = "pool";
  std::size_t queue_capacity = 64;             // jobs waiting to start; >= 1
  int priority = kDefaultPriority;             // of every worker
  std::size_t stack_size = kDefaultStackSize;  // of every worker
  CpuMask affinity = CpuMask::all();           // of every worker
};

class ThreadPool {
 public:
  // Starts `threads` workers. Never fails loudly: a pool that could not be
  // built reports why in status() (kInvalidArgument: 0 threads, capacity 0,
  // or a worker option out of range; kNoMemory: no memory for the workers
  // or their stacks), runs nothing, and every submit returns that status.
  // Blocks only if it has to stop workers it already started.
  explicit ThreadPool(unsigned threads, const ThreadPoolOptions& options = ThreadPoolOptions());
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  // shutdown(true). Panics (naming the pool) when called from a worker.
  ~ThreadPool();

  Status status() const { return status_; }

  // Queues f(args...) to run on a worker and returns its future
  // (spindle/future.h: a job returning Result<U> gives Future<U>, one
  // returning Status gives Future<void>). f and args are decay-copied (or
  // moved) into the job, as std::async does. Blocks while the queue is
  // full. The future is invalid, with status() saying why, on kClosed
  // (after shutdown), kNoMemory, or status() of a pool that was not built.
  template <class F, class... A>
  Future<detail::job_value_t<F, A...>> submit(F&& f, A&&... args) {
    return submit_impl(kForever, false, std::forward<F>(f), std::forward<A>(args)...);
  }
  // As submit, but never blocks: kWouldBlock when the queue is full.
  template <class F, class... A>
  Future<detail::job_value_t<F, A...>> try_submit(F&& f, A&&... args) {
    return submit_impl(kForever, true, std::forward<F>(f), std::forward<A>(args)...);
  }
  // As submit, but gives up with kTimedOut if the queue stays full.
  template <class F, class... A>
  Future<detail::job_value_t<F, A...>> submit_for(Duration d, F&& f, A&&... args) {
    return submit_impl(deadline_after(d), false, std::forward<F>(f), std::forward<A>(args)...);
  }
  template <class F, class... A>
  Future<detail::job_value_t<F, A...>> submit_until(TimePoint deadline, F&& f, A&&... args) {
    return submit_impl(deadline, false, std::forward<F>(f), std::forward<A>(args)...);
  }

  // Submits f(x) for every element x of range (a copy of f and of x per
  // job) and returns the futures in range order, without waiting for the
  // jobs: wait on the list, get() each, or iterate as_completed(list).
  // Submits block on a full queue like submit (so map from a worker of
  // this pool with more elements than the queue holds can deadlock). The
  // range is walked twice (to size the list first). If the list cannot be
  // allocated, its status() is kNoMemory and nothing was submitted; a
  // submit that fails leaves its future invalid with the reason.
  template <class F, class Range>
  auto map(F&& f, Range&& range) -> FutureList<detail::job_value_t<F&, detail::range_element_t<Range>>>;

  // Stops the pool (see the top). kOk once every worker has ended
  // (immediately if it already had); kDeadlock (with a report, nothing
  // changed) from one of its workers. Blocks until the running jobs end.
  Status shutdown(bool wait = true);

  const char* name() const { return name_; }
  // Workers started (0 if construction failed).
  unsigned size() const { return threads_; }
  std::size_t capacity() const { return capacity_; }
  // Snapshots: jobs queued, jobs running now.
  std::size_t queued() const;
  unsigned running() const { return running_.load(std::memory_order_relaxed); }
  // No more submits are accepted (shut down, or never built).
  bool closed() const;

 private:
  struct Worker {
    Thread thread;
    ThreadId id = 0;
  };

  template <class F, class... A>
  Future<detail::job_value_t<F, A...>> submit_impl(TimePoint deadline, bool trying, F&& f, A&&... args);

  // A place in the queue for a job about to be built: kOk, kWouldBlock,
  // kTimedOut, kClosed.
  Status reserve(TimePoint deadline, bool trying) SPINDLE_EXCLUDES(lock_);
  // Queues the job built for a reservation (or, after shutdown(false),
  // completes it with kInterrupted at once).
  void commit(detail::FutureStateBase* job) SPINDLE_EXCLUDES(lock_);
  // The next job for a worker, or nullptr when the pool is closed and drained.
  detail::FutureStateBase* take() SPINDLE_EXCLUDES(lock_);
  void worker_loop();
  bool called_from_worker() const;
  void report_self_wait(const char* what) const;

  const char* name_;
  const std::size_t capacity_;
  Status status_ = Status::kOk;
  Worker* workers_ = nullptr;
  unsigned threads_ = 0;
  std::atomic<unsigned> running_{0};

  mutable Mutex lock_;
  CondVar not_empty_;  // workers wait for a job (or the end)
  CondVar not_full_;   // submitters wait for room (or the end)
  detail::FutureStateBase* head_ SPINDLE_GUARDED_BY(lock_) = nullptr;  // FIFO through next_
  detail::FutureStateBase* tail_ SPINDLE_GUARDED_BY(lock_) = nullptr;
  std::size_t count_ SPINDLE_GUARDED_BY(lock_) = 0;     // queued
  std::size_t reserved_ SPINDLE_GUARDED_BY(lock_) = 0;  // places held by submits building their job
  bool closed_ SPINDLE_GUARDED_BY(lock_) = false;       // no new reservations
  bool dropping_ SPINDLE_GUARDED_BY(lock_) = false;     // shutdown(false): do not start anything more

  Mutex join_lock_;  // one shutdown joins the workers; the others wait for it
};

template <class F, class... A>
Future<detail::job_value_t<F, A...>> ThreadPool::submit_impl(TimePoint deadline, bool trying, F&& f, A&&... args) {
  using T = detail::job_value_t<F, A...>;
  using J = detail::PoolJob<T, std::decay_t<F>, std::decay_t<A>...>;
  static_assert(std::is_constructible_v<std::decay_t<F>, F>, "the callable must be copyable or movable into the job");
  if (status_ != Status::kOk) return Future<T>(status_);
  void* mem = J::allocate();
  if (!mem) return Future<T>(Status::kNoMemory);
  if (Status s = reserve(deadline, trying); s != Status::kOk) {
    J::deallocate(mem);
    return Future<T>(s);
  }
  J* job = new (mem) J(name_, std::forward<F>(f), std::forward<A>(args)...);
  commit(job);
  return Future<T>(static_cast<detail::FutureState<T>*>(job));
}

template <class F, class Range>
auto ThreadPool::map(F&& f, Range&& range) -> FutureList<detail::job_value_t<F&, detail::range_element_t<Range>>> {
  using T = detail::job_value_t<F&, detail::range_element_t<Range>>;
  std::size_t n = 0;
  for (auto&& x : range) {
    (void)x;
    ++n;
  }
  FutureList<T> out(n);
  if (out.status() != Status::kOk) return out;
  std::size_t i = 0;
  for (auto&& x : range) {
    if (i == n) break;  // the range grew between the walks
    out[i++] = submit(f, x);
  }
  return out;
}

}  // namespace spindle
