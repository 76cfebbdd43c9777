/* test_nf4: bitsandbytes NF4 dequantization (MODEL.md §6.1/§6.3) against values computed here
 * independently (own NF4 table, own double-quant arithmetic, own bf16 rounding, _Float16 for f16):
 * with and without double quant, bf16/f16/f32 out_dtype (incl. exact rounding ties), odd element
 * counts and offsets, row views, and an NF4 tensor read back through hmoe_model_open. Also the
 * bf16/f16 conversions. */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hmoe/model.h"
#include "hmoe/tensor.h"
#include "hmoe_test.h"
#include "st_writer.h"

/* MODEL.md §6.1 */
static const float NF4[16] = {-1.0f,
                              -0.6961928009986877f,
                              -0.5250730514526367f,
                              -0.39491748809814453f,
                              -0.28444138169288635f,
                              -0.18477343022823334f,
                              -0.09105003625154495f,
                              0.0f,
                              0.07958029955625534f,
                              0.16093020141124725f,
                              0.24611230194568634f,
                              0.33791524171829224f,
                              0.44070982933044434f,
                              0.5626170039176941f,
                              0.7229568362236023f,
                              1.0f};

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}
static float frand(float lo, float hi)
{
    return lo + (hi - lo) * (float)(rnd() % 1000000) / 1e6f;
}

/* torch-style bf16 round to nearest even, written out here */
static float ref_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t lsb = (u >> 16) & 1u;
    u = (u + 0x7fffu + lsb) & 0xffff0000u;
    float r;
    memcpy(&r, &u, 4);
    return r;
}

static int bits_eq(float a, float b)
{
    return memcmp(&a, &b, 4) == 0;
}

struct case_data {
    uint8_t *packed;
    float *absmax_f32;
    uint8_t *absmax_q;
    float nested[256];
    float code2[256];
    float offset;
    int64_t n, nb;
};

static float ref_absmax(const struct case_data *d, int64_t b, int dq, int nbs)
{
    if (!dq) return d->absmax_f32[b];
    return d->code2[d->absmax_q[b]] * d->nested[b / nbs] + d->offset;
}

static float ref_value(const struct case_data *d, int64_t i, int bs, int dq, int nbs,
                       enum hmoe_dtype out)
{
    uint8_t byte = d->packed[i / 2];
    int nib = (i % 2 == 0) ? byte >> 4 : byte & 0x0f;
    float v = NF4[nib] * ref_absmax(d, i / bs, dq, nbs);
    if (out == HMOE_DT_BF16) return ref_bf16(v);
#ifdef __FLT16_MAX__
    if (out == HMOE_DT_F16) return (float)(_Float16)v;
#endif
    return v;
}

static void run_case(int64_t n, int bs, int dq, enum hmoe_dtype out)
{
    const int nbs = 4; /* small nested blocks so several groups are exercised */
    struct case_data d;
    memset(&d, 0, sizeof d);
    d.n = n;
    d.nb = (n + bs - 1) / bs;
    d.packed = malloc((size_t)(n + 1) / 2);
    d.absmax_f32 = malloc(sizeof(float) * (size_t)d.nb);
    d.absmax_q = malloc((size_t)d.nb);
    for (int64_t i = 0; i < (n + 1) / 2; i++)
        d.packed[i] = (uint8_t)rnd();
    for (int64_t b = 0; b < d.nb; b++) {
        d.absmax_f32[b] = frand(0.001f, 3.0f);
        d.absmax_q[b] = (uint8_t)rnd();
    }
    for (int g = 0; g < 256; g++)
        d.nested[g] = frand(0.01f, 0.5f);
    for (int i = 0; i < 256; i++)
        d.code2[i] = -1.0f + 2.0f * (float)i / 255.0f + frand(0, 1e-3f);
    d.offset = frand(0.05f, 0.2f);
    HMOE_ASSERT((d.nb + nbs - 1) / nbs <= 256);

    struct hmoe_nf4 q;
    memset(&q, 0, sizeof q);
    memcpy(q.code, NF4, sizeof q.code);
    memcpy(q.nested_code, d.code2, sizeof q.nested_code);
    q.nested_offset = d.offset;
    q.n_blocks = d.nb;
    q.blocksize = bs;
    q.nested_blocksize = nbs;
    q.out_dtype = out;
    if (dq) {
        q.absmax_q = d.absmax_q;
        q.nested_absmax = d.nested;
    } else {
        q.absmax_f32 = d.absmax_f32;
    }
    struct hmoe_tensor t;
    memset(&t, 0, sizeof t);
    t.name = "nf4_case";
    t.dtype = HMOE_DT_NF4;
    t.ndim = 1;
    t.shape[0] = n;
    t.data = d.packed;
    t.nf4 = &q;

    for (int64_t b = 0; b < d.nb; b++)
        CHECK(bits_eq(hmoe_nf4_absmax(&q, b), ref_absmax(&d, b, dq, nbs)));
    float *got = malloc(sizeof(float) * (size_t)n);
    hmoe_tensor_read_f32(&t, 0, n, got);
    int bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += !bits_eq(got[i], ref_value(&d, i, bs, dq, nbs, out));
    CHECKF(bad == 0, "n=%lld bs=%d dq=%d out=%s: %d of %lld differ", (long long)n, bs, dq,
           hmoe_dtype_name(out), bad, (long long)n);
    /* odd offsets and odd lengths */
    for (int rep = 0; rep < 20; rep++) {
        int64_t i0 = rnd() % n, len = rnd() % (n - i0 + 1);
        hmoe_tensor_read_f32(&t, i0, len, got);
        int b2 = 0;
        for (int64_t i = 0; i < len; i++)
            b2 += !bits_eq(got[i], ref_value(&d, i0 + i, bs, dq, nbs, out));
        CHECKF(b2 == 0, "slice [%lld, +%lld): %d differ", (long long)i0, (long long)len, b2);
    }
    /* row views: view the data as [n/cols, cols] with cols a multiple of the blocksize */
    int64_t cols = 2 * bs, rows = n / cols;
    if (rows >= 2) {
        t.ndim = 2;
        t.shape[0] = rows;
        t.shape[1] = cols;
        struct hmoe_tensor v = hmoe_tensor_rows(&t, 1, rows - 1);
        CHECK(v.shape[0] == rows - 1 && v.elem0 == cols &&
              hmoe_tensor_numel(&v) == (rows - 1) * cols);
        hmoe_tensor_read_f32(&v, 3, cols, got);
        int b3 = 0;
        for (int64_t i = 0; i < cols; i++)
            b3 += !bits_eq(got[i], ref_value(&d, cols + 3 + i, bs, dq, nbs, out));
        CHECK(b3 == 0);
    }
    free(got);
    free(d.packed);
    free(d.absmax_f32);
    free(d.absmax_q);
}

/* bf16 rounding ties: 1.0 * absmax with absmax exactly between two bf16 values */
static void bf16_ties(void)
{
    uint8_t packed[1] = {0xff}; /* two elements, both code 15 = 1.0 */
    float absmax[1];
    struct hmoe_nf4 q;
    memset(&q, 0, sizeof q);
    memcpy(q.code, NF4, sizeof q.code);
    q.absmax_f32 = absmax;
    q.n_blocks = 1;
    q.blocksize = 64;
    q.out_dtype = HMOE_DT_BF16;
    struct hmoe_tensor t = {
        .name = "tie", .dtype = HMOE_DT_NF4, .ndim = 1, .shape = {2}, .data = packed, .nf4 = &q};
    float out[2];
    absmax[0] = 1.0f + 0x1p-8f; /* tie between 1.0 (even) and 1.0078125: rounds down */
    hmoe_tensor_read_f32(&t, 0, 2, out);
    CHECK(out[0] == 1.0f && out[1] == 1.0f);
    absmax[0] = 1.0f + 3 * 0x1p-8f; /* tie between 1.0078125 (odd) and 1.015625: rounds up */
    hmoe_tensor_read_f32(&t, 0, 2, out);
    CHECK(out[0] == 1.015625f);
    absmax[0] = 1.0f + 0x1p-8f + 0x1p-20f; /* above the tie: rounds up */
    hmoe_tensor_read_f32(&t, 0, 2, out);
    CHECK(out[0] == 1.0078125f);
    q.out_dtype = HMOE_DT_F16;
    absmax[0] = 1.0f + 0x1p-11f; /* f16 tie: rounds to even 1.0 */
    hmoe_tensor_read_f32(&t, 0, 2, out);
    CHECK(out[0] == 1.0f);
    absmax[0] = 1.0f + 3 * 0x1p-11f;
    hmoe_tensor_read_f32(&t, 0, 2, out);
    CHECK(out[0] == 1.0f + 0x1p-9f);
    q.out_dtype = HMOE_DT_F32;
    absmax[0] = 1.0f + 0x1p-20f;
    hmoe_tensor_read_f32(&t, 0, 2, out);
    CHECK(out[0] == 1.0f + 0x1p-20f);
}

static void conversions(void)
{
    CHECK(hmoe_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(hmoe_bf16_to_f32(0xc000) == -2.0f);
    CHECK(hmoe_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(hmoe_f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80);     /* tie -> even */
    CHECK(hmoe_f32_to_bf16(1.0f + 3 * 0x1p-8f) == 0x3f82); /* tie -> even (up) */
    CHECK(hmoe_f32_to_bf16(-1.0f - 0x1p-7f - 0x1p-12f) == 0xbf81);
    CHECK(hmoe_f32_to_bf16(INFINITY) == 0x7f80);
    CHECK(hmoe_f32_to_bf16(3.4e38f) == 0x7f80); /* rounds to inf, as torch */
    CHECK(isnan(hmoe_bf16_to_f32(hmoe_f32_to_bf16(NAN))));
    CHECK(hmoe_f16_to_f32(0x3c00) == 1.0f);
    CHECK(hmoe_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(hmoe_f16_to_f32(0x0001) == 0x1p-24f);
    CHECK(hmoe_f16_to_f32(0x83ff) == -1023 * 0x1p-24f);
    CHECK(hmoe_f16_to_f32(0xfc00) == -INFINITY);
    CHECK(isnan(hmoe_f16_to_f32(0x7e00)));
    /* every f16 bit pattern vs the compiler's _Float16 */
#ifdef __FLT16_MAX__
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t hh = (uint16_t)h;
        _Float16 x;
        memcpy(&x, &hh, 2);
        float a = hmoe_f16_to_f32(hh), b = (float)x;
        bad += !(bits_eq(a, b) || (isnan(a) && isnan(b)));
    }
    CHECK(bad == 0);
#endif
    int bad2 = 0;
    for (int i = 0; i < 100000; i++) {
        uint32_t u = rnd() ^ (rnd() << 21);
        float f;
        memcpy(&f, &u, 4);
        if (isnan(f)) continue;
        bad2 += !bits_eq(hmoe_bf16_to_f32(hmoe_f32_to_bf16(f)), ref_bf16(f));
    }
    CHECK(bad2 == 0);
}

/* An NF4 double-quant tensor written as a bnb checkpoint, opened by hmoe_model_open and read
 * back: equal to the formula applied to the raw stored bytes. */
static void through_loader(void)
{
    char dir[] = "/tmp/hmoe_test_nf4_XXXXXX";
    if (!mkdtemp(dir)) return;
    struct stw_tiny c = stw_tiny_default();
    c.nf4_mask = STW_NF4_ATTN | STW_NF4_ROUTER;
    c.nf4_dq = 1;
    struct stw w = {0};
    stw_tiny_tensors(&w, &c, 3);
    char cfg[8192], path[512];
    stw_tiny_config(&c, 0, cfg, sizeof cfg);
    snprintf(path, sizeof path, "%s/config.json", dir);
    CHECK(stw_write_text(path, cfg) == 0);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(stw_write(&w, path) == 0);
    struct hmoe_model *m = NULL;
    CHECKF(hmoe_model_open(dir, &m) == HMOE_OK, "%s", hmoe_err_msg());
    const char *names[2] = {"model.layers.0.linear_attn.in_proj_qkvz.weight",
                            "model.layers.0.mlp.shared_expert_gate.weight"};
    for (int k = 0; m && k < 2; k++) {
        const struct hmoe_tensor *t =
            k == 0 ? &m->layers[0].in_proj_qkvz : &m->layers[0].shared_gate;
        char key[600];
        const struct stw_tensor *pk = stw_find(&w, names[k]);
        snprintf(key, sizeof key, "%s.absmax", names[k]);
        const struct stw_tensor *aq = stw_find(&w, key);
        snprintf(key, sizeof key, "%s.nested_absmax", names[k]);
        const struct stw_tensor *na = stw_find(&w, key);
        snprintf(key, sizeof key, "%s.nested_quant_map", names[k]);
        const struct stw_tensor *nq = stw_find(&w, key);
        snprintf(key, sizeof key, "%s.quant_state.bitsandbytes__nf4", names[k]);
        const struct stw_tensor *qs = stw_find(&w, key);
        char js[600];
        snprintf(js, sizeof js, "%.*s", (int)qs->nbytes, (const char *)qs->data);
        float off = 0;
        const char *p = strstr(js, "\"nested_offset\": ");
        CHECK(p && sscanf(p, "\"nested_offset\": %f", &off) == 1);
        CHECK(t->dtype == HMOE_DT_NF4 && t->nf4->absmax_q && t->nf4->blocksize == 64);
        int64_t n = hmoe_tensor_numel(t);
        float *got = malloc(sizeof(float) * (size_t)n);
        hmoe_tensor_read_f32(t, 0, n, got);
        int bad = 0;
        for (int64_t i = 0; i < n; i++) {
            int64_t b = i / 64;
            float code2, nab;
            memcpy(&code2, nq->data + 4 * aq->data[b], 4);
            memcpy(&nab, na->data + 4 * (b / 256), 4);
            float am = code2 * nab + off;
            uint8_t byte = pk->data[i / 2];
            float v = ref_bf16(NF4[i % 2 ? byte & 15 : byte >> 4] * am);
            bad += !bits_eq(v, got[i]);
        }
        CHECKF(bad == 0, "%s: %d of %lld differ", names[k], bad, (long long)n);
        free(got);
    }
    hmoe_model_close(m);
    stw_free(&w);
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    conversions();
    bf16_ties();
    const int64_t sizes[] = {1, 2, 63, 64, 65, 127, 131, 512, 1001};
    const int bss[] = {64, 2, 6};
    const enum hmoe_dtype outs[] = {HMOE_DT_F32, HMOE_DT_BF16, HMOE_DT_F16};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (size_t b = 0; b < 3; b++)
            for (int dq = 0; dq < 2; dq++)
                for (size_t o = 0; o < 3; o++) {
                    run_case(sizes[s], bss[b], dq, outs[o]);
                }
    through_loader();
    TEST_DONE();
}
