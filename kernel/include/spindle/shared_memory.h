// Shared memory: a region one process creates and explicitly grants to
// others, read-only or read-write, by passing a handle (in a channel
// message or at spawn). Each process maps it at its own address, so keep
// offsets, not pointers, in it. Spindle's sync objects work inside a region
// shared between processes (see docs/writing-apps.md for which ones).
//
//   auto shm = spindle::SharedMemory::create(4096).value();
//   auto* counter = new (shm.data()) std::atomic<int>(0);
//   auto ro = spindle::handle_duplicate(shm.handle(), spindle::Access::kReadOnly).value();
//   // pass `ro`; the receiver calls SharedMemory::adopt(h) and may only read
#pragma once

#include <cstddef>
#include <span>
#include <utility>

#include "spindle/handle.h"
#include "spindle/panic.h"
#include "spindle/status.h"

namespace spindle {

namespace detail {
struct Mapping {
  std::byte* data = nullptr;
  std::size_t size = 0;
  Access access = Access::kReadOnly;
};
Result<Handle> shm_create(std::size_t size, const char* name);
Result<Mapping> shm_map(Handle h);
// Unmaps m and returns 0; or, while threads or coroutines of this process
// wait on words inside it, changes nothing and returns how many.
unsigned shm_unmap(const Mapping& m);
}  // namespace detail

class SharedMemory {
 public:
  SharedMemory() = default;
  SharedMemory(SharedMemory&& o) noexcept : h_(std::exchange(o.h_, Handle{})), m_(std::exchange(o.m_, {})) {}
  SharedMemory& operator=(SharedMemory&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, Handle{});
      m_ = std::exchange(o.m_, {});
    }
    return *this;
  }
  SharedMemory(const SharedMemory&) = delete;
  SharedMemory& operator=(const SharedMemory&) = delete;
  // Unmaps the region here and closes the handle. Unmapping it (here or by
  // assigning over it) while a thread or coroutine of this process waits
  // on a word inside it (a Semaphore, Mutex, CondVar... in the region) is
  // a misuse: a panic naming the region and the count (in a process: the
  // process ends, kFaulted with FaultKind::kPanic). Other processes'
  // waiters keep their own mappings and are not affected.
  ~SharedMemory() { reset(); }

  // A new zeroed region of `size` bytes (rounded up to whole pages), mapped
  // read-write here. kInvalidArgument for size 0; kLimit past the process's
  // memory limit (aarch64: the mapping's; hosted: the creator's) or a full
  // handle table; kNoMemory.
  static Result<SharedMemory> create(std::size_t size, const char* name = "shared") {
    Result<Handle> h = detail::shm_create(size, name);
    if (!h.ok()) return h.status();
    Result<SharedMemory> s = adopt(*h);
    if (!s.ok()) (void)handle_close(*h);  // not mapped (kLimit): the region goes
    return s;
  }

  // Maps a received region with the rights its handle carries and takes
  // ownership of the handle. kNotFound for a bad handle, kInvalidArgument
  // if it is not a region, kLimit if mapping it would pass the process's
  // memory limit (aarch64: a mapped region counts against the mapping
  // process's limit; the caller keeps the handle).
  static Result<SharedMemory> adopt(Handle h) {
    Result<detail::Mapping> m = detail::shm_map(h);
    if (!m.ok()) return m.status();
    SharedMemory s;
    s.h_ = h;
    s.m_ = *m;
    return s;
  }

  std::byte* data() const { return m_.data; }
  std::size_t size() const { return m_.size; }
  std::span<std::byte> bytes() const { return {m_.data, m_.size}; }
  Access access() const { return m_.access; }
  Handle handle() const { return h_; }
  bool valid() const { return h_.valid(); }

 private:
  void reset() {
    if (m_.data) {
      if (unsigned n = detail::shm_unmap(m_)) {
        panic("SharedMemory at %p (%zu bytes) unmapped while %u thread(s) or coroutine(s) of this process wait on "
              "words in it",
              static_cast<void*>(m_.data), m_.size, n);
      }
    }
    m_ = {};
    if (h_.valid()) (void)handle_close(std::exchange(h_, Handle{}));
  }
  Handle h_;
  detail::Mapping m_;
};

}  // namespace spindle
