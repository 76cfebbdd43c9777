/* Synthetic models: the tiny/small presets have the right config and tensor shapes, the bytes
 * depend on the seed but not on the thread count, NF4 weights have the intended scale, and bad
 * specs are rejected with a message. */
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "hmoe/synth.h"
#include "hmoe_test.h"

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static size_t tensor_bytes(const struct hmoe_tensor *t)
{
    int64_t n = hmoe_tensor_numel(t);
    return t->dtype == HMOE_DT_NF4 ? (size_t)n / 2 : (size_t)n * 2;
}

static uint64_t hash_tensor(uint64_t h, const struct hmoe_tensor *t)
{
    if (t->dtype == HMOE_DT_NONE) return h;
    h = fnv(h, t->name, strlen(t->name));
    h = fnv(h, t->data, tensor_bytes(t));
    if (t->nf4) {
        h = fnv(h, t->nf4->absmax_q, (size_t)t->nf4->n_blocks);
        h = fnv(h, t->nf4->nested_absmax, (size_t)((t->nf4->n_blocks + 255) / 256) * 4);
        h = fnv(h, &t->nf4->nested_offset, 4);
    }
    return h;
}

static uint64_t hash_mlp(uint64_t h, const struct hmoe_mlp_w *w)
{
    h = hash_tensor(h, &w->gate);
    h = hash_tensor(h, &w->up);
    return hash_tensor(h, &w->down);
}

static uint64_t hash_model(const struct hmoe_model *m)
{
    uint64_t h = 1469598103934665603ull;
    h = hash_tensor(h, &m->embed);
    h = hash_tensor(h, &m->final_norm);
    h = hash_tensor(h, &m->lm_head);
    for (int l = 0; l < m->cfg.num_layers; l++) {
        const struct hmoe_layer_w *w = &m->layers[l];
        const struct hmoe_tensor *ts[] = {&w->input_norm, &w->post_norm, &w->q_proj, &w->k_proj,
                                          &w->v_proj, &w->o_proj, &w->q_norm, &w->k_norm,
                                          &w->in_proj_qkvz, &w->in_proj_ba, &w->conv1d,
                                          &w->dt_bias, &w->A_log, &w->lin_norm, &w->out_proj,
                                          &w->router, &w->shared_gate};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) h = hash_tensor(h, ts[i]);
        h = hash_mlp(h, &w->shared);
        for (int e = 0; e < m->cfg.num_experts; e++) h = hash_mlp(h, &w->experts[e]);
    }
    return h;
}

static float bf16f(uint16_t v)
{
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Mean and std of the dequantized (fp32) weights of an NF4 tensor. */
static void nf4_stats(const struct hmoe_tensor *t, double *mean, double *std, double *amin)
{
    const struct hmoe_nf4 *q = t->nf4;
    const uint8_t *w = t->data;
    int64_t n = hmoe_tensor_numel(t);
    double s = 0, s2 = 0;
    *amin = 1e30;
    for (int64_t b = 0; b < q->n_blocks; b++) {
        double a = (double)q->nested_code[q->absmax_q[b]] *
                       (double)q->nested_absmax[b / q->nested_blocksize] +
                   (double)q->nested_offset;
        if (a < *amin) *amin = a;
        for (int64_t i = b * 64; i < b * 64 + 64; i++) {
            int nib = (i & 1) ? w[i / 2] & 15 : w[i / 2] >> 4;
            double v = (double)q->code[nib] * a;
            s += v;
            s2 += v * v;
        }
    }
    *mean = s / (double)n;
    *std = sqrt(s2 / (double)n - *mean * *mean);
}

static void test_tiny(void)
{
    struct hmoe_model *m = NULL;
    CHECK(hmoe_synth_open("synth:tiny", &m) == HMOE_OK);
    if (!m) return;
    const struct hmoe_config *c = &m->cfg;
    CHECK(!strcmp(m->dir, "synth:tiny"));
    CHECK(c->num_layers == 4 && c->hidden_size == 128 && c->num_experts == 8);
    CHECK(c->layer_types[3] == HMOE_LAYER_FULL && c->layer_types[0] == HMOE_LAYER_LINEAR);
    CHECK(c->rotary_dim == 16 && c->quantized == 1);
    CHECK(m->embed.dtype == HMOE_DT_BF16 && m->embed.shape[0] == 512 && m->embed.shape[1] == 128);
    CHECK(!strcmp(m->lm_head.name, "lm_head.weight"));
    const struct hmoe_layer_w *l0 = &m->layers[0], *l3 = &m->layers[3];
    CHECK(l0->in_proj_qkvz.dtype == HMOE_DT_NF4);
    CHECK(l0->in_proj_qkvz.shape[0] == 2 * 64 + 2 * 128 && l0->in_proj_qkvz.shape[1] == 128);
    CHECK(l0->conv1d.ndim == 3 && l0->conv1d.shape[0] == 256 && l0->conv1d.shape[2] == 4);
    CHECK(l0->q_proj.dtype == HMOE_DT_NONE && l3->q_proj.shape[0] == 4 * 64 * 2);
    CHECK(!strcmp(l3->experts[7].down.name, "model.layers.3.mlp.experts.7.down_proj.weight"));
    CHECK(l3->experts[7].down.shape[0] == 128 && l3->experts[7].down.shape[1] == 64);
    CHECK(l0->router.dtype == HMOE_DT_NF4 && l0->shared_gate.shape[0] == 1);
    CHECK(l0->experts[0].gate.nf4->n_blocks == 64 * 128 / 64);
    /* A_log = log U(1,16); dt_bias in [-6, -2]; lin_norm near 1. */
    for (int i = 0; i < 4; i++) {
        float a = bf16f(((const uint16_t *)l0->A_log.data)[i]);
        float d = bf16f(((const uint16_t *)l0->dt_bias.data)[i]);
        CHECKF(a >= 0.0f && a <= 2.78f, "A_log %g", (double)a);
        CHECKF(d >= -6.01f && d <= -1.99f, "dt_bias %g", (double)d);
    }
    /* NF4 scale: W std = gain / sqrt(in) (gain 1 for the experts), absmax positive. */
    double mean, std, amin;
    nf4_stats(&m->layers[1].experts[3].gate, &mean, &std, &amin);
    CHECKF(fabs(std * sqrt(128.0) - 1.0) < 0.1, "std*sqrt(in) %g", std * sqrt(128.0));
    CHECKF(fabs(mean) < 0.05 * std, "mean %g std %g", mean, std);
    CHECK(amin > 0);
    nf4_stats(&m->layers[2].out_proj, &mean, &std, &amin);
    CHECKF(fabs(std * sqrt(128.0) - 1.0) < 0.1, "std*sqrt(in) %g", std * sqrt(128.0));

    /* Same seed: same bytes at 1 thread and at several; another seed: other bytes. */
    uint64_t h1 = hash_model(m);
    struct hmoe_model *m2 = NULL, *m3 = NULL;
#ifdef _OPENMP
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
#endif
    CHECK(hmoe_synth_open("synth:tiny?seed=1", &m2) == HMOE_OK);
#ifdef _OPENMP
    omp_set_num_threads(nt > 1 ? nt : 3);
#endif
    CHECK(hmoe_synth_open("synth:tiny?seed=2", &m3) == HMOE_OK);
    if (m2) CHECK(hash_model(m2) == h1);
    if (m3) CHECK(hash_model(m3) != h1);
    hmoe_synth_close(m2);
    hmoe_synth_close(m3);
    CHECK(hmoe_synth_nbytes(m) > 0);
    hmoe_synth_close(m);
}

static void test_small_layers(void)
{
    struct hmoe_model *m = NULL;
    CHECK(hmoe_synth_open("synth:small?layers=2&seed=7", &m) == HMOE_OK);
    if (!m) return;
    CHECK(m->cfg.num_layers == 2 && m->cfg.hidden_size == 512 && m->cfg.num_experts == 64);
    CHECK(m->layers[1].experts[63].up.shape[0] == 128);
    hmoe_synth_close(m);
}

static void test_bad_specs(void)
{
    const char *bad[] = {"synth:", "synth:nope", "synth:tiny?seed=", "synth:tiny?seed=x",
                         "synth:tiny?layers=0", "synth:tiny?layers=5", "synth:tiny?foo=1",
                         "synth:tiny?seed", "synth:tiny?&", "/some/dir", "synth:tiny?seed=-3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct hmoe_model *m = (struct hmoe_model *)1;
        hmoe_err_clear();
        CHECKF(hmoe_synth_open(bad[i], &m) == HMOE_E_INVAL, "%s", bad[i]);
        CHECKF(m == NULL && hmoe_err_msg()[0], "%s: no message", bad[i]);
    }
    hmoe_synth_close(NULL);
}

static void test_dynamic_map(void)
{
    float c[256];
    hmoe_synth_dynamic_map(c);
    CHECK(c[255] == 1.0f);
    CHECK(c[0] < -0.99f && c[0] > -1.0f);
    int zeros = 0;
    for (int i = 0; i < 256; i++) zeros += c[i] == 0.0f;
    CHECK(zeros == 1);
    for (int i = 1; i < 256; i++) CHECK(c[i] > c[i - 1]);
}

int main(void)
{
    test_dynamic_map();
    test_tiny();
    test_small_layers();
    test_bad_specs();
    TEST_DONE();
}
