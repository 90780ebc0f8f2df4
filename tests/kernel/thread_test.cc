// Thread lifecycle: create/join at scale, exit codes, detach, suspend,
// stack overflow containment, bad arguments.
#include "ktest_util.h"

#if defined(__x86_64__)
#include <cfenv>
#endif

using namespace spindle;
using namespace spindle::ktest;
using namespace std::chrono_literals;

KTEST(create_join_10000, 1) {
  unsigned bad = 0;
  for (int i = 0; i < 10000; ++i) {
    Thread t = spawn("short", 16, CpuMask::all(), [i] { return i % 1000; });
    int code = -1;
    if (t.join(&code) != Status::kOk || code != i % 1000) ++bad;
  }
  KCHECK_EQ(bad, 0u);
  // And in batches that are alive at the same time.
  constexpr int kBatch = 200;
  static Thread batch[kBatch];
  static std::atomic<int> ran{0};
  ran = 0;
  for (int round = 0; round < 10; ++round) {
    for (auto& t : batch) t = spawn("batch", 16, CpuMask::all(), [] { ran.fetch_add(1); });
    for (auto& t : batch) KCHECK(t.join() == Status::kOk);
  }
  KCHECK_EQ(ran.load(), 10 * kBatch);
  KCHECK_EQ(system_stats().threads, 1u);  // only main is left
}

KTEST(exit_codes, 1) {
  Thread a = spawn("returns", 16, CpuMask::all(), [] { return 42; });
  Thread b = spawn("exits", 16, CpuMask::all(), [] {
    [] { this_thread::exit(7); }();
    return 1;  // not reached
  });
  Thread c = spawn("void", 16, CpuMask::all(), [] {});
  int ca = 0, cb = 0, cc = -1;
  KCHECK(a.join(&ca) == Status::kOk);
  KCHECK(b.join(&cb) == Status::kOk);
  KCHECK(c.join(&cc) == Status::kOk);
  KCHECK_EQ(ca, 42);
  KCHECK_EQ(cb, 7);
  KCHECK_EQ(cc, 0);
  static int arg_seen = 0;
  auto r = Thread::create(ThreadOptions{}, [](void* p) { arg_seen = *static_cast<int*>(p); return 3; },
                          static_cast<void*>(&ca));
  KREQUIRE(r.ok());
  Thread d = std::move(r).value();
  int cd = 0;
  KCHECK(d.join(&cd) == Status::kOk);
  KCHECK_EQ(cd, 3);
  KCHECK_EQ(arg_seen, 42);
}

KTEST(join_long_after_exit, 1) {
  Thread t = spawn("early", 16, CpuMask::all(), [] { return 5; });
  this_thread::sleep_for(100ms);
  ThreadStats s;
  KCHECK(thread_stats(t.id(), &s) == Status::kOk);
  KCHECK(s.state[0] == 'd');  // dead, waiting to be joined
  int code = 0;
  KCHECK(t.join(&code) == Status::kOk);
  KCHECK_EQ(code, 5);
  KCHECK(!t.joinable());
}

KTEST(join_timeout, 1) {
  Thread t = spawn("sleeper", 16, CpuMask::all(), [] { this_thread::sleep_for(200ms); });
  TimePoint start = Clock::now();
  KCHECK(t.join_for(20ms) == Status::kTimedOut);
  KCHECK(Clock::now() - start >= 20ms);
  KCHECK(t.joinable());  // a timed-out join leaves the handle as it was
  KCHECK(t.join() == Status::kOk);
}

KTEST(detached_threads_clean_up, 2) {
  static std::atomic<int> done{0};
  done = 0;
  for (int i = 0; i < 100; ++i) {
    Thread t = spawn("detached", 16, CpuMask::all(), [] {
      this_thread::sleep_for(1ms);
      done.fetch_add(1);
    });
    KCHECK(t.detach() == Status::kOk);
    KCHECK(!t.joinable());
    KCHECK(t.detach() == Status::kInvalidState);
  }
  KCHECK(wait_until([] { return done.load() == 100 && system_stats().threads == 1; }));
}

KTEST(bad_arguments_rejected, 1) {
  ThreadOptions o;
  o.priority = 99;
  KCHECK(Thread::create(o, [] {}).status() == Status::kInvalidArgument);
  o.priority = -1;
  KCHECK(Thread::create(o, [] {}).status() == Status::kInvalidArgument);
  o = ThreadOptions{};
  o.stack_size = 0;
  KCHECK(Thread::create(o, [] {}).status() == Status::kInvalidArgument);
  o.stack_size = kMaxStackSize + 1;
  KCHECK(Thread::create(o, [] {}).status() == Status::kInvalidArgument);
  o = ThreadOptions{};
  o.affinity = CpuMask();
  KCHECK(Thread::create(o, [] {}).status() == Status::kInvalidArgument);
  o.affinity = CpuMask::only(63);
  KCHECK(Thread::create(o, [] {}).status() == Status::kInvalidArgument);
  KCHECK(Thread::create(ThreadOptions{}, static_cast<int (*)(void*)>(nullptr), nullptr).status() ==
         Status::kInvalidArgument);

  Thread empty;
  KCHECK(empty.join() == Status::kInvalidState);
  KCHECK(empty.detach() == Status::kInvalidState);
  KCHECK(empty.resume() == Status::kInvalidState);
  KCHECK(empty.set_priority(3) == Status::kInvalidState);

  Thread t = spawn("target", 16, CpuMask::all(), [] {});
  KCHECK(t.set_priority(32) == Status::kInvalidArgument);
  KCHECK(t.set_affinity(CpuMask()) == Status::kInvalidArgument);
  KCHECK(t.join() == Status::kOk);
  KCHECK(t.join() == Status::kInvalidState);  // joining twice
  KCHECK(this_thread::set_priority(40) == Status::kInvalidArgument);

  Duration slice = timeslice();
  KCHECK(slice == std::chrono::milliseconds(10));  // the boot default
  KCHECK(set_timeslice(kMinTimeslice - 1ns) == Status::kInvalidArgument);
  KCHECK(set_timeslice(kMaxTimeslice + 1ns) == Status::kInvalidArgument);
  KCHECK(timeslice() == slice);  // unchanged by the rejected calls
  KCHECK(set_timeslice(3ms) == Status::kOk);
  KCHECK(timeslice() == 3ms);
  KCHECK(set_timeslice(slice) == Status::kOk);
}

KTEST(join_self_is_deadlock, 1) {
  static std::atomic<Thread*> handle{nullptr};
  static std::atomic<int> result{-1};
  handle = nullptr;
  static Thread t;
  t = spawn("selfish", 16, CpuMask::all(), [] {
    while (!handle.load()) this_thread::yield();
    result = static_cast<int>(handle.load()->join());
  });
  handle = &t;
  KCHECK(wait_until([] { return result.load() != -1; }));
  KCHECK_EQ(result.load(), static_cast<int>(Status::kDeadlock));
  KCHECK(t.join() == Status::kOk);
}

KTEST_SIGNAL_SWITCH(suspend_and_resume, 2) {
  static std::atomic<std::uint64_t> spins{0};
  static std::atomic<bool> stop{false};
  stop = false;
  spins = 0;
  Thread t = spawn("spinner", 16, CpuMask::only(1), [] {
    while (!stop.load()) spins.fetch_add(1);
  });
  KREQUIRE(wait_until([] { return spins.load() > 0; }));
  KCHECK(t.suspend() == Status::kOk);
  this_thread::sleep_for(5ms);  // let the suspension land on CPU 1
  std::uint64_t a = spins.load();
  this_thread::sleep_for(50ms);
  KCHECK_EQ(spins.load(), a);
  KCHECK(t.resume() == Status::kOk);
  KCHECK(wait_until([&] { return spins.load() > a; }));
  stop = true;
  KCHECK(t.join() == Status::kOk);

  // A blocked thread that is suspended stays held when its wait ends.
  static std::atomic<bool> woke{false};
  woke = false;
  Thread s = spawn("sleeper", 16, CpuMask::all(), [] {
    this_thread::sleep_for(20ms);
    woke = true;
  });
  this_thread::sleep_for(2ms);
  KCHECK(s.suspend() == Status::kOk);
  this_thread::sleep_for(60ms);
  KCHECK(!woke.load());
  ThreadStats st;
  KCHECK(thread_stats(s.id(), &st) == Status::kOk);
  KCHECK(st.state[0] == 's');
  KCHECK(s.resume() == Status::kOk);
  KCHECK(s.join() == Status::kOk);
  KCHECK(woke.load());

  // Suspending yourself blocks until someone resumes you.
  static std::atomic<int> phase{0};
  static std::atomic<bool> published{false};
  phase = 0;
  published = false;
  static Thread self;
  self = spawn("self", 16, CpuMask::all(), [] {
    phase = 1;
    while (!published.load()) this_thread::yield();
    self.suspend();
    phase = 2;
  });
  published = true;
  KCHECK(wait_until([] {
    ThreadStats x;
    return phase.load() == 1 && thread_stats(self.id(), &x) == Status::kOk && x.state[0] == 's';
  }));
  KCHECK_EQ(phase.load(), 1);
  KCHECK(self.resume() == Status::kOk);
  KCHECK(self.join() == Status::kOk);
  KCHECK_EQ(phase.load(), 2);
}

namespace {
volatile bool g_recursion_ends = false;  // never set: a way out the compiler cannot rule out (-Winfinite-recursion)
int recurse(int depth) {
  if (g_recursion_ends) return depth;
  volatile char pad[512];
  pad[0] = static_cast<char>(depth);
  return recurse(depth + 1) + pad[0];
}
}  // namespace

KTEST_SIGNAL_SWITCH(stack_overflow_contained, 2) {
  static std::atomic<std::uint64_t> healthy{0};
  static std::atomic<bool> stop{false};
  stop = false;
  healthy = 0;
  Thread sibling = spawn("sibling", 16, CpuMask::all(), [] {
    while (!stop.load()) {
      healthy.fetch_add(1);
      this_thread::yield();
    }
  });
  Thread bad = spawn("overflower", 16, CpuMask::all(), [] { return recurse(0); });
  int code = 0;
  KCHECK(bad.join(&code) == Status::kFaulted);
  KCHECK_EQ(code, -1);
  std::uint64_t h = healthy.load();
  KCHECK(wait_until([&] { return healthy.load() > h + 10; }));
  stop = true;
  KCHECK(sibling.join() == Status::kOk);
  // The system is still whole: threads come and go as before.
  Thread after = spawn("after", 16, CpuMask::all(), [] { return 9; });
  KCHECK(after.join(&code) == Status::kOk);
  KCHECK_EQ(code, 9);
}

KTEST(stats_account_cpu_time, 2) {
  CpuTimeAccounting accounting;
  // Main stays off the busy thread's CPU: its sleep timer must not depend on
  // an interrupt reaching a CPU whose thread never enters the kernel.
  KREQUIRE(this_thread::set_affinity(CpuMask::only(0)) == Status::kOk);
  static std::atomic<bool> stop{false};
  stop = false;
  Thread t = spawn("busy", 16, CpuMask::only(1), [] {
    while (!stop.load()) {
    }
  });
  this_thread::sleep_for(100ms);
  stop = true;
  KREQUIRE(wait_until([&] {
    ThreadStats s;
    return thread_stats(t.id(), &s) == Status::kOk && s.state[0] == 'd';
  }));
  ThreadStats s;
  KREQUIRE(thread_stats(t.id(), &s) == Status::kOk);
  KCHECK(s.cpu_time_ns >= 80'000'000ull);
  KCHECK(s.switches >= 1);
  KCHECK(s.stack_size == kDefaultStackSize);
  KCHECK(s.stack_high_water > 0 && s.stack_high_water < s.stack_size);
  SystemStats sys = system_stats();
  KCHECK(sys.cpus >= 2u);  // the case asks for at least 2
  KCHECK(sys.uptime_ns >= 100'000'000ull);
  KCHECK(sys.cpu_time);
  print_stats();
  KCHECK(t.join() == Status::kOk);
}

// Threads are charged nothing while accounting is off (the default), from
// the moment it is turned on, and keep their totals when it is turned off
// again. Idle time is kept either way.
KTEST(stats_cpu_time_accounting_switch, 2) {
  CpuTimeAccounting scope(false);  // restores it at the end; switched by hand below
  KREQUIRE(this_thread::set_affinity(CpuMask::only(0)) == Status::kOk);
  SystemStats idle_before = system_stats();
  KCHECK(!idle_before.cpu_time);
  this_thread::sleep_for(20ms);  // CPU 1 has nothing to run
  KCHECK(system_stats().cpu[1].idle_ns > idle_before.cpu[1].idle_ns);
  static std::atomic<bool> stop{false};
  stop = false;
  Thread t = spawn("busy", 16, CpuMask::only(1), [] {
    while (!stop.load()) this_thread::yield();  // switches, but nobody else is here
  });
  this_thread::sleep_for(50ms);
  KCHECK_EQ(cpu_time_of(t.id()), 0ull);
  TimePoint on_at = Clock::now();
  KREQUIRE(set_cpu_time_accounting(true) == Status::kOk);
  KCHECK(cpu_time_accounting());
  this_thread::sleep_for(50ms);
  KREQUIRE(set_cpu_time_accounting(false) == Status::kOk);
  auto on_for = static_cast<std::uint64_t>(std::chrono::nanoseconds(Clock::now() - on_at).count());
  std::uint64_t charged = cpu_time_of(t.id());
  // Charged from the switch-on, not from its start 50 ms before: at most
  // the time accounting was on, and most of it (the thread had CPU 1 alone).
  KCHECK(charged <= on_for);
  KCHECK(charged >= on_for / 2);
  this_thread::sleep_for(20ms);
  KCHECK_EQ(cpu_time_of(t.id()), charged);  // off: the total stays
  stop = true;
  KCHECK(t.join() == Status::kOk);
}

#if defined(__x86_64__)
// The hosted switch restores a thread's SSE and x87 control words (the
// rounding mode here) only when they differ from the running ones. Three
// threads on one CPU, two rounding up and one to nearest, so a switch
// sometimes loads the words and sometimes skips them; first by yields,
// then by time-slice preemption (a switch out of a signal handler). Each
// thread checks both control registers and an actual rounding all along.
namespace {
unsigned mxcsr_rounding() {
  std::uint32_t v;
  asm volatile("stmxcsr %0" : "=m"(v));
  return (v >> 13) & 3;
}
unsigned x87_rounding() {
  std::uint16_t v;
  asm volatile("fnstcw %0" : "=m"(v));
  return (v >> 10) & 3;
}
// 1/3 in double, rounded by the current SSE mode: up gives the larger one.
bool third_rounds_up() {
  volatile double one = 1.0, three = 3.0;
  volatile double q = one / three;
  volatile double lower = 0.333333333333333314829616256247390992939472198486328125;  // nearest = down here
  return q > lower;
}
struct RoundingCheck {
  int mode;
  std::atomic<unsigned> bad{0};
  std::atomic<unsigned> rounds{0};
  void verify() {
    unsigned want = mode == FE_UPWARD ? 2u : 0u;  // RC field: 0 nearest, 2 up
    if (mxcsr_rounding() != want || x87_rounding() != want || third_rounds_up() != (mode == FE_UPWARD)) {
      bad.fetch_add(1, std::memory_order_relaxed);
    }
    rounds.fetch_add(1, std::memory_order_relaxed);
  }
};
}  // namespace

KTEST_SIGNAL_SWITCH(fp_control_words_follow_each_thread, 1) {
  KREQUIRE(this_thread::set_affinity(CpuMask::only(0)) == Status::kOk);
  static RoundingCheck checks[3];
  checks[0].mode = FE_UPWARD;
  checks[1].mode = FE_TONEAREST;
  checks[2].mode = FE_UPWARD;
  static std::atomic<bool> stop{false};
  static std::atomic<int> last{-1};
  static std::atomic<unsigned> handovers{0};
  stop = false;
  last = -1;
  handovers = 0;
  for (RoundingCheck& c : checks) {
    c.bad = 0;
    c.rounds = 0;
  }
  // Phase 1 (priority 20): 2000 yields each, in turn. Main stays above them
  // until all three are queued, then drops below.
  KREQUIRE(this_thread::set_priority(25) == Status::kOk);
  Thread t[3];
  for (int i = 0; i < 3; ++i) {
    t[i] = spawn("rounding", 20, CpuMask::only(0), [i] {
      RoundingCheck& c = checks[i];
      std::fesetround(c.mode);
      for (int k = 0; k < 2000; ++k) {
        c.verify();
        if (last.exchange(i) != i) handovers.fetch_add(1);
        this_thread::yield();
      }
    });
  }
  KREQUIRE(this_thread::set_priority(kDefaultPriority) == Status::kOk);
  for (Thread& x : t) KCHECK(x.join() == Status::kOk);
  for (RoundingCheck& c : checks) {
    KCHECK_EQ(c.bad.load(), 0u);
    KCHECK_EQ(c.rounds.load(), 2000u);
  }
  KCHECK(handovers.load() >= 3000u);  // they did take turns
  // Phase 2: busy loops rotated by 1 ms slices (main sleeps on the same CPU).
  const Duration old_slice = timeslice();
  KREQUIRE(set_timeslice(1ms) == Status::kOk);
  for (int i = 0; i < 3; ++i) {
    checks[i].rounds = 0;
    t[i] = spawn("rounding", 8, CpuMask::only(0), [i] {
      RoundingCheck& c = checks[i];
      std::fesetround(c.mode);
      while (!stop.load(std::memory_order_relaxed)) c.verify();
    });
  }
  this_thread::sleep_for(60ms);
  stop = true;
  std::uint64_t preempted = 0;
  for (Thread& x : t) {
    ThreadStats s;
    if (thread_stats(x.id(), &s) == Status::kOk) preempted += s.preemptions;
  }
  for (Thread& x : t) KCHECK(x.join() == Status::kOk);
  KCHECK(set_timeslice(old_slice) == Status::kOk);
  KCHECK(preempted >= 3);  // the slices did rotate them
  for (RoundingCheck& c : checks) {
    KCHECK_EQ(c.bad.load(), 0u);
    KCHECK(c.rounds.load() > 0u);
  }
  KCHECK(std::fegetround() == FE_TONEAREST);  // main's own mode, untouched
}
#endif
