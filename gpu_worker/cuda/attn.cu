/* gpu_worker/cuda/attn.cu: gated full-attention decode (MODEL.md §1.4) for one query token:
 * o[h] = softmax(q[h] . K[g]^T * scale) V[g] with g = h / (Hq / Hkv), then o *= sigmoid(gate).
 * Split-KV: kernel 1 runs one block per (query head, 256-position chunk), a warp per position
 * (lanes over the head dims) with an online softmax, and writes (m, l, o) partials; kernel 2
 * combines the chunks of each head. K, V: f32 caches [Hkv, cap, D] (keys after k_norm and RoPE). */
#include "attn.cuh"

#define ATTN_CHUNK 256
#define ATTN_THREADS 256
#define ATTN_WARPS (ATTN_THREADS / 32)

template <int D>
__global__ void __launch_bounds__(ATTN_THREADS) k_attn_partial(const float *q, const float *k,
                                                               const float *v, int T, int cap,
                                                               int ratio, float scale, float *ws,
                                                               int nsplit)
{
    constexpr int DPL = D / 32;
    __shared__ float sm_m[ATTN_WARPS], sm_l[ATTN_WARPS], sm_o[ATTN_WARPS][D];
    const int h = blockIdx.x, sp = blockIdx.y, g = h / ratio;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float qr[DPL], o[DPL];
#pragma unroll
    for (int i = 0; i < DPL; i++) {
        qr[i] = q[h * D + lane * DPL + i];
        o[i] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    const int t0 = sp * ATTN_CHUNK, t1 = min(T, t0 + ATTN_CHUNK);
    for (int t = t0 + warp; t < t1; t += ATTN_WARPS) {
        const float *kr = k + ((int64_t)g * cap + t) * D + lane * DPL;
        const float *vr = v + ((int64_t)g * cap + t) * D + lane * DPL;
        float kv[DPL], vv[DPL], s = 0.f;
#pragma unroll
        for (int i = 0; i < DPL; i++) {
            kv[i] = kr[i];
            vv[i] = vr[i];
        }
#pragma unroll
        for (int i = 0; i < DPL; i++) s = fmaf(qr[i], kv[i], s);
        s = hmoe_warp_sum(s) * scale;
        hmoe_softmax_fold<DPL>(s, vv, m, l, o);
    }
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < DPL; i++) sm_o[warp][lane * DPL + i] = o[i];
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < ATTN_WARPS; w++) M = fmaxf(M, sm_m[w]);
    float *out = ws + ((int64_t)h * nsplit + sp) * (D + 2);
    for (int d = threadIdx.x; d < D; d += ATTN_THREADS) {
        float acc = 0.f;
        for (int w = 0; w < ATTN_WARPS; w++)
            if (sm_m[w] != -INFINITY) acc += expf(sm_m[w] - M) * sm_o[w][d];
        out[2 + d] = acc;
    }
    if (threadIdx.x == 0) {
        float L = 0.f;
        for (int w = 0; w < ATTN_WARPS; w++)
            if (sm_m[w] != -INFINITY) L += expf(sm_m[w] - M) * sm_l[w];
        out[0] = M;
        out[1] = L;
    }
}

__global__ void k_attn_combine(const float *ws, int nsplit, int D, const float *gate, float *o)
{
    const int h = blockIdx.x;
    const float *p = ws + (int64_t)h * nsplit * (D + 2);
    float M = -INFINITY;
    for (int s = 0; s < nsplit; s++) M = fmaxf(M, p[(int64_t)s * (D + 2)]);
    float L = 0.f;
    for (int s = 0; s < nsplit; s++) L += expf(p[(int64_t)s * (D + 2)] - M) * p[(int64_t)s * (D + 2) + 1];
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.f;
        for (int s = 0; s < nsplit; s++)
            acc += expf(p[(int64_t)s * (D + 2)] - M) * p[(int64_t)s * (D + 2) + 2 + d];
        float r = acc / L;
        if (gate) r *= 1.0f / (1.0f + expf(-gate[h * D + d]));
        o[h * D + d] = r;
    }
}

extern "C" size_t hmoe_gpu_attn_ws_bytes(int Hq, int D, int T)
{
    const int64_t ns = T > 0 ? (T + ATTN_CHUNK - 1) / ATTN_CHUNK : 1;
    return (size_t)((int64_t)Hq * ns * (D + 2) * 4);
}

extern "C" enum hmoe_status hmoe_gpu_attn_decode(struct hmoe_gpu *g, const float *d_q,
                                                 const float *d_k, const float *d_v,
                                                 const float *d_gate, float *d_o, int T, int cap,
                                                 int Hq, int Hkv, int D, float scale, float *d_ws)
{
    if (T < 1 || T > cap || Hkv < 1 || Hq < Hkv || Hq % Hkv || Hq > 65535)
        return hmoe_fail(HMOE_E_INVAL, "attn decode: T %d cap %d Hq %d Hkv %d", T, cap, Hq, Hkv);
    const int ns = (T + ATTN_CHUNK - 1) / ATTN_CHUNK;
    if (ns > 65535) return hmoe_fail(HMOE_E_RANGE, "attn decode: %d positions is too many", T);
    const dim3 grid((unsigned)Hq, (unsigned)ns);
    const int ratio = Hq / Hkv;
    switch (D) {
    case 64:
        k_attn_partial<64><<<grid, ATTN_THREADS, 0, g->stream>>>(d_q, d_k, d_v, T, cap, ratio, scale, d_ws, ns);
        break;
    case 128:
        k_attn_partial<128><<<grid, ATTN_THREADS, 0, g->stream>>>(d_q, d_k, d_v, T, cap, ratio, scale, d_ws, ns);
        break;
    case 256:
        k_attn_partial<256><<<grid, ATTN_THREADS, 0, g->stream>>>(d_q, d_k, d_v, T, cap, ratio, scale, d_ws, ns);
        break;
    default: return hmoe_fail(HMOE_E_UNSUPPORTED, "attn decode: head_dim %d (64, 128 or 256)", D);
    }
    HMOE_CUDA_LAUNCHED();
    k_attn_combine<<<(unsigned)Hq, D, 0, g->stream>>>(d_ws, ns, D, d_gate, d_o);
    HMOE_CUDA_LAUNCHED();
    return HMOE_OK;
}
