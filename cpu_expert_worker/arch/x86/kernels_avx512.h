/* kernels_avx512.h: helpers shared by the AVX-512 kernels (kernels_avx512.c, kernels_avx512bf16.c;
 * internal, include only from files compiled with AVX-512 F/BW/VL): the absmax of a segment of
 * NF4 blocks decoded with its NaN / range check, and the nested-absmax position carried from row
 * to row. */
#ifndef HMOE_KERNELS_AVX512_H
#define HMOE_KERNELS_AVX512_H

#include <immintrin.h>
#include <math.h>

#include "experts_impl.h"

#define EXK_ROW_BLOCKS 128
#ifndef EXK_PF_DIST
#define EXK_PF_DIST 8192 /* bytes prefetched ahead (best of 0, 2048, 8192 measured) */
#endif                   /* absmax values decoded ahead per segment of a row */

/* bf16 rounding of the table by Veltkamp splitting: with c = v * (2^16 + 1), hi = c - (c - v)
 * is v rounded to 8 significant bits, to nearest even, which equals round_bf16
 * (kernels_avx512.c) bit for bit for v = +-0 and every normal |v| < 2^111 (checked exhaustively
 * over all 2^32 floats); denormal or larger products are excluded by row_absmax. Three FP ops
 * that run on either vector port instead of five integer ops (one of them port 0 only). Needs
 * -ffp-contract=off. */
static inline __m512 round_bf16_split(__m512 v)
{
    const __m512 c = _mm512_mul_ps(v, _mm512_set1_ps(65537.0f));
    return _mm512_sub_ps(c, _mm512_sub_ps(c, v));
}

/* The same rounding by integer operations, for normal finite v (the fast paths' range): the
 * bits of v + 0x7fff + bit 16 of v, low half cleared, the carry of bit 16 as a masked add
 * (VPTESTMD + masked VPADDD) rather than a shift. Four operations that port 5 can run as well
 * (a shift or an FP operation is port 0 only on a Xeon with one 512-bit FMA unit), so with
 * EXK_TABLE_INT=1 the table stops competing with the FMAs for port 0 there. Same bits. */
static inline __m512 round_bf16_int(__m512 v)
{
    const __m512i u = _mm512_castps_si512(v);
    const __mmask16 odd = _mm512_test_epi32_mask(u, _mm512_set1_epi32(0x10000));
    __m512i r = _mm512_add_epi32(u, _mm512_set1_epi32(0x7fff));
    r = _mm512_mask_add_epi32(r, odd, r, _mm512_set1_epi32(1));
    return _mm512_castsi512_ps(_mm512_and_si512(r, _mm512_set1_epi32((int)0xffff0000u)));
}

#ifndef EXK_TABLE_INT
#define EXK_TABLE_INT 0 /* 1: the fast paths round the table with round_bf16_int (measure it) */
#endif
#if EXK_TABLE_INT
#define round_bf16_table round_bf16_int
#else
#define round_bf16_table round_bf16_split
#endif

/* absmax of blocks b .. b + kn - 1 into amax (16 at a time with a gather while they share one
 * nested group); *ni, *nr track the nested group of block b. Returns 1 when one is NaN, or for
 * bf16 rounding when a nonzero table value code[k] * absmax could leave [wmin, wmax). */
static inline __attribute__((always_inline)) int
row_absmax_lim(const struct exk_mat *m, int64_t b, int64_t *ni, int64_t *nr, int kn, float *amax,
               const float wmin, const float wmax)
{
    int k = 0;
    if (!m->aq) {
        memcpy(amax, m->af + b, (size_t)kn * sizeof(float));
    } else {
        const uint8_t *aq = m->aq + b;
        const __m512 noff = _mm512_set1_ps(m->noff);
        for (; k + 16 <= kn && *nr + 16 <= m->nbs; k += 16) {
            __m512i id = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(aq + k)));
            __m512 v =
                _mm512_mul_ps(_mm512_i32gather_ps(id, m->ncode, 4), _mm512_set1_ps(m->nabs[*ni]));
            _mm512_storeu_ps(amax + k, _mm512_add_ps(v, noff)); /* product rounded, then add */
            if ((*nr += 16) == m->nbs) {
                *nr = 0;
                (*ni)++;
            }
        }
        if (k < kn && kn - k < 16 && *nr + (kn - k) < m->nbs) { /* tail within the group */
            const int rem = kn - k;
            const __mmask16 mk = (__mmask16)((1u << rem) - 1);
            __m512i id = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mk, aq + k));
            __m512 v = _mm512_mul_ps(
                _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mk, id, m->ncode, 4),
                _mm512_set1_ps(m->nabs[*ni]));
            _mm512_mask_storeu_ps(amax + k, mk, _mm512_add_ps(v, noff));
            *nr += rem;
            k = kn;
        }
        for (; k < kn; k++) {
            float sc = m->ncode[aq[k]] * m->nabs[*ni];
            amax[k] = sc + m->noff;
            if (++*nr == m->nbs) {
                *nr = 0;
                (*ni)++;
            }
        }
    }
    /* NaN check, and for bf16 the range where round_bf16_split is exact: every table value
     * code[k] * a must be +-0 or normal with |v| < 2^110; rounding is monotone, so checking the
     * largest |code| * largest |a| and the smallest nonzero ones suffices */
    const __m512 zero = _mm512_setzero_ps(), inf = _mm512_set1_ps(INFINITY);
    __m512 hi = zero, lo = inf;
    __mmask16 nan = 0;
    for (k = 0; k < kn; k += 16) {
        const __mmask16 mk = kn - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (kn - k)) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(mk, amax + k), a = _mm512_abs_ps(v);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        hi = _mm512_max_ps(hi, a);
        lo = _mm512_mask_min_ps(lo, _mm512_mask_cmp_ps_mask(mk, a, zero, _CMP_NEQ_OQ), lo, a);
    }
    if (nan) return 1;
    if (m->round != EXK_R_BF16) return 0;
    const float ahi = _mm512_reduce_max_ps(hi), alo = _mm512_reduce_min_ps(lo);
    if (!(m->cmax * ahi < wmax)) return 1; /* also inf */
    return !(m->cmin == INFINITY || alo == INFINITY || m->cmin * alo >= wmin);
}

/* The range where round_bf16_split (kernels_avx512.c) is exact: +-0 and normal |v| < 2^110. */
#define EXK_F32_WMIN 0x1p-126f
#define EXK_F32_WMAX 0x1p110f
static inline int row_absmax(const struct exk_mat *m, int64_t b, int64_t *ni, int64_t *nr, int kn,
                             float *amax)
{
    return row_absmax_lim(m, b, ni, nr, kn, amax, EXK_F32_WMIN, EXK_F32_WMAX);
}

/* Nested-absmax position carried from one row to the next, so consecutive rows need no
 * division (r = the row it is valid for, -1 = none). */
struct nstate {
    int64_t r, ni, nr;
};

/* Starts block b's nested position: from the state when it is for row r, else by division. */
static inline void nstate_get(const struct exk_mat *m, const struct nstate *ns, int64_t r,
                              int64_t b, int64_t *ni, int64_t *nr)
{
    if (!m->aq) {
        *ni = *nr = 0;
    } else if (ns->r == r) {
        *ni = ns->ni;
        *nr = ns->nr;
    } else {
        *ni = (b + m->boff) / m->nbs;
        *nr = (b + m->boff) % m->nbs;
    }
}

/* The next run of a row's absmax blocks (at most EXK_ROW_BLOCKS, from block k0 of nb) into amax
 * through row_absmax_lim(wmin, wmax): its length, with b (the next block) and the nested position
 * (ni, nr) advanced; -1 when refused (ns->r = -1 then: the position carried to the next row is
 * no longer known). */
static inline __attribute__((always_inline)) int
row_run(const struct exk_mat *m, int64_t nb, int64_t k0, int64_t *b, int64_t *ni, int64_t *nr,
        float *amax, const float wmin, const float wmax, struct nstate *ns)
{
    const int kn = (int)(nb - k0 < EXK_ROW_BLOCKS ? nb - k0 : EXK_ROW_BLOCKS);
    if (row_absmax_lim(m, *b, ni, nr, kn, amax, wmin, wmax)) {
        ns->r = -1;
        return -1;
    }
    *b += kn;
    return kn;
}

/* The token dispatch of the bf16 kernels: runs of consecutive tokens split by ready(x) (the parts
 * the fast kernel needs are there and in range); fast on those, exk_rows_avx512 on the others.
 * Each token's path depends only on its own x. */
static inline void exk_token_runs(const struct exk_mat *m, int64_t r0, int64_t r1, int ntok,
                                  const struct exk_x *const *xs, float *y, int64_t ldy,
                                  int (*ready)(const struct exk_x *x), exk_rows_fn fast)
{
    for (int t = 0; t < ntok;) {
        const int good = ready(xs[t]);
        int t1 = t + 1;
        while (t1 < ntok && ready(xs[t1]) == good) t1++;
        (good ? fast : exk_rows_avx512)(m, r0, r1, t1 - t, xs + t, y + t * ldy, ldy);
        t = t1;
    }
}

#endif
