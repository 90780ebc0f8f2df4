// Image copies (arch.h: Image copies): the kernel runs the image at its
// link address; a process runs a copy that user_map_image builds in its
// address space at a user base. The image is a static PIE (link.ld,
// toolchains/aarch64-none.cmake): its text holds no absolute address, and
// every absolute address elsewhere has an R_AARCH64_RELATIVE entry in
// .rela.dyn, whose addend is the link-time value (which ld also wrote in
// place, so the kernel's own copy needs no relocation).
//
// A copy at base, offsets from __image_start kept:
//   [__image_start, __text_end)     the kernel's pages, read-only + executable
//   [__text_end, __relro_start)     the kernel's pages, read-only
//   [__relro_start, __relro_end)    private, read-only: the kernel's bytes
//                                   (read-only since link time), relocated
//   [__data_start, __user_image_end) private, read-write: .data as loaded
//                                   (__pristine_data, start.S), relocated,
//                                   then zeroed .bss
// A relocation outside the private parts would need a private copy of code
// or shared constants: the loader refuses it (panic: a build problem).
#include <cstring>

#include "aarch64.h"
#include "spindle/panic.h"

extern "C" {
extern char __image_start[], __text_end[], __relro_start[], __relro_end[];
extern char __data_start[], __data_end[], __user_image_end[], __pristine_data[];
using InitFn = void (*)();
extern InitFn __init_array_start[];
extern InitFn __init_array_end[];
}

namespace spindle::arch {
namespace {

struct Rela {
  std::uint64_t offset;  // link-time address of the word
  std::uint64_t info;    // type in the low 32 bits
  std::int64_t addend;   // link-time value
};
extern "C" const Rela __rela_start[];
extern "C" const Rela __rela_end[];
constexpr std::uint32_t kRelative = 1027;  // R_AARCH64_RELATIVE

// The kernel runs at the link address: its own copy's base is that.
std::uintptr_t link_base() { return reinterpret_cast<std::uintptr_t>(__image_start); }
std::uintptr_t offset_of(const char* p) { return reinterpret_cast<std::uintptr_t>(p) - link_base(); }

// Copies bytes into a copy's private pages, through the kernel's map.
bool fill(AddressSpace* as, std::uintptr_t va, const char* src, std::size_t n) {
  while (n > 0) {
    char* page = user_page_alias(as, va & ~(kPageSize - 1));
    if (!page) return false;
    std::size_t off = va % kPageSize;
    std::size_t k = n < kPageSize - off ? n : kPageSize - off;
    std::memcpy(page + off, src, k);
    va += k;
    src += k;
    n -= k;
  }
  return true;
}

}  // namespace

std::uintptr_t image_base() { return reinterpret_cast<std::uintptr_t>(__image_start); }

std::size_t image_size() { return offset_of(__user_image_end); }

// A constant, not PC-relative: the kernel's linear map of the start of RAM.
std::uintptr_t kernel_space_address() { return phys_to_virt(kRamBase); }

void image_constructors() {
  for (InitFn* f = __init_array_start; f < __init_array_end; ++f) (*f)();
}

bool user_map_image(AddressSpace* as, std::uintptr_t base) {
  std::uintptr_t text = offset_of(__text_end);
  std::uintptr_t relro = offset_of(__relro_start);
  std::uintptr_t relro_end = offset_of(__relro_end);
  std::uintptr_t data = offset_of(__data_start);
  std::uintptr_t end = offset_of(__user_image_end);
  std::uintptr_t pa = virt_to_phys(link_base());
  if (!user_map_shared(as, base, pa, text, UserAccess::kReadExecute) ||
      !user_map_shared(as, base + text, pa + text, relro - text, UserAccess::kRead) ||
      !user_map(as, base + relro, relro_end - relro, UserAccess::kRead) ||
      !user_map(as, base + data, end - data, UserAccess::kReadWrite)) {
    return false;
  }
  if (!fill(as, base + relro, __relro_start, relro_end - relro) ||
      !fill(as, base + data, __pristine_data, offset_of(__data_end) - data)) {
    return false;
  }
  // Relocate. Entries come sorted by address, so one page lookup serves
  // a run of them.
  std::uintptr_t page_va = 0;
  char* page = nullptr;
  for (const Rela* r = __rela_start; r < __rela_end; ++r) {
    std::uintptr_t off = r->offset - link_base();
    if (static_cast<std::uint32_t>(r->info) != kRelative || off < relro || off >= end || off % 8 != 0 ||
        (off >= relro_end && off < data)) {
      panic("image: relocation type %u at image offset 0x%llx cannot be applied to a process's copy",
            static_cast<unsigned>(r->info), static_cast<unsigned long long>(off));
    }
    std::uintptr_t va = base + off;
    if ((va & ~(kPageSize - 1)) != page_va) {
      page_va = va & ~(kPageSize - 1);
      page = user_page_alias(as, page_va);
      if (!page) return false;
    }
    std::uint64_t value = static_cast<std::uint64_t>(r->addend) - link_base() + base;
    std::memcpy(page + va % kPageSize, &value, sizeof value);
  }
  return true;
}

}  // namespace spindle::arch
