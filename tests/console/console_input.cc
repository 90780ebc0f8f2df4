// Console input end to end: the harness feeds console_input.txt after a
// pause (QEMU: into the PL011, followed by a Ctrl-D; hosted: as stdin) and
// this program reads it back with spindle::read_line, checking every line
// and the end of input. Meanwhile a second thread keeps ticking, and the
// reader's own CPU time must stay small: reading blocks the thread (woken
// by the receive interrupt, or the helper host thread), it does not poll.
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
  char line[17];
  for (const char* want : kExpected) {
    long n = read_line(line, sizeof line);
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
  ThreadStats me;
  std::uint64_t reader_us = thread_stats(this_thread::id(), &me) == Status::kOk ? me.cpu_time_ns / 1000 : ~0ull;
  std::uint64_t ticks = g_ticks.load();
  bool quiet = ticks > 0 && reader_us < 50'000;
  print("%s reader used %llu us of CPU; the other thread ticked %llu times meanwhile\n", quiet ? "ok  " : "FAIL",
        static_cast<unsigned long long>(reader_us), static_cast<unsigned long long>(ticks));
  if (quiet) {
    ++passed;
  } else {
    ++failed;
  }
  print("%u passed, %u failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
