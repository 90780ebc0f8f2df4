// Combinators over coroutines, like asyncio's:
//
//   co_await gather(a(), b(), c())      every task, concurrently, as its own
//                                       job; a tuple of their results
//   co_await gather(range) / gather_n(n, make)
//                                       the same over many tasks: Results<T>
//   co_await when_any(a(), b())         the first to end wins; the others are
//                                       cancelled (and waited for)
//   co_await with_timeout(task, d)      the task's result, or kTimedOut (the
//                                       task is cancelled)
//
// Each result is spindle::ResultOf<T>: Result<T> (Status for void) carrying the
// task's value, or kInterrupted / kNoMemory when the child was cancelled or
// could not be allocated. A combinator that is itself cancelled cancels its
// children (they unwind at their next suspension point).
#pragma once

#include <cstddef>
#include <iterator>
#include <tuple>
#include <type_traits>
#include <utility>

#include "spindle/task.h"

namespace spindle {

// The results of a gather over a range, in the order of the tasks.
template <class T>
class Results {
 public:
  using value_type = spindle::ResultOf<T>;

  explicit Results(Status failed) : status_(failed) {}
  explicit Results(std::size_t n) : data_(allocate(n)), size_(data_ ? n : 0), status_(data_ ? Status::kOk : Status::kNoMemory) {}
  Results(Results&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)), filled_(std::exchange(o.filled_, 0)),
        status_(o.status_) {}
  Results& operator=(Results&&) = delete;
  Results(const Results&) = delete;
  ~Results() {
    for (std::size_t i = 0; i < filled_; ++i) data_[i].~value_type();
    if (data_) detail::frame_free(data_, size_ * sizeof(value_type));
  }

  // kOk, or kNoMemory when the gather could not allocate its bookkeeping
  // (then nothing ran and size() is 0).
  Status status() const { return status_; }
  std::size_t size() const { return filled_; }
  value_type& operator[](std::size_t i) { return data_[i]; }
  value_type* begin() { return data_; }
  value_type* end() { return data_ + filled_; }
  // Whether every task finished with kOk.
  bool all_ok() const {
    if (status_ != Status::kOk) return false;
    for (std::size_t i = 0; i < filled_; ++i) {
      if constexpr (std::is_same_v<value_type, Status>) {
        if (data_[i] != Status::kOk) return false;
      } else {
        if (!data_[i].ok()) return false;
      }
    }
    return true;
  }

  void push(value_type&& v) { new (&data_[filled_++]) value_type(std::move(v)); }

 private:
  static value_type* allocate(std::size_t n) {
    if (n == 0) return nullptr;
    return static_cast<value_type*>(detail::frame_alloc(n * sizeof(value_type)));
  }
  value_type* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t filled_ = 0;
  Status status_ = Status::kOk;
};

template <class T>
struct WhenAny {
  std::size_t index;     // the task that ended first
  spindle::ResultOf<T> result;    // its result
};

namespace detail {

// Children of the running job: run anywhere, cancelled when their handle
// goes (the parent unwound); with `signal`, they bump the parent's signal
// word when they end (for combinators that wait for any of several).
template <class T>
JoinHandle<T> spawn_child(Task<T> t, bool signal = false) {
  return spawn_job(std::move(t), SpawnOptions{}, true, signal);
}

template <class... T, std::size_t... I>
Task<std::tuple<spindle::ResultOf<T>...>> gather_pack(std::index_sequence<I...>, Task<T>... tasks) {
  std::tuple<JoinHandle<T>...> handles{spawn_child(std::move(tasks))...};
  co_return std::tuple<spindle::ResultOf<T>...>{co_await std::get<I>(handles)...};
}

// An owning array of join handles from the frame pool.
template <class T>
class HandleArray {
 public:
  explicit HandleArray(std::size_t n)
      : data_(n ? static_cast<JoinHandle<T>*>(frame_alloc(n * sizeof(JoinHandle<T>))) : nullptr), cap_(n) {}
  HandleArray(const HandleArray&) = delete;
  ~HandleArray() {
    for (std::size_t i = 0; i < size_; ++i) data_[i].~JoinHandle<T>();
    if (data_) frame_free(data_, cap_ * sizeof(JoinHandle<T>));
  }
  bool ok() const { return data_ || cap_ == 0; }
  void push(JoinHandle<T>&& h) { new (&data_[size_++]) JoinHandle<T>(std::move(h)); }
  JoinHandle<T>& operator[](std::size_t i) { return data_[i]; }
  std::size_t size() const { return size_; }

 private:
  JoinHandle<T>* data_;
  std::size_t cap_;
  std::size_t size_ = 0;
};

// The results are collected once every child has ended (each keeps its
// value in its own frame until then), so while they run the gather holds
// only one handle per child.
template <class T, class Make>
Task<Results<T>> gather_made(std::size_t n, Make make) {
  HandleArray<T> handles(n);
  if (!handles.ok()) co_return Results<T>(Status::kNoMemory);
  for (std::size_t i = 0; i < n; ++i) handles.push(spawn_child(make(i)));
  for (std::size_t i = 0; i < n; ++i) co_await handles[i].wait_async();
  Results<T> results(n);
  if (results.status() != Status::kOk) co_return Results<T>(Status::kNoMemory);
  for (std::size_t i = 0; i < n; ++i) results.push(handles[i].result());
  co_return std::move(results);
}

template <class T>
struct TaskValue;
template <class T>
struct TaskValue<Task<T>> {
  using type = T;
};

}  // namespace detail

// Runs every task concurrently (each as its own job) and returns their
// results in argument order once all have ended.
template <class... T>
Task<std::tuple<spindle::ResultOf<T>...>> gather(Task<T>... tasks) {
  return detail::gather_pack(std::index_sequence_for<T...>{}, std::move(tasks)...);
}
template <class... T>
Task<std::tuple<spindle::ResultOf<T>...>> when_all(Task<T>... tasks) {
  return gather(std::move(tasks)...);
}

// The same over n tasks made by make(i) (each made just before it is
// spawned, so no array of tasks is needed).
template <class Make>
auto gather_n(std::size_t n, Make make) {
  using T = typename detail::TaskValue<std::invoke_result_t<Make&, std::size_t>>::type;
  return detail::gather_made<T>(n, std::move(make));
}

// The same over a range of tasks (moved from).
template <class Range>
auto gather(Range& tasks) {
  using TaskT = std::remove_reference_t<decltype(*std::begin(tasks))>;
  static_assert(std::is_same_v<TaskT, Task<typename detail::TaskValue<TaskT>::type>>, "gather(range): a range of Task<T>");
  auto first = std::begin(tasks);
  auto n = static_cast<std::size_t>(std::distance(first, std::end(tasks)));
  return gather_n(n, [first](std::size_t i) { return std::move(*std::next(first, static_cast<std::ptrdiff_t>(i))); });
}

// Runs the tasks concurrently; the first to end wins, the others are
// cancelled and waited for (so nothing they reference is used after this
// returns).
template <class T, class... Rest>
  requires(std::is_same_v<Task<T>, Rest> && ...)
Task<WhenAny<T>> when_any(Task<T> first, Rest... rest) {
  constexpr std::size_t n = 1 + sizeof...(Rest);
  JoinHandle<T> handles[n] = {detail::spawn_child(std::move(first), true),
                              detail::spawn_child(std::move(rest), true)...};
  std::atomic<std::uint32_t>* signal = detail::job_signal_word();
  std::size_t winner = n;
  for (;;) {
    std::uint32_t seen = signal->load(std::memory_order_acquire);
    for (std::size_t i = 0; i < n && winner == n; ++i) {
      if (handles[i].done()) winner = i;
    }
    if (winner != n) break;
    (void)co_await detail::WordWait(signal, seen, kForever, WaitOrder::kFifo, "when_any");
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (i != winner) handles[i].cancel();
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (i != winner) (void)co_await handles[i];
  }
  co_return WhenAny<T>{winner, co_await handles[winner]};
}

// The task's result if it ends within d; else it is cancelled (and waited
// for) and the result is kTimedOut.
template <class T>
Task<spindle::ResultOf<T>> with_timeout(Task<T> task, Duration d) {
  TimePoint deadline = deadline_after(d);
  JoinHandle<T> h = detail::spawn_child(std::move(task), true);
  std::atomic<std::uint32_t>* signal = detail::job_signal_word();
  for (;;) {
    std::uint32_t seen = signal->load(std::memory_order_acquire);
    if (h.done()) co_return co_await h;
    Status s = co_await detail::WordWait(signal, seen, deadline, WaitOrder::kFifo, "with_timeout");
    if (s == Status::kTimedOut && !h.done()) {
      h.cancel();
      (void)co_await h;
      co_return Status::kTimedOut;
    }
  }
}

}  // namespace spindle
