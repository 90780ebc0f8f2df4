// Coroutines and stats inside processes, the kernel's side (placeholder).
#include "uprocess.h"

namespace spindle::kernel {

bool jobs_syscall(Proc*, arch::SyscallFrame&) { return false; }
void close_job_port(Proc*) {}

}  // namespace spindle::kernel
