// Unrecoverable errors: a report naming the CPU, the thread and the problem,
// then the whole system stops with kPanicExitCode (hosted: the process exit
// status; QEMU: the semihosting exit code).
#pragma once

namespace spindle {

inline constexpr int kPanicExitCode = 70;

// Any context. Never returns.
[[noreturn]] void panic(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace spindle
