// libguest: string and memory functions (see str.h).
#include "str.h"

void* memset(void* dst, int c, size_t n) {
    uint8_t* d = dst;
    if ((((uintptr_t)d) & 7) == 0) {
        const uint64_t pattern = 0x0101010101010101ull * (uint8_t)c;
        for (; n >= 8; n -= 8, d += 8) *(uint64_t*)d = pattern;
    }
    for (; n > 0; n--) *d++ = (uint8_t)c;
    return dst;
}

void* memcpy(void* dst, const void* src, size_t n) {
    uint8_t* d = dst;
    const uint8_t* s = src;
    if (((((uintptr_t)d) | ((uintptr_t)s)) & 7) == 0) {
        for (; n >= 8; n -= 8, d += 8, s += 8) *(uint64_t*)d = *(const uint64_t*)s;
    }
    for (; n > 0; n--) *d++ = *s++;
    return dst;
}

void* memmove(void* dst, const void* src, size_t n) {
    uint8_t* d = dst;
    const uint8_t* s = src;
    if (d <= s || d >= s + n) return memcpy(dst, src, n);
    while (n > 0) {
        n--;
        d[n] = s[n];
    }
    return dst;
}

int memcmp(const void* a, const void* b, size_t n) {
    const uint8_t* x = a;
    const uint8_t* y = b;
    for (size_t i = 0; i < n; i++) {
        if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
    }
    return 0;
}

size_t strlen(const char* s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

size_t strnlen(const char* s, size_t max) {
    size_t n = 0;
    while (n < max && s[n]) n++;
    return n;
}

int strcmp(const char* a, const char* b) {
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return (uint8_t)*a - (uint8_t)*b;
}

int strncmp(const char* a, const char* b, size_t n) {
    for (; n > 0; n--, a++, b++) {
        if (*a != *b || !*a) return (uint8_t)*a - (uint8_t)*b;
    }
    return 0;
}

char* strchr(const char* s, int c) {
    for (;; s++) {
        if (*s == (char)c) return (char*)s;
        if (!*s) return NULL;
    }
}

char* strstr(const char* haystack, const char* needle) {
    const size_t n = strlen(needle);
    for (; *haystack; haystack++) {
        if (strncmp(haystack, needle, n) == 0) return (char*)haystack;
    }
    return n == 0 ? (char*)haystack : NULL;
}

static int digit_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return 99;
}

size_t parse_u64(const char* s, uint64_t* out) {
    unsigned base = 10;
    size_t i = 0;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && digit_value(s[2]) < 16) {
        base = 16;
        i = 2;
    }
    const size_t first = i;
    uint64_t v = 0;
    for (int d; (d = digit_value(s[i])) < (int)base; i++) {
        if (v > (UINT64_MAX - (uint64_t)d) / base) return 0;  // overflow
        v = v * base + (uint64_t)d;
    }
    if (i == first) return 0;
    *out = v;
    return i;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

const char* cmdline_find(const char* cmdline, const char* key, size_t* len) {
    const size_t key_len = strlen(key);
    const char* p = cmdline;
    while (*p) {
        while (is_space(*p)) p++;
        const char* word = p;
        while (*p && !is_space(*p)) p++;
        const size_t word_len = (size_t)(p - word);
        if (word_len < key_len || strncmp(word, key, key_len) != 0) continue;
        if (word_len == key_len) {
            *len = 0;
            return word + key_len;
        }
        if (word[key_len] == '=') {
            *len = word_len - key_len - 1;
            return word + key_len + 1;
        }
    }
    return NULL;
}

int cmdline_has_word(const char* cmdline, const char* word) {
    const size_t n = strlen(word);
    for (const char* p = cmdline; (p = strstr(p, word)) != NULL; p++) {
        if ((p == cmdline || is_space(p[-1])) && (p[n] == '\0' || is_space(p[n]))) return 1;
        if (n == 0) return 0;
    }
    return 0;
}
