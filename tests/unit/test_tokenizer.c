/* test_tokenizer.c: the BPE tokenizer against Hugging Face `tokenizers` on the fixtures of
 * tests/data/tokenizer/ (made by scripts/gen_tokenizer_fixtures.py): encodings equal, decoding
 * gives HF's text back; plus invalid UTF-8, the streaming UTF-8 decoder, literal special tokens,
 * legacy "a b" merges and malformed tokenizer files. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <pthread.h>
#include <utf8proc.h>

#include "hmoe/text.h"
#include "hmoe_test.h"

#define TOK_DIR HMOE_TEST_DATA "/tokenizer"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[n] = 0;
    if (len) *len = (size_t)n;
    return b;
}

static size_t unhex(const char *h, char *out)
{
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (char)v;
    }
    return n;
}

static void test_fixtures(struct hmoe_tokenizer *tok)
{
    size_t len;
    char *all = slurp(TOK_DIR "/cases.jsonl", &len);
    CHECK(all != NULL);
    if (!all) return;
    int n_cases = 0, n_enc_ok = 0, n_dec_ok = 0;
    char *save = NULL;
    for (char *line = strtok_r(all, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *c = cJSON_Parse(line);
        CHECK(c != NULL);
        if (!c) continue;
        const char *hex = cJSON_GetObjectItem(c, "hex")->valuestring;
        char *text = malloc(strlen(hex) / 2 + 1);
        size_t tlen = unhex(hex, text);
        cJSON *jids = cJSON_GetObjectItem(c, "ids");
        size_t n_ref = (size_t)cJSON_GetArraySize(jids);
        int32_t *ref = malloc((n_ref + 1) * sizeof(int32_t));
        for (size_t i = 0; i < n_ref; i++)
            ref[i] = (int32_t)cJSON_GetArrayItem(jids, (int)i)->valuedouble;

        struct hmoe_tokens got = {0};
        enum hmoe_status st = hmoe_tokenizer_encode(tok, text, tlen, 1, &got);
        int same = st == HMOE_OK && got.n == n_ref &&
                   (n_ref == 0 || memcmp(got.ids, ref, n_ref * sizeof(int32_t)) == 0);
        n_enc_ok += same;
        if (!same) {
            fprintf(stderr, "encode mismatch (%s): text %s\n  ref:", hmoe_err_msg(),
                    cJSON_GetObjectItem(c, "hex")->valuestring);
            for (size_t i = 0; i < n_ref; i++) fprintf(stderr, " %d", ref[i]);
            fprintf(stderr, "\n  got:");
            for (size_t i = 0; i < got.n; i++) fprintf(stderr, " %d", got.ids[i]);
            fprintf(stderr, "\n");
        }
        /* decode of the reference ids, with and without special tokens */
        const char *keys[2] = {"decoded_hex", "decoded_skip_hex"};
        int dec_ok = 1;
        for (int skip = 0; skip < 2; skip++) {
            const char *dh = cJSON_GetObjectItem(c, keys[skip])->valuestring;
            char *want = malloc(strlen(dh) / 2 + 1);
            size_t wlen = unhex(dh, want);
            char *raw, *txt;
            size_t rlen, xlen;
            CHECK(hmoe_tokenizer_decode(tok, ref, n_ref, skip, &raw, &rlen) == HMOE_OK);
            struct hmoe_utf8_stream us;
            hmoe_utf8_stream_init(&us);
            CHECK(hmoe_utf8_stream_feed(&us, raw, rlen, 1, &txt, &xlen) == HMOE_OK);
            if (xlen != wlen || memcmp(txt, want, wlen)) {
                dec_ok = 0;
                fprintf(stderr, "decode mismatch (skip=%d) for %s\n", skip, hex);
            }
            free(raw);
            free(txt);
            free(want);
        }
        n_dec_ok += dec_ok;
        n_cases++;
        hmoe_tokens_free(&got);
        free(ref);
        free(text);
        cJSON_Delete(c);
    }
    fprintf(stderr, "fixtures: %d cases, %d encodings equal, %d decodings equal\n", n_cases,
            n_enc_ok, n_dec_ok);
    CHECK(n_cases >= 400);
    CHECK(n_enc_ok == n_cases);
    CHECK(n_dec_ok == n_cases);
    free(all);
}

static void test_invalid_utf8(struct hmoe_tokenizer *tok)
{
    static const char *bad[] = {"\xff", "ab\xc0\xafz", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                                "abc\xe2\x82", "\x80", "ok \xc3"};
    static const size_t at[] = {0, 2, 0, 0, 3, 0, 3};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct hmoe_tokens t = {0};
        CHECK(hmoe_tokenizer_encode(tok, bad[i], strlen(bad[i]), 1, &t) == HMOE_E_INVAL);
        CHECK(strstr(hmoe_err_msg(), "invalid UTF-8") != NULL);
        CHECK(hmoe_utf8_valid_prefix(bad[i], strlen(bad[i])) == at[i]);
        hmoe_tokens_free(&t);
    }
    CHECK(hmoe_utf8_valid_prefix("\xf0\x9f\x98\x80 h\xc3\xa9", 8) == 8);
}

static void test_stream(void)
{
    /* "é😀" fed one byte at a time: nothing until each character is complete */
    const char *s = "\xc3\xa9\xf0\x9f\x98\x80";
    struct hmoe_utf8_stream st;
    hmoe_utf8_stream_init(&st);
    size_t emitted[6] = {0, 2, 0, 0, 0, 4};
    for (int i = 0; i < 6; i++) {
        char *o;
        size_t n;
        CHECK(hmoe_utf8_stream_feed(&st, s + i, 1, 0, &o, &n) == HMOE_OK);
        CHECKF(n == emitted[i], "byte %d: %zu", i, n);
        free(o);
    }
    /* invalid bytes -> U+FFFD each; truncated tail on flush -> one U+FFFD */
    char *o;
    size_t n;
    CHECK(hmoe_utf8_stream_feed(&st, "a\xff" "b\xe2\x82", 5, 1, &o, &n) == HMOE_OK);
    CHECK(n == 8 && !memcmp(o, "a\xef\xbf\xbd" "b\xef\xbf\xbd", 8));
    free(o);
    /* maximal subpart: E2 82 41 -> one U+FFFD then 'A' */
    hmoe_utf8_stream_init(&st);
    CHECK(hmoe_utf8_stream_feed(&st, "\xe2\x82" "A", 3, 0, &o, &n) == HMOE_OK);
    CHECK(n == 4 && !memcmp(o, "\xef\xbf\xbd" "A", 4));
    free(o);
}

static void test_special(struct hmoe_tokenizer *tok)
{
    int32_t im_start = hmoe_tokenizer_token_id(tok, "<|im_start|>");
    int32_t eot = hmoe_tokenizer_token_id(tok, "<|endoftext|>");
    int32_t think = hmoe_tokenizer_token_id(tok, "<think>");
    CHECK(im_start >= 0 && eot >= 0 && think >= 0);
    CHECK(hmoe_tokenizer_is_special(tok, im_start) && hmoe_tokenizer_is_added(tok, im_start));
    CHECK(!hmoe_tokenizer_is_special(tok, think) && hmoe_tokenizer_is_added(tok, think));
    struct hmoe_tokens a = {0}, b = {0};
    const char *s = "<|im_start|>user";
    CHECK(hmoe_tokenizer_encode(tok, s, strlen(s), 1, &a) == HMOE_OK);
    CHECK(a.n >= 2 && a.ids[0] == im_start);
    /* parse_special=0: taken literally, never the special id, and it round-trips */
    CHECK(hmoe_tokenizer_encode(tok, s, strlen(s), 0, &b) == HMOE_OK);
    int has = 0;
    for (size_t i = 0; i < b.n; i++) has |= b.ids[i] == im_start;
    CHECK(!has && b.n > a.n);
    char *d;
    size_t dn;
    CHECK(hmoe_tokenizer_decode(tok, b.ids, b.n, 1, &d, &dn) == HMOE_OK);
    CHECK(dn == strlen(s) && !memcmp(d, s, dn));
    free(d);
    int32_t badid = hmoe_tokenizer_n_vocab(tok);
    CHECK(hmoe_tokenizer_decode(tok, &badid, 1, 0, &d, &dn) == HMOE_E_INVAL);
    hmoe_tokens_free(&a);
    hmoe_tokens_free(&b);
}

/* Random text from many scripts, marks, emoji, spaces and added tokens: decode(encode(s)) must
 * give NFC(s) back (the tokenizer is lossless up to normalisation); random bytes either fail
 * with HMOE_E_INVAL or round-trip. */
static uint64_t rs = 0x9E3779B97F4A7C15ull;
static uint32_t rnd32(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 16);
}

static void test_roundtrip_random(struct hmoe_tokenizer *tok)
{
    static const uint32_t ranges[][2] = {
        {0x20, 0x7e},      {0x09, 0x0d},     {0xa0, 0x24f},   {0x300, 0x36f}, {0x370, 0x3ff},
        {0x400, 0x4ff},    {0x590, 0x5ff},   {0x600, 0x6ff},  {0x900, 0x97f}, {0xe00, 0xe7f},
        {0x1100, 0x11ff},  {0x2000, 0x206f}, {0x3000, 0x30ff}, {0x4e00, 0x4eff},
        {0xac00, 0xacff},  {0xfb00, 0xfb4f}, {0xff00, 0xffef}, {0x1f300, 0x1f6ff},
        {0x1d400, 0x1d7ff}, {0x85, 0x85},    {0x200b, 0x200d}, {0xfe0f, 0xfe0f}};
    const size_t nr = sizeof ranges / sizeof *ranges;
    static const char *frags[] = {"<|im_start|>", "<|im_end|>", "<think>", "'s", "'LL", "\r\n",
                                  "   ", "\n\n", "DON'T", " the", "1234"};
    char buf[2048];
    int ok = 0;
    for (int iter = 0; iter < 300; iter++) {
        size_t n = 0;
        int len = 1 + (int)(rnd32() % 60);
        for (int k = 0; k < len && n < sizeof buf - 16; k++) {
            if (rnd32() % 8 == 0) {
                const char *f = frags[rnd32() % (sizeof frags / sizeof *frags)];
                memcpy(buf + n, f, strlen(f));
                n += strlen(f);
                continue;
            }
            const uint32_t *r = ranges[rnd32() % nr];
            utf8proc_int32_t cp = (utf8proc_int32_t)(r[0] + rnd32() % (r[1] - r[0] + 1));
            n += (size_t)utf8proc_encode_char(cp, (utf8proc_uint8_t *)buf + n);
        }
        struct hmoe_tokens ids = {0};
        CHECK(hmoe_tokenizer_encode(tok, buf, n, 1, &ids) == HMOE_OK);
        char *dec;
        size_t dlen;
        CHECK(hmoe_tokenizer_decode(tok, ids.ids, ids.n, 0, &dec, &dlen) == HMOE_OK);
        utf8proc_uint8_t *nfc = NULL;
        utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)buf, (utf8proc_ssize_t)n, &nfc,
                                          UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        /* the decoded text is exactly NFC(input), except that added tokens are cut out before
         * normalisation: a mark right after one (">" + U+0338 would compose to U+226F) stays
         * apart. Then only NFC(decoded) == NFC(input) can be asked. */
        int exact = !memmem(buf, n, "\xcc\xb8", 2);
        utf8proc_uint8_t *nfc2 = NULL;
        utf8proc_ssize_t m2 = utf8proc_map((const utf8proc_uint8_t *)dec, (utf8proc_ssize_t)dlen,
                                           &nfc2, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        int same = m >= 0 && m == m2 && !memcmp(nfc, nfc2, (size_t)m);
        if (exact) same = same && (size_t)m == dlen && !memcmp(nfc, dec, dlen);
        ok += same;
        free(nfc);
        free(nfc2);
        free(dec);
        hmoe_tokens_free(&ids);
    }
    CHECKF(ok == 300, "%d of 300 random strings round-trip", ok);
    int inval = 0;
    for (int iter = 0; iter < 2000; iter++) {
        size_t n = 1 + rnd32() % 12;
        for (size_t k = 0; k < n; k++) buf[k] = (char)rnd32();
        struct hmoe_tokens ids = {0};
        enum hmoe_status st = hmoe_tokenizer_encode(tok, buf, n, 1, &ids);
        if (st == HMOE_E_INVAL) {
            inval++;
            CHECK(hmoe_utf8_valid_prefix(buf, n) < n);
        } else {
            CHECK(st == HMOE_OK && hmoe_utf8_valid_prefix(buf, n) == n);
        }
        hmoe_tokens_free(&ids);
    }
    CHECK(inval > 1000);
}

/* The tokenizer is shared by threads (the pre-token cache has a lock): same ids from 4 threads */
struct thr_arg {
    struct hmoe_tokenizer *tok;
    const char *text;
    size_t len;
    struct hmoe_tokens out;
    int rc;
};
static void *thr_main(void *p)
{
    struct thr_arg *a = p;
    for (int i = 0; i < 4 && !a->rc; i++) {
        a->out.n = 0;
        if (i == 2) hmoe_tokenizer_cache_clear(a->tok);
        a->rc = hmoe_tokenizer_encode(a->tok, a->text, a->len, 1, &a->out);
    }
    return NULL;
}

static void test_threads(struct hmoe_tokenizer *tok)
{
    size_t len;
    char *text = slurp(TOK_DIR "/cases.jsonl", &len); /* a varied UTF-8 text */
    if (!text) return;
    if (len > 100000) { /* keep it short; cut at a character boundary */
        len = 100000;
        while (len && ((unsigned char)text[len] & 0xC0) == 0x80) len--;
    }
    struct hmoe_tokens ref = {0};
    CHECK(hmoe_tokenizer_encode(tok, text, len, 1, &ref) == HMOE_OK);
    pthread_t th[4];
    struct thr_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (struct thr_arg){tok, text, len, {0}, 0};
        CHECK(pthread_create(&th[i], NULL, thr_main, &a[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(a[i].rc == HMOE_OK && a[i].out.n == ref.n &&
              !memcmp(a[i].out.ids, ref.ids, ref.n * sizeof *ref.ids));
        hmoe_tokens_free(&a[i].out);
    }
    hmoe_tokens_free(&ref);
    free(text);
}

/* Damaged tokenizer files (random bytes changed, truncated) load or fail cleanly, never crash;
 * what loads still encodes without crashing. */
static void test_damaged_files(void)
{
    size_t len;
    char *orig = slurp(TOK_DIR "/tokenizer.json", &len);
    if (!orig) return;
    char *buf = malloc(len);
    int loaded = 0, refused = 0;
    for (int iter = 0; iter < 40; iter++) {
        memcpy(buf, orig, len);
        size_t n = len;
        if (iter % 4 == 3) {
            n = rnd32() % len; /* truncated */
        } else {
            for (int k = 0; k < 1 + iter % 6; k++) buf[rnd32() % len] = (char)(rnd32() % 128);
        }
        struct hmoe_tokenizer *t = NULL;
        enum hmoe_status st = hmoe_tokenizer_load_json(buf, n, &t);
        if (st == HMOE_OK) {
            loaded++;
            struct hmoe_tokens ids = {0};
            const char *s = "Hello <|im_end|> w\xc3\xb6rld 123";
            CHECK(hmoe_tokenizer_encode(t, s, strlen(s), 1, &ids) == HMOE_OK);
            hmoe_tokens_free(&ids);
            hmoe_tokenizer_free(t);
        } else {
            refused++;
            CHECK(t == NULL && hmoe_err_msg()[0]);
        }
    }
    CHECK(loaded + refused == 40 && refused > 0);
    /* ids beyond the limit are refused, not allocated */
    const char *big = "{\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"use_regex\":true},\"model\":"
                      "{\"vocab\":{\"a\":2000000000},\"merges\":[]}}";
    struct hmoe_tokenizer *t = NULL;
    CHECK(hmoe_tokenizer_load_json(big, strlen(big), &t) == HMOE_E_FORMAT && t == NULL);
    free(buf);
    free(orig);
}

static void test_small_json(void)
{
    /* legacy string merges, ByteLevel with its own (GPT-2) regex, ignore_merges */
    const char *js =
        "{\"added_tokens\":[{\"id\":7,\"content\":\"<s>\",\"special\":true,\"normalized\":false}],"
        "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
        "\"use_regex\":true},\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\","
        "\"vocab\":{\"a\":0,\"b\":1,\"\\u0120\":2,\"ab\":3,\"\\u0120ab\":4,\"c\":5,\"abc\":6},"
        "\"merges\":[\"a b\",\"\\u0120 ab\",\"ab c\"]}}";
    struct hmoe_tokenizer *t = NULL;
    CHECK(hmoe_tokenizer_load_json(js, strlen(js), &t) == HMOE_OK);
    if (!t) {
        fprintf(stderr, "%s\n", hmoe_err_msg());
        return;
    }
    struct hmoe_tokens ids = {0};
    CHECK(hmoe_tokenizer_encode(t, "ab abc<s>ba", 11, 1, &ids) == HMOE_OK);
    int32_t want[] = {3, 4, 5, 7, 1, 0};
    CHECK(ids.n == 6 && !memcmp(ids.ids, want, sizeof want));
    hmoe_tokens_free(&ids);
    CHECK(hmoe_tokenizer_n_vocab(t) == 8);
    hmoe_tokenizer_free(t);

    /* U+0085 (NEL) is whitespace for \s, as in Oniguruma (what tokenizers uses; its RE doc lists
     * 0085 under \s) but not in PCRE2's UCP \s: "\x85\x85x" must split as "\x85" "\x85" "x" with
     * the GPT-2 regex, not "\x85\x85" "x". (C2 85 -> byte-level U+00C2 U+0127.) */
    js =
        "{\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},"
        "\"model\":{\"type\":\"BPE\",\"vocab\":{\"\\u00c2\":0,\"\\u0127\":1,\"x\":2,"
        "\"\\u00c2\\u0127\":3,\"\\u00c2\\u0127\\u00c2\\u0127\":4},"
        "\"merges\":[[\"\\u00c2\",\"\\u0127\"],[\"\\u00c2\\u0127\",\"\\u00c2\\u0127\"]]}}";
    t = NULL;
    CHECKF(hmoe_tokenizer_load_json(js, strlen(js), &t) == HMOE_OK, "%s", hmoe_err_msg());
    if (t) {
        CHECK(hmoe_tokenizer_encode(t, "\xc2\x85\xc2\x85x", 5, 1, &ids) == HMOE_OK);
        int32_t want_nel[] = {3, 3, 2};
        CHECK(ids.n == 3 && !memcmp(ids.ids, want_nel, sizeof want_nel));
        hmoe_tokens_free(&ids);
        CHECK(hmoe_tokenizer_encode(t, "\xc2\x85\xc2\x85", 4, 1, &ids) == HMOE_OK);
        CHECK(ids.n == 1 && ids.ids[0] == 4); /* a whitespace run stays one piece */
        hmoe_tokens_free(&ids);
        hmoe_tokenizer_free(t);
    }

    /* malformed or unsupported files fail cleanly */
    const char *bad[] = {
        "{", "{}", "{\"model\":{\"type\":\"Unigram\",\"vocab\":[],\"merges\":[]}}",
        "{\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"model\":{\"vocab\":{\"a\":0},"
        "\"merges\":[\"a b\"]}}",
        "{\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"use_regex\":true},\"model\":{\"vocab\":"
        "{\"a\":-4},\"merges\":[]}}",
        "{\"normalizer\":{\"type\":\"NFKC\"},\"pre_tokenizer\":{\"type\":\"ByteLevel\"},"
        "\"model\":{\"vocab\":{\"a\":0},\"merges\":[]}}",
        "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":"
        "\"Isolated\"},\"model\":{\"vocab\":{\"a\":0},\"merges\":[]}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        t = NULL;
        enum hmoe_status st = hmoe_tokenizer_load_json(bad[i], strlen(bad[i]), &t);
        CHECKF(st != HMOE_OK && t == NULL && hmoe_err_msg()[0], "case %zu", i);
    }
    CHECK(hmoe_tokenizer_load("/nonexistent/tokenizer.json", &t) == HMOE_E_IO);
}

int main(void)
{
    struct hmoe_tokenizer *tok = NULL;
    enum hmoe_status st = hmoe_tokenizer_load(TOK_DIR "/tokenizer.json", &tok);
    CHECKF(st == HMOE_OK, "%s", hmoe_err_msg());
    if (tok) {
        test_fixtures(tok);
        /* again with a warm cache: same results */
        test_fixtures(tok);
        test_invalid_utf8(tok);
        test_special(tok);
        test_roundtrip_random(tok);
        test_threads(tok);
        hmoe_tokenizer_free(tok);
    }
    test_stream();
    test_small_json();
    test_damaged_files();
    TEST_DONE();
}
