// Hosted (Linux x86-64) backend: types and inline fast paths of the arch
// contract (see arch/arch.h).
//
// Each virtual CPU is a pinned host thread whose GS base points at its
// CpuArea, so per-CPU data is one %gs-relative instruction away and cannot be
// confused by a Spindle thread migrating between host threads (a C++
// thread_local address could be cached across such a migration).
//
// Interrupts are POSIX signals (the per-vCPU timer and directed IPIs).
// Masking is a flag in the CpuArea, not sigprocmask: a signal that arrives
// while masked only records itself in `pending` and returns; unmasking
// delivers what is pending. So masking costs a store, not a system call.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "spindle/status.h"

#if !defined(__x86_64__)
#error "the hosted backend supports x86-64 Linux hosts"
#endif

// The register switch (switch_x86_64.S); context_switch wraps it.
extern "C" void spindle_hosted_switch(void** save_sp, void* load_sp);

namespace spindle::hosted {
extern std::atomic<unsigned> g_ranges_used;  // shared_words.cc: registered shared regions (upper bound)
}  // namespace spindle::hosted

namespace spindle::arch {

struct CpuArea {
  CpuArea* self = nullptr;        // %gs:0
  std::uint8_t irq_enabled = 0;   // read and written only through %gs
  std::uint8_t pad_[7] = {};
  std::atomic<std::uint32_t> pending{0};    // kIrq* bits awaiting delivery
  std::atomic<std::uint32_t> polling{0};    // idle and polling `pending`: no signal needed
  std::uint32_t id = 0;
  int tid = 0;                    // host thread id, for tgkill
  void* timer = nullptr;          // timer_t of the per-vCPU POSIX timer
  void* kernel = nullptr;         // back-pointer to kernel::Cpu
  void* thread = nullptr;         // the running thread's pointer (thread_pointer())
  std::uint64_t timer_deadline = UINT64_MAX;  // last set_timer deadline (checked by polling under TSan)
  void* altstack = nullptr;       // sigaltstack for fault handlers
  std::size_t altstack_size = 0;
};

struct Context {
  void* sp = nullptr;
  // Sanitizer bookkeeping (unused in plain builds).
  const void* stack_lo = nullptr;
  std::size_t stack_size = 0;
  void* fake_stack = nullptr;  // ASan fake-stack save slot
  void* tsan_fiber = nullptr;
  bool owns_fiber = false;     // created by context_init (not adopted)
};

struct StackRegion {
  void* base = nullptr;
  std::size_t size = 0;
};

using IrqState = bool;

inline CpuArea* cpu_area() {
  CpuArea* p;
  asm volatile("movq %%gs:0, %0" : "=r"(p));
  return p;
}

// The running thread's pointer: one %gs-relative load, so a thread that is
// preempted and resumed elsewhere reads its own value either way.
inline void* thread_pointer() {
  void* p;
  asm volatile("movq %%gs:%c1, %0" : "=r"(p) : "i"(offsetof(CpuArea, thread)));
  return p;
}
// No user mode here: the kernel's thread pointer is the same slot (the
// kernel gives both the same value, arch.h).
inline void set_thread_pointers(void*, void* visible) {
  asm volatile("movq %0, %%gs:%c1" ::"r"(visible), "i"(offsetof(CpuArea, thread)) : "memory");
}
inline void* kernel_thread_pointer() { return thread_pointer(); }

inline bool irqs_enabled() {
  std::uint8_t v;
  asm volatile("movb %%gs:%c1, %0" : "=q"(v) : "i"(offsetof(CpuArea, irq_enabled)) : "memory");
  return v != 0;
}

// Delivers pending interrupts; called by irq_enable when any are pending.
void irq_deliver_pending();

inline IrqState irq_save() {
  // Read and clear are two instructions. A preemption in between is fine:
  // it can only happen while enabled, and the thread resumes (on whatever
  // CPU) with that CPU's flag enabled again, which it then clears.
  bool was = irqs_enabled();
  asm volatile("movb $0, %%gs:%c0" ::"i"(offsetof(CpuArea, irq_enabled)) : "memory");
  return was;
}

#if defined(__SANITIZE_THREAD__)
// TSan defers a signal to the thread's next intercepted call and can hold a
// timer signal back for good (see cpu.cc): under TSan every unmask also
// compares the clock with the programmed deadline. Interrupts masked.
void tsan_poll_timer();
#endif

inline void irq_enable() {
#if defined(__SANITIZE_THREAD__)
  tsan_poll_timer();
#endif
  asm volatile("movb $1, %%gs:%c0" ::"i"(offsetof(CpuArea, irq_enabled)) : "memory");
  std::uint32_t p;
  asm volatile("movl %%gs:%c1, %0" : "=r"(p) : "i"(offsetof(CpuArea, pending)) : "memory");
  if (p != 0) irq_deliver_pending();
}

inline void irq_restore(IrqState s) {
  if (s) irq_enable();
}

inline void cpu_relax() { __builtin_ia32_pause(); }

void cpu_init_local(CpuArea* area, unsigned id);
unsigned cpu_count();
void run_cpus(void (*entry)(unsigned cpu));
void send_ipi(unsigned cpu);
void idle_wait(const WatchedWord* watch, unsigned n);

void context_init(Context* c, void* stack_lo, std::size_t size, void (*entry)(void*), void* arg);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
void context_switch(Context* from, Context* to);  // tells the sanitizer about the switch (context.cc)
#else
// Inline: the scheduler's switch calls the assembly directly.
inline void context_switch(Context* from, Context* to) { spindle_hosted_switch(&from->sp, to->sp); }
#endif
[[noreturn]] void context_switch_final(Context* to);
void context_destroy(Context* c);
void context_adopt(Context* c);

std::uint64_t now_ns();
void set_timer(std::uint64_t deadline_ns);

StackRegion stack_alloc(std::size_t size);
void stack_free(StackRegion r);
// contract: arch.h, CPUs. Here a `lock`-prefixed instruction: ~20 cycles
// uncontended.
inline constexpr bool kAtomicRmwCostly = true;
inline constexpr std::size_t kPageSize = 4096;
// Large enough that a function with a big frame cannot step over it.
inline constexpr std::size_t kGuardSize = 64 * 1024;
inline bool in_guard(const StackRegion& r, std::uintptr_t addr) {
  auto b = reinterpret_cast<std::uintptr_t>(r.base);
  return addr < b && addr >= b - kGuardSize;
}

// No user mode on hosted (arch.h: a process is a host process): no
// address space can be created, so none is ever activated or entered.
struct AddressSpace;
struct UserEntry;
enum class UserAccess : std::uint8_t;
inline AddressSpace* address_space_create() { return nullptr; }
inline void address_space_destroy(AddressSpace*) {}
inline bool user_map(AddressSpace*, std::uintptr_t, std::size_t, UserAccess) { return false; }
inline void user_unmap(AddressSpace*, std::uintptr_t, std::size_t) {}
inline bool user_copy_to(AddressSpace*, std::uintptr_t, const void*, std::size_t) { return false; }
inline void address_space_activate(AddressSpace*) {}
[[noreturn]] inline void enter_user(const UserEntry&) { __builtin_trap(); }
// No process code runs in a hosted kernel (kernel::g_in_user_process stays false).
[[noreturn]] inline std::uint64_t user_syscall(std::uint64_t, std::uint64_t = 0, std::uint64_t = 0, std::uint64_t = 0,
                                               std::uint64_t = 0, std::uint64_t = 0, std::uint64_t = 0) {
  __builtin_trap();
}

void console_write(const char* s, std::size_t n);
std::size_t console_read(char* buf, std::size_t n);
[[noreturn]] void halt(int exit_code);

// Words in SharedMemory regions (arch.h: Words shared with other kernels),
// arch/hosted/src/shared_words.cc.
enum class OwnerLiveness : std::uint8_t;
bool foreign_word_registered(const void* word);
// Every futex call asks; a kernel that never mapped a shared region answers
// with one load (inline), without the registry walk.
inline bool foreign_word(const void* word) {
  return hosted::g_ranges_used.load(std::memory_order_acquire) != 0 && foreign_word_registered(word);
}
Status foreign_wait(const std::atomic<std::uint32_t>* word, std::uint32_t expected, std::uint64_t deadline_ns,
                    bool look, bool wakes_all);
unsigned foreign_wake(const std::atomic<std::uint32_t>* word, unsigned n);
OwnerLiveness owner_liveness(std::uint64_t id);
void owner_id_used(std::uint64_t id);
void owner_id_ended(std::uint64_t id);

}  // namespace spindle::arch
