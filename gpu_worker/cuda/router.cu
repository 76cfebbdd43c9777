/* gpu_worker/cuda/router.cu: MoE routing (MODEL.md §1.7), one warp per token: fp32 softmax over
 * up to 1024 expert logits held in registers, k rounds of warp arg-max, optional renormalisation. */
#include "router.cuh"

__global__ void __launch_bounds__(256) k_router_topk(const float *logits, int n_tok, int n_exp,
                                                     int k, int norm, int32_t *idx, float *wout)
{
    const int tok = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (tok >= n_tok) return;
    const float *l = logits + (int64_t)tok * n_exp;
    float p[32];
    float m = -INFINITY;
#pragma unroll
    for (int j = 0; j < 32; j++) {
        const int e = j * 32 + lane;
        p[j] = e < n_exp ? l[e] : -INFINITY;
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
    for (int j = 0; j < 32; j++) p[j] = j * 32 + lane < n_exp ? p[j] / s : -1.f;
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
        idx[(int64_t)tok * k + lane] = my_idx;
        wout[(int64_t)tok * k + lane] = norm ? mine / sel_sum : mine;
    }
}

extern "C" enum hmoe_status hmoe_gpu_router_topk(struct hmoe_gpu *g, const float *d_logits,
                                                 int n_tok, int n_exp, int k, int norm,
                                                 int32_t *d_idx, float *d_w)
{
    if (n_tok < 0 || n_exp < 1 || n_exp > 1024 || k < 1 || k > 32 || k > n_exp)
        return hmoe_fail(HMOE_E_INVAL, "router: n_tok %d n_exp %d k %d (n_exp <= 1024, k <= 32)",
                         n_tok, n_exp, k);
    if (n_tok == 0) return HMOE_OK;
    k_router_topk<<<(unsigned)((n_tok + 7) / 8), 256, 0, g->stream>>>(d_logits, n_tok, n_exp, k,
                                                                      norm, d_idx, d_w);
    HMOE_CUDA_LAUNCHED();
    return HMOE_OK;
}
