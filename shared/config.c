/* config.json of Qwen3-Next (MODEL.md §0, §0.1, §2): both the hub/4.x spelling (top-level
 * rope_theta / partial_rotary_factor) and the 5.x one (rope_parameters{...}, dtype, explicit
 * layer_types). Absent keys take the transformers Qwen3NextConfig defaults; every value is
 * validated, and anything inconsistent is HMOE_E_FORMAT with a message naming the file. */
#include <cJSON.h>
#include <math.h>
#include <string.h>

#include "hmoe/model.h"
#include "hmoe/safetensors.h" /* hmoe_st_printable */

struct cfg_ctx {
    const cJSON *root;
    const char *origin;
};

/* Integer key with a default; must be integral and inside [lo, hi]. */
static enum hmoe_status get_int(const struct cfg_ctx *c, const char *key, int def, int lo, int hi,
                                int *out)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c->root, key);
    if (!j || cJSON_IsNull(j)) {
        *out = def;
        return HMOE_OK;
    }
    double d = cJSON_IsNumber(j) ? j->valuedouble : (double)NAN;
    if (!(d >= (double)lo && d <= (double)hi) || d != floor(d))
        return hmoe_fail(HMOE_E_FORMAT, "%s: '%s' must be an integer in [%d, %d]", c->origin, key,
                         lo, hi);
    *out = (int)d;
    return HMOE_OK;
}

static enum hmoe_status get_bool(const struct cfg_ctx *c, const char *key, int def, int *out)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c->root, key);
    if (!j || cJSON_IsNull(j)) {
        *out = def;
        return HMOE_OK;
    }
    if (!cJSON_IsBool(j))
        return hmoe_fail(HMOE_E_FORMAT, "%s: '%s' must be true or false", c->origin, key);
    *out = cJSON_IsTrue(j) ? 1 : 0;
    return HMOE_OK;
}

/* Finite positive (or, with allow_zero, non-negative) number from object `obj`. */
static enum hmoe_status get_num(const struct cfg_ctx *c, const cJSON *obj, const char *key,
                                double def, int allow_zero, double *out)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!j || cJSON_IsNull(j)) {
        *out = def;
        return HMOE_OK;
    }
    double d = cJSON_IsNumber(j) ? j->valuedouble : (double)NAN;
    if (!isfinite(d) || d < 0.0 || (!allow_zero && d == 0.0))
        return hmoe_fail(HMOE_E_FORMAT, "%s: '%s' must be a finite %s number", c->origin, key,
                         allow_zero ? "non-negative" : "positive");
    *out = d;
    return HMOE_OK;
}

static enum hmoe_status token_id(const struct cfg_ctx *c, const char *key, const cJSON *j, int *out)
{
    double d = cJSON_IsNumber(j) ? j->valuedouble : (double)NAN;
    if (!(d >= 0.0 && d <= 2147483647.0) || d != floor(d))
        return hmoe_fail(HMOE_E_FORMAT,
                         "%s: '%s' must be a non-negative integer token id (or a "
                         "list of them)",
                         c->origin, key);
    *out = (int)d;
    return HMOE_OK;
}

#define TRY(x)                                                                                     \
    do {                                                                                           \
        enum hmoe_status st_ = (x);                                                                \
        if (st_ != HMOE_OK) return st_;                                                            \
    } while (0)

static enum hmoe_status parse_rope(const struct cfg_ctx *c, struct hmoe_config *cfg)
{
    char pb[40];
    double theta = 10000.0, prf = 0.25;
    TRY(get_num(c, c->root, "rope_theta", theta, 0, &theta));
    TRY(get_num(c, c->root, "partial_rotary_factor", prf, 0, &prf));
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(c->root, "rope_scaling");
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(c->root, "rope_parameters");
    const cJSON *objs[2] = {rs, rp};
    for (int k = 0; k < 2; k++) {
        const cJSON *o = objs[k];
        const char *what = k ? "rope_parameters" : "rope_scaling";
        if (!o || cJSON_IsNull(o)) continue;
        if (!cJSON_IsObject(o))
            return hmoe_fail(HMOE_E_FORMAT, "%s: '%s' must be an object or null", c->origin, what);
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(o, "rope_type");
        if (!ty) ty = cJSON_GetObjectItemCaseSensitive(o, "type");
        if (ty && !cJSON_IsNull(ty) &&
            (!cJSON_IsString(ty) || strcmp(ty->valuestring, "default") != 0))
            return hmoe_fail(HMOE_E_UNSUPPORTED,
                             "%s: %s.rope_type '%.32s' is not supported "
                             "(only \"default\" rope)",
                             c->origin, what,
                             cJSON_IsString(ty) ? hmoe_st_printable(ty->valuestring, pb, sizeof pb)
                                                : "?");
        if (k == 1) {
            /* the 5.x spelling wins over the top-level keys */
            TRY(get_num(c, o, "rope_theta", theta, 0, &theta));
            TRY(get_num(c, o, "partial_rotary_factor", prf, 0, &prf));
        }
    }
    if (prf > 1.0)
        return hmoe_fail(HMOE_E_FORMAT, "%s: partial_rotary_factor %g is over 1", c->origin, prf);
    cfg->rope_theta = (float)theta;
    cfg->partial_rotary_factor = (float)prf;
    /* python: int(head_dim * partial_rotary_factor), both as doubles */
    cfg->rotary_dim = (int)((double)cfg->head_dim * prf);
    if (cfg->rotary_dim <= 0 || cfg->rotary_dim % 2 || cfg->rotary_dim > cfg->head_dim)
        return hmoe_fail(HMOE_E_FORMAT,
                         "%s: rotary dim int(%d * %g) = %d must be even, positive "
                         "and at most head_dim",
                         c->origin, cfg->head_dim, prf, cfg->rotary_dim);
    return HMOE_OK;
}

static enum hmoe_status parse_layers(const struct cfg_ctx *c, struct hmoe_config *cfg)
{
    const int L = cfg->num_layers;
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(c->root, "layer_types");
    if (lt && !cJSON_IsNull(lt)) {
        if (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != L)
            return hmoe_fail(HMOE_E_FORMAT,
                             "%s: 'layer_types' must be a list of %d entries "
                             "(num_hidden_layers)",
                             c->origin, L);
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach (e, lt) {
            if (cJSON_IsString(e) && strcmp(e->valuestring, "linear_attention") == 0)
                cfg->layer_types[i] = HMOE_LAYER_LINEAR;
            else if (cJSON_IsString(e) && strcmp(e->valuestring, "full_attention") == 0)
                cfg->layer_types[i] = HMOE_LAYER_FULL;
            else
                return hmoe_fail(HMOE_E_FORMAT,
                                 "%s: layer_types[%d] must be \"linear_attention\" "
                                 "or \"full_attention\"",
                                 c->origin, i);
            i++;
        }
    } else {
        int interval = 4;
        TRY(get_int(c, "full_attention_interval", 4, 1, 1 << 20, &interval));
        for (int i = 0; i < L; i++)
            cfg->layer_types[i] = (i + 1) % interval ? HMOE_LAYER_LINEAR : HMOE_LAYER_FULL;
    }

    unsigned char mlp_only[HMOE_MAX_LAYERS] = {0};
    const cJSON *mo = cJSON_GetObjectItemCaseSensitive(c->root, "mlp_only_layers");
    if (mo && !cJSON_IsNull(mo)) {
        if (!cJSON_IsArray(mo))
            return hmoe_fail(HMOE_E_FORMAT, "%s: 'mlp_only_layers' must be a list", c->origin);
        const cJSON *e;
        cJSON_ArrayForEach (e, mo) {
            double d = cJSON_IsNumber(e) ? e->valuedouble : (double)NAN;
            if (!(d >= 0.0 && d < (double)L) || d != floor(d))
                return hmoe_fail(HMOE_E_FORMAT,
                                 "%s: mlp_only_layers entries must be layer "
                                 "indices in [0, %d)",
                                 c->origin, L);
            mlp_only[(int)d] = 1;
        }
    }
    for (int i = 0; i < L; i++)
        cfg->layer_is_moe[i] =
            !mlp_only[i] && cfg->num_experts > 0 && (i + 1) % cfg->decoder_sparse_step == 0;
    return HMOE_OK;
}

static enum hmoe_status parse_tokens(const struct cfg_ctx *c, struct hmoe_config *cfg)
{
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(c->root, "bos_token_id");
    cfg->bos_token_id = -1;
    if (b && !cJSON_IsNull(b)) TRY(token_id(c, "bos_token_id", b, &cfg->bos_token_id));
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(c->root, "eos_token_id");
    cfg->n_eos = 0;
    if (!e || cJSON_IsNull(e)) return HMOE_OK;
    if (cJSON_IsArray(e)) {
        if (cJSON_GetArraySize(e) > HMOE_MAX_EOS)
            return hmoe_fail(HMOE_E_FORMAT, "%s: more than %d eos_token_id entries", c->origin,
                             HMOE_MAX_EOS);
        const cJSON *x;
        cJSON_ArrayForEach (x, e)
            TRY(token_id(c, "eos_token_id", x, &cfg->eos_token_ids[cfg->n_eos++]));
    } else {
        TRY(token_id(c, "eos_token_id", e, &cfg->eos_token_ids[0]));
        cfg->n_eos = 1;
    }
    return HMOE_OK;
}

static enum hmoe_status parse_quant(const struct cfg_ctx *c, struct hmoe_config *cfg)
{
    char pb[40];
    cfg->quantized = 0;
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(c->root, "quantization_config");
    if (!q || cJSON_IsNull(q)) return HMOE_OK;
    if (!cJSON_IsObject(q))
        return hmoe_fail(HMOE_E_FORMAT, "%s: 'quantization_config' must be an object", c->origin);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(q, "quant_method");
    if (!cJSON_IsString(m) || strcmp(m->valuestring, "bitsandbytes") != 0)
        return hmoe_fail(
            HMOE_E_UNSUPPORTED,
            "%s: quantization_config.quant_method '%.32s' is not "
            "supported (only bitsandbytes 4-bit NF4)",
            c->origin, cJSON_IsString(m) ? hmoe_st_printable(m->valuestring, pb, sizeof pb) : "?");
    const cJSON *l8 = cJSON_GetObjectItemCaseSensitive(q, "load_in_8bit");
    const cJSON *l4 = cJSON_GetObjectItemCaseSensitive(q, "load_in_4bit");
    if (!l4) l4 = cJSON_GetObjectItemCaseSensitive(q, "_load_in_4bit");
    if (cJSON_IsTrue(l8) || !cJSON_IsTrue(l4))
        return hmoe_fail(HMOE_E_UNSUPPORTED,
                         "%s: only bitsandbytes load_in_4bit checkpoints are "
                         "supported",
                         c->origin);
    const cJSON *qt = cJSON_GetObjectItemCaseSensitive(q, "bnb_4bit_quant_type");
    if (qt && !cJSON_IsNull(qt) && (!cJSON_IsString(qt) || strcmp(qt->valuestring, "nf4") != 0))
        return hmoe_fail(HMOE_E_UNSUPPORTED,
                         "%s: bnb_4bit_quant_type '%.16s' is not supported "
                         "(only nf4)",
                         c->origin,
                         cJSON_IsString(qt) ? hmoe_st_printable(qt->valuestring, pb, sizeof pb)
                                            : "?");
    cfg->quantized = 1;
    return HMOE_OK;
}

static enum hmoe_status parse_root(const struct cfg_ctx *c, struct hmoe_config *cfg)
{
    char pb[40];
    const int BIG = 1 << 24; /* generous sanity cap on every dimension */
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(c->root, "model_type");
    if (mt && (!cJSON_IsString(mt) || strcmp(mt->valuestring, "qwen3_next") != 0))
        return hmoe_fail(HMOE_E_UNSUPPORTED, "%s: model_type '%.32s' is not qwen3_next", c->origin,
                         cJSON_IsString(mt) ? hmoe_st_printable(mt->valuestring, pb, sizeof pb)
                                            : "?");
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(c->root, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu") != 0))
        return hmoe_fail(HMOE_E_UNSUPPORTED, "%s: hidden_act must be \"silu\"", c->origin);

    TRY(get_int(c, "hidden_size", 2048, 1, BIG, &cfg->hidden_size));
    TRY(get_int(c, "num_hidden_layers", 48, 1, HMOE_MAX_LAYERS, &cfg->num_layers));
    TRY(get_int(c, "vocab_size", 151936, 1, 1 << 28, &cfg->vocab_size));
    TRY(get_int(c, "num_attention_heads", 16, 1, 65536, &cfg->num_heads));
    TRY(get_int(c, "num_key_value_heads", 2, 1, 65536, &cfg->num_kv_heads));
    /* transformers' Qwen3NextConfig defaults head_dim to 256 (not hidden/heads) when absent */
    TRY(get_int(c, "head_dim", 256, 1, 65536, &cfg->head_dim));
    double eps = 1e-6;
    TRY(get_num(c, c->root, "rms_norm_eps", 1e-6, 0, &eps));
    cfg->rms_norm_eps = (float)eps;
    TRY(get_int(c, "linear_num_key_heads", 16, 1, 65536, &cfg->linear_num_key_heads));
    TRY(get_int(c, "linear_num_value_heads", 32, 1, 65536, &cfg->linear_num_value_heads));
    TRY(get_int(c, "linear_key_head_dim", 128, 1, 65536, &cfg->linear_key_head_dim));
    TRY(get_int(c, "linear_value_head_dim", 128, 1, 65536, &cfg->linear_value_head_dim));
    TRY(get_int(c, "linear_conv_kernel_dim", 4, 1, 1024, &cfg->linear_conv_kernel_dim));
    TRY(get_int(c, "num_experts", 512, 0, 1 << 20, &cfg->num_experts));
    TRY(get_int(c, "num_experts_per_tok", 10, 0, 1 << 20, &cfg->num_experts_per_tok));
    TRY(get_int(c, "moe_intermediate_size", 512, 1, BIG, &cfg->moe_intermediate_size));
    TRY(get_int(c, "shared_expert_intermediate_size", 512, 1, BIG,
                &cfg->shared_expert_intermediate_size));
    TRY(get_int(c, "intermediate_size", 5632, 1, BIG, &cfg->intermediate_size));
    TRY(get_bool(c, "norm_topk_prob", 1, &cfg->norm_topk_prob));
    TRY(get_int(c, "decoder_sparse_step", 1, 1, 1 << 20, &cfg->decoder_sparse_step));
    TRY(get_bool(c, "tie_word_embeddings", 0, &cfg->tie_word_embeddings));
    TRY(get_int(c, "max_position_embeddings", 32768, 1, 1 << 30, &cfg->max_position_embeddings));
    TRY(get_bool(c, "attention_bias", 0, &cfg->attention_bias));
    if (cfg->attention_bias)
        return hmoe_fail(HMOE_E_UNSUPPORTED, "%s: attention_bias=true is not supported", c->origin);
    if (cfg->num_heads % cfg->num_kv_heads)
        return hmoe_fail(HMOE_E_FORMAT,
                         "%s: num_attention_heads %d is not a multiple of "
                         "num_key_value_heads %d",
                         c->origin, cfg->num_heads, cfg->num_kv_heads);
    if (cfg->linear_num_value_heads % cfg->linear_num_key_heads)
        return hmoe_fail(HMOE_E_FORMAT,
                         "%s: linear_num_value_heads %d is not a multiple of "
                         "linear_num_key_heads %d",
                         c->origin, cfg->linear_num_value_heads, cfg->linear_num_key_heads);
    if (cfg->num_experts > 0 &&
        (cfg->num_experts_per_tok < 1 || cfg->num_experts_per_tok > cfg->num_experts))
        return hmoe_fail(HMOE_E_FORMAT,
                         "%s: num_experts_per_tok %d must be in [1, num_experts "
                         "%d]",
                         c->origin, cfg->num_experts_per_tok, cfg->num_experts);
    /* projection sizes must stay far from int overflow */
    if ((int64_t)cfg->num_heads * cfg->head_dim * 2 > BIG ||
        (int64_t)cfg->linear_num_key_heads * cfg->linear_key_head_dim * 2 +
                (int64_t)cfg->linear_num_value_heads * cfg->linear_value_head_dim * 2 >
            BIG)
        return hmoe_fail(HMOE_E_FORMAT, "%s: attention projection sizes are implausibly large",
                         c->origin);
    TRY(parse_rope(c, cfg));
    TRY(parse_layers(c, cfg));
    TRY(parse_tokens(c, cfg));
    TRY(parse_quant(c, cfg));
    return HMOE_OK;
}

enum hmoe_status hmoe_config_parse(const char *json, size_t len, const char *origin,
                                   struct hmoe_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    if (!origin) origin = "config.json";
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return hmoe_fail(HMOE_E_FORMAT, "%s: not valid JSON", origin);
    enum hmoe_status st;
    if (!cJSON_IsObject(root)) {
        st = hmoe_fail(HMOE_E_FORMAT, "%s: not a JSON object", origin);
    } else {
        struct cfg_ctx c = {root, origin};
        st = parse_root(&c, cfg);
    }
    cJSON_Delete(root);
    return st;
}
