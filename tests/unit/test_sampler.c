/* test_sampler.c: sampling on hand-made distributions over a full Qwen-size vocabulary
 * (V = 151936): greedy and top-k = 1 agree, the seed reproduces, top-k/top-p/min-p keep exactly
 * the expected tokens with renormalised probabilities, temperature reshapes, each penalty changes
 * logits as specified, bad parameters and NaN logits are refused. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hmoe/text.h"
#include "hmoe_test.h"

#define V 151936

static struct hmoe_sampling_params plain(void)
{
    struct hmoe_sampling_params p;
    hmoe_sampling_params_default(&p);
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = 42;
    return p;
}

/* logits: -inf everywhere except ids[i] = log(probs[i]) */
static void make_dist(float *l, const int32_t *ids, const double *probs, int n)
{
    for (int i = 0; i < V; i++) l[i] = -INFINITY;
    for (int i = 0; i < n; i++) l[ids[i]] = (float)log(probs[i]);
}

static uint64_t rng = 88172645463325252ull;
static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) * 0x1.0p-53;
}

/* samples once and returns the candidate set */
static size_t cands(struct hmoe_sampling_params p, const float *l, const int32_t **ids,
                    const float **pr, struct hmoe_sampler **keep)
{
    struct hmoe_sampler *s;
    int32_t id;
    CHECK(hmoe_sampler_init(&p, V, &s) == HMOE_OK);
    CHECK(hmoe_sampler_sample(s, l, &id) == HMOE_OK);
    *keep = s;
    return hmoe_sampler_last_candidates(s, ids, pr);
}

static void test_greedy_topk1(float *l)
{
    for (int trial = 0; trial < 3; trial++) {
        for (int i = 0; i < V; i++) l[i] = (float)(urand() * 20.0 - 10.0);
        struct hmoe_sampling_params g = plain(), k1 = plain();
        g.temperature = 0.0f;
        k1.top_k = 1;
        k1.temperature = 0.8f;
        k1.seed = 1000 + trial;
        struct hmoe_sampler *sg, *sk;
        CHECK(hmoe_sampler_init(&g, V, &sg) == HMOE_OK);
        CHECK(hmoe_sampler_init(&k1, V, &sk) == HMOE_OK);
        int32_t a, b;
        CHECK(hmoe_sampler_sample(sg, l, &a) == HMOE_OK);
        CHECK(hmoe_sampler_sample(sk, l, &b) == HMOE_OK);
        int32_t am = 0;
        for (int i = 1; i < V; i++)
            if (l[i] > l[am]) am = i;
        CHECK(a == am && b == am);
        hmoe_sampler_free(sg);
        hmoe_sampler_free(sk);
    }
    /* ties: the lowest id wins, for greedy and for top-k = 1 */
    for (int i = 0; i < V; i++) l[i] = 0.0f;
    l[777] = l[123] = l[150000] = 5.0f;
    struct hmoe_sampling_params g = plain(), k1 = plain();
    g.temperature = 0.0f;
    k1.top_k = 1;
    struct hmoe_sampler *s;
    int32_t id;
    CHECK(hmoe_sampler_init(&g, V, &s) == HMOE_OK);
    CHECK(hmoe_sampler_sample(s, l, &id) == HMOE_OK && id == 123);
    hmoe_sampler_free(s);
    CHECK(hmoe_sampler_init(&k1, V, &s) == HMOE_OK);
    CHECK(hmoe_sampler_sample(s, l, &id) == HMOE_OK && id == 123);
    hmoe_sampler_free(s);
}

static void test_seed(float *l)
{
    for (int i = 0; i < V; i++) l[i] = (float)(urand() * 4.0);
    int32_t seq[3][40];
    int64_t seeds[3] = {7, 7, 8};
    for (int r = 0; r < 3; r++) {
        struct hmoe_sampling_params p = plain();
        p.seed = seeds[r];
        p.top_k = 50;
        p.temperature = 1.5f;
        struct hmoe_sampler *s;
        CHECK(hmoe_sampler_init(&p, V, &s) == HMOE_OK);
        for (int i = 0; i < 40; i++) CHECK(hmoe_sampler_sample(s, l, &seq[r][i]) == HMOE_OK);
        hmoe_sampler_free(s);
    }
    CHECK(memcmp(seq[0], seq[1], sizeof seq[0]) == 0);
    CHECK(memcmp(seq[0], seq[2], sizeof seq[0]) != 0);
    /* seed -1 draws a seed and reports it */
    struct hmoe_sampling_params p = plain();
    p.seed = -1;
    struct hmoe_sampler *s;
    CHECK(hmoe_sampler_init(&p, V, &s) == HMOE_OK);
    CHECK((int64_t)hmoe_sampler_seed(s) >= 0);
    hmoe_sampler_free(s);
}

static int same_set(const int32_t *got, size_t n, const int32_t *want, size_t m)
{
    if (n != m) return 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i]) return 0;
    return 1;
}

static void test_filters(float *l)
{
    /* distribution in descending probability over scattered ids */
    const int32_t ids[6] = {151935, 5, 90000, 17, 123456, 0};
    const double pr[6] = {0.40, 0.25, 0.15, 0.10, 0.06, 0.04};
    make_dist(l, ids, pr, 6);
    const int32_t *ci;
    const float *cp;
    struct hmoe_sampler *s;
    size_t n;

    /* top-p 0.75: 0.40 + 0.25 = 0.65 < 0.75, + 0.15 = 0.80 >= 0.75 -> three tokens */
    struct hmoe_sampling_params p = plain();
    p.top_p = 0.75f;
    n = cands(p, l, &ci, &cp, &s);
    CHECK(same_set(ci, n, ids, 3));
    CHECK_NEAR(cp[0], 0.40 / 0.80, 1e-5);
    CHECK_NEAR(cp[2], 0.15 / 0.80, 1e-5);
    hmoe_sampler_free(s);
    /* top-p 0.66 -> still three (0.65 < 0.66); 0.64 -> two */
    p.top_p = 0.66f;
    n = cands(p, l, &ci, &cp, &s);
    CHECK(same_set(ci, n, ids, 3));
    hmoe_sampler_free(s);
    p.top_p = 0.64f;
    n = cands(p, l, &ci, &cp, &s);
    CHECK(same_set(ci, n, ids, 2));
    hmoe_sampler_free(s);
    p.top_p = 0.01f; /* always at least one */
    n = cands(p, l, &ci, &cp, &s);
    CHECK(same_set(ci, n, ids, 1) && fabsf(cp[0] - 1.0f) < 1e-6f);
    hmoe_sampler_free(s);

    /* min-p 0.3: threshold 0.3 * 0.40 = 0.12 -> 0.40, 0.25, 0.15 */
    p = plain();
    p.min_p = 0.3f;
    n = cands(p, l, &ci, &cp, &s);
    CHECK(same_set(ci, n, ids, 3));
    hmoe_sampler_free(s);
    /* min-p 0.2: threshold 0.08 -> four tokens */
    p.min_p = 0.2f;
    n = cands(p, l, &ci, &cp, &s);
    CHECK(same_set(ci, n, ids, 4));
    CHECK_NEAR(cp[3], 0.10 / 0.90, 1e-5);
    hmoe_sampler_free(s);

    /* top-k 2, then top-p over the renormalised pair (0.615, 0.385): 0.5 -> one token */
    p = plain();
    p.top_k = 2;
    n = cands(p, l, &ci, &cp, &s);
    CHECK(same_set(ci, n, ids, 2));
    CHECK_NEAR(cp[0], 0.40 / 0.65, 1e-5);
    hmoe_sampler_free(s);
    p.top_p = 0.5f;
    n = cands(p, l, &ci, &cp, &s);
    CHECK(same_set(ci, n, ids, 1));
    hmoe_sampler_free(s);

    /* temperature 0.5 squares the ratios: p ~ p^2 */
    p = plain();
    p.temperature = 0.5f;
    p.top_k = 6;
    n = cands(p, l, &ci, &cp, &s);
    double z = 0;
    for (int i = 0; i < 6; i++) z += pr[i] * pr[i];
    CHECK(n == 6);
    CHECK_NEAR(cp[0], pr[0] * pr[0] / z, 1e-5);
    CHECK_NEAR(cp[5], pr[5] * pr[5] / z, 1e-5);
    hmoe_sampler_free(s);

    /* no filter: every token may be drawn, -inf tokens never; empirical frequencies match
     * (a small vocabulary keeps this fast) */
    enum { SV = 64 };
    float sl[SV];
    const int32_t sids[6] = {63, 5, 40, 17, 33, 0};
    for (int i = 0; i < SV; i++) sl[i] = -INFINITY;
    for (int i = 0; i < 6; i++) sl[sids[i]] = (float)log(pr[i]);
    p = plain();
    p.seed = 3;
    CHECK(hmoe_sampler_init(&p, SV, &s) == HMOE_OK);
    int hist[6] = {0}, other = 0;
    const int N = 20000;
    for (int i = 0; i < N; i++) {
        int32_t id;
        CHECK(hmoe_sampler_sample(s, sl, &id) == HMOE_OK);
        int k = -1;
        for (int j = 0; j < 6; j++)
            if (sids[j] == id) k = j;
        if (k < 0) other++;
        else hist[k]++;
    }
    CHECK(other == 0);
    for (int j = 0; j < 6; j++)
        CHECKF(fabs(hist[j] / (double)N - pr[j]) < 0.015, "token %d: %d / %d", j, hist[j], N);
    hmoe_sampler_free(s);
}

static const float *g_ref_l;
static int ref_cmp(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (g_ref_l[x] != g_ref_l[y]) return g_ref_l[x] > g_ref_l[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* top-p / min-p without top-k on flat and peaked random distributions over the full vocabulary
 * keep exactly the set a full sort gives */
static void test_top_p_reference(float *l)
{
    int32_t *ord = malloc(V * sizeof *ord);
    uint8_t *in = calloc(V, 1);
    if (!ord || !in) return;
    const float spread[3] = {8.0f, 30.0f, 60.0f}; /* flat (large set) .. peaked (small set) */
    const float top_p[3] = {0.5f, 0.9f, 0.95f};
    for (int c = 0; c < 3; c++) {
        for (int i = 0; i < V; i++) l[i] = (float)(urand() * (double)spread[c]);
        struct hmoe_sampling_params p = plain();
        p.top_p = top_p[c];
        p.temperature = 1.0f;
        struct hmoe_sampler *s;
        const int32_t *ci;
        const float *cp;
        size_t n = cands(p, l, &ci, &cp, &s);
        /* reference: sort everything, cumulate */
        for (int i = 0; i < V; i++) ord[i] = i;
        g_ref_l = l;
        qsort(ord, V, sizeof *ord, ref_cmp);
        float mx = l[ord[0]];
        double z = 0, cum = 0;
        for (int i = 0; i < V; i++) z += (double)expf(l[ord[i]] - mx);
        size_t keep = 0;
        while (keep < (size_t)V && cum < (double)top_p[c] * z)
            cum += (double)expf(l[ord[keep++]] - mx);
        CHECKF(n == keep, "case %d: %zu kept, reference %zu", c, n, keep);
        for (size_t i = 0; i < keep; i++) in[ord[i]] = 1;
        size_t hits = 0;
        for (size_t i = 0; i < n; i++) hits += in[ci[i]];
        CHECK(hits == keep);
        if (n <= 4096 && n == keep) CHECK(memcmp(ci, ord, n * sizeof *ci) == 0);
        for (size_t i = 0; i < keep; i++) in[ord[i]] = 0;
        hmoe_sampler_free(s);
        /* min-p alone: exactly the tokens with p >= min_p * p_max */
        p = plain();
        p.min_p = 0.05f;
        n = cands(p, l, &ci, &cp, &s);
        size_t want = 0;
        /* p_i >= 0.05 p_max in the log domain (as exp() rounding could flip one boundary token) */
        for (int i = 0; i < V; i++) want += l[i] - mx >= logf(0.05f);
        CHECKF(n == want, "min-p case %d: %zu vs %zu", c, n, want);
        hmoe_sampler_free(s);
    }
    free(ord);
    free(in);
}

static void test_penalties(float *l)
{
    struct hmoe_sampling_params p = plain();
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 3;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    struct hmoe_sampler *s;
    CHECK(hmoe_sampler_init(&p, V, &s) == HMOE_OK);
    /* context: prompt 10, 11; generated 12, 12, 13 -> window (last 3) = 12, 12, 13 */
    CHECK(hmoe_sampler_accept(s, 10, 1) == HMOE_OK);
    CHECK(hmoe_sampler_accept(s, 11, 1) == HMOE_OK);
    CHECK(hmoe_sampler_accept(s, 12, 0) == HMOE_OK);
    CHECK(hmoe_sampler_accept(s, 12, 0) == HMOE_OK);
    CHECK(hmoe_sampler_accept(s, 13, 0) == HMOE_OK);
    CHECK(hmoe_sampler_accept(s, V, 0) == HMOE_E_INVAL);
    for (int i = 0; i < V; i++) l[i] = 1.0f;
    l[10] = 4.0f;
    l[11] = -4.0f;
    l[12] = 3.0f;
    l[13] = -2.0f;
    hmoe_sampler_apply_penalties(s, l);
    CHECK_NEAR(l[10], 4.0, 1e-6);  /* outside the window, prompt: untouched */
    CHECK_NEAR(l[11], -4.0, 1e-6);
    /* 12: in window once (not twice) -> 3/2; generated twice -> -2*0.25 - 0.5 */
    CHECK_NEAR(l[12], 1.5 - 0.5 - 0.5, 1e-6);
    /* 13: negative -> *2; generated once -> -0.25 - 0.5 */
    CHECK_NEAR(l[13], -4.0 - 0.75, 1e-6);
    CHECK_NEAR(l[14], 1.0, 1e-6);
    hmoe_sampler_free(s);

    /* window -1 = the whole context, prompt included; no presence/frequency on prompt tokens */
    p = plain();
    p.repeat_penalty = 1.25f;
    p.repeat_last_n = -1;
    p.presence_penalty = 1.0f;
    CHECK(hmoe_sampler_init(&p, V, &s) == HMOE_OK);
    for (int i = 0; i < 1000; i++) CHECK(hmoe_sampler_accept(s, 100 + i, 1) == HMOE_OK);
    for (int i = 0; i < V; i++) l[i] = 2.5f;
    hmoe_sampler_apply_penalties(s, l);
    CHECK_NEAR(l[100], 2.0, 1e-6);
    CHECK_NEAR(l[1099], 2.0, 1e-6);
    CHECK_NEAR(l[1100], 2.5, 1e-6);
    hmoe_sampler_free(s);

    /* a repeated token loses under greedy once penalised */
    p = plain();
    p.temperature = 0.0f;
    p.repeat_penalty = 1.5f;
    CHECK(hmoe_sampler_init(&p, V, &s) == HMOE_OK);
    for (int i = 0; i < V; i++) l[i] = 0.0f;
    l[50] = 3.0f;
    l[60] = 2.5f;
    int32_t id;
    CHECK(hmoe_sampler_sample(s, l, &id) == HMOE_OK && id == 50);
    CHECK(hmoe_sampler_accept(s, id, 0) == HMOE_OK);
    CHECK(hmoe_sampler_sample(s, l, &id) == HMOE_OK && id == 60);
    CHECK(l[50] == 3.0f); /* the caller's logits are not modified */
    hmoe_sampler_free(s);
}

static void test_bad(float *l)
{
    struct hmoe_sampling_params p = plain();
    struct hmoe_sampler *s = NULL;
    p.temperature = -1.0f;
    CHECK(hmoe_sampler_init(&p, V, &s) == HMOE_E_INVAL && s == NULL);
    p = plain();
    p.top_p = 0.0f;
    CHECK(hmoe_sampler_init(&p, V, &s) == HMOE_E_INVAL);
    p = plain();
    p.min_p = 1.5f;
    CHECK(hmoe_sampler_init(&p, V, &s) == HMOE_E_INVAL);
    p = plain();
    p.top_k = -3;
    CHECK(hmoe_sampler_init(&p, V, &s) == HMOE_E_INVAL);
    p = plain();
    p.repeat_penalty = 0.0f;
    CHECK(hmoe_sampler_init(&p, V, &s) == HMOE_E_INVAL);
    p = plain();
    CHECK(hmoe_sampler_init(&p, 0, &s) == HMOE_E_INVAL);
    CHECK(hmoe_sampler_init(&p, V, &s) == HMOE_OK);
    for (int i = 0; i < V; i++) l[i] = 0.0f;
    l[9] = NAN;
    int32_t id;
    CHECK(hmoe_sampler_sample(s, l, &id) == HMOE_E_INVAL);
    for (int i = 0; i < V; i++) l[i] = -INFINITY;
    CHECK(hmoe_sampler_sample(s, l, &id) == HMOE_E_INVAL);
    hmoe_sampler_free(s);
    hmoe_sampler_free(NULL);
}

int main(void)
{
    float *l = malloc(V * sizeof *l);
    if (!l) return 1;
    test_greedy_topk1(l);
    test_seed(l);
    test_filters(l);
    test_top_p_reference(l);
    test_penalties(l);
    test_bad(l);
    free(l);
    TEST_DONE();
}
