/* Expert FFN kernels: every ISA variant the CPU runs equals the scalar reference (max |diff| <=
 * 1e-5 * max|ref|) on random shapes, including sizes that are no multiple of the vector width or
 * the NF4 block, odd view offsets, f16/f32 rounding and dense dtypes, absmax so large or small
 * that the table values leave the fast rounding's range; the batch path equals the per-token
 * path bit for bit; 1 and N threads and the three schedules agree bit for bit; bad input is
 * refused. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hmoe/experts.h"
#include "hmoe/experts_synth.h"
#include "hmoe/log.h"
#include "hmoe_test.h"

struct shape {
    const char *what;
    int H, I;
    struct hmoe_exsynth_spec spec;
};

static const struct shape shapes[] = {
    {"nf4 dq bf16 aligned", 128, 64, {HMOE_DT_NF4, 64, 1, HMOE_DT_BF16, 0}},
    {"nf4 dq bf16 rows straddle blocks", 100, 36, {HMOE_DT_NF4, 64, 1, HMOE_DT_BF16, 0}},
    {"nf4 dq odd view offset", 77, 45, {HMOE_DT_NF4, 64, 1, HMOE_DT_BF16, 3}},
    {"nf4 plain absmax f32, blocksize 6", 50, 22, {HMOE_DT_NF4, 6, 0, HMOE_DT_F32, 0}},
    {"nf4 dq f16, blocksize 128, offset 64", 256, 96, {HMOE_DT_NF4, 128, 1, HMOE_DT_F16, 64}},
    {"nf4 dq bf16, blocksize 32", 96, 33, {HMOE_DT_NF4, 32, 1, HMOE_DT_BF16, 0}},
    {"nf4 plain absmax f32 aligned", 256, 128, {HMOE_DT_NF4, 64, 0, HMOE_DT_F32, 0}},
    {"nf4 dq f16 aligned", 128, 128, {HMOE_DT_NF4, 64, 1, HMOE_DT_F16, 0}},
    {"nf4 dq aligned, view 3 blocks in (nested groups cross rows)",
     256,
     64,
     {HMOE_DT_NF4, 64, 1, HMOE_DT_BF16, 192}},
    {"bf16", 100, 36, {HMOE_DT_BF16, 0, 0, HMOE_DT_NONE, 5}},
    {"f16", 72, 20, {HMOE_DT_F16, 0, 0, HMOE_DT_NONE, 0}},
    {"f32", 33, 17, {HMOE_DT_F32, 0, 0, HMOE_DT_NONE, 1}},
    {"nf4 dq bf16 80B-A3B shape", 2048, 512, {HMOE_DT_NF4, 64, 1, HMOE_DT_BF16, 0}},
};

#define N_EXP 3
#define TOPK 2

static double worst[HMOE_ISA_COUNT]; /* largest max diff / max|ref| seen per ISA (printed) */

static void note_diff(int isa, double d, double scale)
{
    if (d / scale > worst[isa]) worst[isa] = d / scale;
}

static double max_abs(const float *v, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs((double)v[i]) > m ? fabs((double)v[i]) : m;
    return m;
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d != d) return (double)INFINITY;
        if (d > m) m = d;
    }
    return m;
}

static struct hmoe_experts *make_set(enum hmoe_experts_isa isa, int threads, int max_tok, int H,
                                     int I, struct hmoe_exsynth_expert *se, const int *ids,
                                     int expand)
{
    struct hmoe_experts_opts o = {.pool = {.n_threads = threads, .numa_node = -1, .spin_us = 50},
                                  .isa = isa,
                                  .max_tokens = max_tok,
                                  .max_top_k = TOPK,
                                  .expand_absmax = expand};
    struct hmoe_experts *ex = NULL;
    if (hmoe_experts_init(&o, H, I, &ex) != HMOE_OK) {
        fprintf(stderr, "init: %s\n", hmoe_err_msg());
        return NULL;
    }
    for (int e = 0; e < N_EXP; e++) {
        struct hmoe_mlp_w w = hmoe_exsynth_expert_w(&se[e]);
        if (hmoe_experts_add(ex, 5, ids[e], &w) != HMOE_OK) {
            fprintf(stderr, "add: %s\n", hmoe_err_msg());
            hmoe_experts_free(ex);
            return NULL;
        }
    }
    if (hmoe_experts_load(ex) != HMOE_OK) {
        fprintf(stderr, "load: %s\n", hmoe_err_msg());
        hmoe_experts_free(ex);
        return NULL;
    }
    return ex;
}

static void test_shape(const struct shape *s, uint64_t *rng)
{
    const int H = s->H, I = s->I, big = H >= 1024, nt = big ? 2 : 7;
    const int ids[N_EXP] = {11, 3, 200}; /* non-contiguous ids, not in ascending order */
    struct hmoe_exsynth_expert se[N_EXP];
    for (int e = 0; e < N_EXP; e++)
        CHECK(hmoe_exsynth_expert_init(&se[e], &s->spec, H, I, rng) == HMOE_OK);
    size_t n = (size_t)nt * H;
    float *x = malloc(n * sizeof *x), *ref = calloc(n, sizeof *ref), *out = malloc(n * sizeof *out),
          *one = malloc(n * sizeof *one), *thr = malloc(n * sizeof *thr),
          *o512 = calloc(n, sizeof *o512);
    int have512 = 0;
    int32_t idx[7 * TOPK];
    float wts[7 * TOPK];
    for (size_t i = 0; i < n; i++) x[i] = (hmoe_exsynth_uniform(rng) - 0.5f) * 2.0f;
    for (int t = 0; t < nt; t++) {
        int a = (int)(hmoe_exsynth_rand(rng) % N_EXP),
            b = (a + 1 + (int)(hmoe_exsynth_rand(rng) % 2)) % N_EXP;
        idx[t * TOPK] = ids[a];
        idx[t * TOPK + 1] = t == 3 || big ? -1 : ids[b]; /* skipped slots (keeps ASan fast) */
        wts[t * TOPK] = 0.25f + hmoe_exsynth_uniform(rng);
        wts[t * TOPK + 1] = 0.25f + hmoe_exsynth_uniform(rng);
    }
    /* reference: expert by expert, token by token */
    for (int t = 0; t < nt; t++)
        for (int k = 0; k < TOPK; k++) {
            int id = idx[t * TOPK + k];
            if (id < 0) continue;
            int e = id == ids[0] ? 0 : id == ids[1] ? 1 : 2;
            struct hmoe_mlp_w w = hmoe_exsynth_expert_w(&se[e]);
            CHECK(hmoe_expert_ffn_ref(&w, 1, x + (size_t)t * H, &wts[t * TOPK + k],
                                      ref + (size_t)t * H) == HMOE_OK);
        }
    double scale = max_abs(ref, n);
    CHECKF(scale > 0, "%s: reference is all zero", s->what);

    for (int isa = HMOE_ISA_GENERIC; isa < HMOE_ISA_COUNT; isa++) {
        if (!hmoe_experts_isa_supported((enum hmoe_experts_isa)isa)) continue;
        const char *in = hmoe_experts_isa_name((enum hmoe_experts_isa)isa);
        struct hmoe_experts *ex = make_set((enum hmoe_experts_isa)isa, 3, 4, H, I, se, ids, 0);
        CHECKF(ex != NULL, "%s %s: set", s->what, in);
        if (!ex) continue;
        /* whole batch (split into passes of 4 tokens), 3 threads */
        for (size_t i = 0; i < n; i++) out[i] = 0.0f;
        CHECK(hmoe_experts_run(ex, 5, nt, TOPK, x, idx, wts, out) == HMOE_OK);
        double d = max_diff(out, ref, n);
        CHECKF(d <= 1e-5 * scale, "%s %s: max diff %.3g vs max|ref| %.3g", s->what, in, d, scale);
        note_diff(isa, d, scale);
        if (big) fprintf(stderr, "%s %s: max diff / max|ref| %.3g\n", s->what, in, d / scale);
        /* the bf16-part kernels must really take this shape (not fall back to avx512 whole):
         * their sums run in another order, so the bits differ */
        if (isa == HMOE_ISA_AVX512) {
            memcpy(o512, out, n * sizeof *out);
            have512 = 1;
        } else if (big && have512 && (isa == HMOE_ISA_AVX512BF16 || isa == HMOE_ISA_AMX)) {
            CHECKF(memcmp(o512, out, n * sizeof *out) != 0, "%s %s: same bits as avx512",
                   s->what, in);
        }
        /* one token at a time: bit-identical */
        for (size_t i = 0; i < n; i++) one[i] = 0.0f;
        for (int t = 0; t < nt; t++)
            CHECK(hmoe_experts_run(ex, 5, 1, TOPK, x + (size_t)t * H, idx + t * TOPK,
                                   wts + t * TOPK, one + (size_t)t * H) == HMOE_OK);
        CHECKF(!memcmp(one, out, n * sizeof *out), "%s %s: per-token != batch (max diff %.3g)",
               s->what, in, max_diff(one, out, n));
        /* up to 16 tokens per pass (5-7 tokens on one expert: the register tiles): bit-identical */
        struct hmoe_experts *ex16 = make_set((enum hmoe_experts_isa)isa, 2, 16, H, I, se, ids, 0);
        CHECK(ex16 != NULL);
        if (ex16) {
            for (size_t i = 0; i < n; i++) thr[i] = 0.0f;
            CHECK(hmoe_experts_run(ex16, 5, nt, TOPK, x, idx, wts, thr) == HMOE_OK);
            CHECKF(!memcmp(thr, out, n * sizeof *out), "%s %s: 16-token passes != 4-token passes",
                   s->what, in);
            hmoe_experts_free(ex16);
        }
        /* the other schedules (stealing with a barrier, static ranges): bit-identical */
        for (int sc = HMOE_SCHED_STEAL; sc < HMOE_SCHED_COUNT; sc++) {
            CHECK(hmoe_experts_set_sched(ex, (enum hmoe_experts_sched)sc) == HMOE_OK);
            for (size_t i = 0; i < n; i++) thr[i] = 0.0f;
            CHECK(hmoe_experts_run(ex, 5, nt, TOPK, x, idx, wts, thr) == HMOE_OK);
            CHECKF(!memcmp(thr, out, n * sizeof *out), "%s %s: schedule %s != flow", s->what, in,
                   hmoe_experts_sched_name((enum hmoe_experts_sched)sc));
        }
        CHECK(hmoe_experts_set_sched(ex, HMOE_SCHED_COUNT) == HMOE_E_INVAL);
        CHECK(hmoe_experts_set_sched(ex, HMOE_SCHED_FLOW) == HMOE_OK);
        /* one thread: bit-identical */
        hmoe_experts_set_threads(ex, 1);
        for (size_t i = 0; i < n; i++) thr[i] = 0.0f;
        CHECK(hmoe_experts_run(ex, 5, nt, TOPK, x, idx, wts, thr) == HMOE_OK);
        CHECKF(!memcmp(thr, out, n * sizeof *out), "%s %s: 1 thread != 3 threads", s->what, in);
        hmoe_experts_free(ex);
        if (s->spec.dtype == HMOE_DT_NF4 && s->spec.double_quant) { /* absmax decoded at load */
            ex = make_set((enum hmoe_experts_isa)isa, 2, 4, H, I, se, ids, 1);
            CHECK(ex != NULL);
            if (!ex) continue;
            for (size_t i = 0; i < n; i++) thr[i] = 0.0f;
            CHECK(hmoe_experts_run(ex, 5, nt, TOPK, x, idx, wts, thr) == HMOE_OK);
            CHECKF(!memcmp(thr, out, n * sizeof *out), "%s %s: expanded absmax differs", s->what,
                   in);
            hmoe_experts_free(ex);
        }
    }
    free(x);
    free(ref);
    free(out);
    free(one);
    free(thr);
    free(o512);
    for (int e = 0; e < N_EXP; e++) hmoe_exsynth_expert_free(&se[e]);
}

/* Table values outside the range where the fast bf16 rounding is exact (|code * absmax| >= 2^111
 * or denormal): the gate and up absmax of every block scaled by 2^k (nested absmax and offset
 * scaled, so exactly) and x by 2^-k, so g, u and the output stay normal and an error in the
 * weights shows. k = 0 checks the scaling itself. */
static void test_extreme_absmax(uint64_t *rng)
{
    const int H = 256, I = 128, ks[] = {0, 120, -118, -122};
    const int ids[N_EXP] = {1, 2, 3};
    const struct hmoe_exsynth_spec spec = {HMOE_DT_NF4, 64, 1, HMOE_DT_BF16, 0};
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
        const int k = ks[ki];
        struct hmoe_exsynth_expert se[N_EXP];
        for (int e = 0; e < N_EXP; e++) {
            CHECK(hmoe_exsynth_expert_init(&se[e], &spec, H, I, rng) == HMOE_OK);
            for (int m = 0; m < 2; m++) {
                struct hmoe_exsynth_tensor *g = m ? &se[e].up : &se[e].gate;
                for (int64_t i = 0; i < (g->nf4.n_blocks + 255) / 256; i++)
                    g->nabs[i] = ldexpf(g->nabs[i], k);
                g->nf4.nested_offset = ldexpf(g->nf4.nested_offset, k);
            }
        }
        const int nt = 3;
        float x[3 * 256], ref[3 * 256] = {0}, out[3 * 256];
        int32_t idx[3 * TOPK];
        float wts[3 * TOPK];
        for (int i = 0; i < nt * H; i++)
            x[i] = ldexpf((hmoe_exsynth_uniform(rng) - 0.5f) * 2.0f, -k);
        for (int t = 0; t < nt; t++) {
            idx[t * TOPK] = ids[t];
            idx[t * TOPK + 1] = ids[(t + 1) % N_EXP];
            wts[t * TOPK] = wts[t * TOPK + 1] = 0.5f;
            for (int j = 0; j < TOPK; j++) {
                struct hmoe_mlp_w w = hmoe_exsynth_expert_w(&se[(t + j) % N_EXP]);
                CHECK(hmoe_expert_ffn_ref(&w, 1, x + t * H, &wts[t * TOPK + j], ref + t * H) ==
                      HMOE_OK);
            }
        }
        double scale = max_abs(ref, (size_t)nt * H);
        CHECKF(scale > 0 && isfinite(scale), "absmax 2^%d: reference %g", k, scale);
        for (int isa = HMOE_ISA_GENERIC; isa < HMOE_ISA_COUNT; isa++) {
            if (!hmoe_experts_isa_supported((enum hmoe_experts_isa)isa)) continue;
            struct hmoe_experts *ex = make_set((enum hmoe_experts_isa)isa, 2, 4, H, I, se, ids, 0);
            CHECK(ex != NULL);
            if (!ex) continue;
            for (int i = 0; i < nt * H; i++) out[i] = 0.0f;
            CHECK(hmoe_experts_run(ex, 5, nt, TOPK, x, idx, wts, out) == HMOE_OK);
            double d = max_diff(out, ref, (size_t)nt * H);
            CHECKF(d <= 1e-5 * scale, "absmax 2^%d %s: max diff %.3g vs max|ref| %.3g", k,
                   hmoe_experts_isa_name((enum hmoe_experts_isa)isa), d, scale);
            note_diff(isa, d, scale);
            hmoe_experts_free(ex);
        }
        for (int e = 0; e < N_EXP; e++) hmoe_exsynth_expert_free(&se[e]);
    }
}

static void test_bad_input(uint64_t *rng)
{
    const int H = 64, I = 32;
    struct hmoe_exsynth_spec spec = {HMOE_DT_NF4, 64, 1, HMOE_DT_BF16, 0};
    struct hmoe_exsynth_expert se[N_EXP];
    for (int e = 0; e < N_EXP; e++)
        CHECK(hmoe_exsynth_expert_init(&se[e], &spec, H, I, rng) == HMOE_OK);
    struct hmoe_experts_opts o = {.pool = {.n_threads = 2, .numa_node = -1, .spin_us = -1},
                                  .max_tokens = 4,
                                  .max_top_k = TOPK};
    struct hmoe_experts *ex;
    CHECK(hmoe_experts_init(&o, H, I, &ex) == HMOE_OK);
    float x[64], out[64];
    int32_t idx[TOPK] = {0, 1};
    float wts[TOPK] = {1, 1};
    memset(x, 0, sizeof x);
    CHECK(hmoe_experts_run(ex, 0, 1, TOPK, x, idx, wts, out) == HMOE_E_INVAL); /* before load */
    struct hmoe_mlp_w w = hmoe_exsynth_expert_w(&se[0]);
    struct hmoe_mlp_w wrong = w;
    wrong.down = w.gate; /* [I, H] where [H, I] is expected */
    CHECK(hmoe_experts_add(ex, 0, 0, &wrong) == HMOE_E_INVAL);
    CHECK(strstr(hmoe_err_msg(), "down") != NULL);
    struct hmoe_mlp_w u8 = w;
    u8.up.dtype = HMOE_DT_U8;
    CHECK(hmoe_experts_add(ex, 0, 0, &u8) == HMOE_E_UNSUPPORTED);
    struct hmoe_nf4 short_q = *w.gate.nf4;
    short_q.n_blocks = 3;
    struct hmoe_mlp_w shortw = w;
    shortw.gate.nf4 = &short_q;
    CHECK(hmoe_experts_add(ex, 0, 0, &shortw) == HMOE_E_INVAL); /* absmax does not cover */
    CHECK(hmoe_experts_add(ex, -1, 0, &w) == HMOE_E_INVAL);
    CHECK(hmoe_experts_add(ex, 0, 0, &w) == HMOE_OK);
    CHECK(hmoe_experts_add(ex, 0, 0, &w) == HMOE_E_INVAL); /* twice */
    w = hmoe_exsynth_expert_w(&se[1]);
    CHECK(hmoe_experts_add(ex, 0, 1, &w) == HMOE_OK);
    CHECK(hmoe_expert_ffn_ref(&wrong, 1, x, NULL, out) == HMOE_E_INVAL);
    CHECK(hmoe_experts_load(ex) == HMOE_OK);
    CHECK(hmoe_experts_load(ex) == HMOE_E_INVAL);
    CHECK(hmoe_experts_add(ex, 0, 2, &w) == HMOE_E_INVAL); /* after load */
    for (int i = 0; i < H; i++) out[i] = 7.0f;
    idx[1] = 2; /* not held */
    CHECK(hmoe_experts_run(ex, 0, 1, TOPK, x, idx, wts, out) == HMOE_E_INVAL);
    CHECK(strstr(hmoe_err_msg(), "expert 2") != NULL);
    idx[1] = 1 << 30;
    CHECK(hmoe_experts_run(ex, 0, 1, TOPK, x, idx, wts, out) == HMOE_E_INVAL);
    CHECK(hmoe_experts_run(ex, 1, 1, TOPK, x, idx, wts, out) == HMOE_E_INVAL); /* empty layer */
    CHECK(hmoe_experts_run(ex, 0, 1, TOPK + 1, x, idx, wts, out) == HMOE_E_INVAL);
    CHECK(hmoe_experts_run(ex, HMOE_MAX_LAYERS, 1, TOPK, x, idx, wts, out) == HMOE_E_INVAL);
    CHECK(hmoe_experts_run(ex, 0, 1, TOPK, NULL, idx, wts, out) == HMOE_E_INVAL);
    int touched = 0;
    for (int i = 0; i < H; i++) touched |= out[i] != 7.0f;
    CHECK(!touched);
    idx[0] = -1;
    idx[1] = -1;
    CHECK(hmoe_experts_run(ex, 0, 1, TOPK, x, idx, wts, out) == HMOE_OK); /* all skipped */
    CHECK(hmoe_experts_run(ex, 0, 0, TOPK, x, idx, wts, out) == HMOE_OK);
    CHECK(hmoe_experts_nbytes(ex, 0, 0) > (uint64_t)H * I * 3 / 2);
    CHECK(hmoe_experts_nbytes(ex, 0, 2) == 0);
    CHECK(hmoe_experts_set_isa(ex, HMOE_ISA_COUNT) == HMOE_E_UNSUPPORTED);
    hmoe_experts_free(ex);
    hmoe_experts_free(NULL);
    o.isa = HMOE_ISA_COUNT;
    CHECK(hmoe_experts_init(&o, H, I, &ex) == HMOE_E_UNSUPPORTED);
    o.isa = HMOE_ISA_AUTO;
    CHECK(hmoe_experts_init(&o, 0, I, &ex) == HMOE_E_INVAL);
    o.pool.numa_node = 4000;
    CHECK(hmoe_experts_init(&o, H, I, &ex) != HMOE_OK);
    for (int e = 0; e < N_EXP; e++) hmoe_exsynth_expert_free(&se[e]);
}

int main(void)
{
    hmoe_log_init("T", HMOE_LOG_LVL_WARN, 0);
    uint64_t rng = 42;
    fprintf(stderr, "best ISA: %s\n", hmoe_experts_isa_name(hmoe_experts_isa_best()));
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) test_shape(&shapes[i], &rng);
    test_extreme_absmax(&rng);
    test_bad_input(&rng);
    for (int isa = HMOE_ISA_GENERIC; isa < HMOE_ISA_COUNT; isa++)
        if (hmoe_experts_isa_supported((enum hmoe_experts_isa)isa))
            fprintf(stderr, "%s: largest max diff / max|ref| %.3g (limit 1e-5)\n",
                    hmoe_experts_isa_name((enum hmoe_experts_isa)isa), worst[isa]);
    TEST_DONE();
}
