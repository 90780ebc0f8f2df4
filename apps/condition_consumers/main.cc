// condition_consumers: a hand-built bounded buffer from a spindle::Mutex and
// two spindle::CondVars (the classic monitor pattern).
//
// Pattern: producers wait on `not_full` until there is room, consumers wait
// on `not_empty` until there is an item or the shop is closed; each side
// waits with a predicate (so spurious wake-ups and stolen items are
// harmless) and wakes the other side with notify_one. Shutdown: once all
// producers are done, main sets `closed` under the lock and calls
// notify_all, so every sleeping consumer wakes, drains what is left and
// exits.
//
// Checks (exit 1 if any fails): every item number was consumed exactly once
// (seen[] array; a broken lock or a lost notify shows up as a duplicate, a
// missing item or a hang cut short by a timeout), the buffer never held
// more than its capacity, and every consumer exited after the notify_all.
#include <atomic>
#include <mutex>

#include <spindle/spindle.h>

namespace {

using namespace std::chrono_literals;

constexpr int kProducers = 3;
constexpr int kConsumers = 4;
constexpr int kItemsPerProducer = 500;
constexpr int kItems = kProducers * kItemsPerProducer;
constexpr int kCapacity = 8;

spindle::Mutex g_lock("buffer");
spindle::CondVar g_not_full("not full");
spindle::CondVar g_not_empty("not empty");
int g_buffer[kCapacity];  // ring buffer, guarded by g_lock
int g_head = 0, g_count = 0;
bool g_closed = false;
int g_overfull = 0;

std::atomic<int> g_seen[kItems];
std::atomic<int> g_per_consumer[kConsumers];

void produce(int first) {
  for (int i = first; i < first + kItemsPerProducer; ++i) {
    std::unique_lock<spindle::Mutex> hold(g_lock);
    g_not_full.wait(hold, [] { return g_count < kCapacity; });
    g_buffer[(g_head + g_count) % kCapacity] = i;
    if (++g_count > kCapacity) ++g_overfull;
    g_not_empty.notify_one();
  }
}

void consume(int me) {
  for (;;) {
    int item;
    {
      std::unique_lock<spindle::Mutex> hold(g_lock);
      g_not_empty.wait(hold, [] { return g_count > 0 || g_closed; });
      if (g_count == 0) return;  // closed and drained
      item = g_buffer[g_head];
      g_head = (g_head + 1) % kCapacity;
      --g_count;
      g_not_full.notify_one();
    }
    if (item >= 0 && item < kItems) g_seen[item].fetch_add(1);
    g_per_consumer[me].fetch_add(1);
    spindle::this_thread::yield();  // "processing" the item lets others in
  }
}

}  // namespace

int spindle_main(int, char**) {
  spindle::print("condition_consumers: %d producers, %d consumers, %d numbered items, buffer of %d\n",
                 kProducers, kConsumers, kItems, kCapacity);
  spindle::Thread producers[kProducers], consumers[kConsumers];
  for (int i = 0; i < kConsumers; ++i) {
    spindle::ThreadOptions opts;
    opts.name = "consumer";
    auto t = spindle::Thread::create(opts, [i] { consume(i); });
    if (!t.ok()) return spindle::print("cannot start consumer: %s\n", spindle::to_string(t.status())), 1;
    consumers[i] = std::move(t).value();
  }
  for (int i = 0; i < kProducers; ++i) {
    spindle::ThreadOptions opts;
    opts.name = "producer";
    auto t = spindle::Thread::create(opts, [i] { produce(i * kItemsPerProducer); });
    if (!t.ok()) return spindle::print("cannot start producer: %s\n", spindle::to_string(t.status())), 1;
    producers[i] = std::move(t).value();
  }
  for (auto& t : producers) t.join();
  spindle::print("  producers done; closing the shop with notify_all\n");
  {
    std::lock_guard<spindle::Mutex> hold(g_lock);
    g_closed = true;
  }
  g_not_empty.notify_all();

  bool ok = true;
  for (int i = 0; i < kConsumers; ++i) {
    // A consumer that missed the notify_all would sleep forever: give up
    // after a while and report it rather than hang.
    if (consumers[i].join_for(5s) != spindle::Status::kOk) {
      spindle::print("FAIL: consumer %d did not exit after notify_all\n", i);
      consumers[i].detach();
      ok = false;
    }
  }
  int missing = 0, duplicated = 0;
  for (auto& s : g_seen) {
    if (s.load() == 0) ++missing;
    if (s.load() > 1) ++duplicated;
  }
  spindle::print("  items per consumer:");
  for (auto& c : g_per_consumer) spindle::print(" %d", c.load());
  spindle::print("\n  missing %d, consumed twice %d, buffer overfilled %d times\n", missing, duplicated, g_overfull);
  if (missing || duplicated || g_overfull) ok = false;
  if (ok) spindle::print("OK: all %d items consumed exactly once, clean shutdown\n", kItems);
  else spindle::print("FAILED\n");
  return ok ? 0 : 1;
}
