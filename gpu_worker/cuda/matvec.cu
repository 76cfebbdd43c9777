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

/* LPR lanes share a row segment of up to 64 chunks of 32 weights (2048 columns). */
template <int LPR, bool CODES>
__global__ void __launch_bounds__(MV_THREADS) k_nf4_mv(const __grid_constant__ hmoe_mv_batch b)
{
    extern __shared__ float2 lut[]; /* [256 byte values][32 lanes] */
    for (int e = threadIdx.x; e < 256 * 32; e += MV_THREADS) {
        const int v = e >> 5;
        lut[e] = make_float2(b.code[v >> 4], b.code[v & 15]);
    }
    __syncthreads();
    constexpr int K = LPR == 32 ? 2 : 1; /* chunks per lane per row */
    constexpr int RPS = 32 / LPR;        /* rows per warp step */
    const int lane = threadIdx.x & 31, sub = lane / LPR, li = lane % LPR;
    const float2 *lt = lut + lane;
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
                const uint32_t wd[4] = {q[k].x, q[k].y, q[k].z, q[k].w};
                float a0 = 0.f, a1 = 0.f;
#pragma unroll
                for (int i = 0; i < 4; i++) {
#pragma unroll
                    for (int by = 0; by < 4; by++) {
                        const float2 c2 = lt[((wd[i] >> (8 * by)) & 0xffu) << 5];
                        a0 = fmaf(xr[k][i * 8 + by * 2], c2.x, a0);
                        a1 = fmaf(xr[k][i * 8 + by * 2 + 1], c2.y, a1);
                    }
                }
                acc = fmaf(a0 + a1, am, acc);
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

typedef void (*mv_kernel)(const hmoe_mv_batch);

/* Variant index: 0..9 NF4 (LPR 32,16,8,4,2 x codes/f32), 10 BF16. */
static mv_kernel kernel_of(int variant)
{
    switch (variant) {
    case 0: return k_nf4_mv<32, true>;
    case 1: return k_nf4_mv<16, true>;
    case 2: return k_nf4_mv<8, true>;
    case 3: return k_nf4_mv<4, true>;
    case 4: return k_nf4_mv<2, true>;
    case 5: return k_nf4_mv<32, false>;
    case 6: return k_nf4_mv<16, false>;
    case 7: return k_nf4_mv<8, false>;
    case 8: return k_nf4_mv<4, false>;
    case 9: return k_nf4_mv<2, false>;
    default: return k_bf16_mv;
    }
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
    int variant, rps = 1;
    if (nf4) {
        const int nchunk = b.cols / 32;
        int lpr = 32;
        while (lpr > 2 && lpr / 2 >= nchunk) lpr /= 2;
        variant = (lpr == 32 ? 0 : lpr == 16 ? 1 : lpr == 8 ? 2 : lpr == 4 ? 3 : 4) + (codes ? 0 : 5);
        rps = 32 / lpr;
        b.nseg = lpr == 32 ? (nchunk + 63) / 64 : 1;
    } else {
        variant = 10;
        b.nseg = (b.cols / 8 + 255) / 256;
    }
    mv_kernel kern = kernel_of(variant);
    const int smem = nf4 ? NF4_LUT_BYTES : 0;
    if (!g->occ[variant]) {
        if (smem) HMOE_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        int occ = 0;
        HMOE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, MV_THREADS, smem));
        g->occ[variant] = occ > 0 ? occ : 1;
    }
    /* Rows per warp task: enough tasks for about one wave of resident warps. */
    const int64_t resident = (int64_t)g->n_sm * g->occ[variant] * MV_WARPS;
    const int64_t units = (int64_t)n * b.rows * b.nseg;
    int64_t rpt = (units + resident - 1) / resident;
    rpt = (rpt + rps - 1) / rps * rps;
    if (rpt < rps) rpt = rps;
    b.rows_per_task = (int)rpt;
    b.row_tasks = (int)((b.rows + rpt - 1) / rpt);
    const int64_t ntask = (int64_t)n * b.row_tasks * b.nseg;
    int64_t grid = (ntask + MV_WARPS - 1) / MV_WARPS;
    if (grid > (int64_t)g->n_sm * g->occ[variant]) grid = (int64_t)g->n_sm * g->occ[variant];
    if (b.nseg > 1) {
        if (n == 1)
            HMOE_CUDA_CHECK(cudaMemsetAsync(d_y, 0, (size_t)b.rows * 4, g->stream));
        else
            HMOE_CUDA_CHECK(cudaMemset2DAsync(d_y, (size_t)y_stride * 4, 0, (size_t)b.rows * 4,
                                              (size_t)n, g->stream));
    }
    kern<<<(unsigned)grid, MV_THREADS, smem, g->stream>>>(b);
    HMOE_CUDA_LAUNCHED();
    return HMOE_OK;
}

extern "C" enum hmoe_status hmoe_gpu_matvec(struct hmoe_gpu *g, const struct hmoe_gpu_w *w,
                                            const float *d_x, float *d_y)
{
    return hmoe_gpu_matvec_batched(g, &w, 1, d_x, 0, d_y, 0);
}
