/* tests/integration/test_eval_synth.c: the CPU forward pass on a small random Qwen3-Next built
 * in memory (no fixture needed): chunked prefill == recurrent decode == split continuation
 * (across the 64-token GDN chunk and the 256-token internal sub-call), last_only, reset, the
 * routed-expert hook against an independent per-token expert loop, and the error paths
 * (HMOE_E_RANGE, HMOE_E_INVAL, a failing hook, inconsistent tensor shapes). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hmoe_test.h"
#include "integration/test_eval_common.h"

/* ---- a tiny model in memory (f32 tensors, experts in bf16) ---- */

#define MAX_BLOBS 4096
static void *blobs[MAX_BLOBS];
static int n_blobs;
static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static float frand(void) /* uniform [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 4503599627370496.0 - 1.0);
}

static void *blob(size_t n)
{
    if (n_blobs == MAX_BLOBS) abort();
    void *p = calloc(n ? n : 1, 1);
    if (!p) abort();
    return blobs[n_blobs++] = p;
}

/* rows x cols (cols 0 = 1-D) random tensor: uniform [center-scale, center+scale). */
static struct hmoe_tensor mk(int64_t rows, int64_t cols, float center, float scale, int bf16)
{
    struct hmoe_tensor t;
    memset(&t, 0, sizeof t);
    t.name = "synth";
    t.ndim = cols ? 2 : 1;
    t.shape[0] = rows;
    t.shape[1] = cols;
    int64_t n = rows * (cols ? cols : 1);
    if (bf16) {
        uint16_t *d = blob((size_t)n * 2);
        for (int64_t i = 0; i < n; i++) d[i] = hmoe_f32_to_bf16(center + scale * frand());
        t.dtype = HMOE_DT_BF16;
        t.data = d;
    } else {
        float *d = blob((size_t)n * 4);
        for (int64_t i = 0; i < n; i++) d[i] = center + scale * frand();
        t.dtype = HMOE_DT_F32;
        t.data = d;
    }
    return t;
}

static struct hmoe_mlp_w mk_mlp(int H, int I, int bf16)
{
    struct hmoe_mlp_w w;
    w.gate = mk(I, H, 0.0f, 1.0f / sqrtf((float)H) * 1.7f, bf16);
    w.up = mk(I, H, 0.0f, 1.0f / sqrtf((float)H) * 1.7f, bf16);
    w.down = mk(H, I, 0.0f, 1.0f / sqrtf((float)I) * 1.7f, bf16);
    return w;
}

static void build_model(struct hmoe_model *m)
{
    memset(m, 0, sizeof *m);
    struct hmoe_config *c = &m->cfg;
    c->hidden_size = 48;
    c->num_layers = 5;
    c->vocab_size = 97;
    c->num_heads = 6;
    c->num_kv_heads = 2; /* GQA ratio 3 */
    c->head_dim = 16;
    c->partial_rotary_factor = 0.5f;
    c->rotary_dim = 8;
    c->rope_theta = 10000.0f;
    c->rms_norm_eps = 1e-6f;
    c->linear_num_key_heads = 2;
    c->linear_num_value_heads = 6; /* ratio 3 */
    c->linear_key_head_dim = 8;
    c->linear_value_head_dim = 12;
    c->linear_conv_kernel_dim = 4;
    c->num_experts = 8;
    c->num_experts_per_tok = 3;
    c->moe_intermediate_size = 16;
    c->shared_expert_intermediate_size = 20;
    c->intermediate_size = 40;
    c->norm_topk_prob = 1;
    c->decoder_sparse_step = 1;
    c->tie_word_embeddings = 1;
    c->max_position_embeddings = 512;
    c->bos_token_id = -1;
    static const enum hmoe_layer_kind kinds[5] = {HMOE_LAYER_LINEAR, HMOE_LAYER_FULL,
                                                  HMOE_LAYER_LINEAR, HMOE_LAYER_LINEAR,
                                                  HMOE_LAYER_FULL};
    static const unsigned char moe[5] = {1, 1, 0, 1, 1};
    const int H = c->hidden_size, V = c->vocab_size;
    const int Hq = c->num_heads, Hkv = c->num_kv_heads, D = c->head_dim;
    const int Hk = c->linear_num_key_heads, Hv = c->linear_num_value_heads;
    const int dk = c->linear_key_head_dim, dv = c->linear_value_head_dim;
    const int K = c->linear_conv_kernel_dim, E = c->num_experts;
    const float sH = 1.0f / sqrtf((float)H);
    m->embed = mk(V, H, 0.0f, 1.0f, 0);
    m->final_norm = mk(H, 0, 0.0f, 0.4f, 0);
    m->lm_head.dtype = HMOE_DT_NONE; /* tied */
    m->layers = blob(sizeof(struct hmoe_layer_w) * 5);
    for (int l = 0; l < 5; l++) {
        struct hmoe_layer_w *w = &m->layers[l];
        c->layer_types[l] = kinds[l];
        c->layer_is_moe[l] = moe[l];
        w->kind = kinds[l];
        w->input_norm = mk(H, 0, 0.0f, 0.4f, 0);
        w->post_norm = mk(H, 0, 0.0f, 0.4f, 0);
        if (kinds[l] == HMOE_LAYER_FULL) {
            w->q_proj = mk(2 * Hq * D, H, 0.0f, 2.0f * sH, 0);
            w->k_proj = mk(Hkv * D, H, 0.0f, 2.0f * sH, 0);
            w->v_proj = mk(Hkv * D, H, 0.0f, 1.7f * sH, 0);
            w->o_proj = mk(H, Hq * D, 0.0f, 1.7f / sqrtf((float)(Hq * D)), 0);
            w->q_norm = mk(D, 0, 0.0f, 0.4f, 0);
            w->k_norm = mk(D, 0, 0.0f, 0.4f, 0);
        } else {
            w->in_proj_qkvz = mk(2 * Hk * dk + 2 * Hv * dv, H, 0.0f, 2.0f * sH, 0);
            w->in_proj_ba = mk(2 * Hv, H, 0.0f, 2.0f * sH, 0);
            w->conv1d = mk(2 * Hk * dk + Hv * dv, K, 0.0f, 0.6f, 0);
            w->conv1d.ndim = 3; /* [C, 1, K] */
            w->conv1d.shape[1] = 1;
            w->conv1d.shape[2] = K;
            w->dt_bias = mk(Hv, 0, 0.0f, 1.0f, 0);
            w->A_log = mk(Hv, 0, -0.5f, 1.0f, 0);
            w->lin_norm = mk(dv, 0, 1.0f, 0.4f, 0);
            w->out_proj = mk(H, Hv * dv, 0.0f, 1.7f / sqrtf((float)(Hv * dv)), 0);
        }
        if (moe[l]) {
            w->router = mk(E, H, 0.0f, 3.0f * sH, 0);
            w->shared_gate = mk(1, H, 0.0f, 2.0f * sH, 0);
            w->shared = mk_mlp(H, c->shared_expert_intermediate_size, 0);
            w->experts = blob(sizeof(struct hmoe_mlp_w) * (size_t)E);
            for (int e = 0; e < E; e++) w->experts[e] = mk_mlp(H, c->moe_intermediate_size, 1);
        } else {
            w->mlp = mk_mlp(H, c->intermediate_size, 0);
        }
    }
}

/* ---- an independent routed-expert implementation for the hook ---- */

struct hook_ctx {
    const struct hmoe_model *m;
    int calls[8];
    int fail;
};

static enum hmoe_status naive_routed(void *vctx, int layer, int n_tok, const float *x,
                                     const int32_t *idx, const float *w, float *out)
{
    struct hook_ctx *hc = vctx;
    const struct hmoe_model *m = hc->m;
    const int H = m->cfg.hidden_size, I = m->cfg.moe_intermediate_size;
    const int k = m->cfg.num_experts_per_tok;
    if (layer >= 0 && layer < 8) hc->calls[layer]++;
    if (hc->fail) return hmoe_fail(HMOE_E_PEER_DEAD, "synthetic expert worker died");
    float *row = malloc(sizeof(float) * (size_t)(H > I ? H : I));
    float *hbuf = malloc(sizeof(float) * (size_t)I);
    for (int t = 0; t < n_tok; t++)
        for (int j = 0; j < k; j++) {
            const struct hmoe_mlp_w *e = &m->layers[layer].experts[idx[t * k + j]];
            for (int i = 0; i < I; i++) {
                double g = 0, u = 0;
                hmoe_tensor_read_f32(&e->gate, (int64_t)i * H, H, row);
                for (int d = 0; d < H; d++) g += (double)row[d] * (double)x[t * H + d];
                hmoe_tensor_read_f32(&e->up, (int64_t)i * H, H, row);
                for (int d = 0; d < H; d++) u += (double)row[d] * (double)x[t * H + d];
                hbuf[i] = (float)(g / (1.0 + exp(-g)) * u);
            }
            for (int d = 0; d < H; d++) {
                double y = 0;
                hmoe_tensor_read_f32(&e->down, (int64_t)d * I, I, row);
                for (int i = 0; i < I; i++) y += (double)row[i] * (double)hbuf[i];
                out[t * H + d] += w[t * k + j] * (float)y;
            }
        }
    free(row);
    free(hbuf);
    return HMOE_OK;
}

int main(void)
{
    struct hmoe_model m;
    build_model(&m);
    const int V = m.cfg.vocab_size, T = 300; /* > 256: two internal sub-calls; > 64: chunks */
    int32_t *tok = malloc(sizeof(int32_t) * T);
    for (int i = 0; i < T; i++) tok[i] = (int32_t)((i * 37 + (i * i) % 11) % V);

    struct hmoe_fwd *f = NULL;
    CHECK(hmoe_fwd_init(&m, 320, &f) == HMOE_OK);
    if (!f) TEST_DONE();
    float *a = malloc(sizeof(float) * (size_t)T * V); /* one prefill */
    float *b = malloc(sizeof(float) * (size_t)T * V); /* other schedules */

    static const int whole[] = {T, 0};
    CHECK(run_split(f, tok, T, whole, a, V) == HMOE_OK);
    CHECK(hmoe_fwd_pos(f) == T);
    double mx = 0;
    for (size_t i = 0; i < (size_t)T * V; i++) mx = fmax(mx, fabs((double)a[i]));
    CHECKF(mx > 0.5 && mx < 1e3, "logit scale %g", mx);

    /* logits must vary with the position: a constant row would hide a broken stack */
    CHECKF(rel_maxdiff(a, a + (size_t)(T - 1) * V, V) > 1e-2, "rows 0 and T-1 identical");

    static const int dec[] = {0};
    CHECK(run_split(f, tok, T, dec, b, V) == HMOE_OK);
    double d = rel_maxdiff(b, a, (size_t)T * V);
    fprintf(stderr, "prefill vs decode: %.3g\n", d);
    CHECKF(d <= 1e-4, "prefill vs token-by-token decode rel diff %.3g", d);

    static const int two[] = {37, 200, 0}; /* continuation at 37, then 200, then decode */
    CHECK(run_split(f, tok, T, two, b, V) == HMOE_OK);
    d = rel_maxdiff(b, a, (size_t)T * V);
    fprintf(stderr, "prefill vs 37+200+decode: %.3g\n", d);
    CHECKF(d <= 1e-4, "split prefill rel diff %.3g", d);

    static const int mixed[] = {1, 1, 2, 3, 65, 0}; /* tiny prefills that straddle conv state */
    CHECK(run_split(f, tok, T, mixed, b, V) == HMOE_OK);
    d = rel_maxdiff(b, a, (size_t)T * V);
    CHECKF(d <= 1e-4, "1+1+2+3+65 split rel diff %.3g", d);

    /* last_only: one row, equal to the last row of the full call */
    hmoe_fwd_reset(f);
    CHECK(hmoe_fwd_pos(f) == 0);
    CHECK(hmoe_fwd_run(f, tok, 100, b, 1) == HMOE_OK);
    d = rel_maxdiff(b, a + (size_t)99 * V, V);
    CHECKF(d <= 1e-4, "last_only rel diff %.3g", d);
    /* logits NULL still advances the state */
    CHECK(hmoe_fwd_run(f, tok + 100, 10, NULL, 0) == HMOE_OK);
    CHECK(hmoe_fwd_run(f, tok + 110, 1, b, 0) == HMOE_OK);
    d = rel_maxdiff(b, a + (size_t)110 * V, V);
    CHECKF(d <= 1e-4, "after NULL-logits call rel diff %.3g", d);

    /* hook: an independent per-token expert loop gives the same logits */
    struct hook_ctx hc;
    memset(&hc, 0, sizeof hc);
    hc.m = &m;
    struct hmoe_moe_hook hook = {naive_routed, &hc};
    hmoe_fwd_set_moe_hook(f, &hook);
    static const int hsplit[] = {70, 0};
    CHECK(run_split(f, tok, 80, hsplit, b, V) == HMOE_OK);
    d = rel_maxdiff(b, a, (size_t)80 * V);
    fprintf(stderr, "hook vs in-process experts: %.3g\n", d);
    CHECKF(d <= 1e-4, "hook rel diff %.3g", d);
    CHECK(hc.calls[0] == 11 && hc.calls[1] == 11 && hc.calls[2] == 0 && hc.calls[3] == 11 &&
          hc.calls[4] == 11);
    hc.fail = 1;
    hmoe_fwd_reset(f);
    CHECK(hmoe_fwd_run(f, tok, 5, b, 0) == HMOE_E_PEER_DEAD);
    CHECK(strstr(hmoe_err_msg(), "died") != NULL);
    hmoe_fwd_set_moe_hook(f, NULL);
    CHECK(hmoe_fwd_run(f, tok, 1, b, 0) == HMOE_E_INVAL); /* half-done call: must reset */
    hmoe_fwd_reset(f);
    CHECK(hmoe_fwd_run(f, tok, 5, b, 0) == HMOE_OK);
    d = rel_maxdiff(b, a, (size_t)5 * V);
    CHECKF(d <= 1e-4, "after failed hook + reset rel diff %.3g", d);

    /* errors: context overflow, bad token ids, bad n */
    hmoe_fwd_reset(f);
    CHECK(hmoe_fwd_run(f, tok, 300, NULL, 0) == HMOE_OK);
    int32_t big[21] = {0};
    CHECK(hmoe_fwd_run(f, big, 21, b, 0) == HMOE_E_RANGE);
    CHECK(hmoe_fwd_pos(f) == 300);
    CHECK(hmoe_fwd_run(f, big, 20, NULL, 0) == HMOE_OK);
    CHECK(hmoe_fwd_run(f, big, 1, b, 0) == HMOE_E_RANGE);
    hmoe_fwd_reset(f);
    int32_t bad[3] = {1, V, 2};
    CHECK(hmoe_fwd_run(f, bad, 3, b, 0) == HMOE_E_INVAL);
    bad[1] = -1;
    CHECK(hmoe_fwd_run(f, bad, 3, b, 0) == HMOE_E_INVAL);
    CHECK(hmoe_fwd_pos(f) == 0);
    CHECK(hmoe_fwd_run(f, bad, 0, b, 0) == HMOE_E_INVAL);
    CHECK(hmoe_fwd_run(f, NULL, 1, b, 0) == HMOE_E_INVAL);
    hmoe_fwd_free(f);
    hmoe_fwd_free(NULL);

    /* init rejects inconsistent shapes and bad max_ctx without crashing */
    CHECK(hmoe_fwd_init(&m, -1, &f) == HMOE_E_INVAL);
    m.layers[1].k_proj.shape[0]--;
    CHECK(hmoe_fwd_init(&m, 64, &f) == HMOE_E_FORMAT);
    CHECK(f == NULL);
    CHECK(strstr(hmoe_err_msg(), "k_proj") != NULL);
    m.layers[1].k_proj.shape[0]++;
    struct hmoe_tensor saved = m.layers[3].experts[5].down;
    m.layers[3].experts[5].down.dtype = HMOE_DT_NONE;
    CHECK(hmoe_fwd_init(&m, 64, &f) == HMOE_E_FORMAT);
    m.layers[3].experts[5].down = saved;
    m.cfg.linear_num_value_heads = 5; /* not a multiple of the key heads */
    CHECK(hmoe_fwd_init(&m, 64, &f) == HMOE_E_FORMAT);
    m.cfg.linear_num_value_heads = 6;
    m.cfg.linear_value_head_dim = 1 << 30; /* hostile widths: no overflow, a clean error */
    CHECK(hmoe_fwd_init(&m, 64, &f) == HMOE_E_FORMAT);
    m.cfg.linear_value_head_dim = 12;
    m.cfg.num_layers = 0;
    CHECK(hmoe_fwd_init(&m, 64, &f) == HMOE_E_FORMAT);
    m.cfg.num_layers = 5;
    CHECK(hmoe_fwd_init(&m, 0, &f) == HMOE_OK); /* 0 = max_position_embeddings */
    hmoe_fwd_free(f);

    free(a);
    free(b);
    free(tok);
    for (int i = 0; i < n_blobs; i++) free(blobs[i]);
    TEST_DONE();
}
