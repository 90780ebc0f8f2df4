#include "ktest.h"

#include <cstdarg>

#include <spindle/console.h>
#include <spindle/task.h>
#include <spindle/thread.h>

#include <chrono>

namespace spindle::ktest {
namespace {
Case* g_first = nullptr;
Case* g_last = nullptr;
Failure g_failures[kMaxFailures];
unsigned g_count = 0;
}  // namespace

Registrar::Registrar(Case* c) {
  // Keep registration order (file order within a file).
  if (g_last) {
    g_last->next = c;
  } else {
    g_first = c;
  }
  g_last = c;
}

Case* first_case() { return g_first; }
unsigned failure_count() { return g_count; }
const Failure& failure(unsigned i) { return g_failures[i]; }

void record_failure(const char* file, int line, const char* fmt, ...) {
  // Failures may come from several threads at once; a slot is claimed with
  // an atomic increment.
  unsigned i = __atomic_fetch_add(&g_count, 1, __ATOMIC_RELAXED);
  if (i >= kMaxFailures) return;
  Failure& f = g_failures[i];
  f.file = file;
  f.line = line;
  va_list ap;
  va_start(ap, fmt);
  vformat(f.message, sizeof f.message, fmt, ap);
  va_end(ap);
  print("  FAILED %s:%d: %s\n", file, line, f.message);
}

unsigned run_case(const Case& c) {
  __atomic_store_n(&g_count, 0, __ATOMIC_RELAXED);
  c.fn();
  // The coroutine executors a case started go with it (under QEMU every
  // case runs in one boot); they restart on the next spawn.
  for (int i = 0; i < 1000 && stop_executors() == Status::kInvalidState; ++i) this_thread::sleep_for(std::chrono::milliseconds(1));
  unsigned n = __atomic_load_n(&g_count, __ATOMIC_RELAXED);
  return n;
}

}  // namespace spindle::ktest
