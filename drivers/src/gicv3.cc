// GICv3: memory-mapped distributor and redistributors, system-register CPU
// interface (ICC_*_EL1).
#include "drivers/gic.h"

namespace spindle::drivers {
namespace {
constexpr std::size_t kGicdCtlr = 0x0000;
constexpr std::size_t kGicdIgroupr = 0x0080;
constexpr std::size_t kGicdIsenabler = 0x0100;
constexpr std::size_t kGicdIpriorityr = 0x0400;
constexpr std::size_t kGicdIrouter = 0x6000;
constexpr std::uint32_t kCtlrRwp = 1u << 31;
constexpr std::uint32_t kCtlrEnable = 0x13;  // ARE | EnableGrp1 | EnableGrp0 (DS=1 view)
constexpr std::size_t kGicrWaker = 0x0014;
constexpr std::size_t kGicrTyper = 0x0008;
constexpr std::size_t kSgiBase = 0x10000;
constexpr std::size_t kGicrIgroupr0 = 0x0080;
constexpr std::size_t kGicrIsenabler0 = 0x0100;
constexpr std::size_t kGicrIpriorityr = 0x0400;

volatile std::uint32_t& r32(std::uintptr_t a) { return *reinterpret_cast<volatile std::uint32_t*>(a); }

std::uint64_t mpidr() {
  std::uint64_t v;
  asm volatile("mrs %0, mpidr_el1" : "=r"(v));
  return v;
}

// Aff3.Aff2.Aff1.Aff0 packed as in GICR_TYPER[63:32].
std::uint32_t packed_affinity(std::uint64_t m) {
  return static_cast<std::uint32_t>((m & 0xFFFFFF) | ((m >> 32 & 0xFF) << 24));
}
}  // namespace

void GicV3::init_distributor() {
  d32(kGicdCtlr) = kCtlrEnable;
  while (d32(kGicdCtlr) & kCtlrRwp) {
  }
}

void GicV3::init_cpu(unsigned cpu) {
  std::uint64_t me = mpidr();
  mpidr_[cpu] = me;
  // Walk the redistributor frames until the one whose affinity is ours.
  std::uintptr_t rd = gicr_;
  for (;;) {
    std::uint64_t typer = *reinterpret_cast<volatile std::uint64_t*>(rd + kGicrTyper);
    if (static_cast<std::uint32_t>(typer >> 32) == packed_affinity(me)) break;
    if (typer & (1u << 4)) return;  // Last, and not found: leave interrupts off
    rd += (typer & (1u << 1)) ? 0x40000 : 0x20000;  // VLPIS frames are twice as large
  }
  rd_[cpu] = rd;
  // Wake it: clear ProcessorSleep, wait for ChildrenAsleep to clear.
  r32(rd + kGicrWaker) = r32(rd + kGicrWaker) & ~(1u << 1);
  while (r32(rd + kGicrWaker) & (1u << 2)) {
  }
  r32(rd + kSgiBase + kGicrIgroupr0) = ~0u;  // SGIs and PPIs in group 1
  std::uint64_t sre;
  asm volatile("mrs %0, s3_0_c12_c12_5" : "=r"(sre));
  asm volatile("msr s3_0_c12_c12_5, %0\n\tisb" ::"r"(sre | 1));  // ICC_SRE_EL1.SRE
  asm volatile("msr s3_0_c4_c6_0, %0" ::"r"(std::uint64_t{0xFF}));   // ICC_PMR_EL1: all priorities
  asm volatile("msr s3_0_c12_c12_3, xzr");                           // ICC_BPR1_EL1
  asm volatile("msr s3_0_c12_c12_7, %0\n\tisb" ::"r"(std::uint64_t{1}));  // ICC_IGRPEN1_EL1
}

std::uintptr_t GicV3::this_sgi_base() const {
  std::uint64_t me = mpidr();
  for (unsigned i = 0; i < kMaxCpus; ++i) {
    if (rd_[i] && mpidr_[i] == me) return rd_[i] + kSgiBase;
  }
  return 0;
}

void GicV3::enable_private(unsigned intid, std::uint8_t priority) {
  std::uintptr_t sgi = this_sgi_base();
  if (!sgi) return;
  *reinterpret_cast<volatile std::uint8_t*>(sgi + kGicrIpriorityr + intid) = priority;
  r32(sgi + kGicrIsenabler0) = 1u << intid;
}

void GicV3::enable_shared(unsigned intid, std::uint8_t priority, unsigned cpu) {
  std::size_t word = 4 * (intid / 32);
  std::uint32_t bit = 1u << (intid % 32);
  d32(kGicdIgroupr + word) = d32(kGicdIgroupr + word) | bit;  // group 1, as the PPIs
  *reinterpret_cast<volatile std::uint8_t*>(gicd_ + kGicdIpriorityr + intid) = priority;
  // IROUTER: Aff3.Aff2.Aff1.Aff0 of the target (Interrupt_Routing_Mode 0).
  *reinterpret_cast<volatile std::uint64_t*>(gicd_ + kGicdIrouter + 8 * intid) = mpidr_[cpu] & 0xFF00FFFFFFull;
  d32(kGicdIsenabler + word) = bit;
}

std::uint32_t GicV3::acknowledge() {
  std::uint64_t v;
  asm volatile("mrs %0, s3_0_c12_c12_0" : "=r"(v)::"memory");  // ICC_IAR1_EL1
  return static_cast<std::uint32_t>(v);
}

void GicV3::end(std::uint32_t raw) {
  asm volatile("msr s3_0_c12_c12_1, %0" ::"r"(std::uint64_t{raw}) : "memory");  // ICC_EOIR1_EL1
}

void GicV3::send_sgi(unsigned intid, unsigned cpu) {
  std::uint64_t m = mpidr_[cpu];
  std::uint64_t aff0 = m & 0xF;  // TargetList covers Aff0 0..15 (RS = 0)
  std::uint64_t v = (std::uint64_t{1} << aff0) | ((m >> 8 & 0xFF) << 16) | (std::uint64_t{intid & 0xF} << 24) |
                    ((m >> 16 & 0xFF) << 32) | ((m >> 32 & 0xFF) << 48);
  // Memory writes the IPI announces must be visible before it is taken.
  asm volatile("dsb ishst\n\tmsr s3_0_c12_c11_5, %0\n\tisb" ::"r"(v) : "memory");  // ICC_SGI1R_EL1
}

}  // namespace spindle::drivers
