/* gpu_worker/cuda/matvec.cu: decode-time matrix-vector products y = W x with fp32 accumulation.
 * NF4 (bnb layout): each lane streams 16-byte chunks (32 weights) of a row, keeps its slice of x
 * in registers across the rows of its task, and dequantizes through a per-lane-replicated
 * shared-memory table of (code[hi], code[lo]) pairs for every byte value (64 KiB, bank-conflict
 * free), scaled by the 64-block absmax (8-bit double-quant code decoded here, or fp32).
 * BF16: the same row/task scheme with 8 elements per 16-byte load. */
#include <string.h>

#include "matvec.cuh"

#define MV_THREADS 256
#define MV_WARPS (MV_THREADS / 32)
#define NF4_LUT_BYTES (256 * 32 * 8)

/* x . W for the 32 weights packed in q (16 bytes, element 2j in the high nibble), through the
 * per-lane table: lutl = smem + lane * 8, entry of byte value v at lutl + v * 256. */
__device__ __forceinline__ float nf4_dot32(const unsigned char *lutl, const uint4 q, const float *x)
{
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
__device__ __forceinline__ float nf4_absmax_code(const hmoe_mv_job &J, int64_t blk)
{
    return __fadd_rn(__fmul_rn(__ldg(J.ncode + __ldg(J.absq + blk)),
                               __ldg(J.nested + ((blk + J.nshift) >> 8))),
                     J.offset);
}

/* Builds the per-lane (code[hi], code[lo]) table for every byte value: [256][32] float2. */
__device__ __forceinline__ void nf4_build_lut(unsigned char *smem, const float *code)
{
    float2 *lut = (float2 *)smem;
    for (int e = threadIdx.x; e < 256 * 32; e += blockDim.x) {
        const int v = e >> 5;
        lut[e] = make_float2(code[v >> 4], code[v & 15]);
    }
}

/* 16-byte global -> shared copy that bypasses registers (zero-fills when !ok). */
__device__ __forceinline__ void cp_async16(uint4 *dst, const void *src, bool ok)
{
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src),
                 "r"(ok ? 16 : 0)
                 : "memory");
}

__device__ __forceinline__ void cp_async_commit()
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N> __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void prefetch_l1(const void *p)
{
    asm volatile("prefetch.global.L1 [%0];" ::"l"(p));
}

/* LPR lanes share a row segment of up to 64 chunks of 32 weights (2048 columns). */
template <int LPR, bool CODES>
__global__ void __launch_bounds__(MV_THREADS) k_nf4_mv(const __grid_constant__ hmoe_mv_batch b)
{
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
        /* Software pipeline: the next row's weights and absmax are loaded before this row's math. */
        uint4 qn[K];
        uint32_t an[K];
#pragma unroll
        for (int k = 0; k < K; k++) {
            const int r = r0 + sub;
            const bool ok = r < r1 && cv[k];
            const int64_t e0 = (int64_t)r * b.cols + (int64_t)chunk[k] * 32;
            qn[k] = ok ? __ldg((const uint4 *)(wb + e0 / 2)) : make_uint4(0, 0, 0, 0);
            an[k] = !ok ? 0u : CODES ? (uint32_t)__ldg(J.absq + (e0 >> 6))
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
                an[k] = !ok ? 0u : CODES ? (uint32_t)__ldg(J.absq + (e0 >> 6))
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
            for (int o = LPR / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
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
__global__ void __launch_bounds__(MV_THREADS) k_bf16_mv(const __grid_constant__ hmoe_mv_batch b)
{
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
__global__ void __launch_bounds__(MV_THREADS, 1) k_nf4_mv_async(const __grid_constant__ hmoe_mv_batch b)
{
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
                        cp_async16(dst + (gi * K + k) * 32 + lane, ok ? (const void *)(wb + e0 / 2) : J.w, ok);
                        if (ok) prefetch_l1(CODES ? (const void *)(J.absq + (e0 >> 6)) : (const void *)(J.absf + (e0 >> 6)));
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
                        cp_async16(dst + (gi * K + k) * 32 + lane, ok ? (const void *)(wb + e0 / 2) : J.w, ok);
                        if (ok) prefetch_l1(CODES ? (const void *)(J.absq + (e0 >> 6)) : (const void *)(J.absf + (e0 >> 6)));
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
                        const float am = !ok ? 0.f : CODES ? nf4_absmax_code(J, blk) : __ldg(J.absf + blk);
                        acc[gi] = fmaf(nf4_dot32(lutl, src[(gi * K + k) * 32 + lane], xr[k]), am, acc[gi]);
                    }
                }
#pragma unroll
                for (int o = LPR / 2; o > 0; o >>= 1)
#pragma unroll
                    for (int gi = 0; gi < G; gi++) acc[gi] += __shfl_xor_sync(0xffffffffu, acc[gi], o);
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
                    const float am = !ok ? 0.f : CODES ? nf4_absmax_code(J, blk) : __ldg(J.absf + blk);
                    acc = fmaf(nf4_dot32(lutl, src[(gi * K + k) * 32 + lane], xr[k]), am, acc);
                }
#pragma unroll
                for (int o = LPR / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
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
__global__ void __launch_bounds__(MV_THREADS, 1) k_bf16_mv_async(const __grid_constant__ hmoe_mv_batch b)
{
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
        for (int k = 0; k < 8; k++) cv[k] = seg * 256 + k * 32 + lane < nchunk;
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
                                   ok ? (const void *)(wb + (int64_t)r * nchunk + seg * 256 + k * 32 + lane) : J.w, ok);
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
                        const float4 x0 = __ldg((const float4 *)xp), x1 = __ldg((const float4 *)xp + 1);
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

typedef void (*mv_kernel)(const hmoe_mv_batch);

struct mv_pick {
    mv_kernel k;
    int smem; /* dynamic shared memory bytes */
    int id;   /* index into g->occ */
};

/* NF4 async stage shapes by variant (1..3): G row-steps per stage x ST stages. */
template <int LPR, bool CODES> static mv_pick pick_nf4_async(int variant, int id)
{
    constexpr int K = LPR == 32 ? 2 : 1;
    switch (variant) {
    case 1: return {k_nf4_mv_async<LPR, CODES, 4, 2, false>, NF4_LUT_BYTES + MV_WARPS * 2 * 4 * K * 512, id};
    case 2: return {k_nf4_mv_async<LPR, CODES, 8, 2, false>, NF4_LUT_BYTES + MV_WARPS * 2 * 8 * K * 512, id};
    case 3: return {k_nf4_mv_async<LPR, CODES, 4, 3, false>, NF4_LUT_BYTES + MV_WARPS * 3 * 4 * K * 512, id};
    default: return {k_nf4_mv_async<LPR, CODES, 4, 2, true>, NF4_LUT_BYTES + MV_WARPS * 2 * 4 * K * 512, id};
    }
}

static mv_pick pick_kernel(bool nf4, int lpr, bool codes, int variant)
{
    if (!nf4) {
        switch (variant) {
        case 1: return {k_bf16_mv_async<2, 2>, MV_WARPS * 2 * 2 * 4096, 61};
        case 2: return {k_bf16_mv_async<2, 3>, MV_WARPS * 3 * 2 * 4096, 62};
        default: return {k_bf16_mv, 0, 60};
        }
    }
    const int li = lpr == 32 ? 0 : lpr == 16 ? 1 : lpr == 8 ? 2 : lpr == 4 ? 3 : 4;
    const int base = li + (codes ? 0 : 5);
    if (variant >= 1 && variant <= 4 && lpr >= 16) {
        const int id = 10 * variant + base;
        if (lpr == 32) return codes ? pick_nf4_async<32, true>(variant, id) : pick_nf4_async<32, false>(variant, id);
        return codes ? pick_nf4_async<16, true>(variant, id) : pick_nf4_async<16, false>(variant, id);
    }
    static const mv_kernel v0[10] = {k_nf4_mv<32, true>,  k_nf4_mv<16, true>,  k_nf4_mv<8, true>,
                                     k_nf4_mv<4, true>,   k_nf4_mv<2, true>,   k_nf4_mv<32, false>,
                                     k_nf4_mv<16, false>, k_nf4_mv<8, false>,  k_nf4_mv<4, false>,
                                     k_nf4_mv<2, false>};
    return {v0[base], NF4_LUT_BYTES, base};
}

extern "C" enum hmoe_status hmoe_gpu_set_matvec_kernel(struct hmoe_gpu *g, int nf4, int bf16)
{
    if (nf4 < -1 || nf4 > 4 || bf16 < -1 || bf16 > 2)
        return hmoe_fail(HMOE_E_INVAL, "matvec kernel variant nf4 %d (0..4) bf16 %d (0..2)", nf4, bf16);
    if (nf4 >= 0) g->mv_nf4 = nf4;
    if (bf16 >= 0) g->mv_bf16 = bf16;
    return HMOE_OK;
}

extern "C" enum hmoe_status hmoe_gpu_matvec_batched(struct hmoe_gpu *g,
                                                    const struct hmoe_gpu_w *const *w, int n,
                                                    const float *d_x, int64_t x_stride,
                                                    float *d_y, int64_t y_stride)
{
    if (n < 1 || n > HMOE_GPU_MAX_BATCH)
        return hmoe_fail(HMOE_E_INVAL, "matvec: batch of %d weights (1..%d)", n, HMOE_GPU_MAX_BATCH);
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
            (wj->d_absq != NULL) != codes || memcmp(wj->code, w0->code, sizeof b.code))
            return hmoe_fail(HMOE_E_INVAL, "matvec: batched weights differ in shape, dtype or tables");
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
    int lpr = 32, rps = 1;
    if (nf4) {
        const int nchunk = b.cols / 32;
        while (lpr > 2 && lpr / 2 >= nchunk) lpr /= 2;
        rps = 32 / lpr;
        b.nseg = lpr == 32 ? (nchunk + 63) / 64 : 1;
    } else {
        b.nseg = (b.cols / 8 + 255) / 256;
    }
    const mv_pick pk = pick_kernel(nf4, lpr, codes, nf4 ? g->mv_nf4 : g->mv_bf16);
    if (!g->occ[pk.id]) {
        if (pk.smem)
            HMOE_CUDA_CHECK(cudaFuncSetAttribute(pk.k, cudaFuncAttributeMaxDynamicSharedMemorySize, pk.smem));
        int occ = 0;
        HMOE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, pk.k, MV_THREADS, pk.smem));
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
                                            const float *d_x, float *d_y)
{
    return hmoe_gpu_matvec_batched(g, &w, 1, d_x, 0, d_y, 0);
}
