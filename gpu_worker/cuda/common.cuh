/* gpu_worker/cuda/common.cuh: what every .cu of hmoe_gpu_kernels shares: the context and weight
 * structs behind the opaque handles of hmoe/gpu.h, HMOE_CUDA_CHECK, and small device helpers. */
#ifndef HMOE_CUDA_COMMON_CUH
#define HMOE_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "hmoe/gpu.h"

/* Returns HMOE_E_CUDA with "file:line: call: cuda error" from the enclosing function. */
#define HMOE_CUDA_CHECK(call)                                                                 \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        if (e_ != cudaSuccess)                                                                \
            return hmoe_fail(HMOE_E_CUDA, "%s:%d: %s: %s", __FILE__, __LINE__, #call,          \
                             cudaGetErrorString(e_));                                         \
    } while (0)

/* After a launch: the launch error (bad configuration), if any. */
#define HMOE_CUDA_LAUNCHED() HMOE_CUDA_CHECK(cudaGetLastError())
/* Ends a launcher: returns the launch error, else HMOE_OK. */
#define HMOE_CUDA_LAUNCH_OK()                                                                 \
    do {                                                                                      \
        HMOE_CUDA_LAUNCHED();                                                                 \
        return HMOE_OK;                                                                       \
    } while (0)

/* Blocks of b for a items (grid sizes). */
static inline unsigned hmoe_cdiv(int64_t a, int64_t b)
{
    return (unsigned)((a + b - 1) / b);
}

#define HMOE_GPU_MAX_TABLES 8
/* Default matvec designs (see hmoe_gpu_set_matvec_kernel), chosen from hmoe-bench-gpu. */
#define HMOE_GPU_MV_NF4_DEFAULT 1
#define HMOE_GPU_MV_BF16_DEFAULT 1

struct hmoe_gpu {
    int device;
    int n_sm;
    cudaStream_t stream;
    char desc[160];
    /* Distinct nested (8-bit dynamic) code tables seen at upload: host copy and device copy. */
    int n_tables;
    float tables[HMOE_GPU_MAX_TABLES][256];
    float *d_tables[HMOE_GPU_MAX_TABLES];
    /* Blocks per SM of each matvec kernel (0 = not yet queried); chosen designs. */
    int occ[64];
    int mv_nf4, mv_bf16;
};

struct hmoe_gpu_w {
    struct hmoe_gpu *g;
    enum hmoe_dtype dtype; /* HMOE_DT_NF4 or HMOE_DT_BF16 */
    int64_t rows, cols;
    void *d_buf;           /* one allocation holding everything below */
    const void *d_w;       /* NF4: packed nibbles (rows*cols/2 bytes); BF16: elements */
    const uint8_t *d_absq; /* NF4 codes mode: [n_blocks] 8-bit codes */
    const float *d_absf;   /* NF4 f32 mode (or no double quant): [n_blocks] absmax */
    const float *d_nested; /* codes mode: nested absmax [groups] */
    const float *d_ncode;  /* codes mode: nested code table [256] (shared, owned by g) */
    float nested_offset;
    int nested_shift;      /* first block's index within its 256-block nested group */
    float code[16];
    uint64_t bytes;        /* bytes read per matvec */
    int tiled;             /* NF4 nibbles in matvec.cu's 16x64 tile layout (designs 5..8) */
};

__device__ __forceinline__ float hmoe_bf16_lo(uint32_t v)
{
    return __uint_as_float(v << 16);
}

__device__ __forceinline__ float hmoe_bf16_hi(uint32_t v)
{
    return __uint_as_float(v & 0xffff0000u);
}

__device__ __forceinline__ float hmoe_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float hmoe_warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#endif
