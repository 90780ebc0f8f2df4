// Channels: kernel-mediated message passing between processes.
//
// A channel is a connected pair of ends. Each end sends to the other and
// receives from it; messages keep their boundaries, are copied by the
// kernel (the receiver never sees the sender's memory), and may carry
// handles. Each direction is bounded: a send blocks while the peer's queue
// is full. When one end is closed, or its process ends, the other end's
// receives drain what was sent and then return kClosed, and its sends
// return kClosed at once.
//
//   auto [mine, theirs] = spindle::Channel::create().value();
//   spindle::Handle give[] = {theirs.handle()};
//   opts.handles = give;                       // the child gets its own handle
//   auto child = spindle::Process::spawn(opts, worker);
//   theirs.close();
//   mine.send_value(42);
//   // in worker: auto ch = spindle::Channel::adopt(spindle::this_process::handle(0)).value();
//   //            int v = ch.recv_value<int>().value();
//
// Any thread may use an end, and any coroutine (send_async, recv_async);
// concurrent sends (and concurrent receives) on one end are served one at
// a time.
#pragma once

#include <cstddef>
#include <cstring>
#include <span>
#include <type_traits>
#include <utility>

#include "spindle/handle.h"
#include "spindle/status.h"
#include "spindle/task.h"
#include "spindle/time.h"

namespace spindle {

// The largest message a channel carries.
inline constexpr std::size_t kMaxMessageBytes = 64 * 1024;

struct Received {
  std::size_t bytes = 0;    // message length
  std::size_t handles = 0;  // handles received (written to the caller's span)
};

namespace detail {
Status channel_pair(Handle* a, Handle* b);
Status channel_send(Handle h, std::span<const std::byte> msg, std::span<const Handle> handles, TimePoint deadline);
Result<Received> channel_recv(Handle h, std::span<std::byte> buf, std::span<Handle> handles, TimePoint deadline);
// channel_send(h, msg) then channel_recv(h, buf), no handles, as one call
// (one system call in a process; on aarch64 the fast path of a call). The
// result is one word, the system call's own: the status in bits 0..7, the
// reply's length in bits 8..39 (so a process's call returns it in a
// register, and channel_call below unpacks it inline).
std::uint64_t channel_call_word(Handle h, const std::byte* msg, std::size_t len, std::byte* buf, std::size_t cap,
                                TimePoint deadline);
inline Result<Received> channel_call(Handle h, std::span<const std::byte> msg, std::span<std::byte> buf,
                                     TimePoint deadline) {
  std::uint64_t r = channel_call_word(h, msg.data(), msg.size(), buf.data(), buf.size(), deadline);
  if (r & 0xff) return static_cast<Status>(r & 0xff);
  return Received{static_cast<std::size_t>(r >> 8 & 0xFFFFFFFF), 0};
}
// channel_call_word for call_value: a request of len and a reply of at
// most cap bytes, both at most kCallRegBytes; channel_call_regs waits
// without a deadline, channel_call_regs_until with one. The request's
// bytes are m0, m1 (little-endian, as in memory); the reply's land in
// reply[0..1]. In an aarch64 process the call passes them in registers
// (system call 26, the deadline in a sixth register: no copies through
// memory at either end when the peer waits in a call of the same form);
// elsewhere, or when the kernel's fast path does not apply, it is
// channel_call_word.
inline constexpr std::size_t kCallRegBytes = 16;
std::uint64_t channel_call_regs(Handle h, std::size_t len, std::uint64_t m0, std::uint64_t m1, std::size_t cap,
                                std::uint64_t* reply);
std::uint64_t channel_call_regs_until(Handle h, std::size_t len, std::uint64_t m0, std::uint64_t m1, std::size_t cap,
                                      std::uint64_t* reply, TimePoint deadline);
// Without blocking: kWouldBlock where the calls above would wait.
Status channel_try_send(Handle h, std::span<const std::byte> msg, std::span<const Handle> handles);
Result<Received> channel_try_recv(Handle h, std::span<std::byte> buf, std::span<Handle> handles);
// Suspends the calling coroutine until the end may be written (or read),
// or the deadline passes: kOk, kTimedOut, kNotFound.
Task<Status> channel_wait_async(Handle h, bool writable, TimePoint deadline);
}  // namespace detail

class Channel {
 public:
  Channel() = default;
  Channel(Channel&& o) noexcept : h_(std::exchange(o.h_, Handle{})) {}
  Channel& operator=(Channel&& o) noexcept {
    if (this != &o) {
      close();
      h_ = std::exchange(o.h_, Handle{});
    }
    return *this;
  }
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;
  ~Channel() { close(); }

  // A connected pair of ends. kLimit when the handle table is full,
  // kNoMemory when the system has no room.
  static Result<std::pair<Channel, Channel>> create() {
    Handle a, b;
    Status s = detail::channel_pair(&a, &b);
    if (s != Status::kOk) return s;
    return std::pair<Channel, Channel>(Channel(a), Channel(b));
  }

  // Takes ownership of a received handle to a channel end. kNotFound for an
  // invalid, closed or forged handle; kInvalidArgument if it is not a
  // channel end.
  static Result<Channel> adopt(Handle h) {
    HandleKind k = handle_kind(h);
    if (k == HandleKind::kNone) return Status::kNotFound;
    if (k != HandleKind::kChannel) return Status::kInvalidArgument;
    return Channel(h);
  }

  // Sends msg (at most kMaxMessageBytes) with up to kMaxHandlesPerTransfer
  // handles (each must be valid in this process; the receiver gets its own).
  // Blocks while the peer's queue is full, until the deadline (kTimedOut).
  // kClosed if the peer end is gone; kInvalidArgument for a message too
  // long, too many handles or a buffer the process may not read; kNotFound
  // for a bad handle (nothing sent).
  Status send(std::span<const std::byte> msg, std::span<const Handle> handles = {}, TimePoint deadline = kForever) {
    return detail::channel_send(h_, msg, handles, deadline);
  }
  Status send_for(std::span<const std::byte> msg, Duration d) { return send(msg, {}, deadline_after(d)); }

  // Receives the next message into buf and its handles into `handles`.
  // Blocks until one arrives or the deadline passes (kTimedOut). kOverflow
  // if buf (or handles) is too small: the message stays queued. kClosed
  // once the peer is gone and every message was received.
  Result<Received> recv(std::span<std::byte> buf, std::span<Handle> handles = {}, TimePoint deadline = kForever) {
    return detail::channel_recv(h_, buf, handles, deadline);
  }
  Result<Received> recv_for(std::span<std::byte> buf, Duration d) { return recv(buf, {}, deadline_after(d)); }

  // A remote procedure call: sends `request`, then waits for the next
  // message on this end (the reply) and receives it into `reply`, in one
  // call with one deadline for both halves. The same as send(request, {},
  // deadline) then recv(reply, {}, deadline), with the same results and
  // errors (a send error returns before anything is received); it is
  // only faster. kTimedOut or kInterrupted after the request went out
  // means the reply may still come: the next recv or call on this end
  // takes it, so a caller that gives up should drain or close the end.
  // A reply that carries handles is kOverflow here (it stays queued:
  // take it with recv and a handle span). With `handles` to send, it is
  // send(request, handles) then recv(reply), two calls.
  //
  // The fast path (aarch64 processes and the kernel's app; docs/architecture.md,
  // "Channel calls"): when the peer thread is already waiting in
  // recv/call/reply_and_recv on its end, with an empty queue, and the
  // request is at most 256 bytes with no handles, the kernel copies the
  // request straight into the peer's waiting call and runs the peer on
  // this CPU at once, in the caller's place, with no heap message and no
  // run-queue pass (unless a more urgent thread is ready here, or the
  // peer may not run on this CPU: then it is woken as usual).
  Result<Received> call(std::span<const std::byte> request, std::span<std::byte> reply, TimePoint deadline = kForever,
                        std::span<const Handle> handles = {}) {
    if (!handles.empty()) {
      if (Status s = send(request, handles, deadline); s != Status::kOk) return s;
      return recv(reply, {}, deadline);
    }
    return detail::channel_call(h_, request, reply, deadline);
  }
  // The server's side of call(): sends `reply` to the caller waiting on
  // the other end, then waits for the next request into `next`. The
  // same operation as call() (a channel has one peer: the reply goes to
  // the end the request came from); named for the loop it makes:
  //
  //   auto r = ch.recv(buf);                          // the first request
  //   while (r.ok()) r = ch.reply_and_recv(answer(buf, r->bytes), buf);
  Result<Received> reply_and_recv(std::span<const std::byte> reply, std::span<std::byte> next,
                                  TimePoint deadline = kForever) {
    return detail::channel_call(h_, reply, next, deadline);
  }
  // call() with trivially copyable values: kInvalidArgument (reply
  // consumed) if the reply has another size than R. Values of at most 16
  // bytes travel in registers in an aarch64 process, with or without a
  // deadline (docs/architecture.md, "Channel calls").
  template <typename R, typename T>
  Result<R> call_value(const T& request, TimePoint deadline = kForever) {
    static_assert(std::is_trivially_copyable_v<T> && !std::is_pointer_v<T> && std::is_trivially_copyable_v<R>,
                  "call_value: values must be trivially copyable and not pointers");
    if constexpr (sizeof(T) <= detail::kCallRegBytes && sizeof(R) <= detail::kCallRegBytes) {
      std::uint64_t m[2] = {0, 0};
      __builtin_memcpy(m, &request, sizeof(T));  // inline: a freestanding build would call memcpy
      std::uint64_t reply[2];
      std::uint64_t w = deadline == kForever
                            ? detail::channel_call_regs(h_, sizeof(T), m[0], m[1], sizeof(R), reply)
                            : detail::channel_call_regs_until(h_, sizeof(T), m[0], m[1], sizeof(R), reply, deadline);
      if (w & 0xff) return static_cast<Status>(w & 0xff);
      if ((w >> 8 & 0xFFFFFFFF) != sizeof(R)) return Status::kInvalidArgument;
      R v;
      __builtin_memcpy(&v, reply, sizeof(R));
      return v;
    } else {
      alignas(R) std::byte buf[sizeof(R)];
      Result<Received> r = call(std::as_bytes(std::span<const T, 1>(&request, 1)), buf, deadline);
      if (!r.ok()) return r.status();
      if (r->bytes != sizeof(R)) return Status::kInvalidArgument;
      R v;
      __builtin_memcpy(&v, buf, sizeof(R));  // inline: a freestanding build would call memcpy
      return v;
    }
  }
  // The server's side of call_value: reply_and_recv with values (the
  // same operation, in registers under the same conditions). Returns the
  // next request.
  template <typename T, typename R>
  Result<T> reply_and_recv_value(const R& reply, TimePoint deadline = kForever) {
    return call_value<T>(reply, deadline);
  }

  // From a coroutine: the same as send / recv, suspending the coroutine
  // (not its executor thread) while the call would block. The buffers and
  // the Channel must outlive the returned task. Cancelling the task while
  // it waits sends or receives nothing.
  Task<Status> send_async(std::span<const std::byte> msg, std::span<const Handle> handles = {},
                          TimePoint deadline = kForever) {
    for (;;) {
      Status s = detail::channel_try_send(h_, msg, handles);
      if (s != Status::kWouldBlock) co_return s;
      Status w = co_await detail::channel_wait_async(h_, true, deadline);
      if (w != Status::kOk) co_return w;
    }
  }
  Task<Result<Received>> recv_async(std::span<std::byte> buf, std::span<Handle> handles = {},
                                    TimePoint deadline = kForever) {
    for (;;) {
      Result<Received> r = detail::channel_try_recv(h_, buf, handles);
      if (r.ok() || r.status() != Status::kWouldBlock) co_return r;
      Status w = co_await detail::channel_wait_async(h_, false, deadline);
      if (w != Status::kOk) co_return w;
    }
  }

  // A trivially copyable value as one message.
  template <typename T>
  Status send_value(const T& v, TimePoint deadline = kForever) {
    static_assert(std::is_trivially_copyable_v<T> && !std::is_pointer_v<T>,
                  "send_value: the value must be trivially copyable and not a pointer");
    return send(std::as_bytes(std::span<const T, 1>(&v, 1)), {}, deadline);
  }
  // Receives one message holding a T; kInvalidArgument (message consumed)
  // if it has another size.
  template <typename T>
  Result<T> recv_value(TimePoint deadline = kForever) {
    static_assert(std::is_trivially_copyable_v<T>, "recv_value: the value must be trivially copyable");
    alignas(T) std::byte buf[sizeof(T)];
    Result<Received> r = recv(buf, {}, deadline);
    if (!r.ok()) return r.status();
    if (r->bytes != sizeof(T)) return Status::kInvalidArgument;
    T v;
    __builtin_memcpy(&v, buf, sizeof(T));  // inline: a freestanding build would call memcpy
    return v;
  }

  Handle handle() const { return h_; }
  bool valid() const { return h_.valid(); }
  void close() {
    if (h_.valid()) (void)handle_close(std::exchange(h_, Handle{}));
  }

 private:
  explicit Channel(Handle h) : h_(h) {}
  Handle h_;
};

}  // namespace spindle
