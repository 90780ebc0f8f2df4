// processes: three isolated processes started from this same app. Each
// prints its id and adds to its own copy of a global counter: a child
// starts with the counter's initial value (fresh globals), whatever the
// parent did to its copy, and the parent's copy is unchanged by the
// children. Exits non-zero if any copy is wrong.
#include <spindle/spindle.h>

namespace {

constexpr int kInitial = 100;
int g_counter = kInitial;  // one copy per process

int child(int index, int increments) {
  int start = g_counter;
  for (int i = 0; i < increments; ++i) ++g_counter;
  spindle::print("  process %u (child %d): counter started at %d, now %d\n", spindle::this_process::id(), index, start,
                 g_counter);
  // The exit code tells the parent what this copy saw: 0 if right.
  return start == kInitial && g_counter == kInitial + increments ? 0 : 1;
}

}  // namespace

int spindle_main(int, char**) {
  g_counter = 5;  // the parent's copy; children must not see this
  spindle::print("parent process %u: counter = %d, starting 3 processes\n", spindle::this_process::id(), g_counter);
  spindle::Process procs[3];
  for (int i = 0; i < 3; ++i) {
    spindle::ProcessOptions opts;
    opts.name = "counter";
    auto p = spindle::Process::spawn(opts, child, i + 1, 1000 * (i + 1));
    if (!p.ok()) {
      spindle::print("cannot start process %d: %s\n", i + 1, spindle::to_string(p.status()));
      return 1;
    }
    procs[i] = std::move(p).value();
  }
  int failures = 0;
  for (int i = 0; i < 3; ++i) {
    spindle::ProcessId pid = procs[i].pid();
    auto st = procs[i].join();
    char why[128];
    if (!st.ok() || !st->success()) {
      spindle::print("process %u failed: %s\n", pid, st.ok() ? st->describe(why, sizeof why) : to_string(st.status()));
      ++failures;
    }
  }
  bool parent_ok = g_counter == 5;
  spindle::print("parent's counter is still %d: %s\n", g_counter,
                 parent_ok ? "the children changed only their own copies" : "WRONG: a child changed it");
  if (!parent_ok) ++failures;
  spindle::print("%s\n", failures == 0 ? "processes: ok" : "processes: FAILED");
  return failures == 0 ? 0 : 1;
}
