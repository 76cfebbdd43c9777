/* tokenizer_utf8.c: strict UTF-8 validation and the streaming decoder (bytes in, complete
 * characters out, U+FFFD for invalid bytes, one per maximal invalid subpart as Unicode §3.9 and
 * Rust's from_utf8_lossy do). Used by the tokenizer (input checks) and the generation state. */
#include <stdlib.h>
#include <string.h>

#include "hmoe/text.h"
#include "tokenizer_impl.h"

/* Checks the sequence at s (avail bytes). Returns its length (1..4) when it is a complete valid
 * character. Returns 0 otherwise, with *bad = length of the maximal invalid subpart (>= 1), or
 * *bad = 0 when the avail bytes are a valid but incomplete prefix of a character. */
size_t hmoe_utf8_seq(const unsigned char *s, size_t avail, size_t *bad)
{
    unsigned c = s[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;      /* no overlongs */
        else if (c == 0xED) hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;
        else if (c == 0xF4) hi = 0x8F; /* <= U+10FFFF */
    } else {
        *bad = 1;
        return 0;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= avail) {
            *bad = 0; /* valid so far, truncated */
            return 0;
        }
        unsigned b = s[i];
        unsigned l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (b < l || b > h) {
            *bad = i;
            return 0;
        }
    }
    return need;
}

size_t hmoe_utf8_valid_prefix(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        /* ASCII fast path, 8 bytes at a time */
        while (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, u + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= len) break;
        size_t bad = 0, n = hmoe_utf8_seq(u + i, len - i, &bad);
        if (!n) return i;
        i += n;
    }
    return len;
}

void hmoe_utf8_stream_init(struct hmoe_utf8_stream *st)
{
    memset(st, 0, sizeof *st);
}

enum hmoe_status hmoe_utf8_stream_feed(struct hmoe_utf8_stream *st, const char *bytes, size_t len,
                                       int flush, char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    size_t n = (size_t)st->n_pend + len;
    unsigned char *in = malloc(n + 1);
    /* worst case: every byte becomes U+FFFD (3 bytes) */
    char *o = malloc(3 * n + 1);
    if (!in || !o) {
        free(in);
        free(o);
        return hmoe_fail(HMOE_E_NOMEM, "utf8 stream: out of memory");
    }
    memcpy(in, st->pend, (size_t)st->n_pend);
    if (len) memcpy(in + st->n_pend, bytes, len);
    st->n_pend = 0;
    size_t i = 0, w = 0;
    while (i < n) {
        size_t bad = 0, k = hmoe_utf8_seq(in + i, n - i, &bad);
        if (k) {
            memcpy(o + w, in + i, k);
            w += k;
            i += k;
            continue;
        }
        if (bad == 0) { /* incomplete tail: keep it unless the stream ends */
            if (!flush) {
                st->n_pend = (int)(n - i);
                memcpy(st->pend, in + i, n - i);
                i = n;
                break;
            }
            bad = n - i;
        }
        memcpy(o + w, "\xEF\xBF\xBD", 3);
        w += 3;
        i += bad;
    }
    o[w] = 0;
    free(in);
    *out = o;
    *out_len = w;
    return HMOE_OK;
}
