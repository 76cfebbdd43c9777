/* gpu_worker/cuda/fwd_kernels.cu: kernels of the CUDA forward pass (see fwd_kernels.cuh) and
 * their launchers (fw_* functions, C++ linkage, called by forward_cuda.cu only). Every launcher
 * enqueues on the given stream and returns the launch error. Decode kernels read the position
 * from device memory so one captured CUDA graph serves every step. */
#include <math.h>
#include <string.h>

#include "fwd_kernels.cuh"
#include "fwd_launch.h"
#include "gdn.cuh"
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace
{

struct fw_code16c {
    float c[16];
};

__device__ __forceinline__ float fw_silu(float z)
{
    return z / (1.0f + expf(-z));
}

__device__ __forceinline__ float fw_bf16(uint16_t h)
{
    return __uint_as_float((uint32_t)h << 16);
}

/* Max over the block (blockDim.x a multiple of 32); every thread gets it. */
__device__ __forceinline__ float fw_block_max(float v, float *red)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = hmoe_warp_max(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = lane < nw ? red[lane] : -INFINITY;
    return hmoe_warp_max(t);
}

/* One row per block: h = src (+ add); xn = h * rsqrt(mean(h^2) + eps) * w (w already 1+w).
 * src, add, h, xn: (rows, H) f32 (src may alias h); w: (H) f32. */
__global__ void k_add_norm(const float *src, const float *add, float *h, const float *w, float *xn,
                           int H, float eps)
{
    __shared__ float red[32];
    const int64_t o = (int64_t)blockIdx.x * H;
    float ss = 0.f;
    for (int i = threadIdx.x; i < H; i += blockDim.x) {
        const float v = src[o + i] + (add ? add[o + i] : 0.f);
        h[o + i] = v;
        ss = fmaf(v, v, ss);
    }
    ss = hmoe_block_sum(ss, red);
    const float inv = rsqrtf(ss / (float)H + eps);
    for (int i = threadIdx.x; i < H; i += blockDim.x)
        xn[o + i] = h[o + i] * inv * w[i];
}

/* y[t, r] = W[r, :] . x[t, :], W bf16 [rows, cols]; one warp per row. */
__global__ void k_mv_bf16(const uint16_t *W, const float *x, float *y, int rows, int cols, int T,
                          int64_t xs, int64_t ys)
{
    const int r = (int)((blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5),
              lane = threadIdx.x & 31;
    if (r >= rows) return;
    const uint16_t *wr = W + (int64_t)r * cols;
    for (int t = 0; t < T; t++) {
        float s = 0.f;
        for (int c = lane; c < cols; c += 32)
            s = fmaf(fw_bf16(wr[c]), x[t * xs + c], s);
        s = hmoe_warp_sum(s);
        if (lane == 0) y[t * ys + r] = s;
    }
}

/* Y[b, r] = W[r, :] . X[b, :] for the NB tokens, W bf16 (rows, cols), cols % 8 == 0: a warp per
 * FW_LM_R rows, lane l takes the 8-column chunks l, l + 32, ...; each weight chunk is loaded once
 * for the NB tokens (x through L1). A (row, token) sum is the same for every NB. */
#define FW_LM_R 4
template <int NB>
__global__ void __launch_bounds__(256)
    k_mv_bf16_rows(const uint16_t *W, const float *X, float *Y, int rows, int cols)
{
    const int warp = (int)((blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5),
              lane = threadIdx.x & 31, r0 = warp * FW_LM_R;
    if (r0 >= rows) return;
    float acc[FW_LM_R][NB] = {};
    const int nch = cols >> 3;
    for (int c = lane; c < nch; c += 32) {
        uint4 w[FW_LM_R];
#pragma unroll
        for (int r = 0; r < FW_LM_R; r++)
            w[r] = r0 + r < rows ? __ldg((const uint4 *)(W + (int64_t)(r0 + r) * cols) + c)
                                 : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
        for (int b = 0; b < NB; b++) {
            const float4 x0 = __ldg((const float4 *)(X + (int64_t)b * cols) + 2 * c);
            const float4 x1 = __ldg((const float4 *)(X + (int64_t)b * cols) + 2 * c + 1);
            const float xs[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
            for (int r = 0; r < FW_LM_R; r++) {
                const uint32_t ww[4] = {w[r].x, w[r].y, w[r].z, w[r].w};
                float a = acc[r][b];
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    a = fmaf(__uint_as_float(ww[q] << 16), xs[2 * q], a);
                    a = fmaf(__uint_as_float(ww[q] & 0xffff0000u), xs[2 * q + 1], a);
                }
                acc[r][b] = a;
            }
        }
    }
#pragma unroll
    for (int r = 0; r < FW_LM_R; r++)
#pragma unroll
        for (int b = 0; b < NB; b++) {
            const float v = hmoe_warp_sum(acc[r][b]);
            if (lane == 0 && r0 + r < rows) Y[(int64_t)b * rows + r0 + r] = v;
        }
}

/* Per token t (blockIdx.y) and head b (blockIdx.x < Hq: query head, else KV head b - Hq):
 * (1+w) RMSNorm over D, partial RoPE (NeoX halves over the first rot dims, position pos0 + t)
 * then: q and gate written to (T, Hq, D); k and v written into the caches (Hkv, cap, D).
 * bat (batched decode): token t belongs to sequence bat[FW_BAT_SEQ + t] (caches + seq * kvs) at
 * position bat[FW_BAT_POS + t]; tokens t >= bat[0] are skipped. */
__global__ void k_attn_prep(const float *qg, const float *kb, const float *vb, const float *qn,
                            const float *kn, const float *inv_freq, const int *d_pos, int pos_add,
                            const int *bat, int64_t kvs, float *q, float *gate, float *kc,
                            float *vc, int Hq, int Hkv, int D, int rot, int cap, float eps)
{
    extern __shared__ float sv[];
    __shared__ float red[32];
    const int b = blockIdx.x, t = blockIdx.y;
    if (bat && t >= bat[0]) return;
    const int pos = bat ? bat[FW_BAT_POS + t] : *d_pos + pos_add + t;
    if (bat) {
        kc += bat[FW_BAT_SEQ + t] * kvs;
        vc += bat[FW_BAT_SEQ + t] * kvs;
    }
    const bool isq = b < Hq;
    const float *src =
        isq ? qg + ((int64_t)t * Hq + b) * 2 * D : kb + ((int64_t)t * Hkv + (b - Hq)) * D;
    const float *nw = isq ? qn : kn;
    float ss = 0.f;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        const float v = src[d];
        sv[d] = v;
        ss = fmaf(v, v, ss);
    }
    ss = hmoe_block_sum(ss, red);
    const float inv = rsqrtf(ss / (float)D + eps);
    __syncthreads();
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        sv[d] = sv[d] * inv * nw[d];
    __syncthreads();
    const int half = rot / 2;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float out = sv[d];
        if (d < rot) {
            const int j = d < half ? d : d - half;
            const float ang = (float)pos * inv_freq[j];
            const float c = cosf(ang), s = sinf(ang);
            out = d < half ? sv[d] * c - sv[d + half] * s : sv[d] * c + sv[d - half] * s;
        }
        if (isq) {
            q[((int64_t)t * Hq + b) * D + d] = out;
            gate[((int64_t)t * Hq + b) * D + d] = src[D + d];
        } else {
            const int kh = b - Hq;
            kc[((int64_t)kh * cap + pos) * D + d] = out;
            vc[((int64_t)kh * cap + pos) * D + d] = vb[((int64_t)t * Hkv + kh) * D + d];
        }
    }
}

/* Decode scores of token b = blockIdx.z (sequence s = bat[FW_BAT_SEQ + b], caches + s * kvs):
 * sc[b, h, p] = q[b, h] . K[g, p] * scale for p < T = bat[FW_BAT_POS + b] + 1; warp per
 * position. Tokens b >= bat[0] are skipped (as in k_attn_pv, k_attn_combine). */
__global__ void k_attn_scores(const float *q, const float *kc, const int *bat, int64_t kvs,
                              float *sc, int Hq, int Hkv, int D, int cap, float scale)
{
    const int h = blockIdx.x, g = h / (Hq / Hkv), lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int tb = blockIdx.z;
    if (tb >= bat[0]) return;
    const int T = bat[FW_BAT_POS + tb] + 1, nw = blockDim.x >> 5;
    kc += bat[FW_BAT_SEQ + tb] * kvs;
    sc += (int64_t)tb * Hq * cap;
    const float *qh = q + ((int64_t)tb * Hq + h) * D;
    for (int p = blockIdx.y * nw + warp; p < T; p += gridDim.y * nw) {
        const float *kp = kc + ((int64_t)g * cap + p) * D;
        float s = 0.f;
        for (int d = lane; d < D; d += 32)
            s = fmaf(qh[d], kp[d], s);
        s = hmoe_warp_sum(s);
        if (lane == 0) sc[(int64_t)h * cap + p] = s * scale;
    }
}

#define FW_PV_TILE 256
/* Split softmax(scores) V: block (h, y) folds positions [y*chunk, min(T, (y+1)*chunk)) into
 * part[h, y] = (o[0..D), m, l) with o unnormalised. */
__global__ void k_attn_pv(const float *sc, const float *vc, const int *bat, int64_t kvs,
                          float *part, int Hq, int Hkv, int D, int cap)
{
    __shared__ float red[32], e[FW_PV_TILE];
    const int h = blockIdx.x, y = blockIdx.y, ns = gridDim.y, g = h / (Hq / Hkv), tb = blockIdx.z;
    if (tb >= bat[0]) return;
    const int T = bat[FW_BAT_POS + tb] + 1, chunk = (T + ns - 1) / ns;
    vc += bat[FW_BAT_SEQ + tb] * kvs;
    sc += (int64_t)tb * Hq * cap;
    part += (int64_t)tb * Hq * ns * (D + 2);
    const int p0 = y * chunk, p1 = min(T, p0 + chunk);
    const float *sh = sc + (int64_t)h * cap;
    float m = -INFINITY;
    for (int p = p0 + threadIdx.x; p < p1; p += blockDim.x)
        m = fmaxf(m, sh[p]);
    m = fw_block_max(m, red);
    float l = 0.f;
    float *ph = part + ((int64_t)h * ns + y) * (D + 2);
    for (int d0 = 0; d0 < D; d0 += blockDim.x) {
        const int d = d0 + threadIdx.x;
        float o = 0.f;
        for (int pt = p0; pt < p1; pt += FW_PV_TILE) {
            const int n = min(FW_PV_TILE, p1 - pt);
            __syncthreads();
            for (int i = threadIdx.x; i < n; i += blockDim.x)
                e[i] = expf(sh[pt + i] - m);
            __syncthreads();
            if (d < D)
                for (int i = 0; i < n; i++)
                    o = fmaf(e[i], vc[((int64_t)g * cap + pt + i) * D + d], o);
            if (d0 == 0)
                for (int i = 0; i < n; i++)
                    l += e[i];
        }
        if (d < D) ph[d] = o;
    }
    if (threadIdx.x == 0) {
        ph[D] = m;
        ph[D + 1] = l;
    }
}

/* o[h, d] = (sum_y o_y e^(m_y - M)) / (sum_y l_y e^(m_y - M)) * sigmoid(gate[h, d]). */
__global__ void k_attn_combine(const float *part, const float *gate, float *o, const int *bat,
                               int Hq, int ns, int D)
{
    const int h = blockIdx.x, tb = blockIdx.y;
    if (tb >= bat[0]) return;
    const float *ph = part + ((int64_t)tb * Hq + h) * ns * (D + 2);
    gate += (int64_t)tb * Hq * D;
    o += (int64_t)tb * Hq * D;
    float M = -INFINITY;
    for (int y = 0; y < ns; y++)
        M = fmaxf(M, ph[y * (D + 2) + D]);
    float L = 0.f;
    for (int y = 0; y < ns; y++) {
        const float my = ph[y * (D + 2) + D];
        if (my != -INFINITY) L += ph[y * (D + 2) + D + 1] * expf(my - M);
    }
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.f;
        for (int y = 0; y < ns; y++) {
            const float my = ph[y * (D + 2) + D];
            if (my != -INFINITY) acc += ph[y * (D + 2) + d] * expf(my - M);
        }
        const float gv = gate[(int64_t)h * D + d];
        o[(int64_t)h * D + d] = acc / L * (1.0f / (1.0f + expf(-gv)));
    }
}

/* Causal prefill attention for T tokens at positions pos0..pos0+T-1 (keys/values already in the
 * caches): block per (query head, token), online softmax over positions 0..pos0+t, warp per
 * position, then the sigmoid gate. q, gate, o: (T, Hq, D). */
__global__ void k_attn_prefill(const float *q, const float *gate, const float *kc, const float *vc,
                               const int *d_pos, float *o, int Hq, int Hkv, int D, int cap,
                               float scale)
{
    extern __shared__ float smem[]; /* qs[D], per warp: acc[D], m, l */
    const int h = blockIdx.x, t = blockIdx.y, g = h / (Hq / Hkv);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const int Tk = *d_pos + t + 1;
    float *qs = smem, *acc = smem + D + warp * (D + 2);
    const float *qh = q + ((int64_t)t * Hq + h) * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        qs[d] = qh[d];
    for (int d = lane; d < D; d += 32)
        acc[d] = 0.f;
    __syncthreads();
    float m = -INFINITY, l = 0.f;
    for (int p = warp; p < Tk; p += nw) {
        const float *kp = kc + ((int64_t)g * cap + p) * D;
        float s = 0.f;
        for (int d = lane; d < D; d += 32)
            s = fmaf(qs[d], kp[d], s);
        s = hmoe_warp_sum(s) * scale;
        const float mn = fmaxf(m, s), corr = m == -INFINITY ? 0.f : expf(m - mn), pe = expf(s - mn);
        l = l * corr + pe;
        const float *vp = vc + ((int64_t)g * cap + p) * D;
        for (int d = lane; d < D; d += 32)
            acc[d] = acc[d] * corr + pe * vp[d];
        m = mn;
    }
    if (lane == 0) {
        acc[D] = m;
        acc[D + 1] = l;
    }
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < nw; w++)
        M = fmaxf(M, smem[D + w * (D + 2) + D]);
    float L = 0.f;
    for (int w = 0; w < nw; w++) {
        const float mw = smem[D + w * (D + 2) + D];
        if (mw != -INFINITY) L += smem[D + w * (D + 2) + D + 1] * expf(mw - M);
    }
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float a = 0.f;
        for (int w = 0; w < nw; w++) {
            const float mw = smem[D + w * (D + 2) + D];
            if (mw != -INFINITY) a += smem[D + w * (D + 2) + d] * expf(mw - M);
        }
        const float gv = gate[((int64_t)t * Hq + h) * D + d];
        o[((int64_t)t * Hq + h) * D + d] = a / L * (1.0f / (1.0f + expf(-gv)));
    }
}

/* GDN projections -> conv input, z, beta, g for T tokens (blockIdx.y = token); no conv here.
 * mixed: (T, conv_dim) pre-conv [q | k | v]; z: (T, value_dim); beta, gg: (T, Hv). */
__global__ void k_gdn_split(const float *qkvz, const float *ba, const float *dtb, const float *nea,
                            float *mixed, float *z, float *beta, float *gg, int Hk, int Hv, int dk,
                            int dv)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y;
    const int ratio = Hv / Hk, gw = 2 * dk + 2 * ratio * dv, kd = Hk * dk, vd = Hv * dv;
    const int cd = 2 * kd + vd;
    const float *src = qkvz + (int64_t)t * Hk * gw;
    if (i < cd) {
        const int s = fw_qkv_src(i, dk, dv, kd, ratio, gw);
        mixed[(int64_t)t * cd + i] = src[s];
    }
    if (i < vd) {
        const int g = i / (ratio * dv), r = i % (ratio * dv);
        z[(int64_t)t * vd + i] = src[g * gw + 2 * dk + ratio * dv + r];
    }
    if (i < Hv) {
        const int g = i / ratio, r = i % ratio;
        const float *bt = ba + (int64_t)t * 2 * Hv;
        const float b = bt[g * 2 * ratio + r], a = bt[g * 2 * ratio + ratio + r];
        beta[(int64_t)t * Hv + i] = 1.0f / (1.0f + expf(-b));
        const float x = a + dtb[i];
        gg[(int64_t)t * Hv + i] = nea[i] * (x > 20.f ? x : log1pf(expf(x)));
    }
}

/* Causal depthwise conv + SiLU over T tokens for one channel per thread, continuing from and
 * updating the K-column state (oldest first). mixed, out: (T, cd); w, st: (cd, K). */
__global__ void k_conv(const float *mixed, const float *w, float *st, float *out, int cd, int K,
                       int T)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cd) return;
    float win[8];
    const float *wc = w + (int64_t)c * K;
    float *sc = st + (int64_t)c * K;
    for (int j = 0; j < K; j++)
        win[j] = sc[j];
    for (int t = 0; t < T; t++) {
        const float xn = mixed[(int64_t)t * cd + c];
        float y = 0.f;
        for (int j = 0; j < K - 1; j++)
            y = fmaf(wc[j], win[j + 1], y);
        y = fmaf(wc[K - 1], xn, y);
        for (int j = 0; j < K - 1; j++)
            win[j] = win[j + 1];
        win[K - 1] = xn;
        out[(int64_t)t * cd + c] = fw_silu(y);
    }
    for (int j = 0; j < K; j++)
        sc[j] = win[j];
}

/* Gated delta rule over T tokens (recurrent form, state in place) fused with the gated RMSNorm:
 * block per value head, thread j owns state column S[:, j]. conv: (T, cd) post-conv/SiLU;
 * beta, gg: (T, Hv); S: (Hv, dk, dv); z, o: (T, Hv*dv). */
__global__ void k_gdn_rec(const float *conv, const float *beta, const float *gg, float *S,
                          const float *z, const float *lnw, float *o, int Hk, int Hv, int dk,
                          int dv, int T, float eps)
{
    extern __shared__ float qk[]; /* qs[dk], ks[dk] */
    __shared__ float red[32];
    float *qs = qk, *ks = qk + dk;
    const int h = blockIdx.x, ratio = Hv / Hk, kh = h / ratio, j = threadIdx.x;
    const int kd = Hk * dk, cd = 2 * kd + Hv * dv, vd = Hv * dv;
    const float scale = rsqrtf((float)dk);
    float *Sh = S + (int64_t)h * dk * dv + j;
    for (int t = 0; t < T; t++) {
        const float *ct = conv + (int64_t)t * cd;
        float sq = 0.f, sk = 0.f;
        __syncthreads();
        for (int i = threadIdx.x; i < dk; i += blockDim.x) {
            const float a = ct[kh * dk + i], b = ct[kd + kh * dk + i];
            qs[i] = a;
            ks[i] = b;
            sq = fmaf(a, a, sq);
            sk = fmaf(b, b, sk);
        }
        sq = hmoe_block_sum(sq, red);
        sk = hmoe_block_sum(sk, red);
        const float iq = rsqrtf(sq + 1e-6f) * scale, ik = rsqrtf(sk + 1e-6f);
        __syncthreads();
        for (int i = threadIdx.x; i < dk; i += blockDim.x) {
            qs[i] *= iq;
            ks[i] *= ik;
        }
        __syncthreads();
        float out = 0.f;
        if (j < dv) {
            const float decay = expf(gg[(int64_t)t * Hv + h]);
            float kv = 0.f;
            for (int i = 0; i < dk; i++)
                kv = fmaf(Sh[(int64_t)i * dv] * decay, ks[i], kv);
            const float delta = (ct[2 * kd + h * dv + j] - kv) * beta[(int64_t)t * Hv + h];
            for (int i = 0; i < dk; i++) {
                const float s = fmaf(ks[i], delta, Sh[(int64_t)i * dv] * decay);
                Sh[(int64_t)i * dv] = s;
                out = fmaf(s, qs[i], out);
            }
        }
        const float ss = hmoe_block_sum(j < dv ? out * out : 0.f, red);
        if (j < dv) {
            const float inv = rsqrtf(ss / (float)dv + eps);
            const int64_t oi = (int64_t)t * vd + (int64_t)h * dv + j;
            o[oi] = (lnw[j] * (out * inv)) * fw_silu(z[oi]);
        }
    }
}

/* act[i, r] = silu(C[i, r]) * C[i, I + r] for i < n (C: (n, 2I) gate | up). */
/* Gated delta rule, fast form for dk = DK: one warp per (value head, 32 value dims), each lane
 * keeps its state column S[:, j] in registers for the whole chunk of T tokens; q/k l2 norms by
 * warp sums. Writes the raw output o (T, Hv*dv); the gated norm runs after (k_gated_norm). */
template <int DK>
__global__ void __launch_bounds__(32)
    k_gdn_rec_reg(const float *conv, const float *beta, const float *gg, float *S, float *o, int Hk,
                  int Hv, int dv, int T)
{
    __shared__ float qs[DK], ks[DK];
    const int h = blockIdx.x, lane = threadIdx.x, j = blockIdx.y * 32 + lane;
    const int ratio = Hv / Hk, kh = h / ratio, kd = Hk * DK, cd = 2 * kd + Hv * dv, vd = Hv * dv;
    const bool act = j < dv;
    float col[DK];
    float *Sh = S + (int64_t)h * DK * dv + j;
#pragma unroll
    for (int i = 0; i < DK; i++)
        col[i] = act ? Sh[(int64_t)i * dv] : 0.f;
    const float scale = rsqrtf((float)DK);
    for (int t = 0; t < T; t++) {
        const float *ct = conv + (int64_t)t * cd;
        float sq = 0.f, sk = 0.f;
        for (int i = lane; i < DK; i += 32) {
            const float a = ct[kh * DK + i], b = ct[kd + kh * DK + i];
            sq = fmaf(a, a, sq);
            sk = fmaf(b, b, sk);
        }
        sq = hmoe_warp_sum(sq);
        sk = hmoe_warp_sum(sk);
        const float iq = rsqrtf(sq + 1e-6f) * scale, ik = rsqrtf(sk + 1e-6f);
        __syncwarp();
        for (int i = lane; i < DK; i += 32) {
            qs[i] = ct[kh * DK + i] * iq;
            ks[i] = ct[kd + kh * DK + i] * ik;
        }
        __syncwarp();
        const float decay = expf(gg[(int64_t)t * Hv + h]);
        float kv = 0.f;
#pragma unroll
        for (int i = 0; i < DK; i++) {
            col[i] *= decay;
            kv = fmaf(col[i], ks[i], kv);
        }
        const float vj = act ? ct[2 * kd + h * dv + j] : 0.f;
        const float delta = (vj - kv) * beta[(int64_t)t * Hv + h];
        float out = 0.f;
#pragma unroll
        for (int i = 0; i < DK; i++) {
            col[i] = fmaf(ks[i], delta, col[i]);
            out = fmaf(col[i], qs[i], out);
        }
        if (act) o[(int64_t)t * vd + (int64_t)h * dv + j] = out;
    }
    if (act)
#pragma unroll
        for (int i = 0; i < DK; i++)
            Sh[(int64_t)i * dv] = col[i];
}

/* In place per (token, value head) row of dv: o = w * (o * rsqrt(mean(o^2) + eps)) * silu(z). */
__global__ void k_gated_norm(float *o, const float *z, const float *lnw, int dv, float eps)
{
    __shared__ float red[32];
    const int64_t r = blockIdx.x;
    float *orow = o + r * dv;
    const float *zr = z + r * dv;
    float ss = 0.f;
    for (int j = threadIdx.x; j < dv; j += blockDim.x)
        ss = fmaf(orow[j], orow[j], ss);
    ss = hmoe_block_sum(ss, red);
    const float inv = rsqrtf(ss / (float)dv + eps);
    for (int j = threadIdx.x; j < dv; j += blockDim.x)
        orow[j] = (lnw[j] * (orow[j] * inv)) * fw_silu(zr[j]);
}

__global__ void k_silu_gu(const float *C, float *act, int I, int64_t n)
{
    const int64_t x = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (x >= n * I) return;
    const int64_t i = x / I, r = x % I;
    act[x] = fw_silu(C[i * 2 * I + r]) * C[i * 2 * I + I + r];
}

__global__ void k_silu_mul(const float *g, const float *u, float *a, int64_t n)
{
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n) a[i] = fw_silu(g[i]) * u[i];
}

/* A dequantized NF4 weight code * absmax rounded as bitsandbytes does to its output dtype
 * (rnd: FW_RND_NONE / FW_RND_BF16 / FW_RND_F16). */
__device__ __forceinline__ float fw_round(float w, int rnd)
{
    if (rnd == FW_RND_BF16) return __bfloat162float(__float2bfloat16_rn(w));
    if (rnd == FW_RND_F16) return __half2float(__float2half_rn(w));
    return w;
}

/* Dot of row r of an NF4 matrix (canonical: nibbles from element 0, fp32 absmax per 64) with x
 * in shared memory; cols % 8 == 0. Whole warp; every lane gets the sum. */
__device__ __forceinline__ float nf4_dot(const uint32_t *nw, const float *absf, int64_t r, int cols,
                                         const float *xs, const float *code, int rnd, int lane)
{
    const int nwr = cols >> 3;
    const int64_t w0 = r * nwr;
    float s = 0.f;
    if (rnd == FW_RND_NONE) {
#pragma unroll 4
        for (int wl = lane; wl < nwr; wl += 32) {
            const uint32_t v = __ldg(nw + w0 + wl);
            const float a = __ldg(absf + ((w0 + wl) >> 3));
            const float4 x0 = *(const float4 *)(xs + 8 * wl),
                         x1 = *(const float4 *)(xs + 8 * wl + 4);
            float acc = code[(v >> 4) & 15] * x0.x;
            acc = fmaf(code[v & 15], x0.y, acc);
            acc = fmaf(code[(v >> 12) & 15], x0.z, acc);
            acc = fmaf(code[(v >> 8) & 15], x0.w, acc);
            acc = fmaf(code[(v >> 20) & 15], x1.x, acc);
            acc = fmaf(code[(v >> 16) & 15], x1.y, acc);
            acc = fmaf(code[(v >> 28) & 15], x1.z, acc);
            acc = fmaf(code[(v >> 24) & 15], x1.w, acc);
            s = fmaf(acc, a, s);
        }
    } else {
#pragma unroll 4
        for (int wl = lane; wl < nwr; wl += 32) {
            const uint32_t v = __ldg(nw + w0 + wl);
            const float a = __ldg(absf + ((w0 + wl) >> 3));
            const float4 x0 = *(const float4 *)(xs + 8 * wl),
                         x1 = *(const float4 *)(xs + 8 * wl + 4);
            s = fmaf(fw_round(code[(v >> 4) & 15] * a, rnd), x0.x, s);
            s = fmaf(fw_round(code[v & 15] * a, rnd), x0.y, s);
            s = fmaf(fw_round(code[(v >> 12) & 15] * a, rnd), x0.z, s);
            s = fmaf(fw_round(code[(v >> 8) & 15] * a, rnd), x0.w, s);
            s = fmaf(fw_round(code[(v >> 20) & 15] * a, rnd), x1.x, s);
            s = fmaf(fw_round(code[(v >> 16) & 15] * a, rnd), x1.y, s);
            s = fmaf(fw_round(code[(v >> 28) & 15] * a, rnd), x1.z, s);
            s = fmaf(fw_round(code[(v >> 24) & 15] * a, rnd), x1.w, s);
        }
    }
    return hmoe_warp_sum(s);
}

__device__ __forceinline__ float f32_dot(const float *W, int64_t r, int cols, const float *xs,
                                         int lane)
{
    const float *wr = W + r * cols;
    float s = 0.f;
    for (int c = lane; c < cols; c += 32)
        s = fmaf(wr[c], xs[c], s);
    return hmoe_warp_sum(s);
}

/* NF4 row dot with every load issued before the math (one memory round trip per row): NW words
 * of 8 nibbles per lane cover nwr = cols / 8 <= 32 * NW words; NW == 0: the looping nf4_dot. */
template <int NW>
__device__ __forceinline__ float nf4_row(const uint32_t *nw, const float *absf, int64_t r, int cols,
                                         const float *xs, const float *code, int rnd, int lane)
{
    if (NW == 0) return nf4_dot(nw, absf, r, cols, xs, code, rnd, lane);
    const int nwr = cols >> 3;
    const int64_t w0 = r * nwr;
    uint32_t v[NW > 0 ? NW : 1];
    float a[NW > 0 ? NW : 1];
#pragma unroll
    for (int k = 0; k < NW; k++) {
        const int wl = lane + 32 * k;
        v[k] = wl < nwr ? __ldg(nw + w0 + wl) : 0u;
        a[k] = wl < nwr ? __ldg(absf + ((w0 + wl) >> 3)) : 0.f;
    }
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < NW; k++) {
        const int wl = lane + 32 * k;
        if (wl >= nwr) break;
        const float4 x0 = *(const float4 *)(xs + 8 * wl), x1 = *(const float4 *)(xs + 8 * wl + 4);
        const uint32_t q = v[k];
        if (rnd == FW_RND_NONE) {
            float acc = code[(q >> 4) & 15] * x0.x;
            acc = fmaf(code[q & 15], x0.y, acc);
            acc = fmaf(code[(q >> 12) & 15], x0.z, acc);
            acc = fmaf(code[(q >> 8) & 15], x0.w, acc);
            acc = fmaf(code[(q >> 20) & 15], x1.x, acc);
            acc = fmaf(code[(q >> 16) & 15], x1.y, acc);
            acc = fmaf(code[(q >> 28) & 15], x1.z, acc);
            acc = fmaf(code[(q >> 24) & 15], x1.w, acc);
            s = fmaf(acc, a[k], s);
        } else {
            const float ak = a[k];
            float s0 = fw_round(code[(q >> 4) & 15] * ak, rnd) * x0.x;
            float s1 = fw_round(code[q & 15] * ak, rnd) * x0.y;
            s0 = fmaf(fw_round(code[(q >> 12) & 15] * ak, rnd), x0.z, s0);
            s1 = fmaf(fw_round(code[(q >> 8) & 15] * ak, rnd), x0.w, s1);
            s0 = fmaf(fw_round(code[(q >> 20) & 15] * ak, rnd), x1.x, s0);
            s1 = fmaf(fw_round(code[(q >> 16) & 15] * ak, rnd), x1.y, s1);
            s0 = fmaf(fw_round(code[(q >> 28) & 15] * ak, rnd), x1.z, s0);
            s1 = fmaf(fw_round(code[(q >> 24) & 15] * ak, rnd), x1.w, s1);
            s += s0 + s1;
        }
    }
    return hmoe_warp_sum(s);
}

/* Dense NF4 (canonical) or F32 matvec y = W x: x staged in shared memory, one row per warp. */
template <int NW>
__global__ void __launch_bounds__(256)
    k_mv_dense(const void *W, const float *absf, fw_code16c code, int rnd, int f32, const float *x,
               float *y, int rows, int cols)
{
    extern __shared__ float xs[]; /* cols floats, then code[16] */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float *cs = xs + cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        xs[i] = x[i];
    if (threadIdx.x < 16) cs[threadIdx.x] = code.c[threadIdx.x];
    __syncthreads();
    const int r = blockIdx.x * (blockDim.x >> 5) + warp;
    if (r >= rows) return;
    const float v = f32 ? f32_dot((const float *)W, r, cols, xs, lane)
                        : nf4_row<NW>((const uint32_t *)W, absf, r, cols, xs, cs, rnd, lane);
    if (lane == 0) y[r] = v;
}

__device__ __forceinline__ float bf16_dot(const uint16_t *W, int64_t r, int cols, const float *xs,
                                          int lane)
{
    const uint16_t *wr = W + r * cols;
    float s = 0.f;
    for (int c = lane; c < cols; c += 32)
        s = fmaf(fw_bf16(wr[c]), xs[c], s);
    return hmoe_warp_sum(s);
}

/* act[s, r] = silu(gate_e x_t)[r] * (up_e x_t)[r] for assignment s = t*k + j (blockIdx.y),
 * e = idx[s]; blocks of experts that are not resident exit. One row per warp. x: (T, H);
 * act: (T*k, I). */
template <int NW>
__global__ void __launch_bounds__(256)
    k_ex_gateup(fw_ex_desc d, const int32_t *idx, const float *x, float *act)
{
    extern __shared__ float xs[]; /* H floats, then code[16] */
    const int s = blockIdx.y, e = idx[s];
    const int sl = e >= 0 ? d.slot[e] : -1;
    if (sl < 0) return;
    const int t = s / d.k, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float *code = xs + d.H;
    for (int i = threadIdx.x; i < d.H; i += blockDim.x)
        xs[i] = x[(int64_t)t * d.H + i];
    if (threadIdx.x < 16) code[threadIdx.x] = d.code[threadIdx.x];
    __syncthreads();
    const uint8_t *base = d.pool + (int64_t)sl * d.slot_bytes;
    const int r = blockIdx.x * (blockDim.x >> 5) + warp;
    if (r >= d.I) return;
    float gv, uv;
    if (d.fmt == FW_EX_NF4) {
        gv = nf4_row<NW>((const uint32_t *)base, (const float *)(base + d.o_ag), r, d.H, xs, code,
                         d.rnd, lane);
        uv = nf4_row<NW>((const uint32_t *)(base + d.o_up), (const float *)(base + d.o_au), r, d.H,
                         xs, code, d.rnd, lane);
    } else if (d.fmt == FW_EX_F32) {
        gv = f32_dot((const float *)base, r, d.H, xs, lane);
        uv = f32_dot((const float *)(base + d.o_up), r, d.H, xs, lane);
    } else {
        gv = bf16_dot((const uint16_t *)base, r, d.H, xs, lane);
        uv = bf16_dot((const uint16_t *)(base + d.o_up), r, d.H, xs, lane);
    }
    if (lane == 0) act[(int64_t)s * d.I + r] = fw_silu(gv) * uv;
}

/* ye[s, :] = down_e act[s, :] for resident experts; one row per warp. */
template <int NW>
__global__ void __launch_bounds__(256)
    k_ex_down(fw_ex_desc d, const int32_t *idx, const float *act, float *ye)
{
    extern __shared__ float xs[]; /* I floats, then code[16] */
    const int s = blockIdx.y, e = idx[s];
    const int sl = e >= 0 ? d.slot[e] : -1;
    if (sl < 0) return;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float *code = xs + d.I;
    for (int i = threadIdx.x; i < d.I; i += blockDim.x)
        xs[i] = act[(int64_t)s * d.I + i];
    if (threadIdx.x < 16) code[threadIdx.x] = d.code[threadIdx.x];
    __syncthreads();
    const uint8_t *base = d.pool + (int64_t)sl * d.slot_bytes;
    const int r = blockIdx.x * (blockDim.x >> 5) + warp;
    if (r >= d.H) return;
    float v;
    if (d.fmt == FW_EX_NF4)
        v = nf4_row<NW>((const uint32_t *)(base + d.o_down), (const float *)(base + d.o_ad), r, d.I,
                        xs, code, d.rnd, lane);
    else if (d.fmt == FW_EX_F32)
        v = f32_dot((const float *)(base + d.o_down), r, d.I, xs, lane);
    else
        v = bf16_dot((const uint16_t *)(base + d.o_down), r, d.I, xs, lane);
    if (lane == 0) ye[(int64_t)s * d.H + r] = v;
}

/* blk[t, :] = sum_j [resident] w[t, j] ye[perm(t*k + j), :] + sigmoid(sgl[t]) sy[t, :] + host[t,
 * :]. */
__global__ void k_moe_combine(const float *ye, const int32_t *perm, const int32_t *idx,
                              const float *w, const int *slot, int k, int H, const float *sy,
                              const float *sgl, const float *host, float *blk)
{
    const int d = blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y;
    if (d >= H) return;
    float acc = 0.f;
    for (int j = 0; j < k; j++) {
        const int s = t * k + j, e = idx[s];
        const int64_t row = perm ? perm[s] : s;
        if (e >= 0 && slot[e] >= 0) acc = fmaf(w[s], ye[row * H + d], acc);
    }
    if (sy) acc += (1.0f / (1.0f + expf(-sgl[t]))) * sy[(int64_t)t * H + d];
    if (host) acc += host[(int64_t)t * H + d];
    blk[(int64_t)t * H + d] = acc;
}

/* NF4 (hmoe_gpu_w layout, codes or f32 absmax) -> f32 [rows, cols], one thread per byte.
 * Scratch for the prefill GEMMs (one weight at a time, never the whole model). */
struct fw_code16 {
    float c[16];
};

__global__ void k_deq_nf4(const uint8_t *nib, const uint8_t *absq, const float *absf,
                          const float *nested, const float *ncode, float offset, int nshift,
                          fw_code16 code, float *out, int64_t n)
{
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; /* byte index */
    if (2 * i >= n) return;
    const int64_t b = (2 * i) >> 6;
    float a;
    if (absq)
        a = ncode[absq[b]] * nested[(b + nshift) >> 8] + offset;
    else
        a = absf[b];
    const uint8_t v = nib[i];
    out[2 * i] = code.c[v >> 4] * a;
    out[2 * i + 1] = code.c[v & 15] * a;
}

/* Canonical NF4 (nibbles from element 0 + fp32 absmax per 64) -> f32. */
__global__ void k_deq_nf4c(const uint8_t *nib, const float *absf, fw_code16 code, int rnd,
                           float *out, int64_t n)
{
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (2 * i >= n) return;
    const float a = absf[(2 * i) >> 6];
    const uint8_t v = nib[i];
    out[2 * i] = fw_round(code.c[v >> 4] * a, rnd);
    out[2 * i + 1] = fw_round(code.c[v & 15] * a, rnd);
}

/* The three NF4 matrices of expert slot slots[blockIdx.z] (blockIdx.y: gate, up, down) -> f32
 * at out + blockIdx.z * 3n. */
__global__ void k_deq_slot(const uint8_t *pool, const int32_t *slots, fw_ex_desc d, fw_code16 code,
                           float *out, int64_t n)
{
    const int m = blockIdx.y;
    const uint8_t *base = pool + (int64_t)slots[blockIdx.z] * d.slot_bytes;
    out += (int64_t)blockIdx.z * 3 * n;
    const int64_t off = m == 0 ? 0 : m == 1 ? d.o_up : d.o_down;
    const int64_t aoff = m == 0 ? d.o_ag : m == 1 ? d.o_au : d.o_ad;
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (2 * i >= n) return;
    const float a = ((const float *)(base + aoff))[(2 * i) >> 6];
    const uint8_t v = base[off + i];
    out[m * n + 2 * i] = fw_round(code.c[v >> 4] * a, d.rnd);
    out[m * n + 2 * i + 1] = fw_round(code.c[v & 15] * a, d.rnd);
}

/* BF16 / F32 expert slots -> f32 (blockIdx.y: matrix, blockIdx.z: slot in the list). */
__global__ void k_copy_slots(const uint8_t *pool, const int32_t *slots, fw_ex_desc d, float *out,
                             int64_t n)
{
    const int m = blockIdx.y;
    const uint8_t *base = pool + (int64_t)slots[blockIdx.z] * d.slot_bytes;
    const int64_t off = m == 0 ? 0 : m == 1 ? d.o_up : d.o_down;
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float v = d.fmt == FW_EX_F32 ? ((const float *)(base + off))[i]
                                       : fw_bf16(((const uint16_t *)(base + off))[i]);
    out[(int64_t)blockIdx.z * 3 * n + m * n + i] = v;
}

__global__ void k_bf16_to_f32(const uint16_t *x, float *y, int64_t n)
{
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n) y[i] = fw_bf16(x[i]);
}

/* Gathers rows: dst[i, :] = src[rows[i], :] (cols f32). */
__global__ void k_gather(const float *src, const int32_t *rows, float *dst, int cols)
{
    const int i = blockIdx.y;
    const int64_t s = rows[i];
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x)
        dst[(int64_t)i * cols + c] = src[s * cols + c];
}

} /* namespace */

/* Words of 8 nibbles per lane for an NF4 row of `cols` (1..16), or 0 for the looping form. */
static int fw_nw(int cols)
{
    const int nwr = cols / 8;
    for (int nw = 1; nw <= 16; nw *= 2)
        if (nwr <= 32 * nw) return nw;
    return 0;
}

enum hmoe_status fw_add_norm(cudaStream_t st, const float *src, const float *add, float *h,
                             const float *w, float *xn, int rows, int H, float eps)
{
    k_add_norm<<<rows, 256, 0, st>>>(src, add, h, w, xn, H, eps);
    HMOE_CUDA_LAUNCH_OK();
}

enum hmoe_status fw_mv_bf16(cudaStream_t st, const uint16_t *W, const float *x, float *y, int rows,
                            int cols, int T, int64_t xs, int64_t ys)
{
    k_mv_bf16<<<hmoe_cdiv((int64_t)rows * 32, 256), 256, 0, st>>>(W, x, y, rows, cols, T, xs, ys);
    HMOE_CUDA_LAUNCH_OK();
}

enum hmoe_status fw_mv_bf16_rows(cudaStream_t st, const uint16_t *W, const float *X, float *Y,
                                 int rows, int cols, int B)
{
    if (cols % 8 || B < 1 || B > FW_MAXB)
        return hmoe_fail(HMOE_E_INVAL, "fw_mv_bf16_rows: cols %d, %d tokens", cols, B);
    const unsigned grid = hmoe_cdiv(hmoe_cdiv(rows, FW_LM_R) * (int64_t)32, 256);
    void (*const kern[])(const uint16_t *, const float *, float *, int, int) = {
        k_mv_bf16_rows<1>, k_mv_bf16_rows<2>, k_mv_bf16_rows<3>, k_mv_bf16_rows<4>,
        k_mv_bf16_rows<5>, k_mv_bf16_rows<6>, k_mv_bf16_rows<7>, k_mv_bf16_rows<8>};
    static_assert(sizeof kern / sizeof kern[0] == FW_MAXB, "one instantiation per batch size");
    kern[B - 1]<<<grid, 256, 0, st>>>(W, X, Y, rows, cols);
    HMOE_CUDA_LAUNCH_OK();
}

enum hmoe_status fw_attn_prep(cudaStream_t st, const float *qg, const float *kb, const float *vb,
                              const float *qn, const float *kn, const float *inv_freq,
                              const int *d_pos, int pos_add, const int *bat, int64_t kvs, int T,
                              float *q, float *gate, float *kc, float *vc, int Hq, int Hkv, int D,
                              int rot, int cap, float eps)
{
    dim3 grid(Hq + Hkv, T);
    k_attn_prep<<<grid, 128, D * sizeof(float), st>>>(qg, kb, vb, qn, kn, inv_freq, d_pos, pos_add,
                                                      bat, kvs, q, gate, kc, vc, Hq, Hkv, D, rot,
                                                      cap, eps);
    HMOE_CUDA_LAUNCH_OK();
}

enum hmoe_status fw_attn_decode(cudaStream_t st, const float *q, const float *gate, const float *kc,
                                const float *vc, const int *bat, int64_t kvs, int B, float *sc,
                                float *part, float *o, int Hq, int Hkv, int D, int cap, float scale)
{
    k_attn_scores<<<dim3(Hq, FW_ATTN_SPLIT, B), 256, 0, st>>>(q, kc, bat, kvs, sc, Hq, Hkv, D, cap,
                                                              scale);
    k_attn_pv<<<dim3(Hq, FW_ATTN_SPLIT, B), 128, 0, st>>>(sc, vc, bat, kvs, part, Hq, Hkv, D, cap);
    k_attn_combine<<<dim3(Hq, B), 128, 0, st>>>(part, gate, o, bat, Hq, FW_ATTN_SPLIT, D);
    HMOE_CUDA_LAUNCH_OK();
}

enum hmoe_status fw_attn_prefill(cudaStream_t st, const float *q, const float *gate,
                                 const float *kc, const float *vc, const int *d_pos, float *o,
                                 int T, int Hq, int Hkv, int D, int cap, float scale)
{
    if (fw_pf_attn_ok(Hq, Hkv, D)) /* tiled (pf_kernels.cu) */
        return fw_pf_attn(st, q, gate, kc, vc, d_pos, o, T, Hq, Hkv, D, cap, scale);
    const int threads = 256, nw = threads / 32;
    const size_t smem = (size_t)(D + nw * (D + 2)) * sizeof(float);
    if (smem > 48 * 1024)
        return hmoe_fail(HMOE_E_UNSUPPORTED, "prefill attention: head_dim %d too large", D);
    k_attn_prefill<<<dim3(Hq, T), threads, smem, st>>>(q, gate, kc, vc, d_pos, o, Hq, Hkv, D, cap,
                                                       scale);
    HMOE_CUDA_LAUNCH_OK();
}

enum hmoe_status fw_gdn(cudaStream_t st, const float *qkvz, const float *ba, const float *dtb,
                        const float *nea, const float *convw, float *cstate, float *rstate,
                        const float *lnw, float *mixed, float *conv, float *z, float *beta,
                        float *gg, float *o, int T, int Hk, int Hv, int dk, int dv, int K,
                        float eps)
{
    const int kd = Hk * dk, vd = Hv * dv, cd = 2 * kd + vd;
    if (K > 8) return hmoe_fail(HMOE_E_UNSUPPORTED, "conv kernel %d > 8", K);
    if (T == 1 && fw_pf_gdn_decode_ok(Hk, Hv, dk, dv, K)) /* 2 fused kernels (pf_kernels.cu) */
        return fw_pf_gdn_decode(st, qkvz, ba, dtb, nea, convw, cstate, rstate, lnw, conv, z, beta,
                                gg, o, Hk, Hv, dk, dv, K, eps, NULL, 1, 0, 0);
    k_gdn_split<<<dim3(hmoe_cdiv(cd, 256), T), 256, 0, st>>>(qkvz, ba, dtb, nea, mixed, z, beta, gg,
                                                             Hk, Hv, dk, dv);
    if (T == 1)
        k_conv<<<hmoe_cdiv(cd, 128), 128, 0, st>>>(mixed, convw, cstate, conv, cd, K, T);
    else if (enum hmoe_status s = fw_pf_conv(st, mixed, convw, cstate, conv, cd, K, T))
        return s;
    const dim3 rg(Hv, hmoe_cdiv(dv, 32));
    const int tn = dv < 64 ? 32 : dv < 128 ? 64 : 128;
    if (fw_pf_gdn_ok(Hk, Hv, dk, dv)) { /* 4 lanes per state column (pf_kernels.cu) */
        /* mixed is free once the conv has run: scratch for the normalised q/k */
        if (enum hmoe_status s = fw_pf_gdn(st, conv, beta, gg, rstate, o, mixed, T, Hk, Hv, dk, dv))
            return s;
        k_gated_norm<<<(unsigned)((int64_t)T * Hv), tn, 0, st>>>(o, z, lnw, dv, eps);
        HMOE_CUDA_LAUNCH_OK();
    }
    switch (dk) { /* state columns in registers; other dk: the generic fused kernel */
    case 16: k_gdn_rec_reg<16><<<rg, 32, 0, st>>>(conv, beta, gg, rstate, o, Hk, Hv, dv, T); break;
    case 32: k_gdn_rec_reg<32><<<rg, 32, 0, st>>>(conv, beta, gg, rstate, o, Hk, Hv, dv, T); break;
    case 64: k_gdn_rec_reg<64><<<rg, 32, 0, st>>>(conv, beta, gg, rstate, o, Hk, Hv, dv, T); break;
    case 128:
        k_gdn_rec_reg<128><<<rg, 32, 0, st>>>(conv, beta, gg, rstate, o, Hk, Hv, dv, T);
        break;
    default: {
        const int threads = (dv + 31) / 32 * 32;
        if (threads > 1024)
            return hmoe_fail(HMOE_E_UNSUPPORTED, "GDN value head dim %d > 1024", dv);
        k_gdn_rec<<<Hv, threads, 2 * dk * sizeof(float), st>>>(conv, beta, gg, rstate, z, lnw, o,
                                                               Hk, Hv, dk, dv, T, eps);
        HMOE_CUDA_LAUNCH_OK();
    }
    }
    k_gated_norm<<<(unsigned)((int64_t)T * Hv), tn, 0, st>>>(o, z, lnw, dv, eps);
    HMOE_CUDA_LAUNCH_OK();
}

enum hmoe_status fw_silu_mul(cudaStream_t st, const float *g, const float *u, float *a, int64_t n)
{
    k_silu_mul<<<hmoe_cdiv(n, 256), 256, 0, st>>>(g, u, a, n);
    HMOE_CUDA_LAUNCH_OK();
}

enum hmoe_status fw_experts(cudaStream_t st, const fw_ex_desc *d, const int32_t *idx,
                            const float *x, float *act, float *ye, int n_assign)
{
    const int wpb = 8;
    const size_t sm1 = (size_t)(d->H + 16) * sizeof(float),
                 sm2 = (size_t)(d->I + 16) * sizeof(float);
    if (sm1 > 48 * 1024 || sm2 > 48 * 1024)
        return hmoe_fail(HMOE_E_UNSUPPORTED, "experts: hidden %d / intermediate %d too large", d->H,
                         d->I);
    const dim3 g1(hmoe_cdiv(d->I, wpb), n_assign), g2(hmoe_cdiv(d->H, wpb), n_assign);
#define FW_GU(NW) k_ex_gateup<NW><<<g1, wpb * 32, sm1, st>>>(*d, idx, x, act)
#define FW_DN(NW) k_ex_down<NW><<<g2, wpb * 32, sm2, st>>>(*d, idx, act, ye)
    switch (fw_nw(d->H)) {
    case 1: FW_GU(1); break;
    case 2: FW_GU(2); break;
    case 4: FW_GU(4); break;
    case 8: FW_GU(8); break;
    case 16: FW_GU(16); break;
    default: FW_GU(0);
    }
    switch (fw_nw(d->I)) {
    case 1: FW_DN(1); break;
    case 2: FW_DN(2); break;
    case 4: FW_DN(4); break;
    case 8: FW_DN(8); break;
    case 16: FW_DN(16); break;
    default: FW_DN(0);
    }
#undef FW_GU
#undef FW_DN
    HMOE_CUDA_LAUNCH_OK();
}

enum hmoe_status fw_moe_combine(cudaStream_t st, const float *ye, const int32_t *perm,
                                const int32_t *idx, const float *w, const int *slot, int k, int H,
                                const float *sy, const float *sgl, const float *host, float *blk,
                                int T)
{
    k_moe_combine<<<dim3(hmoe_cdiv(H, 256), T), 256, 0, st>>>(ye, perm, idx, w, slot, k, H, sy, sgl,
                                                         host, blk);
    HMOE_CUDA_LAUNCH_OK();
}

enum hmoe_status fw_deq_weight(cudaStream_t st, const struct hmoe_gpu_w *w, float *out)
{
    const int64_t n = w->rows * w->cols;
    if (w->dtype == HMOE_DT_BF16) {
        k_bf16_to_f32<<<hmoe_cdiv(n, 256), 256, 0, st>>>((const uint16_t *)w->d_w, out, n);
    } else {
        fw_code16 c;
        memcpy(c.c, w->code, sizeof c.c);
        k_deq_nf4<<<hmoe_cdiv(n / 2, 256), 256, 0, st>>>(
            (const uint8_t *)w->d_w, w->d_absq, w->d_absf, w->d_nested, w->d_ncode,
            w->nested_offset, w->nested_shift, c, out, n);
    }
    HMOE_CUDA_LAUNCH_OK();
}

enum hmoe_status fw_mv_dense(cudaStream_t st, const void *W, const float *absf, const float *code,
                             int rnd, int f32, const float *x, float *y, int rows, int cols)
{
    const size_t smem = (size_t)(cols + 16) * sizeof(float);
    if (smem > 48 * 1024) return hmoe_fail(HMOE_E_UNSUPPORTED, "matvec: %d columns", cols);
    fw_code16c c;
    if (code)
        memcpy(c.c, code, sizeof c.c);
    else
        memset(c.c, 0, sizeof c.c);
    const unsigned grid = hmoe_cdiv(rows, 8);
#define FW_MV(NW) k_mv_dense<NW><<<grid, 256, smem, st>>>(W, absf, c, rnd, f32, x, y, rows, cols)
    switch (f32 ? 0 : fw_nw(cols)) {
    case 1: FW_MV(1); break;
    case 2: FW_MV(2); break;
    case 4: FW_MV(4); break;
    case 8: FW_MV(8); break;
    case 16: FW_MV(16); break;
    default: FW_MV(0);
    }
#undef FW_MV
    HMOE_CUDA_LAUNCH_OK();
}

enum hmoe_status fw_deq_nf4c(cudaStream_t st, const uint8_t *nib, const float *absf,
                             const float *code, int rnd, float *out, int64_t n)
{
    fw_code16 c;
    memcpy(c.c, code, sizeof c.c);
    k_deq_nf4c<<<hmoe_cdiv(n / 2, 256), 256, 0, st>>>(nib, absf, c, rnd, out, n);
    HMOE_CUDA_LAUNCH_OK();
}

enum hmoe_status fw_bf16_to_f32(cudaStream_t st, const uint16_t *x, float *y, int64_t n)
{
    k_bf16_to_f32<<<hmoe_cdiv(n, 256), 256, 0, st>>>(x, y, n);
    HMOE_CUDA_LAUNCH_OK();
}

/* Resident expert slots d_slots[0..ns) (device) -> f32 gate [I, H] | up [I, H] | down [H, I]
 * at out + i * 3 * H * I. */
enum hmoe_status fw_deq_slots(cudaStream_t st, const fw_ex_desc *d, const int32_t *d_slots, int ns,
                              float *out)
{
    const int64_t n = (int64_t)d->H * d->I;
    if (d->fmt == FW_EX_NF4) {
        fw_code16 c;
        memcpy(c.c, d->code, sizeof c.c);
        k_deq_slot<<<dim3(hmoe_cdiv(n / 2, 256), 3, ns), 256, 0, st>>>(d->pool, d_slots, *d, c, out,
                                                                       n);
        HMOE_CUDA_LAUNCH_OK();
    }
    k_copy_slots<<<dim3(hmoe_cdiv(n, 256), 3, ns), 256, 0, st>>>(d->pool, d_slots, *d, out, n);
    HMOE_CUDA_LAUNCH_OK();
}

enum hmoe_status fw_gather(cudaStream_t st, const float *src, const int32_t *rows, float *dst,
                           int n, int cols)
{
    if (n <= 0) return HMOE_OK;
    k_gather<<<dim3(hmoe_cdiv(cols, 256) < 8 ? hmoe_cdiv(cols, 256) : 8, n), 256, 0, st>>>(
        src, rows, dst, cols);
    HMOE_CUDA_LAUNCH_OK();
}

enum hmoe_status fw_silu_gu(cudaStream_t st, const float *C, float *act, int I, int64_t n)
{
    if (n <= 0) return HMOE_OK;
    k_silu_gu<<<hmoe_cdiv(n * I, 256), 256, 0, st>>>(C, act, I, n);
    HMOE_CUDA_LAUNCH_OK();
}
