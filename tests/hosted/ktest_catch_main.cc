// Runs the in-kernel test cases (tests/kernel) on the host: each ktest case
// becomes a Catch2 test case that boots a fresh hosted kernel with at least
// two vCPUs (more if the case asks), runs the case as the kernel's main
// thread, and reports its failures to Catch2.
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
  explicit KtestInvoker(const spindle::ktest::Case* c) : case_(c) {}
  void invoke() const override {
#if defined(__SANITIZE_THREAD__)
    if (case_->switches_in_signal) {
      WARN("skipped under ThreadSanitizer: needs a thread switch inside a signal handler, which TSan cannot "
           "follow (runs in the hosted and hosted-debug builds)");
      return;
    }
#endif
    spindle::hosted::Options opts;
    opts.cpus = std::max(2u, case_->min_cpus);
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
};

}  // namespace

int main(int argc, char** argv) {
  if (int code; spindle::hosted::run_if_spawned(argc, argv, &code)) return code;  // a test's Process::spawn
  for (const spindle::ktest::Case* c = spindle::ktest::first_case(); c; c = c->next) {
    Catch::getMutableRegistryHub().registerTest(Catch::makeTestCase(
        new KtestInvoker(c), "", Catch::NameAndTags{c->name, "[kernel]"}, Catch::SourceLineInfo(c->file, c->line)));
  }
  return Catch::Session().run(argc, argv);
}
