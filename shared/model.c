/* Opens a Hugging Face Qwen3-Next directory: config.json plus model.safetensors or shards listed
 * in model.safetensors.index.json, mapped in place. Builds a name -> tensor hash table over all
 * files, then assembles every layer with the exact names of MODEL.md §4/§5 and checks each shape
 * against the config. bnb NF4 (§6) is decided per tensor by <name>.quant_state.bitsandbytes__nf4.
 * Memory stays proportional to metadata: no weight data is copied. */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hmoe/log.h"
#include "hmoe/model.h"
#include "hmoe/safetensors.h"
#include "hmoe/synth.h"

#define NF4_CHUNK 128
#define MAX_SHARDS 4096
#define MAX_JSON_FILE (512u << 20) /* config.json / index.json size cap (bytes) */

struct nf4_chunk {
    struct nf4_chunk *next;
    int used;
    struct hmoe_nf4 q[NF4_CHUNK];
};

struct model_priv {
    struct hmoe_st_file **files;
    int n_files;
    const struct hmoe_st_tensor **slots; /* open-addressing hash table, cap a power of two */
    size_t cap;
    struct nf4_chunk *nf4;
};

struct loader {
    struct hmoe_model *m;
    struct model_priv *p;
    const char *dir;
};

/* ---- hash table of tensor names ------------------------------------------------------------- */

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static const struct hmoe_st_tensor *find(const struct model_priv *p, const char *name)
{
    if (!p->cap) return NULL;
    size_t i = (size_t)name_hash(name) & (p->cap - 1);
    while (p->slots[i]) {
        if (strcmp(p->slots[i]->name, name) == 0) return p->slots[i];
        i = (i + 1) & (p->cap - 1);
    }
    return NULL;
}

static enum hmoe_status build_table(struct model_priv *p)
{
    size_t total = 0;
    for (int f = 0; f < p->n_files; f++)
        total += (size_t)p->files[f]->n_tensors;
    size_t cap = 16;
    while (cap < 2 * total)
        cap <<= 1;
    p->slots = calloc(cap, sizeof *p->slots);
    if (!p->slots) return hmoe_fail(HMOE_E_NOMEM, "no memory for a %zu-entry tensor table", cap);
    p->cap = cap;
    for (int f = 0; f < p->n_files; f++) {
        const struct hmoe_st_file *file = p->files[f];
        for (int k = 0; k < file->n_tensors; k++) {
            const struct hmoe_st_tensor *t = &file->tensors[k];
            size_t i = (size_t)name_hash(t->name) & (cap - 1);
            while (p->slots[i]) {
                if (strcmp(p->slots[i]->name, t->name) == 0) {
                    char nb[256];
                    return hmoe_fail(HMOE_E_FORMAT, "tensor '%s' is in both %s and %s",
                                     hmoe_st_printable(t->name, nb, sizeof nb),
                                     p->slots[i]->file->path, file->path);
                }
                i = (i + 1) & (cap - 1);
            }
            p->slots[i] = t;
        }
    }
    return HMOE_OK;
}

/* ---- small helpers ------------------------------------------------------------------------ */

/* Reads a whole (small) file into a NUL-terminated buffer. */
static enum hmoe_status read_text(const char *path, char **out, size_t *len)
{
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return hmoe_fail(HMOE_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(fp);
        return hmoe_fail(HMOE_E_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > MAX_JSON_FILE) {
        fclose(fp);
        return hmoe_fail(HMOE_E_FORMAT, "%s: %lld bytes is too large", path, (long long)sb.st_size);
    }
    size_t n = (size_t)sb.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(fp);
        return hmoe_fail(HMOE_E_NOMEM, "%s: no memory", path);
    }
    size_t got = fread(buf, 1, n, fp);
    fclose(fp);
    if (got != n) {
        free(buf);
        return hmoe_fail(HMOE_E_IO, "%s: short read", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return HMOE_OK;
}

static void shape_str(char *buf, size_t cap, int nd, const int64_t *s)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (int i = 0; i < nd && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

static int shape_eq(int nd, const int64_t *a, int nd2, const int64_t *b)
{
    if (nd != nd2) return 0;
    for (int i = 0; i < nd; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

static struct hmoe_nf4 *nf4_alloc(struct model_priv *p)
{
    if (!p->nf4 || p->nf4->used == NF4_CHUNK) {
        struct nf4_chunk *c = calloc(1, sizeof *c);
        if (!c) return NULL;
        c->next = p->nf4;
        p->nf4 = c;
    }
    return &p->nf4->q[p->nf4->used++];
}

static int is_float(enum hmoe_dtype dt)
{
    return dt == HMOE_DT_F32 || dt == HMOE_DT_F16 || dt == HMOE_DT_BF16;
}

/* ---- NF4 ---------------------------------------------------------------------------------- */

/* Looks up the aux tensor <name>.<suffix> and checks dtype and 1-D length. */
static enum hmoe_status nf4_aux(const struct loader *ld, const char *name, const char *suffix,
                                enum hmoe_dtype dt, int64_t len, const struct hmoe_st_tensor **out,
                                const char *qpath)
{
    char key[640];
    snprintf(key, sizeof key, "%s.%s", name, suffix);
    const struct hmoe_st_tensor *t = find(ld->p, key);
    if (!t)
        return hmoe_fail(HMOE_E_FORMAT, "%s: tensor '%s' (NF4 state of '%s') not found", qpath, key,
                         name);
    if (t->dtype != dt || t->numel != len || t->ndim != 1) {
        char s[128];
        shape_str(s, sizeof s, t->ndim, t->shape);
        return hmoe_fail(HMOE_E_FORMAT, "%s: tensor '%s': %s %s, expected %s [%lld]", t->file->path,
                         key, t->dtype_str, s, hmoe_dtype_name(dt), (long long)len);
    }
    if (dt == HMOE_DT_F32 && (uintptr_t)t->data % 4)
        return hmoe_fail(HMOE_E_FORMAT, "%s: tensor '%s': data is not 4-byte aligned",
                         t->file->path, key);
    *out = t;
    return HMOE_OK;
}

static enum hmoe_status load_nf4(const struct loader *ld, const char *name,
                                 const struct hmoe_st_tensor *qs, int nd, const int64_t *shape,
                                 struct hmoe_tensor *out)
{
    const char *qpath = qs->file->path;
    if (qs->dtype != HMOE_DT_U8 || qs->ndim != 1)
        return hmoe_fail(HMOE_E_FORMAT, "%s: tensor '%s' must be a 1-D U8 JSON blob", qpath,
                         qs->name);
    /* parse a NUL-terminated private copy: the blob is hostile and not terminated */
    char *txt = malloc((size_t)qs->nbytes + 1);
    if (!txt) return hmoe_fail(HMOE_E_NOMEM, "no memory");
    memcpy(txt, qs->data, (size_t)qs->nbytes);
    txt[qs->nbytes] = '\0';
    cJSON *j = cJSON_ParseWithLength(txt, (size_t)qs->nbytes);
    free(txt);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return hmoe_fail(HMOE_E_FORMAT, "%s: tensor '%s': quant_state is not a JSON object", qpath,
                         qs->name);
    }
    enum hmoe_status st = HMOE_E_FORMAT;
    const cJSON *qt = cJSON_GetObjectItemCaseSensitive(j, "quant_type");
    const cJSON *bs = cJSON_GetObjectItemCaseSensitive(j, "blocksize");
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shape");
    const cJSON *nbs = cJSON_GetObjectItemCaseSensitive(j, "nested_blocksize");
    const cJSON *noff = cJSON_GetObjectItemCaseSensitive(j, "nested_offset");
    struct hmoe_nf4 q;
    memset(&q, 0, sizeof q);
    int64_t qshape[4];
    int qnd = 0;
    if (!cJSON_IsString(qt) || strcmp(qt->valuestring, "nf4") != 0) {
        hmoe_err_set("%s: '%s': quant_type must be \"nf4\"", qpath, qs->name);
        goto out;
    }
    double b = cJSON_IsNumber(bs) ? bs->valuedouble : (double)NAN;
    if (!(b >= 2.0 && b <= 1048576.0) || b != floor(b) || ((int)b & 1)) {
        hmoe_err_set("%s: '%s': blocksize must be an even integer in [2, 2^20]", qpath, qs->name);
        goto out;
    }
    q.blocksize = (int32_t)b;
    if (cJSON_IsString(dt) && strcmp(dt->valuestring, "bfloat16") == 0)
        q.out_dtype = HMOE_DT_BF16;
    else if (cJSON_IsString(dt) && strcmp(dt->valuestring, "float16") == 0)
        q.out_dtype = HMOE_DT_F16;
    else if (cJSON_IsString(dt) && strcmp(dt->valuestring, "float32") == 0)
        q.out_dtype = HMOE_DT_F32;
    else {
        hmoe_err_set("%s: '%s': dtype must be bfloat16, float16 or float32", qpath, qs->name);
        goto out;
    }
    if (!cJSON_IsArray(sh) || cJSON_GetArraySize(sh) < 1 || cJSON_GetArraySize(sh) > 4) {
        hmoe_err_set("%s: '%s': shape must be a list of 1 to 4 integers", qpath, qs->name);
        goto out;
    }
    const cJSON *e;
    int64_t numel = 1;
    cJSON_ArrayForEach (e, sh) {
        double d = cJSON_IsNumber(e) ? e->valuedouble : (double)NAN;
        if (!(d >= 0.0 && d <= 4e15) || d != floor(d) ||
            __builtin_mul_overflow(numel, (int64_t)d, &numel) || numel > ((int64_t)1 << 52)) {
            hmoe_err_set("%s: '%s': bad shape", qpath, qs->name);
            goto out;
        }
        qshape[qnd++] = (int64_t)d;
    }
    if (!shape_eq(qnd, qshape, nd, shape)) {
        char s1[128], s2[128];
        shape_str(s1, sizeof s1, qnd, qshape);
        shape_str(s2, sizeof s2, nd, shape);
        hmoe_err_set("%s: tensor '%s': NF4 shape %s, expected %s", qpath, name, s1, s2);
        goto out;
    }
    const struct hmoe_st_tensor *w = find(ld->p, name);
    if (!w) {
        hmoe_err_set("%s: tensor '%s' not found (its NF4 quant_state exists)", ld->dir, name);
        goto out;
    }
    /* bnb_4bit_quant_storage may be another dtype: only the byte count matters (MODEL.md §7) */
    if (w->nbytes != (uint64_t)((numel + 1) / 2)) {
        hmoe_err_set("%s: tensor '%s': %s of %llu bytes, expected U8 of %lld bytes (packed NF4)",
                     w->file->path, name, w->dtype_str, (unsigned long long)w->nbytes,
                     (long long)((numel + 1) / 2));
        goto out;
    }
    q.n_blocks = (numel + q.blocksize - 1) / q.blocksize;
    const struct hmoe_st_tensor *am = NULL, *qm = NULL, *nam = NULL, *nqm = NULL;
    char key[640];
    snprintf(key, sizeof key, "%s.absmax", name);
    am = find(ld->p, key);
    if (!am) {
        hmoe_err_set("%s: tensor '%s' (NF4 state of '%s') not found", qpath, key, name);
        goto out;
    }
    int dq = am->dtype == HMOE_DT_U8;
    if (nf4_aux(ld, name, "absmax", dq ? HMOE_DT_U8 : HMOE_DT_F32, q.n_blocks, &am, qpath) !=
        HMOE_OK)
        goto out;
    if (nf4_aux(ld, name, "quant_map", HMOE_DT_F32, 16, &qm, qpath) != HMOE_OK) goto out;
    memcpy(q.code, qm->data, sizeof q.code);
    if (dq) {
        double nb = cJSON_IsNumber(nbs) ? nbs->valuedouble : (double)NAN;
        double of = cJSON_IsNumber(noff) ? noff->valuedouble : (double)NAN;
        if (!(nb >= 1.0 && nb <= 1048576.0) || nb != floor(nb) || !isfinite(of)) {
            hmoe_err_set("%s: '%s': double-quant state needs integer nested_blocksize and finite "
                         "nested_offset",
                         qpath, qs->name);
            goto out;
        }
        q.nested_blocksize = (int32_t)nb;
        q.nested_offset = (float)of;
        int64_t ng = (q.n_blocks + q.nested_blocksize - 1) / q.nested_blocksize;
        if (nf4_aux(ld, name, "nested_absmax", HMOE_DT_F32, ng, &nam, qpath) != HMOE_OK ||
            nf4_aux(ld, name, "nested_quant_map", HMOE_DT_F32, 256, &nqm, qpath) != HMOE_OK)
            goto out;
        memcpy(q.nested_code, nqm->data, sizeof q.nested_code);
        q.absmax_q = am->data;
        q.nested_absmax = nam->data;
    } else {
        q.absmax_f32 = am->data;
    }
    struct hmoe_nf4 *qp = nf4_alloc(ld->p);
    if (!qp) {
        st = hmoe_fail(HMOE_E_NOMEM, "no memory for NF4 state");
        goto out;
    }
    *qp = q;
    memset(out, 0, sizeof *out);
    out->name = w->name;
    out->dtype = HMOE_DT_NF4;
    out->ndim = nd;
    memcpy(out->shape, shape, sizeof(int64_t) * (size_t)nd);
    out->data = w->data;
    out->elem0 = 0;
    out->nf4 = qp;
    st = HMOE_OK;
out:
    cJSON_Delete(j);
    return st;
}

/* ---- tensor lookup -------------------------------------------------------------------------- */

enum wkind { W_MATRIX, W_PARAM }; /* matrices may be NF4; 1-D params are always float */

static enum hmoe_status load(const struct loader *ld, const char *name, enum wkind kind, int nd,
                             const int64_t *shape, struct hmoe_tensor *out)
{
    char key[640];
    snprintf(key, sizeof key, "%s.quant_state.bitsandbytes__fp4", name);
    const struct hmoe_st_tensor *q = find(ld->p, key);
    if (q)
        return hmoe_fail(HMOE_E_UNSUPPORTED,
                         "%s: tensor '%s' is bitsandbytes FP4 (only NF4 is "
                         "supported)",
                         q->file->path, name);
    snprintf(key, sizeof key, "%s.quant_state.bitsandbytes__nf4", name);
    q = find(ld->p, key);
    if (q) {
        if (kind != W_MATRIX)
            return hmoe_fail(HMOE_E_FORMAT, "%s: tensor '%s' must not be quantized", q->file->path,
                             name);
        return load_nf4(ld, name, q, nd, shape, out);
    }
    const struct hmoe_st_tensor *t = find(ld->p, name);
    if (!t) return hmoe_fail(HMOE_E_FORMAT, "%s: tensor '%s' not found", ld->dir, name);
    if (!is_float(t->dtype))
        return hmoe_fail(HMOE_E_FORMAT, "%s: tensor '%s': dtype %s, expected BF16, F16 or F32%s",
                         t->file->path, name, t->dtype_str,
                         t->dtype == HMOE_DT_U8 ? " (U8 without an NF4 quant_state)" : "");
    if (!shape_eq(t->ndim, t->shape, nd, shape)) {
        char s1[128], s2[128];
        shape_str(s1, sizeof s1, t->ndim, t->shape);
        shape_str(s2, sizeof s2, nd, shape);
        return hmoe_fail(HMOE_E_FORMAT, "%s: tensor '%s': shape %s, expected %s", t->file->path,
                         name, s1, s2);
    }
    if ((uintptr_t)t->data % (uintptr_t)t->elem_size)
        return hmoe_fail(HMOE_E_FORMAT, "%s: tensor '%s': data is not %d-byte aligned",
                         t->file->path, name, t->elem_size);
    memset(out, 0, sizeof *out);
    out->name = t->name;
    out->dtype = t->dtype;
    out->ndim = nd;
    memcpy(out->shape, shape, sizeof(int64_t) * (size_t)nd);
    out->data = t->data;
    return HMOE_OK;
}

#define S1(a)                                                                                      \
    (const int64_t[])                                                                              \
    {                                                                                              \
        (a)                                                                                        \
    }
#define S2(a, b)                                                                                   \
    (const int64_t[])                                                                              \
    {                                                                                              \
        (a), (b)                                                                                   \
    }
#define S3(a, b, c)                                                                                \
    (const int64_t[])                                                                              \
    {                                                                                              \
        (a), (b), (c)                                                                              \
    }

#define TRY(x)                                                                                     \
    do {                                                                                           \
        enum hmoe_status st_ = (x);                                                                \
        if (st_ != HMOE_OK) return st_;                                                            \
    } while (0)

/* A 2-D [rows, cols] view starting at logical element `off` of a (fused) tensor. */
static enum hmoe_status view2(const struct loader *ld, const struct hmoe_tensor *t, int64_t off,
                              int64_t rows, int64_t cols, struct hmoe_tensor *v)
{
    *v = *t;
    v->ndim = 2;
    v->shape[0] = rows;
    v->shape[1] = cols;
    v->shape[2] = v->shape[3] = 0;
    if (t->dtype == HMOE_DT_NF4) {
        if (off % t->nf4->blocksize)
            return hmoe_fail(HMOE_E_FORMAT,
                             "%s: tensor '%s': NF4 expert slices are not aligned "
                             "to the %d-element blocks",
                             ld->dir, t->name, t->nf4->blocksize);
        v->elem0 = off;
    } else {
        int es = t->dtype == HMOE_DT_F32 ? 4 : 2;
        v->data = (const uint8_t *)t->data + (size_t)es * (size_t)off;
        v->elem0 = 0;
    }
    return HMOE_OK;
}

static enum hmoe_status load_mlp(const struct loader *ld, const char *prefix, int64_t I, int64_t H,
                                 struct hmoe_mlp_w *w)
{
    char n[512];
    snprintf(n, sizeof n, "%s.gate_proj.weight", prefix);
    TRY(load(ld, n, W_MATRIX, 2, S2(I, H), &w->gate));
    snprintf(n, sizeof n, "%s.up_proj.weight", prefix);
    TRY(load(ld, n, W_MATRIX, 2, S2(I, H), &w->up));
    snprintf(n, sizeof n, "%s.down_proj.weight", prefix);
    TRY(load(ld, n, W_MATRIX, 2, S2(H, I), &w->down));
    return HMOE_OK;
}

static enum hmoe_status load_experts(const struct loader *ld, int l, struct hmoe_layer_w *lw)
{
    const struct hmoe_config *c = &ld->m->cfg;
    const int64_t E = c->num_experts, I = c->moe_intermediate_size, H = c->hidden_size;
    lw->experts = calloc((size_t)E, sizeof *lw->experts);
    if (!lw->experts) return hmoe_fail(HMOE_E_NOMEM, "no memory for %lld experts", (long long)E);
    char n[512];
    snprintf(n, sizeof n, "model.layers.%d.mlp.experts.gate_up_proj", l);
    if (find(ld->p, n)) {
        /* transformers 5.x fused layout: gate rows first, then up rows */
        struct hmoe_tensor gu, dn;
        TRY(load(ld, n, W_MATRIX, 3, S3(E, 2 * I, H), &gu));
        snprintf(n, sizeof n, "model.layers.%d.mlp.experts.down_proj", l);
        TRY(load(ld, n, W_MATRIX, 3, S3(E, H, I), &dn));
        for (int64_t e = 0; e < E; e++) {
            struct hmoe_mlp_w *x = &lw->experts[e];
            TRY(view2(ld, &gu, e * 2 * I * H, I, H, &x->gate));
            TRY(view2(ld, &gu, e * 2 * I * H + I * H, I, H, &x->up));
            TRY(view2(ld, &dn, e * H * I, H, I, &x->down));
        }
        return HMOE_OK;
    }
    for (int e = 0; e < E; e++) {
        snprintf(n, sizeof n, "model.layers.%d.mlp.experts.%d", l, e);
        TRY(load_mlp(ld, n, I, H, &lw->experts[e]));
    }
    return HMOE_OK;
}

static enum hmoe_status load_layer(const struct loader *ld, int l)
{
    const struct hmoe_config *c = &ld->m->cfg;
    struct hmoe_layer_w *lw = &ld->m->layers[l];
    const int64_t H = c->hidden_size, D = c->head_dim;
    char n[512];
#define NM(fmt) (snprintf(n, sizeof n, "model.layers.%d." fmt, l), n)
    lw->kind = c->layer_types[l];
    TRY(load(ld, NM("input_layernorm.weight"), W_PARAM, 1, S1(H), &lw->input_norm));
    TRY(load(ld, NM("post_attention_layernorm.weight"), W_PARAM, 1, S1(H), &lw->post_norm));
    if (lw->kind == HMOE_LAYER_FULL) {
        const int64_t Hq = c->num_heads, Hkv = c->num_kv_heads;
        TRY(load(ld, NM("self_attn.q_proj.weight"), W_MATRIX, 2, S2(Hq * D * 2, H), &lw->q_proj));
        TRY(load(ld, NM("self_attn.k_proj.weight"), W_MATRIX, 2, S2(Hkv * D, H), &lw->k_proj));
        TRY(load(ld, NM("self_attn.v_proj.weight"), W_MATRIX, 2, S2(Hkv * D, H), &lw->v_proj));
        TRY(load(ld, NM("self_attn.o_proj.weight"), W_MATRIX, 2, S2(H, Hq * D), &lw->o_proj));
        TRY(load(ld, NM("self_attn.q_norm.weight"), W_PARAM, 1, S1(D), &lw->q_norm));
        TRY(load(ld, NM("self_attn.k_norm.weight"), W_PARAM, 1, S1(D), &lw->k_norm));
    } else {
        const int64_t Hk = c->linear_num_key_heads, Hv = c->linear_num_value_heads;
        const int64_t dk = c->linear_key_head_dim, dv = c->linear_value_head_dim;
        const int64_t K = c->linear_conv_kernel_dim;
        TRY(load(ld, NM("linear_attn.in_proj_qkvz.weight"), W_MATRIX, 2,
                 S2(2 * Hk * dk + 2 * Hv * dv, H), &lw->in_proj_qkvz));
        TRY(load(ld, NM("linear_attn.in_proj_ba.weight"), W_MATRIX, 2, S2(2 * Hv, H),
                 &lw->in_proj_ba));
        TRY(load(ld, NM("linear_attn.conv1d.weight"), W_PARAM, 3, S3(2 * Hk * dk + Hv * dv, 1, K),
                 &lw->conv1d));
        TRY(load(ld, NM("linear_attn.dt_bias"), W_PARAM, 1, S1(Hv), &lw->dt_bias));
        TRY(load(ld, NM("linear_attn.A_log"), W_PARAM, 1, S1(Hv), &lw->A_log));
        TRY(load(ld, NM("linear_attn.norm.weight"), W_PARAM, 1, S1(dv), &lw->lin_norm));
        TRY(load(ld, NM("linear_attn.out_proj.weight"), W_MATRIX, 2, S2(H, Hv * dv),
                 &lw->out_proj));
    }
    if (c->layer_is_moe[l]) {
        TRY(load(ld, NM("mlp.gate.weight"), W_MATRIX, 2, S2(c->num_experts, H), &lw->router));
        TRY(load(ld, NM("mlp.shared_expert_gate.weight"), W_MATRIX, 2, S2(1, H), &lw->shared_gate));
        snprintf(n, sizeof n, "model.layers.%d.mlp.shared_expert", l);
        TRY(load_mlp(ld, n, c->shared_expert_intermediate_size, H, &lw->shared));
        TRY(load_experts(ld, l, lw));
    } else {
        snprintf(n, sizeof n, "model.layers.%d.mlp", l);
        TRY(load_mlp(ld, n, c->intermediate_size, H, &lw->mlp));
    }
#undef NM
    return HMOE_OK;
}

/* ---- files -------------------------------------------------------------------------------- */

static enum hmoe_status add_file(struct model_priv *p, const char *path)
{
    struct hmoe_st_file **nf = realloc(p->files, sizeof *nf * (size_t)(p->n_files + 1));
    if (!nf) return hmoe_fail(HMOE_E_NOMEM, "no memory");
    p->files = nf;
    TRY(hmoe_st_open(path, &p->files[p->n_files]));
    p->n_files++;
    return HMOE_OK;
}

static enum hmoe_status open_index(const struct loader *ld, const char *ipath)
{
    char *txt;
    size_t len;
    TRY(read_text(ipath, &txt, &len));
    cJSON *root = cJSON_ParseWithLength(txt, len);
    free(txt);
    enum hmoe_status st = HMOE_OK;
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    char path[4096];
    if (!cJSON_IsObject(wm)) {
        st = hmoe_fail(HMOE_E_FORMAT, "%s: %s", ipath,
                       root ? "no 'weight_map' object" : "not valid JSON");
        goto out;
    }
    /* open each distinct shard once (linear dedupe against the shards opened so far) */
    const cJSON *e;
    cJSON_ArrayForEach (e, wm) {
        if (!cJSON_IsString(e) || !e->string) {
            st = hmoe_fail(HMOE_E_FORMAT, "%s: weight_map values must be file names", ipath);
            goto out;
        }
        const char *sh = e->valuestring;
        char nb[256], sb[80];
        if (!sh[0] || sh[0] == '.' || strchr(sh, '/') || strlen(sh) > 255) {
            st = hmoe_fail(HMOE_E_FORMAT, "%s: tensor '%s': bad shard name '%s'", ipath,
                           hmoe_st_printable(e->string, nb, sizeof nb),
                           hmoe_st_printable(sh, sb, sizeof sb));
            goto out;
        }
        snprintf(path, sizeof path, "%s/%s", ld->dir, sh);
        int seen = 0;
        for (int f = ld->p->n_files - 1; f >= 0 && !seen; f--)
            seen = strcmp(ld->p->files[f]->path, path) == 0;
        if (seen) continue;
        if (ld->p->n_files >= MAX_SHARDS) {
            st = hmoe_fail(HMOE_E_FORMAT, "%s: more than %d shards", ipath, MAX_SHARDS);
            goto out;
        }
        st = add_file(ld->p, path);
        if (st != HMOE_OK) {
            hmoe_err_prefix("%s: shard of tensor '%s'", ipath,
                            hmoe_st_printable(e->string, nb, sizeof nb));
            goto out;
        }
    }
    st = build_table(ld->p);
    if (st != HMOE_OK) goto out;
    cJSON_ArrayForEach (e, wm) {
        const struct hmoe_st_tensor *t = find(ld->p, e->string);
        snprintf(path, sizeof path, "%s/%s", ld->dir, e->valuestring);
        if (!t || strcmp(t->file->path, path) != 0) {
            char nb[256];
            st = hmoe_fail(HMOE_E_FORMAT, "%s: tensor '%s' is not in its shard %s", ipath,
                           hmoe_st_printable(e->string, nb, sizeof nb), e->valuestring);
            goto out;
        }
    }
out:
    cJSON_Delete(root);
    return st;
}

static enum hmoe_status open_dir(struct loader *ld)
{
    struct hmoe_model *m = ld->m;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", ld->dir);
    char *txt;
    size_t len;
    TRY(read_text(path, &txt, &len));
    enum hmoe_status st = hmoe_config_parse(txt, len, path, &m->cfg);
    free(txt);
    if (st != HMOE_OK) return st;

    struct stat sb;
    snprintf(path, sizeof path, "%s/model.safetensors", ld->dir);
    if (stat(path, &sb) == 0) {
        TRY(add_file(ld->p, path));
        TRY(build_table(ld->p));
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", ld->dir);
        if (stat(path, &sb) != 0)
            return hmoe_fail(HMOE_E_IO,
                             "%s: neither model.safetensors nor "
                             "model.safetensors.index.json exists",
                             ld->dir);
        TRY(open_index(ld, path));
    }

    const struct hmoe_config *c = &m->cfg;
    const int64_t V = c->vocab_size, H = c->hidden_size;
    TRY(load(ld, "model.embed_tokens.weight", W_MATRIX, 2, S2(V, H), &m->embed));
    TRY(load(ld, "model.norm.weight", W_PARAM, 1, S1(H), &m->final_norm));
    if (!c->tie_word_embeddings || find(ld->p, "lm_head.weight"))
        TRY(load(ld, "lm_head.weight", W_MATRIX, 2, S2(V, H), &m->lm_head));
    else
        m->lm_head = m->embed;
    m->layers = calloc((size_t)c->num_layers, sizeof *m->layers);
    if (!m->layers) return hmoe_fail(HMOE_E_NOMEM, "no memory for layers");
    for (int l = 0; l < c->num_layers; l++)
        TRY(load_layer(ld, l));
    return HMOE_OK;
}

enum hmoe_status hmoe_model_open(const char *dir, struct hmoe_model **out)
{
    *out = NULL;
    if (!dir || !dir[0]) return hmoe_fail(HMOE_E_INVAL, "no model directory given");
    if (hmoe_synth_is_spec(dir)) return hmoe_synth_open(dir, out); /* generated in memory */
    if (strlen(dir) > 3000) return hmoe_fail(HMOE_E_INVAL, "model path is too long");
    struct hmoe_model *m = calloc(1, sizeof *m);
    struct model_priv *p = calloc(1, sizeof *p);
    if (!m || !p || !(m->dir = strdup(dir))) {
        free(m);
        free(p);
        return hmoe_fail(HMOE_E_NOMEM, "no memory");
    }
    m->priv = p;
    struct loader ld = {m, p, m->dir};
    enum hmoe_status st = open_dir(&ld);
    if (st != HMOE_OK) {
        hmoe_model_close(m);
        return st;
    }
    int n_nf4 = 0;
    for (struct nf4_chunk *ch = p->nf4; ch; ch = ch->next)
        n_nf4 += ch->used;
    HMOE_LOG_INFO("model %s: %d layers, %d files, %d NF4 tensors", dir, m->cfg.num_layers,
                  p->n_files, n_nf4);
    *out = m;
    return HMOE_OK;
}

void hmoe_model_close(struct hmoe_model *m)
{
    if (!m) return;
    if (m->dir && hmoe_synth_is_spec(m->dir)) {
        hmoe_synth_close(m);
        return;
    }
    struct model_priv *p = m->priv;
    if (m->layers) {
        for (int l = 0; l < m->cfg.num_layers; l++)
            free(m->layers[l].experts);
        free(m->layers);
    }
    if (p) {
        for (int f = 0; f < p->n_files; f++)
            hmoe_st_close(p->files[f]);
        free(p->files);
        free(p->slots);
        while (p->nf4) {
            struct nf4_chunk *n = p->nf4->next;
            free(p->nf4);
            p->nf4 = n;
        }
        free(p);
    }
    free(m->dir);
    free(m);
}

static uint64_t tensor_nbytes(const struct hmoe_tensor *t)
{
    int64_t n = hmoe_tensor_numel(t);
    switch (t->dtype) {
    case HMOE_DT_F32: return (uint64_t)n * 4;
    case HMOE_DT_F16:
    case HMOE_DT_BF16: return (uint64_t)n * 2;
    case HMOE_DT_U8: return (uint64_t)n;
    case HMOE_DT_NF4: {
        const struct hmoe_nf4 *q = t->nf4;
        int64_t b0 = t->elem0 / q->blocksize, b1 = (t->elem0 + n + q->blocksize - 1) / q->blocksize;
        return (uint64_t)(n + 1) / 2 + (uint64_t)(b1 - b0) * (q->absmax_q ? 1u : 4u);
    }
    default: return 0;
    }
}

uint64_t hmoe_expert_nbytes(const struct hmoe_model *m, int layer, int expert)
{
    HMOE_ASSERT(layer >= 0 && layer < m->cfg.num_layers && m->layers[layer].experts);
    HMOE_ASSERT(expert >= 0 && expert < m->cfg.num_experts);
    const struct hmoe_mlp_w *w = &m->layers[layer].experts[expert];
    return tensor_nbytes(&w->gate) + tensor_nbytes(&w->up) + tensor_nbytes(&w->down);
}
