// The kernel lock, panic, and status names.
#include <cstdarg>

#include "kernel.h"
#include "spindle/console.h"
#include "user.h"

namespace spindle {

const char* to_string(Status s) {
  switch (s) {
    case Status::kOk: return "ok";
    case Status::kTimedOut: return "timed out";
    case Status::kWouldBlock: return "would block";
    case Status::kDeadlock: return "deadlock";
    case Status::kOwnerDied: return "owner died";
    case Status::kInterrupted: return "interrupted";
    case Status::kInvalidArgument: return "invalid argument";
    case Status::kInvalidState: return "invalid state";
    case Status::kNoMemory: return "out of memory";
    case Status::kFaulted: return "faulted";
    case Status::kNotFound: return "not found";
    case Status::kClosed: return "closed";
    case Status::kOverflow: return "overflow";
    case Status::kLimit: return "limit exceeded";
  }
  return "unknown status";
}

namespace detail {
void result_access_failed(Status s) {
  if (s == Status::kOk) kernel::panic("Result constructed from Status::kOk without a value");
  kernel::panic("value() of a failed Result (status: %s)", to_string(s));
}
}  // namespace detail

namespace kernel {

void KernelLock::wait_for(std::uint32_t ticket) {
  while (serving_.load(std::memory_order_acquire) != ticket) arch::cpu_relax();
}

void unlock_with_pending() {
  Cpu& c = this_cpu();
  std::uint64_t targets = c.ipi_out;
  c.ipi_out = 0;
  void* unmap = c.unmap_list;
  c.unmap_list = nullptr;
  g.lock.unlock();
  if (unmap) release_unmapped_stacks(unmap);
  while (targets) {
    unsigned cpu = static_cast<unsigned>(__builtin_ctzll(targets));
    targets &= targets - 1;
    arch::send_ipi(cpu);
  }
}

}  // namespace kernel

void panic(const char* fmt, ...) {
  using namespace kernel;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vformat(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (in_user_process()) {
    // A process's panic ends the process (kFaulted, FaultKind::kPanic).
    std::size_t len = n < 0 ? 0 : static_cast<std::size_t>(n) < sizeof msg ? static_cast<std::size_t>(n) : sizeof msg - 1;
    sys(kSysPanic, user_arg(msg), len);
    __builtin_trap();  // not reached
  }
  arch::irq_save();
  const char* thread = "(boot)";
  unsigned cpu = 0;
  if (arch::cpu_area() != nullptr && arch::cpu_area()->kernel != nullptr) {
    Cpu& c = this_cpu();
    cpu = c.id;
    if (c.current) thread = c.current->name;
  }
  print("\n*** spindle panic on cpu %u in thread '%s': %s\n", cpu, thread, msg);
  arch::halt(kPanicExitCode);
}

}  // namespace spindle
