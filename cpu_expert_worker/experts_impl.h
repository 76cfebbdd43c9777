/* experts_impl.h: the prepared matrix layout and the kernel interface shared by experts.c and the
 * ISA variants in arch/x86/ (internal). A kernel computes y[t][r] = sum_c W[r, c] * x_t[c] for
 * rows [r0, r1) of one matrix and up to EXK_MAX_TOK tokens, each token's sum accumulated in a
 * fixed order that does not depend on how many tokens are passed together. */
#ifndef HMOE_EXPERTS_IMPL_H
#define HMOE_EXPERTS_IMPL_H

#include <stdint.h>
#include <string.h>

#include "hmoe/status.h"
#include "hmoe/tensor.h"

enum exk_fmt { EXK_NF4 = 0, EXK_BF16, EXK_F16, EXK_F32 };
enum exk_round { EXK_R_F32 = 0, EXK_R_BF16, EXK_R_F16 };

/* One prepared 2-D weight matrix [rows, cols], row-major. */
struct exk_mat {
    int fmt;   /* enum exk_fmt */
    int round; /* NF4: enum exk_round, the dtype a dequantized weight is rounded to */
    int64_t rows, cols;
    const void *data;  /* NF4: packed nibbles, element g in byte g/2 (even g = high nibble);
                        * else rows*cols elements of fmt */
    int64_t eoff;      /* NF4: element (row 0, col 0) is element g = eoff (0 <= eoff < bs) */
    const uint8_t *aq; /* NF4 double quant: absmax code of block g / bs, else NULL */
    const float *af;   /* NF4 plain: fp32 absmax of block g / bs, else NULL */
    const float *nabs; /* nested absmax: block b uses nabs[(b + boff) / nbs] */
    int32_t bs, nbs, boff;
    float noff;         /* nested offset */
    const float *code;  /* [16] NF4 values */
    float cmax, cmin;   /* NF4: largest |code|, smallest nonzero |code| (+inf when all are 0) */
    const float *ncode; /* [256] nested code */
};

/* One input vector in the layouts the kernels read: natural order, and split into even/odd
 * pairs for NF4 nibble pairs: e[p][j] = x[p + 2j], o[p][j] = x[p + 2j + 1] (p = parity of the
 * column where a byte-aligned run starts; p = 1 only needed when rows start on odd elements). */
struct exk_x {
    const float *nat;  /* [cols] */
    const float *e[2]; /* [(cols + 1) / 2] */
    const float *o[2];
    /* avx512bf16 only: x as EXK_BF_PARTS bf16 parts whose sum is x (3 parts: exactly), part p
     * of the even half at bf[p * cols + j] = part p of x[2j], of the odd half at
     * bf[p * cols + cols / 2 + j] = part p of x[2j + 1]; NULL = not prepared. bf_ok: x is in the
     * range where the bf16 dot products are accurate (exk_bf_x_ok); else the fp32 path runs. */
    const uint16_t *bf;
    int bf_ok;
    /* amx only: the same parts in the B-tile layout (exk_xa_pos), range verdict in bf_ok */
    const uint16_t *xa;
};

/* x split into bf16 parts for the avx512bf16 kernel: hi = bf16(x), then bf16 of what is left.
 * Three parts hold all 24 bits of a normal fp32 x. */
#ifndef EXK_BF_PARTS
#define EXK_BF_PARTS 3
#endif
/* Range where the bf16 dot products are used (else the fp32 kernels): x finite with max|x| in
 * [2^-40, 2^50] or all zero, every nonzero table value |code * absmax| in [2^-40, 2^50). So no
 * product of a weight and an x part that matters underflows (vdpbf16ps flushes denormals) and
 * no sum overflows. */
#define EXK_BF_XMIN 0x1p-40f
#define EXK_BF_XMAX 0x1p50f
#define EXK_BF_WMIN 0x1p-40f
#define EXK_BF_WMAX 0x1p50f

/* Word of part p of element e in the AMX B-tile layout of x: per 64-element block k and parity
 * (even / odd elements), a tile of 16 rows x EXK_BF_PARTS columns, row i = the pairs (part p of
 * elements 4i + par, 4i + 2 + par) of the block, p = 0 .. EXK_BF_PARTS - 1 (12 bytes a row for
 * 3 parts), matching the weights as VPERMW leaves them (even elements, then odd, of a block). */
static inline int64_t exk_xa_pos(int64_t e, int p)
{
    const int64_t k = e >> 6, j = e & 63, par = j & 1, m = j >> 1;
    return (((k * 2 + par) * 16 + (m >> 1)) * EXK_BF_PARTS + p) * 2 + (m & 1);
}

/* 1 when a vector whose largest |x| is amax (NaN when some x is not finite) may take the bf16
 * path. */
static inline int exk_bf_x_ok(float amax)
{
    return amax <= EXK_BF_XMAX && (amax >= EXK_BF_XMIN || amax == 0.0f);
}

#define EXK_MAX_TOK 16 /* tokens per kernel call */
#define EXK_REG_TOK 2  /* tokens sharing one register-decoded chunk (more spill on AVX-512) */

/* y[t * ldy + (r - r0)] = dot(row r, xs[t]) for r in [r0, r1), t < ntok <= EXK_MAX_TOK. */
typedef void (*exk_rows_fn)(const struct exk_mat *m, int64_t r0, int64_t r1, int ntok,
                            const struct exk_x *const *xs, float *y, int64_t ldy);

void exk_rows_generic(const struct exk_mat *m, int64_t r0, int64_t r1, int ntok,
                      const struct exk_x *const *xs, float *y, int64_t ldy);
#if defined(__x86_64__) && defined(HMOE_EXPERTS_X86)
void exk_rows_avx2(const struct exk_mat *m, int64_t r0, int64_t r1, int ntok,
                   const struct exk_x *const *xs, float *y, int64_t ldy);
void exk_rows_avx512(const struct exk_mat *m, int64_t r0, int64_t r1, int ntok,
                     const struct exk_x *const *xs, float *y, int64_t ldy);
/* Needs AVX-512 F/BW/VL + BF16: NF4 with bf16 rounding, rows on block boundaries, bs % 64 == 0
 * and tokens whose bf parts are ready and in range; anything else goes to exk_rows_avx512. */
void exk_rows_avx512bf16(const struct exk_mat *m, int64_t r0, int64_t r1, int ntok,
                         const struct exk_x *const *xs, float *y, int64_t ldy);
/* Writes the EXK_BF_PARTS bf16 parts of v[0..n) to out[p * ld + i]; returns max |v| (NaN when
 * some v is not finite). AVX-512 BF16. */
float exk_bf_split_avx512bf16(const float *v, int64_t n, uint16_t *out, int64_t ld);
/* AMX-BF16 kernel: the weights of 16 rows decoded to bf16 tiles, x parts as B tiles
 * (TDPBF16PS); the same fallbacks as exk_rows_avx512bf16. Built with EXK_AMX_EMULATE the tile
 * instructions are emulated in C (for testing the kernel's logic on CPUs without AMX). */
void exk_rows_amx(const struct exk_mat *m, int64_t r0, int64_t r1, int ntok,
                  const struct exk_x *const *xs, float *y, int64_t ldy);
/* 1 when this CPU and kernel let this process use AMX-TILE + AMX-BF16 (asks the kernel for the
 * tile data permission once: only when amx is asked for), or the emulation is built in. */
int exk_amx_usable(void);
/* 1 when cpuid has AMX-TILE + AMX-BF16 (or the emulation is built in); asks nothing. */
int exk_amx_cpu(void);
/* xa (exk_xa_pos layout) of cols elements from the bf layout of struct exk_x (cols % 64 == 0). */
void exk_xa_from_bf(const uint16_t *bf, int64_t cols, uint16_t *xa);
/* Checks that t is a [rows, cols] matrix of a supported dtype whose data and absmax cover it. */

enum hmoe_status exk_check_tensor(const struct hmoe_tensor *t, const char *what, int64_t rows,
                                  int64_t cols);

#endif

/* ---- scalar helpers shared with the reference ---- */

static inline uint32_t exk_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float exk_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* f32 -> bf16 -> f32, round to nearest even (torch); NaN stays NaN. */
static inline float exk_round_bf16(float f)
{
    uint32_t u = exk_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return exk_bits_f32((u | 0x00400000u) & 0xffff0000u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return exk_bits_f32(u & 0xffff0000u);
}

/* The EXK_BF_PARTS bf16 parts of v to out[p * ld] (scalar form of exk_bf_split_avx512bf16). */
static inline void exk_bf_split1(float v, uint16_t *out, int64_t ld)
{
    for (int p = 0; p < EXK_BF_PARTS; p++) {
        const float h = exk_round_bf16(v);
        out[p * ld] = (uint16_t)(exk_f32_bits(h) >> 16);
        v -= h;
    }
}

static inline float exk_bf16_to_f32(uint16_t h)
{
    return exk_bits_f32((uint32_t)h << 16);
}

float exk_f16_to_f32(uint16_t h);
uint16_t exk_f32_to_f16(float f); /* round to nearest even, overflow to inf */

static inline float exk_round_f16(float f)
{
    return exk_f16_to_f32(exk_f32_to_f16(f));
}

static inline float exk_round(int round, float f)
{
    return round == EXK_R_BF16 ? exk_round_bf16(f) : round == EXK_R_F16 ? exk_round_f16(f) : f;
}

static inline float exk_absmax(const struct exk_mat *m, int64_t b)
{
    if (m->aq) {
        float s = m->ncode[m->aq[b]] * m->nabs[(b + m->boff) / m->nbs];
        return s + m->noff;
    }
    return m->af[b];
}

/* The absmax of blocks b, b + 1, ... in order, the nested group advanced by counting instead of
 * a division per block (the same value as exk_absmax). */
struct exk_abswalk {
    int64_t b, ni, nr;
};

static inline void exk_abswalk_start(const struct exk_mat *m, int64_t b, struct exk_abswalk *w)
{
    w->b = b;
    w->ni = m->aq ? (b + m->boff) / m->nbs : 0;
    w->nr = m->aq ? (b + m->boff) % m->nbs : 0;
}

/* The absmax of block w->b; then w moves to the next block. */
static inline float exk_abswalk_next(const struct exk_mat *m, struct exk_abswalk *w)
{
    float a;
    if (m->aq) {
        float s = m->ncode[m->aq[w->b]] * m->nabs[w->ni];
        a = s + m->noff;
        if (++w->nr == m->nbs) {
            w->nr = 0;
            w->ni++;
        }
    } else {
        a = m->af[w->b];
    }
    w->b++;
    return a;
}

/* The scalar part of an NF4 run (a ragged block's head or tail): accs[t] += lut[nibble g] *
 * x_t[g - g0] for g in [g, end); lut holds the block's 16 dequantized values. */
static inline void exk_nf4_scalar(const uint8_t *q, const float *lut, int64_t g, int64_t end,
                                  int64_t g0, int nt, const struct exk_x *const *xs, float *accs)
{
    for (; g < end; g++) {
        const float w = lut[(g & 1) ? (q[g >> 1] & 15) : (q[g >> 1] >> 4)];
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++)
            accs[t] += w * xs[t]->nat[g - g0];
    }
}

/* One element of a dense (F32, F16 or BF16) matrix as f32. */
static inline float exk_load1(int fmt, const void *base, int64_t i)
{
    if (fmt == EXK_F32) return ((const float *)base)[i];
    uint16_t h = ((const uint16_t *)base)[i];
    return fmt == EXK_F16 ? exk_f16_to_f32(h) : exk_bf16_to_f32(h);
}

/* Weight of element g (NF4 global index) as the kernels see it. */
static inline float exk_nf4_weight(const struct exk_mat *m, int64_t g)
{
    const uint8_t *q = (const uint8_t *)m->data;
    int nib = (g & 1) ? (q[g >> 1] & 15) : (q[g >> 1] >> 4);
    return exk_round(m->round, m->code[nib] * exk_absmax(m, g / m->bs));
}

/* Checks that t is a [rows, cols] matrix of a supported dtype whose data and absmax cover it. */

enum hmoe_status exk_check_tensor(const struct hmoe_tensor *t, const char *what, int64_t rows,
                                  int64_t cols);

#endif
