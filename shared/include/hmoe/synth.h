/* hmoe/synth.h: synthetic Qwen3-Next models ("synth:<preset>[?seed=N&layers=N]") with
 * deterministic random weights, built in memory in the same form as a loaded bnb-4bit checkpoint
 * (every Linear NF4 double-quant, bf16 embeddings/lm_head/norms/small params), plus the writer of
 * such a model as a Hugging Face + bitsandbytes checkpoint directory. */
#ifndef HMOE_SYNTH_H
#define HMOE_SYNTH_H

#include <stdint.h>

#include "hmoe/model.h"
#include "hmoe/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when name starts with "synth:". */
int hmoe_synth_is_spec(const char *name);

/* Builds the model named by spec. Presets: "qwen3-next-80b-a3b" (MODEL.md §0 shapes, 48 layers,
 * 512 experts), "small", "tiny". Options: seed=N (default 1), layers=N (1..preset layers; keeps
 * the widths, used to test the full shapes on small machines). Generation runs in parallel
 * (OpenMP) with a counter-based PRNG: the bytes do not depend on the thread count.
 * m->dir is the spec string. Errors: HMOE_E_INVAL for an unknown preset or option, HMOE_E_NOMEM. */
enum hmoe_status hmoe_synth_open(const char *spec, struct hmoe_model **out);
void hmoe_synth_close(struct hmoe_model *m); /* NULL is a no-op */

/* Selects routed expert (layer, expert) of a model with configuration cfg: 1 = generate it. */
typedef int (*hmoe_synth_keep_fn)(const struct hmoe_config *cfg, int layer, int expert, void *arg);
/* The same model, but only the routed experts keep() selects are generated (their bytes equal
 * hmoe_synth_open's); every other tensor (dense weights, the other experts) is laid out but never
 * written or touched, so it costs no memory and reads as zero: for an expert worker that uses
 * only its placed experts. HMOE_E_INVAL without keep; otherwise as hmoe_synth_open. */
enum hmoe_status hmoe_synth_open_experts(const char *spec, hmoe_synth_keep_fn keep, void *arg,
                                         struct hmoe_model **out);

/* Bytes of weight data in the synth arena (all tensors incl. NF4 aux data). */
uint64_t hmoe_synth_nbytes(const struct hmoe_model *m);

/* Gives every page of the arena back (MADV_DONTNEED): afterwards all weights of m read as zero.
 * For a process that copied what it needs (an expert worker's prepared set) and never reads the
 * model's weights again; m->cfg stays valid. Returns the bytes that had been generated (0 for
 * NULL / non-synth). */
uint64_t hmoe_synth_drop_weights(struct hmoe_model *m);

/* Writes m (any model whose tensors are BF16/F32/NF4-double-quant) as a checkpoint directory:
 * config.json, model-0000i-of-0000n.safetensors shards of at most shard_bytes each (one tensor
 * never straddles two shards) and model.safetensors.index.json, with per-expert names and the
 * bnb aux tensors (absmax, quant_map, nested_absmax, nested_quant_map,
 * quant_state.bitsandbytes__nf4). The directory is created if missing. */
enum hmoe_status hmoe_synth_write(const struct hmoe_model *m, const char *dir,
                                  uint64_t shard_bytes);

/* The NF4 code table (MODEL.md §6.1) and bnb's signed dynamic 8-bit map (§6.3). */
extern const float hmoe_synth_nf4_code[16];
void hmoe_synth_dynamic_map(float out[256]);

#ifdef __cplusplus
}
#endif
#endif
