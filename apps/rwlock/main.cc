// rwlock: spindle::RwLock lets many readers in at once but a writer only
// alone; its policy decides who goes first when both sides wait.
//
// Pattern, run once per policy (reader-preferring, writer-preferring,
// phase-fair):
//  1. overlap: 4 readers take the read lock and then wait on a Latch for
//     each other *while holding it*, so all 4 are inside together (this works
//     on one CPU too: a reader blocked in the latch lets the next one run);
//  2. mixed load: readers and writers loop; each holds the lock for a short
//     sleep. Writers update a pair (a, b) in two steps with a sleep between,
//     so a reader that got in during a write would see a != b, and a
//     reader checks that (a, b) did not change while it held the lock.
//
// Checks per policy (exit 1 if any fails): all 4 readers were inside at
// once in step 1 (a read lock that excluded readers would time the latch
// out); in step 2 every writer found no reader and no other writer inside
// (atomics counted on entry), no reader saw a half-done write, and every
// write happened (a == b == total writes at the end).
#include <atomic>

#include <spindle/spindle.h>

namespace {

using namespace std::chrono_literals;

constexpr int kReaders = 4;
constexpr int kWriters = 2;
constexpr int kReadsPerReader = 15;
constexpr int kWritesPerWriter = 8;

struct Result {
  int overlap_max = 0;  // step 1
  int mixed_max = 0;    // step 2
  int writer_not_alone = 0;
  int torn_reads = 0;
  int latch_timeouts = 0;
  long writes = 0;
};

void note_max(std::atomic<int>& max, int v) {
  int seen = max.load();
  while (v > seen && !max.compare_exchange_weak(seen, v)) {
  }
}

bool start_all(spindle::Thread* threads, int n, const char* name, auto fn) {
  for (int i = 0; i < n; ++i) {
    spindle::ThreadOptions opts;
    opts.name = name;
    auto t = spindle::Thread::create(opts, [fn, i] { fn(i); });
    if (!t.ok()) return spindle::print("cannot start %s: %s\n", name, spindle::to_string(t.status())), false;
    threads[i] = std::move(t).value();
  }
  return true;
}

bool run_policy(spindle::RwPolicy policy, Result& r) {
  spindle::RwLock rw("table", policy);
  std::atomic<int> readers_in{0}, writers_in{0}, max_readers{0};
  std::atomic<int> not_alone{0}, torn{0}, latch_timeouts{0};
  long a = 0, b = 0;  // guarded by rw

  // Step 1: every reader waits for all the others inside the read lock.
  spindle::Latch all_inside(kReaders, "all readers inside");
  spindle::Thread readers[kReaders], writers[kWriters];
  if (!start_all(readers, kReaders, "reader", [&](int) {
        rw.lock_shared();
        note_max(max_readers, readers_in.fetch_add(1) + 1);
        all_inside.count_down();
        if (all_inside.wait_for(2s) != spindle::Status::kOk) latch_timeouts.fetch_add(1);
        readers_in.fetch_sub(1);
        rw.unlock_shared();
      }))
    return false;
  for (auto& t : readers) t.join();
  r.overlap_max = max_readers.exchange(0);
  r.latch_timeouts = latch_timeouts.load();

  // Step 2: readers and writers compete.
  if (!start_all(writers, kWriters, "writer", [&](int) {
        for (int n = 0; n < kWritesPerWriter; ++n) {
          rw.lock();
          if (writers_in.fetch_add(1) != 0 || readers_in.load() != 0) not_alone.fetch_add(1);
          ++a;
          spindle::this_thread::sleep_for(300us);  // a half-done write
          ++b;
          writers_in.fetch_sub(1);
          rw.unlock();
          spindle::this_thread::sleep_for(200us);
        }
      }))
    return false;
  if (!start_all(readers, kReaders, "reader", [&](int) {
        for (int n = 0; n < kReadsPerReader; ++n) {
          rw.lock_shared();
          note_max(max_readers, readers_in.fetch_add(1) + 1);
          if (writers_in.load() != 0) not_alone.fetch_add(1);
          long seen_a = a, seen_b = b;
          spindle::this_thread::sleep_for(500us);  // nobody may write meanwhile
          if (seen_a != seen_b || a != seen_a || b != seen_b) torn.fetch_add(1);
          readers_in.fetch_sub(1);
          rw.unlock_shared();
          spindle::this_thread::yield();
        }
      }))
    return false;
  for (auto& t : writers) t.join();
  for (auto& t : readers) t.join();
  r.mixed_max = max_readers.load();
  r.writer_not_alone = not_alone.load();
  r.torn_reads = torn.load();
  r.writes = a == b ? a : -1;
  return true;
}

}  // namespace

int spindle_main(int, char**) {
  spindle::print("rwlock: %d readers and %d writers on one RwLock, for each policy\n", kReaders, kWriters);
  bool ok = true;
  const long expected_writes = long{kWriters} * kWritesPerWriter;
  for (auto policy : {spindle::RwPolicy::kReaderPreferring, spindle::RwPolicy::kWriterPreferring,
                      spindle::RwPolicy::kPhaseFair}) {
    Result r;
    if (!run_policy(policy, r)) return 1;
    bool good = r.overlap_max == kReaders && r.latch_timeouts == 0 && r.writer_not_alone == 0 && r.torn_reads == 0 &&
                r.writes == expected_writes;
    spindle::print("  %-17s: readers inside together %d of %d; under load max %d readers at once;\n",
                   spindle::to_string(policy), r.overlap_max, kReaders, r.mixed_max);
    spindle::print("  %-17s  writers exclusive: %s (%d violations), torn reads %d, writes %ld of %ld -> %s\n", "",
                   r.writer_not_alone == 0 ? "yes" : "NO", r.writer_not_alone, r.torn_reads, r.writes,
                   expected_writes, good ? "ok" : "WRONG");
    ok = ok && good;
  }
  if (ok) spindle::print("OK: readers shared the lock, writers always had it alone, under every policy\n");
  else spindle::print("FAILED\n");
  return ok ? 0 : 1;
}
