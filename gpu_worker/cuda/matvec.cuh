/* gpu_worker/cuda/matvec.cuh: the batched matrix-vector launch descriptor shared by the NF4 and
 * BF16 kernels (matvec.cu). One launch covers up to HMOE_GPU_MAX_BATCH weights of one shape. */
#ifndef HMOE_CUDA_MATVEC_CUH
#define HMOE_CUDA_MATVEC_CUH

#include "common.cuh"

struct hmoe_mv_job {
    const void *w;         /* NF4 nibbles or BF16 elements, row-major [rows, cols] */
    const uint8_t *absq;   /* NF4 codes mode */
    const float *absf;     /* NF4 f32 mode */
    const float *nested;   /* codes mode: nested absmax */
    const float *ncode;    /* codes mode: nested code table [256] */
    float offset;          /* codes mode: nested offset */
    int nshift;            /* codes mode: block offset inside the first nested group */
    const float *x;        /* [cols] */
    float *y;              /* [rows] */
};

struct hmoe_mv_batch {
    struct hmoe_mv_job j[HMOE_GPU_MAX_BATCH];
    float code[16];        /* NF4 table (the same for every job) */
    int n, rows, cols;
    int rows_per_task;     /* rows one warp handles per task */
    int row_tasks;         /* ceil(rows / rows_per_task) */
    int nseg;              /* column segments (partial sums added atomically when > 1) */
};

#endif
