// A small freestanding printf core for the console and panic reports.
#include <cstdint>

#include "spindle/console.h"

namespace spindle {
namespace {

struct Out {
  char* buf;
  std::size_t size;
  std::size_t len = 0;
  void put(char c) {
    if (len + 1 < size) buf[len] = c;
    ++len;
  }
  void pad(char c, int n) {
    while (n-- > 0) put(c);
  }
};

void emit_number(Out& o, std::uint64_t v, bool negative, unsigned base, bool upper, int width, int precision,
                 bool left, bool zero) {
  char digits[24];
  int n = 0;
  const char* set = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  do {
    digits[n++] = set[v % base];
    v /= base;
  } while (v != 0);
  if (precision == 0 && n == 1 && digits[0] == '0') n = 0;
  int body = (precision > n ? precision : n) + (negative ? 1 : 0);
  int fill = width > body ? width - body : 0;
  if (!left && !(zero && precision < 0)) o.pad(' ', fill);
  if (negative) o.put('-');
  if (!left && zero && precision < 0) o.pad('0', fill);
  o.pad('0', precision - n);
  while (n > 0) o.put(digits[--n]);
  if (left) o.pad(' ', fill);
}

}  // namespace

int vformat(char* buf, std::size_t size, const char* fmt, va_list ap) {
  Out o{buf, size};
  for (const char* p = fmt; *p; ++p) {
    if (*p != '%') {
      o.put(*p);
      continue;
    }
    const char* spec = p;  // to echo an unknown conversion as written
    ++p;
    bool left = false, zero = false;
    for (;; ++p) {
      if (*p == '-') left = true;
      else if (*p == '0') zero = true;
      else break;
    }
    int width = 0;
    if (*p == '*') {
      width = va_arg(ap, int);
      if (width < 0) {
        left = true;
        width = width == INT32_MIN ? INT32_MAX : -width;
      }
      ++p;
    } else {
      while (*p >= '0' && *p <= '9') width = width * 10 + (*p++ - '0');
    }
    int precision = -1;
    if (*p == '.') {
      ++p;
      precision = 0;
      if (*p == '*') {
        precision = va_arg(ap, int);
        ++p;
      } else {
        while (*p >= '0' && *p <= '9') precision = precision * 10 + (*p++ - '0');
      }
    }
    int longs = 0;  // 0 int, 1 long, 2 long long; size_t/intmax are 64-bit
    bool half = false;
    for (;; ++p) {
      if (*p == 'l') ++longs;
      else if (*p == 'z' || *p == 'j' || *p == 't') longs = 2;
      else if (*p == 'h') half = true;
      else break;
    }
    switch (*p) {
      case 'd':
      case 'i': {
        std::int64_t v = longs == 0 ? va_arg(ap, int) : longs == 1 ? va_arg(ap, long) : va_arg(ap, long long);
        if (half && longs == 0) v = static_cast<short>(v);
        std::uint64_t mag = v < 0 ? 0 - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v);
        emit_number(o, mag, v < 0, 10, false, width, precision, left, zero);
        break;
      }
      case 'u':
      case 'x':
      case 'X':
      case 'o': {
        std::uint64_t v = longs == 0   ? va_arg(ap, unsigned)
                          : longs == 1 ? va_arg(ap, unsigned long)
                                       : va_arg(ap, unsigned long long);
        if (half && longs == 0) v = static_cast<unsigned short>(v);
        unsigned base = *p == 'u' ? 10 : *p == 'o' ? 8 : 16;
        emit_number(o, v, false, base, *p == 'X', width, precision, left, zero);
        break;
      }
      case 'p': {
        char hex[24];
        Out h{hex, sizeof hex};
        h.put('0');
        h.put('x');
        emit_number(h, reinterpret_cast<std::uintptr_t>(va_arg(ap, void*)), false, 16, false, 0, -1, false, false);
        int n = static_cast<int>(h.len);
        if (!left) o.pad(' ', width - n);
        for (int i = 0; i < n; ++i) o.put(hex[i]);
        if (left) o.pad(' ', width - n);
        break;
      }
      case 'c': {
        if (!left) o.pad(' ', width - 1);
        o.put(static_cast<char>(va_arg(ap, int)));
        if (left) o.pad(' ', width - 1);
        break;
      }
      case 's': {
        const char* s = va_arg(ap, const char*);
        if (!s) s = "(null)";
        int n = 0;
        while ((precision < 0 || n < precision) && s[n]) ++n;  // never read past the precision
        if (!left) o.pad(' ', width - n);
        for (int i = 0; i < n; ++i) o.put(s[i]);
        if (left) o.pad(' ', width - n);
        break;
      }
      case '%':
        o.put('%');
        break;
      case '\0':
        --p;  // a lone '%' at the end: stop
        break;
      default:  // unknown conversion: show it as written
        for (const char* q = spec; q <= p; ++q) o.put(*q);
        break;
    }
  }
  if (size > 0) buf[o.len < size ? o.len : size - 1] = '\0';
  return static_cast<int>(o.len);
}

int format(char* buf, std::size_t size, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vformat(buf, size, fmt, ap);
  va_end(ap);
  return n;
}

}  // namespace spindle
