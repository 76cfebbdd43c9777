/* gpu_worker/cuda/fwd_launch.h: launchers of the forward-pass kernels (fwd_kernels.cu), C++
 * linkage, used by forward_cuda.cu only. Each enqueues on `st` and returns the launch status.
 * Shapes: see the kernels; d_pos is the sequence position held in device memory. */
#ifndef HMOE_CUDA_FWD_LAUNCH_H
#define HMOE_CUDA_FWD_LAUNCH_H

#include "fwd_kernels.cuh"

#define FW_ATTN_SPLIT 16 /* position splits of the decode attention */

/* Batched decode: the step's token table in device memory ("bat", FW_BAT_INTS ints): bat[0] =
 * tokens present B, bat[FW_BAT_SEQ + b] = the sequence of token b, bat[FW_BAT_POS + b] = its
 * position. Kernels launched for a bucket of more tokens skip tokens b >= B. A sequence's caches
 * are at cache + seq * stride (stride in floats: kvs for K and V each, css / rss for the conv and
 * recurrent states). */
#define FW_MAXB 8
#define FW_BAT_SEQ 1
#define FW_BAT_POS (1 + FW_MAXB)
#define FW_BAT_INTS (1 + 2 * FW_MAXB)

enum hmoe_status fw_add_norm(cudaStream_t st, const float *src, const float *add, float *h,
                             const float *w, float *xn, int rows, int H, float eps);
enum hmoe_status fw_mv_bf16(cudaStream_t st, const uint16_t *W, const float *x, float *y, int rows,
                            int cols, int T, int64_t xs, int64_t ys);
/* T tokens of one sequence at *d_pos + pos_add + t (bat NULL), or the T tokens of a batched
 * decode step (bat, kvs; see FW_BAT_SEQ). */
enum hmoe_status fw_attn_prep(cudaStream_t st, const float *qg, const float *kb, const float *vb,
                              const float *qn, const float *kn, const float *inv_freq,
                              const int *d_pos, int pos_add, const int *bat, int64_t kvs, int T,
                              float *q, float *gate, float *kc, float *vc, int Hq, int Hkv, int D,
                              int rot, int cap, float eps);
/* Decode attention of B tokens of the batch table bat (each its own sequence's caches);
 * q, gate, o: (B, Hq, D); sc: (B, Hq, cap) scratch; part: (B, Hq, FW_ATTN_SPLIT, D + 2). */
enum hmoe_status fw_attn_decode(cudaStream_t st, const float *q, const float *gate, const float *kc,
                                const float *vc, const int *bat, int64_t kvs, int B, float *sc,
                                float *part, float *o, int Hq, int Hkv, int D, int cap,
                                float scale);
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

/* Prefill kernels (pf_kernels.cu). */
/* Causal conv1d + SiLU over T tokens, parallel over tokens, then the state update (2 launches).
 * mixed, out: (T, cd); w, state: (cd, K), K <= 8. */
enum hmoe_status fw_pf_conv(cudaStream_t st, const float *mixed, const float *w, float *state,
                            float *out, int cd, int K, int T);
/* Gated delta rule over T >= 1 tokens (dk 16/32/64/128, Hv % Hk == 0: fw_pf_gdn_ok); raw
 * output o (T, Hv*dv), the gated norm is not applied; S (Hv, dk, dv) in place. scratch (may be
 * NULL): T * (2 Hk dk + Hv dv) floats (fw_gdn passes mixed), its contents and gg's are lost.
 * Recurrent (4 lanes per state column; given scratch and T >= 32, q/k are normalised first by a
 * parallel kernel into it and gg is overwritten with e^g) or, with scratch, fw_pf_gdn_chunk_ok
 * and T >= PF_GDN_CHUNK_MIN, the chunked form (gdn_chunk.cu, 3xTF32 tensor cores).
 * HMOE_GDN_CHUNK=0 forces the recurrent kernel, =1 the chunked one where supported. */
int fw_pf_gdn_ok(int Hk, int Hv, int dk, int dv);
enum hmoe_status fw_pf_gdn(cudaStream_t st, const float *conv, const float *beta, float *gg,
                           float *S, float *o, float *scratch, int T, int Hk, int Hv, int dk,
                           int dv);
/* The chunked (WY) form, chunk 64 (gdn_chunk.cu): dk 128, dv % 32 == 0, dv <= 256, Hv % Hk ==
 * 0 and Hv (dk + 68) <= 2 Hk dk + Hv dv (its W, P and factors fit in the scratch of fw_pf_gdn).
 * Same arguments as fw_pf_gdn, scratch required; gg (log decay) is only read. Products on the
 * tensor cores in 3xTF32 (about fp32 accuracy). */
int fw_pf_gdn_chunk_ok(int Hk, int Hv, int dk, int dv);
enum hmoe_status fw_pf_gdn_chunk(cudaStream_t st, const float *conv, const float *beta,
                                 const float *gg, float *S, float *o, float *scratch, int T, int Hk,
                                 int Hv, int dk, int dv);
/* The GDN decode step (T = 1) in two kernels: de-interleave + conv step + z/beta/g, then the
 * delta rule fused with the gated RMSNorm (fw_pf_gdn_decode_ok: fw_pf_gdn_ok and dv <= 256,
 * K <= 8). Buffers as fw_gdn (mixed unused). B tokens of a batched step (bat, see FW_BAT_SEQ):
 * token b's rows of qkvz, ba, conv, z, beta, gg, o, its sequence's states at cstate + seq * css,
 * rstate + seq * rss; bat NULL: one token, the states as given. */
int fw_pf_gdn_decode_ok(int Hk, int Hv, int dk, int dv, int K);
enum hmoe_status fw_pf_gdn_decode(cudaStream_t st, const float *qkvz, const float *ba,
                                  const float *dtb, const float *nea, const float *convw,
                                  float *cstate, float *rstate, const float *lnw, float *conv,
                                  float *z, float *beta, float *gg, float *o, int Hk, int Hv,
                                  int dk, int dv, int K, float eps, const int *bat, int B,
                                  int64_t css, int64_t rss);
/* Y (B, rows) = X (B, cols) W^T for a bf16 weight, cols % 8 == 0, B <= FW_MAXB: each weight row
 * read once for the B tokens; a token's result does not depend on B. */
enum hmoe_status fw_mv_bf16_rows(cudaStream_t st, const uint16_t *W, const float *X, float *Y,
                                 int rows, int cols, int B);
/* Tiled causal attention with the sigmoid gate (D 64/128/256, Hq % Hkv == 0: fw_pf_attn_ok). */
int fw_pf_attn_ok(int Hq, int Hkv, int D);
enum hmoe_status fw_pf_attn(cudaStream_t st, const float *q, const float *gate, const float *kc,
                            const float *vc, const int *d_pos, float *o, int T, int Hq, int Hkv,
                            int D, int cap, float scale);
/* The same with TF32 tensor cores (the TF32 prefill mode; q/k/v truncated to tf32, p rounded;
 * ~1e-3 relative error). */
enum hmoe_status fw_pf_attn_tf32(cudaStream_t st, const float *q, const float *gate,
                                 const float *kc, const float *vc, const int *d_pos, float *o,
                                 int T, int Hq, int Hkv, int D, int cap, float scale);
/* Resident expert slots d_slots[0..ns) -> gate | up | down per slot at out + i * 3 * H * I, as
 * fp32 (bf16 = 0) or bf16 (bf16 = 1; NF4 rounded to bf16 as bnb does, or BF16 experts). */
enum hmoe_status fw_pf_deq_slots(cudaStream_t st, const fw_ex_desc *d, const int32_t *d_slots,
                                 int ns, int bf16, void *out);
/* dst (n, cols) bf16 = src[rows[i], :]; act (n, I) bf16 = silu(gate) * up of C (n, 2I) fp32. */
enum hmoe_status fw_pf_gather_bf16(cudaStream_t st, const float *src, const int32_t *rows,
                                   void *dst, int n, int cols);
enum hmoe_status fw_pf_silu_gu_bf16(cudaStream_t st, const float *C, void *act, int I, int64_t n);
/* Routed experts as two fused NF4 x bf16 tensor-core GEMMs (fp32 accumulation), for NF4
 * experts rounded to bf16 with H % 128 == 0 and I % 64 == 0 (fw_pf_moe_ok): items (int32 x 4
 * each: slot, first row, rows <= 64, 0) from fw_pf_moe_items over the grouped rows (cnt: prefix
 * counts per expert, used: experts with rows, slot_of: slot per expert; -1 when cap is
 * exceeded); xs (rows, H) bf16 gathered activations, act (rows, I) bf16 scratch,
 * y (rows, H) fp32 = down(silu(gate x) * up x). */
int fw_pf_moe_ok(const fw_ex_desc *d);
int fw_pf_moe_items(const int *cnt, const int *used, int n_used, const int *slot_of, int32_t *items,
                    int cap);
enum hmoe_status fw_pf_moe(cudaStream_t st, const fw_ex_desc *d, const int32_t *d_items,
                           int n_items, const void *xs, void *act, float *y);
/* Y (T, rows) fp32 = X (T, cols) W^T for a canonical NF4 weight rounded to bf16 (nibbles nib,
 * fp32 absmax absf in the same allocation after them), with X rounded to bf16 into xb (T * cols
 * bf16 scratch) and the fused tensor-core kernel; rows % 128 == 0, cols % 64 == 0
 * (fw_pf_dense_ok). */
int fw_pf_dense_ok(int rows, int cols, int rnd);
enum hmoe_status fw_pf_dense(cudaStream_t st, const uint8_t *nib, const float *absf,
                             const float *code, int rows, int cols, const float *X, void *xb,
                             float *Y, int T);

#endif
