/* Tensor views and the dequantizing CPU math: bf16/f16 conversion (round to nearest even, as
 * torch), bitsandbytes NF4 dequantization (MODEL.md §6.3) and the reference matmul y = x W^T
 * used for every projection of the CPU forward pass. All reads of weight bytes go through
 * memcpy-style loads, so odd (unaligned) files cannot trigger undefined behaviour. */
#include "hmoe/tensor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hmoe/status.h"

#ifdef _OPENMP
#include <omp.h>
#endif

const char *hmoe_dtype_name(enum hmoe_dtype dt)
{
    switch (dt) {
    case HMOE_DT_NONE: return "none";
    case HMOE_DT_F32: return "f32";
    case HMOE_DT_F16: return "f16";
    case HMOE_DT_BF16: return "bf16";
    case HMOE_DT_U8: return "u8";
    case HMOE_DT_NF4: return "nf4";
    }
    return "?";
}

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float hmoe_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

uint16_t hmoe_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float hmoe_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13)); /* inf / nan */
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in f32 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

/* f32 -> f16 with round to nearest even (subnormals and overflow to inf as IEEE). */
static uint16_t f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {
        /* result is subnormal or zero: value / 2^-24 rounded to an integer, RNE */
        float v = bits_f32(a) * 0x1p24f; /* exact: scaling by a power of two */
        float r = nearbyintf(v);         /* default rounding mode is to nearest even */
        return (uint16_t)(sign | (uint16_t)r);
    }
    /* normal: drop 13 mantissa bits with RNE; carry into the exponent is correct */
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
    return (uint16_t)(sign | (uint16_t)((r - 0x38000000u) >> 13));
}

static inline float round_to(float v, enum hmoe_dtype dt)
{
    if (dt == HMOE_DT_BF16) return hmoe_bf16_to_f32(hmoe_f32_to_bf16(v));
    if (dt == HMOE_DT_F16) return hmoe_f16_to_f32(f32_to_f16(v));
    return v;
}

float hmoe_nf4_absmax(const struct hmoe_nf4 *q, int64_t b)
{
    HMOE_ASSERT(b >= 0 && b < q->n_blocks);
    if (q->absmax_q) {
        /* fp32 arithmetic, as bnb: code2[q] * nested_absmax[group] + offset */
        float s;
        memcpy(&s, (const uint8_t *)q->nested_absmax + sizeof(float) * (size_t)(b / q->nested_blocksize),
               sizeof s);
        return q->nested_code[q->absmax_q[b]] * s + q->nested_offset;
    }
    float a;
    memcpy(&a, (const uint8_t *)q->absmax_f32 + sizeof(float) * (size_t)b, sizeof a);
    return a;
}

/* Dequantizes global NF4 elements [g0, g0+n) to out. */
static void nf4_read(const struct hmoe_tensor *t, int64_t g0, int64_t n, float *out)
{
    const struct hmoe_nf4 *q = t->nf4;
    const uint8_t *p = t->data;
    const int64_t bs = q->blocksize;
    int64_t g = g0, end = g0 + n;
    while (g < end) {
        int64_t b = g / bs;
        int64_t bend = (b + 1) * bs;
        if (bend > end) bend = end;
        float a = hmoe_nf4_absmax(q, b);
        float lut[16];
        for (int k = 0; k < 16; k++) lut[k] = round_to(q->code[k] * a, q->out_dtype);
        if (g & 1) {
            *out++ = lut[p[g >> 1] & 15];
            g++;
        }
        /* whole bytes: high nibble first */
        for (; g + 1 < bend; g += 2) {
            uint8_t byte = p[g >> 1];
            out[0] = lut[byte >> 4];
            out[1] = lut[byte & 15];
            out += 2;
        }
        if (g < bend) {
            *out++ = lut[p[g >> 1] >> 4];
            g++;
        }
    }
}

void hmoe_tensor_read_f32(const struct hmoe_tensor *t, int64_t i0, int64_t n, float *out)
{
    HMOE_ASSERT(i0 >= 0 && n >= 0 && i0 + n <= hmoe_tensor_numel(t));
    switch (t->dtype) {
    case HMOE_DT_F32:
        memcpy(out, (const uint8_t *)t->data + 4 * (t->elem0 + i0), (size_t)n * sizeof(float));
        break;
    case HMOE_DT_BF16: {
        const uint8_t *p = (const uint8_t *)t->data + 2 * (t->elem0 + i0);
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = hmoe_bf16_to_f32(h);
        }
        break;
    }
    case HMOE_DT_F16: {
        const uint8_t *p = (const uint8_t *)t->data + 2 * (t->elem0 + i0);
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = hmoe_f16_to_f32(h);
        }
        break;
    }
    case HMOE_DT_U8: {
        const uint8_t *p = (const uint8_t *)t->data + t->elem0 + i0;
        for (int64_t i = 0; i < n; i++) out[i] = (float)p[i];
        break;
    }
    case HMOE_DT_NF4: nf4_read(t, t->elem0 + i0, n, out); break;
    default: HMOE_ABORT("hmoe_tensor_read_f32: tensor '%s' has no data", t->name ? t->name : "?");
    }
}

static int dtype_size(enum hmoe_dtype dt)
{
    switch (dt) {
    case HMOE_DT_F32: return 4;
    case HMOE_DT_F16:
    case HMOE_DT_BF16: return 2;
    case HMOE_DT_U8: return 1;
    default: return 0;
    }
}

struct hmoe_tensor hmoe_tensor_rows(const struct hmoe_tensor *t, int64_t r0, int64_t nr)
{
    HMOE_ASSERT(t->ndim >= 1 && r0 >= 0 && nr >= 0 && r0 + nr <= t->shape[0]);
    struct hmoe_tensor v = *t;
    int64_t cols = hmoe_tensor_cols(t);
    v.shape[0] = nr;
    if (t->dtype == HMOE_DT_NF4) {
        v.elem0 = t->elem0 + r0 * cols;
        HMOE_ASSERT(v.elem0 % t->nf4->blocksize == 0);
    } else {
        /* float views keep elem0 = 0 and point data at their first element */
        int es = dtype_size(t->dtype);
        HMOE_ASSERT(es > 0);
        v.data = (const uint8_t *)t->data + (size_t)es * (size_t)(t->elem0 + r0 * cols);
        v.elem0 = 0;
    }
    return v;
}

/* Dot product with 16 independent accumulators so the compiler can vectorize it without
 * reassociation; the result is deterministic for a given n. */
static inline float dot_f32(const float *a, const float *b, int64_t n)
{
    float acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) acc[k] += a[i + k] * b[i + k];
    float s = 0.0f;
    for (; i < n; i++) s += a[i] * b[i];
    for (int k = 0; k < 16; k++) s += acc[k];
    return s;
}

/* Four rows at once: x is loaded once for four weight rows. */
static inline void dot4_f32(const float *x, const float *w0, const float *w1, const float *w2,
                            const float *w3, int64_t n, float *r)
{
    float a0[8] = {0}, a1[8] = {0}, a2[8] = {0}, a3[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int k = 0; k < 8; k++) {
            float xv = x[i + k];
            a0[k] += xv * w0[i + k];
            a1[k] += xv * w1[i + k];
            a2[k] += xv * w2[i + k];
            a3[k] += xv * w3[i + k];
        }
    }
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    for (; i < n; i++) {
        s0 += x[i] * w0[i];
        s1 += x[i] * w1[i];
        s2 += x[i] * w2[i];
        s3 += x[i] * w3[i];
    }
    for (int k = 0; k < 8; k++) {
        s0 += a0[k];
        s1 += a1[k];
        s2 += a2[k];
        s3 += a3[k];
    }
    r[0] = s0;
    r[1] = s1;
    r[2] = s2;
    r[3] = s3;
}

#define MM_ROWS 4 /* weight rows dequantized per tile */

void hmoe_matmul(const struct hmoe_tensor *w, const float *x, float *y, int n_tok)
{
    HMOE_ASSERT(w->ndim >= 1 && n_tok >= 0);
    const int64_t n_out = w->shape[0];
    const int64_t n_in = hmoe_tensor_cols(w);
    if (n_out == 0 || n_tok == 0) return;
    const int64_t n_tiles = (n_out + MM_ROWS - 1) / MM_ROWS;
    /* direct f32 rows need 4-byte alignment; anything else is dequantized into a buffer */
    const int direct = w->dtype == HMOE_DT_F32 && ((uintptr_t)w->data % sizeof(float)) == 0;
    const double work = (double)n_out * (double)n_in * (double)n_tok;
    int fail = 0;
    (void)work;
#ifdef _OPENMP
#pragma omp parallel if (work > 65536.0 && n_tiles > 1) reduction(| : fail)
#endif
    {
        float *buf = direct ? NULL : malloc((size_t)(MM_ROWS * n_in) * sizeof(float) + 64);
        if (!direct && !buf) fail = 1;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t tile = 0; tile < n_tiles; tile++) {
            if (fail) continue;
            int64_t o0 = tile * MM_ROWS;
            int nr = (int)(n_out - o0 < MM_ROWS ? n_out - o0 : MM_ROWS);
            const float *rows[MM_ROWS];
            for (int r = 0; r < nr; r++) {
                if (direct) {
                    rows[r] = (const float *)w->data + w->elem0 + (o0 + r) * n_in;
                } else {
                    hmoe_tensor_read_f32(w, (o0 + r) * n_in, n_in, buf + r * n_in);
                    rows[r] = buf + r * n_in;
                }
            }
            for (int t = 0; t < n_tok; t++) {
                const float *xt = x + (int64_t)t * n_in;
                float *yt = y + (int64_t)t * n_out + o0;
                if (nr == MM_ROWS) {
                    dot4_f32(xt, rows[0], rows[1], rows[2], rows[3], n_in, yt);
                } else {
                    for (int r = 0; r < nr; r++) yt[r] = dot_f32(xt, rows[r], n_in);
                }
            }
        }
        free(buf);
    }
    if (fail) HMOE_ABORT("hmoe_matmul: out of memory for a %lld-float row buffer", (long long)n_in);
}
