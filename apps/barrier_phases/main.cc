// barrier_phases: workers step through phases together with a reusable
// spindle::Barrier whose completion step runs once per phase.
//
// Pattern: each of N workers does some phase-1 work (of different lengths),
// then arrive_and_wait(); the last one to arrive runs the completion step
// (here: print "phase k complete") before anybody is released into the next
// phase. After phase 2, worker 0 leaves with arrive_and_drop(): it counts
// for phase 2 but the barrier expects only N-1 workers from phase 3 on.
//
// Checks (exit 1 if any fails):
//  - a worker entering phase k+1 finds all participants' phase-k work done
//    (a per-phase atomic counter must equal the participant count);
//  - the completion step ran once per phase, after every arrival, before
//    any release (it sees the counter complete and no one in the next phase);
//  - after the drop, phase 3 completes with N-1 workers (a timed wait
//    catches a barrier still waiting for the dropped worker);
//  - generation() counts the 3 phases.
#include <atomic>

#include <spindle/spindle.h>

namespace {

using namespace std::chrono_literals;

constexpr int kWorkers = 4;
constexpr int kPhases = 3;

std::atomic<int> g_finished[kPhases + 1];  // workers done with phase k (1-based)
std::atomic<int> g_entered[kPhases + 1];   // workers that started phase k
std::atomic<int> g_completions{0};
std::atomic<int> g_early{0}, g_bad_completion{0}, g_timeouts{0};

int participants(int phase) { return phase <= 2 ? kWorkers : kWorkers - 1; }

// Runs in the last arriving thread, before the phase's waiters go on.
auto completion = [] {
  int phase = g_completions.fetch_add(1) + 1;
  bool all_done = g_finished[phase].load() == participants(phase);
  bool none_ahead = phase == kPhases || g_entered[phase + 1].load() == 0;
  if (!all_done || !none_ahead) g_bad_completion.fetch_add(1);
  spindle::print("  -- phase %d complete (%d workers arrived)%s\n", phase, g_finished[phase].load(),
                 phase == 2 ? "; worker 0 has dropped out" : "");
};
spindle::Barrier g_barrier(kWorkers, completion, "phases");

void enter(int phase) {
  g_entered[phase].fetch_add(1);
  if (phase > 1 && g_finished[phase - 1].load() != participants(phase - 1)) g_early.fetch_add(1);
}

void work(int worker, int phase) {
  spindle::this_thread::sleep_for(std::chrono::milliseconds(1 + 3 * worker + phase));
  g_finished[phase].fetch_add(1);
}

void run(int worker) {
  for (int phase = 1; phase <= kPhases; ++phase) {
    enter(phase);
    work(worker, phase);
    if (worker == 0 && phase == 2) {
      spindle::print("  worker 0 finished phase 2 and leaves (arrive_and_drop)\n");
      g_barrier.arrive_and_drop();
      return;
    }
    if (g_barrier.arrive_and_wait_for(2s) != spindle::Status::kOk) {
      g_timeouts.fetch_add(1);
      return;
    }
  }
}

}  // namespace

int spindle_main(int, char**) {
  spindle::print("barrier_phases: %d workers, %d phases, one Barrier with a completion step\n", kWorkers, kPhases);
  spindle::Thread workers[kWorkers];
  for (int i = 0; i < kWorkers; ++i) {
    spindle::ThreadOptions opts;
    opts.name = "worker";
    auto t = spindle::Thread::create(opts, [i] { run(i); });
    if (!t.ok()) return spindle::print("cannot start worker: %s\n", spindle::to_string(t.status())), 1;
    workers[i] = std::move(t).value();
  }
  for (auto& t : workers) t.join();

  bool ok = true;
  if (g_early.load()) {
    spindle::print("FAIL: %d times a worker started a phase before the previous one was done\n", g_early.load());
    ok = false;
  }
  if (g_bad_completion.load()) {
    spindle::print("FAIL: the completion step ran too early or too late %d times\n", g_bad_completion.load());
    ok = false;
  }
  if (g_timeouts.load()) {
    spindle::print("FAIL: %d workers timed out at the barrier (the drop was not honoured?)\n", g_timeouts.load());
    ok = false;
  }
  for (int p = 1; p <= kPhases; ++p) {
    if (g_finished[p].load() != participants(p)) {
      spindle::print("FAIL: phase %d finished by %d workers, expected %d\n", p, g_finished[p].load(), participants(p));
      ok = false;
    }
  }
  if (g_completions.load() != kPhases || g_barrier.generation() != kPhases) {
    spindle::print("FAIL: %d completion steps, generation %u; expected %d\n", g_completions.load(),
                   g_barrier.generation(), kPhases);
    ok = false;
  }
  if (ok) spindle::print("OK: nobody entered a phase early; %d phases, drop honoured\n", kPhases);
  else spindle::print("FAILED\n");
  return ok ? 0 : 1;
}
