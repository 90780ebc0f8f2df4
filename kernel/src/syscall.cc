// User mode, the kernel's side (arch.h: User mode): running a thread in
// user mode, its system calls and its faults.
//
// This is the boundary the process layer fills: for now the system-call
// table is a stub (a null call, an echo, exit) and a fault ends only the
// faulting thread. Processes will own address spaces, tear a faulting
// process down, and check every user pointer a call passes.
//
// Ownership: a thread's address_space belongs to whoever created it (the
// caller of run_user; later, its process), which destroys it only after
// every thread running in it has ended. The scheduler activates it on
// every switch to the thread (sched.cc); it is set once, by the thread
// itself, before it first enters user mode.
#include "kernel.h"

#include "spindle/console.h"

namespace spindle::kernel {

void handle_syscall(arch::SyscallFrame& frame) {
  switch (frame.number) {
    case kSysNull:
      frame.result = 0;
      return;
    case kSysEcho:
      frame.result = ~frame.arg[0];
      return;
    case kSysExit:
      exit_current(static_cast<int>(frame.arg[0]), false);
    default:
      frame.result = ~std::uint64_t{0};
      return;
  }
}

void user_fault(const arch::UserFault& f) {
  Tcb* t = current_thread();
  print("*** user fault in thread '%s' (id %llu): %s (ESR 0x%llx, class 0x%llx), address 0x%llx, pc 0x%llx; thread killed\n",
        t->name, static_cast<unsigned long long>(t->head.id), f.what, static_cast<unsigned long long>(f.syndrome),
        static_cast<unsigned long long>(f.syndrome >> 26), static_cast<unsigned long long>(f.address),
        static_cast<unsigned long long>(f.pc));
  exit_current(-1, true);
}

void run_user(arch::AddressSpace* as, const arch::UserEntry& entry) {
  arch::IrqState s = arch::irq_save();
  current_thread()->address_space = as;
  arch::address_space_activate(as);
  arch::irq_restore(s);
  arch::enter_user(entry);
}

}  // namespace spindle::kernel
