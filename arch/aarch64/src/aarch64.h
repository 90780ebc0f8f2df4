// Private to the aarch64 backend: the memory map, system-register access,
// and the pieces the backend's files share.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <arch/arch.h>

namespace spindle::arch {

// ---------------------------------------------------------------------------
// Virtual memory layout (4 KiB granule, 39-bit VAs in both halves).
//
//   TTBR1 (kernel, shared by all CPUs, global entries):
//     0xFFFFFF80_00000000 + PA   linear map of PA 0..4 GiB:
//                                 L1[0]: 0..1 GiB devices (Device-nGnRE, XN)
//                                 L1[1..3]: RAM, 2 MiB Normal WB blocks
//     0xFFFFFF82_00000000        stacks, 8 GiB: 4 KiB pages with an
//                                 unmapped guard below each stack
//   TTBR0: user (EL0) address spaces tagged with ASIDs (user.cc), user
//          range [kUserBase, kUserLimit); an empty table (ASID 0) while a
//          kernel thread runs.
inline constexpr std::uintptr_t kKernelOffset = 0xFFFFFF8000000000ull;
inline constexpr std::uintptr_t kStackRegionBase = 0xFFFFFF8200000000ull;
inline constexpr std::uintptr_t kStackRegionSize = 8ull << 30;
inline constexpr std::uintptr_t kRamBase = 0x40000000;
inline constexpr std::uintptr_t kRamLimit = 0x100000000ull;  // RAM above 4 GiB is not used

inline std::uintptr_t phys_to_virt(std::uintptr_t pa) { return pa + kKernelOffset; }
inline std::uintptr_t virt_to_phys(std::uintptr_t va) { return va - kKernelOffset; }
template <typename T>
T* device(std::uintptr_t pa) {
  return reinterpret_cast<T*>(phys_to_virt(pa));
}

// QEMU virt peripherals (physical).
inline constexpr std::uintptr_t kPl011Base = 0x09000000;
inline constexpr std::uintptr_t kPl031Base = 0x09010000;
inline constexpr std::uintptr_t kGicdBase = 0x08000000;
inline constexpr std::uintptr_t kGiccBase = 0x08010000;
inline constexpr std::uintptr_t kGicrBase = 0x080A0000;

// Interrupt ids.
inline constexpr unsigned kIntidIpi = 0;     // SGI 0: "look at your pending bits"
inline constexpr unsigned kIntidTimer = 27;  // CNTV, the EL1 virtual timer (PPI 11)
inline constexpr unsigned kIntidUart = 33;   // PL011 (SPI 1), routed to CPU 0

#define SPINDLE_READ_SYSREG(name)                        \
  ([] {                                                  \
    std::uint64_t v_;                                    \
    asm volatile("mrs %0, " #name : "=r"(v_)::"memory"); \
    return v_;                                           \
  }())
#define SPINDLE_WRITE_SYSREG(name, v) asm volatile("msr " #name ", %0" ::"r"(std::uint64_t(v)) : "memory")

// The register frame an exception pushes (vectors.S). tpidr/tpidrro are
// only saved from EL0 (the user's TLS register and its visible thread
// pointer, restored on the way back); from EL1 they are left alone.
struct Frame {
  std::uint64_t x[31];
  std::uint64_t sp;  // at the time of the exception (from EL0: SP_EL0)
  std::uint64_t elr;
  std::uint64_t spsr;
  std::uint64_t tpidr;
  std::uint64_t tpidrro;
};
static_assert(sizeof(Frame) == 36 * 8, "vectors.S: FRAME_SIZE");

// A test-and-set lock held with interrupts masked, for the backend's own
// data (page allocator, heap, stacks, ASIDs): none of it is touched with
// the lock held across a context switch.
class IrqSpinLock {
 public:
  IrqState lock() {
    IrqState s = irq_save();
    while (busy_.exchange(true, std::memory_order_acquire)) {
      while (busy_.load(std::memory_order_relaxed)) cpu_relax();
    }
    return s;
  }
  void unlock(IrqState s) {
    busy_.store(false, std::memory_order_release);
    irq_restore(s);
  }

 private:
  std::atomic<bool> busy_{false};
};

struct Locked {
  explicit Locked(IrqSpinLock& l) : lock(l), saved(l.lock()) {}
  ~Locked() { lock.unlock(saved); }
  IrqSpinLock& lock;
  IrqState saved;
};

// The name of an exception class (ESR_EL1.EC), for reports (fault.cc).
const char* exception_class_name(unsigned ec);

// User mode (user.cc): per-CPU setup (EL0 counter access, no user tables
// yet), after cpu_early_init, on that CPU.
void user_cpu_init();
// CPU cpu's ASID state (user.cc), for its CpuArea::asid.
CpuAsid* cpu_asid_state(unsigned cpu);
// For the image loader (image.cc), thread context: maps [va, va + size) to
// the physical pages from pa on, which stay the kernel's (never freed with
// the address space). Writable and executable never at once (leaf_bits).
bool user_map_shared(AddressSpace* as, std::uintptr_t va, std::uintptr_t pa, std::size_t size, UserAccess access);
// The kernel's (linear map) address of the page mapped at va, or nullptr.
char* user_page_alias(AddressSpace* as, std::uintptr_t va);

// Boot (boot.cc, start.S).
extern "C" std::uint64_t spindle_boot_el;  // EL at entry: 1, or 2 (virtualization=on)
extern "C" std::uintptr_t spindle_secondary_stacks[kMaxCpusAarch64];
extern "C" char spindle_secondary_entry[];  // PA entry of secondaries (start.S)

// PSCI through the conduit the boot EL implies (psci.cc).
namespace psci {
std::int64_t call(std::uint64_t fn, std::uint64_t a1 = 0, std::uint64_t a2 = 0, std::uint64_t a3 = 0);
inline constexpr std::uint64_t kCpuOn = 0xC4000003;
inline constexpr std::uint64_t kAffinityInfo = 0xC4000004;
inline constexpr std::uint64_t kCpuOff = 0x84000002;
inline constexpr std::uint64_t kSystemOff = 0x84000008;
}  // namespace psci

// Translation table descriptors (VMSAv8-64, 4 KiB granule), shared by the
// kernel's tables (memory.cc) and the user ones (user.cc).
namespace desc {
inline constexpr std::uint64_t kValid = 1;
inline constexpr std::uint64_t kBlock = 1;
inline constexpr std::uint64_t kTable = 3;  // also a level-3 page
inline constexpr std::uint64_t kAttrNormal = 1 << 2;  // MAIR index 1
inline constexpr std::uint64_t kApEl0Rw = 1 << 6;     // AP = 01: read-write at EL1 and EL0
inline constexpr std::uint64_t kApEl0Ro = 3 << 6;     // AP = 11: read-only at EL1 and EL0
inline constexpr std::uint64_t kShInner = 3 << 8;
inline constexpr std::uint64_t kAf = 1 << 10;
inline constexpr std::uint64_t kNg = 1 << 11;
inline constexpr std::uint64_t kPxn = 1ull << 53;
inline constexpr std::uint64_t kUxn = 1ull << 54;
inline constexpr std::uint64_t kPxnTable = 1ull << 59;
inline constexpr std::uint64_t kAddrMask = 0x0000FFFFFFFFF000ull;
}  // namespace desc

// Memory (memory.cc).
void memory_init(std::uintptr_t ram_end_pa);
// A zeroed physical page (for a table, or user memory), or 0.
std::uintptr_t zeroed_page();
// The table a table descriptor points to (through the linear map).
inline std::uint64_t* table_at(std::uint64_t d) {
  return reinterpret_cast<std::uint64_t*>(phys_to_virt(d & desc::kAddrMask));
}
// The level-3 entry for va under the level-1 table l1, creating the
// level-2/3 tables on the way if asked (linked with kTable | table_bits).
// nullptr: not there, or out of memory. The caller serialises edits of
// these tables.
std::uint64_t* walk_to_pte(std::uint64_t* l1, std::uintptr_t va, bool create, std::uint64_t table_bits);
// Physical pages; returns a PA or 0.
std::uintptr_t page_alloc(std::size_t npages);
void page_free(std::uintptr_t pa, std::size_t npages);
// RAM end from semihosting SYS_HEAPINFO; 0 if semihosting is off (boot.cc).
std::uintptr_t semihosting_ram_end();

// Per-CPU hardware bring-up: interrupt controller, timer (cpu.cc).
void cpu_hw_init(unsigned id);
// Before the kernel's per-CPU areas: a fault stack and TPIDR_EL1 (cpu.cc).
void cpu_early_init(unsigned id);
void irq_controller_init_global();
// Enables a device interrupt (SPI), delivered to CPU 0. After cpu_hw_init(0).
void irq_enable_device(unsigned intid);
// Which GIC drives the interrupts, for the boot banner.
const char* irq_controller_name();

// Time (time.cc).
void time_init();
void timer_disarm_local();

// Console (console.cc): PL011 output, and input through its receive
// interrupt: console_enable_input once the GIC is up (boot), then
// console_rx_interrupt from the IRQ handler (interrupts masked).
void console_init();
void console_enable_input();
void console_rx_interrupt();
void console_put_raw(const char* s);

}  // namespace spindle::arch
