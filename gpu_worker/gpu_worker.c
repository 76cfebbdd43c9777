/* gpu_worker/gpu_worker.c: hmoe-gpu-worker. Loads the model, runs the forward pass for the
 * coordinator's StepBegin messages and writes the last logits to the logits region. Backend
 * "cpu" (hmoe_fwd): per MoE layer the routed-expert hook splits the (token, expert) pairs:
 * experts resident here (a byte budget) run in-process, the rest are posted to the owning expert
 * worker's shared-memory queue, its doorbell rung, and the weighted outputs added back in
 * ascending expert order per token (bit-identical to hmoe-eval's in-process experts). Backend
 * "cuda" (hmoe_gfwd, built with CUDA): the VRAM budget decides which experts are resident on the
 * device; the hook gets the others (device slots arrive as idx -1) and posts them the same way. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hmoe/forward.h"
#ifdef HMOE_HAVE_CUDA
#include "hmoe/gpu_forward.h"
#endif
#include "hmoe/log.h"
#include "hmoe/model.h"
#include "hmoe/shm.h"
#include "hmoe/worker_link.h"
#include "hmoe/xq.h"

struct gw {
    struct hmoe_worker_link link;
    struct hmoe_model *m;
    struct hmoe_fwd *fwd; /* backend cpu */
#ifdef HMOE_HAVE_CUDA
    struct hmoe_gfwd *gf; /* backend cuda */
#endif
    int cuda; /* backend cuda in use */
    uint64_t vram_budget, vram_used;
    int H, E, K, L, I, V, max_ctx;
    /* config */
    char model[4096];
    uint64_t resident_bytes;
    int W;       /* expert workers */
    int cap_tok; /* tokens per hand-off slab */
    uint32_t spin_us, timeout_ms;
    /* data plane */
    int attached;
    struct hmoe_shm *xshm; /* [W] */
    struct hmoe_xq *xq;    /* [W] */
    struct hmoe_shm lshm;
    struct hmoe_logits_ctl *lg;
    uint8_t *home; /* [L*E]: 0 resident, 1+i worker i, 254 host CPU (cuda, no workers), 255 none */
    uint32_t n_resident;
    uint64_t resident_used;
    /* hook scratch */
    float *ypair;                /* (cap_tok*K, H) weighted output per (token, slot) */
    struct hmoe_xq_pair *rpairs; /* (cap_tok*K) resident pairs */
    int32_t *rslot;              /* (cap_tok*K) */
    float *rout;                 /* (cap_tok*K, H) */
    int32_t *wslot;              /* [W][cap_tok*K] */
    int *wcnt;                   /* [W] */
    uint32_t *wseq;              /* [W] request sequence posted */
    struct hmoe_xq_scratch scr;
    /* step counters */
    uint64_t handoff_us;
    uint32_t n_off, n_res_pairs;
    uint32_t *w_handoffs, *w_pairs; /* [W] this step, per expert worker (StepEnd) */
    uint64_t *w_compute_us;         /* [W] */
    int broken;                     /* a step failed midway: the sequence must be reset */
    int failed_worker; /* 1 + index of the expert worker that failed the step, 0 = none */
};

/* ---- the routed-expert hook ------------------------------------------------------------- */

static enum hmoe_status slab(struct gw *g, int l, int t0, int nt, const float *x,
                             const int32_t *idx, const float *w, float *out)
{
    const int H = g->H, K = g->K, E = g->E, cap = g->cap_tok * K;
    int n_res = 0;
    for (int i = 0; i < g->W; i++)
        g->wcnt[i] = 0;
    for (int t = 0; t < nt; t++)
        for (int k = 0; k < K; k++) {
            const int s = t * K + k;
            const int e = idx[(size_t)(t0 + t) * K + k];
            if (e < 0) continue; /* cuda: a slot the device computes itself */
            HMOE_ASSERT(e < E);
            struct hmoe_xq_pair pr = {t, e, w[(size_t)(t0 + t) * K + k], 0};
            const int h = g->home[(size_t)l * E + e];
            HMOE_ASSERT(h != 254 && !(h == 0 && g->cuda)); /* cuda: resident slots come as -1 */
            if (h == 0) {
                g->rpairs[n_res] = pr;
                g->rslot[n_res++] = s;
            } else {
                const int i = h - 1;
                HMOE_ASSERT(i < g->W);
                g->xq[i].pairs[g->wcnt[i]] = pr;
                g->wslot[(size_t)i * cap + g->wcnt[i]++] = s;
            }
        }
    /* post to every worker that has pairs, then compute resident experts meanwhile */
    for (int i = 0; i < g->W; i++) {
        if (!g->wcnt[i]) continue;
        struct hmoe_xq_ctl *c = g->xq[i].ctl;
        if (!atomic_load(&c->alive)) {
            g->failed_worker = i + 1;
            return hmoe_fail(HMOE_E_PEER_DEAD, "expert worker E%d is down", i);
        }
        memcpy(g->xq[i].x, x + (size_t)t0 * H, (size_t)nt * H * sizeof(float));
        c->layer = l;
        c->n_tok = nt;
        c->n_pairs = g->wcnt[i];
        c->status = 0;
        g->wseq[i] = hmoe_doorbell_ring(&c->req);
        g->n_off += (uint32_t)g->wcnt[i];
    }
    if (n_res) {
        enum hmoe_status st = hmoe_xq_compute(&g->scr, g->m->layers[l].experts, E, g->rpairs, n_res,
                                              x + (size_t)t0 * H, g->rout);
        if (st) return st;
        for (int p = 0; p < n_res; p++)
            memcpy(g->ypair + (size_t)g->rslot[p] * H, g->rout + (size_t)p * H,
                   (size_t)H * sizeof(float));
        g->n_res_pairs += (uint32_t)n_res;
    }
    uint64_t t_wait = hmoe_now_us();
    enum hmoe_status fail = HMOE_OK;
    for (int i = 0; i < g->W; i++) {
        if (!g->wcnt[i]) continue;
        struct hmoe_xq_ctl *c = g->xq[i].ctl;
        struct hmoe_doorbell_wait wt = {g->spin_us, g->timeout_ms, &c->alive};
        enum hmoe_status st = hmoe_doorbell_wait_for(&c->resp, g->wseq[i], &wt);
        if (st != HMOE_OK) {
            if (!fail) {
                hmoe_err_prefix("expert worker E%d (layer %d)", i, l);
                fail = st;
                g->failed_worker = i + 1;
            }
            continue;
        }
        if (c->status != 0 && !fail) {
            g->failed_worker = i + 1;
            c->error[sizeof c->error - 1] = 0;
            fail = hmoe_fail((enum hmoe_status)c->status, "expert worker E%d (layer %d): %s", i, l,
                             c->error);
            continue;
        }
        g->w_handoffs[i]++;
        g->w_pairs[i] += (uint32_t)g->wcnt[i];
        g->w_compute_us[i] += c->compute_ns / 1000u;
        for (int p = 0; p < g->wcnt[i]; p++)
            memcpy(g->ypair + (size_t)g->wslot[(size_t)i * cap + p] * H,
                   g->xq[i].out + (size_t)p * H, (size_t)H * sizeof(float));
    }
    g->handoff_us += hmoe_now_us() - t_wait;
    if (fail) return fail;
    /* add in ascending expert id per token, as the in-process experts do */
    for (int t = 0; t < nt; t++) {
        int ord[64];
        const int32_t *ti = idx + (size_t)(t0 + t) * K;
        for (int k = 0; k < K; k++) {
            int j = k;
            while (j > 0 && ti[ord[j - 1]] > ti[k]) {
                ord[j] = ord[j - 1];
                j--;
            }
            ord[j] = k;
        }
        float *o = out + (size_t)(t0 + t) * H;
        for (int k = 0; k < K; k++) {
            if (ti[ord[k]] < 0) continue; /* computed on the device */
            const float *y = g->ypair + (size_t)(t * K + ord[k]) * H;
            for (int d = 0; d < H; d++)
                o[d] += y[d];
        }
    }
    return HMOE_OK;
}

static enum hmoe_status routed_hook(void *ctx, int layer, int n_tok, const float *x,
                                    const int32_t *idx, const float *w, float *out)
{
    struct gw *g = ctx;
    for (int t0 = 0; t0 < n_tok; t0 += g->cap_tok) {
        int nt = n_tok - t0 < g->cap_tok ? n_tok - t0 : g->cap_tok;
        enum hmoe_status st = slab(g, layer, t0, nt, x, idx, w, out);
        if (st) return st;
    }
    return HMOE_OK;
}

/* ---- the backends ------------------------------------------------------------------------- */

static void fw_reset(struct gw *g)
{
#ifdef HMOE_HAVE_CUDA
    if (g->cuda) {
        hmoe_gfwd_reset(g->gf);
        return;
    }
#endif
    hmoe_fwd_reset(g->fwd);
}

static int fw_pos(const struct gw *g)
{
#ifdef HMOE_HAVE_CUDA
    if (g->cuda) return hmoe_gfwd_pos(g->gf);
#endif
    return hmoe_fwd_pos(g->fwd);
}

/* tokens (n) -> logits of the last position (V) f32 */
static enum hmoe_status fw_run(struct gw *g, const int32_t *tokens, int n, float *logits)
{
#ifdef HMOE_HAVE_CUDA
    if (g->cuda) return hmoe_gfwd_run(g->gf, tokens, n, logits, 1);
#endif
    return hmoe_fwd_run(g->fwd, tokens, n, logits, 1);
}

/* Opens the chosen backend on the model; returns 0 or an enum hmoe_status (message set). */
static enum hmoe_status fw_init(struct gw *g, const char *backend)
{
    if (!*backend || !strcmp(backend, "cpu")) return hmoe_fwd_init(g->m, g->max_ctx, &g->fwd);
    if (strcmp(backend, "cuda"))
        return hmoe_fail(HMOE_E_INVAL, "unknown backend '%s' (want cpu or cuda)", backend);
#ifdef HMOE_HAVE_CUDA
    /* the math switches of the environment, checked before the device is touched:
     * HMOE_PREFILL=fp32 (default, exact) | tf32 | bf16 (fastest) | tokens;
     * HMOE_DMV_FAST=0 (default: bitsandbytes' weights) | 1 (the fast dense decode kernel) */
    const char *pm = getenv("HMOE_PREFILL"), *df = getenv("HMOE_DMV_FAST");
    const int mode = pm && *pm ? hmoe_gfwd_prefill_parse(pm) : 0;
    if (mode < 0)
        return hmoe_fail(HMOE_E_INVAL, "HMOE_PREFILL=%s: want fp32, tf32, bf16 or tokens", pm);
    if (df && *df && strcmp(df, "0") && strcmp(df, "1"))
        return hmoe_fail(HMOE_E_INVAL, "HMOE_DMV_FAST=%s: want 0 or 1", df);
    g->cuda = 1;
    enum hmoe_status st =
        hmoe_gfwd_init(g->m, 0, g->max_ctx, g->vram_budget, HMOE_GPU_ABSMAX_F32, &g->gf);
    if (st) return st;
    if (pm && *pm) {
        if ((st = hmoe_gfwd_set_prefill(g->gf, (enum hmoe_gfwd_prefill)mode))) return st;
        HMOE_LOG_INFO("prefill math: %s", pm);
    }
    if (df && !strcmp(df, "1")) {
        if ((st = hmoe_gfwd_set_decode(g->gf, HMOE_DECODE_FAST))) return st;
        HMOE_LOG_INFO("decode matvecs: the fast dense kernel (HMOE_DMV_FAST=1: code * absmax, "
                      "not bitsandbytes' bf16 rounding)");
    }
    struct hmoe_gfwd_budget b;
    hmoe_gfwd_get_budget(g->gf, &b);
    g->vram_used = b.dense + b.caches + b.workspace + b.experts;
    hmoe_gfwd_print_budget(g->gf, stderr);
    HMOE_LOG_INFO("backend cuda: %d of %d routed experts resident in VRAM (budget %.2f GiB, "
                  "%.2f GiB used)",
                  b.n_resident, b.n_experts, (double)g->vram_budget / 1073741824.0,
                  (double)g->vram_used / 1073741824.0);
    return HMOE_OK;
#else
    return hmoe_fail(HMOE_E_UNSUPPORTED,
                     "backend 'cuda' is not built into this hmoe-gpu-worker (CUDA was not found "
                     "at build time); rebuild with CUDA (nvcc) or use --backend cpu");
#endif
}

static int fw_resident(const struct gw *g, int l, int e)
{
#ifdef HMOE_HAVE_CUDA
    if (g->cuda) return hmoe_gfwd_expert_resident(g->gf, l, e);
#endif
    return g->home[(size_t)l * g->E + e] == 0;
}

#ifdef HMOE_HAVE_CUDA
/* cuda with expert workers: after the upload nothing in this process reads the host copy of the
 * routed experts again (resident ones live in VRAM, the others on the expert workers: the hook is
 * set at attach, and no step runs before), so their pages are given back (whole pages inside each
 * expert's bytes only; a file-backed mapping re-reads them on access, an anonymous synth arena
 * would read zeros, hence never without the hook). Saves most of the model's host memory (~36 GiB
 * for the 80B model). */
static void drop_host_experts(struct gw *g)
{
    const long pg = sysconf(_SC_PAGESIZE);
    uint64_t dropped = 0;
    for (int l = 0; l < g->L; l++) {
        if (!g->m->cfg.layer_is_moe[l] || !g->m->layers[l].experts) continue;
        for (int e = 0; e < g->E; e++) {
            const struct hmoe_mlp_w *x = &g->m->layers[l].experts[e];
            const struct hmoe_tensor *ts[3] = {&x->gate, &x->up, &x->down};
            for (int j = 0; j < 3; j++) {
                const struct hmoe_tensor *t = ts[j];
                if (!t->data) continue;
                uint64_t lo, n = (uint64_t)hmoe_tensor_numel(t);
                if (t->dtype == HMOE_DT_NF4) {
                    lo = (uint64_t)t->elem0 / 2;
                    n /= 2;
                } else if (t->dtype == HMOE_DT_BF16 || t->dtype == HMOE_DT_F16) {
                    lo = (uint64_t)t->elem0 * 2;
                    n *= 2;
                } else if (t->dtype == HMOE_DT_F32) {
                    lo = (uint64_t)t->elem0 * 4;
                    n *= 4;
                } else {
                    continue;
                }
                uintptr_t a = (uintptr_t)t->data + lo, b = a + n;
                a = (a + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1);
                b &= ~((uintptr_t)pg - 1);
                if (b > a && madvise((void *)a, b - a, MADV_DONTNEED) == 0) dropped += b - a;
            }
        }
    }
    if (dropped)
        HMOE_LOG_INFO("released %.2f GiB of host pages of routed experts (not read again)",
                      (double)dropped / 1073741824.0);
}
#endif

/* ---- placement ---------------------------------------------------------------------------- */

static enum hmoe_status make_placement(struct gw *g)
{
    const int L = g->L, E = g->E;
    g->home = malloc((size_t)L * E + 1);
    if (!g->home) return hmoe_fail(HMOE_E_NOMEM, "placement table");
    memset(g->home, 255, (size_t)L * E);
    if (g->cuda) {
        /* what hmoe_gfwd made resident in VRAM; the rest on the owning worker (or, without
         * workers, on this process's CPU) */
        g->n_resident = 0;
        g->resident_used = 0;
        for (int l = 0; l < L; l++) {
            if (!g->m->cfg.layer_is_moe[l]) continue;
            for (int e = 0; e < E; e++) {
                uint8_t h = g->W ? (uint8_t)(1 + (int)((int64_t)e * g->W / E)) : 254;
                if (fw_resident(g, l, e)) {
                    h = 0;
                    g->n_resident++;
                }
                g->home[(size_t)l * E + e] = h;
            }
        }
#ifdef HMOE_HAVE_CUDA
        struct hmoe_gfwd_budget b;
        hmoe_gfwd_get_budget(g->gf, &b);
        g->resident_used = b.experts;
#endif
        return HMOE_OK;
    }
    for (int l = 0; l < L; l++)
        if (g->m->cfg.layer_is_moe[l])
            for (int e = 0; e < E; e++)
                g->home[(size_t)l * E + e] = g->W ? (uint8_t)(1 + (int)((int64_t)e * g->W / E)) : 0;
    /* resident set: expert 0 of every MoE layer, then expert 1, ... while the budget lasts */
    uint64_t left = g->W ? g->resident_bytes : UINT64_MAX;
    g->n_resident = 0;
    g->resident_used = 0;
    for (int e = 0; e < E; e++)
        for (int l = 0; l < L; l++) {
            if (!g->m->cfg.layer_is_moe[l]) continue;
            uint64_t nb = hmoe_expert_nbytes(g->m, l, e);
            if (g->W && nb > left) continue;
            g->home[(size_t)l * E + e] = 0;
            if (g->W) left -= nb;
            g->resident_used += nb;
            g->n_resident++;
        }
    return HMOE_OK;
}

static enum hmoe_status attach(struct gw *g, const Hmoe__WorkerConfig *c)
{
    if (g->attached) return HMOE_OK;
    if ((int)c->n_regions != g->W)
        return hmoe_fail(HMOE_E_PROTO, "config names %zu expert regions for %d workers",
                         c->n_regions, g->W);
    enum hmoe_status st;
    if ((st = hmoe_shm_attach(c->logits_region, HMOE_LOGITS_LAYOUT,
                              sizeof(struct hmoe_logits_ctl) + (size_t)g->V * sizeof(float),
                              &g->lshm)))
        return st;
    g->lg = g->lshm.data;
    if (g->lg->vocab != (uint32_t)g->V)
        return hmoe_fail(HMOE_E_PROTO, "logits region for vocab %u, model has %d", g->lg->vocab,
                         g->V);
    g->xshm = calloc((size_t)g->W + 1, sizeof *g->xshm);
    g->xq = calloc((size_t)g->W + 1, sizeof *g->xq);
    g->wcnt = calloc((size_t)g->W + 1, sizeof *g->wcnt);
    g->wseq = calloc((size_t)g->W + 1, sizeof *g->wseq);
    if (!g->xshm || !g->xq || !g->wcnt || !g->wseq) return hmoe_fail(HMOE_E_NOMEM, "attach");
    int cap_tok = 0;
    for (int i = 0; i < g->W; i++) {
        if ((st = hmoe_shm_attach(c->regions[i], HMOE_XQ_LAYOUT, 0, &g->xshm[i])) ||
            (st = hmoe_xq_open(&g->xshm[i], (uint32_t)g->H, &g->xq[i])))
            return st;
        int ct = (int)g->xq[i].ctl->cap_tok;
        if ((int)g->xq[i].ctl->cap_pairs < ct * g->K)
            return hmoe_fail(HMOE_E_PROTO, "region %s: %u pairs for %d tokens x top-%d",
                             c->regions[i], g->xq[i].ctl->cap_pairs, ct, g->K);
        cap_tok = i == 0 || ct < cap_tok ? ct : cap_tok;
    }
    g->cap_tok = g->W ? cap_tok : (c->queue_tokens ? (int)c->queue_tokens : 32);
    const size_t cp = (size_t)g->cap_tok * g->K;
    g->ypair = malloc(cp * g->H * sizeof(float));
    g->rout = malloc(cp * g->H * sizeof(float));
    g->rpairs = malloc(cp * sizeof *g->rpairs);
    g->rslot = malloc(cp * sizeof *g->rslot);
    g->wslot = malloc(cp * ((size_t)g->W + 1) * sizeof *g->wslot);
    if (!g->ypair || !g->rout || !g->rpairs || !g->rslot || !g->wslot)
        return hmoe_fail(HMOE_E_NOMEM, "hand-off buffers (%d tokens)", g->cap_tok);
    if ((st = hmoe_xq_scratch_init(&g->scr, g->H, g->I, g->cap_tok * g->K, (int)cp))) return st;
    g->w_handoffs = calloc((size_t)g->W + 1, sizeof *g->w_handoffs);
    g->w_pairs = calloc((size_t)g->W + 1, sizeof *g->w_pairs);
    g->w_compute_us = calloc((size_t)g->W + 1, sizeof *g->w_compute_us);
    if (!g->w_handoffs || !g->w_pairs || !g->w_compute_us)
        return hmoe_fail(HMOE_E_NOMEM, "worker counters");
    if (!g->home && (st = make_placement(g))) return st; /* made at configure */
    struct hmoe_moe_hook hook = {routed_hook, g};
#ifdef HMOE_HAVE_CUDA
    if (g->cuda) {
        /* without expert workers the non-resident experts run in-process (hmoe_gfwd's path) */
        if (g->W) hmoe_gfwd_set_moe_hook(g->gf, &hook);
    } else
#endif
        hmoe_fwd_set_moe_hook(g->fwd, &hook);
    g->attached = 1;
    HMOE_LOG_INFO("attached %d expert queue(s) (%d tokens per hand-off); %u experts resident "
                  "%s (%.1f MiB of %.1f MiB budget)",
                  g->W, g->cap_tok, g->n_resident, g->cuda ? "in VRAM" : "in-process",
                  (double)g->resident_used / 1048576.0,
                  (double)(g->cuda ? g->vram_budget : g->resident_bytes) / 1048576.0);
    return HMOE_OK;
}

static void send_ready(struct gw *g)
{
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__Ready r = HMOE__READY__INIT;
    Hmoe__ModelInfo mi = HMOE__MODEL_INFO__INIT;
    const struct hmoe_config *c = &g->m->cfg;
    mi.hidden_size = (uint32_t)g->H;
    mi.num_layers = (uint32_t)g->L;
    mi.vocab_size = (uint32_t)g->V;
    mi.num_experts = (uint32_t)g->E;
    mi.experts_per_tok = (uint32_t)g->K;
    int32_t eos[HMOE_MAX_EOS];
    for (int i = 0; i < c->n_eos; i++)
        eos[i] = c->eos_token_ids[i];
    mi.n_eos_token_ids = (size_t)c->n_eos;
    mi.eos_token_ids = eos;
    mi.bos_token_id = c->bos_token_id;
    mi.max_ctx = (uint32_t)g->max_ctx;
    uint64_t tot = 0;
    uint32_t nmoe = 0;
    for (int l = 0; l < g->L; l++) {
        if (!c->layer_is_moe[l]) continue;
        nmoe++;
        for (int x = 0; x < g->E; x++)
            tot += hmoe_expert_nbytes(g->m, l, x);
    }
    mi.expert_bytes_total = tot;
    mi.n_moe_layers = nmoe;
    r.model = &mi;
    r.numa_node = -1;
    r.attached = g->attached;
    e.body_case = HMOE__ENVELOPE__BODY_READY;
    e.ready = &r;
    hmoe_worker_link_send(&g->link, &e);
}

static void send_placement(struct gw *g)
{
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__ExpertPlacement p = HMOE__EXPERT_PLACEMENT__INIT;
    p.version = 1;
    p.num_layers = (uint32_t)g->L;
    p.num_experts = (uint32_t)g->E;
    p.home.len = (size_t)g->L * g->E;
    p.home.data = g->home;
    p.resident_bytes = g->resident_used;
    p.n_resident = g->n_resident;
    p.backend = (char *)(g->cuda ? "cuda" : "cpu");
    p.vram_budget = g->cuda ? g->vram_budget : 0;
    p.vram_used = g->cuda ? g->vram_used : 0;
    e.body_case = HMOE__ENVELOPE__BODY_PLACEMENT;
    e.placement = &p;
    if (hmoe_worker_link_send(&g->link, &e) != HMOE_OK)
        HMOE_LOG_WARN("placement not sent: %s", hmoe_err_msg());
}

static void run_step(struct gw *g, const Hmoe__StepBegin *sb)
{
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__StepEnd se = HMOE__STEP_END__INIT;
    se.step = sb->step;
    se.error = (char *)"";
    enum hmoe_status st = HMOE_OK;
    uint64_t t0 = hmoe_now_us();
    g->handoff_us = 0;
    g->n_off = g->n_res_pairs = 0;
    g->failed_worker = 0;
    for (int i = 0; g->w_handoffs && i < g->W; i++) {
        g->w_handoffs[i] = g->w_pairs[i] = 0;
        g->w_compute_us[i] = 0;
    }
    if (!g->attached) {
        st = hmoe_fail(HMOE_E_INVAL, "gpu worker not attached to the expert queues yet");
    } else if (sb->n_tokens == 0) {
        st = hmoe_fail(HMOE_E_INVAL, "step without tokens");
    } else {
        if (sb->reset) {
            fw_reset(g);
            g->broken = 0;
        }
        if (g->broken) {
            st = hmoe_fail(HMOE_E_INVAL, "sequence state lost by a failed step; reset first");
        } else {
            /* fwd_run must not publish old logits: invalidate before writing */
            atomic_store(&g->lg->seq, 0);
            st = fw_run(g, sb->tokens, (int)sb->n_tokens, hmoe_logits_data(g->lg));
            if (st == HMOE_OK)
                atomic_store_explicit(&g->lg->seq, (uint32_t)sb->step, memory_order_release);
            else if (st != HMOE_E_INVAL && st != HMOE_E_RANGE)
                g->broken = 1; /* caches advanced partway */
        }
    }
    se.status = st;
    if (st) se.error = (char *)hmoe_err_msg();
    se.n_tokens = (uint32_t)sb->n_tokens;
    se.compute_us = hmoe_now_us() - t0;
    se.pos = (uint32_t)fw_pos(g);
    se.logits_seq = st == HMOE_OK ? (uint32_t)sb->step : 0;
    se.handoff_us = g->handoff_us;
    se.n_offloaded = g->n_off;
    se.n_resident = g->n_res_pairs;
    se.failed_worker = (uint32_t)g->failed_worker;
    if (g->attached) {
        se.n_worker_handoffs = se.n_worker_pairs = se.n_worker_compute_us = (size_t)g->W;
        se.worker_handoffs = g->w_handoffs;
        se.worker_pairs = g->w_pairs;
        se.worker_compute_us = g->w_compute_us;
    }
    if (st) HMOE_LOG_WARN("step %llu failed: %s", (unsigned long long)sb->step, hmoe_err_msg());
    e.body_case = HMOE__ENVELOPE__BODY_STEP_END;
    e.step_end = &se;
    if (hmoe_worker_link_send(&g->link, &e) != HMOE_OK)
        HMOE_LOG_ERROR("step end not sent: %s", hmoe_err_msg());
}

static int configure(struct gw *g, const Hmoe__WorkerConfig *c)
{
    snprintf(g->model, sizeof g->model, "%s", c->model);
    g->resident_bytes = c->resident_bytes;
    g->vram_budget = c->vram_budget;
    g->W = (int)c->n_expert_workers;
    g->spin_us = c->spin_us;
    g->timeout_ms = c->handoff_timeout_ms ? c->handoff_timeout_ms : 30000;
    if (c->heartbeat_ms) {
        g->link.hb_ms = (int)c->heartbeat_ms;
        g->link.hb_timeout_ms = (int)c->heartbeat_ms * 15;
    }
    if (c->log_level && *c->log_level && hmoe_log_level_parse(c->log_level) >= 0)
        hmoe_log_level_cur = hmoe_log_level_parse(c->log_level);
    hmoe_worker_link_send_progress(&g->link, "model", 0, 1);
    uint64_t t0 = hmoe_now_ms();
    enum hmoe_status st = hmoe_model_open(g->model, &g->m);
    if (st) {
        char msg[4600];
        snprintf(msg, sizeof msg, "cannot open model %s: %s", g->model, hmoe_err_msg());
        HMOE_LOG_ERROR("%s", msg);
        hmoe_worker_link_send_error(&g->link, st, msg);
        return 0;
    }
    const struct hmoe_config *mc = &g->m->cfg;
    g->H = mc->hidden_size;
    g->L = mc->num_layers;
    g->V = mc->vocab_size;
    g->E = mc->num_experts;
    g->K = mc->num_experts_per_tok;
    g->I = mc->moe_intermediate_size;
    if (g->K > 64 || g->W > 250) {
        hmoe_worker_link_send_error(&g->link, HMOE_E_UNSUPPORTED,
                                    "top-k above 64 or more than 250 expert workers");
        return 0;
    }
    g->max_ctx = (int)c->max_ctx;
    const char *backend = c->backend ? c->backend : "";
    if ((st = fw_init(g, backend))) {
        char msg[1200];
        snprintf(msg, sizeof msg, "forward init (backend %s): %s", *backend ? backend : "cpu",
                 hmoe_err_msg());
        HMOE_LOG_ERROR("%s", msg);
        hmoe_worker_link_send_error(&g->link, st, msg);
        return 0;
    }
#ifdef HMOE_HAVE_CUDA
    /* before the expert workers load their shards, so the two copies never coexist */
    if (g->cuda && g->W) drop_host_experts(g);
#endif
    if (!g->max_ctx) {
        int mp = mc->max_position_embeddings;
        g->max_ctx = mp > 0 && mp < 4096 ? mp : 4096;
    }
    /* the final placement, before the expert workers start: they prepare only their experts */
    if ((st = make_placement(g))) {
        char msg[600];
        snprintf(msg, sizeof msg, "placement: %s", hmoe_err_msg());
        HMOE_LOG_ERROR("%s", msg);
        hmoe_worker_link_send_error(&g->link, st, msg);
        return 0;
    }
    HMOE_LOG_INFO("model %s: H=%d L=%d V=%d E=%d top-%d, opened in %llu ms", g->model, g->H, g->L,
                  g->V, g->E, g->K, (unsigned long long)(hmoe_now_ms() - t0));
    hmoe_worker_link_send_progress(&g->link, "model", 1, 1);
    send_placement(g);
    send_ready(g);
    return 1;
}

int main(int argc, char **argv)
{
    struct hmoe_worker_args a;
    int rc0 = hmoe_worker_start(argc, argv, 'G', "hmoe-gpu-worker", &a);
    if (rc0) return rc0;
    static struct gw g;
    if (hmoe_worker_link_open(&g.link, a.ctrl, a.name, HMOE__ROLE__ROLE_GPU, (uint32_t)a.id)) {
        HMOE_LOG_ERROR("control link: %s", hmoe_err_msg());
        return 2;
    }
    int rc = 0, configured = 0;
    for (;;) {
        struct hmoe_ctrl_msg m;
        enum hmoe_status st = hmoe_worker_link_poll(&g.link, 1000, &m);
        if (st == HMOE_E_TIMEOUT) continue;
        if (st != HMOE_OK) {
            HMOE_LOG_ERROR("%s; exiting", hmoe_err_msg());
            rc = 3;
            break;
        }
        Hmoe__Envelope *e = m.env;
        if (e->body_case == HMOE__ENVELOPE__BODY_SHUTDOWN) break;
        if (e->body_case == HMOE__ENVELOPE__BODY_CONFIG) {
            if (!configured) {
                if (!configure(&g, e->config)) {
                    rc = 1; /* the model cannot be opened: restarting will not help */
                    break;
                }
                configured = 1;
            } else if (e->config->n_regions || e->config->logits_region[0]) {
                if ((st = attach(&g, e->config))) {
                    char msg[600];
                    snprintf(msg, sizeof msg, "attach: %s", hmoe_err_msg());
                    HMOE_LOG_ERROR("%s", msg);
                    hmoe_worker_link_send_error(&g.link, st, msg);
                    rc = 2;
                    break;
                }
                send_placement(&g);
                send_ready(&g);
            }
        } else if (e->body_case == HMOE__ENVELOPE__BODY_STEP_BEGIN) {
            run_step(&g, e->step_begin);
        } else {
            HMOE_LOG_DEBUG("ignored %s", hmoe_ctrl_body_name(e->body_case));
        }
    }
    hmoe_worker_link_close(&g.link);
    for (int i = 0; g.xshm && i < g.W; i++)
        hmoe_shm_close(&g.xshm[i]);
    hmoe_shm_close(&g.lshm);
    hmoe_xq_scratch_free(&g.scr);
    free(g.xshm);
    free(g.xq);
    free(g.wcnt);
    free(g.wseq);
    free(g.ypair);
    free(g.rout);
    free(g.rpairs);
    free(g.rslot);
    free(g.wslot);
    free(g.home);
    free(g.w_handoffs);
    free(g.w_pairs);
    free(g.w_compute_us);
    hmoe_fwd_free(g.fwd);
#ifdef HMOE_HAVE_CUDA
    hmoe_gfwd_free(g.gf);
#endif
    hmoe_model_close(g.m);
    return rc;
}
