// Hosted handles, channels and shared memory (spindle/handle.h,
// spindle/channel.h, spindle/shared_memory.h).
//
// Every handle names an Object holding a host descriptor: a channel end is
// one end of an AF_UNIX SOCK_SEQPACKET socket pair, a region is a memfd
// (opened read-only for a read-only handle). Linux then does what the
// Spindle kernel does on bare metal: it copies each message (one record,
// boundaries kept), bounds the queue, transfers handles (SCM_RIGHTS, so a
// descriptor's access mode travels with it and cannot be raised), reports a
// dead peer (EOF, EPIPE) and refuses bad user buffers (EFAULT) without
// faulting the caller. See docs/architecture.md for why a socket rather
// than a ring in shared memory: a peer can corrupt a shared ring, it cannot
// corrupt a socket.
//
// Wire format: every record is a fixed Header, then the payload. The
// header says how many handles ride along and what they are.
//
// Invariants:
// - g_lock (interrupts masked, never held across a blocking call) protects
//   g_slots. A handle value is (generation << 8) | index; closing a slot
//   bumps its generation, so a stale or forged value matches no slot.
// - An Object lives while its slot or a call in progress holds a
//   reference (refs); the last release closes the descriptor. So a close
//   from another thread never pulls a descriptor from under a blocked call.
// - A receive peeks, checks, then consumes one record; recv_lock makes that
//   pair atomic against other receivers on the same end. It is never held
//   across a wait.
// - A coroutine's wait (channel_wait_async) is an AsyncWait on the heap
//   with two references: the coroutine's (dropped when it resumes or when
//   its frame is destroyed by cancellation, which also pokes cancel_fd so
//   the helper's ppoll returns) and the kernel's (dropped by `delivered`
//   after the kernel's last touch). It holds a reference to the Object, so
//   the descriptor outlives the helper's ppoll.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>

#include <arch/arch.h>

#include "hosted_internal.h"
#include "spindle/channel.h"
#include "spindle/hosted.h"
#include "spindle/mutex.h"
#include "spindle/shared_memory.h"
#include "spindle/task.h"
#include "spindle/thread.h"

namespace spindle::hosted {

struct Object {
  std::atomic<int> refs{1};
  HandleKind kind = HandleKind::kNone;
  Access access = Access::kReadWrite;
  int fd = -1;
  std::size_t size = 0;  // regions
  bool charged = false;  // a region this process created: its size counts against the memory limit
  FairMutex recv_lock{"channel receive"};  // one receive attempt at a time (held briefly)
};

namespace {

struct Slot {
  std::uint32_t gen = 1;
  Object* obj = nullptr;
};

class TableLock {
 public:
  TableLock() : saved_(arch::irq_save()) {
    while (g_busy.exchange(true, std::memory_order_acquire)) arch::cpu_relax();
  }
  ~TableLock() {
    g_busy.store(false, std::memory_order_release);
    arch::irq_restore(saved_);
  }

 private:
  static inline std::atomic<bool> g_busy{false};
  arch::IrqState saved_;
};

Slot g_slots[kMaxHandles + 1];  // index 0 unused

constexpr std::uint32_t kIndexBits = 8;
constexpr std::uint32_t kIndexMask = (1u << kIndexBits) - 1;

void release(Object* o) {
  if (o->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    if (o->charged) arch::hosted_uncharge(o->size);
    close(o->fd);
    delete o;
  }
}

// A new handle for o (which the table then owns); kLimit when full.
Result<Handle> insert(Object* o) {
  TableLock l;
  for (std::uint32_t i = 1; i <= kMaxHandles; ++i) {
    if (!g_slots[i].obj) {
      g_slots[i].obj = o;
      return Handle{g_slots[i].gen << kIndexBits | i};
    }
  }
  return Status::kLimit;
}

unsigned free_slots() {
  TableLock l;
  unsigned n = 0;
  for (std::uint32_t i = 1; i <= kMaxHandles; ++i) n += g_slots[i].obj == nullptr;
  return n;
}

// The object h names, with a reference for the caller; nullptr if h is
// invalid, closed or forged.
Object* acquire(Handle h) {
  std::uint32_t i = h.value & kIndexMask;
  if (i == 0 || i > kMaxHandles) return nullptr;
  TableLock l;
  Slot& s = g_slots[i];
  if (!s.obj || s.gen != h.value >> kIndexBits) return nullptr;
  s.obj->refs.fetch_add(1, std::memory_order_relaxed);
  return s.obj;
}

struct Ref {
  explicit Ref(Handle h) : obj(acquire(h)) {}
  ~Ref() {
    if (obj) release(obj);
  }
  Ref(const Ref&) = delete;
  Ref& operator=(const Ref&) = delete;
  Object* obj;
};

Result<Handle> insert_new(HandleKind kind, Access access, int fd, std::size_t size) {
  auto* o = new (std::nothrow) Object;
  if (!o) {
    close(fd);
    return Status::kNoMemory;
  }
  o->kind = kind;
  o->access = access;
  o->fd = fd;
  o->size = size;
  Result<Handle> h = insert(o);
  if (!h.ok()) release(o);
  return h;
}

// Waits until fd is ready for `events` or the deadline passes: false on
// timeout. Blocks the calling Spindle thread only. A peer that answers
// within a few microseconds is caught by polling first (yielding between
// polls to other threads of this vCPU, and to the host: the peer's vCPU
// may share this host core, and would otherwise wait for the poll to end);
// only a longer wait pays for the hand-off to a helper host thread and the
// wake-up back.
bool wait_fd(int fd, short events, TimePoint deadline) {
  constexpr std::uint64_t kSpinNs = 30'000;
  std::uint64_t spin_end = arch::now_ns() + kSpinNs;
  do {
    pollfd p{fd, events, 0};
    if (poll(&p, 1, 0) > 0) return true;
    this_thread::yield();
    sched_yield();
  } while (arch::now_ns() < spin_end);
  long long left = -1;
  if (deadline != kForever) {
    left = std::chrono::duration_cast<Duration>(deadline - Clock::now()).count();
    if (left <= 0) return false;
  }
  long n = host_call([&]() -> long {
    pollfd p{fd, events, 0};
    timespec ts{static_cast<time_t>(left / 1'000'000'000), static_cast<long>(left % 1'000'000'000)};
    int r;
    do {
      r = ppoll(&p, 1, left < 0 ? nullptr : &ts, nullptr);
    } while (r < 0 && errno == EINTR);
    return r;
  });
  return n != 0;
}

struct HandleInfo {
  std::uint8_t kind;
  std::uint8_t access;
  std::uint8_t pad[6];
  std::uint64_t size;
};

struct Header {
  std::uint32_t len;
  std::uint32_t handles;
  HandleInfo info[kMaxHandlesPerTransfer];
};

// Reopens a region's memfd read-only: the new descriptor's access mode is
// what the receiver's mmap is checked against.
int reopen_read_only(int fd) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  return open(path, O_RDONLY | O_CLOEXEC);
}

// Spawned processes: the handles given at spawn, in order.
Handle g_inherited[kMaxHandlesPerTransfer];

}  // namespace

// ---------------------------------------------------------------------------
// Handle transfer (channel_send, and spawning in process.cc).

Status acquire_handles(std::span<const Handle> hs, Object** objs) {
  for (std::size_t i = 0; i < hs.size(); ++i) {
    objs[i] = acquire(hs[i]);
    if (!objs[i]) {
      release_handles(objs, i);
      return Status::kNotFound;
    }
  }
  return Status::kOk;
}

void release_handles(Object** objs, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) release(objs[i]);
}

SpawnedHandle spawn_handle_info(const Object* o) {
  return {static_cast<std::uint8_t>(o->kind), static_cast<std::uint8_t>(o->access), o->fd, o->size};
}

void adopt_inherited(const SpawnedHandle* hs, unsigned n) {
  for (unsigned i = 0; i < n && i < kMaxHandlesPerTransfer; ++i) {
    Result<Handle> h = insert_new(static_cast<HandleKind>(hs[i].kind), static_cast<Access>(hs[i].access), hs[i].fd,
                                  hs[i].size);
    g_inherited[i] = h.ok() ? *h : Handle{};
  }
}

}  // namespace spindle::hosted

namespace spindle {

using hosted::Object;
using hosted::Ref;

HandleKind handle_kind(Handle h) {
  Ref r(h);
  return r.obj ? r.obj->kind : HandleKind::kNone;
}

Status handle_close(Handle h) {
  std::uint32_t i = h.value & hosted::kIndexMask;
  if (i == 0 || i > kMaxHandles) return Status::kNotFound;
  Object* o;
  {
    hosted::TableLock l;
    hosted::Slot& s = hosted::g_slots[i];
    if (!s.obj || s.gen != h.value >> hosted::kIndexBits) return Status::kNotFound;
    o = s.obj;
    s.obj = nullptr;
    s.gen = (s.gen + 1) & 0xFFFFFF;
    if (s.gen == 0) s.gen = 1;
  }
  hosted::release(o);
  return Status::kOk;
}

Result<Handle> handle_duplicate(Handle h, Access access) {
  Ref r(h);
  if (!r.obj) return Status::kNotFound;
  if (access == Access::kReadWrite && r.obj->access == Access::kReadOnly) return Status::kInvalidArgument;
  int fd = r.obj->kind == HandleKind::kSharedMemory && access == Access::kReadOnly
               ? hosted::reopen_read_only(r.obj->fd)
               : fcntl(r.obj->fd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return Status::kLimit;
  return hosted::insert_new(r.obj->kind, access, fd, r.obj->size);
}

namespace this_process {
Handle handle(unsigned i) { return i < kMaxHandlesPerTransfer ? hosted::g_inherited[i] : Handle{}; }
}  // namespace this_process

namespace detail {

Status channel_pair(Handle* a, Handle* b) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) {
    return errno == EMFILE || errno == ENFILE ? Status::kLimit : Status::kNoMemory;
  }
  Result<Handle> ha = hosted::insert_new(HandleKind::kChannel, Access::kReadWrite, sv[0], 0);
  if (!ha.ok()) {
    close(sv[1]);
    return ha.status();
  }
  Result<Handle> hb = hosted::insert_new(HandleKind::kChannel, Access::kReadWrite, sv[1], 0);
  if (!hb.ok()) {
    (void)handle_close(*ha);
    return hb.status();
  }
  *a = *ha;
  *b = *hb;
  return Status::kOk;
}

// One send attempt loop: with `wait`, blocks (until the deadline) while
// the peer's queue is full; without, returns kWouldBlock then.
Status send_impl(Handle h, std::span<const std::byte> msg, std::span<const Handle> handles, TimePoint deadline,
                 bool wait) {
  if (msg.size() > kMaxMessageBytes || handles.size() > kMaxHandlesPerTransfer) return Status::kInvalidArgument;
  Ref end(h);
  if (!end.obj) return Status::kNotFound;
  if (end.obj->kind != HandleKind::kChannel) return Status::kInvalidArgument;
  Object* objs[kMaxHandlesPerTransfer];
  Status s = hosted::acquire_handles(handles, objs);
  if (s != Status::kOk) return s;

  hosted::Header hdr{};
  hdr.len = static_cast<std::uint32_t>(msg.size());
  hdr.handles = static_cast<std::uint32_t>(handles.size());
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxHandlesPerTransfer)] = {};
  msghdr m{};
  iovec iov[2] = {{&hdr, sizeof hdr}, {const_cast<std::byte*>(msg.data()), msg.size()}};
  m.msg_iov = iov;
  m.msg_iovlen = 2;
  if (!handles.empty()) {
    m.msg_control = control;
    m.msg_controllen = CMSG_SPACE(sizeof(int) * handles.size());
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * handles.size());
    for (std::size_t i = 0; i < handles.size(); ++i) {
      hdr.info[i].kind = static_cast<std::uint8_t>(objs[i]->kind);
      hdr.info[i].access = static_cast<std::uint8_t>(objs[i]->access);
      hdr.info[i].size = objs[i]->size;
      std::memcpy(CMSG_DATA(c) + i * sizeof(int), &objs[i]->fd, sizeof(int));
    }
  }
  for (;;) {
    if (sendmsg(end.obj->fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) {
      s = Status::kOk;
      break;
    }
    int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN) {
      if (!wait) {
        s = Status::kWouldBlock;
        break;
      }
      if (!hosted::wait_fd(end.obj->fd, POLLOUT, deadline)) {
        s = Status::kTimedOut;
        break;
      }
      continue;
    }
    s = e == EPIPE || e == ECONNRESET ? Status::kClosed
        : e == EFAULT || e == EMSGSIZE ? Status::kInvalidArgument
        : e == ENOBUFS || e == ENOMEM ? Status::kNoMemory
                                      : Status::kInvalidState;
    break;
  }
  hosted::release_handles(objs, handles.size());
  return s;
}

// One receive, recv_lock held: peek into the caller's buffer (which checks
// that it may be written, EFAULT, and that the message fits) before
// anything is consumed, then consume. kWouldBlock when nothing is queued.
Result<Received> recv_once(Object* o, std::span<std::byte> buf, std::span<Handle> handles) {
  int fd = o->fd;
  hosted::Header hdr{};
  for (;;) {
    iovec iov[2] = {{&hdr, sizeof hdr}, {buf.data(), buf.size()}};
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = 2;
    ssize_t n = recvmsg(fd, &m, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) {
      if (static_cast<std::size_t>(n) < sizeof hdr || hdr.handles > kMaxHandlesPerTransfer) {
        (void)recv(fd, &hdr, 0, MSG_DONTWAIT);  // malformed: drop it
        return Status::kInvalidState;
      }
      break;
    }
    if (n == 0) return Status::kClosed;
    int e = errno;
    if (e == EINTR) continue;
    if (e == EFAULT) return Status::kInvalidArgument;
    return e == EAGAIN ? Status::kWouldBlock : Status::kClosed;
  }
  if (hdr.len > buf.size() || hdr.handles > handles.size()) return Status::kOverflow;
  if (hdr.handles > hosted::free_slots()) return Status::kLimit;
  // Consume it: the payload is already in buf; take the header again and
  // the descriptors.
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxHandlesPerTransfer)] = {};
  iovec iov{&hdr, sizeof hdr};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = control;
  m.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = recvmsg(fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < static_cast<ssize_t>(sizeof hdr)) return Status::kInvalidState;
  Received got{hdr.len, 0};
  for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    std::size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < nfd; ++i) {
      int f;
      std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
      if (got.handles >= hdr.handles) {
        close(f);
        continue;
      }
      const hosted::HandleInfo& info = hdr.info[got.handles];
      Result<Handle> nh = hosted::insert_new(static_cast<HandleKind>(info.kind), static_cast<Access>(info.access), f,
                                             info.size);
      handles[got.handles++] = nh.ok() ? *nh : Handle{};
    }
  }
  return got;
}

// Receives, with `wait` blocking until the deadline while nothing is
// queued. recv_lock is held only around one attempt (two non-blocking
// system calls), never across a wait, so a coroutine may take it too.
Result<Received> recv_impl(Handle h, std::span<std::byte> buf, std::span<Handle> handles, TimePoint deadline,
                           bool wait) {
  Ref end(h);
  if (!end.obj) return Status::kNotFound;
  if (end.obj->kind != HandleKind::kChannel) return Status::kInvalidArgument;
  for (;;) {
    {
      std::lock_guard<FairMutex> guard(end.obj->recv_lock);
      Result<Received> r = recv_once(end.obj, buf, handles);
      if (r.ok() || r.status() != Status::kWouldBlock || !wait) return r;
    }
    if (!hosted::wait_fd(end.obj->fd, POLLIN, deadline)) return Status::kTimedOut;
  }
}

Status channel_send(Handle h, std::span<const std::byte> msg, std::span<const Handle> handles, TimePoint deadline) {
  return send_impl(h, msg, handles, deadline, true);
}
Status channel_try_send(Handle h, std::span<const std::byte> msg, std::span<const Handle> handles) {
  return send_impl(h, msg, handles, kForever, false);
}
Result<Received> channel_recv(Handle h, std::span<std::byte> buf, std::span<Handle> handles, TimePoint deadline) {
  return recv_impl(h, buf, handles, deadline, true);
}
Result<Received> channel_try_recv(Handle h, std::span<std::byte> buf, std::span<Handle> handles) {
  return recv_impl(h, buf, handles, kForever, false);
}
// No fast path here (each end is a socket): a send, then a receive with
// no handle room (a reply that carries handles is kOverflow and stays
// queued, as on aarch64).
std::uint64_t channel_call_word(Handle h, const std::byte* msg, std::size_t len, std::byte* buf, std::size_t cap,
                                TimePoint deadline) {
  auto word = [](Status s) { return static_cast<std::uint64_t>(static_cast<int>(s)); };
  if (Status s = send_impl(h, {msg, len}, {}, deadline, true); s != Status::kOk) return word(s);
  Result<Received> r = recv_impl(h, {buf, cap}, {}, deadline, true);
  return r.ok() ? r->bytes << 8 : word(r.status());
}
std::uint64_t channel_call_regs_until(Handle h, std::size_t len, std::uint64_t m0, std::uint64_t m1, std::size_t cap,
                                      std::uint64_t* reply, TimePoint deadline) {
  const std::uint64_t m[2] = {m0, m1};
  return channel_call_word(h, reinterpret_cast<const std::byte*>(m), len, reinterpret_cast<std::byte*>(reply), cap,
                           deadline);
}
std::uint64_t channel_call_regs(Handle h, std::size_t len, std::uint64_t m0, std::uint64_t m1, std::size_t cap,
                                std::uint64_t* reply) {
  return channel_call_regs_until(h, len, m0, m1, cap, reply, kForever);
}

namespace {

struct AsyncWait {
  kernel::ExternalWake wake;
  std::atomic<int> refs{2};
  Object* obj;
  short events;
  long long left_ns;  // < 0: no deadline
  int cancel_fd;
  bool timed_out = false;

  void release() {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      close(cancel_fd);
      hosted::release(obj);
      delete this;
    }
  }
};

long async_wait_poll(void* p) {
  auto* w = static_cast<AsyncWait*>(p);
  pollfd fds[2] = {{w->obj->fd, w->events, 0}, {w->cancel_fd, POLLIN, 0}};
  timespec ts{static_cast<time_t>(w->left_ns / 1'000'000'000), static_cast<long>(w->left_ns % 1'000'000'000)};
  int r;
  do {
    r = ppoll(fds, 2, w->left_ns < 0 ? nullptr : &ts, nullptr);
  } while (r < 0 && errno == EINTR);
  w->timed_out = r == 0;
  return r;
}

}  // namespace

Task<Status> channel_wait_async(Handle h, bool writable, TimePoint deadline) {
  Object* o = hosted::acquire(h);
  if (!o) co_return Status::kNotFound;
  short events = writable ? POLLOUT : POLLIN;
  pollfd p{o->fd, events, 0};
  long long left = -1;
  if (deadline != kForever) left = std::chrono::duration_cast<Duration>(deadline - Clock::now()).count();
  Status early = poll(&p, 1, 0) > 0                      ? Status::kOk
                 : (deadline != kForever && left <= 0)    ? Status::kTimedOut
                                                          : Status::kWouldBlock;
  int cancel_fd = early == Status::kWouldBlock ? eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) : -1;
  if (early == Status::kWouldBlock && cancel_fd < 0) early = Status::kNoMemory;
  if (early != Status::kWouldBlock) {
    hosted::release(o);
    co_return early;
  }
  auto* w = new AsyncWait{{}, {2}, o, events, left, cancel_fd};
  w->wake.delivered = [](kernel::ExternalWake* e) { reinterpret_cast<AsyncWait*>(e)->release(); };
  struct Guard {
    AsyncWait* w;
    bool done = false;
    ~Guard() {
      if (!done) {  // cancelled: stop the helper's wait
        std::uint64_t one = 1;
        (void)!::write(w->cancel_fd, &one, sizeof one);
      }
      w->release();
    }
  } guard{w};
  hosted::host_call_async(async_wait_poll, w, &w->wake);
  while (w->wake.word.load(std::memory_order_acquire) == 0) {
    (void)co_await WordWait(&w->wake.word, 0, kForever, WaitOrder::kPriority, "channel");
  }
  guard.done = true;
  co_return w->timed_out ? Status::kTimedOut : Status::kOk;
}

Result<Handle> shm_create(std::size_t size, const char* name) {
  if (size == 0 || size > (std::size_t{1} << 40)) return Status::kInvalidArgument;
  std::size_t rounded = (size + arch::kPageSize - 1) / arch::kPageSize * arch::kPageSize;
  if (!arch::hosted_charge(rounded)) return Status::kLimit;
  int fd = memfd_create(name ? name : "shared", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, static_cast<off_t>(rounded)) != 0) {
    if (fd >= 0) close(fd);
    arch::hosted_uncharge(rounded);
    return Status::kNoMemory;
  }
  Result<Handle> h = hosted::insert_new(HandleKind::kSharedMemory, Access::kReadWrite, fd, rounded);
  if (!h.ok()) {
    arch::hosted_uncharge(rounded);
    return h.status();
  }
  hosted::Ref r(*h);
  r.obj->charged = true;
  return h;
}

Result<Mapping> shm_map(Handle h) {
  Ref r(h);
  if (!r.obj) return Status::kNotFound;
  if (r.obj->kind != HandleKind::kSharedMemory) return Status::kInvalidArgument;
  // The process tree's table first: from the moment a thread here can own
  // a lock in the region, its end must be recorded there (shared_words.cc).
  if (hosted::host_call([] { return hosted::tree_ready() ? 0L : 1L; }) != 0) return Status::kNoMemory;
  int prot = PROT_READ | (r.obj->access == Access::kReadWrite ? PROT_WRITE : 0);
  void* p = mmap(nullptr, r.obj->size, prot, MAP_SHARED, r.obj->fd, 0);
  if (p == MAP_FAILED) return Status::kNoMemory;
  // Its words are waited on by other processes' kernels too (shared_words.cc).
  if (Status st = hosted::register_shared(p, r.obj->size); st != Status::kOk) {
    munmap(p, r.obj->size);
    return st;
  }
  return Mapping{static_cast<std::byte*>(p), r.obj->size, r.obj->access};
}

unsigned shm_unmap(const Mapping& m) {
  if (unsigned waiting = hosted::unregister_shared(m.data)) return waiting;
  munmap(m.data, m.size);
  return 0;
}

}  // namespace detail
}  // namespace spindle
