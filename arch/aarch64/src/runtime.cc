// What compiled C++ expects from a C/C++ runtime, for an image that links
// no C library: the mem* functions GCC may call, the C++ ABI hooks, the
// libstdc++ error paths reachable from header-only code (built without
// exceptions, each is a panic), and the std::chrono clocks on the kernel's
// clock, sched_yield as Spindle's yield. Compiled with -fno-tree-loop-distribute-patterns so these loops
// are not turned back into calls to themselves.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <new>

#include "aarch64.h"
#include "spindle/panic.h"
#include "spindle/thread.h"

extern "C" {

void* memcpy(void* dst, const void* src, std::size_t n) {
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const unsigned char*>(src);
  if (((reinterpret_cast<std::uintptr_t>(d) | reinterpret_cast<std::uintptr_t>(s)) & 7) == 0) {
    for (; n >= 8; n -= 8, d += 8, s += 8) *reinterpret_cast<std::uint64_t*>(d) = *reinterpret_cast<const std::uint64_t*>(s);
  }
  while (n--) *d++ = *s++;
  return dst;
}

void* memmove(void* dst, const void* src, std::size_t n) {
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const unsigned char*>(src);
  if (d == s || n == 0) return dst;
  if (d < s || d >= s + n) return memcpy(dst, src, n);
  while (n--) d[n] = s[n];
  return dst;
}

void* memset(void* dst, int c, std::size_t n) {
  auto* d = static_cast<unsigned char*>(dst);
  if ((reinterpret_cast<std::uintptr_t>(d) & 7) == 0) {
    std::uint64_t v = 0x0101010101010101ull * static_cast<unsigned char>(c);
    for (; n >= 8; n -= 8, d += 8) *reinterpret_cast<std::uint64_t*>(d) = v;
  }
  while (n--) *d++ = static_cast<unsigned char>(c);
  return dst;
}

int memcmp(const void* a, const void* b, std::size_t n) {
  const auto* x = static_cast<const unsigned char*>(a);
  const auto* y = static_cast<const unsigned char*>(b);
  for (; n; --n, ++x, ++y) {
    if (*x != *y) return *x < *y ? -1 : 1;
  }
  return 0;
}

std::size_t strlen(const char* s) {
  std::size_t n = 0;
  while (s[n]) ++n;
  return n;
}

[[noreturn]] void abort() { spindle::panic("abort() called"); }

[[noreturn]] void __cxa_pure_virtual() { spindle::panic("pure virtual function called"); }

// libstdc++'s std::lock and std::this_thread::yield call the POSIX yield.
int sched_yield() {
  spindle::this_thread::yield();
  return 0;
}

// Global destructors never run: the system ends with halt().
int __cxa_atexit(void (*)(void*), void*, void*) { return 0; }
void* __dso_handle = nullptr;

}  // extern "C"

namespace std {
const nothrow_t nothrow{};

[[noreturn]] void __throw_bad_alloc() { spindle::panic("std::bad_alloc"); }
[[noreturn]] void __throw_bad_array_new_length() { spindle::panic("std::bad_array_new_length"); }
[[noreturn]] void __throw_length_error(const char* what) { spindle::panic("std::length_error: %s", what); }
[[noreturn]] void __throw_logic_error(const char* what) { spindle::panic("std::logic_error: %s", what); }
[[noreturn]] void __throw_out_of_range(const char* what) { spindle::panic("std::out_of_range: %s", what); }
[[noreturn]] void __throw_out_of_range_fmt(const char* what, ...) { spindle::panic("std::out_of_range: %s", what); }
[[noreturn]] void __throw_invalid_argument(const char* what) { spindle::panic("std::invalid_argument: %s", what); }
[[noreturn]] void __throw_system_error(int e) { spindle::panic("std::system_error %d", e); }
[[noreturn]] void __throw_bad_function_call() { spindle::panic("std::bad_function_call"); }

namespace chrono {
// steady_clock is the kernel's clock; system_clock adds the PL031 RTC's
// reading at the first call (seconds since 1970).
steady_clock::time_point steady_clock::now() noexcept {
  return time_point(nanoseconds(spindle::arch::now_ns()));
}

system_clock::time_point system_clock::now() noexcept {
  static std::uint64_t offset_ns = 0;
  static bool known = false;
  std::uint64_t mono = spindle::arch::now_ns();
  if (!known) {
    std::uint32_t rtc = *spindle::arch::device<volatile std::uint32_t>(spindle::arch::kPl031Base);  // RTCDR
    offset_ns = static_cast<std::uint64_t>(rtc) * 1'000'000'000u - mono;
    known = true;
  }
  return time_point(duration_cast<system_clock::duration>(nanoseconds(offset_ns + mono)));
}
}  // namespace chrono
}  // namespace std
