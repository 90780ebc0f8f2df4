// ARM PL011 UART: polled output (the console) and interrupt-driven input.
#pragma once

#include <cstddef>
#include <cstdint>

namespace spindle::drivers {

class Pl011 {
 public:
  // base: the UART's registers, mapped (virtual address).
  explicit constexpr Pl011(std::uintptr_t base) : base_(base) {}
  // 8N1, FIFOs on, transmitter and receiver enabled, interrupts masked.
  // QEMU's model needs no baud setup; real hardware would also program
  // IBRD/FBRD here.
  void init();
  // Blocks (spinning) while the transmit FIFO is full. Any context; the
  // caller serialises writers.
  void write(const char* s, std::size_t n);
  void put(char c);

  // Input. enable_rx_interrupt unmasks the receive and receive-timeout
  // interrupts (level, until the FIFO is drained). In the interrupt
  // handler: clear_rx(), then get() until it returns -1 (FIFO empty). In
  // that order a byte that arrives after the last get() raises the
  // interrupt anew; the other order could clear its interrupt and strand
  // it in the FIFO. A single consumer reads the receive side.
  void enable_rx_interrupt();
  // The next received byte, or -1 if the receive FIFO is empty. Bytes
  // received with a framing/parity/break error are still returned.
  int get();
  void clear_rx();

 private:
  volatile std::uint32_t& reg(std::size_t off) const { return *reinterpret_cast<volatile std::uint32_t*>(base_ + off); }
  std::uintptr_t base_;
};

}  // namespace spindle::drivers
