/* gpu_worker/cuda/matvec.cuh: the batched matrix-vector launch descriptor shared by the NF4 and
 * BF16 kernels (matvec.cu). One launch covers up to HMOE_GPU_MAX_BATCH weights of one shape. */
#ifndef HMOE_CUDA_MATVEC_CUH
#define HMOE_CUDA_MATVEC_CUH

#include "common.cuh"

struct hmoe_mv_job {
    const void *w;       /* NF4 nibbles or BF16 elements, row-major [rows, cols] */
    const uint8_t *absq; /* NF4 codes mode */
    const float *absf;   /* NF4 f32 mode */
    const float *nested; /* codes mode: nested absmax */
    const float *ncode;  /* codes mode: nested code table [256] */
    float offset;        /* codes mode: nested offset */
    int nshift;          /* codes mode: block offset inside the first nested group */
    const float *x;      /* [cols] */
    float *y;            /* [rows] */
};

struct hmoe_mv_batch {
    struct hmoe_mv_job j[HMOE_GPU_MAX_BATCH];
    float code[16]; /* NF4 table (the same for every job) */
    int n, rows, cols;
    int rows_per_task; /* rows one warp handles per task */
    int row_tasks;     /* ceil(rows / rows_per_task) */
    int nseg;          /* column segments (partial sums added atomically when > 1) */
    /* Tiled NF4 (designs 5..8, k_nf4_tc): a block of 8 warps covers 8 / ks tiles of 16 rows,
     * ks warps per tile splitting its 64-column blocks. */
    int ks;    /* warps per tile: 1, 2, 4 or 8 */
    int upj;   /* thread blocks per job: ceil(ntile / (8 / ks)) */
    int ntile; /* ceil(rows / 16) */
};

/* Byte offset, in a tiled NF4 weight (hmoe_gpu_w.tiled: designs 5..8), of the bnb byte holding
 * elements (r, c) and (r, c + 1), c even (c in the high nibble, as in the bnb layout); nblk =
 * cols / 64. For code that reads the nibbles itself (e.g. a dequantize kernel). */
__host__ __device__ inline int64_t hmoe_tc_byte(int64_t r, int64_t c, int64_t nblk) {
    const int64_t g8 = r & 15, w16 = c & 15;
    const int64_t i = (g8 >> 3) | ((w16 >> 3) << 1), lane = 4 * (g8 & 7) + ((w16 & 7) >> 1);
    return (((r >> 4) * nblk + (c >> 6)) * 32 + lane) * 16 + ((c & 63) >> 4) * 4 + i;
}

/* Rewrites a freshly uploaded NF4 weight into the tiled layout of the tensor-core matvec
 * (matvec.cu) when the context's NF4 design is 5..8 and the shape allows it (cols <= 8192);
 * otherwise leaves it as uploaded. Called by hmoe_gpu_weight_upload; synchronous. */
enum hmoe_status hmoe_mv_nf4_prepare(struct hmoe_gpu *g, struct hmoe_gpu_w *w);

#endif
