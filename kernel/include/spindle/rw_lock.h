// Reader-writer lock: many readers at once, or one writer. The policy says
// who goes first when both wait:
//   kReaderPreferring - readers enter whenever no writer holds the lock
//                       (writers can starve under a stream of readers);
//   kWriterPreferring - a waiting writer holds back new readers (readers
//                       can starve under a stream of writers);
//   kPhaseFair        - reader and writer phases alternate: a waiting
//                       writer holds back new readers, and when a writer
//                       leaves, every reader waiting at that moment enters
//                       before the next writer. Neither side starves.
// Satisfies SharedTimedLockable, so std::shared_lock works, and
// TimedLockable for writers.
//
// Its counters are guarded by a small internal futex lock held for a few
// instructions; waits sleep on two futex words (readers', writers').
// Misuse panics naming the lock: unlocking a write lock the caller does not
// hold, unlock_shared with no reader inside, destroying it while in use.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "spindle/futex.h"
#include "spindle/mutex.h"
#include "spindle/status.h"
#include "spindle/time.h"

namespace spindle {

enum class RwPolicy : std::uint8_t { kReaderPreferring, kWriterPreferring, kPhaseFair };
const char* to_string(RwPolicy p);

class SPINDLE_CAPABILITY("rwlock") RwLock {
 public:
  explicit RwLock(const char* name = "rwlock", RwPolicy policy = RwPolicy::kPhaseFair)
      : name_(name), policy_(policy) {}
  RwLock(const RwLock&) = delete;
  RwLock& operator=(const RwLock&) = delete;
  ~RwLock();

  // Exclusive (writer) side.
  void lock(const Site& site = Site::current()) SPINDLE_ACQUIRE() { (void)lock_until(kForever, site); }
  bool try_lock(const Site& site = Site::current()) SPINDLE_TRY_ACQUIRE(true);
  template <class R, class P>
  bool try_lock_for(const std::chrono::duration<R, P>& d, const Site& site = Site::current())
      SPINDLE_TRY_ACQUIRE(true) {
    return lock_until(deadline_after(std::chrono::duration_cast<Duration>(d)), site) == Status::kOk;
  }
  template <class C, class D>
  bool try_lock_until(const std::chrono::time_point<C, D>& t, const Site& site = Site::current())
      SPINDLE_TRY_ACQUIRE(true) {
    return lock_until(to_spindle_time(t), site) == Status::kOk;
  }
  Status lock_for(Duration d, const Site& site = Site::current()) { return lock_until(deadline_after(d), site); }
  Status lock_until(TimePoint deadline, const Site& site = Site::current());
  void unlock() SPINDLE_RELEASE();

  // Shared (reader) side.
  void lock_shared(const Site& site = Site::current()) { (void)lock_shared_until(kForever, site); }
  bool try_lock_shared(const Site& site = Site::current());
  template <class R, class P>
  bool try_lock_shared_for(const std::chrono::duration<R, P>& d, const Site& site = Site::current()) {
    return lock_shared_until(deadline_after(std::chrono::duration_cast<Duration>(d)), site) == Status::kOk;
  }
  template <class C, class D>
  bool try_lock_shared_until(const std::chrono::time_point<C, D>& t, const Site& site = Site::current()) {
    return lock_shared_until(to_spindle_time(t), site) == Status::kOk;
  }
  Status lock_shared_for(Duration d, const Site& site = Site::current()) {
    return lock_shared_until(deadline_after(d), site);
  }
  Status lock_shared_until(TimePoint deadline, const Site& site = Site::current());
  void unlock_shared();

  const char* name() const { return name_; }
  RwPolicy policy() const { return policy_; }
  // Snapshots.
  std::uint32_t readers() const;
  ThreadId writer() const;

 private:
  // The internal lock: three-state futex word, no owner, never held across
  // a wait.
  void guard_lock();
  void guard_unlock();
  bool reader_may_enter(bool waited, std::uint64_t phase) const;
  bool writer_may_enter() const;
  // After a state change (guard held): bumps the sequence words of the
  // sides that may now proceed; returns what to wake once unlocked.
  unsigned wake_decision();
  void wake(unsigned what);
  Status try_read(bool trying, TimePoint deadline);

  std::atomic<std::uint32_t> guard_{0};
  std::atomic<std::uint32_t> read_seq_{0};
  std::atomic<std::uint32_t> write_seq_{0};
  // Guarded by guard_:
  std::uint32_t readers_ = 0;
  ThreadId writer_ = 0;
  std::uint32_t waiting_readers_ = 0;
  std::uint32_t waiting_writers_ = 0;
  std::uint32_t entitled_readers_ = 0;  // phase-fair: readers admitted by the last writer release
  std::uint64_t write_releases_ = 0;
  const char* name_;
  RwPolicy policy_;
};

}  // namespace spindle
