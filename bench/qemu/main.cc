// qemu_bench: deterministic instruction counts of kernel paths on QEMU
// aarch64 (bare metal only), set beside Zephyr's published latency_measure
// cycle counts and seL4's published IPC figures.
//
// What is counted: instructions retired, read from the PMU event counter 0
// programmed with INST_RETIRED (event 0x08). Under QEMU with
// -icount shift=0,sleep=off these counts are exact and repeat run to run.
// They are INSTRUCTIONS, not cycles: QEMU models no pipeline, caches or
// TLBs, so a comparison with cycle counts measured on real hardware is only
// a rough guide (see docs/benchmarks.md).
//
// Every measurement reads the counter before and after the operation and
// subtracts the cost of an empty measurement (two reads back to back). Each
// is repeated many times; the table gives the minimum and the median.
//
// All threads are pinned to CPU 0: the counter is per CPU, and every path
// measured here is a one-CPU path.
#include <arch/arch.h>
#include <spindle/spindle.h>

#include <atomic>
#include <cstdint>

namespace {

using spindle::print;

// --- the PMU ---------------------------------------------------------------

void pmu_enable() {
  std::uint64_t type = 0x08;  // INST_RETIRED, counted at EL0 and EL1
  asm volatile("msr pmevtyper0_el0, %0" ::"r"(type));
  asm volatile("msr pmccfiltr_el0, xzr");
  std::uint64_t enable = (std::uint64_t{1} << 31) | 1;  // cycle counter + counter 0
  asm volatile("msr pmcntenset_el0, %0" ::"r"(enable));
  std::uint64_t pmcr;
  asm volatile("mrs %0, pmcr_el0" : "=r"(pmcr));
  pmcr |= 7;  // enable, reset the event counters and the cycle counter
  asm volatile("msr pmcr_el0, %0" ::"r"(pmcr));
  asm volatile("isb" ::: "memory");
}

// Event counters are 32 bits on a Cortex-A53: differences are taken mod 2^32.
inline std::uint32_t insns() {
  std::uint64_t v;
  asm volatile("mrs %0, pmevcntr0_el0" : "=r"(v)::"memory");
  return static_cast<std::uint32_t>(v);
}

inline std::uint64_t cntvct() {
  std::uint64_t v;
  asm volatile("isb\n\tmrs %0, cntvct_el0" : "=r"(v)::"memory");
  return v;
}

// --- samples ---------------------------------------------------------------

constexpr int kRuns = 1000;

struct Samples {
  std::uint32_t v[kRuns];
  int n = 0;
  void add(std::uint32_t x) {
    if (n < kRuns) v[n++] = x;
  }
  void sort() {
    for (int gap = n / 2; gap > 0; gap /= 2) {
      for (int i = gap; i < n; ++i) {
        std::uint32_t x = v[i];
        int j = i;
        for (; j >= gap && v[j - gap] > x; j -= gap) v[j] = v[j - gap];
        v[j] = x;
      }
    }
  }
  std::uint32_t min() const { return v[0]; }
  std::uint32_t median() const { return v[n / 2]; }
  std::uint32_t max() const { return v[n - 1]; }
};

Samples g_s;           // the current benchmark's samples
std::uint32_t g_ovh;   // an empty measurement (minimum)

// Clamp at zero after subtracting the empty measurement.
std::uint32_t net(std::uint32_t a, std::uint32_t b) {
  std::uint32_t d = b - a;
  return d > g_ovh ? d - g_ovh : 0;
}

// --- the report ------------------------------------------------------------

struct Row {
  const char* name;
  std::uint32_t min, median, max;
  std::uint32_t reference;  // the published figure (cycles); 0: none given
  const char* source;       // whose figure: "Zephyr" or "seL4"
};

constexpr int kMaxRows = 24;
Row g_rows[kMaxRows];
int g_nrows = 0;

// Sorts the current samples into a row; div: samples per operation (2 for
// a round trip of two switches).
void finish(const char* name, std::uint32_t zephyr, std::uint32_t div = 1) {
  g_s.sort();
  if (g_nrows < kMaxRows) {
    g_rows[g_nrows++] = Row{name, g_s.min() / div, g_s.median() / div, g_s.max() / div, zephyr, "Zephyr"};
  }
  g_s.n = 0;
}

void report() {
  print("\n%-44s %9s %9s %9s %8s %-6s %6s %s\n", "benchmark (Spindle: instructions)", "min", "median", "max",
        "ref.", "source", "ratio", "at/below");
  for (int i = 0; i < g_nrows; ++i) {
    const Row& r = g_rows[i];
    if (r.reference == 0) {
      print("%-44s %9u %9u %9u %8s %-6s %6s %s\n", r.name, r.min, r.median, r.max, "-", "-", "-", "n/a");
      continue;
    }
    // ratio = median / reference, two decimals, integer arithmetic (no FPU).
    unsigned hundredths = (r.median * 100u + r.reference / 2) / r.reference;
    print("%-44s %9u %9u %9u %8u %-6s %3u.%02u %s\n", r.name, r.min, r.median, r.max, r.reference, r.source,
          hundredths / 100, hundredths % 100, r.median <= r.reference ? "yes" : "no");
  }
  print("\nSpindle columns: instructions retired (PMU event 0x08) under QEMU -icount, empty-measurement\n"
        "overhead (%u) subtracted, %d runs each. Reference column: CYCLES, from Zephyr's latency_measure\n"
        "on a 120 MHz MCU, or seL4's published IPC figures on a Cortex-A57 (call 407 and reply 416, one\n"
        "way each: 823 a round trip). Instructions are not cycles; 'at/below' compares the median with\n"
        "that figure.\n",
        g_ovh, kRuns);
}

// --- helpers ---------------------------------------------------------------

spindle::ThreadOptions pinned(const char* name, int priority) {
  spindle::ThreadOptions o;
  o.name = name;
  o.priority = priority;
  o.stack_size = spindle::kMinStackSize;
  o.affinity = spindle::CpuMask::only(0);
  return o;
}

bool check(bool ok, const char* what) {
  if (!ok) print("qemu_bench: %s failed\n", what);
  return ok;
}

constexpr int kMainPriority = 16;

// --- 0. the empty measurement -----------------------------------------------

void bench_empty() {
  for (int i = 0; i < kRuns; ++i) {
    std::uint32_t a = insns();
    std::uint32_t b = insns();
    g_s.add(b - a);
  }
  g_s.sort();
  g_ovh = g_s.min();
  g_s.n = 0;
}

// --- 1. yield switch ----------------------------------------------------------

std::atomic<bool> g_stop{false};

bool bench_yield() {
  g_stop.store(false);
  auto t = spindle::Thread::create(pinned("yield partner", kMainPriority), [] {
    while (!g_stop.load(std::memory_order_relaxed)) spindle::this_thread::yield();
  });
  if (!check(t.ok(), "create yield partner")) return false;
  for (int i = 0; i < 10; ++i) spindle::this_thread::yield();  // partner is running its loop
  for (int i = 0; i < kRuns; ++i) {
    std::uint32_t a = insns();
    spindle::this_thread::yield();  // to the partner, which yields straight back
    std::uint32_t b = insns();
    g_s.add(net(a, b));
  }
  g_stop.store(true);
  spindle::this_thread::yield();
  check(t.value().join() == spindle::Status::kOk, "join yield partner");
  finish("yield switch (round trip / 2)", 519, 2);
  return true;
}

// Sub-step: a yield that finds no other thread of its priority (no switch).
void bench_yield_alone() {
  for (int i = 0; i < kRuns; ++i) {
    std::uint32_t a = insns();
    spindle::this_thread::yield();
    std::uint32_t b = insns();
    g_s.add(net(a, b));
  }
  finish("  sub-step: yield, nobody to switch to", 0);
}

// --- 2. semaphore -------------------------------------------------------------

void bench_sem_nowait() {
  spindle::Semaphore s(0);
  Samples give, take;
  for (int i = 0; i < kRuns; ++i) {
    std::uint32_t a = insns();
    (void)s.release();
    std::uint32_t b = insns();
    s.acquire();
    std::uint32_t c = insns();
    give.add(net(a, b));
    take.add(net(b, c));
  }
  g_s = give;
  finish("semaphore give, no waiter", 134);
  g_s = take;
  finish("semaphore take, available", 53);
}

std::atomic<std::uint32_t> g_t0{0};

bool bench_sem_wake() {
  static spindle::Semaphore s(0);
  static Samples* out;
  out = &g_s;
  auto t = spindle::Thread::create(pinned("sem waiter", kMainPriority + 4), [] {
    for (int i = 0; i < kRuns + 1; ++i) {
      s.acquire();
      std::uint32_t b = insns();
      if (i > 0) out->add(net(g_t0.load(std::memory_order_relaxed), b));
    }
  });
  if (!check(t.ok(), "create sem waiter")) return false;
  // The waiter is more urgent: it ran at once and now waits in acquire.
  for (int i = 0; i < kRuns + 1; ++i) {
    std::uint32_t a = insns();
    g_t0.store(a, std::memory_order_relaxed);
    (void)s.release();  // wakes the waiter, which preempts us at once
  }
  check(t.value().join() == spindle::Status::kOk, "join sem waiter");
  finish("semaphore give, wakes more urgent waiter", 0);
  return true;
}

// Sub-step: a give that wakes a LESS urgent waiter: the wake without the
// switch. After each give the measuring thread sleeps briefly, so the waiter
// runs, takes the unit and waits again.
bool bench_sem_wake_noswitch() {
  static spindle::Semaphore s(0);
  g_stop.store(false);
  auto t = spindle::Thread::create(pinned("sem waiter", kMainPriority - 4), [] {
    for (;;) {
      s.acquire();
      if (g_stop.load(std::memory_order_relaxed)) return;
    }
  });
  if (!check(t.ok(), "create sem waiter")) return false;
  (void)spindle::this_thread::sleep_for(std::chrono::microseconds(10));  // now it waits
  for (int i = 0; i < kRuns; ++i) {
    std::uint32_t a = insns();
    (void)s.release();
    std::uint32_t b = insns();
    g_s.add(net(a, b));
    (void)spindle::this_thread::sleep_for(std::chrono::microseconds(10));
  }
  g_stop.store(true);
  (void)s.release();
  check(t.value().join() == spindle::Status::kOk, "join sem waiter");
  finish("  sub-step: give, wakes less urgent waiter", 0);
  return true;
}

// --- 3. mutex -------------------------------------------------------------------

// An uncontended Mutex's lock and its unlock, each measured alone (the
// same code in a kernel thread and, in section 6, in a process).
Samples g_lock, g_unlock;
void measure_mutex() {
  spindle::Mutex m;
  for (int i = 0; i < kRuns; ++i) {
    std::uint32_t a = insns();
    m.lock();
    std::uint32_t b = insns();
    m.unlock();
    std::uint32_t c = insns();
    g_lock.add(net(a, b));
    g_unlock.add(net(b, c));
  }
}

void bench_mutex() {
  measure_mutex();
  g_s = g_lock;
  finish("mutex lock, uncontended", 94);
  g_s = g_unlock;
  finish("mutex unlock, uncontended", 24);
}

// --- 4. timer interrupt to thread wake-up -------------------------------------
//
// A less urgent thread keeps CPU 0 busy, so the CPU never idles and, with
// -icount shift=0, virtual time advances exactly one ns per instruction.
// The measuring thread waits for a counter tick edge (a multiple of 16 ns:
// QEMU's counter runs at 62.5 MHz), reads the instruction counter (p0) and
// sleeps until that edge + kSleepNs. The timer fires exactly at the
// deadline, i.e. when the instruction counter reaches p0 + kSleepNs (less
// the few instructions between the edge and p0). Latency = p1 - that.

constexpr std::uint64_t kSleepNs = 20'000;

bool bench_wakeup(bool busy) {
  g_stop.store(false);
  spindle::Thread spinner;
  if (busy) {
    auto t = spindle::Thread::create(pinned("spinner", spindle::kMinPriority + 1), [] {
      while (!g_stop.load(std::memory_order_relaxed)) {
      }
    });
    if (!check(t.ok(), "create spinner")) return false;
    spinner = std::move(t).value();
  }
  (void)spindle::this_thread::set_priority(kMainPriority + 4);
  Samples clock_ns;
  for (int i = 0; i < kRuns; ++i) {
    std::uint64_t t = cntvct();
    std::uint64_t edge;
    while ((edge = cntvct()) == t) {
    }
    std::uint32_t p0 = insns();
    std::uint64_t deadline = edge * 16 + kSleepNs;
    (void)spindle::this_thread::sleep_until(spindle::TimePoint(spindle::Duration(deadline)));
    std::uint32_t p1 = insns();
    std::uint64_t woke = cntvct();
    g_s.add(busy ? p1 - p0 - static_cast<std::uint32_t>(kSleepNs) : net(p0, p1));
    clock_ns.add(static_cast<std::uint32_t>(woke * 16 - deadline));
  }
  (void)spindle::this_thread::set_priority(kMainPriority);
  g_stop.store(true);
  if (busy) check(spinner.join() == spindle::Status::kOk, "join spinner");
  if (busy) {
    finish("timer deadline -> thread running (instr.)", 0);
    g_s = clock_ns;
    finish("  same, by the virtual clock (16 ns steps)", 0);
  } else {
    // Idle CPU: the counter stops while the CPU sleeps in WFI, so this is
    // the instructions of the whole sleep: block, idle, interrupt, wake.
    finish("sleep_until round trip, idle CPU (instr.)", 0);
  }
  return true;
}

// --- 5. thread create + join ---------------------------------------------------

bool bench_create_join() {
  for (int i = 0; i < kRuns; ++i) {
    std::uint32_t a = insns();
    auto t = spindle::Thread::create(pinned("short", kMainPriority), [] { return 0; });
    if (!check(t.ok(), "create")) return false;
    (void)t.value().join();
    std::uint32_t b = insns();
    g_s.add(net(a, b));
  }
  finish("thread create + join (same priority)", 0);
  return true;
}

// --- 6. processes: null system call, channel round trips ---------------------
//
// Measured inside the processes (EL0 reads the PMU: PMUSERENR_EL0.EN, set
// on CPU 0 before they start), both processes pinned to CPU 0. Each
// process measures its own empty measurement (its copy of the image has
// fresh globals) and sends {min, median, max} to the app on a results
// channel (its handle 1; the null-call process: handle 0).

struct Stats {
  std::uint32_t min, median, max;
};

Stats stats_of_samples() {
  g_s.sort();
  Stats st{g_s.min(), g_s.median(), g_s.max()};
  g_s.n = 0;
  return st;
}

int proc_null(int runs) {
  auto out = spindle::Channel::adopt(spindle::this_process::handle(0));
  if (!out.ok()) return 1;
  bench_empty();
  for (int i = 0; i < runs; ++i) {
    std::uint32_t a = insns();
    (void)spindle::arch::user_syscall(spindle::kernel::kSysNull);
    std::uint32_t b = insns();
    g_s.add(net(a, b));
  }
  return out->send_value(stats_of_samples()) == spindle::Status::kOk ? 0 : 2;
}

// measure_mutex in a process: lock and unlock run at EL0 (no system call
// when uncontended).
struct MutexStats {
  Stats lock, unlock;
};
int proc_mutex(int) {
  auto out = spindle::Channel::adopt(spindle::this_process::handle(0));
  if (!out.ok()) return 1;
  bench_empty();
  measure_mutex();
  g_s = g_lock;
  Stats lock = stats_of_samples();
  g_s = g_unlock;
  Stats unlock = stats_of_samples();
  return out->send_value(MutexStats{lock, unlock}) == spindle::Status::kOk ? 0 : 2;
}

// mode 0: send then recv; mode 1: call with buffers; mode 2: call_value
// (in registers); mode 3: call_value with a deadline (an hour ahead, made
// before the loop; the server's side is mode 2's).
int proc_ping(int mode, int runs) {
  auto ch = spindle::Channel::adopt(spindle::this_process::handle(0));
  auto out = spindle::Channel::adopt(spindle::this_process::handle(1));
  if (!ch.ok() || !out.ok()) return 1;
  const spindle::TimePoint deadline = spindle::deadline_after(std::chrono::hours(1));
  bench_empty();
  for (int i = 0; i < runs + 10; ++i) {  // 10 warm-up rounds (the server's first recv)
    std::uint32_t a = insns();
    int v = -1;
    if (mode == 0) {
      if (ch->send_value(i) != spindle::Status::kOk) return 2;
      auto r = ch->recv_value<int>();
      if (!r.ok()) return 3;
      v = *r;
    } else if (mode == 1) {
      auto r = ch->call(std::as_bytes(std::span<const int, 1>(&i, 1)), std::as_writable_bytes(std::span<int, 1>(&v, 1)));
      if (!r.ok() || r->bytes != sizeof v) return 3;
    } else if (mode == 2) {
      auto r = ch->call_value<int>(i);
      if (!r.ok()) return 3;
      v = *r;
    } else {
      auto r = ch->call_value<int>(i, deadline);
      if (!r.ok()) return 3;
      v = *r;
    }
    std::uint32_t b = insns();
    if (v != i) return 4;
    if (i >= 10) g_s.add(net(a, b));
  }
  return out->send_value(stats_of_samples()) == spindle::Status::kOk ? 0 : 5;
}

// Echoes every request; mode 0: recv then send; mode 1: reply_and_recv;
// modes 2 and 3: reply_and_recv_value (an int).
int proc_echo(int mode) {
  auto ch = spindle::Channel::adopt(spindle::this_process::handle(0));
  if (!ch.ok()) return 1;
  std::byte buf[64];
  auto first = ch->recv(buf);
  if (!first.ok()) return 2;
  std::size_t n = first->bytes;
  if (mode >= 2) {
    int v;
    __builtin_memcpy(&v, buf, sizeof v);
    for (;;) {
      auto r = ch->reply_and_recv_value<int>(v);
      if (!r.ok()) return r.status() == spindle::Status::kClosed ? 0 : 4;
      v = *r;
    }
  }
  for (;;) {
    if (mode == 0) {
      if (ch->send(std::span<const std::byte>(buf, n)) != spindle::Status::kOk) return 3;
      auto r = ch->recv(buf);
      if (!r.ok()) return r.status() == spindle::Status::kClosed ? 0 : 4;
      n = r->bytes;
    } else {
      auto r = ch->reply_and_recv(std::span<const std::byte>(buf, n), buf);
      if (!r.ok()) return r.status() == spindle::Status::kClosed ? 0 : 4;
      n = r->bytes;
    }
  }
}

// One-way times, measured as sel4bench measures seL4's IPC call and reply:
// the caller reads the counter before its call_value, the server reads it
// as soon as its reply_and_recv_value has returned with the request, and
// replies with that reading; the caller reads the counter again once its
// call has returned. Call direction: caller's first reading -> server's;
// reply direction: server's -> caller's second. Both processes run on
// CPU 0, whose counter both read.
// seL4's published IPC figures (mean cycles, Cortex-A57 TX1; prior-art.md):
// a call, client to server, and a reply, server to client, one way each.
constexpr std::uint32_t kSel4Call = 407;
constexpr std::uint32_t kSel4Reply = 416;
struct OneWayStats {
  Stats call, reply;
};
int proc_ping_one_way(int runs) {
  auto ch = spindle::Channel::adopt(spindle::this_process::handle(0));
  auto out = spindle::Channel::adopt(spindle::this_process::handle(1));
  if (!ch.ok() || !out.ok()) return 1;
  bench_empty();
  Samples reply;
  for (int i = 0; i < runs + 10; ++i) {  // 10 warm-up rounds
    std::uint32_t a = insns();
    auto r = ch->call_value<std::uint32_t>(static_cast<std::uint32_t>(i));
    std::uint32_t b = insns();
    if (!r.ok()) return 3;
    std::uint32_t t = *r;  // the server's reading, between a and b
    if (t - a > b - a) return 4;
    if (i >= 10) {
      g_s.add(net(a, t));
      reply.add(net(t, b));
    }
  }
  OneWayStats st;
  st.call = stats_of_samples();
  g_s = reply;
  st.reply = stats_of_samples();
  return out->send_value(st) == spindle::Status::kOk ? 0 : 5;
}

// proc_ping_one_way's server: answers each request with the counter read
// as soon as the request arrived.
int proc_stamp() {
  auto ch = spindle::Channel::adopt(spindle::this_process::handle(0));
  if (!ch.ok()) return 1;
  auto first = ch->recv_value<std::uint32_t>();
  if (!first.ok()) return 2;
  std::uint32_t t = insns();
  for (;;) {
    auto r = ch->reply_and_recv_value<std::uint32_t>(t);
    t = insns();
    if (!r.ok()) return r.status() == spindle::Status::kClosed ? 0 : 4;
  }
}

void add_row(const char* name, const Stats& st, std::uint32_t reference, const char* source = "Zephyr") {
  if (g_nrows < kMaxRows) g_rows[g_nrows++] = Row{name, st.min, st.median, st.max, reference, source};
}

// A server and a measuring process joined by a channel (handle 0 of
// each); the measuring process sends its result R on a second channel (its
// handle 1). Both spawned with o (affinity: CPU 0) by the given functions;
// false, with a message naming `what`, if anything fails.
template <class R, class SpawnServer, class SpawnPinger>
bool run_pair(spindle::ProcessOptions o, const char* what, R* result, SpawnServer spawn_server,
              SpawnPinger spawn_pinger) {
  auto [a, b] = spindle::Channel::create().value();
  auto [mine, theirs] = spindle::Channel::create().value();
  spindle::Handle ga[] = {a.handle(), theirs.handle()};
  spindle::Handle gb[] = {b.handle()};
  o.handles = gb;
  auto server = spawn_server(o);
  o.handles = ga;
  auto pinger = spawn_pinger(o);
  if (!check(server.ok() && pinger.ok(), "spawn")) return false;
  a.close();
  b.close();
  theirs.close();
  auto st = mine.recv_value<R>();
  auto j1 = pinger->join();
  auto j2 = server->join();
  if (!check(st.ok() && j1.ok() && j1->success() && j2.ok() && j2->success(), what)) return false;
  *result = *st;
  return true;
}

bool bench_processes() {
  std::uint64_t el0_reads = 1;  // PMUSERENR_EL0.EN: EL0 may read the counters (this CPU: 0)
  asm volatile("msr pmuserenr_el0, %0\n\tisb" ::"r"(el0_reads));
  spindle::ProcessOptions o;
  o.affinity = spindle::CpuMask::only(0);
  {
    auto [mine, theirs] = spindle::Channel::create().value();
    spindle::Handle give[] = {theirs.handle()};
    o.handles = give;
    auto p = spindle::Process::spawn(o, proc_null, kRuns);
    if (!check(p.ok(), "spawn")) return false;
    theirs.close();
    auto st = mine.recv_value<Stats>();
    if (!check(st.ok() && p->join().ok(), "null system call")) return false;
    add_row("null system call (process)", *st, 0);
  }
  {
    auto [mine, theirs] = spindle::Channel::create().value();
    spindle::Handle give[] = {theirs.handle()};
    o.handles = give;
    auto p = spindle::Process::spawn(o, proc_mutex, 0);
    if (!check(p.ok(), "spawn")) return false;
    theirs.close();
    auto st = mine.recv_value<MutexStats>();
    if (!check(st.ok() && p->join().ok(), "mutex in a process")) return false;
    add_row("mutex lock, uncontended (process)", st->lock, 94);
    add_row("mutex unlock, uncontended (process)", st->unlock, 24);
  }
  const char* names[4] = {"channel round trip: send + recv each side", "channel round trip: call / reply_and_recv",
                          "channel round trip: call_value (registers)",
                          "channel round trip: call_value, deadline"};
  for (int mode = 0; mode < 4; ++mode) {
    auto serve = [mode](const spindle::ProcessOptions& so) { return spindle::Process::spawn(so, proc_echo, mode); };
    auto ping = [mode](const spindle::ProcessOptions& po) {
      return spindle::Process::spawn(po, proc_ping, mode, kRuns);
    };
    Stats st;
    if (!run_pair(o, names[mode], &st, serve, ping)) return false;
    // seL4's call + reply for the call rows (a round trip each); seL4 has
    // no send + recv pair to compare with, nor IPC timeouts.
    add_row(names[mode], st, mode == 1 || mode == 2 ? kSel4Call + kSel4Reply : 0, "seL4");
  }
  auto stamp = [](const spindle::ProcessOptions& so) { return spindle::Process::spawn(so, proc_stamp); };
  auto ping = [](const spindle::ProcessOptions& po) { return spindle::Process::spawn(po, proc_ping_one_way, kRuns); };
  OneWayStats one_way;
  if (!run_pair(o, "one-way call_value", &one_way, stamp, ping)) return false;
  add_row("call_value one way: the call", one_way.call, kSel4Call, "seL4");
  add_row("call_value one way: the reply", one_way.reply, kSel4Reply, "seL4");
  return true;
}

}  // namespace

int spindle_main(int, char**) {
  if (spindle::this_thread::set_affinity(spindle::CpuMask::only(0)) != spindle::Status::kOk) return 1;
  pmu_enable();
  print("qemu_bench: %u CPU(s); instruction counts on CPU 0\n", spindle::system_stats().cpus);
  if (insns() == 0 && insns() == 0) {
    print("qemu_bench: the PMU instruction counter reads 0 (run QEMU with -icount shift=0,sleep=off)\n");
    return 1;
  }
  bench_empty();
  bool ok = bench_yield();
  bench_yield_alone();
  bench_sem_nowait();
  ok = bench_sem_wake() && ok;
  ok = bench_sem_wake_noswitch() && ok;
  bench_mutex();
  ok = bench_wakeup(true) && ok;
  ok = bench_wakeup(false) && ok;
  ok = bench_create_join() && ok;
  ok = bench_processes() && ok;
  report();
  return ok ? 0 : 1;
}
