/* The scalar reference expert FFN over model tensors (NF4 / BF16 / F16 / F32), and the f16
 * conversions the kernels share. Defines the numerics the fast kernels are tested against:
 * weights dequantized exactly as bitsandbytes does (fp32 product rounded to out_dtype), dot
 * products in double, h = silu(g) * u rounded to float, out += w * y in float. */
#include <math.h>
#include <stdlib.h>

#include "experts_impl.h"
#include "hmoe/experts.h"

float exk_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 31u, man = h & 0x3ffu;
    if (exp == 0) { /* zero or subnormal: man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-8f;
        return exk_bits_f32(exk_f32_bits(v) | sign);
    }
    if (exp == 31) return exk_bits_f32(sign | 0x7f800000u | (man << 13));
    return exk_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t exk_f32_to_f16(float f)
{
    uint32_t u = exk_f32_bits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);  /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: inf */
    if (a < 0x38800000u) { /* below 2^-14: subnormal half, round to nearest even at 2^-24 */
        float v = exk_bits_f32(a) * 16777216.0f; /* exact: scaling by 2^24 */
        float r = nearbyintf(v);                 /* default rounding mode = nearest even */
        return (uint16_t)(sign | (uint32_t)r);
    }
    uint32_t e = (a >> 23) - 112u, m = a & 0x7fffffu;
    uint32_t h = (e << 10) | (m >> 13), rest = m & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++; /* carries into exp correctly */
    return (uint16_t)(sign | h);
}

static const char *dt_name(enum hmoe_dtype dt)
{
    switch (dt) {
    case HMOE_DT_NONE: return "none";
    case HMOE_DT_F32: return "F32";
    case HMOE_DT_F16: return "F16";
    case HMOE_DT_BF16: return "BF16";
    case HMOE_DT_U8: return "U8";
    case HMOE_DT_NF4: return "NF4";
    }
    return "?";
}

/* The view's element access, checked once by ref_check. */
static float ref_weight(const struct hmoe_tensor *t, int64_t i)
{
    int64_t g = t->elem0 + i;
    switch (t->dtype) {
    case HMOE_DT_F32: return ((const float *)t->data)[g];
    case HMOE_DT_BF16: return exk_bf16_to_f32(((const uint16_t *)t->data)[g]);
    case HMOE_DT_F16: return exk_f16_to_f32(((const uint16_t *)t->data)[g]);
    case HMOE_DT_NF4: {
        const struct hmoe_nf4 *q = t->nf4;
        uint8_t byte = ((const uint8_t *)t->data)[g >> 1];
        int nib = (g & 1) ? (byte & 15) : (byte >> 4);
        int64_t b = g / q->blocksize;
        float am;
        if (q->absmax_q) {
            float s = q->nested_code[q->absmax_q[b]] * q->nested_absmax[b / q->nested_blocksize];
            am = s + q->nested_offset;
        } else {
            am = q->absmax_f32[b];
        }
        float w = q->code[nib] * am;
        if (q->out_dtype == HMOE_DT_BF16) return exk_round_bf16(w);
        if (q->out_dtype == HMOE_DT_F16) return exk_round_f16(w);
        return w;
    }
    default: return 0.0f;
    }
}

/* Checks that t is a 2-D-compatible [rows, cols] matrix the reference and the loader can read. */
enum hmoe_status exk_check_tensor(const struct hmoe_tensor *t, const char *what, int64_t rows,
                                  int64_t cols)
{
    const char *nm = t->name ? t->name : what;
    if (t->dtype != HMOE_DT_NF4 && t->dtype != HMOE_DT_BF16 && t->dtype != HMOE_DT_F16 &&
        t->dtype != HMOE_DT_F32)
        return hmoe_fail(HMOE_E_UNSUPPORTED, "%s: dtype %s not supported by the expert kernels", nm,
                         dt_name(t->dtype));
    if (t->ndim < 1 || t->shape[0] != rows || hmoe_tensor_cols(t) != cols)
        return hmoe_fail(HMOE_E_INVAL, "%s: shape [%lld, %lld] expected, got %d-D [%lld, %lld]", nm,
                         (long long)rows, (long long)cols, t->ndim,
                         (long long)(t->ndim ? t->shape[0] : 0), (long long)hmoe_tensor_cols(t));
    if (!t->data || t->elem0 < 0) return hmoe_fail(HMOE_E_INVAL, "%s: no data", nm);
    if (t->dtype == HMOE_DT_NF4) {
        const struct hmoe_nf4 *q = t->nf4;
        if (!q) return hmoe_fail(HMOE_E_INVAL, "%s: NF4 without quant state", nm);
        if (q->blocksize <= 0 || (q->blocksize & 1))
            return hmoe_fail(HMOE_E_INVAL, "%s: NF4 blocksize %d", nm, q->blocksize);
        if (q->out_dtype != HMOE_DT_BF16 && q->out_dtype != HMOE_DT_F16 &&
            q->out_dtype != HMOE_DT_F32)
            return hmoe_fail(HMOE_E_UNSUPPORTED, "%s: NF4 dtype %s", nm, dt_name(q->out_dtype));
        int64_t last_block = (t->elem0 + rows * cols - 1) / q->blocksize;
        if (last_block >= q->n_blocks)
            return hmoe_fail(HMOE_E_INVAL, "%s: %lld absmax blocks, %lld needed", nm,
                             (long long)q->n_blocks, (long long)last_block + 1);
        if (q->absmax_q && (!q->nested_absmax || q->nested_blocksize <= 0))
            return hmoe_fail(HMOE_E_INVAL, "%s: double quant without nested absmax", nm);
        if (!q->absmax_q && !q->absmax_f32) return hmoe_fail(HMOE_E_INVAL, "%s: no absmax", nm);
    }
    return HMOE_OK;
}

enum hmoe_status hmoe_expert_ffn_ref(const struct hmoe_mlp_w *w, int n_tok, const float *x,
                                     const float *wt, float *out)
{
    if (!w || n_tok < 0 || (n_tok > 0 && (!x || !out)))
        return hmoe_fail(HMOE_E_INVAL, "expert ffn: bad arguments");
    int64_t inter = w->gate.ndim ? w->gate.shape[0] : 0;
    int64_t hid = hmoe_tensor_cols(&w->gate);
    if (inter <= 0 || hid <= 0) return hmoe_fail(HMOE_E_INVAL, "expert ffn: empty gate");
    enum hmoe_status st;
    if ((st = exk_check_tensor(&w->gate, "gate", inter, hid)) != HMOE_OK) return st;
    if ((st = exk_check_tensor(&w->up, "up", inter, hid)) != HMOE_OK) return st;
    if ((st = exk_check_tensor(&w->down, "down", hid, inter)) != HMOE_OK) return st;

    float *h = malloc((size_t)inter * sizeof *h);
    if (!h) return hmoe_fail(HMOE_E_NOMEM, "expert ffn: %lld floats", (long long)inter);
    for (int t = 0; t < n_tok; t++) {
        const float *xt = x + (int64_t)t * hid;
        for (int64_t r = 0; r < inter; r++) {
            double g = 0, u = 0;
            for (int64_t c = 0; c < hid; c++) {
                g += (double)ref_weight(&w->gate, r * hid + c) * (double)xt[c];
                u += (double)ref_weight(&w->up, r * hid + c) * (double)xt[c];
            }
            h[r] = (float)(g / (1.0 + exp(-g)) * u);
        }
        float scale = wt ? wt[t] : 1.0f;
        for (int64_t r = 0; r < hid; r++) {
            double y = 0;
            for (int64_t c = 0; c < inter; c++)
                y += (double)ref_weight(&w->down, r * inter + c) * (double)h[c];
            out[(int64_t)t * hid + r] += scale * (float)y;
        }
    }
    free(h);
    return HMOE_OK;
}
