/* hmoe/model.h: a Qwen3-Next model as the engine sees it: the parsed config.json and every
 * weight tensor, read in place (mmap) from a Hugging Face directory (single safetensors file or
 * shards + model.safetensors.index.json, BF16/F16/F32 and bnb NF4), or generated (synth:).
 * The model is immutable after open and may be shared by threads. */
#ifndef HMOE_MODEL_H
#define HMOE_MODEL_H

#include "hmoe/status.h"
#include "hmoe/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HMOE_MAX_LAYERS 256
#define HMOE_MAX_EOS 8

enum hmoe_layer_kind { HMOE_LAYER_LINEAR = 0, HMOE_LAYER_FULL = 1 };

struct hmoe_config {
    int hidden_size;           /* H */
    int num_layers;            /* L */
    int vocab_size;            /* V */
    int num_heads;             /* full attention: query heads */
    int num_kv_heads;
    int head_dim;              /* D (explicit head_dim, else hidden/heads) */
    int rotary_dim;            /* int(head_dim * partial_rotary_factor) */
    float rope_theta;
    float partial_rotary_factor;
    float rms_norm_eps;
    int linear_num_key_heads;  /* Hk */
    int linear_num_value_heads;/* Hv */
    int linear_key_head_dim;   /* dk */
    int linear_value_head_dim; /* dv */
    int linear_conv_kernel_dim;/* K */
    int num_experts;           /* E (0 = dense MLP everywhere) */
    int num_experts_per_tok;   /* top-k */
    int moe_intermediate_size;
    int shared_expert_intermediate_size;
    int intermediate_size;     /* dense MLP layers only */
    int norm_topk_prob;
    int decoder_sparse_step;
    int tie_word_embeddings;
    int max_position_embeddings;
    int attention_bias;        /* must be 0 (checked at open) */
    int bos_token_id;          /* -1 if absent */
    int n_eos;
    int eos_token_ids[HMOE_MAX_EOS];
    enum hmoe_layer_kind layer_types[HMOE_MAX_LAYERS];
    unsigned char layer_is_moe[HMOE_MAX_LAYERS];
    int quantized;             /* quantization_config says bitsandbytes 4-bit */
};

/* Parses config.json text (both the hub/4.x and the 5.x spellings). `origin` names the file in
 * error messages. Returns HMOE_E_FORMAT with a message on missing or inconsistent fields. */
enum hmoe_status hmoe_config_parse(const char *json, size_t len, const char *origin,
                                   struct hmoe_config *cfg);

/* Gate, up and down projections of one expert (routed, shared, or dense MLP). */
struct hmoe_mlp_w {
    struct hmoe_tensor gate; /* [I, H] */
    struct hmoe_tensor up;   /* [I, H] */
    struct hmoe_tensor down; /* [H, I] */
};

struct hmoe_layer_w {
    enum hmoe_layer_kind kind;
    struct hmoe_tensor input_norm; /* [H], (1+w) */
    struct hmoe_tensor post_norm;  /* [H], (1+w) */
    /* full attention */
    struct hmoe_tensor q_proj, k_proj, v_proj, o_proj; /* [Hq*D*2, H] [Hkv*D, H] [Hkv*D, H] [H, Hq*D] */
    struct hmoe_tensor q_norm, k_norm;                 /* [D], (1+w) */
    /* Gated DeltaNet */
    struct hmoe_tensor in_proj_qkvz; /* [2*Hk*dk + 2*Hv*dv, H], interleaved by key-head group */
    struct hmoe_tensor in_proj_ba;   /* [2*Hv, H], interleaved by key-head group */
    struct hmoe_tensor conv1d;       /* [2*Hk*dk + Hv*dv, 1, K] */
    struct hmoe_tensor dt_bias;      /* [Hv] */
    struct hmoe_tensor A_log;        /* [Hv] */
    struct hmoe_tensor lin_norm;     /* [dv], applied as w (not 1+w) */
    struct hmoe_tensor out_proj;     /* [H, Hv*dv] */
    /* MoE (layer_is_moe) */
    struct hmoe_tensor router;       /* [E, H] */
    struct hmoe_tensor shared_gate;  /* [1, H] */
    struct hmoe_mlp_w shared;        /* shared expert */
    struct hmoe_mlp_w *experts;      /* [E] routed experts (views for the fused layout) */
    /* dense MLP (layers that are not MoE) */
    struct hmoe_mlp_w mlp;
};

struct hmoe_model {
    struct hmoe_config cfg;
    struct hmoe_tensor embed;      /* [V, H] */
    struct hmoe_tensor final_norm; /* [H], (1+w) */
    struct hmoe_tensor lm_head;    /* [V, H]; equals embed when tied */
    struct hmoe_layer_w *layers;   /* [L] */
    char *dir;                     /* source directory or "synth:<preset>" */
    void *priv;                    /* files, mappings, arenas */
};

/* Opens a model directory (config.json + safetensors). Every header length, offset, dtype and
 * shape is checked against the file and the config before use; a missing, truncated or
 * inconsistent model returns HMOE_E_FORMAT (or HMOE_E_IO) with a one-line message naming the
 * file and tensor. `mtp.*` tensors are ignored. On success *out owns the mappings. */
enum hmoe_status hmoe_model_open(const char *dir, struct hmoe_model **out);
void hmoe_model_close(struct hmoe_model *m); /* NULL is a no-op */

/* Bytes of weight data of one routed expert (gate+up+down as stored, incl. NF4 absmax). */
uint64_t hmoe_expert_nbytes(const struct hmoe_model *m, int layer, int expert);

#ifdef __cplusplus
}
#endif
#endif
