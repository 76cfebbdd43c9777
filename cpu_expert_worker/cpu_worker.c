/* cpu_expert_worker/cpu_worker.c: hmoe-cpu-worker --numa-node N. Binds itself to node N with
 * hwloc (a refusal is logged and the worker runs unbound), opens the model, owns the routed
 * experts the GPU worker's placement (WorkerConfig.home) puts on it (without one, the static
 * shard: expert e on worker e*W/E), copies them node-local, gives back the model's pages it no
 * longer reads, and serves its shared-memory expert queue from a compute thread: wait on the
 * request doorbell, compute w_p * FFN_e(x[t]) for every posted pair, answer on the response
 * doorbell. The main thread keeps the control link (heartbeats, Stats with RSS, shutdown). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "hmoe/experts.h"
#include "hmoe/log.h"
#include "hmoe/model.h"
#include "hmoe/shm.h"
#include "hmoe/synth.h"
#include "hmoe/topo.h"
#include "hmoe/worker_link.h"
#include "hmoe/xq.h"

struct cw {
    struct hmoe_worker_link link;
    int id, W, numa, bound, threads;
    uint32_t spin_us;
    struct hmoe_model *m;
    struct hmoe_topo *topo;
    struct hmoe_shm shm;
    struct hmoe_xq q;
    struct hmoe_xq_scratch scr;
    /* fast path: exp's prepared node-local expert set, run on its pinned pool */
    struct hmoe_experts *ex;
    float *gx;     /* (cap_pairs, H) gathered x rows, one per pair */
    int32_t *gidx; /* (cap_pairs) */
    float *gw;     /* (cap_pairs) */
    uint64_t shard_bytes;
    uint32_t n_owned;
    uint8_t *home; /* [L*E] placement from the config, NULL = static shard */
    size_t home_len;
    int dropped_all; /* every weight page of the model given back: the model is never read */
    pthread_t th;
    int th_started;
    _Atomic int stop;
    _Atomic uint64_t n_req, n_pairs, busy_ns;
};

/* Resident host memory of this process in bytes (/proc/self/statm), 0 when unreadable. */
static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, res = 0;
    if (!f) return 0;
    int n = fscanf(f, "%llu %llu", &size, &res);
    fclose(f);
    return n == 2 ? res * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

/* Peak resident memory of this process in bytes (VmHWM of /proc/self/status), 0 when unknown. */
static uint64_t rss_peak_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long kb = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %llu kB", &kb) == 1) break;
    fclose(f);
    return (uint64_t)kb * 1024u;
}

/* 1 when (layer, expert) is this worker's: its home in the placement, else the static shard. */
static int owned(int layer, int expert, void *arg)
{
    const struct cw *c = arg;
    const int E = c->m->cfg.num_experts;
    if (c->home) return c->home[(size_t)layer * E + expert] == 1 + c->id;
    return (int)((int64_t)expert * c->W / E) == c->id;
}

/* Before the model is open: the experts a synth model needs to generate for this worker (the
 * placement's, else the static shard's; a table of the wrong size keeps everything and is
 * refused by take_placement once the model is open). */
struct keep_arg {
    const Hmoe__WorkerConfig *cfg;
    int id, W;
};

static int keep_expert(const struct hmoe_config *mc, int layer, int expert, void *arg)
{
    const struct keep_arg *k = arg;
    const size_t n = (size_t)mc->num_layers * (size_t)mc->num_experts;
    if (!k->cfg->home.len) return (int)((int64_t)expert * k->W / mc->num_experts) == k->id;
    if (k->cfg->home.len != n) return 1;
    return k->cfg->home.data[(size_t)layer * mc->num_experts + expert] == 1 + k->id;
}

/* Checks a request posted by the producer (shared memory is not trusted blindly). */
static enum hmoe_status check_request(const struct cw *c, const struct hmoe_xq_ctl *k)
{
    const struct hmoe_config *mc = &c->m->cfg;
    const int layer = k->layer, nt = k->n_tok, np = k->n_pairs;
    if (layer < 0 || layer >= mc->num_layers || !mc->layer_is_moe[layer])
        return hmoe_fail(HMOE_E_INVAL, "layer %d has no routed experts", layer);
    if (nt < 1 || (uint32_t)nt > k->cap_tok || np < 1 || (uint32_t)np > k->cap_pairs ||
        np > c->scr.cap_pairs)
        return hmoe_fail(HMOE_E_INVAL, "bad request size: %d tokens, %d pairs", nt, np);
    for (int p = 0; p < np; p++) {
        const struct hmoe_xq_pair *pr = &c->q.pairs[p];
        if (pr->tok < 0 || pr->tok >= nt || pr->expert < 0 || pr->expert >= mc->num_experts)
            return hmoe_fail(HMOE_E_INVAL, "pair %d: token %d / expert %d out of range", p, pr->tok,
                             pr->expert);
        /* the pages of other experts were given back (or never prepared): never read them */
        if (!owned(layer, pr->expert, (void *)c))
            return hmoe_fail(HMOE_E_INVAL, "pair %d: expert %d of layer %d is not placed on E%d", p,
                             pr->expert, layer, c->id);
    }
    return HMOE_OK;
}

/* Fast path: each pair becomes one row (x[tok], expert, w) with top-1, so the set writes
 * out[p] = w_p * FFN(x[tok_p]) into a zeroed row, the per-pair layout the queue answers with. */
static enum hmoe_status run_fast(struct cw *c, const struct hmoe_xq_ctl *k)
{
    const int H = c->m->cfg.hidden_size, np = k->n_pairs;
    for (int p = 0; p < np; p++) {
        const struct hmoe_xq_pair *pr = &c->q.pairs[p];
        memcpy(c->gx + (size_t)p * H, c->q.x + (size_t)pr->tok * H, (size_t)H * sizeof(float));
        c->gidx[p] = pr->expert;
        c->gw[p] = pr->w;
    }
    memset(c->q.out, 0, (size_t)np * H * sizeof(float));
    return hmoe_experts_run(c->ex, k->layer, np, 1, c->gx, c->gidx, c->gw, c->q.out);
}

/* Copies the shard into node-local memory with exp's prepared expert set. */
static enum hmoe_status prepare_fast(struct cw *c)
{
    const struct hmoe_config *mc = &c->m->cfg;
    const int cap = (int)c->q.ctl->cap_pairs;
    struct hmoe_experts_opts o;
    memset(&o, 0, sizeof o);
    o.pool.n_threads = c->threads;
    o.pool.numa_node = c->bound ? c->numa : -1;
    o.pool.spin_us = (int)c->spin_us;
    o.pool.bind_caller = 0;
    o.isa = HMOE_ISA_AUTO;
    o.max_tokens = cap < 64 ? cap : 64;
    o.max_top_k = 1;
    o.release_source = 1; /* the model's experts are never read after the copy (dropped_all) */
    enum hmoe_status st;
    if ((st = hmoe_experts_init(&o, mc->hidden_size, mc->moe_intermediate_size, &c->ex)) ||
        (st = hmoe_experts_add_model(c->ex, c->m, 0, mc->num_layers, owned, c)) ||
        (st = hmoe_experts_load(c->ex)))
        return st;
    c->gx = malloc((size_t)cap * mc->hidden_size * sizeof(float));
    c->gidx = malloc((size_t)cap * sizeof(int32_t));
    c->gw = malloc((size_t)cap * sizeof(float));
    if (!c->gx || !c->gidx || !c->gw) return hmoe_fail(HMOE_E_NOMEM, "gather buffers");
    HMOE_LOG_INFO("expert kernels: %s, %.1f MiB node-local, %s",
                  hmoe_experts_isa_name(hmoe_experts_isa_used(c->ex)),
                  (double)hmoe_experts_total_bytes(c->ex) / 1048576.0,
                  hmoe_pool_describe(hmoe_experts_pool(c->ex)));
    return HMOE_OK;
}

static void *compute_main(void *arg)
{
    struct cw *c = arg;
    struct hmoe_xq_ctl *k = c->q.ctl;
#ifdef _OPENMP
    if (c->threads > 0) omp_set_num_threads(c->threads);
#endif
    uint32_t last = hmoe_doorbell_read(&k->req);
    struct hmoe_doorbell_wait w = {c->spin_us, 200, NULL};
    while (!atomic_load(&c->stop)) {
        uint32_t now;
        enum hmoe_status st = hmoe_doorbell_wait_change(&k->req, last, &now, &w);
        if (st == HMOE_E_TIMEOUT) continue;
        if (st) break;
        last = now;
        uint64_t t0 = hmoe_now_us();
        st = check_request(c, k);
        if (st == HMOE_OK && c->ex)
            st = run_fast(c, k);
        else if (st == HMOE_OK) {
            HMOE_ASSERT(!c->dropped_all); /* ref kernels read the model's (kept) pages */
            st = hmoe_xq_compute(&c->scr, c->m->layers[k->layer].experts, c->m->cfg.num_experts,
                                 c->q.pairs, k->n_pairs, c->q.x, c->q.out);
        }
        k->status = st;
        if (st) {
            snprintf(k->error, sizeof k->error, "%s", hmoe_err_msg());
            HMOE_LOG_WARN("request %u failed: %s", now, hmoe_err_msg());
        }
        uint64_t dt = hmoe_now_us() - t0;
        k->compute_ns = dt * 1000u;
        atomic_fetch_add(&c->n_req, 1);
        atomic_fetch_add(&c->n_pairs, (uint64_t)(k->n_pairs > 0 ? k->n_pairs : 0));
        atomic_fetch_add(&c->busy_ns, dt * 1000u);
        hmoe_doorbell_set(&k->resp, now);
    }
    return NULL;
}

/* Counts this worker's experts and their bytes; with fault=1 (reference kernels, which read the
 * model) faults their pages in so the first token does not pay for it. Progress per layer. */
static void load_shard(struct cw *c, int fault)
{
    const struct hmoe_config *mc = &c->m->cfg;
    const int E = mc->num_experts;
    int n_moe = 0, done = 0;
    for (int l = 0; l < mc->num_layers; l++)
        n_moe += mc->layer_is_moe[l];
    volatile unsigned char sink = 0;
    for (int l = 0; l < mc->num_layers; l++) {
        if (!mc->layer_is_moe[l]) continue;
        for (int e = 0; e < E; e++) {
            if (!owned(l, e, c)) continue;
            c->n_owned++;
            c->shard_bytes += hmoe_expert_nbytes(c->m, l, e);
            if (!fault) continue;
            const struct hmoe_mlp_w *w = &c->m->layers[l].experts[e];
            const struct hmoe_tensor *ts[3] = {&w->gate, &w->up, &w->down};
            for (int i = 0; i < 3; i++) {
                const unsigned char *p = ts[i]->data;
                if (!p || ts[i]->dtype == HMOE_DT_NF4) continue; /* views of shared storage */
                size_t n = (size_t)hmoe_tensor_numel(ts[i]) * (ts[i]->dtype == HMOE_DT_F32 ? 4 : 2);
                for (size_t o = 0; o < n; o += 4096)
                    sink ^= p[o];
            }
        }
        if (++done % 4 == 0 || done == n_moe)
            hmoe_worker_link_send_progress(&c->link, "experts", (uint64_t)done, (uint64_t)n_moe);
    }
    (void)sink;
}

/* MADV_DONTNEED on the whole pages inside [p, p + n) (never a byte outside it, so neighbouring
 * tensors keep theirs); returns the bytes given back. */
static uint64_t drop_range(const void *p, uint64_t n)
{
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    if (!p || !n) return 0;
    uintptr_t a = ((uintptr_t)p + pg - 1) & ~(pg - 1), b = ((uintptr_t)p + n) & ~(pg - 1);
    return b > a && madvise((void *)a, b - a, MADV_DONTNEED) == 0 ? b - a : 0;
}

/* Gives back the model's pages of routed experts: all of them (all=1: the prepared set holds
 * copies of this worker's, the others are never read) or only the ones not placed here (all=0:
 * the reference kernels read the placed ones from the model). A file mapping re-reads a page
 * on access (page cache), an anonymous synth arena reads zeros: check_request refuses experts not
 * placed here, and with all=1 the model's weights are never read again (dropped_all). Per tensor
 * (an NF4 view of a fused tensor included): its packed data and its own absmax blocks. */
static uint64_t drop_expert_pages(struct cw *c, int all)
{
    const struct hmoe_config *mc = &c->m->cfg;
    uint64_t dropped = 0;
    for (int l = 0; l < mc->num_layers; l++) {
        if (!mc->layer_is_moe[l] || !c->m->layers[l].experts) continue;
        for (int e = 0; e < mc->num_experts; e++) {
            if (!all && owned(l, e, c)) continue;
            const struct hmoe_mlp_w *w = &c->m->layers[l].experts[e];
            const struct hmoe_tensor *ts[3] = {&w->gate, &w->up, &w->down};
            for (int i = 0; i < 3; i++) {
                const struct hmoe_tensor *t = ts[i];
                const uint64_t n = (uint64_t)hmoe_tensor_numel(t);
                if (!t->data) continue;
                if (t->dtype == HMOE_DT_NF4 && t->nf4 && t->nf4->blocksize > 0) {
                    const uint64_t bs = (uint64_t)t->nf4->blocksize, b0 = (uint64_t)t->elem0 / bs;
                    dropped += drop_range((const uint8_t *)t->data + t->elem0 / 2, n / 2);
                    if (t->nf4->absmax_q) dropped += drop_range(t->nf4->absmax_q + b0, n / bs);
                    if (t->nf4->absmax_f32)
                        dropped += drop_range(t->nf4->absmax_f32 + b0, n / bs * 4);
                } else if (t->dtype == HMOE_DT_BF16 || t->dtype == HMOE_DT_F16) {
                    dropped += drop_range(t->data, n * 2);
                } else if (t->dtype == HMOE_DT_F32) {
                    dropped += drop_range(t->data, n * 4);
                }
            }
        }
    }
    return dropped;
}

/* Takes the placement table of the config (copied; none = the static shard). */
static enum hmoe_status take_placement(struct cw *c, const Hmoe__WorkerConfig *cfg)
{
    const struct hmoe_config *mc = &c->m->cfg;
    const size_t want = (size_t)mc->num_layers * (size_t)mc->num_experts;
    if (!cfg->home.len) {
        HMOE_LOG_INFO("no placement in the config: static shard (expert e on worker e*%d/%d)", c->W,
                      mc->num_experts);
        return HMOE_OK;
    }
    if (cfg->home.len != want)
        return hmoe_fail(HMOE_E_PROTO, "placement table of %zu bytes for %d layers x %d experts",
                         cfg->home.len, mc->num_layers, mc->num_experts);
    c->home = malloc(want);
    if (!c->home) return hmoe_fail(HMOE_E_NOMEM, "placement table");
    memcpy(c->home, cfg->home.data, want);
    c->home_len = want;
    return HMOE_OK;
}

static int setup(struct cw *c, const Hmoe__WorkerConfig *cfg, int numa_flag)
{
    char msg[700];
    enum hmoe_status st;
    c->W = (int)cfg->n_expert_workers;
    c->spin_us = cfg->spin_us;
    c->threads = (int)cfg->threads;
    c->numa = numa_flag != -2 ? numa_flag : cfg->numa_node;
    if (cfg->heartbeat_ms) {
        c->link.hb_ms = (int)cfg->heartbeat_ms;
        c->link.hb_timeout_ms = (int)cfg->heartbeat_ms * 15;
    }
    if (cfg->log_level && *cfg->log_level && hmoe_log_level_parse(cfg->log_level) >= 0)
        hmoe_log_level_cur = hmoe_log_level_parse(cfg->log_level);
    if (c->W < 1 || cfg->worker_index != (uint32_t)c->id || cfg->n_regions != 1) {
        snprintf(msg, sizeof msg, "bad config: worker %u of %d with %zu regions (I am E%d)",
                 cfg->worker_index, c->W, cfg->n_regions, c->id);
        hmoe_worker_link_send_error(&c->link, HMOE_E_PROTO, msg);
        return 0;
    }
    /* bind first, so model pages and buffers are placed on the node */
    if (c->numa >= 0) {
        if ((st = hmoe_topo_open(cfg->topology, &c->topo)))
            HMOE_LOG_WARN("topology: %s; running unbound", hmoe_err_msg());
        else if ((st = hmoe_topo_bind_node(c->topo, c->numa)))
            HMOE_LOG_WARN("binding to NUMA node %d refused: %s; running unbound", c->numa,
                          hmoe_err_msg());
        else
            c->bound = 1;
        if (c->bound) HMOE_LOG_INFO("bound to NUMA node %d", c->numa);
    }
    /* a synth model: generate only this worker's experts (no dense weights, no other experts);
     * a checkpoint is mapped, and only the pages read are ever resident */
    struct keep_arg ka = {cfg, c->id, c->W};
    if ((st = hmoe_synth_is_spec(cfg->model)
                  ? hmoe_synth_open_experts(cfg->model, keep_expert, &ka, &c->m)
                  : hmoe_model_open(cfg->model, &c->m))) {
        snprintf(msg, sizeof msg, "cannot open model %s: %s", cfg->model, hmoe_err_msg());
        HMOE_LOG_ERROR("%s", msg);
        hmoe_worker_link_send_error(&c->link, st, msg);
        return 0;
    }
    const struct hmoe_config *mc = &c->m->cfg;
    if ((st = hmoe_shm_attach(cfg->regions[0], HMOE_XQ_LAYOUT, 0, &c->shm)) ||
        (st = hmoe_xq_open(&c->shm, (uint32_t)mc->hidden_size, &c->q)) ||
        (st = hmoe_xq_scratch_init(&c->scr, mc->hidden_size, mc->moe_intermediate_size,
                                   (int)c->q.ctl->cap_pairs, (int)c->q.ctl->cap_pairs))) {
        snprintf(msg, sizeof msg, "expert queue: %s", hmoe_err_msg());
        HMOE_LOG_ERROR("%s", msg);
        hmoe_worker_link_send_error(&c->link, st, msg);
        return 0;
    }
    if (c->topo && c->bound)
        if (hmoe_topo_membind_area(c->topo, c->numa, c->shm.base, c->shm.nbytes))
            HMOE_LOG_DEBUG("queue memory not placed: %s", hmoe_err_msg());
    if ((st = take_placement(c, cfg))) {
        snprintf(msg, sizeof msg, "expert placement: %s", hmoe_err_msg());
        HMOE_LOG_ERROR("%s", msg);
        hmoe_worker_link_send_error(&c->link, st, msg);
        return 0;
    }
    const int ref = cfg->expert_kernels && !strcmp(cfg->expert_kernels, "ref");
    const uint64_t rss0 = rss_bytes();
    uint64_t dropped;
    load_shard(c, ref);
    if (ref) {
        HMOE_LOG_INFO("expert kernels: reference (bit-exact with the CPU forward pass)");
        dropped = drop_expert_pages(c, 0); /* the others' experts; ours are read in place */
    } else if ((st = prepare_fast(c))) {
        snprintf(msg, sizeof msg, "expert set: %s", hmoe_err_msg());
        HMOE_LOG_ERROR("%s", msg);
        hmoe_worker_link_send_error(&c->link, st, msg);
        return 0;
    } else {
        /* the prepared set holds the only copy read from now on: give back the model's pages
         * (a synth model's whole arena, dense weights included: an expert worker never reads
         * them; a checkpoint's expert ranges, its dense pages were never touched here) */
        c->dropped_all = 1;
        dropped = drop_expert_pages(c, 1);
        const uint64_t arena = hmoe_synth_drop_weights(c->m);
        if (arena) dropped = arena;
    }
    const uint64_t rss1 = rss_bytes();
    HMOE_LOG_INFO("host memory: %u experts placed here; %.1f MiB of model pages given back; RSS "
                  "%.1f MiB after the model was opened, %.1f MiB now, peak %.1f MiB",
                  c->n_owned, (double)dropped / 1048576.0, (double)rss0 / 1048576.0,
                  (double)rss1 / 1048576.0, (double)rss_peak_bytes() / 1048576.0);
    atomic_store(&c->q.ctl->worker_pid, (uint32_t)getpid());
    if (pthread_create(&c->th, NULL, compute_main, c) != 0) {
        hmoe_worker_link_send_error(&c->link, HMOE_E_NOMEM, "cannot start the compute thread");
        return 0;
    }
    c->th_started = 1;
    atomic_store(&c->q.ctl->alive, 1);
    HMOE_LOG_INFO("serving %s: %u experts, %.1f MiB, node %d%s", cfg->regions[0], c->n_owned,
                  (double)c->shard_bytes / 1048576.0, c->numa, c->bound ? "" : " (unbound)");
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__Ready r = HMOE__READY__INIT;
    r.numa_node = c->numa;
    r.bound = c->bound;
    r.shard_bytes = c->shard_bytes;
    r.n_experts_owned = c->n_owned;
    r.attached = 1;
    r.rss_bytes = rss1;
    e.body_case = HMOE__ENVELOPE__BODY_READY;
    e.ready = &r;
    hmoe_worker_link_send(&c->link, &e);
    return 1;
}

int main(int argc, char **argv)
{
    struct hmoe_worker_args a;
    int rc0 = hmoe_worker_start(argc, argv, 'E', "hmoe-cpu-worker", &a);
    if (rc0) return rc0;
    static struct cw c;
    c.id = a.id;
    c.numa = -1;
    if (hmoe_worker_link_open(&c.link, a.ctrl, a.name, HMOE__ROLE__ROLE_CPU_EXPERT, (uint32_t)a.id)) {
        HMOE_LOG_ERROR("control link: %s", hmoe_err_msg());
        return 2;
    }
    int rc = 0, configured = 0;
    uint64_t last_stats = hmoe_now_ms();
    for (;;) {
        struct hmoe_ctrl_msg m;
        enum hmoe_status st = hmoe_worker_link_poll(&c.link, 1000, &m);
        if (configured && hmoe_now_ms() - last_stats > 2000) {
            /* counters for `hmoe status` (one small message every 2 s) */
            last_stats = hmoe_now_ms();
            Hmoe__Envelope se = HMOE__ENVELOPE__INIT;
            Hmoe__Stats sb = HMOE__STATS__INIT;
            sb.steps = atomic_load(&c.n_req);
            sb.pairs = atomic_load(&c.n_pairs);
            sb.busy_us = atomic_load(&c.busy_ns) / 1000u;
            sb.rss_bytes = rss_bytes();
            se.body_case = HMOE__ENVELOPE__BODY_STATS;
            se.stats = &sb;
            hmoe_worker_link_send(&c.link, &se);
        }
        if (st == HMOE_E_TIMEOUT) continue;
        if (st != HMOE_OK) {
            HMOE_LOG_ERROR("%s; exiting", hmoe_err_msg());
            rc = 3;
            break;
        }
        Hmoe__Envelope *e = m.env;
        if (e->body_case == HMOE__ENVELOPE__BODY_SHUTDOWN) break;
        if (e->body_case == HMOE__ENVELOPE__BODY_CONFIG && !configured) {
            if (!setup(&c, e->config, a.numa_node)) {
                rc = 1; /* bad model or configuration: restarting will not help */
                break;
            }
            configured = 1;
        } else if (e->body_case == HMOE__ENVELOPE__BODY_CONFIG) {
            /* the experts were prepared for the first placement and the model's pages of the
             * others given back: a different one needs a new worker */
            const Hmoe__WorkerConfig *nc = e->config;
            if (nc->home.len != c.home_len ||
                (c.home_len && memcmp(nc->home.data, c.home, c.home_len) != 0)) {
                HMOE_LOG_ERROR("placement change refused: the experts were prepared for the "
                               "first placement; restart the worker");
                hmoe_worker_link_send_error(&c.link, HMOE_E_UNSUPPORTED,
                                            "placement change refused: the expert worker "
                                            "prepared the first placement; restart it to "
                                            "change the placement");
            } else {
                HMOE_LOG_DEBUG("repeated configuration ignored (same placement)");
            }
        }
    }
    atomic_store(&c.stop, 1);
    if (c.th_started) {
        if (c.q.ctl) atomic_store(&c.q.ctl->alive, 0);
        pthread_join(c.th, NULL);
    }
    hmoe_worker_link_close(&c.link);
    hmoe_xq_scratch_free(&c.scr);
    hmoe_experts_free(c.ex);
    free(c.gx);
    free(c.gidx);
    free(c.gw);
    free(c.home);
    hmoe_shm_close(&c.shm);
    hmoe_model_close(c.m);
    hmoe_topo_close(c.topo);
    return rc;
}
