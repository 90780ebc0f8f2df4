// RwLock (spindle/rw_lock.h). The counters live under a tiny internal lock
// (a three-state futex word, held for a few instructions, never across a
// sleep). Readers sleep on read_seq_, writers on write_seq_; whoever changes
// the state decides, under the guard, which side may now proceed, bumps
// that side's sequence word, and wakes it after dropping the guard. A
// sleeper re-checks its admission rule under the guard, so a stale or
// spurious wake-up only costs a re-check.
#include "spindle/rw_lock.h"

#include "spindle/diagnostics.h"
#include "spindle/panic.h"

namespace spindle {
namespace {
constexpr unsigned kWakeReaders = 1;
constexpr unsigned kWakeWriter = 2;
unsigned long long ull(std::uint64_t v) { return static_cast<unsigned long long>(v); }
}  // namespace

const char* to_string(RwPolicy p) {
  switch (p) {
    case RwPolicy::kReaderPreferring: return "reader-preferring";
    case RwPolicy::kWriterPreferring: return "writer-preferring";
    case RwPolicy::kPhaseFair: return "phase-fair";
  }
  return "?";
}

RwLock::~RwLock() {
  guard_lock();
  bool busy = readers_ || writer_ || waiting_readers_ || waiting_writers_;
  std::uint32_t r = readers_;
  ThreadId w = writer_;
  guard_unlock();
  if (busy) panic("rwlock '%s' destroyed while in use (%u readers, writer %llu)", name_, r, ull(w));
  if constexpr (kLockdep) detail::lockdep_forget(this);
}

void RwLock::guard_lock() {
  std::uint32_t c = 0;
  if (guard_.compare_exchange_strong(c, 1, std::memory_order_acquire, std::memory_order_relaxed)) return;
  if (c != 2) c = guard_.exchange(2, std::memory_order_acquire);
  while (c != 0) {
    futex_wait(&guard_, 2);
    c = guard_.exchange(2, std::memory_order_acquire);
  }
}

void RwLock::guard_unlock() {
  if (guard_.exchange(0, std::memory_order_release) == 2) futex_wake(&guard_, 1);
}

bool RwLock::reader_may_enter(bool waited, std::uint64_t phase) const {
  if (writer_) return false;
  switch (policy_) {
    case RwPolicy::kReaderPreferring: return true;
    case RwPolicy::kWriterPreferring: return waiting_writers_ == 0;
    case RwPolicy::kPhaseFair: return waiting_writers_ == 0 || (waited && phase < write_releases_);
  }
  return false;
}

bool RwLock::writer_may_enter() const {
  if (writer_ || readers_) return false;
  switch (policy_) {
    case RwPolicy::kReaderPreferring: return waiting_readers_ == 0;
    case RwPolicy::kWriterPreferring: return true;
    case RwPolicy::kPhaseFair: return entitled_readers_ == 0;
  }
  return false;
}

unsigned RwLock::wake_decision() {
  unsigned what = 0;
  bool readers_can = waiting_readers_ && !writer_ &&
                     (policy_ == RwPolicy::kReaderPreferring || waiting_writers_ == 0 || entitled_readers_ > 0);
  if (readers_can) {
    read_seq_.fetch_add(1, std::memory_order_relaxed);
    what |= kWakeReaders;
  }
  if (waiting_writers_ && writer_may_enter()) {
    write_seq_.fetch_add(1, std::memory_order_relaxed);
    what |= kWakeWriter;
  }
  return what;
}

void RwLock::wake(unsigned what) {
  if (what & kWakeReaders) futex_wake(&read_seq_, UINT32_MAX);
  if (what & kWakeWriter) futex_wake(&write_seq_, 1);
}

Status RwLock::lock_until(TimePoint deadline, const Site& site) {
  ThreadId me = this_thread::id();
  guard_lock();
  if (writer_ == me) {
    guard_unlock();
    panic("thread %llu ('%s') write-locked rwlock '%s', which it already holds (self-deadlock)", ull(me),
          this_thread::name(), name_);
  }
  if constexpr (kLockdep) detail::lockdep_acquire(this, name_, site, false);
  bool waited = false;
  while (!writer_may_enter()) {
    if (!waited) {
      waited = true;
      ++waiting_writers_;
    }
    std::uint32_t seq = write_seq_.load(std::memory_order_relaxed);
    guard_unlock();
    Status s = futex_wait(&write_seq_, seq, deadline, WaitOrder::kPriority, name_);
    guard_lock();
    if (s == Status::kTimedOut && !writer_may_enter()) {
      --waiting_writers_;
      unsigned what = wake_decision();  // readers held back by us may go
      guard_unlock();
      wake(what);
      if constexpr (kLockdep) detail::lockdep_release(this, name_);
      return Status::kTimedOut;
    }
  }
  if (waited) --waiting_writers_;
  writer_ = me;
  guard_unlock();
  return Status::kOk;
}

bool RwLock::try_lock(const Site& site) {
  guard_lock();
  bool ok = writer_may_enter();
  if (ok) writer_ = this_thread::id();
  guard_unlock();
  if (ok && kLockdep) detail::lockdep_acquire(this, name_, site, true);
  return ok;
}

void RwLock::unlock() {
  ThreadId me = this_thread::id();
  guard_lock();
  if (writer_ != me) {
    ThreadId w = writer_;
    guard_unlock();
    if (w == 0) panic("thread %llu ('%s') write-unlocked rwlock '%s', which no writer holds", ull(me), this_thread::name(), name_);
    panic("thread %llu ('%s') write-unlocked rwlock '%s', held for writing by thread %llu", ull(me),
          this_thread::name(), name_, ull(w));
  }
  writer_ = 0;
  ++write_releases_;
  if (policy_ == RwPolicy::kPhaseFair) entitled_readers_ = waiting_readers_;
  unsigned what = wake_decision();
  guard_unlock();
  if constexpr (kLockdep) detail::lockdep_release(this, name_);
  wake(what);
}

Status RwLock::try_read(bool trying, TimePoint deadline) {
  guard_lock();
  bool waited = false;
  std::uint64_t phase = write_releases_;
  while (!reader_may_enter(waited, phase)) {
    if (trying) {
      guard_unlock();
      return Status::kWouldBlock;
    }
    if (!waited) {
      waited = true;
      ++waiting_readers_;
    }
    std::uint32_t seq = read_seq_.load(std::memory_order_relaxed);
    guard_unlock();
    Status s = futex_wait(&read_seq_, seq, deadline, WaitOrder::kPriority, name_);
    guard_lock();
    if (s == Status::kTimedOut && !reader_may_enter(waited, phase)) {
      --waiting_readers_;
      if (phase < write_releases_ && entitled_readers_ > 0) --entitled_readers_;
      unsigned what = wake_decision();  // a writer held back by us may go
      guard_unlock();
      wake(what);
      return Status::kTimedOut;
    }
  }
  if (waited) {
    --waiting_readers_;
    if (phase < write_releases_ && entitled_readers_ > 0) --entitled_readers_;
  }
  ++readers_;
  guard_unlock();
  return Status::kOk;
}

Status RwLock::lock_shared_until(TimePoint deadline, const Site& site) {
  if constexpr (kLockdep) detail::lockdep_acquire(this, name_, site, false);
  Status s = try_read(false, deadline);
  if constexpr (kLockdep) {
    if (s != Status::kOk) detail::lockdep_release(this, name_);
  }
  return s;
}

bool RwLock::try_lock_shared(const Site& site) {
  bool ok = try_read(true, kForever) == Status::kOk;
  if (ok && kLockdep) detail::lockdep_acquire(this, name_, site, true);
  return ok;
}

void RwLock::unlock_shared() {
  guard_lock();
  if (readers_ == 0) {
    guard_unlock();
    panic("thread %llu ('%s') read-unlocked rwlock '%s', which has no reader", ull(this_thread::id()),
          this_thread::name(), name_);
  }
  --readers_;
  unsigned what = readers_ == 0 ? wake_decision() : 0;
  guard_unlock();
  if constexpr (kLockdep) detail::lockdep_release(this, name_);
  wake(what);
}

std::uint32_t RwLock::readers() const {
  auto* self = const_cast<RwLock*>(this);
  self->guard_lock();
  std::uint32_t r = readers_;
  self->guard_unlock();
  return r;
}

ThreadId RwLock::writer() const {
  auto* self = const_cast<RwLock*>(this);
  self->guard_lock();
  ThreadId w = writer_;
  self->guard_unlock();
  return w;
}

}  // namespace spindle
