// Runs the whole in-kernel suite (tests/kernel) in one bare-metal boot:
// every case in registration order, each in a fresh thread with the default
// options, one after another. Skipped: cases that need more CPUs than the
// machine has, and cases marked KTEST_HOST_ONLY. Prints one line per case
// and then "N passed, N failed"; the exit code (semihosting) is 0 only if
// every case that ran passed.
//
// A case must find itself the only live thread, as when it runs as the
// kernel's main thread on hosted (some check system_stats().threads). So
// the runner keeps no thread of its own alive: main starts the first case
// and exits; each case's thread, once its case is done, starts the next
// one (detached) and exits; a new case first waits for its predecessor to
// be gone. The last one prints the summary and ends the system.
#include <arch/arch.h>
#include <spindle/spindle.h>

#include "../kernel/ktest.h"

namespace {

using namespace spindle;

unsigned g_cpus = 0;
unsigned g_passed = 0;
unsigned g_failed = 0;
unsigned g_skipped = 0;

void start_case(const ktest::Case* c);

// The first case from c on that can run here; reports the skipped ones.
const ktest::Case* runnable(const ktest::Case* c) {
  for (; c; c = c->next) {
    if (c->host_only) {
      print("SKIP %s: needs the host (KTEST_HOST_ONLY)\n", c->name);
    } else if (c->min_cpus > g_cpus) {
      print("SKIP %s: needs %u CPUs, have %u\n", c->name, c->min_cpus, g_cpus);
    } else {
      return c;
    }
    ++g_skipped;
  }
  return nullptr;
}

int run(const ktest::Case* c) {
  // Wait for the thread that started us to have exited. A case that left a
  // thread behind (a bug it may have reported) must not hang the suite.
  TimePoint patience = deadline_after(std::chrono::seconds(5));
  while (system_stats().threads > 1 && Clock::now() < patience) this_thread::sleep_for(std::chrono::microseconds(100));
  if (unsigned n = system_stats().threads; n > 1) print("NOTE %u threads left over before %s\n", n - 1, c->name);
  print("RUN  %s\n", c->name);
  TimePoint start = Clock::now();
  unsigned failures = ktest::run_case(*c);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
  if (failures == 0) {
    ++g_passed;
    print("PASS %s (%lld ms)\n", c->name, static_cast<long long>(ms));
  } else {
    ++g_failed;
    print("FAIL %s: %u failure%s (%lld ms)\n", c->name, failures, failures == 1 ? "" : "s", static_cast<long long>(ms));
  }
  start_case(c->next);
  return 0;
}

void start_case(const ktest::Case* c) {
  c = runnable(c);
  if (!c) {
    print("%u skipped\n", g_skipped);
    print("%u passed, %u failed\n", g_passed, g_failed);
    arch::halt(g_failed == 0 ? 0 : 1);
  }
  ThreadOptions opts;
  opts.name = c->name;
  Result<Thread> t = Thread::create(opts, [c] { return run(c); });
  if (!t.ok()) {
    print("FAIL %s: cannot create its thread: %s\n", c->name, to_string(t.status()));
    ++g_failed;
    start_case(c->next);
    return;
  }
  std::move(t).value().detach();
}

}  // namespace

int spindle_main(int, char**) {
  g_cpus = system_stats().cpus;
  print("kernel test suite: %u CPUs\n", g_cpus);
  start_case(ktest::first_case());
  this_thread::exit(0);  // not a return: that would end the system
}
