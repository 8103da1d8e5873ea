// libguest: printf-style formatting and the locked console (see guest.h).
#include "guest.h"
#include "spinlock.h"
#include "str.h"

struct out {
    char* buf;
    size_t size;  // capacity including the NUL
    size_t len;   // characters produced (may exceed size: snprintf semantics)
};

static void put(struct out* o, char c) {
    if (o->len + 1 < o->size) o->buf[o->len] = c;
    o->len++;
}

static void put_padded(struct out* o, const char* s, size_t n, int width, int left, char pad) {
    int fill = width > (int)n ? width - (int)n : 0;
    if (!left) {
        for (; fill > 0; fill--) put(o, pad);
    }
    for (size_t i = 0; i < n; i++) put(o, s[i]);
    for (; fill > 0; fill--) put(o, ' ');
}

static void put_number(struct out* o, uint64_t v, int negative, unsigned base, int upper, int width,
                       int left, char pad) {
    const char* digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char tmp[24];
    size_t n = 0;
    do {
        tmp[sizeof(tmp) - 1 - n++] = digits[v % base];
        v /= base;
    } while (v != 0);
    if (negative) {
        if (pad == '0') {  // "-0042": the sign goes before the zeros
            put(o, '-');
            width = width > 0 ? width - 1 : 0;
        } else {
            tmp[sizeof(tmp) - 1 - n++] = '-';
        }
    }
    put_padded(o, tmp + sizeof(tmp) - n, n, width, left, left ? ' ' : pad);
}

int vsnprintf(char* buf, size_t size, const char* fmt, va_list ap) {
    struct out o = {buf, size, 0};
    for (const char* p = fmt; *p; p++) {
        if (*p != '%') {
            put(&o, *p);
            continue;
        }
        p++;
        int left = 0;
        char pad = ' ';
        for (;; p++) {
            if (*p == '-') {
                left = 1;
            } else if (*p == '0') {
                pad = '0';
            } else {
                break;
            }
        }
        int width = 0;
        while (*p >= '0' && *p <= '9') width = width * 10 + (*p++ - '0');
        int lng = 0;  // 0: int, 1: long / long long / size_t
        while (*p == 'l' || *p == 'z') {
            lng = 1;
            p++;
        }
        switch (*p) {
            case 'c': {
                const char c = (char)va_arg(ap, int);
                put_padded(&o, &c, 1, width, left, ' ');
                break;
            }
            case 's': {
                const char* s = va_arg(ap, const char*);
                if (!s) s = "(null)";
                put_padded(&o, s, strlen(s), width, left, ' ');
                break;
            }
            case 'd':
            case 'i': {
                const int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
                const uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
                put_number(&o, mag, v < 0, 10, 0, width, left, pad);
                break;
            }
            case 'u':
            case 'x':
            case 'X': {
                const uint64_t v = lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
                put_number(&o, v, 0, *p == 'u' ? 10 : 16, *p == 'X', width, left, pad);
                break;
            }
            case 'p': {
                const uint64_t v = (uint64_t)(uintptr_t)va_arg(ap, void*);
                put(&o, '0');
                put(&o, 'x');
                put_number(&o, v, 0, 16, 0, width, left, pad);
                break;
            }
            case '%':
                put(&o, '%');
                break;
            case '\0':
                p--;  // a lone '%' at the end
                break;
            default:  // unknown conversion: print it as it is
                put(&o, '%');
                put(&o, *p);
                break;
        }
    }
    if (size > 0) buf[o.len < size ? o.len : size - 1] = '\0';
    return (int)o.len;
}

int snprintf(char* buf, size_t size, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

static struct spinlock console_lock;

int vprintf(const char* fmt, va_list ap) {
    char buf[256];
    const int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    const size_t len = (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1;
    spin_lock(&console_lock);
    serial_write(buf, len);
    spin_unlock(&console_lock);
    return n;
}

int printf(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const int n = vprintf(fmt, ap);
    va_end(ap);
    return n;
}

// For the crash path: takes the console lock if it can within a bounded wait, and writes
// regardless (a CPU that crashed while holding the lock must not silence the report).
void console_write_unlocked_fallback(const char* s, size_t n) {
    int locked = 0;
    for (int i = 0; i < 100000 && !(locked = spin_trylock(&console_lock)); i++) __asm__ volatile("pause");
    serial_write(s, n);
    if (locked) spin_unlock(&console_lock);
}
