/* AVX-512 BF16 expert kernel ("avx512bf16"), compiled with per-file flags, called after cpuid.
 * An NF4 weight is exactly bf16(code[nibble] * absmax), so per 64-weight block the 16 rounded
 * weights are built once as bf16 (VCVTNE2PS2BF16: round to nearest even, the table duplicated
 * in both halves of a zmm), 32 packed bytes are widened to words and looked up twice with VPERMW
 * (low nibble = odd elements, high nibble = even elements: 32 weights each), and VDPBF16PS
 * multiplies 32 weights by 32 bf16 x values and adds the pairs into 16 fp32 lanes. x is held as
 * EXK_BF_PARTS bf16 parts (hi = bf16(x), then what is left; three parts are x exactly), one
 * VDPBF16PS per part. Per (row, token) one chain per part (even, then odd elements of each
 * chunk), the same in every path (1 token: 4 rows at a time; 2 tokens: 2 rows; 3 or
 * more: rows decoded to bf16 once, then tiles of rows x tokens), so the results do not depend on
 * how tokens are batched. Shapes, dtypes, absmax or x outside the safe range (experts_impl.h,
 * EXK_BF_*) go to the fp32 AVX-512 kernel, row by row and token by token. */
#include <immintrin.h>
#include <math.h>

#include "experts_impl.h"
#include "kernels_avx512.h"

#define NP EXK_BF_PARTS
#define BF_RG 4                 /* rows per group for one token (two tokens: 2) */
#define BF_BUF_WORDS (4 * 8192) /* decoded bf16 rows of the batch path (64 KB) */

static _Thread_local uint16_t bbuf[BF_BUF_WORDS] __attribute__((aligned(64)));

/* The 16 weights bf16(code[k] * a) in words 0-15 and again in 16-31 (VPERMW reads 5 index bits;
 * the low byte of a widened nibble pair has the other nibble's bit 0 in bit 4). */
static inline __m512i bf_table(const __m512 code, float a)
{
    const __m512 v = _mm512_mul_ps(code, _mm512_set1_ps(a));
    return (__m512i)_mm512_cvtne2ps_pbh(v, v);
}

/* 64 weights from 32 packed bytes: *we = elements 0, 2, .., 62 (high nibbles), *wo = 1, .., 63. */
static inline __attribute__((always_inline)) void bf_decode(const uint8_t *q, __m512i lut,
                                                            __m512i *we, __m512i *wo)
{
    const __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)q));
    *wo = _mm512_permutexvar_epi16(v, lut);
    *we = _mm512_permutexvar_epi16(_mm512_srli_epi16(v, 4), lut);
}

static inline __m512 bf_dp(__m512 acc, __m512i w, __m512i x)
{
    return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)x);
}

static inline __m512i bf_ld(const uint16_t *p)
{
    return _mm512_loadu_si512((const void *)p);
}

/* The NP bf16 parts of one token's x (part p at x + p * cols) for a chunk at column j: the
 * partners of the even weights at j, of the odd ones at j + odd. */
static inline __attribute__((always_inline)) void bf_ldx(const uint16_t *x, int64_t cols, int64_t j,
                                                         int64_t odd, __m512i *xe, __m512i *xo)
{
#pragma GCC unroll 4
    for (int p = 0; p < NP; p++) {
        xe[p] = bf_ld(x + p * cols + j);
        xo[p] = bf_ld(x + p * cols + odd + j);
    }
}

/* One chain per x part of a (row, token): acc[p] += the 32 even, then the 32 odd weights of a
 * chunk times part p of x (two dependent VDPBF16PS per chain and chunk, so 4 rows keep 12
 * chains in flight). */
static inline __attribute__((always_inline)) void bf_chain(__m512 *acc, __m512i we, __m512i wo,
                                                           const __m512i *xe, const __m512i *xo)
{
#pragma GCC unroll 4
    for (int p = 0; p < NP; p++) acc[p] = bf_dp(bf_dp(acc[p], we, xe[p]), wo, xo[p]);
}

/* The chains summed from the smallest part up, then across lanes. */
static inline float bf_sum(const __m512 *acc)
{
    __m512 s = acc[NP - 1];
#pragma GCC unroll 4
    for (int p = NP - 2; p >= 0; p--) s = _mm512_add_ps(s, acc[p]);
    return _mm512_reduce_add_ps(s);
}

static inline void bf_zero(__m512 *acc)
{
#pragma GCC unroll 4
    for (int p = 0; p < NP; p++) acc[p] = _mm512_setzero_ps();
}

/* RG consecutive rows (bs == 64, RG * nb <= BF_RG * EXK_ROW_BLOCKS) x NT tokens: the absmax of
 * the RG rows as one segment, each x chunk loaded once for the RG rows. 0 = refused (NaN or out
 * of range absmax in one of the rows; nothing written). */
static inline __attribute__((always_inline)) int
bf_group_t(const struct exk_mat *m, int64_t r, const uint16_t *const *xb, float *y, int64_t ldy,
           const int RG, const int NT, struct nstate *ns)
{
    const int64_t cols = m->cols, nb = cols / 64, rowb = cols / 2;
    const uint8_t *q = (const uint8_t *)m->data + r * rowb;
    float amax[BF_RG * EXK_ROW_BLOCKS];
    int64_t ni, nr;
    nstate_get(m, ns, r, r * nb, &ni, &nr);
    if (row_absmax_lim(m, r * nb, &ni, &nr, (int)(RG * nb), amax, EXK_BF_WMIN, EXK_BF_WMAX))
        return 0; /* *ns still describes row r */
    const __m512 code = _mm512_loadu_ps(m->code);
    __m512 acc[BF_RG][2][NP];
#pragma GCC unroll 4
    for (int i = 0; i < RG; i++)
#pragma GCC unroll 2
        for (int t = 0; t < NT; t++) bf_zero(acc[i][t]);
    const char *pf = (const char *)q + EXK_PF_DIST;
    for (int64_t k = 0, j = 0; k < nb; k++, j += 32, q += 32) {
        if (EXK_PF_DIST > 0) { /* RG rows x 32 bytes consumed per block: the group's bytes */
#pragma GCC unroll 2
            for (int p = 0; p < RG / 2; p++) _mm_prefetch(pf + 64 * p, _MM_HINT_T0);
            pf += 32 * RG;
        }
        __m512i xe[2][NP], xo[2][NP];
#pragma GCC unroll 2
        for (int t = 0; t < NT; t++) bf_ldx(xb[t], cols, j, rowb, xe[t], xo[t]);
#pragma GCC unroll 4
        for (int i = 0; i < RG; i++) {
            __m512i we, wo;
            bf_decode(q + i * rowb, bf_table(code, amax[i * nb + k]), &we, &wo);
#pragma GCC unroll 2
            for (int t = 0; t < NT; t++) bf_chain(acc[i][t], we, wo, xe[t], xo[t]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < RG; i++)
#pragma GCC unroll 2
        for (int t = 0; t < NT; t++) y[t * ldy + i] = bf_sum(acc[i][t]);
    *ns = (struct nstate){r + RG, ni, nr};
    return 1;
}

/* One row (any bs % 64 == 0, absmax in segments) x NT tokens; 0 = refused, nothing written. */
static inline __attribute__((always_inline)) int bf_row_t(const struct exk_mat *m, int64_t r,
                                                          const uint16_t *const *xb, float *y,
                                                          int64_t ldy, const int NT,
                                                          struct nstate *ns)
{
    const int64_t cols = m->cols, bs = m->bs, nb = cols / bs, half = cols / 2;
    const uint8_t *q = (const uint8_t *)m->data + r * half;
    const __m512 code = _mm512_loadu_ps(m->code);
    float amax[EXK_ROW_BLOCKS];
    int64_t b = r * nb, ni, nr, j = 0;
    nstate_get(m, ns, r, b, &ni, &nr);
    __m512 acc[2][NP];
#pragma GCC unroll 2
    for (int t = 0; t < NT; t++) bf_zero(acc[t]);
    for (int64_t k0 = 0; k0 < nb; k0 += EXK_ROW_BLOCKS) {
        const int kn = row_run(m, nb, k0, &b, &ni, &nr, amax, EXK_BF_WMIN, EXK_BF_WMAX, ns);
        if (kn < 0) return 0;
        for (int k = 0; k < kn; k++) {
            const __m512i lut = bf_table(code, amax[k]);
            for (int64_t s = 0; s < bs; s += 64, q += 32, j += 32) {
                if (EXK_PF_DIST > 0) _mm_prefetch((const char *)q + EXK_PF_DIST, _MM_HINT_T0);
                __m512i we, wo;
                bf_decode(q, lut, &we, &wo);
#pragma GCC unroll 2
                for (int t = 0; t < NT; t++) {
                    __m512i xe[NP], xo[NP];
                    bf_ldx(xb[t], cols, j, half, xe, xo);
                    bf_chain(acc[t], we, wo, xe, xo);
                }
            }
        }
    }
#pragma GCC unroll 2
    for (int t = 0; t < NT; t++) y[t * ldy] = bf_sum(acc[t]);
    *ns = (struct nstate){r + 1, ni, nr};
    return 1;
}

static int bf_row(const struct exk_mat *m, int64_t r, int nt, const uint16_t *const *xb, float *y,
                  int64_t ldy, struct nstate *ns)
{
    return nt == 2 ? bf_row_t(m, r, xb, y, ldy, 2, ns) : bf_row_t(m, r, xb, y, ldy, 1, ns);
}

/* Rows [r0, r1) for 1 or 2 tokens in registers: groups of 4 rows (1 token) or 2 rows (2 tokens)
 * where bs == 64, else row by row; a row refused by the bf16 checks goes to the fp32 kernel. */
static void bf_rows_reg(const struct exk_mat *m, int64_t r0, int64_t r1, int nt,
                        const uint16_t *const *xb, const struct exk_x *const *xs, float *y,
                        int64_t ldy)
{
    const int rg = nt == 1 ? BF_RG : 2;
    const int grp = m->bs == 64 && rg * (m->cols / 64) <= BF_RG * EXK_ROW_BLOCKS;
    struct nstate ns = {-1, 0, 0};
    for (int64_t r = r0; r < r1;) {
        if (grp && r + rg <= r1 &&
            (nt == 1 ? bf_group_t(m, r, xb, y + (r - r0), ldy, BF_RG, 1, &ns)
                     : bf_group_t(m, r, xb, y + (r - r0), ldy, 2, 2, &ns))) {
            r += rg;
            continue;
        }
        /* a refused group row by row (each row's path depends on its own absmax only), or the
         * tail */
        for (const int64_t re = grp && r + rg <= r1 ? r + rg : r1; r < re; r++)
            if (!bf_row(m, r, nt, xb, y + (r - r0), ldy, &ns))
                exk_rows_avx512(m, r, r + 1, nt, xs, y + (r - r0), ldy);
    }
}

/* ---- batch path: rows decoded to bf16 once (buf: per 64 weights 32 even, then 32 odd), then
 * dotted with R rows x T tokens in registers, the chains and order of the register paths. */

static int bf_decode_row(const struct exk_mat *m, int64_t r, uint16_t *buf, struct nstate *ns)
{
    const int64_t cols = m->cols, bs = m->bs, nb = cols / bs;
    const uint8_t *q = (const uint8_t *)m->data + r * (cols / 2);
    const __m512 code = _mm512_loadu_ps(m->code);
    float amax[EXK_ROW_BLOCKS];
    int64_t b = r * nb, ni, nr;
    nstate_get(m, ns, r, b, &ni, &nr);
    for (int64_t k0 = 0; k0 < nb; k0 += EXK_ROW_BLOCKS) {
        const int kn = row_run(m, nb, k0, &b, &ni, &nr, amax, EXK_BF_WMIN, EXK_BF_WMAX, ns);
        if (kn < 0) return 0;
        for (int k = 0; k < kn; k++) {
            const __m512i lut = bf_table(code, amax[k]);
            for (int64_t s = 0; s < bs; s += 64, q += 32, buf += 64) {
                __m512i we, wo;
                bf_decode(q, lut, &we, &wo);
                _mm512_store_si512((void *)buf, we);
                _mm512_store_si512((void *)(buf + 32), wo);
            }
        }
    }
    *ns = (struct nstate){r + 1, ni, nr};
    return 1;
}

static inline __attribute__((always_inline)) void bf_tile_t(const uint16_t *buf, int64_t cols,
                                                            const int R, const int T,
                                                            const uint16_t *const *xb, float *y,
                                                            int64_t ldy)
{
    const int64_t half = cols / 2;
    __m512 acc[2][3][NP];
#pragma GCC unroll 2
    for (int i = 0; i < R; i++)
#pragma GCC unroll 3
        for (int t = 0; t < T; t++) bf_zero(acc[i][t]);
    for (int64_t j = 0; j < half; j += 32, buf += 64) {
        __m512i we[2], wo[2];
#pragma GCC unroll 2
        for (int i = 0; i < R; i++) {
            we[i] = bf_ld(buf + i * cols);
            wo[i] = bf_ld(buf + i * cols + 32);
        }
#pragma GCC unroll 3
        for (int t = 0; t < T; t++) {
            __m512i xe[NP], xo[NP];
            bf_ldx(xb[t], cols, j, half, xe, xo);
#pragma GCC unroll 2
            for (int i = 0; i < R; i++) bf_chain(acc[i][t], we[i], wo[i], xe, xo);
        }
    }
#pragma GCC unroll 2
    for (int i = 0; i < R; i++)
#pragma GCC unroll 3
        for (int t = 0; t < T; t++) y[t * ldy + i] = bf_sum(acc[i][t]);
}

/* R (1 or 2) decoded rows x all ntok tokens, 3 at a time (then 2 / 1). */
static void bf_tiles(const uint16_t *buf, int64_t cols, int R, int ntok, const uint16_t *const *xb,
                     float *y, int64_t ldy)
{
    for (int t = 0; t < ntok;) {
        const int n = ntok - t >= 3 ? 3 : ntok - t;
        const uint16_t *const *x = xb + t;
        float *yt = y + t * ldy;
        if (R == 2)
            n == 3 ? bf_tile_t(buf, cols, 2, 3, x, yt, ldy)
            : n == 2 ? bf_tile_t(buf, cols, 2, 2, x, yt, ldy)
                     : bf_tile_t(buf, cols, 2, 1, x, yt, ldy);
        else
            n == 3 ? bf_tile_t(buf, cols, 1, 3, x, yt, ldy)
            : n == 2 ? bf_tile_t(buf, cols, 1, 2, x, yt, ldy)
                     : bf_tile_t(buf, cols, 1, 1, x, yt, ldy);
        t += n;
    }
}

/* 3 or more tokens: groups of up to 4 rows decoded into bbuf, then pairs of decoded rows x all
 * tokens; a row refused by the checks goes to the fp32 kernel for all tokens. */
static void bf_rows_batch(const struct exk_mat *m, int64_t r0, int64_t r1, int ntok,
                          const uint16_t *const *xb, const struct exk_x *const *xs, float *y,
                          int64_t ldy)
{
    const int64_t cols = m->cols;
    const int g = (int)(BF_BUF_WORDS / cols < 4 ? BF_BUF_WORDS / cols : 4);
    struct nstate ns = {-1, 0, 0};
    for (int64_t r = r0; r < r1;) {
        const int n = r1 - r < g ? (int)(r1 - r) : g;
        int ok[4], i = 0;
        for (i = 0; i < n; i++) {
            ok[i] = bf_decode_row(m, r + i, bbuf + i * cols, &ns);
            if (!ok[i]) exk_rows_avx512(m, r + i, r + i + 1, ntok, xs, y + (r + i - r0), ldy);
        }
        for (i = 0; i < n;) {
            if (!ok[i]) {
                i++;
                continue;
            }
            const int R = i + 1 < n && ok[i + 1] ? 2 : 1;
            bf_tiles(bbuf + i * cols, cols, R, ntok, xb, y + (r + i - r0), ldy);
            i += R;
        }
        r += n;
    }
}

/* Tokens whose bf16 parts are all ready: the batch path for 3 or more (when a row fits the
 * buffer), else pairs of tokens in registers. Same bits either way. */
static void bf_rows(const struct exk_mat *m, int64_t r0, int64_t r1, int ntok,
                    const struct exk_x *const *xs, float *y, int64_t ldy)
{
    const uint16_t *xb[EXK_MAX_TOK];
    for (int t = 0; t < ntok; t++) xb[t] = xs[t]->bf;
    if (ntok >= 3 && m->cols <= BF_BUF_WORDS) {
        bf_rows_batch(m, r0, r1, ntok, xb, xs, y, ldy);
        return;
    }
    for (int t = 0; t < ntok; t += 2)
        bf_rows_reg(m, r0, r1, ntok - t >= 2 ? 2 : 1, xb + t, xs + t, y + t * ldy, ldy);
}

static int bf_ready(const struct exk_x *x)
{
    return x->bf && x->bf_ok;
}

void exk_rows_avx512bf16(const struct exk_mat *m, int64_t r0, int64_t r1, int ntok,
                         const struct exk_x *const *xs, float *y, int64_t ldy)
{
    const int fast = m->fmt == EXK_NF4 && m->round == EXK_R_BF16 && m->eoff == 0 &&
                     m->bs % 64 == 0 && m->cols % m->bs == 0;
    if (!fast) {
        exk_rows_avx512(m, r0, r1, ntok, xs, y, ldy);
        return;
    }
    exk_token_runs(m, r0, r1, ntok, xs, y, ldy, bf_ready, bf_rows);
}

float exk_bf_split_avx512bf16(const float *v, int64_t n, uint16_t *out, int64_t ld)
{
    __m512 mx = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 mk = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 x = _mm512_maskz_loadu_ps(mk, v + i);
        bad |= _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
        mx = _mm512_max_ps(mx, _mm512_abs_ps(x));
#pragma GCC unroll 4
        for (int p = 0; p < NP; p++) {
            const __m256i h = (__m256i)_mm512_cvtneps_pbh(x);
            _mm256_mask_storeu_epi16(out + p * ld + i, mk, h);
            x = _mm512_sub_ps(x, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
        }
    }
    return bad ? NAN : _mm512_reduce_max_ps(mx);
}
