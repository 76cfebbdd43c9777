/* gpu_worker/cuda/router.cuh: the router's top-k (router.cu, dec_mv.cu): the ordering (larger
 * probability first, ties to the lower expert index: deterministic) and the one-warp softmax
 * top-k. */
#ifndef HMOE_CUDA_ROUTER_CUH
#define HMOE_CUDA_ROUTER_CUH

#include "common.cuh"

__device__ __forceinline__ bool hmoe_topk_better(float p, int i, float bp, int bi)
{
    return p > bp || (p == bp && i < bi);
}

/* fp32 softmax over n_exp <= 1024 logits (l) by one warp, then k rounds of warp arg-max;
 * lanes < k write idx / w (renormalised over the chosen ones when norm). CG: read the logits
 * past L1 (__ldcg; they were written by other blocks of the same kernel). */
template <bool CG>
__device__ __forceinline__ void hmoe_topk_warp(const float *l, int n_exp, int k, int norm,
                                               int32_t *idx, float *wout)
{
    const int lane = threadIdx.x & 31;
    float p[32];
    float m = -INFINITY;
#pragma unroll
    for (int j = 0; j < 32; j++) {
        const int e = j * 32 + lane;
        p[j] = e < n_exp ? (CG ? __ldcg(l + e) : l[e]) : -INFINITY;
        m = fmaxf(m, p[j]);
    }
    m = hmoe_warp_max(m);
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < 32; j++) {
        const int e = j * 32 + lane;
        p[j] = e < n_exp ? expf(p[j] - m) : 0.f;
        s += p[j];
    }
    s = hmoe_warp_sum(s);
#pragma unroll
    for (int j = 0; j < 32; j++)
        p[j] = j * 32 + lane < n_exp ? p[j] / s : -1.f;
    float sel_sum = 0.f, mine = 0.f;
    int my_idx = 0;
    for (int t = 0; t < k; t++) {
        float bp = -2.f;
        int bi = INT32_MAX;
#pragma unroll
        for (int j = 0; j < 32; j++)
            if (hmoe_topk_better(p[j], j * 32 + lane, bp, bi)) {
                bp = p[j];
                bi = j * 32 + lane;
            }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float op = __shfl_xor_sync(0xffffffffu, bp, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (hmoe_topk_better(op, oi, bp, bi)) {
                bp = op;
                bi = oi;
            }
        }
#pragma unroll
        for (int j = 0; j < 32; j++)
            if (j * 32 + lane == bi) p[j] = -1.f;
        sel_sum += bp;
        if (lane == t) {
            mine = bp;
            my_idx = bi;
        }
    }
    if (lane < k) {
        idx[lane] = my_idx;
        wout[lane] = norm ? mine / sel_sum : mine;
    }
}

#endif
