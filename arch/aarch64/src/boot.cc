// C++ entry of the boot CPU (from start.S): memory, global constructors,
// console, time, interrupt controller, then the kernel. The app's
// spindle_main becomes the kernel's first thread (main.cc); its result is
// the semihosting exit code.
#include "aarch64.h"

extern "C" {
// The first thread's body, in the app's image (main.cc or a test runner).
int spindle_aarch64_main_thread(void*);

std::uintptr_t spindle_secondary_stacks[spindle::arch::kMaxCpusAarch64];
}

// QEMU's default RAM when semihosting cannot tell the size.
static constexpr std::uintptr_t kDefaultRamSize = 128u << 20;

extern "C" [[noreturn]] void spindle_aarch64_boot() {
  using namespace spindle::arch;
  cpu_early_init(0);
  std::uintptr_t ram_end = semihosting_ram_end();
  if (ram_end <= kRamBase) ram_end = kRamBase + kDefaultRamSize;
  memory_init(ram_end);
  image_constructors();
  console_init();
  time_init();
  irq_controller_init_global();
  cpu_hw_init(0);
  irq_enable_device(kIntidUart);
  console_enable_input();

  spindle::kernel::BootArgs args;
  args.main = spindle_aarch64_main_thread;
  halt(spindle::kernel::kmain(args));
}
