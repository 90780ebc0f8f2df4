// aarch64 bare-metal backend (QEMU `virt`): types and inline fast paths of
// the arch contract (see arch/arch.h).
//
// The kernel runs at EL1 in the upper half of the address space (TTBR1);
// TTBR0 is left for per-process address spaces. Per-CPU data is reached
// through TPIDR_EL1 (the CpuArea of this CPU), the kernel's running thread
// through SP_EL0 and the thread's visible head through TPIDRRO_EL0, both
// rewritten by the scheduler on every switch: each is one `mrs`, so none
// can be stale after a migration.
//
// Interrupt masking is PSTATE.I (DAIF). Besides the hardware sources (the
// generic timer, SGIs from other CPUs), `pending` holds interrupts raised in
// software: an IPI a CPU sends to itself is only a bit here, delivered by
// the next irq_enable/irq_restore, so "preempt at the next unmask" is exact
// and costs no trip through the GIC.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "spindle/status.h"

#if !defined(__aarch64__)
#error "the aarch64 backend is built with an aarch64 compiler"
#endif

namespace spindle::kernel {
extern bool g_in_user_process;  // arch.h: the kernel's side, User mode
}

namespace spindle::arch {

// The backend starts at most this many CPUs (MPIDR Aff0 0..7 on `virt`).
inline constexpr unsigned kMaxCpusAarch64 = 8;

struct CpuArea {
  std::atomic<std::uint32_t> pending{0};  // kIrq* bits raised in software
  std::uint32_t id = 0;
  void* kernel = nullptr;                 // back-pointer to kernel::Cpu
  std::uintptr_t fault_stack_top = 0;     // offset 16: read by the vectors (vectors.S)
  std::uintptr_t probe_resume = 0;        // offset 24: set by a probe in progress (probe.S), else 0
  // Offsets 32, 40: copies of the running thread's kernel and visible
  // thread pointers (set_*), which the EL0 entry path reloads into SP_EL0
  // and TPIDRRO_EL0 (vectors.S). Written by this CPU only, irqs masked.
  void* kernel_thread = nullptr;
  void* thread = nullptr;
  std::atomic<std::uint32_t> relax_spins{0};  // cpu_relax calls, to pace its yields
  struct CpuAsid* asid = nullptr;         // this CPU's ASID state (user.cc), for the switch's fast path
};
static_assert(offsetof(CpuArea, fault_stack_top) == 16, "vectors.S reads CpuArea::fault_stack_top at 16");
static_assert(offsetof(CpuArea, probe_resume) == 24, "probe.S writes CpuArea::probe_resume at 24");
static_assert(offsetof(CpuArea, kernel_thread) == 32 && offsetof(CpuArea, thread) == 40,
              "vectors.S reads CpuArea::kernel_thread and ::thread at 32 and 40");

// The saved state of a thread that is not running: its stack pointer. The
// callee-saved registers x19..x30 are on that stack (switch.S); an
// interrupted thread also has its complete exception frame there.
struct Context {
  void* sp = nullptr;
};

struct StackRegion {
  void* base = nullptr;
  std::size_t size = 0;
};

using IrqState = std::uint64_t;  // DAIF as read

inline CpuArea* cpu_area() {
  CpuArea* p;
  asm volatile("mrs %0, tpidr_el1" : "=r"(p));
  return p;
}

// The kernel's current thread lives in SP_EL0: the kernel runs on SP_EL1
// (SPSel = 1), so SP_EL0 is free at EL1 and EL0 code cannot read it there
// (at EL0 it is the user's stack pointer, saved and restored by the EL0
// entry path). Reading SP_EL0 at EL1 needs SPSel = 1, which always holds.
inline void* kernel_thread_pointer() {
  void* p;
  asm volatile("mrs %0, sp_el0" : "=r"(p));
  return p;
}

// TPIDRRO_EL0: readable (not writable) at EL0, see arch.h for its rule.
inline void* thread_pointer() {
  void* p;
  asm volatile("mrs %0, tpidrro_el0" : "=r"(p));
  return p;
}
// Both registers, and their copies in the CpuArea, which the EL0 entry
// path reloads (vectors.S).
inline void set_thread_pointers(void* kernel, void* visible) {
  asm volatile("msr sp_el0, %0\n\tmsr tpidrro_el0, %1" ::"r"(kernel), "r"(visible) : "memory");
  CpuArea* a = cpu_area();
  a->kernel_thread = kernel;
  a->thread = visible;
}

inline bool irqs_enabled() {
  std::uint64_t daif;
  asm volatile("mrs %0, daif" : "=r"(daif)::"memory");
  return (daif & (1u << 7)) == 0;
}

// Delivers interrupts raised in software; called by irq_enable when any are.
void irq_deliver_pending();

inline IrqState irq_save() {
  std::uint64_t daif;
  asm volatile("mrs %0, daif\n\tmsr daifset, #2" : "=r"(daif)::"memory");
  return daif;
}

inline void irq_enable() {
  asm volatile("msr daifclr, #2" ::: "memory");
  // Preemption right after the unmask is fine: cpu_area() is then the new
  // CPU's, and its bits are the ones that concern this thread now.
  if (cpu_area()->pending.load(std::memory_order_relaxed) != 0) irq_deliver_pending();
}

inline void irq_restore(IrqState s) {
  if ((s & (1u << 7)) == 0) irq_enable();
}

// A spin-wait pause: mostly `isb` (it really waits for the pipeline to
// drain, where `yield` is a no-op on many cores), and `yield` every 512th
// time. Under QEMU's single-threaded round-robin (which -icount forces) a
// `yield` hands the host thread to the next vCPU for its whole time slice:
// a spin that waits for another CPU needs that to make progress at all,
// but yielding on every iteration stretches a short bounded spin (a
// Mutex's, before it sleeps) to many milliseconds of virtual time. The
// count is per CPU and only a heuristic: a migrating caller may bump
// another CPU's count, which does no harm.
// In a process's copy (EL0, where TPIDR_EL1 cannot be read) the count is
// the process's own.
inline std::atomic<std::uint32_t> g_user_relax_spins{0};
inline void cpu_relax() {
  std::atomic<std::uint32_t>& spins =
      kernel::g_in_user_process ? g_user_relax_spins : cpu_area()->relax_spins;
  std::uint32_t n = spins.load(std::memory_order_relaxed) + 1;
  spins.store(n, std::memory_order_relaxed);
  if ((n & 511) == 0) {
    asm volatile("yield" ::: "memory");
  } else {
    asm volatile("isb" ::: "memory");
  }
}

void cpu_init_local(CpuArea* area, unsigned id);
unsigned cpu_count();
void run_cpus(void (*entry)(unsigned cpu));
void send_ipi(unsigned cpu);
void idle_wait(const WatchedWord* watch, unsigned n);

void context_init(Context* c, void* stack_lo, std::size_t size, void (*entry)(void*), void* arg);
void context_switch(Context* from, Context* to);
[[noreturn]] void context_switch_final(Context* to);
void context_switch_to_user(Context* from, void* frame);  // contract: arch.h, User mode
inline void context_destroy(Context*) {}
inline void context_adopt(Context* c) { c->sp = nullptr; }  // filled by the first switch away

std::uint64_t now_ns();
void set_timer(std::uint64_t deadline_ns);

StackRegion stack_alloc(std::size_t size);
void stack_free(StackRegion r);
// contract: arch.h, CPUs. Here an exclusive load/store pair: about the
// cost of the plain pair and the one-CPU test.
inline constexpr bool kAtomicRmwCostly = false;
inline constexpr std::size_t kPageSize = 4096;
// Unmapped virtual space below every stack. As on hosted: large enough that
// a function with a big frame cannot step over it.
inline constexpr std::size_t kGuardSize = 64 * 1024;
inline bool in_guard(const StackRegion& r, std::uintptr_t addr) {
  auto b = reinterpret_cast<std::uintptr_t>(r.base);
  return addr < b && addr >= b - kGuardSize;
}

// User mode (user.cc; contract in arch.h).
struct AddressSpace;
struct UserEntry;
enum class UserAccess : std::uint8_t;
AddressSpace* address_space_create();
void address_space_destroy(AddressSpace* as);
bool user_map(AddressSpace* as, std::uintptr_t va, std::size_t size, UserAccess access);
void user_unmap(AddressSpace* as, std::uintptr_t va, std::size_t size);
bool user_copy_to(AddressSpace* as, std::uintptr_t va, const void* src, std::size_t n);
// address_space_activate: the fast path inline (below), the rest in user.cc.
void address_space_activate_slow(AddressSpace* as);
[[noreturn]] void enter_user(const UserEntry& entry);
bool user_read(void* dst, std::uintptr_t src, std::size_t n);
bool user_write(std::uintptr_t dst, const void* src, std::size_t n);

// What address_space_activate's inline fast path reads of an address
// space (the first member of AddressSpace, user.cc) and of a CPU's ASID
// state; user.cc has the rest and explains the protocol (the Linux arm64
// scheme). A context word is generation | ASID, the ASID in bits 0..15
// whatever the hardware's width, the generation counted in units of
// 1 << 16, so TTBR0's ASID field is context << 48.
inline constexpr std::uint64_t kAsidField = 0xffff;
struct AddressSpaceHead {
  // generation | ASID; 0: never ran. Written under the ASID lock; read
  // without it by the fast path.
  std::atomic<std::uint64_t> context{0};
  std::uintptr_t l1 = 0;  // PA of the level-1 table
};
struct CpuAsid {
  // The context this CPU loaded in TTBR0 (0: none, or none since the last
  // rollover, which exchanges every CPU's with 0). Written by its CPU (a
  // compare-and-swap in the fast path, a store under the lock in the slow
  // one) and by rollover. A non-zero active is of the current generation:
  // every rollover zeroes it, and only its own CPU makes it non-zero
  // again, with a context of the generation current then.
  std::atomic<std::uint64_t> active{0};
  std::uint64_t reserved = 0;  // context it ran at the last rollover, kept in the new generation
  bool flush_pending = false;  // a rollover happened: flush the local TLB before the next load
  std::atomic<AddressSpace*> current{nullptr};  // loaded in TTBR0; written only by its CPU
};

// Interrupts masked. Fast path: no rollover since this CPU last loaded an
// ASID (active is not 0), so active's generation is the current one, and
// the space has an ASID of that generation (a context of 0, never run, has
// none). A rollover between the checks and the CAS zeroes active, so the
// CAS fails; one after it finds active = the space's context and reserves
// its number. No lock, no flush, no shared load. Anything else (a new
// ASID, a flush after a rollover, no address space): the slow path.
[[gnu::always_inline]] inline void address_space_activate(AddressSpace* as) {
  CpuAsid& c = *cpu_area()->asid;
  if (as == c.current.load(std::memory_order_relaxed)) return;
  if (as) {
    auto* h = reinterpret_cast<AddressSpaceHead*>(as);  // its first member (static_assert in user.cc)
    std::uint64_t ctx = h->context.load(std::memory_order_relaxed);
    std::uint64_t old = c.active.load(std::memory_order_relaxed);
    if (old != 0 && ((ctx ^ old) & ~kAsidField) == 0 &&
        c.active.compare_exchange_strong(old, ctx, std::memory_order_relaxed)) {
      c.current.store(as, std::memory_order_relaxed);
      asm volatile("msr ttbr0_el1, %0\n\tisb" ::"r"((ctx << 48) | h->l1) : "memory");
      return;
    }
  }
  address_space_activate_slow(as);
}

// user_read/user_write for a caller that already has interrupts masked
// (the system-call fast path, kernel::syscall_fast): the same checks and
// results. Inline, with word-aligned copies of whole words done right
// here: a word loop with the probe armed by hand (no state to save, as
// interrupts are masked; probe.S's probes save and mask DAIF themselves).
// A fault resumes at 9 with x0 = ESR (fault.cc), which is not 0; x1 (FAR)
// is written then too, so it is an early-clobber output that no input may
// share. Anything else goes to user_read/user_write.
inline bool user_range_ok(std::uintptr_t va, std::size_t n) {
  // [va, va + n) within [kUserBase, kUserLimit], without overflow: below
  // kUserBase, va - kUserBase wraps past any bound.
  constexpr std::uintptr_t kSpan = kUserLimit - kUserBase;
  return n <= kSpan && va - kUserBase <= kSpan - n;
}
[[gnu::always_inline]] inline bool user_read_masked(void* dst, std::uintptr_t src, std::size_t n) {
  if (n == 0) return true;
  if (!user_range_ok(src, n)) return false;
  auto d = reinterpret_cast<std::uintptr_t>(dst);
  if (((src | d | n) & 3) != 0) return user_read(dst, src, n);
  register std::uint64_t esr asm("x0") = 0;
  register std::uint64_t far asm("x1");
  std::uint64_t t, v;
  asm volatile(
      "adr %[t], 9f\n\t"
      "str %[t], [%[area], #24]\n"   // CpuArea::probe_resume
      "1:\tldtr %w[v], [%[s]]\n\t"
      "str %w[v], [%[d]], #4\n\t"
      "add %[s], %[s], #4\n\t"
      "subs %[n], %[n], #4\n\t"
      "b.ne 1b\n"
      "9:\tstr xzr, [%[area], #24]"
      : "+r"(esr), "=&r"(far), [t] "=&r"(t), [v] "=&r"(v), [s] "+r"(src), [d] "+r"(d), [n] "+r"(n)
      : [area] "r"(cpu_area())
      : "cc", "memory");
  (void)far;
  return esr == 0;
}
[[gnu::always_inline]] inline bool user_write_masked(std::uintptr_t dst, const void* src, std::size_t n) {
  if (n == 0) return true;
  if (!user_range_ok(dst, n)) return false;
  auto s = reinterpret_cast<std::uintptr_t>(src);
  if (((dst | s | n) & 3) != 0) return user_write(dst, src, n);
  register std::uint64_t esr asm("x0") = 0;
  register std::uint64_t far asm("x1");
  std::uint64_t t, v;
  asm volatile(
      "adr %[t], 9f\n\t"
      "str %[t], [%[area], #24]\n"   // CpuArea::probe_resume
      "1:\tldr %w[v], [%[s]], #4\n\t"
      "sttr %w[v], [%[d]]\n\t"
      "add %[d], %[d], #4\n\t"
      "subs %[n], %[n], #4\n\t"
      "b.ne 1b\n"
      "9:\tstr xzr, [%[area], #24]"
      : "+r"(esr), "=&r"(far), [t] "=&r"(t), [v] "=&r"(v), [s] "+r"(s), [d] "+r"(dst), [n] "+r"(n)
      : [area] "r"(cpu_area())
      : "cc", "memory");
  (void)far;
  return esr == 0;
}
bool user_accessible(AddressSpace* as, std::uintptr_t va, std::size_t n, bool write);
void* user_word(AddressSpace* as, std::uintptr_t va, bool write, bool* shared = nullptr);
bool user_map_kernel_pages(AddressSpace* as, std::uintptr_t va, const void* pages, std::size_t size, UserAccess access);
std::uintptr_t image_base();
std::size_t image_size();
bool user_map_image(AddressSpace* as, std::uintptr_t base);
void image_constructors();
std::uintptr_t kernel_space_address();

// A system call from EL0: number in x8, arguments in x0..x5, the result in
// x0; the EL0 entry path saves and restores every other register.
inline std::uint64_t user_syscall(std::uint64_t number, std::uint64_t a0 = 0, std::uint64_t a1 = 0,
                                  std::uint64_t a2 = 0, std::uint64_t a3 = 0, std::uint64_t a4 = 0,
                                  std::uint64_t a5 = 0) {
  register std::uint64_t x8 asm("x8") = number;
  register std::uint64_t x0 asm("x0") = a0;
  register std::uint64_t x1 asm("x1") = a1;
  register std::uint64_t x2 asm("x2") = a2;
  register std::uint64_t x3 asm("x3") = a3;
  register std::uint64_t x4 asm("x4") = a4;
  register std::uint64_t x5 asm("x5") = a5;
  asm volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
  return x0;
}
// The same with x0..x2 as results (kSysChannelCallRegs's reply), five
// arguments: not user_syscall's body, whose x5 the call fast path would
// pay one instruction a direction to set.
struct UserRegs {
  std::uint64_t x0, x1, x2;
};
inline UserRegs user_syscall_regs(std::uint64_t number, std::uint64_t a0, std::uint64_t a1, std::uint64_t a2,
                                  std::uint64_t a3, std::uint64_t a4) {
  register std::uint64_t x8 asm("x8") = number;
  register std::uint64_t x0 asm("x0") = a0;
  register std::uint64_t x1 asm("x1") = a1;
  register std::uint64_t x2 asm("x2") = a2;
  register std::uint64_t x3 asm("x3") = a3;
  register std::uint64_t x4 asm("x4") = a4;
  asm volatile("svc #0" : "+r"(x0), "+r"(x1), "+r"(x2) : "r"(x8), "r"(x3), "r"(x4) : "memory");
  return {x0, x1, x2};
}
// Six arguments (kSysChannelCallRegs with a deadline in x5).
inline UserRegs user_syscall_regs(std::uint64_t number, std::uint64_t a0, std::uint64_t a1, std::uint64_t a2,
                                  std::uint64_t a3, std::uint64_t a4, std::uint64_t a5) {
  register std::uint64_t x8 asm("x8") = number;
  register std::uint64_t x0 asm("x0") = a0;
  register std::uint64_t x1 asm("x1") = a1;
  register std::uint64_t x2 asm("x2") = a2;
  register std::uint64_t x3 asm("x3") = a3;
  register std::uint64_t x4 asm("x4") = a4;
  register std::uint64_t x5 asm("x5") = a5;
  asm volatile("svc #0" : "+r"(x0), "+r"(x1), "+r"(x2) : "r"(x8), "r"(x3), "r"(x4), "r"(x5) : "memory");
  return {x0, x1, x2};
}
// Diagnostics (aarch64 only): the ASID `as` runs with (0: none yet) and
// the ASID width; the syndrome (ESR_EL1) and FAR of the last fault taken
// from EL0 on any CPU, for tests.
unsigned address_space_asid(const AddressSpace* as);
unsigned asid_bits();
// Tests: new ASIDs only below n from now on (0: the full width), so a
// handful of address spaces forces generation rollovers; n must exceed the
// CPU count + 1 (each CPU's running ASID survives a rollover). And how many
// rollovers there were.
void set_asid_limit(unsigned n);
std::uint64_t asid_rollovers();
// Tests: physical pages free right now (memory.cc).
std::size_t free_page_count();
struct LastUserFault {
  std::uint64_t esr;
  std::uint64_t far;
};
LastUserFault last_user_fault();
// Tests and tools: the semihosting command line (QEMU: the image path, then
// the -append text) into buf, NUL-terminated; its length, 0 when there is
// none (no -semihosting, or longer than buf). Thread context.
std::size_t semihosting_command_line(char* buf, std::size_t n);

void console_write(const char* s, std::size_t n);
std::size_t console_read(char* buf, std::size_t n);
[[noreturn]] void halt(int exit_code);

// One kernel runs every process (arch.h: Words shared with other kernels):
// a shared word is keyed by its physical address like any other.
enum class OwnerLiveness : std::uint8_t;
inline bool foreign_word(const void*) { return false; }
inline Status foreign_wait(const std::atomic<std::uint32_t>*, std::uint32_t, std::uint64_t, bool, bool) {
  return Status::kInvalidState;
}
inline unsigned foreign_wake(const std::atomic<std::uint32_t>*, unsigned) { return 0; }
inline OwnerLiveness owner_liveness(std::uint64_t) { return static_cast<OwnerLiveness>(0); }  // kLocal
inline void owner_id_used(std::uint64_t) {}
inline void owner_id_ended(std::uint64_t) {}

}  // namespace spindle::arch
