// User mode on aarch64 (arch.h: User mode; kernel/src/syscall.cc): a
// hand-written position-independent routine is copied into a user page of
// a fresh address space and run at EL0 by a kernel thread (kernel::run_user).
// It makes system calls (a null call, an echo whose result it checks),
// checks what EL0 may see (its own thread pointer, the virtual counter),
// and then does what its mode says: something illegal (the fault must end
// only that thread, reported with the right exception class, while other
// threads keep running), a long spin (timer interrupts taken from EL0 must
// preempt it), or reading a word at the same user address in two address
// spaces (each must see its own page).
#include <arch/arch.h>
#include <spindle/spindle.h>

#include <atomic>
#include <cstdint>

#include "../kernel/ktest.h"
#include "../kernel/ktest_util.h"

// The routine. x0 = the user address of its Params. Exits through
// kSysExit with: the word at Params::address (mode 2), or the word at
// kWord after spinning Params::address iterations (mode 3; 105 if the
// word read differently meanwhile), 100 + n when check n failed, 10/11/12/13 if the illegal step of modes 0/1/4/5 did not
// fault.
extern "C" char user_routine_start[];
extern "C" char user_routine_end[];
asm(R"(
        .pushsection .text.user_routine, "ax"
        .balign 16
        .globl  user_routine_start
user_routine_start:
        mov     x19, x0
        ldp     x20, x21, [x19]         // mode, address
        ldr     x22, [x19, #16]         // the thread pointer EL0 must see
        mov     x8, #0                  // kSysNull
        svc     #0
        cbnz    x0, 1f
        movz    x0, #0x1234
        movk    x0, #0xabcd, lsl #16
        mov     x9, x0
        mov     x8, #1                  // kSysEcho: returns ~x0
        svc     #0
        mvn     x0, x0
        cmp     x0, x9
        b.ne    2f
        mrs     x10, tpidrro_el0
        cmp     x10, x22
        b.ne    3f
        mrs     x11, cntvct_el0         // CNTKCTL_EL1.EL0VCTEN
        isb
        mrs     x12, cntvct_el0
        cmp     x12, x11
        b.lo    4f
        mov     x13, #1
        str     x13, [x19, #24]         // Params::checked
        cmp     x20, #1
        b.eq    20f
        cmp     x20, #2
        b.eq    21f
        cmp     x20, #3
        b.eq    22f
        cmp     x20, #4
        b.eq    23f
        cmp     x20, #5
        b.eq    24f
        ldr     x0, [x21]               // mode 0: a kernel address
        mov     x0, #10
        b       9f
20:     .inst   0x00000000              // mode 1: udf #0
        mov     x0, #11
        b       9f
21:     ldr     x0, [x21]               // mode 2: a user word
        b       9f
22:     mov     x14, x21                // mode 3: spin address times, with a few calls,
        mov     x15, #0                 // reading kWord all along: it must not change
        ldr     x17, [x19, #0x800]
5:      add     x15, x15, #1
        ldr     x16, [x19, #0x800]
        cmp     x16, x17
        b.ne    7f
        tst     x15, #0xfffff
        b.ne    6f
        mov     x8, #0
        svc     #0
6:      cmp     x15, x14
        b.lo    5b
        ldr     x0, [x19, #0x800]       // kWord
        b       9f
7:      mov     x0, #105
        b       9f
23:     adr     x14, user_routine_start // mode 4: write to its own code
        str     xzr, [x14]
        mov     x0, #12
        b       9f
24:     mov     x14, sp                 // mode 5: jump into its stack
        sub     x14, x14, #16
        blr     x14
        mov     x0, #13
        b       9f
1:      mov     x0, #101
        b       9f
2:      mov     x0, #102
        b       9f
3:      mov     x0, #103
        b       9f
4:      mov     x0, #104
9:      mov     x8, #2                  // kSysExit
        svc     #0
        b       .
        .globl  user_routine_end        // global: a PIE reaches it through the GOT
user_routine_end:
        .popsection
)");

namespace {

using namespace spindle;

constexpr std::uintptr_t kCode = 0x400000;
constexpr std::uintptr_t kData = 0x10000000;
constexpr std::uintptr_t kStackLo = 0x7fff0000;
constexpr std::size_t kStackSize = 4 * arch::kPageSize;
constexpr std::uintptr_t kThreadHead = kData + 0x100;  // what TPIDRRO_EL0 points at in user mode
constexpr std::uintptr_t kWord = kData + 0x800;

struct Params {
  std::uint64_t mode;
  std::uint64_t address;
  std::uint64_t thread_pointer;
  std::uint64_t checked;
};

std::uint64_t g_kernel_word = 0x5ec2e7;  // EL0 must not read this

// A fresh address space with the routine, a params page and a stack.
arch::AddressSpace* make_space(std::uint64_t mode, std::uint64_t address, std::uint64_t word) {
  arch::AddressSpace* as = arch::address_space_create();
  if (!as) return nullptr;
  bool ok = arch::user_map(as, kCode, arch::kPageSize, arch::UserAccess::kReadExecute) &&
            arch::user_map(as, kData, arch::kPageSize, arch::UserAccess::kReadWrite) &&
            arch::user_map(as, kStackLo, kStackSize, arch::UserAccess::kReadWrite);
  Params p{mode, address, kThreadHead, 0};
  std::size_t n = static_cast<std::size_t>(user_routine_end - user_routine_start);
  ok = ok && arch::user_copy_to(as, kCode, user_routine_start, n) && arch::user_copy_to(as, kData, &p, sizeof p) &&
       arch::user_copy_to(as, kWord, &word, sizeof word);
  if (!ok) {
    arch::address_space_destroy(as);
    return nullptr;
  }
  return as;
}

// Runs the routine at EL0 in its own thread; returns the join status and
// the exit code.
Thread start_user(const char* name, arch::AddressSpace* as, CpuMask cpus = CpuMask::all()) {
  arch::UserEntry e{kCode, kStackLo + kStackSize, kData, kThreadHead};
  return ktest::spawn(name, kDefaultPriority, cpus, [as, e] { kernel::run_user(as, e); });
}

// A kernel thread that keeps counting while the user threads run.
struct Ticker {
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> ticks{0};
  Thread t;
  explicit Ticker(CpuMask cpus = CpuMask::all()) {
    t = ktest::spawn("ticker", kDefaultPriority, cpus, [this] {
      while (!stop.load()) ticks.fetch_add(1);
    });
  }
  ~Ticker() {
    stop.store(true);
    if (t.joinable()) t.join();
  }
};

// Runs one illegal mode and checks that only the thread died, with the
// exception class and address expected.
void expect_contained(const char* name, std::uint64_t mode, std::uint64_t address, unsigned want_ec,
                      std::uint64_t want_far) {
  arch::AddressSpace* as = make_space(mode, address, 0);
  KREQUIRE(as != nullptr);
  Ticker ticker;
  std::uint64_t before = ticker.ticks.load();
  Thread u = start_user(name, as);
  int code = 0;
  Status s = u.join(&code);
  arch::LastUserFault f = arch::last_user_fault();
  unsigned ec = static_cast<unsigned>(f.esr >> 26);
  print("  %s: join -> %s (exit %d); last EL0 fault: class 0x%x, FAR 0x%llx\n", name, to_string(s), code, ec,
        static_cast<unsigned long long>(f.far));
  KCHECK(s == Status::kFaulted);
  KCHECK_EQ(ec, want_ec);
  KCHECK_EQ(f.far, want_far);
  arch::address_space_destroy(as);
  KCHECK(ktest::wait_until([&] { return ticker.ticks.load() > before; }));  // the system went on
}

}  // namespace

KTEST(user_syscalls_and_two_address_spaces, 1) {
  print("  ASIDs: %u bits\n", arch::asid_bits());
  constexpr std::uint64_t kA = 111, kB = 222;
  arch::AddressSpace* a = make_space(2, kWord, kA);
  arch::AddressSpace* b = make_space(2, kWord, kB);
  KREQUIRE(a != nullptr && b != nullptr);
  Thread ta = start_user("user-a", a);
  Thread tb = start_user("user-b", b);
  int ca = 0, cb = 0;
  KCHECK(ta.join(&ca) == Status::kOk);
  KCHECK(tb.join(&cb) == Status::kOk);
  print("  same VA 0x%llx: space A read %d, space B read %d; ASIDs %u and %u\n", static_cast<unsigned long long>(kWord),
        ca, cb, arch::address_space_asid(a), arch::address_space_asid(b));
  KCHECK_EQ(ca, static_cast<int>(kA));  // also: no check failed before (101..104)
  KCHECK_EQ(cb, static_cast<int>(kB));
  KCHECK(arch::address_space_asid(a) != 0 && arch::address_space_asid(a) != arch::address_space_asid(b));
  arch::address_space_destroy(a);
  arch::address_space_destroy(b);
}

KTEST(user_faults_are_contained, 1) {
  constexpr unsigned kDataAbortEl0 = 0x24, kInstructionAbortEl0 = 0x20, kUndefined = 0x00;
  auto kernel_va = reinterpret_cast<std::uint64_t>(&g_kernel_word);
  expect_contained("user-reads-kernel", 0, kernel_va, kDataAbortEl0, kernel_va);
  expect_contained("user-undefined", 1, 0, kUndefined, 0);
  expect_contained("user-writes-code", 4, 0, kDataAbortEl0, kCode);
  expect_contained("user-jumps-to-stack", 5, 0, kInstructionAbortEl0, kStackLo + kStackSize - 16);
  KCHECK_EQ(g_kernel_word, 0x5ec2e7ull);
}

KTEST(user_mode_is_preempted, 1) {
  // One CPU, two threads of one priority: the user thread spinning at EL0
  // must be preempted by the timer (round robin), or the ticker would
  // never run until it ends.
  CpuMask cpu0 = CpuMask::only(0);
  arch::AddressSpace* as = make_space(3, 30'000'000, 0x33);
  KREQUIRE(as != nullptr);
  Ticker ticker(cpu0);
  Thread u = start_user("user-spin", as, cpu0);
  ThreadId id = u.id();
  std::uint64_t seen = 0;
  for (ThreadStats st; seen == 0 && thread_stats(id, &st) == Status::kOk && st.state[0] != 'd';) {
    if (ticker.ticks.load() > 0 && st.preemptions > 0) seen = st.preemptions;
    this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  int code = 0;
  KCHECK(u.join(&code) == Status::kOk);
  print("  spinning EL0 thread: exit 0x%x, preempted %llu times while the ticker counted %llu\n", code,
        static_cast<unsigned long long>(seen), static_cast<unsigned long long>(ticker.ticks.load()));
  KCHECK_EQ(code, 0x33);
  KCHECK(seen > 0);
  arch::address_space_destroy(as);
}

KTEST(user_asid_rollover_keeps_spaces_apart, 1) {
  // Few ASIDs, many address spaces running at once: every few switches
  // the generation rolls over. Each thread spins (preempted, migrated,
  // its space re-activated with new ASIDs) and then must still read its
  // own word.
  unsigned cpus = system_stats().cpus;
  arch::set_asid_limit(cpus + 2);
  constexpr unsigned kSpaces = 12;
  arch::AddressSpace* as[kSpaces] = {};
  Thread t[kSpaces];
  std::uint64_t rollovers = arch::asid_rollovers();
  for (unsigned i = 0; i < kSpaces; ++i) {
    as[i] = make_space(3, 1'000'000 + 100'000 * i, 1000 + i);
    if (as[i]) t[i] = start_user("user-asid", as[i]);
  }
  // Every space is destroyed only once all threads are joined: each took
  // an ASID at its first switch in and keeps it until destroyed, so twelve
  // spaces on three numbers must roll over. (Destroying each after its own
  // join let the numbers be reused: without -icount the threads finish
  // their spins within a few ms, and a run saw no rollover at all.)
  for (unsigned i = 0; i < kSpaces; ++i) {
    int code = 0;
    KCHECK(as[i] != nullptr);
    if (t[i].joinable()) KCHECK(t[i].join(&code) == Status::kOk);
    KCHECK_EQ(code, static_cast<int>(1000 + i));
  }
  for (unsigned i = 0; i < kSpaces; ++i) arch::address_space_destroy(as[i]);
  rollovers = arch::asid_rollovers() - rollovers;
  arch::set_asid_limit(0);
  print("  %u address spaces on %u ASIDs: %llu rollovers, every space read its own word\n", kSpaces, cpus + 1,
        static_cast<unsigned long long>(rollovers));
  KCHECK(rollovers > 0);
}

KTEST(user_range_check_at_its_bounds, 1) {
  // The inline check every user pointer of the fast paths goes through:
  // [va, va + n) must lie in [kUserBase, kUserLimit), with no overflow.
  using arch::kUserBase;
  using arch::kUserLimit;
  constexpr std::uintptr_t kTop = ~std::uintptr_t{0};
  struct Case {
    std::uintptr_t va;
    std::size_t n;
    bool ok;
  } cases[] = {
      {kUserBase, 0, true},          {kUserBase, 4, true},           {kUserBase - 1, 1, false},
      {kUserBase - 4, 8, false},     {0, 0, false},                  {0, 4, false},
      {kUserLimit - 4, 4, true},     {kUserLimit - 4, 5, false},     {kUserLimit, 0, true},
      {kUserLimit, 1, false},        {kUserBase, kUserLimit - kUserBase, true},
      {kUserBase, kUserLimit - kUserBase + 1, false},                 {kUserBase + 8, kTop - 4, false},
      {kTop, 1, false},              {kTop - 3, 8, false},           {0xffffff8040080000, 4, false},
  };
  for (const Case& c : cases) {
    if (arch::user_range_ok(c.va, c.n) != c.ok) {
      KFAIL("user_range_ok(%#llx, %zu) should be %s", static_cast<unsigned long long>(c.va), c.n,
            c.ok ? "true" : "false");
    }
  }
}
