// deadlock: the classic ABBA deadlock, caught by the kernel's wait-for cycle
// detection, then cured two ways.
//
//  1. detection: thread "left" takes A then B, thread "right" takes B then A.
//     A Latch makes both hold their first lock before either asks for its
//     second, so the deadlock is certain. The second thread to block would
//     close the cycle left -> B -> right -> A -> left: its lock_until(kForever)
//     returns Status::kDeadlock (the kernel prints a report naming both
//     threads and locks) instead of hanging. That thread backs off (releases
//     its first lock), the other one finishes, then the loser retries.
//     Skipped with a message if the kernel was built without detection.
//  2. cure by lock ordering: both threads take A then B. No cycle can form.
//  3. cure by timeouts: ABBA again, forced by the latch, with detection
//     switched off; each thread uses try_lock_for and, on a timeout, backs
//     off for a thread-specific time and retries.
//
// Checks (exit 1 if any fails): in part 1 exactly one thread got kDeadlock,
// spindle::deadlocks_detected() grew by exactly 1 and both threads finished
// their work (and, in builds with the lock-order validator, it reported the
// inversion); in part 2 and 3 both finished with no kDeadlock; part 3 needed
// at least one timeout (the collision was real).
#include <atomic>

#include <spindle/spindle.h>

namespace {

using namespace std::chrono_literals;
using spindle::Status;

struct Outcome {
  std::atomic<int> deadlocks{0}, timeouts{0}, done{0};
};

enum class Style { kForever, kTimeout };

// Takes `first` then `second`, does the work, releases both. On kDeadlock
// or a timeout it releases `first`, backs off and tries again.
void transfer(spindle::Mutex& first, spindle::Mutex& second, spindle::Latch* both_hold, Style style,
              spindle::Duration backoff, Outcome& out) {
  for (;;) {
    if (Status s = first.lock_until(spindle::kForever); s != Status::kOk) {
      spindle::print("  %s: unexpected %s on '%s'\n", spindle::this_thread::name(), spindle::to_string(s), first.name());
      return;
    }
    if (both_hold) {  // first attempt only: wait until the other holds its first lock
      (void)both_hold->arrive_and_wait();
      both_hold = nullptr;
    }
    Status s = style == Style::kForever ? second.lock_until(spindle::kForever) : second.lock_for(20ms);
    if (s == Status::kOk) {
      spindle::this_thread::sleep_for(1ms);  // the work needing both locks
      out.done.fetch_add(1);
      second.unlock();
      first.unlock();
      return;
    }
    first.unlock();  // back off: let the other thread through
    if (s == Status::kDeadlock) out.deadlocks.fetch_add(1);
    if (s == Status::kTimedOut) out.timeouts.fetch_add(1);
    spindle::print("  %s: '%s' -> %s; released '%s', retrying\n", spindle::this_thread::name(), second.name(),
                   spindle::to_string(s), first.name());
    spindle::this_thread::sleep_for(backoff);
  }
}

// Runs "left" (a then b) and "right" (first_right then second_right).
bool run(spindle::Mutex& a, spindle::Mutex& b, spindle::Mutex& first_right, spindle::Mutex& second_right,
         bool force_collision, Style style, Outcome& out) {
  spindle::Latch both_hold(2, "both hold");
  spindle::Latch* latch = force_collision ? &both_hold : nullptr;
  spindle::ThreadOptions lo, ro;
  lo.name = "left";
  ro.name = "right";
  auto left = spindle::Thread::create(lo, [&] { transfer(a, b, latch, style, 1ms, out); });
  auto right = spindle::Thread::create(ro, [&] { transfer(first_right, second_right, latch, style, 3ms, out); });
  if (!left.ok() || !right.ok()) {
    spindle::print("cannot start threads\n");
    if (left.ok()) (void)left->detach();  // the app ends right after this
    if (right.ok()) (void)right->detach();
    return false;
  }
  bool finished = left->join_for(5s) == Status::kOk;
  finished = right->join_for(5s) == Status::kOk && finished;
  if (!finished) {
    spindle::print("FAIL: the threads are stuck (a real deadlock)\n");
    if (left->joinable()) (void)left->detach();
    if (right->joinable()) (void)right->detach();
  }
  return finished;
}

}  // namespace

int spindle_main(int, char**) {
  bool ok = true;
  spindle::print("part 1: ABBA with wait-for cycle detection\n");
  if (!spindle::kDeadlockDetection) {
    spindle::print("  skipped: this kernel was built without SPINDLE_DEADLOCK_DETECT\n");
  } else {
    (void)spindle::set_deadlock_detection(true);
    spindle::Mutex a("account A"), b("account B");
    Outcome out;
    std::uint64_t before = spindle::deadlocks_detected();
    std::uint64_t inversions_before = spindle::lock_order_reports();
    bool finished = run(a, b, b, a, true, Style::kForever, out);
    std::uint64_t found = spindle::deadlocks_detected() - before;
    std::uint64_t inversions = spindle::lock_order_reports() - inversions_before;
    spindle::print("  kDeadlock returned %d time(s), kernel counted %llu cycle(s), %d of 2 threads finished\n",
                   out.deadlocks.load(), static_cast<unsigned long long>(found), out.done.load());
    if (!finished) return 1;  // threads may still hold the locks: stop here
    if (out.deadlocks.load() != 1 || found != 1 || out.done.load() != 2) {
      spindle::print("FAIL: expected exactly one kDeadlock, one detected cycle, and both threads done\n");
      ok = false;
    }
    if (spindle::kLockdep) {  // the lock-order validator sees the ABBA pattern too
      spindle::print("  the lock-order validator reported %llu inversion(s)\n", static_cast<unsigned long long>(inversions));
      if (inversions == 0) ok = false;
    }
  }

  spindle::print("part 2: the cure by lock ordering (both take A, then B)\n");
  {
    spindle::Mutex a("account A"), b("account B");
    Outcome out;
    if (!run(a, b, a, b, false, Style::kForever, out)) return 1;
    spindle::print("  %d of 2 threads finished, %d kDeadlock\n", out.done.load(), out.deadlocks.load());
    if (out.done.load() != 2 || out.deadlocks.load() != 0) ok = false;
  }

  spindle::print("part 3: the cure by timeouts (ABBA, detection off, try_lock_for + back-off)\n");
  {
    (void)spindle::set_deadlock_detection(false);
    spindle::Mutex a("account A"), b("account B");
    Outcome out;
    std::uint64_t before = spindle::deadlocks_detected();
    bool finished = run(a, b, b, a, true, Style::kTimeout, out);
    (void)spindle::set_deadlock_detection(true);
    if (!finished) return 1;
    spindle::print("  %d of 2 threads finished after %d timeout(s), %d kDeadlock\n", out.done.load(),
                   out.timeouts.load(), out.deadlocks.load());
    if (out.done.load() != 2 || out.timeouts.load() < 1 || out.deadlocks.load() != 0 ||
        spindle::deadlocks_detected() != before) {
      spindle::print("FAIL: expected both threads done, at least one timeout, no kDeadlock\n");
      ok = false;
    }
  }
  if (ok) spindle::print("OK: deadlock detected and reported, and both cures work\n");
  else spindle::print("FAILED\n");
  return ok ? 0 : 1;
}
