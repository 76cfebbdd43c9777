/* gpu_worker/cuda/pdl.cuh: programmatic dependent launch (PDL, sm_90) for the decode step.
 * A kernel launched with fw_launch_pdl() may start while the kernel before it on the stream is
 * still running: it may read weights and constants at once, but must call fw_pdl_wait() before
 * it reads anything the previous kernels wrote (and before it writes anything they read).
 * fw_pdl_trigger() lets the next PDL kernel start early; calling it at the very start of a
 * kernel is safe (the next kernel still waits in fw_pdl_wait() for this one to finish and for
 * its writes to be visible). Both compile to nothing below sm_90. */
#ifndef HMOE_CUDA_PDL_CUH
#define HMOE_CUDA_PDL_CUH

#include <cuda_runtime.h>

static __device__ __forceinline__ void fw_pdl_wait(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

static __device__ __forceinline__ void fw_pdl_trigger(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* Launches kern<<<grid, block, smem, st>>>(args...) with programmatic stream serialization
 * (when `pdl` is nonzero; a plain launch otherwise). The kernel must call fw_pdl_wait(). */
template <typename... KArgs, typename... Args>
static cudaError_t fw_launch_pdl(int pdl, void (*kern)(KArgs...), dim3 grid, dim3 block,
                                 size_t smem, cudaStream_t st, Args... args)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = pdl ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kern, ((KArgs)args)...);
}

#endif
