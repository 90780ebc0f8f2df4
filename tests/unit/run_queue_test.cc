// Unit tests of the per-CPU run queue (kernel/src/run_queue.{h,cc}).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <random>
#include <vector>

#include "run_queue.h"

namespace {

using spindle::CpuMask;
using spindle::kernel::kPriorityLevels;
using spindle::kernel::RunNode;
using spindle::kernel::RunQueue;

RunNode make(int priority, CpuMask affinity = CpuMask::all()) {
  RunNode n;
  n.priority = priority;
  n.affinity = affinity;
  return n;
}

// Pops everything, returning the nodes in order.
std::vector<RunNode*> drain(RunQueue& q) {
  std::vector<RunNode*> out;
  while (RunNode* n = q.pop()) out.push_back(n);
  return out;
}

}  // namespace

TEST_CASE("run queue: a new queue is empty", "[run_queue]") {
  RunQueue q;
  CHECK(q.empty());
  CHECK(q.size() == 0);
  CHECK(q.bitmap() == 0);
  CHECK(q.top_priority() == -1);
  CHECK(q.peek() == nullptr);
  CHECK(q.pop() == nullptr);
  CHECK(q.peek_for_cpu(0, 0) == nullptr);
  for (int p = 0; p < kPriorityLevels; ++p) CHECK_FALSE(q.has_level(p));
}

TEST_CASE("run queue: most urgent priority first", "[run_queue]") {
  RunNode n5 = make(5), n0 = make(0), n31 = make(31), n17 = make(17);
  RunQueue q;
  q.push_back(&n5);
  q.push_back(&n0);
  q.push_back(&n31);
  q.push_back(&n17);
  CHECK(q.size() == 4);
  CHECK_FALSE(q.empty());
  CHECK(q.top_priority() == 31);
  CHECK(q.bitmap() == ((1u << 0) | (1u << 5) | (1u << 17) | (1u << 31)));
  CHECK(q.peek() == &n31);
  CHECK(q.peek() == &n31);  // peek does not remove
  CHECK(q.size() == 4);
  CHECK(drain(q) == std::vector<RunNode*>{&n31, &n17, &n5, &n0});
  CHECK(q.empty());
  CHECK(q.size() == 0);
  CHECK(q.top_priority() == -1);
  CHECK(q.bitmap() == 0);
}

TEST_CASE("run queue: has_above(p) is top_priority() > p", "[run_queue]") {
  RunQueue q;
  for (int p = 0; p < kPriorityLevels; ++p) CHECK_FALSE(q.has_above(p));
  RunNode n0 = make(0), n5 = make(5), n31 = make(31);
  for (RunNode* n : {&n0, &n5, &n31}) {
    q.push_back(n);
    for (int p = 0; p < kPriorityLevels; ++p) {
      INFO("top " << q.top_priority() << ", p " << p);
      CHECK(q.has_above(p) == (q.top_priority() > p));
    }
  }
}

TEST_CASE("run queue: an attached mask has its bit exactly while something is queued", "[run_queue]") {
  std::uint64_t mask = 0x1;  // another queue's bit, left alone
  RunQueue q;
  q.attach(&mask, 1ull << 5);
  RunNode a = make(3), b = make(9), c = make(9), d = make(3);
  q.push_back(&a);
  CHECK(mask == (0x1 | 1ull << 5));
  q.push_front(&b);
  q.push_back(&c);
  CHECK(mask == (0x1 | 1ull << 5));
  q.remove(&b);
  CHECK(q.pop() == &c);
  CHECK(mask == (0x1 | 1ull << 5));
  CHECK(q.take_turn(&d) == &a);  // a level's turn: never empties the queue
  CHECK(mask == (0x1 | 1ull << 5));
  CHECK(q.pop() == &d);
  CHECK(q.empty());
  CHECK(mask == 0x1);
}

TEST_CASE("run queue: FIFO within a level", "[run_queue]") {
  RunNode a = make(9), b = make(9), c = make(9), low = make(3);
  RunQueue q;
  q.push_back(&low);
  q.push_back(&a);
  q.push_back(&b);
  q.push_back(&c);
  CHECK(drain(q) == std::vector<RunNode*>{&a, &b, &c, &low});
}

TEST_CASE("run queue: push_front goes ahead of its level only", "[run_queue]") {
  RunNode a = make(9), b = make(9), f = make(9), hi = make(12), lo = make(2);
  RunQueue q;
  q.push_back(&hi);
  q.push_back(&a);
  q.push_back(&b);
  q.push_back(&lo);
  q.push_front(&f);
  CHECK(q.size() == 5);
  CHECK(q.peek() == &hi);  // still behind the more urgent level
  CHECK(drain(q) == std::vector<RunNode*>{&hi, &f, &a, &b, &lo});

  // push_front onto an empty level sets its bit.
  RunNode x = make(20);
  q.push_front(&x);
  CHECK(q.has_level(20));
  CHECK(q.top_priority() == 20);
  CHECK(q.size() == 1);
  CHECK(q.pop() == &x);
  CHECK(q.empty());
}

TEST_CASE("run queue: take_turn swaps the yielder in behind its level", "[run_queue]") {
  RunNode a = make(9), b = make(9), me = make(9), hi = make(12), lo = make(2);
  RunQueue q;
  q.push_back(&lo);
  q.push_back(&a);
  q.push_back(&b);
  q.push_back(&hi);
  const std::uint32_t bits = q.bitmap();
  // Only its own level turns: the more urgent and less urgent levels stay.
  CHECK(q.take_turn(&me) == &a);
  CHECK(q.size() == 4);
  CHECK(q.bitmap() == bits);
  CHECK(q.take_turn(&a) == &b);  // a, yielding in turn, goes behind me
  CHECK(drain(q) == std::vector<RunNode*>{&hi, &me, &a, &lo});

  // The only node of a level: the level stays, now holding the yielder.
  RunNode x = make(20), y = make(20);
  q.push_back(&x);
  CHECK(q.take_turn(&y) == &x);
  CHECK(q.size() == 1);
  CHECK(q.top_priority() == 20);
  CHECK(q.pop() == &y);
  CHECK(q.empty());
}

TEST_CASE("run queue: remove keeps or clears the level bit", "[run_queue]") {
  RunNode a = make(7), b = make(7), c = make(7), only = make(4);
  RunQueue q;
  q.push_back(&a);
  q.push_back(&b);
  q.push_back(&c);
  q.push_back(&only);
  REQUIRE(q.bitmap() == ((1u << 7) | (1u << 4)));

  q.remove(&b);  // from the middle of a level: the level stays
  CHECK(q.size() == 3);
  CHECK(q.has_level(7));
  CHECK_FALSE(b.link.linked());

  q.remove(&only);  // the only node of a level: its bit clears
  CHECK(q.size() == 2);
  CHECK_FALSE(q.has_level(4));
  CHECK(q.bitmap() == (1u << 7));
  CHECK(q.top_priority() == 7);

  q.remove(&a);
  CHECK(q.peek() == &c);
  CHECK(q.has_level(7));
  q.remove(&c);  // last node overall
  CHECK(q.empty());
  CHECK(q.size() == 0);
  CHECK(q.bitmap() == 0);
  CHECK(q.top_priority() == -1);
  CHECK(q.peek() == nullptr);
}

TEST_CASE("run queue: remove of the most urgent level falls back to the next", "[run_queue]") {
  RunNode hi = make(30), mid = make(15), lo = make(1);
  RunQueue q;
  q.push_back(&lo);
  q.push_back(&hi);
  q.push_back(&mid);
  q.remove(&hi);
  CHECK(q.top_priority() == 15);
  CHECK(q.peek() == &mid);
  CHECK(q.pop() == &mid);
  CHECK(q.top_priority() == 1);
  CHECK(q.has_level(1));
  CHECK_FALSE(q.has_level(15));
  CHECK_FALSE(q.has_level(30));
}

TEST_CASE("run queue: boundary priorities 0 and 31", "[run_queue]") {
  RunNode z = make(0), t = make(31);
  RunQueue q;
  q.push_back(&z);
  CHECK(q.top_priority() == 0);
  CHECK(q.has_level(0));
  CHECK(q.bitmap() == 1u);
  CHECK_FALSE(q.empty());  // priority 0 is a real level, not "empty"
  q.push_back(&t);
  CHECK(q.top_priority() == 31);
  CHECK(q.bitmap() == 0x80000001u);
  CHECK(q.pop() == &t);
  CHECK(q.pop() == &z);
  CHECK(q.empty());
}

TEST_CASE("run queue: a popped node can be queued again, at a new priority", "[run_queue]") {
  RunNode a = make(3), b = make(5);
  RunQueue q;
  q.push_back(&a);
  q.push_back(&b);
  RunNode* n = q.pop();
  REQUIRE(n == &b);
  CHECK_FALSE(b.link.linked());
  b.priority = 1;  // priority changes only while not queued
  q.push_back(&b);
  CHECK(q.bitmap() == ((1u << 3) | (1u << 1)));
  CHECK(drain(q) == std::vector<RunNode*>{&a, &b});
}

TEST_CASE("run queue: peek_for_cpu skips nodes whose affinity excludes the cpu", "[run_queue]") {
  RunNode only1 = make(20, CpuMask::only(1));
  RunNode only0 = make(20, CpuMask::only(0));
  RunNode both = make(20, CpuMask(0b11));
  RunNode low_any = make(5);
  RunNode none = make(25, CpuMask());  // runs nowhere
  RunNode hi63 = make(28, CpuMask::only(63));
  RunQueue q;
  q.push_back(&only1);
  q.push_back(&only0);
  q.push_back(&both);
  q.push_back(&low_any);
  q.push_back(&none);
  q.push_back(&hi63);

  CHECK(q.peek_for_cpu(1, 0) == &only1);
  CHECK(q.peek_for_cpu(0, 0) == &only0);  // skips only1 within level 20
  CHECK(q.peek_for_cpu(2, 0) == &low_any);  // skips all of levels 28, 25, 20
  CHECK(q.peek_for_cpu(63, 0) == &hi63);
  CHECK(q.peek_for_cpu(64, 0) == nullptr);   // not a CPU: no mask contains it
  CHECK(q.peek_for_cpu(1000, 0) == nullptr);

  // peek_for_cpu does not modify the queue.
  CHECK(q.size() == 6);
  CHECK(q.peek() == &hi63);

  q.remove(&only0);
  CHECK(q.peek_for_cpu(0, 0) == &both);
  q.remove(&both);
  CHECK(q.peek_for_cpu(0, 0) == &low_any);
  q.remove(&low_any);
  CHECK(q.peek_for_cpu(0, 0) == nullptr);  // only nodes that exclude cpu 0 remain
  CHECK(q.peek_for_cpu(1, 0) == &only1);
}

TEST_CASE("run queue: peek_for_cpu respects min_priority", "[run_queue]") {
  RunNode p10 = make(10), p4 = make(4), p12_cpu3 = make(12, CpuMask::only(3));
  RunQueue q;
  q.push_back(&p10);
  q.push_back(&p4);
  q.push_back(&p12_cpu3);

  CHECK(q.peek_for_cpu(0, 0) == &p10);
  CHECK(q.peek_for_cpu(0, 10) == &p10);  // min_priority is inclusive
  CHECK(q.peek_for_cpu(0, 11) == nullptr);
  CHECK(q.peek_for_cpu(3, 12) == &p12_cpu3);
  CHECK(q.peek_for_cpu(3, 13) == nullptr);
  CHECK(q.peek_for_cpu(0, 32) == nullptr);
  CHECK(q.peek_for_cpu(0, -1) == &p10);

  q.remove(&p10);
  CHECK(q.peek_for_cpu(0, 4) == &p4);
  CHECK(q.peek_for_cpu(0, 5) == nullptr);  // p4 is below the bar
  CHECK(q.peek_for_cpu(3, 5) == &p12_cpu3);
}

TEST_CASE("run queue: randomized against a reference model", "[run_queue][random]") {
  constexpr int kNodes = 256;
  constexpr int kOps = 100000;
  constexpr unsigned kCpus = 8;
  std::mt19937 rng(0x5EED1234u);
  auto rand_int = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };

  std::vector<RunNode> nodes(kNodes);
  std::vector<bool> queued(kNodes, false);
  auto id = [&](const RunNode* n) { return static_cast<int>(n - nodes.data()); };

  RunQueue q;
  std::uint64_t mask = 1ull << 60;  // another queue's bit, left alone
  q.attach(&mask, 1ull << 2);
  std::vector<std::deque<int>> model(kPriorityLevels);
  unsigned model_size = 0;

  auto model_top = [&]() {
    for (int p = kPriorityLevels - 1; p >= 0; --p)
      if (!model[p].empty()) return p;
    return -1;
  };
  auto model_peek_for_cpu = [&](unsigned cpu, int min_priority) -> int {
    for (int p = kPriorityLevels - 1; p >= 0 && p >= min_priority; --p)
      for (int i : model[p])
        if (nodes[i].affinity.has(cpu)) return i;
    return -1;
  };
  auto model_remove = [&](int i) {
    auto& lvl = model[nodes[i].priority];
    lvl.erase(std::find(lvl.begin(), lvl.end(), i));
    --model_size;
  };
  auto pick = [&](bool want_queued) {
    // A random node whose queued state is want_queued, or -1.
    int start = rand_int(0, kNodes - 1);
    for (int k = 0; k < kNodes; ++k) {
      int i = (start + k) % kNodes;
      if (queued[i] == want_queued) return i;
    }
    return -1;
  };

  std::uint64_t mismatches = 0;
  for (int op = 0; op < kOps; ++op) {
    int r = rand_int(0, 99);
    if (r < 30) {  // push_back
      int i = pick(false);
      if (i >= 0) {
        nodes[i].priority = rand_int(0, kPriorityLevels - 1);
        // Mostly all CPUs; sometimes a random subset (possibly empty).
        nodes[i].affinity = rand_int(0, 2) ? CpuMask::all() : CpuMask(rng() & ((1u << kCpus) - 1));
        q.push_back(&nodes[i]);
        model[nodes[i].priority].push_back(i);
        queued[i] = true;
        ++model_size;
      }
    } else if (r < 45) {  // push_front
      int i = pick(false);
      if (i >= 0) {
        nodes[i].priority = rand_int(0, kPriorityLevels - 1);
        nodes[i].affinity = rand_int(0, 2) ? CpuMask::all() : CpuMask(rng() & ((1u << kCpus) - 1));
        q.push_front(&nodes[i]);
        model[nodes[i].priority].push_front(i);
        queued[i] = true;
        ++model_size;
      }
    } else if (r < 65) {  // remove a random queued node
      int i = pick(true);
      if (i >= 0) {
        q.remove(&nodes[i]);
        model_remove(i);
        queued[i] = false;
      }
    } else if (r < 85) {  // pop
      int top = model_top();
      RunNode* n = q.pop();
      int expect = top < 0 ? -1 : model[top].front();
      if ((n ? id(n) : -1) != expect) ++mismatches;
      if (top >= 0) {
        model[top].pop_front();
        --model_size;
        queued[expect] = false;
      }
    } else {  // peek_for_cpu
      unsigned cpu = static_cast<unsigned>(rand_int(0, kCpus));  // kCpus itself: nobody's subset has it
      int min_priority = rand_int(-1, kPriorityLevels);
      RunNode* n = q.peek_for_cpu(cpu, min_priority);
      if ((n ? id(n) : -1) != model_peek_for_cpu(cpu, min_priority)) ++mismatches;
    }

    // Invariants after every operation.
    std::uint32_t bitmap = 0;
    for (int p = 0; p < kPriorityLevels; ++p)
      if (!model[p].empty()) bitmap |= 1u << p;
    int top = model_top();
    RunNode* peek = q.peek();
    if (q.bitmap() != bitmap || q.top_priority() != top || q.size() != model_size ||
        q.empty() != (model_size == 0) || (peek ? id(peek) : -1) != (top < 0 ? -1 : model[top].front()))
      ++mismatches;
    if (mask != (1ull << 60 | (model_size ? 1ull << 2 : 0))) ++mismatches;  // the occupancy mask
    if (op % 1024 == 0) {
      for (int p = 0; p < kPriorityLevels; ++p)
        if (q.has_level(p) != !model[p].empty()) ++mismatches;
    }
    if (mismatches) {
      FAIL("run queue diverged from the model at op " << op);
    }
  }

  // Drain: full order must match the model.
  std::vector<int> got, want;
  while (RunNode* n = q.pop()) got.push_back(id(n));
  for (int p = kPriorityLevels - 1; p >= 0; --p)
    for (int i : model[p]) want.push_back(i);
  CHECK(got == want);
  CHECK(q.empty());
  CHECK(q.bitmap() == 0);
}
