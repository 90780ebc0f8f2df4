// The lock-order validator (built with SPINDLE_LOCKDEP; see
// spindle/diagnostics.h).
//
// Every thread keeps a stack of the locks it holds (in its Tcb). Taking
// lock L while holding H records the edge H -> L ("H before L") in a global
// graph. A new edge H -> L is checked first: if the graph already has a
// path L -> ... -> H, some thread took those locks in the opposite order,
// and two threads doing both could deadlock: the report names both locks,
// the sites of this acquisition, and every edge of the opposite path with
// its sites. Each edge is checked once, when first seen. A thread also
// remembers the last orders it checked (a small per-thread cache, dropped
// whenever any lock is destroyed), so re-taking a known nested pair touches
// no shared state and scales across CPUs.
//
// Locks are identified by address; a destroyed lock's edges are dropped
// (lockdep_forget) so a later lock at the same address starts clean.
// Storage is fixed (no allocation); when it is full the validator says so
// once and stops learning.
//
// Concurrency: the graph is guarded by its own spin lock, taken with
// interrupts masked; a thread's held stack is touched only by that thread.
#include <atomic>

#include "kernel.h"
#include "spindle/console.h"
#include "spindle/mutex.h"

namespace spindle {
namespace kernel {
namespace {

// Sized down to nothing when the validator is compiled out.
constexpr int kNodes = kLockdep ? 4096 : 1;        // power of two
constexpr int kEdges = kLockdep ? 8192 : 1;
constexpr int kEdgeSlots = kLockdep ? 16384 : 2;   // power of two, > kEdges

struct Node {
  const void* lock = nullptr;
  const char* name = nullptr;
  int first_out = -1;
  int first_in = -1;
  unsigned visited = 0;  // DFS generation
  int via = -1;          // DFS: the edge that reached this node
};

struct Edge {
  int from = -1, to = -1;  // node indices
  int next_out = -1, next_in = -1;
  bool alive = false;
  HeldLock from_site, to_site;  // where each was taken when the order was learned
};

struct Graph {
  std::atomic<bool> busy{false};
  Node nodes[kNodes];
  Edge edges[kEdges];
  int edge_slots[kEdgeSlots];
  int nedges = 0;
  unsigned generation = 0;
  bool full = false;
  std::uint64_t reports = 0;
  Graph() {
    for (int& s : edge_slots) s = -1;
  }
};
Graph g_graph;
// Bumped by lockdep_forget: per-thread caches of checked orders from an
// older generation are ignored (a new lock may reuse a destroyed one's
// address).
std::atomic<std::uint32_t> g_generation{1};

struct GraphGuard {
  arch::IrqState saved;
  GraphGuard() : saved(arch::irq_save()) {
    while (g_graph.busy.exchange(true, std::memory_order_acquire)) arch::cpu_relax();
  }
  ~GraphGuard() {
    g_graph.busy.store(false, std::memory_order_release);
    arch::irq_restore(saved);
  }
};

unsigned hash_ptr(const void* p) {
  auto a = reinterpret_cast<std::uintptr_t>(p);
  a ^= a >> 17;
  a *= 0x9e3779b97f4a7c15ull;
  return static_cast<unsigned>(a >> 32);
}

void storage_full() {
  if (!g_graph.full) print("spindle: lockdep: graph storage full; lock-order checking stops learning\n");
  g_graph.full = true;
}

// The node for lock (created when `create`), or -1.
int node_of(const void* lock, const char* name, bool create) {
  for (unsigned i = hash_ptr(lock), n = 0; n < kNodes; ++i, ++n) {
    Node& node = g_graph.nodes[i & (kNodes - 1)];
    if (node.lock == lock) {
      if (name) node.name = name;
      return static_cast<int>(i & (kNodes - 1));
    }
    if (!node.lock) {
      if (!create) return -1;
      node.lock = lock;
      node.name = name;
      return static_cast<int>(i & (kNodes - 1));
    }
  }
  if (create) storage_full();
  return -1;
}

// The slot of edge (from, to), or of the empty slot where it would go.
int* edge_slot(int from, int to) {
  unsigned h = hash_ptr(reinterpret_cast<const void*>(static_cast<std::uintptr_t>(from) << 16 | static_cast<unsigned>(to)));
  for (unsigned i = h, n = 0; n < kEdgeSlots; ++i, ++n) {
    int* slot = &g_graph.edge_slots[i & (kEdgeSlots - 1)];
    if (*slot < 0) return slot;
    const Edge& e = g_graph.edges[*slot];
    if (e.from == from && e.to == to) return slot;
  }
  return nullptr;
}

// Breadth-first search for a path from -> ... -> to over live edges;
// leaves `via` set along it. True if found.
bool find_path(int from, int to) {
  unsigned gen = ++g_graph.generation;
  static int queue[kNodes];
  int head = 0, tail = 0;
  queue[tail++] = from;
  g_graph.nodes[from].visited = gen;
  g_graph.nodes[from].via = -1;
  while (head < tail) {
    int n = queue[head++];
    if (n == to) return true;
    for (int e = g_graph.nodes[n].first_out; e >= 0; e = g_graph.edges[e].next_out) {
      const Edge& edge = g_graph.edges[e];
      Node& next = g_graph.nodes[edge.to];
      if (!edge.alive || next.visited == gen) continue;
      next.visited = gen;
      next.via = e;
      if (tail < kNodes) queue[tail++] = edge.to;
    }
  }
  return false;
}

void report(const Tcb* t, const HeldLock& held, const HeldLock& taking, int from, int to) {
  ++g_graph.reports;
  print(
      "spindle: lockdep: possible deadlock (lock order inversion)\n"
      "  thread '%s' takes '%s' at %s:%u\n"
      "  while holding '%s', taken at %s:%u;\n"
      "  but the opposite order was seen before:\n",
      t->name, taking.name, taking.file, taking.line, held.name, held.file, held.line);
  // Walk back from `to` (the held lock) to `from` (the one being taken).
  for (int n = to; n != from;) {
    const Edge& e = g_graph.edges[g_graph.nodes[n].via];
    print("    '%s' (taken at %s:%u) before '%s' (taken at %s:%u)\n", e.from_site.name, e.from_site.file,
          e.from_site.line, e.to_site.name, e.to_site.file, e.to_site.line);
    n = e.from;
  }
}

void learn(const Tcb* t, const HeldLock& held, const HeldLock& taking) {
  GraphGuard guard;
  int from = node_of(held.lock, held.name, true);
  int to = node_of(taking.lock, taking.name, true);
  if (from < 0 || to < 0) return;
  int* slot = edge_slot(from, to);
  if (!slot) return storage_full();
  if (*slot >= 0 && g_graph.edges[*slot].alive) return;  // known order
  if (find_path(to, from)) report(t, held, taking, to, from);
  Edge* e;
  if (*slot >= 0) {
    e = &g_graph.edges[*slot];  // a forgotten lock's edge, revived
  } else {
    if (g_graph.nedges == kEdges) return storage_full();
    *slot = g_graph.nedges++;
    e = &g_graph.edges[*slot];
    e->from = from;
    e->to = to;
    e->next_out = g_graph.nodes[from].first_out;
    g_graph.nodes[from].first_out = *slot;
    e->next_in = g_graph.nodes[to].first_in;
    g_graph.nodes[to].first_in = *slot;
  }
  e->alive = true;
  e->from_site = held;
  e->to_site = taking;
}

}  // namespace
}  // namespace kernel

namespace detail {

using namespace kernel;

void lockdep_acquire(const void* lock, const char* name, const Site& site, bool trying) {
  kernel::Tcb* t = current_thread();
  HeldLock taking{lock, name, site.file_name(), static_cast<unsigned>(site.line())};
  if (!trying) {
    // A try-lock never waits, so it cannot deadlock: no order is learned
    // from it (but it is held, and orders after it are learned).
    std::uint32_t gen = g_generation.load(std::memory_order_acquire);
    for (unsigned i = 0; i < t->lockdep_depth; ++i) {
      const void* held = t->lockdep[i].lock;
      if (held == lock) continue;
      CheckedOrder& c = t->lockdep_checked[(hash_ptr(held) ^ hash_ptr(lock)) & (kLockdepCache - 1)];
      if (c.held == held && c.taking == lock && c.generation == gen) continue;
      learn(t, t->lockdep[i], taking);
      c = CheckedOrder{held, lock, gen};
    }
  }
  if (t->lockdep_depth < kLockdepDepth) t->lockdep[t->lockdep_depth++] = taking;
}

void lockdep_release(const void* lock, const char*) {
  kernel::Tcb* t = current_thread();
  for (unsigned i = t->lockdep_depth; i-- > 0;) {
    if (t->lockdep[i].lock != lock) continue;
    for (unsigned j = i + 1; j < t->lockdep_depth; ++j) t->lockdep[j - 1] = t->lockdep[j];
    --t->lockdep_depth;
    return;
  }
}

void lockdep_forget(const void* lock) {
  g_generation.fetch_add(1, std::memory_order_acq_rel);
  GraphGuard guard;
  int n = node_of(lock, nullptr, false);
  if (n < 0) return;
  Node& node = g_graph.nodes[n];
  for (int e = node.first_out; e >= 0; e = g_graph.edges[e].next_out) g_graph.edges[e].alive = false;
  for (int e = node.first_in; e >= 0; e = g_graph.edges[e].next_in) g_graph.edges[e].alive = false;
}

}  // namespace detail

std::uint64_t lock_order_reports() {
  kernel::GraphGuard guard;
  return kernel::g_graph.reports;
}

}  // namespace spindle
