/* Writes an in-memory model (synth: or loaded, BF16/F16/F32 and bnb NF4 tensors) as a Hugging
 * Face + bitsandbytes checkpoint: config.json (hub spelling + quantization_config), safetensors
 * shards with per-expert names and every bnb aux tensor (MODEL.md §6.4), and
 * model.safetensors.index.json when there is more than one shard. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hmoe/log.h"
#include "hmoe/synth.h"

/* One safetensors entry: a name and a byte range of host memory. */
struct st_entry {
    char name[192];
    const char *dtype; /* "BF16", "F32", "U8", ... */
    int ndim;
    int64_t shape[4];
    const void *data;
    uint64_t nbytes;
    char *owned; /* quant_state JSON (freed by the writer) */
    int shard;
};

struct entries {
    struct st_entry *e;
    size_t n, cap;
};

struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + (size_t)n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* The shortest %g spelling of f (as a double) that reads back to the same float. */
static void fmt_float(char *buf, size_t cap, float f)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
    if (!strpbrk(buf, ".eEn")) strncat(buf, ".0", cap - strlen(buf) - 1);
}

static struct st_entry *add_entry(struct entries *es, const char *name, const char *sfx,
                                  const char *dtype, int ndim, int64_t s0, int64_t s1,
                                  const void *data, uint64_t nbytes)
{
    if (es->n == es->cap) {
        size_t cap = es->cap ? es->cap * 2 : 1024;
        struct st_entry *e = realloc(es->e, cap * sizeof *e);
        if (!e) return NULL;
        es->e = e;
        es->cap = cap;
    }
    struct st_entry *e = &es->e[es->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s%s", name, sfx);
    e->dtype = dtype;
    e->ndim = ndim;
    e->shape[0] = s0;
    e->shape[1] = s1;
    e->data = data;
    e->nbytes = nbytes;
    return e;
}

static const char *st_dtype(enum hmoe_dtype dt)
{
    switch (dt) {
    case HMOE_DT_F32: return "F32";
    case HMOE_DT_F16: return "F16";
    case HMOE_DT_BF16: return "BF16";
    case HMOE_DT_U8: return "U8";
    default: return NULL;
    }
}

static enum hmoe_status add_tensor(struct entries *es, const struct hmoe_tensor *t)
{
    if (t->dtype == HMOE_DT_NONE) return HMOE_OK;
    if (t->elem0 != 0)
        return hmoe_fail(HMOE_E_UNSUPPORTED, "%s: views (elem0 != 0) cannot be written", t->name);
    int64_t n = hmoe_tensor_numel(t);
    if (t->dtype != HMOE_DT_NF4) {
        const char *dt = st_dtype(t->dtype);
        size_t esz = t->dtype == HMOE_DT_F32 ? 4 : t->dtype == HMOE_DT_U8 ? 1 : 2;
        struct st_entry *e = add_entry(es, t->name, "", dt, t->ndim, 0, 0, t->data, (uint64_t)n * esz);
        if (!e) return hmoe_fail(HMOE_E_NOMEM, "out of memory");
        for (int d = 0; d < t->ndim; d++) e->shape[d] = t->shape[d];
        return HMOE_OK;
    }
    const struct hmoe_nf4 *q = t->nf4;
    if (t->ndim != 2 || q->blocksize <= 0)
        return hmoe_fail(HMOE_E_UNSUPPORTED, "%s: NF4 tensors must be 2-D", t->name);
    int dq = q->absmax_q != NULL;
    int64_t ng = dq ? (q->n_blocks + q->nested_blocksize - 1) / q->nested_blocksize : 0;
    struct sbuf js = {0};
    char off[48];
    sb_printf(&js, "{\"quant_type\": \"nf4\", \"blocksize\": %d, \"dtype\": \"%s\", \"shape\": [%lld, %lld]",
              q->blocksize, q->out_dtype == HMOE_DT_F32 ? "float32"
                            : q->out_dtype == HMOE_DT_F16 ? "float16" : "bfloat16",
              (long long)t->shape[0], (long long)t->shape[1]);
    if (dq) {
        fmt_float(off, sizeof off, q->nested_offset);
        sb_printf(&js, ", \"nested_blocksize\": %d, \"nested_dtype\": \"float32\", \"nested_offset\": %s",
                  q->nested_blocksize, off);
    }
    sb_printf(&js, "}");
    if (js.oom) {
        free(js.p);
        return hmoe_fail(HMOE_E_NOMEM, "out of memory");
    }
    int ok = add_entry(es, t->name, "", "U8", 2, (n + 1) / 2, 1, t->data, (uint64_t)(n + 1) / 2) &&
             (dq ? add_entry(es, t->name, ".absmax", "U8", 1, q->n_blocks, 0, q->absmax_q,
                             (uint64_t)q->n_blocks)
                 : add_entry(es, t->name, ".absmax", "F32", 1, q->n_blocks, 0, q->absmax_f32,
                             (uint64_t)q->n_blocks * 4)) &&
             add_entry(es, t->name, ".quant_map", "F32", 1, 16, 0, q->code, 64) &&
             (!dq || (add_entry(es, t->name, ".nested_absmax", "F32", 1, ng, 0, q->nested_absmax,
                                (uint64_t)ng * 4) &&
                      add_entry(es, t->name, ".nested_quant_map", "F32", 1, 256, 0,
                                q->nested_code, 1024)));
    struct st_entry *e = ok ? add_entry(es, t->name, ".quant_state.bitsandbytes__nf4", "U8", 1,
                                        (int64_t)js.len, 0, js.p, js.len)
                            : NULL;
    if (!e) {
        free(js.p);
        return hmoe_fail(HMOE_E_NOMEM, "out of memory");
    }
    e->owned = js.p;
    return HMOE_OK;
}

static enum hmoe_status add_mlp(struct entries *es, const struct hmoe_mlp_w *w)
{
    enum hmoe_status st = add_tensor(es, &w->gate);
    if (!st) st = add_tensor(es, &w->up);
    if (!st) st = add_tensor(es, &w->down);
    return st;
}

static enum hmoe_status collect(struct entries *es, const struct hmoe_model *m)
{
    enum hmoe_status st = add_tensor(es, &m->embed);
    for (int l = 0; !st && l < m->cfg.num_layers; l++) {
        const struct hmoe_layer_w *w = &m->layers[l];
        const struct hmoe_tensor *ts[] = {&w->input_norm, &w->post_norm, &w->q_proj, &w->k_proj,
                                          &w->v_proj, &w->o_proj, &w->q_norm, &w->k_norm,
                                          &w->in_proj_qkvz, &w->in_proj_ba, &w->conv1d,
                                          &w->dt_bias, &w->A_log, &w->lin_norm, &w->out_proj,
                                          &w->router};
        for (size_t i = 0; !st && i < sizeof ts / sizeof ts[0]; i++) st = add_tensor(es, ts[i]);
        for (int e = 0; !st && w->experts && e < m->cfg.num_experts; e++)
            st = add_mlp(es, &w->experts[e]);
        if (!st) st = add_mlp(es, &w->shared);
        if (!st) st = add_tensor(es, &w->shared_gate);
        if (!st) st = add_mlp(es, &w->mlp);
    }
    if (!st) st = add_tensor(es, &m->final_norm);
    if (!st && !m->cfg.tie_word_embeddings) st = add_tensor(es, &m->lm_head);
    return st;
}

static enum hmoe_status write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return hmoe_fail(HMOE_E_IO, "%s: %s", path, strerror(errno));
    size_t w = fwrite(p, 1, n, f);
    if (fclose(f) != 0 || w != n) return hmoe_fail(HMOE_E_IO, "%s: write failed", path);
    return HMOE_OK;
}

static enum hmoe_status write_config(const struct hmoe_model *m, const char *dir)
{
    const struct hmoe_config *c = &m->cfg;
    struct sbuf b = {0};
    char th[48];
    fmt_float(th, sizeof th, c->rope_theta);
    sb_printf(&b, "{\n  \"architectures\": [\"Qwen3NextForCausalLM\"],\n");
    sb_printf(&b, "  \"attention_bias\": false,\n  \"attention_dropout\": 0.0,\n");
    if (c->bos_token_id >= 0) sb_printf(&b, "  \"bos_token_id\": %d,\n", c->bos_token_id);
    sb_printf(&b, "  \"decoder_sparse_step\": %d,\n", c->decoder_sparse_step);
    if (c->n_eos == 1) {
        sb_printf(&b, "  \"eos_token_id\": %d,\n", c->eos_token_ids[0]);
    } else if (c->n_eos > 1) {
        sb_printf(&b, "  \"eos_token_id\": [");
        for (int i = 0; i < c->n_eos; i++) sb_printf(&b, "%s%d", i ? ", " : "", c->eos_token_ids[i]);
        sb_printf(&b, "],\n");
    }
    sb_printf(&b, "  \"head_dim\": %d,\n  \"hidden_act\": \"silu\",\n  \"hidden_size\": %d,\n",
              c->head_dim, c->hidden_size);
    sb_printf(&b, "  \"initializer_range\": 0.02,\n  \"intermediate_size\": %d,\n",
              c->intermediate_size);
    sb_printf(&b, "  \"layer_types\": [");
    for (int i = 0; i < c->num_layers; i++)
        sb_printf(&b, "%s\"%s\"", i ? ", " : "",
                  c->layer_types[i] == HMOE_LAYER_FULL ? "full_attention" : "linear_attention");
    sb_printf(&b, "],\n");
    sb_printf(&b, "  \"linear_conv_kernel_dim\": %d,\n  \"linear_key_head_dim\": %d,\n",
              c->linear_conv_kernel_dim, c->linear_key_head_dim);
    sb_printf(&b, "  \"linear_num_key_heads\": %d,\n  \"linear_num_value_heads\": %d,\n",
              c->linear_num_key_heads, c->linear_num_value_heads);
    sb_printf(&b, "  \"linear_value_head_dim\": %d,\n  \"max_position_embeddings\": %d,\n",
              c->linear_value_head_dim, c->max_position_embeddings);
    sb_printf(&b, "  \"mlp_only_layers\": [");
    int first = 1;
    for (int i = 0; i < c->num_layers; i++)
        if (!c->layer_is_moe[i] && c->num_experts > 0 && (i + 1) % c->decoder_sparse_step == 0) {
            sb_printf(&b, "%s%d", first ? "" : ", ", i);
            first = 0;
        }
    sb_printf(&b, "],\n  \"model_type\": \"qwen3_next\",\n");
    sb_printf(&b, "  \"moe_intermediate_size\": %d,\n  \"norm_topk_prob\": %s,\n",
              c->moe_intermediate_size, c->norm_topk_prob ? "true" : "false");
    sb_printf(&b, "  \"num_attention_heads\": %d,\n  \"num_experts\": %d,\n", c->num_heads,
              c->num_experts);
    sb_printf(&b, "  \"num_experts_per_tok\": %d,\n  \"num_hidden_layers\": %d,\n",
              c->num_experts_per_tok, c->num_layers);
    sb_printf(&b, "  \"num_key_value_heads\": %d,\n  \"output_router_logits\": false,\n",
              c->num_kv_heads);
    char prf[48], eps[48];
    fmt_float(prf, sizeof prf, c->partial_rotary_factor);
    fmt_float(eps, sizeof eps, c->rms_norm_eps);
    sb_printf(&b, "  \"partial_rotary_factor\": %s,\n", prf);
    if (c->quantized)
        sb_printf(&b,
                  "  \"quantization_config\": {\n    \"_load_in_4bit\": true,\n"
                  "    \"_load_in_8bit\": false,\n    \"bnb_4bit_compute_dtype\": \"bfloat16\",\n"
                  "    \"bnb_4bit_quant_storage\": \"uint8\",\n    \"bnb_4bit_quant_type\": \"nf4\",\n"
                  "    \"bnb_4bit_use_double_quant\": true,\n"
                  "    \"llm_int8_enable_fp32_cpu_offload\": false,\n"
                  "    \"llm_int8_has_fp16_weight\": false,\n    \"llm_int8_skip_modules\": null,\n"
                  "    \"llm_int8_threshold\": 6.0,\n    \"load_in_4bit\": true,\n"
                  "    \"load_in_8bit\": false,\n    \"quant_method\": \"bitsandbytes\"\n  },\n");
    sb_printf(&b, "  \"rms_norm_eps\": %s,\n  \"rope_scaling\": null,\n  \"rope_theta\": %s,\n",
              eps, th);
    sb_printf(&b, "  \"router_aux_loss_coef\": 0.001,\n  \"shared_expert_intermediate_size\": %d,\n",
              c->shared_expert_intermediate_size);
    sb_printf(&b, "  \"tie_word_embeddings\": %s,\n  \"torch_dtype\": \"bfloat16\",\n",
              c->tie_word_embeddings ? "true" : "false");
    sb_printf(&b, "  \"transformers_version\": \"4.57.0.dev0\",\n  \"use_cache\": true,\n");
    sb_printf(&b, "  \"use_sliding_window\": false,\n  \"vocab_size\": %d\n}\n", c->vocab_size);
    if (b.oom) {
        free(b.p);
        return hmoe_fail(HMOE_E_NOMEM, "out of memory");
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    enum hmoe_status st = write_file(path, b.p, b.len);
    free(b.p);
    return st;
}

static void shard_name(char *buf, size_t cap, int i, int n)
{
    if (n == 1)
        snprintf(buf, cap, "model.safetensors");
    else
        snprintf(buf, cap, "model-%05d-of-%05d.safetensors", i + 1, n);
}

static size_t dtype_size(const char *dt)
{
    return !strcmp(dt, "F32") ? 4 : !strcmp(dt, "U8") ? 1 : 2;
}

/* safetensors order: larger element size first, then by name; keeps every tensor aligned. */
static int entry_cmp(const void *x, const void *y)
{
    const struct st_entry *a = *(const struct st_entry *const *)x;
    const struct st_entry *b = *(const struct st_entry *const *)y;
    size_t sa = dtype_size(a->dtype), sb = dtype_size(b->dtype);
    if (sa != sb) return sa > sb ? -1 : 1;
    return strcmp(a->name, b->name);
}

static enum hmoe_status write_shard(const struct entries *es, int shard, int nshards,
                                    const char *dir)
{
    struct sbuf h = {0};
    uint64_t off = 0;
    size_t n = 0;
    const struct st_entry **ord = malloc((es->n ? es->n : 1) * sizeof *ord);
    if (!ord) return hmoe_fail(HMOE_E_NOMEM, "out of memory");
    for (size_t i = 0; i < es->n; i++)
        if (es->e[i].shard == shard) ord[n++] = &es->e[i];
    qsort(ord, n, sizeof *ord, entry_cmp);
    sb_printf(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t i = 0; i < n; i++) {
        const struct st_entry *e = ord[i];
        sb_printf(&h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", e->name, e->dtype);
        for (int d = 0; d < e->ndim; d++) sb_printf(&h, "%s%lld", d ? "," : "", (long long)e->shape[d]);
        sb_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                  (unsigned long long)(off + e->nbytes));
        off += e->nbytes;
    }
    sb_printf(&h, "}");
    while (!h.oom && h.len % 8) sb_printf(&h, " ");
    if (h.oom) {
        free(h.p);
        free(ord);
        return hmoe_fail(HMOE_E_NOMEM, "out of memory");
    }
    char name[64], path[4096];
    shard_name(name, sizeof name, shard, nshards);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(h.p);
        free(ord);
        return hmoe_fail(HMOE_E_IO, "%s: %s", path, strerror(errno));
    }
    uint64_t hl = h.len;
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)(hl >> (8 * i));
    int ok = fwrite(le, 1, 8, f) == 8 && fwrite(h.p, 1, h.len, f) == h.len;
    free(h.p);
    for (size_t i = 0; ok && i < n; i++)
        if (ord[i]->nbytes) ok = fwrite(ord[i]->data, 1, ord[i]->nbytes, f) == ord[i]->nbytes;
    free(ord);
    if (fclose(f) != 0) ok = 0;
    if (!ok) return hmoe_fail(HMOE_E_IO, "%s: write failed (%s)", path, strerror(errno));
    return HMOE_OK;
}

enum hmoe_status hmoe_synth_write(const struct hmoe_model *m, const char *dir,
                                  uint64_t shard_bytes)
{
    if (!m || !dir || !*dir) return hmoe_fail(HMOE_E_INVAL, "synth write: no model or directory");
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return hmoe_fail(HMOE_E_IO, "%s: cannot create directory: %s", dir, strerror(errno));
    struct entries es = {0};
    enum hmoe_status st = collect(&es, m);
    /* Shards: consecutive groups of tensors (a Linear's aux entries follow its weight). */
    int nshards = 0;
    uint64_t cur = 0, total = 0;
    for (size_t i = 0; !st && i < es.n; i++) {
        if (nshards == 0 || (cur > 0 && cur + es.e[i].nbytes > shard_bytes)) {
            nshards++;
            cur = 0;
        }
        es.e[i].shard = nshards - 1;
        cur += es.e[i].nbytes;
        total += es.e[i].nbytes;
    }
    if (!st) st = write_config(m, dir);
    for (int s = 0; !st && s < nshards; s++) st = write_shard(&es, s, nshards, dir);
    if (!st && nshards > 1) {
        struct sbuf b = {0};
        char name[64], path[4096];
        sb_printf(&b, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n  \"weight_map\": {",
                  (unsigned long long)total);
        for (size_t i = 0; i < es.n; i++) {
            shard_name(name, sizeof name, es.e[i].shard, nshards);
            sb_printf(&b, "%s\n    \"%s\": \"%s\"", i ? "," : "", es.e[i].name, name);
        }
        sb_printf(&b, "\n  }\n}\n");
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        st = b.oom ? hmoe_fail(HMOE_E_NOMEM, "out of memory") : write_file(path, b.p, b.len);
        free(b.p);
    }
    if (!st)
        HMOE_LOG_INFO("%s: wrote %zu tensors, %.2f GiB in %d shard(s)", dir, es.n,
                      (double)total / 1073741824.0, nshards);
    for (size_t i = 0; i < es.n; i++) free(es.e[i].owned);
    free(es.e);
    return st;
}
