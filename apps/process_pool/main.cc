// process_pool: CPU-bound jobs on 4 isolated worker processes. The sums of
// squares below 1e6, 2e6, 3e6 and 4e6 are computed in the workers, copied
// back and checked against the closed form; then a job that crashes its
// worker fails on its own future only, the worker is replaced, and the
// pool goes on. Exits non-zero if any result is wrong.
#include <spindle/spindle.h>

#include <cstdint>

namespace {

struct U128 {
  std::uint64_t hi, lo;
  bool operator==(const U128&) const = default;
};

U128 split(unsigned __int128 v) { return {static_cast<std::uint64_t>(v >> 64), static_cast<std::uint64_t>(v)}; }

// Sum of i*i for 0 <= i < n, in a worker.
U128 sum_of_squares(std::uint64_t n) {
  unsigned __int128 s = 0;
  for (std::uint64_t i = 0; i < n; ++i) s += static_cast<unsigned __int128>(i) * i;
  return split(s);
}

U128 closed_form(std::uint64_t n) {
  unsigned __int128 m = n;
  return split(m * (m - 1) * (2 * m - 1) / 6);
}

// Decimal digits of a 128-bit value, for printing.
const char* decimal(U128 v, char (&buf)[48]) {
  unsigned __int128 x = (static_cast<unsigned __int128>(v.hi) << 64) | v.lo;
  char* p = buf + sizeof buf - 1;
  *p = '\0';
  do {
    *--p = static_cast<char>('0' + static_cast<int>(x % 10));
    x /= 10;
  } while (x != 0);
  return p;
}

// The bad access must reach the hardware: no sanitizer check first.
__attribute__((no_sanitize("address", "thread", "undefined"))) U128 crash(std::uint64_t) {
  volatile int* p = nullptr;
  *p = 1;  // kills this worker
  return {};
}

}  // namespace

int spindle_main(int, char**) {
  spindle::ProcessOptions worker;
  worker.name = "pool worker";
  spindle::ProcessPool pool(4, worker);
  if (pool.status() != spindle::Status::kOk) {
    spindle::print("cannot start the pool: %s\n", spindle::to_string(pool.status()));
    return 1;
  }
  int failures = 0;
  const std::uint64_t limits[] = {1000000, 2000000, 3000000, 4000000};
  spindle::FutureList<U128> sums = pool.map(sum_of_squares, limits);
  char buf[48];
  for (std::size_t i = 0; i < 4; ++i) {
    auto r = sums[i].get();
    bool ok = r.ok() && *r == closed_form(limits[i]);
    spindle::print("  sum of squares below %llu = %s  %s\n", static_cast<unsigned long long>(limits[i]),
                   r.ok() ? decimal(*r, buf) : spindle::to_string(r.status()), ok ? "(checked)" : "WRONG");
    if (!ok) ++failures;
  }

  // A job that crashes its worker: only its own future fails.
  spindle::Future<U128> bad = pool.submit(crash, 0);
  spindle::Future<U128> after = pool.submit(sum_of_squares, 1000);
  auto b = bad.get();
  spindle::ProcessPoolStats st = pool.stats();
  char why[160];
  bool bad_ok = !b.ok() && b.status() == spindle::Status::kFaulted && st.crashes == 1 && st.replaced == 1;
  spindle::print("  crashing job: %s; worker %s, replaced (%llu crash, %llu replacement)  %s\n",
                 b.ok() ? "returned a value" : spindle::to_string(b.status()), st.last_crash.describe(why, sizeof why),
                 static_cast<unsigned long long>(st.crashes), static_cast<unsigned long long>(st.replaced),
                 bad_ok ? "(as expected)" : "WRONG");
  if (!bad_ok) ++failures;
  auto a = after.get();
  bool after_ok = a.ok() && *a == closed_form(1000);
  spindle::print("  the next job still ran: %s\n", after_ok ? "yes (checked)" : "NO");
  if (!after_ok) ++failures;
  pool.shutdown();
  spindle::print("%s\n", failures == 0 ? "process_pool: ok" : "process_pool: FAILED");
  return failures == 0 ? 0 : 1;
}
