// producer_consumer: a bounded spindle::Queue<int> between producers and a
// pool of consumers, with Python queue.Queue-style task_done/join/close.
//
// Pattern: producers put() numbered items into a queue of capacity 4 (so
// they block whenever consumers fall behind: back-pressure); consumers
// get() an item, process it, and call task_done(). The main thread waits
// for the producers, then join()s the queue, which returns only once every
// item put has been marked done; then close() ends the queue and each
// consumer leaves when get() reports Status::kClosed.
//
// Checks (exit 1 if any fails):
//  - when join() returns, every item has been processed (none pending);
//  - every item was consumed exactly once and the sum of the items matches;
//  - the queue never held more than its capacity;
//  - after close(), every consumer got kClosed and exited; a put fails
//    with kClosed.
#include <atomic>

#include <spindle/spindle.h>

namespace {

using namespace std::chrono_literals;

constexpr int kProducers = 3;
constexpr int kConsumers = 3;
constexpr int kItemsPerProducer = 400;
constexpr int kItems = kProducers * kItemsPerProducer;
constexpr std::size_t kCapacity = 4;

std::atomic<int> g_seen[kItems];
std::atomic<long> g_sum{0};
std::atomic<int> g_processed{0}, g_put_errors{0}, g_oversize{0}, g_closed_exits{0};

using JobQueue = spindle::Queue<int>;

int produce(JobQueue& queue, int first) {
  for (int i = first; i < first + kItemsPerProducer; ++i) {
    if (queue.put(i) != spindle::Status::kOk) g_put_errors.fetch_add(1);
    if (queue.size() > kCapacity) g_oversize.fetch_add(1);
  }
  return 0;
}

int consume(JobQueue& queue) {
  for (;;) {
    spindle::Result<int> item = queue.get();
    if (item.status() == spindle::Status::kClosed) {
      g_closed_exits.fetch_add(1);
      return 0;
    }
    if (!item.ok()) return 1;
    int v = *item;
    if (v % 7 == 0) spindle::this_thread::sleep_for(100us);  // some items are slow
    if (v >= 0 && v < kItems) g_seen[v].fetch_add(1);
    g_sum.fetch_add(v);
    g_processed.fetch_add(1);
    queue.task_done();  // after the work: join() waits for this
  }
}

}  // namespace

int spindle_main(int, char**) {
  spindle::print("producer_consumer: %d producers -> Queue<int>(capacity %zu) -> %d consumers, %d items\n",
                 kProducers, kCapacity, kConsumers, kItems);
  // Local, not global: the queue's destructor takes its lock, which needs a
  // Spindle thread (a global would be destroyed after the kernel stopped).
  JobQueue queue(kCapacity, "jobs");
  spindle::Thread producers[kProducers], consumers[kConsumers];
  for (int i = 0; i < kConsumers; ++i) {
    spindle::ThreadOptions opts;
    opts.name = "consumer";
    auto t = spindle::Thread::create(opts, [&queue] { return consume(queue); });
    if (!t.ok()) return spindle::print("cannot start consumer: %s\n", spindle::to_string(t.status())), 1;
    consumers[i] = std::move(t).value();
  }
  for (int i = 0; i < kProducers; ++i) {
    spindle::ThreadOptions opts;
    opts.name = "producer";
    auto t = spindle::Thread::create(opts, [&queue, i] { return produce(queue, i * kItemsPerProducer); });
    if (!t.ok()) return spindle::print("cannot start producer: %s\n", spindle::to_string(t.status())), 1;
    producers[i] = std::move(t).value();
  }
  for (auto& t : producers) t.join();
  spindle::print("  producers done; join() waits until every item is task_done...\n");
  bool ok = true;
  if (queue.join_for(10s) != spindle::Status::kOk) {
    spindle::print("FAIL: join() did not return: task_done accounting is off\n");
    ok = false;
  }
  int processed_at_join = g_processed.load();
  spindle::print("  join() returned with %d of %d items processed; close()\n", processed_at_join, kItems);
  if (processed_at_join != kItems) ok = false;
  queue.close();
  for (auto& t : consumers) {
    int code = -1;
    if (t.join_for(5s, &code) != spindle::Status::kOk) {
      spindle::print("FAIL: a consumer did not leave after close()\n");
      t.detach();
      ok = false;
    } else if (code != 0) {
      spindle::print("FAIL: a consumer got an unexpected status from get()\n");
      ok = false;
    }
  }
  spindle::Status late = queue.put(-1);
  spindle::print("  consumers left on kClosed: %d of %d; a put after close: %s\n", g_closed_exits.load(), kConsumers,
                 spindle::to_string(late));
  if (g_closed_exits.load() != kConsumers || late != spindle::Status::kClosed) ok = false;

  int missing = 0, duplicated = 0;
  for (auto& s : g_seen) {
    if (s.load() == 0) ++missing;
    if (s.load() > 1) ++duplicated;
  }
  long expected_sum = long{kItems} * (kItems - 1) / 2;
  spindle::print("  missing %d, consumed twice %d, sum %ld (expected %ld), put errors %d, oversize %d\n", missing,
                 duplicated, g_sum.load(), expected_sum, g_put_errors.load(), g_oversize.load());
  if (missing || duplicated || g_sum.load() != expected_sum || g_put_errors.load() || g_oversize.load()) ok = false;
  if (ok) spindle::print("OK: every item consumed exactly once; join() and close() behaved\n");
  else spindle::print("FAILED\n");
  return ok ? 0 : 1;
}
