// Status codes returned by every Spindle call that can fail, and Result<T>,
// a value-or-status for calls that produce something.
#pragma once

#include <new>
#include <type_traits>
#include <utility>

namespace spindle {

enum class Status : int {
  kOk = 0,
  kTimedOut,         // the deadline passed before the operation could complete
  kWouldBlock,       // a try_ call found the object unavailable
  kDeadlock,         // the call would wait forever (e.g. a thread joining itself)
  kOwnerDied,        // a lock's owner died while holding it
  kInterrupted,      // the wait was cancelled
  kInvalidArgument,  // an argument is out of range; nothing was changed
  kInvalidState,     // the object is not in a state that allows the call
  kNoMemory,         // an allocation failed; nothing was changed
  kFaulted,          // the thread was killed by a fault (e.g. stack overflow)
  kNotFound,
  kClosed,           // the object (a Queue) was closed
  kOverflow,         // the call would raise a count past its maximum; nothing was changed
  kLimit,            // a process limit (threads, memory) would be exceeded; nothing was changed
};

// A short, stable, human-readable name ("timed out").
const char* to_string(Status s);

// Holds either a T or a non-OK Status. Never throws; reading the value of a
// failed Result is a panic naming the status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : status_(Status::kOk) { new (&storage_) T(std::move(value)); }  // NOLINT
  Result(Status s) : status_(s) {                                                 // NOLINT
    if (s == Status::kOk) fail_ok_without_value();
  }
  Result(Result&& o) noexcept : status_(o.status_) {
    if (ok()) new (&storage_) T(std::move(*o.ptr()));
  }
  Result& operator=(Result&&) = delete;
  Result(const Result&) = delete;
  ~Result() {
    if (ok()) ptr()->~T();
  }

  bool ok() const { return status_ == Status::kOk; }
  Status status() const { return status_; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    check();
    return *ptr();
  }
  T&& value() && {
    check();
    return std::move(*ptr());
  }
  T* operator->() {
    check();
    return ptr();
  }
  T& operator*() & { return value(); }

 private:
  void check() const {
    if (!ok()) fail_no_value(status_);
  }
  [[noreturn]] static void fail_no_value(Status s);
  [[noreturn]] static void fail_ok_without_value();
  T* ptr() { return std::launder(reinterpret_cast<T*>(&storage_)); }

  Status status_;
  alignas(T) unsigned char storage_[sizeof(T)];
};

namespace detail {
[[noreturn]] void result_access_failed(Status s);
}

template <typename T>
void Result<T>::fail_no_value(Status s) {
  detail::result_access_failed(s);
}
template <typename T>
void Result<T>::fail_ok_without_value() {
  detail::result_access_failed(Status::kOk);
}

}  // namespace spindle
