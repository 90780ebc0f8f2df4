// Generator<T>: a coroutine that co_yields a sequence of values, pulled by
// its caller (a range-for, or next()). It runs inline in the caller, thread
// or coroutine; it cannot co_await. Its frame comes from the kernel's frame
// pool; when it cannot be allocated the generator is empty and status()
// says kNoMemory.
//
//   Generator<int> count(int n) { for (int i = 0; i < n; ++i) co_yield i; }
//   for (int v : count(3)) ...
#pragma once

#include <coroutine>
#include <cstddef>
#include <iterator>
#include <type_traits>
#include <utility>

#include "spindle/task.h"

namespace spindle {

template <class T>
class [[nodiscard]] Generator {
 public:
  class promise_type {
   public:
    static void* operator new(std::size_t n) noexcept { return detail::frame_alloc(n); }
    static void operator delete(void* p, std::size_t n) noexcept { detail::frame_free(p, n); }
    Generator get_return_object() noexcept {
      return Generator(std::coroutine_handle<promise_type>::from_promise(*this));
    }
    static Generator get_return_object_on_allocation_failure() noexcept { return Generator(); }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    // The value lives in the generator's frame until it is resumed.
    std::suspend_always yield_value(std::remove_reference_t<T>& v) noexcept {
      value_ = __builtin_addressof(v);
      return {};
    }
    std::suspend_always yield_value(std::remove_reference_t<T>&& v) noexcept {
      value_ = __builtin_addressof(v);
      return {};
    }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { detail::coroutine_exception(); }
    // A generator runs inline in its caller: it cannot suspend on a wait.
    template <class U>
    std::suspend_never await_transform(U&&) = delete;

    std::remove_reference_t<T>* value_ = nullptr;
  };
  using Handle = std::coroutine_handle<promise_type>;

  Generator() = default;
  Generator(Generator&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  Generator& operator=(Generator&& o) noexcept {
    if (this != &o) {
      if (h_) h_.destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  ~Generator() {
    if (h_) h_.destroy();
  }

  Status status() const { return h_ ? Status::kOk : Status::kNoMemory; }

  // The next value, or nullptr once the generator has ended.
  std::remove_reference_t<T>* next() {
    if (!h_ || h_.done()) return nullptr;
    h_.resume();
    return h_.done() ? nullptr : h_.promise().value_;
  }

  struct Sentinel {};
  class Iterator {
   public:
    using value_type = std::remove_cvref_t<T>;
    using difference_type = std::ptrdiff_t;
    explicit Iterator(Generator* g) : g_(g), v_(g->next()) {}
    std::remove_reference_t<T>& operator*() const { return *v_; }
    Iterator& operator++() {
      v_ = g_->next();
      return *this;
    }
    void operator++(int) { ++*this; }
    bool operator==(Sentinel) const { return v_ == nullptr; }

   private:
    Generator* g_;
    std::remove_reference_t<T>* v_;
  };
  Iterator begin() { return Iterator(this); }
  Sentinel end() { return {}; }

 private:
  explicit Generator(Handle h) : h_(h) {}
  Handle h_;
};

}  // namespace spindle
