// aarch64 backend extra (not part of the portable contract): memory
// accesses that may fault without taking the system down.
//
// Each probe masks interrupts on this CPU, arms CpuArea::probe_resume and
// makes one access; a synchronous abort taken at EL1 while it is armed
// resumes the probe (fault.cc) instead of panicking. So a probe reports
// what the MMU thinks of an address: tests prove the kernel's own
// protections with them (W^X), and the same mechanism is what a checked
// copy from user memory needs.
//
// Context: any (thread, irqs-off, interrupt handler). Never blocks.
#pragma once

#include <cstddef>
#include <cstdint>

namespace spindle::arch {

// The outcome of one probe: esr == 0 when the access completed, else the
// ESR_EL1 and FAR_EL1 of its fault.
struct ProbeResult {
  std::uint64_t esr;
  std::uint64_t far;
};

// An 8-byte load from addr (aligned) into *value (left alone on a fault).
ProbeResult probe_read(const void* addr, std::uint64_t* value);
// An 8-byte store of value to addr (aligned).
ProbeResult probe_write(void* addr, std::uint64_t value);
// Branches with link to addr. If addr is executable the code there runs
// and must return at once (a `ret`), so probe it only where that holds.
ProbeResult probe_exec(const void* addr);
// n bytes copied with user mode's permissions (LDTR/STTR), from a user
// address or to one, through the address space active on this CPU. On a
// fault the bytes before it were copied. Interrupts stay masked for the
// whole copy: keep n small (user_read/user_write copy in chunks).
ProbeResult probe_user_read(void* dst, const void* user_src, std::size_t n);
ProbeResult probe_user_write(void* user_dst, const void* src, std::size_t n);

}  // namespace spindle::arch
