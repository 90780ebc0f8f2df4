// Futex wait queues: a fixed hash of wait queues keyed by the word's
// address. Waiters of different words may share a bucket; wake filters by
// key. All under the kernel lock.
#include "kernel.h"
#include "spindle/futex.h"

namespace spindle {
namespace kernel {
namespace {

constexpr unsigned kBuckets = 256;

struct Bucket {
  WaitQueue prio{WaitQueue::Order::kPriority};
  WaitQueue fifo{WaitQueue::Order::kFifo};
};
Bucket g_buckets[kBuckets];

Bucket& bucket_of(const void* key) {
  auto a = reinterpret_cast<std::uintptr_t>(key);
  return g_buckets[(a >> 2 ^ a >> 10 ^ a >> 18) % kBuckets];
}

}  // namespace
}  // namespace kernel

using namespace kernel;

Status futex_wait(const std::atomic<std::uint32_t>* word, std::uint32_t expected, TimePoint deadline,
                  WaitOrder order) {
  if (!arch::irqs_enabled()) return Status::kInvalidState;
  LockGuard guard;
  if (word->load(std::memory_order_acquire) != expected) return Status::kWouldBlock;
  Tcb* self = this_cpu().current;
  self->futex_key = word;
  Bucket& b = bucket_of(word);
  Status s = (order == WaitOrder::kFifo ? b.fifo : b.prio).wait(deadline);
  self->futex_key = nullptr;
  return s;
}

unsigned futex_wake(const std::atomic<std::uint32_t>* word, unsigned n) {
  LockGuard guard;
  Bucket& b = bucket_of(word);
  unsigned woken = 0;
  // FIFO waiters of this word first, then priority ones: one word is only
  // ever waited on with one order by a well-formed object.
  for (WaitQueue* q : {&b.fifo, &b.prio}) {
    while (woken < n) {
      Tcb* t = q->first_with_key(word);
      if (!t) break;
      wake(t, Status::kOk);
      ++woken;
    }
  }
  return woken;
}

}  // namespace spindle
