// concurrency_vs_parallelism: waiting overlaps on one CPU; computing needs
// several.
//
// Pattern: 1) eight I/O-bound jobs (each waits 100 ms) all pinned to one
// vCPU's executor: their waits overlap, so they take about 100 ms, not
// 800 ms. Concurrency needs no second CPU. 2) one CPU-bound job (counting
// primes below a bound, split into chunks) run with every chunk pinned to
// one vCPU, then spread over all vCPUs: only the second can go faster, by
// at most the number of vCPUs; the speedup is printed.
//
// Checks (exit 1 if any fails):
//  - the eight waits overlapped: under 400 ms in total, all on one executor;
//  - both CPU-bound runs found the same (known) number of primes, and the
//    pinned one ran on exactly one executor.
// The speedup and the executors the spread run used are reported, not
// checked: on a loaded host (vCPUs are host threads) or under QEMU's
// -icount (all vCPUs share one instruction clock) the speedup can be near 1.
#include <atomic>
#include <chrono>

#include <spindle/spindle.h>

namespace {

using namespace std::chrono_literals;
using spindle::Task;

constexpr int kWaiters = 8;
constexpr int kChunks = 16;
constexpr long kLimit = 600'000;       // primes below this
constexpr long kPrimesBelowLimit = 49'098;

bool is_prime(long n) {
  if (n < 2) return false;
  for (long d = 2; d * d <= n; ++d) {
    if (n % d == 0) return false;
  }
  return true;
}

// Which executor threads ran something, as a bit per thread id (mod 64).
std::atomic<std::uint64_t> g_executors_seen{0};
void note_executor() { g_executors_seen.fetch_or(std::uint64_t{1} << (spindle::this_thread::id() % 64)); }
int executors_seen() {
  int n = 0;
  for (std::uint64_t bits = g_executors_seen.exchange(0); bits; bits &= bits - 1) ++n;
  return n;
}

Task<int> io_bound(int i) {
  note_executor();
  co_await spindle::sleep_for(100ms);
  co_return i;
}

Task<long> count_primes(long from, long to) {
  note_executor();
  long n = 0;
  for (long v = from; v < to; ++v) {
    if (is_prime(v)) ++n;
    if ((v & 1023) == 0) co_await spindle::yield();  // let the other chunks on this executor take turns
  }
  co_return n;
}

// Runs the prime count in kChunks jobs (pinned to cpu, or anywhere with
// cpu = -1) and returns the total and the time taken.
long run_primes(int cpu, long* ms) {
  spindle::TimePoint t0 = spindle::Clock::now();
  spindle::JoinHandle<long> chunks[kChunks];
  for (int c = 0; c < kChunks; ++c) {
    chunks[c] = spindle::spawn(count_primes(kLimit * c / kChunks, kLimit * (c + 1) / kChunks),
                               spindle::SpawnOptions{.cpu = cpu});
  }
  long total = 0;
  for (auto& h : chunks) {
    spindle::Result<long> r = h.join();
    total = r.ok() && total >= 0 ? total + r.value() : -1;
  }
  *ms = static_cast<long>((spindle::Clock::now() - t0) / 1ms);
  return total;
}

}  // namespace

int spindle_main(int, char**) {
  bool ok = true;
  spindle::print("concurrency_vs_parallelism: waiting overlaps on one vCPU; computing needs several\n");

  // 1. I/O-bound, all on vCPU 0's executor.
  spindle::TimePoint t0 = spindle::Clock::now();
  spindle::JoinHandle<int> waits[kWaiters];
  for (int i = 0; i < kWaiters; ++i) waits[i] = spindle::spawn(io_bound(i), spindle::SpawnOptions{.cpu = 0});
  int sum = 0;
  for (auto& h : waits) sum += h.join().value();
  long io_ms = static_cast<long>((spindle::Clock::now() - t0) / 1ms);
  int io_executors = executors_seen();
  unsigned cpus = spindle::coroutine_stats().executors;
  spindle::print("%d waits of 100 ms on one vCPU took %ld ms (one after the other: %d ms)\n", kWaiters, io_ms,
                 kWaiters * 100);
  if (io_ms >= 400 || sum != kWaiters * (kWaiters - 1) / 2 || io_executors != 1) {
    spindle::print("FAIL: the waits did not overlap on one executor (%ld ms, %d executors)\n", io_ms, io_executors);
    ok = false;
  }

  // 2. CPU-bound, one vCPU vs all.
  long one_ms = 0, all_ms = 0;
  long one = run_primes(0, &one_ms);
  int one_executors = executors_seen();
  long all = run_primes(-1, &all_ms);
  int all_executors = executors_seen();
  spindle::print("primes below %ld: %ld on 1 vCPU in %ld ms, %ld on %u vCPUs (%d executors used) in %ld ms: "
                 "speedup %ld.%02ldx\n",
                 kLimit, one, one_ms, all, cpus, all_executors, all_ms, one_ms / (all_ms ? all_ms : 1),
                 one_ms * 100 / (all_ms ? all_ms : 1) % 100);
  if (one != kPrimesBelowLimit || all != kPrimesBelowLimit) {
    spindle::print("FAIL: prime counts %ld and %ld, want %ld\n", one, all, kPrimesBelowLimit);
    ok = false;
  }
  if (one_executors != 1) {
    spindle::print("FAIL: the pinned run used %d executors\n", one_executors);
    ok = false;
  }
  spindle::print("concurrency_vs_parallelism: %s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
