/* gpu_worker/cuda/attn.cuh: the online-softmax state used by the split-KV attention decode
 * kernels (attn.cu): running max m, running sum l, and the unnormalised output accumulator. */
#ifndef HMOE_CUDA_ATTN_CUH
#define HMOE_CUDA_ATTN_CUH

#include "common.cuh"

/* Folds score s with value row v (DPL values of this lane) into (m, l, o). */
template <int DPL>
__device__ __forceinline__ void hmoe_softmax_fold(float s, const float *v, float &m, float &l, float *o)
{
    const float mn = fmaxf(m, s);
    const float corr = m == -INFINITY ? 0.f : expf(m - mn);
    const float p = expf(s - mn);
    l = l * corr + p;
#pragma unroll
    for (int i = 0; i < DPL; i++) o[i] = o[i] * corr + p * v[i];
    m = mn;
}

#endif
