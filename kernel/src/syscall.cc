// User mode's boundary: which copy of the image runs, and the system-call
// table. The kernel's side of processes (records, loader, handlers, faults,
// handles and channels, coroutine waits and stats) is in uprocess.cc,
// usyscall.cc, uheap.cc, uchannel.cc and ujobs.cc, compiled only for backends
// with user mode (arch/CMakeLists.txt); the process's side is the shared
// code itself, which checks in_user_process() (user.h) at every entry point
// that needs the kernel.
//
// System calls (aarch64: `svc #0`, number in x8, arguments x0..x5, result
// x0). A Status result is its integer value (0 = kOk). Every pointer is a
// user address the kernel checks (user_read/user_write/user_word): a bad
// one (outside the process's memory, or not readable/writable there, or a
// kernel address) makes the call return kInvalidArgument, never fault.
// Deadlines are Clock nanoseconds (kForever: INT64_MAX).
//
//   #   name              arguments                          result
//   0   kSysNull          -                                  0
//   1   kSysEcho          v                                  ~v
//   2   kSysExit          code                               - (the thread ends; a process's
//                                                              first thread ends the process: kExited, code)
//   3   kSysProcessExit   code                               - (the process ends: kExited, code)
//   4   kSysWrite         buf, len                           Status (console output, one unit up to 4 KiB)
//   5   kSysRead          buf, len                           bytes read (0: end of input), ~0: bad buffer
//   6   kSysFutexWait     word, expected, deadline, order    Status (futex_wait)
//   7   kSysFutexWake     word, n                            woken, ~0: bad word
//   8   kSysFutexLock     word, policy bits, aging, deadline Status (futex_lock; user.h: policy_bits)
//   9   kSysFutexUnlock   word                               Status (futex_unlock)
//   10  kSysThreadCreate  UserThreadCreate* (user.h)         Status; fills id, block, callable
//   11  kSysThreadStart   id                                 Status
//   12  kSysThreadJoin    id, deadline, int* code            Status (Thread::join_until)
//   13  kSysThreadDetach  id                                 Status
//   14  kSysYield         -                                  0
//   15  kSysSleep         deadline                           Status (this_thread::sleep_until)
//   16  kSysThreadCtl     op (user.h: ThreadCtl), id, value  Status, or the value asked for
//   17  kSysHeapGrow      bytes, must, bytes asked           user address of the new pages; 0 refused
//                                                              (must: the process ends, kMemoryLimit, instead)
//   18  kSysInfo          what (arch.h: SysInfo)             process id, CPU count or time slice (ns)
//   19  kSysPanic         msg, len                           - (the process ends: kFaulted, kPanic)
//   20  kSysChannelPair   Handle out[2]                      Status (Channel::create)
//   21  kSysChannelSend   h, msg, len, handles, n, deadline  Status (deadline 1 << 63: try only, kWouldBlock)
//   22  kSysChannelRecv   h, buf, len, handles, n, deadline  Status | bytes << 8 | handles << 40
//   23  kSysHandle        op (user.h: HandleOp), h, access   kind; Status; Status | new handle << 32
//   24  kSysShm           op (user.h: ShmOp), size | h | at, Mapping*   Status | handle << 32; Status; 0, or
//                                                              kInvalidState | waiters << 32 (unmap: the
//                                                              caller's threads or jobs wait on its words)
//   25  kSysChannelCall   h, msg, len, buf, cap, deadline    Status | bytes << 8 (Channel::call and
//                                                              reply_and_recv: send msg, then receive
//                                                              into buf; no handles either way;
//                                                              aarch64 tries kernel::syscall_fast first)
//   26  kSysChannelCallRegs  h, len, m0, m1, cap[, deadline]   x0: Status | bytes << 8, the reply in x1, x2
//                         (call_value, reply_and_recv_value:      (kInvalidArgument: len or cap above 16);
//                         a request of len <= 16 bytes in m0,    or, with nothing in x1/x2: 0xFE, nothing
//                         m1, a reply of at most cap <= 16       done, make the call with 25; 0xFD, the
//                         bytes; len | 1 << 8: a deadline in     request went out, receive the reply with 22
//                         x5, else none)                         (both with the same deadline)
//                                                              (user side: detail::channel_call_regs(_until))
//   27: reserved (channels).
//   28  kSysProcessSpawn  UserProcessSpawn* (user.h)         Status; fills pid (a child of the caller)
//   29  kSysProcessJoin   pid, deadline, ExitStatus*         Status (kNotFound: not the caller's child;
//                                                              kInvalidState: another thread joins it)
//   30  kSysProcessKill   pid                                Status (kNotFound: not the caller's child)
//   31  kSysJobWait       word, expected, deadline,          Status: kOk = a proxy waits for the job
//                         order | priority << 8, job, &cancel   (kWouldBlock, kTimedOut: not queued)
//       (with kJobWaitChannel in order: handle, writable, ... : a wait for a channel end; kWouldBlock: ready)
//       (with kJobWaitTake in order: a take of a counting word's unit; kOk: taken now, kWouldBlock: a
//        proxy waits as a taker, posted kOk only with a unit handed over, kWouldBlock without)
//   32  kSysJobCtl        op (user.h: JobCtl), ...           kJobCollect: woken jobs copied out, 0 on a
//                                                              kick, ~0 bad buffer; kJobCancel, kJobKick: Status
//   33  kSysStats         op (user.h: StatsOp), ...          kStatsThreads: count (~0 bad buffer);
//                                                              kStatsThread, kStatsSystem: Status
//   32  ... kJobId: a lock identity for a job (id, 0: none left); kJobIdFree id: the job
//       ended (its locks pass as owner-died); kJobUnlock word, id: futex_unlock as that job
//   34  kSysJobLock       word, policy bits | priority << 8   Status: kWouldBlock = a proxy waits for
//                         | aging << 32, id, deadline,        the lock (its hand-off, timeout or cancel);
//                         job, &cancel                        kOk, kOwnerDied: taken; else not queued
//   35  kSysFutexTake     word, deadline, order              Status (futex_take: kOk = a unit is the caller's)
//   36  kSysFutexGive     word, n, max                       Status (futex_give; n, max above 32 bits:
//                                                              kInvalidArgument)
//   37  kSysFutexWaiters  word                               waiters (futex_waiters), ~0: bad word
//   38                    (free)
//
// kSysInfo (18) also answers kInfoSpawnHandles: how many handles the
// process was given at spawn (this_process::handle).
//
// Futex words are keyed by the kernel's address of the word (user_word),
// i.e. by physical page: the same for every process mapping it, distinct
// for distinct processes' private pages. A thread without a process (a
// bare kernel::run_user thread, tests/qemu) has only calls 0..2.
#include "kernel.h"

namespace spindle::kernel {

// False here, in the kernel's copy; a process's loader sets its copy's.
bool g_in_user_process = false;

}  // namespace spindle::kernel
