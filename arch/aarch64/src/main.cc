// The first thread of a bare-metal app image: spindle_main with argc = 1
// (there is no command line on bare metal). Linked into every app as an
// object (the `spindle_main` library), so the kernel library can call it.
#include "spindle/app.h"

extern "C" int spindle_aarch64_main_thread(void*) {
  static char name[] = "spindle";
  static char* argv[] = {name, nullptr};
  return spindle_main(1, argv);
}
