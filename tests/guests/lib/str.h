// libguest: the string and memory functions of a C library, for freestanding guests.
// GCC may emit calls to memcpy/memset/memmove/memcmp itself, so these keep their C names.
// Plain loops (no `rep movs/stos`): every guest kernel-mode instruction is emulated here.
#pragma once

#include <stddef.h>
#include <stdint.h>

void* memset(void* dst, int c, size_t n);
void* memcpy(void* dst, const void* src, size_t n);
void* memmove(void* dst, const void* src, size_t n);
int memcmp(const void* a, const void* b, size_t n);
size_t strlen(const char* s);
size_t strnlen(const char* s, size_t max);
int strcmp(const char* a, const char* b);
int strncmp(const char* a, const char* b, size_t n);
char* strchr(const char* s, int c);
char* strstr(const char* haystack, const char* needle);

// Parses an unsigned number at `s`: decimal, or hexadecimal with a 0x prefix. Returns the
// number of characters consumed (0 if there is no number, or it overflows 64 bits).
size_t parse_u64(const char* s, uint64_t* out);

// Finds "key=value" as a whitespace-separated word of a command line. Returns a pointer to
// the value (which ends at the next whitespace or NUL) and stores its length in *len, or
// returns NULL. A bare "key" word (no '=') matches with an empty value.
const char* cmdline_find(const char* cmdline, const char* key, size_t* len);

// Returns 1 if `word` is one of the whitespace-separated words of `cmdline`.
int cmdline_has_word(const char* cmdline, const char* word);
