// Hosted memory: guarded thread stacks from mmap, and the global operator
// new/delete for hosted apps.
//
// operator new masks Spindle interrupts around malloc/free. glibc's malloc
// takes a host lock; if a Spindle thread were preempted while holding it,
// another Spindle thread on the same vCPU could block the whole vCPU on it.
// With interrupts masked no Spindle switch can happen inside malloc.
#include <sys/mman.h>

#include <cstdlib>
#include <cstdint>
#include <new>

#include <arch/arch.h>

#include "hosted_internal.h"
#include "spindle/panic.h"

namespace spindle::arch {
namespace {
thread_local bool t_is_vcpu = false;
}  // namespace

bool hosted_is_vcpu() { return t_is_vcpu; }
void hosted_mark_vcpu() { t_is_vcpu = true; }
void hosted_unmark_vcpu() { t_is_vcpu = false; }

StackRegion stack_alloc(std::size_t size) {
  std::size_t total = size + kGuardSize;
  void* p = mmap(nullptr, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (p == MAP_FAILED) return {};
  char* base = static_cast<char*>(p) + kGuardSize;
  if (mprotect(base, size, PROT_READ | PROT_WRITE) != 0) {
    munmap(p, total);
    return {};
  }
  return {base, size};
}

void stack_free(StackRegion r) {
  if (r.base) munmap(static_cast<char*>(r.base) - kGuardSize, r.size + kGuardSize);
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

void* checked(void* p, std::size_t n) {
  if (!p && n != 0) spindle::panic("out of memory: operator new of %zu bytes failed", n);
  return p;
}

void* alloc(std::size_t n) {
  MaskIrqs m;
  return checked(std::malloc(n ? n : 1), n);
}

void* try_alloc_aligned(std::size_t n, std::align_val_t a) {
  MaskIrqs m;
  std::size_t align = static_cast<std::size_t>(a);
  if (n > SIZE_MAX - align) return nullptr;
  std::size_t rounded = (n + align - 1) / align * align;
  return std::aligned_alloc(align, rounded ? rounded : align);
}

void* alloc_aligned(std::size_t n, std::align_val_t a) { return checked(try_alloc_aligned(n, a), n); }

void release(void* p) {
  if (!p) return;
  MaskIrqs m;
  std::free(p);
}

}  // namespace

void* operator new(std::size_t n) { return alloc(n); }
void* operator new[](std::size_t n) { return alloc(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  spindle::arch::IrqState s{};
  bool v = spindle::arch::hosted_is_vcpu();
  if (v) s = spindle::arch::irq_save();
  void* p = std::malloc(n ? n : 1);
  if (v) spindle::arch::irq_restore(s);
  return p;
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void* operator new(std::size_t n, std::align_val_t a) { return alloc_aligned(n, a); }
void* operator new[](std::size_t n, std::align_val_t a) { return alloc_aligned(n, a); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return try_alloc_aligned(n, a);
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return try_alloc_aligned(n, a);
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
