/* Synthetic Qwen3-Next models: the tensor plan of a preset (HF names, MODEL.md §0/§4 shapes),
 * one arena holding every tensor, and a parallel fill from a counter-based PRNG (splitmix64 of
 * (seed, tensor, region, word)), so the bytes never depend on the thread count. NF4 nibbles and
 * double-quant absmax codes are drawn directly; scales keep every Linear's output RMS near a
 * chosen gain for unit-RMS input (W std = gain / sqrt(fan_in)). */
#include "hmoe/synth.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "hmoe/log.h"
#include "hmoe/clock.h"
#include "hmoe/nf4_code.h"

const float hmoe_synth_nf4_code[16] = HMOE_NF4_CODE;

/* bnb create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), fp32 arithmetic. */
static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void hmoe_synth_dynamic_map(float out[256])
{
    int n = 0;
    for (int i = 0; i < 7; i++) {
        int items = (1 << i) + 1;
        float scale = (float)pow(10.0, -6 + i);
        float step = (1.0f - 0.1f) / (float)(items - 1);
        for (int j = 0; j + 1 < items; j++) {
            float b0 = 0.1f + step * (float)j, b1 = 0.1f + step * (float)(j + 1);
            if (j + 1 == items - 1) b1 = 1.0f;
            float mean = (b0 + b1) / 2.0f;
            out[n++] = scale * mean;
            out[n++] = -scale * mean;
        }
    }
    out[n++] = 0.0f;
    out[n++] = 1.0f;
    HMOE_ASSERT(n == 256);
    qsort(out, 256, sizeof(float), cmp_float);
}

/* ---- presets ---- */

struct synth_preset {
    const char *name;
    int H, L, V, Hq, Hkv, D, Hk, Hv, dk, dv, K, E, topk, I, Is, max_pos;
};

static const struct synth_preset presets[] = {
    {"qwen3-next-80b-a3b", 2048, 48, 151936, 16, 2, 256, 16, 32, 128, 128, 4, 512, 10, 512, 512,
     262144},
    {"small", 512, 8, 4096, 8, 2, 128, 4, 8, 64, 64, 4, 64, 4, 128, 128, 4096},
    {"tiny", 128, 4, 512, 4, 2, 64, 2, 4, 32, 32, 4, 8, 2, 64, 64, 4096},
};

/* ---- the plan ---- */

enum synth_init { INIT_NF4 = 0, INIT_UNIFORM, INIT_LOGU };

struct tspec {
    struct hmoe_tensor *t;
    size_t name_off;
    enum hmoe_dtype dt;
    int ndim;
    int64_t shape[3];
    enum synth_init init;
    int layer, expert;         /* routed expert (layer, e); expert -1 for every other tensor */
    float p0, p1;              /* NF4: gain; UNIFORM: center, half width; LOGU: lo, hi */
    uint64_t off_data, off_absq, off_nested;
    int64_t nq;                /* NF4: index into the hmoe_nf4 array */
    int gen;                   /* generated (not left out of a subset) */
};

struct synth_priv {
    void *arena;
    size_t arena_bytes;
    char *names;
    struct hmoe_nf4 *nf4;
    struct hmoe_mlp_w *experts; /* [L * E] */
    uint64_t filled_bytes;      /* bytes generated (all tensors, or the subset's experts) */
};

struct plan {
    struct tspec *ts;
    size_t n, cap;
    char *names;
    size_t names_len, names_cap;
    int64_t n_nf4;
    int oom;
};

static void plan_add(struct plan *p, struct hmoe_tensor *t, enum hmoe_dtype dt, int ndim,
                     int64_t s0, int64_t s1, int64_t s2, enum synth_init init, float p0, float p1,
                     const char *name)
{
    if (p->oom) return;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 1024;
        struct tspec *ts = realloc(p->ts, cap * sizeof *ts);
        if (!ts) {
            p->oom = 1;
            return;
        }
        p->ts = ts;
        p->cap = cap;
    }
    size_t len = strlen(name);
    if (p->names_len + len + 1 > p->names_cap) {
        size_t cap = p->names_cap ? p->names_cap * 2 : 65536;
        char *nm = realloc(p->names, cap);
        if (!nm) {
            p->oom = 1;
            return;
        }
        p->names = nm;
        p->names_cap = cap;
    }
    struct tspec *s = &p->ts[p->n++];
    memset(s, 0, sizeof *s);
    s->t = t;
    s->name_off = p->names_len;
    memcpy(p->names + p->names_len, name, len + 1);
    p->names_len += len + 1;
    s->dt = dt;
    s->ndim = ndim;
    s->shape[0] = s0;
    s->shape[1] = s1;
    s->shape[2] = s2;
    s->init = init;
    s->layer = -1;
    s->expert = -1;
    s->p0 = p0;
    s->p1 = p1;
    s->nq = dt == HMOE_DT_NF4 ? p->n_nf4++ : -1;
}

/* "model.layers.<l>.<suffix>" into buf. */
static const char *lname(char *buf, size_t cap, int l, const char *suffix)
{
    int n = snprintf(buf, cap, "model.layers.%d.%s", l, suffix);
    HMOE_ASSERT(n > 0 && (size_t)n < cap);
    return buf;
}

/* A 4-bit Linear [out, in] whose output RMS is about `gain` for unit-RMS input. */
#define LIN(t, o, i, gain, sfx)                                                               \
    plan_add(p, (t), HMOE_DT_NF4, 2, (o), (i), 0, INIT_NF4, (gain), 0.0f,                      \
             lname(nb, sizeof nb, l, (sfx)))
/* A bf16 vector with values uniform in [center - hw, center + hw]. */
#define VEC(t, n, center, hw, sfx)                                                            \
    plan_add(p, (t), HMOE_DT_BF16, 1, (n), 0, 0, INIT_UNIFORM, (center), (hw),                 \
             lname(nb, sizeof nb, l, (sfx)))

/* Uniform half width for a given standard deviation. */
static float hw_of_std(float std)
{
    return std * 1.7320508f;
}

static void plan_model(struct plan *p, struct hmoe_model *m, struct hmoe_mlp_w *experts)
{
    const struct hmoe_config *c = &m->cfg;
    const int H = c->hidden_size, E = c->num_experts, I = c->moe_intermediate_size;
    const int Is = c->shared_expert_intermediate_size;
    const float nw = 0.1f; /* norm offsets w in [-0.1, 0.1] (applied as 1+w) */
    char nb[160], sfx[96];
    plan_add(p, &m->embed, HMOE_DT_BF16, 2, c->vocab_size, H, 0, INIT_UNIFORM, 0.0f,
             hw_of_std(0.02f), "model.embed_tokens.weight");
    for (int l = 0; l < c->num_layers; l++) {
        struct hmoe_layer_w *lw = &m->layers[l];
        VEC(&lw->input_norm, H, 0.0f, nw, "input_layernorm.weight");
        VEC(&lw->post_norm, H, 0.0f, nw, "post_attention_layernorm.weight");
        if (lw->kind == HMOE_LAYER_FULL) {
            const int Hq = c->num_heads, Hkv = c->num_kv_heads, D = c->head_dim;
            LIN(&lw->q_proj, Hq * D * 2, H, 1.0f, "self_attn.q_proj.weight");
            LIN(&lw->k_proj, Hkv * D, H, 1.0f, "self_attn.k_proj.weight");
            LIN(&lw->v_proj, Hkv * D, H, 1.0f, "self_attn.v_proj.weight");
            LIN(&lw->o_proj, H, Hq * D, 1.0f, "self_attn.o_proj.weight");
            VEC(&lw->q_norm, D, 0.0f, nw, "self_attn.q_norm.weight");
            VEC(&lw->k_norm, D, 0.0f, nw, "self_attn.k_norm.weight");
        } else {
            const int Hv = c->linear_num_value_heads;
            const int kd = c->linear_num_key_heads * c->linear_key_head_dim;
            const int vd = Hv * c->linear_value_head_dim;
            LIN(&lw->in_proj_qkvz, 2 * kd + 2 * vd, H, 1.0f, "linear_attn.in_proj_qkvz.weight");
            /* b -> beta = sigmoid(b); a -> dt = softplus(a + dt_bias): keep a small. */
            LIN(&lw->in_proj_ba, 2 * Hv, H, 0.5f, "linear_attn.in_proj_ba.weight");
            plan_add(p, &lw->conv1d, HMOE_DT_BF16, 3, 2 * kd + vd, 1, c->linear_conv_kernel_dim,
                     INIT_UNIFORM, 0.0f, hw_of_std(0.5f),
                     lname(nb, sizeof nb, l, "linear_attn.conv1d.weight"));
            /* dt = softplus(a + dt_bias) in about [0.002, 0.13]; A = exp(A_log) in [1, 16]: the
             * per-step decay exp(-A*dt) spans about 0.1 .. 0.998. */
            VEC(&lw->dt_bias, Hv, -4.0f, 2.0f, "linear_attn.dt_bias");
            plan_add(p, &lw->A_log, HMOE_DT_BF16, 1, Hv, 0, 0, INIT_LOGU, 1.0f, 16.0f,
                     lname(nb, sizeof nb, l, "linear_attn.A_log"));
            VEC(&lw->lin_norm, c->linear_value_head_dim, 1.0f, nw, "linear_attn.norm.weight");
            LIN(&lw->out_proj, H, vd, 1.0f, "linear_attn.out_proj.weight");
        }
        LIN(&lw->router, E, H, 2.0f, "mlp.gate.weight");
        lw->experts = experts + (size_t)l * (size_t)E;
        for (int e = 0; e < E; e++) {
            struct hmoe_mlp_w *x = &lw->experts[e];
            snprintf(sfx, sizeof sfx, "mlp.experts.%d.gate_proj.weight", e);
            LIN(&x->gate, I, H, 1.0f, sfx);
            snprintf(sfx, sizeof sfx, "mlp.experts.%d.up_proj.weight", e);
            LIN(&x->up, I, H, 1.0f, sfx);
            snprintf(sfx, sizeof sfx, "mlp.experts.%d.down_proj.weight", e);
            LIN(&x->down, H, I, 1.0f, sfx);
            for (size_t k = p->oom ? 0 : 3; k > 0; k--) {
                p->ts[p->n - k].layer = l;
                p->ts[p->n - k].expert = e;
            }
        }
        LIN(&lw->shared.gate, Is, H, 1.0f, "mlp.shared_expert.gate_proj.weight");
        LIN(&lw->shared.up, Is, H, 1.0f, "mlp.shared_expert.up_proj.weight");
        LIN(&lw->shared.down, H, Is, 1.0f, "mlp.shared_expert.down_proj.weight");
        LIN(&lw->shared_gate, 1, H, 1.0f, "mlp.shared_expert_gate.weight");
    }
    plan_add(p, &m->final_norm, HMOE_DT_BF16, 1, H, 0, 0, INIT_UNIFORM, 0.0f, nw,
             "model.norm.weight");
    plan_add(p, &m->lm_head, HMOE_DT_BF16, 2, c->vocab_size, H, 0, INIT_UNIFORM, 0.0f,
             hw_of_std(3.0f / sqrtf((float)H)), "lm_head.weight");
}

/* ---- PRNG and element generators ---- */

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Word `ctr` of the stream `key`. */
static inline uint64_t rnd(uint64_t key, uint64_t ctr)
{
    return mix64(key + (ctr + 1) * 0x9E3779B97F4A7C15ull);
}

static uint64_t region_key(uint64_t seed, size_t tensor, int region)
{
    return mix64(mix64(seed) ^ (((uint64_t)tensor << 2) | (uint64_t)region));
}

/* Uniform in [0, 1) from 24 random bits. */
static inline float u01(uint32_t r)
{
    return (float)(r >> 8) * (1.0f / 16777216.0f);
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* Bytes [start, start+len) of a random byte stream; start is a multiple of 8. */
static void fill_bytes(uint8_t *dst, uint64_t key, uint64_t start, uint64_t len)
{
    uint64_t w = start / 8, i = 0;
    for (; i + 8 <= len; i += 8, w++) {
        uint64_t r = rnd(key, w);
        memcpy(dst + start + i, &r, 8);
    }
    if (i < len) {
        uint64_t r = rnd(key, w);
        memcpy(dst + start + i, &r, (size_t)(len - i));
    }
}

/* Nibble map for NF4 weights: a random byte picks a code. Uniform codes would have mean
 * 0.0235 (the NF4 table is not symmetric), which adds a coherent component to every output
 * that grows layer after layer; moving 3 of the 16 slots of code 15 (+1.0) to code 0 (-1.0)
 * brings the mean to 5e-5 of the code scale. */
static uint8_t nib_map[256];
static uint8_t byte_map[65536]; /* 16 random bits -> one byte of two nibbles */

static void nib_map_init(void)
{
    for (int i = 0; i < 256; i++) nib_map[i] = (uint8_t)(i >> 4);
    for (int i = 0; i < 3; i++) nib_map[255 - i] = 0;
    for (int i = 0; i < 65536; i++) byte_map[i] = (uint8_t)(nib_map[i & 0xff] << 4 | nib_map[i >> 8]);
}

/* Packed nibble bytes [start, start+len) (start a multiple of 8): 16 random bits per byte. */
static void fill_nibbles(uint8_t *dst, uint64_t key, uint64_t start, uint64_t len)
{
    uint64_t w = start / 8 * 2;
    for (uint64_t i = 0; i < len; i += 8, w += 2) {
        const uint64_t r0 = rnd(key, w), r1 = rnd(key, w + 1);
        uint8_t b[8];
        for (int j = 0; j < 4; j++) {
            b[j] = byte_map[(r0 >> (16 * j)) & 0xffff];
            b[j + 4] = byte_map[(r1 >> (16 * j)) & 0xffff];
        }
        memcpy(dst + start + i, b, (size_t)(len - i < 8 ? len - i : 8));
    }
}

/* bf16 elements [e0, e0+n): UNIFORM center p0 +- p1, or LOGU log(U(p0, p1)). */
static void fill_bf16(uint16_t *dst, const struct tspec *s, uint64_t key, uint64_t e0, uint64_t n)
{
    for (uint64_t e = e0; e < e0 + n; e++) {
        uint64_t r = rnd(key, e >> 1);
        float f = u01((uint32_t)((e & 1) ? r >> 32 : r));
        float v = s->init == INIT_LOGU ? logf(s->p0 + (s->p1 - s->p0) * f)
                                       : s->p0 + s->p1 * (2.0f * f - 1.0f);
        dst[e] = f32_to_bf16(v);
    }
}

/* ---- open / close ---- */

struct job {
    uint32_t ts;
    uint32_t region; /* 0: data (bytes for NF4, elements for bf16), 1: absmax codes */
    uint64_t start, len;
};

static enum hmoe_status parse_spec(const char *spec, const struct synth_preset **pr,
                                   uint64_t *seed, int *layers)
{
    if (!hmoe_synth_is_spec(spec)) return hmoe_fail(HMOE_E_INVAL, "%s: not a synth: spec", spec);
    const char *name = spec + 6, *q = strchr(name, '?');
    size_t nlen = q ? (size_t)(q - name) : strlen(name);
    *pr = NULL;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strlen(presets[i].name) == nlen && !strncmp(presets[i].name, name, nlen))
            *pr = &presets[i];
    if (!*pr)
        return hmoe_fail(HMOE_E_INVAL,
                         "%s: unknown synth preset (known: qwen3-next-80b-a3b, small, tiny)", spec);
    *seed = 1;
    *layers = (*pr)->L;
    while (q && *q) {
        const char *opt = q + 1, *end = strchr(opt, '&');
        size_t olen = end ? (size_t)(end - opt) : strlen(opt);
        char buf[64];
        if (olen == 0 || olen >= sizeof buf)
            return hmoe_fail(HMOE_E_INVAL, "%s: bad synth option", spec);
        memcpy(buf, opt, olen);
        buf[olen] = '\0';
        char *eq = strchr(buf, '=');
        if (!eq || eq[1] == '\0' || eq[1] == '-')
            return hmoe_fail(HMOE_E_INVAL, "%s: synth option '%s' needs =<number>", spec, buf);
        *eq = '\0';
        char *tail;
        unsigned long long v = strtoull(eq + 1, &tail, 10);
        if (*tail) return hmoe_fail(HMOE_E_INVAL, "%s: synth option %s: not a number", spec, buf);
        if (!strcmp(buf, "seed")) {
            *seed = v;
        } else if (!strcmp(buf, "layers")) {
            if (v < 1 || v > (unsigned long long)(*pr)->L)
                return hmoe_fail(HMOE_E_INVAL, "%s: layers must be in 1..%d", spec, (*pr)->L);
            *layers = (int)v;
        } else {
            return hmoe_fail(HMOE_E_INVAL, "%s: unknown synth option '%s' (seed, layers)", spec,
                             buf);
        }
        q = end;
    }
    return HMOE_OK;
}

static void fill_config(struct hmoe_config *c, const struct synth_preset *pr, int layers)
{
    memset(c, 0, sizeof *c);
    c->hidden_size = pr->H;
    c->num_layers = layers;
    c->vocab_size = pr->V;
    c->num_heads = pr->Hq;
    c->num_kv_heads = pr->Hkv;
    c->head_dim = pr->D;
    c->partial_rotary_factor = 0.25f;
    c->rotary_dim = (int)((float)pr->D * 0.25f);
    c->rope_theta = 10000000.0f;
    c->rms_norm_eps = 1e-6f;
    c->linear_num_key_heads = pr->Hk;
    c->linear_num_value_heads = pr->Hv;
    c->linear_key_head_dim = pr->dk;
    c->linear_value_head_dim = pr->dv;
    c->linear_conv_kernel_dim = pr->K;
    c->num_experts = pr->E;
    c->num_experts_per_tok = pr->topk;
    c->moe_intermediate_size = pr->I;
    c->shared_expert_intermediate_size = pr->Is;
    c->intermediate_size = pr->V == 151936 ? 5120 : 4 * pr->H;
    c->norm_topk_prob = 1;
    c->decoder_sparse_step = 1;
    c->tie_word_embeddings = 0;
    c->max_position_embeddings = pr->max_pos;
    c->attention_bias = 0;
    c->bos_token_id = pr->V == 151936 ? 151643 : pr->V - 2;
    c->n_eos = 1;
    c->eos_token_ids[0] = pr->V == 151936 ? 151645 : pr->V - 1;
    for (int i = 0; i < layers; i++) {
        c->layer_types[i] = (i + 1) % 4 ? HMOE_LAYER_LINEAR : HMOE_LAYER_FULL;
        c->layer_is_moe[i] = 1;
    }
    c->quantized = 1;
}

#define ALIGN_UP(x) (((x) + 255u) & ~(uint64_t)255u)
#define CHUNK_BYTES ((uint64_t)1 << 22)

int hmoe_synth_is_spec(const char *name)
{
    return name && !strncmp(name, "synth:", 6);
}

/* keep == NULL: every tensor; else only the routed experts it keeps (the rest is never written
 * or touched: its pages stay unallocated and read as zero). */
static enum hmoe_status synth_open(const char *spec, hmoe_synth_keep_fn keep, void *keep_arg,
                                   struct hmoe_model **out)
{
    const struct synth_preset *pr = NULL;
    uint64_t seed = 1;
    int layers = 0;
    *out = NULL;
    enum hmoe_status st = parse_spec(spec, &pr, &seed, &layers);
    if (st) return st;
    double t0 = hmoe_clock_s();

    struct hmoe_model *m = calloc(1, sizeof *m);
    struct synth_priv *pv = calloc(1, sizeof *pv);
    struct plan p = {0};
    struct job *jobs = NULL;
    if (!m || !pv) goto oom;
    m->priv = pv;
    fill_config(&m->cfg, pr, layers);
    m->dir = strdup(spec);
    m->layers = calloc((size_t)layers, sizeof *m->layers);
    pv->experts = calloc((size_t)layers * (size_t)pr->E, sizeof *pv->experts);
    if (!m->dir || !m->layers || !pv->experts) goto oom;
    for (int l = 0; l < layers; l++) m->layers[l].kind = m->cfg.layer_types[l];
    plan_model(&p, m, pv->experts);
    if (p.oom) goto oom;
    pv->names = p.names;
    p.names = NULL;
    pv->nf4 = calloc((size_t)(p.n_nf4 ? p.n_nf4 : 1), sizeof *pv->nf4);
    if (!pv->nf4) goto oom;

    /* Layout and job count. */
    uint64_t off = 0, njobs = 0;
    for (size_t i = 0; i < p.n; i++) {
        struct tspec *s = &p.ts[i];
        int64_t numel = s->shape[0] * (s->ndim > 1 ? s->shape[1] : 1) * (s->ndim > 2 ? s->shape[2] : 1);
        const uint64_t off0 = off, nj0 = njobs;
        s->off_data = off;
        if (s->dt == HMOE_DT_NF4) {
            HMOE_ASSERT(numel % 64 == 0);
            int64_t nb = numel / 64;
            off = ALIGN_UP(off + (uint64_t)numel / 2);
            s->off_absq = off;
            off = ALIGN_UP(off + (uint64_t)nb);
            s->off_nested = off;
            off = ALIGN_UP(off + (uint64_t)((nb + 255) / 256) * 4);
            njobs += ((uint64_t)numel / 2 + CHUNK_BYTES - 1) / CHUNK_BYTES + 1;
        } else {
            off = ALIGN_UP(off + (uint64_t)numel * 2);
            njobs += ((uint64_t)numel * 2 + CHUNK_BYTES - 1) / CHUNK_BYTES;
        }
        s->gen = !keep || (s->expert >= 0 && keep(&m->cfg, s->layer, s->expert, keep_arg));
        if (s->gen)
            pv->filled_bytes += off - off0;
        else
            njobs = nj0;
    }
    pv->arena_bytes = off;
    pv->arena = mmap(NULL, off, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pv->arena == MAP_FAILED) {
        pv->arena = NULL;
        hmoe_fail(HMOE_E_NOMEM, "%s: cannot map %.2f GiB for the synth weights", spec,
                  (double)off / 1073741824.0);
        goto fail;
    }
#ifdef MADV_HUGEPAGE
    (void)madvise(pv->arena, off, MADV_HUGEPAGE);
#endif
    jobs = malloc((size_t)njobs * sizeof *jobs);
    if (!jobs) goto oom;

    /* Tensor views, NF4 states (nested absmax filled here: it is small), jobs. */
    float nested_code[256];
    hmoe_synth_dynamic_map(nested_code);
    double ss = 0;
    for (int i = 0; i < 16; i++) ss += (double)hmoe_synth_nf4_code[i] * (double)hmoe_synth_nf4_code[i];
    const float rms_code = (float)sqrt(ss / 16.0);
    uint8_t *arena = pv->arena;
    size_t nj = 0;
    for (size_t i = 0; i < p.n; i++) {
        struct tspec *s = &p.ts[i];
        struct hmoe_tensor *t = s->t;
        int64_t numel = s->shape[0] * (s->ndim > 1 ? s->shape[1] : 1) * (s->ndim > 2 ? s->shape[2] : 1);
        t->name = pv->names + s->name_off;
        t->dtype = s->dt;
        t->ndim = s->ndim;
        for (int d = 0; d < s->ndim; d++) t->shape[d] = s->shape[d];
        t->data = arena + s->off_data;
        t->elem0 = 0;
        uint64_t total = s->dt == HMOE_DT_NF4 ? (uint64_t)numel / 2 : (uint64_t)numel * 2;
        for (uint64_t b = 0; s->gen && b < total; b += CHUNK_BYTES) {
            uint64_t len = total - b < CHUNK_BYTES ? total - b : CHUNK_BYTES;
            if (s->dt == HMOE_DT_NF4)
                jobs[nj++] = (struct job){(uint32_t)i, 0, b, len};
            else
                jobs[nj++] = (struct job){(uint32_t)i, 0, b / 2, len / 2};
        }
        if (s->dt != HMOE_DT_NF4) continue;
        struct hmoe_nf4 *q = &pv->nf4[s->nq];
        int64_t nb = numel / 64, ng = (nb + 255) / 256;
        float A = s->p0 / (sqrtf((float)s->shape[1]) * rms_code);
        q->absmax_q = arena + s->off_absq;
        q->absmax_f32 = NULL;
        q->nested_absmax = (const float *)(arena + s->off_nested);
        memcpy(q->code, hmoe_synth_nf4_code, sizeof q->code);
        memcpy(q->nested_code, nested_code, sizeof q->nested_code);
        q->nested_offset = A;
        q->n_blocks = nb;
        q->blocksize = 64;
        q->nested_blocksize = 256;
        q->out_dtype = HMOE_DT_BF16;
        t->nf4 = q;
        (void)ng;
        s->p1 = A; /* the nested absmax are filled with the codes (job region 1) */
        if (s->gen) jobs[nj++] = (struct job){(uint32_t)i, 1, 0, (uint64_t)nb};
    }
    HMOE_ASSERT(nj == njobs);

    nib_map_init();
    const double t_plan = hmoe_clock_s() - t0;
#ifdef MADV_POPULATE_WRITE
    /* Fault the arena in parallel, 2 MiB-aligned slices per thread, before filling it: much
     * cheaper than one page fault per first touch (an error, e.g. an old kernel, is ignored:
     * the fill then faults the pages in). */
    if (!keep) {
        const uint64_t slice = (uint64_t)64 << 20, nsl = (pv->arena_bytes + slice - 1) / slice;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
        for (int64_t k = 0; k < (int64_t)nsl; k++) {
            uint64_t o = (uint64_t)k * slice;
            uint64_t len = pv->arena_bytes - o < slice ? pv->arena_bytes - o : slice;
            (void)madvise(arena + o, len, MADV_POPULATE_WRITE);
        }
    }
#endif
    int nthreads = 1;
#ifdef _OPENMP
#pragma omp parallel
    {
#pragma omp single
        nthreads = omp_get_num_threads();
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t j = 0; j < (int64_t)nj; j++) {
            const struct job *jb = &jobs[j];
            const struct tspec *s = &p.ts[jb->ts];
            uint64_t key = region_key(seed, jb->ts, (int)jb->region);
            if (s->dt == HMOE_DT_NF4 && jb->region) {
                fill_bytes(arena + s->off_absq, key, jb->start, jb->len);
                /* nested absmax: 0.25 A (0.9 .. 1.1) per 256 blocks; offset A */
                float *na = (float *)(arena + s->off_nested);
                const uint64_t nkey = region_key(seed, jb->ts, 2);
                for (uint64_t g = 0; g < (jb->len + 255) / 256; g++)
                    na[g] = 0.25f * s->p1 * (0.9f + 0.2f * u01((uint32_t)rnd(nkey, g)));
            }
            else if (s->dt == HMOE_DT_NF4)
                fill_nibbles(arena + s->off_data, key, jb->start, jb->len);
            else
                fill_bf16((uint16_t *)(arena + s->off_data), s, key, jb->start, jb->len);
        }
#ifdef _OPENMP
    }
#endif
    free(jobs);
    free(p.ts);
    if (keep)
        HMOE_LOG_INFO("%s: %zu tensors, %.1f MiB of %.1f MiB generated (the kept routed experts "
                      "only) in %.2f s (%d threads)",
                      spec, p.n, (double)pv->filled_bytes / 1048576.0,
                      (double)pv->arena_bytes / 1048576.0, hmoe_clock_s() - t0, nthreads);
    else
        HMOE_LOG_INFO("%s: %zu tensors, %.2f GiB generated in %.2f s (plan %.2f s, %d threads)",
                      spec, p.n, (double)pv->arena_bytes / 1073741824.0, hmoe_clock_s() - t0, t_plan,
                      nthreads);
    *out = m;
    return HMOE_OK;
oom:
    hmoe_fail(HMOE_E_NOMEM, "%s: out of memory building the synth model", spec);
fail:
    free(jobs);
    free(p.ts);
    free(p.names);
    hmoe_synth_close(m);
    if (!m) free(pv);
    return HMOE_E_NOMEM;
}

enum hmoe_status hmoe_synth_open(const char *spec, struct hmoe_model **out)
{
    return synth_open(spec, NULL, NULL, out);
}

enum hmoe_status hmoe_synth_open_experts(const char *spec, hmoe_synth_keep_fn keep, void *arg,
                                         struct hmoe_model **out)
{
    if (!keep) {
        *out = NULL;
        return hmoe_fail(HMOE_E_INVAL, "%s: no expert subset given", spec);
    }
    return synth_open(spec, keep, arg, out);
}

void hmoe_synth_close(struct hmoe_model *m)
{
    if (!m) return;
    struct synth_priv *pv = m->priv;
    if (pv) {
        if (pv->arena) munmap(pv->arena, pv->arena_bytes);
        free(pv->names);
        free(pv->nf4);
        free(pv->experts);
        free(pv);
    }
    free(m->layers);
    free(m->dir);
    free(m);
}

uint64_t hmoe_synth_nbytes(const struct hmoe_model *m)
{
    const struct synth_priv *pv = m ? m->priv : NULL;
    return pv ? pv->arena_bytes : 0;
}

uint64_t hmoe_synth_drop_weights(struct hmoe_model *m)
{
    if (!m || !m->dir || !hmoe_synth_is_spec(m->dir)) return 0;
    struct synth_priv *pv = m->priv;
    if (!pv || !pv->arena) return 0;
    if (madvise(pv->arena, pv->arena_bytes, MADV_DONTNEED) != 0) return 0;
    return pv->filled_bytes;
}
