/* gpu_worker/cuda/gdn_chunk.cu: the gated delta rule of the prefill in its chunked (WY) form,
 * chunk C = 64 (issue 5; docs/gdn_chunk.md). Same inputs, outputs and state as the recurrent
 * kernel k_pf_gdn (pf_kernels.cu), fp32 throughout. Two kernels:
 *
 * k_gdn_ck_intra, block per (chunk, value head), everything inside one chunk in parallel:
 *   q, k l2-normalised (q also scaled by dk^-0.5), gamma = cumsum(g) (in double),
 *   A[t][s] = beta_t k_t.k_s exp(gamma_t - gamma_s) (s < t), P[t][s] = q_t.k_s exp(gamma_t - gamma_s)
 *   (s <= t), then (I + A) [U | W] = [beta v | beta exp(gamma) k] by forward substitution
 *   (a thread per right-hand column, the column in registers). U goes to o (the output buffer),
 *   W, P and the per-token factors exp(gamma_t), exp(gamma_last - gamma_t), |q|^-1 dk^-0.5,
 *   |k|^-1 to the scratch.
 * k_gdn_ck_seq, block per (value head, 32 state columns), sequential over the chunks with its
 *   S slice (dk x 32) in shared memory:
 *   V' = U - W S,  o = exp(gamma) (q S) + P V',  S = exp(gamma_last) S + (k exp(gamma_last -
 *   gamma))^T V'; q and k are read raw from conv and scaled per row; the next chunk's W, q, U
 *   are copied in (cp.async) while the state update runs, its k and P while V' is computed.
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

__device__ __forceinline__ void gc_f4(const float4 v, float *a)
{
    a[0] = v.x, a[1] = v.y, a[2] = v.z, a[3] = v.w;
}

/* Shared memory of k_gdn_ck_intra (floats): q^T, k^T (DK x GC_P), A (C x C), beta, |q|^-1,
 * |k|^-1, exp(gamma) (C each), gamma (C doubles). */
constexpr int GI_QT = 0, GI_KT = GI_QT + GC_DK * GC_P, GI_A = GI_KT + GC_DK * GC_P,
              GI_BET = GI_A + GC_C * GC_C, GI_FQ = GI_BET + GC_C, GI_FK = GI_FQ + GC_C,
              GI_EG = GI_FK + GC_C, GI_GAM = GI_EG + GC_C, GI_SIZE = GI_GAM + 2 * GC_C;
static_assert(GI_GAM % 2 == 0, "gamma (double) alignment");

/* conv (T, cd) [q | k | v], post-conv/SiLU; beta, gg (T, Hv), gg = g (log decay). Writes U
 * into o (T, Hv*dv), W into Wg (Hv, T, DK), P into Pg (Hv, T, C), the factors into Fg
 * (Hv, T, 4): exp(gamma_t), exp(gamma_last - gamma_t), q scale, k scale. Grid (chunks, Hv). */
__global__ void __launch_bounds__(256)
    k_gdn_ck_intra(const float *conv, const float *beta, const float *gg, float *o, float *Wg,
                   float *Pg, float *Fg, int Hk, int Hv, int dv, int T)
{
    constexpr int DK = GC_DK;
    extern __shared__ __align__(16) float sm[];
    float *QT = sm + GI_QT, *KT = sm + GI_KT, *As = sm + GI_A, *bet = sm + GI_BET,
          *fq = sm + GI_FQ, *fk = sm + GI_FK, *eg = sm + GI_EG;
    double *gam = (double *)(sm + GI_GAM);
    const int c = blockIdx.x, h = blockIdx.y, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int ratio = Hv / Hk, kh = h / ratio, kd = Hk * DK, vd = Hv * dv;
    const int64_t cd = 2 * (int64_t)kd + vd;
    const int t0 = c * GC_C, n = min(GC_C, T - t0);
    const float qscale = rsqrtf((float)DK);

    /* q and k rows (warp per row): l2 norm, normalised values stored transposed; rows past the
     * end of the sequence are zero */
    for (int r = warp; r < 2 * GC_C; r += 8) {
        const int isk = r >= GC_C, t = r & (GC_C - 1);
        float *dst = isk ? KT : QT;
        float v[DK / 32], ss = 0.f;
        const float *src = conv + (int64_t)(t0 + t) * cd + isk * kd + kh * DK;
#pragma unroll
        for (int i = 0; i < DK / 32; i++) {
            v[i] = t < n ? src[lane + 32 * i] : 0.f;
            ss = fmaf(v[i], v[i], ss);
        }
        ss = hmoe_warp_sum(ss);
        const float sc = t < n ? rsqrtf(ss + 1e-6f) * (isk ? 1.f : qscale) : 0.f;
#pragma unroll
        for (int i = 0; i < DK / 32; i++)
            dst[(lane + 32 * i) * GC_P + t] = v[i] * sc;
        if (lane == 0) (isk ? fk : fq)[t] = sc;
    }
    if (warp == 0) {
        /* gamma: inclusive scan of g in double (2 tokens per lane; g = 0 past the end) */
        const int ta = 2 * lane, tb = ta + 1;
        const double a = ta < n ? (double)gg[(int64_t)(t0 + ta) * Hv + h] : 0.0,
                     b = tb < n ? (double)gg[(int64_t)(t0 + tb) * Hv + h] : 0.0;
        double s = a + b;
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
            const double y = __shfl_up_sync(0xffffffffu, s, off);
            if (lane >= off) s += y;
        }
        gam[ta] = s - b;
        gam[tb] = s;
        bet[ta] = ta < n ? beta[(int64_t)(t0 + ta) * Hv + h] : 0.f;
        bet[tb] = tb < n ? beta[(int64_t)(t0 + tb) * Hv + h] : 0.f;
    }
    __syncthreads();
    if (tid < GC_C) {
        eg[tid] = (float)exp(gam[tid]);
        if (tid < n) {
            const float4 f = make_float4(eg[tid], (float)exp(gam[n - 1] - gam[tid]), fq[tid],
                                         fk[tid]);
            *(float4 *)(Fg + ((int64_t)h * T + t0 + tid) * 4) = f;
        }
    }

    /* G = K K^T, Q K^T: thread (ty, tx) holds rows 4 ty.., columns 4 tx..; only tiles on or
     * below the diagonal are needed */
    {
        const int ty = tid >> 4, tx = tid & 15;
        float gk[4][4], pq[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++)
                gk[i][j] = pq[i][j] = 0.f;
        if (tx <= ty) {
#pragma unroll 4
            for (int d = 0; d < DK; d++) {
                float kt[4], qt[4], ks[4];
                gc_f4(*(const float4 *)(KT + d * GC_P + 4 * ty), kt);
                gc_f4(*(const float4 *)(QT + d * GC_P + 4 * ty), qt);
                gc_f4(*(const float4 *)(KT + d * GC_P + 4 * tx), ks);
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        gk[i][j] = fmaf(kt[i], ks[j], gk[i][j]);
                        pq[i][j] = fmaf(qt[i], ks[j], pq[i][j]);
                    }
            }
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int t = 4 * ty + i;
            float ar[4], pr[4];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int s = 4 * tx + j;
                const float dec = s <= t ? expf((float)(gam[t] - gam[s])) : 0.f;
                ar[j] = s < t ? bet[t] * gk[i][j] * dec : 0.f;
                pr[j] = pq[i][j] * dec;
            }
            *(float4 *)(As + t * GC_C + 4 * tx) = make_float4(ar[0], ar[1], ar[2], ar[3]);
            if (t < n)
                *(float4 *)(Pg + ((int64_t)h * T + t0 + t) * GC_C + 4 * tx) =
                    make_float4(pr[0], pr[1], pr[2], pr[3]);
        }
    }
    __syncthreads();

    /* forward substitution, a thread per right-hand column: columns [0, dv) are beta v (-> U),
     * [dv, dv + DK) beta exp(gamma) k (-> W) */
    for (int col = tid; col < dv + DK; col += blockDim.x) {
        float x[GC_C];
        if (col < dv) {
            const float *src = conv + (int64_t)t0 * cd + 2 * kd + (int64_t)h * dv + col;
#pragma unroll
            for (int t = 0; t < GC_C; t++)
                x[t] = t < n ? bet[t] * src[t * cd] : 0.f;
        } else {
            const float *kr = KT + (col - dv) * GC_P;
#pragma unroll
            for (int t = 0; t < GC_C; t++)
                x[t] = bet[t] * eg[t] * kr[t];
        }
#pragma unroll
        for (int t = 1; t < GC_C; t++) {
            const float *ar = As + t * GC_C;
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
        if (col < dv) {
            float *dst = o + (int64_t)t0 * vd + (int64_t)h * dv + col;
#pragma unroll
            for (int t = 0; t < GC_C; t++)
                if (t < n) dst[(int64_t)t * vd] = x[t];
        } else {
            float *dst = Wg + ((int64_t)h * T + t0) * DK + (col - dv);
#pragma unroll
            for (int t = 0; t < GC_C; t++)
                if (t < n) dst[t * DK] = x[t];
        }
    }
}

/* Shared memory of k_gdn_ck_seq (floats): S slice (DK x 32), W and q (C x GC_WP), k (C x DK),
 * U (C x 32), P (C x GC_AP), V', V' scaled for the state update, q S scaled (C x 32 each),
 * factors (C x 4). */
constexpr int GS_S = 0, GS_W = GS_S + GC_DK * GC_DVS, GS_Q = GS_W + GC_C * GC_WP,
              GS_K = GS_Q + GC_C * GC_WP, GS_U = GS_K + GC_C * GC_DK,
              GS_P = GS_U + GC_C * GC_DVS, GS_V = GS_P + GC_C * GC_AP,
              GS_VK = GS_V + GC_C * GC_DVS, GS_OQ = GS_VK + GC_C * GC_DVS,
              GS_F = GS_OQ + GC_C * GC_DVS, GS_SIZE = GS_F + GC_C * 4;

/* Grid (Hv, dv / 32), 256 threads. o holds U on entry (from k_gdn_ck_intra) and the output on
 * return; S (Hv, DK, dv) in place. */
__global__ void __launch_bounds__(256)
    k_gdn_ck_seq(const float *conv, const float *Wg, const float *Pg, const float *Fg, float *S,
                 float *o, int Hk, int Hv, int dv, int T)
{
    constexpr int DK = GC_DK;
    extern __shared__ __align__(16) float sm[];
    float *Ss = sm + GS_S, *Wb = sm + GS_W, *Qb = sm + GS_Q, *Kb = sm + GS_K, *Ub = sm + GS_U,
          *Pb = sm + GS_P, *Vp = sm + GS_V, *VK = sm + GS_VK, *Oq = sm + GS_OQ, *Fb = sm + GS_F;
    const int h = blockIdx.x, c0 = blockIdx.y * GC_DVS, tid = threadIdx.x;
    const int ratio = Hv / Hk, kh = h / ratio, kd = Hk * DK, vd = Hv * dv;
    const int64_t cd = 2 * (int64_t)kd + vd;
    const int nch = (T + GC_C - 1) / GC_C;
    float *Sh = S + (int64_t)h * DK * dv + c0;
    float *oh = o + (int64_t)h * dv + c0;

    for (int x = tid; x < DK * (GC_DVS / 4); x += blockDim.x) {
        const int d = x / (GC_DVS / 4), j = (x % (GC_DVS / 4)) * 4;
        *(float4 *)(Ss + d * GC_DVS + j) = *(const float4 *)(Sh + (int64_t)d * dv + j);
    }
    /* group A of chunk c: W, q, U, factors; group B: k, P. Rows past the end: zeros. */
    auto load_a = [&](int c) {
        const int t0 = c * GC_C, n = min(GC_C, T - t0);
        for (int x = tid; x < GC_C * (DK / 4); x += blockDim.x) {
            const int t = x / (DK / 4), i = (x % (DK / 4)) * 4, tc = t < n ? t : 0;
            gc_cp16(Wb + t * GC_WP + i, Wg + ((int64_t)h * T + t0 + tc) * DK + i, t < n);
            gc_cp16(Qb + t * GC_WP + i, conv + (int64_t)(t0 + tc) * cd + kh * DK + i, t < n);
        }
        for (int x = tid; x < GC_C * (GC_DVS / 4); x += blockDim.x) {
            const int t = x / (GC_DVS / 4), j = (x % (GC_DVS / 4)) * 4, tc = t < n ? t : 0;
            gc_cp16(Ub + t * GC_DVS + j, oh + (int64_t)(t0 + tc) * vd + j, t < n);
        }
        if (tid < GC_C) {
            const int tc = tid < n ? tid : 0;
            gc_cp16(Fb + tid * 4, Fg + ((int64_t)h * T + t0 + tc) * 4, tid < n);
        }
        gc_commit();
    };
    auto load_b = [&](int c) {
        const int t0 = c * GC_C, n = min(GC_C, T - t0);
        for (int x = tid; x < GC_C * (DK / 4); x += blockDim.x) {
            const int t = x / (DK / 4), i = (x % (DK / 4)) * 4, tc = t < n ? t : 0;
            gc_cp16(Kb + t * DK + i, conv + (int64_t)(t0 + tc) * cd + kd + kh * DK + i, t < n);
        }
        for (int x = tid; x < GC_C * (GC_C / 4); x += blockDim.x) {
            const int t = x / (GC_C / 4), i = (x % (GC_C / 4)) * 4, tc = t < n ? t : 0;
            gc_cp16(Pb + t * GC_AP + i, Pg + ((int64_t)h * T + t0 + tc) * GC_C + i, t < n);
        }
        gc_commit();
    };
    load_a(0);
    load_b(0);
    /* thread tile: rows rg + 32 i, columns cj.. cj + 3 (phase 1 and P V'); state rows 4 rg.. */
    const int rg = tid >> 3, cj = (tid & 7) * 4;
    for (int c = 0; c < nch; c++) {
        const int t0 = c * GC_C, n = min(GC_C, T - t0);
        gc_wait<1>();
        __syncthreads();
        const float gl = Fb[(n - 1) * 4]; /* exp(gamma_last) */

        /* phase 1: [W; q] S (rows rg, rg + 32 of W, then of q) */
        {
            float acc[4][4];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    acc[i][j] = 0.f;
            const float *rw[4] = {Wb + rg * GC_WP, Wb + (rg + 32) * GC_WP, Qb + rg * GC_WP,
                                  Qb + (rg + 32) * GC_WP};
#pragma unroll 2
            for (int d = 0; d < DK; d += 4) {
                float s[4][4], r[4][4];
#pragma unroll
                for (int k = 0; k < 4; k++)
                    gc_f4(*(const float4 *)(Ss + (d + k) * GC_DVS + cj), s[k]);
#pragma unroll
                for (int i = 0; i < 4; i++)
                    gc_f4(*(const float4 *)(rw[i] + d), r[i]);
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int k = 0; k < 4; k++)
#pragma unroll
                        for (int j = 0; j < 4; j++)
                            acc[i][j] = fmaf(r[i][k], s[k][j], acc[i][j]);
            }
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int t = rg + 32 * i;
                const float4 f = *(const float4 *)(Fb + t * 4);
                const float ks = f.y * f.w, qs = f.x * f.z; /* zero past the end */
                float u[4];
                gc_f4(*(const float4 *)(Ub + t * GC_DVS + cj), u);
                const float4 v = make_float4(u[0] - acc[i][0], u[1] - acc[i][1],
                                             u[2] - acc[i][2], u[3] - acc[i][3]);
                *(float4 *)(Vp + t * GC_DVS + cj) = v;
                *(float4 *)(VK + t * GC_DVS + cj) =
                    make_float4(v.x * ks, v.y * ks, v.z * ks, v.w * ks);
                *(float4 *)(Oq + t * GC_DVS + cj) =
                    make_float4(acc[i + 2][0] * qs, acc[i + 2][1] * qs, acc[i + 2][2] * qs,
                                acc[i + 2][3] * qs);
            }
        }
        __syncthreads(); /* W, q, U, factors consumed */
        if (c + 1 < nch) {
            load_a(c + 1);
            gc_wait<1>();
        } else {
            gc_wait<0>();
        }
        __syncthreads();

        /* phase 2: S = e^gamma_last S + k^T V'k (rows 4 rg.., columns cj..) */
        {
            float acc[4][4];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    acc[i][j] = 0.f;
            const int dr = 4 * rg;
#pragma unroll 4
            for (int t = 0; t < GC_C; t++) {
                float kk[4], vv[4];
                gc_f4(*(const float4 *)(Kb + t * DK + dr), kk);
                gc_f4(*(const float4 *)(VK + t * GC_DVS + cj), vv);
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++)
                        acc[i][j] = fmaf(kk[i], vv[j], acc[i][j]);
            }
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float4 *sp = (float4 *)(Ss + (dr + i) * GC_DVS + cj);
                const float4 s = *sp;
                *sp = make_float4(fmaf(gl, s.x, acc[i][0]), fmaf(gl, s.y, acc[i][1]),
                                  fmaf(gl, s.z, acc[i][2]), fmaf(gl, s.w, acc[i][3]));
            }
        }
        /* o = e^gamma (q S) + P V' (rows rg, rg + 32) */
        {
            float acc[2][4];
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    acc[i][j] = 0.f;
#pragma unroll 2
            for (int s = 0; s < GC_C; s += 4) {
                float p[2][4], v[4][4];
                gc_f4(*(const float4 *)(Pb + rg * GC_AP + s), p[0]);
                gc_f4(*(const float4 *)(Pb + (rg + 32) * GC_AP + s), p[1]);
#pragma unroll
                for (int k = 0; k < 4; k++)
                    gc_f4(*(const float4 *)(Vp + (s + k) * GC_DVS + cj), v[k]);
#pragma unroll
                for (int i = 0; i < 2; i++)
#pragma unroll
                    for (int k = 0; k < 4; k++)
#pragma unroll
                        for (int j = 0; j < 4; j++)
                            acc[i][j] = fmaf(p[i][k], v[k][j], acc[i][j]);
            }
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int t = rg + 32 * i;
                if (t < n) {
                    const float4 q = *(const float4 *)(Oq + t * GC_DVS + cj);
                    *(float4 *)(oh + (int64_t)(t0 + t) * vd + cj) =
                        make_float4(q.x + acc[i][0], q.y + acc[i][1], q.z + acc[i][2],
                                    q.w + acc[i][3]);
                }
            }
        }
        __syncthreads(); /* k, P, V' consumed; S updated */
        if (c + 1 < nch) load_b(c + 1);
    }
    for (int x = tid; x < DK * (GC_DVS / 4); x += blockDim.x) {
        const int d = x / (GC_DVS / 4), j = (x % (GC_DVS / 4)) * 4;
        *(float4 *)(Sh + (int64_t)d * dv + j) = *(const float4 *)(Ss + d * GC_DVS + j);
    }
}

} /* namespace */

int fw_pf_gdn_chunk_ok(int Hk, int Hv, int dk, int dv)
{
    /* the scratch (W, P, factors) must fit in T * (2 Hk dk + Hv dv) floats */
    return Hk > 0 && Hv % Hk == 0 && dk == GC_DK && dv > 0 && dv % GC_DVS == 0 &&
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
    const size_t si = GI_SIZE * sizeof(float), ss = GS_SIZE * sizeof(float);
    static int set_i = 0, set_s = 0; /* the attribute is per function */
    if (enum hmoe_status s = gc_smem((const void *)k_gdn_ck_intra, si, &set_i)) return s;
    if (enum hmoe_status s = gc_smem((const void *)k_gdn_ck_seq, ss, &set_s)) return s;
    const int nch = (T + GC_C - 1) / GC_C;
    float *Wg = scratch, *Pg = Wg + (int64_t)Hv * T * GC_DK, *Fg = Pg + (int64_t)Hv * T * GC_C;
    k_gdn_ck_intra<<<dim3(nch, Hv), 256, si, st>>>(conv, beta, gg, o, Wg, Pg, Fg, Hk, Hv, dv, T);
    k_gdn_ck_seq<<<dim3(Hv, dv / GC_DVS), 256, ss, st>>>(conv, Wg, Pg, Fg, S, o, Hk, Hv, dv, T);
    const cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? HMOE_OK
                            : hmoe_fail(HMOE_E_CUDA, "%s: %s", __func__, cudaGetErrorString(e));
}
