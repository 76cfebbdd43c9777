/* gpu_worker/cuda/gdn.cu: one decode step of the gated delta rule (MODEL.md §1.6 steps 5-7).
 * One block per value head, one thread per value dim j owning the state column S[:, j]
 * (coalesced across j); the column is read twice (the second read hits L1) and written once. */
#include "gdn.cuh"

template <int DK>
__global__ void __launch_bounds__(256) k_gdn_step(const float *q, const float *k, const float *v,
                                                   const float *g, const float *beta, float *S,
                                                   float *o, int ratio, int dv)
{
    __shared__ float qs[DK], ks[DK], red[32];
    const int h = blockIdx.x, kh = h / ratio, j = threadIdx.x;
    float sq = 0.f, sk = 0.f;
    for (int i = j; i < DK; i += blockDim.x) {
        qs[i] = q[kh * DK + i];
        ks[i] = k[kh * DK + i];
        sq = fmaf(qs[i], qs[i], sq);
        sk = fmaf(ks[i], ks[i], sk);
    }
    sq = hmoe_block_sum(sq, red);
    sk = hmoe_block_sum(sk, red);
    const float iq = rsqrtf(sq + 1e-6f), ik = rsqrtf(sk + 1e-6f);
    const float scale = rsqrtf((float)DK);
    __syncthreads();
    for (int i = j; i < DK; i += blockDim.x) {
        qs[i] = (qs[i] * iq) * scale;
        ks[i] = ks[i] * ik;
    }
    __syncthreads();
    float *Sh = S + (int64_t)h * DK * dv + j;
    const float decay = expf(g[h]);
    /* Pass 1: kv = (decay S)^T k. Pass 2 re-reads the column (from L1/L2) and writes it back. */
    float kv = 0.f;
#pragma unroll 8
    for (int i = 0; i < DK; i++) kv = fmaf(Sh[(int64_t)i * dv] * decay, ks[i], kv);
    const float delta = (v[h * dv + j] - kv) * beta[h];
    float out = 0.f;
#pragma unroll 8
    for (int i = 0; i < DK; i++) {
        const float s = fmaf(ks[i], delta, Sh[(int64_t)i * dv] * decay);
        Sh[(int64_t)i * dv] = s;
        out = fmaf(s, qs[i], out);
    }
    o[h * dv + j] = out;
}

extern "C" enum hmoe_status hmoe_gpu_gdn_step(struct hmoe_gpu *g, const float *d_q,
                                              const float *d_k, const float *d_v,
                                              const float *d_g, const float *d_beta,
                                              float *d_state, float *d_o, int Hk, int Hv, int dk,
                                              int dv)
{
    if (Hk < 1 || Hv < Hk || Hv % Hk || dv < 32 || dv > 256 || dv % 32)
        return hmoe_fail(HMOE_E_INVAL, "gdn step: Hk %d Hv %d dv %d (Hv %% Hk == 0, dv %% 32 == 0, dv <= 256)",
                         Hk, Hv, dv);
    const int ratio = Hv / Hk;
    switch (dk) {
    case 32:
        k_gdn_step<32><<<Hv, dv, 0, g->stream>>>(d_q, d_k, d_v, d_g, d_beta, d_state, d_o, ratio, dv);
        break;
    case 64:
        k_gdn_step<64><<<Hv, dv, 0, g->stream>>>(d_q, d_k, d_v, d_g, d_beta, d_state, d_o, ratio, dv);
        break;
    case 128:
        k_gdn_step<128><<<Hv, dv, 0, g->stream>>>(d_q, d_k, d_v, d_g, d_beta, d_state, d_o, ratio, dv);
        break;
    default: return hmoe_fail(HMOE_E_UNSUPPORTED, "gdn step: dk %d (32, 64 or 128)", dk);
    }
    HMOE_CUDA_LAUNCHED();
    return HMOE_OK;
}
