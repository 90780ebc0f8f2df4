// GICv2: distributor and banked CPU interface, both memory-mapped.
#include "drivers/gic.h"

namespace spindle::drivers {
namespace {
constexpr std::size_t kGicdCtlr = 0x000;
constexpr std::size_t kGicdIsenabler = 0x100;
constexpr std::size_t kGicdIpriorityr = 0x400;
constexpr std::size_t kGicdItargetsr = 0x800;
constexpr std::size_t kGicdSgir = 0xF00;
constexpr std::size_t kGiccCtlr = 0x00;
constexpr std::size_t kGiccPmr = 0x04;
constexpr std::size_t kGiccBpr = 0x08;
constexpr std::size_t kGiccIar = 0x0C;
constexpr std::size_t kGiccEoir = 0x10;
}  // namespace

void GicV2::init_distributor() { d32(kGicdCtlr) = 1; }

void GicV2::init_cpu(unsigned cpu) {
  // ITARGETSR0..7 are banked and read as this CPU's own interface bit.
  std::uint32_t t = d32(kGicdItargetsr);
  cpu_mask_[cpu] = static_cast<std::uint8_t>(t | t >> 8 | t >> 16 | t >> 24);
  c32(kGiccPmr) = 0xFF;
  c32(kGiccBpr) = 0;
  c32(kGiccCtlr) = 1;
}

void GicV2::enable_private(unsigned intid, std::uint8_t priority) {
  d8(kGicdIpriorityr + intid) = priority;
  d32(kGicdIsenabler) = 1u << intid;  // bank 0 (SGIs, PPIs) is per CPU
}

void GicV2::enable_shared(unsigned intid, std::uint8_t priority, unsigned cpu) {
  d8(kGicdIpriorityr + intid) = priority;
  d8(kGicdItargetsr + intid) = cpu_mask_[cpu];
  d32(kGicdIsenabler + 4 * (intid / 32)) = 1u << (intid % 32);
}

std::uint32_t GicV2::acknowledge() { return c32(kGiccIar); }

void GicV2::end(std::uint32_t raw) { c32(kGiccEoir) = raw; }

void GicV2::send_sgi(unsigned intid, unsigned cpu) {
  // The caller's memory writes (what the IPI announces) must be visible
  // before the interrupt can be taken.
  asm volatile("dsb ishst" ::: "memory");
  d32(kGicdSgir) = (static_cast<std::uint32_t>(cpu_mask_[cpu]) << 16) | (intid & 0xF);
}

}  // namespace spindle::drivers
