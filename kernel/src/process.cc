// The portable part of processes (spindle/process.h): names, reports and
// the Process methods over the backend's detail::process_* calls.
#include "spindle/process.h"

#include "spindle/console.h"

namespace spindle {

const char* to_string(FaultKind k) {
  switch (k) {
    case FaultKind::kNone: return "no fault";
    case FaultKind::kBadAccess: return "bad memory access";
    case FaultKind::kStackOverflow: return "stack overflow";
    case FaultKind::kIllegalInstruction: return "illegal instruction";
    case FaultKind::kArithmetic: return "arithmetic fault";
    case FaultKind::kMemoryLimit: return "memory limit exceeded";
    case FaultKind::kPanic: return "kernel panic";
  }
  return "unknown fault";
}

const char* to_string(ExitKind k) {
  switch (k) {
    case ExitKind::kExited: return "exited";
    case ExitKind::kKilled: return "killed";
    case ExitKind::kFaulted: return "faulted";
  }
  return "unknown end";
}

const char* ExitStatus::describe(char* buf, std::size_t size) const {
  switch (kind) {
    case ExitKind::kExited:
      format(buf, size, "exited with code %d", code);
      break;
    case ExitKind::kKilled:
      if (code != 0) {
        format(buf, size, "killed by signal %d", code);
      } else {
        format(buf, size, "killed");
      }
      break;
    case ExitKind::kFaulted:
      if (fault == FaultKind::kMemoryLimit) {
        format(buf, size, "faulted: %s (asking for %llu bytes) in thread '%s'", to_string(fault),
                       static_cast<unsigned long long>(address), thread);
      } else {
        format(buf, size, "faulted: %s at %p in thread '%s'", to_string(fault),
                       reinterpret_cast<void*>(address), thread);
      }
      break;
  }
  return buf;
}

Result<ExitStatus> Process::join_until(TimePoint deadline) {
  if (!rec_) return Status::kInvalidState;
  Result<ExitStatus> r = detail::process_join(rec_, deadline);
  if (r.ok()) rec_ = nullptr;  // the backend freed the record
  return r;
}

Status Process::kill() {
  if (!rec_) return Status::kInvalidState;
  return detail::process_kill(rec_);
}

}  // namespace spindle
