/* tokenizer.c: byte-level BPE tokenizer loaded from a Hugging Face tokenizer.json (Qwen2/Qwen3,
 * GPT-2 style). Pipeline (MODEL.md §8): added tokens matched whole on the raw text (longest match
 * first) -> NFC (utf8proc) -> split regex (PCRE2, UTF+UCP, JIT) -> BPE merges by rank on bytes
 * (a heap over a linked list of symbols, as tokenizers' Word::merge_all) with a pre-token cache.
 * Tokens are kept as raw bytes: the GPT-2 byte<->unicode map is undone at load time. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <utf8proc.h>

#include "hmoe/log.h"
#include "hmoe/text.h"
#include "tokenizer_impl.h"

/* The GPT-2 split regex, used when the ByteLevel pre-tokenizer has use_regex=true. */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

#define CACHE_MAX_ENTRIES (1u << 15) /* small enough to stay in L2 with its index */
#define MAX_IDS (1 << 22) /* ids above this are refused (Qwen: 151936) */
#define CACHE_MAX_KEY 128 /* longer pre-tokens are not cached */
#define CACHE_MAX_IDS (1u << 22)

struct added_tok {
    int32_t id;
    const char *content; /* points into the pool (set once the pool stops growing) */
    size_t len;
    int special, normalized;
};

/* open addressing: bytes -> id (key bytes are the token's own bytes) */
struct id_slot {
    uint64_t hash;
    int32_t id; /* -1 = empty */
};

struct pair_slot {
    uint64_t key; /* ((a << 32) | b) + 1; 0 = empty */
    int32_t rank, id;
};

/* index slot: (hash >> 32) << 32 | (entry + 1); 0 = empty. 8 bytes, so the index is compact */
struct cache_ent {
    uint32_t key_off, key_len, ids_off, n_ids;
};

struct hmoe_tokenizer {
    /* id -> bytes */
    int32_t n_ids;
    uint32_t *tok_off; /* (n_ids) offset into pool */
    int32_t *tok_len;  /* (n_ids) -1 = no such id */
    uint8_t *tok_flags; /* (n_ids) 1 = added, 2 = special */
    char *pool;
    size_t pool_len, pool_cap;

    struct id_slot *idmap; /* bytes -> id over the model vocabulary and the added tokens */
    size_t idmap_cap;
    struct pair_slot *pairs;
    size_t pairs_cap;
    int32_t byte_id[256]; /* id of each single byte (-1 when missing) */
    int ignore_merges;

    struct added_tok *added; /* sorted by length, longest first */
    size_t n_added;
    uint8_t added_first[256]; /* 1 when some raw-matched added token starts with this byte */
    uint8_t added_first_norm[256];
    int has_norm_added;

    int nfc;
    pcre2_code *re;
    int jit;

    pthread_mutex_t cache_mu;
    uint64_t *cache; /* (cache_cap) index slots */
    struct cache_ent *cents; /* (CACHE_MAX_ENTRIES) */
    size_t cache_cap, cache_n;
    char *ckeys;
    size_t ckeys_len, ckeys_cap;
    int32_t *cids;
    size_t cids_len, cids_cap;
};

/* ------------------------------------------------------------------------------------------ */
/* small helpers */

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

void hmoe_tokens_free(struct hmoe_tokens *t)
{
    if (!t) return;
    free(t->ids);
    t->ids = NULL;
    t->n = t->cap = 0;
}

enum hmoe_status hmoe_tokens_push(struct hmoe_tokens *t, int32_t id)
{
    if (grow((void **)&t->ids, &t->cap, t->n + 1, sizeof(int32_t)))
        return hmoe_fail(HMOE_E_NOMEM, "tokens: out of memory");
    t->ids[t->n++] = id;
    return HMOE_OK;
}

static enum hmoe_status tokens_append(struct hmoe_tokens *t, const int32_t *ids, size_t n)
{
    if (grow((void **)&t->ids, &t->cap, t->n + n, sizeof(int32_t)))
        return hmoe_fail(HMOE_E_NOMEM, "tokens: out of memory");
    memcpy(t->ids + t->n, ids, n * sizeof(int32_t));
    t->n += n;
    return HMOE_OK;
}

/* GPT-2 bytes_to_unicode inverse: code point -> byte, -1 when not part of the map. Printable
 * bytes map to themselves; the n-th other byte (in increasing order) maps to U+0100 + n. The
 * other bytes are 0x00..0x20 (n 0..32), 0x7F..0xA0 (n 33..66) and 0xAD (n 67). */
static int unicode_to_byte(uint32_t cp)
{
    if ((cp >= '!' && cp <= '~') || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF))
        return (int)cp;
    if (cp < 256 || cp >= 256 + 68) return -1;
    uint32_t n = cp - 256;
    return n < 33 ? (int)n : n < 67 ? (int)(0x7F + n - 33) : 0xAD;
}

/* Converts a byte-level token string to raw bytes in out (capacity >= strlen(s)).
 * Returns the byte count, or -1 when s is not made of byte-level characters. */
static long bytelevel_to_bytes(const char *s, size_t len, char *out)
{
    size_t i = 0, w = 0;
    while (i < len) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i,
                                              (utf8proc_ssize_t)(len - i), &cp);
        if (k <= 0) return -1;
        int b = unicode_to_byte((uint32_t)cp);
        if (b < 0) return -1;
        out[w++] = (char)b;
        i += (size_t)k;
    }
    return (long)w;
}

static enum hmoe_status pool_add(struct hmoe_tokenizer *t, const char *b, size_t n, uint32_t *off)
{
    if (t->pool_len + n + 1 > UINT32_MAX) return hmoe_fail(HMOE_E_FORMAT, "tokenizer too large");
    if (grow((void **)&t->pool, &t->pool_cap, t->pool_len + n + 1, 1))
        return hmoe_fail(HMOE_E_NOMEM, "tokenizer: out of memory");
    memcpy(t->pool + t->pool_len, b, n);
    t->pool[t->pool_len + n] = 0;
    *off = (uint32_t)t->pool_len;
    t->pool_len += n + 1;
    return HMOE_OK;
}

static int32_t idmap_find(const struct hmoe_tokenizer *t, const char *b, size_t n, uint64_t h)
{
    size_t mask = t->idmap_cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const struct id_slot *s = &t->idmap[i];
        if (s->id < 0) return -1;
        if (s->hash == h && (size_t)t->tok_len[s->id] == n &&
            memcmp(t->pool + t->tok_off[s->id], b, n) == 0)
            return s->id;
    }
}

/* Inserts id (whose bytes are already set); keeps an existing mapping of the same bytes. */
static void idmap_insert(struct hmoe_tokenizer *t, int32_t id)
{
    const char *b = t->pool + t->tok_off[id];
    size_t n = (size_t)t->tok_len[id];
    uint64_t h = hmoe_hash_bytes(b, n);
    if (idmap_find(t, b, n, h) >= 0) return;
    size_t mask = t->idmap_cap - 1;
    size_t i = h & mask;
    while (t->idmap[i].id >= 0) i = (i + 1) & mask;
    t->idmap[i].hash = h;
    t->idmap[i].id = id;
}

static inline uint64_t pair_key(int32_t a, int32_t b)
{
    return (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
}

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    return x;
}

static inline const struct pair_slot *pair_find(const struct hmoe_tokenizer *t, int32_t a,
                                                int32_t b)
{
    uint64_t k = pair_key(a, b);
    size_t mask = t->pairs_cap - 1;
    for (size_t i = mix64(k) & mask;; i = (i + 1) & mask) {
        const struct pair_slot *s = &t->pairs[i];
        if (s->key == k) return s;
        if (s->key == 0) return NULL;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* loading */

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n) c *= 2;
    return c;
}

/* Rewrites a pattern written for Oniguruma (what tokenizers uses) so PCRE2 matches the same:
 * Oniguruma's \s matches U+0085 (NEL) (its RE doc). PCRE2's UCP \s was defined as Perl space
 * (Z plus \t\n\v\f\r) and includes NEL only in some versions, so NEL is added explicitly (a
 * no-op where it is already in). test_tokenizer checks the resulting split. */
static char *onig_to_pcre2(const char *p)
{
    size_t n = strlen(p);
    char *o = malloc(n * 12 + 1);
    if (!o) return NULL;
    size_t w = 0;
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char d = p[i + 1];
            if (d == 's') {
                const char *r = in_class ? "\\s\\x{85}" : "[\\s\\x{85}]";
                memcpy(o + w, r, strlen(r));
                w += strlen(r);
            } else if (d == 'S' && !in_class) {
                memcpy(o + w, "[^\\s\\x{85}]", 11);
                w += 11;
            } else {
                o[w++] = c;
                o[w++] = d;
            }
            i++;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            o[w++] = c;
            /* a ']' right after '[' or '[^' is a literal */
            if (i + 1 < n && p[i + 1] == '^') o[w++] = p[++i];
            if (i + 1 < n && p[i + 1] == ']') o[w++] = p[++i];
            continue;
        }
        if (in_class && c == ']') in_class = 0;
        o[w++] = c;
    }
    o[w] = 0;
    return o;
}

static enum hmoe_status compile_regex(struct hmoe_tokenizer *t, const char *pattern)
{
    char *pat = onig_to_pcre2(pattern);
    if (!pat) return hmoe_fail(HMOE_E_NOMEM, "tokenizer: out of memory");
    int err;
    PCRE2_SIZE eoff;
    t->re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err,
                          &eoff, NULL);
    if (!t->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        enum hmoe_status st = hmoe_fail(HMOE_E_UNSUPPORTED,
                                        "tokenizer: split regex does not compile at offset %zu: %s "
                                        "(pattern %s)",
                                        (size_t)eoff, (const char *)msg, pat);
        free(pat);
        return st;
    }
    free(pat);
    t->jit = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0;
    if (!t->jit) HMOE_LOG_WARN("tokenizer: PCRE2 JIT unavailable, using the interpreter");
    return HMOE_OK;
}

static int json_is_true(const cJSON *o, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

static const char *json_type(const cJSON *o)
{
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(ty) ? ty->valuestring : "";
}

static enum hmoe_status parse_normalizer(struct hmoe_tokenizer *t, const cJSON *n)
{
    if (!n || cJSON_IsNull(n)) return HMOE_OK;
    const char *ty = json_type(n);
    if (!strcmp(ty, "NFC")) {
        t->nfc = 1;
        return HMOE_OK;
    }
    if (!strcmp(ty, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        const cJSON *e;
        cJSON_ArrayForEach(e, arr)
        {
            enum hmoe_status st = parse_normalizer(t, e);
            if (st) return st;
        }
        return HMOE_OK;
    }
    return hmoe_fail(HMOE_E_UNSUPPORTED, "tokenizer: normalizer '%s' is not supported (NFC only)",
                     ty);
}

static enum hmoe_status parse_pretok(struct hmoe_tokenizer *t, const cJSON *p, const char **pat)
{
    if (!p || cJSON_IsNull(p))
        return hmoe_fail(HMOE_E_UNSUPPORTED,
                         "tokenizer: no pre_tokenizer (byte-level BPE needs one)");
    const char *ty = json_type(p);
    if (!strcmp(ty, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        const cJSON *e;
        int seen_bl = 0;
        cJSON_ArrayForEach(e, arr)
        {
            const char *ety = json_type(e);
            if (!strcmp(ety, "ByteLevel")) seen_bl = 1;
            enum hmoe_status st = parse_pretok(t, e, pat);
            if (st) return st;
        }
        if (!seen_bl)
            return hmoe_fail(HMOE_E_UNSUPPORTED, "tokenizer: pre_tokenizer lacks ByteLevel");
        return HMOE_OK;
    }
    if (!strcmp(ty, "Split")) {
        const cJSON *pt = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const cJSON *rx = cJSON_GetObjectItemCaseSensitive(pt, "Regex");
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(p, "behavior");
        if (!cJSON_IsString(rx))
            return hmoe_fail(HMOE_E_UNSUPPORTED,
                             "tokenizer: Split pre-tokenizer needs a Regex pattern");
        if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated") ||
            json_is_true(p, "invert"))
            return hmoe_fail(
                HMOE_E_UNSUPPORTED,
                "tokenizer: Split pre-tokenizer must be behavior Isolated, invert false");
        if (*pat) return hmoe_fail(HMOE_E_UNSUPPORTED, "tokenizer: more than one split regex");
        *pat = rx->valuestring;
        return HMOE_OK;
    }
    if (!strcmp(ty, "ByteLevel")) {
        if (json_is_true(p, "add_prefix_space"))
            return hmoe_fail(HMOE_E_UNSUPPORTED,
                             "tokenizer: ByteLevel add_prefix_space is not supported");
        if (json_is_true(p, "use_regex")) {
            if (*pat) return hmoe_fail(HMOE_E_UNSUPPORTED, "tokenizer: more than one split regex");
            *pat = GPT2_PATTERN;
        }
        return HMOE_OK;
    }
    return hmoe_fail(HMOE_E_UNSUPPORTED, "tokenizer: pre_tokenizer '%s' is not supported", ty);
}

static int cmp_added_len(const void *a, const void *b)
{
    const struct added_tok *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static enum hmoe_status set_token(struct hmoe_tokenizer *t, int32_t id, const char *b, size_t n)
{
    if (id < 0 || id >= t->n_ids)
        return hmoe_fail(HMOE_E_FORMAT, "tokenizer: id %d out of range", id);
    if (t->tok_len[id] >= 0) return HMOE_OK; /* an added token may repeat a vocab entry */
    uint32_t off = 0;
    enum hmoe_status st = pool_add(t, b, n, &off);
    if (st) return st;
    t->tok_off[id] = off;
    t->tok_len[id] = (int32_t)n;
    return HMOE_OK;
}

static enum hmoe_status load_merges(struct hmoe_tokenizer *t, const cJSON *merges)
{
    size_t n = (size_t)cJSON_GetArraySize(merges);
    t->pairs_cap = pow2_at_least(n * 2 + 16);
    t->pairs = calloc(t->pairs_cap, sizeof *t->pairs);
    char *buf = NULL;
    size_t buf_cap = 0;
    if (!t->pairs) return hmoe_fail(HMOE_E_NOMEM, "tokenizer: out of memory");
    int32_t rank = 0;
    const cJSON *m;
    enum hmoe_status st = HMOE_OK;
    cJSON_ArrayForEach(m, merges)
    {
        const char *a, *b;
        size_t la, lb;
        char *sp = NULL;
        if (cJSON_IsString(m)) { /* legacy "a b" */
            sp = strchr(m->valuestring, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                st = hmoe_fail(HMOE_E_FORMAT, "tokenizer: merge %d '%s' is not 'a b'", rank,
                               m->valuestring);
                break;
            }
            a = m->valuestring;
            la = (size_t)(sp - a);
            b = sp + 1;
            lb = strlen(b);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(m, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(m, 1))) {
            a = cJSON_GetArrayItem(m, 0)->valuestring;
            b = cJSON_GetArrayItem(m, 1)->valuestring;
            la = strlen(a);
            lb = strlen(b);
        } else {
            st = hmoe_fail(HMOE_E_FORMAT, "tokenizer: merge %d is neither 'a b' nor [a, b]", rank);
            break;
        }
        if (grow((void **)&buf, &buf_cap, la + lb + 1, 1)) {
            st = hmoe_fail(HMOE_E_NOMEM, "tokenizer: out of memory");
            break;
        }
        long ba = bytelevel_to_bytes(a, la, buf);
        long bb = ba < 0 ? -1 : bytelevel_to_bytes(b, lb, buf + ba);
        if (ba < 0 || bb < 0) {
            st = hmoe_fail(HMOE_E_FORMAT, "tokenizer: merge %d has a non byte-level token", rank);
            break;
        }
        int32_t ia = idmap_find(t, buf, (size_t)ba, hmoe_hash_bytes(buf, (size_t)ba));
        int32_t ib = idmap_find(t, buf + ba, (size_t)bb, hmoe_hash_bytes(buf + ba, (size_t)bb));
        int32_t im = idmap_find(t, buf, (size_t)(ba + bb), hmoe_hash_bytes(buf, (size_t)(ba + bb)));
        if (ia < 0 || ib < 0 || im < 0) {
            st = hmoe_fail(HMOE_E_FORMAT, "tokenizer: merge %d uses a token missing from the vocab",
                           rank);
            break;
        }
        uint64_t k = pair_key(ia, ib);
        size_t mask = t->pairs_cap - 1, i = mix64(k) & mask;
        while (t->pairs[i].key && t->pairs[i].key != k) i = (i + 1) & mask;
        if (!t->pairs[i].key) { /* the first (lowest-rank) occurrence wins */
            t->pairs[i].key = k;
            t->pairs[i].rank = rank;
            t->pairs[i].id = im;
        }
        rank++;
    }
    free(buf);
    return st;
}

static enum hmoe_status load_added(struct hmoe_tokenizer *t, const cJSON *added)
{
    size_t n = (size_t)cJSON_GetArraySize(added);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added) return hmoe_fail(HMOE_E_NOMEM, "tokenizer: out of memory");
    const cJSON *a;
    cJSON_ArrayForEach(a, added)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(a, "content");
        if (!cJSON_IsNumber(id) || !cJSON_IsString(c))
            return hmoe_fail(HMOE_E_FORMAT, "tokenizer: added token without id/content");
        int32_t i = (int32_t)id->valuedouble;
        size_t len = strlen(c->valuestring);
        if (!len) continue;
        if (hmoe_utf8_valid_prefix(c->valuestring, len) != len)
            return hmoe_fail(HMOE_E_FORMAT, "tokenizer: added token %d is not UTF-8", i);
        if (json_is_true(a, "lstrip") || json_is_true(a, "rstrip") ||
            json_is_true(a, "single_word"))
            HMOE_LOG_WARN("tokenizer: added token '%s': lstrip/rstrip/single_word are ignored",
                          c->valuestring);
        /* added tokens override the model vocab entry of the same id */
        enum hmoe_status st;
        if (t->tok_len[i] >= 0 && ((size_t)t->tok_len[i] != len ||
                                   memcmp(t->pool + t->tok_off[i], c->valuestring, len))) {
            t->tok_len[i] = -1;
        }
        if ((st = set_token(t, i, c->valuestring, len))) return st;
        struct added_tok *at = &t->added[t->n_added++];
        at->id = i;
        at->content = NULL; /* set below: the pool may still move */
        at->len = len;
        at->special = json_is_true(a, "special");
        at->normalized = json_is_true(a, "normalized");
        t->tok_flags[i] = (uint8_t)(1 | (at->special ? 2 : 0));
        if (at->normalized) {
            t->added_first_norm[(unsigned char)c->valuestring[0]] = 1;
            t->has_norm_added = 1;
        } else {
            t->added_first[(unsigned char)c->valuestring[0]] = 1;
        }
    }
    for (size_t k = 0; k < t->n_added; k++)
        t->added[k].content = t->pool + t->tok_off[t->added[k].id];
    qsort(t->added, t->n_added, sizeof *t->added, cmp_added_len);
    return HMOE_OK;
}

static enum hmoe_status load_root(struct hmoe_tokenizer *t, const cJSON *root)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return hmoe_fail(HMOE_E_FORMAT, "tokenizer: no 'model' object");
    const char *mty = json_type(model);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (*mty && strcmp(mty, "BPE"))
        return hmoe_fail(HMOE_E_UNSUPPORTED, "tokenizer: model '%s' is not supported (BPE only)",
                         mty);
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges))
        return hmoe_fail(HMOE_E_FORMAT,
                         "tokenizer: model needs 'vocab' (object) and 'merges' (array)");
    const cJSON *pfx = cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix");
    const cJSON *sfx = cJSON_GetObjectItemCaseSensitive(model, "end_of_word_suffix");
    if ((cJSON_IsString(pfx) && *pfx->valuestring) || (cJSON_IsString(sfx) && *sfx->valuestring))
        return hmoe_fail(
            HMOE_E_UNSUPPORTED,
            "tokenizer: continuing_subword_prefix/end_of_word_suffix are not supported");
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble > 0)
        HMOE_LOG_WARN("tokenizer: BPE dropout %.3g ignored (inference)", dropout->valuedouble);
    t->ignore_merges = json_is_true(model, "ignore_merges");

    enum hmoe_status st;
    const char *pattern = NULL;
    if ((st = parse_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer")))) return st;
    if ((st = parse_pretok(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), &pattern)))
        return st;
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (dec && !cJSON_IsNull(dec) && strcmp(json_type(dec), "ByteLevel"))
        HMOE_LOG_WARN("tokenizer: decoder '%s' treated as ByteLevel", json_type(dec));

    /* id space: max over vocab and added tokens */
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    int64_t max_id = -1;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab)
    {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= MAX_IDS)
            return hmoe_fail(HMOE_E_FORMAT, "tokenizer: vocab entry with a bad id");
        if ((int64_t)e->valuedouble > max_id) max_id = (int64_t)e->valuedouble;
    }
    cJSON_ArrayForEach(e, added)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= MAX_IDS)
            return hmoe_fail(HMOE_E_FORMAT, "tokenizer: added token with a bad id");
        if ((int64_t)id->valuedouble > max_id) max_id = (int64_t)id->valuedouble;
    }
    if (max_id < 0) return hmoe_fail(HMOE_E_FORMAT, "tokenizer: empty vocabulary");
    t->n_ids = (int32_t)(max_id + 1);
    t->tok_off = calloc((size_t)t->n_ids, sizeof *t->tok_off);
    t->tok_len = malloc((size_t)t->n_ids * sizeof *t->tok_len);
    t->tok_flags = calloc((size_t)t->n_ids, 1);
    if (!t->tok_off || !t->tok_len || !t->tok_flags)
        return hmoe_fail(HMOE_E_NOMEM, "tokenizer: out of memory");
    for (int32_t i = 0; i < t->n_ids; i++) t->tok_len[i] = -1;

    char *buf = NULL;
    size_t buf_cap = 0;
    cJSON_ArrayForEach(e, vocab)
    {
        const char *s = e->string;
        size_t len = strlen(s);
        if (grow((void **)&buf, &buf_cap, len + 1, 1)) {
            free(buf);
            return hmoe_fail(HMOE_E_NOMEM, "tokenizer: out of memory");
        }
        long n = bytelevel_to_bytes(s, len, buf);
        /* not byte-level (e.g. a special token trained into the vocab): keep its UTF-8 */
        st = n >= 0 ? set_token(t, (int32_t)e->valuedouble, buf, (size_t)n)
                    : set_token(t, (int32_t)e->valuedouble, s, len);
        if (st) {
            free(buf);
            return st;
        }
    }
    free(buf);
    if ((st = load_added(t, added))) return st;

    t->idmap_cap = pow2_at_least((size_t)t->n_ids * 2);
    t->idmap = malloc(t->idmap_cap * sizeof *t->idmap);
    if (!t->idmap) return hmoe_fail(HMOE_E_NOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < t->idmap_cap; i++) t->idmap[i].id = -1;
    for (int32_t i = 0; i < t->n_ids; i++)
        if (t->tok_len[i] >= 0 && !(t->tok_flags[i] & 1)) idmap_insert(t, i);
    for (int32_t i = 0; i < t->n_ids; i++)
        if (t->tok_len[i] >= 0 && (t->tok_flags[i] & 1)) idmap_insert(t, i);
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = idmap_find(t, &c, 1, hmoe_hash_bytes(&c, 1));
    }
    if ((st = load_merges(t, merges))) return st;
    if (!pattern) return hmoe_fail(HMOE_E_UNSUPPORTED, "tokenizer: no split regex");
    return compile_regex(t, pattern);
}

enum hmoe_status hmoe_tokenizer_load_json(const char *json, size_t json_len,
                                          struct hmoe_tokenizer **out)
{
    *out = NULL;
    cJSON *root = cJSON_ParseWithLength(json, json_len);
    if (!root) return hmoe_fail(HMOE_E_FORMAT, "tokenizer: not valid JSON");
    struct hmoe_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        cJSON_Delete(root);
        return hmoe_fail(HMOE_E_NOMEM, "tokenizer: out of memory");
    }
    pthread_mutex_init(&t->cache_mu, NULL);
    enum hmoe_status st = load_root(t, root);
    cJSON_Delete(root);
    if (st) {
        hmoe_tokenizer_free(t);
        return st;
    }
    *out = t;
    return HMOE_OK;
}

enum hmoe_status hmoe_tokenizer_load(const char *path, struct hmoe_tokenizer **out)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return hmoe_fail(HMOE_E_IO, "cannot open tokenizer %s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (grow((void **)&buf, &cap, n + 65536, 1)) {
            fclose(f);
            free(buf);
            return hmoe_fail(HMOE_E_NOMEM, "tokenizer: out of memory reading %s", path);
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return hmoe_fail(HMOE_E_IO, "read error on tokenizer %s", path);
    }
    enum hmoe_status st = hmoe_tokenizer_load_json(buf, n, out);
    free(buf);
    if (st) hmoe_err_prefix("%s", path);
    return st;
}

void hmoe_tokenizer_free(struct hmoe_tokenizer *t)
{
    if (!t) return;
    free(t->tok_off);
    free(t->tok_len);
    free(t->tok_flags);
    free(t->pool);
    free(t->idmap);
    free(t->pairs);
    free(t->added);
    if (t->re) pcre2_code_free(t->re);
    free(t->cache);
    free(t->cents);
    free(t->ckeys);
    free(t->cids);
    pthread_mutex_destroy(&t->cache_mu);
    free(t);
}

int32_t hmoe_tokenizer_n_vocab(const struct hmoe_tokenizer *t)
{
    return t->n_ids;
}

int32_t hmoe_tokenizer_token_id(const struct hmoe_tokenizer *t, const char *text)
{
    size_t n = strlen(text);
    return idmap_find(t, text, n, hmoe_hash_bytes(text, n));
}

const char *hmoe_tokenizer_token_bytes(const struct hmoe_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_ids || t->tok_len[id] < 0) return NULL;
    *len = (size_t)t->tok_len[id];
    return t->pool + t->tok_off[id];
}

int hmoe_tokenizer_is_special(const struct hmoe_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_ids && (t->tok_flags[id] & 2);
}

int hmoe_tokenizer_is_added(const struct hmoe_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_ids && (t->tok_flags[id] & 1);
}

/* ------------------------------------------------------------------------------------------ */
/* BPE */

struct heap_ent {
    int32_t rank, pos, id;
};

/* Scratch buffers of one encode call. */
struct work {
    int32_t *sid, *prev, *next, *len; /* symbols */
    size_t sym_cap;
    struct heap_ent *heap;
    size_t heap_n, heap_cap;
    int32_t *ids; /* result of one pre-token */
    size_t ids_cap;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jstack;
};

static inline int heap_less(const struct heap_ent *a, const struct heap_ent *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static int heap_push(struct work *w, int32_t rank, int32_t pos, int32_t id)
{
    if (grow((void **)&w->heap, &w->heap_cap, w->heap_n + 1, sizeof *w->heap)) return -1;
    size_t i = w->heap_n++;
    struct heap_ent e = {rank, pos, id};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&e, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = e;
    return 0;
}

static struct heap_ent heap_pop(struct work *w)
{
    struct heap_ent top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_less(&w->heap[c + 1], &w->heap[c])) c++;
        if (!heap_less(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

/* BPE of one pre-token (raw bytes). Sets w->ids; returns the count, or -1 on out of memory. */
static long bpe_word(const struct hmoe_tokenizer *t, struct work *w, const unsigned char *b,
                     size_t n)
{
    if (grow((void **)&w->ids, &w->ids_cap, n + 1, sizeof(int32_t))) return -1;
    if (t->ignore_merges) {
        int32_t id = idmap_find(t, (const char *)b, n, hmoe_hash_bytes(b, n));
        if (id >= 0 && !(t->tok_flags[id] & 1)) {
            w->ids[0] = id;
            return 1;
        }
    }
    if (n > w->sym_cap) {
        size_t c = n + 64;
        int32_t *a = realloc(w->sid, c * sizeof(int32_t));
        if (!a) return -1;
        w->sid = a;
        if (!(a = realloc(w->prev, c * sizeof(int32_t)))) return -1;
        w->prev = a;
        if (!(a = realloc(w->next, c * sizeof(int32_t)))) return -1;
        w->next = a;
        if (!(a = realloc(w->len, c * sizeof(int32_t)))) return -1;
        w->len = a;
        w->sym_cap = c;
    }
    /* symbols: one per byte; a byte with no token is dropped (tokenizers does the same when
     * there is no unk token) */
    int32_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[b[i]];
        if (id < 0) continue;
        w->sid[m] = id;
        w->len[m] = 1;
        w->prev[m] = m - 1;
        w->next[m] = m + 1;
        m++;
    }
    if (m == 0) return 0;
    w->next[m - 1] = -1;
    w->heap_n = 0;
    for (int32_t i = 0; i + 1 < m; i++) {
        const struct pair_slot *p = pair_find(t, w->sid[i], w->sid[i + 1]);
        if (p && heap_push(w, p->rank, i, p->id)) return -1;
    }
    while (w->heap_n) {
        struct heap_ent top = heap_pop(w);
        int32_t pos = top.pos;
        if (w->len[pos] == 0) continue;
        int32_t nx = w->next[pos];
        if (nx < 0) continue;
        const struct pair_slot *p = pair_find(t, w->sid[pos], w->sid[nx]);
        if (!p || p->id != top.id) continue; /* stale entry */
        w->sid[pos] = top.id;
        w->len[pos] += w->len[nx];
        w->len[nx] = 0;
        w->next[pos] = w->next[nx];
        if (w->next[nx] >= 0) w->prev[w->next[nx]] = pos;
        int32_t pv = w->prev[pos];
        if (pv >= 0) {
            p = pair_find(t, w->sid[pv], w->sid[pos]);
            if (p && heap_push(w, p->rank, pv, p->id)) return -1;
        }
        if (w->next[pos] >= 0) {
            p = pair_find(t, w->sid[pos], w->sid[w->next[pos]]);
            if (p && heap_push(w, p->rank, pos, p->id)) return -1;
        }
    }
    long k = 0;
    for (int32_t i = 0; i >= 0; i = w->next[i]) w->ids[k++] = w->sid[i];
    return k;
}

/* ------------------------------------------------------------------------------------------ */
/* pre-token cache (caller holds cache_mu) */

static const struct cache_ent *cache_get(const struct hmoe_tokenizer *t, const char *b, size_t n,
                                         uint64_t h)
{
    if (!t->cache) return NULL;
    size_t mask = t->cache_cap - 1;
    uint64_t tag = h >> 32;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        uint64_t v = t->cache[i];
        if (!v) return NULL;
        if (v >> 32 != tag) continue;
        const struct cache_ent *e = &t->cents[(uint32_t)v - 1];
        if (e->key_len == n && memcmp(t->ckeys + e->key_off, b, n) == 0) return e;
    }
}

void hmoe_tokenizer_cache_clear(struct hmoe_tokenizer *t)
{
    pthread_mutex_lock(&t->cache_mu);
    if (t->cache) memset(t->cache, 0, t->cache_cap * sizeof *t->cache);
    t->cache_n = 0;
    t->ckeys_len = 0;
    t->cids_len = 0;
    pthread_mutex_unlock(&t->cache_mu);
}

static void cache_put(struct hmoe_tokenizer *t, const char *b, size_t n, uint64_t h,
                      const int32_t *ids, size_t k)
{
    if (!t->cache) {
        t->cache_cap = CACHE_MAX_ENTRIES * 2;
        t->cache = calloc(t->cache_cap, sizeof *t->cache);
        t->cents = malloc(CACHE_MAX_ENTRIES * sizeof *t->cents);
        if (!t->cache || !t->cents) { /* the cache is an optimisation only */
            free(t->cache);
            free(t->cents);
            t->cache = NULL;
            t->cents = NULL;
            return;
        }
    }
    if (t->cache_n >= CACHE_MAX_ENTRIES || t->cids_len + k > CACHE_MAX_IDS) {
        memset(t->cache, 0, t->cache_cap * sizeof *t->cache);
        t->cache_n = t->ckeys_len = t->cids_len = 0;
    }
    if (grow((void **)&t->ckeys, &t->ckeys_cap, t->ckeys_len + n, 1) ||
        grow((void **)&t->cids, &t->cids_cap, t->cids_len + k, sizeof(int32_t)))
        return;
    size_t mask = t->cache_cap - 1, i = h & mask;
    while (t->cache[i]) i = (i + 1) & mask;
    struct cache_ent *e = &t->cents[t->cache_n];
    e->key_off = (uint32_t)t->ckeys_len;
    e->key_len = (uint32_t)n;
    e->ids_off = (uint32_t)t->cids_len;
    e->n_ids = (uint32_t)k;
    t->cache[i] = (h >> 32) << 32 | (uint64_t)(t->cache_n + 1);
    memcpy(t->ckeys + t->ckeys_len, b, n);
    t->ckeys_len += n;
    memcpy(t->cids + t->cids_len, ids, k * sizeof(int32_t));
    t->cids_len += k;
    t->cache_n++;
}

/* ------------------------------------------------------------------------------------------ */
/* encode */

static enum hmoe_status encode_piece(struct hmoe_tokenizer *t, struct work *w, const char *b,
                                     size_t n, struct hmoe_tokens *out)
{
    if (n == 1 && !t->ignore_merges) { /* one byte: its own token, no merges possible */
        int32_t id = t->byte_id[(unsigned char)b[0]];
        return id >= 0 ? hmoe_tokens_push(out, id) : HMOE_OK;
    }
    uint64_t h = 0;
    if (n <= CACHE_MAX_KEY) {
        h = hmoe_hash_bytes(b, n);
        const struct cache_ent *s = cache_get(t, b, n, h);
        if (s) return tokens_append(out, t->cids + s->ids_off, s->n_ids);
    }
    long k = bpe_word(t, w, (const unsigned char *)b, n);
    if (k < 0) return hmoe_fail(HMOE_E_NOMEM, "tokenizer: out of memory");
    if (n <= CACHE_MAX_KEY) cache_put(t, b, n, h, w->ids, (size_t)k);
    return tokens_append(out, w->ids, (size_t)k);
}

/* Splits normalized text with the regex (matches and the gaps between them are pieces). */
static enum hmoe_status pretokenize(struct hmoe_tokenizer *t, struct work *w, const char *s,
                                    size_t n, struct hmoe_tokens *out)
{
    size_t pos = 0;
    enum hmoe_status st;
    while (pos < n) {
        int rc = pcre2_match(t->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, w->md, w->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return hmoe_fail(HMOE_E_INVAL, "tokenizer: regex match failed at byte %zu: %s", pos,
                             (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
        size_t ms = ov[0], me = ov[1];
        if (ms > pos && (st = encode_piece(t, w, s + pos, ms - pos, out))) return st;
        if (me == ms) { /* empty match: step one character so the loop always advances */
            size_t bad;
            size_t k = hmoe_utf8_seq((const unsigned char *)s + me, n - me, &bad);
            me += k ? k : 1;
            if ((st = encode_piece(t, w, s + ms, me - ms, out))) return st;
        } else if ((st = encode_piece(t, w, s + ms, me - ms, out))) {
            return st;
        }
        pos = me;
    }
    if (pos < n && (st = encode_piece(t, w, s + pos, n - pos, out))) return st;
    return HMOE_OK;
}

/* Finds the leftmost-longest added token in s[from..n) among those with normalized == norm.
 * Returns its index in t->added and sets *at, or -1. */
static long find_added(const struct hmoe_tokenizer *t, const char *s, size_t from, size_t n,
                       int norm, size_t *at)
{
    const uint8_t *first = norm ? t->added_first_norm : t->added_first;
    for (size_t i = from; i < n; i++) {
        if (!first[(unsigned char)s[i]]) continue;
        for (size_t k = 0; k < t->n_added; k++) { /* longest first */
            const struct added_tok *a = &t->added[k];
            if (a->normalized != norm || a->len > n - i) continue;
            if (memcmp(s + i, a->content, a->len) == 0) {
                *at = i;
                return (long)k;
            }
        }
    }
    return -1;
}

/* NFC-normalized text -> (normalized added tokens) -> regex pieces -> BPE */
static enum hmoe_status encode_normalized(struct hmoe_tokenizer *t, struct work *w, const char *s,
                                          size_t n, int parse_special, struct hmoe_tokens *out)
{
    enum hmoe_status st;
    size_t pos = 0;
    while (parse_special && t->has_norm_added && pos < n) {
        size_t at;
        long k = find_added(t, s, pos, n, 1, &at);
        if (k < 0) break;
        if (at > pos && (st = pretokenize(t, w, s + pos, at - pos, out))) return st;
        if ((st = hmoe_tokens_push(out, t->added[k].id))) return st;
        pos = at + t->added[k].len;
    }
    return pos < n ? pretokenize(t, w, s + pos, n - pos, out) : HMOE_OK;
}

/* NFC of s[0..n) into a malloc'd buffer (*out, *out_n), or *out = NULL when s is already NFC
 * by the quick rule below. Text only changes around code points >= U+0300 (lead bytes >= 0xCC):
 * lower ones are stable and never compose with what precedes them. An ASCII character never
 * composes backwards nor reorders, so NFC distributes over cuts made before ASCII characters:
 * only the non-ASCII runs that hold such a byte, plus the ASCII character just before them (it
 * may be the base of a combining mark), go through utf8proc. */
static enum hmoe_status nfc(const char *s, size_t n, char **out, size_t *out_n)
{
    const unsigned char *u = (const unsigned char *)s;
    *out = NULL;
    size_t i = 0;
    while (i < n && u[i] < 0xCC) i++;
    if (i == n) return HMOE_OK;
    char *o = NULL;
    size_t w = 0, cap = 0, done = 0; /* s[0..done) is in o */
    size_t pos = 0;
    while (pos < n) {
        while (pos < n && u[pos] < 0x80) pos++;
        if (pos >= n) break;
        size_t run = pos, end = pos, hot = 0;
        while (end < n && u[end] >= 0x80) hot |= u[end++] >= 0xCC;
        pos = end;
        if (!hot) continue;
        size_t start = run > done && u[run - 1] < 0x80 ? run - 1 : run;
        utf8proc_uint8_t *norm = NULL;
        utf8proc_ssize_t m = utf8proc_map(u + start, (utf8proc_ssize_t)(end - start), &norm,
                                          UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (m < 0) {
            free(o);
            return hmoe_fail(m == UTF8PROC_ERROR_NOMEM ? HMOE_E_NOMEM : HMOE_E_INVAL,
                             "tokenizer: NFC failed: %s", utf8proc_errmsg(m));
        }
        if (grow((void **)&o, &cap, w + (start - done) + (size_t)m + 1, 1)) {
            free(norm);
            free(o);
            return hmoe_fail(HMOE_E_NOMEM, "tokenizer: out of memory");
        }
        memcpy(o + w, s + done, start - done);
        w += start - done;
        memcpy(o + w, norm, (size_t)m);
        w += (size_t)m;
        done = end;
        free(norm);
    }
    if (grow((void **)&o, &cap, w + (n - done) + 1, 1)) {
        free(o);
        return hmoe_fail(HMOE_E_NOMEM, "tokenizer: out of memory");
    }
    memcpy(o + w, s + done, n - done);
    w += n - done;
    *out = o;
    *out_n = w;
    return HMOE_OK;
}

static enum hmoe_status encode_segment(struct hmoe_tokenizer *t, struct work *w, const char *s,
                                       size_t n, int parse_special, struct hmoe_tokens *out)
{
    if (!t->nfc) return encode_normalized(t, w, s, n, parse_special, out);
    char *norm;
    size_t m = 0;
    enum hmoe_status st = nfc(s, n, &norm, &m);
    if (st) return st;
    if (!norm) return encode_normalized(t, w, s, n, parse_special, out);
    st = encode_normalized(t, w, norm, m, parse_special, out);
    free(norm);
    return st;
}

static void work_free(struct work *w)
{
    free(w->sid);
    free(w->prev);
    free(w->next);
    free(w->len);
    free(w->heap);
    free(w->ids);
    if (w->md) pcre2_match_data_free(w->md);
    if (w->mctx) pcre2_match_context_free(w->mctx);
    if (w->jstack) pcre2_jit_stack_free(w->jstack);
}

enum hmoe_status hmoe_tokenizer_encode(struct hmoe_tokenizer *t, const char *text, size_t len,
                                       int parse_special, struct hmoe_tokens *out)
{
    size_t bad = hmoe_utf8_valid_prefix(text, len);
    if (bad != len)
        return hmoe_fail(HMOE_E_INVAL, "invalid UTF-8 in the input at byte %zu (0x%02x)", bad,
                         (unsigned)(unsigned char)text[bad]);
    if (len == 0) return HMOE_OK;
    struct work w = {0};
    w.md = pcre2_match_data_create_from_pattern(t->re, NULL);
    w.mctx = pcre2_match_context_create(NULL);
    if (!w.md || !w.mctx) {
        work_free(&w);
        return hmoe_fail(HMOE_E_NOMEM, "tokenizer: out of memory");
    }
    if (t->jit) {
        /* a larger JIT stack than the default 32 KiB for long runs of one character class */
        w.jstack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, NULL);
        if (w.jstack) pcre2_jit_stack_assign(w.mctx, NULL, w.jstack);
    }
    enum hmoe_status st = HMOE_OK;
    pthread_mutex_lock(&t->cache_mu);
    size_t pos = 0;
    while (parse_special && pos < len) {
        size_t at;
        long k = find_added(t, text, pos, len, 0, &at);
        if (k < 0) break;
        if (at > pos && (st = encode_segment(t, &w, text + pos, at - pos, 1, out))) break;
        if ((st = hmoe_tokens_push(out, t->added[k].id))) break;
        pos = at + t->added[k].len;
    }
    if (!st && pos < len) st = encode_segment(t, &w, text + pos, len - pos, parse_special, out);
    pthread_mutex_unlock(&t->cache_mu);
    work_free(&w);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* decode */

enum hmoe_status hmoe_tokenizer_decode(const struct hmoe_tokenizer *t, const int32_t *ids,
                                       size_t n, int skip_special, char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_ids || t->tok_len[ids[i]] < 0)
            return hmoe_fail(HMOE_E_INVAL, "decode: unknown token id %d (vocabulary has %d ids)",
                             ids[i], t->n_ids);
        if (skip_special && (t->tok_flags[ids[i]] & 2)) continue;
        total += (size_t)t->tok_len[ids[i]];
    }
    char *o = malloc(total + 1);
    if (!o) return hmoe_fail(HMOE_E_NOMEM, "decode: out of memory");
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (skip_special && (t->tok_flags[ids[i]] & 2)) continue;
        memcpy(o + w, t->pool + t->tok_off[ids[i]], (size_t)t->tok_len[ids[i]]);
        w += (size_t)t->tok_len[ids[i]];
    }
    o[w] = 0;
    *out = o;
    *out_len = w;
    return HMOE_OK;
}
