// Hosted contexts: the assembly switch plus the annotations that let
// AddressSanitizer and ThreadSanitizer follow Spindle threads as fibers.
#include <pthread.h>

#include <cstdint>

#include <arch/arch.h>

#if defined(__SANITIZE_ADDRESS__)
#define SPINDLE_ASAN 1
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(__SANITIZE_THREAD__)
#define SPINDLE_TSAN 1
#include <sanitizer/tsan_interface.h>
#endif

extern "C" void spindle_hosted_start();

extern "C" [[noreturn]] void spindle_hosted_first_run(void (*entry)(void*), void* arg) {
#ifdef SPINDLE_ASAN
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
  entry(arg);
  __builtin_trap();  // entry never returns (contract)
}

namespace spindle::arch {
namespace {

inline void before_switch(Context* from, Context* to, bool final) {
#ifdef SPINDLE_ASAN
  __sanitizer_start_switch_fiber(final ? nullptr : &from->fake_stack, to->stack_lo, to->stack_size);
#endif
#ifdef SPINDLE_TSAN
  __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
  (void)from;
  (void)to;
  (void)final;
}

inline void after_switch(Context* self) {
#ifdef SPINDLE_ASAN
  __sanitizer_finish_switch_fiber(self->fake_stack, nullptr, nullptr);
#endif
  (void)self;
}

}  // namespace

void context_init(Context* c, void* stack_lo, std::size_t size, void (*entry)(void*), void* arg) {
#ifdef SPINDLE_ASAN
  // A reused stack still carries the redzones of its last owner's frames.
  ASAN_UNPOISON_MEMORY_REGION(stack_lo, size);
#endif
  auto top = (reinterpret_cast<std::uintptr_t>(stack_lo) + size) & ~std::uintptr_t{15};
  auto* f = reinterpret_cast<std::uint64_t*>(top);
  // Frame popped by spindle_hosted_switch (see switch_x86_64.S), so that
  // after its `ret` %rsp = top - 16, aligned for the call in _start.
  f[-2] = 0;                                                      // end of backtrace
  f[-3] = reinterpret_cast<std::uint64_t>(&spindle_hosted_start);  // ret
  f[-4] = 0;                                                      // rbp
  f[-5] = 0;                                                      // rbx
  f[-6] = reinterpret_cast<std::uint64_t>(entry);                 // r12
  f[-7] = reinterpret_cast<std::uint64_t>(arg);                   // r13
  f[-8] = 0;                                                      // r14
  f[-9] = 0;                                                      // r15
  f[-10] = 0x1F80 | (std::uint64_t{0x037F} << 32);                // mxcsr, x87 cw
  c->sp = &f[-10];
  c->stack_lo = stack_lo;
  c->stack_size = size;
  c->fake_stack = nullptr;
#ifdef SPINDLE_TSAN
  c->tsan_fiber = __tsan_create_fiber(0);
  c->owns_fiber = true;
#endif
}

void context_adopt(Context* c) {
  pthread_attr_t attr;
  void* lo = nullptr;
  std::size_t size = 0;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    pthread_attr_getstack(&attr, &lo, &size);
    pthread_attr_destroy(&attr);
  }
  c->sp = nullptr;
  c->stack_lo = lo;
  c->stack_size = size;
  c->fake_stack = nullptr;
  c->tsan_fiber = nullptr;
  c->owns_fiber = false;
#ifdef SPINDLE_TSAN
  c->tsan_fiber = __tsan_get_current_fiber();
#endif
}

void context_destroy(Context* c) {
#ifdef SPINDLE_TSAN
  if (c->owns_fiber) __tsan_destroy_fiber(c->tsan_fiber);
#endif
  c->tsan_fiber = nullptr;
  c->owns_fiber = false;
}

#if defined(SPINDLE_ASAN) || defined(SPINDLE_TSAN)
void context_switch(Context* from, Context* to) {
  before_switch(from, to, false);
  spindle_hosted_switch(&from->sp, to->sp);
  after_switch(from);
}
#endif

void context_switch_final(Context* to) {
  Context dead;
  before_switch(&dead, to, true);
  spindle_hosted_switch(&dead.sp, to->sp);
  __builtin_trap();
}

}  // namespace spindle::arch
