/* hmoe/forward.h: the Qwen3-Next forward pass of one sequence on the portable CPU backend
 * (fp32 arithmetic, weights dequantized on the fly). Owns the decode caches: KV for full-attention
 * layers, conv and recurrent state for Gated DeltaNet layers. Not thread-safe per object; the
 * model may be shared by many hmoe_fwd objects. */
#ifndef HMOE_FORWARD_H
#define HMOE_FORWARD_H

#include <stdint.h>

#include "hmoe/model.h"

#ifdef __cplusplus
extern "C" {
#endif

struct hmoe_fwd;

/* Routed-expert hook: the forward pass decides the routing (fp32 softmax, top-k, renormalised)
 * and calls `routed` once per MoE layer; it must ADD sum_k w[t,k] * expert_{idx[t,k]}(x[t]) into
 * out[t] for every token. x: (n_tok, H) f32, idx/w: (n_tok, topk), out: (n_tok, H) f32.
 * When no hook is set, the experts run in-process. */
struct hmoe_moe_hook {
    enum hmoe_status (*routed)(void *ctx, int layer, int n_tok, const float *x, const int32_t *idx,
                               const float *w, float *out);
    void *ctx;
};

/* max_ctx: KV capacity in tokens (0 = the model's max_position_embeddings, capped at 4096). */
enum hmoe_status hmoe_fwd_init(const struct hmoe_model *m, int max_ctx, struct hmoe_fwd **out);
void hmoe_fwd_free(struct hmoe_fwd *f); /* NULL is a no-op */
void hmoe_fwd_reset(struct hmoe_fwd *f); /* forget the sequence; position 0 */
void hmoe_fwd_set_moe_hook(struct hmoe_fwd *f, const struct hmoe_moe_hook *hook);
int hmoe_fwd_pos(const struct hmoe_fwd *f); /* tokens consumed so far */

/* Runs n tokens at positions pos..pos+n-1: n > 1 is a prefill call (chunked Gated DeltaNet),
 * n == 1 a decode step (recurrent form). logits: (n, V) f32, or NULL; when last_only is set only
 * the last position's logits are computed and written to logits[0..V). Returns HMOE_E_RANGE when
 * the context would overflow, HMOE_E_INVAL for a token id outside the vocabulary (both leave
 * the sequence untouched). Long calls run internally in sub-calls of at most 256 tokens (the
 * hook then sees n_tok <= 256). If the hook fails, the error is returned and the sequence must
 * be reset: until then every call returns HMOE_E_INVAL. */
enum hmoe_status hmoe_fwd_run(struct hmoe_fwd *f, const int32_t *tokens, int n, float *logits,
                              int last_only);

#ifdef __cplusplus
}
#endif
#endif
