/* gpu_worker/cuda/router.cuh: the ordering used by the router's top-k (router.cu): larger
 * probability first, ties to the lower expert index (deterministic). */
#ifndef HMOE_CUDA_ROUTER_CUH
#define HMOE_CUDA_ROUTER_CUH

#include "common.cuh"

__device__ __forceinline__ bool hmoe_topk_better(float p, int i, float bp, int bi)
{
    return p > bp || (p == bp && i < bi);
}

#endif
