// Runs the in-kernel test cases (tests/kernel) on the host: each ktest case
// becomes a Catch2 test case that boots a fresh hosted kernel with at least
// two vCPUs (more if the case asks), runs the case as the kernel's main
// thread, and reports its failures to Catch2. A case that can run on one
// CPU is registered a second time, "NAME (one vCPU)", booted with one: the
// same-CPU paths (a wake-up queued without placement, the flat give to a
// lone waiter, a blocking thread's direct pick) are then the common case,
// as on QEMU -smp 1, and run under the sanitizers too.
#include <algorithm>
#include <string>

// The kernel owns SIGSEGV (stack-overflow containment); Catch2 must not.
#define CATCH_CONFIG_NO_POSIX_SIGNALS
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "../kernel/ktest.h"
#include "spindle/hosted.h"

namespace {

int run_in_kernel(void* p) {
  auto* c = static_cast<const spindle::ktest::Case*>(p);
  return static_cast<int>(spindle::ktest::run_case(*c));
}

class KtestInvoker : public Catch::ITestInvoker {
 public:
  KtestInvoker(const spindle::ktest::Case* c, unsigned cpus) : case_(c), cpus_(cpus) {}
  void invoke() const override {
#if defined(__SANITIZE_THREAD__)
    if (case_->switches_in_signal) {
      WARN("skipped under ThreadSanitizer: needs a thread switch inside a signal handler, which TSan cannot "
           "follow (runs in the hosted and hosted-debug builds)");
      return;
    }
#endif
    spindle::hosted::Options opts;
    opts.cpus = cpus_;
    int failures = spindle::hosted::run(opts, run_in_kernel, const_cast<spindle::ktest::Case*>(case_));
    unsigned recorded = std::min(spindle::ktest::failure_count(), spindle::ktest::kMaxFailures);
    for (unsigned i = 0; i < recorded; ++i) {
      const auto& f = spindle::ktest::failure(i);
      FAIL_CHECK(std::string(f.file) + ":" + std::to_string(f.line) + ": " + f.message);
    }
    REQUIRE(failures == static_cast<int>(spindle::ktest::failure_count()));
    REQUIRE(failures == 0);
  }

 private:
  const spindle::ktest::Case* case_;
  unsigned cpus_;
};

void register_case(const spindle::ktest::Case* c, unsigned cpus, const std::string& name, const char* tags) {
  Catch::getMutableRegistryHub().registerTest(Catch::makeTestCase(new KtestInvoker(c, cpus), "",
                                                                  Catch::NameAndTags{name, tags},
                                                                  Catch::SourceLineInfo(c->file, c->line)));
}

}  // namespace

int main(int argc, char** argv) {
  if (int code; spindle::hosted::run_if_spawned(argc, argv, &code)) return code;  // a test's Process::spawn
  for (const spindle::ktest::Case* c = spindle::ktest::first_case(); c; c = c->next) {
    register_case(c, std::max(2u, c->min_cpus), c->name, "[kernel]");
    if (c->min_cpus <= 1) register_case(c, 1, std::string(c->name) + " (one vCPU)", "[kernel][one-vcpu]");
  }
  return Catch::Session().run(argc, argv);
}
