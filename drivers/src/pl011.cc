#include "drivers/pl011.h"

namespace spindle::drivers {
namespace {
constexpr std::size_t kDr = 0x00;
constexpr std::size_t kFr = 0x18;
constexpr std::size_t kLcrH = 0x2C;
constexpr std::size_t kCr = 0x30;
constexpr std::size_t kImsc = 0x38;
constexpr std::size_t kIcr = 0x44;
constexpr std::uint32_t kFrRxfe = 1u << 4;
constexpr std::uint32_t kFrTxff = 1u << 5;
constexpr std::uint32_t kIntRx = 1u << 4;  // RXIM/RXIC: the FIFO reached its trigger level
constexpr std::uint32_t kIntRt = 1u << 6;  // RTIM/RTIC: data waits in the FIFO, nothing more came
constexpr std::uint32_t kFrBusy = 1u << 3;
constexpr std::uint32_t kLcrFen = 1u << 4;
constexpr std::uint32_t kLcrWlen8 = 3u << 5;
constexpr std::uint32_t kCrUarten = 1u << 0;
constexpr std::uint32_t kCrTxe = 1u << 8;
constexpr std::uint32_t kCrRxe = 1u << 9;
}  // namespace

void Pl011::init() {
  // Disable, let the last character drain, reprogram, enable.
  reg(kCr) = 0;
  while (reg(kFr) & kFrBusy) {
  }
  reg(kLcrH) = kLcrWlen8 | kLcrFen;
  reg(kImsc) = 0;  // until enable_rx_interrupt
  reg(kCr) = kCrUarten | kCrTxe | kCrRxe;
}

void Pl011::put(char c) {
  while (reg(kFr) & kFrTxff) {
  }
  reg(kDr) = static_cast<unsigned char>(c);
}

void Pl011::write(const char* s, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) put(s[i]);
}

void Pl011::enable_rx_interrupt() { reg(kImsc) = kIntRx | kIntRt; }

int Pl011::get() {
  if (reg(kFr) & kFrRxfe) return -1;
  return static_cast<int>(reg(kDr) & 0xFF);  // bits 11:8 are error flags
}

void Pl011::clear_rx() { reg(kIcr) = kIntRx | kIntRt; }

}  // namespace spindle::drivers
