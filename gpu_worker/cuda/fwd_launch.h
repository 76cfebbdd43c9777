/* gpu_worker/cuda/fwd_launch.h: launchers of the forward-pass kernels (fwd_kernels.cu), C++
 * linkage, used by forward_cuda.cu only. Each enqueues on `st` and returns the launch status.
 * Shapes: see the kernels; d_pos is the sequence position held in device memory. */
#ifndef HMOE_CUDA_FWD_LAUNCH_H
#define HMOE_CUDA_FWD_LAUNCH_H

#include "fwd_kernels.cuh"

#define FW_ATTN_SPLIT 16 /* position splits of the decode attention */

enum hmoe_status fw_add_norm(cudaStream_t st, const float *src, const float *add, float *h,
                             const float *w, float *xn, int rows, int H, float eps);
enum hmoe_status fw_mv_bf16(cudaStream_t st, const uint16_t *W, const float *x, float *y, int rows,
                            int cols, int T, int64_t xs, int64_t ys);
enum hmoe_status fw_attn_prep(cudaStream_t st, const float *qg, const float *kb, const float *vb,
                              const float *qn, const float *kn, const float *inv_freq,
                              const int *d_pos, int pos_add, int T, float *q, float *gate,
                              float *kc, float *vc, int Hq, int Hkv, int D, int rot, int cap,
                              float eps);
/* sc: (Hq, cap) scratch; part: (Hq, FW_ATTN_SPLIT, D + 2) scratch. */
enum hmoe_status fw_attn_decode(cudaStream_t st, const float *q, const float *gate, const float *kc,
                                const float *vc, const int *d_pos, float *sc, float *part, float *o,
                                int Hq, int Hkv, int D, int cap, float scale);
enum hmoe_status fw_attn_prefill(cudaStream_t st, const float *q, const float *gate,
                                 const float *kc, const float *vc, const int *d_pos, float *o,
                                 int T, int Hq, int Hkv, int D, int cap, float scale);
enum hmoe_status fw_gdn(cudaStream_t st, const float *qkvz, const float *ba, const float *dtb,
                        const float *nea, const float *convw, float *cstate, float *rstate,
                        const float *lnw, float *mixed, float *conv, float *z, float *beta,
                        float *gg, float *o, int T, int Hk, int Hv, int dk, int dv, int K,
                        float eps);
enum hmoe_status fw_silu_mul(cudaStream_t st, const float *g, const float *u, float *a, int64_t n);
/* n_assign = T * k assignments (idx (T, k) device); act (T*k, I), ye (T*k, H) scratch. */
enum hmoe_status fw_experts(cudaStream_t st, const fw_ex_desc *d, const int32_t *idx,
                            const float *x, float *act, float *ye, int n_assign);
/* blk[t] = sum_j [resident] w ye[perm ? perm[t*k+j] : t*k+j] + sigmoid(sgl) sy + host. */
enum hmoe_status fw_moe_combine(cudaStream_t st, const float *ye, const int32_t *perm,
                                const int32_t *idx, const float *w, const int *slot, int k, int H,
                                const float *sy, const float *sgl, const float *host, float *blk,
                                int T);
enum hmoe_status fw_silu_gu(cudaStream_t st, const float *C, float *act, int I, int64_t n);
enum hmoe_status fw_deq_weight(cudaStream_t st, const struct hmoe_gpu_w *w, float *out);
/* y = W x for a dense weight: canonical NF4 (W nibbles + absf, code, rnd) or f32 (f32 = 1). */
enum hmoe_status fw_mv_dense(cudaStream_t st, const void *W, const float *absf, const float *code,
                             int rnd, int f32, const float *x, float *y, int rows, int cols);
enum hmoe_status fw_deq_nf4c(cudaStream_t st, const uint8_t *nib, const float *absf,
                             const float *code, int rnd, float *out, int64_t n);
enum hmoe_status fw_bf16_to_f32(cudaStream_t st, const uint16_t *x, float *y, int64_t n);
enum hmoe_status fw_deq_slots(cudaStream_t st, const fw_ex_desc *d, const int32_t *d_slots, int ns,
                              float *out);
enum hmoe_status fw_gather(cudaStream_t st, const float *src, const int32_t *rows, float *dst,
                           int n, int cols);

#endif
