/* gpu_worker/cpu/forward_cpu.c: the portable CPU reference forward pass of Qwen3-Next
 * (MODEL.md §1-§3): embeddings, (1+w) RMSNorm, gated full attention with partial RoPE and GQA,
 * Gated DeltaNet (chunked form for multi-token calls, recurrent form for decode), MoE with
 * shared expert or dense MLP, final norm and lm_head. fp32 arithmetic; weights are dequantized
 * on the fly through hmoe/tensor.h, only small per-channel parameters are converted once. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hmoe/forward.h"
#include "hmoe/log.h"
#include "hmoe/status.h"
#include "hmoe/tensor.h"

/* Parallel loops only pay off above ~1e5 multiply-adds (the machine may be shared). */
#ifdef _OPENMP
#define FWD_PRAGMA(x) _Pragma(#x)
#define HMOE_OMP_FOR_IF(work) FWD_PRAGMA(omp parallel for schedule(dynamic, 1) if ((work) > 1e5))
#else
#define HMOE_OMP_FOR_IF(work)
#endif

#define GDN_CHUNK 64      /* chunk length of the chunked gated delta rule (MODEL.md Step 7') */
#define FWD_MAX_CHUNK 256 /* tokens per internal sub-call: bounds the scratch memory */

/* Per-layer caches and the small parameters converted to f32 once at init. */
struct fwd_layer {
    float *in_norm, *post_norm; /* [H], already 1+w */
    /* full attention */
    float *q_norm, *k_norm;   /* [D], already 1+w */
    float *k_cache, *v_cache; /* [max_ctx, Hkv, D]; keys after k_norm and RoPE, values raw */
    /* Gated DeltaNet */
    float *dt_bias;    /* [Hv] */
    float *neg_exp_a;  /* [Hv] -exp(A_log) */
    float *lin_norm;   /* [dv], applied as w */
    float *conv_w;     /* [conv_dim, K] */
    float *conv_state; /* [conv_dim, K] last K pre-conv inputs, oldest first */
    float *rec_state;  /* [Hv, dk, dv] */
};

struct hmoe_fwd {
    const struct hmoe_model *m;
    const struct hmoe_config *c;
    int max_ctx, pos, tc; /* tc: tokens per internal sub-call */
    int broken;           /* a call failed half-way: caches are inconsistent until reset */
    /* derived sizes */
    int H, V, L, Hq, Hkv, D, rot, Hk, Hv, dk, dv, K, key_dim, value_dim, conv_dim, qkvz_dim;
    int E, topk, imax;
    struct fwd_layer *lay; /* [L] */
    float *final_norm;     /* [H], 1+w */
    float *inv_freq;       /* [rot/2] */
    float *rope;           /* [rot] cos | sin of the current position */
    struct hmoe_moe_hook hook;
    int has_hook;
    /* scratch, sized for tc tokens */
    float *h, *xn, *blk;   /* [tc, H] hidden, normed, block output */
    float *proj;           /* [tc, max(qkvz_dim, 2*Hq*D)] */
    float *kb, *vb;        /* [tc, Hkv*D] */
    float *ao;             /* [tc, max(Hq*D, value_dim)] attention / GDN core output */
    float *scores;         /* [Hq, max_ctx] */
    float *mixed, *conv;   /* [tc, conv_dim] pre-conv and post-conv/SiLU */
    float *z;              /* [tc, value_dim] */
    float *ba, *beta, *gg; /* [tc, 2*Hv], [tc, Hv], [tc, Hv] */
    float *gdn_ws;         /* [Hv, ws_per_head] */
    size_t ws_per_head;
    float *rlog;           /* [tc, E] router logits / probabilities */
    int32_t *topi;         /* [tc, topk] */
    float *topw;           /* [tc, topk] */
    int *ecount, *eoff;    /* [E], [E+1] */
    int32_t *etok;         /* [tc*topk] token of each (expert, slot) entry */
    float *ew;             /* [tc*topk] its routing weight */
    float *xe, *ye;        /* [tc, H] */
    float *ge, *ue;        /* [tc, imax] */
    float *sg;             /* [tc] shared-expert gate logits */
};

/* ---------------------------------------------------------------------------------------- */
/* small math helpers */

static inline float silu(float x)
{
    return x / (1.0f + expf(-x));
}

static inline float sigmoidf_(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

/* torch.nn.functional.softplus with beta 1, threshold 20. */
static inline float softplus(float x)
{
    return x > 20.0f ? x : log1pf(expf(x));
}

static inline float dot(const float *a, const float *b, int n)
{
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* y = x * rsqrt(mean(x^2) + eps) * w for one row; w already includes the +1 where needed. */
static void rmsnorm_row(float *y, const float *x, const float *w, int n, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * (double)x[i];
    float r = (float)(1.0 / sqrt(ss / n + (double)eps));
    for (int i = 0; i < n; i++) y[i] = x[i] * r * w[i];
}

static void rmsnorm_rows(float *y, const float *x, const float *w, int rows, int n, float eps)
{
    for (int t = 0; t < rows; t++) rmsnorm_row(y + (size_t)t * n, x + (size_t)t * n, w, n, eps);
}

/* ---------------------------------------------------------------------------------------- */
/* init */

static enum hmoe_status want(const struct hmoe_tensor *t, int64_t rows, int64_t cols,
                             const char *what, int layer)
{
    if (t->dtype == HMOE_DT_NONE || !t->ndim)
        return hmoe_fail(HMOE_E_FORMAT, "forward: layer %d: tensor %s is missing", layer, what);
    if (t->shape[0] != rows || hmoe_tensor_numel(t) != rows * cols)
        return hmoe_fail(HMOE_E_FORMAT,
                         "forward: layer %d: tensor %s has %lld x %lld elements, expected "
                         "%lld x %lld",
                         layer, what, (long long)t->shape[0], (long long)hmoe_tensor_cols(t),
                         (long long)rows, (long long)cols);
    return HMOE_OK;
}

/* Converts a small tensor of n elements to f32 (+add to every element). NULL on OOM. */
static float *read_small(const struct hmoe_tensor *t, int64_t n, float add)
{
    float *p = malloc((size_t)n * sizeof(float));
    if (!p) return NULL;
    hmoe_tensor_read_f32(t, 0, n, p);
    if (add != 0.0f)
        for (int64_t i = 0; i < n; i++) p[i] += add;
    return p;
}

static enum hmoe_status check_mlp(const struct hmoe_mlp_w *w, int H, int I, int layer,
                                  const char *what)
{
    enum hmoe_status st;
    char name[64];
    snprintf(name, sizeof name, "%s.gate_proj", what);
    if ((st = want(&w->gate, I, H, name, layer))) return st;
    snprintf(name, sizeof name, "%s.up_proj", what);
    if ((st = want(&w->up, I, H, name, layer))) return st;
    snprintf(name, sizeof name, "%s.down_proj", what);
    return want(&w->down, H, I, name, layer);
}

static enum hmoe_status check_config(const struct hmoe_config *c)
{
    if (c->hidden_size <= 0 || c->num_layers <= 0 || c->num_layers > HMOE_MAX_LAYERS ||
        c->vocab_size <= 0)
        return hmoe_fail(HMOE_E_FORMAT, "forward: bad config (hidden %d, layers %d, vocab %d)",
                         c->hidden_size, c->num_layers, c->vocab_size);
    /* every width and every product of widths used below must stay far from INT_MAX */
    const int64_t lim = (int64_t)1 << 26;
    const int64_t prods[] = {
        c->hidden_size, c->vocab_size, (int64_t)c->num_heads * c->head_dim * 2,
        (int64_t)c->num_kv_heads * c->head_dim,
        (int64_t)c->linear_num_key_heads * c->linear_key_head_dim * 2 +
            (int64_t)c->linear_num_value_heads * c->linear_value_head_dim * 2,
        (int64_t)c->linear_conv_kernel_dim, (int64_t)c->num_experts * c->num_experts_per_tok,
        c->moe_intermediate_size, c->shared_expert_intermediate_size, c->intermediate_size};
    for (size_t i = 0; i < sizeof prods / sizeof prods[0]; i++)
        if (prods[i] > lim || prods[i] < 0)
            return hmoe_fail(HMOE_E_FORMAT, "forward: config dimension %lld is out of range",
                             (long long)prods[i]);
    int n_full = 0, n_lin = 0, n_moe = 0, n_dense = 0;
    for (int l = 0; l < c->num_layers; l++) {
        if (c->layer_types[l] == HMOE_LAYER_FULL) n_full++;
        else n_lin++;
        if (c->layer_is_moe[l]) n_moe++;
        else n_dense++;
    }
    if (n_full && (c->num_heads <= 0 || c->num_kv_heads <= 0 || c->head_dim <= 0 ||
                   c->num_heads % c->num_kv_heads || c->rotary_dim < 0 ||
                   c->rotary_dim > c->head_dim || c->rotary_dim % 2))
        return hmoe_fail(HMOE_E_FORMAT,
                         "forward: bad attention config (heads %d, kv heads %d, head_dim %d, "
                         "rotary_dim %d)",
                         c->num_heads, c->num_kv_heads, c->head_dim, c->rotary_dim);
    if (n_lin && (c->linear_num_key_heads <= 0 || c->linear_num_value_heads <= 0 ||
                  c->linear_num_value_heads % c->linear_num_key_heads ||
                  c->linear_key_head_dim <= 0 || c->linear_value_head_dim <= 0 ||
                  c->linear_conv_kernel_dim <= 0))
        return hmoe_fail(HMOE_E_FORMAT,
                         "forward: bad linear-attention config (key heads %d, value heads %d, "
                         "dk %d, dv %d, conv kernel %d)",
                         c->linear_num_key_heads, c->linear_num_value_heads,
                         c->linear_key_head_dim, c->linear_value_head_dim,
                         c->linear_conv_kernel_dim);
    if (n_moe && (c->num_experts <= 0 || c->num_experts_per_tok <= 0 ||
                  c->num_experts_per_tok > c->num_experts || c->moe_intermediate_size <= 0 ||
                  c->shared_expert_intermediate_size < 0))
        return hmoe_fail(HMOE_E_FORMAT, "forward: bad MoE config (experts %d, top-k %d, I %d)",
                         c->num_experts, c->num_experts_per_tok, c->moe_intermediate_size);
    if (n_dense && c->intermediate_size <= 0)
        return hmoe_fail(HMOE_E_FORMAT, "forward: bad intermediate_size %d",
                         c->intermediate_size);
    return HMOE_OK;
}

static enum hmoe_status check_layer(const struct hmoe_fwd *f, int l)
{
    const struct hmoe_layer_w *w = &f->m->layers[l];
    const struct hmoe_config *c = f->c;
    enum hmoe_status st;
    if ((st = want(&w->input_norm, f->H, 1, "input_layernorm", l))) return st;
    if ((st = want(&w->post_norm, f->H, 1, "post_attention_layernorm", l))) return st;
    if (c->layer_types[l] == HMOE_LAYER_FULL) {
        if ((st = want(&w->q_proj, 2LL * f->Hq * f->D, f->H, "q_proj", l))) return st;
        if ((st = want(&w->k_proj, (int64_t)f->Hkv * f->D, f->H, "k_proj", l))) return st;
        if ((st = want(&w->v_proj, (int64_t)f->Hkv * f->D, f->H, "v_proj", l))) return st;
        if ((st = want(&w->o_proj, f->H, (int64_t)f->Hq * f->D, "o_proj", l))) return st;
        if ((st = want(&w->q_norm, f->D, 1, "q_norm", l))) return st;
        if ((st = want(&w->k_norm, f->D, 1, "k_norm", l))) return st;
    } else {
        if ((st = want(&w->in_proj_qkvz, f->qkvz_dim, f->H, "in_proj_qkvz", l))) return st;
        if ((st = want(&w->in_proj_ba, 2LL * f->Hv, f->H, "in_proj_ba", l))) return st;
        if ((st = want(&w->conv1d, f->conv_dim, f->K, "conv1d", l))) return st;
        if ((st = want(&w->dt_bias, f->Hv, 1, "dt_bias", l))) return st;
        if ((st = want(&w->A_log, f->Hv, 1, "A_log", l))) return st;
        if ((st = want(&w->lin_norm, f->dv, 1, "linear_attn.norm", l))) return st;
        if ((st = want(&w->out_proj, f->H, f->value_dim, "out_proj", l))) return st;
    }
    if (c->layer_is_moe[l]) {
        if ((st = want(&w->router, f->E, f->H, "mlp.gate", l))) return st;
        if (c->shared_expert_intermediate_size > 0) {
            if ((st = want(&w->shared_gate, 1, f->H, "shared_expert_gate", l))) return st;
            if ((st = check_mlp(&w->shared, f->H, c->shared_expert_intermediate_size, l,
                                "shared_expert")))
                return st;
        }
        if (!w->experts)
            return hmoe_fail(HMOE_E_FORMAT, "forward: layer %d: routed experts missing", l);
        for (int e = 0; e < f->E; e++) {
            char name[48];
            snprintf(name, sizeof name, "experts.%d", e);
            if ((st = check_mlp(&w->experts[e], f->H, c->moe_intermediate_size, l, name)))
                return st;
        }
    } else {
        if ((st = check_mlp(&w->mlp, f->H, c->intermediate_size, l, "mlp"))) return st;
    }
    return HMOE_OK;
}

#define FWD_ALLOC(ptr, count)                                                                 \
    do {                                                                                      \
        size_t n_ = (size_t)(count);                                                          \
        (ptr) = calloc(n_ > 0 ? n_ : 1, sizeof(*(ptr)));                                      \
        if (!(ptr)) goto oom;                                                                 \
    } while (0)

static int imax3(int a, int b, int c)
{
    int m = a > b ? a : b;
    return m > c ? m : c;
}

enum hmoe_status hmoe_fwd_init(const struct hmoe_model *m, int max_ctx, struct hmoe_fwd **out)
{
    enum hmoe_status st;
    if (!m || !out) return hmoe_fail(HMOE_E_INVAL, "hmoe_fwd_init: NULL argument");
    *out = NULL;
    const struct hmoe_config *c = &m->cfg;
    if ((st = check_config(c))) return st;
    if (max_ctx < 0) return hmoe_fail(HMOE_E_INVAL, "hmoe_fwd_init: max_ctx %d < 0", max_ctx);
    if (max_ctx == 0) {
        max_ctx = c->max_position_embeddings > 0 ? c->max_position_embeddings : 4096;
        if (max_ctx > 4096) max_ctx = 4096;
    }

    struct hmoe_fwd *f = calloc(1, sizeof *f);
    if (!f) return hmoe_fail(HMOE_E_NOMEM, "hmoe_fwd_init: out of memory");
    f->m = m;
    f->c = c;
    f->max_ctx = max_ctx;
    f->tc = max_ctx < FWD_MAX_CHUNK ? max_ctx : FWD_MAX_CHUNK;
    f->H = c->hidden_size;
    f->V = c->vocab_size;
    f->L = c->num_layers;
    f->Hq = c->num_heads;
    f->Hkv = c->num_kv_heads;
    f->D = c->head_dim;
    f->rot = c->rotary_dim;
    f->Hk = c->linear_num_key_heads;
    f->Hv = c->linear_num_value_heads;
    f->dk = c->linear_key_head_dim;
    f->dv = c->linear_value_head_dim;
    f->K = c->linear_conv_kernel_dim;
    f->key_dim = f->Hk * f->dk;
    f->value_dim = f->Hv * f->dv;
    f->conv_dim = 2 * f->key_dim + f->value_dim;
    f->qkvz_dim = 2 * f->key_dim + 2 * f->value_dim;
    f->E = c->num_experts;
    f->topk = c->num_experts_per_tok;
    f->imax = imax3(c->moe_intermediate_size, c->shared_expert_intermediate_size,
                    c->intermediate_size);
    if (f->imax < 1) f->imax = 1;

    int n_full = 0, n_lin = 0, n_moe = 0;
    for (int l = 0; l < f->L; l++) {
        if (c->layer_types[l] == HMOE_LAYER_FULL) n_full++;
        else n_lin++;
        n_moe += c->layer_is_moe[l] != 0;
    }
    if (!n_moe) f->E = f->topk = 0;

    if ((st = want(&m->embed, f->V, f->H, "embed_tokens", -1))) goto fail;
    if ((st = want(&m->final_norm, f->H, 1, "model.norm", -1))) goto fail;
    {
        const struct hmoe_tensor *lm = m->lm_head.dtype != HMOE_DT_NONE ? &m->lm_head : &m->embed;
        if ((st = want(lm, f->V, f->H, "lm_head", -1))) goto fail;
    }
    if (!m->layers) {
        st = hmoe_fail(HMOE_E_FORMAT, "forward: model has no layers");
        goto fail;
    }
    for (int l = 0; l < f->L; l++)
        if ((st = check_layer(f, l))) goto fail;

    FWD_ALLOC(f->lay, f->L);
    if (!(f->final_norm = read_small(&m->final_norm, f->H, 1.0f))) goto oom;
    FWD_ALLOC(f->inv_freq, f->rot / 2);
    FWD_ALLOC(f->rope, f->rot);
    /* torch: 1 / base ** (arange(0, rot, 2).float() / rot), in fp32 */
    for (int j = 0; j < f->rot / 2; j++) {
        float ex = (float)(2 * j) / (float)f->rot;
        f->inv_freq[j] = 1.0f / powf(c->rope_theta, ex);
    }
    for (int l = 0; l < f->L; l++) {
        const struct hmoe_layer_w *w = &m->layers[l];
        struct fwd_layer *fl = &f->lay[l];
        if (!(fl->in_norm = read_small(&w->input_norm, f->H, 1.0f))) goto oom;
        if (!(fl->post_norm = read_small(&w->post_norm, f->H, 1.0f))) goto oom;
        if (c->layer_types[l] == HMOE_LAYER_FULL) {
            if (!(fl->q_norm = read_small(&w->q_norm, f->D, 1.0f))) goto oom;
            if (!(fl->k_norm = read_small(&w->k_norm, f->D, 1.0f))) goto oom;
            FWD_ALLOC(fl->k_cache, (size_t)max_ctx * f->Hkv * f->D);
            FWD_ALLOC(fl->v_cache, (size_t)max_ctx * f->Hkv * f->D);
        } else {
            if (!(fl->dt_bias = read_small(&w->dt_bias, f->Hv, 0.0f))) goto oom;
            if (!(fl->neg_exp_a = read_small(&w->A_log, f->Hv, 0.0f))) goto oom;
            for (int h = 0; h < f->Hv; h++) fl->neg_exp_a[h] = -expf(fl->neg_exp_a[h]);
            if (!(fl->lin_norm = read_small(&w->lin_norm, f->dv, 0.0f))) goto oom;
            if (!(fl->conv_w = read_small(&w->conv1d, (int64_t)f->conv_dim * f->K, 0.0f)))
                goto oom;
            FWD_ALLOC(fl->conv_state, (size_t)f->conv_dim * f->K);
            FWD_ALLOC(fl->rec_state, (size_t)f->Hv * f->dk * f->dv);
        }
    }

    size_t T = (size_t)f->tc;
    FWD_ALLOC(f->h, T * f->H);
    FWD_ALLOC(f->xn, T * f->H);
    FWD_ALLOC(f->blk, T * f->H);
    {
        size_t pw = n_lin ? (size_t)f->qkvz_dim : 0;
        if (n_full && (size_t)2 * f->Hq * f->D > pw) pw = (size_t)2 * f->Hq * f->D;
        FWD_ALLOC(f->proj, T * pw);
        size_t aw = n_lin ? (size_t)f->value_dim : 0;
        if (n_full && (size_t)f->Hq * f->D > aw) aw = (size_t)f->Hq * f->D;
        FWD_ALLOC(f->ao, T * aw);
    }
    if (n_full) {
        FWD_ALLOC(f->kb, T * f->Hkv * f->D);
        FWD_ALLOC(f->vb, T * f->Hkv * f->D);
        FWD_ALLOC(f->scores, (size_t)f->Hq * max_ctx);
    }
    if (n_lin) {
        FWD_ALLOC(f->mixed, T * f->conv_dim);
        FWD_ALLOC(f->conv, T * f->conv_dim);
        FWD_ALLOC(f->z, T * f->value_dim);
        FWD_ALLOC(f->ba, T * 2 * f->Hv);
        FWD_ALLOC(f->beta, T * f->Hv);
        FWD_ALLOC(f->gg, T * f->Hv);
        /* gamma, kv/delta vectors, A, P, U, W, Vnew per head */
        f->ws_per_head = (size_t)GDN_CHUNK + 2 * (size_t)f->dv +
                         2 * (size_t)GDN_CHUNK * GDN_CHUNK +
                         (size_t)GDN_CHUNK * (2 * (size_t)f->dv + f->dk);
        FWD_ALLOC(f->gdn_ws, (size_t)f->Hv * f->ws_per_head);
    }
    if (n_moe) {
        FWD_ALLOC(f->rlog, T * f->E);
        FWD_ALLOC(f->topi, T * f->topk);
        FWD_ALLOC(f->topw, T * f->topk);
        FWD_ALLOC(f->ecount, f->E);
        FWD_ALLOC(f->eoff, f->E + 1);
        FWD_ALLOC(f->etok, T * f->topk);
        FWD_ALLOC(f->ew, T * f->topk);
        FWD_ALLOC(f->sg, T);
    }
    FWD_ALLOC(f->xe, T * f->H);
    FWD_ALLOC(f->ye, T * f->H);
    FWD_ALLOC(f->ge, T * f->imax);
    FWD_ALLOC(f->ue, T * f->imax);
    *out = f;
    return HMOE_OK;

oom:
    st = hmoe_fail(HMOE_E_NOMEM, "hmoe_fwd_init: out of memory (max_ctx %d)", max_ctx);
fail:
    hmoe_fwd_free(f);
    return st;
}

void hmoe_fwd_free(struct hmoe_fwd *f)
{
    if (!f) return;
    if (f->lay) {
        for (int l = 0; l < f->L; l++) {
            struct fwd_layer *fl = &f->lay[l];
            free(fl->in_norm);
            free(fl->post_norm);
            free(fl->q_norm);
            free(fl->k_norm);
            free(fl->k_cache);
            free(fl->v_cache);
            free(fl->dt_bias);
            free(fl->neg_exp_a);
            free(fl->lin_norm);
            free(fl->conv_w);
            free(fl->conv_state);
            free(fl->rec_state);
        }
        free(f->lay);
    }
    void *bufs[] = {f->final_norm, f->inv_freq, f->rope, f->h,    f->xn,     f->blk,  f->proj,
                    f->kb,         f->vb,       f->ao,   f->scores, f->mixed, f->conv,
                    f->z,          f->ba,       f->beta, f->gg,     f->gdn_ws, f->rlog,
                    f->topi,       f->topw,     f->ecount, f->eoff, f->etok, f->ew,
                    f->xe,         f->ye,       f->ge,   f->ue,     f->sg};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(f);
}

void hmoe_fwd_reset(struct hmoe_fwd *f)
{
    if (!f) return;
    f->pos = 0;
    f->broken = 0;
    for (int l = 0; l < f->L; l++) {
        struct fwd_layer *fl = &f->lay[l];
        /* KV rows past pos are never read, so only the linear-attention state needs zeroing */
        if (fl->conv_state) memset(fl->conv_state, 0, (size_t)f->conv_dim * f->K * sizeof(float));
        if (fl->rec_state)
            memset(fl->rec_state, 0, (size_t)f->Hv * f->dk * f->dv * sizeof(float));
    }
}

void hmoe_fwd_set_moe_hook(struct hmoe_fwd *f, const struct hmoe_moe_hook *hook)
{
    if (!f) return;
    if (hook && hook->routed) {
        f->hook = *hook;
        f->has_hook = 1;
    } else {
        memset(&f->hook, 0, sizeof f->hook);
        f->has_hook = 0;
    }
}

int hmoe_fwd_pos(const struct hmoe_fwd *f)
{
    return f ? f->pos : 0;
}

/* ---------------------------------------------------------------------------------------- */
/* full attention (MODEL.md §1.4, §1.5) */

/* In place: q'[i] = q[i]cos - q[i+r/2]sin, q'[i+r/2] = q[i+r/2]cos + q[i]sin for i < r/2. */
static void rope_apply(float *v, const float *cs, const float *sn, int half)
{
    for (int i = 0; i < half; i++) {
        float a = v[i], b = v[i + half];
        v[i] = a * cs[i] - b * sn[i];
        v[i + half] = b * cs[i] + a * sn[i];
    }
}

static void attention_layer(struct hmoe_fwd *f, int l, int n)
{
    const struct hmoe_layer_w *w = &f->m->layers[l];
    struct fwd_layer *fl = &f->lay[l];
    const int Hq = f->Hq, Hkv = f->Hkv, D = f->D, half = f->rot / 2;
    const int pos0 = f->pos;
    const float eps = f->c->rms_norm_eps;
    float *qg = f->proj; /* (n, Hq*2D): per head [q(D) | gate(D)] */

    hmoe_matmul(&w->q_proj, f->xn, qg, n);
    hmoe_matmul(&w->k_proj, f->xn, f->kb, n);
    hmoe_matmul(&w->v_proj, f->xn, f->vb, n);

    for (int t = 0; t < n; t++) {
        float *csp = f->rope, *snp = f->rope + half;
        float p = (float)(pos0 + t);
        for (int i = 0; i < half; i++) {
            float ang = p * f->inv_freq[i];
            csp[i] = (float)cos((double)ang);
            snp[i] = (float)sin((double)ang);
        }
        for (int h = 0; h < Hq; h++) {
            float *q = qg + (size_t)t * 2 * Hq * D + (size_t)h * 2 * D;
            rmsnorm_row(q, q, fl->q_norm, D, eps);
            rope_apply(q, csp, snp, half);
        }
        for (int h = 0; h < Hkv; h++) {
            float *k = f->kb + ((size_t)t * Hkv + h) * D;
            rmsnorm_row(k, k, fl->k_norm, D, eps);
            rope_apply(k, csp, snp, half);
        }
        size_t row = (size_t)(pos0 + t) * Hkv * D;
        memcpy(fl->k_cache + row, f->kb + (size_t)t * Hkv * D, (size_t)Hkv * D * sizeof(float));
        memcpy(fl->v_cache + row, f->vb + (size_t)t * Hkv * D, (size_t)Hkv * D * sizeof(float));
    }

    const float scale = 1.0f / sqrtf((float)D);
    const int group = Hq / Hkv;
    const double att_work = (double)n * (pos0 + n) * D * Hq;
    HMOE_OMP_FOR_IF(att_work)
    for (int h = 0; h < Hq; h++) {
        float *sc = f->scores + (size_t)h * f->max_ctx;
        const int kvh = h / group;
        for (int t = 0; t < n; t++) {
            const float *q = qg + (size_t)t * 2 * Hq * D + (size_t)h * 2 * D;
            const float *gate = q + D;
            const int ns = pos0 + t + 1; /* causal: keys 0..pos0+t */
            float mx = -INFINITY;
            for (int s = 0; s < ns; s++) {
                sc[s] = dot(q, fl->k_cache + ((size_t)s * Hkv + kvh) * D, D) * scale;
                if (sc[s] > mx) mx = sc[s];
            }
            double sum = 0.0;
            for (int s = 0; s < ns; s++) {
                sc[s] = expf(sc[s] - mx);
                sum += (double)sc[s];
            }
            float inv = (float)(1.0 / sum);
            float *o = f->ao + (size_t)t * Hq * D + (size_t)h * D;
            memset(o, 0, (size_t)D * sizeof(float));
            for (int s = 0; s < ns; s++) {
                const float pr = sc[s] * inv;
                const float *v = fl->v_cache + ((size_t)s * Hkv + kvh) * D;
                for (int d = 0; d < D; d++) o[d] += pr * v[d];
            }
            for (int d = 0; d < D; d++) o[d] *= sigmoidf_(gate[d]);
        }
    }
    hmoe_matmul(&w->o_proj, f->ao, f->blk, n);
}

/* ---------------------------------------------------------------------------------------- */
/* Gated DeltaNet (MODEL.md §1.6, §3.3) */

/* Recurrent form for one value head over n tokens. S: [dk, dv]. q, k token stride ks; v, o
 * token stride vs; beta, g token stride bs. kv: [dv] scratch. */
static void gdn_recurrent_head(int n, int dk, int dv, const float *q, const float *k, size_t ks,
                               const float *v, size_t vs, const float *beta, const float *g,
                               size_t bs, float *S, float *o, size_t os, float *kv)
{
    for (int t = 0; t < n; t++) {
        const float *qt = q + t * ks, *kt = k + t * ks, *vt = v + t * vs;
        const float decay = expf(g[t * bs]), bt = beta[t * bs];
        for (int e = 0; e < dv; e++) kv[e] = 0.0f;
        for (int d = 0; d < dk; d++) {
            float *Sd = S + (size_t)d * dv;
            for (int e = 0; e < dv; e++) {
                Sd[e] *= decay;
                kv[e] += Sd[e] * kt[d];
            }
        }
        for (int e = 0; e < dv; e++) kv[e] = (vt[e] - kv[e]) * bt; /* delta */
        float *ot = o + t * os;
        for (int e = 0; e < dv; e++) ot[e] = 0.0f;
        for (int d = 0; d < dk; d++) {
            float *Sd = S + (size_t)d * dv;
            const float kd = kt[d], qd = qt[d];
            for (int e = 0; e < dv; e++) {
                Sd[e] += kd * kv[e];
                ot[e] += Sd[e] * qd;
            }
        }
    }
}

/* Chunked form (chunk 64) for one value head; same arguments as the recurrent form, ws holds
 * the per-head workspace. Mathematically identical to gdn_recurrent_head. */
static void gdn_chunked_head(int n, int dk, int dv, const float *q, const float *k, size_t ks,
                             const float *v, size_t vs, const float *beta, const float *g,
                             size_t bs, float *S, float *o, size_t os, float *ws)
{
    const int C = GDN_CHUNK;
    float *gam = ws;                 /* [C] cumulative g within the chunk */
    float *A = gam + C;              /* [C, C] (I + L)^-1 */
    float *P = A + (size_t)C * C;    /* [C, C] masked decayed q k^T */
    float *U = P + (size_t)C * C;    /* [C, dv] */
    float *Vn = U + (size_t)C * dv;  /* [C, dv] */
    float *W = Vn + (size_t)C * dv;  /* [C, dk] */
    for (int c0 = 0; c0 < n; c0 += C) {
        const int Lc = n - c0 < C ? n - c0 : C;
        const float *qc = q + c0 * ks, *kc = k + c0 * ks, *vc = v + c0 * vs;
        const float *bc = beta + c0 * bs, *gc = g + c0 * bs;
        float acc = 0.0f;
        for (int i = 0; i < Lc; i++) {
            acc += gc[i * bs];
            gam[i] = acc;
        }
        /* A = -(Kb K^T o Dm), strictly lower */
        for (int i = 0; i < Lc; i++) {
            float *Ai = A + (size_t)i * C;
            for (int j = 0; j < i; j++)
                Ai[j] = -bc[i * bs] * dot(kc + i * ks, kc + j * ks, dk) * expf(gam[i] - gam[j]);
            for (int j = i; j < Lc; j++) Ai[j] = 0.0f;
        }
        /* forward substitution: row i += row i @ A[:i,:i] (rows < i already final) */
        for (int i = 1; i < Lc; i++) {
            float *Ai = A + (size_t)i * C;
            float row[GDN_CHUNK];
            memcpy(row, Ai, (size_t)i * sizeof(float));
            for (int j = 0; j < i; j++) {
                float s = row[j];
                for (int mm = j + 1; mm < i; mm++) s += row[mm] * A[(size_t)mm * C + j];
                Ai[j] = s;
            }
        }
        for (int i = 0; i < Lc; i++) A[(size_t)i * C + i] = 1.0f;
        /* U = A (V*beta), W = A (K*beta*exp(gam)) */
        for (int i = 0; i < Lc; i++) {
            float *Ui = U + (size_t)i * dv, *Wi = W + (size_t)i * dk;
            memset(Ui, 0, (size_t)dv * sizeof(float));
            memset(Wi, 0, (size_t)dk * sizeof(float));
            for (int j = 0; j <= i; j++) {
                const float a = A[(size_t)i * C + j] * bc[j * bs];
                const float aw = a * expf(gam[j]);
                const float *vj = vc + j * vs, *kj = kc + j * ks;
                for (int e = 0; e < dv; e++) Ui[e] += a * vj[e];
                for (int d = 0; d < dk; d++) Wi[d] += aw * kj[d];
            }
        }
        /* Vnew = U - W S ; O = (q*exp(gam)) S + P Vnew */
        for (int i = 0; i < Lc; i++) {
            float *Vi = Vn + (size_t)i * dv, *oi = o + (c0 + i) * os;
            const float *Wi = W + (size_t)i * dk, *qi = qc + i * ks;
            const float eg = expf(gam[i]);
            memcpy(Vi, U + (size_t)i * dv, (size_t)dv * sizeof(float));
            memset(oi, 0, (size_t)dv * sizeof(float));
            for (int d = 0; d < dk; d++) {
                const float *Sd = S + (size_t)d * dv;
                const float wd = Wi[d], qd = qi[d] * eg;
                for (int e = 0; e < dv; e++) {
                    Vi[e] -= wd * Sd[e];
                    oi[e] += qd * Sd[e];
                }
            }
            for (int j = 0; j <= i; j++)
                P[(size_t)i * C + j] = dot(qi, kc + j * ks, dk) * expf(gam[i] - gam[j]);
        }
        for (int i = 0; i < Lc; i++) {
            float *oi = o + (c0 + i) * os;
            for (int j = 0; j <= i; j++) {
                const float pij = P[(size_t)i * C + j];
                const float *Vj = Vn + (size_t)j * dv;
                for (int e = 0; e < dv; e++) oi[e] += pij * Vj[e];
            }
        }
        /* S = S*exp(gam_last) + (K o exp(gam_last - gam))^T Vnew */
        const float gl = gam[Lc - 1], el = expf(gl);
        for (int d = 0; d < dk; d++) {
            float *Sd = S + (size_t)d * dv;
            for (int e = 0; e < dv; e++) Sd[e] *= el;
        }
        for (int i = 0; i < Lc; i++) {
            const float *ki = kc + i * ks, *Vi = Vn + (size_t)i * dv;
            const float di = expf(gl - gam[i]);
            for (int d = 0; d < dk; d++) {
                float *Sd = S + (size_t)d * dv;
                const float kd = ki[d] * di;
                for (int e = 0; e < dv; e++) Sd[e] += kd * Vi[e];
            }
        }
    }
}

static void l2norm_scale(float *u, int n, float scale)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)u[i] * (double)u[i];
    float r = (float)(1.0 / sqrt(ss + 1e-6)) * scale;
    for (int i = 0; i < n; i++) u[i] *= r;
}

static void gdn_layer(struct hmoe_fwd *f, int l, int n, int chunked)
{
    const struct hmoe_layer_w *w = &f->m->layers[l];
    struct fwd_layer *fl = &f->lay[l];
    const int Hk = f->Hk, Hv = f->Hv, dk = f->dk, dv = f->dv, K = f->K;
    const int ratio = Hv / Hk, cd = f->conv_dim, kd = f->key_dim;
    const int gw = 2 * dk + 2 * ratio * dv; /* qkvz group width per key head */
    float *qkvz = f->proj;

    hmoe_matmul(&w->in_proj_qkvz, f->xn, qkvz, n);
    hmoe_matmul(&w->in_proj_ba, f->xn, f->ba, n);

    /* de-interleave into mixed = [q | k | v] (pre-conv), z, b, a */
    for (int t = 0; t < n; t++) {
        const float *src = qkvz + (size_t)t * f->qkvz_dim;
        float *mx = f->mixed + (size_t)t * cd;
        float *zt = f->z + (size_t)t * f->value_dim;
        for (int g = 0; g < Hk; g++) {
            const float *grp = src + (size_t)g * gw;
            memcpy(mx + (size_t)g * dk, grp, (size_t)dk * sizeof(float));
            memcpy(mx + kd + (size_t)g * dk, grp + dk, (size_t)dk * sizeof(float));
            memcpy(mx + 2 * kd + (size_t)g * ratio * dv, grp + 2 * dk,
                   (size_t)ratio * dv * sizeof(float));
            memcpy(zt + (size_t)g * ratio * dv, grp + 2 * dk + (size_t)ratio * dv,
                   (size_t)ratio * dv * sizeof(float));
        }
        const float *bat = f->ba + (size_t)t * 2 * Hv;
        for (int g = 0; g < Hk; g++)
            for (int r = 0; r < ratio; r++) {
                const int h = g * ratio + r;
                const float b = bat[g * 2 * ratio + r], a = bat[g * 2 * ratio + ratio + r];
                f->beta[(size_t)t * Hv + h] = sigmoidf_(b);
                f->gg[(size_t)t * Hv + h] = fl->neg_exp_a[h] * softplus(a + fl->dt_bias[h]);
            }
    }

    /* causal depthwise conv over [state (K cols) | new n cols], SiLU; keep the last K cols */
    const double conv_work = (double)n * cd * K;
    HMOE_OMP_FOR_IF(conv_work)
    for (int ch = 0; ch < cd; ch++) {
        float *st = fl->conv_state + (size_t)ch * K;
        const float *wc = fl->conv_w + (size_t)ch * K;
        for (int t = 0; t < n; t++) {
            float y = 0.0f;
            for (int j = 0; j < K; j++) {
                const int col = t + 1 + j; /* window column; < K: state, else new token */
                const float xv = col < K ? st[col] : f->mixed[(size_t)(col - K) * cd + ch];
                y += wc[j] * xv;
            }
            f->conv[(size_t)t * cd + ch] = silu(y);
        }
        for (int j = 0; j < K; j++) {
            const int col = n + j;
            st[j] = col < K ? st[col] : f->mixed[(size_t)(col - K) * cd + ch];
        }
    }

    /* l2norm q (scaled by dk^-0.5) and k per key head */
    const float qscale = 1.0f / sqrtf((float)dk);
    for (int t = 0; t < n; t++)
        for (int g = 0; g < Hk; g++) {
            float *cv = f->conv + (size_t)t * cd;
            l2norm_scale(cv + (size_t)g * dk, dk, qscale);
            l2norm_scale(cv + kd + (size_t)g * dk, dk, 1.0f);
        }

    /* delta rule per value head; value head h uses key head h / ratio */
    const double gdn_work = (double)n * Hv * dk * dv * (chunked ? 4 : 2);
    HMOE_OMP_FOR_IF(gdn_work)
    for (int h = 0; h < Hv; h++) {
        const int kh = h / ratio;
        float *ws = f->gdn_ws + (size_t)h * f->ws_per_head;
        const float *q = f->conv + (size_t)kh * dk;
        const float *k = f->conv + kd + (size_t)kh * dk;
        const float *v = f->conv + 2 * kd + (size_t)h * dv;
        float *S = fl->rec_state + (size_t)h * dk * dv;
        float *o = f->ao + (size_t)h * dv;
        if (chunked)
            gdn_chunked_head(n, dk, dv, q, k, cd, v, cd, f->beta + h, f->gg + h, Hv, S, o,
                             f->value_dim, ws);
        else
            gdn_recurrent_head(n, dk, dv, q, k, cd, v, cd, f->beta + h, f->gg + h, Hv, S, o,
                               f->value_dim, ws);
    }

    /* gated RMSNorm per value head: w * norm(o) * silu(z) */
    const float eps = f->c->rms_norm_eps;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < Hv; h++) {
            float *o = f->ao + (size_t)t * f->value_dim + (size_t)h * dv;
            const float *zz = f->z + (size_t)t * f->value_dim + (size_t)h * dv;
            rmsnorm_row(o, o, fl->lin_norm, dv, eps);
            for (int e = 0; e < dv; e++) o[e] *= silu(zz[e]);
        }
    hmoe_matmul(&w->out_proj, f->ao, f->blk, n);
}

/* ---------------------------------------------------------------------------------------- */
/* MLP / MoE (MODEL.md §1.7) */

/* ye = down(silu(gate(x)) * up(x)) for n rows of x. */
static void mlp_run(struct hmoe_fwd *f, const struct hmoe_mlp_w *w, const float *x, int n,
                    float *ye)
{
    const int I = (int)w->gate.shape[0];
    hmoe_matmul(&w->gate, x, f->ge, n);
    hmoe_matmul(&w->up, x, f->ue, n);
    for (size_t i = 0; i < (size_t)n * I; i++) f->ge[i] = silu(f->ge[i]) * f->ue[i];
    hmoe_matmul(&w->down, f->ge, ye, n);
}

/* In-process routed experts: tokens grouped by expert so each expert is dequantized once. */
static enum hmoe_status routed_local(struct hmoe_fwd *f, int l, int n, const float *x,
                                     const int32_t *idx, const float *wt, float *out)
{
    const int E = f->E, k = f->topk, H = f->H;
    const struct hmoe_mlp_w *ex = f->m->layers[l].experts;
    memset(f->ecount, 0, (size_t)E * sizeof(int));
    for (int i = 0; i < n * k; i++) f->ecount[idx[i]]++;
    f->eoff[0] = 0;
    for (int e = 0; e < E; e++) f->eoff[e + 1] = f->eoff[e] + f->ecount[e];
    memset(f->ecount, 0, (size_t)E * sizeof(int));
    for (int t = 0; t < n; t++)
        for (int j = 0; j < k; j++) {
            const int e = idx[t * k + j];
            const int slot = f->eoff[e] + f->ecount[e]++;
            f->etok[slot] = t;
            f->ew[slot] = wt[t * k + j];
        }
    for (int e = 0; e < E; e++) {
        const int ne = f->eoff[e + 1] - f->eoff[e];
        if (!ne) continue;
        const int32_t *toks = f->etok + f->eoff[e];
        const float *ws = f->ew + f->eoff[e];
        for (int i = 0; i < ne; i++)
            memcpy(f->xe + (size_t)i * H, x + (size_t)toks[i] * H, (size_t)H * sizeof(float));
        mlp_run(f, &ex[e], f->xe, ne, f->ye);
        for (int i = 0; i < ne; i++) {
            float *o = out + (size_t)toks[i] * H;
            const float *y = f->ye + (size_t)i * H;
            for (int d = 0; d < H; d++) o[d] += ws[i] * y[d];
        }
    }
    return HMOE_OK;
}

static enum hmoe_status moe_layer(struct hmoe_fwd *f, int l, int n)
{
    const struct hmoe_layer_w *w = &f->m->layers[l];
    const int E = f->E, k = f->topk, H = f->H;
    hmoe_matmul(&w->router, f->xn, f->rlog, n);
    for (int t = 0; t < n; t++) {
        float *p = f->rlog + (size_t)t * E;
        float mx = p[0];
        for (int e = 1; e < E; e++)
            if (p[e] > mx) mx = p[e];
        float sum = 0.0f;
        for (int e = 0; e < E; e++) {
            p[e] = expf(p[e] - mx);
            sum += p[e];
        }
        const float inv = 1.0f / sum;
        for (int e = 0; e < E; e++) p[e] *= inv;
        /* top-k by probability, ties to the lower index; chosen entries marked by -1 */
        int32_t *ti = f->topi + (size_t)t * k;
        float *tw = f->topw + (size_t)t * k;
        float wsum = 0.0f;
        for (int j = 0; j < k; j++) {
            int best = -1;
            for (int e = 0; e < E; e++)
                if (p[e] >= 0.0f && (best < 0 || p[e] > p[best])) best = e;
            HMOE_ASSERT(best >= 0);
            ti[j] = best;
            tw[j] = p[best];
            wsum += p[best];
            p[best] = -1.0f;
        }
        if (f->c->norm_topk_prob)
            for (int j = 0; j < k; j++) tw[j] /= wsum;
    }
    memset(f->blk, 0, (size_t)n * H * sizeof(float));
    enum hmoe_status st;
    if (f->has_hook)
        st = f->hook.routed(f->hook.ctx, l, n, f->xn, f->topi, f->topw, f->blk);
    else
        st = routed_local(f, l, n, f->xn, f->topi, f->topw, f->blk);
    if (st) {
        hmoe_err_prefix("layer %d routed experts", l);
        return st;
    }
    if (f->c->shared_expert_intermediate_size > 0) {
        hmoe_matmul(&w->shared_gate, f->xn, f->sg, n);
        mlp_run(f, &w->shared, f->xn, n, f->ye);
        for (int t = 0; t < n; t++) {
            const float s = sigmoidf_(f->sg[t]);
            float *o = f->blk + (size_t)t * H;
            const float *y = f->ye + (size_t)t * H;
            for (int d = 0; d < H; d++) o[d] += s * y[d];
        }
    }
    return HMOE_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* the stack */

/* One sub-call of n <= tc tokens at f->pos. logits: (n, V) or last row only, or NULL. */
static enum hmoe_status run_part(struct hmoe_fwd *f, const int32_t *tok, int n, int chunked,
                                 float *logits, int last_only)
{
    const int H = f->H;
    const size_t nh = (size_t)n * H;
    for (int t = 0; t < n; t++)
        hmoe_tensor_read_f32(&f->m->embed, (int64_t)tok[t] * H, H, f->h + (size_t)t * H);
    const float eps = f->c->rms_norm_eps;
    for (int l = 0; l < f->L; l++) {
        struct fwd_layer *fl = &f->lay[l];
        rmsnorm_rows(f->xn, f->h, fl->in_norm, n, H, eps);
        if (f->c->layer_types[l] == HMOE_LAYER_FULL) attention_layer(f, l, n);
        else gdn_layer(f, l, n, chunked);
        for (size_t i = 0; i < nh; i++) f->h[i] += f->blk[i];
        rmsnorm_rows(f->xn, f->h, fl->post_norm, n, H, eps);
        if (f->c->layer_is_moe[l]) {
            enum hmoe_status st = moe_layer(f, l, n);
            if (st) return st;
        } else {
            mlp_run(f, &f->m->layers[l].mlp, f->xn, n, f->blk);
        }
        for (size_t i = 0; i < nh; i++) f->h[i] += f->blk[i];
    }
    f->pos += n;
    if (!logits) return HMOE_OK;
    const struct hmoe_tensor *lm =
        f->m->lm_head.dtype != HMOE_DT_NONE ? &f->m->lm_head : &f->m->embed;
    if (last_only) {
        rmsnorm_row(f->xn, f->h + (size_t)(n - 1) * H, f->final_norm, H, eps);
        hmoe_matmul(lm, f->xn, logits, 1);
    } else {
        rmsnorm_rows(f->xn, f->h, f->final_norm, n, H, eps);
        hmoe_matmul(lm, f->xn, logits, n);
    }
    return HMOE_OK;
}

enum hmoe_status hmoe_fwd_run(struct hmoe_fwd *f, const int32_t *tokens, int n, float *logits,
                              int last_only)
{
    if (!f || !tokens || n <= 0)
        return hmoe_fail(HMOE_E_INVAL, "hmoe_fwd_run: need a forward state and n > 0 tokens");
    if (f->broken)
        return hmoe_fail(HMOE_E_INVAL, "hmoe_fwd_run: an earlier call failed half-way; the "
                                       "sequence must be reset");
    if (n > f->max_ctx - f->pos)
        return hmoe_fail(HMOE_E_RANGE, "context full: position %d + %d tokens > max_ctx %d",
                         f->pos, n, f->max_ctx);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= f->V)
            return hmoe_fail(HMOE_E_INVAL, "token id %d at index %d is outside the vocabulary "
                                           "[0, %d)",
                             (int)tokens[i], i, f->V);
    /* n > 1 is a prefill: chunked delta rule, split into sub-calls of tc tokens that continue
     * from the caches exactly as one call would */
    const int chunked = n > 1;
    for (int i = 0; i < n; i += f->tc) {
        const int part = n - i < f->tc ? n - i : f->tc;
        const int last_part = i + part == n;
        float *lg = NULL;
        if (logits && !last_only) lg = logits + (size_t)i * f->V;
        else if (logits && last_part) lg = logits;
        enum hmoe_status st = run_part(f, tokens + i, part, chunked, lg, last_only);
        if (st) {
            f->broken = 1; /* some layers consumed these tokens, others did not */
            return st;
        }
    }
    return HMOE_OK;
}
