/* gpu_worker/cuda/pf_kernels.cu: the prefill kernels of the CUDA forward pass (issue 5, session
 * 2): causal conv1d over T tokens in parallel, the gated delta rule with each state column split
 * over 4 lanes (chunks of q/k/v staged in shared memory by cp.async, also the decode step), a
 * tiled causal attention (64 queries x 64 keys per step, online softmax, fp32), and the routed
 * experts' NF4 dequantization at 16 weights per thread into fp32 or bf16 (+ bf16 gather / SiLU
 * for the bf16 expert GEMMs). Launchers: fw_pf_* in fwd_launch.h. All arithmetic fp32. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fwd_launch.h"
#include "pdl.cuh"
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace
{

/* This lane's part of S^T k and S^T q for one state column (col: its SL rows held by the lane;
 * kr, qr: the same SL rows of k and q), summed over the 4 lanes that share the column; with
 * KEEP the k values are also left in kk. */
template <int SL, bool KEEP>
__device__ __forceinline__ void pf_col_dots(const float *col, const float *kr, const float *qr,
                                            float *kk, float &cks, float &cqs)
{
    float ck[4] = {0.f, 0.f, 0.f, 0.f}, cq[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int i = 0; i < SL; i += 4) {
        const float4 k4 = *(const float4 *)(kr + i), q4 = *(const float4 *)(qr + i);
        if (KEEP) {
            kk[i] = k4.x;
            kk[i + 1] = k4.y;
            kk[i + 2] = k4.z;
            kk[i + 3] = k4.w;
        }
        ck[0] = fmaf(col[i], k4.x, ck[0]);
        ck[1] = fmaf(col[i + 1], k4.y, ck[1]);
        ck[2] = fmaf(col[i + 2], k4.z, ck[2]);
        ck[3] = fmaf(col[i + 3], k4.w, ck[3]);
        cq[0] = fmaf(col[i], q4.x, cq[0]);
        cq[1] = fmaf(col[i + 1], q4.y, cq[1]);
        cq[2] = fmaf(col[i + 2], q4.z, cq[2]);
        cq[3] = fmaf(col[i + 3], q4.w, cq[3]);
    }
    cks = (ck[0] + ck[1]) + (ck[2] + ck[3]);
    cqs = (cq[0] + cq[1]) + (cq[2] + cq[3]);
    cks += __shfl_xor_sync(0xffffffffu, cks, 1);
    cqs += __shfl_xor_sync(0xffffffffu, cqs, 1);
    cks += __shfl_xor_sync(0xffffffffu, cks, 2);
    cqs += __shfl_xor_sync(0xffffffffu, cqs, 2);
}

struct pf_code16 {
    float c[16];
};

__device__ __forceinline__ float pf_silu(float z)
{
    return z / (1.0f + expf(-z));
}

__device__ __forceinline__ float pf_round(float w, int rnd)
{
    if (rnd == FW_RND_BF16) return __bfloat162float(__float2bfloat16_rn(w));
    if (rnd == FW_RND_F16) return __half2float(__float2half_rn(w));
    return w;
}

__device__ __forceinline__ void pf_cp4(float *dst, const float *src)
{
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(d), "l"(src) : "memory");
}

__device__ __forceinline__ void pf_cp_commit(void)
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N> __device__ __forceinline__ void pf_cp_wait(void)
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* ------------------------------------------------------------------------------------------ */
/* causal conv1d + SiLU over T tokens (prefill) */

#define PF_CONV_TT 16 /* tokens per thread */

/* out[t, c] = silu(sum_j w[c, j] seq[t + 1 + j]) with seq = state[c, 0..K) ++ mixed[0..T, c]
 * (the state's oldest column first; state[c, 0] is never read). Thread per (channel, 16
 * tokens). mixed, out: (T, cd); w, st: (cd, K); K <= 8. The state is updated by k_pf_conv_state
 * after this kernel (every block reads the old state). */
__global__ void __launch_bounds__(128)
    k_pf_conv(const float *mixed, const float *w, const float *st, float *out, int cd, int K, int T)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x, t0 = blockIdx.y * PF_CONV_TT;
    if (c >= cd) return;
    float wc[8], win[8];
#pragma unroll
    for (int j = 0; j < 8; j++) {
        wc[j] = j < K ? w[(int64_t)c * K + j] : 0.f;
        win[j] = 0.f;
    }
    /* window before token t0: seq[t0 + 1 .. t0 + K - 1] into win[1 .. K-1] */
#pragma unroll
    for (int j = 1; j < 8; j++) {
        if (j >= K) break;
        const int s = t0 + j; /* seq index */
        win[j] = s < K ? st[(int64_t)c * K + s] : mixed[(int64_t)(s - K) * cd + c];
    }
    const int t1 = min(T, t0 + PF_CONV_TT);
    for (int t = t0; t < t1; t++) {
        const float xn = mixed[(int64_t)t * cd + c];
        float y = 0.f;
#pragma unroll
        for (int j = 0; j < 7; j++)
            if (j < K - 1) y = fmaf(wc[j], win[j + 1], y);
#pragma unroll
        for (int j = 0; j < 7; j++)
            win[j] = win[j + 1];
        y = fmaf(wc[K - 1], xn, y);
        /* win[K-1] = xn: keep the register array indexed by constants */
#pragma unroll
        for (int j = 0; j < 8; j++)
            if (j == K - 1) win[j] = xn;
        out[(int64_t)t * cd + c] = pf_silu(y);
    }
}

/* New conv state: st[c, j] = seq[T + j], j < K (in place: reads only indices above j). */
__global__ void k_pf_conv_state(const float *mixed, float *st, int cd, int K, int T)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cd) return;
    for (int j = 0; j < K; j++) {
        const int s = T + j;
        st[(int64_t)c * K + j] = s < K ? st[(int64_t)c * K + s] : mixed[(int64_t)(s - K) * cd + c];
    }
}

/* ------------------------------------------------------------------------------------------ */
/* gated delta rule, 4 lanes per state column */

#define PF_GDN_CT 16   /* tokens per staged chunk */
#define PF_GDN_COLS 32 /* state columns per block (4 lanes each: 128 threads) */

/* Shared-memory floats of one staged chunk for dk = 4 * SL: per token q and k (4 slices of SL,
 * each padded to SL + 4 so that the 4 lanes of a column read different banks), 32 values of v,
 * g and beta; plus k.q per token. */
template <int SL> struct pf_gdn_lay {
    static constexpr int P = SL + 4, QK = 4 * P;
    static constexpr int Q = 0, K = PF_GDN_CT * QK, V = 2 * PF_GDN_CT * QK,
                         G = V + PF_GDN_CT * PF_GDN_COLS, B = G + PF_GDN_CT, KQ = B + PF_GDN_CT,
                         SIZE = KQ + PF_GDN_CT;
};

/* q, k l2-normalised (q also scaled by dk^-0.5) for T tokens, in parallel: block per token,
 * warp per key head. qk: (T, 2 kd) [q | k]; kq: (T, Hk) = q.k after normalisation; gg (T, Hv)
 * becomes e^g in place. conv: (T, cd) post-conv/SiLU. */
__global__ void k_pf_gdn_prep(const float *conv, float *gg, float *qk, float *kq, int Hk, int Hv,
                              int dk, int cd)
{
    const int t = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31,
              nw = blockDim.x >> 5;
    const int kd = Hk * dk;
    const float qscale = rsqrtf((float)dk);
    const float *ct = conv + (int64_t)t * cd;
    float *ot = qk + (int64_t)t * 2 * kd;
    for (int kh = warp; kh < Hk; kh += nw) {
        float sq = 0.f, sk = 0.f, sqk = 0.f;
        for (int i = lane; i < dk; i += 32) {
            const float a = ct[kh * dk + i], b = ct[kd + kh * dk + i];
            sq = fmaf(a, a, sq);
            sk = fmaf(b, b, sk);
            sqk = fmaf(a, b, sqk);
        }
        sq = hmoe_warp_sum(sq);
        sk = hmoe_warp_sum(sk);
        sqk = hmoe_warp_sum(sqk);
        const float iq = rsqrtf(sq + 1e-6f) * qscale, ik = rsqrtf(sk + 1e-6f);
        for (int i = lane; i < dk; i += 32) {
            ot[kh * dk + i] = ct[kh * dk + i] * iq;
            ot[kd + kh * dk + i] = ct[kd + kh * dk + i] * ik;
        }
        if (lane == 0) kq[(int64_t)t * Hk + kh] = sqk * iq * ik;
    }
    for (int h = threadIdx.x; h < Hv; h += blockDim.x)
        gg[(int64_t)t * Hv + h] = expf(gg[(int64_t)t * Hv + h]);
}

__device__ __forceinline__ void pf_cp16(float *dst, const float *src)
{
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src) : "memory");
}

/* Gated delta rule over T tokens (recurrent, state in place), dk = 4 * SL: block per (value head
 * h, 32 value columns); thread (column jl = tid / 4, slice sub = tid % 4) keeps S[sub*SL ..
 * sub*SL + SL, j] in registers. Chunks of 16 tokens are staged by cp.async one chunk ahead.
 * PRE = false: raw q, k, v, g, beta from conv / gg (q, k l2-normalised here, the decode step);
 * PRE = true: q, k, k.q and e^g from k_pf_gdn_prep (qk, kq, gg), 16-byte copies.
 * Per token: ck = S.k, cq = S.q (old S), delta = (v - e^g ck) beta, out = e^g cq + delta (k.q),
 *   S = e^g S + k delta.
 * conv: (T, cd) post-conv/SiLU [q | k | v]; beta, gg: (T, Hv); S: (Hv, dk, dv); o: (T, Hv*dv)
 * raw output (the gated norm runs after). */
template <int SL, bool PRE>
__global__ void __launch_bounds__(128)
    k_pf_gdn(const float *conv, const float *qkp, const float *kqp, const float *beta,
             const float *gg, float *S, float *o, int Hk, int Hv, int dv, int T)
{
    fw_pdl_trigger();
    using L = pf_gdn_lay<SL>;
    constexpr int DK = 4 * SL;
    extern __shared__ __align__(16) float sm[]; /* 2 chunks */
    const int h = blockIdx.x, tid = threadIdx.x, jl = tid >> 2, sub = tid & 3;
    const int c0 = blockIdx.y * PF_GDN_COLS, j = c0 + jl;
    const int ratio = Hv / Hk, kh = h / ratio, kd = Hk * DK, cd = 2 * kd + Hv * dv, vd = Hv * dv;
    const int ncols = min(PF_GDN_COLS, dv - c0);
    const bool act = jl < ncols, v16 = PRE && (dv & 3) == 0;
    const float qscale = rsqrtf((float)DK);
    float col[SL];
    float *Sh = S + (int64_t)h * DK * dv + j;
#pragma unroll
    for (int i = 0; i < SL; i++)
        col[i] = act ? Sh[(int64_t)(sub * SL + i) * dv] : 0.f;
    const int nch = (T + PF_GDN_CT - 1) / PF_GDN_CT;
    /* stage chunk c into buffer b */
    auto stage = [&](int c, int b) {
        float *buf = sm + b * L::SIZE;
        const int t0 = c * PF_GDN_CT, n = min(PF_GDN_CT, T - t0);
        if (PRE) {
            for (int x = tid; x < n * 2 * (DK / 4); x += blockDim.x) {
                const int tt = x / (2 * (DK / 4)), r = (x % (2 * (DK / 4))) * 4, isk = r >= DK,
                          i = r - isk * DK;
                pf_cp16(buf + (isk ? L::K : L::Q) + tt * L::QK + (i / SL) * L::P + i % SL,
                        qkp + (int64_t)(t0 + tt) * 2 * kd + isk * kd + kh * DK + i);
            }
        } else {
            for (int x = tid; x < n * 2 * DK; x += blockDim.x) {
                const int tt = x / (2 * DK), r = x % (2 * DK), isk = r >= DK, i = r - isk * DK;
                pf_cp4(buf + (isk ? L::K : L::Q) + tt * L::QK + (i / SL) * L::P + i % SL,
                       conv + (int64_t)(t0 + tt) * cd + isk * kd + kh * DK + i);
            }
        }
        const float *vsrc = conv + (int64_t)t0 * cd + 2 * kd + (int64_t)h * dv + c0;
        if (v16) {
            const int nq = ncols / 4;
            for (int x = tid; x < n * nq; x += blockDim.x) {
                const int tt = x / nq, jj = (x % nq) * 4;
                pf_cp16(buf + L::V + tt * PF_GDN_COLS + jj, vsrc + (int64_t)tt * cd + jj);
            }
        } else {
            for (int x = tid; x < n * ncols; x += blockDim.x) {
                const int tt = x / ncols, jj = x % ncols;
                pf_cp4(buf + L::V + tt * PF_GDN_COLS + jj, vsrc + (int64_t)tt * cd + jj);
            }
        }
        for (int x = tid; x < (PRE ? 3 : 2) * n; x += blockDim.x) {
            const int tt = x % n, w = x / n; /* 0: g, 1: beta, 2: k.q */
            const float *src = w == 0   ? gg + (int64_t)(t0 + tt) * Hv + h
                               : w == 1 ? beta + (int64_t)(t0 + tt) * Hv + h
                                        : kqp + (int64_t)(t0 + tt) * Hk + kh;
            pf_cp4(buf + (w == 0 ? L::G : w == 1 ? L::B : L::KQ) + tt, src);
        }
        pf_cp_commit();
    };
    if (nch > 0) stage(0, 0);
    for (int c = 0; c < nch; c++) {
        const int b = c & 1, t0 = c * PF_GDN_CT, n = min(PF_GDN_CT, T - t0);
        if (c + 1 < nch) {
            stage(c + 1, b ^ 1);
            pf_cp_wait<1>();
        } else {
            pf_cp_wait<0>();
        }
        __syncthreads();
        float *buf = sm + b * L::SIZE;
        if (!PRE) {
            /* l2 norms (warp per row of q or k), decay = e^g, then k.q per token */
            const int warp = tid >> 5, lane = tid & 31;
            for (int r = warp; r < 2 * n; r += 4) {
                const int tt = r >> 1, isk = r & 1;
                float *row = buf + (isk ? L::K : L::Q) + tt * L::QK;
                float ss = 0.f;
                for (int i = lane; i < DK; i += 32) {
                    const float v = row[(i / SL) * L::P + i % SL];
                    ss = fmaf(v, v, ss);
                }
                ss = hmoe_warp_sum(ss);
                const float inv = rsqrtf(ss + 1e-6f) * (isk ? 1.f : qscale);
                for (int i = lane; i < DK; i += 32)
                    row[(i / SL) * L::P + i % SL] *= inv;
            }
            __syncthreads();
            for (int r = warp; r < n; r += 4) {
                const float *qr = buf + L::Q + r * L::QK, *kr = buf + L::K + r * L::QK;
                float s = 0.f;
                for (int i = lane; i < DK; i += 32) {
                    const int a = (i / SL) * L::P + i % SL;
                    s = fmaf(qr[a], kr[a], s);
                }
                s = hmoe_warp_sum(s);
                if (lane == 0) {
                    buf[L::KQ + r] = s;
                    buf[L::G + r] = expf(buf[L::G + r]);
                }
            }
            __syncthreads();
        }
        for (int tt = 0; tt < n; tt++) {
            const float *kr = buf + L::K + tt * L::QK + sub * L::P,
                        *qr = buf + L::Q + tt * L::QK + sub * L::P;
            float kk[SL], cks, cqs;
            pf_col_dots<SL, true>(col, kr, qr, kk, cks, cqs);
            const float dec = buf[L::G + tt], bt = buf[L::B + tt];
            const float vj = act ? buf[L::V + tt * PF_GDN_COLS + jl] : 0.f;
            const float delta = (vj - dec * cks) * bt;
            if (act && sub == 0)
                o[(int64_t)(t0 + tt) * vd + (int64_t)h * dv + j] =
                    fmaf(dec, cqs, delta * buf[L::KQ + tt]);
#pragma unroll
            for (int i = 0; i < SL; i++)
                col[i] = fmaf(col[i], dec, kk[i] * delta);
        }
        __syncthreads(); /* the next stage() refills this buffer */
    }
    if (act)
#pragma unroll
        for (int i = 0; i < SL; i++)
            Sh[(int64_t)(sub * SL + i) * dv] = col[i];
}

/* Decode (T = 1): the GDN de-interleave, the conv step with its state, z, beta and g in one
 * kernel, thread per channel (as k_gdn_split + k_conv). qkvz: (Hk * gw) with gw = 2 dk + 2 ratio
 * dv per key head [q | k | v | z]; ba: (2 Hv); conv: (cd) post-conv/SiLU; z: (vd); beta, gg: (Hv);
 * w, st: (cd, K). bat: token blockIdx.y of a batched step (fwd_launch.h). */
__global__ void k_pf_split_conv1(const float *qkvz, const float *ba, const float *dtb,
                                 const float *nea, const float *w, float *st, float *conv, float *z,
                                 float *beta, float *gg, int Hk, int Hv, int dk, int dv, int K,
                                 const int *bat, int64_t css)
{
    fw_pdl_trigger();
    const int i = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    const int ratio = Hv / Hk, gw = 2 * dk + 2 * ratio * dv, kd = Hk * dk, vd = Hv * dv;
    const int cd = 2 * kd + vd;
    if (bat) { /* token b of a batched step: its rows, its sequence's conv state */
        if (b >= bat[0]) return;
        qkvz += (int64_t)b * Hk * gw;
        ba += (int64_t)b * 2 * Hv;
        st += bat[FW_BAT_SEQ + b] * css;
        conv += (int64_t)b * cd;
        z += (int64_t)b * vd;
        beta += (int64_t)b * Hv;
        gg += (int64_t)b * Hv;
    }
    if (i < cd) {
        const int s = fw_qkv_src(i, dk, dv, kd, ratio, gw);
        const float xn = qkvz[s];
        const float *wc = w + (int64_t)i * K;
        float *sc = st + (int64_t)i * K;
        float y = 0.f;
        for (int j = 0; j < K - 1; j++) {
            const float v = sc[j + 1];
            y = fmaf(wc[j], v, y);
            sc[j] = v;
        }
        y = fmaf(wc[K - 1], xn, y);
        sc[K - 1] = xn;
        conv[i] = pf_silu(y);
    }
    if (i < vd) {
        const int g = i / (ratio * dv), r = i % (ratio * dv);
        z[i] = qkvz[g * gw + 2 * dk + ratio * dv + r];
    }
    if (i < Hv) {
        const int g = i / ratio, r = i % ratio;
        const float b = ba[g * 2 * ratio + r], a = ba[g * 2 * ratio + ratio + r];
        beta[i] = 1.0f / (1.0f + expf(-b));
        const float x = a + dtb[i];
        gg[i] = nea[i] * (x > 20.f ? x : log1pf(expf(x)));
    }
}

/* Decode (T = 1): one gated delta rule step fused with the gated RMSNorm; block per value head,
 * 4 lanes per state column (dk = 4 SL, thread (j = tid / 4, sub = tid % 4)), dv <= 256.
 * conv: (cd); beta, gg: (Hv) raw g; S: (Hv, dk, dv) in place; z, o: (Hv * dv);
 * o = lnw * out * rsqrt(mean(out^2) + eps) * silu(z). */
template <int SL>
__global__ void __launch_bounds__(1024)
    k_pf_gdn_dec(const float *conv, const float *beta, const float *gg, float *S, const float *z,
                 const float *lnw, float *o, int Hk, int Hv, int dv, float eps, const int *bat,
                 int64_t rss)
{
    fw_pdl_trigger();
    constexpr int DK = 4 * SL, P = SL + 4;
    __shared__ __align__(16) float qs[4 * P], ks[4 * P];
    __shared__ float red[40];
    const int h = blockIdx.x, tid = threadIdx.x, jl = tid >> 2, sub = tid & 3, lane = tid & 31,
              warp = tid >> 5;
    const int ratio = Hv / Hk, kh = h / ratio, kd = Hk * DK;
    if (bat) { /* token b of a batched step: its rows, its sequence's state */
        const int b = blockIdx.y;
        if (b >= bat[0]) return;
        conv += (int64_t)b * (2 * kd + Hv * dv);
        beta += (int64_t)b * Hv;
        gg += (int64_t)b * Hv;
        S += bat[FW_BAT_SEQ + b] * rss;
        z += (int64_t)b * Hv * dv;
        o += (int64_t)b * Hv * dv;
    }
    const bool act = jl < dv;
    for (int i = tid; i < 2 * DK; i += blockDim.x) {
        const int isk = i >= DK, ii = i - isk * DK;
        (isk ? ks : qs)[(ii / SL) * P + ii % SL] = conv[isk * kd + kh * DK + ii];
    }
    float col[SL];
    float *Sh = S + (int64_t)h * DK * dv + jl;
#pragma unroll
    for (int i = 0; i < SL; i++)
        col[i] = act ? Sh[(int64_t)(sub * SL + i) * dv] : 0.f;
    __syncthreads();
    if (warp == 0) {
        float sq = 0.f, sk = 0.f, sqk = 0.f;
        for (int i = lane; i < DK; i += 32) {
            const float a = qs[(i / SL) * P + i % SL], b = ks[(i / SL) * P + i % SL];
            sq = fmaf(a, a, sq);
            sk = fmaf(b, b, sk);
            sqk = fmaf(a, b, sqk);
        }
        sq = hmoe_warp_sum(sq);
        sk = hmoe_warp_sum(sk);
        sqk = hmoe_warp_sum(sqk);
        if (lane == 0) {
            const float iq = rsqrtf(sq + 1e-6f) * rsqrtf((float)DK), ik = rsqrtf(sk + 1e-6f);
            red[32] = iq;
            red[33] = ik;
            red[34] = sqk * iq * ik;
            red[35] = expf(gg[h]);
            red[36] = beta[h];
        }
    }
    __syncthreads();
    const float iq = red[32], ik = red[33], kq = red[34], dec = red[35], bt = red[36];
    const float *kr = ks + sub * P, *qr = qs + sub * P;
    float cks, cqs;
    pf_col_dots<SL, false>(col, kr, qr, nullptr, cks, cqs);
    cks *= ik;
    cqs *= iq;
    const float vj = act ? conv[2 * kd + h * dv + jl] : 0.f;
    const float delta = (vj - dec * cks) * bt;
    const float out = fmaf(dec, cqs, delta * kq);
    if (act)
#pragma unroll
        for (int i = 0; i < SL; i++)
            Sh[(int64_t)(sub * SL + i) * dv] = fmaf(col[i], dec, (kr[i] * ik) * delta);
    /* gated norm over the head's dv outputs (one lane per column contributes) */
    float ss = act && sub == 0 ? out * out : 0.f;
    ss = hmoe_warp_sum(ss);
    if (lane == 0) red[warp] = ss;
    __syncthreads();
    if (warp == 0) {
        float v = lane < (int)(blockDim.x >> 5) ? red[lane] : 0.f;
        v = hmoe_warp_sum(v);
        if (lane == 0) red[37] = v;
    }
    __syncthreads();
    if (act && sub == 0) {
        const float inv = rsqrtf(red[37] / (float)dv + eps);
        const float zv = z[(int64_t)h * dv + jl];
        o[(int64_t)h * dv + jl] = (lnw[jl] * (out * inv)) * pf_silu(zv);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* tiled causal attention (prefill) */

#define PF_BQ 64
#define PF_BK 64

/* Row r of a 64-row tile into shared memory transposed (dst[d * LD + r], d < D), zeros when
 * !ok; the 256 threads: row tid % 64, 8 columns at a time from (tid / 64) * 8, step 32. */
template <int D, int LD>
__device__ __forceinline__ void pf_row_t(float *dst, int r, const float *src, bool ok, int tid)
{
    for (int d0 = (tid >> 6) * 8; d0 < D; d0 += 32) {
        float4 a = make_float4(0.f, 0.f, 0.f, 0.f), b = a;
        if (ok) {
            a = *(const float4 *)(src + d0);
            b = *(const float4 *)(src + d0 + 4);
        }
        dst[(d0 + 0) * LD + r] = a.x;
        dst[(d0 + 1) * LD + r] = a.y;
        dst[(d0 + 2) * LD + r] = a.z;
        dst[(d0 + 3) * LD + r] = a.w;
        dst[(d0 + 4) * LD + r] = b.x;
        dst[(d0 + 5) * LD + r] = b.y;
        dst[(d0 + 6) * LD + r] = b.z;
        dst[(d0 + 7) * LD + r] = b.w;
    }
}

/* Block per (tile of 64 queries, query head h), 256 threads: thread (tr = tid / 16, tc = tid %
 * 16) owns query rows tr*4 .. tr*4+3; in the score step keys tc*4 .. tc*4+3 of the tile, in the
 * output step columns tc*4 + 64 jj (+0..3), jj < D/64. Shared memory: Q^T [D][64], one K^T
 * [D][64] / V [64][D] buffer, P [64][68]. Keys of query t (position pos0 + t) are 0 .. pos0 + t;
 * tiles above the last query's position are skipped, the last ones masked. q, gate, o:
 * (T, Hq, D); kc, vc: (Hkv, cap, D) with the chunk's keys already written. */
template <int D>
__global__ void __launch_bounds__(256, 1)
    k_pf_attn(const float *q, const float *gate, const float *kc, const float *vc, const int *d_pos,
              float *o, int T, int Hq, int Hkv, int cap, float scale)
{
    constexpr int NJ = D / 64, PS = PF_BK + 4;
    extern __shared__ __align__(16) float sm[];
    float *Qt = sm, *KV = sm + D * PF_BQ, *Ps = KV + D * PF_BK;
    const int nqt = (int)gridDim.x, qt = nqt - 1 - (int)blockIdx.x; /* longest tiles first */
    const int h = blockIdx.y, g = h / (Hq / Hkv), tid = threadIdx.x, tr = tid >> 4, tc = tid & 15;
    const int pos0 = *d_pos, q0 = qt * PF_BQ;
    const int qlast = pos0 + min(q0 + PF_BQ, T) - 1; /* position of the tile's last query */
    const float *kg = kc + (int64_t)g * cap * D, *vg = vc + (int64_t)g * cap * D;
    /* Q^T: thread (row = tid % 64, d chunk of 8) */
    {
        const int r = tid & 63;
        const bool ok = q0 + r < T;
        const float *src = q + ((int64_t)(q0 + r) * Hq + h) * D;
        pf_row_t<D, PF_BQ>(Qt, r, src, ok, tid);
    }
    float acc[4][4 * NJ];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int c = 0; c < 4 * NJ; c++)
            acc[i][c] = 0.f;
    float m[4], l[4];
    int qp[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        m[i] = -INFINITY;
        l[i] = 0.f;
        qp[i] = pos0 + q0 + tr * 4 + i;
    }
    const int nkt = qlast / PF_BK + 1;
    for (int kt = 0; kt < nkt; kt++) {
        const int k0 = kt * PF_BK;
        __syncthreads(); /* previous V reads done (and Q^T written, first time) */
        {
            const int r = tid & 63;
            const bool ok = k0 + r <= qlast;
            const float *src = kg + (int64_t)(k0 + r) * D;
            pf_row_t<D, PF_BK>(KV, r, src, ok, tid);
        }
        __syncthreads();
        float s[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int c = 0; c < 4; c++)
                s[i][c] = 0.f;
#pragma unroll 8
        for (int d = 0; d < D; d++) {
            const float4 qa = *(const float4 *)(Qt + d * PF_BQ + tr * 4);
            const float4 ka = *(const float4 *)(KV + d * PF_BK + tc * 4);
            const float qv[4] = {qa.x, qa.y, qa.z, qa.w}, kv[4] = {ka.x, ka.y, ka.z, ka.w};
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int c = 0; c < 4; c++)
                    s[i][c] = fmaf(qv[i], kv[c], s[i][c]);
        }
        /* mask, online softmax (row stats over the 16 lanes of this row group) */
        const bool need_mask = k0 + PF_BK - 1 > pos0 + q0;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float mx = -INFINITY;
#pragma unroll
            for (int c = 0; c < 4; c++) {
                float v = s[i][c] * scale;
                if (need_mask && k0 + tc * 4 + c > qp[i]) v = -INFINITY;
                s[i][c] = v;
                mx = fmaxf(mx, v);
            }
#pragma unroll
            for (int x = 1; x < 16; x <<= 1)
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, x));
            const float mn = fmaxf(m[i], mx); /* finite: key 0 is in the first tile */
            const float corr = m[i] == -INFINITY ? 0.f : expf(m[i] - mn);
            float sum = 0.f;
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const float p = s[i][c] == -INFINITY ? 0.f : expf(s[i][c] - mn);
                s[i][c] = p;
                sum += p;
            }
#pragma unroll
            for (int x = 1; x < 16; x <<= 1)
                sum += __shfl_xor_sync(0xffffffffu, sum, x);
            l[i] = l[i] * corr + sum;
            m[i] = mn;
#pragma unroll
            for (int c = 0; c < 4 * NJ; c++)
                acc[i][c] *= corr;
            *(float4 *)(Ps + (tr * 4 + i) * PS + tc * 4) =
                make_float4(s[i][0], s[i][1], s[i][2], s[i][3]);
        }
        __syncthreads(); /* K^T reads done, P written */
        {
            const float *src = vg + (int64_t)k0 * D;
            for (int x = tid; x < PF_BK * D / 4; x += 256) {
                const int r = x / (D / 4);
                float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
                if (k0 + r <= qlast) v = *(const float4 *)(src + (int64_t)x * 4);
                *(float4 *)(KV + x * 4) = v;
            }
        }
        __syncthreads();
#pragma unroll 2
        for (int k = 0; k < PF_BK; k += 4) {
            float pv[4][4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float4 p4 = *(const float4 *)(Ps + (tr * 4 + i) * PS + k);
                pv[i][0] = p4.x;
                pv[i][1] = p4.y;
                pv[i][2] = p4.z;
                pv[i][3] = p4.w;
            }
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
#pragma unroll
                for (int jj = 0; jj < NJ; jj++) {
                    const float4 v4 = *(const float4 *)(KV + (k + kk) * D + tc * 4 + 64 * jj);
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        acc[i][4 * jj + 0] = fmaf(pv[i][kk], v4.x, acc[i][4 * jj + 0]);
                        acc[i][4 * jj + 1] = fmaf(pv[i][kk], v4.y, acc[i][4 * jj + 1]);
                        acc[i][4 * jj + 2] = fmaf(pv[i][kk], v4.z, acc[i][4 * jj + 2]);
                        acc[i][4 * jj + 3] = fmaf(pv[i][kk], v4.w, acc[i][4 * jj + 3]);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int t = q0 + tr * 4 + i;
        if (t >= T) continue;
        const float inv = 1.f / l[i];
        const int64_t base = ((int64_t)t * Hq + h) * D;
#pragma unroll
        for (int jj = 0; jj < NJ; jj++) {
            const int d = tc * 4 + 64 * jj;
            const float4 g4 = *(const float4 *)(gate + base + d);
            float4 r;
            r.x = acc[i][4 * jj + 0] * inv * (1.0f / (1.0f + expf(-g4.x)));
            r.y = acc[i][4 * jj + 1] * inv * (1.0f / (1.0f + expf(-g4.y)));
            r.z = acc[i][4 * jj + 2] * inv * (1.0f / (1.0f + expf(-g4.z)));
            r.w = acc[i][4 * jj + 3] * inv * (1.0f / (1.0f + expf(-g4.w)));
            *(float4 *)(o + base + d) = r;
        }
    }
}

/* Tensor-core (TF32) variant for the TF32 prefill mode: block per (64 queries, query head h), 4
 * warps of 16 query rows, 64 keys per step; S = Q K^T and O += P V by mma.m16n8k8 tf32 with fp32
 * accumulation (q, k, v enter as fp32 bit patterns: the tensor cores ignore the low 13 mantissa
 * bits; p is rounded to tf32), online softmax in fp32 on the accumulator fragments. Q, the K
 * tile, the V tile and each warp's P live in shared memory (~213 KB for D = 256, one block per
 * SM); the next K tile is copied (cp.async) during P V, the next V tile during Q K^T; key rows
 * past the last query's position are zero-filled. Shapes as k_pf_attn. */
__device__ __forceinline__ void pf_cp16z(float *dst, const float *src, bool ok)
{
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src),
                 "r"(ok ? 16 : 0)
                 : "memory");
}

__device__ __forceinline__ void pf_mma_tf32(float *c, uint32_t a0, uint32_t a1, uint32_t a2,
                                            uint32_t a3, uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pf_tf32(float x)
{
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
    return r;
}

template <int D> struct pf_tc_lay {
    static constexpr int LQ = D + 4, LK = D + 4, LV = D + 8, LP = 68;
    static constexpr int Q = 0, K = 64 * LQ, V = K + 64 * LK, P = V + 64 * LV,
                         SIZE = P + 4 * 16 * LP;
};

template <int D>
__global__ void __launch_bounds__(128, 1)
    k_pf_attn_tc(const float *q, const float *gate, const float *kc, const float *vc,
                 const int *d_pos, float *o, int T, int Hq, int Hkv, int cap, float scale)
{
    using L = pf_tc_lay<D>;
    constexpr int NT = D / 8, C4 = D / 4;
    extern __shared__ __align__(16) float sm[];
    float *Qs = sm + L::Q, *Ks = sm + L::K, *Vs = sm + L::V;
    const int nqt = (int)gridDim.x, qt = nqt - 1 - (int)blockIdx.x; /* longest tiles first */
    const int h = blockIdx.y, kvh = h / (Hq / Hkv), tid = threadIdx.x, warp = tid >> 5,
              lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    float *Pw = sm + L::P + warp * 16 * L::LP;
    const int pos0 = *d_pos, q0 = qt * 64;
    const int qlast = pos0 + min(q0 + 64, T) - 1, nkt = qlast / 64 + 1;
    const float *kg = kc + (int64_t)kvh * cap * D, *vg = vc + (int64_t)kvh * cap * D;
    for (int x = tid; x < 64 * C4; x += 128) {
        const int r = x / C4, c = (x % C4) * 4;
        const bool ok = q0 + r < T;
        pf_cp16z(Qs + r * L::LQ + c, q + ((int64_t)(ok ? q0 + r : 0) * Hq + h) * D + c, ok);
    }
    auto load = [&](float *dst, int ld, const float *src, int k0) {
        for (int x = tid; x < 64 * C4; x += 128) {
            const int r = x / C4, c = (x % C4) * 4;
            const bool ok = k0 + r <= qlast;
            pf_cp16z(dst + r * ld + c, src + (int64_t)(ok ? k0 + r : 0) * D + c, ok);
        }
    };
    load(Ks, L::LK, kg, 0);
    pf_cp_commit();
    load(Vs, L::LV, vg, 0);
    pf_cp_commit();
    float oacc[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            oacc[nt][e] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    const int r0 = warp * 16 + g, qp0 = pos0 + q0 + r0, qp1 = qp0 + 8;
    const float *qa = Qs + r0 * L::LQ + t4;
    for (int kt = 0; kt < nkt; kt++) {
        const int k0 = kt * 64;
        pf_cp_wait<1>(); /* K(kt) (and Q) */
        __syncthreads();
        float sacc[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                sacc[nt][e] = 0.f;
#pragma unroll 4
        for (int kk = 0; kk < D; kk += 8) {
            const uint32_t a0 = __float_as_uint(qa[kk]), a1 = __float_as_uint(qa[8 * L::LQ + kk]),
                           a2 = __float_as_uint(qa[kk + 4]),
                           a3 = __float_as_uint(qa[8 * L::LQ + kk + 4]);
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                const float *kb = Ks + (nt * 8 + g) * L::LK + kk + t4;
                pf_mma_tf32(sacc[nt], a0, a1, a2, a3, __float_as_uint(kb[0]),
                            __float_as_uint(kb[4]));
            }
        }
        const bool need_mask = k0 + 63 > pos0 + q0;
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int key = k0 + nt * 8 + 2 * t4 + e;
                float v0 = sacc[nt][e] * scale, v1 = sacc[nt][2 + e] * scale;
                if (need_mask && key > qp0) v0 = -INFINITY;
                if (need_mask && key > qp1) v1 = -INFINITY;
                sacc[nt][e] = v0;
                sacc[nt][2 + e] = v1;
                mx0 = fmaxf(mx0, v0);
                mx1 = fmaxf(mx1, v1);
            }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1); /* finite: key 0 is in tile 0 */
        const float c0 = m0 == -INFINITY ? 0.f : expf(m0 - mn0),
                    c1 = m1 == -INFINITY ? 0.f : expf(m1 - mn1);
        float s0 = 0.f, s1 = 0.f;
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            float p[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float sv = sacc[nt][e], mm = e < 2 ? mn0 : mn1;
                p[e] = sv == -INFINITY ? 0.f : expf(sv - mm);
            }
            s0 += p[0] + p[1];
            s1 += p[2] + p[3];
            *(float2 *)(Pw + g * L::LP + nt * 8 + 2 * t4) =
                make_float2(__uint_as_float(pf_tf32(p[0])), __uint_as_float(pf_tf32(p[1])));
            *(float2 *)(Pw + (g + 8) * L::LP + nt * 8 + 2 * t4) =
                make_float2(__uint_as_float(pf_tf32(p[2])), __uint_as_float(pf_tf32(p[3])));
        }
        s0 += __shfl_xor_sync(0xffffffffu, s0, 1);
        s0 += __shfl_xor_sync(0xffffffffu, s0, 2);
        s1 += __shfl_xor_sync(0xffffffffu, s1, 1);
        s1 += __shfl_xor_sync(0xffffffffu, s1, 2);
        l0 = l0 * c0 + s0;
        l1 = l1 * c1 + s1;
        m0 = mn0;
        m1 = mn1;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            oacc[nt][0] *= c0;
            oacc[nt][1] *= c0;
            oacc[nt][2] *= c1;
            oacc[nt][3] *= c1;
        }
        __syncthreads(); /* every warp is done with K(kt); P written */
        if (kt + 1 < nkt) load(Ks, L::LK, kg, k0 + 64);
        pf_cp_commit();
        pf_cp_wait<1>(); /* V(kt) */
        __syncthreads();
#pragma unroll 2
        for (int kk = 0; kk < 64; kk += 8) {
            const float *pa = Pw + g * L::LP + kk + t4;
            const uint32_t a0 = __float_as_uint(pa[0]), a1 = __float_as_uint(pa[8 * L::LP]),
                           a2 = __float_as_uint(pa[4]), a3 = __float_as_uint(pa[8 * L::LP + 4]);
            const float *vb = Vs + (kk + t4) * L::LV + g;
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
                pf_mma_tf32(oacc[nt], a0, a1, a2, a3, __float_as_uint(vb[nt * 8]),
                            __float_as_uint(vb[4 * L::LV + nt * 8]));
        }
        __syncthreads(); /* every warp is done with V(kt) */
        if (kt + 1 < nkt) load(Vs, L::LV, vg, k0 + 64);
        pf_cp_commit();
    }
    pf_cp_wait<0>();
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int t = q0 + r0 + 8 * hf;
        if (t >= T) continue;
        const float inv = 1.f / (hf ? l1 : l0);
        const int64_t base = ((int64_t)t * Hq + h) * D;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            const int d = nt * 8 + 2 * t4;
            const float2 g2 = *(const float2 *)(gate + base + d);
            *(float2 *)(o + base + d) =
                make_float2(oacc[nt][2 * hf] * inv * (1.0f / (1.0f + expf(-g2.x))),
                            oacc[nt][2 * hf + 1] * inv * (1.0f / (1.0f + expf(-g2.y))));
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* routed experts for the grouped GEMMs */

/* The three NF4 matrices of expert slot slots[blockIdx.y] -> out + blockIdx.y * 3n (gate, up,
 * down, n = H*I elements each), 16 weights per thread (8 bytes of nibbles, one absmax), rounded
 * as bitsandbytes does (d.rnd); OUT float or __nv_bfloat16 (then d.rnd must be bf16 or the
 * values are rounded once more). */
template <typename OUT>
__global__ void __launch_bounds__(256)
    k_pf_deq_slots(const int32_t *slots, fw_ex_desc d, pf_code16 code, OUT *out, int64_t n)
{
    __shared__ float cs[16]; /* the code table (constant indices: a parameter indexed at run
                                time would be copied to local memory) */
    if (threadIdx.x == 0)
#pragma unroll
        for (int i = 0; i < 16; i++)
            cs[i] = code.c[i];
    __syncthreads();
    const int64_t x = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; /* 16-weight group */
    const int64_t ng = n / 16;
    if (x >= 3 * ng) return;
    const int m = (int)(x / ng);
    const int64_t gi = x - m * ng;
    const uint8_t *base = d.pool + (int64_t)slots[blockIdx.y] * d.slot_bytes;
    const int64_t off = m == 0 ? 0 : m == 1 ? d.o_up : d.o_down;
    const int64_t aoff = m == 0 ? d.o_ag : m == 1 ? d.o_au : d.o_ad;
    const uint2 v = *(const uint2 *)(base + off + gi * 8);
    const float a = ((const float *)(base + aoff))[gi >> 2];
    float w[16];
#pragma unroll
    for (int b = 0; b < 8; b++) {
        const uint32_t word = b < 4 ? v.x : v.y, by = (word >> (8 * (b & 3))) & 255u;
        w[2 * b] = pf_round(cs[by >> 4] * a, d.rnd);
        w[2 * b + 1] = pf_round(cs[by & 15] * a, d.rnd);
    }
    OUT *dst = out + (int64_t)blockIdx.y * 3 * n + m * n + gi * 16;
    if constexpr (sizeof(OUT) == 4) {
#pragma unroll
        for (int q4 = 0; q4 < 4; q4++)
            ((float4 *)dst)[q4] =
                make_float4(w[4 * q4], w[4 * q4 + 1], w[4 * q4 + 2], w[4 * q4 + 3]);
    } else {
        uint32_t pk[8];
#pragma unroll
        for (int p = 0; p < 8; p++) {
            const __nv_bfloat162 b2 = __floats2bfloat162_rn(w[2 * p], w[2 * p + 1]);
            memcpy(&pk[p], &b2, 4);
        }
        ((uint4 *)dst)[0] = make_uint4(pk[0], pk[1], pk[2], pk[3]);
        ((uint4 *)dst)[1] = make_uint4(pk[4], pk[5], pk[6], pk[7]);
    }
}

/* BF16 expert slots -> bf16 copies (blockIdx.y: slot in the list), 8 elements per thread. */
__global__ void k_pf_copy_bf16(const int32_t *slots, fw_ex_desc d, uint16_t *out, int64_t n)
{
    const int64_t x = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, ng = n / 8;
    if (x >= 3 * ng) return;
    const int m = (int)(x / ng);
    const int64_t gi = x - m * ng;
    const uint8_t *base = d.pool + (int64_t)slots[blockIdx.y] * d.slot_bytes;
    const int64_t off = m == 0 ? 0 : m == 1 ? d.o_up : d.o_down;
    ((uint4 *)(out + (int64_t)blockIdx.y * 3 * n + m * n))[gi] = ((const uint4 *)(base + off))[gi];
}

/* dst[i, :] = bf16(src[rows[i], :]) (cols elements). */
__global__ void k_pf_gather_bf16(const float *src, const int32_t *rows, __nv_bfloat16 *dst,
                                 int cols)
{
    const int i = blockIdx.y;
    const int64_t s = rows[i];
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x)
        dst[(int64_t)i * cols + c] = __float2bfloat16_rn(src[s * cols + c]);
}

/* act[i, r] = bf16(silu(C[i, r]) * C[i, I + r]) (C: (n, 2I) gate | up, fp32). */
__global__ void k_pf_silu_gu_bf16(const float *C, __nv_bfloat16 *act, int I, int64_t n)
{
    const int64_t x = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (x >= n * I) return;
    const int64_t i = x / I, r = x % I;
    act[x] = __float2bfloat16_rn(pf_silu(C[i * 2 * I + r]) * C[i * 2 * I + I + r]);
}

/* ------------------------------------------------------------------------------------------ */
/* routed experts as one fused NF4 x bf16 tensor-core GEMM (TF32/fast prefill mode) */

#define PF_MM_BM 64  /* tokens per block */
#define PF_MM_BN 128 /* weight rows per block */
#define PF_MM_BK 64  /* k per stage */
#define PF_MM_LD 72  /* bf16 per shared row (64 + 8: conflict-free fragment loads) */

__device__ __forceinline__ void pf_mma_bf16(float *c, const uint32_t *a, const uint32_t *b)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* One block: item = (slot, first row, rows <= 64) of the gathered activations A (bf16, rows x
 * K), 128 weight rows (blockIdx.y), K in steps of 64: the weight tile is dequantized from NF4
 * (bf16(code * absmax), as bitsandbytes rounds) into shared memory, the token tile copied, then
 * mma.m16n8k16 bf16 with fp32 accumulation; the next stage's loads are in flight meanwhile.
 * 8 warps = 2 (32 tokens) x 4 (32 weight rows). MODE 0 (gate|up, K = H): the block's rows are
 * gate rows n0 .. n0+63 then the same up rows, warp wn holds gate and up rows 16 wn .. 16 wn + 15
 * and writes act[row, r] = bf16(silu(gate) * up) (act: bf16, rows x I). MODE 1 (down, K = I):
 * y[row, n] (fp32, rows x H). MODE 2: MODE 1 for one dense weight described as a slot (pool =
 * the weight, o_down = 0, o_ad = its absmax, H = rows, I = cols) over nrows rows of A, item
 * blockIdx.x = rows 64 blockIdx.x .. (items unused). */
template <int MODE>
__global__ void __launch_bounds__(256)
    k_pf_moe_mm(fw_ex_desc d, const int4 *items, const __nv_bfloat16 *A, void *out, int nrows)
{
    __shared__ __align__(16) __nv_bfloat16 As[PF_MM_BM * PF_MM_LD], Bs[PF_MM_BN * PF_MM_LD];
    __shared__ float cs[16];
    const int4 it = MODE == 2 ? make_int4(0, (int)blockIdx.x * PF_MM_BM,
                                          min(PF_MM_BM, nrows - (int)blockIdx.x * PF_MM_BM), 0)
                              : items[blockIdx.x];
    const int K = MODE == 0 ? d.H : d.I;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wm = warp & 1, wn = warp >> 1;
    const int g = lane >> 2, t4 = lane & 3;
    const uint8_t *base = d.pool + (int64_t)it.x * d.slot_bytes;
    /* this thread's weight row (dequant) and half of the 64-wide k step */
    const int brow = tid >> 1, kh = tid & 1;
    const uint8_t *wrow;
    const float *arow;
    if (MODE == 0) {
        const int r = blockIdx.y * 64 + (brow & 63);
        const bool up = brow >= 64;
        wrow = base + (up ? d.o_up : 0) + (int64_t)r * (K / 2);
        arow = (const float *)(base + (up ? d.o_au : d.o_ag)) + (int64_t)r * (K / 64);
    } else {
        const int r = blockIdx.y * PF_MM_BN + brow;
        wrow = base + d.o_down + (int64_t)r * (K / 2);
        arow = (const float *)(base + d.o_ad) + (int64_t)r * (K / 64);
    }
    /* this thread's token row and 32 bytes of it (two 16-byte chunks) */
    const int ar = tid >> 2, ac = (tid & 3) * 16;
    const bool aok = ar < it.z;
    const __nv_bfloat16 *asrc = A + (int64_t)(it.y + (aok ? ar : 0)) * K + ac;
    if (tid == 0)
#pragma unroll
        for (int i = 0; i < 16; i++)
            cs[i] = d.code[i];
    float acc[2][4][4];
#pragma unroll
    for (int a = 0; a < 2; a++)
#pragma unroll
        for (int b = 0; b < 4; b++)
#pragma unroll
            for (int c = 0; c < 4; c++)
                acc[a][b][c] = 0.f;
    const uint4 z4 = make_uint4(0u, 0u, 0u, 0u);
    uint4 pa0 = z4, pa1 = z4, pb;
    float pabs;
    {
        if (aok) {
            pa0 = *(const uint4 *)asrc;
            pa1 = *(const uint4 *)(asrc + 8);
        }
        pb = *(const uint4 *)(wrow + 16 * kh);
        pabs = arow[0];
    }
    /* weight rows of this warp's 4 n-tiles (fragment column g) */
    int nrow[4];
#pragma unroll
    for (int nt = 0; nt < 4; nt++)
        nrow[nt] = MODE == 0 ? (nt < 2 ? wn * 16 + nt * 8 + g : 64 + wn * 16 + (nt - 2) * 8 + g)
                             : wn * 32 + nt * 8 + g;
    for (int k0 = 0; k0 < K; k0 += PF_MM_BK) {
        __syncthreads(); /* the previous stage's fragments are read (and cs is written) */
        *(uint4 *)(As + ar * PF_MM_LD + ac) = pa0;
        *(uint4 *)(As + ar * PF_MM_LD + ac + 8) = pa1;
        {
            uint32_t wv[16];
            const uint32_t q[4] = {pb.x, pb.y, pb.z, pb.w};
#pragma unroll
            for (int b = 0; b < 16; b++) {
                const uint32_t by = (q[b >> 2] >> (8 * (b & 3))) & 255u;
                const __nv_bfloat162 h2 =
                    __floats2bfloat162_rn(cs[by >> 4] * pabs, cs[by & 15] * pabs);
                memcpy(&wv[b], &h2, 4);
            }
            uint4 *dst = (uint4 *)(Bs + brow * PF_MM_LD + 32 * kh);
            dst[0] = make_uint4(wv[0], wv[1], wv[2], wv[3]);
            dst[1] = make_uint4(wv[4], wv[5], wv[6], wv[7]);
            dst[2] = make_uint4(wv[8], wv[9], wv[10], wv[11]);
            dst[3] = make_uint4(wv[12], wv[13], wv[14], wv[15]);
        }
        __syncthreads();
        if (k0 + PF_MM_BK < K) { /* next stage in flight during the math */
            const int k1 = k0 + PF_MM_BK;
            if (aok) {
                pa0 = *(const uint4 *)(asrc + k1);
                pa1 = *(const uint4 *)(asrc + k1 + 8);
            }
            pb = *(const uint4 *)(wrow + (k1 + 32 * kh) / 2);
            pabs = arow[k1 / 64];
        }
#pragma unroll
        for (int ks = 0; ks < PF_MM_BK; ks += 16) {
            uint32_t af[2][4], bfr[4][2];
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                const __nv_bfloat16 *p = As + (wm * 32 + mt * 16 + g) * PF_MM_LD + ks + 2 * t4;
                af[mt][0] = *(const uint32_t *)p;
                af[mt][1] = *(const uint32_t *)(p + 8 * PF_MM_LD);
                af[mt][2] = *(const uint32_t *)(p + 8);
                af[mt][3] = *(const uint32_t *)(p + 8 * PF_MM_LD + 8);
            }
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                const __nv_bfloat16 *p = Bs + nrow[nt] * PF_MM_LD + ks + 2 * t4;
                bfr[nt][0] = *(const uint32_t *)p;
                bfr[nt][1] = *(const uint32_t *)(p + 8);
            }
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int nt = 0; nt < 4; nt++)
                    pf_mma_bf16(acc[mt][nt], af[mt], bfr[nt]);
        }
    }
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const int m = wm * 32 + mt * 16 + g + 8 * hf;
            if (m >= it.z) continue;
            const int64_t row = it.y + m;
            if (MODE == 0) {
#pragma unroll
                for (int nt = 0; nt < 2; nt++) {
                    const int r = blockIdx.y * 64 + wn * 16 + nt * 8 + 2 * t4;
                    const float g0 = acc[mt][nt][2 * hf], g1 = acc[mt][nt][2 * hf + 1];
                    const float u0 = acc[mt][nt + 2][2 * hf], u1 = acc[mt][nt + 2][2 * hf + 1];
                    *(__nv_bfloat162 *)((__nv_bfloat16 *)out + row * d.I + r) =
                        __floats2bfloat162_rn(pf_silu(g0) * u0, pf_silu(g1) * u1);
                }
            } else {
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    const int n = blockIdx.y * PF_MM_BN + wn * 32 + nt * 8 + 2 * t4;
                    *(float2 *)((float *)out + row * d.H + n) =
                        make_float2(acc[mt][nt][2 * hf], acc[mt][nt][2 * hf + 1]);
                }
            }
        }
}

} /* namespace */

enum hmoe_status fw_pf_conv(cudaStream_t st, const float *mixed, const float *w, float *state,
                            float *out, int cd, int K, int T)
{
    if (K < 1 || K > 8) return hmoe_fail(HMOE_E_UNSUPPORTED, "conv kernel %d not in 1..8", K);
    if (T <= 0) return HMOE_OK;
    k_pf_conv<<<dim3(hmoe_cdiv(cd, 128), hmoe_cdiv(T, PF_CONV_TT)), 128, 0, st>>>(mixed, w, state,
                                                                                  out, cd, K, T);
    k_pf_conv_state<<<hmoe_cdiv(cd, 128), 128, 0, st>>>(mixed, state, cd, K, T);
    HMOE_CUDA_LAUNCH_OK();
}

int fw_pf_gdn_ok(int Hk, int Hv, int dk, int dv)
{
    return Hk > 0 && Hv % Hk == 0 && dv > 0 && (dk == 16 || dk == 32 || dk == 64 || dk == 128);
}

#define PF_GDN_PRE_MIN 32 /* from this many tokens on, q/k are normalised by k_pf_gdn_prep */
#define PF_GDN_CHUNK_MIN 256 /* from this many tokens on, the chunked form (docs/gdn_chunk.md) */

enum hmoe_status fw_pf_gdn(cudaStream_t st, const float *conv, const float *beta, float *gg,
                           float *S, float *o, float *scratch, int T, int Hk, int Hv, int dk,
                           int dv)
{
    if (!fw_pf_gdn_ok(Hk, Hv, dk, dv))
        return hmoe_fail(HMOE_E_UNSUPPORTED, "fw_pf_gdn: dk %d / heads %d:%d", dk, Hk, Hv);
    if (T <= 0) return HMOE_OK;
    const char *ck = getenv("HMOE_GDN_CHUNK"); /* 0: recurrent, 1: chunked */
    const int mode = ck && *ck ? atoi(ck) : -1;
    if (mode != 0 && scratch && fw_pf_gdn_chunk_ok(Hk, Hv, dk, dv) &&
        (mode == 1 || T >= PF_GDN_CHUNK_MIN))
        return fw_pf_gdn_chunk(st, conv, beta, gg, S, o, scratch, T, Hk, Hv, dk, dv);
    const int kd = Hk * dk, cd = 2 * kd + Hv * dv;
    const bool pre = scratch && T >= PF_GDN_PRE_MIN;
    float *qk = scratch, *kq = scratch ? scratch + (int64_t)T * 2 * kd : NULL;
    if (pre) k_pf_gdn_prep<<<T, 128, 0, st>>>(conv, gg, qk, kq, Hk, Hv, dk, cd);
    const dim3 grid(Hv, hmoe_cdiv(dv, PF_GDN_COLS));
#define PF_GDN(SL)                                                                                 \
    do {                                                                                           \
        const size_t sm_ = 2 * pf_gdn_lay<SL>::SIZE * sizeof(float);                               \
        if (pre)                                                                                   \
            k_pf_gdn<SL, true>                                                                     \
                <<<grid, 128, sm_, st>>>(conv, qk, kq, beta, gg, S, o, Hk, Hv, dv, T);             \
        else                                                                                       \
            k_pf_gdn<SL, false>                                                                    \
                <<<grid, 128, sm_, st>>>(conv, qk, kq, beta, gg, S, o, Hk, Hv, dv, T);             \
    } while (0)
    switch (dk) {
    case 16: PF_GDN(4); break;
    case 32: PF_GDN(8); break;
    case 64: PF_GDN(16); break;
    default: PF_GDN(32); break;
    }
#undef PF_GDN
    HMOE_CUDA_LAUNCH_OK();
}

int fw_pf_attn_ok(int Hq, int Hkv, int D)
{
    return Hkv > 0 && Hq % Hkv == 0 && (D == 64 || D == 128 || D == 256);
}

template <int D>
static enum hmoe_status pf_attn_launch(cudaStream_t st, dim3 grid, const float *q,
                                       const float *gate, const float *kc, const float *vc,
                                       const int *d_pos, float *o, int T, int Hq, int Hkv, int cap,
                                       float scale)
{
    const size_t smem = (size_t)(D * PF_BQ + D * PF_BK + PF_BQ * (PF_BK + 4)) * sizeof(float);
    static int attr_set = 0; /* per instantiation; the attribute is per function */
    if (!attr_set) {
        cudaError_t e = cudaFuncSetAttribute(
            k_pf_attn<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess)
            return hmoe_fail(HMOE_E_CUDA, "prefill attention: %zu bytes of shared memory: %s", smem,
                             cudaGetErrorString(e));
        attr_set = 1;
    }
    k_pf_attn<D><<<grid, 256, smem, st>>>(q, gate, kc, vc, d_pos, o, T, Hq, Hkv, cap, scale);
    HMOE_CUDA_LAUNCH_OK();
}

template <int D>
static enum hmoe_status pf_attn_tc_launch(cudaStream_t st, dim3 grid, const float *q,
                                          const float *gate, const float *kc, const float *vc,
                                          const int *d_pos, float *o, int T, int Hq, int Hkv,
                                          int cap, float scale)
{
    const size_t smem = (size_t)pf_tc_lay<D>::SIZE * sizeof(float);
    static int attr_set = 0;
    if (!attr_set) {
        cudaError_t e = cudaFuncSetAttribute(
            k_pf_attn_tc<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess)
            return hmoe_fail(HMOE_E_CUDA,
                             "prefill attention (tf32): %zu bytes of shared memory: %s", smem,
                             cudaGetErrorString(e));
        attr_set = 1;
    }
    k_pf_attn_tc<D><<<grid, 128, smem, st>>>(q, gate, kc, vc, d_pos, o, T, Hq, Hkv, cap, scale);
    HMOE_CUDA_LAUNCH_OK();
}

enum hmoe_status fw_pf_attn_tf32(cudaStream_t st, const float *q, const float *gate,
                                 const float *kc, const float *vc, const int *d_pos, float *o,
                                 int T, int Hq, int Hkv, int D, int cap, float scale)
{
    if (!fw_pf_attn_ok(Hq, Hkv, D))
        return hmoe_fail(HMOE_E_UNSUPPORTED, "fw_pf_attn_tf32: head_dim %d / heads %d:%d", D, Hq,
                         Hkv);
    if (T <= 0) return HMOE_OK;
    const dim3 grid(hmoe_cdiv(T, 64), Hq);
    switch (D) {
    case 64:
        return pf_attn_tc_launch<64>(st, grid, q, gate, kc, vc, d_pos, o, T, Hq, Hkv, cap, scale);
    case 128:
        return pf_attn_tc_launch<128>(st, grid, q, gate, kc, vc, d_pos, o, T, Hq, Hkv, cap, scale);
    default:
        return pf_attn_tc_launch<256>(st, grid, q, gate, kc, vc, d_pos, o, T, Hq, Hkv, cap, scale);
    }
}

enum hmoe_status fw_pf_attn(cudaStream_t st, const float *q, const float *gate, const float *kc,
                            const float *vc, const int *d_pos, float *o, int T, int Hq, int Hkv,
                            int D, int cap, float scale)
{
    if (!fw_pf_attn_ok(Hq, Hkv, D))
        return hmoe_fail(HMOE_E_UNSUPPORTED, "fw_pf_attn: head_dim %d / heads %d:%d", D, Hq, Hkv);
    if (T <= 0) return HMOE_OK;
    const dim3 grid(hmoe_cdiv(T, PF_BQ), Hq);
    switch (D) {
    case 64: return pf_attn_launch<64>(st, grid, q, gate, kc, vc, d_pos, o, T, Hq, Hkv, cap, scale);
    case 128:
        return pf_attn_launch<128>(st, grid, q, gate, kc, vc, d_pos, o, T, Hq, Hkv, cap, scale);
    default:
        return pf_attn_launch<256>(st, grid, q, gate, kc, vc, d_pos, o, T, Hq, Hkv, cap, scale);
    }
}

enum hmoe_status fw_pf_deq_slots(cudaStream_t st, const fw_ex_desc *d, const int32_t *d_slots,
                                 int ns, int bf16, void *out)
{
    const int64_t n = (int64_t)d->H * d->I;
    if (n % 64 || ns <= 0)
        return ns <= 0 ? HMOE_OK
                       : hmoe_fail(HMOE_E_UNSUPPORTED,
                                   "expert dequant: H*I = %lld not a multiple "
                                   "of 64",
                                   (long long)n);
    if (d->fmt == FW_EX_NF4) {
        pf_code16 c;
        memcpy(c.c, d->code, sizeof c.c);
        const dim3 grid(hmoe_cdiv(3 * (n / 16), 256), ns);
        if (bf16)
            k_pf_deq_slots<__nv_bfloat16>
                <<<grid, 256, 0, st>>>(d_slots, *d, c, (__nv_bfloat16 *)out, n);
        else
            k_pf_deq_slots<float><<<grid, 256, 0, st>>>(d_slots, *d, c, (float *)out, n);
        HMOE_CUDA_LAUNCH_OK();
    }
    if (d->fmt == FW_EX_BF16 && bf16) {
        k_pf_copy_bf16<<<dim3(hmoe_cdiv(3 * (n / 8), 256), ns), 256, 0, st>>>(d_slots, *d,
                                                                            (uint16_t *)out, n);
        HMOE_CUDA_LAUNCH_OK();
    }
    if (bf16) return hmoe_fail(HMOE_E_UNSUPPORTED, "bf16 expert dequant of f32 experts");
    return fw_deq_slots(st, d, d_slots, ns, (float *)out);
}

enum hmoe_status fw_pf_gather_bf16(cudaStream_t st, const float *src, const int32_t *rows,
                                   void *dst, int n, int cols)
{
    if (n <= 0) return HMOE_OK;
    const unsigned gx = hmoe_cdiv(cols, 256) < 8 ? hmoe_cdiv(cols, 256) : 8;
    k_pf_gather_bf16<<<dim3(gx, n), 256, 0, st>>>(src, rows, (__nv_bfloat16 *)dst, cols);
    HMOE_CUDA_LAUNCH_OK();
}

enum hmoe_status fw_pf_silu_gu_bf16(cudaStream_t st, const float *C, void *act, int I, int64_t n)
{
    if (n <= 0) return HMOE_OK;
    k_pf_silu_gu_bf16<<<hmoe_cdiv(n * I, 256), 256, 0, st>>>(C, (__nv_bfloat16 *)act, I, n);
    HMOE_CUDA_LAUNCH_OK();
}

int fw_pf_moe_ok(const fw_ex_desc *d)
{
    return d->fmt == FW_EX_NF4 && d->rnd == FW_RND_BF16 && d->H % PF_MM_BN == 0 && d->H > 0 &&
           d->I % 64 == 0 && d->I > 0;
}

int fw_pf_moe_items(const int *cnt, const int *used, int n_used, const int *slot_of, int32_t *items,
                    int cap)
{
    int n = 0;
    for (int i = 0; i < n_used; i++) {
        const int e = used[i], o = cnt[e], ne = cnt[e + 1] - cnt[e];
        for (int m0 = 0; m0 < ne; m0 += PF_MM_BM) {
            if (n >= cap) return -1;
            items[4 * n] = slot_of[e];
            items[4 * n + 1] = o + m0;
            items[4 * n + 2] = ne - m0 < PF_MM_BM ? ne - m0 : PF_MM_BM;
            items[4 * n + 3] = 0;
            n++;
        }
    }
    return n;
}

enum hmoe_status fw_pf_moe(cudaStream_t st, const fw_ex_desc *d, const int32_t *d_items,
                           int n_items, const void *xs, void *act, float *y)
{
    if (!fw_pf_moe_ok(d))
        return hmoe_fail(HMOE_E_UNSUPPORTED,
                         "fused expert GEMM: format %d / rounding %d / H %d / "
                         "I %d",
                         d->fmt, d->rnd, d->H, d->I);
    if (n_items <= 0) return HMOE_OK;
    k_pf_moe_mm<0><<<dim3(n_items, d->I / 64), 256, 0, st>>>(*d, (const int4 *)d_items,
                                                             (const __nv_bfloat16 *)xs, act, 0);
    k_pf_moe_mm<1><<<dim3(n_items, d->H / PF_MM_BN), 256, 0, st>>>(
        *d, (const int4 *)d_items, (const __nv_bfloat16 *)act, y, 0);
    HMOE_CUDA_LAUNCH_OK();
}

int fw_pf_dense_ok(int rows, int cols, int rnd)
{
    return rnd == FW_RND_BF16 && rows > 0 && rows % PF_MM_BN == 0 && cols > 0 && cols % 64 == 0;
}

static __global__ void k_pf_to_bf16(const float *x, __nv_bfloat16 *y, int64_t n)
{
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n) y[i] = __float2bfloat16_rn(x[i]);
}

enum hmoe_status fw_pf_dense(cudaStream_t st, const uint8_t *nib, const float *absf,
                             const float *code, int rows, int cols, const float *X, void *xb,
                             float *Y, int T)
{
    if (!fw_pf_dense_ok(rows, cols, FW_RND_BF16) || !nib || !absf || (const uint8_t *)absf < nib)
        return hmoe_fail(HMOE_E_UNSUPPORTED, "fused dense GEMM: [%d, %d]", rows, cols);
    if (T <= 0) return HMOE_OK;
    fw_ex_desc d;
    memset(&d, 0, sizeof d);
    d.pool = nib;
    d.o_ad = (const uint8_t *)absf - nib;
    d.fmt = FW_EX_NF4;
    d.rnd = FW_RND_BF16;
    d.H = rows;
    d.I = cols;
    d.k = 1;
    memcpy(d.code, code, sizeof d.code);
    const int64_t n = (int64_t)T * cols;
    k_pf_to_bf16<<<hmoe_cdiv(n, 256), 256, 0, st>>>(X, (__nv_bfloat16 *)xb, n);
    k_pf_moe_mm<2><<<dim3(hmoe_cdiv(T, PF_MM_BM), rows / PF_MM_BN), 256, 0, st>>>(
        d, NULL, (const __nv_bfloat16 *)xb, Y, T);
    HMOE_CUDA_LAUNCH_OK();
}

int fw_pf_gdn_decode_ok(int Hk, int Hv, int dk, int dv, int K)
{
    return fw_pf_gdn_ok(Hk, Hv, dk, dv) && dv <= 256 && K >= 1 && K <= 8;
}

enum hmoe_status fw_pf_gdn_decode(cudaStream_t st, const float *qkvz, const float *ba,
                                  const float *dtb, const float *nea, const float *convw,
                                  float *cstate, float *rstate, const float *lnw, float *conv,
                                  float *z, float *beta, float *gg, float *o, int Hk, int Hv,
                                  int dk, int dv, int K, float eps, const int *bat, int B,
                                  int64_t css, int64_t rss)
{
    if (!fw_pf_gdn_decode_ok(Hk, Hv, dk, dv, K) || B < 1 || (!bat && B != 1))
        return hmoe_fail(HMOE_E_UNSUPPORTED, "fw_pf_gdn_decode: dk %d dv %d K %d B %d", dk, dv, K,
                         B);
    const int kd = Hk * dk, vd = Hv * dv, cd = 2 * kd + vd;
    k_pf_split_conv1<<<dim3(hmoe_cdiv(cd, 256), B), 256, 0, st>>>(
        qkvz, ba, dtb, nea, convw, cstate, conv, z, beta, gg, Hk, Hv, dk, dv, K, bat, css);
    const int threads = (4 * dv + 31) / 32 * 32;
#define PF_DEC(SL)                                                                                 \
    k_pf_gdn_dec<SL><<<dim3(Hv, B), threads, 0, st>>>(conv, beta, gg, rstate, z, lnw, o, Hk, Hv,   \
                                                      dv, eps, bat, rss)
    switch (dk) {
    case 16: PF_DEC(4); break;
    case 32: PF_DEC(8); break;
    case 64: PF_DEC(16); break;
    default: PF_DEC(32); break;
    }
#undef PF_DEC
    HMOE_CUDA_LAUNCH_OK();
}
