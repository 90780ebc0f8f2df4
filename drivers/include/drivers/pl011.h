// ARM PL011 UART: polled output (the console). Input comes later.
#pragma once

#include <cstddef>
#include <cstdint>

namespace spindle::drivers {

class Pl011 {
 public:
  // base: the UART's registers, mapped (virtual address).
  explicit constexpr Pl011(std::uintptr_t base) : base_(base) {}
  // 8N1, FIFOs on, transmitter and receiver enabled. QEMU's model needs no
  // baud setup; real hardware would also program IBRD/FBRD here.
  void init();
  // Blocks (spinning) while the transmit FIFO is full. Any context; the
  // caller serialises writers.
  void write(const char* s, std::size_t n);
  void put(char c);

 private:
  volatile std::uint32_t& reg(std::size_t off) const { return *reinterpret_cast<volatile std::uint32_t*>(base_ + off); }
  std::uintptr_t base_;
};

}  // namespace spindle::drivers
