/* hmoe/gpu_forward.h: the Qwen3-Next forward pass of one or several independent sequences on one
 * CUDA device (mirrors hmoe/forward.h). Dense weights, caches (KV, conv, recurrent state of every
 * sequence), workspace and as many routed experts as the VRAM budget allows live on the device;
 * the other experts go through the routed-expert hook on the host (or the in-process CPU path when
 * no hook is set). Up to HMOE_GFWD_MAX_BATCH sequences decode one token each in one batched step.
 * Built only with CUDA (lib hmoe_gpu_forward); not thread-safe per object. */
#ifndef HMOE_GPU_FORWARD_H
#define HMOE_GPU_FORWARD_H

#include <stdint.h>
#include <stdio.h>

#include "hmoe/forward.h"
#include "hmoe/gpu.h"
#include "hmoe/model.h"

#ifdef __cplusplus
extern "C" {
#endif

struct hmoe_gfwd;

/* Most sequences in one batched decode step (hmoe_gfwd_decode_batch). */
#define HMOE_GFWD_MAX_BATCH 8

/* Where the VRAM budget went (bytes allocated by this object on the device; the CUDA context
 * itself, about 0.5 GiB, is not counted). The embedding table stays in host memory (rows are
 * gathered on the host and uploaded per token). */
struct hmoe_gfwd_budget {
    uint64_t budget;           /* 0 = unlimited */
    uint64_t dense;            /* every weight except routed experts, incl. lm_head */
    uint64_t caches;           /* KV (f32) + conv + recurrent states, all sequences */
    uint64_t workspace;        /* activations, scratch, prefill staging */
    uint64_t experts;          /* resident routed experts */
    uint64_t expert_bytes;     /* device bytes of one routed expert */
    int n_resident, n_experts; /* routed experts resident / in the model */
};

/* Residency policy: the same number of experts in every MoE layer (the remainder to the first
 * layers), the lowest expert ids of each layer first. absmax: HMOE_GPU_ABSMAX_F32 (the NF4
 * kernels here read fp32 absmax; HMOE_GPU_ABSMAX_CODES gives HMOE_E_UNSUPPORTED).
 * vram_budget: bytes (0 = unlimited). HMOE_E_NOMEM with a message and a hint when the dense
 * part, caches and workspace alone do not fit. max_ctx as in hmoe_fwd_init. device: CUDA index. */
enum hmoe_status hmoe_gfwd_init(const struct hmoe_model *m, int device, int max_ctx,
                                uint64_t vram_budget, enum hmoe_gpu_absmax absmax,
                                struct hmoe_gfwd **out);
/* The same with n_seq >= 1 independent sequences (indices 0..n_seq-1), each with its own caches
 * for max_ctx tokens and its position (all counted in the budget: caches = n_seq x one
 * sequence's). HMOE_E_UNSUPPORTED for n_seq > 1 when the GDN shapes have no batched decode kernel
 * (key head dim not 16/32/64/128, value head dim > 256 or conv kernel > 8). */
enum hmoe_status hmoe_gfwd_init_seqs(const struct hmoe_model *m, int device, int max_ctx, int n_seq,
                                     uint64_t vram_budget, enum hmoe_gpu_absmax absmax,
                                     struct hmoe_gfwd **out);
void hmoe_gfwd_free(struct hmoe_gfwd *f); /* NULL is a no-op */
int hmoe_gfwd_n_seq(const struct hmoe_gfwd *f);
/* Forgets sequence seq (position 0, states zeroed, the broken mark cleared); others unchanged.
 * An index out of range is ignored. */
void hmoe_gfwd_seq_reset(struct hmoe_gfwd *f, int seq);
int hmoe_gfwd_seq_pos(const struct hmoe_gfwd *f, int seq); /* 0 for an index out of range */
void hmoe_gfwd_reset(struct hmoe_gfwd *f);                 /* sequence 0 */
int hmoe_gfwd_pos(const struct hmoe_gfwd *f);              /* sequence 0 */
/* Routed-expert hook for experts that are not resident (contract of hmoe/forward.h): slots the
 * GPU computes itself are passed with idx -1 and weight 0 (skip them); the hook ADDS the rest
 * into out. NULL hook: those experts run in-process on the CPU (hmoe_matmul). */
void hmoe_gfwd_set_moe_hook(struct hmoe_gfwd *f, const struct hmoe_moe_hook *hook);
/* Same contract as hmoe_fwd_run for sequence seq (n > 1 prefill, n == 1 decode (the batched step
 * with B = 1); logits (n, V) f32 or the last row only, or NULL). HMOE_E_INVAL: seq out of range,
 * a token outside the vocabulary, or the sequence broken by an earlier failure (until reset);
 * HMOE_E_RANGE: position + n > max_ctx. Nothing changes on these errors; a failure after the
 * checks marks the sequence broken. */
enum hmoe_status hmoe_gfwd_run_seq(struct hmoe_gfwd *f, int seq, const int32_t *tokens, int n,
                                   float *logits, int last_only);
enum hmoe_status hmoe_gfwd_run(struct hmoe_gfwd *f, const int32_t *tokens, int n, float *logits,
                               int last_only); /* sequence 0 */
/* One decode step of B (1..HMOE_GFWD_MAX_BATCH) distinct sequences: tokens[b] is appended to
 * sequence seqs[b]; logits (B, V) f32 (row b for seqs[b]) or NULL. Every op runs once for the B
 * tokens (dense NF4 matvecs read each weight once; the routed experts per token); with graphs
 * on and every expert resident, the step replays the CUDA graph of the smallest bucket (1, 2, 4,
 * 8) >= B, captured at that bucket's second step. A token's logits do not depend on the batch
 * (same as decoding its sequence alone). Errors (nothing changed): HMOE_E_INVAL for B out of
 * range, a sequence out of range, repeated or broken, a token outside the vocabulary;
 * HMOE_E_RANGE when a sequence's context is full. A failure during the step marks the B
 * sequences broken until they are reset. */
enum hmoe_status hmoe_gfwd_decode_batch(struct hmoe_gfwd *f, const int *seqs, const int32_t *tokens,
                                        int B, float *logits);
void hmoe_gfwd_get_budget(const struct hmoe_gfwd *f, struct hmoe_gfwd_budget *b);
/* One line per item, for the start-up message ("dense weights 1.52 GiB, ..."). */
void hmoe_gfwd_print_budget(const struct hmoe_gfwd *f, FILE *fp);
int hmoe_gfwd_expert_resident(const struct hmoe_gfwd *f, int layer, int expert);
/* CUDA graphs for the decode step, one per batch bucket (default on; used only when every expert
 * is resident). Off destroys the captured graphs. */
void hmoe_gfwd_set_graphs(struct hmoe_gfwd *f, int on);
/* How prefill calls (n > 1) run: token by token through the decode step, or in chunks:
 * FP32 (default): cuBLAS fp32 GEMMs on weights dequantized one at a time to an fp32 scratch, fp32
 * attention (matches the decode step to fp32 rounding); TF32: the same GEMMs in TF32 tensor-core
 * math (inputs rounded to 10-bit mantissas); BF16: fused NF4 x bf16 tensor-core GEMMs for the
 * experts (activations rounded to bf16, as bitsandbytes computes with bf16 compute dtype), TF32
 * tensor-core attention, TF32 cuBLAS GEMMs for the dense projections, the router in TF32 (fastest;
 * routing can differ from fp32 where logits are close). */
enum hmoe_gfwd_prefill {
    HMOE_PREFILL_TOKENS = 0,
    HMOE_PREFILL_FP32 = 1,
    HMOE_PREFILL_TF32 = 2,
    HMOE_PREFILL_BF16 = 3,
};
/* "tokens", "fp32", "tf32", "bf16" -> mode; -1 when unknown. */
int hmoe_gfwd_prefill_parse(const char *s);
enum hmoe_status hmoe_gfwd_set_prefill(struct hmoe_gfwd *f, enum hmoe_gfwd_prefill mode);
/* Which kernel the decode step's dense NF4 matvecs use. EXACT (default): bitsandbytes' weights,
 * bf16(code * absmax), on tensor cores. FAST: the tile-pipeline kernel (fp16 codes, absmax applied
 * after the mma, so the weight is code * absmax unrounded: closer to the exact dequantized value
 * but not bit-faithful to bitsandbytes, and no longer the weights of the prefill path), taken for
 * one-token dense calls of 2048 columns with at least one 16-row tile per SM; every other call
 * stays on the exact kernels. A change drops the captured decode graphs. */
enum hmoe_gfwd_decode {
    HMOE_DECODE_EXACT = 0,
    HMOE_DECODE_FAST = 1,
};
/* "exact", "fast" -> mode; -1 when unknown. */
int hmoe_gfwd_decode_parse(const char *s);
enum hmoe_status hmoe_gfwd_set_decode(struct hmoe_gfwd *f, enum hmoe_gfwd_decode mode);

/* Parses "BYTES", "N[KMG]iB", "N[KMG]B", "NG" (powers of 1024); 0 = unlimited. -1 on error. */
int hmoe_parse_bytes(const char *s, uint64_t *out);

#ifdef __cplusplus
}
#endif
#endif
