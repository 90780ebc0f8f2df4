// Synchronous exceptions and the ones that should never happen: an abort
// inside a probe (arch/probe.h) resumes the probe; a stack overflow goes to
// the kernel (the thread dies, the system goes on); anything else is reported (registers, decoded ESR) and panics, which
// names the CPU and the running thread.
#include <atomic>

#include "aarch64.h"
#include "spindle/console.h"
#include "spindle/panic.h"

namespace spindle::arch {

std::atomic<bool> g_halting{false};
std::atomic<bool> g_probing_semihosting{false};

namespace {

constexpr std::uint32_t kHltSemihosting = 0xD45E0000;  // hlt #0xf000

}  // namespace

const char* exception_class_name(unsigned ec) {
  switch (ec) {
    case 0x00: return "undefined instruction";
    case 0x01: return "trapped WFI/WFE";
    case 0x07: return "FP/SIMD access (the kernel is built without FP)";
    case 0x0E: return "illegal execution state";
    case 0x15: return "SVC";
    case 0x16: return "HVC";
    case 0x17: return "SMC";
    case 0x18: return "trapped system register access";
    case 0x20: return "instruction abort from EL0";
    case 0x21: return "instruction abort";
    case 0x22: return "misaligned pc";
    case 0x24: return "data abort from EL0";
    case 0x25: return "data abort";
    case 0x26: return "misaligned sp";
    case 0x2F: return "SError";
    case 0x30:
    case 0x31: return "breakpoint";
    case 0x32:
    case 0x33: return "software step";
    case 0x34:
    case 0x35: return "watchpoint";
    case 0x3C: return "BRK instruction";
    default: return "unknown exception class";
  }
}

namespace {

// Fault status code of an abort (ISS[5:0]).
const char* fsc_name(unsigned fsc) {
  switch (fsc & 0x3C) {
    case 0x04: return "translation fault";
    case 0x08: return "access flag fault";
    case 0x0C: return "permission fault";
    default: break;
  }
  switch (fsc) {
    case 0x00: return "address size fault";
    case 0x10: return "synchronous external abort";
    case 0x21: return "alignment fault";
    case 0x30: return "TLB conflict";
    default: return "other fault";
  }
}

bool is_abort(unsigned ec) { return ec == 0x20 || ec == 0x21 || ec == 0x24 || ec == 0x25; }

void dump_frame(const Frame* f, std::uint64_t esr, std::uint64_t far) {
  unsigned ec = static_cast<unsigned>(esr >> 26);
  spindle::print("\n*** exception: %s (EC 0x%x), ESR 0x%llx\n", exception_class_name(ec), ec, static_cast<unsigned long long>(esr));
  if (is_abort(ec)) {
    unsigned fsc = esr & 0x3F;
    bool write = ec >= 0x24 && (esr & (1u << 6));
    spindle::print("    %s %s, level %u, at FAR 0x%llx\n", fsc_name(fsc), ec >= 0x24 ? (write ? "on write" : "on read") : "on fetch",
                   fsc & 3, static_cast<unsigned long long>(far));
  }
  spindle::print("    ELR 0x%llx  SPSR 0x%llx  SP 0x%llx\n", static_cast<unsigned long long>(f->elr),
                 static_cast<unsigned long long>(f->spsr), static_cast<unsigned long long>(f->sp));
  for (int i = 0; i < 31; i += 2) {
    if (i + 1 < 31) {
      spindle::print("    x%-2d %016llx  x%-2d %016llx\n", i, static_cast<unsigned long long>(f->x[i]), i + 1,
                     static_cast<unsigned long long>(f->x[i + 1]));
    } else {
      spindle::print("    x%-2d %016llx\n", i, static_cast<unsigned long long>(f->x[i]));
    }
  }
}

bool kernel_is_up() { return cpu_area() != nullptr && cpu_area()->kernel != nullptr; }

}  // namespace

[[noreturn]] void halt(int exit_code) {
  asm volatile("msr daifset, #0xf" ::: "memory");
  g_halting.store(true);
  // Semihosting SYS_EXIT with ADP_Stopped_ApplicationExit: QEMU exits with
  // the code. Without -semihosting the hlt is undefined; the fault handler
  // then powers off through PSCI (exit status 0, the best left).
  volatile std::uint64_t block[2] = {0x20026, static_cast<std::uint64_t>(exit_code)};
  register std::uint64_t x0 asm("x0") = 0x18;
  register std::uint64_t x1 asm("x1") = reinterpret_cast<std::uint64_t>(block);
  asm volatile("hlt #0xf000" : "+r"(x0) : "r"(x1) : "memory");
  psci::call(psci::kSystemOff);
  for (;;) asm volatile("wfi");
}

std::uintptr_t semihosting_ram_end() {
  // SYS_HEAPINFO: QEMU reports the top of RAM as the heap limit.
  volatile std::uint64_t block[4] = {0, 0, 0, 0};
  volatile std::uint64_t* ptr = block;
  g_probing_semihosting.store(true);
  register std::uint64_t x0 asm("x0") = 0x16;
  register std::uint64_t x1 asm("x1") = reinterpret_cast<std::uint64_t>(&ptr);
  asm volatile("hlt #0xf000" : "+r"(x0) : "r"(x1) : "memory");
  g_probing_semihosting.store(false);
  return static_cast<std::uintptr_t>(block[1]);
}

std::size_t semihosting_command_line(char* buf, std::size_t n) {
  // SYS_GET_CMDLINE: QEMU answers with the image's path followed by the
  // -append text (when no -semihosting-config arg= is given). The block's
  // length is the buffer's on the way in, the text's on the way out.
  if (n == 0) return 0;
  buf[0] = '\0';
  volatile std::uint64_t block[2] = {reinterpret_cast<std::uint64_t>(buf), n};
  g_probing_semihosting.store(true);
  register std::uint64_t x0 asm("x0") = 0x15;
  register std::uint64_t x1 asm("x1") = reinterpret_cast<std::uint64_t>(block);
  asm volatile("hlt #0xf000" : "+r"(x0) : "r"(x1) : "memory");
  g_probing_semihosting.store(false);
  if (x0 != 0) {  // failed (too long), or the hlt was skipped (no -semihosting)
    buf[0] = '\0';
    return 0;
  }
  std::size_t len = block[1] < n ? static_cast<std::size_t>(block[1]) : n - 1;
  buf[len] = '\0';
  return len;
}

}  // namespace spindle::arch

using namespace spindle::arch;

extern "C" void spindle_aarch64_sync(Frame* f) {
  std::uint64_t esr = SPINDLE_READ_SYSREG(esr_el1);
  std::uint64_t far = SPINDLE_READ_SYSREG(far_el1);
  unsigned ec = static_cast<unsigned>(esr >> 26);
  if (CpuArea* a = cpu_area(); a != nullptr && a->probe_resume != 0 && (ec == 0x21 || ec == 0x25)) {
    // A probe (probe.S, interrupts masked) made this access: it gets the
    // fault as its result.
    f->elr = a->probe_resume;
    a->probe_resume = 0;
    f->x[0] = esr;
    f->x[1] = far;
    return;
  }
  if (ec == 0 && *reinterpret_cast<const std::uint32_t*>(f->elr) == kHltSemihosting) {
    // A semihosting call without -semihosting.
    if (g_halting.load()) {
      psci::call(psci::kSystemOff);
      for (;;) asm volatile("wfi");
    }
    if (g_probing_semihosting.load()) {
      f->elr += 4;
      return;
    }
  }
  if ((ec == 0x25) && kernel_is_up() && spindle::kernel::current_stack_guard_contains(far)) {
    // Runs on the fault stack when the frame did not fit; stack_overflow
    // never returns here (the thread dies and the CPU switches away).
    spindle::kernel::stack_overflow(far);
  }
  dump_frame(f, esr, far);
  spindle::panic("%s (EC 0x%x) at pc 0x%llx, FAR 0x%llx", exception_class_name(ec), ec, static_cast<unsigned long long>(f->elr),
                 static_cast<unsigned long long>(far));
}

extern "C" void spindle_aarch64_unexpected(Frame* f, unsigned kind) {
  static const char* const kGroups[4] = {"EL1 with SP_EL0", "EL1", "EL0 (AArch64)", "EL0 (AArch32)"};
  static const char* const kKinds[4] = {"synchronous exception", "IRQ", "FIQ", "SError"};
  std::uint64_t esr = SPINDLE_READ_SYSREG(esr_el1);
  std::uint64_t far = SPINDLE_READ_SYSREG(far_el1);
  dump_frame(f, esr, far);
  spindle::panic("unexpected %s from %s at pc 0x%llx", kKinds[kind % 4], kGroups[kind / 4 % 4],
                 static_cast<unsigned long long>(f->elr));
}
