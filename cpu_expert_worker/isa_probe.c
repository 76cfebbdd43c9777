/* hmoe-isa-probe: throughput of the vector instructions the NF4 expert kernels are built from,
 * on the machine at hand, so kernel designs can be judged before they are written (issue 6).
 * Prints the core clock estimated from the FMA latency (4 cycles on Intel since Skylake-X and
 * on Zen 4/5), then cycles per instruction with 12 independent chains for VFMADD231PS,
 * VDPBF16PS, VPERMPS, VPERMW, VCVTNE2PS2BF16, VPMOVZXBD (from memory), FMAs interleaved with
 * VPERMPS (how many 512-bit FMA ports, without the clock), and, where the CPU and the
 * kernel allow AMX, cycles per TDPBF16PS on 4 independent accumulator tiles (16x16 and 16x3
 * fp32 outputs) and on one (latency). x86-64 only; each part runs only when cpuid has its features.
 *   hmoe-isa-probe */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "hmoe/clock.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#define N_IT 4000000L
static volatile float sink;

#define CHAINS12(OP) OP(a0) OP(a1) OP(a2) OP(a3) OP(a4) OP(a5) OP(a6) OP(a7) OP(a8) OP(a9) OP(a10) OP(a11)
#define DECL12(T, init) T a0 = init, a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, \
    a8 = a0, a9 = a0, a10 = a0, a11 = a0;
#define KEEP(a) __asm__ volatile("" : "+v"(a));
#define SUM12(f) f(a0) + f(a1) + f(a2) + f(a3) + f(a4) + f(a5) + f(a6) + f(a7) + f(a8) + f(a9) + \
    f(a10) + f(a11)

/* one step of an FMA chain (b, c in scope) and of a VPERMPS chain (tab in scope) */
#define F(a) a = _mm512_fmadd_ps(a, b, c); KEEP(a)
#define P(a) a = _mm512_permutexvar_ps(_mm512_castps_si512(a), tab); KEEP(a)

__attribute__((target("avx512f"))) static float lane0(__m512 v)
{
    return _mm512_cvtss_f32(v);
}

__attribute__((target("avx512f"))) static float lane0i(__m512i v)
{
    return (float)_mm_cvtsi128_si32(_mm512_castsi512_si128(v));
}

/* ns per dependent FMA (one chain) */
__attribute__((target("avx512f"), noinline)) static double fma_lat(void)
{
    __m512 a = _mm512_set1_ps(1.0f), b = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-3f);
    double t = hmoe_clock_s();
    for (long i = 0; i < N_IT; i++) {
        a = _mm512_fmadd_ps(a, b, c);
        KEEP(a)
    }
    t = hmoe_clock_s() - t;
    sink = lane0(a);
    return t / N_IT * 1e9;
}

__attribute__((target("avx512f"), noinline)) static double t_fma(void)
{
    const __m512 b = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-3f);
    DECL12(__m512, _mm512_set1_ps(1.0f))
    double t = hmoe_clock_s();
    for (long i = 0; i < N_IT; i++) {
        CHAINS12(F)
    }
    t = hmoe_clock_s() - t;
    sink = SUM12(lane0);
    return t;
}

/* 6 FMA chains interleaved with 6 VPERMPS chains: the same 12 instructions an iteration as t_fma.
 * With FMAs on port 0 only and VPERMPS on port 5 this takes half the time of t_fma; with FMAs on
 * ports 0 and 5 the same time (a clock-free test of the number of 512-bit FMA ports). */
__attribute__((target("avx512f"), noinline)) static double t_mix(void)
{
    const __m512 b = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-3f), tab = _mm512_set1_ps(3.0f);
    DECL12(__m512, _mm512_set1_ps(1.0f))
    double t = hmoe_clock_s();
    for (long i = 0; i < N_IT; i++) {
        F(a0) P(a1) F(a2) P(a3) F(a4) P(a5) F(a6) P(a7) F(a8) P(a9) F(a10) P(a11)
    }
    t = hmoe_clock_s() - t;
    sink = SUM12(lane0);
    return t;
}

__attribute__((target("avx512f,avx512bf16"), noinline)) static double t_dpbf16(void)
{
    const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3f80), c = (__m512bh)_mm512_set1_epi16(0x3a83);
    DECL12(__m512, _mm512_set1_ps(1.0f))
    double t = hmoe_clock_s();
    for (long i = 0; i < N_IT; i++) {
#define D(a) a = _mm512_dpbf16_ps(a, b, c); KEEP(a)
        CHAINS12(D)
    }
    t = hmoe_clock_s() - t;
    sink = SUM12(lane0);
    return t;
}

__attribute__((target("avx512f"), noinline)) static double t_permps(void)
{
    const __m512 tab = _mm512_set1_ps(3.0f);
    DECL12(__m512, _mm512_set1_ps(1.0f))
    double t = hmoe_clock_s();
    for (long i = 0; i < N_IT; i++) {
        CHAINS12(P)
    }
    t = hmoe_clock_s() - t;
    sink = SUM12(lane0);
    return t;
}

__attribute__((target("avx512f,avx512bw"), noinline)) static double t_permw(void)
{
    const __m512i tab = _mm512_set1_epi16(3);
    DECL12(__m512i, _mm512_set1_epi16(1))
    double t = hmoe_clock_s();
    for (long i = 0; i < N_IT; i++) {
#define W(a) a = _mm512_permutexvar_epi16(a, tab); KEEP(a)
        CHAINS12(W)
    }
    t = hmoe_clock_s() - t;
    sink = SUM12(lane0i);
    return t;
}

__attribute__((target("avx512f,avx512bf16"), noinline)) static double t_cvt2(void)
{
    const __m512 b = _mm512_set1_ps(1.5f);
    DECL12(__m512, _mm512_set1_ps(1.0f))
    double t = hmoe_clock_s();
    for (long i = 0; i < N_IT; i++) {
#define C(a) a = (__m512)_mm512_cvtne2ps_pbh(a, b); KEEP(a)
        CHAINS12(C)
    }
    t = hmoe_clock_s() - t;
    sink = SUM12(lane0);
    return t;
}

/* VPMOVZXBD zmm, m128 into 12 independent registers (the loads hit L1) */
__attribute__((target("avx512f"), noinline)) static double t_movzx(const uint8_t *q)
{
    DECL12(__m512i, _mm512_set1_epi32(1))
    double t = hmoe_clock_s();
    for (long i = 0; i < N_IT; i++) {
        const uint8_t *p = q + (i & 7) * 16;
#define Z(a) a = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)); KEEP(a)
        CHAINS12(Z)
    }
    t = hmoe_clock_s() - t;
    sink = SUM12(lane0i);
    return t;
}

/* ---- AMX ---- */

struct tilecfg {
    uint8_t palette, start_row, rsvd[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

static int amx_permit(void)
{
    /* ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA */
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}

/* cycles per TDPBF16PS: C tiles 0-3 (16 rows x n fp32), A tile 4 (16 x 32 bf16), B tile 5
 * (16 pairs x n) */
__attribute__((target("amx-tile,amx-bf16"), noinline)) static double t_tdp(int n, const void *buf)
{
    struct tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    const int nc = n > 0 ? n : 3;
    for (int i = 0; i < 4; i++) {
        cfg.rows[i] = 16;
        cfg.colsb[i] = (uint16_t)(4 * nc);
    }
    cfg.rows[4] = 16;
    cfg.colsb[4] = 64;
    cfg.rows[5] = 16;
    cfg.colsb[5] = (uint16_t)(4 * nc);
    _tile_loadconfig(&cfg);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, buf, 64);
    _tile_loadd(5, buf, 64);
    const long it = N_IT / 8;
    double t = hmoe_clock_s();
    if (n > 0) {
        for (long i = 0; i < it; i++) {
            _tile_dpbf16ps(0, 4, 5);
            _tile_dpbf16ps(1, 4, 5);
            _tile_dpbf16ps(2, 4, 5);
            _tile_dpbf16ps(3, 4, 5);
        }
    } else { /* one accumulator: latency */
        for (long i = 0; i < it; i++) {
            _tile_dpbf16ps(0, 4, 5);
            _tile_dpbf16ps(0, 4, 5);
            _tile_dpbf16ps(0, 4, 5);
            _tile_dpbf16ps(0, 4, 5);
        }
    }
    t = hmoe_clock_s() - t;
    _tile_release();
    return t / (it * 4.0);
}

int main(void)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f")) {
        printf("no AVX-512F: nothing to probe\n");
        return 0;
    }
    double lat = fma_lat();
    const double ghz = 4.0 / lat; /* FMA latency 4 cycles */
    double f = t_fma();
    const double ops = (double)N_IT * 12;
    printf("clock estimate (FMA latency = 4 cycles): %.2f GHz\n", ghz);
    printf("cycles per instruction, 12 independent chains (0.50 = two per cycle):\n");
    printf("  vfmadd231ps zmm      %.2f\n", f / ops * 1e9 * ghz);
    if (__builtin_cpu_supports("avx512bf16")) {
        printf("  vdpbf16ps zmm        %.2f\n", t_dpbf16() / ops * 1e9 * ghz);
        printf("  vcvtne2ps2bf16 zmm   %.2f\n", t_cvt2() / ops * 1e9 * ghz);
    }
    printf("  vpermps zmm          %.2f\n", t_permps() / ops * 1e9 * ghz);
    const double mix = t_mix();
    printf("  6 FMA + 6 vpermps    %.2f per instruction: %.2f x the time of 12 FMAs (Intel: 0.5 "
           "= one 512-bit FMA port, 1.0 = two)\n",
           mix / ops * 1e9 * ghz, mix / f);
    if (__builtin_cpu_supports("avx512bw"))
        printf("  vpermw zmm           %.2f\n", t_permw() / ops * 1e9 * ghz);
    static uint8_t q[256] __attribute__((aligned(64)));
    for (int i = 0; i < 256; i++) q[i] = (uint8_t)(i * 7);
    printf("  vpmovzxbd zmm, m128  %.2f\n", t_movzx(q) / ops * 1e9 * ghz);
    /* AMX: cpuid.(7,0).edx bit 22 = AMX-BF16, bit 24 = AMX-TILE */
    unsigned a, b, c, d;
    __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    if (!((d >> 24) & 1) || !((d >> 22) & 1)) {
        printf("AMX-TILE/AMX-BF16: not reported by cpuid\n");
        return 0;
    }
    if (!amx_permit()) {
        printf("AMX: cpuid has it, but the kernel refused ARCH_REQ_XCOMP_PERM\n");
        return 0;
    }
    static uint16_t buf[16 * 32] __attribute__((aligned(64)));
    for (int i = 0; i < 16 * 32; i++) buf[i] = 0x3f80; /* 1.0 */
    const double t16 = t_tdp(16, buf), t3 = t_tdp(3, buf), tl = t_tdp(0, buf);
    printf("AMX tdpbf16ps (16x32 bf16 A, 4 accumulators): %.1f cycles with 16 output columns "
           "(%.0f bf16 products/cycle), %.1f cycles with 3; dependent (one accumulator, 3 "
           "columns): %.1f cycles\n",
           t16 * 1e9 * ghz, 16 * 16 * 32 / (t16 * 1e9 * ghz), t3 * 1e9 * ghz, tl * 1e9 * ghz);
    return 0;
}
#else
int main(void)
{
    printf("hmoe-isa-probe: x86-64 only\n");
    return 0;
}
#endif
