// Shared by the Spindle benchmark binaries (bench/*_bench.cc): a reporter
// that keeps each benchmark's median for the "Targets" summary, the choice
// of display reporter, and host-thread pinning for the OS anchors.
#pragma once

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>

namespace spindle_bench {

// Restricts the calling host thread to one core.
inline void pin_self_to(unsigned core) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(core, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

struct Result {
  double real_ns = 0;
  double cpu_ns = 0;
  std::map<std::string, double> counters;
  bool from_median = false;
};

// Passes everything to the real display reporter and keeps, per benchmark,
// the median (or the only run) for the summary against the targets.
class Recorder : public benchmark::BenchmarkReporter {
 public:
  explicit Recorder(std::unique_ptr<benchmark::BenchmarkReporter> inner) : inner_(std::move(inner)) {
    inner_->SetOutputStream(&std::cout);
    inner_->SetErrorStream(&std::cerr);
  }
  bool ReportContext(const Context& c) override { return inner_->ReportContext(c); }
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      if (r.error_occurred) continue;
      bool median = r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
      if (r.run_type == Run::RT_Aggregate && !median) continue;
      std::string key = r.run_name.function_name + (r.run_name.args.empty() ? "" : "/" + r.run_name.args);
      Result& out = results[key];
      if (out.from_median && !median) continue;
      out.from_median = median;
      out.real_ns = r.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(r.time_unit) * 1e9;
      out.cpu_ns = r.GetAdjustedCPUTime() / benchmark::GetTimeUnitMultiplier(r.time_unit) * 1e9;
      out.counters.clear();
      for (const auto& [name, c] : r.counters) out.counters[name] = c.value;
    }
    inner_->ReportRuns(runs);
  }
  void Finalize() override { inner_->Finalize(); }

  std::map<std::string, Result> results;

 private:
  std::unique_ptr<benchmark::BenchmarkReporter> inner_;
};

// The reporter --benchmark_format asks for (console by default).
inline std::unique_ptr<benchmark::BenchmarkReporter> make_display_reporter(const std::string& format) {
  if (format == "json") return std::make_unique<benchmark::JSONReporter>();
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  if (format == "csv") return std::make_unique<benchmark::CSVReporter>();
#pragma GCC diagnostic pop
  bool color = ::isatty(STDOUT_FILENO);
  return std::make_unique<benchmark::ConsoleReporter>(color ? benchmark::ConsoleReporter::OO_Color
                                                            : benchmark::ConsoleReporter::OO_None);
}

inline std::uint64_t steady_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

// Reads a small /proc or /sys file into buf (NUL-terminated); false if it
// cannot. Plain open/read: no allocation, so it is safe on a Spindle
// thread and does not itself change the heap.
inline bool read_small_file(const char* path, char* buf, std::size_t size) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = ::read(fd, buf, size - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  return true;
}

// Resident set size of this process in bytes (/proc/self/statm, field 2).
inline long rss_bytes() {
  char buf[128];
  long size = 0, resident = 0;
  if (!read_small_file("/proc/self/statm", buf, sizeof buf)) return -1;
  if (std::sscanf(buf, "%ld %ld", &size, &resident) != 2) return -1;
  return resident * ::sysconf(_SC_PAGESIZE);
}

// Lines of /proc/self/maps: the host mappings (VMAs) this process holds,
// the count vm.max_map_count limits. Plain open/read, as above.
inline long host_mappings() {
  int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[4096];
  long lines = 0;
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) {
    for (ssize_t i = 0; i < n; ++i) lines += buf[i] == '\n';
  }
  ::close(fd);
  return lines;
}

// The integer a one-number file holds (e.g. /proc/sys/vm/max_map_count), or -1.
inline long read_long_file(const char* path) {
  char buf[64];
  return read_small_file(path, buf, sizeof buf) ? std::strtol(buf, nullptr, 10) : -1;
}

// Every timed benchmark: 5 repetitions of at least 0.2 s in real time; the
// summaries use the median.
inline constexpr double kMinTime = 0.2;
inline constexpr int kRepetitions = 5;
inline benchmark::internal::Benchmark* timed(const char* name, void (*fn)(benchmark::State&)) {
  return benchmark::RegisterBenchmark(name, fn)
      ->UseRealTime()
      ->MinTime(kMinTime)
      ->Repetitions(kRepetitions)
      ->DisplayAggregatesOnly()
      ->Unit(benchmark::kNanosecond);
}

// The benchmark's result by name, or nullptr; a counter of it, or -1.
inline const Result* find(const std::map<std::string, Result>& res, const char* k) {
  auto it = res.find(k);
  return it == res.end() ? nullptr : &it->second;
}
inline double counter_of(const std::map<std::string, Result>& res, const char* k, const char* c) {
  const Result* r = find(res, k);
  if (!r) return -1;
  auto it = r->counters.find(c);
  return it == r->counters.end() ? -1 : it->second;
}

// The host's 1-minute load average when the binary started (-1: unknown).
inline double g_load_at_start = -1;

// The main() of every benchmark binary: registers the benchmarks, runs them
// through a Recorder and prints summary(results, out) after them (on
// stdout, or stderr with --benchmark_format=json|csv).
template <class Register, class Summary>
int run_benchmarks(int argc, char** argv, Register register_benchmarks, Summary print_summary) {
  if (::getloadavg(&g_load_at_start, 1) != 1) g_load_at_start = -1;
  // glibc takes single-threaded fast paths (non-atomic refcounts, no malloc
  // arena locking) until the process has created a thread. The Spindle
  // runs have vCPU threads anyway; make every anchor run in a
  // multi-threaded process too, as in real use.
  std::thread([] {}).join();
  std::string format = "console";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--benchmark_format=", 19) == 0) format = argv[i] + 19;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_benchmarks();
  Recorder rec(make_display_reporter(format));
  benchmark::RunSpecifiedBenchmarks(&rec);
  print_summary(rec.results, format == "console" ? stdout : stderr);
  benchmark::Shutdown();
  return 0;
}

}  // namespace spindle_bench
