/* AMX expert kernel ("amx"), compiled with per-file flags, used only after cpuid and the kernel's
 * permission for the tile data. NF4 weights are exactly bf16(code[nibble] * absmax): per
 * 64-weight block and row the bf16 table (Veltkamp rounding, high halves packed by VPERMW) and
 * two VPERMW lookups give the 32 even and 32 odd weights (as in kernels_avx512bf16.c), stored as
 * one row of an "even" and an "odd" A tile (16 rows x 32 bf16). x is held as EXK_BF_PARTS bf16
 * parts in B tiles (16 pairs x parts, exk_xa_pos), so TDPBF16PS computes 16 rows x 3 parts for
 * 32 weights of each row: C_even += A_even B_even, C_odd += A_odd B_odd per block, then each
 * row's output is the sum of its parts (smallest first) of C_even + C_odd. Groups of 16 rows
 * (absolute multiples of 16); 1 token: decode and tile products interleaved, one block apart
 * (A tiles double-buffered); more tokens: the group decoded once into a buffer, then each
 * token's products from it (the same tile operations per token, so the same bits). Rows outside
 * whole groups, groups with an absmax out of range, other shapes and tokens out of range go to
 * exk_rows_avx512. EXK_AMX_EMULATE: tile operations in C (testing without AMX). */
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "experts_impl.h"
#include "kernels_avx512.h"

#define NP EXK_BF_PARTS
#define AMX_BIG_COLS 4096 /* multi-token path: the group's decoded rows fit the buffer */
#ifndef EXK_AMX_GROUPED
#define EXK_AMX_GROUPED 0 /* 1: one token also decodes the whole group first (for measuring) */
#endif

struct amx_cfg {
    uint8_t palette, start_row, rsvd[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* Tiles: 0 = C even, 1 = C odd (16 x NP fp32), 2-3 and 4-5 = A even / odd (16 x 32 bf16, two
 * buffers), 6 = B even, 7 = B odd (16 pairs x NP). */
static void amx_cfg_fill(struct amx_cfg *c)
{
    memset(c, 0, sizeof *c);
    c->palette = 1;
    for (int t = 0; t < 8; t++) {
        c->rows[t] = 16;
        c->colsb[t] = t >= 2 && t < 6 ? 64 : 4 * NP;
    }
}

#ifdef EXK_AMX_EMULATE
/* ---- C emulation of the tile operations used here (SDM pseudo-code; fp32 products of bf16
 * are exact, each addition rounds to nearest even) ---- */
static _Thread_local struct {
    int rows, colsb;
    uint8_t d[16][64];
} emu_t[8];

static void emu_loadconfig(const struct amx_cfg *c)
{
    for (int t = 0; t < 8; t++) {
        emu_t[t].rows = c->rows[t];
        emu_t[t].colsb = c->colsb[t];
    }
}

static void emu_zero(int t)
{
    memset(emu_t[t].d, 0, sizeof emu_t[t].d);
}

static void emu_load(int t, const void *p, int64_t stride)
{
    for (int r = 0; r < emu_t[t].rows; r++)
        memcpy(emu_t[t].d[r], (const uint8_t *)p + r * stride, (size_t)emu_t[t].colsb);
}

static void emu_store(int t, void *p, int64_t stride)
{
    for (int r = 0; r < emu_t[t].rows; r++)
        memcpy((uint8_t *)p + r * stride, emu_t[t].d[r], (size_t)emu_t[t].colsb);
}

static float emu_bf(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return exk_bf16_to_f32(h);
}

static void emu_dp(int c, int a, int b)
{
    for (int m = 0; m < emu_t[c].rows; m++)
        for (int k = 0; k < emu_t[a].colsb / 4; k++)
            for (int n = 0; n < emu_t[c].colsb / 4; n++) {
                float acc;
                memcpy(&acc, emu_t[c].d[m] + 4 * n, 4);
                acc += emu_bf(emu_t[a].d[m] + 4 * k) * emu_bf(emu_t[b].d[k] + 4 * n);
                acc += emu_bf(emu_t[a].d[m] + 4 * k + 2) * emu_bf(emu_t[b].d[k] + 4 * n + 2);
                memcpy(emu_t[c].d[m] + 4 * n, &acc, 4);
            }
}

#define T_CFG(c) emu_loadconfig(c)
#define T_ZERO(t) emu_zero(t)
#define T_LOAD(t, p, s) emu_load(t, p, s)
#define T_STORE(t, p, s) emu_store(t, p, s)
#define T_DP(c, a, b) emu_dp(c, a, b)
#else
#define T_CFG(c) _tile_loadconfig(c)
#define T_ZERO(t) _tile_zero(t)
#define T_LOAD(t, p, s) _tile_loadd(t, p, s)
#define T_STORE(t, p, s) _tile_stored(t, p, s)
#define T_DP(c, a, b) _tile_dpbf16ps(c, a, b)
#endif

#ifndef EXK_AMX_EMULATE
/* cpuid.(7,0).edx: AMX-BF16 (bit 22) and AMX-TILE (bit 24) */
static int amx_cpuid(void)
{
    unsigned a, b, c, d;
    __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    return ((d >> 22) & 1) && ((d >> 24) & 1);
}
#endif

int exk_amx_cpu(void)
{
#ifdef EXK_AMX_EMULATE
    return 1;
#else
    return amx_cpuid();
#endif
}

int exk_amx_usable(void)
{
#ifdef EXK_AMX_EMULATE
    return 1;
#else
    static int state = -1; /* -1 unknown; the answer does not change, a race only asks twice */
    int s = __atomic_load_n(&state, __ATOMIC_RELAXED);
    if (s >= 0) return s;
    /* then ARCH_REQ_XCOMP_PERM for XTILEDATA */
    s = amx_cpuid() && syscall(SYS_arch_prctl, 0x1023, 18) == 0;
    __atomic_store_n(&state, s, __ATOMIC_RELAXED);
    return s;
#endif
}

void exk_xa_from_bf(const uint16_t *bf, int64_t cols, uint16_t *xa)
{
    const int64_t half = cols / 2;
    for (int p = 0; p < NP; p++)
        for (int par = 0; par < 2; par++) {
            const uint32_t *src = (const uint32_t *)(const void *)(bf + p * cols + par * half);
            for (int64_t k = 0; k < cols / 64; k++) { /* 16 pairs of the block, 4 bytes each */
                uint32_t *dst = (uint32_t *)(void *)(xa + ((k * 2 + par) * 16 * NP + p) * 2);
                for (int i = 0; i < 16; i++) dst[i * NP] = src[k * 16 + i];
            }
        }
}

/* The 16 weights bf16(code[k] * a) as words 0-15 and again 16-31: Veltkamp rounding leaves
 * exact bf16 values in fp32 (low halves zero), VPERMW gathers the high halves. */
static inline __m512i amx_table(const __m512 code, float a)
{
    const __m512i hi = _mm512_set_epi16(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1,
                                        31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    const __m512 v = round_bf16_split(_mm512_mul_ps(code, _mm512_set1_ps(a)));
    return _mm512_permutexvar_epi16(hi, _mm512_castps_si512(v));
}

/* Block k of the 16 rows at q (row stride rowb bytes) into the A tiles' memory: ae / ao row i =
 * the 32 even / odd weights of row i (elements 0, 2, .., 62 / 1, .., 63 of the block). */
static inline __attribute__((always_inline)) void amx_decode16(const uint8_t *q, int64_t rowb,
                                                               const float *amax, int64_t nb,
                                                               int64_t k, __m512 code,
                                                               uint16_t *ae, uint16_t *ao)
{
#pragma GCC unroll 4
    for (int i = 0; i < 16; i++) {
        const __m512i lut = amx_table(code, amax[i * nb + k]);
        const __m512i v =
            _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(q + i * rowb + 32 * k)));
        _mm512_store_si512((void *)(ao + 32 * i), _mm512_permutexvar_epi16(v, lut));
        _mm512_store_si512((void *)(ae + 32 * i),
                           _mm512_permutexvar_epi16(_mm512_srli_epi16(v, 4), lut));
    }
}

/* y[i * ... ] of the group from the C tiles: sum of the parts, smallest first, of even + odd */
static inline void amx_out(float *y, int64_t ldy_row)
{
    float ce[16][NP], co[16][NP];
    T_STORE(0, ce, NP * 4);
    T_STORE(1, co, NP * 4);
    for (int i = 0; i < 16; i++) {
        float s = ce[i][NP - 1] + co[i][NP - 1];
        for (int p = NP - 2; p >= 0; p--) s += ce[i][p] + co[i][p];
        y[i * ldy_row] = s;
    }
}

static _Thread_local uint16_t abuf[2][2][16 * 32] __attribute__((aligned(64)));
static _Thread_local int amx_configured;
static _Thread_local uint16_t gbuf[AMX_BIG_COLS / 64][2][16 * 32] __attribute__((aligned(64)));

/* Absmax of rows [r, r + 16) (nb blocks each) with the range check; 0 = refused. */
static int amx_absmax(const struct exk_mat *m, int64_t r, int64_t nb, float *amax,
                      struct nstate *ns)
{
    int64_t ni, nr;
    nstate_get(m, ns, r, r * nb, &ni, &nr);
    if (row_absmax_lim(m, r * nb, &ni, &nr, (int)(16 * nb), amax, EXK_BF_WMIN, EXK_BF_WMAX)) {
        ns->r = -1;
        return 0;
    }
    *ns = (struct nstate){r + 16, ni, nr};
    return 1;
}

/* One token, rows [r, r + 16): block k + 1 is decoded before block k's two tile products, so
 * a block's vector stores have a block's work to reach the cache before its tile loads. */
static void amx_group1(const struct exk_mat *m, int64_t r, const float *amax, const uint16_t *xa)
{
    const int64_t cols = m->cols, nb = cols / 64, rowb = cols / 2;
    const uint8_t *q = (const uint8_t *)m->data + r * rowb;
    const __m512 code = _mm512_loadu_ps(m->code);
    const char *pf = (const char *)q + EXK_PF_DIST;
    T_ZERO(0);
    T_ZERO(1);
    amx_decode16(q, rowb, amax, nb, 0, code, abuf[0][0], abuf[0][1]);
    for (int64_t k = 0; k < nb; k++, pf += 32 * 16) {
        const int s = (int)(k & 1);
        if (EXK_PF_DIST > 0) /* 16 rows x 32 bytes consumed per block: the group's bytes */
            for (int i = 0; i < 8; i++) _mm_prefetch(pf + 64 * i, _MM_HINT_T0);
        if (k + 1 < nb)
            amx_decode16(q, rowb, amax, nb, k + 1, code, abuf[s ^ 1][0], abuf[s ^ 1][1]);
        T_LOAD(6, xa + (k * 2) * 16 * NP * 2, NP * 4);
        T_LOAD(7, xa + (k * 2 + 1) * 16 * NP * 2, NP * 4);
        if (s == 0) {
            T_LOAD(2, abuf[0][0], 64);
            T_LOAD(3, abuf[0][1], 64);
            T_DP(0, 2, 6);
            T_DP(1, 3, 7);
        } else {
            T_LOAD(4, abuf[1][0], 64);
            T_LOAD(5, abuf[1][1], 64);
            T_DP(0, 4, 6);
            T_DP(1, 5, 7);
        }
    }
}

/* Tile products of one token over a group decoded into gbuf (same sequence as amx_group1). */
static void amx_products(int64_t nb, const uint16_t *xa)
{
    T_ZERO(0);
    T_ZERO(1);
    for (int64_t k = 0; k < nb; k++) {
        T_LOAD(6, xa + (k * 2) * 16 * NP * 2, NP * 4);
        T_LOAD(7, xa + (k * 2 + 1) * 16 * NP * 2, NP * 4);
        if ((k & 1) == 0) {
            T_LOAD(2, gbuf[k][0], 64);
            T_LOAD(3, gbuf[k][1], 64);
            T_DP(0, 2, 6);
            T_DP(1, 3, 7);
        } else {
            T_LOAD(4, gbuf[k][0], 64);
            T_LOAD(5, gbuf[k][1], 64);
            T_DP(0, 4, 6);
            T_DP(1, 5, 7);
        }
    }
}

/* Tokens whose xa parts are ready and in range. */
static void amx_rows(const struct exk_mat *m, int64_t r0, int64_t r1, int ntok,
                     const struct exk_x *const *xs, float *y, int64_t ldy)
{
    const int64_t cols = m->cols, nb = cols / 64;
    const int64_t g0 = (r0 + 15) & ~(int64_t)15, g1 = r1 & ~(int64_t)15; /* whole groups */
    if (g1 <= g0) {
        exk_rows_avx512(m, r0, r1, ntok, xs, y, ldy);
        return;
    }
    if (g0 > r0) exk_rows_avx512(m, r0, g0, ntok, xs, y, ldy);
    if (r1 > g1) exk_rows_avx512(m, g1, r1, ntok, xs, y + (g1 - r0), ldy);
    if (!amx_configured) { /* once per thread: the configuration never changes (no release) */
        struct amx_cfg cfg;
        amx_cfg_fill(&cfg);
        T_CFG(&cfg);
        amx_configured = 1;
    }
    float amax[16 * EXK_ROW_BLOCKS];
    struct nstate ns = {-1, 0, 0};
    const int batch = (ntok > 1 || EXK_AMX_GROUPED) && cols <= AMX_BIG_COLS;
    for (int64_t r = g0; r < g1; r += 16) {
        float *yr = y + (r - r0);
        if (!amx_absmax(m, r, nb, amax, &ns)) {
            exk_rows_avx512(m, r, r + 16, ntok, xs, yr, ldy);
            continue;
        }
        if (!batch) {
            for (int t = 0; t < ntok; t++) {
                amx_group1(m, r, amax, xs[t]->xa);
                amx_out(yr + t * ldy, 1);
            }
            continue;
        }
        const uint8_t *q = (const uint8_t *)m->data + r * (cols / 2);
        const __m512 code = _mm512_loadu_ps(m->code);
        for (int64_t k = 0; k < nb; k++)
            amx_decode16(q, cols / 2, amax, nb, k, code, gbuf[k][0], gbuf[k][1]);
        for (int t = 0; t < ntok; t++) {
            amx_products(nb, xs[t]->xa);
            amx_out(yr + t * ldy, 1);
        }
    }
}

static int amx_ready(const struct exk_x *x)
{
    return x->xa && x->bf_ok;
}

void exk_rows_amx(const struct exk_mat *m, int64_t r0, int64_t r1, int ntok,
                  const struct exk_x *const *xs, float *y, int64_t ldy)
{
    const int fast = m->fmt == EXK_NF4 && m->round == EXK_R_BF16 && m->eoff == 0 &&
                     m->bs == 64 && m->cols % 64 == 0 && m->cols / 64 <= EXK_ROW_BLOCKS;
    if (!fast) {
        exk_rows_avx512(m, r0, r1, ntok, xs, y, ldy);
        return;
    }
    exk_token_runs(m, r0, r1, ntok, xs, y, ldy, amx_ready, amx_rows);
}
