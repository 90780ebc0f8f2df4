// Hosted processes (spindle/process.h): a child Linux process of the same
// executable, started with posix_spawn (never fork: the parent has many
// host threads) and an entry token, running its own Spindle kernel.
//
// The parent passes everything through a control block (Ctl) in a memfd
// that both map: the options, the entry and its arguments as offsets and
// bytes, and, written by the child when a fault ends it, the fault record.
// The child finds the memfd at descriptor kCtlFd and the token
// `--spindle-process` as its first argument (main.cc).
//
// Code addresses cross as offsets from anchor(): the executable is position
// independent and each process loads it at its own address (ASLR), but as
// one piece, so an offset means the same function in both.
//
// Ownership: a ProcessRecord belongs to its Process handle. The pidfd
// names the child for kill and wait, so a recycled pid is never signalled.
// Waiting (waitid on the pidfd) and spawning run through host_call: they
// block a Spindle thread, never a vCPU.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <new>

#include <arch/arch.h>

#include "hosted_internal.h"
#include "spindle/hosted.h"
#include "spindle/process.h"
#include "spindle/process_pool.h"
#include "spindle/thread.h"

extern char** environ;

namespace spindle {
namespace detail {

struct ProcessRecord {
  pid_t pid = 0;
  int pidfd = -1;
  void* ctl = nullptr;
  std::size_t ctl_size = 0;
  unsigned tree_slot = 0;  // its slot in the process tree's table (0: none yet)
};

}  // namespace detail

namespace hosted {
namespace {

constexpr std::uint32_t kCtlMagic = 0x53504e44;  // "SPND"
constexpr int kCtlFd = 100;                        // where the child finds the memfd
constexpr int kHandleFd = 101;                     // ... and its handles (ProcessOptions::handles)

struct Ctl {
  std::uint32_t magic = kCtlMagic;
  std::uint32_t thread_limit = 0;
  std::uint64_t memory_limit = 0;
  std::uint64_t affinity = 0;
  int priority = kDefaultPriority;
  char name[32] = {};
  std::int64_t main_off = 0;   // detail::ProcessMain, from anchor()
  std::int64_t entry_off = 0;  // entry, from anchor()
  std::uint64_t args_len = 0;
  arch::ClockCalibration clock{};  // the parent's, so the child need not calibrate
  std::int32_t parent_pid = 0;  // the child ends with it (PR_SET_PDEATHSIG)
  std::uint32_t tree_slot = 0;  // in the process tree's table (kTreeFd): names its thread ids
  std::uint32_t tree_first = 0;  // ... and where its ids start there
  std::uint32_t nhandles = 0;  // handles given at spawn, found at kHandleFd + i
  SpawnedHandle handles[kMaxHandlesPerTransfer] = {};
  // Written once by the child when a fault ends it (first fault wins);
  // read by the parent after the child was reaped.
  std::atomic<std::uint32_t> fault{0};
  std::uint64_t fault_address = 0;
  char fault_thread[32] = {};
  alignas(16) std::byte args[];  // args_len bytes
};

Ctl* g_self = nullptr;  // in a spawned process: its control block

std::uintptr_t anchor() { return reinterpret_cast<std::uintptr_t>(&host_cpus); }

void copy_name(char (&dst)[32], const char* src) {
  std::size_t n = 0;
  while (src && n + 1 < sizeof dst && src[n]) {
    dst[n] = src[n];
    ++n;
  }
  dst[n] = '\0';
}

int pidfd_open(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

// A reaped child's end, as the parent tells it.
ExitStatus exit_status(const siginfo_t& info, const Ctl* ctl) {
  ExitStatus st;
  std::uint32_t fault = ctl->fault.load(std::memory_order_acquire);
  if (fault != 0) {
    st.kind = ExitKind::kFaulted;
    st.fault = static_cast<FaultKind>(fault);
    st.address = ctl->fault_address;
    std::memcpy(st.thread, ctl->fault_thread, sizeof st.thread);
    st.thread[sizeof st.thread - 1] = '\0';
  } else if (info.si_code == CLD_EXITED) {
    st.kind = ExitKind::kExited;
    st.code = info.si_status;
  } else {
    st.kind = ExitKind::kKilled;
    st.code = info.si_status;
  }
  return st;
}

void free_record(detail::ProcessRecord* p) {
  tree_slot_done(p->tree_slot);
  if (p->pidfd >= 0) close(p->pidfd);
  if (p->ctl) munmap(p->ctl, p->ctl_size);
  delete p;
}

int child_main(void*) {
  Ctl* c = g_self;
  adopt_inherited(c->handles, c->nhandles);  // the handle table needs a running kernel
  if (c->priority != kDefaultPriority) this_thread::set_priority(c->priority);
  auto main = reinterpret_cast<detail::ProcessMain>(detail::code_address(c->main_off));
  return main(detail::code_address(c->entry_off), c->args, c->args_len);
}

}  // namespace

int process_main() {
  struct stat sb;
  if (fstat(kCtlFd, &sb) != 0 || static_cast<std::size_t>(sb.st_size) < sizeof(Ctl)) {
    static const char kMsg[] = "spindle: --spindle-process is for processes started by Process::spawn\n";
    (void)!::write(2, kMsg, sizeof kMsg - 1);
    return 2;
  }
  void* m = mmap(nullptr, static_cast<std::size_t>(sb.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, kCtlFd, 0);
  close(kCtlFd);
  if (m == MAP_FAILED) return 2;
  g_self = static_cast<Ctl*>(m);
  if (g_self->magic != kCtlMagic) return 2;
  // A process does not outlive its parent: killed with it, like a thread
  // with its kernel (and no orphan spins on after a killed test run).
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != g_self->parent_pid) return 2;  // the parent ended before the line above
  if (!tree_adopt(g_self->tree_slot, g_self->tree_first)) {
    static const char kMsg[] = "spindle: a spawned process found no slot in its process tree\n";
    (void)!::write(2, kMsg, sizeof kMsg - 1);
    return 2;
  }
  arch::hosted_adopt_clock_calibration(g_self->clock);
  arch::hosted_set_memory_limit(g_self->memory_limit);
  Options opts;
  opts.pin_mask = g_self->affinity;
  opts.cpus = static_cast<unsigned>(__builtin_popcountll(g_self->affinity));
  opts.thread_limit = g_self->thread_limit;
  opts.main_name = g_self->name;
  return run(opts, child_main, nullptr);
}

bool run_if_spawned(int argc, char** argv, int* code) {
  if (argc != 2 || std::strcmp(argv[1], "--spindle-process") != 0) return false;
  *code = process_main();
  return true;
}

void process_fault(FaultKind kind, std::uintptr_t address) {
  Ctl* c = g_self;
  if (!c) return;
  std::uint32_t none = 0;
  if (!c->fault.compare_exchange_strong(none, static_cast<std::uint32_t>(kind), std::memory_order_acq_rel)) return;
  c->fault_address = address;
  copy_name(c->fault_thread, arch::hosted_is_vcpu() ? this_thread::name() : "host thread");
}

bool is_spawned_process() { return g_self != nullptr; }

}  // namespace hosted

namespace detail {

using hosted::Ctl;

Result<ProcessRecord*> process_spawn(const ProcessOptions& opts, ProcessMain main, std::uintptr_t entry,
                                     const std::byte* args, std::size_t len) {
  if (opts.priority < kMinPriority || opts.priority > kMaxPriority) return Status::kInvalidArgument;
  // Cores that exist (not the caller's affinity: a vCPU is pinned to one).
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  unsigned host = online > 0 ? static_cast<unsigned>(online) : 1;
  std::uint64_t cores = host >= 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << host) - 1;
  std::uint64_t affinity = opts.affinity.bits() & cores;
  if (affinity == 0 || len > kMaxProcessArgBytes || opts.handles.size() > kMaxHandlesPerTransfer) {
    return Status::kInvalidArgument;
  }
  hosted::Object* objs[kMaxHandlesPerTransfer];
  Status hs = hosted::acquire_handles(opts.handles, objs);
  if (hs != Status::kOk) return hs;
  struct ReleaseHandles {
    hosted::Object** objs;
    std::size_t n;
    ~ReleaseHandles() { hosted::release_handles(objs, n); }
  } release_at_end{objs, opts.handles.size()};

  std::size_t size = sizeof(Ctl) + len;
  int fd = memfd_create("spindle-process", MFD_CLOEXEC);
  if (fd < 0) return Status::kNoMemory;
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    close(fd);
    return Status::kNoMemory;
  }
  void* m = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) {
    close(fd);
    return Status::kNoMemory;
  }
  auto* c = new (m) Ctl;
  c->thread_limit = opts.thread_limit;
  c->memory_limit = opts.memory_limit;
  c->affinity = affinity;
  c->priority = opts.priority;
  hosted::copy_name(c->name, opts.name ? opts.name : "process");
  c->main_off = code_offset(reinterpret_cast<std::uintptr_t>(main));
  c->entry_off = code_offset(entry);
  c->args_len = len;
  if (len) std::memcpy(c->args, args, len);
  c->clock = arch::hosted_clock_calibration();
  c->parent_pid = getpid();
  c->nhandles = static_cast<std::uint32_t>(opts.handles.size());
  for (std::size_t i = 0; i < opts.handles.size(); ++i) {
    c->handles[i] = hosted::spawn_handle_info(objs[i]);
  }

  auto* rec = new (std::nothrow) ProcessRecord;
  if (!rec) {
    munmap(m, size);
    close(fd);
    return Status::kNoMemory;
  }
  rec->ctl = m;
  rec->ctl_size = size;

  // posix_spawn blocks until the child has exec'd: do it off the vCPU. The
  // helper thread blocks every signal; the child must not inherit that.
  int err = static_cast<int>(hosted::host_call([&]() -> long {
    hosted::TreeSlot slot;
    if (!hosted::tree_slot_for_child(&slot)) return EAGAIN;
    rec->tree_slot = slot.slot;  // given back by free_record
    c->tree_slot = slot.slot;
    c->tree_first = slot.first;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd, hosted::kCtlFd);
    posix_spawn_file_actions_adddup2(&fa, slot.fd, hosted::kTreeFd);
    for (std::uint32_t i = 0; i < c->nhandles; ++i) {
      posix_spawn_file_actions_adddup2(&fa, c->handles[i].fd, hosted::kHandleFd + static_cast<int>(i));
      c->handles[i].fd = hosted::kHandleFd + static_cast<int>(i);  // where the child finds it
    }
    posix_spawnattr_init(&attr);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char arg0[] = "spindle-process";
    char arg1[] = "--spindle-process";
    char* argv[] = {arg0, arg1, nullptr};
    pid_t pid = 0;
    int e = posix_spawn(&pid, "/proc/self/exe", &fa, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    if (e == 0) {
      rec->pid = pid;
      rec->pidfd = hosted::pidfd_open(pid);
      if (rec->pidfd < 0) {  // cannot name it safely: do not let it run
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
        e = EAGAIN;
      }
    }
    return e;
  }));
  close(fd);
  if (err != 0) {
    hosted::free_record(rec);
    return err == ENOMEM ? Status::kNoMemory : Status::kLimit;
  }
  return rec;
}

Result<ExitStatus> process_join(ProcessRecord* p, TimePoint deadline) {
  if (!arch::irqs_enabled()) return Status::kInvalidState;
  bool forever = deadline == kForever;
  long long left = forever ? 0 : std::chrono::duration_cast<Duration>(deadline - Clock::now()).count();
  if (left < 0) left = 0;
  siginfo_t info{};
  long r = hosted::host_call([&]() -> long {
    if (!forever) {
      timespec rel{static_cast<time_t>(left / 1'000'000'000), static_cast<long>(left % 1'000'000'000)};
      pollfd pfd{p->pidfd, POLLIN, 0};
      int n;
      do {
        n = ppoll(&pfd, 1, &rel, nullptr);
      } while (n < 0 && errno == EINTR);
      if (n == 0) return 1;  // timed out
    }
    int e;
    do {
      e = waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(p->pidfd), &info, WEXITED);
    } while (e < 0 && errno == EINTR);
    return e < 0 ? -1 : 0;
  });
  if (r == 1) return Status::kTimedOut;
  if (r != 0) return Status::kInvalidState;
  ExitStatus st = hosted::exit_status(info, static_cast<const Ctl*>(p->ctl));
  hosted::free_record(p);
  return st;
}

Status process_kill(ProcessRecord* p) {
  if (syscall(SYS_pidfd_send_signal, p->pidfd, SIGKILL, nullptr, 0) != 0 && errno != ESRCH) {
    return Status::kInvalidState;
  }
  return Status::kOk;
}

void process_release(ProcessRecord* p) {
  (void)process_kill(p);
  Result<ExitStatus> r = process_join(p, kForever);
  if (!r.ok()) hosted::free_record(p);
}

ProcessId process_id(const ProcessRecord* p) { return static_cast<ProcessId>(p->pid); }

std::intptr_t code_offset(std::uintptr_t address) { return static_cast<std::intptr_t>(address - hosted::anchor()); }
std::uintptr_t code_address(std::intptr_t offset) { return hosted::anchor() + static_cast<std::uintptr_t>(offset); }

}  // namespace detail

namespace this_process {
ProcessId id() { return static_cast<ProcessId>(getpid()); }
bool is_spawned() { return hosted::is_spawned_process(); }
std::uintptr_t kernel_space_address() { return 0xffff'8000'0000'1000ull; }  // Linux's half of x86-64
}  // namespace this_process

}  // namespace spindle
