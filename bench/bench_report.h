// Shared by the Spindle benchmark binaries (bench/*_bench.cc): a reporter
// that keeps each benchmark's median for the "Targets" summary, the choice
// of display reporter, and host-thread pinning for the OS anchors.
#pragma once

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <iostream>
#include <map>
#include <memory>
#include <string>
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

}  // namespace spindle_bench
