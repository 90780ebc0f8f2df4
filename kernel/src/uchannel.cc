// Handles, channels and shared memory on backends with user mode
// (spindle/handle.h, channel.h, shared_memory.h): kernel objects that
// processes (and the kernel's own first process, the app) reach through
// handle tables. Shared regions are kernel heap pages each process maps
// with its handle's rights (user_map_kernel_pages); futex words in them
// have one key everywhere (their kernel address), so locks there work
// across processes, owner-died included.
//
// A handle is (generation << 8) | (slot + 1) in its holder's table: a
// closed or made-up value misses (wrong generation, empty slot) and is
// kNotFound. The kernel's copy of the code uses g_kernel_table; a process
// uses its own (ProcessRecord::handles) through system calls, which also
// copy every message in and out through checked user accesses.
//
// A channel is a Core with two ends. Messages for end i wait in queue i
// (bounded by kQueueBytes; one message always fits an empty queue); end i
// is closed once no handle names it any more (holders[i] == 0: table
// entries and messages in flight). Closing end i drops what was queued for
// it and wakes both sides: the peer's receives drain its own queue and
// then say kClosed, its sends say kClosed at once. An end whose only
// holders are messages in its own queue (it was sent over its own channel
// and every other handle to it closed) can never be received again: it is
// closed the same way (self_held[i] == holders[i]), so such a channel is
// freed. Longer cycles (an end queued in another channel whose end is
// queued in the first) are not collected.
//
// Locking: the kernel lock guards every table, every Core's queues, slots
// and counts. Payloads are copied outside it: a send copies before it
// queues, a receive after it dequeued (into memory it checked first);
// except a direct send (Direct, at most kDirectBytes), copied under it
// from the sender's memory to the parked receiver's inbox, and from the
// inbox to the receiver's buffer. A Core lives
// while a handle names one of its ends or an operation uses it (users);
// waiters sleep on its words with futex_wait, so an ending process's
// threads give up (kInterrupted).
#include <cstring>
#include <new>

#include "spindle/channel.h"
#include "spindle/handle.h"
#include "spindle/shared_memory.h"
#include "spindle/task.h"
#include "uprocess.h"
#include "user.h"

namespace spindle::kernel {

struct Core;
// What a handle names: a channel end or a shared region.
struct Object {
  HandleKind kind;
};
struct End : Object {
  Core* core;
  unsigned side;
};
// A shared-memory region: kernel heap pages (a page run: page aligned and
// contiguous), zeroed. refs: handles, messages in flight and mappings
// (kernel lock); freed with the last.
struct Region : Object {
  std::byte* pages;
  std::size_t size;
  unsigned refs;
};
// A region mapped by a process or the kernel (shm_map), until shm_unmap or
// the process's end.
struct RegionMap {
  Region* region;
  std::uintptr_t at;
  RegionMap* next;
};

struct Msg {
  Msg* next = nullptr;
  std::size_t bytes = 0;
  unsigned nh = 0;
  Object* h[kMaxHandlesPerTransfer] = {};
  Access access[kMaxHandlesPerTransfer] = {};
  std::byte* data() { return reinterpret_cast<std::byte*>(this + 1); }
};

// A thread blocked receiving on end i while its queue was empty (recv, or
// the second half of a call), parked in Core::direct[i]: a sender with a
// small message and no handles copies it straight into `data` (on the
// receiver's kernel stack, mapped in every address space) and hands the
// CPU to the receiver, with no heap message and no queue. Fields: kernel
// lock, while it is in the slot.
inline constexpr std::size_t kDirectBytes = 256;
//
// A receiver parked by the system-call fast path (syscall_fast) also
// leaves `frame` (its saved user registers) and `buf`: a fast-path sender
// may then complete the receiver's call itself and resume it straight at
// its user frame, dropping its kernel continuation (which would do exactly
// that work). frame == nullptr: it resumes only through its continuation.
struct Direct {
  Tcb* thread = nullptr;
  std::size_t cap = 0;       // what fits: min(the receiver's buffer, kDirectBytes)
  std::size_t bytes = 0;     // delivered length
  bool delivered = false;    // set by the sender, which also empties the slot
  bool regs = false;         // parked by kSysChannelCallRegs: the bytes go to frame's x1, x2 (buf unused)
  std::uint64_t* frame = nullptr;
  std::uintptr_t buf = 0;
  union {  // words: a register message (GCC defines reading the other member)
    alignas(16) std::byte data[kDirectBytes];
    std::uint64_t words[kDirectBytes / 8];
  };
};

// kSysChannelCallRegs (call_value's register form; user side: detail::
// channel_call_regs) answers these in x0 where it has no result of its own
// (the status byte of a result is a Status, far below them):
//  - kCallRegsGeneral: nothing done, make the call with buffers instead
//    (kSysChannelCall): the fast path did not apply;
//  - kCallRegsSent: the request went out, the call was then woken without
//    a reply in its slot: receive the reply with kSysChannelRecv.
inline constexpr std::uint64_t kCallRegsGeneral = 0xFE;
inline constexpr std::uint64_t kCallRegsSent = 0xFD;
// In kSysChannelCallRegs's length argument: x5 holds a deadline (without
// it the call waits forever and x5 is not read). A flag rather than a
// system call number of its own: a call without a deadline then pays
// nothing to tell the two apart, its length test (at most 16) failing for
// either form with the flag set.
inline constexpr std::uint64_t kCallRegsDeadline = 1u << 8;

// A register reply: the first two words of d's data as x1, x2. A sender
// to a register slot (Direct::regs) fills both: from a buffer, over zeros
// (stage_for), from registers, with the sender's own x2, x3 (past the
// length: whatever the sender put there), so no stale kernel stack from
// d.data reaches user registers.
[[gnu::always_inline]] inline void regs_from(std::uint64_t* x, const Direct& d) {
  x[1] = d.words[0];
  x[2] = d.words[1];
}
// Before a buffer's bytes are copied into d's data.
[[gnu::always_inline]] inline void stage_for(Direct& d) {
  if (d.regs) d.words[0] = d.words[1] = 0;
}

struct Core {
  End end[2];
  Direct* direct[2] = {};  // at most one receiver per end waits here; others use the futex words
  unsigned holders[2] = {1, 1};
  unsigned self_held[2] = {};  // holds of end i carried by messages in queue i
  unsigned users = 0;
  Msg* head[2] = {};
  Msg* tail[2] = {};
  std::size_t queued[2] = {};
  std::atomic<std::uint32_t> readable[2] = {};  // end i got a message, or its peer closed
  std::atomic<std::uint32_t> writable[2] = {};  // queue i lost one, or end i closed
};

struct HandleTable {
  struct Entry {
    Object* obj = nullptr;
    std::uint32_t gen = 0;
    Access access = Access::kReadWrite;
  };
  Entry e[kMaxHandles];
  unsigned spawned = 0;        // this_process::handle(0 .. spawned - 1)
  RegionMap* maps = nullptr;   // its shm_map'ed regions
  std::uintptr_t next_map = kShmBase;  // a process's: where the next region goes
};

namespace {

constexpr std::size_t kQueueBytes = 256 * 1024;
constexpr std::uint64_t kTryOnly = std::uint64_t{1} << 63;  // a deadline argument: do not wait

HandleTable g_kernel_table;  // the kernel's first process (the app)

Msg* new_msg(std::size_t bytes) {
  void* p = ::operator new(sizeof(Msg) + bytes, std::nothrow);
  if (!p) return nullptr;
  Msg* m = new (p) Msg;
  m->bytes = bytes;
  return m;
}
void free_msg(Msg* m) { ::operator delete(m); }

HandleTable::Entry* lookup(HandleTable* t, Handle h) SPINDLE_REQUIRES(g.lock) {
  unsigned slot = (h.value & 0xff) - 1;
  if (slot >= kMaxHandles) return nullptr;
  HandleTable::Entry* e = &t->e[slot];
  return e->obj && e->gen == h.value >> 8 ? e : nullptr;
}

unsigned free_slots(const HandleTable* t) SPINDLE_REQUIRES(g.lock) {
  unsigned n = 0;
  for (const auto& e : t->e) n += e.obj == nullptr;
  return n;
}

// Takes over one hold of obj. 0 when the table is full.
Handle insert(HandleTable* t, Object* obj, Access access) SPINDLE_REQUIRES(g.lock) {
  for (unsigned i = 0; i < kMaxHandles; ++i) {
    HandleTable::Entry& e = t->e[i];
    if (e.obj) continue;
    e.obj = obj;
    e.gen = e.gen % 0xFFFFFF + 1;
    e.access = access;
    return Handle{e.gen << 8 | (i + 1)};
  }
  return Handle{};
}

void maybe_free(Core* c) SPINDLE_REQUIRES(g.lock) {
  if (c->holders[0] == 0 && c->holders[1] == 0 && c->users == 0) delete c;
}

void wake(std::atomic<std::uint32_t>& w) SPINDLE_REQUIRES(g.lock) {
  w.fetch_add(1, std::memory_order_release);
  futex_wake_locked(&w, ~0u);
}

// The receiver parked on end `side`, if any, leaves the slot and runs
// again to look at the queue (a message was queued, or an end closed).
void kick(Core* c, unsigned side) SPINDLE_REQUIRES(g.lock) {
  Direct* d = c->direct[side];
  if (!d) return;
  c->direct[side] = nullptr;
  if (d->thread->state == ThreadState::kBlocked) wake(d->thread, Status::kOk);  // else already woken (timeout)
}

// Readers of end `side` learn of a queued message or a closed peer: the
// futex waiters (threads and coroutines) and the parked receiver.
void notify_readable(Core* c, unsigned side) SPINDLE_REQUIRES(g.lock) {
  wake(c->readable[side]);
  kick(c, side);
}

// Under the kernel lock (a direct send): interrupts are masked.
bool copy_in(Proc* p, void* dst, std::uintptr_t src, std::size_t n) {
  if (p) return arch::user_read_masked(dst, src, n);
  if (n != 0) std::memcpy(dst, reinterpret_cast<const void*>(src), n);
  return true;
}

// The fast send: when end `to` has an empty queue and a parked receiver
// whose buffer takes the message, the bytes go straight to it (read from
// the sender's memory under the lock: at most kDirectBytes) and the slot
// empties. Returns the receiver to run (nullptr if it was already woken),
// *done = false when the fast send does not apply (nothing changed), or
// kInvalidArgument for an unreadable message (nothing sent).
[[gnu::always_inline]] inline Status send_direct(Core* c, unsigned to, Proc* p, std::uintptr_t msg, std::size_t len, bool* done, Tcb** receiver)
    SPINDLE_REQUIRES(g.lock) {
  Direct* d = c->direct[to];
  *done = false;
  if (!d || len > d->cap || c->head[to]) return Status::kOk;
  stage_for(*d);
  if (!copy_in(p, d->data, msg, len)) return Status::kInvalidArgument;
  d->bytes = len;
  d->delivered = true;
  c->direct[to] = nullptr;
  *done = true;
  *receiver = d->thread->state == ThreadState::kBlocked ? d->thread : nullptr;
  return Status::kOk;
}

void release(Object* obj) SPINDLE_REQUIRES(g.lock);

// End `side` has no handle left: what was queued for it goes (with the
// handles it carried), and both sides learn it.
//
// Also called while end `side` still has holders, all of them messages in
// its own queue (collect_self_held): releasing those messages' handles then
// drops holders[side] to 0, which calls this again on the emptied queue.
void close_side(Core* c, unsigned side) SPINDLE_REQUIRES(g.lock) {
  c->users++;  // keeps c while the carried handles are released
  Msg* m = c->head[side];
  c->head[side] = c->tail[side] = nullptr;  // detached first: a release may come back here
  c->queued[side] = 0;
  c->self_held[side] = 0;
  while (m) {
    Msg* next = m->next;
    for (unsigned i = 0; i < m->nh; ++i) release(m->h[i]);
    free_msg(m);
    m = next;
  }
  notify_readable(c, 1 - side);
  kick(c, side);
  wake(c->writable[side]);
  c->users--;
}

// How many of m's handles are end `side` of c.
unsigned holds_of(const Msg* m, const Core* c, unsigned side) {
  unsigned n = 0;
  for (unsigned i = 0; i < m->nh; ++i) {
    if (m->h[i]->kind != HandleKind::kChannel) continue;
    auto* e = static_cast<const End*>(m->h[i]);
    n += e->core == c && e->side == side;
  }
  return n;
}

// End `side` is held only by messages queued for it: nobody can ever
// receive them, so it is closed (and its queue dropped).
void collect_self_held(Core* c, unsigned side) SPINDLE_REQUIRES(g.lock) {
  if (c->holders[side] != 0 && c->holders[side] == c->self_held[side]) close_side(c, side);
}

void hold(Object* obj) SPINDLE_REQUIRES(g.lock) {
  if (obj->kind == HandleKind::kChannel) {
    auto* end = static_cast<End*>(obj);
    end->core->holders[end->side]++;
  } else {
    static_cast<Region*>(obj)->refs++;
  }
}

void release(Object* obj) {
  if (obj->kind == HandleKind::kChannel) {
    auto* end = static_cast<End*>(obj);
    Core* c = end->core;
    if (--c->holders[end->side] == 0) {
      close_side(c, end->side);
    } else {
      collect_self_held(c, end->side);
    }
    maybe_free(c);
    return;
  }
  auto* r = static_cast<Region*>(obj);
  if (--r->refs == 0) {
    delete[] r->pages;  // the kernel heap never sleeps: fine under the lock
    delete r;
  }
}

// ---------------------------------------------------------------------------
// The operations, for the kernel (p == nullptr: kernel buffers) or for a
// process (p: user buffers, checked).

Status pair(HandleTable* t, Handle* a, Handle* b) {
  auto* c = new (std::nothrow) Core;
  if (!c) return Status::kNoMemory;
  c->end[0].kind = c->end[1].kind = HandleKind::kChannel;
  c->end[0].core = c->end[1].core = c;
  c->end[0].side = 0;
  c->end[1].side = 1;
  LockGuard guard;
  if (free_slots(t) < 2) {
    delete c;
    return Status::kLimit;
  }
  *a = insert(t, &c->end[0], Access::kReadWrite);
  *b = insert(t, &c->end[1], Access::kReadWrite);
  return Status::kOk;
}

// The channel end h names: kNotFound for a bad handle, kInvalidArgument
// for one that is not a channel end.
Status lookup_end(HandleTable* t, Handle h, End** out) SPINDLE_REQUIRES(g.lock) {
  HandleTable::Entry* e = lookup(t, h);
  if (!e) return Status::kNotFound;
  if (e->obj->kind != HandleKind::kChannel) return Status::kInvalidArgument;
  *out = static_cast<End*>(e->obj);
  return Status::kOk;
}

// Looks h up and counts an operation on its channel.
Status begin_op(HandleTable* t, Handle h, End** out) {
  LockGuard guard;
  Status s = lookup_end(t, h, out);
  if (s == Status::kOk) (*out)->core->users++;
  return s;
}

void end_op(End* end) {
  LockGuard guard;
  end->core->users--;
  maybe_free(end->core);
}

Status send(HandleTable* t, Proc* p, Handle h, std::uintptr_t msg, std::size_t len, const Handle* hs, unsigned nh,
            std::uint64_t deadline_arg) {
  if (len > kMaxMessageBytes || nh > kMaxHandlesPerTransfer) return Status::kInvalidArgument;
  if (nh == 0 && len <= kDirectBytes) {
    // A receiver parked on the peer end takes it directly (no heap message).
    LockGuard guard;
    End* end;
    if (Status s = lookup_end(t, h, &end); s != Status::kOk) return s;
    Core* c = end->core;
    const unsigned to = 1 - end->side;
    if (c->holders[to] == 0) return Status::kClosed;
    bool done;
    Tcb* receiver = nullptr;
    if (Status s = send_direct(c, to, p, msg, len, &done, &receiver); s != Status::kOk) return s;
    if (done) {
      if (receiver) wake(receiver, Status::kOk);  // the sender goes on; a more urgent receiver preempts it
      return Status::kOk;
    }
  }
  Msg* m = new_msg(len);
  if (!m) return Status::kNoMemory;
  bool copied = p ? arch::user_read(m->data(), msg, len) : (len == 0 || (std::memcpy(m->data(), reinterpret_cast<const void*>(msg), len), true));
  if (!copied) {
    free_msg(m);
    return Status::kInvalidArgument;
  }
  End* end;
  {
    LockGuard guard;
    HandleTable::Entry* e = lookup(t, h);
    Status bad = !e ? Status::kNotFound : e->obj->kind != HandleKind::kChannel ? Status::kInvalidArgument : Status::kOk;
    for (unsigned i = 0; bad == Status::kOk && i < nh; ++i) {
      HandleTable::Entry* c = lookup(t, hs[i]);
      if (!c) {
        bad = Status::kNotFound;
        break;
      }
      m->h[i] = c->obj;
      m->access[i] = c->access;
    }
    if (bad != Status::kOk) {
      free_msg(m);
      return bad;
    }
    m->nh = nh;
    for (unsigned i = 0; i < nh; ++i) hold(m->h[i]);  // in flight
    end = static_cast<End*>(e->obj);
    end->core->users++;
  }
  Core* c = end->core;
  const unsigned to = 1 - end->side;
  Status st;
  for (;;) {
    std::uint32_t seen;
    {
      LockGuard guard;
      if (c->holders[to] == 0) {
        st = Status::kClosed;
        break;
      }
      if (c->queued[to] == 0 || c->queued[to] + len <= kQueueBytes) {
        if (c->tail[to]) {
          c->tail[to]->next = m;
        } else {
          c->head[to] = m;
        }
        c->tail[to] = m;
        c->queued[to] += len;
        c->self_held[to] += holds_of(m, c, to);
        m = nullptr;
        notify_readable(c, to);
        collect_self_held(c, to);  // its other handles may have closed while it was in flight
        st = Status::kOk;
        break;
      }
      if (deadline_arg == kTryOnly) {
        st = Status::kWouldBlock;
        break;
      }
      seen = c->writable[to].load(std::memory_order_acquire);
    }
    Status w = futex_wait(&c->writable[to], seen, deadline_from(deadline_arg));
    if (w == Status::kTimedOut || w == Status::kInterrupted) {
      st = w;
      break;
    }
  }
  {
    LockGuard guard;
    if (m) {
      for (unsigned i = 0; i < m->nh; ++i) release(m->h[i]);
    }
    c->users--;
    maybe_free(c);
  }
  if (m) free_msg(m);
  return st;
}

// The receive half of recv and call, kernel lock held throughout (it may
// block, and returns with the lock held). kOk: *out is the message taken
// off the queue (its bytes still to be copied to buf, which was checked
// writable first, so a bad buffer loses nothing; its handles are in the
// table and hs_out), or d.delivered is set (a direct send: the bytes are in
// d.data). An empty queue parks the caller in the end's slot (Direct), or
// when another receiver is parked there, waits on the end's futex word.
// hand_to: a receiver the caller just sent to directly; it runs in the
// caller's place if the caller must wait (block_and_switch_to), else it is
// woken.
[[gnu::always_inline]] inline Status receive_locked(HandleTable* t, Proc* p, Core* c, unsigned me, std::uintptr_t buf, std::size_t cap,
                      Handle* hs_out, unsigned hcap, std::uint64_t deadline_arg, Direct& d, Msg** out,
                      Tcb* hand_to) SPINDLE_REQUIRES(g.lock) {
  Status st;
  for (;;) {
    if (Msg* head = c->head[me]) {
      if (head->bytes > cap || head->nh > hcap) {
        st = Status::kOverflow;
      } else if (p && !arch::user_accessible(p->as, buf, head->bytes, true)) {
        st = Status::kInvalidArgument;
      } else if (free_slots(t) < head->nh) {
        st = Status::kLimit;
      } else {
        c->head[me] = head->next;
        if (!c->head[me]) c->tail[me] = nullptr;
        c->queued[me] -= head->bytes;
        c->self_held[me] -= holds_of(head, c, me);
        for (unsigned i = 0; i < head->nh; ++i) hs_out[i] = insert(t, head->h[i], head->access[i]);  // the holds move over
        wake(c->writable[me]);
        *out = head;
        st = Status::kOk;
      }
      break;
    }
    if (c->holders[1 - me] == 0) {
      st = Status::kClosed;
      break;
    }
    if (deadline_arg == kTryOnly) {
      st = Status::kWouldBlock;
      break;
    }
    TimePoint deadline = deadline_from(deadline_arg);
    Status w;
    if (!c->direct[me]) {
      if (deadline != kForever && deadline <= Clock::now()) {
        st = Status::kTimedOut;
        break;
      }
      d.thread = current_thread();
      d.cap = cap < kDirectBytes ? cap : kDirectBytes;
      d.delivered = false;
      c->direct[me] = &d;
      w = hand_to ? block_and_switch_to(hand_to, deadline) : block_current(nullptr, deadline);
      hand_to = nullptr;
      if (c->direct[me] == &d) c->direct[me] = nullptr;  // woken otherwise: leaves the slot
      if (d.delivered) {
        st = Status::kOk;
        break;
      }
    } else {
      if (hand_to) wake(std::exchange(hand_to, nullptr), Status::kOk);
      w = futex_wait_locked(&c->readable[me], c->readable[me].load(std::memory_order_acquire), deadline,
                            WaitOrder::kPriority, "channel");
    }
    if (w == Status::kTimedOut || w == Status::kInterrupted) {
      st = w;
      break;
    }
  }
  if (hand_to) wake(hand_to, Status::kOk);
  return st;
}

// A direct send's bytes to the receiver's buffer, under the lock (at most
// kDirectBytes). A buffer the receiver may not write puts the message back
// at the front of its queue (nothing lost): kInvalidArgument.
[[gnu::always_inline]] inline Status copy_out_direct(Core* c, unsigned me, Proc* p, std::uintptr_t buf, const Direct& d) SPINDLE_REQUIRES(g.lock) {
  if (d.bytes == 0) return Status::kOk;
  if (!p) {
    std::memcpy(reinterpret_cast<void*>(buf), d.data, d.bytes);
    return Status::kOk;
  }
  if (arch::user_write_masked(buf, d.data, d.bytes)) return Status::kOk;  // under the lock: interrupts masked
  if (c->holders[me] == 0) return Status::kInvalidArgument;  // closed meanwhile: its queue is gone
  Msg* m = new_msg(d.bytes);  // the kernel heap never sleeps: fine under the lock
  if (!m) return Status::kNoMemory;
  std::memcpy(m->data(), d.data, d.bytes);
  m->next = c->head[me];
  c->head[me] = m;
  if (!c->tail[me]) c->tail[me] = m;
  c->queued[me] += d.bytes;
  notify_readable(c, me);
  return Status::kInvalidArgument;
}

// A message taken off the queue (receive_locked), to buf, outside the lock.
Received copy_out_queued(Proc* p, std::uintptr_t buf, Msg* m) {
  Received r{m->bytes, m->nh};
  if (m->bytes != 0) {
    if (p) {
      (void)arch::user_write(buf, m->data(), m->bytes);  // checked before it was dequeued; nothing unmaps it meanwhile
    } else {
      std::memcpy(reinterpret_cast<void*>(buf), m->data(), m->bytes);
    }
  }
  free_msg(m);
  return r;
}

// A received message's bytes go to buf, its handles into the table and
// hs_out.
Result<Received> recv(HandleTable* t, Proc* p, Handle h, std::uintptr_t buf, std::size_t cap, Handle* hs_out,
                      unsigned hcap, std::uint64_t deadline_arg) {
  Direct d;
  Msg* m = nullptr;
  Status st;
  {
    LockGuard guard;
    End* end;
    if (Status s = lookup_end(t, h, &end); s != Status::kOk) return s;
    Core* c = end->core;
    c->users++;  // keeps c while it waits (another thread may close h)
    st = receive_locked(t, p, c, end->side, buf, cap, hs_out, hcap, deadline_arg, d, &m, nullptr);
    if (st == Status::kOk && !m) st = copy_out_direct(c, end->side, p, buf, d);
    c->users--;
    maybe_free(c);
  }
  if (st != Status::kOk) return st;
  if (!m) return Received{d.bytes, 0};
  return copy_out_queued(p, buf, m);
}

// Channel::call and reply_and_recv: msg goes out on h, then the next
// message for h comes back into buf (no handles either way), with one
// deadline for both. When the peer is parked in the end's slot and msg is
// small, the whole call is one lock hold: the bytes go straight to the
// peer, the caller parks in its own slot, and the peer runs in its place
// on this CPU (block_and_switch_to). Otherwise it is send() then recv().
Result<Received> call(HandleTable* t, Proc* p, Handle h, std::uintptr_t msg, std::size_t len, std::uintptr_t buf,
                      std::size_t cap, std::uint64_t deadline_arg) {
  if (len > kMaxMessageBytes) return Status::kInvalidArgument;
  Direct d;
  Msg* m = nullptr;
  Status st = Status::kOk;
  bool sent = false;
  {
    LockGuard guard;
    End* end;
    if (Status s = lookup_end(t, h, &end); s != Status::kOk) return s;
    Core* c = end->core;
    const unsigned me = end->side;
    if (c->holders[1 - me] == 0) return Status::kClosed;
    Tcb* receiver = nullptr;
    if (len <= kDirectBytes) {
      if (Status s = send_direct(c, 1 - me, p, msg, len, &sent, &receiver); s != Status::kOk) return s;
    }
    if (sent) {
      c->users++;
      st = receive_locked(t, p, c, me, buf, cap, nullptr, 0, deadline_arg, d, &m, receiver);
      if (st == Status::kOk && !m) st = copy_out_direct(c, me, p, buf, d);
      c->users--;
      maybe_free(c);
    }
  }
  if (!sent) {  // the general path
    if (Status s = send(t, p, h, msg, len, nullptr, 0, deadline_arg); s != Status::kOk) return s;
    return recv(t, p, h, buf, cap, nullptr, 0, deadline_arg);
  }
  if (st != Status::kOk) return st;
  if (!m) return Received{d.bytes, 0};
  return copy_out_queued(p, buf, m);
}

Status close(HandleTable* t, Handle h) {
  LockGuard guard;
  HandleTable::Entry* e = lookup(t, h);
  if (!e) return Status::kNotFound;
  Object* obj = e->obj;
  e->obj = nullptr;
  release(obj);
  return Status::kOk;
}

Result<Handle> duplicate(HandleTable* t, Handle h, Access access) {
  LockGuard guard;
  HandleTable::Entry* e = lookup(t, h);
  if (!e) return Status::kNotFound;
  if (access == Access::kReadWrite && e->access == Access::kReadOnly) return Status::kInvalidArgument;
  Handle d = insert(t, e->obj, access);
  if (!d.valid()) return Status::kLimit;
  hold(e->obj);
  return d;
}

HandleKind kind(HandleTable* t, Handle h) {
  LockGuard guard;
  HandleTable::Entry* e = lookup(t, h);
  return e ? e->obj->kind : HandleKind::kNone;
}

// ---------------------------------------------------------------------------
// Shared regions. A process maps one at its own address (from kShmBase),
// with the rights of its handle; the kernel uses the pages where they are.

Result<Handle> shm_new(HandleTable* t, std::size_t size) {
  if (size == 0 || size > (std::size_t{1} << 30)) return Status::kInvalidArgument;
  std::size_t rounded = (size + arch::kPageSize - 1) & ~(arch::kPageSize - 1);
  // Whole pages: the kernel heap gives a page-aligned, contiguous run.
  auto* pages = new (std::nothrow) std::byte[rounded];
  if (!pages) return Status::kNoMemory;
  std::memset(pages, 0, rounded);
  auto* r = new (std::nothrow) Region;
  if (!r) {
    delete[] pages;
    return Status::kNoMemory;
  }
  r->kind = HandleKind::kSharedMemory;
  r->pages = pages;
  r->size = rounded;
  r->refs = 1;
  LockGuard guard;
  Handle h = insert(t, r, Access::kReadWrite);
  if (!h.valid()) {
    r->refs = 0;
    delete[] pages;
    delete r;
    return Status::kLimit;
  }
  return h;
}

// Maps h's region for the table's owner (p: a process, else the kernel).
Result<detail::Mapping> shm_map_in(HandleTable* t, Proc* p, Handle h) {
  Region* r;
  Access access;
  std::uintptr_t at;
  {
    LockGuard guard;
    HandleTable::Entry* e = lookup(t, h);
    if (!e) return Status::kNotFound;
    if (e->obj->kind != HandleKind::kSharedMemory) return Status::kInvalidArgument;
    r = static_cast<Region*>(e->obj);
    access = e->access;
    r->refs++;  // the mapping's
    at = p ? t->next_map : reinterpret_cast<std::uintptr_t>(r->pages);
    if (p) t->next_map += r->size + arch::kPageSize;  // a page apart: an overrun faults
  }
  // A process's mapping counts against its memory limit (and its
  // ancestors'): past it, kLimit. Given back at shm_unmap or with the process.
  if (p && !charge_memory(p, r->size)) {
    LockGuard guard;
    release(r);
    return Status::kLimit;
  }
  auto* rm = new (std::nothrow) RegionMap{r, at, nullptr};
  bool ok = rm != nullptr && (!p || (at + r->size <= kShmLimit &&
                                     arch::user_map_kernel_pages(p->as, at, r->pages, r->size,
                                                                 access == Access::kReadOnly
                                                                     ? arch::UserAccess::kRead
                                                                     : arch::UserAccess::kReadWrite)));
  if (!ok && p) uncharge_memory(p, r->size);
  LockGuard guard;
  if (!ok) {
    delete rm;
    release(r);
    return Status::kNoMemory;
  }
  rm->next = t->maps;
  t->maps = rm;
  return detail::Mapping{reinterpret_cast<std::byte*>(at), r->size, access};
}

// Unmaps the region at `at` (if mapped there) and returns 0; while threads
// or jobs of p (nullptr: of the kernel) wait on words in it, changes
// nothing and returns how many: their waits would outlive the mapping, and
// the pages too once nobody else holds them. The waiters are counted, the
// pages unmapped from p and the region released in one hold of the kernel
// lock, which also counts p->unmaps up: a futex system call of p that
// translated a word of the region before this hold, but has not yet taken
// the lock, sees that and translates again (UserWord), finding it unmapped.
unsigned shm_unmap_in(HandleTable* t, Proc* p, std::uintptr_t at) {
  std::size_t size = 0;
  {
    LockGuard guard;
    RegionMap** m = &t->maps;
    while (*m && (*m)->at != at) m = &(*m)->next;
    if (!*m) return 0;
    RegionMap* found = *m;
    Region* r = found->region;
    auto of_p = [](const Waiter* w, const void* ctx) { return waiter_process(w) == ctx; };
    if (unsigned waiting = waiters_in(r->pages, r->size, of_p, p)) return waiting;
    *m = found->next;
    size = r->size;
    if (p) {
      arch::user_unmap(p->as, at, size);  // the pages stay the region's
      p->unmaps.store(p->unmaps.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    }
    release(r);
    delete found;
  }
  if (p) uncharge_memory(p, size);
  return 0;
}

std::uint64_t result(Status s) { return static_cast<std::uint64_t>(static_cast<int>(s)); }

}  // namespace

// ---------------------------------------------------------------------------
// Process tables.

Result<HandleTable*> handle_table_for_spawn(HandleTable* from, std::span<const Handle> given) {
  if (!from) from = &g_kernel_table;
  auto* t = new (std::nothrow) HandleTable;
  if (!t) return Status::kNoMemory;
  LockGuard guard;
  for (const Handle& h : given) {
    HandleTable::Entry* e = lookup(from, h);
    if (!e) {
      for (unsigned i = 0; i < t->spawned; ++i) release(t->e[i].obj);
      delete t;
      return Status::kNotFound;
    }
    hold(e->obj);
    (void)insert(t, e->obj, e->access);  // slot i, generation 1: this_process::handle(i)
    ++t->spawned;
  }
  return t;
}

void close_all_handles(HandleTable* t) {
  for (auto& e : t->e) {
    if (!e.obj) continue;
    Object* obj = e.obj;
    e.obj = nullptr;
    release(obj);
  }
}

void free_handle_table(HandleTable* t) {
  // Its process's address space is gone: the mappings only hold references.
  LockGuard guard;
  close_all_handles(t);
  while (RegionMap* m = t->maps) {
    t->maps = m->next;
    release(m->region);
    delete m;
  }
  delete t;
}

unsigned spawned_handles(const HandleTable* t) { return t->spawned; }

std::uint64_t channel_call_syscall(Proc* p, const std::uint64_t* a) {
  Result<Received> r = call(p->handles, p, Handle{static_cast<std::uint32_t>(a[0])}, a[1], a[2], a[3], a[4], a[5]);
  return r.ok() ? result(Status::kOk) | r->bytes << 8 : result(r.status());
}

// ---------------------------------------------------------------------------
namespace {
// The caller's slot while syscall_fast has it parked, with what its
// continuation needs (the handle may be closed meanwhile).
struct FastPark {
  FastPark() {}  // d is made at the commit (syscall_fast's early returns skip it)
  union {
    Direct d;
  };
  Core* core;
  unsigned side;
};

// The rest of a call parked by syscall_fast whose caller runs again
// through its kernel continuation (woken otherwise than by a fast call
// that completed it, which drops this continuation): its wait ended as
// call()'s would, and this ends the call as call() does. Out of line, so
// that the fast path keeps no values of its own alive across its switch.
[[gnu::noinline]] void fast_call_resumed(std::uint64_t* x, FastPark& park, Status w) SPINDLE_REQUIRES(g.lock) {
  Direct& mine = park.d;
  Core* c = park.core;
  const unsigned me = park.side;
  Proc* p = process_of(current_thread());
  const std::uintptr_t buf = x[3];
  mine.frame = nullptr;  // from here on (it may park again below) only this continuation resumes it
  if (c->direct[me] == &mine) c->direct[me] = nullptr;  // woken otherwise: leaves the slot
  if (mine.regs) {  // a reply in the slot, or the user side receives it (kCallRegsSent)
    if (mine.delivered) regs_from(x, mine);
    x[0] = mine.delivered                                              ? result(Status::kOk) | mine.bytes << 8
           : w == Status::kTimedOut || w == Status::kInterrupted ? result(w)
                                                                      : kCallRegsSent;
    c->users--;
    maybe_free(c);
    unlock_keep_irqs_masked();
    return;
  }
  Msg* m = nullptr;
  Status st;
  if (mine.delivered) {
    st = Status::kOk;
  } else if (w == Status::kTimedOut || w == Status::kInterrupted) {
    st = w;
  } else {
    st = receive_locked(p->handles, p, c, me, buf, x[4], nullptr, 0, x[5], mine, &m, nullptr);
  }
  if (st == Status::kOk && !m) st = copy_out_direct(c, me, p, buf, mine);
  c->users--;
  maybe_free(c);
  unlock_keep_irqs_masked();
  if (st != Status::kOk) {
    x[0] = result(st);
  } else if (!m) {
    x[0] = result(Status::kOk) | mine.bytes << 8;
  } else {
    arch::irq_enable();  // a queued message may be long: copied with interrupts on, as call() does
    Received r = copy_out_queued(p, buf, m);
    arch::irq_save();
    x[0] = result(Status::kOk) | r.bytes << 8;
  }
}
}  // namespace

// The call fast path: kSysChannelCall straight from the EL0 entry
// (syscall_fast, arch.h), interrupts still masked from the exception, for the
// common case of call() only: a message of at most kDirectBytes, no
// deadline or one not yet past, the peer parked in its end's slot (Direct)
// with room for it and an empty queue, nothing queued for the caller and
// nobody else parked on its end, and a direct hand-off allowed
// (can_switch_directly: the peer may run here at once, nothing more urgent
// is runnable anywhere, no reschedule or suspend pending, the caller not
// ending). The peer's timeout, if it waits with one, is disarmed as its
// wake would disarm it; the caller's deadline arms its own timer before it
// parks, and a timeout then wakes it as it wakes a call() (its slot left,
// kTimedOut unless the reply was delivered first).
// Then it is what call() would do in that case, in one kernel lock hold,
// without the general entry's work (interrupt enable/mask, dispatch,
// Result plumbing): the bytes go to the peer's slot, the caller parks in
// its own slot and the peer runs here in its place. When any condition
// fails, or the message cannot be read (the general path then reports it),
// it returns false having changed nothing visible (the slot's bytes are
// scratch until `delivered`), and handle_syscall runs call(), the
// reference.
//
// The invariants are call()'s: Core fields, slots and thread states under
// the kernel lock; the peer leaves the slot only by the sender (delivered)
// or by its own wake (kick, timeout, kill); c->users keeps the core while
// the caller waits. The caller's wait ends as call()'s does: delivered
// (copy out), or woken otherwise, when it looks again exactly as
// receive_locked would (which may park it again, now on the general path's
// terms, with the lock taken as LockGuard would; interrupts are masked
// throughout, as the lock holder needs anyway).
//
// A peer that this path parked (Direct::frame set) is not switched to
// through its kernel continuation: the caller ends the peer's call for it
// (the reply copied to the peer's buffer in the peer's address space, its
// count on the core dropped, its result in its frame's x0) and resumes it
// at its user frame (arch::context_switch_to_user), so the peer's
// continuation, which would do exactly that, is dropped.
//
// Two instances: kTimed for a call with a deadline (25 with one, 26 with
// kCallRegsDeadline), so that a call without one tests for a deadline
// only where it would bail out anyway.
namespace {
template <bool kTimed>
[[gnu::always_inline]] inline bool fast_call(std::uint64_t* x) SPINDLE_NO_THREAD_SAFETY_ANALYSIS;
[[gnu::noinline]] bool fast_call_timed(std::uint64_t* x) { return fast_call<true>(x); }
// A peer's armed timeout (timer_cancel's cold half, taking the thread:
// the fast path then computes no timer address it rarely needs).
[[gnu::noinline]] void disarm_timeout(Tcb* t) SPINDLE_REQUIRES(g.lock) { timer_disarm(&t->timer); }

template <bool kTimed>
bool fast_call(std::uint64_t* x) {
  Tcb* self = current_thread();
  Proc* p = process_of(self);
  if (!p) return false;  // a bare user thread (run_user): the general path refuses the call
  // kSysChannelCallRegs: h, len (| kCallRegsDeadline), the request in x2
  // and x3, cap (, the deadline); kSysChannelCall: h, msg, len, buf, cap,
  // deadline.
  const bool regs = x[8] == kSysChannelCallRegs;
  const std::size_t len = regs ? x[1] & (kTimed ? ~kCallRegsDeadline : ~std::uint64_t{0}) : x[2];
  if (regs ? len > detail::kCallRegBytes || x[4] > detail::kCallRegBytes : len > kDirectBytes) {
    if (!kTimed && regs && (x[1] & kCallRegsDeadline)) return fast_call_timed(x);
    return false;
  }
  if (!kTimed && !regs && x[5] != deadline_arg(kForever)) return fast_call_timed(x);
  // A deadline arms the caller's timer as soon as the lock is held
  // (nothing can fire before the caller parks: interrupts are masked), and
  // a bail-out disarms it. One already past (or kTryOnly) is the general
  // path's: it decides whether anything is sent.
  const bool timed = kTimed && x[5] != deadline_arg(kForever);
  if (timed && deadline_from(x[5]) <= Clock::now()) return false;
  auto bail = [self] {
    if (kTimed) timer_cancel(&self->timer);
    unlock_keep_irqs_masked();
    return false;
  };
  FastPark park;
  g.lock.lock();
  if (timed) timer_arm(&self->timer, x[5]);
  End* end;
  if (lookup_end(p->handles, Handle{static_cast<std::uint32_t>(x[0])}, &end) != Status::kOk) return bail();
  Core* c = end->core;
  const unsigned me = end->side;
  const unsigned to = 1 - me;
  Direct* d = c->direct[to];
  Cpu& cpu = this_cpu();
  if (!d || len > d->cap || c->head[to] || c->holders[to] == 0 || c->head[me] || c->direct[me] ||
      !can_switch_directly(cpu, d->thread) || (!regs && (stage_for(*d), !arch::user_read_masked(d->data, x[1], len)))) {
    return bail();
  }
  if (regs) {  // the bytes past len: regs_from
    d->words[0] = x[2];
    d->words[1] = x[3];
  }
  // Committed: delivered to the peer, parked here, the peer runs.
  d->bytes = len;
  d->delivered = true;
  c->direct[to] = nullptr;
  Direct& mine = *new (&park.d) Direct;
  mine.thread = self;
  mine.cap = x[4] < kDirectBytes ? x[4] : kDirectBytes;
  mine.regs = regs;
  mine.frame = x;
  mine.buf = regs ? 0 : x[3];
  park.core = c;
  park.side = me;
  c->direct[me] = &mine;
  c->users++;
  Tcb* peer = d->thread;
  if (peer->timer.cpu() >= 0) [[unlikely]] disarm_timeout(peer);  // its wait ends as wake() would end it
  if (std::uint64_t* peer_frame = d->frame) {
    // The peer was parked here too: its call ends here, as its
    // continuation would end it (in its address space, active from
    // switch_directly_begin on), and it resumes at its user frame.
    switch_directly_begin(cpu, peer);
    Status ps = Status::kOk;
    if (d->regs) {
      regs_from(peer_frame, *d);
    } else {
      ps = copy_out_direct(c, to, process_of(peer), d->buf, *d);
    }
    c->users--;  // the peer's; the caller's handle keeps c
    peer_frame[0] = ps == Status::kOk ? result(Status::kOk) | d->bytes << 8 : result(ps);
    arch::context_switch_to_user(&self->ctx, peer_frame);
    finish_switch();  // here only when woken otherwise than by a fast call
    fast_call_resumed(x, park, current_thread()->wake_status);
  } else {
    fast_call_resumed(x, park, switch_directly(peer));
  }
  return true;
}
}  // namespace

bool syscall_fast(std::uint64_t* x) { return fast_call<false>(x); }

// No finish_switch() here: the thread switched away from is syscall_fast's
// caller, parked alive, so there is no zombie to reap (a dead thread's
// last switch is context_switch_final, resumed through finish_switch).
void resumed_at_user_frame() SPINDLE_NO_THREAD_SAFETY_ANALYSIS { unlock_keep_irqs_masked(); }

bool channel_syscall(Proc* p, arch::SyscallFrame& f) {
  std::uint64_t* a = f.arg;
  HandleTable* t = p->handles;
  switch (f.number) {
    case kSysChannelPair: {
      if (!arch::user_accessible(p->as, a[0], 2 * sizeof(Handle), true)) {
        f.result = result(Status::kInvalidArgument);
        return true;
      }
      Handle hs[2];
      Status s = pair(t, &hs[0], &hs[1]);
      if (s == Status::kOk) (void)arch::user_write(a[0], hs, sizeof hs);
      f.result = result(s);
      return true;
    }
    case kSysChannelCallRegs:  // not taken by syscall_fast: the user side calls again with buffers
      f.result = (a[1] & ~kCallRegsDeadline) > detail::kCallRegBytes || a[4] > detail::kCallRegBytes
                     ? result(Status::kInvalidArgument)
                     : kCallRegsGeneral;
      return true;
    case kSysChannelSend: {
      Handle hs[kMaxHandlesPerTransfer];
      if (a[4] > kMaxHandlesPerTransfer || !arch::user_read(hs, a[3], a[4] * sizeof(Handle))) {
        f.result = result(Status::kInvalidArgument);
        return true;
      }
      f.result = result(send(t, p, Handle{static_cast<std::uint32_t>(a[0])}, a[1], a[2], hs,
                             static_cast<unsigned>(a[4]), a[5]));
      return true;
    }
    case kSysChannelRecv: {
      unsigned hcap = a[4] < kMaxHandlesPerTransfer ? static_cast<unsigned>(a[4]) : kMaxHandlesPerTransfer;
      if (!arch::user_accessible(p->as, a[3], hcap * sizeof(Handle), true)) {
        f.result = result(Status::kInvalidArgument);
        return true;
      }
      Handle hs[kMaxHandlesPerTransfer];
      Result<Received> r = recv(t, p, Handle{static_cast<std::uint32_t>(a[0])}, a[1], a[2], hs, hcap, a[5]);
      if (!r.ok()) {
        f.result = result(r.status());
        return true;
      }
      (void)arch::user_write(a[3], hs, r->handles * sizeof(Handle));
      f.result = result(Status::kOk) | r->bytes << 8 | static_cast<std::uint64_t>(r->handles) << 40;
      return true;
    }
    case kSysShm: {
      switch (a[0]) {
        case kShmCreate: {
          Result<Handle> h = shm_new(t, a[1]);
          f.result = h.ok() ? result(Status::kOk) | static_cast<std::uint64_t>(h->value) << 32 : result(h.status());
          return true;
        }
        case kShmMap: {
          if (!arch::user_accessible(p->as, a[2], sizeof(detail::Mapping), true)) {
            f.result = result(Status::kInvalidArgument);
            return true;
          }
          Result<detail::Mapping> m = shm_map_in(t, p, Handle{static_cast<std::uint32_t>(a[1])});
          if (m.ok()) (void)arch::user_write(a[2], &*m, sizeof(detail::Mapping));
          f.result = result(m.ok() ? Status::kOk : m.status());
          return true;
        }
        case kShmUnmap: {
          unsigned waiting = shm_unmap_in(t, p, a[1]);
          f.result = waiting == 0 ? 0 : result(Status::kInvalidState) | std::uint64_t{waiting} << 32;
          return true;
        }
        default: f.result = result(Status::kInvalidArgument); return true;
      }
    }
    case kSysHandle: {
      Handle h{static_cast<std::uint32_t>(a[1])};
      switch (a[0]) {
        case kHandleKind: f.result = static_cast<std::uint64_t>(kind(t, h)); return true;
        case kHandleClose: f.result = result(close(t, h)); return true;
        case kHandleDuplicate: {
          Result<Handle> d = duplicate(t, h, a[2] ? Access::kReadWrite : Access::kReadOnly);
          f.result = d.ok() ? result(Status::kOk) | static_cast<std::uint64_t>(d->value) << 32 : result(d.status());
          return true;
        }
        default: f.result = result(Status::kInvalidArgument); return true;
      }
    }
    default: return false;
  }
}

}  // namespace spindle::kernel

// ---------------------------------------------------------------------------
// The API: the kernel's copy calls the operations on its own table; a
// process's copy makes the system calls.

namespace spindle {

using namespace kernel;

namespace {
std::uint64_t deadline_or_try(TimePoint deadline) { return deadline_arg(deadline); }
Status unpack(std::uint64_t r) { return status_from(r & 0xff); }
}  // namespace

namespace detail {

Status channel_pair(Handle* a, Handle* b) {
  if (in_user_process()) {
    Handle hs[2];
    Status s = status_from(sys(kSysChannelPair, user_arg(hs)));
    if (s == Status::kOk) {
      *a = hs[0];
      *b = hs[1];
    }
    return s;
  }
  return pair(&g_kernel_table, a, b);
}

namespace {
Status send_any(Handle h, std::span<const std::byte> msg, std::span<const Handle> handles, std::uint64_t deadline) {
  if (in_user_process()) {
    return status_from(sys(kSysChannelSend, h.value, user_arg(msg.data()), msg.size(), user_arg(handles.data()),
                           handles.size(), deadline));
  }
  if (handles.size() > kMaxHandlesPerTransfer) return Status::kInvalidArgument;
  return send(&g_kernel_table, nullptr, h, reinterpret_cast<std::uintptr_t>(msg.data()), msg.size(), handles.data(),
              static_cast<unsigned>(handles.size()), deadline);
}

Result<Received> recv_any(Handle h, std::span<std::byte> buf, std::span<Handle> handles, std::uint64_t deadline) {
  if (in_user_process()) {
    std::uint64_t r = sys(kSysChannelRecv, h.value, user_arg(buf.data()), buf.size(), user_arg(handles.data()),
                          handles.size(), deadline);
    Status s = unpack(r);
    if (s != Status::kOk) return s;
    return Received{static_cast<std::size_t>(r >> 8 & 0xFFFFFFFF), static_cast<std::size_t>(r >> 40)};
  }
  unsigned hcap = handles.size() < kMaxHandlesPerTransfer ? static_cast<unsigned>(handles.size()) : kMaxHandlesPerTransfer;
  return recv(&g_kernel_table, nullptr, h, reinterpret_cast<std::uintptr_t>(buf.data()), buf.size(), handles.data(),
              hcap, deadline);
}
}  // namespace

Status channel_send(Handle h, std::span<const std::byte> msg, std::span<const Handle> handles, TimePoint deadline) {
  return send_any(h, msg, handles, deadline_or_try(deadline));
}
std::uint64_t channel_call_word(Handle h, const std::byte* msg, std::size_t len, std::byte* buf, std::size_t cap,
                                TimePoint deadline) {
  if (in_user_process()) {
    return sys(kSysChannelCall, h.value, user_arg(msg), len, user_arg(buf), cap, deadline_arg(deadline));
  }
  Result<Received> r = call(&g_kernel_table, nullptr, h, reinterpret_cast<std::uintptr_t>(msg), len,
                            reinterpret_cast<std::uintptr_t>(buf), cap, deadline_arg(deadline));
  return r.ok() ? result(Status::kOk) | r->bytes << 8 : result(r.status());
}
namespace {
// channel_call_regs(_until) past the register call: `why` is its answer,
// or kCallRegsGeneral outside a process.
[[gnu::noinline]] std::uint64_t call_regs_rest(Handle h, std::size_t len, std::uint64_t m0, std::uint64_t m1,
                                               std::size_t cap, std::uint64_t* reply, std::uint64_t why,
                                               TimePoint deadline) {
  if (why == kCallRegsSent) {
    Result<Received> got = recv_any(h, {reinterpret_cast<std::byte*>(reply), cap}, {}, deadline_arg(deadline));
    return got.ok() ? result(Status::kOk) | got->bytes << 8 : result(got.status());
  }
  if (why != kCallRegsGeneral) return why;  // a bare user thread's (tests): not a process
  const std::uint64_t m[2] = {m0, m1};
  return channel_call_word(h, reinterpret_cast<const std::byte*>(m), len, reinterpret_cast<std::byte*>(reply), cap,
                           deadline);
}

[[gnu::always_inline]] inline std::uint64_t regs_reply(arch::UserRegs r, std::uint64_t* reply) {
  reply[0] = r.x1;
  reply[1] = r.x2;
  return r.x0;
}
}  // namespace

// Two functions, not one with a deadline: the call without one (system
// call 26) sets no sixth register and tests no deadline.
std::uint64_t channel_call_regs(Handle h, std::size_t len, std::uint64_t m0, std::uint64_t m1, std::size_t cap,
                                std::uint64_t* reply) {
  if (!in_user_process()) return call_regs_rest(h, len, m0, m1, cap, reply, kCallRegsGeneral, kForever);
  arch::UserRegs r = arch::user_syscall_regs(kSysChannelCallRegs, h.value, len, m0, m1, cap);
  if ((r.x0 & 0xff) >= kCallRegsSent) [[unlikely]] return call_regs_rest(h, len, m0, m1, cap, reply, r.x0, kForever);
  return regs_reply(r, reply);
}
std::uint64_t channel_call_regs_until(Handle h, std::size_t len, std::uint64_t m0, std::uint64_t m1, std::size_t cap,
                                      std::uint64_t* reply, TimePoint deadline) {
  if (!in_user_process()) return call_regs_rest(h, len, m0, m1, cap, reply, kCallRegsGeneral, deadline);
  arch::UserRegs r = arch::user_syscall_regs(kSysChannelCallRegs, h.value, len | kCallRegsDeadline, m0, m1, cap,
                                             deadline_arg(deadline));
  if ((r.x0 & 0xff) >= kCallRegsSent) [[unlikely]] return call_regs_rest(h, len, m0, m1, cap, reply, r.x0, deadline);
  return regs_reply(r, reply);
}
Result<Received> channel_recv(Handle h, std::span<std::byte> buf, std::span<Handle> handles, TimePoint deadline) {
  return recv_any(h, buf, handles, deadline_or_try(deadline));
}
Status channel_try_send(Handle h, std::span<const std::byte> msg, std::span<const Handle> handles) {
  return send_any(h, msg, handles, kTryOnly);
}
Result<Received> channel_try_recv(Handle h, std::span<std::byte> buf, std::span<Handle> handles) {
  return recv_any(h, buf, handles, kTryOnly);
}

}  // namespace detail

Status kernel::channel_wait_word(HandleTable* t, Handle h, bool writable, const std::atomic<std::uint32_t>** word,
                         std::uint32_t* seen) {
  End* end = nullptr;
  if (Status s = lookup_end(t, h, &end); s != Status::kOk) return s;
  Core* c = end->core;
  const unsigned me = end->side;
  const unsigned to = 1 - me;
  bool ready = writable ? c->holders[to] == 0 || c->queued[to] == 0 : c->head[me] || c->holders[to] == 0;
  if (ready) return Status::kOk;
  *word = writable ? &c->writable[to] : &c->readable[me];
  *seen = (*word)->load(std::memory_order_acquire);
  return Status::kWouldBlock;
}

namespace detail {

namespace {
// In a process: the job waits for the end in the kernel (a proxy on the
// end's word, kSysJobWait with kJobWaitChannel).
class EndWait {
 public:
  EndWait(Handle h, bool writable, TimePoint deadline) : h_(h), writable_(writable), deadline_(deadline) {}
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> c) noexcept {
    status_ = kPending;
    return job_wait_channel(c, h_.value, writable_, deadline_, &status_);
  }
  // kOk: look again (woken, or ready at once: kWouldBlock from the call).
  Status await_resume() const noexcept {
    Status s = status_ == kPending ? job_wake_status() : status_;
    return s == Status::kWouldBlock ? Status::kOk : s;
  }

 private:
  Handle h_;
  bool writable_;
  TimePoint deadline_;
  Status status_ = kPending;
};
}  // namespace

// A wait is on the channel's words like a thread's; "may be written" is an
// empty peer queue (the size of the message that did not fit is not known
// here, so any smaller bar could make send_async spin), or a closed peer.
// A kernel coroutine waits on the word itself; a process's through its
// job's proxy (EndWait), which the kernel queues on the same word.
Task<Status> channel_wait_async(Handle h, bool writable, TimePoint deadline) {
  if (in_user_process()) {
    co_return co_await EndWait(h, writable, deadline);
  }
  End* end = nullptr;
  if (Status s = begin_op(&g_kernel_table, h, &end); s != Status::kOk) co_return s;
  struct Op {  // ends the operation when the frame goes, cancellation included
    End* end;
    ~Op() { end_op(end); }
  } op{end};
  for (;;) {
    const std::atomic<std::uint32_t>* word;
    std::uint32_t seen;
    {
      LockGuard guard;
      if (channel_wait_word(&g_kernel_table, h, writable, &word, &seen) != Status::kWouldBlock) co_return Status::kOk;
    }
    Status w = co_await WordWait(word, seen, deadline, WaitOrder::kPriority, "channel");
    if (w == Status::kTimedOut) co_return w;
  }
}

}  // namespace detail

HandleKind handle_kind(Handle h) {
  if (in_user_process()) return static_cast<HandleKind>(sys(kSysHandle, kHandleKind, h.value));
  return kind(&g_kernel_table, h);
}

Status handle_close(Handle h) {
  if (in_user_process()) return status_from(sys(kSysHandle, kHandleClose, h.value));
  return close(&g_kernel_table, h);
}

Result<Handle> handle_duplicate(Handle h, Access access) {
  if (in_user_process()) {
    std::uint64_t r = sys(kSysHandle, kHandleDuplicate, h.value, access == Access::kReadWrite ? 1 : 0);
    Status s = unpack(r);
    if (s != Status::kOk) return s;
    return Handle{static_cast<std::uint32_t>(r >> 32)};
  }
  return duplicate(&g_kernel_table, h, access);
}

namespace detail {

Result<Handle> shm_create(std::size_t size, const char*) {
  if (in_user_process()) {
    std::uint64_t r = sys(kSysShm, kShmCreate, size);
    Status s = unpack(r);
    if (s != Status::kOk) return s;
    return Handle{static_cast<std::uint32_t>(r >> 32)};
  }
  return shm_new(&g_kernel_table, size);
}

Result<Mapping> shm_map(Handle h) {
  if (in_user_process()) {
    Mapping m;
    Status s = status_from(sys(kSysShm, kShmMap, h.value, user_arg(&m)));
    if (s != Status::kOk) return s;
    return m;
  }
  return shm_map_in(&g_kernel_table, nullptr, h);
}

unsigned shm_unmap(const Mapping& m) {
  if (in_user_process()) return static_cast<unsigned>(sys(kSysShm, kShmUnmap, user_arg(m.data)) >> 32);
  return shm_unmap_in(&g_kernel_table, nullptr, reinterpret_cast<std::uintptr_t>(m.data));
}

}  // namespace detail

namespace this_process {
Handle handle(unsigned i) {
  if (!in_user_process()) return Handle{};
  unsigned n = static_cast<unsigned>(sys(kSysInfo, kInfoSpawnHandles));
  return i < n ? Handle{1u << 8 | (i + 1)} : Handle{};
}
}  // namespace this_process

}  // namespace spindle
