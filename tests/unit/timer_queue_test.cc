// Unit tests of the per-CPU timer queue (kernel/src/timer_queue.{h,cc}).
#include <catch2/catch.hpp>

#include <pthread.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "timer_queue.h"

namespace {

using spindle::kernel::TimerNode;
using spindle::kernel::TimerQueue;

std::vector<TimerNode*> drain(TimerQueue& q) {
  std::vector<TimerNode*> out;
  while (TimerNode* n = q.pop()) out.push_back(n);
  return out;
}

// Runs f on a thread whose stack is only `stack_bytes` big, so that code
// whose stack use grows with the heap's depth or width crashes instead of
// silently passing on the default 8 MiB main stack.
template <typename F>
void run_on_small_stack(std::size_t stack_bytes, F f) {
  pthread_attr_t attr;
  REQUIRE(pthread_attr_init(&attr) == 0);
  REQUIRE(pthread_attr_setstacksize(&attr, stack_bytes) == 0);
  pthread_t t;
  auto tramp = [](void* arg) -> void* {
    (*static_cast<F*>(arg))();
    return nullptr;
  };
  REQUIRE(pthread_create(&t, &attr, tramp, &f) == 0);
  REQUIRE(pthread_join(t, nullptr) == 0);
  pthread_attr_destroy(&attr);
}

}  // namespace

TEST_CASE("timer queue: a new queue is empty", "[timer_queue]") {
  TimerQueue q;
  CHECK(q.empty());
  CHECK(q.size() == 0);
  CHECK(q.top() == nullptr);
  CHECK(q.next_deadline() == UINT64_MAX);
  CHECK(q.pop() == nullptr);
  CHECK(q.pop_expired(0) == nullptr);
  CHECK(q.pop_expired(UINT64_MAX) == nullptr);
}

TEST_CASE("timer queue: pops in deadline order", "[timer_queue]") {
  TimerNode n[6];
  const std::uint64_t d[6] = {500, 20, 1000000, 7, 300, 21};
  TimerQueue q;
  for (int i = 0; i < 6; ++i) q.insert(&n[i], d[i]);
  CHECK(q.size() == 6);
  CHECK_FALSE(q.empty());
  CHECK(q.top() == &n[3]);
  CHECK(q.next_deadline() == 7);
  CHECK(n[0].queued);
  CHECK(n[0].deadline == 500);
  CHECK(drain(q) == std::vector<TimerNode*>{&n[3], &n[1], &n[5], &n[4], &n[0], &n[2]});
  CHECK(q.empty());
  CHECK(q.size() == 0);
  CHECK(q.next_deadline() == UINT64_MAX);
  for (auto& x : n) CHECK_FALSE(x.queued);
}

TEST_CASE("timer queue: equal deadlines expire in insertion order", "[timer_queue]") {
  TimerNode n[8];
  TimerQueue q;
  // Interleave two deadlines so ties are melded in different shapes.
  for (int i = 0; i < 8; ++i) q.insert(&n[i], i % 2 ? 100 : 50);
  CHECK(drain(q) == std::vector<TimerNode*>{&n[0], &n[2], &n[4], &n[6], &n[1], &n[3], &n[5], &n[7]});

  // The tie-break is by insertion, not by node address: insert in reverse.
  TimerNode m[5];
  for (int i = 4; i >= 0; --i) q.insert(&m[i], 9);
  CHECK(drain(q) == std::vector<TimerNode*>{&m[4], &m[3], &m[2], &m[1], &m[0]});

  // A node re-inserted with the same deadline goes behind the others.
  TimerNode a, b, c;
  q.insert(&a, 42);
  q.insert(&b, 42);
  q.insert(&c, 42);
  q.remove(&a);
  q.insert(&a, 42);
  CHECK(drain(q) == std::vector<TimerNode*>{&b, &c, &a});
}

TEST_CASE("timer queue: pop_expired boundary", "[timer_queue]") {
  TimerNode a, b, c;
  TimerQueue q;
  q.insert(&a, 1000);
  q.insert(&b, 1000);
  q.insert(&c, 1001);

  CHECK(q.pop_expired(0) == nullptr);
  CHECK(q.pop_expired(999) == nullptr);  // deadline - 1: not yet
  CHECK(q.size() == 3);
  CHECK(a.queued);
  CHECK(q.pop_expired(1000) == &a);  // deadline == now: expired
  CHECK_FALSE(a.queued);
  CHECK(q.pop_expired(1000) == &b);
  CHECK(q.pop_expired(1000) == nullptr);  // c is 1001
  CHECK(q.size() == 1);
  CHECK(q.next_deadline() == 1001);
  CHECK(q.pop_expired(UINT64_MAX) == &c);
  CHECK(q.pop_expired(UINT64_MAX) == nullptr);
  CHECK(q.empty());
}

TEST_CASE("timer queue: extreme deadlines", "[timer_queue]") {
  TimerNode zero, max, mid;
  TimerQueue q;
  q.insert(&max, UINT64_MAX);
  q.insert(&mid, 1ull << 63);
  q.insert(&zero, 0);
  CHECK(q.pop_expired(0) == &zero);
  CHECK(q.next_deadline() == (1ull << 63));
  CHECK(q.pop_expired(UINT64_MAX - 1) == &mid);
  CHECK(q.pop_expired(UINT64_MAX - 1) == nullptr);
  // A node with deadline UINT64_MAX is still a queued node.
  CHECK_FALSE(q.empty());
  CHECK(q.next_deadline() == UINT64_MAX);
  CHECK(q.top() == &max);
  CHECK(q.pop_expired(UINT64_MAX) == &max);
  CHECK(q.empty());
}

TEST_CASE("timer queue: remove root, leaf, interior", "[timer_queue]") {
  // Build a heap with a known shape: insert in increasing order so every
  // node becomes a child of the root, then pop once to pair them up into a
  // multi-level tree.
  constexpr int N = 9;
  TimerNode n[N];
  TimerQueue q;
  for (int i = 0; i < N; ++i) q.insert(&n[i], 10 * (i + 1));  // 10..90
  REQUIRE(q.pop() == &n[0]);
  // Now n[1] is root; at least some nodes are interior (have children) and
  // some are leaves.
  REQUIRE(q.top() == &n[1]);

  TimerNode* interior = nullptr;
  TimerNode* leaf = nullptr;
  for (int i = 2; i < N; ++i) {
    if (n[i].child && !interior) interior = &n[i];
    if (!n[i].child && !leaf) leaf = &n[i];
  }
  REQUIRE(interior != nullptr);
  REQUIRE(leaf != nullptr);
  REQUIRE(interior != q.top());

  std::set<TimerNode*> remaining;
  for (int i = 1; i < N; ++i) remaining.insert(&n[i]);

  SECTION("root") {
    q.remove(&n[1]);
    remaining.erase(&n[1]);
    CHECK_FALSE(n[1].queued);
    CHECK(q.top() == &n[2]);
  }
  SECTION("leaf") {
    q.remove(leaf);
    remaining.erase(leaf);
    CHECK_FALSE(leaf->queued);
    CHECK(leaf->child == nullptr);
    CHECK(leaf->sibling == nullptr);
    CHECK(leaf->prev == nullptr);
  }
  SECTION("interior") {
    q.remove(interior);
    remaining.erase(interior);
    CHECK_FALSE(interior->queued);
    // Its former children must still be in the heap, not lost with it.
    CHECK(interior->child == nullptr);
    CHECK(interior->sibling == nullptr);
    CHECK(interior->prev == nullptr);
  }
  SECTION("every node, last inserted first") {
    for (int i = N - 1; i >= 2; --i) {
      q.remove(&n[i]);
      remaining.erase(&n[i]);
      CHECK(q.size() == remaining.size());
      CHECK(q.top() == &n[1]);
    }
  }

  CHECK(q.size() == remaining.size());
  std::vector<TimerNode*> want(remaining.begin(), remaining.end());
  std::sort(want.begin(), want.end(), [](TimerNode* a, TimerNode* b) { return a->deadline < b->deadline; });
  CHECK(drain(q) == want);
}

TEST_CASE("timer queue: remove the only node and the last child", "[timer_queue]") {
  TimerNode a, b, c;
  TimerQueue q;
  q.insert(&a, 5);
  q.remove(&a);
  CHECK(q.empty());
  CHECK(q.size() == 0);
  CHECK(q.next_deadline() == UINT64_MAX);
  CHECK_FALSE(a.queued);

  // Children of a root are kept most-recent-first; b is the last of the
  // sibling list (prev is a sibling, not the parent).
  q.insert(&a, 1);
  q.insert(&b, 2);
  q.insert(&c, 3);
  REQUIRE(a.child == &c);
  REQUIRE(c.sibling == &b);
  q.remove(&b);
  CHECK(c.sibling == nullptr);
  CHECK(drain(q) == std::vector<TimerNode*>{&a, &c});

  // And the first child (prev is the parent).
  q.insert(&a, 1);
  q.insert(&b, 2);
  q.insert(&c, 3);
  q.remove(&c);
  CHECK(a.child == &b);
  CHECK(b.prev == &a);
  CHECK(drain(q) == std::vector<TimerNode*>{&a, &b});
}

TEST_CASE("timer queue: a removed node can be inserted again", "[timer_queue]") {
  TimerNode a, b;
  TimerQueue q;
  q.insert(&a, 10);
  q.insert(&b, 20);
  q.remove(&a);
  q.insert(&a, 30);
  CHECK(a.queued);
  CHECK(q.top() == &b);
  CHECK(drain(q) == std::vector<TimerNode*>{&b, &a});
}

TEST_CASE("timer queue: randomized against a reference set", "[timer_queue][random]") {
  constexpr int kNodes = 2048;
  constexpr int kOps = 200000;
  std::mt19937_64 rng(0xC0FFEE42ull);
  auto rand_u = [&](std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
  };

  std::vector<TimerNode> nodes(kNodes);
  std::vector<std::uint64_t> my_seq(kNodes);
  auto id = [&](const TimerNode* n) { return static_cast<int>(n - nodes.data()); };
  // Reference: (deadline, insertion order, node index). Insertion order is
  // our own counter, independent of the seq the queue assigns.
  using Key = std::tuple<std::uint64_t, std::uint64_t, int>;
  std::set<Key> ref;
  std::vector<int> queued_list;          // indices of queued nodes
  std::vector<int> pos(kNodes, -1);      // index into queued_list, -1 if not queued
  std::uint64_t seq = 0;
  std::uint64_t now = 0;

  auto mark_unqueued = [&](int i) {
    int p = pos[i];
    int last = queued_list.back();
    queued_list[p] = last;
    pos[last] = p;
    queued_list.pop_back();
    pos[i] = -1;
  };

  TimerQueue q;
  for (int op = 0; op < kOps; ++op) {
    // Bias towards growth in the first half and shrinkage in the second, so
    // the heap gets both big and empty.
    std::uint64_t r = rand_u(0, 99);
    bool grow = op < kOps / 2 ? r < 55 : r < 40;
    std::string what;
    if (grow && queued_list.size() < static_cast<std::size_t>(kNodes)) {
      int i;
      do i = static_cast<int>(rand_u(0, kNodes - 1));
      while (pos[i] >= 0);
      // Small deadline range relative to the number of nodes: many ties.
      std::uint64_t d = now + rand_u(0, 500);
      q.insert(&nodes[i], d);
      ref.insert({d, seq, i});
      my_seq[i] = seq++;
      pos[i] = static_cast<int>(queued_list.size());
      queued_list.push_back(i);
      what = "insert";
    } else {
      std::uint64_t k = rand_u(0, 2);
      if (k == 0 && !queued_list.empty()) {  // remove a random queued node
        int i = queued_list[rand_u(0, queued_list.size() - 1)];
        q.remove(&nodes[i]);
        ref.erase({nodes[i].deadline, my_seq[i], i});
        mark_unqueued(i);
        if (nodes[i].queued) FAIL("removed node still marked queued at op " << op);
        what = "remove";
      } else if (k == 1) {  // pop
        TimerNode* n = q.pop();
        int expect = ref.empty() ? -1 : std::get<2>(*ref.begin());
        if ((n ? id(n) : -1) != expect) FAIL("pop returned " << (n ? id(n) : -1) << ", want " << expect << " at op " << op);
        if (n) {
          ref.erase(ref.begin());
          mark_unqueued(expect);
          now = n->deadline;
        }
        what = "pop";
      } else {  // pop_expired with a random now
        std::uint64_t t = now + rand_u(0, 100);
        TimerNode* n = q.pop_expired(t);
        int expect = (!ref.empty() && std::get<0>(*ref.begin()) <= t) ? std::get<2>(*ref.begin()) : -1;
        if ((n ? id(n) : -1) != expect)
          FAIL("pop_expired(" << t << ") returned " << (n ? id(n) : -1) << ", want " << expect << " at op " << op);
        if (n) {
          ref.erase(ref.begin());
          mark_unqueued(expect);
        }
        what = "pop_expired";
      }
    }
    // Invariants after every operation.
    std::uint64_t want_deadline = ref.empty() ? UINT64_MAX : std::get<0>(*ref.begin());
    int want_top = ref.empty() ? -1 : std::get<2>(*ref.begin());
    if (q.size() != ref.size() || q.empty() != ref.empty() || q.next_deadline() != want_deadline ||
        (q.top() ? id(q.top()) : -1) != want_top)
      FAIL("queue diverged from the reference after " << what << " at op " << op << ": size " << q.size()
                                                      << " vs " << ref.size());
  }

  // Drain and compare the full order.
  std::vector<int> got, want;
  while (TimerNode* n = q.pop()) got.push_back(id(n));
  for (const Key& k : ref) want.push_back(std::get<2>(k));
  CHECK(got == want);
}

namespace {

// Inserts deadlines from `ds`, pops everything on a small stack, and returns
// whether the popped order is sorted by (deadline, insertion order).
struct DeepResult {
  std::size_t popped = 0;
  bool ordered = true;
  bool all_unqueued = true;
  std::size_t size_after = 1;
};

DeepResult deep_run(const std::vector<std::uint64_t>& ds, bool remove_some) {
  DeepResult res;
  std::vector<TimerNode> nodes(ds.size());
  run_on_small_stack(256 * 1024, [&] {
    TimerQueue q;
    for (std::size_t i = 0; i < ds.size(); ++i) q.insert(&nodes[i], ds[i]);
    std::size_t removed = 0;
    if (remove_some) {
      // Remove every 7th node first: exercises merge_pairs on the removed
      // nodes' (possibly huge) child lists.
      for (std::size_t i = 3; i < nodes.size(); i += 7) {
        q.remove(&nodes[i]);
        ++removed;
      }
    }
    const TimerNode* prev = nullptr;
    while (TimerNode* n = q.pop()) {
      ++res.popped;
      if (prev && (n->deadline < prev->deadline || (n->deadline == prev->deadline && n < prev))) res.ordered = false;
      prev = n;
    }
    res.popped += removed;
    res.size_after = q.size();
    for (const TimerNode& n : nodes)
      if (n.queued) res.all_unqueued = false;
  });
  return res;
}

}  // namespace

// Note: node addresses increase with insertion order, so `n < prev` above
// detects a FIFO violation among equal deadlines.
TEST_CASE("timer queue: 100000 nodes, increasing then decreasing deadlines", "[timer_queue][deep]") {
  constexpr std::uint64_t kN = 100000;
  std::vector<std::uint64_t> ds;

  SECTION("increasing (root with 100000 children)") {
    for (std::uint64_t i = 0; i < kN; ++i) ds.push_back(i);
  }
  SECTION("decreasing (a chain 100000 deep)") {
    for (std::uint64_t i = 0; i < kN; ++i) ds.push_back(kN - i);
  }
  SECTION("increasing then decreasing") {
    for (std::uint64_t i = 0; i < kN / 2; ++i) ds.push_back(i);
    for (std::uint64_t i = 0; i < kN / 2; ++i) ds.push_back(kN - i);
  }
  SECTION("all equal") {
    ds.assign(kN, 77);
  }

  DeepResult r = deep_run(ds, false);
  CHECK(r.popped == kN);
  CHECK(r.ordered);
  CHECK(r.all_unqueued);
  CHECK(r.size_after == 0);

  DeepResult r2 = deep_run(ds, true);
  CHECK(r2.popped == kN);
  CHECK(r2.ordered);
  CHECK(r2.all_unqueued);
  CHECK(r2.size_after == 0);
}
