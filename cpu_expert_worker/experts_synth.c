/* Random expert tensors in bnb NF4 (double quant or plain absmax), BF16, F16 and F32 for the
 * expert kernel tests and benchmark. Tables are the real NF4 map and a monotone 8-bit code. */
#include "hmoe/experts_synth.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "experts_impl.h"
#include "hmoe/nf4_code.h"

static const float nf4_map[16] = HMOE_NF4_CODE;

uint64_t hmoe_exsynth_rand(uint64_t *rng)
{
    uint64_t z = (*rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float hmoe_exsynth_uniform(uint64_t *rng)
{
    return (float)(hmoe_exsynth_rand(rng) >> 40) * (1.0f / 16777216.0f);
}

static void fill_bytes(uint8_t *p, size_t n, uint64_t *rng)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t r = hmoe_exsynth_rand(rng);
        memcpy(p + i, &r, 8);
    }
    for (; i < n; i++) p[i] = (uint8_t)hmoe_exsynth_rand(rng);
}

void hmoe_exsynth_tensor_free(struct hmoe_exsynth_tensor *st)
{
    if (!st) return;
    free(st->data);
    free(st->aq);
    free(st->af);
    free(st->nabs);
    memset(st, 0, sizeof *st);
}

enum hmoe_status hmoe_exsynth_tensor_init(struct hmoe_exsynth_tensor *st,
                                          const struct hmoe_exsynth_spec *spec, int64_t rows,
                                          int64_t cols, uint64_t *rng)
{
    memset(st, 0, sizeof *st);
    if (rows <= 0 || cols <= 0 || spec->elem0 < 0)
        return hmoe_fail(HMOE_E_INVAL, "synth: bad shape");
    int64_t n = spec->elem0 + rows * cols + 3; /* a few elements past the view */
    st->t.name = NULL;
    st->t.dtype = spec->dtype;
    st->t.ndim = 2;
    st->t.shape[0] = rows;
    st->t.shape[1] = cols;
    st->t.elem0 = spec->elem0;
    switch (spec->dtype) {
    case HMOE_DT_F32: {
        float *d = malloc((size_t)n * sizeof *d);
        if (!d) return hmoe_fail(HMOE_E_NOMEM, "synth");
        for (int64_t i = 0; i < n; i++) d[i] = (hmoe_exsynth_uniform(rng) - 0.5f) * 0.1f;
        st->data = d;
        break;
    }
    case HMOE_DT_BF16:
    case HMOE_DT_F16: {
        uint16_t *d = malloc((size_t)n * sizeof *d);
        if (!d) return hmoe_fail(HMOE_E_NOMEM, "synth");
        for (int64_t i = 0; i < n; i++) {
            float v = (hmoe_exsynth_uniform(rng) - 0.5f) * 0.1f;
            d[i] = spec->dtype == HMOE_DT_F16 ? exk_f32_to_f16(v)
                                              : (uint16_t)(exk_f32_bits(exk_round_bf16(v)) >> 16);
        }
        st->data = d;
        break;
    }
    case HMOE_DT_NF4: {
        if (spec->blocksize <= 0 || (spec->blocksize & 1))
            return hmoe_fail(HMOE_E_INVAL, "synth: NF4 blocksize %d", spec->blocksize);
        struct hmoe_nf4 *q = &st->nf4;
        q->blocksize = spec->blocksize;
        q->n_blocks = (n + spec->blocksize - 1) / spec->blocksize;
        q->out_dtype = spec->out_dtype;
        memcpy(q->code, nf4_map, sizeof q->code);
        st->data = malloc((size_t)(n + 1) / 2);
        if (!st->data) return hmoe_fail(HMOE_E_NOMEM, "synth");
        fill_bytes(st->data, (size_t)(n + 1) / 2, rng);
        if (spec->double_quant) {
            q->nested_blocksize = 256;
            int64_t ng = (q->n_blocks + 255) / 256;
            st->aq = malloc((size_t)q->n_blocks);
            st->nabs = malloc((size_t)ng * sizeof *st->nabs);
            if (!st->aq || !st->nabs) {
                hmoe_exsynth_tensor_free(st);
                return hmoe_fail(HMOE_E_NOMEM, "synth");
            }
            fill_bytes(st->aq, (size_t)q->n_blocks, rng);
            for (int64_t g = 0; g < ng; g++)
                st->nabs[g] = 0.004f + 0.004f * hmoe_exsynth_uniform(rng);
            for (int i = 0; i < 256; i++) { /* monotone signed code in [-1, 1] */
                float u = (float)(i - 128) / 127.0f;
                q->nested_code[i] = u * fabsf(u);
            }
            q->nested_offset = 0.03f;
            q->absmax_q = st->aq;
            q->nested_absmax = st->nabs;
        } else {
            st->af = malloc((size_t)q->n_blocks * sizeof *st->af);
            if (!st->af) {
                hmoe_exsynth_tensor_free(st);
                return hmoe_fail(HMOE_E_NOMEM, "synth");
            }
            for (int64_t b = 0; b < q->n_blocks; b++)
                st->af[b] = 0.02f + 0.03f * hmoe_exsynth_uniform(rng);
            q->absmax_f32 = st->af;
        }
        st->t.nf4 = q;
        break;
    }
    default: return hmoe_fail(HMOE_E_INVAL, "synth: dtype %d", (int)spec->dtype);
    }
    st->t.data = st->data;
    return HMOE_OK;
}

void hmoe_exsynth_expert_free(struct hmoe_exsynth_expert *e)
{
    if (!e) return;
    hmoe_exsynth_tensor_free(&e->gate);
    hmoe_exsynth_tensor_free(&e->up);
    hmoe_exsynth_tensor_free(&e->down);
}

enum hmoe_status hmoe_exsynth_expert_init(struct hmoe_exsynth_expert *e,
                                          const struct hmoe_exsynth_spec *spec, int hidden,
                                          int inter, uint64_t *rng)
{
    memset(e, 0, sizeof *e);
    enum hmoe_status st;
    if ((st = hmoe_exsynth_tensor_init(&e->gate, spec, inter, hidden, rng)) != HMOE_OK ||
        (st = hmoe_exsynth_tensor_init(&e->up, spec, inter, hidden, rng)) != HMOE_OK ||
        (st = hmoe_exsynth_tensor_init(&e->down, spec, hidden, inter, rng)) != HMOE_OK) {
        hmoe_exsynth_expert_free(e);
        return st;
    }
    return HMOE_OK;
}

struct hmoe_mlp_w hmoe_exsynth_expert_w(const struct hmoe_exsynth_expert *e)
{
    struct hmoe_mlp_w w = {e->gate.t, e->up.t, e->down.t};
    return w;
}
