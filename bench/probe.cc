// spindle_probe: a fixed number of round trips of one kernel path, for
// bench/count_instructions.sh, which runs it under callgrind with N and
// 2N round trips and reports the difference per round trip (start-up and
// shutdown cancel out). Not a timing benchmark.
//
//   spindle_probe --cpus 1 sem N     two threads pass a token with two
//                                    BinarySemaphores (BM_SpindleSemPingPong)
//   spindle_probe --cpus 1 yield N   two threads yield to each other
//                                    (BM_SpindleYieldRoundTrip)
#include <spindle/spindle.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace sp = spindle;

namespace {

int usage() {
  sp::print("usage: spindle_probe [--cpus N] sem|yield ROUND_TRIPS\n");
  return 2;
}

int semaphores(long n) {
  static sp::BinarySemaphore to_peer(false, "to-peer"), to_main(false, "to-main");
  static std::atomic<bool> stop{false};
  auto peer = sp::Thread::create({.name = "peer"}, [] {
    for (;;) {
      to_peer.acquire();
      if (stop.load(std::memory_order_relaxed)) return 0;
      to_main.release();
    }
  });
  if (!peer.ok()) return 1;
  for (long i = 0; i < n; ++i) {
    to_peer.release();
    to_main.acquire();
  }
  stop.store(true);
  to_peer.release();
  return peer->join() == sp::Status::kOk ? 0 : 1;
}

int yields(long n) {
  static std::atomic<bool> stop{false};
  auto peer = sp::Thread::create({.name = "peer"}, [] {
    while (!stop.load(std::memory_order_relaxed)) sp::this_thread::yield();
    return 0;
  });
  if (!peer.ok()) return 1;
  for (long i = 0; i < n; ++i) sp::this_thread::yield();
  stop.store(true);
  return peer->join() == sp::Status::kOk ? 0 : 1;
}

}  // namespace

int spindle_main(int argc, char** argv) {
  if (argc != 3) return usage();
  char* end = nullptr;
  long n = std::strtol(argv[2], &end, 10);
  if (*end != '\0' || n < 0) return usage();
  if (std::strcmp(argv[1], "sem") == 0) return semaphores(n);
  if (std::strcmp(argv[1], "yield") == 0) return yields(n);
  return usage();
}
