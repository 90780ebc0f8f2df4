// Queue<T>: a bounded, blocking, multi-producer multi-consumer FIFO, like
// Python's queue.Queue. put waits while the queue is full, get while it is
// empty; task_done/join let a producer wait until every item it queued has
// been processed; close() ends the queue: later puts fail with kClosed,
// gets drain what is left and then fail with kClosed, and every blocked put
// and get is released (join() still waits for task_done of the items that
// were taken).
//
// Waiters, threads and coroutines alike, are served most urgent first (or
// in arrival order with WaitOrder::kFifo). `Lock` is the internal lock
// (Mutex; FairMutex to serve contending callers in arrival order too). Storage for `capacity` items is allocated once at
// construction; if that fails, every call returns kNoMemory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <utility>

#include "spindle/cond_var.h"
#include "spindle/mutex.h"
#include "spindle/status.h"
#include "spindle/time.h"

namespace spindle {

template <class T, class Lock = Mutex>
class Queue {
 public:
  explicit Queue(std::size_t capacity, const char* name = "queue", WaitOrder order = WaitOrder::kPriority)
      : capacity_(capacity),
        slots_(allocate(capacity)),
        lock_(name),
        not_empty_(name, order),
        not_full_(name, order),
        all_done_(name, WaitOrder::kFifo),
        name_(name) {}
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;
  // Destroys the items left. Nobody may use the queue any more, so no
  // lock is taken (a Queue with static storage is destroyed after the
  // kernel has stopped).
  ~Queue() {
    while (count_ > 0) pop_locked();
    if (slots_) ::operator delete[](slots_, std::align_val_t(alignof(Slot)), std::nothrow);
  }

  // Puts v at the tail. kOk, kTimedOut, kWouldBlock (try_put on a full
  // queue), kClosed, kNoMemory (the queue has no storage), kInvalidArgument
  // (capacity 0).
  Status put(T v) { return put_until(std::move(v), kForever); }
  Status try_put(T v) { return put_impl(v, kForever, true); }
  Status put_for(T v, Duration d) { return put_until(std::move(v), deadline_after(d)); }
  Status put_until(T v, TimePoint deadline) { return put_impl(v, deadline, false); }

  // Takes the head. Fails with kTimedOut, kWouldBlock (try_get on an empty
  // queue), kClosed (closed and drained), kNoMemory / kInvalidArgument.
  Result<T> get() { return get_until(kForever); }
  Result<T> try_get() { return get_impl(kForever, true); }
  Result<T> get_for(Duration d) { return get_until(deadline_after(d)); }
  Result<T> get_until(TimePoint deadline) { return get_impl(deadline, false); }

  // From a coroutine: co_await q.get_async() / q.put_async(v) suspend the
  // coroutine, not its executor, queued with the threads that wait on the
  // same queue in its order. Same results as get_until / put_until; the
  // internal lock is taken by blocking (it guards a few instructions).
  Task<Result<T>> get_async(TimePoint deadline = kForever) {
    if (Status s = usable(); s != Status::kOk) co_return s;
    lock_.lock();
    while (count_ == 0 && !closed_) {
      if (co_await not_empty_.wait_async(lock_, deadline) == Status::kTimedOut && count_ == 0 && !closed_) {
        lock_.unlock();
        co_return Status::kTimedOut;
      }
    }
    if (count_ == 0) {
      lock_.unlock();
      co_return Status::kClosed;
    }
    T v = pop_locked();
    not_full_.notify_one();
    lock_.unlock();
    co_return Result<T>(std::move(v));
  }
  Task<Result<T>> get_async_for(Duration d) { return get_async(deadline_after(d)); }
  Task<Status> put_async(T v, TimePoint deadline = kForever) {
    if (Status s = usable(); s != Status::kOk) co_return s;
    lock_.lock();
    while (count_ == capacity_ && !closed_) {
      if (co_await not_full_.wait_async(lock_, deadline) == Status::kTimedOut && count_ == capacity_ && !closed_) {
        lock_.unlock();
        co_return Status::kTimedOut;
      }
    }
    Status s = closed_ ? Status::kClosed : push_locked(v);
    lock_.unlock();
    co_return s;
  }
  Task<Status> put_async_for(T v, Duration d) { return put_async(std::move(v), deadline_after(d)); }

  // One item taken by get() has been fully processed. kInvalidState if
  // called more often than items were put.
  Status task_done() {
    Guard hold(lock_);
    if (unfinished_ == 0) return Status::kInvalidState;
    if (--unfinished_ == 0) all_done_.notify_all();
    return Status::kOk;
  }
  // Waits until every item put so far has been marked task_done.
  void join() { (void)join_until(kForever); }
  Status join_for(Duration d) { return join_until(deadline_after(d)); }
  Status join_until(TimePoint deadline) {
    Guard hold(lock_);
    return all_done_.wait_until(lock_, deadline, [this] { return unfinished_ == 0; }) ? Status::kOk
                                                                                       : Status::kTimedOut;
  }

  // Ends the queue (see above). Idempotent.
  void close() {
    Guard hold(lock_);
    closed_ = true;
    not_empty_.notify_all();
    not_full_.notify_all();
  }

  std::size_t size() const {
    Guard hold(lock_);
    return count_;
  }
  std::size_t capacity() const { return capacity_; }
  bool closed() const {
    Guard hold(lock_);
    return closed_;
  }
  const char* name() const { return name_; }

 private:
  struct alignas(T) Slot {
    unsigned char bytes[sizeof(T)];
  };

  static Slot* allocate(std::size_t capacity) {
    if (capacity == 0 || capacity > SIZE_MAX / sizeof(Slot)) return nullptr;
    return static_cast<Slot*>(
        ::operator new[](capacity * sizeof(Slot), std::align_val_t(alignof(Slot)), std::nothrow));
  }
  Status usable() const {
    if (capacity_ == 0) return Status::kInvalidArgument;
    return slots_ ? Status::kOk : Status::kNoMemory;
  }
  T* at(std::size_t i) { return std::launder(reinterpret_cast<T*>(slots_[i].bytes)); }
  T pop_locked() {
    T* p = at(head_);
    T v = std::move(*p);
    p->~T();
    head_ = head_ + 1 == capacity_ ? 0 : head_ + 1;
    --count_;
    return v;
  }

  Status put_impl(T& v, TimePoint deadline, bool trying) {
    if (Status s = usable(); s != Status::kOk) return s;
    Guard hold(lock_);
    while (count_ == capacity_ && !closed_) {
      if (trying) return Status::kWouldBlock;
      if (not_full_.wait_until(lock_, deadline) == Status::kTimedOut && count_ == capacity_ && !closed_) {
        return Status::kTimedOut;
      }
    }
    if (closed_) return Status::kClosed;
    return push_locked(v);
  }

  Status push_locked(T& v) {
    std::size_t tail = head_ + count_;
    if (tail >= capacity_) tail -= capacity_;
    new (slots_[tail].bytes) T(std::move(v));
    ++count_;
    ++unfinished_;
    not_empty_.notify_one();
    return Status::kOk;
  }

  Result<T> get_impl(TimePoint deadline, bool trying) {
    if (Status s = usable(); s != Status::kOk) return s;
    Guard hold(lock_);
    while (count_ == 0 && !closed_) {
      if (trying) return Status::kWouldBlock;
      if (not_empty_.wait_until(lock_, deadline) == Status::kTimedOut && count_ == 0 && !closed_) {
        return Status::kTimedOut;
      }
    }
    if (count_ == 0) return Status::kClosed;
    T v = pop_locked();
    not_full_.notify_one();
    return Result<T>(std::move(v));
  }

  const std::size_t capacity_;
  Slot* const slots_;
  mutable Lock lock_;
  CondVar not_empty_;
  CondVar not_full_;
  CondVar all_done_;
  std::size_t head_ = 0;
  std::size_t count_ = 0;
  std::size_t unfinished_ = 0;
  bool closed_ = false;
  const char* name_;
};

}  // namespace spindle
