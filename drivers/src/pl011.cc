#include "drivers/pl011.h"

namespace spindle::drivers {
namespace {
constexpr std::size_t kDr = 0x00;
constexpr std::size_t kFr = 0x18;
constexpr std::size_t kLcrH = 0x2C;
constexpr std::size_t kCr = 0x30;
constexpr std::size_t kImsc = 0x38;
constexpr std::uint32_t kFrTxff = 1u << 5;
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
  reg(kImsc) = 0;  // polled: no UART interrupts
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

}  // namespace spindle::drivers
