/* sampler.c: next-token sampling on a logits vector (n_vocab floats, e.g. 151936).
 * Order (Hugging Face generate): penalties -> temperature -> top-k -> top-p -> min-p -> draw.
 * Penalties: repetition (llama.cpp: divide positive / multiply negative logits of tokens in the
 * last repeat_last_n context tokens, each once), presence and frequency (OpenAI, counts of
 * generated tokens). Top-k and top-p use partial selection (quickselect + sort of a prefix), never
 * a full sort of the vocabulary. The PRNG is counter based (splitmix64 of seed and step). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "hmoe/text.h"

struct count_slot {
    int32_t id; /* -1 = empty */
    int32_t count;
};

struct hmoe_sampler {
    struct hmoe_sampling_params p;
    int32_t n_vocab;
    uint64_t seed, step;
    /* repeat window: ring of the last repeat_last_n tokens (or all when -1) */
    int32_t *ring;
    size_t ring_cap, ring_n, ring_head;
    /* generated-token counts */
    struct count_slot *cnt;
    size_t cnt_cap, cnt_n;
    /* scratch (n_vocab each) */
    float *work;
    int32_t *idx;
    uint8_t *mark;
    /* last candidate set */
    int32_t *cand_ids;
    float *cand_p;
    size_t n_cand;
};

void hmoe_sampling_params_default(struct hmoe_sampling_params *p)
{
    p->temperature = 0.7f;
    p->top_k = 20;
    p->top_p = 0.8f;
    p->min_p = 0.0f;
    p->repeat_penalty = 1.0f;
    p->repeat_last_n = 64;
    p->presence_penalty = 0.0f;
    p->frequency_penalty = 0.0f;
    p->seed = -1;
}

enum hmoe_status hmoe_sampling_params_check(const struct hmoe_sampling_params *p)
{
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return hmoe_fail(HMOE_E_INVAL, "temperature must be >= 0 (got %g)", (double)p->temperature);
    if (p->top_k < 0) return hmoe_fail(HMOE_E_INVAL, "top-k must be >= 0 (got %d)", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return hmoe_fail(HMOE_E_INVAL, "top-p must be in (0, 1] (got %g)", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return hmoe_fail(HMOE_E_INVAL, "min-p must be in [0, 1] (got %g)", (double)p->min_p);
    if (!(p->repeat_penalty > 0.0f) || !isfinite(p->repeat_penalty))
        return hmoe_fail(HMOE_E_INVAL, "repeat penalty must be > 0 (got %g)",
                         (double)p->repeat_penalty);
    if (p->repeat_last_n < -1)
        return hmoe_fail(HMOE_E_INVAL, "repeat-last-n must be >= -1 (got %d)", p->repeat_last_n);
    if (!isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty))
        return hmoe_fail(HMOE_E_INVAL, "presence/frequency penalties must be finite");
    if (p->seed < -1) return hmoe_fail(HMOE_E_INVAL, "seed must be >= -1");
    return HMOE_OK;
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* uniform in [0, 1) from (seed, step): the same seed gives the same sequence */
static double uniform(struct hmoe_sampler *s)
{
    uint64_t x = splitmix64(s->seed ^ splitmix64(s->step++));
    return (double)(x >> 11) * 0x1.0p-53;
}

enum hmoe_status hmoe_sampler_init(const struct hmoe_sampling_params *p, int32_t n_vocab,
                                   struct hmoe_sampler **out)
{
    *out = NULL;
    enum hmoe_status st = hmoe_sampling_params_check(p);
    if (st) return st;
    if (n_vocab <= 0) return hmoe_fail(HMOE_E_INVAL, "sampler: n_vocab must be > 0");
    struct hmoe_sampler *s = calloc(1, sizeof *s);
    if (!s) return hmoe_fail(HMOE_E_NOMEM, "sampler: out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    size_t v = (size_t)n_vocab;
    s->work = malloc(v * sizeof *s->work);
    s->idx = malloc(v * sizeof *s->idx);
    s->mark = calloc(v, 1);
    s->cand_ids = malloc(v * sizeof *s->cand_ids);
    s->cand_p = malloc(v * sizeof *s->cand_p);
    s->cnt_cap = 64;
    s->cnt = malloc(s->cnt_cap * sizeof *s->cnt);
    if (!s->work || !s->idx || !s->mark || !s->cand_ids || !s->cand_p || !s->cnt) {
        hmoe_sampler_free(s);
        return hmoe_fail(HMOE_E_NOMEM, "sampler: out of memory");
    }
    for (size_t i = 0; i < s->cnt_cap; i++) s->cnt[i].id = -1;
    if (p->seed >= 0) {
        s->seed = (uint64_t)p->seed;
    } else {
        uint64_t r;
        if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
            r = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)s;
        s->seed = r >> 1; /* keep it printable as a non-negative int64 */
    }
    *out = s;
    return HMOE_OK;
}

void hmoe_sampler_free(struct hmoe_sampler *s)
{
    if (!s) return;
    free(s->ring);
    free(s->cnt);
    free(s->work);
    free(s->idx);
    free(s->mark);
    free(s->cand_ids);
    free(s->cand_p);
    free(s);
}

uint64_t hmoe_sampler_seed(const struct hmoe_sampler *s)
{
    return s->seed;
}

static enum hmoe_status count_add(struct hmoe_sampler *s, int32_t id)
{
    if ((s->cnt_n + 1) * 2 > s->cnt_cap) { /* rehash at load 1/2 */
        size_t nc = s->cnt_cap * 2;
        struct count_slot *n = malloc(nc * sizeof *n);
        if (!n) return hmoe_fail(HMOE_E_NOMEM, "sampler: out of memory");
        for (size_t i = 0; i < nc; i++) n[i].id = -1;
        for (size_t i = 0; i < s->cnt_cap; i++) {
            if (s->cnt[i].id < 0) continue;
            size_t j = ((uint32_t)s->cnt[i].id * 2654435761u) & (nc - 1);
            while (n[j].id >= 0) j = (j + 1) & (nc - 1);
            n[j] = s->cnt[i];
        }
        free(s->cnt);
        s->cnt = n;
        s->cnt_cap = nc;
    }
    size_t j = ((uint32_t)id * 2654435761u) & (s->cnt_cap - 1);
    while (s->cnt[j].id >= 0 && s->cnt[j].id != id) j = (j + 1) & (s->cnt_cap - 1);
    if (s->cnt[j].id < 0) {
        s->cnt[j].id = id;
        s->cnt[j].count = 0;
        s->cnt_n++;
    }
    s->cnt[j].count++;
    return HMOE_OK;
}

enum hmoe_status hmoe_sampler_accept(struct hmoe_sampler *s, int32_t id, int prompt)
{
    if (id < 0 || id >= s->n_vocab)
        return hmoe_fail(HMOE_E_INVAL, "sampler: token id %d out of range [0, %d)", id, s->n_vocab);
    if (s->p.repeat_last_n != 0) {
        if (s->p.repeat_last_n > 0) {
            size_t w = (size_t)s->p.repeat_last_n;
            if (!s->ring) {
                s->ring = malloc(w * sizeof *s->ring);
                if (!s->ring) return hmoe_fail(HMOE_E_NOMEM, "sampler: out of memory");
                s->ring_cap = w;
            }
            s->ring[s->ring_head] = id;
            s->ring_head = (s->ring_head + 1) % w;
            if (s->ring_n < w) s->ring_n++;
        } else { /* -1: the whole context */
            if (s->ring_n == s->ring_cap) {
                size_t nc = s->ring_cap ? s->ring_cap * 2 : 256;
                int32_t *r = realloc(s->ring, nc * sizeof *r);
                if (!r) return hmoe_fail(HMOE_E_NOMEM, "sampler: out of memory");
                s->ring = r;
                s->ring_cap = nc;
            }
            s->ring[s->ring_n++] = id;
        }
    }
    return prompt ? HMOE_OK : count_add(s, id);
}

void hmoe_sampler_apply_penalties(const struct hmoe_sampler *s, float *logits)
{
    float rp = s->p.repeat_penalty;
    if (rp != 1.0f && s->ring_n) {
        /* each distinct token of the window once (mark is all-zero between calls) */
        for (size_t i = 0; i < s->ring_n; i++) {
            int32_t id = s->ring[i];
            if (s->mark[id]) continue;
            s->mark[id] = 1;
            float l = logits[id];
            logits[id] = l > 0.0f ? l / rp : l * rp;
        }
        for (size_t i = 0; i < s->ring_n; i++) s->mark[s->ring[i]] = 0;
    }
    float pp = s->p.presence_penalty, fp = s->p.frequency_penalty;
    if (pp != 0.0f || fp != 0.0f) {
        for (size_t i = 0; i < s->cnt_cap; i++) {
            const struct count_slot *c = &s->cnt[i];
            if (c->id < 0) continue;
            logits[c->id] -= (float)c->count * fp + (c->count > 0 ? pp : 0.0f);
        }
    }
}

/* total order: higher logit first, then lower id */
static inline int before(const float *l, int32_t a, int32_t b)
{
    return l[a] > l[b] || (l[a] == l[b] && a < b);
}

/* Rearranges idx[0..n) so that idx[0..m) are the m best (unordered), m < n. */
static void select_top(const float *l, int32_t *idx, size_t n, size_t m)
{
    size_t lo = 0, hi = n - 1; /* inclusive */
    uint64_t r = 0x2545F4914F6CDD1Dull;
    while (lo < hi) {
        /* random pivot: robust against sorted inputs */
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        size_t pi = lo + (size_t)(r % (hi - lo + 1));
        int32_t piv = idx[pi];
        idx[pi] = idx[hi];
        idx[hi] = piv;
        size_t store = lo;
        for (size_t i = lo; i < hi; i++) {
            if (before(l, idx[i], piv)) {
                int32_t t = idx[i];
                idx[i] = idx[store];
                idx[store] = t;
                store++;
            }
        }
        idx[hi] = idx[store];
        idx[store] = piv;
        /* idx[store] is the (store)-th best */
        if (store == m) return;
        if (store < m) lo = store + 1;
        else {
            if (store == 0) return;
            hi = store - 1;
        }
    }
}

static _Thread_local const float *g_sort_logits; /* qsort has no context argument in C11 */
static int cmp_desc(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return before(g_sort_logits, x, y) ? -1 : before(g_sort_logits, y, x) ? 1 : 0;
}

static void sort_prefix(const float *l, int32_t *idx, size_t n)
{
    /* insertion sort for small prefixes (the common top-k case), qsort otherwise */
    if (n <= 64) {
        for (size_t i = 1; i < n; i++) {
            int32_t v = idx[i];
            size_t j = i;
            while (j > 0 && before(l, v, idx[j - 1])) {
                idx[j] = idx[j - 1];
                j--;
            }
            idx[j] = v;
        }
        return;
    }
    g_sort_logits = l;
    qsort(idx, n, sizeof *idx, cmp_desc);
}

/* Small top-m of idx[0..n) in one pass with a min-heap of m entries (the worst kept on top);
 * most elements cost one comparison. Leaves the m best in idx[0..m), unordered. */
static void heap_top(const float *l, int32_t *idx, size_t n, size_t m)
{
    int32_t *h = idx; /* the heap lives in the prefix; idx[m..n) is only read */
    for (size_t i = 0; i < m; i++) { /* heapify the first m: parent is worse than children */
        size_t c = i;
        int32_t v = h[i];
        while (c > 0 && before(l, h[(c - 1) / 2], v)) {
            h[c] = h[(c - 1) / 2];
            c = (c - 1) / 2;
        }
        h[c] = v;
    }
    for (size_t i = m; i < n; i++) {
        int32_t v = idx[i];
        if (!before(l, v, h[0])) continue;
        /* replace the worst and sift down */
        size_t c = 0;
        for (;;) {
            size_t a = 2 * c + 1, b = a + 1, w = c;
            int32_t wv = v;
            if (a < m && before(l, wv, h[a])) {
                w = a;
                wv = h[a];
            }
            if (b < m && before(l, wv, h[b])) w = b;
            if (w == c) break;
            h[c] = h[w];
            c = w;
        }
        h[c] = v;
    }
}

/* Ensures idx[0..m) hold the m best of idx[0..n) in descending order. */
static void top_sorted(const float *l, int32_t *idx, size_t n, size_t m)
{
    if (m < n) {
        if (m <= 256) heap_top(l, idx, n, m);
        else select_top(l, idx, n, m);
    }
    sort_prefix(l, idx, m < n ? m : n);
}

/* candidate sets up to this size are returned sorted; larger ones (top-p/min-p without top-k on
 * a flat distribution) are drawn from unordered */
#define SORT_MAX 4096
#define HIST_BINS 2048
#define HIST_RANGE 40.0f /* logits below max - 40 carry < 4e-18 of the max's mass each */

/* top-p on idx[0..n) sorted descending: keep the shortest prefix whose mass reaches p */
static size_t top_p_sorted(const float *l, const int32_t *idx, size_t n, float p)
{
    double z = 0.0;
    for (size_t i = 0; i < n; i++) z += (double)expf(l[idx[i]]);
    double target = (double)p * z, cum = 0.0;
    size_t keep = 0;
    while (keep < n && cum < target) cum += (double)expf(l[idx[keep++]]);
    return keep ? keep : 1;
}

/* top-p over an unsorted idx[0..n) (max logit 0) without sorting it: bucket the mass by logit,
 * find the bucket where the cumulative mass (from the top) reaches p, keep every bucket above
 * it and the sorted head of that bucket. Same set as sorting everything. */
static size_t top_p_hist(struct hmoe_sampler *s, const float *l, int32_t *idx, size_t n, float p)
{
    static _Thread_local double mass[HIST_BINS];
    memset(mass, 0, sizeof mass);
    const float scale = (float)HIST_BINS / HIST_RANGE;
    double z = 0.0;
    for (size_t i = 0; i < n; i++) {
        float v = l[idx[i]];
        float e = expf(v);
        int b = -v * scale < (float)(HIST_BINS - 1) ? (int)(-v * scale) : HIST_BINS - 1;
        mass[b] += (double)e;
        z += (double)e;
    }
    double target = (double)p * z, cum = 0.0;
    int bstar = 0;
    while (bstar < HIST_BINS - 1 && cum + mass[bstar] < target) cum += mass[bstar++];
    /* kept: bins < bstar (in idx order); crossing bin: gathered in cand_ids, sorted, cut */
    size_t keep = 0, nb = 0;
    for (size_t i = 0; i < n; i++) {
        float v = l[idx[i]];
        int b = -v * scale < (float)(HIST_BINS - 1) ? (int)(-v * scale) : HIST_BINS - 1;
        if (b < bstar) idx[keep++] = idx[i];
        else if (b == bstar) s->cand_ids[nb++] = idx[i];
    }
    sort_prefix(l, s->cand_ids, nb);
    for (size_t i = 0; i < nb && (cum < target || keep == 0); i++) {
        cum += (double)expf(l[s->cand_ids[i]]);
        idx[keep++] = s->cand_ids[i];
    }
    if (keep <= SORT_MAX) sort_prefix(l, idx, keep);
    return keep;
}

enum hmoe_status hmoe_sampler_sample(struct hmoe_sampler *s, const float *logits, int32_t *out_id)
{
    size_t V = (size_t)s->n_vocab;
    float *l = s->work;
    for (size_t i = 0; i < V; i++) {
        if (isnan(logits[i]))
            return hmoe_fail(HMOE_E_INVAL, "sampler: logit %zu is NaN", i);
        l[i] = logits[i];
    }
    hmoe_sampler_apply_penalties(s, l);

    /* greedy: argmax, ties to the lowest id */
    size_t best = 0;
    for (size_t i = 1; i < V; i++)
        if (l[i] > l[best]) best = i;
    if (isinf(l[best]) && l[best] < 0)
        return hmoe_fail(HMOE_E_INVAL, "sampler: every logit is -inf");
    if (s->p.temperature == 0.0f) {
        s->cand_ids[0] = (int32_t)best;
        s->cand_p[0] = 1.0f;
        s->n_cand = 1;
        *out_id = (int32_t)best;
        return HMOE_OK;
    }
    float lmax = l[best];
    if (isinf(lmax)) { /* +inf: those tokens take all the mass */
        for (size_t i = 0; i < V; i++) l[i] = isinf(l[i]) && l[i] > 0 ? 0.0f : -INFINITY;
        lmax = 0.0f;
    }
    float inv_t = 1.0f / s->p.temperature;
    for (size_t i = 0; i < V; i++) l[i] = (l[i] - lmax) * inv_t; /* max is now 0 */

    int32_t *idx = s->idx;
    for (size_t i = 0; i < V; i++) idx[i] = (int32_t)i;
    size_t n = V;
    int sorted = 0;
    if (s->p.top_k > 0 && (size_t)s->p.top_k < n) {
        n = (size_t)s->p.top_k;
        top_sorted(l, idx, V, n);
        sorted = 1;
    }
    if (s->p.top_p < 1.0f) {
        n = sorted ? top_p_sorted(l, idx, n, s->p.top_p) : top_p_hist(s, l, idx, n, s->p.top_p);
        sorted = sorted || n <= SORT_MAX;
    }
    if (s->p.min_p > 0.0f) {
        /* p_i >= min_p * p_max  <=>  l_i >= l_max + log(min_p), with l_max = 0 (the max always
         * passes, so at least one token stays; order is preserved) */
        float thr = logf(s->p.min_p);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (l[idx[i]] >= thr) idx[k++] = idx[i];
        n = k;
    }
    if (!sorted && n <= SORT_MAX) sort_prefix(l, idx, n);
    /* draw from the survivors */
    double z = 0.0;
    for (size_t i = 0; i < n; i++) {
        float e = expf(l[idx[i]]);
        s->cand_ids[i] = idx[i];
        s->cand_p[i] = e;
        z += (double)e;
    }
    double u = uniform(s) * z, cum = 0.0;
    size_t pick = n - 1;
    for (size_t i = 0; i < n; i++) {
        cum += (double)s->cand_p[i];
        if (u < cum) {
            pick = i;
            break;
        }
    }
    for (size_t i = 0; i < n; i++) s->cand_p[i] = (float)((double)s->cand_p[i] / z);
    s->n_cand = n;
    *out_id = idx[pick];
    return HMOE_OK;
}

size_t hmoe_sampler_last_candidates(const struct hmoe_sampler *s, const int32_t **ids,
                                    const float **probs)
{
    *ids = s->cand_ids;
    *probs = s->cand_p;
    return s->n_cand;
}
