// ThreadPool (spindle/thread_pool.h) and the out-of-line parts of futures
// and as_completed (spindle/future.h).
//
// Locking rules:
//  - ThreadPool::lock_ (a Mutex) guards the job queue (head_..tail_,
//    count_), reserved_, closed_ and dropping_. No job code runs under it:
//    a job is built between reserve() and commit(), outside the lock, and
//    run by a worker after take() has released it.
//  - A future state's lock_ (a WordLock) guards its listener, tag and
//    ticket. complete() holds it while it notifies the listener, so
//    notify never runs after unlisten() returned.
//  - AsCompletedBase::order_lock_ is taken inside a state's lock (by
//    notify) or alone (the merge), never the other way round.
#include <arch/arch.h>

#include "spindle/console.h"
#include "spindle/future.h"
#include "spindle/barrier.h"
#include "spindle/panic.h"
#include "spindle/thread_pool.h"

namespace spindle {
namespace detail {

namespace {
constinit std::atomic<std::uint64_t> g_completion_tickets{0};
}  // namespace

// Relaxed is enough: read-modify-writes of one atomic are totally ordered,
// and consistently with happens-before, so a ticket taken after another
// (in the happens-before sense) is larger.
std::uint64_t take_completion_ticket() { return g_completion_tickets.fetch_add(1, std::memory_order_relaxed) + 1; }

// ---------------------------------------------------------------------------
// WordLock

void WordLock::lock_slow() {
  // The holder runs a handful of instructions: spin a little first (only
  // useful if it runs on another CPU), then sleep.
  for (int i = 0; i < 64; ++i) {
    arch::cpu_relax();
    std::uint32_t v = 0;
    if (word_.load(std::memory_order_relaxed) == 0 &&
        word_.compare_exchange_strong(v, 1, std::memory_order_acquire, std::memory_order_relaxed)) {
      return;
    }
  }
  // 2 = held with (possible) sleepers: the unlock then wakes one.
  while (word_.exchange(2, std::memory_order_acquire) != 0) {
    (void)futex_wait(&word_, 2, kForever, WaitOrder::kPriority, "future state lock");
  }
}

void WordLock::unlock_slow() { futex_wake(&word_, 1); }

// ---------------------------------------------------------------------------
// FutureStateBase

Status FutureStateBase::wait_until(TimePoint deadline) {
  std::uint32_t v = word_.load(std::memory_order_acquire);
  while (v != kReady) {
    // Announce a sleeper so the completer knows to wake (a failed CAS
    // reloads v: it completed meanwhile, or another waiter announced).
    if (v == kPending &&
        !word_.compare_exchange_weak(v, kSleepers, std::memory_order_acquire, std::memory_order_acquire)) {
      continue;
    }
    Status s = futex_wait(&word_, kSleepers, deadline, WaitOrder::kPriority, name_);
    v = word_.load(std::memory_order_acquire);
    if (v == kReady) break;
    if (s == Status::kTimedOut || s == Status::kInvalidState) return s;
  }
  return Status::kOk;
}

Task<Status> FutureStateBase::wait_async() {
  std::uint32_t v = word_.load(std::memory_order_acquire);
  while (v != kReady) {
    if (v == kPending &&
        !word_.compare_exchange_weak(v, kSleepers, std::memory_order_acquire, std::memory_order_acquire)) {
      continue;
    }
    (void)co_await WordWait(&word_, kSleepers, kForever, WaitOrder::kPriority, name_);
    v = word_.load(std::memory_order_acquire);
  }
  co_return Status::kOk;
}

// The ticket is taken before the word says kReady: whoever sees this
// state ready and then lets another job finish is sure to see that one
// ordered after it. (So a listener hears of a completion a moment before
// the state is ready; as_completed waits out that moment.)
void FutureStateBase::complete(Status outcome) {
  outcome_ = outcome;
  std::uint32_t was;
  {
    Guard hold(lock_);
    if (CompletionListener* l = listener_) {
      listener_ = nullptr;
      ticket_ = l->notify(l, tag_);
    } else {
      ticket_ = take_completion_ticket();
    }
    was = word_.exchange(kReady, std::memory_order_acq_rel);
  }
  // The completer still holds its reference: the word is alive.
  if (was == kSleepers) futex_wake(&word_, UINT32_MAX);
}

Status FutureStateBase::listen(CompletionListener* l, std::size_t tag, std::uint64_t* ticket) {
  Guard hold(lock_);
  if (word_.load(std::memory_order_relaxed) == kReady) {
    *ticket = ticket_;
    return Status::kWouldBlock;
  }
  if (listener_ != nullptr && listener_ != l) return Status::kInvalidState;
  listener_ = l;
  tag_ = tag;
  return Status::kOk;
}

void FutureStateBase::unlisten(CompletionListener* l) {
  Guard hold(lock_);
  if (listener_ == l) listener_ = nullptr;
}

// ---------------------------------------------------------------------------
// AsCompletedBase

bool AsCompletedBase::allocate(std::size_t n) {
  if (n == 0) return true;
  if (n >= UINT32_MAX || n > SIZE_MAX / sizeof(Entry)) {
    status_ = Status::kNoMemory;
    return false;
  }
  entries_ = static_cast<Entry*>(::operator new(n * sizeof(Entry), std::nothrow));
  if (!entries_) {
    status_ = Status::kNoMemory;
    return false;
  }
  for (std::size_t i = 0; i < n; ++i) new (&entries_[i]) Entry{nullptr, 0, 0, false};
  n_ = n;
  return true;
}

void AsCompletedBase::watch(std::size_t i, FutureStateBase* s) {
  Entry& e = entries_[i];
  if (!s) {
    e.early = true;  // invalid: nothing to wait for, ticket 0 sorts it first
    return;
  }
  s->retain();
  e.state = s;
  std::uint64_t ticket = 0;
  Status r = s->listen(this, i, &ticket);
  if (r == Status::kWouldBlock) {
    e.early = true;
    e.ticket = ticket;
  } else if (r != Status::kOk) {
    status_ = r;
  }
}

void AsCompletedBase::finish_registration() {
  Guard hold(order_lock_);
  std::uint32_t k = delivered_.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < n_; ++i) {
    if (entries_[i].early) entries_[k++].order = i;
  }
  // Insertion sort of the first k positions by ticket (stable: invalid
  // futures, all ticket 0, stay in index order). Usually nearly sorted.
  for (std::uint32_t a = 1; a < k; ++a) {
    std::size_t idx = entries_[a].order;
    std::uint64_t t = entries_[idx].ticket;
    std::uint32_t b = a;
    for (; b > 0 && entries_[entries_[b - 1].order].ticket > t; --b) entries_[b].order = entries_[b - 1].order;
    entries_[b].order = idx;
  }
  delivered_.store(k, std::memory_order_seq_cst);
}

// Runs in the completing thread, inside the state's lock.
std::uint64_t AsCompletedBase::on_complete(CompletionListener* self, std::size_t tag) {
  auto* me = static_cast<AsCompletedBase*>(self);
  std::uint64_t ticket;
  {
    Guard hold(me->order_lock_);
    ticket = take_completion_ticket();
    me->entries_[tag].ticket = ticket;
    std::uint32_t k = me->delivered_.load(std::memory_order_relaxed);
    me->entries_[k].order = tag;
    me->delivered_.store(k + 1, std::memory_order_seq_cst);
  }
  wake_all_waiters(me->delivered_, me->waiters_);
  return ticket;
}

Result<std::size_t> AsCompletedBase::next_until(TimePoint deadline) {
  if (status_ != Status::kOk) return status_;
  if (yielded_ == n_) return Status::kClosed;
  auto y = static_cast<std::uint32_t>(yielded_);
  if (delivered_.load(std::memory_order_acquire) == y) {
    Status s = wait_while_equal(delivered_, y, waiters_, deadline, "as_completed");
    if (s != Status::kOk) return s;
  }
  std::size_t i = entries_[yielded_].order;
  // Notified just before it became ready (see complete()): wait that out,
  // so what is yielded is ready.
  if (FutureStateBase* s = entries_[i].state; s && !s->is_ready()) {
    if (Status w = s->wait_until(deadline); w != Status::kOk) return w;
  }
  ++yielded_;
  return i;
}

AsCompletedBase::~AsCompletedBase() {
  // unlisten waits out a notify in progress on that state, so nothing
  // touches this object once the loop is done.
  for (std::size_t i = 0; i < n_; ++i) {
    if (FutureStateBase* s = entries_[i].state) {
      s->unlisten(this);
      s->release();
    }
  }
  if (entries_) ::operator delete(entries_);
}

}  // namespace detail

// ---------------------------------------------------------------------------
// ThreadPool

ThreadPool::ThreadPool(unsigned threads, const ThreadPoolOptions& options)
    : name_(options.name ? options.name : "pool"),
      capacity_(options.queue_capacity),
      lock_(name_),
      not_empty_(name_),
      not_full_(name_, WaitOrder::kFifo) {
  if (threads == 0 || capacity_ == 0) {
    status_ = Status::kInvalidArgument;
  } else if (workers_ = new (std::nothrow) Worker[threads]; !workers_) {
    status_ = Status::kNoMemory;
  } else {
    for (unsigned i = 0; i < threads; ++i) {
      char name[32];
      format(name, sizeof name, "%s-%u", name_, i);
      ThreadOptions to;
      to.name = name;
      to.priority = options.priority;
      to.stack_size = options.stack_size;
      to.affinity = options.affinity;
      Result<Thread> t = Thread::create(to, [this] { worker_loop(); });
      if (!t.ok()) {
        status_ = t.status();
        break;
      }
      workers_[i].id = t->id();
      workers_[i].thread = std::move(t).value();
      ++threads_;
    }
  }
  // A pool that is not whole runs nothing: stop what was started.
  if (status_ != Status::kOk) (void)shutdown(true);
}

ThreadPool::~ThreadPool() {
  if (called_from_worker()) {
    panic("thread pool '%s' destroyed by its own worker '%s' (thread %llu), which would wait for itself", name_,
          this_thread::name(), static_cast<unsigned long long>(this_thread::id()));
  }
  (void)shutdown(true);
  delete[] workers_;
}

bool ThreadPool::called_from_worker() const {
  ThreadId me = this_thread::id();
  for (unsigned i = 0; i < threads_; ++i) {
    if (workers_[i].id == me) return true;
  }
  return false;
}

void ThreadPool::report_self_wait(const char* what) const {
  print("thread pool '%s': %s called from its own worker '%s' (thread %llu) would wait for itself: "
        "refused with kDeadlock, nothing changed\n",
        name_, what, this_thread::name(), static_cast<unsigned long long>(this_thread::id()));
}

Status ThreadPool::reserve(TimePoint deadline, bool trying) {
  Guard hold(lock_);
  for (bool timed_out = false;; ) {
    if (closed_) return Status::kClosed;
    if (count_ + reserved_ < capacity_) {
      ++reserved_;
      return Status::kOk;
    }
    if (trying) return Status::kWouldBlock;
    if (timed_out) return Status::kTimedOut;
    timed_out = not_full_.wait_until(lock_, deadline) == Status::kTimedOut;
  }
}

void ThreadPool::commit(detail::FutureStateBase* job) {
  bool drop;
  {
    Guard hold(lock_);
    --reserved_;
    drop = dropping_;
    if (!drop) {
      job->next_ = nullptr;
      if (tail_) {
        tail_->next_ = job;
      } else {
        head_ = job;
      }
      tail_ = job;
      ++count_;
      not_empty_.notify_one();
    }
    // Closed workers wait for the last reservation before they leave.
    if (closed_ && reserved_ == 0) not_empty_.notify_all();
  }
  // Reserved before shutdown(false), built after it: dropped like the
  // queued ones.
  if (drop) job->run(false);
}

detail::FutureStateBase* ThreadPool::take() {
  Guard hold(lock_);
  while (count_ == 0) {
    if (closed_ && reserved_ == 0) return nullptr;
    not_empty_.wait(lock_);
  }
  detail::FutureStateBase* job = head_;
  head_ = job->next_;
  if (!head_) tail_ = nullptr;
  --count_;
  running_.fetch_add(1, std::memory_order_relaxed);
  not_full_.notify_one();
  return job;
}

void ThreadPool::worker_loop() {
  while (detail::FutureStateBase* job = take()) {
    job->run(true);
    running_.fetch_sub(1, std::memory_order_relaxed);
  }
}

Status ThreadPool::shutdown(bool wait) {
  if (called_from_worker()) {
    report_self_wait(wait ? "shutdown(true)" : "shutdown(false)");
    return Status::kDeadlock;
  }
  detail::FutureStateBase* dropped = nullptr;
  {
    Guard hold(lock_);
    closed_ = true;
    if (!wait) {
      dropping_ = true;
      dropped = head_;
      head_ = tail_ = nullptr;
      count_ = 0;
    }
    not_empty_.notify_all();
    not_full_.notify_all();
  }
  while (dropped) {
    detail::FutureStateBase* next = dropped->next_;
    dropped->run(false);
    dropped = next;
  }
  // Concurrent shutdowns: one joins, the others wait here until it has.
  Guard hold(join_lock_);
  for (unsigned i = 0; i < threads_; ++i) {
    if (workers_[i].thread.joinable()) (void)workers_[i].thread.join();
  }
  return Status::kOk;
}

std::size_t ThreadPool::queued() const {
  Guard hold(lock_);
  return count_;
}

bool ThreadPool::closed() const {
  Guard hold(lock_);
  return closed_;
}

}  // namespace spindle
