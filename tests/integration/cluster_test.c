/* tests/integration/cluster_test.c: drives a real cluster. Usage:
 *   test_cluster greedy|kill_expert|kill_gpu|fuzz MODEL_DIR WORKERS RESIDENT_BYTES ref|fast
 * Starts hmoe-coordinator in a fresh run dir, waits for its ready line, talks to it over the
 * client socket like `hmoe` does, and compares generated tokens with a greedy decode by the
 * in-process forward pass (the hmoe-eval path). Always stops the cluster with SIGTERM and checks
 * that the coordinator exits 0 and no process, socket, run dir or /dev/shm object is left. */
#include <errno.h>
#include <fcntl.h>
#include <time.h>

#include "cluster_harness.h"
#include "hmoe/forward.h"
#include "hmoe/shm.h"

static const char *model_dir;
static const char *topology = ""; /* --topology for the coordinator ("" = this machine) */
static const char *cpu_bin = HMOE_BIN_DIR "/hmoe-cpu-worker";
static const char *step_timeout = "120000";
static struct hmoe_ctrl_arena arena;

static uint64_t now_ms(void)
{
    return hmoe_now_ms();
}

/* Starts the coordinator; returns 1 once it printed its ready line (within 40 s). */
static int start_cluster(int workers, const char *resident, const char *kernels)
{
    char w[16];
    snprintf(w, sizeof w, "%d", workers);
    const char *extra[] = {
        "--workers",  w,        "--resident-bytes", resident, "--heartbeat-ms",    "200",
        "--spin-us",  "20",     "--log-level",      "info",   "--expert-kernels",  kernels,
        "--topology", topology, "--cpu-worker-bin", cpu_bin,  "--step-timeout-ms", step_timeout,
        NULL};
    return cluster_spawn(model_dir, extra, 40000);
}

/* ---- client ----------------------------------------------------------------------------- */

struct gen_result {
    int32_t toks[4096];
    int n;
    int err_code; /* 0 or the Error code */
    char err[512];
    int done;
};

/* Sends a request and collects the stream. on_token(k) is called after token k arrives. */
static void generate(const int32_t *prompt, int np, int n_predict, struct gen_result *g,
                     void (*on_token)(int k))
{
    memset(g, 0, sizeof *g);
    void *s = client_open();
    CHECK(s != NULL);
    if (!s) return;
    CHECK(client_send_greedy(s, 77, prompt, np, n_predict) == HMOE_OK);
    for (;;) {
        struct hmoe_ctrl_msg m;
        enum hmoe_status st = hmoe_ctrl_recv(s, 0, 20000, &arena, &m);
        if (st) {
            snprintf(g->err, sizeof g->err, "client: %s", hmoe_err_msg());
            g->err_code = st;
            break;
        }
        if (m.env->body_case == HMOE__ENVELOPE__BODY_TOKEN) {
            if (g->n < 4096) g->toks[g->n++] = m.env->token->id;
            if (on_token) on_token(g->n);
        } else if (m.env->body_case == HMOE__ENVELOPE__BODY_DONE) {
            g->done = 1;
            break;
        } else if (m.env->body_case == HMOE__ENVELOPE__BODY_ERROR) {
            g->err_code = m.env->error->code;
            snprintf(g->err, sizeof g->err, "%s", m.env->error->message);
            break;
        }
    }
    hmoe_zmq_close(s);
}

static int status_nodes[64], status_bound[64];

/* Worker pids and states from a status request (nodes in status_nodes / status_bound). */
static int cluster_status(pid_t *pids, int *ready, int max)
{
    void *s = client_open();
    if (!s) return -1;
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__StatusRequest sr = HMOE__STATUS_REQUEST__INIT;
    e.body_case = HMOE__ENVELOPE__BODY_STATUS_REQUEST;
    e.status_request = &sr;
    int n = -1;
    struct hmoe_ctrl_msg m;
    if (hmoe_ctrl_send(s, NULL, 0, &e) == HMOE_OK &&
        hmoe_ctrl_recv(s, 0, 5000, &arena, &m) == HMOE_OK &&
        m.env->body_case == HMOE__ENVELOPE__BODY_STATUS_REPLY) {
        n = 0;
        for (size_t i = 0; i < m.env->status_reply->n_workers && n < max; i++, n++) {
            pids[n] = (pid_t)m.env->status_reply->workers[i]->pid;
            ready[n] = !strcmp(m.env->status_reply->workers[i]->state, "ready");
            status_nodes[n] = m.env->status_reply->workers[i]->numa_node;
            status_bound[n] = m.env->status_reply->workers[i]->bound;
        }
    }
    hmoe_zmq_close(s);
    return n;
}

static int wait_all_ready(int n_expected, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    while (now_ms() < end) {
        pid_t pids[64];
        int ready[64];
        int n = cluster_status(pids, ready, 64);
        int ok = n == n_expected;
        for (int i = 0; ok && i < n; i++)
            ok = ready[i] && pids[i] > 0;
        if (ok) return 1;
        usleep(100000);
    }
    return 0;
}

/* ---- reference -------------------------------------------------------------------------- */

static int reference(const int32_t *prompt, int np, int n, int32_t *out)
{
    struct hmoe_model *m;
    struct hmoe_fwd *f;
    if (hmoe_model_open(model_dir, &m) || hmoe_fwd_init(m, 0, &f)) {
        fprintf(stderr, "reference: %s\n", hmoe_err_msg());
        return 0;
    }
    const int V = m->cfg.vocab_size;
    float *lg = malloc((size_t)V * sizeof(float));
    int ok = lg && hmoe_fwd_run(f, prompt, np, lg, 1) == HMOE_OK;
    for (int i = 0; ok && i < n; i++) {
        int best = 0;
        for (int v = 1; v < V; v++)
            if (lg[v] > lg[best]) best = v;
        out[i] = best;
        if (i + 1 < n) ok = hmoe_fwd_run(f, &out[i], 1, lg, 1) == HMOE_OK;
    }
    free(lg);
    hmoe_fwd_free(f);
    hmoe_model_close(m);
    return ok;
}

static int read_prompt(int32_t *p, int max)
{
    char path[512];
    snprintf(path, sizeof path, "%s/tokens.txt", model_dir);
    FILE *f = fopen(path, "r");
    int n = 0;
    while (f && n < max && fscanf(f, "%d", &p[n]) == 1)
        n++;
    if (f) fclose(f);
    return n;
}

static int check_same(const struct gen_result *g, const int32_t *ref, int n, const char *what)
{
    int same = g->done && g->n == n;
    for (int i = 0; same && i < n; i++)
        same = g->toks[i] == ref[i];
    CHECKF(same, "%s: cluster gave %d tokens (done %d, error '%s'), first mismatch vs reference",
           what, g->n, g->done, g->err);
    if (!same) {
        fprintf(stderr, "  cluster:");
        for (int i = 0; i < g->n && i < 24; i++)
            fprintf(stderr, " %d", g->toks[i]);
        fprintf(stderr, "\n  ref:    ");
        for (int i = 0; i < n && i < 24; i++)
            fprintf(stderr, " %d", ref[i]);
        fprintf(stderr, "\n");
    }
    return same;
}

/* ---- scenarios -------------------------------------------------------------------------- */

static pid_t victim;
static int kill_after;
static void kill_on_token(int k)
{
    if (k == kill_after && victim > 0) {
        kill(victim, SIGKILL);
        victim = 0;
    }
}

static void scenario_greedy(int workers)
{
    int32_t p[512];
    int np = read_prompt(p, 512);
    CHECK(np >= 8);
    /* three requests: a short prompt, a longer one (prefill across several hand-off slabs),
     * and the short one again (the sequence state is reset between requests) */
    const int lens[3] = {5, np < 70 ? np : 70, 5};
    const int ngen = 24;
    for (int r = 0; r < 3; r++) {
        int32_t ref[64];
        CHECK(reference(p + r, lens[r], ngen, ref));
        struct gen_result g;
        generate(p + r, lens[r], ngen, &g, NULL);
        char what[64];
        snprintf(what, sizeof what, "request %d (%d prompt tokens, %d workers)", r, lens[r],
                 workers);
        check_same(&g, ref, ngen, what);
    }
    CHECK(count_shm_of_coord() == workers + 1);
}

static void scenario_kill(int workers, int which)
{
    int32_t p[64];
    int np = read_prompt(p, 64);
    CHECK(np >= 8);
    pid_t pids[64];
    int ready[64];
    int n = cluster_status(pids, ready, 64);
    CHECK(n == workers + 1);
    if (n != workers + 1) return;
    victim = pids[which];
    kill_after = 3;
    struct gen_result g;
    uint64_t t0 = now_ms();
    generate(p, 8, 3000, &g, kill_on_token);
    uint64_t dt = now_ms() - t0;
    /* either a clear error naming the dead worker, or completion after recovery */
    CHECKF(g.done || (g.err_code == HMOE_E_PEER_DEAD && g.err[0]),
           "after SIGKILL: done %d, error %d '%s'", g.done, g.err_code, g.err);
    CHECKF(dt < 20000, "the failed request took %llu ms", (unsigned long long)dt);
    fprintf(stderr, "after SIGKILL of %s: %s (%d tokens, %llu ms)\n", which ? "E" : "G0",
            g.done ? "completed" : g.err, g.n, (unsigned long long)dt);
    /* the worker is restarted and the next request is served correctly */
    CHECK(wait_all_ready(workers + 1, 20000));
    n = cluster_status(pids, ready, 64);
    CHECK(n == workers + 1 && pids[which] > 0);
    int32_t ref[16];
    CHECK(reference(p, 8, 16, ref));
    generate(p, 8, 16, &g, NULL);
    check_same(&g, ref, 16, "request after restart");
    CHECK(count_shm_of_coord() == workers + 1);
}

/* A synthetic 4-node topology: one worker per node, binding refused (not this machine) and
 * reported, the cluster still serves exact tokens. */
static void scenario_topo(int workers)
{
    pid_t pids[64];
    int ready[64];
    int n = cluster_status(pids, ready, 64);
    CHECK(n == workers + 1);
    for (int i = 1; i < n; i++) {
        CHECKF(status_nodes[i] == (i - 1) % 4, "E%d on node %d", i - 1, status_nodes[i]);
        CHECKF(!status_bound[i], "E%d bound to a synthetic node", i - 1);
    }
    int32_t p[64];
    int np = read_prompt(p, 64);
    CHECK(np >= 8);
    int32_t ref[12];
    CHECK(reference(p, 8, 12, ref));
    struct gen_result g;
    generate(p, 8, 12, &g, NULL);
    check_same(&g, ref, 12, "4-node synthetic topology");
}

/* hmoe-fake-expert never answers (hang) or fails every hand-off (error): the client gets a
 * clear error in bounded time, the coordinator stays up, a hung worker is replaced. */
static void scenario_bad_expert(int hang)
{
    int32_t p[64];
    int np = read_prompt(p, 64);
    CHECK(np >= 8);
    struct gen_result g;
    uint64_t t0 = now_ms();
    generate(p, 8, 8, &g, NULL);
    uint64_t dt = now_ms() - t0;
    fprintf(stderr, "%s expert: error %d '%s' after %llu ms\n", hang ? "hung" : "failing",
            g.err_code, g.err, (unsigned long long)dt);
    if (hang) {
        CHECKF(g.err_code == HMOE_E_TIMEOUT && strstr(g.err, "E0"), "error %d '%s'", g.err_code,
               g.err);
        CHECKF(dt < 10000, "took %llu ms", (unsigned long long)dt);
        /* the hung worker is killed and restarted */
        uint64_t end = now_ms() + 10000;
        int restarted = 0;
        while (!restarted && now_ms() < end) {
            pid_t pids[8];
            int ready[8];
            if (cluster_status(pids, ready, 8) == 2 && ready[1]) {
                void *s = client_open();
                Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
                Hmoe__StatusRequest sr = HMOE__STATUS_REQUEST__INIT;
                e.body_case = HMOE__ENVELOPE__BODY_STATUS_REQUEST;
                e.status_request = &sr;
                struct hmoe_ctrl_msg m;
                if (s && hmoe_ctrl_send(s, NULL, 0, &e) == HMOE_OK &&
                    hmoe_ctrl_recv(s, 0, 5000, &arena, &m) == HMOE_OK &&
                    m.env->body_case == HMOE__ENVELOPE__BODY_STATUS_REPLY)
                    restarted = m.env->status_reply->workers[1]->restarts >= 1;
                hmoe_zmq_close(s);
            }
            if (!restarted) usleep(100000);
        }
        CHECK(restarted);
    } else {
        CHECKF(g.err_code == HMOE_E_INVAL && strstr(g.err, "fake expert failure"), "error %d '%s'",
               g.err_code, g.err);
        CHECKF(dt < 5000, "took %llu ms", (unsigned long long)dt);
    }
    CHECK(kill(coord_pid, 0) == 0);
    /* the coordinator still answers */
    pid_t pids[8];
    int ready[8];
    CHECK(cluster_status(pids, ready, 8) >= 2);
}

static void scenario_fuzz(void)
{
    void *s = client_open();
    CHECK(s != NULL);
    if (!s) return;
    uint64_t rng = 12345;
    int replies = 0;
    uint8_t buf[600];
    /* a valid request to truncate */
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__Request r = HMOE__REQUEST__INIT;
    int32_t toks[4] = {1, 2, 3, 4};
    r.tokens = toks;
    r.n_tokens = 4;
    r.n_predict = 2;
    r.prompt = (char *)"";
    e.body_case = HMOE__ENVELOPE__BODY_REQUEST;
    e.request = &r;
    uint8_t *valid;
    size_t vn;
    CHECK(hmoe_ctrl_encode(&e, &valid, &vn) == HMOE_OK);
    for (int it = 0; it < 300; it++) {
        size_t n;
        if (it % 3 == 0) {
            n = (size_t)it % vn; /* truncated request */
            memcpy(buf, valid, n);
        } else {
            n = 1 + (size_t)(rng % 500);
            for (size_t j = 0; j < n; j++) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                buf[j] = (uint8_t)rng;
            }
        }
        if (it % 50 == 7) { /* multi-frame garbage */
            zmq_send(s, buf, n, ZMQ_SNDMORE);
            zmq_send(s, "x", 1, 0);
        } else {
            zmq_send(s, buf, n, 0);
        }
        rng += (uint64_t)it * 2654435761u;
    }
    free(valid);
    /* drain replies: every rejection is answered with an Error; none may be a crash */
    for (;;) {
        struct hmoe_ctrl_msg m;
        if (hmoe_ctrl_recv(s, 0, 1000, &arena, &m) != HMOE_OK) break;
        replies++;
    }
    fprintf(stderr, "fuzz: %d replies to 300 bad messages\n", replies);
    CHECK(replies > 100);
    CHECK(kill(coord_pid, 0) == 0);
    hmoe_zmq_close(s);
    /* the cluster still serves correctly */
    int32_t p[64];
    int np = read_prompt(p, 64);
    CHECK(np >= 8);
    int32_t ref[8];
    CHECK(reference(p, 6, 8, ref));
    struct gen_result g;
    generate(p, 6, 8, &g, NULL);
    check_same(&g, ref, 8, "request after fuzzing");
    /* bad requests get errors, not crashes */
    int32_t bad[2] = {1, 1 << 30};
    generate(bad, 2, 4, &g, NULL);
    CHECKF(g.err_code == HMOE_E_INVAL, "out-of-vocabulary token: %d '%s'", g.err_code, g.err);
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: test_cluster SCENARIO MODEL WORKERS RESIDENT ref|fast\n");
        return 2;
    }
    model_dir = argv[2];
    int workers = atoi(argv[3]);
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/config.json", model_dir);
    if (access(cfg, R_OK) != 0) TEST_SKIP("fixture %s missing", model_dir);
    signal(SIGPIPE, SIG_IGN);
    zctx = hmoe_zmq_ctx_new();
    CHECK(hmoe_ctrl_arena_init(&arena, 0) == HMOE_OK);
    if (!strcmp(argv[1], "topo")) topology = "synthetic:pack:4 numa:1 core:1 pu:1";
    if (!strcmp(argv[1], "hung_expert") || !strcmp(argv[1], "failing_expert")) {
        cpu_bin = HMOE_BIN_DIR "/hmoe-fake-expert";
        step_timeout = "1500";
        setenv("HMOE_FAKE_MODE", !strcmp(argv[1], "hung_expert") ? "hang" : "error", 1);
    }
    if (!start_cluster(workers, argv[4], argv[5])) {
        CHECK(0);
        if (coord_pid > 0) {
            kill(coord_pid, SIGKILL);
            waitpid(coord_pid, NULL, 0);
        }
        TEST_DONE();
    }
    if (!strcmp(argv[1], "greedy"))
        scenario_greedy(workers);
    else if (!strcmp(argv[1], "kill_expert"))
        scenario_kill(workers, workers); /* last E */
    else if (!strcmp(argv[1], "kill_gpu"))
        scenario_kill(workers, 0);
    else if (!strcmp(argv[1], "fuzz"))
        scenario_fuzz();
    else if (!strcmp(argv[1], "topo"))
        scenario_topo(workers);
    else if (!strcmp(argv[1], "hung_expert"))
        scenario_bad_expert(1);
    else if (!strcmp(argv[1], "failing_expert"))
        scenario_bad_expert(0);
    else
        CHECK(!"unknown scenario");
    cluster_stop(1);
    hmoe_ctrl_arena_free(&arena);
    hmoe_zmq_ctx_term(zctx);
    TEST_DONE();
}
