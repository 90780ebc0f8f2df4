// Memory: the rest of RAM in the linear map, a physical page allocator, the
// kernel heap (operator new/delete) and guarded thread stacks.
//
// Physical pages: a bitmap over RAM (1 = in use), first fit from a moving
// hint. Each page also has an info word saying what the heap made of it
// (a size class, or the head of an n-page run), so delete needs no header.
//
// Heap: power-of-two size classes 16..2048 bytes carved from single pages
// (objects are naturally aligned to their size), page runs above that.
// Freed small objects return to their class list; pages carved for a class
// stay with it.
//
// Stacks: their own 8 GiB of virtual space (aarch64.h), mapped with 4 KiB
// pages, so the kGuardSize below each stack is simply left unmapped and an
// overflow faults (vectors.S moves that fault to the CPU's fault stack).
// A freed stack's range is unmapped (TLBI broadcast) before its pages are
// reused; its virtual range is kept for the next stack of the same size.
//
// Locking: one spinlock per part, taken with interrupts masked, because
// operator new is called under the kernel lock (futex.cc) and from
// threads. Order: stacks -> pages; heap -> pages.
#include <atomic>
#include <cstring>
#include <new>

#include "aarch64.h"
#include "spindle/panic.h"

extern "C" char __image_start[];
extern "C" char __image_end[];
extern "C" std::uint64_t spindle_kernel_l1[512];
extern "C" std::uint64_t spindle_kernel_l2_ram[3][512];

namespace spindle::arch {
namespace {

using namespace desc;
constexpr std::uint64_t kRamBlock = kBlock | kAttrNormal | kShInner | kAf | kUxn | kPxn;  // W^X: data only
constexpr std::uint64_t kStackPage = kTable | kAttrNormal | kShInner | kAf | kUxn | kPxn;
constexpr std::size_t kBlockSize = 2 << 20;

// ---------------------------------------------------------------------------
// Physical pages.

IrqSpinLock g_page_lock;
std::uint64_t* g_bitmap = nullptr;   // bit i: page kRamBase + i * 4096 in use
std::uint32_t* g_info = nullptr;     // heap's use of each page
std::size_t g_npages = 0;
std::size_t g_hint = 0;              // first word that may have a free bit
std::size_t g_free_pages = 0;

bool used(std::size_t i) { return g_bitmap[i / 64] >> (i % 64) & 1; }
void mark(std::size_t i, std::size_t n, bool on) {
  for (std::size_t k = i; k < i + n; ++k) {
    if (on) {
      g_bitmap[k / 64] |= 1ull << (k % 64);
    } else {
      g_bitmap[k / 64] &= ~(1ull << (k % 64));
    }
  }
}

std::size_t page_index(std::uintptr_t pa) { return (pa - kRamBase) / kPageSize; }

// ---------------------------------------------------------------------------
// Page-table edits on the kernel's (TTBR1) tables.

void publish_tables() { asm volatile("dsb ishst\n\tisb" ::: "memory"); }

// The level-3 entry for va in the stack region, creating tables on the way.
std::uint64_t* stack_pte(std::uintptr_t va, bool create) { return walk_to_pte(spindle_kernel_l1, va, create, 0); }

// ---------------------------------------------------------------------------
// Heap.

constexpr unsigned kClasses = 8;  // 16 << c bytes
constexpr std::size_t kMaxSmall = 16u << (kClasses - 1);
constexpr std::uint32_t kInfoSmall = 1u << 30;  // | class
constexpr std::uint32_t kInfoRun = 1u << 31;    // | pages in the run

IrqSpinLock g_heap_lock;
struct FreeObject {
  FreeObject* next;
};
FreeObject* g_class_free[kClasses];

unsigned class_of(std::size_t n) {
  unsigned c = 0;
  while ((16u << c) < n) ++c;
  return c;
}

void* heap_alloc(std::size_t n, std::size_t align) {
  if (n == 0) n = 1;
  if (align > kPageSize) return nullptr;  // not supported
  if (n < align) n = align;
  if (n > kMaxSmall) {
    std::size_t pages = (n + kPageSize - 1) / kPageSize;
    std::uintptr_t pa = page_alloc(pages);
    if (!pa) return nullptr;
    g_info[page_index(pa)] = kInfoRun | static_cast<std::uint32_t>(pages);
    return reinterpret_cast<void*>(phys_to_virt(pa));
  }
  unsigned c = class_of(n);
  Locked l(g_heap_lock);
  if (!g_class_free[c]) {
    std::uintptr_t pa = page_alloc(1);
    if (!pa) return nullptr;
    g_info[page_index(pa)] = kInfoSmall | c;
    std::size_t size = 16u << c;
    auto* base = reinterpret_cast<char*>(phys_to_virt(pa));
    for (std::size_t off = kPageSize; off >= size; off -= size) {
      auto* o = reinterpret_cast<FreeObject*>(base + off - size);
      o->next = g_class_free[c];
      g_class_free[c] = o;
    }
  }
  FreeObject* o = g_class_free[c];
  g_class_free[c] = o->next;
  return o;
}

void heap_free(void* p) {
  if (!p) return;
  std::uintptr_t pa = virt_to_phys(reinterpret_cast<std::uintptr_t>(p));
  std::size_t idx = page_index(pa);
  if (pa < kRamBase || idx >= g_npages) panic("operator delete of %p: not a heap address", p);
  std::uint32_t info = g_info[idx];
  if (info & kInfoRun) {
    g_info[idx] = 0;
    page_free(pa, info & ~kInfoRun);
    return;
  }
  if (!(info & kInfoSmall)) panic("operator delete of %p: not allocated by operator new", p);
  unsigned c = info & 0xFF;
  Locked l(g_heap_lock);
  auto* o = static_cast<FreeObject*>(p);
  o->next = g_class_free[c];
  g_class_free[c] = o;
}

// ---------------------------------------------------------------------------
// Stack virtual space: a bump pointer, and freed ranges kept by size.

IrqSpinLock g_stack_lock;
std::uintptr_t g_stack_next = kStackRegionBase;
constexpr unsigned kSizeBuckets = 32;
struct FreeRange {
  FreeRange* next;
  std::uintptr_t va;
};
struct SizeBucket {
  std::size_t size = 0;
  FreeRange* ranges = nullptr;
};
SizeBucket g_buckets[kSizeBuckets];

// A virtual range of `span` bytes (guard + stack), or 0.
std::uintptr_t take_range(std::size_t span) {
  for (SizeBucket& b : g_buckets) {
    if (b.size == span && b.ranges) {
      FreeRange* r = b.ranges;
      b.ranges = r->next;
      std::uintptr_t va = r->va;
      heap_free(r);
      return va;
    }
  }
  if (g_stack_next + span > kStackRegionBase + kStackRegionSize) return 0;
  std::uintptr_t va = g_stack_next;
  g_stack_next += span;
  return va;
}

void keep_range(std::uintptr_t va, std::size_t span) {
  auto* r = static_cast<FreeRange*>(heap_alloc(sizeof(FreeRange), alignof(FreeRange)));
  if (!r) return;  // the range is lost, not reused: only virtual space
  r->va = va;
  for (SizeBucket& b : g_buckets) {
    if (b.size == span || b.size == 0) {
      b.size = span;
      r->next = b.ranges;
      b.ranges = r;
      return;
    }
  }
  heap_free(r);  // too many distinct sizes: let this one go
}

// Unmaps [va, va + size) of the stack region and returns the pages.
void unmap_pages(std::uintptr_t va, std::size_t size) {
  std::uintptr_t pas[16];
  for (std::size_t off = 0; off < size;) {
    unsigned n = 0;
    std::uintptr_t chunk = off;
    for (; n < 16 && off < size; ++n, off += kPageSize) {
      std::uint64_t* pte = stack_pte(va + off, false);
      pas[n] = pte && (*pte & kValid) ? (*pte & kAddrMask) : 0;
      if (pte) *pte = 0;
    }
    // Break: entries invalid everywhere, and no TLB holds them, before the
    // pages can be reused.
    asm volatile("dsb ishst" ::: "memory");
    for (unsigned i = 0; i < n; ++i) {
      std::uint64_t arg = ((va + chunk + i * kPageSize) >> 12) & ((1ull << 44) - 1);
      asm volatile("tlbi vaae1is, %0" ::"r"(arg) : "memory");
    }
    asm volatile("dsb ish\n\tisb" ::: "memory");
    for (unsigned i = 0; i < n; ++i) {
      if (pas[i]) page_free(pas[i], 1);
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------

void memory_init(std::uintptr_t ram_end) {
  if (ram_end > kRamLimit) ram_end = kRamLimit;
  ram_end &= ~(kBlockSize - 1);
  // Map RAM beyond the image's blocks (start.S mapped those). New valid
  // entries replace invalid ones: no TLB maintenance, only ordering.
  for (std::uintptr_t pa = kRamBase; pa < ram_end; pa += kBlockSize) {
    std::size_t i = (pa - kRamBase) / kBlockSize;
    std::uint64_t& e = spindle_kernel_l2_ram[i / 512][i % 512];
    if (!(e & kValid)) e = pa | kRamBlock;
  }
  publish_tables();

  g_npages = (ram_end - kRamBase) / kPageSize;
  std::uintptr_t first_free = virt_to_phys(reinterpret_cast<std::uintptr_t>(__image_end));
  std::size_t words = (g_npages + 63) / 64;
  g_bitmap = reinterpret_cast<std::uint64_t*>(phys_to_virt(first_free));
  first_free += (words * 8 + kPageSize - 1) & ~(kPageSize - 1);
  g_info = reinterpret_cast<std::uint32_t*>(phys_to_virt(first_free));
  first_free += (g_npages * 4 + kPageSize - 1) & ~(kPageSize - 1);
  std::memset(g_bitmap, 0, words * 8);
  std::memset(g_info, 0, g_npages * 4);
  std::size_t reserved = page_index(first_free);
  mark(0, reserved, true);
  mark(g_npages, words * 64 - g_npages, true);  // past the end
  g_free_pages = g_npages - reserved;
  g_hint = reserved / 64;
}

std::uintptr_t page_alloc(std::size_t n) {
  if (n == 0) return 0;
  Locked l(g_page_lock);
  if (n > g_free_pages) return 0;
  std::size_t words = (g_npages + 63) / 64;
  if (n == 1) {
    for (std::size_t k = 0; k < words; ++k) {
      std::size_t w = (g_hint + k) % words;
      if (~g_bitmap[w] != 0) {
        std::size_t i = w * 64 + static_cast<std::size_t>(__builtin_ctzll(~g_bitmap[w]));
        mark(i, 1, true);
        g_hint = w;
        --g_free_pages;
        return kRamBase + i * kPageSize;
      }
    }
    return 0;
  }
  std::size_t run = 0;
  for (std::size_t i = 0; i < g_npages; ++i) {
    if (used(i)) {
      run = 0;
      continue;
    }
    if (++run == n) {
      std::size_t first = i + 1 - n;
      mark(first, n, true);
      g_free_pages -= n;
      return kRamBase + first * kPageSize;
    }
  }
  return 0;
}

void page_free(std::uintptr_t pa, std::size_t n) {
  Locked l(g_page_lock);
  std::size_t i = page_index(pa);
  mark(i, n, false);
  g_free_pages += n;
  if (i / 64 < g_hint) g_hint = i / 64;
}

std::size_t free_page_count() {
  Locked l(g_page_lock);
  return g_free_pages;
}

std::uintptr_t zeroed_page() {
  std::uintptr_t pa = page_alloc(1);
  if (pa) std::memset(reinterpret_cast<void*>(phys_to_virt(pa)), 0, kPageSize);
  return pa;
}

std::uint64_t* walk_to_pte(std::uint64_t* t, std::uintptr_t va, bool create, std::uint64_t table_bits) {
  for (unsigned shift : {30u, 21u}) {
    std::uint64_t& d = t[(va >> shift) & 511];
    if (!(d & kValid)) {
      if (!create) return nullptr;
      std::uintptr_t pa = zeroed_page();
      if (!pa) return nullptr;
      asm volatile("dsb ishst" ::: "memory");  // the zeroed table before the link to it
      d = pa | kTable | table_bits;
    }
    t = table_at(d);
  }
  return &t[(va >> 12) & 511];
}

StackRegion stack_alloc(std::size_t size) {
  if (size == 0 || size % kPageSize != 0) return {};
  std::size_t span = size + kGuardSize;
  Locked l(g_stack_lock);
  std::uintptr_t va = take_range(span);
  if (!va) return {};
  std::uintptr_t base = va + kGuardSize;
  for (std::size_t off = 0; off < size; off += kPageSize) {
    std::uintptr_t pa = page_alloc(1);
    std::uint64_t* pte = pa ? stack_pte(base + off, true) : nullptr;
    if (!pte) {
      if (pa) page_free(pa, 1);
      unmap_pages(base, off);
      keep_range(va, span);
      return {};
    }
    *pte = pa | kStackPage;
  }
  // Invalid -> valid needs no TLB maintenance; the walker must see the
  // entries before the stack is used.
  publish_tables();
  return {reinterpret_cast<void*>(base), size};
}

void stack_free(StackRegion r) {
  if (!r.base) return;
  auto base = reinterpret_cast<std::uintptr_t>(r.base);
  Locked l(g_stack_lock);
  unmap_pages(base, r.size);
  keep_range(base - kGuardSize, r.size + kGuardSize);
}

}  // namespace spindle::arch

// ---------------------------------------------------------------------------
// The global allocation functions. Exhaustion: the nothrow forms return
// nullptr; the others panic (the kernel is built without exceptions). In a
// process's copy they are the process's user heap (kernel/src/uheap.cc),
// whose throwing forms end the process instead.

namespace {
void* must(void* p, std::size_t n) {
  if (!p) spindle::panic("out of memory: operator new of %zu bytes failed", n);
  return p;
}
void* alloc(std::size_t n, std::size_t align) {
  if (spindle::kernel::g_in_user_process) return spindle::kernel::user_heap_alloc(n, align, true);
  return must(spindle::arch::heap_alloc(n, align), n);
}
void* try_alloc(std::size_t n, std::size_t align) {
  if (spindle::kernel::g_in_user_process) return spindle::kernel::user_heap_alloc(n, align, false);
  return spindle::arch::heap_alloc(n, align);
}
void release(void* p) {
  if (spindle::kernel::g_in_user_process) {
    spindle::kernel::user_heap_free(p);
  } else {
    spindle::arch::heap_free(p);
  }
}
}  // namespace

void* operator new(std::size_t n) { return alloc(n, 16); }
void* operator new[](std::size_t n) { return alloc(n, 16); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return try_alloc(n, 16); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return try_alloc(n, 16); }
void* operator new(std::size_t n, std::align_val_t a) { return alloc(n, static_cast<std::size_t>(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return alloc(n, static_cast<std::size_t>(a)); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return try_alloc(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return try_alloc(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { release(p); }
void operator delete[](void* p) noexcept { release(p); }
void operator delete(void* p, std::size_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t) noexcept { release(p); }
void operator delete(void* p, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::align_val_t) noexcept { release(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { release(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { release(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { release(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { release(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { release(p); }
