/* gpu_worker/cuda/router.cu: MoE routing (MODEL.md §1.7), one warp per token: fp32 softmax over
 * up to 1024 expert logits held in registers, k rounds of warp arg-max, optional renormalisation. */
#include "router.cuh"

__global__ void __launch_bounds__(256) k_router_topk(const float *logits, int n_tok, int n_exp,
                                                     int k, int norm, int32_t *idx, float *wout)
{
    const int tok = blockIdx.x * 8 + (threadIdx.x >> 5);
    if (tok >= n_tok) return;
    hmoe_topk_warp<false>(logits + (int64_t)tok * n_exp, n_exp, k, norm, idx + (int64_t)tok * k,
                          wout + (int64_t)tok * k);
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
