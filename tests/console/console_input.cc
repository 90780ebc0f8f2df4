// Console input end to end: the harness (feed_when_reading.sh) feeds
// console_input.txt 0.3 s after this program says "reading" (QEMU: into the PL011, followed by a Ctrl-D; hosted: as stdin) and
// this program reads it back with spindle::read_line, checking every line
// and the end of input. The first line only comes after the pause: over
// that wait a second thread keeps ticking, and the reader may use a
// quarter of the time at most (it uses next to nothing): reading blocks
// the thread (woken by the receive interrupt, or the helper host thread),
// it does not poll.
// Prints "N passed, N failed" and exits 0 only if everything matched.
#include <spindle/spindle.h>

#include <atomic>
#include <string_view>

namespace {

using namespace spindle;

// What read_line must return for console_input.txt with a 16-byte buffer.
const char* const kExpected[] = {
    "hello, spindle",
    "",                  // an empty line
    "crlf line",         // ended by "\r\n": one line, not two
    "cr line",           // ended by "\r" alone
    "a line longer th",  // 15 bytes kept, the rest of the line dropped
    "last, no newline",  // ended by the end of input
};

std::atomic<bool> g_done{false};
std::atomic<std::uint64_t> g_ticks{0};

std::uint64_t my_cpu_ns() {
  ThreadStats me;
  return thread_stats(this_thread::id(), &me) == Status::kOk ? me.cpu_time_ns : 0;
}

}  // namespace

int spindle_main(int, char**) {
  ThreadOptions o;
  o.name = "ticker";
  Result<Thread> ticker = Thread::create(o, [] {
    while (!g_done.load()) {
      g_ticks.fetch_add(1);
      this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  if (!ticker.ok()) return 2;

  unsigned passed = 0, failed = 0;
  if (set_cpu_time_accounting(true) != Status::kOk) {
    print("FAIL CPU-time accounting could not be turned on\n");
    return 1;
  }
  char line[17];
  std::uint64_t cpu_before = my_cpu_ns(), ticks_before = g_ticks.load();
  print("reading\n");  // the harness feeds the input a while after this line
  TimePoint wait_start = Clock::now();
  std::uint64_t wait_ns = 0, wait_cpu_ns = 0, wait_ticks = 0;
  for (const char* want : kExpected) {
    long n = read_line(line, sizeof line);
    if (wait_ns == 0) {
      wait_ns = static_cast<std::uint64_t>(std::chrono::nanoseconds(Clock::now() - wait_start).count());
      wait_cpu_ns = my_cpu_ns() - cpu_before;
      wait_ticks = g_ticks.load() - ticks_before;
    }
    if (n >= 0 && std::string_view(line, static_cast<std::size_t>(n)) == want) {
      print("ok   line '%s'\n", line);
      ++passed;
    } else {
      print("FAIL line: got %ld '%s', want '%s'\n", n, n >= 0 ? line : "", want);
      ++failed;
    }
  }
  long end = read_line(line, sizeof line);
  if (end == -1) {
    print("ok   end of input\n");
    ++passed;
  } else {
    print("FAIL end of input: got %ld '%s'\n", end, line);
    ++failed;
  }
  g_done.store(true);
  std::move(ticker).value().join();
  // The harness pauses 0.3 s after "reading": the first read really waits.
  bool quiet = wait_ns >= 50'000'000 && wait_cpu_ns * 4 < wait_ns && wait_ticks > 0;
  print("%s waiting %llu ms for the first line, the reader used %llu us of CPU; the other thread ticked %llu times\n",
        quiet ? "ok  " : "FAIL", static_cast<unsigned long long>(wait_ns / 1'000'000),
        static_cast<unsigned long long>(wait_cpu_ns / 1000), static_cast<unsigned long long>(wait_ticks));
  if (quiet) {
    ++passed;
  } else {
    ++failed;
  }
  print("%u passed, %u failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
