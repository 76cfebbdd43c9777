/* gpu_worker/cuda/matvec.cu: decode-time matrix-vector products y = W x with fp32 accumulation.
 * NF4 (bnb layout): each lane streams 16-byte chunks (32 weights) of a row, keeps its slice of x
 * in registers across the rows of its task, and dequantizes through a per-lane-replicated
 * shared-memory table of (code[hi], code[lo]) pairs for every byte value (64 KiB, bank-conflict
 * free), scaled by the 64-block absmax (8-bit double-quant code decoded here, or fp32)
 * (designs 0..4). Designs 5..8: tensor cores (mma.m16n8k16 f16, fp32 accumulate) on a tiled
 * copy of the nibbles made at upload (hmoe_mv_nf4_prepare), see k_nf4_tc.
 * BF16: the same row/task scheme with 8 elements per 16-byte load. */
#include <cuda_fp16.h>
#include <stddef.h>
#include <string.h>

#include "matvec.cuh"

#define MV_THREADS 256
#define MV_WARPS (MV_THREADS / 32)
#define NF4_LUT_BYTES (256 * 32 * 8)

/* x . W for the 32 weights packed in q (16 bytes, element 2j in the high nibble), through the
 * per-lane table: lutl = smem + lane * 8, entry of byte value v at lutl + v * 256. */
__device__ __forceinline__ float nf4_dot32(const unsigned char *lutl, const uint4 q,
                                           const float *x) {
    const uint32_t wd[4] = {q.x, q.y, q.z, q.w};
    float a0 = 0.f, a1 = 0.f;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 c0 = *(const float2 *)(lutl + ((wd[i] << 8) & 0xff00u));
        const float2 c1 = *(const float2 *)(lutl + (wd[i] & 0xff00u));
        const float2 c2 = *(const float2 *)(lutl + ((wd[i] >> 8) & 0xff00u));
        const float2 c3 = *(const float2 *)(lutl + ((wd[i] >> 16) & 0xff00u));
        a0 = fmaf(x[8 * i + 0], c0.x, a0);
        a1 = fmaf(x[8 * i + 1], c0.y, a1);
        a0 = fmaf(x[8 * i + 2], c1.x, a0);
        a1 = fmaf(x[8 * i + 3], c1.y, a1);
        a0 = fmaf(x[8 * i + 4], c2.x, a0);
        a1 = fmaf(x[8 * i + 5], c2.y, a1);
        a0 = fmaf(x[8 * i + 6], c3.x, a0);
        a1 = fmaf(x[8 * i + 7], c3.y, a1);
    }
    return a0 + a1;
}

/* The fp32 absmax of block blk (relative to the job's first block), codes mode. */
__device__ __forceinline__ float nf4_absmax_code(const hmoe_mv_job &J, int64_t blk) {
    return __fadd_rn(
        __fmul_rn(__ldg(J.ncode + __ldg(J.absq + blk)), __ldg(J.nested + ((blk + J.nshift) >> 8))),
        J.offset);
}

/* Builds the per-lane (code[hi], code[lo]) table for every byte value: [256][32] float2. */
__device__ __forceinline__ void nf4_build_lut(unsigned char *smem, const float *code) {
    float2 *lut = (float2 *)smem;
    for (int e = threadIdx.x; e < 256 * 32; e += blockDim.x) {
        const int v = e >> 5;
        lut[e] = make_float2(code[v >> 4], code[v & 15]);
    }
}

/* 16-byte global -> shared copy that bypasses registers (zero-fills when !ok). */
__device__ __forceinline__ void cp_async16(uint4 *dst, const void *src, bool ok) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src),
                 "r"(ok ? 16 : 0)
                 : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void prefetch_l1(const void *p) {
    asm volatile("prefetch.global.L1 [%0];" ::"l"(p));
}

/* LPR lanes share a row segment of up to 64 chunks of 32 weights (2048 columns). */
template <int LPR, bool CODES>
__global__ void __launch_bounds__(MV_THREADS) k_nf4_mv(const __grid_constant__ hmoe_mv_batch b) {
    extern __shared__ __align__(16) unsigned char smem[]; /* [256 byte values][32 lanes] float2 */
    nf4_build_lut(smem, b.code);
    __syncthreads();
    constexpr int K = LPR == 32 ? 2 : 1; /* chunks per lane per row */
    constexpr int RPS = 32 / LPR;        /* rows per warp step */
    const int lane = threadIdx.x & 31, sub = lane / LPR, li = lane % LPR;
    const unsigned char *lutl = smem + lane * 8;
    const int nchunk = b.cols >> 5;
    const int ntask = b.n * b.row_tasks * b.nseg;
    for (int task = blockIdx.x * MV_WARPS + (threadIdx.x >> 5); task < ntask;
         task += gridDim.x * MV_WARPS) {
        const int seg = task % b.nseg;
        const int rt = (task / b.nseg) % b.row_tasks;
        const hmoe_mv_job &J = b.j[task / (b.nseg * b.row_tasks)];
        const uint8_t *wb = (const uint8_t *)J.w;
        int chunk[K];
        bool cv[K];
        float xr[K][32];
#pragma unroll
        for (int k = 0; k < K; k++) {
            chunk[k] = seg * 64 + k * LPR + li;
            cv[k] = k * LPR + li < 64 && chunk[k] < nchunk;
            const float4 *xp = (const float4 *)(J.x + (int64_t)chunk[k] * 32);
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const float4 t = cv[k] ? __ldg(xp + i) : make_float4(0.f, 0.f, 0.f, 0.f);
                xr[k][4 * i] = t.x;
                xr[k][4 * i + 1] = t.y;
                xr[k][4 * i + 2] = t.z;
                xr[k][4 * i + 3] = t.w;
            }
        }
        const int r0 = rt * b.rows_per_task;
        const int r1 = min(r0 + b.rows_per_task, b.rows);
        /* Software pipeline: the next row's weights and absmax are loaded before this row's math.
         */
        uint4 qn[K];
        uint32_t an[K];
#pragma unroll
        for (int k = 0; k < K; k++) {
            const int r = r0 + sub;
            const bool ok = r < r1 && cv[k];
            const int64_t e0 = (int64_t)r * b.cols + (int64_t)chunk[k] * 32;
            qn[k] = ok ? __ldg((const uint4 *)(wb + e0 / 2)) : make_uint4(0, 0, 0, 0);
            an[k] = !ok     ? 0u
                    : CODES ? (uint32_t)__ldg(J.absq + (e0 >> 6))
                            : __float_as_uint(__ldg(J.absf + (e0 >> 6)));
        }
        for (int rb = r0; rb < r1; rb += RPS) {
            const int r = rb + sub;
            uint4 q[K];
            uint32_t a[K];
#pragma unroll
            for (int k = 0; k < K; k++) {
                q[k] = qn[k];
                a[k] = an[k];
                const int rn = r + RPS;
                const bool ok = rn < r1 && cv[k];
                const int64_t e0 = (int64_t)rn * b.cols + (int64_t)chunk[k] * 32;
                qn[k] = ok ? __ldg((const uint4 *)(wb + e0 / 2)) : make_uint4(0, 0, 0, 0);
                an[k] = !ok     ? 0u
                        : CODES ? (uint32_t)__ldg(J.absq + (e0 >> 6))
                                : __float_as_uint(__ldg(J.absf + (e0 >> 6)));
            }
            float acc = 0.f;
#pragma unroll
            for (int k = 0; k < K; k++) {
                float am;
                if (CODES) {
                    const int64_t blk = ((int64_t)r * b.cols + (int64_t)chunk[k] * 32) >> 6;
                    const bool ok = r < r1 && cv[k];
                    am = ok ? __fadd_rn(__fmul_rn(__ldg(J.ncode + a[k]),
                                                  __ldg(J.nested + ((blk + J.nshift) >> 8))),
                                        J.offset)
                            : 0.f;
                } else {
                    am = __uint_as_float(a[k]);
                }
                acc = fmaf(nf4_dot32(lutl, q[k], xr[k]), am, acc);
            }
#pragma unroll
            for (int o = LPR / 2; o > 0; o >>= 1)
                acc += __shfl_xor_sync(0xffffffffu, acc, o);
            if (r < r1 && li == 0) {
                if (b.nseg == 1)
                    J.y[r] = acc;
                else
                    atomicAdd(J.y + r, acc);
            }
        }
    }
}

/* BF16: a lane owns 8 chunks of 8 columns of a 2048-column segment. */
__global__ void __launch_bounds__(MV_THREADS) k_bf16_mv(const __grid_constant__ hmoe_mv_batch b) {
    const int lane = threadIdx.x & 31;
    const int nchunk = b.cols >> 3;
    const int ntask = b.n * b.row_tasks * b.nseg;
    for (int task = blockIdx.x * MV_WARPS + (threadIdx.x >> 5); task < ntask;
         task += gridDim.x * MV_WARPS) {
        const int seg = task % b.nseg;
        const int rt = (task / b.nseg) % b.row_tasks;
        const hmoe_mv_job &J = b.j[task / (b.nseg * b.row_tasks)];
        const uint4 *wb = (const uint4 *)J.w;
        float xr[8][8];
        bool cv[8];
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const int c = seg * 256 + k * 32 + lane;
            cv[k] = c < nchunk;
            const float4 *xp = (const float4 *)(J.x + (int64_t)c * 8);
            const float4 t0 = cv[k] ? __ldg(xp) : make_float4(0.f, 0.f, 0.f, 0.f);
            const float4 t1 = cv[k] ? __ldg(xp + 1) : make_float4(0.f, 0.f, 0.f, 0.f);
            xr[k][0] = t0.x, xr[k][1] = t0.y, xr[k][2] = t0.z, xr[k][3] = t0.w;
            xr[k][4] = t1.x, xr[k][5] = t1.y, xr[k][6] = t1.z, xr[k][7] = t1.w;
        }
        const int r0 = rt * b.rows_per_task;
        const int r1 = min(r0 + b.rows_per_task, b.rows);
        for (int r = r0; r < r1; r++) {
            uint4 q[8];
#pragma unroll
            for (int k = 0; k < 8; k++)
                q[k] = cv[k] ? __ldg(wb + (int64_t)r * nchunk + seg * 256 + k * 32 + lane)
                             : make_uint4(0, 0, 0, 0);
            float acc = 0.f;
#pragma unroll
            for (int k = 0; k < 8; k++) {
                const uint32_t wd[4] = {q[k].x, q[k].y, q[k].z, q[k].w};
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    acc = fmaf(xr[k][2 * i], hmoe_bf16_lo(wd[i]), acc);
                    acc = fmaf(xr[k][2 * i + 1], hmoe_bf16_hi(wd[i]), acc);
                }
            }
            acc = hmoe_warp_sum(acc);
            if (lane == 0) {
                if (b.nseg == 1)
                    J.y[r] = acc;
                else
                    atomicAdd(J.y + r, acc);
            }
        }
    }
}

/* NF4 with a cp.async pipeline: each warp stages G row-steps per stage, ST stages deep, in its
 * own shared-memory slots (a lane copies and later reads back only its own 16-byte chunks), so
 * the bytes in flight are not limited by registers. Absmax bytes are prefetched to L1. */
template <int LPR, bool CODES, int G, int ST, bool FULL>
__global__ void __launch_bounds__(MV_THREADS, 1)
    k_nf4_mv_async(const __grid_constant__ hmoe_mv_batch b) {
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ float code_s[FULL ? 16 : 1];
    constexpr int K = LPR == 32 ? 2 : 1, RPS = 32 / LPR, SLOT = G * K * 32;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, sub = lane / LPR, li = lane % LPR;
    uint4 *sb = (uint4 *)(smem + NF4_LUT_BYTES) + warp * (ST * SLOT);
    const unsigned char *lutl = smem + lane * 8;
    const int nchunk = b.cols >> 5;
    const int ntask = b.n * b.row_tasks * b.nseg;
    bool first = true;
    for (int task = blockIdx.x * MV_WARPS + warp;; task += gridDim.x * MV_WARPS) {
        const bool have = task < ntask;
        const int t = have ? task : 0;
        const int seg = t % b.nseg, rt = (t / b.nseg) % b.row_tasks;
        const hmoe_mv_job &J = b.j[t / (b.nseg * b.row_tasks)];
        const uint8_t *wb = (const uint8_t *)J.w;
        const int r0 = rt * b.rows_per_task;
        const int r1 = have ? min(r0 + b.rows_per_task, b.rows) : r0;
        const int nsteps = (r1 - r0 + RPS - 1) / RPS, nst = (nsteps + G - 1) / G;
        int chunk[K];
        bool cv[K];
#pragma unroll
        for (int k = 0; k < K; k++) {
            chunk[k] = seg * 64 + k * LPR + li;
            cv[k] = have && k * LPR + li < 64 && chunk[k] < nchunk;
        }
#pragma unroll
        for (int s = 0; s < ST; s++) {
            /* stages 0..ST-2 now; the loop below issues stage s+ST-1 before computing s */
            if (s == ST - 1) break;
            if (s < nst) {
                uint4 *dst = sb + (s % ST) * SLOT;
#pragma unroll
                for (int gi = 0; gi < G; gi++) {
                    const int r = r0 + (s * G + gi) * RPS + sub;
#pragma unroll
                    for (int k = 0; k < K; k++) {
                        const bool ok = r < r1 && cv[k];
                        const int64_t e0 = (int64_t)r * b.cols + (int64_t)chunk[k] * 32;
                        cp_async16(dst + (gi * K + k) * 32 + lane,
                                   ok ? (const void *)(wb + e0 / 2) : J.w, ok);
                        if (ok)
                            prefetch_l1(CODES ? (const void *)(J.absq + (e0 >> 6))
                                              : (const void *)(J.absf + (e0 >> 6)));
                    }
                }
            }
            cp_async_commit();
        }
        float xr[K][32];
#pragma unroll
        for (int k = 0; k < K; k++) {
            const float4 *xp = (const float4 *)(J.x + (int64_t)chunk[k] * 32);
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const float4 v = cv[k] ? __ldg(xp + i) : make_float4(0.f, 0.f, 0.f, 0.f);
                xr[k][4 * i] = v.x;
                xr[k][4 * i + 1] = v.y;
                xr[k][4 * i + 2] = v.z;
                xr[k][4 * i + 3] = v.w;
            }
        }
        if (first) { /* every warp passes here once, before any exits */
            if constexpr (FULL) {
                /* the table is built from a shared copy of the 16 codes (no param-space
                 * loads inside the loop), 32 entries per thread, unrolled */
                if (threadIdx.x < 16) code_s[threadIdx.x] = b.code[threadIdx.x];
                __syncthreads();
                float2 *lut = (float2 *)smem;
#pragma unroll 8
                for (int i = 0; i < 256 * 32 / MV_THREADS; i++) {
                    const int e = i * MV_THREADS + threadIdx.x, v = e >> 5;
                    lut[e] = make_float2(code_s[v >> 4], code_s[v & 15]);
                }
            } else {
                nf4_build_lut(smem, b.code);
            }
            __syncthreads();
            first = false;
        }
        if (!have) break;
        for (int s = 0; s < nst; s++) {
            const int sn = s + ST - 1;
            if (sn < nst) {
                uint4 *dst = sb + (sn % ST) * SLOT;
#pragma unroll
                for (int gi = 0; gi < G; gi++) {
                    const int r = r0 + (sn * G + gi) * RPS + sub;
#pragma unroll
                    for (int k = 0; k < K; k++) {
                        const bool ok = r < r1 && cv[k];
                        const int64_t e0 = (int64_t)r * b.cols + (int64_t)chunk[k] * 32;
                        cp_async16(dst + (gi * K + k) * 32 + lane,
                                   ok ? (const void *)(wb + e0 / 2) : J.w, ok);
                        if (ok)
                            prefetch_l1(CODES ? (const void *)(J.absq + (e0 >> 6))
                                              : (const void *)(J.absf + (e0 >> 6)));
                    }
                }
            }
            cp_async_commit();
            cp_async_wait<ST - 1>();
            const uint4 *src = sb + (s % ST) * SLOT;
            if constexpr (FULL) {
                /* All G row-steps of the stage at once (rows past the end hold zero-filled
                 * chunks and absmax 0): independent dot products and one interleaved
                 * butterfly for the G sums. */
                float acc[G];
#pragma unroll
                for (int gi = 0; gi < G; gi++) {
                    const int r = r0 + (s * G + gi) * RPS + sub;
                    acc[gi] = 0.f;
#pragma unroll
                    for (int k = 0; k < K; k++) {
                        const bool ok = r < r1 && cv[k];
                        const int64_t blk = ((int64_t)r * b.cols + (int64_t)chunk[k] * 32) >> 6;
                        const float am = !ok     ? 0.f
                                         : CODES ? nf4_absmax_code(J, blk)
                                                 : __ldg(J.absf + blk);
                        acc[gi] = fmaf(nf4_dot32(lutl, src[(gi * K + k) * 32 + lane], xr[k]), am,
                                       acc[gi]);
                    }
                }
#pragma unroll
                for (int o = LPR / 2; o > 0; o >>= 1)
#pragma unroll
                    for (int gi = 0; gi < G; gi++)
                        acc[gi] += __shfl_xor_sync(0xffffffffu, acc[gi], o);
#pragma unroll
                for (int gi = 0; gi < G; gi++) {
                    const int r = r0 + (s * G + gi) * RPS + sub;
                    if (r < r1 && li == 0) {
                        if (b.nseg == 1)
                            J.y[r] = acc[gi];
                        else
                            atomicAdd(J.y + r, acc[gi]);
                    }
                }
            } else {
#pragma unroll
                for (int gi = 0; gi < G; gi++) {
                    const int step = s * G + gi;
                    if (step >= nsteps) break;
                    const int r = r0 + step * RPS + sub;
                    float acc = 0.f;
#pragma unroll
                    for (int k = 0; k < K; k++) {
                        const bool ok = r < r1 && cv[k];
                        const int64_t blk = ((int64_t)r * b.cols + (int64_t)chunk[k] * 32) >> 6;
                        const float am = !ok     ? 0.f
                                         : CODES ? nf4_absmax_code(J, blk)
                                                 : __ldg(J.absf + blk);
                        acc = fmaf(nf4_dot32(lutl, src[(gi * K + k) * 32 + lane], xr[k]), am, acc);
                    }
#pragma unroll
                    for (int o = LPR / 2; o > 0; o >>= 1)
                        acc += __shfl_xor_sync(0xffffffffu, acc, o);
                    if (r < r1 && li == 0) {
                        if (b.nseg == 1)
                            J.y[r] = acc;
                        else
                            atomicAdd(J.y + r, acc);
                    }
                }
            }
        }
    }
}

/* BF16 with the same cp.async staging: G rows per stage, ST stages, 8 chunks per lane per row. */
template <int G, int ST>
__global__ void __launch_bounds__(MV_THREADS, 1)
    k_bf16_mv_async(const __grid_constant__ hmoe_mv_batch b) {
    extern __shared__ __align__(16) unsigned char smem[];
    constexpr int SLOT = G * 8 * 32;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint4 *sb = (uint4 *)smem + warp * (ST * SLOT);
    const int nchunk = b.cols >> 3;
    const int ntask = b.n * b.row_tasks * b.nseg;
    for (int task = blockIdx.x * MV_WARPS + warp; task < ntask; task += gridDim.x * MV_WARPS) {
        const int seg = task % b.nseg, rt = (task / b.nseg) % b.row_tasks;
        const hmoe_mv_job &J = b.j[task / (b.nseg * b.row_tasks)];
        const uint4 *wb = (const uint4 *)J.w;
        const int r0 = rt * b.rows_per_task, r1 = min(r0 + b.rows_per_task, b.rows);
        const int nst = (r1 - r0 + G - 1) / G;
        bool cv[8];
#pragma unroll
        for (int k = 0; k < 8; k++)
            cv[k] = seg * 256 + k * 32 + lane < nchunk;
        for (int s = 0; s < ST - 1 + nst; s++) {
            /* s < ST-1: prologue issues; then issue stage s and compute stage s-(ST-1) */
            if (s < nst) {
                uint4 *dst = sb + (s % ST) * SLOT;
#pragma unroll
                for (int gi = 0; gi < G; gi++) {
                    const int r = r0 + s * G + gi;
#pragma unroll
                    for (int k = 0; k < 8; k++) {
                        const bool ok = r < r1 && cv[k];
                        cp_async16(dst + (gi * 8 + k) * 32 + lane,
                                   ok ? (const void *)(wb + (int64_t)r * nchunk + seg * 256 +
                                                       k * 32 + lane)
                                      : J.w,
                                   ok);
                    }
                }
            }
            cp_async_commit();
            if (s < ST - 1) continue;
            cp_async_wait<ST - 1>();
            const int sc = s - (ST - 1);
            const uint4 *src = sb + (sc % ST) * SLOT;
#pragma unroll
            for (int gi = 0; gi < G; gi++) {
                const int r = r0 + sc * G + gi;
                if (r >= r1) break;
                float acc = 0.f;
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    const uint4 q = src[(gi * 8 + k) * 32 + lane];
                    const float *xp = J.x + (int64_t)(seg * 256 + k * 32 + lane) * 8;
                    if (cv[k]) {
                        const float4 x0 = __ldg((const float4 *)xp),
                                     x1 = __ldg((const float4 *)xp + 1);
                        acc = fmaf(x0.x, hmoe_bf16_lo(q.x), acc);
                        acc = fmaf(x0.y, hmoe_bf16_hi(q.x), acc);
                        acc = fmaf(x0.z, hmoe_bf16_lo(q.y), acc);
                        acc = fmaf(x0.w, hmoe_bf16_hi(q.y), acc);
                        acc = fmaf(x1.x, hmoe_bf16_lo(q.z), acc);
                        acc = fmaf(x1.y, hmoe_bf16_hi(q.z), acc);
                        acc = fmaf(x1.z, hmoe_bf16_lo(q.w), acc);
                        acc = fmaf(x1.w, hmoe_bf16_hi(q.w), acc);
                    }
                }
                acc = hmoe_warp_sum(acc);
                if (lane == 0) {
                    if (b.nseg == 1)
                        J.y[r] = acc;
                    else
                        atomicAdd(J.y + r, acc);
                }
            }
        }
    }
}

/* ---- Designs 5..8: tensor-core NF4 matvec on a tiled layout (6 = 5 launched with
 * programmatic dependent launch, 7 = 6 with two tiles per warp where a warp has <= 4 blocks,
 * 8 = 6 with persistent thread blocks, see k_nf4_tcp). Layout, written at upload by k_nf4_tile:
 * rows padded to a multiple of 16; tile T (rows 16T..16T+15) x block B (columns 64B..64B+63) is a
 * 512-byte chunk at (T * nblk + B) * 512; lane l = 4g + t owns its 16 bytes, word s (columns
 * 16s..16s+15 of the block) holds the A fragment of mma.m16n8k16 for that lane: byte i = the bnb
 * byte (first column in the high nibble) of row g + 8 (i & 1), columns 16s + 2t + 8 (i >> 1) + {0,
 * 1}. Each byte is dequantized by one shared-memory load from a per-lane table of half2 (code[hi],
 * code[lo]) at v * 256 + lane * 4 (the other 128 bytes of each 256-byte row hold the warps' x
 * fragments). x enters as B (16 x 8): column 0 = hi = fp16(x * 2^e), column 1 = lo = fp16(x * 2^e -
 * hi), with 2^e chosen per 64-column block from max |x| (exact power-of-two scaling: no overflow,
 * no lost low bits); fp32 accumulation, absmax * 2^-e applied per block to D[:,0] + D[:,1]. The
 * only rounding beyond fp32 is the NF4 code in fp16 (relative <= 3.3e-4 for the NF4 table). */
/* TC_LUT_BYTES: [256 byte values][64 words], words 0..31 the table, 32..63 x fragments;
 * TC_NBW: 64-column blocks per warp at most (cols <= 16 * 64 * ks) */
#define TC_LUT_BYTES 65536
#define TC_NBW 16
#define TC_SMEM (TC_LUT_BYTES + MV_WARPS * TC_NBW * 4 + MV_WARPS * 2 * 16 * 4)
#define TC_MAX_COLS 8192

__device__ __forceinline__ void pdl_wait() {
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
}

__device__ __forceinline__ void pdl_launch_dependents() {
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}

__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, "
        "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Byte offset of warp w's x fragments of its block i, k-step s (0..3): rows 32w + 2i + s/2 of
 * the table, second half, 64 bytes (8 uint2: lanes 0..3 hi, 4..7 lo) per k-step. */
__device__ __forceinline__ int tc_xfrag_off(int w, int i, int s) {
    return (32 * w + 2 * i + (s >> 1)) * 256 + 128 + (s & 1) * 64;
}

/* One block of 8 warps per unit of 8 / ks x TPW tiles; see above. A warp handles TPW tiles
 * (sharing its x fragments) over its blocks kp, kp + ks, ..., PF blocks' loads in flight per
 * tile (PF 4 with TPW 1: fewer registers, 3 thread blocks per SM). */
template <bool CODES, int PF, int TPW>
__global__ void __launch_bounds__(MV_THREADS, PF *TPW == 4 ? 3 : 2)
    k_nf4_tc(const __grid_constant__ hmoe_mv_batch b) {
    extern __shared__ __align__(16) unsigned char smem[];
    float *xinv = (float *)(smem + TC_LUT_BYTES); /* [warp][TC_NBW] 2^-e per block */
    float *red = xinv + MV_WARPS * TC_NBW;        /* [warp][TPW][16] partial row sums */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int j = blockIdx.x / b.upj, u = blockIdx.x % b.upj;
    const hmoe_mv_job &J = b.j[j];
    const int ks = b.ks, tpu = MV_WARPS / ks, tl = warp / ks, kp = warp % ks;
    const int T0 = (u * tpu + tl) * TPW; /* first of this warp's tiles */
    const int nblk = b.cols >> 6;
    const int nbw = T0 < b.ntile && kp < nblk ? (nblk - kp + ks - 1) / ks : 0;
    pdl_launch_dependents(); /* no-op without a dependent launch */

    /* 1. weights and absmax (constant: read before the previous kernel ends, with PDL); all
     * loads of a pass are independent and issued together */
    uint4 q[TPW][PF];
    float am0[TPW][PF], am1[TPW][PF]; /* absmax of rows g and g + 8 (lanes with t == 0) */
    auto load = [&](int pass) {
        uint32_t a0[TPW][PF], a1[TPW][PF];
        float n0[TPW][PF], n1[TPW][PF];
#pragma unroll
        for (int tw = 0; tw < TPW; tw++) {
            const int T = T0 + tw, rg = 16 * T + g, rg8 = rg + 8;
            const bool tok = T < b.ntile;
            const bool okg = tok && t == 0 && rg < b.rows, okg8 = tok && t == 0 && rg8 < b.rows;
            const uint4 *wt = (const uint4 *)J.w + (int64_t)T * nblk * 32 + lane;
#pragma unroll
            for (int k = 0; k < PF; k++) {
                const int i = pass * PF + k, blk = kp + i * ks;
                const bool ok = i < nbw;
                q[tw][k] = ok && tok ? __ldg(wt + (int64_t)blk * 32) : make_uint4(0, 0, 0, 0);
                const int64_t e0 = (int64_t)rg * nblk + blk, e1 = (int64_t)rg8 * nblk + blk;
                if (CODES) {
                    a0[tw][k] = ok && okg ? __ldg(J.absq + e0) : 0u;
                    a1[tw][k] = ok && okg8 ? __ldg(J.absq + e1) : 0u;
                    n0[tw][k] = ok && okg ? __ldg(J.nested + ((e0 + J.nshift) >> 8)) : 0.f;
                    n1[tw][k] = ok && okg8 ? __ldg(J.nested + ((e1 + J.nshift) >> 8)) : 0.f;
                } else {
                    am0[tw][k] = ok && okg ? __ldg(J.absf + e0) : 0.f;
                    am1[tw][k] = ok && okg8 ? __ldg(J.absf + e1) : 0.f;
                }
            }
        }
        if (CODES) { /* bnb: code * nested absmax (fp32), then + offset */
#pragma unroll
            for (int tw = 0; tw < TPW; tw++)
#pragma unroll
                for (int k = 0; k < PF; k++) {
                    am0[tw][k] =
                        __fadd_rn(__fmul_rn(__ldg(J.ncode + a0[tw][k]), n0[tw][k]), J.offset);
                    am1[tw][k] =
                        __fadd_rn(__fmul_rn(__ldg(J.ncode + a1[tw][k]), n1[tw][k]), J.offset);
                }
        }
    };
    load(0);

    /* 2. per-lane table: thread v writes the 32 copies of entry v (rotated 16-byte stores) */
    {
        const int v = threadIdx.x;
        const __half2 h = __floats2half2_rn(b.code[v >> 4], b.code[v & 15]);
        const uint32_t e = *(const uint32_t *)&h;
        const uint4 e4 = make_uint4(e, e, e, e);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const int c = (k + v) & 7;
            *(uint4 *)(smem + v * 256 + c * 16) = e4;
        }
    }

    /* 3. x (written by the previous kernel): per block of this warp, scale and fragments; the
     * loads of PF blocks first, then their reductions (independent chains) */
    pdl_wait();
    {
        const float *xp = J.x + 2 * lane;
        const int s = lane >> 3, p = lane & 7, fl = p & 3, reg = p >> 2;
        for (int i0 = 0; i0 < nbw; i0 += PF) {
            float2 xv[PF];
#pragma unroll
            for (int k = 0; k < PF; k++)
                xv[k] = i0 + k < nbw ? __ldg((const float2 *)(xp + 64 * (kp + (i0 + k) * ks)))
                                     : make_float2(0.f, 0.f);
            float m[PF];
#pragma unroll
            for (int k = 0; k < PF; k++)
                m[k] = fmaxf(fabsf(xv[k].x), fabsf(xv[k].y));
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
#pragma unroll
                for (int k = 0; k < PF; k++)
                    m[k] = fmaxf(m[k], __shfl_xor_sync(0xffffffffu, m[k], o));
#pragma unroll
            for (int k = 0; k < PF; k++) {
                const int i = i0 + k;
                if (i < nbw) {
                    /* 2^e with max |x| * 2^e < 2^14; ef = biased exponent of max |x| */
                    const int ef = (int)((__float_as_uint(m[k]) >> 23) & 0xff);
                    const int se = min(267 - ef, 253);
                    const float sc = __uint_as_float((uint32_t)se << 23);
                    if (lane == 0)
                        xinv[warp * TC_NBW + i] = __uint_as_float((uint32_t)(254 - se) << 23);
                    const float x0 = xv[k].x * sc, x1 = xv[k].y * sc;
                    const __half2 hi = __floats2half2_rn(x0, x1);
                    const float2 hf = __half22float2(hi);
                    const __half2 lo = __floats2half2_rn(x0 - hf.x, x1 - hf.y);
                    uint32_t *f = (uint32_t *)(smem + tc_xfrag_off(warp, i, s));
                    f[fl * 2 + reg] = *(const uint32_t *)&hi;
                    f[(4 + fl) * 2 + reg] = *(const uint32_t *)&lo;
                }
            }
        }
    }
    __syncthreads();

    /* 4. per block: 4 mma (k = 64) per tile into a fresh D, then
     * acc += (D[:,0] + D[:,1]) * absmax * 2^-e */
    float acc0[TPW], acc1[TPW];
#pragma unroll
    for (int tw = 0; tw < TPW; tw++)
        acc0[tw] = acc1[tw] = 0.f;
    const uint32_t lb = (uint32_t)lane * 4;
    for (int pass = 0; pass * PF < nbw; pass++) {
        if (pass > 0) load(pass);
#pragma unroll
        for (int k = 0; k < PF; k++) {
            const int i = pass * PF + k;
            if (i < nbw) {
                float d[TPW][4];
#pragma unroll
                for (int tw = 0; tw < TPW; tw++)
                    d[tw][0] = d[tw][1] = d[tw][2] = d[tw][3] = 0.f;
#pragma unroll
                for (int s = 0; s < 4; s++) {
                    uint2 bf = make_uint2(0u, 0u);
                    if (lane < 8) bf = *(const uint2 *)(smem + tc_xfrag_off(warp, i, s) + lane * 8);
#pragma unroll
                    for (int tw = 0; tw < TPW; tw++) {
                        const uint32_t wd = s == 0   ? q[tw][k].x
                                            : s == 1 ? q[tw][k].y
                                            : s == 2 ? q[tw][k].z
                                                     : q[tw][k].w;
                        uint32_t a[4];
#pragma unroll
                        for (int bi = 0; bi < 4; bi++)
                            a[bi] = *(const uint32_t *)(smem +
                                                        __byte_perm(wd, lb, 0x5504u | (bi << 4)));
                        mma_16816(d[tw], a, bf.x, bf.y);
                    }
                }
                const float xi = xinv[warp * TC_NBW + i];
#pragma unroll
                for (int tw = 0; tw < TPW; tw++) {
                    acc0[tw] = fmaf(d[tw][0] + d[tw][1], am0[tw][k] * xi, acc0[tw]);
                    acc1[tw] = fmaf(d[tw][2] + d[tw][3], am1[tw][k] * xi, acc1[tw]);
                }
            }
        }
    }

    /* 5. the ks partial sums of each row, added in a fixed order (no atomics) */
    if (t == 0) {
#pragma unroll
        for (int tw = 0; tw < TPW; tw++) {
            red[(warp * TPW + tw) * 16 + g] = acc0[tw];
            red[(warp * TPW + tw) * 16 + g + 8] = acc1[tw];
        }
    }
    __syncthreads();
    if (threadIdx.x < 16 * TPW * tpu) {
        const int tt = threadIdx.x / (16 * TPW), tw = (threadIdx.x / 16) % TPW,
                  rr = threadIdx.x & 15;
        const int row = ((u * tpu + tt) * TPW + tw) * 16 + rr;
        float sum = 0.f;
        for (int k = 0; k < ks; k++)
            sum += red[((tt * ks + k) * TPW + tw) * 16 + rr];
        if (row < b.rows) J.y[row] = sum;
    }
}

/* Design 8: k_nf4_tc's math with persistent thread blocks (one grid of at most the resident
 * blocks): the table is built once per block, x fragments again only when the job's x changes,
 * and the next unit's weights and absmax are loaded while the current unit is computed. For
 * rows of at most 4 blocks per warp (PF 4, one tile per warp); launched with PDL. */
template <bool CODES>
__global__ void __launch_bounds__(MV_THREADS, 2)
    k_nf4_tcp(const __grid_constant__ hmoe_mv_batch b) {
    constexpr int PF = 4;
    extern __shared__ __align__(16) unsigned char smem[];
    float *xinv = (float *)(smem + TC_LUT_BYTES); /* [warp][TC_NBW] */
    float *red = xinv + MV_WARPS * TC_NBW;        /* [2][warp][16] */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int ks = b.ks, tpu = MV_WARPS / ks, tl = warp / ks, kp = warp % ks;
    const int nblk = b.cols >> 6, nunits = b.n * b.upj;
    const int nbw_full = kp < nblk ? (nblk - kp + ks - 1) / ks : 0;
    pdl_launch_dependents();

    /* raw loads of unit un into (q, r0, r1, n0, n1); f32 mode: r0/r1 hold the absmax bits */
    auto issue = [&](int un, uint4(&q)[PF], uint32_t(&r0)[PF], uint32_t(&r1)[PF], float(&n0)[PF],
                     float(&n1)[PF]) {
        const hmoe_mv_job &J = b.j[un / b.upj];
        const int T = (un % b.upj) * tpu + tl, rg = 16 * T + g, rg8 = rg + 8;
        const int nbw = T < b.ntile ? nbw_full : 0;
        const bool okg = t == 0 && rg < b.rows, okg8 = t == 0 && rg8 < b.rows;
        const uint4 *wt = (const uint4 *)J.w + (int64_t)T * nblk * 32 + lane;
#pragma unroll
        for (int k = 0; k < PF; k++) {
            const int blk = kp + k * ks;
            const bool ok = k < nbw;
            q[k] = ok ? __ldg(wt + (int64_t)blk * 32) : make_uint4(0, 0, 0, 0);
            const int64_t e0 = (int64_t)rg * nblk + blk, e1 = (int64_t)rg8 * nblk + blk;
            if (CODES) {
                r0[k] = ok && okg ? __ldg(J.absq + e0) : 0u;
                r1[k] = ok && okg8 ? __ldg(J.absq + e1) : 0u;
                n0[k] = ok && okg ? __ldg(J.nested + ((e0 + J.nshift) >> 8)) : 0.f;
                n1[k] = ok && okg8 ? __ldg(J.nested + ((e1 + J.nshift) >> 8)) : 0.f;
            } else {
                r0[k] = ok && okg ? __float_as_uint(__ldg(J.absf + e0)) : 0u;
                r1[k] = ok && okg8 ? __float_as_uint(__ldg(J.absf + e1)) : 0u;
            }
        }
    };
    auto decode = [&](int un, const uint32_t(&r0)[PF], const uint32_t(&r1)[PF],
                      const float(&n0)[PF], const float(&n1)[PF], float(&am0)[PF],
                      float(&am1)[PF]) {
        const hmoe_mv_job &J = b.j[un / b.upj];
#pragma unroll
        for (int k = 0; k < PF; k++) {
            if (CODES) {
                am0[k] = __fadd_rn(__fmul_rn(__ldg(J.ncode + r0[k]), n0[k]), J.offset);
                am1[k] = __fadd_rn(__fmul_rn(__ldg(J.ncode + r1[k]), n1[k]), J.offset);
            } else {
                am0[k] = __uint_as_float(r0[k]);
                am1[k] = __uint_as_float(r1[k]);
            }
        }
    };
    /* x fragments of this warp's blocks (as in k_nf4_tc) */
    auto build_x = [&](const float *x) {
        const float *xp = x + 2 * lane;
        const int s = lane >> 3, p = lane & 7, fl = p & 3, reg = p >> 2;
        float2 xv[PF];
#pragma unroll
        for (int k = 0; k < PF; k++)
            xv[k] = k < nbw_full ? __ldg((const float2 *)(xp + 64 * (kp + k * ks)))
                                 : make_float2(0.f, 0.f);
        float m[PF];
#pragma unroll
        for (int k = 0; k < PF; k++)
            m[k] = fmaxf(fabsf(xv[k].x), fabsf(xv[k].y));
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
#pragma unroll
            for (int k = 0; k < PF; k++)
                m[k] = fmaxf(m[k], __shfl_xor_sync(0xffffffffu, m[k], o));
#pragma unroll
        for (int k = 0; k < PF; k++) {
            if (k < nbw_full) {
                const int ef = (int)((__float_as_uint(m[k]) >> 23) & 0xff);
                const int se = min(267 - ef, 253);
                const float sc = __uint_as_float((uint32_t)se << 23);
                if (lane == 0)
                    xinv[warp * TC_NBW + k] = __uint_as_float((uint32_t)(254 - se) << 23);
                const float x0 = xv[k].x * sc, x1 = xv[k].y * sc;
                const __half2 hi = __floats2half2_rn(x0, x1);
                const float2 hf = __half22float2(hi);
                const __half2 lo = __floats2half2_rn(x0 - hf.x, x1 - hf.y);
                uint32_t *f = (uint32_t *)(smem + tc_xfrag_off(warp, k, s));
                f[fl * 2 + reg] = *(const uint32_t *)&hi;
                f[(4 + fl) * 2 + reg] = *(const uint32_t *)&lo;
            }
        }
    };

    int un = blockIdx.x;
    uint4 q[PF], qn[PF];
    uint32_t r0[PF], r1[PF];
    float n0[PF], n1[PF], am0[PF], am1[PF];
    issue(un, q, r0, r1, n0, n1);
    {
        const int v = threadIdx.x;
        const __half2 h = __floats2half2_rn(b.code[v >> 4], b.code[v & 15]);
        const uint32_t e = *(const uint32_t *)&h;
        const uint4 e4 = make_uint4(e, e, e, e);
#pragma unroll
        for (int k = 0; k < 8; k++)
            *(uint4 *)(smem + v * 256 + ((k + v) & 7) * 16) = e4;
    }
    decode(un, r0, r1, n0, n1, am0, am1);
    pdl_wait();
    const float *cur_x = b.j[un / b.upj].x;
    build_x(cur_x);
    __syncthreads();
    const uint32_t lb = (uint32_t)lane * 4;
    for (int it = 0;; it++) {
        const int nx = un + gridDim.x;
        const bool hn = nx < nunits;
        if (hn) issue(nx, qn, r0, r1, n0, n1);
        const int T = (un % b.upj) * tpu + tl;
        const int nbw = T < b.ntile ? nbw_full : 0;
        float acc0 = 0.f, acc1 = 0.f;
#pragma unroll
        for (int k = 0; k < PF; k++) {
            if (k < nbw) {
                float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
                for (int s = 0; s < 4; s++) {
                    const uint32_t wd = s == 0   ? q[k].x
                                        : s == 1 ? q[k].y
                                        : s == 2 ? q[k].z
                                                 : q[k].w;
                    uint32_t a[4];
#pragma unroll
                    for (int bi = 0; bi < 4; bi++)
                        a[bi] =
                            *(const uint32_t *)(smem + __byte_perm(wd, lb, 0x5504u | (bi << 4)));
                    uint2 bf = make_uint2(0u, 0u);
                    if (lane < 8) bf = *(const uint2 *)(smem + tc_xfrag_off(warp, k, s) + lane * 8);
                    mma_16816(d, a, bf.x, bf.y);
                }
                const float xi = xinv[warp * TC_NBW + k];
                acc0 = fmaf(d[0] + d[1], am0[k] * xi, acc0);
                acc1 = fmaf(d[2] + d[3], am1[k] * xi, acc1);
            }
        }
        float *rd = red + (it & 1) * MV_WARPS * 16;
        if (t == 0) {
            rd[warp * 16 + g] = acc0;
            rd[warp * 16 + g + 8] = acc1;
        }
        __syncthreads();
        if (threadIdx.x < 16 * tpu) {
            const hmoe_mv_job &J = b.j[un / b.upj];
            const int tt = threadIdx.x >> 4, rr = threadIdx.x & 15;
            const int row = ((un % b.upj) * tpu + tt) * 16 + rr;
            float sum = 0.f;
            for (int k = 0; k < ks; k++)
                sum += rd[(tt * ks + k) * 16 + rr];
            if (row < b.rows) J.y[row] = sum;
        }
        if (!hn) break;
#pragma unroll
        for (int k = 0; k < PF; k++)
            q[k] = qn[k];
        decode(nx, r0, r1, n0, n1, am0, am1);
        const float *nxx = b.j[nx / b.upj].x;
        if (nxx != cur_x) { /* this warp's fragments only: no block barrier needed */
            __syncwarp();
            build_x(nxx);
            __syncwarp();
            cur_x = nxx;
        }
        un = nx;
    }
}

/* Tiled layout (see above) from the bnb layout: one byte per thread, placed by hmoe_tc_byte
 * (rows past the end padded with code 7 nibbles). nout = padded rows * cols / 2. */
__global__ void k_nf4_tile(const uint8_t *__restrict__ src, uint8_t *__restrict__ dst, int rows,
                           int cols, int64_t nout) {
    const int64_t half = cols >> 1, nblk = cols >> 6;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < nout;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = e / half, c = 2 * (e % half);
        dst[hmoe_tc_byte(r, c, nblk)] = r < rows ? src[e] : 0x77;
    }
}

enum hmoe_status hmoe_mv_nf4_prepare(struct hmoe_gpu *g, struct hmoe_gpu_w *w) {
    if (w->dtype != HMOE_DT_NF4 || w->tiled || g->mv_nf4 < 5 || w->cols > TC_MAX_COLS ||
        w->rows > INT32_MAX / 2)
        return HMOE_OK;
    const int64_t rows = w->rows, cols = w->cols, nb = rows * cols / 64;
    const size_t nib = (size_t)(rows * cols / 2), o_abs = (nib + 255) & ~(size_t)255;
    const size_t tiled = (size_t)((rows + 15) / 16 * 16 * cols / 2),
                 t_abs = (tiled + 255) & ~(size_t)255;
    /* what follows the nibbles in the upload's buffer (context.cu): codes + nested, or fp32 */
    size_t tail;
    if (w->d_absq) {
        const size_t ng = (size_t)(w->bytes - nib - (uint64_t)nb) / 4;
        tail = (size_t)((const uint8_t *)w->d_nested - (const uint8_t *)w->d_absq) + ng * 4;
    } else {
        tail = (size_t)nb * 4;
    }
    void *nbuf = NULL;
    enum hmoe_status st = hmoe_gpu_malloc(g, t_abs + tail, &nbuf);
    if (st) return st;
    uint8_t *base = (uint8_t *)nbuf;
    const int64_t nout = (int64_t)tiled;
    int64_t grid = (nout + 255) / 256;
    if (grid > (int64_t)g->n_sm * 16) grid = (int64_t)g->n_sm * 16;
    k_nf4_tile<<<(unsigned)grid, 256, 0, g->stream>>>((const uint8_t *)w->d_w, base, (int)rows,
                                                      (int)cols, nout);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(base + t_abs, (const uint8_t *)w->d_buf + o_abs, tail,
                            cudaMemcpyDeviceToDevice, g->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(g->stream);
    if (e != cudaSuccess) {
        hmoe_gpu_free(g, nbuf);
        return hmoe_fail(HMOE_E_CUDA, "NF4 tiling: %s", cudaGetErrorString(e));
    }
    const ptrdiff_t shift = (ptrdiff_t)t_abs - (ptrdiff_t)o_abs;
    if (w->d_absq) {
        w->d_absq = (const uint8_t *)base +
                    ((const uint8_t *)w->d_absq - (const uint8_t *)w->d_buf) + shift;
        w->d_nested =
            (const float *)((const uint8_t *)base +
                            ((const uint8_t *)w->d_nested - (const uint8_t *)w->d_buf) + shift);
    } else {
        w->d_absf =
            (const float *)((const uint8_t *)base +
                            ((const uint8_t *)w->d_absf - (const uint8_t *)w->d_buf) + shift);
    }
    hmoe_gpu_free(g, w->d_buf);
    w->d_buf = nbuf;
    w->d_w = nbuf;
    w->tiled = 1;
    return HMOE_OK;
}

typedef void (*mv_kernel)(const hmoe_mv_batch);

struct mv_pick {
    mv_kernel k;
    int smem; /* dynamic shared memory bytes */
    int id;   /* index into g->occ */
};

/* NF4 async stage shapes by variant (1..3): G row-steps per stage x ST stages. */
template <int LPR, bool CODES> static mv_pick pick_nf4_async(int variant, int id) {
    constexpr int K = LPR == 32 ? 2 : 1;
    switch (variant) {
    case 1:
        return {k_nf4_mv_async<LPR, CODES, 4, 2, false>, NF4_LUT_BYTES + MV_WARPS * 2 * 4 * K * 512,
                id};
    case 2:
        return {k_nf4_mv_async<LPR, CODES, 8, 2, false>, NF4_LUT_BYTES + MV_WARPS * 2 * 8 * K * 512,
                id};
    case 3:
        return {k_nf4_mv_async<LPR, CODES, 4, 3, false>, NF4_LUT_BYTES + MV_WARPS * 3 * 4 * K * 512,
                id};
    default:
        return {k_nf4_mv_async<LPR, CODES, 4, 2, true>, NF4_LUT_BYTES + MV_WARPS * 2 * 4 * K * 512,
                id};
    }
}

static mv_pick pick_kernel(bool nf4, int lpr, bool codes, int variant) {
    if (!nf4) {
        switch (variant) {
        case 1:
            return {k_bf16_mv_async<2, 2>, MV_WARPS * 2 * 2 * 4096, 61};
        case 2:
            return {k_bf16_mv_async<2, 3>, MV_WARPS * 3 * 2 * 4096, 62};
        default:
            return {k_bf16_mv, 0, 60};
        }
    }
    const int li = lpr == 32 ? 0 : lpr == 16 ? 1 : lpr == 8 ? 2 : lpr == 4 ? 3 : 4;
    const int base = li + (codes ? 0 : 5);
    if (variant >= 1 && variant <= 4 && lpr >= 16) {
        const int id = 10 * variant + base;
        if (lpr == 32)
            return codes ? pick_nf4_async<32, true>(variant, id)
                         : pick_nf4_async<32, false>(variant, id);
        return codes ? pick_nf4_async<16, true>(variant, id)
                     : pick_nf4_async<16, false>(variant, id);
    }
    static const mv_kernel v0[10] = {k_nf4_mv<32, true>,  k_nf4_mv<16, true>, k_nf4_mv<8, true>,
                                     k_nf4_mv<4, true>,   k_nf4_mv<2, true>,  k_nf4_mv<32, false>,
                                     k_nf4_mv<16, false>, k_nf4_mv<8, false>, k_nf4_mv<4, false>,
                                     k_nf4_mv<2, false>};
    return {v0[base], NF4_LUT_BYTES, base};
}

/* Designs 5..8 on tiled weights: one block of 8 warps per 8 / ks (x 2 in design 7) tiles of 16
 * rows, ks warps per tile (each with at most TC_NBW 64-column blocks, at least 4 where the row
 * allows). */
static enum hmoe_status launch_tc(struct hmoe_gpu *g, hmoe_mv_batch &b, bool codes) {
    const int nblk = b.cols / 64;
    int ks = 8;
    if (nblk < 32) {
        ks = 1;
        while (ks < 8 && ks * 2 * 4 <= nblk)
            ks *= 2;
    }
    b.ks = ks;
    b.ntile = (b.rows + 15) / 16;
    const bool pf4 = (nblk + ks - 1) / ks <= 4;
    /* design 7: two tiles per warp (fewer, larger thread blocks) where the loads fit */
    const int tpw = g->mv_nf4 == 7 && pf4 && b.ntile > 1 ? 2 : 1;
    const bool persist = g->mv_nf4 == 8 && pf4;
    b.upj = (b.ntile + MV_WARPS / ks * tpw - 1) / (MV_WARPS / ks * tpw);
    mv_kernel k;
    if (persist)
        k = codes ? k_nf4_tcp<true> : k_nf4_tcp<false>;
    else if (tpw == 2)
        k = codes ? k_nf4_tc<true, 4, 2> : k_nf4_tc<false, 4, 2>;
    else if (pf4)
        k = codes ? k_nf4_tc<true, 4, 1> : k_nf4_tc<false, 4, 1>;
    else
        k = codes ? k_nf4_tc<true, 8, 1> : k_nf4_tc<false, 8, 1>;
    const int id =
        persist ? 58 + (codes ? 0 : 1) : 50 + (codes ? 0 : 1) + (pf4 ? 0 : 2) + (tpw == 2 ? 4 : 0);
    if (!g->occ[id]) {
        HMOE_CUDA_CHECK(
            cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, TC_SMEM));
        int occ = 0;
        HMOE_CUDA_CHECK(
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k, MV_THREADS, TC_SMEM));
        if (occ < 1)
            return hmoe_fail(HMOE_E_CUDA, "matvec kernel %d does not fit on the device", id);
        g->occ[id] = occ;
    }
    int64_t grid = (int64_t)b.n * b.upj;
    if (persist && grid > (int64_t)g->n_sm * g->occ[id]) grid = (int64_t)g->n_sm * g->occ[id];
    if (g->mv_nf4 >= 6) { /* programmatic dependent launch */
        cudaLaunchConfig_t cfg = {};
        cudaLaunchAttribute at[1];
        at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[0].val.programmaticStreamSerializationAllowed = 1;
        cfg.gridDim = dim3((unsigned)grid);
        cfg.blockDim = dim3(MV_THREADS);
        cfg.dynamicSmemBytes = TC_SMEM;
        cfg.stream = g->stream;
        cfg.attrs = at;
        cfg.numAttrs = 1;
        HMOE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, k, (const hmoe_mv_batch)b));
    } else {
        k<<<(unsigned)grid, MV_THREADS, TC_SMEM, g->stream>>>(b);
        HMOE_CUDA_LAUNCHED();
    }
    return HMOE_OK;
}

extern "C" enum hmoe_status hmoe_gpu_set_matvec_kernel(struct hmoe_gpu *g, int nf4, int bf16) {
    if (nf4 < -1 || nf4 > 8 || bf16 < -1 || bf16 > 2)
        return hmoe_fail(HMOE_E_INVAL, "matvec kernel variant nf4 %d (0..8) bf16 %d (0..2)", nf4,
                         bf16);
    if (nf4 >= 0) g->mv_nf4 = nf4;
    if (bf16 >= 0) g->mv_bf16 = bf16;
    return HMOE_OK;
}

extern "C" enum hmoe_status hmoe_gpu_matvec_batched(struct hmoe_gpu *g,
                                                    const struct hmoe_gpu_w *const *w, int n,
                                                    const float *d_x, int64_t x_stride, float *d_y,
                                                    int64_t y_stride) {
    if (n < 1 || n > HMOE_GPU_MAX_BATCH)
        return hmoe_fail(HMOE_E_INVAL, "matvec: batch of %d weights (1..%d)", n,
                         HMOE_GPU_MAX_BATCH);
    const struct hmoe_gpu_w *w0 = w[0];
    const bool nf4 = w0->dtype == HMOE_DT_NF4, codes = nf4 && w0->d_absq;
    if (w0->rows > INT32_MAX / 2 || w0->cols > INT32_MAX / 2)
        return hmoe_fail(HMOE_E_UNSUPPORTED, "matvec: weight too large");
    if (n > 1 && (y_stride < w0->rows || (x_stride != 0 && x_stride < w0->cols)))
        return hmoe_fail(HMOE_E_INVAL, "matvec: strides %lld/%lld smaller than the shape",
                         (long long)x_stride, (long long)y_stride);
    if (x_stride % 4)
        return hmoe_fail(HMOE_E_INVAL, "matvec: x stride must keep 16-byte alignment");
    hmoe_mv_batch b;
    memset(&b, 0, sizeof b);
    b.n = n;
    b.rows = (int)w0->rows;
    b.cols = (int)w0->cols;
    memcpy(b.code, w0->code, sizeof b.code);
    for (int j = 0; j < n; j++) {
        const struct hmoe_gpu_w *wj = w[j];
        if (wj->dtype != w0->dtype || wj->rows != w0->rows || wj->cols != w0->cols ||
            (wj->d_absq != NULL) != codes || wj->tiled != w0->tiled ||
            memcmp(wj->code, w0->code, sizeof b.code))
            return hmoe_fail(HMOE_E_INVAL,
                             "matvec: batched weights differ in shape, dtype or tables");
        b.j[j].w = wj->d_w;
        b.j[j].absq = wj->d_absq;
        b.j[j].absf = wj->d_absf;
        b.j[j].nested = wj->d_nested;
        b.j[j].ncode = wj->d_ncode;
        b.j[j].offset = wj->nested_offset;
        b.j[j].nshift = wj->nested_shift;
        b.j[j].x = d_x + j * x_stride;
        b.j[j].y = d_y + j * y_stride;
    }
    if (nf4 && w0->tiled) return launch_tc(g, b, codes);
    int lpr = 32, rps = 1;
    if (nf4) {
        const int nchunk = b.cols / 32;
        while (lpr > 2 && lpr / 2 >= nchunk)
            lpr /= 2;
        rps = 32 / lpr;
        b.nseg = lpr == 32 ? (nchunk + 63) / 64 : 1;
    } else {
        b.nseg = (b.cols / 8 + 255) / 256;
    }
    const mv_pick pk = pick_kernel(nf4, lpr, codes, nf4 ? g->mv_nf4 : g->mv_bf16);
    if (!g->occ[pk.id]) {
        if (pk.smem)
            HMOE_CUDA_CHECK(
                cudaFuncSetAttribute(pk.k, cudaFuncAttributeMaxDynamicSharedMemorySize, pk.smem));
        int occ = 0;
        HMOE_CUDA_CHECK(
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, pk.k, MV_THREADS, pk.smem));
        if (occ < 1)
            return hmoe_fail(HMOE_E_CUDA, "matvec kernel %d does not fit on the device", pk.id);
        g->occ[pk.id] = occ;
    }
    const int occ = g->occ[pk.id];
    /* Rows per warp task: enough tasks for about one wave of resident warps. */
    const int64_t resident = (int64_t)g->n_sm * occ * MV_WARPS;
    const int64_t units = (int64_t)n * b.rows * b.nseg;
    int64_t rpt = (units + resident - 1) / resident;
    rpt = (rpt + rps - 1) / rps * rps;
    if (rpt < rps) rpt = rps;
    b.rows_per_task = (int)rpt;
    b.row_tasks = (int)((b.rows + rpt - 1) / rpt);
    const int64_t ntask = (int64_t)n * b.row_tasks * b.nseg;
    int64_t grid = (ntask + MV_WARPS - 1) / MV_WARPS;
    if (grid > (int64_t)g->n_sm * occ) grid = (int64_t)g->n_sm * occ;
    if (b.nseg > 1) {
        if (n == 1)
            HMOE_CUDA_CHECK(cudaMemsetAsync(d_y, 0, (size_t)b.rows * 4, g->stream));
        else
            HMOE_CUDA_CHECK(cudaMemset2DAsync(d_y, (size_t)y_stride * 4, 0, (size_t)b.rows * 4,
                                              (size_t)n, g->stream));
    }
    pk.k<<<(unsigned)grid, MV_THREADS, pk.smem, g->stream>>>(b);
    HMOE_CUDA_LAUNCHED();
    return HMOE_OK;
}

extern "C" enum hmoe_status hmoe_gpu_matvec(struct hmoe_gpu *g, const struct hmoe_gpu_w *w,
                                            const float *d_x, float *d_y) {
    return hmoe_gpu_matvec_batched(g, &w, 1, d_x, 0, d_y, 0);
}
