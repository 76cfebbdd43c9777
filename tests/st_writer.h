/* tests/st_writer.h: a small safetensors / model-directory writer for tests (header-only).
 * stw_add*() collect tensors (data copied), stw_write() writes one .safetensors file (tensors
 * ordered by element size so every tensor is aligned and the data has no holes, header padded
 * to 8 bytes), stw_write_sharded() writes shards + model.safetensors.index.json.
 * stw_tiny_*() add every tensor of a tiny Qwen3-Next (MODEL.md §4/§5 names) with values that
 * are exact in bf16, optionally as bnb NF4 (§6) or with the fused 5.x expert layout. */
#ifndef HMOE_ST_WRITER_H
#define HMOE_ST_WRITER_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct stw_tensor {
    char name[512];
    char dtype[8]; /* "F32", "BF16", "F16", "U8", ... */
    int elem_size;
    int ndim;
    int64_t shape[4];
    uint8_t *data; /* owned copy */
    size_t nbytes;
    float *src; /* float tensors: the values written (exact), else NULL */
    int64_t numel;
};

struct stw {
    struct stw_tensor *t;
    int n, cap;
};

static inline void stw_free(struct stw *w)
{
    for (int i = 0; i < w->n; i++) {
        free(w->t[i].data);
        free(w->t[i].src);
    }
    free(w->t);
    memset(w, 0, sizeof *w);
}

static inline struct stw_tensor *stw_add(struct stw *w, const char *name, const char *dtype,
                                         int ndim, const int64_t *shape, const void *data,
                                         size_t nbytes)
{
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 64;
        w->t = realloc(w->t, sizeof *w->t * (size_t)w->cap);
        if (!w->t) abort();
    }
    struct stw_tensor *t = &w->t[w->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    t->elem_size = !strcmp(dtype, "F32")                               ? 4
                   : (!strcmp(dtype, "BF16") || !strcmp(dtype, "F16")) ? 2
                                                                       : 1;
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= shape[i];
    }
    t->nbytes = nbytes;
    t->data = malloc(nbytes ? nbytes : 1);
    if (!t->data) abort();
    if (nbytes) memcpy(t->data, data, nbytes);
    return t;
}

/* bf16 of a float whose value is exact in bf16 (the tiny models only use such values). */
static inline uint16_t stw_bf16_exact(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}

/* f16 of a float exact in f16 (normal range only; the tests use small multiples of 2^-6). */
static inline uint16_t stw_f16_exact(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    if ((u & 0x7fffffffu) == 0) return sign;
    int e = (int)((u >> 23) & 0xff) - 127 + 15;
    return (uint16_t)(sign | (uint16_t)(e << 10) | (uint16_t)((u >> 13) & 0x3ffu));
}

/* Adds a float tensor stored as dtype ("F32", "BF16", "F16"); the values must be exact there. */
static inline struct stw_tensor *stw_add_float(struct stw *w, const char *name, const char *dtype,
                                               int ndim, const int64_t *shape, const float *v)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    int es = !strcmp(dtype, "F32") ? 4 : 2;
    uint8_t *buf = calloc((size_t)(n * es) + 1, 1);
    if (!buf) abort();
    for (int64_t i = 0; i < n; i++) {
        if (es == 4) {
            memcpy(buf + 4 * i, &v[i], 4);
        } else {
            uint16_t h = !strcmp(dtype, "BF16") ? stw_bf16_exact(v[i]) : stw_f16_exact(v[i]);
            memcpy(buf + 2 * i, &h, 2);
        }
    }
    struct stw_tensor *t = stw_add(w, name, dtype, ndim, shape, buf, (size_t)(n * es));
    free(buf);
    t->src = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!t->src) abort();
    memcpy(t->src, v, sizeof(float) * (size_t)n);
    return t;
}

static inline struct stw_tensor *stw_find(const struct stw *w, const char *name)
{
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->t[i].name, name)) return &w->t[i];
    return NULL;
}

/* Deterministic values k/64, k in [-96, 96]: exact in bf16, f16 and f32. */
static inline float stw_val(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    int k = (int)((*s >> 33) % 193) - 96;
    return (float)k / 64.0f;
}

/* ---- bnb NF4 (MODEL.md §6) ----------------------------------------------------------------- */

static inline const float *stw_nf4_table(void)
{
    static const float code[16] = {-1.0f,
                                   -0.6961928009986877f,
                                   -0.5250730514526367f,
                                   -0.39491748809814453f,
                                   -0.28444138169288635f,
                                   -0.18477343022823334f,
                                   -0.09105003625154495f,
                                   0.0f,
                                   0.07958029955625534f,
                                   0.16093020141124725f,
                                   0.24611230194568634f,
                                   0.33791524171829224f,
                                   0.44070982933044434f,
                                   0.5626170039176941f,
                                   0.7229568362236023f,
                                   1.0f};
    return code;
}

/* A simple signed 256-entry code for the nested absmax (the loader reads it from the file, so
 * the exact bnb dynamic map is not needed): ascending, -1..1. */
static inline void stw_nested_code(float c[256])
{
    for (int i = 0; i < 256; i++)
        c[i] = ((float)i - 127.5f) / 127.5f;
}

static inline int stw_nearest(const float *code, int n, float x)
{
    int best = 0;
    float bd = 1e30f;
    for (int i = 0; i < n; i++) {
        float d = code[i] - x;
        if (d < 0) d = -d;
        if (d < bd) {
            bd = d;
            best = i;
        }
    }
    return best;
}

/* Quantizes v (numel values, logical shape `shape`) as bnb NF4 under `name` ("...weight"):
 * writes name (U8 [(n+1)/2, 1]), .absmax, .quant_map, [.nested_absmax, .nested_quant_map],
 * .quant_state.bitsandbytes__nf4. dq: double quant. dtype: "bfloat16"/"float16"/"float32". */
static inline void stw_add_nf4(struct stw *w, const char *name, int ndim, const int64_t *shape,
                               const float *v, int blocksize, int dq, const char *dtype)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    int64_t nb = (n + blocksize - 1) / blocksize;
    float *absmax = calloc((size_t)nb, sizeof(float));
    uint8_t *packed = calloc((size_t)((n + 1) / 2) + 1, 1);
    if (!absmax || !packed) abort();
    for (int64_t b = 0; b < nb; b++) {
        float m = 0.0f;
        for (int64_t i = b * blocksize; i < n && i < (b + 1) * blocksize; i++) {
            float a = v[i] < 0 ? -v[i] : v[i];
            if (a > m) m = a;
        }
        absmax[b] = m;
        for (int64_t i = b * blocksize; i < n && i < (b + 1) * blocksize; i++) {
            int q = stw_nearest(stw_nf4_table(), 16, m > 0 ? v[i] / m : 0.0f);
            packed[i / 2] |= (uint8_t)(i % 2 == 0 ? q << 4 : q);
        }
    }
    char key[320];
    int64_t sh[2] = {(n + 1) / 2, 1};
    stw_add(w, name, "U8", 2, sh, packed, (size_t)sh[0]);
    snprintf(key, sizeof key, "%s.quant_map", name);
    int64_t s16 = 16;
    stw_add(w, key, "F32", 1, &s16, stw_nf4_table(), 16 * sizeof(float));
    char json[512];
    int o = snprintf(json, sizeof json,
                     "{\"quant_type\": \"nf4\", \"blocksize\": %d, \"dtype\": "
                     "\"%s\", \"shape\": [",
                     blocksize, dtype);
    for (int i = 0; i < ndim; i++)
        o += snprintf(json + o, sizeof json - (size_t)o, "%s%lld", i ? ", " : "",
                      (long long)shape[i]);
    o += snprintf(json + o, sizeof json - (size_t)o, "]");
    snprintf(key, sizeof key, "%s.absmax", name);
    if (dq) {
        const int nbs = 256;
        int64_t ng = (nb + nbs - 1) / nbs;
        double mean = 0;
        for (int64_t b = 0; b < nb; b++)
            mean += (double)absmax[b];
        float off = (float)(mean / (double)nb);
        float code2[256];
        stw_nested_code(code2);
        float *nabs = calloc((size_t)ng, sizeof(float));
        uint8_t *qa = calloc((size_t)nb, 1);
        if (!nabs || !qa) abort();
        for (int64_t g = 0; g < ng; g++) {
            float m = 0.0f;
            for (int64_t b = g * nbs; b < nb && b < (g + 1) * nbs; b++) {
                float a = absmax[b] - off;
                if (a < 0) a = -a;
                if (a > m) m = a;
            }
            nabs[g] = m;
            for (int64_t b = g * nbs; b < nb && b < (g + 1) * nbs; b++)
                qa[b] = (uint8_t)stw_nearest(code2, 256, m > 0 ? (absmax[b] - off) / m : 0.0f);
        }
        stw_add(w, key, "U8", 1, &nb, qa, (size_t)nb);
        snprintf(key, sizeof key, "%s.nested_absmax", name);
        stw_add(w, key, "F32", 1, &ng, nabs, sizeof(float) * (size_t)ng);
        snprintf(key, sizeof key, "%s.nested_quant_map", name);
        int64_t s256 = 256;
        stw_add(w, key, "F32", 1, &s256, code2, sizeof code2);
        snprintf(json + o, sizeof json - (size_t)o,
                 ", \"nested_blocksize\": %d, \"nested_dtype\": "
                 "\"float32\", \"nested_offset\": %.9g}",
                 nbs, (double)off);
        free(nabs);
        free(qa);
    } else {
        stw_add(w, key, "F32", 1, &nb, absmax, sizeof(float) * (size_t)nb);
        snprintf(json + o, sizeof json - (size_t)o, "}");
    }
    snprintf(key, sizeof key, "%s.quant_state.bitsandbytes__nf4", name);
    int64_t jl = (int64_t)strlen(json);
    stw_add(w, key, "U8", 1, &jl, json, (size_t)jl);
    free(absmax);
    free(packed);
}

/* ---- writing ------------------------------------------------------------------------------- */

static inline int stw_order_cmp(const void *a, const void *b)
{
    const struct stw_tensor *x = *(const struct stw_tensor *const *)a;
    const struct stw_tensor *y = *(const struct stw_tensor *const *)b;
    if (x->elem_size != y->elem_size) return y->elem_size - x->elem_size;
    return strcmp(x->name, y->name);
}

/* Builds the JSON header (padded with spaces to a multiple of 8) for tensors sel[0..n) in
 * that order; returns malloc'd text, *len its length. */
static inline char *stw_header(struct stw_tensor **sel, int n, size_t *len)
{
    size_t cap = 256 + (size_t)n * 400, o = 0;
    char *h = malloc(cap);
    if (!h) abort();
    uint64_t off = 0;
    o += (size_t)snprintf(h + o, cap - o, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        const struct stw_tensor *t = sel[i];
        o += (size_t)snprintf(h + o, cap - o, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name,
                              t->dtype);
        for (int d = 0; d < t->ndim; d++)
            o += (size_t)snprintf(h + o, cap - o, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        o += (size_t)snprintf(h + o, cap - o, "],\"data_offsets\":[%llu,%llu]}",
                              (unsigned long long)off, (unsigned long long)(off + t->nbytes));
        off += t->nbytes;
    }
    o += (size_t)snprintf(h + o, cap - o, "}");
    while (o % 8)
        h[o++] = ' ';
    h[o] = '\0';
    *len = o;
    return h;
}

/* Writes a raw file: u64 header length, header bytes, data. Returns 0 on success. */
static inline int stw_write_raw(const char *path, const char *hdr, uint64_t hlen, const void *data,
                                size_t nbytes)
{
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(hlen >> (8 * i));
    int ok = fwrite(le, 1, 8, fp) == 8 && fwrite(hdr, 1, strlen(hdr), fp) == strlen(hdr) &&
             (nbytes == 0 || fwrite(data, 1, nbytes, fp) == nbytes);
    return (fclose(fp) == 0 && ok) ? 0 : -1;
}

/* Writes tensors sel[0..n) (reordered by element size) to path. */
static inline int stw_write_sel(const char *path, struct stw_tensor **sel, int n)
{
    qsort(sel, (size_t)n, sizeof *sel, stw_order_cmp);
    size_t hlen;
    char *h = stw_header(sel, n, &hlen);
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += sel[i]->nbytes;
    uint8_t *data = malloc(total + 1);
    if (!data) abort();
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        memcpy(data + o, sel[i]->data, sel[i]->nbytes);
        o += sel[i]->nbytes;
    }
    int rc = stw_write_raw(path, h, hlen, data, total);
    free(h);
    free(data);
    return rc;
}

static inline int stw_write(const struct stw *w, const char *path)
{
    struct stw_tensor **sel = malloc(sizeof *sel * (size_t)(w->n + 1));
    if (!sel) abort();
    for (int i = 0; i < w->n; i++)
        sel[i] = &w->t[i];
    int rc = stw_write_sel(path, sel, w->n);
    free(sel);
    return rc;
}

/* Writes dir/model-0000i-of-0000n.safetensors (tensor k goes to shard k % n_shards) and
 * dir/model.safetensors.index.json. */
static inline int stw_write_sharded(const struct stw *w, const char *dir, int n_shards)
{
    struct stw_tensor **sel = malloc(sizeof *sel * (size_t)(w->n + 1));
    if (!sel) abort();
    char path[1024];
    int rc = 0;
    for (int s = 0; s < n_shards && rc == 0; s++) {
        int n = 0;
        for (int i = 0; i < w->n; i++)
            if (i % n_shards == s) sel[n++] = &w->t[i];
        snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", dir, s + 1, n_shards);
        rc = stw_write_sel(path, sel, n);
    }
    free(sel);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    FILE *fp = fopen(path, "w");
    if (!fp) return -1;
    fprintf(fp, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
    for (int i = 0; i < w->n; i++)
        fprintf(fp, "%s\"%s\": \"model-%05d-of-%05d.safetensors\"", i ? ", " : "", w->t[i].name,
                i % n_shards + 1, n_shards);
    fprintf(fp, "}}\n");
    return fclose(fp) == 0 ? rc : -1;
}

static inline int stw_write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    if (!fp) return -1;
    int ok = fputs(text, fp) >= 0;
    return (fclose(fp) == 0 && ok) ? 0 : -1;
}

/* ---- a tiny Qwen3-Next ----------------------------------------------------------------------- */

struct stw_tiny {
    int H, L, V, Hq, Hkv, D, Hk, Hv, dk, dv, K, E, topk, I, Is, Idense;
    int full_interval; /* layer i is full attention iff (i+1) % full_interval == 0 */
    int tie;           /* tie_word_embeddings (no lm_head written) */
    int fused;         /* 5.x fused gate_up_proj / down_proj experts */
    int nf4_mask;      /* STW_NF4_* bits: which matrices are written as NF4 */
    int nf4_dq;        /* double quant */
    const char *dtype; /* float storage dtype: "BF16" (default), "F16", "F32" */
    int mlp_only0;     /* layer 0 is a dense MLP layer (mlp_only_layers [0]) */
};

#define STW_NF4_ATTN 1    /* q/k/v/o, in_proj_qkvz/ba, out_proj */
#define STW_NF4_ROUTER 2  /* mlp.gate and mlp.shared_expert_gate */
#define STW_NF4_SHARED 4  /* shared expert */
#define STW_NF4_EXPERT1 8 /* routed expert 1 only (others stay float) */

static inline struct stw_tiny stw_tiny_default(void)
{
    struct stw_tiny c = {.H = 64,
                         .L = 4,
                         .V = 96,
                         .Hq = 4,
                         .Hkv = 2,
                         .D = 32,
                         .Hk = 2,
                         .Hv = 4,
                         .dk = 16,
                         .dv = 32,
                         .K = 4,
                         .E = 4,
                         .topk = 2,
                         .I = 32,
                         .Is = 64,
                         .Idense = 48,
                         .full_interval = 2,
                         .dtype = "BF16"};
    return c;
}

static inline void stw_tiny_mat(struct stw *w, const struct stw_tiny *c, int nf4, const char *name,
                                int ndim, const int64_t *shape, uint64_t *seed)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    float *v = malloc(sizeof(float) * (size_t)n);
    if (!v) abort();
    for (int64_t i = 0; i < n; i++)
        v[i] = stw_val(seed);
    if (nf4)
        stw_add_nf4(w, name, ndim, shape, v, 64, c->nf4_dq, "bfloat16");
    else
        stw_add_float(w, name, c->dtype ? c->dtype : "BF16", ndim, shape, v);
    free(v);
}

static inline void stw_tiny_mlp(struct stw *w, const struct stw_tiny *c, int nf4,
                                const char *prefix, int64_t I, uint64_t *seed)
{
    char n[300];
    snprintf(n, sizeof n, "%s.gate_proj.weight", prefix);
    stw_tiny_mat(w, c, nf4, n, 2, (int64_t[]){I, c->H}, seed);
    snprintf(n, sizeof n, "%s.up_proj.weight", prefix);
    stw_tiny_mat(w, c, nf4, n, 2, (int64_t[]){I, c->H}, seed);
    snprintf(n, sizeof n, "%s.down_proj.weight", prefix);
    stw_tiny_mat(w, c, nf4, n, 2, (int64_t[]){c->H, I}, seed);
}

/* Adds every tensor of the tiny model (plus one ignored mtp.* tensor). */
static inline void stw_tiny_tensors(struct stw *w, const struct stw_tiny *c, uint64_t seed)
{
    char n[256];
    const int64_t H = c->H;
    const int na = (c->nf4_mask & STW_NF4_ATTN) != 0, nr = (c->nf4_mask & STW_NF4_ROUTER) != 0;
    const int ns = (c->nf4_mask & STW_NF4_SHARED) != 0;
    stw_tiny_mat(w, c, 0, "model.embed_tokens.weight", 2, (int64_t[]){c->V, H}, &seed);
    stw_tiny_mat(w, c, 0, "model.norm.weight", 1, (int64_t[]){H}, &seed);
    if (!c->tie) stw_tiny_mat(w, c, 0, "lm_head.weight", 2, (int64_t[]){c->V, H}, &seed);
    stw_tiny_mat(w, c, 0, "mtp.fc.weight", 2, (int64_t[]){H, 2 * H}, &seed);
    for (int l = 0; l < c->L; l++) {
#define STW_N(fmt) (snprintf(n, sizeof n, "model.layers.%d." fmt, l), n)
        stw_tiny_mat(w, c, 0, STW_N("input_layernorm.weight"), 1, (int64_t[]){H}, &seed);
        stw_tiny_mat(w, c, 0, STW_N("post_attention_layernorm.weight"), 1, (int64_t[]){H}, &seed);
        if ((l + 1) % c->full_interval == 0) {
            stw_tiny_mat(w, c, na, STW_N("self_attn.q_proj.weight"), 2,
                         (int64_t[]){(int64_t)c->Hq * c->D * 2, H}, &seed);
            stw_tiny_mat(w, c, na, STW_N("self_attn.k_proj.weight"), 2,
                         (int64_t[]){(int64_t)c->Hkv * c->D, H}, &seed);
            stw_tiny_mat(w, c, na, STW_N("self_attn.v_proj.weight"), 2,
                         (int64_t[]){(int64_t)c->Hkv * c->D, H}, &seed);
            stw_tiny_mat(w, c, na, STW_N("self_attn.o_proj.weight"), 2,
                         (int64_t[]){H, (int64_t)c->Hq * c->D}, &seed);
            stw_tiny_mat(w, c, 0, STW_N("self_attn.q_norm.weight"), 1, (int64_t[]){c->D}, &seed);
            stw_tiny_mat(w, c, 0, STW_N("self_attn.k_norm.weight"), 1, (int64_t[]){c->D}, &seed);
        } else {
            int64_t kd = (int64_t)c->Hk * c->dk, vd = (int64_t)c->Hv * c->dv;
            stw_tiny_mat(w, c, na, STW_N("linear_attn.in_proj_qkvz.weight"), 2,
                         (int64_t[]){2 * kd + 2 * vd, H}, &seed);
            stw_tiny_mat(w, c, na, STW_N("linear_attn.in_proj_ba.weight"), 2,
                         (int64_t[]){2 * c->Hv, H}, &seed);
            stw_tiny_mat(w, c, 0, STW_N("linear_attn.conv1d.weight"), 3,
                         (int64_t[]){2 * kd + vd, 1, c->K}, &seed);
            stw_tiny_mat(w, c, 0, STW_N("linear_attn.dt_bias"), 1, (int64_t[]){c->Hv}, &seed);
            stw_tiny_mat(w, c, 0, STW_N("linear_attn.A_log"), 1, (int64_t[]){c->Hv}, &seed);
            stw_tiny_mat(w, c, 0, STW_N("linear_attn.norm.weight"), 1, (int64_t[]){c->dv}, &seed);
            stw_tiny_mat(w, c, na, STW_N("linear_attn.out_proj.weight"), 2, (int64_t[]){H, vd},
                         &seed);
        }
        if (l == 0 && c->mlp_only0) {
            snprintf(n, sizeof n, "model.layers.%d.mlp", l);
            stw_tiny_mlp(w, c, 0, n, c->Idense, &seed);
            continue;
        }
        stw_tiny_mat(w, c, nr, STW_N("mlp.gate.weight"), 2, (int64_t[]){c->E, H}, &seed);
        stw_tiny_mat(w, c, nr, STW_N("mlp.shared_expert_gate.weight"), 2, (int64_t[]){1, H}, &seed);
        snprintf(n, sizeof n, "model.layers.%d.mlp.shared_expert", l);
        stw_tiny_mlp(w, c, ns, n, c->Is, &seed);
        if (c->fused) {
            stw_tiny_mat(w, c, 0, STW_N("mlp.experts.gate_up_proj"), 3,
                         (int64_t[]){c->E, 2 * (int64_t)c->I, H}, &seed);
            stw_tiny_mat(w, c, 0, STW_N("mlp.experts.down_proj"), 3, (int64_t[]){c->E, H, c->I},
                         &seed);
        } else {
            for (int e = 0; e < c->E; e++) {
                snprintf(n, sizeof n, "model.layers.%d.mlp.experts.%d", l, e);
                stw_tiny_mlp(w, c, e == 1 && (c->nf4_mask & STW_NF4_EXPERT1), n, c->I, &seed);
            }
        }
#undef STW_N
    }
}

/* config.json text of the tiny model (hub/4.x spelling unless v5: rope_parameters + layer_types).
 */
static inline void stw_tiny_config(const struct stw_tiny *c, int v5, char *buf, size_t cap)
{
    int o = snprintf(
        buf, cap,
        "{\"architectures\": [\"Qwen3NextForCausalLM\"], \"model_type\": \"qwen3_next\", "
        "\"hidden_size\": %d, \"num_hidden_layers\": %d, \"vocab_size\": %d, "
        "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": %d, "
        "\"linear_num_key_heads\": %d, \"linear_num_value_heads\": %d, "
        "\"linear_key_head_dim\": %d, \"linear_value_head_dim\": %d, "
        "\"linear_conv_kernel_dim\": %d, \"num_experts\": %d, \"num_experts_per_tok\": %d, "
        "\"moe_intermediate_size\": %d, \"shared_expert_intermediate_size\": %d, "
        "\"intermediate_size\": %d, \"tie_word_embeddings\": %s, \"rms_norm_eps\": 1e-06, "
        "\"mlp_only_layers\": [%s], \"eos_token_id\": 5, \"bos_token_id\": 4",
        c->H, c->L, c->V, c->Hq, c->Hkv, c->D, c->Hk, c->Hv, c->dk, c->dv, c->K, c->E, c->topk,
        c->I, c->Is, c->Idense, c->tie ? "true" : "false", c->mlp_only0 ? "0" : "");
    if (v5) {
        o += snprintf(buf + o, cap - (size_t)o,
                      ", \"dtype\": \"bfloat16\", \"rope_parameters\": "
                      "{\"rope_type\": \"default\", \"rope_theta\": 10000000, "
                      "\"partial_rotary_factor\": 0.25}, \"layer_types\": [");
        for (int l = 0; l < c->L; l++)
            o += snprintf(buf + o, cap - (size_t)o, "%s\"%s\"", l ? ", " : "",
                          (l + 1) % c->full_interval ? "linear_attention" : "full_attention");
        o += snprintf(buf + o, cap - (size_t)o, "]");
    } else {
        o += snprintf(buf + o, cap - (size_t)o,
                      ", \"torch_dtype\": \"bfloat16\", \"rope_theta\": "
                      "10000000, \"partial_rotary_factor\": 0.25, \"full_attention_interval\": %d",
                      c->full_interval);
    }
    if (c->nf4_mask)
        o += snprintf(buf + o, cap - (size_t)o,
                      ", \"quantization_config\": {\"quant_method\": "
                      "\"bitsandbytes\", \"load_in_4bit\": true, \"bnb_4bit_quant_type\": \"nf4\", "
                      "\"bnb_4bit_use_double_quant\": %s}",
                      c->nf4_dq ? "true" : "false");
    snprintf(buf + o, cap - (size_t)o, "}\n");
}

#endif
