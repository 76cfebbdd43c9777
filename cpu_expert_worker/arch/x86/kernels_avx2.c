/* AVX2 + FMA + F16C expert kernel, compiled with per-file flags and called only after cpuid.
 * NF4: per block the 16 rounded weights code[k] * absmax sit in two ymm (entries 0-7, 8-15);
 * 8 packed bytes (16 weights) are widened to dwords, looked up in both halves with VPERMPS and
 * blended on bit 3 of the nibble (low nibble = odd element, high nibble = even element), then
 * FMA'd against x split into even/odd halves. Up to 4 tokens share each decoded chunk. bf16
 * rounding of the table by Veltkamp splitting where exact (needs -ffp-contract=off). */
#include <immintrin.h>
#include <math.h>

#include "experts_impl.h"

static inline __m256 round_bf16(__m256 v)
{
    __m256i u = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
    r = _mm256_and_si256(r, _mm256_set1_epi32((int)0xffff0000u));
    __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    __m256i qn = _mm256_and_si256(_mm256_or_si256(u, _mm256_set1_epi32(0x00400000)),
                                  _mm256_set1_epi32((int)0xffff0000u));
    return _mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(qn), nan);
}

static inline __m256 round_vec(int round, __m256 v)
{
    if (round == EXK_R_BF16) return round_bf16(v);
    if (round == EXK_R_F16)
        return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    return v;
}

/* bf16 rounding by Veltkamp splitting, exact for +-0 and normal |v| < 2^111 (see
 * kernels_avx512.c); split_ok says whether every code[k] * a is in that range. */
static inline __m256 round_bf16_split(__m256 v)
{
    const __m256 c = _mm256_mul_ps(v, _mm256_set1_ps(65537.0f));
    return _mm256_sub_ps(c, _mm256_sub_ps(c, v));
}

static inline int split_ok(const struct exk_mat *m, float a)
{
    const float fa = fabsf(a);
    if (!(m->cmax * fa < 0x1p110f)) return 0; /* also NaN / inf */
    return fa == 0.0f || m->cmin == INFINITY || m->cmin * fa >= 0x1p-126f;
}

static inline float reduce8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 16 weights of 8 packed bytes: even elements (high nibbles) and odd ones (low nibbles). */
static inline void decode8(const uint8_t *q, __m256 lo, __m256 hi, __m256 *we, __m256 *wo)
{
    __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)q));
    __m256i vh = _mm256_srli_epi32(v, 4);
    *wo = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, v), _mm256_permutevar8x32_ps(hi, v),
                           _mm256_castsi256_ps(_mm256_slli_epi32(v, 28)));
    *we = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, vh), _mm256_permutevar8x32_ps(hi, vh),
                           _mm256_castsi256_ps(_mm256_slli_epi32(v, 24)));
}

static inline float reduce4x8(const __m256 *a)
{
    return reduce8(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
}

/* 32 weights of 16 packed bytes against the even/odd halves of x at j, chains 0-3. */
static inline __attribute__((always_inline)) void chunk32(__m256 acc[][4], const int nt,
                                                          const uint8_t *q, __m256 lut_lo,
                                                          __m256 lut_hi, const float *const *xe,
                                                          const float *const *xo, int64_t j)
{
    __m256 we, wo;
    decode8(q, lut_lo, lut_hi, &we, &wo);
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) {
        acc[t][0] = _mm256_fmadd_ps(we, _mm256_loadu_ps(xe[t] + j), acc[t][0]);
        acc[t][1] = _mm256_fmadd_ps(wo, _mm256_loadu_ps(xo[t] + j), acc[t][1]);
    }
    decode8(q + 8, lut_lo, lut_hi, &we, &wo);
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) {
        acc[t][2] = _mm256_fmadd_ps(we, _mm256_loadu_ps(xe[t] + j + 8), acc[t][2]);
        acc[t][3] = _mm256_fmadd_ps(wo, _mm256_loadu_ps(xo[t] + j + 8), acc[t][3]);
    }
}

static inline __attribute__((always_inline)) void
fma1(__m256 acc[][4], const int a, const int nt, __m256 w, const struct exk_x *const *xs, int64_t c)
{
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++)
        acc[t][a] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xs[t]->nat + c), acc[t][a]);
}

static inline __attribute__((always_inline)) void nf4_row(const struct exk_mat *m, int64_t r,
                                                          const int nt,
                                                          const struct exk_x *const *xs, float *y,
                                                          int64_t ldy)
{
    const uint8_t *q = (const uint8_t *)m->data;
    const int64_t cols = m->cols, bs = m->bs, g0 = m->eoff + r * cols, g1 = g0 + cols;
    const int p = (int)(g0 & 1);
    const __m256 code_lo = _mm256_loadu_ps(m->code), code_hi = _mm256_loadu_ps(m->code + 8);
    __m256 acc[EXK_REG_TOK][4]; /* 4 chains per token: half x high/low nibble */
    float accs[EXK_REG_TOK];
    const float *xe[EXK_REG_TOK], *xo[EXK_REG_TOK];
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) {
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) acc[t][i] = _mm256_setzero_ps();
        accs[t] = 0.0f;
        xe[t] = xs[t]->e[p];
        xo[t] = xs[t]->o[p];
    }
    int64_t be = (g0 / bs + 1) * bs;
    struct exk_abswalk aw;
    exk_abswalk_start(m, g0 / bs, &aw);
    for (int64_t g = g0; g < g1; be += bs) {
        const float a = exk_abswalk_next(m, &aw);
        const int64_t end = be < g1 ? be : g1;
        const __m256 av = _mm256_set1_ps(a);
        __m256 lut_lo = _mm256_mul_ps(code_lo, av), lut_hi = _mm256_mul_ps(code_hi, av);
        if (m->round == EXK_R_BF16 && split_ok(m, a)) {
            lut_lo = round_bf16_split(lut_lo);
            lut_hi = round_bf16_split(lut_hi);
        } else {
            lut_lo = round_vec(m->round, lut_lo);
            lut_hi = round_vec(m->round, lut_hi);
        }
        if ((g & 1) || ((end - g) & 31)) { /* ragged block: scalar head and tail */
            float ls[16];
            _mm256_storeu_ps(ls, lut_lo);
            _mm256_storeu_ps(ls + 8, lut_hi);
            if (g & 1) { /* the odd element that starts the block */
                exk_nf4_scalar(q, ls, g, g + 1, g0, nt, xs, accs);
                g++;
            }
            int64_t vend = g + ((end - g) & ~(int64_t)31);
            for (; g < vend; g += 32) {
                const int64_t j = (g - g0 - p) >> 1;
                chunk32(acc, nt, q + (g >> 1), lut_lo, lut_hi, xe, xo, j);
            }
            exk_nf4_scalar(q, ls, g, end, g0, nt, xs, accs);
            g = end;
            continue;
        }
        for (; g < end; g += 32) {
            const int64_t j = (g - g0 - p) >> 1;
            chunk32(acc, nt, q + (g >> 1), lut_lo, lut_hi, xe, xo, j);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) y[t * ldy] = reduce4x8(acc[t]) + accs[t];
}

static inline __m256 load8(int fmt, const void *base, int64_t i)
{
    if (fmt == EXK_F32) return _mm256_loadu_ps((const float *)base + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)base + i));
    if (fmt == EXK_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static inline __attribute__((always_inline)) void dense_row(const struct exk_mat *m, int64_t r,
                                                            const int nt,
                                                            const struct exk_x *const *xs, float *y,
                                                            int64_t ldy)
{
    const int64_t cols = m->cols, base = r * cols, vend = cols & ~(int64_t)7;
    __m256 acc[EXK_REG_TOK][4]; /* 4 chains per token: half x high/low nibble */
    float accs[EXK_REG_TOK];
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) {
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) acc[t][i] = _mm256_setzero_ps();
        accs[t] = 0.0f;
    }
    for (int64_t c = 0; c < vend; c += 8) {
        __m256 w = load8(m->fmt, m->data, base + c);
        if ((c >> 3) & 1)
            fma1(acc, 1, nt, w, xs, c);
        else
            fma1(acc, 0, nt, w, xs, c);
    }
    for (int64_t c = vend; c < cols; c++) {
        float w = exk_load1(m->fmt, m->data, base + c);
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) accs[t] += w * xs[t]->nat[c];
    }
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) y[t * ldy] = reduce4x8(acc[t]) + accs[t];
}

#define EXK_ROWS_NT(NT)                                                                            \
    for (int64_t r = r0; r < r1; r++) {                                                            \
        if (nf4)                                                                                   \
            nf4_row(m, r, NT, xs, y + (r - r0), ldy);                                              \
        else                                                                                       \
            dense_row(m, r, NT, xs, y + (r - r0), ldy);                                            \
    }

void exk_rows_avx2(const struct exk_mat *m, int64_t r0, int64_t r1, int ntok,
                   const struct exk_x *const *xs, float *y, int64_t ldy)
{
    const int nf4 = m->fmt == EXK_NF4;
    for (int t0 = 0; t0 < ntok; t0 += EXK_REG_TOK, xs += EXK_REG_TOK, y += EXK_REG_TOK * ldy) {
        if (ntok - t0 >= 2) {
            EXK_ROWS_NT(2)
        } else {
            EXK_ROWS_NT(1)
        }
    }
}
