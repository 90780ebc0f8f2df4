// A set of CPUs, used for thread affinity.
#pragma once

#include <bit>
#include <cstdint>

namespace spindle {

inline constexpr unsigned kMaxCpus = 64;

class CpuMask {
 public:
  constexpr CpuMask() = default;
  constexpr explicit CpuMask(std::uint64_t bits) : bits_(bits) {}
  static constexpr CpuMask all() { return CpuMask(~std::uint64_t{0}); }
  static constexpr CpuMask only(unsigned cpu) { return CpuMask(std::uint64_t{1} << cpu); }

  constexpr bool has(unsigned cpu) const { return cpu < kMaxCpus && (bits_ >> cpu) & 1; }
  constexpr bool empty() const { return bits_ == 0; }
  constexpr std::uint64_t bits() const { return bits_; }
  constexpr unsigned count() const { return static_cast<unsigned>(std::popcount(bits_)); }
  constexpr CpuMask operator&(CpuMask o) const { return CpuMask(bits_ & o.bits_); }
  constexpr CpuMask operator|(CpuMask o) const { return CpuMask(bits_ | o.bits_); }
  constexpr bool operator==(const CpuMask&) const = default;
  // Lowest CPU in the set; kMaxCpus when empty.
  constexpr unsigned first() const { return bits_ ? static_cast<unsigned>(std::countr_zero(bits_)) : kMaxCpus; }

 private:
  std::uint64_t bits_ = 0;
};

}  // namespace spindle
