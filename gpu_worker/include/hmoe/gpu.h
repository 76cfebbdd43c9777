/* hmoe/gpu.h: the C seam to the CUDA kernels (lib hmoe_gpu_kernels, built when CUDA is found).
 * Host code sees opaque handles and hmoe_status returns only; CUDA headers stay inside
 * gpu_worker/cuda/. Every op is enqueued on the context's stream (asynchronous); pointers named
 * d_* are device memory from hmoe_gpu_malloc. Shapes and dtypes are given per function. */
#ifndef HMOE_GPU_H
#define HMOE_GPU_H

#include <stddef.h>
#include <stdint.h>

#include "hmoe/status.h"
#include "hmoe/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

struct hmoe_gpu;   /* one device, one stream, cached code tables */
struct hmoe_gpu_w; /* one 2-D weight [rows, cols] resident on the device (NF4 or BF16) */

#define HMOE_GPU_MAX_BATCH 16 /* weights per batched matvec call */

/* Number of usable CUDA devices; 0 when there is no driver or no device (never fails). */
int hmoe_gpu_device_count(void);

enum hmoe_status hmoe_gpu_open(int device, struct hmoe_gpu **out);
void hmoe_gpu_close(struct hmoe_gpu *g); /* NULL is a no-op; waits for the stream */
/* "NVIDIA H200, 132 SMs, 139.8 GiB" (valid while g lives). */
const char *hmoe_gpu_describe(const struct hmoe_gpu *g);

enum hmoe_status hmoe_gpu_malloc(struct hmoe_gpu *g, size_t bytes, void **d_ptr);
void hmoe_gpu_free(struct hmoe_gpu *g, void *d_ptr); /* NULL is a no-op */
/* Copies on the stream; they return when the copy is done (pageable host memory). */
enum hmoe_status hmoe_gpu_upload(struct hmoe_gpu *g, void *d_dst, const void *src, size_t bytes);
enum hmoe_status hmoe_gpu_download(struct hmoe_gpu *g, void *dst, const void *d_src, size_t bytes);
enum hmoe_status hmoe_gpu_memset0(struct hmoe_gpu *g, void *d_dst, size_t bytes);
/* Waits for the stream and reports any asynchronous kernel error. */
enum hmoe_status hmoe_gpu_sync(struct hmoe_gpu *g);

/* How an NF4 weight's double-quant absmax is kept on the device. */
enum hmoe_gpu_absmax {
    HMOE_GPU_ABSMAX_CODES = 0, /* 8-bit codes + nested absmax, decoded in the kernel (as stored) */
    HMOE_GPU_ABSMAX_F32 = 1,   /* decoded to fp32 once at upload (4 bytes per 64 weights) */
};

/* Uploads a 2-D weight: NF4 (bnb layout, blocksize 64, cols % 64 == 0; views allowed when they
 * start on a block) or BF16 (cols % 8 == 0). `mode` applies to double-quant NF4 only.
 * HMOE_E_UNSUPPORTED for other dtypes or layouts. */
enum hmoe_status hmoe_gpu_weight_upload(struct hmoe_gpu *g, const struct hmoe_tensor *t,
                                        enum hmoe_gpu_absmax mode, struct hmoe_gpu_w **out);
void hmoe_gpu_weight_free(struct hmoe_gpu_w *w); /* NULL is a no-op */
int64_t hmoe_gpu_weight_rows(const struct hmoe_gpu_w *w);
int64_t hmoe_gpu_weight_cols(const struct hmoe_gpu_w *w);
/* Bytes one matvec reads from the weight (nibbles + absmax data, or bf16 elements). */
uint64_t hmoe_gpu_weight_bytes(const struct hmoe_gpu_w *w);

/* y[r] = sum_c W[r, c] * x[c] (fp32 accumulate, NF4 dequantized in the kernel).
 * d_x: (cols) f32, d_y: (rows) f32. For cols > 2048 the columns are split into two-or-more
 * segments whose partial sums are added atomically (bit-reproducible for up to 2 segments). */
enum hmoe_status hmoe_gpu_matvec(struct hmoe_gpu *g, const struct hmoe_gpu_w *w, const float *d_x,
                                 float *d_y);
/* n (<= HMOE_GPU_MAX_BATCH) weights of one shape and dtype in one launch:
 * y_j = W_j x_j with x_j = d_x + j * x_stride (x_stride 0: one shared input), y_j = d_y + j * y_stride. */
enum hmoe_status hmoe_gpu_matvec_batched(struct hmoe_gpu *g, const struct hmoe_gpu_w *const *w,
                                         int n, const float *d_x, int64_t x_stride, float *d_y,
                                         int64_t y_stride);

/* Tuning knob for benchmarks and tests: the matvec kernel design. nf4: 0 = registers, one row
 * in flight per warp; 1..3 = cp.async pipelines staging G row-steps per stage in shared memory
 * (1: G4 x 2 stages, 2: G8 x 2, 3: G4 x 3); 4 = design 1 computing the G rows of a stage
 * together (more independent work per warp); 5 = tensor cores (mma.sync f16, fp32 accumulate;
 * NF4 codes rounded to fp16, relative error about 1e-4) on a tiled copy made at upload;
 * 6 = 5 with programmatic dependent launch (the kernel may start, and read its weights, before
 * the previous kernel on the stream ends; it reads x and writes y only after that one ended);
 * 7 = 6 with two 16-row tiles per warp (fewer, larger thread blocks); 8 = 6 with persistent
 * thread blocks that load the next rows while computing (rows of <= 4 blocks per warp).
 * The NF4 device layout is chosen at upload: weights uploaded under 5..8 (cols <= 8192) are
 * tiled and always run the tensor-core kernel (as 5 unless 6..8 is set), others never do.
 * bf16: 0 = registers; 1, 2 = cp.async (2 rows x 2 or 3 stages). -1 keeps the current choice.
 * NF4 rows shorter than 512 always use design 0 (untiled weights). */
enum hmoe_status hmoe_gpu_set_matvec_kernel(struct hmoe_gpu *g, int nf4, int bf16);

/* Qwen3NextRMSNorm (MODEL.md §1.2), per row: y = x * rsqrt(mean(x^2) + eps) * (1 + w).
 * d_x, d_y: (rows, dim) f32 (may alias); d_w: (dim) bf16. */
enum hmoe_status hmoe_gpu_rmsnorm(struct hmoe_gpu *g, const float *d_x, const uint16_t *d_w,
                                  float *d_y, int rows, int dim, float eps);
/* Qwen3NextRMSNormGated (§1.3), fp32 throughout: y = w * (x * rsqrt(mean(x^2) + eps)) * silu(z).
 * d_x, d_z, d_y: (rows, dim) f32; d_w: (dim) bf16, applied as w (not 1+w). */
enum hmoe_status hmoe_gpu_rmsnorm_gated(struct hmoe_gpu *g, const float *d_x, const float *d_z,
                                        const uint16_t *d_w, float *d_y, int rows, int dim,
                                        float eps);

/* MoE routing (§1.7) per token: p = softmax(logits) in fp32, the k largest (ties: lower index),
 * renormalised to sum 1 when `norm`. d_logits: (n_tok, n_exp) f32, n_exp <= 1024, k <= 32;
 * d_idx: (n_tok, k) int32, d_w: (n_tok, k) f32, in descending probability. */
enum hmoe_status hmoe_gpu_router_topk(struct hmoe_gpu *g, const float *d_logits, int n_tok,
                                      int n_exp, int k, int norm, int32_t *d_idx, float *d_w);

/* One decode step of the gated delta rule (§1.6 steps 5-7) for one sequence:
 * q, k l2-normalised here (eps 1e-6 on the sum of squares), q scaled by dk^-0.5; value head h
 * uses key head h / (Hv / Hk); per head: S *= exp(g); d = (v - S^T k) * beta; S += k d^T;
 * o = S^T q. d_q, d_k: (Hk, dk) f32; d_v, d_o: (Hv, dv) f32; d_g, d_beta: (Hv) f32;
 * d_state: (Hv, dk, dv) f32, updated in place. dk in {32, 64, 128}; dv % 32 == 0, dv <= 256. */
enum hmoe_status hmoe_gpu_gdn_step(struct hmoe_gpu *g, const float *d_q, const float *d_k,
                                   const float *d_v, const float *d_g, const float *d_beta,
                                   float *d_state, float *d_o, int Hk, int Hv, int dk, int dv);

/* Gated full-attention decode for one query token (MODEL.md §1.4), split over 256-position
 * chunks: o[h] = softmax(q[h] . K[g]^T * scale) V[g], g = h / (Hq / Hkv), then, when d_gate is
 * not NULL, o *= sigmoid(gate). d_q, d_gate, d_o: (Hq, D) f32 (q after q_norm and RoPE);
 * d_k, d_v: (Hkv, cap, D) f32 caches, positions 0..T-1 valid (keys after k_norm and RoPE);
 * d_ws: hmoe_gpu_attn_ws_bytes(Hq, D, T) bytes of device scratch. D in {64, 128, 256}. */
size_t hmoe_gpu_attn_ws_bytes(int Hq, int D, int T);
enum hmoe_status hmoe_gpu_attn_decode(struct hmoe_gpu *g, const float *d_q, const float *d_k,
                                      const float *d_v, const float *d_gate, float *d_o, int T,
                                      int cap, int Hq, int Hkv, int D, float scale, float *d_ws);

#ifdef __cplusplus
}
#endif
#endif
