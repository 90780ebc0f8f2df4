// Isolated processes: `entry` from the same app image, started in a fresh
// address space with fresh globals ("spawn" semantics), its own heap and
// threads. A process talks to others only through its arguments (copied
// in), channels (spindle/channel.h), shared-memory regions it was granted
// (spindle/shared_memory.h) and its exit status. A fault in a process (bad
// pointer, stack overflow, illegal instruction, memory limit) ends that
// process only; join() says how it died.
//
// Hosted, a process is a child Linux process of the same executable with
// its own Spindle kernel; bare metal, it runs at EL0 in its own page tables.
//
//   int worker(int id, std::uint64_t n) { ... return 0; }
//   auto p = spindle::Process::spawn(worker, 7, 1000);   // Result<Process>
//   spindle::ExitStatus st = p->join().value();
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>

#include "spindle/cpu_mask.h"
#include "spindle/handle.h"
#include "spindle/status.h"
#include "spindle/thread.h"
#include "spindle/time.h"

namespace spindle {

// Unique among the processes alive at the same time (hosted: the Linux pid).
using ProcessId = std::uint32_t;

struct ProcessOptions {
  const char* name = "process";       // copied; truncated to 31 characters
  std::size_t memory_limit = 0;       // bytes of heap and thread stacks; 0 = no limit
  unsigned thread_limit = 0;          // live threads, the first included; 0 = no limit
  CpuMask affinity = CpuMask::all();  // CPUs its threads may run on (hosted: host cores)
  int priority = kDefaultPriority;    // its first thread's priority
  // Handles the new process gets its own handles to (same objects, same
  // rights), as this_process::handle(0), (1), ...; at most
  // kMaxHandlesPerTransfer. The caller keeps its handles.
  std::span<const Handle> handles = {};
};

// Arguments are copied into the new process: at most this many bytes.
inline constexpr std::size_t kMaxProcessArgBytes = 64 * 1024;

enum class ExitKind : std::uint8_t {
  kExited,   // entry returned (code is its result)
  kKilled,   // Process::kill, or an outside signal (hosted)
  kFaulted,  // a fault ended it (fault, address, thread say which)
};

enum class FaultKind : std::uint8_t {
  kNone,
  kBadAccess,           // read, write or jump to an address it may not use
  kStackOverflow,       // a thread ran into its stack's guard region
  kIllegalInstruction,  // an undefined or privileged instruction
  kArithmetic,          // integer division by zero and the like
  kMemoryLimit,         // an allocation would pass ProcessOptions::memory_limit
  kPanic,               // the process's kernel found a fatal misuse and stopped it
};
const char* to_string(FaultKind k);
const char* to_string(ExitKind k);

struct ExitStatus {
  ExitKind kind = ExitKind::kExited;
  int code = 0;                    // kExited: entry's result; kKilled: the signal (hosted) or 0
  FaultKind fault = FaultKind::kNone;
  std::uintptr_t address = 0;      // kFaulted: the faulting address (kMemoryLimit: the bytes asked for)
  char thread[32] = {};            // kFaulted: the faulting thread's name

  bool success() const { return kind == ExitKind::kExited && code == 0; }
  // One line: "exited with code 0", "killed by signal 9",
  // "faulted: bad memory access at 0x0 in thread 'main'". Returns buf.
  const char* describe(char* buf, std::size_t size) const;
};

namespace detail {
// Runs in the new process: unpacks the arguments and calls entry.
using ProcessMain = int (*)(std::uintptr_t entry, const std::byte* args, std::size_t len);
struct ProcessRecord;  // the backend's
Result<ProcessRecord*> process_spawn(const ProcessOptions& opts, ProcessMain main, std::uintptr_t entry,
                                     const std::byte* args, std::size_t len);
Result<ExitStatus> process_join(ProcessRecord* p, TimePoint deadline);  // kOk: p is freed
Status process_kill(ProcessRecord* p);
void process_release(ProcessRecord* p);  // kills it if running, reaps it, frees p
ProcessId process_id(const ProcessRecord* p);

// Arguments: trivially copyable values (no pointers: they would mean
// nothing in another address space) or byte spans, whose bytes are copied.
template <typename T>
inline constexpr bool kIsByteSpan = std::is_same_v<T, std::span<const std::byte>>;
template <typename T>
inline constexpr bool kProcessArg =
    kIsByteSpan<T> || (std::is_trivially_copyable_v<T> && !std::is_pointer_v<T> && !std::is_member_pointer_v<T> &&
                       !std::is_reference_v<T>);

inline std::size_t arg_align(std::size_t at, std::size_t align) { return (at + align - 1) / align * align; }

template <typename T>
std::size_t arg_size(std::size_t at, const T& v) {
  if constexpr (kIsByteSpan<T>) {
    return arg_align(at, alignof(std::uint64_t)) + sizeof(std::uint64_t) + v.size();
  } else {
    return arg_align(at, alignof(T)) + sizeof(T);
  }
}

template <typename T>
std::size_t arg_write(std::byte* out, std::size_t at, const T& v) {
  if constexpr (kIsByteSpan<T>) {
    at = arg_align(at, alignof(std::uint64_t));
    std::uint64_t n = v.size();
    std::memcpy(out + at, &n, sizeof n);
    if (n) std::memcpy(out + at + sizeof n, v.data(), v.size());
    return at + sizeof n + v.size();
  } else {
    at = arg_align(at, alignof(T));
    std::memcpy(out + at, &v, sizeof(T));
    return at + sizeof(T);
  }
}

template <typename T>
T arg_read(const std::byte* in, std::size_t& at) {
  if constexpr (kIsByteSpan<T>) {
    at = arg_align(at, alignof(std::uint64_t));
    std::uint64_t n;
    std::memcpy(&n, in + at, sizeof n);
    T s(in + at + sizeof n, static_cast<std::size_t>(n));
    at += sizeof n + static_cast<std::size_t>(n);
    return s;
  } else {
    at = arg_align(at, alignof(T));
    T v;
    std::memcpy(&v, in + at, sizeof(T));
    at += sizeof(T);
    return v;
  }
}

template <typename... P>
int process_main(std::uintptr_t entry, [[maybe_unused]] const std::byte* args, std::size_t) {
  auto fn = reinterpret_cast<int (*)(P...)>(entry);
  [[maybe_unused]] std::size_t at = 0;
  // Braced initialisation evaluates the reads left to right.
  std::tuple<std::remove_cvref_t<P>...> values{arg_read<std::remove_cvref_t<P>>(args, at)...};
  return std::apply(fn, std::move(values));
}
}  // namespace detail

// An owning handle to a process, move-only. Destroying a handle whose
// process still runs kills it and waits for it (no process outlives every
// handle to it unnoticed), and a process whose parent ends, however it
// ends, is killed with it.
class Process {
 public:
  Process() = default;
  Process(Process&& o) noexcept : rec_(std::exchange(o.rec_, nullptr)) {}
  Process& operator=(Process&& o) noexcept {
    if (this != &o) {
      reset();
      rec_ = std::exchange(o.rec_, nullptr);
    }
    return *this;
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process() { reset(); }

  // Starts entry(args...) in a new process. The parameter types of entry
  // must be trivially copyable non-pointers or std::span<const std::byte>
  // (checked at compile time); args are converted to them and copied.
  // Returns kInvalidArgument (options out of range, arguments larger than
  // kMaxProcessArgBytes, too many handles), kNotFound (a bad handle in
  // opts.handles), kNoMemory or kLimit when the system cannot start another
  // process (or the caller's, or an ancestor's, limits would pass: aarch64
  // counts a child's threads and memory against its ancestors' limits).
  // A process may spawn processes (nested); its children end with it
  // (aarch64). Thread context.
  template <typename... P, typename... A>
  static Result<Process> spawn(const ProcessOptions& opts, int (*entry)(P...), A&&... args) {
    static_assert(sizeof...(P) == sizeof...(A), "Process::spawn: give one argument per parameter of entry");
    static_assert((detail::kProcessArg<std::remove_cvref_t<P>> && ...),
                  "Process::spawn: entry's parameters must be trivially copyable non-pointer values or "
                  "std::span<const std::byte> (they are copied into another address space)");
    if (!entry) return Status::kInvalidArgument;
    return spawn_converted<P...>(opts, entry, std::remove_cvref_t<P>(std::forward<A>(args))...);
  }
  template <typename... P, typename... A>
  static Result<Process> spawn(int (*entry)(P...), A&&... args) {
    return spawn(ProcessOptions{}, entry, std::forward<A>(args)...);
  }

  // Waits for the process to end and says how. kInvalidState on an empty
  // handle; kTimedOut (handle unchanged) at the deadline. After kOk the
  // handle is empty. In a process only its own children can be joined
  // (a handle naming another pid: kNotFound); kInterrupted when the caller's
  // process is ending. Thread context.
  Result<ExitStatus> join() { return join_until(kForever); }
  Result<ExitStatus> join_until(TimePoint deadline);
  Result<ExitStatus> join_for(Duration d) { return join_until(deadline_after(d)); }

  // Ends the process at once (its join reports kKilled), and its children
  // with it (aarch64). kInvalidState on an empty handle; kOk if it had
  // already ended; in a process, kNotFound for a pid not its child.
  Status kill();

  bool joinable() const { return rec_ != nullptr; }
  ProcessId pid() const { return rec_ ? detail::process_id(rec_) : 0; }

 private:
  template <typename... P>
  static Result<Process> spawn_converted(const ProcessOptions& opts, int (*entry)(P...),
                                         const std::remove_cvref_t<P>&... args) {
    std::size_t size = 0;
    ((size = detail::arg_size(size, args)), ...);
    if (size > kMaxProcessArgBytes) return Status::kInvalidArgument;
    alignas(16) std::byte buf[256];
    std::byte* out = buf;
    if (size > sizeof buf) {
      out = new (std::nothrow) std::byte[size];
      if (!out) return Status::kNoMemory;
    }
    [[maybe_unused]] std::size_t at = 0;
    ((at = detail::arg_write(out, at, args)), ...);
    Result<detail::ProcessRecord*> r = detail::process_spawn(
        opts, &detail::process_main<P...>, reinterpret_cast<std::uintptr_t>(entry), size ? out : nullptr, size);
    if (out != buf) delete[] out;
    if (!r.ok()) return r.status();
    Process p;
    p.rec_ = *r;
    return p;
  }
  void reset() {
    if (rec_) detail::process_release(std::exchange(rec_, nullptr));
  }
  detail::ProcessRecord* rec_ = nullptr;
};

namespace this_process {
// The calling process's id (the app's first process has one too).
ProcessId id();
// Whether the caller runs in a process started by Process::spawn (false in
// the app's first process).
bool is_spawned();
// An address in kernel space, which no process may read or write: for
// fault-containment tests.
std::uintptr_t kernel_space_address();
// The i-th handle given at spawn (ProcessOptions::handles); an invalid
// Handle past the last one (and always in the app's first process).
Handle handle(unsigned i);
}  // namespace this_process

}  // namespace spindle
