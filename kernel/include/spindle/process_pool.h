// ProcessPool: CPU-bound jobs in isolated worker processes, like Python's
// ProcessPoolExecutor, with ThreadPool's futures:
//
//   std::uint64_t sum_squares(std::uint64_t below) { ... }
//   spindle::ProcessPool pool(4);
//   spindle::Future<std::uint64_t> f = pool.submit(sum_squares, 1000000);
//   spindle::FutureList<std::uint64_t> all = pool.map(sum_squares, limits);
//
// A job is a plain function (the same code exists in every process of the
// app) with trivially copyable, non-pointer parameters and result (or byte
// spans as parameters): its arguments are copied to a worker over a
// channel, its result copied back. A worker that crashes (a fault, its
// memory limit, a kill) fails the job it was running with kFaulted on that
// job's future, and is replaced by a fresh process; stats() counts it and
// keeps the last crash's ExitStatus. Other jobs are not disturbed.
//
// Each worker has one driver thread in the calling process (a ThreadPool of
// the same size) that sends it a job and waits for the reply, so the
// queueing, back-pressure, shutdown and as_completed semantics are
// ThreadPool's (spindle/thread_pool.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

#include "spindle/channel.h"
#include "spindle/mutex.h"
#include "spindle/process.h"
#include "spindle/queue.h"
#include "spindle/thread_pool.h"

namespace spindle {

struct ProcessPoolStats {
  std::uint64_t jobs = 0;      // jobs a worker completed
  std::uint64_t crashes = 0;   // workers that died running a job (each replaced)
  std::uint64_t replaced = 0;  // replacement workers started
  ExitStatus last_crash;       // how the last crashed worker ended
};

namespace detail {
// Code addresses cross processes as offsets within the app image.
std::intptr_t code_offset(std::uintptr_t address);
std::uintptr_t code_address(std::intptr_t offset);

// Runs fn on the unpacked arguments in a worker and writes the result to
// out (room for kMaxMessageBytes); returns the result's size.
using PoolInvoke = std::size_t (*)(std::uintptr_t fn, const std::byte* args, std::size_t len, std::byte* out);

template <typename R, typename... P>
std::size_t pool_invoke(std::uintptr_t fn, [[maybe_unused]] const std::byte* args, std::size_t, std::byte* out) {
  auto f = reinterpret_cast<R (*)(P...)>(fn);
  [[maybe_unused]] std::size_t at = 0;
  std::tuple<std::remove_cvref_t<P>...> values{arg_read<std::remove_cvref_t<P>>(args, at)...};
  R r = std::apply(f, std::move(values));
  std::memcpy(out, &r, sizeof r);
  return sizeof r;
}

// The first bytes of a job message; the packed arguments follow.
struct PoolRequest {
  std::int64_t invoke;  // code_offset of a PoolInvoke
  std::int64_t fn;      // code_offset of the job's function
};

// An owned copy of a job message; no bytes when it could not be built
// (too_large: the arguments do not fit in one message; else no memory).
struct PoolMessage {
  std::unique_ptr<std::byte[]> bytes;
  std::size_t size = 0;
  bool too_large = false;
};

// A worker process's entry: runs jobs from the channel it was given until
// that channel closes.
int pool_worker();
}  // namespace detail

class ProcessPool {
 public:
  // Starts `workers` worker processes (each with worker_opts; its handles
  // are ignored) and as many driver threads. Construction never fails
  // loudly: status() says why a pool could not be built (kInvalidArgument
  // for 0 workers, or what Process::spawn or ThreadPool said), and every
  // submit then returns that status.
  explicit ProcessPool(unsigned workers, const ProcessOptions& worker_opts = ProcessOptions());
  ProcessPool(const ProcessPool&) = delete;
  ProcessPool& operator=(const ProcessPool&) = delete;
  ~ProcessPool() { (void)shutdown(true); }

  Status status() const { return status_; }

  // Queues fn(args...) to run in a worker process; see ThreadPool::submit
  // for queueing. The future's get() gives the result, or kFaulted if the
  // worker crashed on this job, kInvalidArgument if the arguments do not
  // fit in one message (kMaxMessageBytes).
  template <typename R, typename... P, typename... A>
  Future<R> submit(R (*fn)(P...), A&&... args) {
    check_job<R, P...>();
    static_assert(sizeof...(P) == sizeof...(A), "ProcessPool::submit: give one argument per parameter of fn");
    detail::PoolMessage m = pack<R, P...>(fn, std::remove_cvref_t<P>(std::forward<A>(args))...);
    return drivers_.submit([this, m = std::move(m)]() -> Result<R> { return run<R>(m); });
  }

  // fn(x) for every x of range, in range order (ThreadPool::map).
  template <typename R, typename P, typename Range>
  FutureList<R> map(R (*fn)(P), Range&& range) {
    check_job<R, P>();
    return drivers_.map(
        [this, fn](const std::remove_cvref_t<P>& x) -> Result<R> {
          detail::PoolMessage m = pack<R, P>(fn, x);
          return run<R>(m);
        },
        std::forward<Range>(range));
  }

  // ThreadPool::shutdown, then the workers are told to stop (their channel
  // closes) and joined.
  Status shutdown(bool wait = true);

  unsigned size() const { return nworkers_; }
  ProcessPoolStats stats() const;

 private:
  struct Worker {
    Process proc;
    Channel ch;
  };

  template <typename R, typename... P>
  static constexpr void check_job() {
    static_assert(std::is_trivially_copyable_v<R> && !std::is_pointer_v<R> && !std::is_void_v<R>,
                  "ProcessPool: a job's result must be a trivially copyable non-pointer value (it is copied back)");
    static_assert((detail::kProcessArg<std::remove_cvref_t<P>> && ...),
                  "ProcessPool: a job's parameters must be trivially copyable non-pointer values or "
                  "std::span<const std::byte> (they are copied into the worker)");
    static_assert(sizeof(R) <= kMaxMessageBytes - sizeof(std::int32_t), "ProcessPool: the result is too large");
  }

  template <typename R, typename... P>
  static detail::PoolMessage pack(R (*fn)(P...), const std::remove_cvref_t<P>&... args) {
    std::size_t size = sizeof(detail::PoolRequest);
    ((size = detail::arg_size(size, args)), ...);
    detail::PoolMessage m;
    if (size > kMaxMessageBytes) {
      m.too_large = true;
      return m;
    }
    m.bytes.reset(new (std::nothrow) std::byte[size]);
    if (!m.bytes) return m;
    detail::PoolRequest req{detail::code_offset(reinterpret_cast<std::uintptr_t>(&detail::pool_invoke<R, P...>)),
                            detail::code_offset(reinterpret_cast<std::uintptr_t>(fn))};
    std::memcpy(m.bytes.get(), &req, sizeof req);
    std::size_t at = sizeof req;
    ((at = detail::arg_write(m.bytes.get(), at, args)), ...);
    m.size = size;
    return m;
  }

  template <typename R>
  Result<R> run(const detail::PoolMessage& m) {
    alignas(R) std::byte out[sizeof(R)];
    Status s = execute(m, out, sizeof(R));
    if (s != Status::kOk) return s;
    R r;
    std::memcpy(&r, out, sizeof(R));
    return r;
  }

  // Runs one job on an idle worker (a driver thread's work): the reply's
  // bytes (exactly `size` of them) into out.
  Status execute(const detail::PoolMessage& m, std::byte* out, std::size_t size);
  // The crashed worker w is joined, counted and replaced.
  void replace(Worker* w);
  Status start_worker(Worker* w);

  unsigned nworkers_ = 0;
  ProcessOptions opts_;
  std::unique_ptr<Worker[]> workers_;
  Queue<Worker*> idle_;
  mutable Mutex lock_{"process pool"};
  ProcessPoolStats stats_ SPINDLE_GUARDED_BY(lock_);
  Status status_ = Status::kOk;
  ThreadPool drivers_;  // last: its workers use everything above
};

}  // namespace spindle
