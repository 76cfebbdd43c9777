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

/* f32 -> nearest bf16 (ties to even) -> f32, inline for the per-block NF4 tables */
static inline float bf16_round(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return bits_f32((u | 0x00400000u) & 0xffff0000u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return bits_f32(u & 0xffff0000u);
}

static inline float round_to(float v, enum hmoe_dtype dt)
{
    if (dt == HMOE_DT_BF16) return bf16_round(v);
    if (dt == HMOE_DT_F16) return hmoe_f16_to_f32(f32_to_f16(v));
    return v;
}

/* The hot loops use GCC vector extensions (8 float lanes; two SSE registers on baseline x86-64)
 * with an AVX2 clone picked at load time. Lane i always sums elements i, i+8, ...: every clone
 * gives bit-identical results (no FMA contraction in ISO C mode). */
#pragma GCC diagnostic ignored "-Wpsabi" /* static helpers only: no ABI is exposed */
typedef float v8f __attribute__((vector_size(32)));
typedef uint16_t v8u16 __attribute__((vector_size(16)));
typedef uint32_t v8u32 __attribute__((vector_size(32)));
typedef int32_t v8i32 __attribute__((vector_size(32)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&                             \
    !defined(__SANITIZE_ADDRESS__)
#define HMOE_CLONES __attribute__((target_clones("avx2", "default")))
#define HMOE_X86_AVX2 1
#else
#define HMOE_CLONES
#endif

static inline v8f load8(const float *p)
{
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline float hsum8(v8f v)
{
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

/* bf16 row -> f32 (n elements from byte pointer p, any alignment). */
HMOE_CLONES static void bf16_row(const uint8_t *p, int64_t n, float *out)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8u16 h;
        memcpy(&h, p + 2 * i, sizeof h);
        v8u32 u = __builtin_convertvector(h, v8u32) << 16;
        memcpy(out + i, &u, sizeof u);
    }
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        out[i] = hmoe_bf16_to_f32(h);
    }
}

static inline float dot_tail(const float *a, const float *b, int64_t i, int64_t n)
{
    float s = 0.0f;
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

HMOE_CLONES static float dot_f32(const float *a, const float *b, int64_t n)
{
    v8f acc = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        acc += load8(a + i) * load8(b + i);
    return hsum8(acc) + dot_tail(a, b, i, n);
}

/* Four weight rows at once: x is loaded once for the four rows. */
HMOE_CLONES static void dot4_f32(const float *x, const float *w0, const float *w1, const float *w2,
                                 const float *w3, int64_t n, float *r)
{
    v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f xv = load8(x + i);
        a0 += xv * load8(w0 + i);
        a1 += xv * load8(w1 + i);
        a2 += xv * load8(w2 + i);
        a3 += xv * load8(w3 + i);
    }
    r[0] = hsum8(a0) + dot_tail(x, w0, i, n);
    r[1] = hsum8(a1) + dot_tail(x, w1, i, n);
    r[2] = hsum8(a2) + dot_tail(x, w2, i, n);
    r[3] = hsum8(a3) + dot_tail(x, w3, i, n);
}

float hmoe_nf4_absmax(const struct hmoe_nf4 *q, int64_t b)
{
    HMOE_ASSERT(b >= 0 && b < q->n_blocks);
    if (q->absmax_q) {
        /* fp32 arithmetic, as bnb: code2[q] * nested_absmax[group] + offset */
        float s;
        memcpy(&s,
               (const uint8_t *)q->nested_absmax +
                   sizeof(float) * (size_t)(b / q->nested_blocksize),
               sizeof s);
        return q->nested_code[q->absmax_q[b]] * s + q->nested_offset;
    }
    float a;
    memcpy(&a, (const uint8_t *)q->absmax_f32 + sizeof(float) * (size_t)b, sizeof a);
    return a;
}

/* nbytes packed NF4 bytes -> 2*nbytes values through the 16-entry table lut (byte j gives
 * out[2j] = lut[hi nibble], out[2j+1] = lut[lo nibble]). */
static void nf4_bytes_scalar(const uint8_t *p, int64_t nbytes, const float *lut, float *out)
{
    for (int64_t i = 0; i < nbytes; i++) {
        out[2 * i] = lut[p[i] >> 4];
        out[2 * i + 1] = lut[p[i] & 15];
    }
}

#ifdef HMOE_X86_AVX2
/* AVX2: 8 values per 4 bytes with a two-register table lookup (vpermps + blend). */
__attribute__((target("avx2"))) static void nf4_bytes_avx2(const uint8_t *p, int64_t nbytes,
                                                           const float *lut, float *out)
{
    v8f lo, hi;
    memcpy(&lo, lut, sizeof lo);
    memcpy(&hi, lut + 8, sizeof hi);
    const v8u32 sh = {4, 0, 12, 8, 20, 16, 28, 24}; /* little-endian word: byte 0 in bits 0-7 */
    int64_t i = 0;
    for (; i + 4 <= nbytes; i += 4) {
        uint32_t w;
        memcpy(&w, p + i, 4);
        v8u32 idx = ((v8u32){0} + w) >> sh & 15u;
        v8f v = __builtin_shuffle(lo, hi, (v8i32)idx);
        memcpy(out + 2 * i, &v, sizeof v);
    }
    nf4_bytes_scalar(p + i, nbytes - i, lut, out + 2 * i);
}
#endif

static void nf4_bytes(const uint8_t *p, int64_t nbytes, const float *lut, float *out)
{
#ifdef HMOE_X86_AVX2
    static int have_avx2 = -1; /* benign race: every thread computes the same value */
    if (have_avx2 < 0) have_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    if (have_avx2) {
        nf4_bytes_avx2(p, nbytes, lut, out);
        return;
    }
#endif
    nf4_bytes_scalar(p, nbytes, lut, out);
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
        if (q->out_dtype == HMOE_DT_BF16)
            for (int k = 0; k < 16; k++)
                lut[k] = bf16_round(q->code[k] * a);
        else
            for (int k = 0; k < 16; k++)
                lut[k] = round_to(q->code[k] * a, q->out_dtype);
        if (g & 1) {
            *out++ = lut[p[g >> 1] & 15];
            g++;
        }
        /* whole bytes: high nibble first */
        int64_t nb = (bend - g) / 2;
        nf4_bytes(p + (g >> 1), nb, lut, out);
        out += 2 * nb;
        g += 2 * nb;
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
    case HMOE_DT_BF16: bf16_row((const uint8_t *)t->data + 2 * (t->elem0 + i0), n, out); break;
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
        for (int64_t i = 0; i < n; i++)
            out[i] = (float)p[i];
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

#define MM_ROWS 4 /* weight rows dequantized per tile */
#define MM_MACS_PER_THREAD 1048576.0

void hmoe_matmul(const struct hmoe_tensor *w, const float *x, float *y, int n_tok)
{
    HMOE_ASSERT(w->ndim >= 1 && n_tok >= 0);
    const int64_t n_out = w->shape[0];
    const int64_t n_in = hmoe_tensor_cols(w);
    if (n_out == 0 || n_tok == 0) return;
    const int64_t n_tiles = (n_out + MM_ROWS - 1) / MM_ROWS;
    /* direct f32 rows need 4-byte alignment; anything else is dequantized into a buffer */
    const int direct = w->dtype == HMOE_DT_F32 && ((uintptr_t)w->data % sizeof(float)) == 0;
    int fail = 0;
#ifdef _OPENMP
    /* One thread per ~1M multiply-adds (>= ~0.1 ms of work each): small products stay serial,
     * so the per-region barrier cost never dominates (it does badly on oversubscribed hosts). */
    const double work = (double)n_out * (double)n_in * (double)n_tok;
    int nt = omp_get_max_threads();
    if ((double)nt > work / MM_MACS_PER_THREAD) nt = (int)(work / MM_MACS_PER_THREAD);
    if (nt > n_tiles) nt = (int)n_tiles;
    if (nt < 1) nt = 1;
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(| : fail)
#endif
    {
        float *buf = direct ? NULL : malloc((size_t)(MM_ROWS * n_in) * sizeof(float) + 64);
        if (!direct && !buf) fail = 1;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 8) /* a descheduled thread does not stall the rest */
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
                    for (int r = 0; r < nr; r++)
                        yt[r] = dot_f32(xt, rows[r], n_in);
                }
            }
        }
        free(buf);
    }
    if (fail) HMOE_ABORT("hmoe_matmul: out of memory for a %lld-float row buffer", (long long)n_in);
}
