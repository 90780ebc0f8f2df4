// anchor_probe: a fixed number of round trips of an anchor's path, for
// bench/count_instructions.sh, as spindle_probe does for Spindle's (the
// difference between runs of N and 2N round trips is one round trip).
// Not a timing benchmark.
//
//   anchor_probe bf-channel N   a fiber and the main fiber pass a value with
//                               two Boost.Fiber buffered_channel<int>(2)
//                               (BM_BoostFiberChannelPingPong)
#include <boost/fiber/all.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace fibers = boost::fibers;

namespace {

int usage() {
  std::fprintf(stderr, "usage: anchor_probe bf-channel ROUND_TRIPS\n");
  return 2;
}

int bf_channel(long n) {
  fibers::buffered_channel<int> to_peer{2}, to_main{2};
  fibers::fiber peer([&] {
    int v = 0;
    while (to_peer.pop(v) == fibers::channel_op_status::success) to_main.push(v);
  });
  int v = 0;
  for (long i = 0; i < n; ++i) {
    if (to_peer.push(v) != fibers::channel_op_status::success) return 1;
    if (to_main.pop(v) != fibers::channel_op_status::success) return 1;
  }
  to_peer.close();
  peer.join();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) return usage();
  char* end = nullptr;
  long n = std::strtol(argv[2], &end, 10);
  if (*end != '\0' || n < 0) return usage();
  // As in the benchmark binaries (bench_report.h): glibc's single-threaded
  // fast paths end once a process has created a thread.
  std::thread([] {}).join();
  if (std::strcmp(argv[1], "bf-channel") == 0) return bf_channel(n);
  return usage();
}
