// Console input on hosted: stdin. A read(2) that blocks would stop the
// whole vCPU (every Spindle thread queued on it), so it runs on a helper
// host thread through host_call, and only the reading Spindle thread waits.
#include <errno.h>
#include <unistd.h>

#include <arch/arch.h>

#include "spindle/hosted.h"

namespace spindle::arch {

std::size_t console_read(char* buf, std::size_t n) {
  for (;;) {
    long r = hosted::host_call([buf, n]() -> long {
      ssize_t k = ::read(0, buf, n);
      return k < 0 ? -errno : k;
    });
    if (r >= 0) return static_cast<std::size_t>(r);
    if (r != -EINTR) return 0;  // stdin closed or unreadable: the end of input
  }
}

}  // namespace spindle::arch
