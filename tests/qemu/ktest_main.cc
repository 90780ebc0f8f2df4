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
//
// Selection (QEMU's -append, read through semihosting): words that are not
// options keep only the cases whose names contain one of them, and
// `repeat=N` runs the selection N times in the same boot, e.g.
//   qemu-system-aarch64 ... -kernel kernel_tests.elf -append "spinlock_fair repeat=20"
// Without -append every case runs once.
#include <arch/arch.h>
#include <spindle/spindle.h>

#include "../kernel/ktest.h"

namespace {

using namespace spindle;

unsigned g_cpus = 0;
unsigned g_passed = 0;
unsigned g_failed = 0;
unsigned g_skipped = 0;

// The selection from the command line: name fragments (none: every case)
// and the number of rounds.
constexpr unsigned kMaxFilters = 16;
char g_cmdline[512];
const char* g_filters[kMaxFilters];
unsigned g_nfilters = 0;
unsigned g_rounds = 1;
unsigned g_round = 1;

bool contains(const char* s, const char* part) {
  for (; *s; ++s) {
    const char* a = s;
    const char* b = part;
    while (*a && *b && *a == *b) ++a, ++b;
    if (*b == '\0') return true;
  }
  return false;
}

bool selected(const ktest::Case* c) {
  if (g_nfilters == 0) return true;
  for (unsigned i = 0; i < g_nfilters; ++i) {
    if (contains(c->name, g_filters[i])) return true;
  }
  return false;
}

void parse_command_line() {
  if (arch::semihosting_command_line(g_cmdline, sizeof g_cmdline) == 0) return;
  char* p = g_cmdline;
  bool first = true;  // the image's path
  while (*p) {
    while (*p == ' ') ++p;
    if (!*p) break;
    char* word = p;
    while (*p && *p != ' ') ++p;
    if (*p) *p++ = '\0';
    if (first) {
      first = false;
    } else if (word[0] == 'r' && contains(word, "repeat=") && word[6] == '=') {
      unsigned n = 0;
      for (const char* d = word + 7; *d >= '0' && *d <= '9'; ++d) n = n * 10 + static_cast<unsigned>(*d - '0');
      if (n > 0) g_rounds = n;
    } else if (g_nfilters < kMaxFilters) {
      g_filters[g_nfilters++] = word;
    }
  }
}

void start_case(const ktest::Case* c);

// The first case from c on that can run here; reports the skipped ones.
const ktest::Case* runnable(const ktest::Case* c) {
  for (; c; c = c->next) {
    if (!selected(c)) continue;
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
  if (!c && g_round < g_rounds) {
    print("ROUND %u of %u\n", ++g_round, g_rounds);
    c = runnable(ktest::first_case());
  }
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
  parse_command_line();
  print("kernel test suite: %u CPUs\n", g_cpus);
  for (unsigned i = 0; i < g_nfilters; ++i) print("only cases whose names contain '%s'\n", g_filters[i]);
  if (g_rounds > 1) print("%u rounds\n", g_rounds);
  start_case(ktest::first_case());
  this_thread::exit(0);  // not a return: that would end the system
}
