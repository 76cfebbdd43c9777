/* gpu_worker/cuda/gdn.cuh: block-wide sum used by the Gated DeltaNet step (gdn.cu). */
#ifndef HMOE_CUDA_GDN_CUH
#define HMOE_CUDA_GDN_CUH

#include "common.cuh"

/* Sum of v over the block (blockDim.x a multiple of 32, <= 1024); every thread gets it. */
__device__ __forceinline__ float hmoe_block_sum(float v, float *red /* [32] shared */)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = hmoe_warp_sum(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = lane < nw ? red[lane] : 0.f;
    return hmoe_warp_sum(t);
}

#endif
