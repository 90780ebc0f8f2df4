// Handles: a process's references to kernel objects that can cross process
// boundaries (channel ends, shared-memory regions).
//
// A handle is a small value, meaningful only in the process that holds it:
// an index into that process's handle table with a generation count, so a
// handle that was closed, or a value made up rather than received, is
// refused with kNotFound instead of reaching another object. Handles move
// between processes only through the kernel: in a channel message or in
// ProcessOptions::handles at spawn; the receiver gets a handle of its own
// to the same object.
#pragma once

#include <compare>
#include <cstdint>

#include "spindle/status.h"

namespace spindle {

enum class HandleKind : std::uint8_t { kNone, kChannel, kSharedMemory };

// Rights a handle carries. A handle can be passed on with the same or fewer
// rights, never more.
enum class Access : std::uint8_t { kReadOnly, kReadWrite };

struct Handle {
  std::uint32_t value = 0;  // 0: no handle
  constexpr bool valid() const { return value != 0; }
  constexpr auto operator<=>(const Handle&) const = default;
};

// The most handles a process may hold at once.
inline constexpr unsigned kMaxHandles = 255;
// The most handles one channel message or one spawn may carry.
inline constexpr unsigned kMaxHandlesPerTransfer = 8;

// The kind of object h refers to; kNone for an invalid, closed or forged h.
HandleKind handle_kind(Handle h);

// Closes h (the object goes when its last handle in any process is closed).
// kNotFound for an invalid, closed or forged h.
Status handle_close(Handle h);

// A second handle to h's object in this process, with `access` rights at
// most those of h (kInvalidArgument if more is asked). kNotFound for a bad
// h; kLimit when the handle table is full.
Result<Handle> handle_duplicate(Handle h, Access access);

}  // namespace spindle
