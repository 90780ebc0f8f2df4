// Thread contexts: the initial frame of a new thread and the switch calls
// (the switch itself is switch.S).
#include "aarch64.h"

extern "C" void spindle_aarch64_switch(void** save_sp, void* load_sp);
extern "C" void spindle_aarch64_switch_to_frame(void** save_sp, void* frame);
extern "C" [[noreturn]] void spindle_aarch64_load(void* sp);
extern "C" void spindle_aarch64_thread_start();

namespace spindle::arch {

void context_init(Context* c, void* stack_lo, std::size_t size, void (*entry)(void*), void* arg) {
  auto top = (reinterpret_cast<std::uintptr_t>(stack_lo) + size) & ~std::uintptr_t{15};
  // The frame spindle_aarch64_load pops: x19..x28, x29 (fp), x30 (lr).
  auto* f = reinterpret_cast<std::uint64_t*>(top - 96);
  for (int i = 0; i < 12; ++i) f[i] = 0;
  f[0] = reinterpret_cast<std::uint64_t>(entry);  // x19
  f[1] = reinterpret_cast<std::uint64_t>(arg);    // x20
  f[11] = reinterpret_cast<std::uint64_t>(&spindle_aarch64_thread_start);  // x30
  c->sp = f;
}

void context_switch(Context* from, Context* to) { spindle_aarch64_switch(&from->sp, to->sp); }

void context_switch_final(Context* to) { spindle_aarch64_load(to->sp); }

void context_switch_to_user(Context* from, void* frame) { spindle_aarch64_switch_to_frame(&from->sp, frame); }

}  // namespace spindle::arch
