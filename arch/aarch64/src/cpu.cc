// CPUs and interrupts: per-CPU areas, bring-up through PSCI, the GIC (v2 or
// v3, detected), IPIs as SGI 0, interrupt dispatch to the kernel, idle.
//
// An IPI is a bit in the target's CpuArea::pending plus, when the bit was
// clear and the target is another CPU, SGI 0. The target takes the bits in
// its IRQ handler or, if it unmasks first, in irq_enable. A CPU sending to
// itself only sets the bit: its next unmask delivers it, exactly there.
#include <atomic>

#include "aarch64.h"
#include "drivers/arm_generic_timer.h"
#include "drivers/gic.h"
#include "spindle/panic.h"

namespace spindle::arch {
namespace {

constexpr std::uint8_t kIrqPriority = 0x80;
constexpr std::size_t kIdleStackSize = 32 * 1024;
constexpr std::size_t kFaultStackSize = 16 * 1024;

bool g_gic_v3 = false;
constinit drivers::GicV2 g_gicv2{kKernelOffset + kGicdBase, kKernelOffset + kGiccBase};
constinit drivers::GicV3 g_gicv3{kKernelOffset + kGicdBase, kKernelOffset + kGicrBase};

CpuArea* g_areas[kMaxCpusAarch64];
std::atomic<unsigned> g_ncpus{0};
void (*g_entry)(unsigned) = nullptr;
std::atomic<unsigned> g_stopped{0};

// Per-CPU stacks for exceptions that cannot use the thread's stack (its
// overflow). Also used before the kernel's per-CPU areas exist. Kernel
// only (.kbss): not part of a process's copy of the image.
[[gnu::section(".kbss.fault_stacks")]] alignas(16) char g_fault_stacks[kMaxCpusAarch64][kFaultStackSize];
CpuArea g_boot_areas[kMaxCpusAarch64];

std::uintptr_t fault_stack_top(unsigned cpu) {
  return reinterpret_cast<std::uintptr_t>(&g_fault_stacks[cpu][kFaultStackSize]);
}

void set_area(CpuArea* area) { SPINDLE_WRITE_SYSREG(tpidr_el1, reinterpret_cast<std::uint64_t>(area)); }

inline std::uint32_t gic_ack() { return g_gic_v3 ? g_gicv3.acknowledge() : g_gicv2.acknowledge(); }
inline std::uint32_t gic_intid(std::uint32_t raw) {
  return g_gic_v3 ? drivers::GicV3::intid_of(raw) : drivers::GicV2::intid_of(raw);
}
inline void gic_end(std::uint32_t raw) {
  if (g_gic_v3) {
    g_gicv3.end(raw);
  } else {
    g_gicv2.end(raw);
  }
}

// Hands `sources` plus whatever is pending in software to the kernel,
// until nothing is left. Interrupts masked. handle_irq may switch threads;
// when this thread resumes, maybe on another CPU, cpu_area() is that one's.
void deliver(unsigned sources) {
  for (;;) {
    sources |= cpu_area()->pending.exchange(0, std::memory_order_acquire);
    if (sources == 0) return;
    kernel::handle_irq(sources);
    sources = 0;
  }
}

}  // namespace

// Early per-CPU state, before the kernel hands over its CpuArea: a fault
// taken then still finds a fault stack.
void cpu_early_init(unsigned id) {
  g_boot_areas[id].id = id;
  g_boot_areas[id].fault_stack_top = fault_stack_top(id);
  set_area(&g_boot_areas[id]);
  set_thread_pointers(nullptr, nullptr);
}

void irq_controller_init_global() {
  g_gic_v3 = drivers::gic_has_sysregs();
  if (g_gic_v3) {
    g_gicv3.init_distributor();
  } else {
    g_gicv2.init_distributor();
  }
}

void irq_enable_device(unsigned intid) {
  if (g_gic_v3) {
    g_gicv3.enable_shared(intid, kIrqPriority, 0);
  } else {
    g_gicv2.enable_shared(intid, kIrqPriority, 0);
  }
}

const char* irq_controller_name() { return g_gic_v3 ? "GICv3" : "GICv2"; }

void cpu_hw_init(unsigned id) {
  drivers::arm_timer::mask();
  user_cpu_init();
  if (g_gic_v3) {
    g_gicv3.init_cpu(id);
    g_gicv3.enable_private(kIntidIpi, kIrqPriority);
    g_gicv3.enable_private(kIntidTimer, kIrqPriority);
  } else {
    g_gicv2.init_cpu(id);
    g_gicv2.enable_private(kIntidIpi, kIrqPriority);
    g_gicv2.enable_private(kIntidTimer, kIrqPriority);
  }
}

void cpu_init_local(CpuArea* area, unsigned id) {
  area->id = id;
  area->fault_stack_top = fault_stack_top(id);
  area->asid = cpu_asid_state(id);
  g_areas[id] = area;
  asm volatile("dsb ish" ::: "memory");  // published before anyone IPIs it
  set_area(area);
}

unsigned cpu_count() {
  unsigned n = g_ncpus.load(std::memory_order_relaxed);
  if (n != 0) return n;
  if (kernel::g_in_user_process) {
    // A process's copy, which starts with 0 here: the kernel knows (PSCI
    // is not for EL0). Its threads may ask at once; they store one value.
    n = static_cast<unsigned>(user_syscall(kernel::kSysInfo, kernel::kInfoCpuCount));
  } else {
    // PSCI AFFINITY_INFO answers for every CPU QEMU was given (-smp) and
    // refuses the others; virt numbers them 0.. in Aff0.
    n = 1;
    while (n < kMaxCpusAarch64 && psci::call(psci::kAffinityInfo, n, 0) >= 0) ++n;
  }
  g_ncpus.store(n, std::memory_order_relaxed);
  return n;
}

void run_cpus(void (*entry)(unsigned)) {
  g_entry = entry;
  g_stopped.store(0, std::memory_order_relaxed);
  unsigned n = cpu_count();
  for (unsigned i = 1; i < n; ++i) {
    StackRegion s = stack_alloc(kIdleStackSize);
    if (!s.base) panic("no memory for the stack of cpu %u", i);
    spindle_secondary_stacks[i] = reinterpret_cast<std::uintptr_t>(s.base) + s.size;
    asm volatile("dsb ish" ::: "memory");
    std::int64_t r = psci::call(psci::kCpuOn, i, virt_to_phys(reinterpret_cast<std::uintptr_t>(spindle_secondary_entry)), i);
    if (r != 0) panic("PSCI CPU_ON of cpu %u failed (%lld)", i, static_cast<long long>(r));
  }
  entry(0);
  // The others leave their idle loops at shutdown as well.
  while (g_stopped.load(std::memory_order_acquire) < n - 1) cpu_relax();
}

void send_ipi(unsigned cpu) {
  CpuArea* t = g_areas[cpu];
  std::uint32_t old = t->pending.fetch_or(kIrqIpi, std::memory_order_seq_cst);
  if (t == cpu_area() || (old & kIrqIpi)) return;  // self: taken at unmask; or already on its way
  if (g_gic_v3) {
    g_gicv3.send_sgi(kIntidIpi, cpu);
  } else {
    g_gicv2.send_sgi(kIntidIpi, cpu);
  }
}

void idle_wait(const WatchedWord*, unsigned) {
  // No foreign words here (foreign_word is false): nothing to watch.
  // WFI wakes on a pending interrupt even while PSTATE.I masks it; the
  // caller's unmask then takes it. A software bit is only ever set by this
  // CPU itself (irqs masked here) or comes with an SGI, so checking it once
  // before sleeping loses nothing.
  if (cpu_area()->pending.load(std::memory_order_acquire) != 0) return;
  asm volatile("dsb sy\n\twfi" ::: "memory");
}

void irq_deliver_pending() {
  asm volatile("msr daifset, #2" ::: "memory");
  deliver(0);
  asm volatile("msr daifclr, #2" ::: "memory");
}

}  // namespace spindle::arch

using namespace spindle::arch;

// IRQ exception (vectors.S), interrupts masked, frame on the current stack.
extern "C" void spindle_aarch64_irq(Frame*) {
  unsigned sources = 0;
  for (;;) {
    std::uint32_t raw = gic_ack();
    std::uint32_t id = gic_intid(raw);
    if (id >= spindle::drivers::kGicSpurious) break;
    if (id == kIntidTimer) {
      // Level-triggered: silence it before the end of interrupt; the kernel
      // re-arms it for its next deadline.
      spindle::drivers::arm_timer::mask();
      sources |= kIrqTimer;
    }
    if (id == kIntidUart) console_rx_interrupt();  // level: drains the FIFO before the end
    // SGI 0 carries nothing: its news is in the pending bits.
    gic_end(raw);  // before handle_irq, which may switch away for long
  }
  deliver(sources);
}

// A secondary CPU, in the upper half on its idle stack (start.S).
extern "C" [[noreturn]] void spindle_aarch64_secondary(unsigned cpu) {
  cpu_early_init(cpu);
  cpu_hw_init(cpu);
  g_entry(cpu);
  g_stopped.fetch_add(1, std::memory_order_release);
  psci::call(psci::kCpuOff);
  for (;;) asm volatile("wfi");
}
