// ktest: the in-kernel test framework. Freestanding (no exceptions, no
// heap, no host library), so the same test cases run in the hosted build
// (each case in a freshly booted kernel, driven by Catch2 through ctest)
// and inside the kernel image under QEMU.
//
//   KTEST(name, min_cpus) { ... }     a case; runs as the kernel's main thread
//   KCHECK(cond)                      records a failure, continues
//   KCHECK_EQ(a, b)                   same, printing both values
//   KREQUIRE(cond)                    records a failure, ends the case
//   KFAIL(fmt, ...)                   records a formatted failure
#pragma once

#include <cstdint>

namespace spindle::ktest {

struct Case {
  const char* name;
  void (*fn)();
  unsigned min_cpus;  // the case is skipped (QEMU) / booted with at least this many vCPUs (hosted)
  const char* file;
  int line;
  // Needs the kernel to switch threads from inside a signal handler on
  // hosted: preempting a thread that spins without calling the kernel, or
  // killing a thread on a stack-overflow fault. ThreadSanitizer cannot
  // follow a switch made in a handler, so the hosted TSan build skips these.
  bool switches_in_signal = false;
  // Needs the host (a Linux process around the kernel); the bare-metal
  // runner reports it as skipped. Mark with KTEST_HOST_ONLY.
  bool host_only = false;
  Case* next = nullptr;
};

struct Registrar {
  explicit Registrar(Case* c);
};

Case* first_case();

// Failure records of the case that ran last.
struct Failure {
  const char* file;
  int line;
  char message[200];
};
inline constexpr unsigned kMaxFailures = 32;
unsigned failure_count();
const Failure& failure(unsigned i);

void record_failure(const char* file, int line, const char* fmt, ...) __attribute__((format(printf, 3, 4)));

// Runs one case in the calling thread (the kernel must be up). Returns the
// number of failures; the records stay readable until the next run.
unsigned run_case(const Case& c);

// For tests: a pseudo-random generator with a fixed seed per case.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : s_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  std::uint64_t next() {
    s_ ^= s_ << 13;
    s_ ^= s_ >> 7;
    s_ ^= s_ << 17;
    return s_;
  }
  std::uint64_t below(std::uint64_t n) { return next() % n; }

 private:
  std::uint64_t s_;
};

}  // namespace spindle::ktest

#define KTEST(name, min_cpus)                                                                            \
  static void ktest_body_##name();                                                                       \
  static ::spindle::ktest::Case ktest_case_##name{#name, ktest_body_##name, min_cpus, __FILE__, __LINE__}; \
  static ::spindle::ktest::Registrar ktest_reg_##name(&ktest_case_##name);                              \
  static void ktest_body_##name()

// A case that needs a switch from a signal handler on hosted (see Case).
#define KTEST_SIGNAL_SWITCH(name, min_cpus)                                                                 \
  static void ktest_body_##name();                                                                       \
  static ::spindle::ktest::Case ktest_case_##name{#name, ktest_body_##name, min_cpus, __FILE__, __LINE__, \
                                                  true};                                                 \
  static ::spindle::ktest::Registrar ktest_reg_##name(&ktest_case_##name);                              \
  static void ktest_body_##name()

// A case that needs the host (see Case::host_only); runs only in hosted builds.
#define KTEST_HOST_ONLY(name, min_cpus)                                                                     \
  static void ktest_body_##name();                                                                       \
  static ::spindle::ktest::Case ktest_case_##name{#name, ktest_body_##name, min_cpus, __FILE__, __LINE__, \
                                                  false, true};                                          \
  static ::spindle::ktest::Registrar ktest_reg_##name(&ktest_case_##name);                              \
  static void ktest_body_##name()

#define KCHECK(cond)                                                                    \
  do {                                                                                  \
    if (!(cond)) ::spindle::ktest::record_failure(__FILE__, __LINE__, "%s", #cond);     \
  } while (0)

#define KREQUIRE(cond)                                                                  \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      ::spindle::ktest::record_failure(__FILE__, __LINE__, "required: %s", #cond);      \
      return;                                                                           \
    }                                                                                   \
  } while (0)

#define KCHECK_EQ(a, b)                                                                                    \
  do {                                                                                                     \
    auto ktest_a = (a);                                                                                    \
    auto ktest_b = (b);                                                                                    \
    if (!(ktest_a == ktest_b)) {                                                                           \
      ::spindle::ktest::record_failure(__FILE__, __LINE__, "%s == %s: %lld vs %lld", #a, #b,               \
                                       static_cast<long long>(ktest_a), static_cast<long long>(ktest_b));  \
    }                                                                                                      \
  } while (0)

#define KFAIL(...) ::spindle::ktest::record_failure(__FILE__, __LINE__, __VA_ARGS__)
