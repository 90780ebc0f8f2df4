// User mode on aarch64: EL0 address spaces (TTBR0 tables + ASIDs), entry
// to EL0, and exceptions taken from EL0 (system calls and faults).
//
// Address spaces. Each has its own level-1..3 tables (4 KiB granule, 39-bit
// VAs as the kernel half) and a context word, generation | ASID. Leaf
// entries are non-global (nG), never executable at EL1 (PXN; table entries
// carry PXNTable as well) and never writable and executable at EL0 at once.
// An address space's tables are guarded by its own lock (AddressSpace::lock);
// a table page is never freed before the address space is destroyed.
//
// ASIDs (the Linux arm64 scheme). g_asid_lock guards g_generation,
// g_asid_used, g_asid_next and every CpuAsid's reserved/flush_pending (and
// active, but for address_space_activate's lock-free fast path, backend.h).
// An address space runs only with an ASID of the current generation; when none is free, the
// generation moves on (a rollover): the bitmap restarts, the ASID each CPU
// is running keeps its number (reserved, so nobody else gets it), and
// every CPU flushes its own TLB before it next loads an ASID. So an ASID
// number is never in two address spaces' use at once, and no CPU holds
// stale entries for a number when it starts using it. ASID 0 is "no
// address space" (the empty table kernel threads run with); destroying an
// address space invalidates its ASID's entries on every CPU and frees the
// number.
//
// Shared pages (user_map_shared: the kernel image's code and constants in a
// process's copy) carry a software bit in their entries: unmapping or
// destroying the address space leaves those pages alone.
//
// CpuAsid::current is the address space loaded in this CPU's TTBR0: only
// the CPU itself writes it (activate, interrupts masked, under the lock
// too, so destroy can check that no CPU still runs the space).
#include <atomic>
#include <cstring>
#include <new>

#include "aarch64.h"
#include "arch/probe.h"
#include "spindle/panic.h"

extern "C" std::uint64_t spindle_user_l1_none[512];
extern "C" [[noreturn]] void spindle_aarch64_enter_user(std::uintptr_t pc, std::uintptr_t sp, std::uint64_t arg,
                                                        std::uintptr_t tp);

namespace spindle::arch {

struct AddressSpace {
  AddressSpaceHead head;  // first: address_space_activate (backend.h) reads it through the pointer
  IrqSpinLock lock;       // its tables
};
static_assert(std::is_standard_layout_v<AddressSpace> && offsetof(AddressSpace, head) == 0,
              "address_space_activate reads the head at the address space's address");

namespace {

using namespace desc;
constexpr std::uint64_t kUserPage = kTable | kAttrNormal | kShInner | kAf | kNg | kPxn;
constexpr std::uint64_t kSwShared = 1ull << 55;  // software bit: the page is not the address space's
constexpr std::uint64_t kApUser = 1 << 6;        // AP[1]: EL0 may access
constexpr std::uint64_t kApReadOnly = 1 << 7;    // AP[2]: read-only

std::uint64_t leaf_bits(UserAccess a) {
  switch (a) {
    case UserAccess::kRead: return kUserPage | kApEl0Ro | kUxn;
    case UserAccess::kReadWrite: return kUserPage | kApEl0Rw | kUxn;
    case UserAccess::kReadExecute: return kUserPage | kApEl0Ro;
  }
  return kUserPage | kApEl0Ro | kUxn;
}

// The level-3 entry for va, creating the tables on the way if asked
// (nullptr: not there, or no memory). as->lock held.
std::uint64_t* pte_of(AddressSpace* as, std::uintptr_t va, bool create) {
  return walk_to_pte(reinterpret_cast<std::uint64_t*>(phys_to_virt(as->head.l1)), va, create, kPxnTable);
}

void check_range(const char* what, std::uintptr_t va, std::size_t size) {
  if (va % kPageSize != 0 || size % kPageSize != 0 || !user_range_ok(va, size)) {
    panic("%s: [%p, +%zu) is not a page-aligned user range", what, reinterpret_cast<void*>(va), size);
  }
}

// Whether a leaf entry gives user mode the access asked for.
bool user_may(std::uint64_t pte, bool write) {
  return (pte & kValid) && (pte & kApUser) && !(write && (pte & kApReadOnly));
}

// ---------------------------------------------------------------------------
// ASIDs.

constexpr unsigned kMaxAsidBits = 16;
// One generation in a context word (backend.h: kAsidField below it).
constexpr std::uint64_t kGeneration = 1ull << 16;
IrqSpinLock g_asid_lock;
unsigned g_asid_bits = 8;
std::uint64_t g_generation = 0;  // a multiple of kGeneration; 0 until user_cpu_init
std::uint64_t g_asid_used[(1u << kMaxAsidBits) / 64];
unsigned g_asid_next = 1;
unsigned g_asid_limit = 0;  // tests: numbers below it only (0: all)
std::uint64_t g_rollovers = 0;

CpuAsid g_cpu_asid[kMaxCpusAarch64];

std::atomic<std::uint64_t> g_last_fault_esr{0};
std::atomic<std::uint64_t> g_last_fault_far{0};

bool asid_taken(unsigned a) { return g_asid_used[a / 64] >> (a % 64) & 1; }
void take_asid(unsigned a) { g_asid_used[a / 64] |= 1ull << (a % 64); }

// g_asid_lock held.
void rollover() {
  ++g_rollovers;
  g_generation += kGeneration;
  std::memset(g_asid_used, 0, sizeof g_asid_used);
  take_asid(0);
  for (CpuAsid& c : g_cpu_asid) {
    // 0: the CPU loaded nothing since the last rollover, so it still runs
    // what it was reserved then (or no address space).
    std::uint64_t a = c.active.exchange(0, std::memory_order_relaxed);
    if (a == 0) a = c.reserved;
    c.reserved = a;
    if (a) take_asid(static_cast<unsigned>(a & kAsidField));
    c.flush_pending = true;
  }
  g_asid_next = 1;
}

// A context of the current generation for as. g_asid_lock held.
std::uint64_t new_context(AddressSpace* as) {
  std::uint64_t old = as->head.context.load(std::memory_order_relaxed);
  if (old != 0) {
    for (const CpuAsid& c : g_cpu_asid) {
      if (c.reserved == old) return g_generation | (old & kAsidField);  // running since before the rollover
    }
  }
  for (int round = 0; round < 2; ++round) {
    unsigned n = g_asid_limit ? g_asid_limit : 1u << g_asid_bits;
    for (unsigned k = 0; k < n; ++k) {
      unsigned a = (g_asid_next + k) % n;
      if (a == 0 || asid_taken(a)) continue;
      take_asid(a);
      g_asid_next = a + 1;
      return g_generation | a;
    }
    rollover();
  }
  panic("no ASID left after a rollover (more CPUs than ASIDs?)");
}

void tlbi_asid(std::uint64_t context) {
  std::uint64_t asid = context & kAsidField;
  if (asid == 0) return;
  asm volatile("dsb ishst\n\ttlbi aside1is, %0\n\tdsb ish\n\tisb" ::"r"(asid << 48) : "memory");
}

}  // namespace

void user_cpu_init() {
  if (g_generation == 0) {
    // ID_AA64MMFR0_EL1.ASIDBits: 2 = 16 bits (start.S then set TCR_EL1.AS).
    g_asid_bits = ((SPINDLE_READ_SYSREG(id_aa64mmfr0_el1) >> 4) & 0xF) == 2 ? 16 : 8;
    g_generation = kGeneration;
    take_asid(0);
  }
  // CNTKCTL_EL1: EL0 may read the virtual counter and CNTFRQ (EL0VCTEN),
  // not the physical one, and no EL0 timer access.
  std::uint64_t k = SPINDLE_READ_SYSREG(cntkctl_el1);
  k = (k & ~std::uint64_t{0x303}) | 0x2;
  SPINDLE_WRITE_SYSREG(cntkctl_el1, k);
  asm volatile("isb" ::: "memory");
}

CpuAsid* cpu_asid_state(unsigned cpu) { return &g_cpu_asid[cpu]; }

unsigned asid_bits() { return g_asid_bits; }

void set_asid_limit(unsigned n) {
  Locked l(g_asid_lock);
  g_asid_limit = n < (1u << g_asid_bits) ? n : 0;
  g_asid_next = 1;
}

std::uint64_t asid_rollovers() {
  Locked l(g_asid_lock);
  return g_rollovers;
}

unsigned address_space_asid(const AddressSpace* as) {
  Locked l(g_asid_lock);
  return static_cast<unsigned>(as->head.context.load(std::memory_order_relaxed) & kAsidField);
}

LastUserFault last_user_fault() {
  return {g_last_fault_esr.load(std::memory_order_acquire), g_last_fault_far.load(std::memory_order_acquire)};
}

AddressSpace* address_space_create() {
  auto* as = new (std::nothrow) AddressSpace;
  if (!as) return nullptr;
  as->head.l1 = zeroed_page();
  if (!as->head.l1) {
    delete as;
    return nullptr;
  }
  return as;
}

void address_space_destroy(AddressSpace* as) {
  if (!as) return;
  {
    Locked l(g_asid_lock);
    for (const CpuAsid& c : g_cpu_asid) {
      if (c.current.load(std::memory_order_relaxed) == as) panic("address_space_destroy: still active on a CPU");
    }
    std::uint64_t ctx = as->head.context.load(std::memory_order_relaxed);
    if (ctx != 0 && (ctx & ~kAsidField) == g_generation) {
      unsigned a = static_cast<unsigned>(ctx & kAsidField);
      g_asid_used[a / 64] &= ~(1ull << (a % 64));
    }
  }
  tlbi_asid(as->head.context.load(std::memory_order_relaxed));  // before its number or its pages go to anyone else
  auto* l1 = reinterpret_cast<std::uint64_t*>(phys_to_virt(as->head.l1));
  for (unsigned i = 0; i < 512; ++i) {
    if (!(l1[i] & kValid)) continue;
    std::uint64_t* l2 = table_at(l1[i]);
    for (unsigned j = 0; j < 512; ++j) {
      if (!(l2[j] & kValid)) continue;
      std::uint64_t* l3 = table_at(l2[j]);
      for (unsigned k = 0; k < 512; ++k) {
        if ((l3[k] & kValid) && !(l3[k] & kSwShared)) page_free(l3[k] & kAddrMask, 1);
      }
      page_free(l2[j] & kAddrMask, 1);
    }
    page_free(l1[i] & kAddrMask, 1);
  }
  page_free(as->head.l1, 1);
  delete as;
}

bool user_map(AddressSpace* as, std::uintptr_t va, std::size_t size, UserAccess access) {
  check_range("user_map", va, size);
  std::uint64_t bits = leaf_bits(access);
  Locked l(as->lock);
  bool ok = true;
  for (std::size_t off = 0; off < size; off += kPageSize) {
    std::uint64_t* pte = pte_of(as, va + off, true);
    std::uintptr_t pa = pte ? zeroed_page() : 0;
    if (!pa) {
      ok = false;
      break;
    }
    if (*pte & kValid) panic("user_map: %p is already mapped", reinterpret_cast<void*>(va + off));
    asm volatile("dsb ishst" ::: "memory");  // the zeroed page before the entry that maps it
    *pte = pa | bits;
  }
  // Invalid -> valid needs no TLB maintenance; the walker must see them.
  asm volatile("dsb ishst\n\tisb" ::: "memory");
  return ok;
}

void user_unmap(AddressSpace* as, std::uintptr_t va, std::size_t size) {
  check_range("user_unmap", va, size);
  Locked l(as->lock);
  std::uint64_t asid;
  {
    Locked a(g_asid_lock);
    asid = as->head.context.load(std::memory_order_relaxed) & kAsidField;
  }
  for (std::size_t off = 0; off < size; off += kPageSize) {
    std::uint64_t* pte = pte_of(as, va + off, false);
    if (!pte || !(*pte & kValid)) continue;
    std::uintptr_t pa = *pte & kAddrMask;
    // Break: the entry invalid everywhere and out of every TLB before
    // the page can be reused.
    bool shared = *pte & kSwShared;
    *pte = 0;
    std::uint64_t arg = (asid << 48) | (((va + off) >> 12) & ((1ull << 44) - 1));
    asm volatile("dsb ishst\n\ttlbi vae1is, %0\n\tdsb ish\n\tisb" ::"r"(arg) : "memory");
    if (!shared) page_free(pa, 1);
  }
}

bool user_map_shared(AddressSpace* as, std::uintptr_t va, std::uintptr_t pa, std::size_t size, UserAccess access) {
  check_range("user_map_shared", va, size);
  std::uint64_t bits = leaf_bits(access) | kSwShared;
  Locked l(as->lock);
  for (std::size_t off = 0; off < size; off += kPageSize) {
    std::uint64_t* pte = pte_of(as, va + off, true);
    if (!pte) return false;
    if (*pte & kValid) panic("user_map_shared: %p is already mapped", reinterpret_cast<void*>(va + off));
    *pte = (pa + off) | bits;
  }
  asm volatile("dsb ishst\n\tisb" ::: "memory");
  return true;
}

bool user_map_kernel_pages(AddressSpace* as, std::uintptr_t va, const void* pages, std::size_t size,
                           UserAccess access) {
  if (access == UserAccess::kReadExecute) panic("user_map_kernel_pages: kernel memory is never user code");
  return user_map_shared(as, va, virt_to_phys(reinterpret_cast<std::uintptr_t>(pages)), size, access);
}

char* user_page_alias(AddressSpace* as, std::uintptr_t va) {
  Locked l(as->lock);
  std::uint64_t* pte = pte_of(as, va, false);
  if (!pte || !(*pte & kValid)) return nullptr;
  return reinterpret_cast<char*>(phys_to_virt(*pte & kAddrMask));
}

bool user_accessible(AddressSpace* as, std::uintptr_t va, std::size_t n, bool write) {
  if (n == 0) return true;  // nothing to access (any address, null included)
  if (!user_range_ok(va, n)) return false;
  Locked l(as->lock);
  for (std::uintptr_t page = va & ~(kPageSize - 1); page < va + n; page += kPageSize) {
    std::uint64_t* pte = pte_of(as, page, false);
    if (!pte || !user_may(*pte, write)) return false;
  }
  return true;
}

void* user_word(AddressSpace* as, std::uintptr_t va, bool write, bool* shared) {
  if (va % 4 != 0 || !user_range_ok(va, 4)) return nullptr;
  Locked l(as->lock);
  std::uint64_t* pte = pte_of(as, va, false);
  if (!pte || !user_may(*pte, write)) return nullptr;
  if (shared) *shared = *pte & kSwShared;
  return reinterpret_cast<void*>(phys_to_virt(*pte & kAddrMask) + va % kPageSize);
}

namespace {
// Interrupts stay masked while a probe copies: a few hundred bytes at a time.
constexpr std::size_t kProbeChunk = 256;

// Copies of more than one probe chunk (out of line: the one-chunk case
// of a system call stays a leaf call with no frame).
[[gnu::noinline]] bool user_read_chunks(void* dst, std::uintptr_t src, std::size_t n) {
  auto* d = static_cast<char*>(dst);
  for (std::size_t off = 0; off < n; off += kProbeChunk) {
    std::size_t k = n - off < kProbeChunk ? n - off : kProbeChunk;
    if (probe_user_read(d + off, reinterpret_cast<const void*>(src + off), k).esr != 0) return false;
  }
  return true;
}

[[gnu::noinline]] bool user_write_chunks(std::uintptr_t dst, const void* src, std::size_t n) {
  const auto* s = static_cast<const char*>(src);
  for (std::size_t off = 0; off < n; off += kProbeChunk) {
    std::size_t k = n - off < kProbeChunk ? n - off : kProbeChunk;
    if (probe_user_write(reinterpret_cast<void*>(dst + off), s + off, k).esr != 0) return false;
  }
  return true;
}
}  // namespace

bool user_read(void* dst, std::uintptr_t src, std::size_t n) {
  if (n == 0) return true;
  if (!user_range_ok(src, n)) return false;
  if (n > kProbeChunk) return user_read_chunks(dst, src, n);
  return probe_user_read(dst, reinterpret_cast<const void*>(src), n).esr == 0;
}

bool user_write(std::uintptr_t dst, const void* src, std::size_t n) {
  if (n == 0) return true;
  if (!user_range_ok(dst, n)) return false;
  if (n > kProbeChunk) return user_write_chunks(dst, src, n);
  return probe_user_write(reinterpret_cast<void*>(dst), src, n).esr == 0;
}

bool user_copy_to(AddressSpace* as, std::uintptr_t va, const void* src, std::size_t n) {
  if (!user_range_ok(va, n)) return false;
  Locked l(as->lock);
  const auto* s = static_cast<const char*>(src);
  std::uint64_t ctr = SPINDLE_READ_SYSREG(ctr_el0);
  std::size_t dline = std::size_t{4} << ((ctr >> 16) & 0xF);
  while (n > 0) {
    std::uint64_t* pte = pte_of(as, va, false);
    if (!pte || !(*pte & kValid)) return false;
    std::size_t off = va % kPageSize;
    std::size_t k = n < kPageSize - off ? n : kPageSize - off;
    auto kva = phys_to_virt(*pte & kAddrMask) + off;
    std::memcpy(reinterpret_cast<void*>(kva), s, k);
    // Code for EL0: clean the data side to the point of unification, so
    // the instruction side (invalidated below) fetches what was written.
    for (std::uintptr_t line = kva & ~(dline - 1); line < kva + k; line += dline) {
      asm volatile("dc cvau, %0" ::"r"(line) : "memory");
    }
    va += k;
    s += k;
    n -= k;
  }
  asm volatile("dsb ish\n\tic ialluis\n\tdsb ish\n\tisb" ::: "memory");
  return true;
}

// A new ASID, a flush after a rollover, or no address space: under the lock.
void address_space_activate_slow(AddressSpace* as) {
  CpuAsid& c = *cpu_area()->asid;
  std::uint64_t ctx = 0;
  bool flush;
  {
    Locked l(g_asid_lock);
    if (as) {
      ctx = as->head.context.load(std::memory_order_relaxed);
      if (ctx == 0 || (ctx & ~kAsidField) != g_generation) {
        ctx = new_context(as);
        as->head.context.store(ctx, std::memory_order_relaxed);
      }
    }
    c.active.store(ctx, std::memory_order_relaxed);
    c.current.store(as, std::memory_order_relaxed);
    flush = c.flush_pending && as;
    if (flush) c.flush_pending = false;
  }
  if (flush) asm volatile("tlbi vmalle1\n\tdsb nsh" ::: "memory");  // after a rollover, before any new ASID
  std::uint64_t ttbr = as ? (ctx << 48) | as->head.l1
                          : virt_to_phys(reinterpret_cast<std::uintptr_t>(spindle_user_l1_none));
  asm volatile("msr ttbr0_el1, %0\n\tisb" ::"r"(ttbr) : "memory");
}

void enter_user(const UserEntry& e) {
  if (e.sp % 16 != 0 || e.pc < kUserBase || e.pc >= kUserLimit) {
    panic("enter_user: bad entry (pc %p, sp %p)", reinterpret_cast<void*>(e.pc), reinterpret_cast<void*>(e.sp));
  }
  spindle_aarch64_enter_user(e.pc, e.sp, e.arg, e.thread_pointer);
}

}  // namespace spindle::arch

using namespace spindle::arch;

// A synchronous exception from EL0 (vectors.S), interrupts masked, the
// frame on the thread's kernel stack. A system call returns (to
// spindle_aarch64_ret_to_user); anything else ends the thread.
extern "C" void spindle_aarch64_el0_sync(Frame* f) {
  std::uint64_t esr = SPINDLE_READ_SYSREG(esr_el1);
  unsigned ec = static_cast<unsigned>(esr >> 26);
  if (ec == 0x15) [[likely]] {  // SVC from AArch64
    SyscallFrame s{f->x[8], {f->x[0], f->x[1], f->x[2], f->x[3], f->x[4], f->x[5]}, 0};
    irq_enable();
    spindle::kernel::handle_syscall(s);
    irq_save();
    f->x[0] = s.result;
    return;  // to spindle_aarch64_ret_to_user
  }
  std::uint64_t far = SPINDLE_READ_SYSREG(far_el1);
  UserFaultKind kind;
  switch (ec) {
    case 0x24: kind = UserFaultKind::kDataAbort; break;
    case 0x20: kind = UserFaultKind::kInstructionAbort; break;
    case 0x00: kind = UserFaultKind::kUndefined; break;
    case 0x22:
    case 0x26: kind = UserFaultKind::kAlignment; break;
    default: kind = UserFaultKind::kOther; break;
  }
  bool has_address = ec == 0x24 || ec == 0x20 || ec == 0x22;
  g_last_fault_far.store(has_address ? far : 0, std::memory_order_relaxed);
  g_last_fault_esr.store(esr, std::memory_order_release);
  spindle::kernel::user_fault(UserFault{kind, exception_class_name(ec), esr, has_address ? far : 0, f->elr});
}

// Every return to EL0 passes here (vectors.S), interrupts masked.
extern "C" void spindle_aarch64_returning_to_user() { spindle::kernel::returning_to_user(); }
extern "C" void spindle_aarch64_resumed_at_frame() { spindle::kernel::resumed_at_user_frame(); }
