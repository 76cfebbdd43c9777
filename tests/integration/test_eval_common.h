/* tests/integration/test_eval_common.h: helpers shared by the forward-pass tests: relative
 * max-diff, fixture discovery under tests/data, a whole-sequence runner (prefill / decode /
 * split continuation). Header-only (static functions) so each test stays one executable. */
#ifndef HMOE_TEST_EVAL_COMMON_H
#define HMOE_TEST_EVAL_COMMON_H

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hmoe/forward.h"
#include "hmoe/model.h"
#include "hmoe/status.h"

/* max|a-b| / max|ref| over n values (ref = b); +inf when any value is not finite. */
static inline double rel_maxdiff(const float *a, const float *ref, size_t n)
{
    double md = 0.0, mr = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(ref[i])) return INFINITY;
        double d = fabs((double)a[i] - (double)ref[i]);
        if (d > md) md = d;
        if (fabs((double)ref[i]) > mr) mr = fabs((double)ref[i]);
    }
    return mr > 0.0 ? md / mr : md;
}

/* Reads a whole file; *len gets its size. NULL on failure. The buffer is NUL-terminated. */
static inline char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    char *buf = NULL;
    if (fseek(fp, 0, SEEK_END) == 0) {
        long sz = ftell(fp);
        if (sz >= 0 && fseek(fp, 0, SEEK_SET) == 0 && (buf = malloc((size_t)sz + 1))) {
            if (fread(buf, 1, (size_t)sz, fp) != (size_t)sz) {
                free(buf);
                buf = NULL;
            } else {
                buf[sz] = 0;
                if (len) *len = (size_t)sz;
            }
        }
    }
    fclose(fp);
    return buf;
}

static inline int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Fixture directories under HMOE_TEST_DATA with ref.json, tokens.txt and ref_logits.f32,
 * sorted by name. Returns the count (0 when none); *names is a malloc'd array of malloc'd
 * full paths. */
static inline int find_fixtures(char ***names)
{
    *names = NULL;
    DIR *d = opendir(HMOE_TEST_DATA);
    if (!d) return 0;
    int n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char base[4096], p[4200];
        snprintf(base, sizeof base, "%s/%s", HMOE_TEST_DATA, de->d_name);
        static const char *need[] = {"ref.json", "tokens.txt", "ref_logits.f32"};
        int ok = 1;
        for (int i = 0; i < 3 && ok; i++) {
            snprintf(p, sizeof p, "%s/%s", base, need[i]);
            ok = file_exists(p);
        }
        if (!ok) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            char **nn = realloc(*names, (size_t)cap * sizeof *nn);
            if (!nn) break;
            *names = nn;
        }
        (*names)[n++] = strdup(base);
    }
    closedir(d);
    for (int i = 1; i < n; i++) /* insertion sort by name: deterministic order */
        for (int j = i; j > 0 && strcmp((*names)[j - 1], (*names)[j]) > 0; j--) {
            char *t = (*names)[j];
            (*names)[j] = (*names)[j - 1];
            (*names)[j - 1] = t;
        }
    return n;
}

/* Calls fn(dir, i) for every fixture in find_fixtures' order; the count (0 when none). */
static inline int for_each_fixture(void (*fn)(const char *dir, int i))
{
    char **names = NULL;
    const int n = find_fixtures(&names);
    for (int i = 0; i < n; i++) {
        fn(names[i], i);
        free(names[i]);
    }
    free(names);
    return n;
}

/* Parses tokens.txt. Returns the count, or -1. */
static inline int read_token_file(const char *path, int32_t **out)
{
    char *txt = slurp(path, NULL);
    if (!txt) return -1;
    int n = 0, cap = 64;
    int32_t *t = malloc((size_t)cap * sizeof *t);
    char *p = txt;
    while (t) {
        char *end;
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
        if (!*p) break;
        long v = strtol(p, &end, 10);
        if (end == p) {
            free(t);
            t = NULL;
            break;
        }
        p = end;
        if (n == cap) {
            cap *= 2;
            int32_t *nt = realloc(t, (size_t)cap * sizeof *t);
            if (!nt) {
                free(t);
                t = NULL;
                break;
            }
            t = nt;
        }
        t[n++] = (int32_t)v;
    }
    free(txt);
    if (!t) return -1;
    *out = t;
    return n;
}

/* Runs tokens through a fresh sequence: calls of sizes split[0], split[1], ... (a 0-terminated
 * list; a size of 1 is a decode step), writing (T, V) logits. Returns the status. */
static inline enum hmoe_status run_split(struct hmoe_fwd *f, const int32_t *tok, int T, const int *split,
                                  float *logits, int V)
{
    hmoe_fwd_reset(f);
    int pos = 0;
    for (int i = 0; split[i] && pos < T; i++) {
        int n = split[i] < T - pos ? split[i] : T - pos;
        enum hmoe_status st = hmoe_fwd_run(f, tok + pos, n, logits + (size_t)pos * V, 0);
        if (st) return st;
        pos += n;
    }
    /* whatever the list did not cover runs as decode steps */
    for (; pos < T; pos++) {
        enum hmoe_status st = hmoe_fwd_run(f, tok + pos, 1, logits + (size_t)pos * V, 0);
        if (st) return st;
    }
    return HMOE_OK;
}

#endif
