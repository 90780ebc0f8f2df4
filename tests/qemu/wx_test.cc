// W^X of the kernel image on every CPU (aarch64): text is read-only and
// executable; rodata and init_array are read-only and not executable;
// data, bss, heap and stacks are writable and not executable. Each access
// is made through a probe (arch/probe.h), so a fault is the expected
// result, not a panic. One thread per CPU (pinned), since each CPU has its
// own SCTLR_EL1 (WXN) and TLB.
#include <arch/probe.h>
#include <spindle/spindle.h>

#include <cstdint>

#include "../kernel/ktest.h"
#include "../kernel/ktest_util.h"

extern "C" char __image_start[];
extern "C" char __text_end[];
extern "C" char __init_array_start[];

namespace {

using namespace spindle;

constexpr std::uint32_t kRet = 0xD65F03C0;  // `ret`: probing it where it may run returns at once

// A `ret` in each kind of non-text memory.
alignas(8) std::uint32_t g_ret_in_data[2] = {kRet, kRet};
alignas(8) const std::uint32_t kRetInRodata[2] = {kRet, kRet};

extern "C" __attribute__((noinline)) void wx_test_text_nop() { asm volatile(""); }

constexpr unsigned kEcInstructionAbort = 0x21;
constexpr unsigned kEcDataAbort = 0x25;

const char* what(const arch::ProbeResult& r) {
  if (r.esr == 0) return "allowed";
  unsigned ec = static_cast<unsigned>(r.esr >> 26);
  unsigned fsc = r.esr & 0x3F;
  bool permission = (fsc & 0x3C) == 0x0C;
  if (ec == kEcDataAbort && permission) return (r.esr & (1u << 6)) ? "data abort: permission fault on write" : "data abort: permission fault on read";
  if (ec == kEcInstructionAbort && permission) return "instruction abort: permission fault";
  return "some other fault";
}

// Expects `r` to be a level-3 permission fault of class ec at addr.
void expect_fault(unsigned cpu, const char* access, const void* addr, const arch::ProbeResult& r, unsigned ec) {
  auto a = reinterpret_cast<std::uint64_t>(addr);
  print("  cpu %u: %-24s 0x%llx -> %s (ESR 0x%llx, FAR 0x%llx)\n", cpu, access, static_cast<unsigned long long>(a), what(r),
        static_cast<unsigned long long>(r.esr), static_cast<unsigned long long>(r.far));
  if (r.esr == 0) {
    KFAIL("cpu %u: %s at 0x%llx did not fault", cpu, access, static_cast<unsigned long long>(a));
    return;
  }
  KCHECK_EQ(static_cast<unsigned>(r.esr >> 26), ec);
  KCHECK_EQ(r.esr & 0x3C, 0x0Cull);  // a permission fault (level 3 in the image, 2 in the RAM blocks)
  KCHECK_EQ(r.far, a);
}

void expect_allowed(unsigned cpu, const char* access, const void* addr, const arch::ProbeResult& r) {
  if (r.esr != 0) {
    KFAIL("cpu %u: %s at %p faulted: ESR 0x%llx", cpu, access, addr, static_cast<unsigned long long>(r.esr));
  }
}

void check_this_cpu() {
  unsigned cpu = this_thread::cpu();
  std::uint64_t v = 0;

  // Text: readable and executable, not writable (and still intact).
  auto* text = reinterpret_cast<std::uint64_t*>(__image_start);
  std::uint64_t before = 0;
  expect_allowed(cpu, "read of text", text, arch::probe_read(text, &before));
  expect_fault(cpu, "write to text", text, arch::probe_write(text, ~before), kEcDataAbort);
  KCHECK(arch::probe_read(text, &v).esr == 0 && v == before);
  expect_allowed(cpu, "call into text", reinterpret_cast<const void*>(&wx_test_text_nop),
                 arch::probe_exec(reinterpret_cast<const void*>(&wx_test_text_nop)));

  // Read-only data: readable, neither writable nor executable.
  expect_allowed(cpu, "read of rodata", kRetInRodata, arch::probe_read(kRetInRodata, &v));
  expect_fault(cpu, "write to rodata", __text_end, arch::probe_write(__text_end, 0), kEcDataAbort);
  expect_fault(cpu, "write to init_array", __init_array_start, arch::probe_write(__init_array_start, 0), kEcDataAbort);
  expect_fault(cpu, "jump into rodata", kRetInRodata, arch::probe_exec(kRetInRodata), kEcInstructionAbort);

  // Writable memory: never executable.
  expect_allowed(cpu, "write to data", g_ret_in_data, arch::probe_write(g_ret_in_data, (std::uint64_t{kRet} << 32) | kRet));
  expect_fault(cpu, "jump into data", g_ret_in_data, arch::probe_exec(g_ret_in_data), kEcInstructionAbort);
  alignas(8) std::uint32_t on_stack[2] = {kRet, kRet};
  expect_fault(cpu, "jump into the stack", on_stack, arch::probe_exec(on_stack), kEcInstructionAbort);
  auto* heap = new std::uint32_t[2]{kRet, kRet};
  expect_fault(cpu, "jump into the heap", heap, arch::probe_exec(heap), kEcInstructionAbort);
  delete[] heap;
}

}  // namespace

KTEST(wx_kernel_image_on_every_cpu, 1) {
  unsigned n = system_stats().cpus;
  for (unsigned cpu = 0; cpu < n; ++cpu) {
    Thread t = ktest::spawn("wx", kDefaultPriority, CpuMask::only(cpu), [] { check_this_cpu(); });
    if (t.joinable()) t.join();
  }
}
