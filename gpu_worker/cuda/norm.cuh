/* gpu_worker/cuda/norm.cuh: per-element math of the two Qwen3-Next RMSNorms (MODEL.md §1.2,
 * §1.3), shared by the kernels in norm.cu. */
#ifndef HMOE_CUDA_NORM_CUH
#define HMOE_CUDA_NORM_CUH

#include "common.cuh"

/* silu(z) = z * sigmoid(z), full-precision exp as torch. */
__device__ __forceinline__ float hmoe_silu(float z)
{
    return z / (1.0f + expf(-z));
}

/* (x * inv) * (1 + w): Qwen3NextRMSNorm, fp32. */
__device__ __forceinline__ float hmoe_norm1p(float x, float inv, float w)
{
    return (x * inv) * (1.0f + w);
}

/* (w * (x * inv)) * silu(z): Qwen3NextRMSNormGated in fp32 (no intermediate cast). */
__device__ __forceinline__ float hmoe_norm_gated(float x, float inv, float w, float z)
{
    return (w * (x * inv)) * hmoe_silu(z);
}

#endif
