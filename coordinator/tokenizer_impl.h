/* tokenizer_impl.h: internal helpers shared by the text library's files (not a public API). */
#ifndef HMOE_TOKENIZER_IMPL_H
#define HMOE_TOKENIZER_IMPL_H

#include <stddef.h>
#include <stdint.h>

/* Length (1..4) of the complete valid UTF-8 character at s, or 0 with *bad = length of the
 * maximal invalid subpart (>= 1), or *bad = 0 when s[0..avail) is a valid incomplete prefix. */
size_t hmoe_utf8_seq(const unsigned char *s, size_t avail, size_t *bad);

/* 64-bit hash of a byte string (fast, not cryptographic). */
static inline uint64_t hmoe_hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
        uint64_t w;
        __builtin_memcpy(&w, s, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++) w |= (uint64_t)s[i] << (8 * i);
    h = (h ^ w) * 0x94D049BB133111EBull;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return h;
}

#endif
