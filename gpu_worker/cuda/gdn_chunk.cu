/* gpu_worker/cuda/gdn_chunk.cu: the gated delta rule of the prefill in its chunked (WY) form,
 * chunk C = 64 (issue 5; figures in docs/gdn_chunk.md). Same inputs, outputs and state as the
 * recurrent kernel k_pf_gdn (pf_kernels.cu); fp32 data, fp32 accumulation. Two kernels:
 *
 * k_gdn_ck_intra_tc, block per (chunk, value head), everything inside one chunk in parallel:
 *   q, k l2-normalised (q also scaled by dk^-0.5), gamma = cumsum(g) (in double),
 *   A[t][s] = beta_t k_t.k_s exp(gamma_t - gamma_s) (s < t),
 *   P[t][s] = q_t.k_s exp(gamma_t - gamma_s) (s <= t), then
 *   (I + A) [U | W] = [beta v | beta exp(gamma) k] by forward substitution.
 *   U goes to o (the output buffer), W, P and the per-token factors exp(gamma_t),
 *   exp(gamma_last - gamma_t), |q|^-1 dk^-0.5, |k|^-1 to the scratch.
 * k_gdn_ck_seq_tc, block per (value head, 32 state columns), sequential over the chunks with its
 *   S slice (dk x 32) in shared memory:
 *   V' = U - W S,  o = exp(gamma) (q S) + P V',  S = exp(gamma_last) S + (k exp(gamma_last -
 *   gamma))^T V'; q and k are read raw from conv and scaled per row; the next chunk's W, q, U
 *   are copied in (cp.async) while the state update runs, its k and P while V' is computed.
 * Products on the tensor cores in 3xTF32 (about fp32 accuracy), (I + A)^-1 formed explicitly.
 * (An fp32 FMA form of the pair, forward substitution on every right-hand column, was never the
 * default: slower from T = 1024 on (1221.6 vs 1130.4 us at T = 4096), within 7% below; it was
 * removed in session 4, docs/gdn_chunk.md.)
 * Only differences gamma_t - gamma_s with t >= s are exponentiated (g <= 0: nothing overflows).
 * Derivation (S_t = e^g_t S_{t-1} + k_t d_t^T, d_t = beta_t (v_t - e^g_t S_{t-1}^T k_t)): inside a
 * chunk d_t + beta_t sum_{s<t} e^(gamma_t - gamma_s) (k_t.k_s) d_s = beta_t v_t - beta_t
 * e^gamma_t S_0^T k_t, i.e. (I + A) D = beta V - beta e^gamma K S_0, D = U - W S_0. */
#include <math.h>

#include "fwd_launch.h"

#define GC_C 64    /* tokens per chunk */
#define GC_DK 128  /* the key head dim this file supports */
#define GC_DVS 32  /* state columns per block of the sequential kernel */
#define GC_P (GC_C + 4)   /* row of the transposed q / k of the intra kernel (padded) */
#define GC_WP (GC_DK + 4) /* row of W / q of the sequential kernel (padded) */
#define GC_AP (GC_C + 4)  /* row of P of the sequential kernel (padded) */

namespace
{

/* 16-byte async copy; ok = false fills the destination with zeros (src is not read). */
__device__ __forceinline__ void gc_cp16(float *dst, const float *src, bool ok)
{
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    const unsigned n = ok ? 16u : 0u;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(n)
                 : "memory");
}

__device__ __forceinline__ void gc_commit(void)
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N> __device__ __forceinline__ void gc_wait(void)
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* ------------------------------------------------------------------------------------------ */
/* The products run on the tensor cores: mma.m16n8k8 tf32 in 3xTF32 (each operand split into a
 * tf32 high part and a tf32 remainder; a_lo b_hi + a_hi b_lo + a_hi b_hi, fp32 accumulation:
 * close to fp32 accuracy). Fragment layouts as k_pf_attn_tc (pf_kernels.cu):
 * g = lane / 4, t4 = lane % 4; A (16 x 8): (g, t4) (g + 8, t4) (g, t4 + 4) (g + 8, t4 + 4);
 * B (8 x 8): (t4, g) (t4 + 4, g); C (16 x 8): (g, 2 t4 + e) (g + 8, 2 t4 + e). */

struct gc_fa {
    uint32_t h[4], l[4];
};
struct gc_fb {
    uint32_t h[2], l[2];
};

__device__ __forceinline__ void gc_split(float x, uint32_t &hi, uint32_t &lo)
{
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(hi) : "f"(x));
    const float r = x - __uint_as_float(hi);
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(lo) : "f"(r));
}

__device__ __forceinline__ void gc_mma(float *c, const uint32_t *a, const uint32_t *b)
{
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* c += a b (3xTF32) */
__device__ __forceinline__ void gc_mma3(float *c, const gc_fa &a, const gc_fb &b)
{
    gc_mma(c, a.l, b.h);
    gc_mma(c, a.h, b.l);
    gc_mma(c, a.h, b.h);
}

/* A fragment of a row-major matrix, p = &M[m0][k0] */
__device__ __forceinline__ gc_fa gc_lda(const float *p, int ld, int g, int t4)
{
    gc_fa f;
    gc_split(p[g * ld + t4], f.h[0], f.l[0]);
    gc_split(p[(g + 8) * ld + t4], f.h[1], f.l[1]);
    gc_split(p[g * ld + t4 + 4], f.h[2], f.l[2]);
    gc_split(p[(g + 8) * ld + t4 + 4], f.h[3], f.l[3]);
    return f;
}

/* A fragment of M^T for a row-major M [k][m], p = &M[k0][m0] */
__device__ __forceinline__ gc_fa gc_lda_t(const float *p, int ld, int g, int t4)
{
    gc_fa f;
    gc_split(p[t4 * ld + g], f.h[0], f.l[0]);
    gc_split(p[t4 * ld + g + 8], f.h[1], f.l[1]);
    gc_split(p[(t4 + 4) * ld + g], f.h[2], f.l[2]);
    gc_split(p[(t4 + 4) * ld + g + 8], f.h[3], f.l[3]);
    return f;
}

/* B fragment of a row-major M [k][n], p = &M[k0][n0], rows scaled by s0 (row k0 + t4) and s1
 * (row k0 + t4 + 4) */
__device__ __forceinline__ gc_fb gc_ldb(const float *p, int ld, int g, int t4, float s0 = 1.f,
                                        float s1 = 1.f)
{
    gc_fb f;
    gc_split(p[t4 * ld + g] * s0, f.h[0], f.l[0]);
    gc_split(p[(t4 + 4) * ld + g] * s1, f.h[1], f.l[1]);
    return f;
}

/* B fragment of M^T for a row-major M [n][k], p = &M[n0][k0] */
__device__ __forceinline__ gc_fb gc_ldb_t(const float *p, int ld, int g, int t4)
{
    gc_fb f;
    gc_split(p[g * ld + t4], f.h[0], f.l[0]);
    gc_split(p[g * ld + t4 + 4], f.h[1], f.l[1]);
    return f;
}

/* Shared memory of k_gdn_ck_intra_tc (floats): q, k rows (C x GT_LQ), A and (I + A)^-1
 * (C x GT_LA), beta, beta e^gamma, |q|^-1, |k|^-1, e^gamma (C each), gamma (C doubles), then v
 * (C x (dv + 8)). */
#define GT_LQ (GC_DK + 4)
#define GT_LA (GC_C + 4)
constexpr int GT_Q = 0, GT_K = GT_Q + GC_C * GT_LQ, GT_A = GT_K + GC_C * GT_LQ,
              GT_TI = GT_A + GC_C * GT_LA, GT_BET = GT_TI + GC_C * GT_LA, GT_BEK = GT_BET + GC_C,
              GT_FQ = GT_BEK + GC_C, GT_FK = GT_FQ + GC_C, GT_EG = GT_FK + GC_C,
              GT_GAM = GT_EG + GC_C, GT_V = GT_GAM + 2 * GC_C;
static_assert(GT_GAM % 2 == 0 && GT_V % 4 == 0, "alignment");

/* conv (T, cd) [q | k | v], post-conv/SiLU; beta, gg (T, Hv), gg = g (log decay). Writes U
 * into o (T, Hv*dv), W into Wg (Hv, T, DK), P into Pg (Hv, T, C), the factors into Fg
 * (Hv, T, 4): exp(gamma_t), exp(gamma_last - gamma_t), q scale, k scale. Grid (chunks, Hv).
 * G = K K^T and P = Q K^T on the tensor cores (warp per 16 rows, tiles up
 * to the diagonal), (I + A)^-1 by forward substitution on the identity (a thread per column,
 * 64 threads), then [U | W] = (I + A)^-1 [beta v | beta e^gamma k] on the tensor cores (warp
 * per 32 columns; the zero upper triangle skipped). v is copied in (cp.async) meanwhile. */
__global__ void __launch_bounds__(256)
    k_gdn_ck_intra_tc(const float *conv, const float *beta, const float *gg, float *o, float *Wg,
                      float *Pg, float *Fg, int Hk, int Hv, int dv, int T)
{
    constexpr int DK = GC_DK;
    extern __shared__ __align__(16) float sm[];
    float *Qs = sm + GT_Q, *Ks = sm + GT_K, *As = sm + GT_A, *Ti = sm + GT_TI, *bet = sm + GT_BET,
          *bek = sm + GT_BEK, *fq = sm + GT_FQ, *fk = sm + GT_FK, *eg = sm + GT_EG,
          *Vs = sm + GT_V;
    double *gam = (double *)(sm + GT_GAM);
    const int c = blockIdx.x, h = blockIdx.y, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31,
              g = lane >> 2, t4 = lane & 3;
    const int ratio = Hv / Hk, kh = h / ratio, kd = Hk * DK, vd = Hv * dv, LV = dv + 8;
    const int64_t cd = 2 * (int64_t)kd + vd;
    const int t0 = c * GC_C, n = min(GC_C, T - t0);
    const float qscale = rsqrtf((float)DK);

    /* v rows into Vs (zeros past the end), waited for before the last phase */
    for (int x = tid; x < GC_C * (dv / 4); x += blockDim.x) {
        const int t = x / (dv / 4), cc = (x % (dv / 4)) * 4, tc = t < n ? t : 0;
        gc_cp16(Vs + t * LV + cc, conv + (int64_t)(t0 + tc) * cd + 2 * kd + (int64_t)h * dv + cc,
                t < n);
    }
    gc_commit();
    /* g, beta (warp 0) and the q, k rows of this warp (w + 8 i: q for i < 8, k for i >= 8):
     * every load issued before the first use */
    const int ta = 2 * lane, tb = ta + 1;
    double ga = 0.0, gb = 0.0;
    float ba = 0.f, bb = 0.f;
    if (warp == 0) {
        if (ta < n) {
            ga = gg[(int64_t)(t0 + ta) * Hv + h];
            ba = beta[(int64_t)(t0 + ta) * Hv + h];
        }
        if (tb < n) {
            gb = gg[(int64_t)(t0 + tb) * Hv + h];
            bb = beta[(int64_t)(t0 + tb) * Hv + h];
        }
    }
    float v[16][4];
#pragma unroll
    for (int i = 0; i < 16; i++) {
        const int t = warp + 8 * (i & 7);
        const float *src = conv + (int64_t)(t0 + (t < n ? t : 0)) * cd + (i >= 8 ? kd : 0) +
                           kh * DK + lane;
#pragma unroll
        for (int j = 0; j < 4; j++)
            v[i][j] = t < n ? src[32 * j] : 0.f;
    }
#pragma unroll
    for (int i = 0; i < 16; i++) {
        const int t = warp + 8 * (i & 7), isk = i >= 8;
        float ss = 0.f;
#pragma unroll
        for (int j = 0; j < 4; j++)
            ss = fmaf(v[i][j], v[i][j], ss);
        ss = hmoe_warp_sum(ss);
        const float sc = t < n ? rsqrtf(ss + 1e-6f) * (isk ? 1.f : qscale) : 0.f;
        float *dst = (isk ? Ks : Qs) + t * GT_LQ + lane;
#pragma unroll
        for (int j = 0; j < 4; j++)
            dst[32 * j] = v[i][j] * sc;
        if (lane == 0) (isk ? fk : fq)[t] = sc;
    }
    if (warp == 0) { /* gamma: inclusive scan in double (g = 0 past the end) */
        double s = ga + gb;
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
            const double y = __shfl_up_sync(0xffffffffu, s, off);
            if (lane >= off) s += y;
        }
        gam[ta] = s - gb;
        gam[tb] = s;
        bet[ta] = ba;
        bet[tb] = bb;
    }
    __syncthreads();
    if (tid < GC_C) {
        eg[tid] = (float)exp(gam[tid]);
        bek[tid] = bet[tid] * eg[tid];
        if (tid < n) {
            const float4 f = make_float4(eg[tid], (float)exp(gam[n - 1] - gam[tid]), fq[tid],
                                         fk[tid]);
            *(float4 *)(Fg + ((int64_t)h * T + t0 + tid) * 4) = f;
        }
    }
    { /* G = K K^T (warps 0-3) and P = Q K^T (warps 4-7), rows 16 mt.., tiles up to the diagonal */
        const int mt = warp & 3, isp = warp >> 2;
        const float *am = (isp ? Qs : Ks) + mt * 16 * GT_LQ;
        float acc[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                acc[nt][e] = 0.f;
#pragma unroll 2
        for (int k0 = 0; k0 < DK; k0 += 8) {
            const gc_fa a = gc_lda(am + k0, GT_LQ, g, t4);
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
                if (nt <= 2 * mt + 1)
                    gc_mma3(acc[nt], a, gc_ldb_t(Ks + nt * 8 * GT_LQ + k0, GT_LQ, g, t4));
        }
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int t = 16 * mt + g + 8 * hf, s = 8 * nt + 2 * t4;
                float r[2];
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const float dec = s + e <= t ? expf((float)(gam[t] - gam[s + e])) : 0.f,
                                x = acc[nt][2 * hf + e] * dec;
                    r[e] = isp ? x : (s + e < t ? bet[t] * x : 0.f);
                }
                if (isp) {
                    if (t < n)
                        *(float2 *)(Pg + ((int64_t)h * T + t0 + t) * GC_C + s) =
                            make_float2(r[0], r[1]);
                } else {
                    *(float2 *)(As + t * GT_LA + s) = make_float2(r[0], r[1]);
                }
            }
    }
    __syncthreads();
    if (tid < GC_C) { /* column tid of (I + A)^-1 */
        const int j = tid;
        float x[GC_C];
#pragma unroll
        for (int t = 0; t < GC_C; t++)
            x[t] = t == j ? 1.f : 0.f;
#pragma unroll
        for (int t = 1; t < GC_C; t++) {
            const float *ar = As + t * GT_LA;
            float a0 = x[t], a1 = 0.f;
#pragma unroll
            for (int s = 0; s < t; s += 4) {
                const float4 a = *(const float4 *)(ar + s);
                a0 = fmaf(-a.x, x[s], a0);
                if (s + 1 < t) a1 = fmaf(-a.y, x[s + 1], a1);
                if (s + 2 < t) a0 = fmaf(-a.z, x[s + 2], a0);
                if (s + 3 < t) a1 = fmaf(-a.w, x[s + 3], a1);
            }
            x[t] = a0 + a1;
        }
#pragma unroll
        for (int t = 0; t < GC_C; t++)
            Ti[t * GT_LA + j] = x[t];
    }
    gc_wait<0>();
    __syncthreads();
    /* [U | W] = (I + A)^-1 [beta v | beta e^gamma k]: warp per 32 columns, 4 row tiles */
    for (int gr = warp; gr < (dv + DK) / 32; gr += 8) {
        const int c0 = 32 * gr, isw = c0 >= dv, ldb = isw ? GT_LQ : LV;
        const float *bm = isw ? Ks + (c0 - dv) : Vs + c0, *sc = isw ? bek : bet;
        float acc[4][4][4];
#pragma unroll
        for (int mt = 0; mt < 4; mt++)
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    acc[mt][nt][e] = 0.f;
#pragma unroll
        for (int kk = 0; kk < 8; kk++) {
            gc_fb b[4];
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
                b[nt] = gc_ldb(bm + kk * 8 * ldb + nt * 8, ldb, g, t4, sc[8 * kk + t4],
                               sc[8 * kk + t4 + 4]);
#pragma unroll
            for (int mt = kk >> 1; mt < 4; mt++) { /* row tile mt is zero past column 16 mt + 15 */
                const gc_fa a = gc_lda(Ti + mt * 16 * GT_LA + kk * 8, GT_LA, g, t4);
#pragma unroll
                for (int nt = 0; nt < 4; nt++)
                    gc_mma3(acc[mt][nt], a, b[nt]);
            }
        }
#pragma unroll
        for (int mt = 0; mt < 4; mt++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int t = 16 * mt + g + 8 * hf;
                if (t >= n) continue;
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    const int cc = c0 + 8 * nt + 2 * t4;
                    const float2 r = make_float2(acc[mt][nt][2 * hf], acc[mt][nt][2 * hf + 1]);
                    if (isw)
                        *(float2 *)(Wg + ((int64_t)h * T + t0 + t) * DK + (cc - dv)) = r;
                    else
                        *(float2 *)(o + (int64_t)(t0 + t) * vd + (int64_t)h * dv + cc) = r;
                }
            }
    }
}

/* Shared memory of k_gdn_ck_seq_tc (floats): S slice (DK x 40), W and q (C x 132), k
 * (C x 136), U (C x 40), P (C x 68), V', V' scaled for the state update (C x 40 each), factors
 * (C x 4). Row pitches keep the fragment loads free of bank conflicts. */
#define GQ_LS 40
#define GQ_LW (GC_DK + 4)
#define GQ_LK (GC_DK + 8)
#define GQ_LP (GC_C + 4)
constexpr int GQ_S = 0, GQ_W = GQ_S + GC_DK * GQ_LS, GQ_Q = GQ_W + GC_C * GQ_LW,
              GQ_K = GQ_Q + GC_C * GQ_LW, GQ_U = GQ_K + GC_C * GQ_LK, GQ_P = GQ_U + GC_C * GQ_LS,
              GQ_V = GQ_P + GC_C * GQ_LP, GQ_VK = GQ_V + GC_C * GQ_LS,
              GQ_F = GQ_VK + GC_C * GQ_LS, GQ_SIZE = GQ_F + GC_C * 4;

/* Grid (Hv, dv / 32), 256 threads. o holds U on entry (from k_gdn_ck_intra_tc) and the output
 * on return; S (Hv, DK, dv) in place. Warp w computes rows 16 (w % 4) of
 * W S (w < 4) or q S (w >= 4), the state rows 16 w.., and (w >= 4) the output rows 16 (w - 4)..
 * from its q S fragments. */
__global__ void __launch_bounds__(256)
    k_gdn_ck_seq_tc(const float *conv, const float *Wg, const float *Pg, const float *Fg, float *S,
                    float *o, int Hk, int Hv, int dv, int T)
{
    constexpr int DK = GC_DK;
    extern __shared__ __align__(16) float sm[];
    float *Ss = sm + GQ_S, *Wb = sm + GQ_W, *Qb = sm + GQ_Q, *Kb = sm + GQ_K, *Ub = sm + GQ_U,
          *Pb = sm + GQ_P, *Vp = sm + GQ_V, *VK = sm + GQ_VK, *Fb = sm + GQ_F;
    const int h = blockIdx.x, c0 = blockIdx.y * GC_DVS, tid = threadIdx.x, warp = tid >> 5,
              lane = tid & 31, g = lane >> 2, t4 = lane & 3, mt = warp & 3;
    const int ratio = Hv / Hk, kh = h / ratio, kd = Hk * DK, vd = Hv * dv;
    const int64_t cd = 2 * (int64_t)kd + vd;
    const int nch = (T + GC_C - 1) / GC_C;
    float *Sh = S + (int64_t)h * DK * dv + c0;
    float *oh = o + (int64_t)h * dv + c0;

    for (int x = tid; x < DK * (GC_DVS / 4); x += blockDim.x) {
        const int d = x / (GC_DVS / 4), j = (x % (GC_DVS / 4)) * 4;
        *(float4 *)(Ss + d * GQ_LS + j) = *(const float4 *)(Sh + (int64_t)d * dv + j);
    }
    auto load_a = [&](int c) { /* W, q, U, factors */
        const int t0 = c * GC_C, n = min(GC_C, T - t0);
        for (int x = tid; x < GC_C * (DK / 4); x += blockDim.x) {
            const int t = x / (DK / 4), i = (x % (DK / 4)) * 4, tc = t < n ? t : 0;
            gc_cp16(Wb + t * GQ_LW + i, Wg + ((int64_t)h * T + t0 + tc) * DK + i, t < n);
            gc_cp16(Qb + t * GQ_LW + i, conv + (int64_t)(t0 + tc) * cd + kh * DK + i, t < n);
        }
        for (int x = tid; x < GC_C * (GC_DVS / 4); x += blockDim.x) {
            const int t = x / (GC_DVS / 4), j = (x % (GC_DVS / 4)) * 4, tc = t < n ? t : 0;
            gc_cp16(Ub + t * GQ_LS + j, oh + (int64_t)(t0 + tc) * vd + j, t < n);
        }
        if (tid < GC_C) {
            const int tc = tid < n ? tid : 0;
            gc_cp16(Fb + tid * 4, Fg + ((int64_t)h * T + t0 + tc) * 4, tid < n);
        }
        gc_commit();
    };
    auto load_b = [&](int c) { /* k, P */
        const int t0 = c * GC_C, n = min(GC_C, T - t0);
        for (int x = tid; x < GC_C * (DK / 4); x += blockDim.x) {
            const int t = x / (DK / 4), i = (x % (DK / 4)) * 4, tc = t < n ? t : 0;
            gc_cp16(Kb + t * GQ_LK + i, conv + (int64_t)(t0 + tc) * cd + kd + kh * DK + i, t < n);
        }
        for (int x = tid; x < GC_C * (GC_C / 4); x += blockDim.x) {
            const int t = x / (GC_C / 4), i = (x % (GC_C / 4)) * 4, tc = t < n ? t : 0;
            gc_cp16(Pb + t * GQ_LP + i, Pg + ((int64_t)h * T + t0 + tc) * GC_C + i, t < n);
        }
        gc_commit();
    };
    load_a(0);
    load_b(0);
    for (int c = 0; c < nch; c++) {
        const int t0 = c * GC_C, n = min(GC_C, T - t0);
        gc_wait<1>();
        __syncthreads();
        const float gl = Fb[(n - 1) * 4]; /* exp(gamma_last) */
        float oq[4][4];                   /* warps 4-7: e^gamma (q S), then the output rows */
        {
            const float *am = (warp < 4 ? Wb : Qb) + mt * 16 * GQ_LW;
            float acc[4][4];
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    acc[nt][e] = 0.f;
#pragma unroll 4
            for (int k0 = 0; k0 < DK; k0 += 8) {
                const gc_fa a = gc_lda(am + k0, GQ_LW, g, t4);
#pragma unroll
                for (int nt = 0; nt < 4; nt++)
                    gc_mma3(acc[nt], a, gc_ldb(Ss + k0 * GQ_LS + nt * 8, GQ_LS, g, t4));
            }
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int t = 16 * mt + g + 8 * hf;
                const float4 f = *(const float4 *)(Fb + t * 4);
                const float ks = f.y * f.w, qs = f.x * f.z; /* zero past the end */
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    const int cc = 8 * nt + 2 * t4;
                    if (warp < 4) {
                        const float2 u = *(const float2 *)(Ub + t * GQ_LS + cc);
                        const float2 vp =
                            make_float2(u.x - acc[nt][2 * hf], u.y - acc[nt][2 * hf + 1]);
                        *(float2 *)(Vp + t * GQ_LS + cc) = vp;
                        *(float2 *)(VK + t * GQ_LS + cc) = make_float2(vp.x * ks, vp.y * ks);
                    } else {
                        oq[nt][2 * hf] = acc[nt][2 * hf] * qs;
                        oq[nt][2 * hf + 1] = acc[nt][2 * hf + 1] * qs;
                    }
                }
            }
        }
        __syncthreads(); /* W, q, U, factors consumed; V' ready */
        if (c + 1 < nch) {
            load_a(c + 1);
            gc_wait<1>();
        } else {
            gc_wait<0>();
        }
        __syncthreads();
        { /* S rows 16 warp..: S = e^gamma_last S + k^T V'k */
            float acc[4][4];
            const int d0 = 16 * warp;
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    acc[nt][e] =
                        gl * Ss[(d0 + g + 8 * (e >> 1)) * GQ_LS + 8 * nt + 2 * t4 + (e & 1)];
#pragma unroll 2
            for (int kk = 0; kk < GC_C; kk += 8) {
                const gc_fa a = gc_lda_t(Kb + kk * GQ_LK + d0, GQ_LK, g, t4);
#pragma unroll
                for (int nt = 0; nt < 4; nt++)
                    gc_mma3(acc[nt], a, gc_ldb(VK + kk * GQ_LS + nt * 8, GQ_LS, g, t4));
            }
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    Ss[(d0 + g + 8 * (e >> 1)) * GQ_LS + 8 * nt + 2 * t4 + (e & 1)] = acc[nt][e];
        }
        if (warp >= 4) { /* output rows 16 mt..: e^gamma (q S) + P V' (P: zero past the diagonal) */
#pragma unroll
            for (int kk = 0; kk < 8; kk++) {
                if (kk > 2 * mt + 1) break;
                const gc_fa a = gc_lda(Pb + mt * 16 * GQ_LP + kk * 8, GQ_LP, g, t4);
#pragma unroll
                for (int nt = 0; nt < 4; nt++)
                    gc_mma3(oq[nt], a, gc_ldb(Vp + kk * 8 * GQ_LS + nt * 8, GQ_LS, g, t4));
            }
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int t = 16 * mt + g + 8 * hf;
                if (t < n)
#pragma unroll
                    for (int nt = 0; nt < 4; nt++)
                        *(float2 *)(oh + (int64_t)(t0 + t) * vd + 8 * nt + 2 * t4) =
                            make_float2(oq[nt][2 * hf], oq[nt][2 * hf + 1]);
            }
        }
        __syncthreads(); /* k, P, V' consumed; S updated */
        if (c + 1 < nch) load_b(c + 1);
    }
    for (int x = tid; x < DK * (GC_DVS / 4); x += blockDim.x) {
        const int d = x / (GC_DVS / 4), j = (x % (GC_DVS / 4)) * 4;
        *(float4 *)(Sh + (int64_t)d * dv + j) = *(const float4 *)(Ss + d * GQ_LS + j);
    }
}

} /* namespace */

int fw_pf_gdn_chunk_ok(int Hk, int Hv, int dk, int dv)
{
    /* the scratch (W, P, factors) must fit in T * (2 Hk dk + Hv dv) floats; dv <= 256: the
     * shared memory of k_gdn_ck_intra_tc */
    return Hk > 0 && Hv % Hk == 0 && dk == GC_DK && dv > 0 && dv <= 256 && dv % GC_DVS == 0 &&
           (int64_t)Hv * (dk + GC_C + 4) <= 2 * (int64_t)Hk * dk + (int64_t)Hv * dv;
}

static enum hmoe_status gc_smem(const void *k, size_t bytes, int *done)
{
    if (*done) return HMOE_OK;
    const cudaError_t e =
        cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (e != cudaSuccess)
        return hmoe_fail(HMOE_E_CUDA, "chunked GDN: %zu bytes of shared memory: %s", bytes,
                         cudaGetErrorString(e));
    *done = 1;
    return HMOE_OK;
}

enum hmoe_status fw_pf_gdn_chunk(cudaStream_t st, const float *conv, const float *beta,
                                 const float *gg, float *S, float *o, float *scratch, int T, int Hk,
                                 int Hv, int dk, int dv)
{
    if (!fw_pf_gdn_chunk_ok(Hk, Hv, dk, dv) || !scratch)
        return hmoe_fail(HMOE_E_UNSUPPORTED, "chunked GDN: dk %d dv %d heads %d:%d%s", dk, dv, Hk,
                         Hv, scratch ? "" : ", no scratch");
    if (T <= 0) return HMOE_OK;
    const int nch = (T + GC_C - 1) / GC_C;
    float *Wg = scratch, *Pg = Wg + (int64_t)Hv * T * GC_DK, *Fg = Pg + (int64_t)Hv * T * GC_C;
    const dim3 gi(nch, Hv), gs(Hv, dv / GC_DVS);
    static int set[2]; /* the attribute is per function */
    const size_t si = (size_t)(GT_V + GC_C * (dv + 8)) * sizeof(float),
                 si_max = (size_t)(GT_V + GC_C * (256 + 8)) * sizeof(float),
                 ss = GQ_SIZE * sizeof(float);
    if (enum hmoe_status s = gc_smem((const void *)k_gdn_ck_intra_tc, si_max, &set[0])) return s;
    if (enum hmoe_status s = gc_smem((const void *)k_gdn_ck_seq_tc, ss, &set[1])) return s;
    k_gdn_ck_intra_tc<<<gi, 256, si, st>>>(conv, beta, gg, o, Wg, Pg, Fg, Hk, Hv, dv, T);
    k_gdn_ck_seq_tc<<<gs, 256, ss, st>>>(conv, Wg, Pg, Fg, S, o, Hk, Hv, dv, T);
    HMOE_CUDA_LAUNCH_OK();
}
