// fault_containment: processes that misbehave in every way the kernel must
// contain, next to a healthy sibling and the parent doing real work. Each
// bad process must end alone, with join() saying how; the sibling's memory
// must be untouched and both it and the parent must finish their work.
// Exits 0 only if every outcome is the expected one.
#include <spindle/spindle.h>

#include <cstdint>

namespace {

// ---------------------------------------------------------------------------
// The healthy sibling: fills a buffer, tells the parent where it is, works,
// and at the end checks that nobody wrote into it.

constexpr unsigned kWords = 1024;
std::uint64_t g_precious[kWords];

std::uint64_t pattern(unsigned i) { return 0x9E3779B97F4A7C15ull * (i + 1); }

std::uint64_t sum_of_squares(std::uint64_t n) {
  std::uint64_t s = 0;
  for (std::uint64_t i = 1; i <= n; ++i) s += i * i;
  return s;
}

int sibling() {
  auto ch = spindle::Channel::adopt(spindle::this_process::handle(0));
  if (!ch.ok()) return 10;
  for (unsigned i = 0; i < kWords; ++i) g_precious[i] = pattern(i);
  if (ch->send_value(reinterpret_cast<std::uintptr_t>(g_precious)) != spindle::Status::kOk) return 11;
  std::uint64_t total = 0;
  for (int round = 0; round < 20; ++round) {
    total += sum_of_squares(100000);
    spindle::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  auto done = ch->recv_value<int>();  // the parent says when the attacks are over
  if (!done.ok()) return 12;
  for (unsigned i = 0; i < kWords; ++i) {
    if (g_precious[i] != pattern(i)) return 13;  // someone wrote into our memory
  }
  return total == 20 * sum_of_squares(100000) ? 0 : 14;
}

// ---------------------------------------------------------------------------
// The bad ones.

// The bad access must reach the hardware: no sanitizer check first.
__attribute__((no_sanitize("address", "thread", "undefined"))) int null_pointer() {
  volatile int* p = nullptr;
  *p = 1;
  return 0;
}

// The bad access must reach the hardware: no sanitizer check first.
__attribute__((no_sanitize("address", "thread", "undefined"))) int kernel_write() {
  *reinterpret_cast<volatile int*>(spindle::this_process::kernel_space_address()) = 1;
  return 0;
}

// The bad access must reach the hardware: no sanitizer check first.
__attribute__((no_sanitize("address", "thread", "undefined"))) int sibling_write(std::uintptr_t address) {
  // The sibling's buffer address means nothing here: it is unmapped (a
  // fault) or some memory of our own. Either way the sibling's is safe.
  auto* p = reinterpret_cast<volatile std::uint64_t*>(address);
  for (unsigned i = 0; i < kWords; ++i) p[i] = 0xBAD;
  return 0;
}

int recurse(int depth) {
  volatile char pad[1024];
  pad[0] = static_cast<char>(depth);
  if (depth < 0) return 0;  // never: depth only grows (keeps the compiler quiet)
  return recurse(depth + 1) + pad[0];
}
int stack_overflow() { return recurse(0); }

int illegal_instruction() {
  __builtin_trap();
  return 0;
}

// A bad pointer in a system call is refused with an error, not a fault:
// this process exits normally with 0 when the kernel said kInvalidArgument.
int bad_syscall_pointer() {
  auto ch = spindle::Channel::adopt(spindle::this_process::handle(0));
  if (!ch.ok()) return 20;
  auto* bad = reinterpret_cast<const std::byte*>(spindle::this_process::kernel_space_address());
  if (ch->send(std::span<const std::byte>(bad, 64)) != spindle::Status::kInvalidArgument) return 21;
  auto* bad_out = reinterpret_cast<std::byte*>(std::uintptr_t{16});  // the null page
  if (ch->send_value(7) != spindle::Status::kOk) return 22;          // the peer echoes it back
  auto r = ch->recv(std::span<std::byte>(bad_out, 64));
  if (r.ok() || r.status() != spindle::Status::kInvalidArgument) return 23;
  auto again = ch->recv_value<int>();  // refused above, so still queued
  return again.ok() && *again == 7 ? 0 : 24;
}

char* volatile g_last_chunk;  // keeps the allocations observable

int memory_hog() {
  for (;;) {
    auto* chunk = new char[1 << 20];
    for (int i = 0; i < (1 << 20); i += 4096) chunk[i] = 1;  // really use it
    g_last_chunk = chunk;
  }
}

struct Case {
  const char* what;
  spindle::ExitKind kind;
  spindle::FaultKind fault;
};

}  // namespace

int spindle_main(int, char**) {
  using spindle::ExitKind;
  using spindle::FaultKind;
  int failures = 0;
  char why[160];

  auto [to_sibling, sibling_end] = spindle::Channel::create().value();
  spindle::Handle give[] = {sibling_end.handle()};
  spindle::ProcessOptions sopts;
  sopts.name = "sibling";
  sopts.handles = give;
  auto healthy = spindle::Process::spawn(sopts, sibling);
  if (!healthy.ok()) {
    spindle::print("cannot start the sibling: %s\n", spindle::to_string(healthy.status()));
    return 1;
  }
  sibling_end.close();
  auto where = to_sibling.recv_value<std::uintptr_t>();
  if (!where.ok()) {
    auto st = healthy->join();
    spindle::print("the sibling did not report its buffer (%s): it %s\n", spindle::to_string(where.status()),
                   st.ok() ? st->describe(why, sizeof why) : "cannot be joined");
    return 1;
  }

  auto [to_echo, echo_end] = spindle::Channel::create().value();
  const Case cases[] = {
      {"dereference null", ExitKind::kFaulted, FaultKind::kBadAccess},
      {"write kernel memory", ExitKind::kFaulted, FaultKind::kBadAccess},
      {"write the sibling's memory", ExitKind::kFaulted, FaultKind::kBadAccess},
      {"overflow its stack", ExitKind::kFaulted, FaultKind::kStackOverflow},
      {"illegal instruction", ExitKind::kFaulted, FaultKind::kIllegalInstruction},
      {"bad pointer to a system call", ExitKind::kExited, FaultKind::kNone},
      {"exceed its memory limit", ExitKind::kFaulted, FaultKind::kMemoryLimit},
  };
  spindle::Process bad[7];
  spindle::ProcessOptions opts;
  opts.name = "intruder";
  bad[0] = spindle::Process::spawn(opts, null_pointer).value();
  bad[1] = spindle::Process::spawn(opts, kernel_write).value();
  bad[2] = spindle::Process::spawn(opts, sibling_write, *where).value();
  bad[3] = spindle::Process::spawn(opts, stack_overflow).value();
  bad[4] = spindle::Process::spawn(opts, illegal_instruction).value();
  spindle::Handle echo[] = {echo_end.handle()};
  spindle::ProcessOptions eopts = opts;
  eopts.handles = echo;
  bad[5] = spindle::Process::spawn(eopts, bad_syscall_pointer).value();
  echo_end.close();
  spindle::ProcessOptions hog = opts;
  hog.memory_limit = 16 << 20;
  bad[6] = spindle::Process::spawn(hog, memory_hog).value();

  // The parent's own work goes on meanwhile; it also echoes for case 5.
  auto echoed = to_echo.recv_value<int>();
  if (!echoed.ok() || to_echo.send_value(*echoed) != spindle::Status::kOk) ++failures;
  std::uint64_t mine = sum_of_squares(1000000);

  for (int i = 0; i < 7; ++i) {
    auto st = bad[i].join();
    if (!st.ok()) {
      spindle::print("  %-30s join failed: %s\n", cases[i].what, spindle::to_string(st.status()));
      ++failures;
      continue;
    }
    bool ok = st->kind == cases[i].kind && st->fault == cases[i].fault;
    if (i == 2 && st->kind == ExitKind::kExited && st->code == 0) ok = true;  // it wrote its own memory
    spindle::print("  %-30s %s: %s\n", cases[i].what, ok ? "contained" : "WRONG", st->describe(why, sizeof why));
    if (!ok) ++failures;
  }

  (void)to_sibling.send_value(1);  // attacks over: check your memory
  auto sst = healthy->join();
  bool sibling_ok = sst.ok() && sst->success();
  spindle::print("  healthy sibling: %s\n", sibling_ok ? "finished its work, its memory intact"
                                                       : (sst.ok() ? sst->describe(why, sizeof why) : "join failed"));
  if (!sibling_ok) ++failures;
  bool parent_ok = mine == sum_of_squares(1000000);
  spindle::print("  parent: finished its work (%s)\n", parent_ok ? "result checked" : "WRONG result");
  if (!parent_ok) ++failures;
  spindle::print("%s\n", failures == 0 ? "fault_containment: every fault contained" : "fault_containment: FAILED");
  return failures == 0 ? 0 : 1;
}
