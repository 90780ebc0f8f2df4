// ARM Generic Interrupt Controller, v2 (memory-mapped CPU interface) and v3
// (system-register CPU interface, one redistributor per CPU). Only what the
// kernel needs: per-CPU PPIs (the timer), SGIs (IPIs) and device SPIs
// routed to one CPU (the UART). Both run in the single-security-state view QEMU
// offers at EL1 (group 0 on v2, group 1 on v3, all signalled as IRQ).
//
// Context: init_distributor once, on the boot CPU; init_cpu and
// enable_private on the CPU concerned; enable_shared after init_cpu of the
// target CPU; acknowledge/end in its IRQ handler;
// send_sgi from anywhere.
#pragma once

#include <cstddef>
#include <cstdint>

namespace spindle::drivers {

// INTIDs 1020..1023 from acknowledge() mean "nothing (more) to take".
inline constexpr std::uint32_t kGicSpurious = 1020;

class GicV2 {
 public:
  static constexpr unsigned kMaxCpus = 8;
  constexpr GicV2(std::uintptr_t gicd, std::uintptr_t gicc) : gicd_(gicd), gicc_(gicc) {}
  void init_distributor();
  void init_cpu(unsigned cpu);
  void enable_private(unsigned intid, std::uint8_t priority);
  // An SPI (intid >= 32), level-sensitive as reset leaves it, delivered to `cpu`.
  void enable_shared(unsigned intid, std::uint8_t priority, unsigned cpu);
  // The raw acknowledge value; its INTID is intid_of(raw).
  std::uint32_t acknowledge();
  static std::uint32_t intid_of(std::uint32_t raw) { return raw & 0x3FF; }
  void end(std::uint32_t raw);
  void send_sgi(unsigned intid, unsigned cpu);

 private:
  volatile std::uint32_t& d32(std::size_t off) const { return *reinterpret_cast<volatile std::uint32_t*>(gicd_ + off); }
  volatile std::uint8_t& d8(std::size_t off) const { return *reinterpret_cast<volatile std::uint8_t*>(gicd_ + off); }
  volatile std::uint32_t& c32(std::size_t off) const { return *reinterpret_cast<volatile std::uint32_t*>(gicc_ + off); }
  std::uintptr_t gicd_;
  std::uintptr_t gicc_;
  std::uint8_t cpu_mask_[kMaxCpus] = {};  // CPU interface bit of each CPU (GICD_ITARGETSR)
};

class GicV3 {
 public:
  static constexpr unsigned kMaxCpus = 64;
  constexpr GicV3(std::uintptr_t gicd, std::uintptr_t gicr) : gicd_(gicd), gicr_(gicr) {}
  void init_distributor();
  // Finds this CPU's redistributor by affinity (MPIDR_EL1), wakes it and
  // enables the system-register CPU interface.
  void init_cpu(unsigned cpu);
  void enable_private(unsigned intid, std::uint8_t priority);
  void enable_shared(unsigned intid, std::uint8_t priority, unsigned cpu);
  std::uint32_t acknowledge();
  static std::uint32_t intid_of(std::uint32_t raw) { return raw & 0xFFFFFF; }
  void end(std::uint32_t raw);
  void send_sgi(unsigned intid, unsigned cpu);

 private:
  volatile std::uint32_t& d32(std::size_t off) const { return *reinterpret_cast<volatile std::uint32_t*>(gicd_ + off); }
  std::uintptr_t this_sgi_base() const;
  std::uintptr_t gicd_;
  std::uintptr_t gicr_;
  std::uintptr_t rd_[kMaxCpus] = {};     // each CPU's redistributor
  std::uint64_t mpidr_[kMaxCpus] = {};   // each CPU's affinity, for SGI routing
};

// ID_AA64PFR0_EL1.GIC: whether this CPU has the GICv3 system registers.
inline bool gic_has_sysregs() {
  std::uint64_t v;
  asm volatile("mrs %0, id_aa64pfr0_el1" : "=r"(v));
  return ((v >> 24) & 0xF) != 0;
}

}  // namespace spindle::drivers
