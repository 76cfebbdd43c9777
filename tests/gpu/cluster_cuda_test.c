/* tests/gpu/cluster_cuda_test.c: the cluster with `--backend cuda` gives the same greedy tokens as
 * the in-process CUDA forward pass with the same VRAM budget and the same CPU expert kernels for
 * the non-resident experts (what `hmoe-eval --backend cuda` computes). Usage:
 *   test_cluster_cuda MODEL_DIR half|all WORKERS
 * half: a budget that leaves about half of the routed experts to the expert workers; all: budget
 * 0 (every expert in VRAM). Also checks the placement that `hmoe status` shows (backend cuda, the
 * resident set equal to hmoe_gfwd_expert_resident) and the workers' counters. Exit 77 without a
 * CUDA device. The cluster is started and stopped by tests/integration/cluster_harness.h. */
#include "cluster_harness.h"
#include "hmoe/experts.h"
#include "hmoe/gpu_forward.h"

static const char *model_dir;
static struct hmoe_ctrl_arena arena;

#define NGEN 20
#define MAXRES (64 * 1024)

/* ---- reference: hmoe_gfwd + hmoe_experts hook, as hmoe-eval --backend cuda ---------------- */

struct ref {
    struct hmoe_model *m;
    struct hmoe_gfwd *gf;
    struct hmoe_experts *ex;
    int topk;
};

static enum hmoe_status ref_hook(void *ctx, int layer, int n_tok, const float *x,
                                 const int32_t *idx, const float *w, float *out)
{
    struct ref *r = ctx;
    return hmoe_experts_run(r->ex, layer, n_tok, r->topk, x, idx, w, out);
}

static int keep_host(int layer, int expert, void *arg)
{
    return !hmoe_gfwd_expert_resident(arg, layer, expert);
}

static int ref_open(struct ref *r, uint64_t budget, int hook)
{
    memset(r, 0, sizeof *r);
    if (hmoe_model_open(model_dir, &r->m) ||
        hmoe_gfwd_init(r->m, 0, 0, budget, HMOE_GPU_ABSMAX_F32, &r->gf)) {
        fprintf(stderr, "reference: %s\n", hmoe_err_msg());
        return 0;
    }
    struct hmoe_gfwd_budget b;
    hmoe_gfwd_get_budget(r->gf, &b);
    if (hook && b.n_resident < b.n_experts) {
        struct hmoe_experts_opts xo;
        memset(&xo, 0, sizeof xo);
        xo.pool.numa_node = -1;
        r->topk = r->m->cfg.num_experts_per_tok;
        xo.max_top_k = r->topk;
        if (hmoe_experts_init(&xo, r->m->cfg.hidden_size, r->m->cfg.moe_intermediate_size,
                              &r->ex) ||
            hmoe_experts_add_model(r->ex, r->m, 0, r->m->cfg.num_layers, keep_host, r->gf) ||
            hmoe_experts_load(r->ex)) {
            fprintf(stderr, "reference experts: %s\n", hmoe_err_msg());
            return 0;
        }
        const struct hmoe_moe_hook h = {ref_hook, r};
        hmoe_gfwd_set_moe_hook(r->gf, &h);
    }
    return 1;
}

static void ref_close(struct ref *r)
{
    hmoe_gfwd_free(r->gf);
    hmoe_experts_free(r->ex);
    hmoe_model_close(r->m);
}

static int ref_greedy(struct ref *r, const int32_t *prompt, int np, int n, int32_t *out)
{
    const int V = r->m->cfg.vocab_size;
    float *lg = malloc((size_t)V * sizeof(float));
    hmoe_gfwd_reset(r->gf);
    int ok = lg && hmoe_gfwd_run(r->gf, prompt, np, lg, 1) == HMOE_OK;
    for (int i = 0; ok && i < n; i++) {
        int best = 0;
        for (int v = 1; v < V; v++)
            if (lg[v] > lg[best]) best = v;
        out[i] = best;
        if (i + 1 < n) ok = hmoe_gfwd_run(r->gf, &out[i], 1, lg, 1) == HMOE_OK;
    }
    if (!ok) fprintf(stderr, "reference run: %s\n", hmoe_err_msg());
    free(lg);
    return ok;
}

/* ---- the cluster -------------------------------------------------------------------------- */

static int start_cluster(int workers, const char *budget)
{
    char w[16];
    snprintf(w, sizeof w, "%d", workers);
    const char *extra[] = {"--workers",
                           w,
                           "--backend",
                           "cuda",
                           "--vram-budget",
                           budget,
                           "--expert-kernels",
                           "fast",
                           "--spin-us",
                           "20",
                           "--log-level",
                           "info",
                           NULL};
    return cluster_spawn(model_dir, extra, 90000);
}

/* Greedy generation through the client socket; returns the number of tokens (-1 on error). */
static int generate(const int32_t *prompt, int np, int n_predict, int32_t *out)
{
    void *s = client_open();
    if (!s) return -1;
    int n = 0, done = 0;
    if (client_send_greedy(s, 5, prompt, np, n_predict) == HMOE_OK) {
        for (;;) {
            struct hmoe_ctrl_msg m;
            if (hmoe_ctrl_recv(s, 0, 60000, &arena, &m) != HMOE_OK) break;
            if (m.env->body_case == HMOE__ENVELOPE__BODY_TOKEN) {
                if (n < n_predict) out[n++] = m.env->token->id;
            } else if (m.env->body_case == HMOE__ENVELOPE__BODY_DONE) {
                done = 1;
                break;
            } else if (m.env->body_case == HMOE__ENVELOPE__BODY_ERROR) {
                fprintf(stderr, "cluster error: %s\n", m.env->error->message);
                break;
            }
        }
    }
    hmoe_zmq_close(s);
    return done ? n : -1;
}

/* Checks the placement and counters `hmoe status` would show. */
static void check_status(const uint8_t *resident, int L, int E, int n_res, int workers)
{
    void *s = client_open();
    CHECK(s != NULL);
    if (!s) return;
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__StatusRequest sr = HMOE__STATUS_REQUEST__INIT;
    e.body_case = HMOE__ENVELOPE__BODY_STATUS_REQUEST;
    e.status_request = &sr;
    struct hmoe_ctrl_msg m;
    int ok = hmoe_ctrl_send(s, NULL, 0, &e) == HMOE_OK &&
             hmoe_ctrl_recv(s, 0, 5000, &arena, &m) == HMOE_OK &&
             m.env->body_case == HMOE__ENVELOPE__BODY_STATUS_REPLY;
    CHECK(ok);
    if (ok) {
        const Hmoe__StatusReply *r = m.env->status_reply;
        const Hmoe__ExpertPlacement *p = r->placement;
        CHECK(p != NULL);
        if (p) {
            CHECKF(p->backend && !strcmp(p->backend, "cuda"), "placement backend '%s'",
                   p->backend ? p->backend : "(null)");
            CHECKF((int)p->n_resident == n_res, "placement: %u resident, reference %d",
                   p->n_resident, n_res);
            CHECK(p->vram_used > 0);
            int bad = (int)p->home.len != L * E;
            for (int i = 0; !bad && i < L * E; i++) {
                const uint8_t h = p->home.data[i];
                if (resident[i] == 2)
                    bad = h != 255;
                else if (resident[i])
                    bad = h != 0;
                else
                    bad = workers ? (h < 1 || h > workers) : h != 254;
                if (bad) fprintf(stderr, "home[%d] = %u, resident %u\n", i, h, resident[i]);
            }
            CHECK(!bad);
        }
        uint64_t g_off = 0, e_pairs = 0;
        for (size_t i = 0; i < r->n_workers; i++) {
            const Hmoe__WorkerStatus *w = r->workers[i];
            if (w->role == HMOE__ROLE__ROLE_GPU)
                g_off = w->pairs;
            else
                e_pairs += w->pairs;
        }
        fprintf(stderr, "status: G0 offloaded %llu pairs, expert workers %llu\n",
                (unsigned long long)g_off, (unsigned long long)e_pairs);
        CHECKF(g_off == e_pairs, "G0 offloaded %llu, workers show %llu", (unsigned long long)g_off,
               (unsigned long long)e_pairs);
        if (workers && n_res < (int)p->num_experts * (int)p->num_layers) CHECK(g_off > 0);
        if (n_res == L * E) CHECK(g_off == 0);
    }
    hmoe_zmq_close(s);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: test_cluster_cuda MODEL half|all WORKERS\n");
        return 2;
    }
    model_dir = argv[1];
    const int half = !strcmp(argv[2], "half"), workers = atoi(argv[3]);
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/config.json", model_dir);
    if (access(cfg, R_OK) != 0) TEST_SKIP("fixture %s missing", model_dir);
    if (hmoe_gpu_device_count() <= 0) TEST_SKIP("no CUDA device");
    signal(SIGPIPE, SIG_IGN);

    /* the budget: dense + caches + workspace + half the experts (a nonzero probe budget gives
     * the same prefill chunk, hence the same workspace, as the final one) */
    uint64_t budget = 0;
    struct ref r;
    if (half) {
        CHECK(ref_open(&r, 64ull << 30, 0));
        struct hmoe_gfwd_budget b;
        hmoe_gfwd_get_budget(r.gf, &b);
        budget = b.dense + b.caches + b.workspace + b.experts / 2;
        ref_close(&r);
    }
    char budget_s[32];
    snprintf(budget_s, sizeof budget_s, "%llu", (unsigned long long)budget);
    CHECK(ref_open(&r, budget, workers > 0));
    struct hmoe_gfwd_budget b;
    hmoe_gfwd_get_budget(r.gf, &b);
    fprintf(stderr, "budget %s: %d of %d experts resident\n", budget_s, b.n_resident, b.n_experts);
    if (half) CHECK(b.n_resident > 0 && b.n_resident < b.n_experts);
    const int L = r.m->cfg.num_layers, E = r.m->cfg.num_experts;
    static uint8_t resident[MAXRES];
    CHECK(L * E <= MAXRES);
    for (int l = 0; l < L && L * E <= MAXRES; l++)
        for (int e = 0; e < E; e++)
            resident[l * E + e] =
                !r.m->cfg.layer_is_moe[l] ? 2 : (uint8_t)hmoe_gfwd_expert_resident(r.gf, l, e);

    /* prompts: 5 tokens, 70 tokens (prefill across several hand-off slabs), 5 again */
    int32_t p[512];
    int np = 0;
    char path[600];
    snprintf(path, sizeof path, "%s/tokens.txt", model_dir);
    FILE *f = fopen(path, "r");
    while (f && np < 512 && fscanf(f, "%d", &p[np]) == 1)
        np++;
    if (f) fclose(f);
    CHECK(np >= 8);
    const int lens[3] = {5, np < 70 ? np : 70, 5};
    int32_t ref[3][NGEN];
    for (int q = 0; q < 3; q++)
        CHECK(ref_greedy(&r, p + q, lens[q], NGEN, ref[q]));
    ref_close(&r); /* free the device before the cluster uses it */

    zctx = hmoe_zmq_ctx_new();
    CHECK(hmoe_ctrl_arena_init(&arena, 0) == HMOE_OK);
    if (!start_cluster(workers, budget_s)) {
        CHECK(0);
        if (coord_pid > 0) {
            kill(coord_pid, SIGKILL);
            waitpid(coord_pid, NULL, 0);
        }
        TEST_DONE();
    }
    for (int q = 0; q < 3; q++) {
        int32_t got[NGEN];
        int n = generate(p + q, lens[q], NGEN, got);
        int same = n == NGEN;
        for (int i = 0; same && i < NGEN; i++)
            same = got[i] == ref[q][i];
        CHECKF(same, "request %d (%d prompt tokens, %d workers): cluster tokens differ (n %d)", q,
               lens[q], workers, n);
        if (!same) {
            fprintf(stderr, "  cluster:");
            for (int i = 0; i < n && i < NGEN; i++)
                fprintf(stderr, " %d", got[i]);
            fprintf(stderr, "\n  ref:    ");
            for (int i = 0; i < NGEN; i++)
                fprintf(stderr, " %d", ref[q][i]);
            fprintf(stderr, "\n");
        }
    }
    check_status(resident, L, E, b.n_resident, workers);
    cluster_stop(0);
    hmoe_ctrl_arena_free(&arena);
    hmoe_zmq_ctx_term(zctx);
    TEST_DONE();
}
