// The kernel console: formatted output that is safe from any Spindle thread
// and from interrupt handlers, and blocking line input for threads. Use it instead of printf/std::cout in Spindle
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

// Console input. The backend delivers it without polling (QEMU: the PL011
// receive interrupt wakes the reader; hosted: stdin, read by a helper host
// thread while only the reading Spindle thread blocks). Readers are served
// one at a time, in priority order; a line read by read_line is never split
// between two readers.
//
// End of input: the end of stdin (hosted), or a Ctrl-D (0x04) byte on the
// UART (QEMU, where a serial line has no end of its own).
//
// Thread context only (not from an interrupt handler, not with interrupts
// masked): both block the calling thread until input arrives.

// Reads up to n bytes (n > 0) of what is available, waiting for at least
// one. Returns the number read, or 0 at the end of input.
std::size_t console_read(char* buf, std::size_t n);

// Reads one line into buf (size n > 0), without its terminator, always
// terminated with '\0'. A line ends at '\n', at '\r' (a '\n' right
// after it is skipped: terminals send "\r" or "\r\n" for Enter) or at
// the end of input (then that line is returned, and the next call reports
// the end). The part of a line longer than n - 1 bytes is read and
// dropped. Returns the line's length as stored, or -1 at the end of input.
long read_line(char* buf, std::size_t n);

}  // namespace spindle
