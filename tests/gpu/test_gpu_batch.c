/* tests/gpu/test_gpu_batch.c: batched decode of several sequences
 * (hmoe_gfwd_decode_batch). B sequences with different prompts and lengths are
 * decoded alone (B = 1, sequence by sequence) and all together for several
 * steps; the logits must match (<= 1e-6 of max|ref|, bit equality expected and
 * reported) for B = 2, 3 (a padded graph bucket) and the maximum, with CUDA
 * graphs on and off, with a VRAM budget that leaves experts to the host hook
 * (which must see n_tok = B), and on a fixture whose shapes take the general
 * (non dec_mv) kernels. Then the error cases: B out of range, a sequence out of
 * range or repeated, a token outside the vocabulary, a full context, a sequence
 * broken by a failing hook (until reset). Exit 77 without a CUDA device. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hmoe/gpu_forward.h"
#include "hmoe/tensor.h"
#include "hmoe_test.h"
#include "integration/test_eval_common.h"

enum { NSEQ = HMOE_GFWD_MAX_BATCH, STEPS = 5, CTX = 48 };

/* Host expert hook: the routed experts on the CPU (hmoe_matmul, as the forward
 * pass's own CPU path), recording the largest n_tok; fails when `fail` is set.
 */
struct hook_st {
    const struct hmoe_model *m;
    unsigned seen; /* bit n: a call with n_tok = n (n < 32) */
    int calls, fail;
};

static enum hmoe_status cpu_hook(void *ctx, int layer, int n_tok, const float *x,
                                 const int32_t *idx, const float *w, float *out)
{
    struct hook_st *h = ctx;
    if (h->fail) return hmoe_fail(HMOE_E_PEER_DEAD, "test hook: failing on purpose");
    h->calls++;
    h->seen |= 1u << (n_tok < 31 ? n_tok : 31);
    const struct hmoe_config *c = &h->m->cfg;
    const int H = c->hidden_size, I = c->moe_intermediate_size, k = c->num_experts_per_tok;
    float *g = malloc((size_t)(2 * I + H) * sizeof(float));
    if (!g) return hmoe_fail(HMOE_E_NOMEM, "test hook: out of memory");
    float *u = g + I, *y = u + I;
    for (int t = 0; t < n_tok; t++)
        for (int j = 0; j < k; j++) {
            const int e = idx[t * k + j];
            if (e < 0) continue;
            const struct hmoe_mlp_w *ex = &h->m->layers[layer].experts[e];
            hmoe_matmul(&ex->gate, x + (size_t)t * H, g, 1);
            hmoe_matmul(&ex->up, x + (size_t)t * H, u, 1);
            for (int i = 0; i < I; i++)
                g[i] = g[i] / (1.f + expf(-g[i])) * u[i];
            hmoe_matmul(&ex->down, g, y, 1);
            for (int d = 0; d < H; d++)
                out[(size_t)t * H + d] += w[t * k + j] * y[d];
        }
    free(g);
    return HMOE_OK;
}

/* Prompt of sequence s: 3 + 2 s tokens (different lengths and contents); decode
 * tokens. */
static int prompt_of(int s, int V, int32_t *p)
{
    const int n = 3 + 2 * s;
    for (int i = 0; i < n; i++)
        p[i] = (int32_t)((i * 7919 + s * 104729 + 13) % V);
    return n;
}

static int32_t step_tok(int s, int i, int V)
{
    return (int32_t)((s * 31 + i * 17 + 5) % V);
}

/* Prefills sequences 0..B-1 with their prompts. */
static int prefill_all(struct hmoe_gfwd *f, int B, int V)
{
    int32_t p[64];
    for (int s = 0; s < B; s++) {
        hmoe_gfwd_seq_reset(f, s);
        const int n = prompt_of(s, V, p);
        if (hmoe_gfwd_run_seq(f, s, p, n, NULL, 1) != HMOE_OK) return -1;
    }
    return 0;
}

/* max |a - b| / max |b| over n values, and whether they are bitwise equal. */
static double rel_diff(const float *a, const float *b, size_t n, int *same)
{
    double md = 0.0, mr = 0.0;
    *same = memcmp(a, b, n * sizeof(float)) == 0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - (double)b[i]), r = fabs((double)b[i]);
        md = d > md ? d : md;
        mr = r > mr ? r : mr;
    }
    return mr > 0 ? md / mr : md;
}

/* B sequences decoded alone (each after the others' prefill) vs together, STEPS
 * steps. */
static void batch_case(struct hmoe_gfwd *f, int B, int V, const char *what)
{
    const size_t row = (size_t)V;
    float *ref = calloc((size_t)B * STEPS * row, sizeof(float));
    float *got = calloc((size_t)B * STEPS * row, sizeof(float));
    if (!ref || !got) {
        CHECKF(0, "out of memory");
        free(ref);
        free(got);
        return;
    }
    CHECK(prefill_all(f, B, V) == 0);
    for (int s = 0; s < B; s++) /* alone: the batched step with B = 1 */
        for (int i = 0; i < STEPS; i++) {
            const int32_t t = step_tok(s, i, V);
            CHECK(hmoe_gfwd_run_seq(f, s, &t, 1, ref + ((size_t)s * STEPS + i) * row, 0) ==
                  HMOE_OK);
        }
    CHECK(prefill_all(f, B, V) == 0);
    int seqs[NSEQ], pos0[NSEQ];
    for (int b = 0; b < B; b++) { /* a permuted order: row b of a step is sequence seqs[b] */
        seqs[b] = (b * 5 + 1) % B;
        for (int c = 0; c < b; c++)
            if (seqs[c] == seqs[b]) seqs[b] = -1;
    }
    for (int b = 0, nx = 0; b < B; b++) /* fill the holes of the permutation (B not prime to 5) */
        if (seqs[b] < 0) {
            for (;; nx++) {
                int used = 0;
                for (int c = 0; c < B; c++)
                    used |= seqs[c] == nx;
                if (!used) break;
            }
            seqs[b] = nx++;
        }
    for (int b = 0; b < B; b++)
        pos0[b] = hmoe_gfwd_seq_pos(f, seqs[b]);
    float *lg = malloc((size_t)B * row * sizeof(float));
    for (int i = 0; i < STEPS && lg; i++) {
        int32_t tk[NSEQ];
        for (int b = 0; b < B; b++)
            tk[b] = step_tok(seqs[b], i, V);
        CHECK(hmoe_gfwd_decode_batch(f, seqs, tk, B, lg) == HMOE_OK);
        for (int b = 0; b < B; b++)
            memcpy(got + ((size_t)seqs[b] * STEPS + i) * row, lg + (size_t)b * row,
                   row * sizeof(float));
    }
    for (int b = 0; b < B; b++)
        CHECK(hmoe_gfwd_seq_pos(f, seqs[b]) == pos0[b] + STEPS);
    int same = 0;
    const double d = rel_diff(got, ref, (size_t)B * STEPS * row, &same);
    fprintf(stderr, "  %s, B %d: batched vs alone rel diff %.3g (%s)\n", what, B, d,
            same ? "bit-identical" : "not bit-identical");
    CHECKF(d <= 1e-6, "%s B %d: rel diff %.3g", what, B, d);
    free(lg);
    free(ref);
    free(got);
}

/* The error cases on f (NSEQ sequences, every expert resident). */
static void error_cases(struct hmoe_gfwd *f, int V, int max_ctx)
{
    CHECK(prefill_all(f, 3, V) == 0);
    const int p0 = hmoe_gfwd_seq_pos(f, 0), p1 = hmoe_gfwd_seq_pos(f, 1);
    int seqs[NSEQ + 1] = {0, 1, 2, 3, 4, 5, 6, 7, 0};
    int32_t tk[NSEQ + 1] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    float *lg = malloc((size_t)(NSEQ + 1) * V * sizeof(float));
    CHECK(hmoe_gfwd_decode_batch(f, seqs, tk, 0, lg) == HMOE_E_INVAL);
    CHECK(hmoe_gfwd_decode_batch(f, seqs, tk, NSEQ + 1, lg) == HMOE_E_INVAL);
    int bad_seq[2] = {0, NSEQ};
    CHECK(hmoe_gfwd_decode_batch(f, bad_seq, tk, 2, lg) == HMOE_E_INVAL);
    bad_seq[1] = -1;
    CHECK(hmoe_gfwd_decode_batch(f, bad_seq, tk, 2, lg) == HMOE_E_INVAL);
    int rep[3] = {0, 1, 0};
    CHECK(hmoe_gfwd_decode_batch(f, rep, tk, 3, lg) == HMOE_E_INVAL);
    fprintf(stderr, "  repeated sequence: %s\n", hmoe_err_msg());
    int32_t bad_tok[2] = {1, (int32_t)V};
    CHECK(hmoe_gfwd_decode_batch(f, seqs, bad_tok, 2, lg) == HMOE_E_INVAL);
    bad_tok[1] = -1;
    CHECK(hmoe_gfwd_decode_batch(f, seqs, bad_tok, 2, lg) == HMOE_E_INVAL);
    CHECK(hmoe_gfwd_run_seq(f, NSEQ, tk, 1, lg, 1) == HMOE_E_INVAL);
    /* a full context: sequence 2 filled up to max_ctx */
    int32_t *fill = malloc((size_t)max_ctx * sizeof(int32_t));
    for (int i = 0; fill && i < max_ctx; i++)
        fill[i] = (int32_t)(i % V);
    hmoe_gfwd_seq_reset(f, 2);
    CHECK(fill && hmoe_gfwd_run_seq(f, 2, fill, max_ctx, NULL, 1) == HMOE_OK);
    CHECK(hmoe_gfwd_decode_batch(f, seqs, tk, 3, lg) == HMOE_E_RANGE);
    fprintf(stderr, "  full context: %s\n", hmoe_err_msg());
    /* nothing changed by the refused calls */
    CHECK(hmoe_gfwd_seq_pos(f, 0) == p0 && hmoe_gfwd_seq_pos(f, 1) == p1);
    CHECK(hmoe_gfwd_seq_pos(f, 2) == max_ctx);
    CHECK(hmoe_gfwd_decode_batch(f, seqs, tk, 2, lg) == HMOE_OK);
    CHECK(hmoe_gfwd_seq_pos(f, 0) == p0 + 1 && hmoe_gfwd_seq_pos(f, 1) == p1 + 1);
    free(fill);
    free(lg);
}

/* With a budget that leaves experts to the host: the hook sees n_tok = B; a
 * failing hook marks the batch's sequences broken (others stay usable) until
 * reset. */
static void hook_cases(const struct hmoe_model *m, uint64_t budget, int V)
{
    struct hmoe_gfwd *f = NULL;
    CHECKF(hmoe_gfwd_init_seqs(m, 0, CTX, NSEQ, budget, HMOE_GPU_ABSMAX_F32, &f) == HMOE_OK,
           "init with budget: %s", hmoe_err_msg());
    if (!f) return;
    struct hmoe_gfwd_budget b;
    hmoe_gfwd_get_budget(f, &b);
    fprintf(stderr, "  budget %llu: %d of %d experts resident\n", (unsigned long long)budget,
            b.n_resident, b.n_experts);
    CHECK(b.n_resident < b.n_experts);
    struct hook_st hs = {m, 0, 0, 0};
    const struct hmoe_moe_hook hook = {cpu_hook, &hs};
    hmoe_gfwd_set_moe_hook(f, &hook);
    batch_case(f, 3, V, "host hook");
    batch_case(f, NSEQ, V, "host hook");
    /* prompts are 3 + 2 s tokens (odd): an n_tok of NSEQ comes from a batched
     * step */
    fprintf(stderr, "  hook: %d calls, n_tok seen 0x%x\n", hs.calls, hs.seen);
    CHECK(hs.calls > 0 && (hs.seen >> NSEQ & 1));
    /* a failure half-way: sequences 1 and 2 broken, 0 still usable */
    CHECK(prefill_all(f, 3, V) == 0);
    int seqs[2] = {1, 2};
    int32_t tk[2] = {1, 2};
    hs.fail = 1;
    CHECK(hmoe_gfwd_decode_batch(f, seqs, tk, 2, NULL) != HMOE_OK);
    hs.fail = 0;
    CHECK(hmoe_gfwd_decode_batch(f, seqs, tk, 2, NULL) == HMOE_E_INVAL);
    fprintf(stderr, "  broken: %s\n", hmoe_err_msg());
    CHECK(hmoe_gfwd_run_seq(f, 1, tk, 1, NULL, 1) == HMOE_E_INVAL);
    CHECK(hmoe_gfwd_run_seq(f, 0, tk, 1, NULL, 1) == HMOE_OK);
    hmoe_gfwd_seq_reset(f, 1);
    hmoe_gfwd_seq_reset(f, 2);
    CHECK(hmoe_gfwd_decode_batch(f, seqs, tk, 2, NULL) == HMOE_OK);
    hmoe_gfwd_free(f);
}

static void synth_cases(void)
{
    struct hmoe_model *m = NULL;
    CHECKF(hmoe_model_open("synth:small?layers=4", &m) == HMOE_OK, "synth: %s", hmoe_err_msg());
    if (!m) return;
    const int V = m->cfg.vocab_size;
    struct hmoe_gfwd *f = NULL;
    CHECKF(hmoe_gfwd_init_seqs(m, 0, CTX, NSEQ, 0, HMOE_GPU_ABSMAX_F32, &f) == HMOE_OK, "init: %s",
           hmoe_err_msg());
    if (f) {
        CHECK(hmoe_gfwd_n_seq(f) == NSEQ);
        struct hmoe_gfwd_budget one, all;
        hmoe_gfwd_get_budget(f, &all);
        struct hmoe_gfwd *g = NULL;
        CHECK(hmoe_gfwd_init(m, 0, CTX, 0, HMOE_GPU_ABSMAX_F32, &g) == HMOE_OK);
        if (g) {
            hmoe_gfwd_get_budget(g, &one);
            CHECKF(all.caches == (uint64_t)NSEQ * one.caches, "caches %llu vs %d x %llu",
                   (unsigned long long)all.caches, NSEQ, (unsigned long long)one.caches);
            hmoe_gfwd_free(g);
        }
        fprintf(stderr, "synth:small?layers=4, %d sequences, every expert resident\n", NSEQ);
        batch_case(f, 2, V, "graphs");
        batch_case(f, 3, V, "graphs (bucket 4)");
        batch_case(f, NSEQ, V, "graphs");
        batch_case(f, 1, V, "graphs");
        hmoe_gfwd_set_graphs(f, 0);
        batch_case(f, 3, V, "no graphs");
        batch_case(f, NSEQ, V, "no graphs");
        hmoe_gfwd_set_graphs(f, 1);
        error_cases(f, V, CTX);
        struct hmoe_gfwd_budget bu;
        hmoe_gfwd_get_budget(f, &bu);
        hmoe_gfwd_free(f);
        /* under a budget the workspace is smaller (fewer experts per prefill
         * group): measure it with a budget that holds everything, then leave half
         * the experts out */
        f = NULL;
        const uint64_t tot = bu.dense + bu.caches + bu.workspace + bu.experts;
        CHECK(hmoe_gfwd_init_seqs(m, 0, CTX, NSEQ, tot, HMOE_GPU_ABSMAX_F32, &f) == HMOE_OK);
        if (f) {
            hmoe_gfwd_get_budget(f, &bu);
            hmoe_gfwd_free(f);
            hook_cases(m, bu.dense + bu.caches + bu.workspace + bu.experts / 2, V);
        }
    }
    hmoe_model_close(m);
}

/* A fixture (shapes not multiples of 128: the general per-token kernels), B
 * = 3. */
static void fixture_case(void)
{
    char **dirs = NULL;
    const int nf = find_fixtures(&dirs);
    for (int i = 0; i < nf; i++) {
        struct hmoe_model *m = NULL;
        if (i == 0 && hmoe_model_open(dirs[i], &m) == HMOE_OK) {
            struct hmoe_gfwd *f = NULL;
            const enum hmoe_status st =
                hmoe_gfwd_init_seqs(m, 0, CTX, 3, 0, HMOE_GPU_ABSMAX_F32, &f);
            fprintf(stderr, "fixture %s: init %s\n", dirs[i], hmoe_status_str(st));
            CHECKF(st == HMOE_OK || st == HMOE_E_UNSUPPORTED, "%s", hmoe_err_msg());
            if (f) {
                batch_case(f, 3, m->cfg.vocab_size, "fixture, graphs");
                hmoe_gfwd_set_graphs(f, 0);
                batch_case(f, 2, m->cfg.vocab_size, "fixture, no graphs");
            }
            hmoe_gfwd_free(f);
            hmoe_model_close(m);
        }
        free(dirs[i]);
    }
    free(dirs);
}

int main(void)
{
    if (hmoe_gpu_device_count() == 0) TEST_SKIP("no CUDA device");
    synth_cases();
    fixture_case();
    TEST_DONE();
}
