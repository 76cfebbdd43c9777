/* tokenize_main.c: hmoe-tokenize, the tokenizer on the command line.
 *   hmoe-tokenize --tokenizer FILE            UTF-8 text on stdin -> ids separated by spaces
 *   hmoe-tokenize --tokenizer FILE --decode   ids on stdin (spaces, commas, newlines) -> text
 * Exit codes: 0 ok, 1 usage, 2 bad input or tokenizer file. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hmoe/text.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hmoe-tokenize --tokenizer FILE [--decode] [options] < input\n"
            "  -t, --tokenizer FILE   Hugging Face tokenizer.json (required)\n"
            "  -d, --decode           read token ids, print the text\n"
            "  --no-special           encode: take added/special tokens in the text literally\n"
            "  --skip-special         decode: leave out special tokens\n"
            "  --count                encode: print only the number of tokens\n"
            "  -h, --help             this help\n");
}

static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *b = malloc(cap + 1);
    if (!b) return NULL;
    for (;;) {
        if (n == cap) {
            char *q = realloc(b, cap * 2 + 1);
            if (!q) {
                free(b);
                return NULL;
            }
            b = q;
            cap *= 2;
        }
        size_t k = fread(b + n, 1, cap - n, f);
        n += k;
        if (k == 0) break;
    }
    if (ferror(f)) {
        free(b);
        return NULL;
    }
    b[n] = 0;
    *len = n;
    return b;
}

static int do_decode(struct hmoe_tokenizer *tok, const char *in, int skip_special)
{
    struct hmoe_tokens ids = {0};
    const char *p = in;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',' || *p == '[' ||
               *p == ']')
            p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX) {
            fprintf(stderr, "error: not a token id near \"%.20s\"\n", p);
            hmoe_tokens_free(&ids);
            return 2;
        }
        if (hmoe_tokens_push(&ids, (int32_t)v)) {
            fprintf(stderr, "error: %s\n", hmoe_err_msg());
            hmoe_tokens_free(&ids);
            return 2;
        }
        p = end;
    }
    char *raw, *text;
    size_t raw_len, text_len;
    if (hmoe_tokenizer_decode(tok, ids.ids, ids.n, skip_special, &raw, &raw_len)) {
        fprintf(stderr, "error: %s\n", hmoe_err_msg());
        hmoe_tokens_free(&ids);
        return 2;
    }
    hmoe_tokens_free(&ids);
    /* print valid UTF-8 only: bytes of a split character become U+FFFD */
    struct hmoe_utf8_stream st;
    hmoe_utf8_stream_init(&st);
    enum hmoe_status s = hmoe_utf8_stream_feed(&st, raw, raw_len, 1, &text, &text_len);
    free(raw);
    if (s) {
        fprintf(stderr, "error: %s\n", hmoe_err_msg());
        return 2;
    }
    fwrite(text, 1, text_len, stdout);
    free(text);
    return fflush(stdout) ? 2 : 0;
}

static int do_encode(struct hmoe_tokenizer *tok, const char *in, size_t len, int parse_special,
                     int count_only)
{
    struct hmoe_tokens ids = {0};
    if (hmoe_tokenizer_encode(tok, in, len, parse_special, &ids)) {
        fprintf(stderr, "error: %s\nhint: the input must be UTF-8 text\n", hmoe_err_msg());
        hmoe_tokens_free(&ids);
        return 2;
    }
    if (count_only) {
        printf("%zu\n", ids.n);
    } else {
        for (size_t i = 0; i < ids.n; i++) printf(i ? " %d" : "%d", ids.ids[i]);
        putchar('\n');
    }
    hmoe_tokens_free(&ids);
    return fflush(stdout) ? 2 : 0;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int decode = 0, parse_special = 1, skip_special = 0, count_only = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((!strcmp(a, "-t") || !strcmp(a, "--tokenizer")) && i + 1 < argc) {
            path = argv[++i];
        } else if (!strncmp(a, "--tokenizer=", 12)) {
            path = a + 12;
        } else if (!strcmp(a, "-d") || !strcmp(a, "--decode")) {
            decode = 1;
        } else if (!strcmp(a, "--no-special")) {
            parse_special = 0;
        } else if (!strcmp(a, "--skip-special")) {
            skip_special = 1;
        } else if (!strcmp(a, "--count")) {
            count_only = 1;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "error: unknown or incomplete option '%s' (see --help)\n", a);
            return 1;
        }
    }
    if (!path) {
        fprintf(stderr, "error: --tokenizer FILE is required (see --help)\n");
        return 1;
    }
    struct hmoe_tokenizer *tok;
    if (hmoe_tokenizer_load(path, &tok)) {
        fprintf(stderr, "error: %s\nhint: pass the model's tokenizer.json\n", hmoe_err_msg());
        return 2;
    }
    size_t len;
    char *in = read_all(stdin, &len);
    if (!in) {
        fprintf(stderr, "error: cannot read stdin\n");
        hmoe_tokenizer_free(tok);
        return 2;
    }
    int rc = decode ? do_decode(tok, in, skip_special)
                    : do_encode(tok, in, len, parse_special, count_only);
    free(in);
    hmoe_tokenizer_free(tok);
    return rc;
}
