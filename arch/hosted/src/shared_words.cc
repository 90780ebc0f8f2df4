// Words shared with other kernels (arch.h): hosted processes' SharedMemory.
//
// Each hosted process runs its own kernel, so a Mutex or CondVar in a region
// that several processes map has waiters in several kernels. Here:
//
// - Which words are foreign: a registry of the SharedMemory mappings of
//   this process (shm_map registers, shm_unmap removes).
// - Waiting and waking: the host's futex on the word itself, without
//   FUTEX_PRIVATE_FLAG, so Linux keys it by the memfd's page and every
//   process mapping it meets on one queue. A wait runs on a host_call
//   helper: it blocks the Spindle thread, never the vCPU.
// - Owner ids and their liveness: the processes of one tree (the first
//   process that spawns and all its descendants) share a table (Tree, a
//   memfd every process maps) of kSlots slots. A process in slot s hands
//   out thread ids [s << kIdBits, (s + 1) << kIdBits) (slot 0, the root:
//   from 1), so an owner id in a lock word names its process's slot. A
//   slot's `alive` is a robust, process-shared pthread mutex that the
//   process holds for its whole life (a child: its main host thread; the
//   root: a keeper thread). When the process ends, however it ends, Linux
//   marks the mutex owner-dead, so a trylock from anyone tells a live
//   owner's process (EBUSY) from a dead one.
//
// Invariants:
// - g_ranges: written only under g_ranges_mu, with Spindle interrupts
//   masked; read without a lock (foreign_word). A slot's hi is stored
//   before its lo and lo cleared before hi, so a reader never sees lo set
//   with a stale hi of another region.
// - A Tree slot's state moves kFree/kDone -> kStarting (the parent, at
//   spawn) -> kLive (the child, holding `alive`) -> kDone (the parent at
//   join, or anyone who found `alive` owner-dead). Slots are reused round
//   robin. A slot's next id (Slot::next) outlives its occupants: a new one
//   starts where the last one stopped, so an id of a slot comes back only
//   after all 2^20 of them were handed out.
// - Tree::ended[s] has one bit per id of slot s: set when the thread or job
//   with that id ended, cleared when the slot's process hands the id out
//   (arch::owner_id_ended / owner_id_used, under that process's kernel
//   lock, so before the new owner can take any lock). A thread that ended
//   while its process lives on reads as ended. So do the ids the previous
//   occupant handed out: the parent sets their bits when it gives the slot
//   to a new child, before the child starts (only those: a bit row is 128
//   KiB, and touching only the ids in use keeps the table's memory to a
//   page or so per slot). The root's bits start clear (alive); it creates
//   the table before it maps its first shared region, so any of its threads
//   that could own a shared lock ends with the table there. What remains:
//   an id handed out again, 2^20 ids later, looks alive for its new thread.
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <climits>
#include <new>

#include <arch/arch.h>

#include "hosted_internal.h"
#include "spindle/hosted.h"
#include "spindle/thread.h"

namespace spindle::hosted {

std::atomic<unsigned> g_ranges_used{0};  // registry slots [0, used) may be set (backend.h)

namespace {

// ---------------------------------------------------------------------------
// The registry of shared mappings.

constexpr unsigned kMaxRegions = 256;

struct Range {
  std::atomic<std::uintptr_t> lo{0};
  std::atomic<std::uintptr_t> hi{0};
  // This process's threads in arch::foreign_wait on a word of the range
  // (RangeWait): unmapping the range under them is a misuse
  // (unregister_shared refuses, SharedMemory panics).
  std::atomic<unsigned> waiters{0};
};
Range g_ranges[kMaxRegions];
pthread_mutex_t g_ranges_mu = PTHREAD_MUTEX_INITIALIZER;

// ---------------------------------------------------------------------------
// The process tree's table.

constexpr unsigned kIdBits = 20;
constexpr unsigned kSlots = 1023;  // slot 1023 would hold kMaxThreadId, the kernel's "outside" id
constexpr std::uint32_t kTreeMagic = 0x54524545;  // "TREE"

enum SlotState : std::uint32_t { kFree = 0, kStarting, kLive, kDone };

constexpr std::uint32_t kIdsPerSlot = 1u << kIdBits;
constexpr unsigned kIdWords = kIdsPerSlot / 64;

// Ids are named here by their index in the slot's range.
struct Slot {
  std::atomic<std::uint32_t> state;
  std::uint32_t first;                // where the occupant started; written by the allocating parent
  std::atomic<std::uint32_t> next;    // the index after the last one the occupant handed out
  std::atomic<std::uint32_t> handed;  // how many the occupant handed out
  pthread_mutex_t alive;
};

struct Tree {
  std::atomic<std::uint32_t> magic;
  std::atomic<std::uint32_t> cursor;  // round-robin allocation
  Slot slots[kSlots];
  std::atomic<std::uint64_t> ended[kSlots][kIdWords];  // 128 KiB a slot; pages only where used
};

// Mapped by the root before its first spawn or shared mapping, or inherited.
// Stored (release) once the table is ready; vCPUs read it at any time.
std::atomic<Tree*> g_tree{nullptr};
int g_tree_fd = -1;            // ... and a descriptor to it, for children
unsigned g_slot = 0;           // this process's
std::uint32_t g_first = 0;     // ... and the index its ids start at
pthread_mutex_t g_tree_mu = PTHREAD_MUTEX_INITIALIZER;  // the root's creation of g_tree

Tree* map_tree(int fd) {
  void* m = mmap(nullptr, sizeof(Tree), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  return m == MAP_FAILED ? nullptr : static_cast<Tree*>(m);
}

// Takes a slot's `alive` for this process's life (the calling host thread
// must live that long). An owner-dead mutex (a previous occupant) is made
// consistent first.
bool hold_alive(Slot& s) {
  int e = pthread_mutex_lock(&s.alive);
  if (e == EOWNERDEAD) e = pthread_mutex_consistent(&s.alive);
  return e == 0;
}

// The root's keeper: holds slot 0 for the rest of the process's life.
void* keeper(void* ready) {
  hold_alive(g_tree.load(std::memory_order_acquire)->slots[0]);
  static_cast<std::atomic<int>*>(ready)->store(1, std::memory_order_release);
  for (;;) pause();  // every signal is blocked: never returns
  return nullptr;
}

// In the root (g_slot 0): creates the table on first use. Host thread
// context (a host_call helper): may block.
bool create_tree() {
  int fd = memfd_create("spindle-tree", MFD_CLOEXEC);
  if (fd < 0) return false;
  Tree* t = ftruncate(fd, sizeof(Tree)) == 0 ? map_tree(fd) : nullptr;
  if (!t) {
    close(fd);
    return false;
  }
  g_tree_fd = fd;
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  for (Slot& s : t->slots) {
    new (&s.state) std::atomic<std::uint32_t>(kFree);
    s.first = 0;
    new (&s.next) std::atomic<std::uint32_t>(0);
    new (&s.handed) std::atomic<std::uint32_t>(0);
    pthread_mutex_init(&s.alive, &a);
  }
  pthread_mutexattr_destroy(&a);
  t->slots[0].state.store(kLive, std::memory_order_relaxed);
  t->cursor.store(0, std::memory_order_relaxed);
  t->magic.store(kTreeMagic, std::memory_order_release);
  g_tree.store(t, std::memory_order_release);
  // The keeper blocks every signal (Spindle's go to vCPUs only).
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  std::atomic<int> ready{0};
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  pthread_t th;
  bool ok = pthread_create(&th, &attr, keeper, &ready) == 0;
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  while (ok && ready.load(std::memory_order_acquire) == 0) sched_yield();
  return ok;
}

// Whether a slot's process has ended; marks the slot kDone if so.
bool slot_dead(Slot& s) {
  int e = pthread_mutex_trylock(&s.alive);
  if (e == EBUSY) return false;
  if (e == EOWNERDEAD) pthread_mutex_consistent(&s.alive);
  if (e == 0 || e == EOWNERDEAD) pthread_mutex_unlock(&s.alive);
  std::uint32_t live = kLive;
  s.state.compare_exchange_strong(live, kDone, std::memory_order_acq_rel);
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------
// Internal interface (hosted_internal.h).

Status register_shared(const void* data, std::size_t size) {
  auto lo = reinterpret_cast<std::uintptr_t>(data);
  Status st = Status::kLimit;
  arch::IrqState irq = arch::irq_save();
  pthread_mutex_lock(&g_ranges_mu);
  for (unsigned i = 0; i < kMaxRegions; ++i) {
    Range& r = g_ranges[i];
    if (r.lo.load(std::memory_order_relaxed) != 0) continue;
    r.hi.store(lo + size, std::memory_order_relaxed);
    r.lo.store(lo, std::memory_order_release);
    if (i >= g_ranges_used.load(std::memory_order_relaxed)) g_ranges_used.store(i + 1, std::memory_order_release);
    st = Status::kOk;
    break;
  }
  pthread_mutex_unlock(&g_ranges_mu);
  arch::irq_restore(irq);
  return st;
}

unsigned unregister_shared(const void* data) {
  auto lo = reinterpret_cast<std::uintptr_t>(data);
  // The misuse check first, outside the registry's lock: a wait that
  // begins meanwhile races with the unmap, as any use of memory being
  // unmapped does.
  for (Range& r : g_ranges) {
    if (r.lo.load(std::memory_order_acquire) != lo) continue;
    std::size_t size = r.hi.load(std::memory_order_relaxed) - lo;
    unsigned waiting = r.waiters.load(std::memory_order_acquire) + kernel::foreign_jobs_in(data, size);
    if (waiting != 0) return waiting;
    break;
  }
  arch::IrqState irq = arch::irq_save();
  pthread_mutex_lock(&g_ranges_mu);
  for (Range& r : g_ranges) {
    if (r.lo.load(std::memory_order_relaxed) != lo) continue;
    r.lo.store(0, std::memory_order_relaxed);
    r.hi.store(0, std::memory_order_release);
    break;
  }
  pthread_mutex_unlock(&g_ranges_mu);
  arch::irq_restore(irq);
  return 0;
}

bool tree_ready() {
  if (g_tree.load(std::memory_order_acquire)) return true;
  pthread_mutex_lock(&g_tree_mu);
  bool ok = g_tree.load(std::memory_order_relaxed) || create_tree();
  pthread_mutex_unlock(&g_tree_mu);
  return ok;
}

bool tree_slot_for_child(TreeSlot* out) {
  if (!tree_ready()) return false;
  Tree* t = g_tree.load(std::memory_order_acquire);
  for (unsigned tries = 0; tries < 2 * kSlots; ++tries) {
    unsigned i = 1 + t->cursor.fetch_add(1, std::memory_order_relaxed) % (kSlots - 1);
    Slot& s = t->slots[i];
    std::uint32_t st = s.state.load(std::memory_order_acquire);
    if (st == kStarting || (st == kLive && !slot_dead(s))) continue;  // an orphan may have ended unjoined
    st = s.state.load(std::memory_order_acquire);
    if ((st == kFree || st == kDone) && s.state.compare_exchange_strong(st, kStarting, std::memory_order_acq_rel)) {
      // The ids the previous occupant handed out (in order from s.first,
      // skipping ones in use) may sit in lock words: they read as ended.
      // The new occupant goes on after them.
      std::uint32_t next = s.next.load(std::memory_order_relaxed);
      std::uint32_t span = (next - s.first) & (kIdsPerSlot - 1);
      if (s.handed.load(std::memory_order_relaxed) > span) span = kIdsPerSlot;  // it went round
      for (std::uint32_t k = 0; k < span; ++k) {
        std::uint32_t index = (s.first + k) & (kIdsPerSlot - 1);
        t->ended[i][index / 64].fetch_or(std::uint64_t{1} << (index % 64), std::memory_order_relaxed);
      }
      s.first = next;
      s.handed.store(0, std::memory_order_relaxed);
      out->slot = i;
      out->first = next;
      out->fd = g_tree_fd;
      return true;
    }
  }
  return false;  // every slot has a live process
}

void tree_slot_done(unsigned slot) {
  Tree* t = g_tree.load(std::memory_order_acquire);
  if (t && slot > 0 && slot < kSlots) t->slots[slot].state.store(kDone, std::memory_order_release);
}

bool tree_adopt(unsigned slot, std::uint32_t first) {
  // Moved off kTreeFd, and low: a descriptor near kCtlFd/kHandleFd would be
  // overwritten by the file actions of this process's own spawns.
  int fd = fcntl(kTreeFd, F_DUPFD_CLOEXEC, 3);
  close(kTreeFd);
  Tree* t = fd >= 0 ? map_tree(fd) : nullptr;
  if (!t || t->magic.load(std::memory_order_acquire) != kTreeMagic || slot == 0 || slot >= kSlots) {
    if (fd >= 0) close(fd);
    return false;
  }
  // The calling thread is the process's main host thread, which lives
  // until the process ends.
  if (!hold_alive(t->slots[slot])) return false;
  t->slots[slot].state.store(kLive, std::memory_order_release);
  g_tree.store(t, std::memory_order_release);
  g_tree_fd = fd;
  g_slot = slot;
  g_first = first;
  return true;
}

void tree_id_range(kernel::BootArgs* args) {
  std::uint64_t lo = std::uint64_t{g_slot} << kIdBits;
  std::uint64_t span = std::uint64_t{1} << kIdBits;
  args->first_id = g_slot == 0 ? 1 : lo;
  args->id_end = lo + span;
  args->next_id = g_slot == 0 ? 1 : lo + g_first;  // after the previous occupants' (shared_words.cc)
}

unsigned threads_on_watched_words() {
  unsigned n = 0;
  for (const arch::SleptWord& s : arch::g_slept) n += s.word.load(std::memory_order_relaxed) != nullptr;
  return n;
}

}  // namespace spindle::hosted

// ---------------------------------------------------------------------------
// The arch contract.

namespace spindle::arch {

// How long foreign_wait looks at the word before it sleeps in the host's
// futex (the channel's socket poll is as long: channel.cc, wait_fd).
constexpr std::uint64_t kForeignSpinNs = 30'000;

SleptWord g_slept[kMaxSleptWords];

namespace {
// A free slot of g_slept for word, or nullptr (all taken: the vCPUs then
// do not sleep on it, which costs only the helper's second wake-up).
SleptWord* publish_slept(const std::atomic<std::uint32_t>* word, std::uint32_t expected) {
  for (SleptWord& s : g_slept) {
    const std::atomic<std::uint32_t>* none = nullptr;
    if (s.word.load(std::memory_order_relaxed) != nullptr) continue;
    if (s.word.compare_exchange_strong(none, word, std::memory_order_acq_rel, std::memory_order_relaxed)) {
      s.expected.store(expected, std::memory_order_release);
      return &s;
    }
  }
  return nullptr;
}
}  // namespace

namespace {
// The registry's range holding word, or nullptr.
hosted::Range* range_of(const void* word) {
  auto a = reinterpret_cast<std::uintptr_t>(word);
  unsigned n = hosted::g_ranges_used.load(std::memory_order_acquire);
  for (unsigned i = 0; i < n; ++i) {
    hosted::Range& r = hosted::g_ranges[i];
    std::uintptr_t lo = r.lo.load(std::memory_order_acquire);
    if (lo != 0 && a >= lo && a < r.hi.load(std::memory_order_relaxed)) return &r;
  }
  return nullptr;
}

// Counts a thread's foreign_wait on its word's range (Range::waiters).
struct RangeWait {
  hosted::Range* r;
  explicit RangeWait(const void* word) : r(range_of(word)) {
    if (r) r->waiters.fetch_add(1, std::memory_order_acq_rel);
  }
  ~RangeWait() {
    if (r) r->waiters.fetch_sub(1, std::memory_order_acq_rel);
  }
  RangeWait(const RangeWait&) = delete;
  RangeWait& operator=(const RangeWait&) = delete;
};
}  // namespace

bool foreign_word_registered(const void* word) { return range_of(word) != nullptr; }

Status foreign_wait(const std::atomic<std::uint32_t>* word, std::uint32_t expected, std::uint64_t deadline_ns,
                    bool look, bool wakes_all) {
  if (word->load(std::memory_order_seq_cst) != expected) return Status::kWouldBlock;
  RangeWait counted(word);
  const bool forever = deadline_ns == ~std::uint64_t{0} || deadline_ns >= std::uint64_t{INT64_MAX};
  // A partner in another process that answers within microseconds is
  // caught by looking again, yielding between looks to this vCPU's other
  // threads and to the host (the partner's vCPU may share this host core,
  // and would otherwise wait for the look to end), as a channel wait polls
  // its socket (channel.cc): only a longer wait pays for the host futex
  // through a helper host thread, whose wake and the IPI back to this vCPU
  // are two host wake-ups (tens of microseconds on a busy VM). A change
  // seen here counts as a wake (kOk). Only when the caller asks: a waiter
  // woken from the futex that found nothing (a give wakes every sleeper)
  // goes back to sleep at once, not through another look.
  const std::uint64_t start = now_ns();
  const std::uint64_t look_ns = look ? kForeignSpinNs : 0;
  const std::uint64_t spin_end = start + look_ns < deadline_ns ? start + look_ns : deadline_ns;
  for (std::uint64_t now = start; now < spin_end; now = now_ns()) {
    spindle::this_thread::yield();
    sched_yield();
    if (word->load(std::memory_order_seq_cst) != expected) return Status::kOk;
  }
  if (!forever && deadline_ns <= now_ns()) return Status::kTimedOut;
  timespec abs{};
  if (!forever) {
    std::uint64_t mono = hosted_to_monotonic(deadline_ns);
    abs.tv_sec = static_cast<time_t>(mono / 1'000'000'000);
    abs.tv_nsec = static_cast<long>(mono % 1'000'000'000);
  }
  // Idle vCPUs sleep on a word that wakes all as well (cpu.cc, idle_wait):
  // the give that wakes the helper wakes them too, so the IPI that the
  // helper's completion sends finds a vCPU already awake and polling.
  SleptWord* slot = wakes_all ? publish_slept(word, expected) : nullptr;
  long e = hosted::host_call([&]() -> long {
    // Not FUTEX_PRIVATE_FLAG: other processes map the word.
    long r = syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, forever ? nullptr : &abs, nullptr,
                     FUTEX_BITSET_MATCH_ANY);
    return r == 0 ? 0 : errno;
  });
  if (slot) slot->word.store(nullptr, std::memory_order_release);
  if (e == 0 || e == EINTR) return Status::kOk;
  if (e == EAGAIN) return Status::kWouldBlock;
  if (e == ETIMEDOUT) return Status::kTimedOut;
  return Status::kInvalidState;
}

unsigned foreign_wake(const std::atomic<std::uint32_t>* word, unsigned n) {
  long r = syscall(SYS_futex, word, FUTEX_WAKE, n > INT_MAX ? INT_MAX : static_cast<int>(n), nullptr, nullptr, 0);
  return r > 0 ? static_cast<unsigned>(r) : 0;
}

namespace {
// The word and bit of id in its slot's `ended` row.
std::atomic<std::uint64_t>& ended_word(hosted::Tree* t, std::uint64_t id) {
  std::uint64_t slot = id >> hosted::kIdBits, index = id & ((std::uint64_t{1} << hosted::kIdBits) - 1);
  return t->ended[slot][index / 64];
}
std::uint64_t ended_bit(std::uint64_t id) { return std::uint64_t{1} << (id % 64); }
}  // namespace

void owner_id_used(std::uint64_t id) {
  if (hosted::Tree* t = hosted::g_tree.load(std::memory_order_acquire)) {
    ended_word(t, id).fetch_and(~ended_bit(id), std::memory_order_seq_cst);
    hosted::Slot& s = t->slots[hosted::g_slot];  // id is one of ours
    s.next.store(static_cast<std::uint32_t>(id + 1) & (hosted::kIdsPerSlot - 1), std::memory_order_relaxed);
    s.handed.fetch_add(1, std::memory_order_relaxed);
  }
}

void owner_id_ended(std::uint64_t id) {
  if (hosted::Tree* t = hosted::g_tree.load(std::memory_order_acquire)) {
    ended_word(t, id).fetch_or(ended_bit(id), std::memory_order_seq_cst);
  }
}

OwnerLiveness owner_liveness(std::uint64_t id) {
  std::uint64_t slot = id >> hosted::kIdBits;
  if (slot == hosted::g_slot || id == kMaxThreadId) return OwnerLiveness::kLocal;
  hosted::Tree* t = hosted::g_tree.load(std::memory_order_acquire);
  if (!t || slot >= hosted::kSlots) return OwnerLiveness::kDead;  // no process ever had it
  hosted::Slot& s = t->slots[slot];
  switch (s.state.load(std::memory_order_acquire)) {
    case hosted::kStarting: return OwnerLiveness::kAlive;  // a new occupant: it cannot have locked yet
    case hosted::kLive: break;
    default: return OwnerLiveness::kDead;
  }
  // Its thread ended, though its process may live on (or the id is a
  // previous occupant's).
  if (ended_word(t, id).load(std::memory_order_seq_cst) & ended_bit(id)) return OwnerLiveness::kDead;
  // A host lock taken and dropped at once, with Spindle interrupts masked
  // (no switch while a vCPU holds it).
  IrqState irq = irq_save();
  bool dead = hosted::slot_dead(s);
  irq_restore(irq);
  return dead ? OwnerLiveness::kDead : OwnerLiveness::kAlive;
}

}  // namespace spindle::arch
