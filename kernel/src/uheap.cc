// A process's heap (arch.h: user_heap_alloc), user mode: operator new and
// delete in a process's copy of the image. Its memory is the process's own
// pages from kSysHeapGrow (counted against ProcessOptions::memory_limit);
// nothing here is the kernel's.
//
// Every block has a 16-byte header below it. Small blocks (with the header
// at most kMaxSmall bytes) come in power-of-two classes carved from 64 KiB
// chunks and return to their class's free list; larger ones are page runs
// of their own, kept on a free list for reuse (first fit, not split) when
// deleted. A block asked with more than 16-byte alignment is carved from a
// larger one; its header points back at it.
//
// Locking: g_lock (a futex Mutex in the process's memory, uncontended
// without a system call) guards every list and the chunk being carved.
#include <cstddef>
#include <cstdint>

#include "spindle/mutex.h"
#include "user.h"

namespace spindle::kernel {
namespace {

constexpr std::size_t kHeader = 16;
constexpr unsigned kClasses = 8;                     // 32 << c bytes, header included
constexpr std::size_t kMaxSmall = 32u << (kClasses - 1);  // 4 KiB
constexpr std::size_t kChunk = 64 * 1024;
constexpr std::size_t kPage = 4096;

enum Kind : std::uint32_t { kSmall = 1, kRun = 2, kAligned = 3 };

struct Header {
  std::uint32_t kind;
  std::uint32_t cls;   // kSmall: the class
  std::uint64_t size;  // kRun: bytes of the run (header included); kAligned: the block it lies in
};
static_assert(sizeof(Header) == kHeader);

struct FreeBlock {
  FreeBlock* next;
  std::size_t size;  // runs only
};

Mutex g_lock{"user heap"};
FreeBlock* g_small[kClasses];
FreeBlock* g_runs;
std::uintptr_t g_carve = 0;      // the chunk small blocks are carved from
std::uintptr_t g_carve_end = 0;

unsigned class_of(std::size_t n) {
  unsigned c = 0;
  while ((std::size_t{32} << c) < n) ++c;
  return c;
}

// Fresh pages from the kernel; 0 when refused (must: the process ends instead).
std::uintptr_t grow(std::size_t bytes, bool must, std::size_t asked) {
  return static_cast<std::uintptr_t>(sys(kSysHeapGrow, bytes, must ? 1 : 0, asked));
}

void* alloc(std::size_t n, bool must, std::size_t asked) {
  if (n > (std::size_t{1} << 40)) {
    if (must) (void)grow(~std::size_t{0} >> 1, true, asked);  // refused: ends the process
    return nullptr;
  }
  std::size_t total = n + kHeader;
  Guard l(g_lock);
  if (total <= kMaxSmall) {
    unsigned c = class_of(total);
    std::uintptr_t at;
    if (FreeBlock* b = g_small[c]) {
      g_small[c] = b->next;
      at = reinterpret_cast<std::uintptr_t>(b);
    } else {
      std::size_t size = std::size_t{32} << c;
      if (g_carve_end - g_carve < size) {
        std::uintptr_t chunk = grow(kChunk, must, asked);
        if (!chunk) return nullptr;
        g_carve = chunk;
        g_carve_end = chunk + kChunk;
      }
      at = g_carve;  // classes are carved in size order within a chunk: 16-byte aligned
      g_carve += size;
    }
    auto* h = reinterpret_cast<Header*>(at);
    *h = Header{kSmall, c, 0};
    return reinterpret_cast<void*>(at + kHeader);
  }
  std::size_t size = (total + kPage - 1) & ~(kPage - 1);
  std::uintptr_t at = 0;
  for (FreeBlock** f = &g_runs; *f; f = &(*f)->next) {
    if ((*f)->size >= size) {
      FreeBlock* b = *f;
      *f = b->next;
      size = b->size;
      at = reinterpret_cast<std::uintptr_t>(b);
      break;
    }
  }
  if (!at && !(at = grow(size, must, asked))) return nullptr;
  *reinterpret_cast<Header*>(at) = Header{kRun, 0, size};
  return reinterpret_cast<void*>(at + kHeader);
}

void release(void* p) {
  auto* h = reinterpret_cast<Header*>(static_cast<char*>(p) - kHeader);
  if (h->kind == kAligned) {
    release(reinterpret_cast<void*>(h->size));
    return;
  }
  Guard l(g_lock);
  auto* b = reinterpret_cast<FreeBlock*>(h);
  if (h->kind == kSmall) {
    unsigned c = h->cls;
    b->next = g_small[c];
    g_small[c] = b;
  } else {
    std::size_t size = h->size;
    b->size = size;
    b->next = g_runs;
    g_runs = b;
  }
}

}  // namespace

void* user_heap_alloc(std::size_t n, std::size_t align, bool must) {
  if (align <= kHeader) return alloc(n, must, n);
  // Room to move the block up to the alignment, with a header of its own.
  void* raw = alloc(n + align + kHeader, must, n);
  if (!raw) return nullptr;
  std::uintptr_t at = (reinterpret_cast<std::uintptr_t>(raw) + kHeader + align - 1) & ~(align - 1);
  *reinterpret_cast<Header*>(at - kHeader) = Header{kAligned, 0, reinterpret_cast<std::uintptr_t>(raw)};
  return reinterpret_cast<void*>(at);
}

void user_heap_free(void* p) {
  if (p) release(p);
}

}  // namespace spindle::kernel
