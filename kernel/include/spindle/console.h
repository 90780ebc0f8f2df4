// The kernel console: formatted output that is safe from any Spindle thread
// and from interrupt handlers. Use it instead of printf/std::cout in Spindle
// threads: stdio takes a host lock that must not be held across a Spindle
// context switch (see docs/writing-apps.md).
#pragma once

#include <cstdarg>
#include <cstddef>

namespace spindle {

// printf-style formatting of integers (%d %i %u %x %X %o with h/l/ll/z/j
// modifiers), %c, %s (with precision), %p and %%; flags '-', '0', width and
// precision (also '*'). No floating point (the freestanding kernel keeps the
// FPU out). Output is truncated to fit; the result is always terminated.
// Returns the length the full output would have had.
int format(char* buf, std::size_t size, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
int vformat(char* buf, std::size_t size, const char* fmt, va_list ap);

// Writes the formatted text to the console as one unit: concurrent prints
// never interleave within one call. Any context; does not block on other
// threads (it masks interrupts and spins for the console for the duration
// of one write).
void print(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void vprint(const char* fmt, va_list ap);

// Writes raw bytes, atomically as print does.
void write(const char* s, std::size_t n);

}  // namespace spindle
