// Processes through the portable API (spindle/process.h), on both targets:
// hosted (each a Linux process of this test binary) and QEMU aarch64 (each
// at EL0 in its own address space). Arguments and fresh globals, bad
// options, join timeouts and kill, the thread limit, and nested processes.
// What only one target can check (the fault matrix's details, page counts,
// system-call inputs) is in tests/hosted/process_test.cc and
// tests/qemu/process_test.cc.
#include <spindle/spindle.h>

#include "ktest.h"
#include "ktest_util.h"
#include "process_entries.h"

using namespace spindle;
using namespace std::chrono_literals;
using ktest::count_threads;
using ktest::nest;
using ktest::run_to_end;

namespace {

int g_global = 7;  // fresh in every process

struct Pair {
  int a;
  long b;  // no floating point: aarch64 processes run without FP
};

int echo_args(int x, Pair p, std::span<const std::byte> bytes, char c) {
  int sum = 0;
  for (std::byte b : bytes) sum += static_cast<int>(b);
  // 0 when everything arrived intact and the globals are fresh.
  bool ok = x == 41 && p.a == -3 && p.b == 1234567890123 && sum == 6 && c == 'z' && g_global == 7 &&
            this_process::is_spawned();
  g_global = 99;  // the parent's copy must not see this
  return ok ? 0 : 1;
}

int exit_with(int code) { return code; }
int first_byte_and_size(std::span<const std::byte> b) {
  return static_cast<int>(b[0]) + static_cast<int>(b.size() % 7);
}
int own_id() { return static_cast<int>(this_process::id() & 0x7f); }  // an exit code: 0..255 on Linux
int sleeper() {
  this_thread::sleep_for(10s);
  return 0;
}
// The bad access must reach the hardware: no sanitizer check first.
__attribute__((no_sanitize("address", "thread", "undefined"))) int null_write() {
  *static_cast<volatile int*>(nullptr) = 1;
  return 0;
}

// Spawn, arguments, join_for, kill and join of a child, from a process.
int parent_api() {
  const std::byte bytes[] = {std::byte{1}, std::byte{2}, std::byte{3}};
  g_global = 55;  // the child's copy is fresh all the same
  auto a = Process::spawn(echo_args, 41, Pair{-3, 1234567890123}, std::span<const std::byte>(bytes), 'z');
  if (!a.ok()) return 1;
  auto ast = a->join();
  if (!ast.ok() || !ast->success()) return 2;
  if (a->join().status() != Status::kInvalidState) return 3;
  auto s = Process::spawn(sleeper);
  if (!s.ok()) return 4;
  if (s->join_for(5ms).status() != Status::kTimedOut || !s->joinable()) return 5;
  if (s->kill() != Status::kOk || s->kill() != Status::kOk) return 6;
  auto sst = s->join();
  if (!sst.ok() || sst->kind != ExitKind::kKilled) return 7;
  auto f = Process::spawn(null_write);  // a child's fault is the child's
  if (!f.ok()) return 8;
  auto fst = f->join();
  if (!fst.ok() || fst->kind != ExitKind::kFaulted || fst->fault != FaultKind::kBadAccess) return 9;
  ProcessOptions bad;
  bad.priority = 99;
  if (Process::spawn(bad, exit_with, 0).status() != Status::kInvalidArgument) return 10;
  Handle forged[] = {Handle{0x12345}};
  bad = {};
  bad.handles = forged;
  if (Process::spawn(bad, exit_with, 0).status() != Status::kNotFound) return 11;
  { auto dropped = Process::spawn(sleeper); }  // the handle's end kills and reaps it
  return 0;
}

// The channel end given at spawn is the parent's own; the child answers on it.
int answer_on_handle() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return 1;
  return ch->send_value(4321) == Status::kOk ? 0 : 2;
}
int give_own_handle() {
  auto pair = Channel::create();
  if (!pair.ok()) return 1;
  Handle give[] = {pair->second.handle()};
  ProcessOptions o;
  o.handles = give;
  auto c = Process::spawn(o, answer_on_handle);
  if (!c.ok()) return 2;
  auto v = pair->first.recv_value<int>();
  if (!v.ok() || *v != 4321) return 3;
  auto st = c->join();
  return st.ok() && st->success() ? 0 : 4;
}

}  // namespace

KTEST(process_spawn_passes_arguments_and_fresh_globals, 2) {
  g_global = 1000;  // the parent's copy only
  const std::byte bytes[] = {std::byte{1}, std::byte{2}, std::byte{3}};
  ExitStatus st =
      run_to_end(Process::spawn(echo_args, 41, Pair{-3, 1234567890123}, std::span<const std::byte>(bytes), 'z'));
  KCHECK(st.kind == ExitKind::kExited);
  KCHECK_EQ(st.code, 0);
  KCHECK_EQ(g_global, 1000);
  KCHECK_EQ(run_to_end(Process::spawn(exit_with, 42)).code, 42);
  static std::byte big[kMaxProcessArgBytes - 64];
  big[0] = std::byte{5};
  KCHECK_EQ(run_to_end(Process::spawn(first_byte_and_size, std::span<const std::byte>(big))).code,
            5 + static_cast<int>((kMaxProcessArgBytes - 64) % 7));
  auto p = Process::spawn(own_id);
  KREQUIRE(p.ok());
  ProcessId pid = p->pid();
  KCHECK(pid != this_process::id() && pid != 0);
  auto own = p->join();
  KREQUIRE(own.ok());
  KCHECK_EQ(static_cast<ProcessId>(own->code), pid & 0x7f);  // the process sees the id its parent sees
  KCHECK(!p->joinable());
  KCHECK(p->join().status() == Status::kInvalidState);
  KCHECK(p->kill() == Status::kInvalidState);
  KCHECK(!this_process::is_spawned());
}

KTEST(process_spawn_rejects_bad_options, 2) {
  ProcessOptions o;
  o.priority = 99;
  KCHECK(Process::spawn(o, exit_with, 0).status() == Status::kInvalidArgument);
  o = {};
  o.affinity = CpuMask();
  KCHECK(Process::spawn(o, exit_with, 0).status() == Status::kInvalidArgument);
  o = {};
  Handle forged[] = {Handle{0x12345}};
  o.handles = forged;
  KCHECK(Process::spawn(o, exit_with, 0).status() == Status::kNotFound);
  static std::byte too_big[kMaxProcessArgBytes + 1];
  KCHECK(Process::spawn(first_byte_and_size, std::span<const std::byte>(too_big)).status() ==
         Status::kInvalidArgument);
}

KTEST(process_kill_and_join_timeout, 2) {
  auto p = Process::spawn(sleeper);
  KREQUIRE(p.ok());
  KCHECK(p->join_for(50ms).status() == Status::kTimedOut);
  KCHECK(p->joinable());
  KCHECK(p->kill() == Status::kOk);
  auto st = p->join();
  KREQUIRE(st.ok());
  KCHECK(st->kind == ExitKind::kKilled);
  KCHECK(p->kill() == Status::kInvalidState);
  // Dropping a running process kills and reaps it.
  { auto q = Process::spawn(sleeper); }
}

KTEST(process_thread_limit_is_enforced, 2) {
  ProcessOptions o;
  o.thread_limit = 3;  // the first thread + 2
  KCHECK_EQ(run_to_end(Process::spawn(o, count_threads)).code, 2);
  KCHECK_EQ(run_to_end(Process::spawn(count_threads)).code, 16);
}

// A process spawns, joins and kills its own children, 4 levels deep, and
// gives them its own handles.
KTEST(process_spawns_joins_and_kills_its_children, 2) {
  char why[160];
  ExitStatus st = run_to_end(Process::spawn(ProcessOptions{.name = "parent"}, parent_api));
  if (!st.success()) KFAIL("parent_api: %s", st.describe(why, sizeof why));
  KCHECK_EQ(run_to_end(Process::spawn(nest, 4)).code, 9);
  KCHECK_EQ(run_to_end(Process::spawn(give_own_handle)).code, 0);
}
