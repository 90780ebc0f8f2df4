// main() of a hosted Spindle app: parses the runtime's flags with Abseil,
// boots the kernel and runs spindle_main as its first thread.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "spindle/app.h"
#include "spindle/hosted.h"
#include "spindle/thread.h"

ABSL_FLAG(int, cpus, 0, "number of virtual CPUs (default: every host core)");
ABSL_FLAG(absl::Duration, timeslice, absl::Milliseconds(10),
          "round-robin time slice among equal priorities, e.g. 10ms or 500us");
ABSL_FLAG(bool, cpu_time, false,
          "account CPU time per thread (spindle::stats; costs a clock read at every context switch)");

namespace {

struct MainArgs {
  int argc;
  char** argv;
};

int run_app(void* p) {
  auto* a = static_cast<MainArgs*>(p);
  return spindle_main(a->argc, a->argv);
}

}  // namespace

int main(int argc, char** argv) {
  // A process started by spindle::Process::spawn: run its entry, not the app.
  if (int code; spindle::hosted::run_if_spawned(argc, argv, &code)) return code;
  absl::SetProgramUsageMessage(absl::StrFormat(
      "a Spindle app.\nusage: %s [--cpus=N] [--timeslice=DURATION] [--cpu_time] [-- app arguments]", argv[0]));
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  int cpus = absl::GetFlag(FLAGS_cpus);
  if (cpus < 0 || cpus > 64) {
    absl::FPrintF(stderr, "%s: --cpus=%d is out of range: give 1..64 (or 0 for every host core)\n", argv[0], cpus);
    return 2;
  }
  absl::Duration slice = absl::GetFlag(FLAGS_timeslice);
  const absl::Duration lo = absl::FromChrono(spindle::kMinTimeslice);
  const absl::Duration hi = absl::FromChrono(spindle::kMaxTimeslice);
  if (slice < lo || slice > hi) {
    absl::FPrintF(stderr, "%s: --timeslice=%s is out of range: give %s..%s\n", argv[0], absl::FormatDuration(slice),
                  absl::FormatDuration(lo), absl::FormatDuration(hi));
    return 2;
  }
  spindle::hosted::Options opts;
  opts.cpus = static_cast<unsigned>(cpus);
  opts.timeslice_ns = static_cast<std::uint64_t>(absl::ToInt64Nanoseconds(slice));
  opts.cpu_time = absl::GetFlag(FLAGS_cpu_time);
  rest.push_back(nullptr);
  MainArgs args{static_cast<int>(rest.size()) - 1, rest.data()};
  return spindle::hosted::run(opts, run_app, &args);
}
