/* AVX-512 (F/BW/VL) expert kernel, compiled with per-file flags and called only after cpuid.
 * NF4: per block the 16 rounded weights code[k] * absmax sit in one zmm (bf16 rounding by
 * Veltkamp splitting where that is exact, see round_bf16_split); 16 packed bytes (32 weights)
 * are widened to dwords and looked up twice with VPERMPS (low nibble = odd element, high
 * nibble >> 4 = even element) and FMA'd against x split into even/odd halves, so nothing is
 * shuffled back. One token: four rows at a time (shared x loads, one absmax segment). Up to 4
 * tokens share each decoded chunk. Ragged blocks fall back to scalar. Needs -ffp-contract=off
 * (the rounding steps must not be fused into FMAs; the tests catch it if they are). */
#include <immintrin.h>
#include <math.h>

#include "experts_impl.h"
#include "kernels_avx512.h"

static inline __m512 round_bf16(__m512 v)
{
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    r = _mm512_and_si512(r, _mm512_set1_epi32((int)0xffff0000u));
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    __m512i qn = _mm512_and_si512(_mm512_or_si512(u, _mm512_set1_epi32(0x00400000)),
                                  _mm512_set1_epi32((int)0xffff0000u));
    return _mm512_castsi512_ps(_mm512_mask_blend_epi32(nan, r, qn));
}

static inline __m512 round_vec(int round, __m512 v)
{
    if (round == EXK_R_BF16) return round_bf16(v);
    if (round == EXK_R_F16)
        return _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    return v;
}

static inline float reduce4(const __m512 *a)
{
    __m512 s = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
    return _mm512_reduce_add_ps(s);
}

/* acc[t][a] += wh * xe[t][j..], acc[t][a + 1] += wl * xo[t][j..] for each token. */
static inline __attribute__((always_inline)) void fma_pair(__m512 acc[][4], const int a,
                                                           const int nt, __m512 wh, __m512 wl,
                                                           const float *const *xe,
                                                           const float *const *xo, int64_t j)
{
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) {
        acc[t][a] = _mm512_fmadd_ps(wh, _mm512_loadu_ps(xe[t] + j), acc[t][a]);
        acc[t][a + 1] = _mm512_fmadd_ps(wl, _mm512_loadu_ps(xo[t] + j), acc[t][a + 1]);
    }
}

static inline __attribute__((always_inline)) void
fma1(__m512 acc[][4], const int a, const int nt, __m512 w, const struct exk_x *const *xs, int64_t c)
{
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++)
        acc[t][a] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xs[t]->nat + c), acc[t][a]);
}

static inline __attribute__((always_inline)) void nf4_row(const struct exk_mat *m, int64_t r,
                                                          const int nt,
                                                          const struct exk_x *const *xs, float *y,
                                                          int64_t ldy)
{
    const uint8_t *q = (const uint8_t *)m->data;
    const int64_t cols = m->cols, bs = m->bs, g0 = m->eoff + r * cols, g1 = g0 + cols;
    const int p = (int)(g0 & 1);
    const __m512 code = _mm512_loadu_ps(m->code);
    __m512 acc[EXK_REG_TOK][4]; /* 4 chains per token: even/odd chunk x high/low nibble */
    float accs[EXK_REG_TOK];
    const float *xe[EXK_REG_TOK], *xo[EXK_REG_TOK];
    int ch = 0; /* chunk counter, picks the chain pair */
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) {
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) acc[t][i] = _mm512_setzero_ps();
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
        const __m512 lut = round_vec(m->round, _mm512_mul_ps(code, _mm512_set1_ps(a)));
        if ((g & 1) || ((end - g) & 31)) { /* ragged block: scalar head and tail */
            float ls[16];
            _mm512_storeu_ps(ls, lut);
            if (g & 1) { /* the odd element that starts the block */
                exk_nf4_scalar(q, ls, g, g + 1, g0, nt, xs, accs);
                g++;
            }
            int64_t vend = g + ((end - g) & ~(int64_t)31);
            for (; g < vend; g += 32) {
                const int64_t j = (g - g0 - p) >> 1;
                __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + (g >> 1))));
                __m512 wl = _mm512_permutexvar_ps(v, lut);
                __m512 wh = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut);
                if (ch++ & 1)
                    fma_pair(acc, 2, nt, wh, wl, xe, xo, j);
                else
                    fma_pair(acc, 0, nt, wh, wl, xe, xo, j);
            }
            exk_nf4_scalar(q, ls, g, end, g0, nt, xs, accs);
            g = end;
            continue;
        }
        for (; g < end; g += 32) {
            const int64_t j = (g - g0 - p) >> 1;
            __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + (g >> 1))));
            __m512 wl = _mm512_permutexvar_ps(v, lut);
            __m512 wh = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut);
            if (ch++ & 1)
                fma_pair(acc, 2, nt, wh, wl, xe, xo, j);
            else
                fma_pair(acc, 0, nt, wh, wl, xe, xo, j);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) y[t * ldy] = reduce4(acc[t]) + accs[t];
}





/* Fast path: the row starts on a block boundary, cols % bs == 0, bs % 64 == 0. The absmax of a
 * segment of blocks is decoded first (scalar, NaN-checked), then each block is one LUT build
 * and bs / 32 chunks with no ragged handling. Same per-token accumulation order as nf4_row.
 * Returns 0 when a NaN absmax needs the careful path. */
/* round and nch64 (1 when bs == 64: one chunk pair per block) are compile-time constants at
 * each call site, so the block loop has no branches and no division. */
static inline __attribute__((always_inline)) int
nf4_row_aligned_t(const struct exk_mat *m, int64_t r, const int nt, const struct exk_x *const *xs,
                  float *y, int64_t ldy, const int round, const int nch64, struct nstate *ns)
{
    const int64_t cols = m->cols, bs = nch64 ? 64 : m->bs, g0 = m->eoff + r * cols, nb = cols / bs;
    const int nch = nch64 ? 2 : (int)(bs / 32);
    const uint8_t *q = (const uint8_t *)m->data + (g0 >> 1);
    const __m512 code = _mm512_loadu_ps(m->code);
    __m512 acc[EXK_REG_TOK][4];
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++)
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) acc[t][i] = _mm512_setzero_ps();
    const float *xe[EXK_REG_TOK], *xo[EXK_REG_TOK];
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) {
        xe[t] = xs[t]->e[0];
        xo[t] = xs[t]->o[0];
    }
    float amax[EXK_ROW_BLOCKS];
    int64_t b = g0 / bs, ni, nr;
    nstate_get(m, ns, r, b, &ni, &nr);
    int64_t j = 0; /* offset in the even/odd halves of x */
    for (int64_t k0 = 0; k0 < nb; k0 += EXK_ROW_BLOCKS) {
        const int kn = row_run(m, nb, k0, &b, &ni, &nr, amax, EXK_F32_WMIN, EXK_F32_WMAX, ns);
        if (kn < 0) return 0;
        for (int k = 0; k < kn; k++) {
            /* software prefetch a few rows ahead: the rows of a task are contiguous */
            if (EXK_PF_DIST > 0) _mm_prefetch((const char *)q + EXK_PF_DIST, _MM_HINT_T0);
            __m512 lut = _mm512_mul_ps(code, _mm512_set1_ps(amax[k]));
            if (round == EXK_R_BF16)
                lut = round_bf16_table(lut);
            else if (round == EXK_R_F16)
                lut = round_vec(EXK_R_F16, lut);
            for (int c = 0; c < nch; c += 2, q += 32, j += 32) { /* chunk pairs: chains 0-1, 2-3 */
                __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)q));
                fma_pair(acc, 0, nt, _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut),
                         _mm512_permutexvar_ps(v, lut), xe, xo, j);
                v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + 16)));
                fma_pair(acc, 2, nt, _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut),
                         _mm512_permutexvar_ps(v, lut), xe, xo, j + 16);
            }
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) y[t * ldy] = reduce4(acc[t]) + 0.0f;
    *ns = (struct nstate){r + 1, ni, nr};
    return 1;
}

static inline __attribute__((always_inline)) int
nf4_row_aligned(const struct exk_mat *m, int64_t r, const int nt, const struct exk_x *const *xs,
                float *y, int64_t ldy, struct nstate *ns)
{
    if (m->bs == 64) {
        switch (m->round) {
        case EXK_R_BF16: return nf4_row_aligned_t(m, r, nt, xs, y, ldy, EXK_R_BF16, 1, ns);
        case EXK_R_F16: return nf4_row_aligned_t(m, r, nt, xs, y, ldy, EXK_R_F16, 1, ns);
        default: return nf4_row_aligned_t(m, r, nt, xs, y, ldy, EXK_R_F32, 1, ns);
        }
    }
    switch (m->round) {
    case EXK_R_BF16: return nf4_row_aligned_t(m, r, nt, xs, y, ldy, EXK_R_BF16, 0, ns);
    case EXK_R_F16: return nf4_row_aligned_t(m, r, nt, xs, y, ldy, EXK_R_F16, 0, ns);
    default: return nf4_row_aligned_t(m, r, nt, xs, y, ldy, EXK_R_F32, 0, ns);
    }
}

/* RG consecutive rows x NT tokens at once (RG * NT <= 4; bs == 64, rows start on block
 * boundaries): the rows are one contiguous run of blocks, so their absmax is decoded in one
 * segment and each x chunk is loaded once for the RG rows; each (row, token) keeps its own four
 * chains in the order of nf4_row_aligned_t, so the results are those of the one-row path bit for
 * bit. Amortises the per-row work (absmax decode, loop setup, reduction latency) that dominated
 * short rows (down: 8 blocks a row). Returns 0 (nothing written) when an absmax is NaN or out of
 * the fast rounding's range: the caller takes the one-row paths. */
#define EXK_RG 4 /* rows per group for one token (two tokens: 2) */
static inline __attribute__((always_inline)) int
nf4_rowsg_t(const struct exk_mat *m, int64_t r, const struct exk_x *const *xs, float *y,
            int64_t ldy, const int round, const int RG, const int NT, struct nstate *ns)
{
    const int64_t cols = m->cols, nb = cols / 64, g0 = r * cols, rowb = cols / 2;
    const uint8_t *q = (const uint8_t *)m->data + (g0 >> 1);
    const __m512 code = _mm512_loadu_ps(m->code);
    const float *xe[2], *xo[2];
#pragma GCC unroll 2
    for (int t = 0; t < NT; t++) {
        xe[t] = xs[t]->e[0];
        xo[t] = xs[t]->o[0];
    }
    float amax[EXK_RG * EXK_ROW_BLOCKS];
    int64_t ni, nr;
    nstate_get(m, ns, r, g0 / 64, &ni, &nr);
    const struct nstate ns0 = *ns;
    if (row_absmax(m, g0 / 64, &ni, &nr, (int)(RG * nb), amax)) {
        *ns = ns0;
        return 0;
    }
    __m512 acc[EXK_RG][2][4];
#pragma GCC unroll 4
    for (int i = 0; i < RG; i++)
#pragma GCC unroll 2
        for (int t = 0; t < NT; t++)
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) acc[i][t][c] = _mm512_setzero_ps();
    const char *pf = (const char *)q + EXK_PF_DIST;
    for (int64_t k = 0, j = 0; k < nb; k++, j += 32, q += 32) {
        if (EXK_PF_DIST > 0) { /* RG rows x 32 bytes consumed per block */
#pragma GCC unroll 2
            for (int p = 0; p < RG / 2; p++) _mm_prefetch(pf + 64 * p, _MM_HINT_T0);
            pf += 32 * RG;
        }
        __m512 x0[2], x1[2], x2[2], x3[2];
#pragma GCC unroll 2
        for (int t = 0; t < NT; t++) {
            x0[t] = _mm512_loadu_ps(xe[t] + j);
            x1[t] = _mm512_loadu_ps(xo[t] + j);
            x2[t] = _mm512_loadu_ps(xe[t] + j + 16);
            x3[t] = _mm512_loadu_ps(xo[t] + j + 16);
        }
#pragma GCC unroll 4
        for (int i = 0; i < RG; i++) {
            __m512 lut = _mm512_mul_ps(code, _mm512_set1_ps(amax[i * nb + k]));
            if (round == EXK_R_BF16)
                lut = round_bf16_table(lut);
            else if (round == EXK_R_F16)
                lut = round_vec(EXK_R_F16, lut);
            const uint8_t *qi = q + i * rowb;
            __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)qi));
            __m512 wh = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut);
            __m512 wl = _mm512_permutexvar_ps(v, lut);
#pragma GCC unroll 2
            for (int t = 0; t < NT; t++) {
                acc[i][t][0] = _mm512_fmadd_ps(wh, x0[t], acc[i][t][0]);
                acc[i][t][1] = _mm512_fmadd_ps(wl, x1[t], acc[i][t][1]);
            }
            v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(qi + 16)));
            wh = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut);
            wl = _mm512_permutexvar_ps(v, lut);
#pragma GCC unroll 2
            for (int t = 0; t < NT; t++) {
                acc[i][t][2] = _mm512_fmadd_ps(wh, x2[t], acc[i][t][2]);
                acc[i][t][3] = _mm512_fmadd_ps(wl, x3[t], acc[i][t][3]);
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < RG; i++)
#pragma GCC unroll 2
        for (int t = 0; t < NT; t++) y[t * ldy + i] = reduce4(acc[i][t]) + 0.0f;
    *ns = (struct nstate){r + RG, ni, nr};
    return 1;
}

/* Rows [r, r + RG) for NT tokens (RG = 4 for one token, 2 for two); 0 = not done. */
static inline int nf4_rowsg(const struct exk_mat *m, int64_t r, int nt,
                            const struct exk_x *const *xs, float *y, int64_t ldy,
                            struct nstate *ns)
{
    if (nt == 1) {
        switch (m->round) {
        case EXK_R_BF16: return nf4_rowsg_t(m, r, xs, y, ldy, EXK_R_BF16, 4, 1, ns);
        case EXK_R_F16: return nf4_rowsg_t(m, r, xs, y, ldy, EXK_R_F16, 4, 1, ns);
        default: return nf4_rowsg_t(m, r, xs, y, ldy, EXK_R_F32, 4, 1, ns);
        }
    }
    switch (m->round) {
    case EXK_R_BF16: return nf4_rowsg_t(m, r, xs, y, ldy, EXK_R_BF16, 2, 2, ns);
    case EXK_R_F16: return nf4_rowsg_t(m, r, xs, y, ldy, EXK_R_F16, 2, 2, ns);
    default: return nf4_rowsg_t(m, r, xs, y, ldy, EXK_R_F32, 2, 2, ns);
    }
}

static inline __m512 load16(int fmt, const void *base, int64_t i)
{
    if (fmt == EXK_F32) return _mm512_loadu_ps((const float *)base + i);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)base + i));
    if (fmt == EXK_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

static inline __attribute__((always_inline)) void dense_row(const struct exk_mat *m, int64_t r,
                                                            const int nt,
                                                            const struct exk_x *const *xs, float *y,
                                                            int64_t ldy)
{
    const int64_t cols = m->cols, base = r * cols, vend = cols & ~(int64_t)15;
    __m512 acc[EXK_REG_TOK][4];
    float accs[EXK_REG_TOK];
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) {
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) acc[t][i] = _mm512_setzero_ps();
        accs[t] = 0.0f;
    }
    for (int64_t c = 0; c < vend; c += 16) {
        __m512 w = load16(m->fmt, m->data, base + c);
        switch ((c >> 4) & 3) { /* 4 chains, compile-time register indices */
        case 0: fma1(acc, 0, nt, w, xs, c); break;
        case 1: fma1(acc, 1, nt, w, xs, c); break;
        case 2: fma1(acc, 2, nt, w, xs, c); break;
        default: fma1(acc, 3, nt, w, xs, c); break;
        }
    }
    for (int64_t c = vend; c < cols; c++) {
        float w = exk_load1(m->fmt, m->data, base + c);
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) accs[t] += w * xs[t]->nat[c];
    }
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) y[t * ldy] = reduce4(acc[t]) + accs[t];
}

/* ---- batch path: decode a row once into fp32 (L1), then dot it with up to 4 tokens at a time,
 * with the chains and order of nf4_row_aligned so batch and single-token results are equal. */

#define EXK_BUF_COLS 16384
static _Thread_local float wbuf[EXK_BUF_COLS] __attribute__((aligned(64)));

/* buf[32 c .. 32 c + 15] = high-nibble (even) weights of chunk c, [+16 .. +31] = low (odd).
 * Returns 0 when a NaN absmax needs the careful path. */
/* Decodes nb blocks of bs weights at q with absmax amax[0..nb) into buf (layout above). */
static inline void decode_blocks(const struct exk_mat *m, const uint8_t *q, const float *amax,
                                 int64_t nb, float *buf)
{
    const int nch = (int)(m->bs / 32);
    const __m512 code = _mm512_loadu_ps(m->code);
    for (int64_t k = 0; k < nb; k++) {
        __m512 lut = _mm512_mul_ps(code, _mm512_set1_ps(amax[k]));
        if (m->round == EXK_R_BF16)
            lut = round_bf16_table(lut);
        else if (m->round == EXK_R_F16)
            lut = round_vec(EXK_R_F16, lut);
        for (int c = 0; c < nch; c++, q += 16, buf += 32) {
            __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)q));
            _mm512_store_ps(buf, _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut));
            _mm512_store_ps(buf + 16, _mm512_permutexvar_ps(v, lut));
        }
    }
}

static int decode_row_aligned(const struct exk_mat *m, int64_t r, float *buf, struct nstate *ns)
{
    const int64_t cols = m->cols, bs = m->bs, g0 = m->eoff + r * cols, nb = cols / bs;
    const uint8_t *q = (const uint8_t *)m->data + (g0 >> 1);
    float amax[EXK_ROW_BLOCKS];
    int64_t b = g0 / bs, ni, nr;
    nstate_get(m, ns, r, b, &ni, &nr);
    for (int64_t k0 = 0; k0 < nb; k0 += EXK_ROW_BLOCKS) {
        const int kn = row_run(m, nb, k0, &b, &ni, &nr, amax, EXK_F32_WMIN, EXK_F32_WMAX, ns);
        if (kn < 0) return 0;
        decode_blocks(m, q, amax, kn, buf);
        q += kn * bs / 2;
        buf += kn * bs;
    }
    *ns = (struct nstate){r + 1, ni, nr};
    return 1;
}

static inline __attribute__((always_inline)) void dot_buf(const float *buf, int64_t cols,
                                                          const int nt,
                                                          const struct exk_x *const *xs, float *y,
                                                          int64_t ldy)
{
    __m512 acc[4][4];
    const float *xe[4], *xo[4];
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) {
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) acc[t][i] = _mm512_setzero_ps();
        xe[t] = xs[t]->e[0];
        xo[t] = xs[t]->o[0];
    }
    for (int64_t j = 0; j < cols / 2; j += 32, buf += 64) { /* two chunks: chains 0-1, 2-3 */
        __m512 w0 = _mm512_load_ps(buf), w1 = _mm512_load_ps(buf + 16);
        __m512 w2 = _mm512_load_ps(buf + 32), w3 = _mm512_load_ps(buf + 48);
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) {
            acc[t][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xe[t] + j), acc[t][0]);
            acc[t][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xo[t] + j), acc[t][1]);
            acc[t][2] = _mm512_fmadd_ps(w2, _mm512_loadu_ps(xe[t] + j + 16), acc[t][2]);
            acc[t][3] = _mm512_fmadd_ps(w3, _mm512_loadu_ps(xo[t] + j + 16), acc[t][3]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) y[t * ldy] = reduce4(acc[t]) + 0.0f;
}

/* Rows (R of them, decoded at buf + i * cols) x T tokens in registers: the chains and order of
 * dot_buf for each (row, token), so the same bits; per 64 weights 4R + 4T loads for 4RT FMAs
 * (dot_buf: 4 + 4T for 4T), and x is read once per R rows. */
static inline __attribute__((always_inline)) void dot_tile(const float *buf, int64_t cols,
                                                           const int R, const int T,
                                                           const struct exk_x *const *xs,
                                                           float *y, int64_t ldy)
{
    __m512 acc[3][3][4];
    const float *xe[3], *xo[3];
#pragma GCC unroll 3
    for (int t = 0; t < T; t++) {
        xe[t] = xs[t]->e[0];
        xo[t] = xs[t]->o[0];
#pragma GCC unroll 3
        for (int i = 0; i < R; i++)
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) acc[i][t][c] = _mm512_setzero_ps();
    }
    for (int64_t j = 0; j < cols / 2; j += 32, buf += 64) {
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) { /* chunk c / 2, even (c = 0, 2) or odd (1, 3) half */
            const int64_t o = j + (c >> 1) * 16;
            __m512 x[3], w[3];
#pragma GCC unroll 3
            for (int t = 0; t < T; t++) x[t] = _mm512_loadu_ps((c & 1 ? xo[t] : xe[t]) + o);
#pragma GCC unroll 3
            for (int i = 0; i < R; i++) w[i] = _mm512_load_ps(buf + i * cols + c * 16);
#pragma GCC unroll 3
            for (int i = 0; i < R; i++)
#pragma GCC unroll 3
                for (int t = 0; t < T; t++) acc[i][t][c] = _mm512_fmadd_ps(w[i], x[t], acc[i][t][c]);
        }
    }
#pragma GCC unroll 3
    for (int i = 0; i < R; i++)
#pragma GCC unroll 3
        for (int t = 0; t < T; t++) y[t * ldy + i] = reduce4(acc[i][t]) + 0.0f;
}

/* Register path for tokens in groups of EXK_REG_TOK. */
/* One row for nt (1 or 2) tokens by the one-row paths. */
static inline __attribute__((always_inline)) void one_row(const struct exk_mat *m, int64_t r,
                                                          const int nt,
                                                          const struct exk_x *const *xs, float *y,
                                                          int64_t ldy, int aligned,
                                                          struct nstate *ns)
{
    if (aligned && nf4_row_aligned(m, r, nt, xs, y, ldy, ns)) return;
    if (m->fmt == EXK_NF4)
        nf4_row(m, r, nt, xs, y, ldy);
    else
        dense_row(m, r, nt, xs, y, ldy);
}

static void rows_reg(const struct exk_mat *m, int64_t r0, int64_t r1, int ntok,
                     const struct exk_x *const *xs, float *y, int64_t ldy, int aligned)
{
    /* groups of rows while they fit one absmax segment */
    const int grp = aligned && m->bs == 64 && m->cols / 64 <= EXK_ROW_BLOCKS;
    for (int t0 = 0; t0 < ntok; t0 += EXK_REG_TOK, xs += EXK_REG_TOK, y += EXK_REG_TOK * ldy) {
        struct nstate ns = {-1, 0, 0};
        const int nt = ntok - t0 >= 2 ? 2 : 1, rg = nt == 1 ? EXK_RG : 2;
        for (int64_t r = r0; r < r1;) {
            if (grp && r + rg <= r1 && nf4_rowsg(m, r, nt, xs, y + (r - r0), ldy, &ns)) {
                r += rg;
                continue;
            }
            /* one row at a time: a group refused (NaN / range), or the tail */
            const int64_t re = grp && r + rg <= r1 ? r + rg : r1;
            for (; r < re; r++) {
                if (nt == 2)
                    one_row(m, r, 2, xs, y + (r - r0), ldy, aligned, &ns);
                else
                    one_row(m, r, 1, xs, y + (r - r0), ldy, aligned, &ns);
            }
        }
    }
}

/* Dots the decoded row in wbuf with all ntok tokens, 4 at a time. */
static void dot_all(const struct exk_mat *m, int ntok, const struct exk_x *const *xs, float *yr,
                    int64_t ldy)
{
    for (int t = 0; t < ntok; t += 4) {
        switch (ntok - t) {
        case 1: dot_buf(wbuf, m->cols, 1, xs + t, yr + t * ldy, ldy); break;
        case 2: dot_buf(wbuf, m->cols, 2, xs + t, yr + t * ldy, ldy); break;
        case 3: dot_buf(wbuf, m->cols, 3, xs + t, yr + t * ldy, ldy); break;
        default: dot_buf(wbuf, m->cols, 4, xs + t, yr + t * ldy, ldy); break;
        }
    }
}

void exk_rows_avx512(const struct exk_mat *m, int64_t r0, int64_t r1, int ntok,
                     const struct exk_x *const *xs, float *y, int64_t ldy)
{
    const int nf4 = m->fmt == EXK_NF4;
    const int aligned = nf4 && m->eoff == 0 && m->cols % m->bs == 0 && m->bs % 64 == 0;
    if (!aligned || ntok < 3 || m->cols > EXK_BUF_COLS) {
        rows_reg(m, r0, r1, ntok, xs, y, ldy, aligned);
        return;
    }
    struct nstate ns = {-1, 0, 0};
    const int64_t nb = m->cols / m->bs;
    /* four decoded rows fit wbuf; 4 tokens stay one row at a time (measured faster: 8 KB of
     * decoded row + 4 x fit L1, 32 KB of rows + 4 x do not) */
    const int tiled = EXK_RG * m->cols <= EXK_BUF_COLS && ntok != 4;
    const int seg = EXK_RG * nb <= EXK_ROW_BLOCKS; /* absmax of four rows as one segment */
    float amax[EXK_RG * EXK_ROW_BLOCKS];
    for (int64_t r = r0; r < r1;) {
        const int grp = seg && r + EXK_RG <= r1;
        int64_t ni = 0, nr = 0;
        if (grp) nstate_get(m, &ns, r, r * nb, &ni, &nr);
        if (grp && !row_absmax(m, r * nb, &ni, &nr, (int)(EXK_RG * nb), amax)) {
            const uint8_t *q = (const uint8_t *)m->data + r * (m->cols / 2);
            if (tiled) { /* decode the four rows, then rows 0-1 and 2-3 x 3 tokens at a time */
                for (int i = 0; i < EXK_RG; i++, q += m->cols / 2)
                    decode_blocks(m, q, amax + i * nb, nb, wbuf + i * m->cols);
                for (int i = 0; i < EXK_RG; i += 2) {
                    const float *wb = wbuf + i * m->cols;
                    float *yr = y + (r + i - r0);
                    int t = 0;
                    for (; ntok - t >= 3 && ntok - t != 4; t += 3)
                        dot_tile(wb, m->cols, 2, 3, xs + t, yr + t * ldy, ldy);
                    for (; t < ntok; t += 2) /* 2 or 4 left (ntok >= 3): tiles of 2 */
                        dot_tile(wb, m->cols, 2, 2, xs + t, yr + t * ldy, ldy);
                }
            } else {
                for (int i = 0; i < EXK_RG; i++, q += m->cols / 2) {
                    decode_blocks(m, q, amax + i * nb, nb, wbuf);
                    dot_all(m, ntok, xs, y + (r + i - r0), ldy);
                }
            }
            ns = (struct nstate){r + EXK_RG, ni, nr};
            r += EXK_RG;
            continue;
        }
        /* one row at a time: a group refused (NaN / range), or the tail */
        for (const int64_t re = grp ? r + EXK_RG : r1; r < re; r++) {
            float *yr = y + (r - r0);
            if (!decode_row_aligned(m, r, wbuf, &ns)) {
                rows_reg(m, r, r + 1, ntok, xs, yr, ldy, 0);
                continue;
            }
            dot_all(m, ntok, xs, yr, ldy);
        }
    }
}
