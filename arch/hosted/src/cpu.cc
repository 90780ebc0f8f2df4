// Hosted virtual CPUs: one pinned host thread each; signals as interrupts;
// tgkill as the IPI; ppoll or futex_waitv for idle sleep.
//
// Idle: a vCPU with nothing to run polls its pending bits briefly, then
// sleeps in ppoll() with the interrupt signals unblocked atomically, so a
// signal between its last check and the sleep is never lost. ppoll (not a
// raw futex) also lets ThreadSanitizer deliver signals during the sleep.
// With words to watch (arch.h: idle_wait), it sleeps in futex_waitv on
// them and on its own pending bits instead: a signal that lands before
// the call changes `pending`, so the call returns at once; one during the
// sleep interrupts it.
//
// Signals: kSigTimer (the per-vCPU POSIX timer) and kSigIpi. Both are
// blocked in every host thread that is not a vCPU, so they only ever land
// on vCPUs. SIGURG and SIGWINCH are used because gdb passes them silently
// and nothing else in a Spindle process relies on them; a stray one is
// harmless (it only makes the vCPU look at its pending bits and timers).
#include <asm/prctl.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <arch/arch.h>

#include "hosted_internal.h"
#include "spindle/panic.h"
#include "spindle/process.h"

namespace spindle::arch {
namespace {

constexpr int kSigTimer = SIGWINCH;
constexpr int kSigIpi = SIGURG;
// Idle vCPUs look for an interrupt for kIdleSpinNs before sleeping in the
// host kernel, with a pause between looks (an IPI from a hand-off on
// another vCPU is seen within ~50 ns) and a host yield every
// kIdleYieldNs: a vCPU pinned to a core that another process's vCPU
// shares lets that one run instead of spinning it out.
constexpr std::uint64_t kIdleSpinNs = 20'000;
constexpr std::uint64_t kIdleYieldNs = 2'000;
constexpr std::size_t kAltStackSize = 64 * 1024;  // signal frames need ~12 KiB

// ThreadSanitizer runs signal handlers deferred, from inside its own
// interceptors, and cannot follow a fiber switch made there. Under TSan a
// signal only records its source; it is delivered at the next unmask (any
// kernel call), outside the handler. Threads that never call the kernel are
// then not preempted (the tests that need that are skipped under TSan).
// TSan also holds back a signal that arrives outside a blocking call until
// its next interceptor, which may be the ppoll of idle_wait, after our
// pending check, and may lose a timer signal's effect there: so under TSan
// an idle sleep is bounded to 1 ms and its timeout counts as a timer
// interrupt (timer handling re-checks every deadline against the clock).
// A busy vCPU can lose a timer signal the same way: every unmask polls the
// programmed deadline (tsan_poll_timer).
#if defined(__SANITIZE_THREAD__)
constexpr bool kPreemptInHandler = false;
constexpr bool kIdleBounded = true;
constexpr timespec kIdleSleepLimit{0, 1'000'000};
constexpr const timespec* kIdleTimeout = &kIdleSleepLimit;
#else
constexpr bool kPreemptInHandler = true;
constexpr bool kIdleBounded = false;
constexpr const timespec* kIdleTimeout = nullptr;  // race-free: sleep until a signal
#endif

// futex_waitv (Linux 5.16 and later); cleared once the host says it has none.
std::atomic<bool> g_have_waitv{true};

unsigned g_ncpus = 1;
// Whether the vCPUs run (between run_cpus' start and the join of every
// vCPU). Host threads post external wakes only under g_post_mu while it is
// true, so a late completion never races with a kernel's teardown or the
// next boot's initialisation (tests boot many kernels in one process).
pthread_mutex_t g_post_mu = PTHREAD_MUTEX_INITIALIZER;
bool g_running = false;
std::uint64_t g_pin_mask = 0;  // host cores the vCPUs are pinned to; 0: all
std::atomic<CpuArea*> g_areas[kMaxVcpus];  // atomic: host threads read it (send_ipi)
pid_t g_pid;

sigset_t irq_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, kSigTimer);
  sigaddset(&set, kSigIpi);
  return set;
}

void block_irq_signals(int how) {
  sigset_t set = irq_signals();
  pthread_sigmask(how, &set, nullptr);
}

void on_irq_signal(int sig, siginfo_t*, void* uctx) {
  int saved_errno = errno;
  if (sig == kSigTimer) cpu_area()->pending.fetch_or(kIrqTimer, std::memory_order_relaxed);
  if (kPreemptInHandler && irqs_enabled()) {
    irq_deliver_pending();
    // We may have been preempted and resumed on another vCPU. sigreturn
    // restores the altstack setting from this frame, so make it this
    // vCPU's own, not the one we were interrupted on.
    CpuArea* now = cpu_area();
    auto* uc = static_cast<ucontext_t*>(uctx);
    uc->uc_stack.ss_sp = now->altstack;
    uc->uc_stack.ss_size = now->altstack_size;
    uc->uc_stack.ss_flags = 0;
  }
  errno = saved_errno;
}

const char* fault_signal_name(int sig) {
  switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGILL: return "SIGILL";
    default: return "SIGFPE";
  }
}

// SIGSEGV, SIGBUS, SIGILL, SIGFPE. A guard-page hit in the app's own
// process kills only that thread; any other fault, and every fault in a
// spawned process, ends the process: a spawned one records the fault for
// its parent's join() first. Returning with the default action restored
// re-executes the faulting instruction, which then ends the process.
void on_fault_signal(int sig, siginfo_t* info, void*) {
  auto addr = reinterpret_cast<std::uintptr_t>(info->si_addr);
  bool overflow = (sig == SIGSEGV || sig == SIGBUS) && hosted_is_vcpu() && kernel::current_stack_guard_contains(addr);
  if (hosted::is_spawned_process()) {
    FaultKind kind = overflow            ? FaultKind::kStackOverflow
                     : sig == SIGILL     ? FaultKind::kIllegalInstruction
                     : sig == SIGFPE     ? FaultKind::kArithmetic
                                         : FaultKind::kBadAccess;
    hosted::process_fault(kind, addr);
    signal(sig, SIG_DFL);
    return;
  }
  if (overflow) {
    irq_save();
    sigset_t set;  // SA_NODEFER, but be explicit: faults stay deliverable
    sigemptyset(&set);
    sigaddset(&set, sig);
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
    kernel::stack_overflow(addr);
  }
  char msg[160];
  int n = std::snprintf(msg, sizeof msg, "\n*** spindle: fatal %s at address %p\n", fault_signal_name(sig), info->si_addr);
  if (n > 0) (void)!::write(2, msg, static_cast<std::size_t>(n));
  signal(sig, SIG_DFL);
}

void install_handlers() {
  struct sigaction sa {};
  sa.sa_sigaction = on_irq_signal;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(kSigTimer, &sa, nullptr);
  sigaction(kSigIpi, &sa, nullptr);
  struct sigaction fa {};
  fa.sa_sigaction = on_fault_signal;
  fa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&fa.sa_mask);
  for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE}) sigaction(sig, &fa, nullptr);
}

struct VcpuStart {
  void (*entry)(unsigned);
  unsigned id;
};

void* vcpu_thread(void* p) {
  auto* s = static_cast<VcpuStart*>(p);
  hosted_mark_vcpu();
  s->entry(s->id);  // returns at shutdown
  hosted_unmark_vcpu();
  return nullptr;
}

}  // namespace

void hosted_set_cpu_count(unsigned n) { g_ncpus = n; }
void hosted_set_pin_mask(std::uint64_t mask) { g_pin_mask = mask; }

unsigned cpu_count() { return g_ncpus; }

void cpu_init_local(CpuArea* area, unsigned id) {
  area->self = area;
  area->id = id;
  area->tid = static_cast<int>(gettid());
  area->irq_enabled = 0;
  syscall(SYS_arch_prctl, ARCH_SET_GS, area);
  if (!hosted_is_vcpu()) return;  // the boot thread: no interrupts
  g_areas[id] = area;
  if (!area->altstack) {
    area->altstack = mmap(nullptr, kAltStackSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    area->altstack_size = kAltStackSize;
  }
  stack_t ss{};
  ss.ss_sp = area->altstack;
  ss.ss_size = area->altstack_size;
  sigaltstack(&ss, nullptr);
  sigevent sev{};
  sev.sigev_notify = SIGEV_THREAD_ID;
  sev.sigev_signo = kSigTimer;
  sev._sigev_un._tid = area->tid;
  timer_t timer;
  if (timer_create(CLOCK_MONOTONIC, &sev, &timer) != 0) {
    std::perror("spindle: timer_create");
    _exit(1);
  }
  area->timer = timer;
  block_irq_signals(SIG_UNBLOCK);
}

void run_cpus(void (*entry)(unsigned)) {
  static bool installed = false;
  if (!installed) {
    install_handlers();
    installed = true;
  }
  g_pid = getpid();
  pthread_mutex_lock(&g_post_mu);
  g_running = true;
  pthread_mutex_unlock(&g_post_mu);
  block_irq_signals(SIG_BLOCK);  // inherited by the vCPUs until they are ready
  unsigned host_cpus = static_cast<unsigned>(sysconf(_SC_NPROCESSORS_ONLN));
  unsigned cores[64];
  unsigned ncores = 0;
  for (unsigned c = 0; c < host_cpus && c < 64; ++c) {
    if (g_pin_mask == 0 || (g_pin_mask >> c & 1)) cores[ncores++] = c;
  }
  if (ncores == 0) cores[ncores++] = 0;
  pthread_t threads[kMaxVcpus];
  VcpuStart starts[kMaxVcpus];
  for (unsigned i = 0; i < g_ncpus; ++i) {
    starts[i] = {entry, i};
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cores[i % ncores], &set);
    pthread_attr_setaffinity_np(&attr, sizeof set, &set);
    if (pthread_create(&threads[i], &attr, vcpu_thread, &starts[i]) != 0) {
      std::perror("spindle: cannot start a vCPU thread");
      _exit(1);
    }
    pthread_attr_destroy(&attr);
  }
  for (unsigned i = 0; i < g_ncpus; ++i) pthread_join(threads[i], nullptr);
  pthread_mutex_lock(&g_post_mu);
  g_running = false;
  pthread_mutex_unlock(&g_post_mu);
  for (unsigned i = 0; i < g_ncpus; ++i) {
    CpuArea* a = g_areas[i].exchange(nullptr);
    if (a && a->timer) {
      timer_delete(static_cast<timer_t>(a->timer));
      a->timer = nullptr;
    }
  }
}

void hosted_post_external(kernel::ExternalWake* ev) {
  pthread_mutex_lock(&g_post_mu);
  bool running = g_running;
  if (running) kernel::post_external_wake(ev);
  pthread_mutex_unlock(&g_post_mu);
  // Nobody will deliver it: its waiter went with the kernel. Let the
  // owner of a self-freeing record free it.
  if (!running && ev->delivered) ev->delivered(ev);
}

void irq_deliver_pending() {
  for (;;) {
    asm volatile("movb $0, %%gs:%c0" ::"i"(offsetof(CpuArea, irq_enabled)) : "memory");
    // Masked, so we stay on this vCPU until handle_irq switches.
    std::uint32_t bits = cpu_area()->pending.exchange(0, std::memory_order_acquire);
    if (bits) kernel::handle_irq(bits);
    asm volatile("movb $1, %%gs:%c0" ::"i"(offsetof(CpuArea, irq_enabled)) : "memory");
    if (cpu_area()->pending.load(std::memory_order_relaxed) == 0) return;
  }
}

void send_ipi(unsigned cpu) {
  CpuArea* t = g_areas[cpu];
  if (!t) return;  // the kernel is not running (a late external completion)
  std::uint32_t old = t->pending.fetch_or(kIrqIpi, std::memory_order_seq_cst);
  // Self: taken at unmask (only a vCPU has a cpu_area); or already on its way.
  if ((hosted_is_vcpu() && t == cpu_area()) || (old & kIrqIpi)) return;
  // A vCPU polling in idle_wait sees the bit by itself (Dekker with the
  // polling flag, both seq_cst); anyone else needs the signal.
  if (!t->polling.load(std::memory_order_seq_cst)) syscall(SYS_tgkill, g_pid, t->tid, kSigIpi);
}

namespace {
// The watched words for one idle_wait: the jobs' words to look at, and a
// futex_waitv vector to sleep on: entry 0 this vCPU's pending bits
// (expected 0; private to the process), then the jobs' words that wake
// all (arch.h: WatchedWord) and those that helper host threads sleep on
// for this process's threads (g_slept; shared: other processes change
// and wake them).
struct WaitVector {
  const WatchedWord* look;
  unsigned nlook;
  futex_waitv v[1 + kMaxWatched + kMaxSleptWords];
  unsigned n = 0;  // entries of v; 0: nothing to sleep on
  WaitVector(CpuArea* a, const WatchedWord* watch, unsigned count)
      : look(watch), nlook(count < kMaxWatched ? count : kMaxWatched) {
    unsigned k = 1;
    for (unsigned i = 0; i < nlook; ++i) {
      if (watch[i].wakes_all) v[k++] = {watch[i].expected, reinterpret_cast<std::uintptr_t>(watch[i].word), FUTEX_32, 0};
    }
    for (const SleptWord& s : g_slept) {
      if (const auto* word = s.word.load(std::memory_order_acquire)) {
        v[k++] = {s.expected.load(std::memory_order_relaxed), reinterpret_cast<std::uintptr_t>(word), FUTEX_32, 0};
      }
    }
    if (k == 1) return;
    v[0] = {0, reinterpret_cast<std::uintptr_t>(&a->pending), FUTEX_32 | FUTEX_PRIVATE_FLAG, 0};
    n = k;
  }
};

// Sleeps in futex_waitv on w until `until` (CLOCK_MONOTONIC; nullptr: no
// limit), then says what it saw: true if it returned for a reason the
// caller should act on, with kIrqForeign (a word changed) or kIrqTimer
// (the limit passed) added to `pending` where due; false if it cannot wait
// here, so the caller sleeps another way: no futex_waitv on this host, or
// a word no longer mapped (a stale snapshot, or the slot of a thread a
// stopped kernel left waiting: sleeping on the rest would only return at
// once again).
bool sleep_on_words(const WaitVector& w, CpuArea* a, const timespec* until) {
  long r = syscall(SYS_futex_waitv, w.v, w.n, 0, until, CLOCK_MONOTONIC);
  int e = r < 0 ? errno : 0;
  if (r > 0 || (e == EAGAIN && a->pending.load(std::memory_order_seq_cst) == 0)) {
    a->pending.fetch_or(kIrqForeign, std::memory_order_relaxed);
  } else if (e == ETIMEDOUT) {
    a->pending.fetch_or(kIrqTimer, std::memory_order_relaxed);  // only with a limit (TSan)
  } else if (e == EFAULT) {
    return false;
  } else if (e == ENOSYS || e == EINVAL) {
    g_have_waitv.store(false, std::memory_order_relaxed);
    return false;
  }
  return true;  // r == 0 (pending's own wake), EAGAIN with an interrupt pending, EINTR (a signal)
}

// A look at the watched words without sleeping: true if one changed
// (kIrqForeign is pending then). One FUTEX_CMP_REQUEUE per word, moving
// no waiter: EAGAIN says the word differs, EFAULT that it is gone, and
// neither faults (a futex_waitv with a past deadline would do it in one
// call, but sleeps until the timer fires: ~24 us here).
bool watched_changed(const WaitVector& w, CpuArea* a) {
  for (unsigned i = 0; i < w.nlook; ++i) {
    const auto* word = w.look[i].word;
    long r = syscall(SYS_futex, word, FUTEX_CMP_REQUEUE, 0, 0, word, w.look[i].expected);
    if (r < 0 && (errno == EAGAIN || errno == EFAULT)) {
      a->pending.fetch_or(kIrqForeign, std::memory_order_relaxed);
      return true;
    }
  }
  return false;
}
}  // namespace

void idle_wait(const WatchedWord* watch, unsigned n) {
  CpuArea* a = cpu_area();
  WaitVector w(a, watch, n);
  a->polling.store(1, std::memory_order_seq_cst);
  const std::uint64_t start = now_ns();
  std::uint64_t yield_at = start + kIdleYieldNs;
  for (std::uint64_t now = start; now < start + kIdleSpinNs; now = now_ns()) {
    for (int i = 0; i < 16 && !a->pending.load(std::memory_order_relaxed); ++i) cpu_relax();  // the clock every ~0.2 us
    if (a->pending.load(std::memory_order_relaxed)) break;
    if (now >= yield_at) {
      if (watched_changed(w, a)) break;  // (the words every ~2 us, as the yields)
      sched_yield();
      yield_at = now + kIdleYieldNs;
    }
  }
  a->polling.store(0, std::memory_order_seq_cst);
  if (a->pending.load(std::memory_order_seq_cst)) return;
  if (w.n != 0 && g_have_waitv.load(std::memory_order_relaxed)) {
    // Under TSan bounded as ppoll is (kIdleTimeout), for the same reason.
    timespec limit{};
    const timespec* until = nullptr;
    if constexpr (kIdleBounded) {
      clock_gettime(CLOCK_MONOTONIC, &limit);
      limit.tv_nsec += kIdleTimeout->tv_nsec;
      if (limit.tv_nsec >= 1'000'000'000) {
        limit.tv_nsec -= 1'000'000'000;
        ++limit.tv_sec;
      }
      until = &limit;
    }
    if (sleep_on_words(w, a, until)) return;
  }
  // Sleep until a signal: blocked while we check, unblocked atomically by
  // ppoll. The handler (interrupts are masked) only records the source.
  sigset_t irq = irq_signals(), old;
  pthread_sigmask(SIG_BLOCK, &irq, &old);
  if (a->pending.load(std::memory_order_seq_cst) == 0 && ppoll(nullptr, 0, kIdleTimeout, &old) == 0) {
    a->pending.fetch_or(kIrqTimer, std::memory_order_relaxed);  // only with kIdleTimeout (TSan)
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

#if defined(__SANITIZE_THREAD__)
void tsan_poll_timer() {
  CpuArea* a = cpu_area();
  if (a->timer_deadline != UINT64_MAX && now_ns() >= a->timer_deadline) {
    a->timer_deadline = UINT64_MAX;
    a->pending.fetch_or(kIrqTimer, std::memory_order_relaxed);
  }
}
#endif

void set_timer(std::uint64_t deadline_ns) {
  cpu_area()->timer_deadline = deadline_ns;
  itimerspec its{};
  std::uint64_t mono = hosted_to_monotonic(deadline_ns);
  its.it_value.tv_sec = static_cast<time_t>(mono / 1'000'000'000);
  its.it_value.tv_nsec = static_cast<long>(mono % 1'000'000'000);
  if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;  // 0 would disarm
  timer_settime(static_cast<timer_t>(cpu_area()->timer), TIMER_ABSTIME, &its, nullptr);
}

void console_write(const char* s, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(1, s, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;
    }
    s += w;
    n -= static_cast<std::size_t>(w);
  }
}

void halt(int exit_code) {
  // A spawned process's panic ends it as on aarch64: kFaulted, kPanic.
  if (exit_code == spindle::kPanicExitCode) hosted::process_fault(FaultKind::kPanic, 0);
  _exit(exit_code);
}

}  // namespace spindle::arch
