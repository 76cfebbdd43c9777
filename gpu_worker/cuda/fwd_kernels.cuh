/* gpu_worker/cuda/fwd_kernels.cuh: the kernels of the CUDA forward pass (forward_cuda.cu) that
 * are not in the shared kernel library: fused residual add + (1+w) RMSNorm, a generic BF16
 * matvec for odd shapes, q/k norm + partial RoPE + KV write, split decode attention with the
 * sigmoid gate, the GDN de-interleave + conv1d/SiLU step + gates, the GDN recurrent step fused
 * with the gated RMSNorm, routed experts read through a device-side residency table, the MoE
 * combine, and the prefill helpers (bf16 dequant for GEMM, causal prefill attention).
 * Shapes are generic (any head_dim, dk, dv, hidden); all arithmetic fp32. */
#ifndef HMOE_CUDA_FWD_KERNELS_CUH
#define HMOE_CUDA_FWD_KERNELS_CUH

#include "common.cuh"

/* Device layout of the routed-expert pool: one slot per resident expert, gate | up | down
 * (NF4: packed nibbles from element 0, then fp32 absmax per 64 elements; BF16: elements). */
enum fw_ex_fmt { FW_EX_NF4 = 0, FW_EX_BF16 = 1, FW_EX_F32 = 2 };
/* Rounding of a dequantized NF4 weight (bitsandbytes rounds to the quant_state dtype). */
enum fw_rnd { FW_RND_NONE = 0, FW_RND_BF16 = 1, FW_RND_F16 = 2 };

/* Where column i (of cd = 2 kd + Hv dv) of the de-interleaved [q | k | v] row sits in one
 * token's in_proj_qkvz row: key head groups of gw = 2 dk + 2 ratio dv ([q | k | v | z] per
 * key head, MODEL.md). */
__device__ __forceinline__ int fw_qkv_src(int i, int dk, int dv, int kd, int ratio, int gw)
{
    if (i < kd) return (i / dk) * gw + i % dk;
    if (i < 2 * kd) return ((i - kd) / dk) * gw + dk + (i - kd) % dk;
    const int c = i - 2 * kd;
    return (c / (ratio * dv)) * gw + 2 * dk + c % (ratio * dv);
}

struct fw_ex_desc {
    const uint8_t *pool;
    const int *slot; /* [E] slot of each expert of this layer, -1 = not resident */
    int64_t slot_bytes;
    int64_t o_up, o_down;     /* byte offsets of up / down weights inside a slot */
    int64_t o_ag, o_au, o_ad; /* NF4: byte offsets of the fp32 absmax of gate / up / down */
    int fmt, rnd, H, I, k;
    float code[16];
};

#endif
