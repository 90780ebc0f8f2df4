// Process entries shared by the process cases of both targets
// (tests/kernel/process_test.cc, tests/hosted and tests/qemu). Inline, so
// every case file names the same function, which a spawned copy of the
// image finds at the same offset.
#pragma once

#include <spindle/spindle.h>

namespace spindle::ktest {

// Creates threads (each sleeping `nap_ms`) until refused: the number
// created, at most 16, or -1 if the refusal was not kLimit.
inline int count_threads_napping(int nap_ms) {
  Thread ts[16];
  int n = 0;
  for (; n < 16; ++n) {
    ThreadOptions o;
    o.name = "filler";
    auto t = Thread::create(o, [nap_ms] { this_thread::sleep_for(std::chrono::milliseconds(nap_ms)); });
    if (!t.ok()) {
      if (t.status() != Status::kLimit) return -1;
      break;
    }
    ts[n] = std::move(t).value();
  }
  for (int i = 0; i < n; ++i) (void)ts[i].join();
  return n;
}
inline int count_threads() { return count_threads_napping(50); }

// depth levels of processes, each joining its child: depth + 5 (negative:
// a spawn or join went wrong).
inline int nest(int depth) {
  if (depth == 0) return 5;
  auto c = Process::spawn(ProcessOptions{.name = "nested"}, nest, depth - 1);
  if (!c.ok()) return -100 - static_cast<int>(c.status());
  ProcessId pid = c->pid();
  if (pid == 0 || pid == this_process::id()) return -1;
  auto st = c->join();
  if (!st.ok() || st->kind != ExitKind::kExited) return -2;
  return st->code + 1;
}

// Echoes every message on handle 0 back until the channel closes; returns
// the count (negative: a receive or send failed).
inline int echo_server() {
  auto ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return -1;
  static std::byte buf[kMaxMessageBytes];  // a thread's stack is 64 KiB
  int n = 0;
  for (;;) {
    auto r = ch->recv(buf);
    if (!r.ok()) return r.status() == Status::kClosed ? n : -2;
    if (ch->send(std::span<const std::byte>(buf, r->bytes)) != Status::kOk) return -3;
    ++n;
  }
}

}  // namespace spindle::ktest
