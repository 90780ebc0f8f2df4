// Hosted memory: guarded thread stacks from mmap, and the global operator
// new/delete for hosted apps.
//
// Memory limit (a spawned process's ProcessOptions::memory_limit): heap
// blocks (their usable size) and thread stacks are counted in g_used while a
// limit is set. A throwing operator new past the limit ends the process with
// FaultKind::kMemoryLimit; nothrow new returns nullptr; stack_alloc fails
// (Thread::create returns kNoMemory). Blocks allocated before the limit was
// set are subtracted when freed, so g_used is signed.
//
// operator new masks Spindle interrupts around malloc/free. glibc's malloc
// takes a host lock; if a Spindle thread were preempted while holding it,
// another Spindle thread on the same vCPU could block the whole vCPU on it.
// With interrupts masked no Spindle switch can happen inside malloc.
#include <malloc.h>
#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstdint>
#include <new>

#include <arch/arch.h>

#include "hosted_internal.h"
#include "spindle/panic.h"
#include "spindle/process.h"

namespace spindle::arch {
namespace {
thread_local bool t_is_vcpu = false;
std::uint64_t g_limit = 0;           // 0: no limit
std::atomic<std::int64_t> g_used{0};  // bytes, while g_limit != 0
}  // namespace

void hosted_set_memory_limit(std::uint64_t bytes) { g_limit = bytes; }
bool hosted_memory_limited() { return g_limit != 0; }
std::uint64_t hosted_memory_used() {
  std::int64_t u = g_used.load(std::memory_order_relaxed);
  return u > 0 ? static_cast<std::uint64_t>(u) : 0;
}

// Charges n bytes against the limit; false (nothing charged) past it.
bool hosted_charge(std::size_t n) {
  if (g_limit == 0) return true;
  std::int64_t now = g_used.fetch_add(static_cast<std::int64_t>(n), std::memory_order_relaxed) + static_cast<std::int64_t>(n);
  if (now > static_cast<std::int64_t>(g_limit)) {
    g_used.fetch_sub(static_cast<std::int64_t>(n), std::memory_order_relaxed);
    return false;
  }
  return true;
}
void hosted_uncharge(std::size_t n) {
  if (g_limit != 0) g_used.fetch_sub(static_cast<std::int64_t>(n), std::memory_order_relaxed);
}

bool hosted_is_vcpu() { return t_is_vcpu; }
void hosted_mark_vcpu() { t_is_vcpu = true; }
void hosted_unmark_vcpu() { t_is_vcpu = false; }

namespace {
// Linux 6.13+ installs guard pages inside a mapping without splitting it
// (madvise MADV_GUARD_INSTALL): touching one raises SIGSEGV like PROT_NONE,
// but the stack and its guard stay one VMA, and stacks mapped next to each
// other merge. With mprotect each stack costs two of the process's
// vm.max_map_count mappings (65530 by default), which caps a process at
// about 32000 threads; with guard markers 100000 threads fit. Older kernels
// refuse the advice with EINVAL, and the guard falls back to PROT_NONE.
constexpr int kMadvGuardInstall = 102;  // <linux/mman.h>, not yet in Debian 12's headers
std::atomic<bool> g_guard_markers{true};

bool install_guard(void* p) {
  if (g_guard_markers.load(std::memory_order_relaxed)) {
    if (madvise(p, kGuardSize, kMadvGuardInstall) == 0) return true;
    if (errno != EINVAL) return false;
    g_guard_markers.store(false, std::memory_order_relaxed);
  }
  return mprotect(p, kGuardSize, PROT_NONE) == 0;
}
}  // namespace

StackRegion stack_alloc(std::size_t size) {
  if (!hosted_charge(size)) return {};
  std::size_t total = size + kGuardSize;
  void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (p == MAP_FAILED || !install_guard(p)) {
    if (p != MAP_FAILED) munmap(p, total);
    hosted_uncharge(size);
    return {};
  }
  return {static_cast<char*>(p) + kGuardSize, size};
}

void stack_free(StackRegion r) {
  if (!r.base) return;
  munmap(static_cast<char*>(r.base) - kGuardSize, r.size + kGuardSize);
  hosted_uncharge(r.size);
}

}  // namespace spindle::arch

namespace {

struct MaskIrqs {
  bool vcpu = spindle::arch::hosted_is_vcpu();
  spindle::arch::IrqState saved = vcpu ? spindle::arch::irq_save() : false;
  ~MaskIrqs() {
    if (vcpu) spindle::arch::irq_restore(saved);
  }
};

// A block from malloc (align 0) or aligned_alloc, charged against the
// memory limit; nullptr when the host or the limit refuses.
void* try_alloc(std::size_t n, std::size_t align) {
  MaskIrqs m;
  void* p;
  if (align == 0) {
    p = std::malloc(n ? n : 1);
  } else {
    if (n > SIZE_MAX - align) return nullptr;
    std::size_t rounded = (n + align - 1) / align * align;
    p = std::aligned_alloc(align, rounded ? rounded : align);
  }
  if (p && spindle::arch::hosted_memory_limited() && !spindle::arch::hosted_charge(malloc_usable_size(p))) {
    std::free(p);
    return nullptr;
  }
  return p;
}

void* alloc(std::size_t n, std::size_t align = 0) {
  void* p = try_alloc(n, align);
  if (p) return p;
  if (spindle::hosted::is_spawned_process()) {
    // Past the limit (or the host is out of memory): the process ends and
    // its parent's join() reports it.
    spindle::hosted::process_fault(spindle::FaultKind::kMemoryLimit, n);
    raise(SIGKILL);
  }
  spindle::panic("out of memory: operator new of %zu bytes failed", n);
}

void release(void* p) {
  if (!p) return;
  MaskIrqs m;
  if (spindle::arch::hosted_memory_limited()) spindle::arch::hosted_uncharge(malloc_usable_size(p));
  std::free(p);
}

}  // namespace

void* operator new(std::size_t n) { return alloc(n); }
void* operator new[](std::size_t n) { return alloc(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return try_alloc(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void* operator new(std::size_t n, std::align_val_t a) { return alloc(n, static_cast<std::size_t>(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return alloc(n, static_cast<std::size_t>(a)); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return try_alloc(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return try_alloc(n, static_cast<std::size_t>(a));
}
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { release(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { release(p); }
void operator delete(void* p) noexcept { release(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { release(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { release(p); }
void operator delete[](void* p) noexcept { release(p); }
void operator delete(void* p, std::size_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t) noexcept { release(p); }
void operator delete(void* p, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::align_val_t) noexcept { release(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { release(p); }
