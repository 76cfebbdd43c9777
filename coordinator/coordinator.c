/* coordinator/coordinator.c: hmoe-coordinator, the cluster supervisor and decode loop. It
 * spawns the GPU worker and one CPU expert worker per NUMA node (posix_spawn), keeps a child
 * table, takes SIGCHLD/SIGINT/SIGTERM through a signalfd in the same zmq_poll loop as the
 * control sockets, exchanges heartbeats, restarts dead workers, creates and unlinks the shared
 * memory regions, serves clients on a ROUTER socket in the run dir (mode 0700) and runs the
 * greedy decode loop, streaming each token to the client as it is produced. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "hmoe/ctrl.h"
#include "hmoe/log.h"
#include "hmoe/shm.h"
#include "hmoe/topo.h"
#include "hmoe/worker_link.h"
#include "hmoe/xq.h"
#include "hmoe/zmq_util.h"
#ifdef HMOE_HAVE_TEXT
#include "hmoe/text.h"
#endif

extern char **environ;

#define MAX_CHILD 257
#define MAX_QUEUE 64

enum cstate { C_DOWN = 0, C_SPAWNED, C_CONFIGURED, C_LOADED, C_READY };
static const char *cstate_name[] = {"down", "starting", "loading", "loaded", "ready"};

struct child {
    char ident[16];
    Hmoe__Role role;
    int id;
    pid_t pid;
    enum cstate st;
    uint64_t last_rx_ms, last_tx_ms, spawn_ms, respawn_at_ms;
    int restarts;        /* in all (shown by hmoe status) */
    int recent_restarts; /* in the current burst (limited by --max-restarts) */
    int numa;
    int bound;
    uint64_t shard_bytes;
    uint32_t n_owned;
    uint64_t prog_done, prog_total;
    uint64_t prog_print_ms;
    int attach_sent; /* gpu: regions sent to this incarnation */
    /* counters: the gpu worker's come from StepEnd; an expert worker's too (what G0 handed it
     * per step, StepEnd.worker_*), so they are current when a request ends; the worker's own
     * Stats (every 2 s) are used only while no StepEnd has carried them (step_counted) */
    uint64_t n_req, n_pairs, busy_us, wait_us;
    int step_counted;
    uint64_t rss_bytes; /* resident host memory, as the worker last reported it */
};

struct request {
    unsigned char ident[256];
    size_t ident_len;
    uint64_t id;
    int32_t *tokens; /* prompt ids (token-id requests; text requests: after encoding) */
    int n_tokens;
    int n_predict;
    int ignore_eos;
    uint64_t t_recv_us;
    /* text requests and sampling (hmoe_text) */
    char *text; /* user prompt, NULL for token-id requests */
    char *system;
    char *tmpl;
    char *stop[8];
    int n_stop;
    char **hist; /* chat history: role, content, role, content, ... */
    int n_hist;  /* strings in hist (2 per message) */
    int truncate_left;
    int ctx_size;     /* 0 = the cluster's context */
    int has_sampling; /* sampling fields were given (set bits) */
    float temp, top_p, min_p, rep_pen, pres, freq;
    int32_t top_k, rep_last_n;
    int64_t seed;
    uint32_t set;
#ifdef HMOE_HAVE_TEXT
    struct hmoe_request *hreq; /* text request state (tokenizer, sampler, stop strings) */
    struct hmoe_sampler *smp;  /* token-id request with sampling */
#endif
};

struct opts {
    const char *model;
    const char *run_dir;
    const char *topology;
    const char *log_level;
    const char *gpu_bin, *cpu_bin;
    const char *kernels;   /* expert kernels of the cpu workers: fast | ref */
    const char *tokenizer; /* tokenizer.json (default: MODEL/tokenizer.json when present) */
    int workers;           /* -1 = one per NUMA node */
    uint64_t resident_bytes;
    const char *backend;  /* gpu worker backend: cpu | cuda */
    uint64_t vram_budget; /* cuda: bytes (0 = unlimited; default 14 GiB) */
    int ctx;
    int queue_tokens;
    int threads;
    int reserve_cores; /* cores of E0's node left to G0 and the coordinator (-1: auto) */
    int spin_us;
    int heartbeat_ms;
    int step_timeout_ms;
    int max_restarts;
    int print_topology;
};

struct coord {
    struct opts o;
    void *ctx, *wsock, *csock;
    int sfd;
    char run_dir[256], run_id[48], ep_ctrl[300], ep_client[300];
    int own_run_dir;
    struct hmoe_topo *topo;
    int W, n_child;
    struct child ch[MAX_CHILD]; /* [0] = G0, [1 + i] = E<i> */
    struct hmoe_ctrl_arena arena;
    uint64_t seq;
    /* model, from the GPU worker */
    int have_info;
    int H, V, K, L, E, max_ctx, n_eos;
    int max_ctx_req; /* context of the current request (<= max_ctx) */
    int32_t eos[64];
    uint64_t expert_bytes;
    /* data plane */
    int regions_made;
    struct hmoe_shm xshm[MAX_CHILD];
    struct hmoe_xq xq[MAX_CHILD];
    struct hmoe_shm lshm;
    /* placement as reported */
    uint8_t *home;
    size_t home_len;
    int home_sent; /* expert workers were configured with this placement */
    uint32_t n_resident;
    uint64_t resident_used;
    char placement_backend[16];
    uint64_t vram_budget, vram_used;
    /* requests */
    struct request queue[MAX_QUEUE];
    int q_head, q_len;
    struct request cur;
    int busy; /* cur holds a request */
    int step_inflight;
    uint64_t step, step_sent_us;
    int n_gen, pos;
    uint64_t t_first_us, t_prefill_done_us;
    /* lifecycle */
    int ever_ready, was_ready;
    int stopping;
    uint64_t stop_deadline_ms;
    int panic;
    int config_error; /* exit 1 rather than 2 */
    uint64_t last_hb_ms;
    uint64_t n_requests, n_tokens_gen;
    uint64_t req_pairs_off, req_pairs_res, req_wait_us, req_step_us; /* current request */
#ifdef HMOE_HAVE_TEXT
    struct hmoe_tokenizer *tok;
    struct hmoe_gen_defaults gdef;
#endif
};

static struct coord C;

/* ---- small helpers ---------------------------------------------------------------------- */

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0) return 0;
    double mul = 1;
    if (*end == 'k' || *end == 'K')
        mul = 1024.0, end++;
    else if (*end == 'm' || *end == 'M')
        mul = 1048576.0, end++;
    else if (*end == 'g' || *end == 'G')
        mul = 1073741824.0, end++;
    else if (*end == 't' || *end == 'T')
        mul = 1099511627776.0, end++;
    if (*end == 'i' || *end == 'I') end++;
    if (*end == 'b' || *end == 'B') end++;
    if (*end) return 0;
    *out = (uint64_t)(v * mul);
    return 1;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return 0;
    *out = (int)v;
    return 1;
}

static struct child *child_by_ident(const unsigned char *id, size_t n)
{
    for (int i = 0; i < C.n_child; i++)
        if (strlen(C.ch[i].ident) == n && memcmp(C.ch[i].ident, id, n) == 0) return &C.ch[i];
    return NULL;
}

static struct child *child_by_pid(pid_t pid)
{
    for (int i = 0; i < C.n_child; i++)
        if (C.ch[i].pid == pid) return &C.ch[i];
    return NULL;
}

static enum hmoe_status send_worker(struct child *c, Hmoe__Envelope *e)
{
    e->seq = ++C.seq;
    c->last_tx_ms = hmoe_now_ms();
    enum hmoe_status st = hmoe_ctrl_send(C.wsock, c->ident, strlen(c->ident), e);
    if (st)
        HMOE_LOG_WARN("send %s to %s: %s", hmoe_ctrl_body_name(e->body_case), c->ident,
                      hmoe_err_msg());
    return st;
}

static enum hmoe_status send_client(const unsigned char *ident, size_t n, Hmoe__Envelope *e)
{
    e->seq = ++C.seq;
    return hmoe_ctrl_send(C.csock, ident, n, e);
}

static void client_error(const unsigned char *ident, size_t n, uint64_t req_id,
                         enum hmoe_status code, const char *msg, const char *hint)
{
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__Error er = HMOE__ERROR__INIT;
    er.code = code;
    er.message = (char *)msg;
    er.hint = (char *)(hint ? hint : "");
    er.request_id = req_id;
    e.body_case = HMOE__ENVELOPE__BODY_ERROR;
    e.error = &er;
    if (send_client(ident, n, &e)) HMOE_LOG_DEBUG("client gone: %s", hmoe_err_msg());
}

static void request_free(struct request *r)
{
    free(r->tokens);
    free(r->text);
    free(r->system);
    free(r->tmpl);
    for (int i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    for (int i = 0; i < r->n_hist; i++)
        free(r->hist[i]);
    free(r->hist);
#ifdef HMOE_HAVE_TEXT
    hmoe_request_free(r->hreq);
    hmoe_sampler_free(r->smp);
#endif
    memset(r, 0, sizeof *r);
}

static int cluster_ready(void)
{
    for (int i = 0; i < C.n_child; i++)
        if (C.ch[i].st != C_READY) return 0;
    return C.have_info;
}

/* ---- processes -------------------------------------------------------------------------- */

static void begin_shutdown(const char *why);

static void spawn_child(struct child *c)
{
    const char *bin = c->role == HMOE__ROLE__ROLE_GPU ? C.o.gpu_bin : C.o.cpu_bin;
    char id[16], numa[16];
    snprintf(id, sizeof id, "%d", c->id);
    snprintf(numa, sizeof numa, "%d", c->numa);
    const char *argv[16];
    int n = 0;
    argv[n++] = bin;
    argv[n++] = "--role";
    argv[n++] = c->role == HMOE__ROLE__ROLE_GPU ? "gpu" : "cpu";
    argv[n++] = "--id";
    argv[n++] = id;
    argv[n++] = "--ctrl";
    argv[n++] = C.ep_ctrl;
    argv[n++] = "--run-dir";
    argv[n++] = C.run_dir;
    argv[n++] = "--log-level";
    argv[n++] = C.o.log_level;
    if (c->role == HMOE__ROLE__ROLE_CPU_EXPERT) {
        argv[n++] = "--numa-node";
        argv[n++] = numa;
    }
    argv[n] = NULL;
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    sigset_t none, dflt;
    sigemptyset(&none);
    sigemptyset(&dflt);
    sigaddset(&dflt, SIGINT);
    sigaddset(&dflt, SIGTERM);
    sigaddset(&dflt, SIGCHLD);
    sigaddset(&dflt, SIGPIPE);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &dflt);
    /* own process group: a terminal's Ctrl-C reaches the coordinator only, which then stops
     * the workers in order */
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP);
    pid_t pid;
    int rc = posix_spawn(&pid, bin, NULL, &at, (char *const *)argv, environ);
    posix_spawnattr_destroy(&at);
    c->spawn_ms = hmoe_now_ms();
    c->last_rx_ms = c->spawn_ms;
    c->attach_sent = 0;
    c->prog_done = c->prog_total = 0;
    if (rc != 0) {
        HMOE_LOG_ERROR("cannot start %s (%s): %s", c->ident, bin, strerror(rc));
        c->st = C_DOWN;
        c->pid = 0;
        c->restarts++;
        if (++c->recent_restarts > C.o.max_restarts) {
            C.panic = 1;
            begin_shutdown("a worker cannot be started");
            return;
        }
        c->respawn_at_ms = hmoe_now_ms() + 1000;
        return;
    }
    c->pid = pid;
    c->st = C_SPAWNED;
    HMOE_LOG_INFO("started %s pid %d%s", c->ident, (int)pid,
                  c->role == HMOE__ROLE__ROLE_CPU_EXPERT ? "" : "");
}

static void begin_shutdown(const char *why)
{
    if (C.stopping) return;
    C.stopping = 1;
    C.stop_deadline_ms = hmoe_now_ms() + 3000;
    HMOE_LOG_INFO("shutting down: %s", why);
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__Shutdown s = HMOE__SHUTDOWN__INIT;
    s.reason = (char *)why;
    e.body_case = HMOE__ENVELOPE__BODY_SHUTDOWN;
    e.shutdown = &s;
    for (int i = 0; i < C.n_child; i++)
        if (C.ch[i].pid > 0) {
            if (C.ch[i].st >= C_CONFIGURED)
                send_worker(&C.ch[i], &e);
            else
                kill(C.ch[i].pid, SIGTERM);
        }
    if (C.busy) {
        client_error(C.cur.ident, C.cur.ident_len, C.cur.id, HMOE_E_PEER_DEAD,
                     "the coordinator is shutting down", NULL);
        request_free(&C.cur);
        C.busy = 0;
    }
    while (C.q_len) {
        struct request *r = &C.queue[C.q_head];
        client_error(r->ident, r->ident_len, r->id, HMOE_E_PEER_DEAD,
                     "the coordinator is shutting down", NULL);
        request_free(r);
        C.q_head = (C.q_head + 1) % MAX_QUEUE;
        C.q_len--;
    }
}

static void fail_current(enum hmoe_status code, const char *msg, const char *hint)
{
    if (!C.busy) return;
    HMOE_LOG_WARN("request %llu failed: %s", (unsigned long long)C.cur.id, msg);
    client_error(C.cur.ident, C.cur.ident_len, C.cur.id, code, msg, hint);
    request_free(&C.cur);
    C.busy = 0;
    C.step_inflight = 0;
}

static void on_child_exit(pid_t pid, int status)
{
    struct child *c = child_by_pid(pid);
    if (!c) return;
    char how[64];
    if (WIFSIGNALED(status))
        snprintf(how, sizeof how, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(how, sizeof how, "exited with status %d", WEXITSTATUS(status));
    if (C.stopping)
        HMOE_LOG_INFO("%s (pid %d) %s", c->ident, (int)pid, how);
    else
        HMOE_LOG_WARN("%s (pid %d) %s", c->ident, (int)pid, how);
    c->pid = 0;
    c->st = C_DOWN;
    if (c->role == HMOE__ROLE__ROLE_CPU_EXPERT && C.regions_made) {
        /* wake a GPU worker waiting on this queue: it fails the step with PEER_DEAD */
        struct hmoe_xq_ctl *k = C.xq[c->id].ctl;
        atomic_store(&k->alive, 0);
        hmoe_doorbell_kick(&k->resp);
    }
    if (c->role == HMOE__ROLE__ROLE_GPU && C.step_inflight) {
        char msg[160];
        snprintf(msg, sizeof msg, "the GPU worker died during generation (%s)", how);
        fail_current(HMOE_E_PEER_DEAD, msg, "the worker is being restarted; retry the request");
    }
    if (C.stopping) return;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 1) {
        /* usage/config error: restarting cannot help */
        HMOE_LOG_ERROR("%s failed to start (bad configuration); stopping", c->ident);
        fprintf(stderr, "hint: check the model path (-m) and the options; the worker's reason "
                        "is logged above\n");
        C.panic = 1;
        C.config_error = 1;
        begin_shutdown("a worker could not be configured");
        return;
    }
    /* the restart budget is per burst: a worker that ran for a minute starts afresh */
    if (hmoe_now_ms() - c->spawn_ms > 60000) c->recent_restarts = 0;
    if (c->recent_restarts >= C.o.max_restarts) {
        HMOE_LOG_ERROR("%s died %d times in a row; giving up", c->ident, c->recent_restarts + 1);
        C.panic = 1;
        begin_shutdown("a worker keeps dying");
        return;
    }
    c->restarts++;
    c->recent_restarts++;
    c->respawn_at_ms = hmoe_now_ms() + 200u * (uint64_t)c->recent_restarts;
}

static void reap(void)
{
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0) break;
        on_child_exit(pid, status);
    }
}

/* ---- shared memory ---------------------------------------------------------------------- */

static enum hmoe_status make_regions(void)
{
    if (C.regions_made) return HMOE_OK;
    enum hmoe_status st;
    char name[HMOE_SHM_NAME_MAX], reg[16];
    const uint32_t cap_tok = (uint32_t)C.o.queue_tokens, cap_pairs = cap_tok * (uint32_t)C.K;
    for (int i = 0; i < C.W; i++) {
        snprintf(reg, sizeof reg, "e%d", i);
        if ((st = hmoe_shm_name(name, sizeof name, C.run_id, reg)) ||
            (st = hmoe_shm_create(name, HMOE_XQ_LAYOUT,
                                  hmoe_xq_shm_size((uint32_t)C.H, cap_tok, cap_pairs),
                                  &C.xshm[i])) ||
            (st = hmoe_xq_shm_init(&C.xshm[i], (uint32_t)C.H, cap_tok, cap_pairs, &C.xq[i])))
            return st;
    }
    if ((st = hmoe_shm_name(name, sizeof name, C.run_id, "logits")) ||
        (st = hmoe_shm_create(name, HMOE_LOGITS_LAYOUT,
                              sizeof(struct hmoe_logits_ctl) + (size_t)C.V * sizeof(float),
                              &C.lshm)))
        return st;
    ((struct hmoe_logits_ctl *)C.lshm.data)->vocab = (uint32_t)C.V;
    C.regions_made = 1;
    HMOE_LOG_INFO("shared memory: %d expert queue(s) of %.1f MiB (%u tokens), logits %.1f MiB", C.W,
                  C.W ? (double)C.xshm[0].nbytes / 1048576.0 : 0.0, cap_tok,
                  (double)C.lshm.nbytes / 1048576.0);
    return HMOE_OK;
}

static void free_regions(void)
{
    for (int i = 0; i < C.W; i++)
        hmoe_shm_close(&C.xshm[i]);
    hmoe_shm_close(&C.lshm);
    hmoe_shm_unlink_run(C.run_id); /* anything a crash left */
    C.regions_made = 0;
}

/* ---- worker messages -------------------------------------------------------------------- */

/* Compute threads of expert worker `id` on NUMA node `node` (0 = every core of the node). With
 * --threads 0, E0 leaves --reserve-cores cores of its node to the GPU worker's host thread and the
 * coordinator, which are not bound: a pool thread that shares a core with them stalls every
 * step of the pool (measured in docs/cluster.md). */
static int reserved_cores(void)
{
    if (C.o.reserve_cores >= 0) return C.o.reserve_cores;
    return strcmp(C.o.backend, "cuda") ? 0 : 2;
}

/* Doorbell spin before sleeping: 1000 us when E0 leaves cores to the GPU worker and the
 * coordinator (every spinning waiter has a core of its own), else 50 us (a spinning waiter would
 * take a core from a pool thread: 9.4 instead of 48.9 tok/s measured, docs/cluster.md). */
static int spin_us(void)
{
    if (C.o.spin_us >= 0) return C.o.spin_us;
    return reserved_cores() > 0 && C.o.threads == 0 ? 1000 : 50;
}

static int worker_threads(int id, int node)
{
    if (C.o.threads > 0 || id != 0 || reserved_cores() == 0) return C.o.threads;
    const int n = hmoe_topo_n_cores(C.topo, node);
    if (n <= 0) return 0;
    return n > reserved_cores() ? n - reserved_cores() : 1;
}

static void print_thread_plan(FILE *f)
{
    for (int i = 0; i < C.W; i++) {
        const int node = hmoe_topo_worker_node(C.topo, i, C.W), n = worker_threads(i, node);
        const int nt = n ? n : hmoe_topo_n_cores(C.topo, node);
        fprintf(f, "E%d: %d thread%s on node %d", i, nt, nt == 1 ? "" : "s", node);
        if (C.o.threads == 0 && n > 0)
            fprintf(f, " (%d of its cores left to the GPU worker and the coordinator)",
                    hmoe_topo_n_cores(C.topo, node) - n);
        fputc('\n', f);
    }
    fprintf(f, "doorbell spin: %d us\n", spin_us());
}

static void send_config(struct child *c, int with_regions)
{
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__WorkerConfig cf = HMOE__WORKER_CONFIG__INIT;
    char *regs[MAX_CHILD];
    cf.model = (char *)C.o.model;
    cf.run_id = C.run_id;
    cf.n_expert_workers = (uint32_t)C.W;
    cf.worker_index = (uint32_t)(c->role == HMOE__ROLE__ROLE_GPU ? 0 : c->id);
    cf.numa_node = c->role == HMOE__ROLE__ROLE_GPU ? -1 : c->numa;
    cf.resident_bytes = C.o.resident_bytes;
    cf.max_ctx = (uint32_t)C.o.ctx;
    cf.threads = (uint32_t)(c->role == HMOE__ROLE__ROLE_CPU_EXPERT ? worker_threads(c->id, c->numa)
                                                                   : C.o.threads);
    cf.queue_tokens = (uint32_t)C.o.queue_tokens;
    cf.topology = (char *)(C.o.topology ? C.o.topology : "");
    cf.heartbeat_ms = (uint32_t)C.o.heartbeat_ms;
    cf.spin_us = (uint32_t)spin_us();
    cf.handoff_timeout_ms = (uint32_t)C.o.step_timeout_ms;
    cf.log_level = (char *)C.o.log_level;
    cf.logits_region = (char *)"";
    cf.expert_kernels = (char *)C.o.kernels;
    cf.backend = (char *)C.o.backend;
    cf.vram_budget = C.o.vram_budget;
    if (c->role == HMOE__ROLE__ROLE_CPU_EXPERT) {
        regs[0] = C.xshm[c->id].name;
        cf.n_regions = 1;
        cf.regions = regs;
        if (C.home && C.have_info && C.home_len == (size_t)C.L * C.E) {
            /* G0's final placement: the worker prepares only the experts placed on it */
            cf.home.data = C.home;
            cf.home.len = C.home_len;
            C.home_sent = 1;
        }
    } else if (with_regions) {
        for (int i = 0; i < C.W; i++)
            regs[i] = C.xshm[i].name;
        cf.n_regions = (size_t)C.W;
        cf.regions = regs;
        cf.logits_region = C.lshm.name;
        c->attach_sent = 1;
    }
    e.body_case = HMOE__ENVELOPE__BODY_CONFIG;
    e.config = &cf;
    send_worker(c, &e);
}

static void print_banner(void)
{
    HMOE_LOG_INFO("model %s: hidden %d, %d layers, vocab %d, %d experts top-%d, context %d",
                  C.o.model, C.H, C.L, C.V, C.E, C.K, C.max_ctx);
    HMOE_LOG_INFO("placement: %u experts resident in G0 (%s, %.1f MiB), the rest on %d expert "
                  "worker(s) (%.1f MiB of experts in all)",
                  C.n_resident, !strcmp(C.placement_backend, "cuda") ? "VRAM" : "host",
                  (double)C.resident_used / 1048576.0, C.W, (double)C.expert_bytes / 1048576.0);
    for (int i = 1; i < C.n_child; i++)
        HMOE_LOG_INFO("  %s: pid %d, NUMA node %d%s, %u experts, %.1f MiB", C.ch[i].ident,
                      (int)C.ch[i].pid, C.ch[i].numa, C.ch[i].bound ? "" : " (unbound)",
                      C.ch[i].n_owned, (double)C.ch[i].shard_bytes / 1048576.0);
}

static void maybe_ready(void)
{
    struct child *g = &C.ch[0];
    if (g->st == C_LOADED && !g->attach_sent) {
        for (int i = 1; i < C.n_child; i++)
            if (C.ch[i].st != C_READY) return;
        send_config(g, 1);
    }
    int r = cluster_ready();
    if (r && !C.was_ready) {
        if (!C.ever_ready) {
            print_banner();
            printf("ready: listening on %s\n", C.ep_client);
            fflush(stdout);
            HMOE_LOG_INFO("ready: listening on %s", C.ep_client);
        } else {
            HMOE_LOG_INFO("cluster ready again");
        }
        C.ever_ready = 1;
    }
    C.was_ready = r;
}

static void show_progress(struct child *c)
{
    uint64_t now = hmoe_now_ms();
    if (c->prog_done < c->prog_total && now - c->prog_print_ms < 2000) return;
    c->prog_print_ms = now;
    HMOE_LOG_INFO("%s loading %llu/%llu", c->ident, (unsigned long long)c->prog_done,
                  (unsigned long long)c->prog_total);
}

static void start_step(const int32_t *toks, int n, int reset);
static void on_step_end(const Hmoe__StepEnd *se);

static void handle_worker(struct hmoe_ctrl_msg *m)
{
    struct child *c = child_by_ident(m->ident, m->ident_len);
    if (!c) {
        HMOE_LOG_WARN("message from unknown peer dropped");
        return;
    }
    Hmoe__Envelope *e = m->env;
    c->last_rx_ms = hmoe_now_ms();
    switch (e->body_case) {
    case HMOE__ENVELOPE__BODY_HELLO:
        if (e->hello->role != c->role || (pid_t)e->hello->pid != c->pid) {
            HMOE_LOG_WARN("%s: hello from pid %u role %d, expected pid %d; ignored", c->ident,
                          e->hello->pid, (int)e->hello->role, (int)c->pid);
            return;
        }
        c->st = C_CONFIGURED;
        send_config(c, 0);
        break;
    case HMOE__ENVELOPE__BODY_PROGRESS:
        c->prog_done = e->progress->done;
        c->prog_total = e->progress->total;
        show_progress(c);
        break;
    case HMOE__ENVELOPE__BODY_READY:
        if (c->role == HMOE__ROLE__ROLE_GPU) {
            const Hmoe__ModelInfo *mi = e->ready->model;
            if (!mi || !mi->hidden_size || !mi->vocab_size || mi->experts_per_tok > 64 ||
                mi->vocab_size > (1u << 24)) {
                HMOE_LOG_ERROR("G0 reported an unusable model description");
                C.panic = 1;
                begin_shutdown("bad model description");
                return;
            }
            if (!C.have_info) {
                C.H = (int)mi->hidden_size;
                C.V = (int)mi->vocab_size;
                C.K = (int)(mi->experts_per_tok ? mi->experts_per_tok : 1);
                C.L = (int)mi->num_layers;
                C.E = (int)mi->num_experts;
                C.max_ctx = (int)mi->max_ctx;
                C.n_eos = (int)mi->n_eos_token_ids;
                for (int i = 0; i < C.n_eos; i++)
                    C.eos[i] = mi->eos_token_ids[i];
                C.expert_bytes = mi->expert_bytes_total;
                C.have_info = 1;
                if (make_regions()) {
                    HMOE_LOG_ERROR("shared memory: %s", hmoe_err_msg());
                    C.panic = 1;
                    begin_shutdown("cannot create shared memory");
                    return;
                }
                for (int i = 1; i < C.n_child; i++)
                    if (C.ch[i].st == C_DOWN && !C.ch[i].pid) spawn_child(&C.ch[i]);
            }
            c->st = e->ready->attached ? C_READY : C_LOADED;
        } else {
            c->st = C_READY;
            c->numa = e->ready->numa_node;
            c->bound = e->ready->bound;
            c->shard_bytes = e->ready->shard_bytes;
            c->n_owned = e->ready->n_experts_owned;
            c->rss_bytes = e->ready->rss_bytes;
            if (C.ever_ready) HMOE_LOG_INFO("%s is back", c->ident);
        }
        maybe_ready();
        break;
    case HMOE__ENVELOPE__BODY_PLACEMENT: {
        const Hmoe__ExpertPlacement *p = e->placement;
        if (C.home_sent &&
            (p->home.len != C.home_len || memcmp(p->home.data, C.home, C.home_len) != 0)) {
            /* the expert workers prepared (and released the source of) the old placement only */
            HMOE_LOG_ERROR("%s changed the expert placement after the expert workers prepared "
                           "theirs; a placement change needs a cluster restart",
                           c->ident);
            C.config_error = 1;
            begin_shutdown("expert placement changed");
            return;
        }
        free(C.home);
        C.home = malloc(p->home.len ? p->home.len : 1);
        C.home_len = C.home && p->home.len ? p->home.len : 0;
        if (C.home && p->home.len) memcpy(C.home, p->home.data, p->home.len);
        C.n_resident = p->n_resident;
        C.resident_used = p->resident_bytes;
        snprintf(C.placement_backend, sizeof C.placement_backend, "%s",
                 p->backend && *p->backend ? p->backend : "cpu");
        C.vram_budget = p->vram_budget;
        C.vram_used = p->vram_used;
        break;
    }
    case HMOE__ENVELOPE__BODY_STEP_END:
        if (c->role == HMOE__ROLE__ROLE_GPU) {
            c->n_req++;
            c->n_pairs += e->step_end->n_offloaded;
            c->busy_us += e->step_end->compute_us;
            c->wait_us += e->step_end->handoff_us;
            C.req_pairs_off += e->step_end->n_offloaded;
            C.req_pairs_res += e->step_end->n_resident;
            C.req_wait_us += e->step_end->handoff_us;
            C.req_step_us += e->step_end->compute_us;
            /* what this step handed to each expert worker: their counters stay current */
            const Hmoe__StepEnd *se = e->step_end;
            for (size_t i = 0; i < se->n_worker_handoffs && (int)i < C.W; i++) {
                struct child *x = &C.ch[1 + i];
                x->n_req += se->worker_handoffs[i];
                if (i < se->n_worker_pairs) x->n_pairs += se->worker_pairs[i];
                if (i < se->n_worker_compute_us) x->busy_us += se->worker_compute_us[i];
                x->step_counted = 1;
            }
            on_step_end(e->step_end);
        }
        break;
    case HMOE__ENVELOPE__BODY_STATS:
        c->rss_bytes = e->stats->rss_bytes;
        if (c->step_counted) break; /* StepEnd keeps these current */
        c->n_req = e->stats->steps;
        c->n_pairs = e->stats->pairs;
        c->busy_us = e->stats->busy_us;
        break;
    case HMOE__ENVELOPE__BODY_ERROR:
        HMOE_LOG_ERROR("%s reports: %s", c->ident, e->error->message);
        break;
    default:
        break;
    }
}

/* ---- decode loop ------------------------------------------------------------------------ */

static void start_step(const int32_t *toks, int n, int reset)
{
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__StepBegin sb = HMOE__STEP_BEGIN__INIT;
    sb.step = ++C.step;
    if ((uint32_t)C.step == 0) sb.step = ++C.step; /* logits seq 0 means "none" */
    sb.reset = reset;
    sb.n_tokens = (size_t)n;
    sb.tokens = (int32_t *)toks;
    e.body_case = HMOE__ENVELOPE__BODY_STEP_BEGIN;
    e.step_begin = &sb;
    C.step_sent_us = hmoe_now_us();
    if (send_worker(&C.ch[0], &e) != HMOE_OK) {
        fail_current(HMOE_E_PEER_DEAD, "cannot reach the GPU worker", NULL);
        return;
    }
    C.step_inflight = 1;
}

static void finish_current(const char *reason)
{
    uint64_t now = hmoe_now_us();
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__Done d = HMOE__DONE__INIT;
    d.request_id = C.cur.id;
    d.n_prompt = (uint32_t)C.cur.n_tokens;
    d.n_gen = (uint32_t)C.n_gen;
    d.ttft_us = C.t_first_us ? C.t_first_us - C.cur.t_recv_us : 0;
    d.prompt_us = C.t_prefill_done_us ? C.t_prefill_done_us - C.cur.t_recv_us : 0;
    d.gen_us = C.t_first_us ? now - C.t_first_us : 0;
    d.finish_reason = (char *)reason;
    e.body_case = HMOE__ENVELOPE__BODY_DONE;
    e.done = &d;
    send_client(C.cur.ident, C.cur.ident_len, &e);
    HMOE_LOG_INFO("request %llu: %d prompt + %d generated tokens, %s, TTFT %.1f ms, %.2f tok/s; "
                  "expert pairs %llu offloaded / %llu resident, hand-off wait %.1f%% of %.1f ms",
                  (unsigned long long)C.cur.id, C.cur.n_tokens, C.n_gen, reason,
                  (double)d.ttft_us / 1e3,
                  C.n_gen > 1 && d.gen_us ? (double)(C.n_gen - 1) * 1e6 / (double)d.gen_us : 0.0,
                  (unsigned long long)C.req_pairs_off, (unsigned long long)C.req_pairs_res,
                  C.req_step_us ? 100.0 * (double)C.req_wait_us / (double)C.req_step_us : 0.0,
                  (double)C.req_step_us / 1e3);
    request_free(&C.cur);
    C.busy = 0;
    C.n_requests++;
}

static void on_step_end(const Hmoe__StepEnd *se)
{
    if (!C.busy || !C.step_inflight || se->step != C.step) {
        HMOE_LOG_DEBUG("stale step end %llu ignored", (unsigned long long)se->step);
        return;
    }
    C.step_inflight = 0;
    if (se->status != 0 && se->status == HMOE_E_TIMEOUT && se->failed_worker &&
        (int)se->failed_worker <= C.W) {
        /* a hung expert worker: replace it (SIGCHLD restarts it) */
        struct child *hc = &C.ch[se->failed_worker];
        if (hc->pid > 0) {
            HMOE_LOG_WARN("%s did not answer a hand-off in time: killing it", hc->ident);
            kill(hc->pid, SIGKILL);
        }
    }
    if (se->status != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "generation failed: %s", se->error);
        int dead = se->status == HMOE_E_PEER_DEAD || se->status == HMOE_E_TIMEOUT;
        fail_current((enum hmoe_status)se->status, msg,
                     dead ? "a worker died; the cluster restarts it, retry the request" : NULL);
        return;
    }
    const struct hmoe_logits_ctl *lg = C.lshm.data;
    if (atomic_load_explicit(&((struct hmoe_logits_ctl *)lg)->seq, memory_order_acquire) !=
            se->logits_seq ||
        se->logits_seq != (uint32_t)C.step) {
        fail_current(HMOE_E_PROTO, "logits in shared memory do not belong to this step", NULL);
        return;
    }
    const float *lo = hmoe_logits_data((struct hmoe_logits_ctl *)lg);
    int best = 0;
    const char *text = "";
    const char *finish = NULL; /* set when the text state ends the request */
#ifdef HMOE_HAVE_TEXT
    if (C.cur.hreq) {
        /* text request: sampler + stop strings + streamable text (tok's hmoe_request) */
        size_t len;
        enum hmoe_status st;
        int32_t id;
        enum hmoe_finish fin = hmoe_request_step(C.cur.hreq, lo, &id, &text, &len, &st);
        if (st) {
            char msg[300];
            snprintf(msg, sizeof msg, "sampling: %s", hmoe_err_msg());
            fail_current(st, msg, NULL);
            return;
        }
        best = id;
        if (fin != HMOE_FINISH_NONE) finish = hmoe_finish_str(fin);
    } else if (C.cur.smp) {
        int32_t id;
        enum hmoe_status st = hmoe_sampler_sample(C.cur.smp, lo, &id);
        if (!st) st = hmoe_sampler_accept(C.cur.smp, id, 0);
        if (st) {
            char msg[300];
            snprintf(msg, sizeof msg, "sampling: %s", hmoe_err_msg());
            fail_current(st, msg, NULL);
            return;
        }
        best = id;
    } else
#endif
    {
        for (int v = 1; v < C.V; v++)
            if (lo[v] > lo[best]) best = v; /* first maximum, as torch.argmax */
    }
    uint64_t now = hmoe_now_us();
    if (!C.t_first_us) {
        C.t_first_us = now;
        C.t_prefill_done_us = now;
    }
    C.pos = (int)se->pos;
    C.n_gen++;
    C.n_tokens_gen++;
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__Token t = HMOE__TOKEN__INIT;
    t.request_id = C.cur.id;
    t.id = best;
    t.index = (uint32_t)(C.n_gen - 1);
    t.text = (char *)text;
    e.body_case = HMOE__ENVELOPE__BODY_TOKEN;
    e.token = &t;
    if (send_client(C.cur.ident, C.cur.ident_len, &e) != HMOE_OK) {
        HMOE_LOG_INFO("request %llu: client went away; stopping", (unsigned long long)C.cur.id);
        request_free(&C.cur);
        C.busy = 0;
        return;
    }
    int is_eos = 0;
    for (int i = 0; i < C.n_eos; i++)
        is_eos |= best == C.eos[i];
    if (finish) finish_current(finish);
#ifdef HMOE_HAVE_TEXT
    else if (C.cur.hreq && C.pos < C.max_ctx_req) {
        int32_t tok = best; /* the text state decides when to stop */
        start_step(&tok, 1, 0);
    }
#endif
    else if (is_eos && !C.cur.ignore_eos)
        finish_current("stop");
    else if (C.cur.n_predict >= 0 && C.n_gen >= C.cur.n_predict)
        finish_current("length");
    else if (C.pos >= C.max_ctx_req)
        finish_current("ctx");
    else {
        int32_t tok = best;
        start_step(&tok, 1, 0);
    }
}

/* Text prompts: chat template + tokenizer + sampler + stop strings through tok's hmoe_request;
 * token-id prompts with sampling fields: a sampler. Returns 0 after failing the request. */
static int prepare_text(struct request *r)
{
#ifdef HMOE_HAVE_TEXT
    struct hmoe_text_opts o;
    hmoe_text_opts_init(&o);
    o.sampling.temperature = r->temp;
    o.sampling.top_k = r->top_k;
    o.sampling.top_p = r->top_p;
    o.sampling.min_p = r->min_p;
    o.sampling.repeat_penalty = r->rep_pen;
    o.sampling.repeat_last_n = r->rep_last_n;
    o.sampling.presence_penalty = r->pres;
    o.sampling.frequency_penalty = r->freq;
    o.sampling.seed = r->seed;
    o.set = r->set;
    o.n_predict = r->n_predict;
    o.ignore_eos = r->ignore_eos;
    o.truncate_left = r->truncate_left;
    for (int i = 0; i < r->n_stop; i++)
        o.stop[i] = r->stop[i];
    o.n_stop = r->n_stop;
    struct hmoe_sampling_params sp;
    struct hmoe_gen_params gp;
    char msg[600];
    enum hmoe_status st;
    if (r->text) {
        if (!C.tok) {
            fail_current(HMOE_E_UNSUPPORTED, "this cluster has no tokenizer: send token ids",
                         "start the coordinator with --tokenizer FILE");
            return 0;
        }
        struct hmoe_chat chat;
        hmoe_chat_init(&chat);
        int tmpl = hmoe_chat_template_parse(r->tmpl && *r->tmpl ? r->tmpl : "chatml");
        st = tmpl < 0 ? hmoe_fail(HMOE_E_INVAL, "unknown chat template '%s'", r->tmpl)
                      : hmoe_text_opts_resolve(&o, &C.gdef, C.max_ctx, &sp, &gp);
        if (!st && r->system && *r->system) st = hmoe_chat_set_system(&chat, r->system);
        for (int i = 0; !st && i + 1 < r->n_hist; i += 2)
            st = hmoe_chat_add(&chat, r->hist[i], r->hist[i + 1]);
        if (!st) st = hmoe_chat_add(&chat, "user", r->text);
        if (!st) {
            gp.n_ctx = r->ctx_size && r->ctx_size < C.max_ctx ? r->ctx_size : C.max_ctx;
            st = hmoe_request_init(C.tok, &chat, (enum hmoe_chat_template)tmpl, &sp, &gp, &r->hreq);
        }
        hmoe_chat_free(&chat);
        if (st) {
            snprintf(msg, sizeof msg, "%s", hmoe_err_msg());
            fail_current(st, msg, NULL);
            return 0;
        }
        size_t np, dropped;
        const int32_t *p = hmoe_request_prompt(r->hreq, &np, &dropped);
        free(r->tokens);
        r->tokens = malloc((np ? np : 1) * sizeof(int32_t));
        if (!r->tokens) {
            fail_current(HMOE_E_NOMEM, "out of memory", NULL);
            return 0;
        }
        if (np) memcpy(r->tokens, p, np * sizeof(int32_t));
        r->n_tokens = (int)np;
        if (dropped)
            HMOE_LOG_INFO("request %llu: dropped the %zu oldest prompt tokens",
                          (unsigned long long)r->id, dropped);
        return 1;
    }
    if (r->has_sampling && r->set) {
        /* token ids with sampling flags: the given fields over the model's defaults */
        if ((st = hmoe_text_opts_resolve(&o, &C.gdef, C.max_ctx, &sp, &gp)) ||
            (st = hmoe_sampler_init(&sp, C.V, &r->smp))) {
            snprintf(msg, sizeof msg, "sampling: %s", hmoe_err_msg());
            fail_current(st, msg, NULL);
            return 0;
        }
        for (int i = 0; i < r->n_tokens; i++)
            hmoe_sampler_accept(r->smp, r->tokens[i], 1);
    }
    return 1;
#else
    if (r->text) {
        fail_current(HMOE_E_UNSUPPORTED, "text prompts need hmoe_text (not built)",
                     "send token ids");
        return 0;
    }
    if (r->has_sampling && r->set && r->temp > 0.0f) {
        fail_current(HMOE_E_UNSUPPORTED, "only greedy decoding is built in", "use --temp 0");
        return 0;
    }
    return 1;
#endif
}

static void try_start_request(void)
{
    if (C.busy || !C.q_len || C.stopping || !cluster_ready()) return;
    C.cur = C.queue[C.q_head];
    C.q_head = (C.q_head + 1) % MAX_QUEUE;
    C.q_len--;
    C.busy = 1;
    C.n_gen = 0;
    C.req_pairs_off = C.req_pairs_res = C.req_wait_us = C.req_step_us = 0;
    C.t_first_us = C.t_prefill_done_us = 0;
    if (!prepare_text(&C.cur)) return;
    for (int i = 0; i < C.cur.n_tokens; i++)
        if (C.cur.tokens[i] < 0 || C.cur.tokens[i] >= C.V) {
            char msg[128];
            snprintf(msg, sizeof msg, "token id %d outside the vocabulary [0, %d)", C.cur.tokens[i],
                     C.V);
            fail_current(HMOE_E_INVAL, msg, NULL);
            return;
        }
    if (C.cur.ctx_size && C.cur.ctx_size < C.max_ctx)
        C.max_ctx_req = C.cur.ctx_size;
    else
        C.max_ctx_req = C.max_ctx;
    if (C.cur.n_tokens >= C.max_ctx_req) {
        char msg[128];
        snprintf(msg, sizeof msg, "prompt of %d tokens does not fit the context (%d)",
                 C.cur.n_tokens, C.max_ctx_req);
        fail_current(HMOE_E_RANGE, msg, "raise --ctx-size or shorten the prompt");
        return;
    }
    if (C.cur.n_predict == 0) {
        finish_current("length");
        return;
    }
    start_step(C.cur.tokens, C.cur.n_tokens, 1);
}

/* ---- client messages -------------------------------------------------------------------- */

static void send_status(const unsigned char *ident, size_t n)
{
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__StatusReply s = HMOE__STATUS_REPLY__INIT;
    Hmoe__WorkerStatus ws[MAX_CHILD], *wp[MAX_CHILD];
    for (int i = 0; i < C.n_child; i++) {
        Hmoe__WorkerStatus x = HMOE__WORKER_STATUS__INIT;
        x.role = C.ch[i].role;
        x.id = (uint32_t)C.ch[i].id;
        x.pid = (uint32_t)C.ch[i].pid;
        x.state = (char *)cstate_name[C.ch[i].st];
        x.numa_node = C.ch[i].numa;
        x.bound = C.ch[i].bound;
        x.restarts = (uint32_t)C.ch[i].restarts;
        x.shard_bytes = C.ch[i].shard_bytes;
        x.n_experts_owned = C.ch[i].n_owned;
        x.requests = C.ch[i].n_req;
        x.pairs = C.ch[i].n_pairs;
        x.busy_us = C.ch[i].busy_us;
        x.wait_us = C.ch[i].wait_us;
        x.rss_bytes = C.ch[i].rss_bytes;
        ws[i] = x;
        wp[i] = &ws[i];
    }
    s.n_workers = (size_t)C.n_child;
    s.workers = wp;
    Hmoe__ExpertPlacement p = HMOE__EXPERT_PLACEMENT__INIT;
    if (C.home && C.have_info) {
        p.version = 1;
        p.num_layers = (uint32_t)C.L;
        p.num_experts = (uint32_t)C.E;
        p.home.len = (size_t)C.L * C.E;
        p.home.data = C.home;
        p.n_resident = C.n_resident;
        p.resident_bytes = C.resident_used;
        p.backend = C.placement_backend;
        p.vram_budget = C.vram_budget;
        p.vram_used = C.vram_used;
        s.placement = &p;
    }
    Hmoe__ModelInfo mi = HMOE__MODEL_INFO__INIT;
    if (C.have_info) {
        mi.hidden_size = (uint32_t)C.H;
        mi.num_layers = (uint32_t)C.L;
        mi.vocab_size = (uint32_t)C.V;
        mi.num_experts = (uint32_t)C.E;
        mi.experts_per_tok = (uint32_t)C.K;
        mi.max_ctx = (uint32_t)C.max_ctx;
        mi.expert_bytes_total = C.expert_bytes;
        s.model_info = &mi;
    }
    s.model = (char *)C.o.model;
    s.run_dir = C.run_dir;
    s.requests = C.n_requests;
    s.tokens_generated = C.n_tokens_gen;
    e.body_case = HMOE__ENVELOPE__BODY_STATUS_REPLY;
    e.status_reply = &s;
    send_client(ident, n, &e);
}

static void handle_client(struct hmoe_ctrl_msg *m)
{
    Hmoe__Envelope *e = m->env;
    if (e->body_case == HMOE__ENVELOPE__BODY_STATUS_REQUEST) {
        send_status(m->ident, m->ident_len);
        return;
    }
    if (e->body_case != HMOE__ENVELOPE__BODY_REQUEST) {
        client_error(m->ident, m->ident_len, 0, HMOE_E_PROTO, "unexpected message from a client",
                     "send a Request or a StatusRequest");
        return;
    }
    const Hmoe__Request *r = e->request;
    if (C.stopping) {
        client_error(m->ident, m->ident_len, r->request_id, HMOE_E_PEER_DEAD,
                     "the coordinator is shutting down", NULL);
        return;
    }
    if (r->n_tokens == 0 && !r->prompt[0]) {
        client_error(m->ident, m->ident_len, r->request_id, HMOE_E_INVAL, "empty prompt",
                     "send text (-p) or token ids (--tokens)");
        return;
    }
    if (C.q_len >= MAX_QUEUE) {
        client_error(m->ident, m->ident_len, r->request_id, HMOE_E_RANGE,
                     "too many queued requests", "retry later");
        return;
    }
    struct request *q = &C.queue[(C.q_head + C.q_len) % MAX_QUEUE];
    memset(q, 0, sizeof *q);
    memcpy(q->ident, m->ident, m->ident_len);
    q->ident_len = m->ident_len;
    q->id = r->request_id;
    q->n_tokens = (int)r->n_tokens;
    q->tokens = malloc((r->n_tokens ? r->n_tokens : 1) * sizeof(int32_t));
    int oom = !q->tokens;
    if (q->tokens && r->n_tokens) memcpy(q->tokens, r->tokens, r->n_tokens * sizeof(int32_t));
    q->n_predict = r->n_predict;
    q->ignore_eos = r->sampling ? r->sampling->ignore_eos : 0;
    if (r->n_tokens == 0) oom |= !(q->text = strdup(r->prompt));
    if (r->system_prompt[0]) oom |= !(q->system = strdup(r->system_prompt));
    if (r->chat_template[0])
        oom |= !(q->tmpl = strdup(r->chat_template));
    else if (!r->chat)
        oom |= !(q->tmpl = strdup("none"));
    for (size_t i = 0; i < r->n_stop; i++)
        oom |= !(q->stop[q->n_stop++] = strdup(r->stop[i]));
    if (r->n_history && !oom) {
        q->hist = calloc(2 * r->n_history, sizeof(char *));
        oom |= !q->hist;
        for (size_t i = 0; q->hist && i < r->n_history; i++) {
            oom |= !(q->hist[q->n_hist++] = strdup(r->history[i]->role));
            oom |= !(q->hist[q->n_hist++] = strdup(r->history[i]->content));
        }
    }
    q->truncate_left = r->truncate_left;
    q->ctx_size = r->ctx_size > 0 ? r->ctx_size : 0;
    if (r->sampling) {
        const Hmoe__SamplingParams *sp = r->sampling;
        q->has_sampling = 1;
        q->temp = sp->temperature;
        q->top_k = sp->top_k;
        q->top_p = sp->top_p;
        q->min_p = sp->min_p;
        q->rep_pen = sp->repeat_penalty;
        q->rep_last_n = sp->repeat_last_n;
        q->pres = sp->presence_penalty;
        q->freq = sp->frequency_penalty;
        q->seed = sp->seed;
        q->set = sp->set;
    }
    if (oom) {
        request_free(q);
        client_error(m->ident, m->ident_len, r->request_id, HMOE_E_NOMEM, "out of memory", NULL);
        return;
    }
    q->t_recv_us = hmoe_now_us();
    C.q_len++;
    if (!cluster_ready())
        HMOE_LOG_INFO("request %llu queued until the cluster is ready",
                      (unsigned long long)r->request_id);
}

/* ---- periodic work ---------------------------------------------------------------------- */

static void tick(void)
{
    uint64_t now = hmoe_now_ms();
    if (C.stopping) return;
    if (now - C.last_hb_ms >= (uint64_t)C.o.heartbeat_ms) {
        C.last_hb_ms = now;
        Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
        Hmoe__Heartbeat hb = HMOE__HEARTBEAT__INIT;
        hb.time_ms = now;
        e.body_case = HMOE__ENVELOPE__BODY_HEARTBEAT;
        e.heartbeat = &hb;
        for (int i = 0; i < C.n_child; i++)
            if (C.ch[i].pid > 0 && C.ch[i].st >= C_CONFIGURED) send_worker(&C.ch[i], &e);
    }
    const uint64_t hb_timeout = (uint64_t)C.o.heartbeat_ms * 10;
    for (int i = 0; i < C.n_child; i++) {
        struct child *c = &C.ch[i];
        if (c->st == C_DOWN && !c->pid && c->respawn_at_ms && now >= c->respawn_at_ms &&
            (c->role == HMOE__ROLE__ROLE_GPU || C.have_info)) {
            c->respawn_at_ms = 0;
            HMOE_LOG_INFO("restarting %s (restart %d)", c->ident, c->restarts);
            spawn_child(c);
        }
        /* a ready worker that stopped talking is hung: kill it (SIGCHLD restarts it) */
        int busy = c->role == HMOE__ROLE__ROLE_GPU && C.step_inflight;
        if (c->pid > 0 && c->st == C_READY && !busy && now - c->last_rx_ms > hb_timeout) {
            HMOE_LOG_WARN("%s silent for %llu ms: killing it", c->ident,
                          (unsigned long long)(now - c->last_rx_ms));
            kill(c->pid, SIGKILL);
            c->last_rx_ms = now;
        }
    }
    if (C.step_inflight &&
        hmoe_now_us() - C.step_sent_us > (uint64_t)C.o.step_timeout_ms * 1000u + 5000000u) {
        HMOE_LOG_ERROR("step %llu took longer than %d ms: killing G0", (unsigned long long)C.step,
                       C.o.step_timeout_ms);
        if (C.ch[0].pid > 0) kill(C.ch[0].pid, SIGKILL);
        fail_current(HMOE_E_TIMEOUT, "the GPU worker did not finish a step in time", NULL);
    }
    maybe_ready();
    try_start_request();
}

/* ---- setup and main loop ---------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: hmoe-coordinator -m MODEL [options]\n"
               "Starts and supervises a cluster (GPU worker + CPU expert workers) and serves "
               "clients.\n\n"
               "  -m, --model DIR|synth:P    model directory or synthetic preset (env "
               "HMOE_ARG_MODEL)\n"
               "      --run-dir DIR          run directory for sockets (mode 0700; default a new "
               "$TMPDIR/hmoe-XXXXXX) (env HMOE_ARG_RUN_DIR)\n"
               "  -w, --workers N            CPU expert workers (default: one per NUMA node) (env "
               "HMOE_ARG_WORKERS)\n"
               "      --resident-bytes SIZE  routed-expert budget of the GPU worker, e.g. 512M "
               "(default 0) (env HMOE_ARG_RESIDENT_BYTES)\n"
               "      --backend cpu|cuda     forward pass of the GPU worker (default cpu) (env "
               "HMOE_ARG_BACKEND)\n"
               "      --vram-budget SIZE     cuda: device bytes the GPU worker may use; experts "
               "that fit stay there, the rest go to the expert workers; 0 = unlimited (default "
               "14GiB) (env HMOE_ARG_VRAM_BUDGET)\n"
               "  -c, --ctx-size N           context in tokens (0 = from the model, max 4096) "
               "(default 0)\n"
               "      --queue-tokens N       tokens per shared-memory hand-off (default 32)\n"
               "  -t, --threads N            compute threads per expert worker (0 = all cores of "
               "its node, less --reserve-cores on E0's) (default 0)\n"
               "      --reserve-cores N      with --threads 0: cores of E0's node left to the GPU "
               "worker and the coordinator (default 2 with --backend cuda, else 0)\n"
               "      --topology SPEC        hwloc XML file or synthetic:DESC instead of this "
               "machine (env HMOE_ARG_TOPOLOGY)\n"
               "      --print-topology       show the NUMA plan and exit\n"
               "      --spin-us N            doorbell spin before sleeping (default 1000 when "
               "--reserve-cores leaves cores, else 50)\n"
               "      --heartbeat-ms N       heartbeat interval (default 1000)\n"
               "      --step-timeout-ms N    longest forward step (default 120000)\n"
               "      --max-restarts N       restarts of a worker in a row before giving up "
               "(default 5)\n"
               "      --tokenizer FILE       tokenizer.json for text prompts (default: "
               "MODEL/tokenizer.json when present)\n"
               "      --expert-kernels K     fast (SIMD, node-local copies) or ref (bit-exact with "
               "hmoe-eval) (default fast)\n"
               "      --log-level L          debug|info|warn|error (default info) (env "
               "HMOE_ARG_LOG_LEVEL)\n"
               "      --gpu-worker-bin PATH  --cpu-worker-bin PATH   worker binaries (default: "
               "beside this one)\n"
               "  -h, --help                 this help\n\n"
               "Prints 'ready: listening on ipc://DIR/client' on stdout once every worker is "
               "ready.\n"
               "Exit codes: 0 ok, 1 usage/config, 2 runtime failure.\n");
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof *o);
    o->workers = -1;
    o->queue_tokens = 32;
    o->spin_us = -1;
    o->reserve_cores = -1;
    o->heartbeat_ms = 1000;
    o->step_timeout_ms = 120000;
    o->max_restarts = 5;
    o->log_level = "info";
    o->kernels = "fast";
    o->backend = "cpu";
    o->vram_budget = 14ull << 30;
    int vram_given = 0;
    const char *v;
    if ((v = getenv("HMOE_ARG_BACKEND"))) o->backend = v;
    if ((v = getenv("HMOE_ARG_VRAM_BUDGET"))) {
        if (!parse_size(v, &o->vram_budget)) {
            fprintf(stderr, "error: HMOE_ARG_VRAM_BUDGET=%s: expected a size\n", v);
            return 0;
        }
        vram_given = 1;
    }
    if ((v = getenv("HMOE_ARG_MODEL"))) o->model = v;
    if ((v = getenv("HMOE_ARG_RUN_DIR"))) o->run_dir = v;
    if ((v = getenv("HMOE_ARG_TOPOLOGY"))) o->topology = v;
    if ((v = getenv("HMOE_ARG_LOG_LEVEL"))) o->log_level = v;
    if ((v = getenv("HMOE_ARG_WORKERS")) && !parse_int(v, 0, 256, &o->workers)) {
        fprintf(stderr, "error: HMOE_ARG_WORKERS=%s: expected 0..256\n", v);
        return 0;
    }
    if ((v = getenv("HMOE_ARG_RESIDENT_BYTES")) && !parse_size(v, &o->resident_bytes)) {
        fprintf(stderr, "error: HMOE_ARG_RESIDENT_BYTES=%s: expected a size\n", v);
        return 0;
    }
    enum {
        O_RUN = 256,
        O_RES,
        O_QT,
        O_TOPO,
        O_PT,
        O_RESERVE,
        O_SPIN,
        O_HB,
        O_STO,
        O_MR,
        O_LL,
        O_GB,
        O_CB,
        O_EK,
        O_TOK,
        O_BACKEND,
        O_VRAM
    };
    static const struct option lo[] = {{"model", 1, 0, 'm'},
                                       {"run-dir", 1, 0, O_RUN},
                                       {"workers", 1, 0, 'w'},
                                       {"resident-bytes", 1, 0, O_RES},
                                       {"ctx-size", 1, 0, 'c'},
                                       {"queue-tokens", 1, 0, O_QT},
                                       {"threads", 1, 0, 't'},
                                       {"topology", 1, 0, O_TOPO},
                                       {"print-topology", 0, 0, O_PT},
                                       {"spin-us", 1, 0, O_SPIN},
                                       {"reserve-cores", 1, 0, O_RESERVE},
                                       {"heartbeat-ms", 1, 0, O_HB},
                                       {"step-timeout-ms", 1, 0, O_STO},
                                       {"max-restarts", 1, 0, O_MR},
                                       {"log-level", 1, 0, O_LL},
                                       {"gpu-worker-bin", 1, 0, O_GB},
                                       {"cpu-worker-bin", 1, 0, O_CB},
                                       {"expert-kernels", 1, 0, O_EK},
                                       {"tokenizer", 1, 0, O_TOK},
                                       {"backend", 1, 0, O_BACKEND},
                                       {"vram-budget", 1, 0, O_VRAM},
                                       {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
    int c, ok = 1;
    opterr = 0;
    while (ok && (c = getopt_long(argc, argv, "m:w:c:t:h", lo, NULL)) != -1) {
        switch (c) {
        case 'm':
            o->model = optarg;
            break;
        case O_RUN:
            o->run_dir = optarg;
            break;
        case 'w':
            ok = parse_int(optarg, 0, 256, &o->workers);
            break;
        case O_RES:
            ok = parse_size(optarg, &o->resident_bytes);
            break;
        case 'c':
            ok = parse_int(optarg, 0, 1 << 20, &o->ctx);
            break;
        case O_QT:
            ok = parse_int(optarg, 1, 4096, &o->queue_tokens);
            break;
        case 't':
            ok = parse_int(optarg, 0, 4096, &o->threads);
            break;
        case O_TOPO:
            o->topology = optarg;
            break;
        case O_PT:
            o->print_topology = 1;
            break;
        case O_SPIN:
            ok = parse_int(optarg, 0, 1000000, &o->spin_us);
            break;
        case O_RESERVE:
            ok = parse_int(optarg, 0, 4096, &o->reserve_cores);
            break;
        case O_HB:
            ok = parse_int(optarg, 10, 600000, &o->heartbeat_ms);
            break;
        case O_STO:
            ok = parse_int(optarg, 100, 86400000, &o->step_timeout_ms);
            break;
        case O_MR:
            ok = parse_int(optarg, 0, 1000, &o->max_restarts);
            break;
        case O_LL:
            o->log_level = optarg;
            break;
        case O_GB:
            o->gpu_bin = optarg;
            break;
        case O_CB:
            o->cpu_bin = optarg;
            break;
        case O_TOK:
            o->tokenizer = optarg;
            break;
        case O_BACKEND:
            o->backend = optarg;
            break;
        case O_VRAM:
            ok = parse_size(optarg, &o->vram_budget);
            vram_given = 1;
            break;
        case O_EK:
            o->kernels = optarg;
            ok = !strcmp(optarg, "fast") || !strcmp(optarg, "ref");
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            fprintf(stderr, "error: unknown or incomplete option '%s'\nsee --help\n",
                    argv[optind - 1]);
            return 0;
        }
        if (!ok)
            fprintf(stderr, "error: bad value '%s' for %s\nsee --help\n", optarg, argv[optind - 1]);
    }
    if (!ok) return 0;
    if (optind < argc) {
        fprintf(stderr, "error: unexpected argument '%s'\nsee --help\n", argv[optind]);
        return 0;
    }
    if (strcmp(o->backend, "cpu") && strcmp(o->backend, "cuda")) {
        fprintf(stderr, "error: --backend %s: expected cpu or cuda\n", o->backend);
        return 0;
    }
    if (vram_given && strcmp(o->backend, "cuda")) {
        fprintf(stderr, "error: --vram-budget needs --backend cuda\n");
        return 0;
    }
    if (hmoe_log_level_parse(o->log_level) < 0) {
        fprintf(stderr, "error: --log-level %s: expected debug|info|warn|error\n", o->log_level);
        return 0;
    }
    if (!o->model && !o->print_topology) {
        fprintf(stderr, "error: no model given\nhint: pass -m DIR (or synth:tiny)\n");
        return 0;
    }
    return 1;
}

static const char *bin_beside(const char *name)
{
    static char paths[2][4096];
    static int k;
    char self[4000];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return name;
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    char *p = paths[k++ & 1];
    snprintf(p, 4096, "%s/%s", self, name);
    return p;
}

static int setup_run_dir(void)
{
    if (C.o.run_dir) {
        snprintf(C.run_dir, sizeof C.run_dir, "%s", C.o.run_dir);
        if (mkdir(C.run_dir, 0700) == 0) {
            C.own_run_dir = 1;
        } else if (errno != EEXIST) {
            fprintf(stderr, "error: cannot create run dir %s: %s\n", C.run_dir, strerror(errno));
            return 0;
        }
        struct stat st;
        if (stat(C.run_dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid()) {
            fprintf(stderr, "error: run dir %s is not a directory of this user\n", C.run_dir);
            return 0;
        }
        if (chmod(C.run_dir, 0700) != 0) {
            fprintf(stderr, "error: chmod 0700 %s: %s\n", C.run_dir, strerror(errno));
            return 0;
        }
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(C.run_dir, sizeof C.run_dir, "%s/hmoe-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(C.run_dir)) {
            fprintf(stderr, "error: mkdtemp %s: %s\n", C.run_dir, strerror(errno));
            return 0;
        }
        C.own_run_dir = 1;
    }
    if (hmoe_zmq_endpoint(C.ep_ctrl, sizeof C.ep_ctrl, C.run_dir, "ctrl") ||
        hmoe_zmq_endpoint(C.ep_client, sizeof C.ep_client, C.run_dir, "client")) {
        fprintf(stderr, "error: %s\nhint: use a shorter --run-dir\n", hmoe_err_msg());
        return 0;
    }
    return 1;
}

static void cleanup(void)
{
    /* the children: SIGKILL whatever is still running, then reap */
    for (int i = 0; i < C.n_child; i++)
        if (C.ch[i].pid > 0) {
            HMOE_LOG_WARN("%s (pid %d) did not stop: SIGKILL", C.ch[i].ident, (int)C.ch[i].pid);
            kill(C.ch[i].pid, SIGKILL);
            int status;
            waitpid(C.ch[i].pid, &status, 0);
            C.ch[i].pid = 0;
        }
    free_regions();
    hmoe_zmq_close(C.wsock);
    hmoe_zmq_close(C.csock);
    hmoe_zmq_ctx_term(C.ctx);
    char p[400];
    snprintf(p, sizeof p, "%s/ctrl", C.run_dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/client", C.run_dir);
    unlink(p);
    if (C.own_run_dir && rmdir(C.run_dir) != 0)
        HMOE_LOG_WARN("run dir %s not removed: %s", C.run_dir, strerror(errno));
    if (C.sfd >= 0) close(C.sfd);
    hmoe_ctrl_arena_free(&C.arena);
    hmoe_topo_close(C.topo);
    free(C.home);
#ifdef HMOE_HAVE_TEXT
    hmoe_tokenizer_free(C.tok);
#endif
}

int main(int argc, char **argv)
{
    if (!parse_opts(argc, argv, &C.o)) return 1;
    hmoe_log_init("C", (enum hmoe_log_level)hmoe_log_level_parse(C.o.log_level), 0);
    if (hmoe_topo_open(C.o.topology, &C.topo)) {
        fprintf(stderr, "error: %s\nhint: check --topology\n", hmoe_err_msg());
        return 1;
    }
    int n_numa = hmoe_topo_n_numa(C.topo);
    C.W = C.o.workers >= 0 ? C.o.workers : n_numa;
    if (C.o.print_topology) {
        hmoe_topo_print(C.topo, C.W, stdout);
        print_thread_plan(stdout);
        hmoe_topo_close(C.topo);
        return 0;
    }
    if (!C.o.gpu_bin) C.o.gpu_bin = bin_beside("hmoe-gpu-worker");
    if (!C.o.cpu_bin) C.o.cpu_bin = bin_beside("hmoe-cpu-worker");
    if (access(C.o.gpu_bin, X_OK) != 0 || (C.W && access(C.o.cpu_bin, X_OK) != 0)) {
        fprintf(stderr, "error: worker binaries not found (%s, %s)\n", C.o.gpu_bin, C.o.cpu_bin);
        return 1;
    }
    C.sfd = -1;
#ifdef HMOE_HAVE_TEXT
    {
        char tp[4200];
        const char *path = C.o.tokenizer;
        int is_dir = strncmp(C.o.model, "synth:", 6) != 0;
        if (!path && is_dir) {
            snprintf(tp, sizeof tp, "%s/tokenizer.json", C.o.model);
            if (access(tp, R_OK) == 0) path = tp;
        }
        if (path && hmoe_tokenizer_load(path, &C.tok)) {
            fprintf(stderr, "error: tokenizer %s: %s\n", path, hmoe_err_msg());
            return 1;
        }
        if (is_dir ? hmoe_gen_defaults_load(C.o.model, &C.gdef)
                   : hmoe_gen_defaults_parse(NULL, NULL, &C.gdef)) {
            fprintf(stderr, "error: %s\n", hmoe_err_msg());
            hmoe_tokenizer_free(C.tok);
            return 1;
        }
        if (C.tok) HMOE_LOG_INFO("tokenizer %s: %d ids", path, hmoe_tokenizer_n_vocab(C.tok));
    }
#endif
    if (!setup_run_dir()) return 1;
    snprintf(C.run_id, sizeof C.run_id, "%d-%llx", (int)getpid(),
             (unsigned long long)(hmoe_now_us() & 0xffffffffffull));
    /* signals through a signalfd polled beside the sockets; handlers never run */
    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGCHLD);
    sigaddset(&ss, SIGINT);
    sigaddset(&ss, SIGTERM);
    sigaddset(&ss, SIGHUP);
    sigprocmask(SIG_BLOCK, &ss, NULL);
    signal(SIGPIPE, SIG_IGN);
    C.sfd = signalfd(-1, &ss, SFD_NONBLOCK | SFD_CLOEXEC);
    int rc = 0;
    if (C.sfd < 0 || hmoe_ctrl_arena_init(&C.arena, 0) || !(C.ctx = hmoe_zmq_ctx_new()) ||
        hmoe_zmq_socket(C.ctx, ZMQ_ROUTER, NULL, HMOE_CTRL_MAX_MSG, &C.wsock) ||
        hmoe_zmq_bind(C.wsock, C.ep_ctrl) ||
        hmoe_zmq_socket(C.ctx, ZMQ_ROUTER, NULL, HMOE_CTRL_MAX_MSG, &C.csock) ||
        hmoe_zmq_bind(C.csock, C.ep_client)) {
        HMOE_LOG_ERROR("setup: %s", C.sfd < 0 ? strerror(errno) : hmoe_err_msg());
        cleanup();
        return 2;
    }
    int swept = hmoe_shm_sweep_stale();
    if (swept) HMOE_LOG_INFO("removed %d shared-memory object(s) of dead runs", swept);
    HMOE_LOG_INFO(
        "run dir %s, run id %s, %d expert worker(s) on %d NUMA node(s), backend %s, "
        "%s %llu bytes",
        C.run_dir, C.run_id, C.W, n_numa, C.o.backend,
        strcmp(C.o.backend, "cuda") ? "resident budget" : "VRAM budget",
        (unsigned long long)(strcmp(C.o.backend, "cuda") ? C.o.resident_bytes : C.o.vram_budget));
    C.n_child = 1 + C.W;
    C.ch[0].role = HMOE__ROLE__ROLE_GPU;
    snprintf(C.ch[0].ident, sizeof C.ch[0].ident, "G0");
    C.ch[0].numa = -1;
    for (int i = 0; i < C.W; i++) {
        struct child *c = &C.ch[1 + i];
        c->role = HMOE__ROLE__ROLE_CPU_EXPERT;
        c->id = i;
        c->numa = hmoe_topo_worker_node(C.topo, i, C.W);
        snprintf(c->ident, sizeof c->ident, "E%d", i);
    }
    spawn_child(&C.ch[0]); /* expert workers start once G0 has described the model */
    C.last_hb_ms = hmoe_now_ms();
    for (;;) {
        if (C.stopping) {
            /* Shutdown message, then SIGTERM after 1.5 s, then SIGKILL (cleanup) after 3 s */
            static int termed;
            int alive = 0;
            for (int i = 0; i < C.n_child; i++)
                alive += C.ch[i].pid > 0;
            if (!alive || hmoe_now_ms() >= C.stop_deadline_ms) break;
            if (!termed && hmoe_now_ms() + 1500 >= C.stop_deadline_ms) {
                termed = 1;
                for (int i = 0; i < C.n_child; i++)
                    if (C.ch[i].pid > 0) kill(C.ch[i].pid, SIGTERM);
            }
        }
        zmq_pollitem_t it[3] = {
            {C.wsock, 0, ZMQ_POLLIN, 0}, {C.csock, 0, ZMQ_POLLIN, 0}, {NULL, C.sfd, ZMQ_POLLIN, 0}};
        int n = zmq_poll(it, 3, 100);
        if (n < 0 && errno != EINTR) {
            HMOE_LOG_ERROR("zmq_poll: %s", zmq_strerror(errno));
            C.panic = 1;
            break;
        }
        if (n > 0 && (it[2].revents & ZMQ_POLLIN)) {
            struct signalfd_siginfo si;
            while (read(C.sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                if (si.ssi_signo == SIGCHLD)
                    reap();
                else
                    begin_shutdown(si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
            }
        }
        for (int k = 0; k < 64 && n > 0 && (it[0].revents & ZMQ_POLLIN); k++) {
            struct hmoe_ctrl_msg m;
            enum hmoe_status st = hmoe_ctrl_recv(C.wsock, 1, 0, &C.arena, &m);
            if (st == HMOE_E_TIMEOUT) break;
            if (st) {
                HMOE_LOG_WARN("bad worker message: %s", hmoe_err_msg());
                continue;
            }
            handle_worker(&m);
        }
        for (int k = 0; k < 64 && n > 0 && (it[1].revents & ZMQ_POLLIN); k++) {
            struct hmoe_ctrl_msg m;
            enum hmoe_status st = hmoe_ctrl_recv(C.csock, 1, 0, &C.arena, &m);
            if (st == HMOE_E_TIMEOUT) break;
            if (st) {
                HMOE_LOG_WARN("rejected a client message: %s", hmoe_err_msg());
                if (m.ident_len) {
                    char msg[300];
                    snprintf(msg, sizeof msg, "malformed message: %s", hmoe_err_msg());
                    client_error(m.ident, m.ident_len, 0, HMOE_E_PROTO, msg, NULL);
                }
                continue;
            }
            handle_client(&m);
        }
        reap(); /* also catches a SIGCHLD that raced the signalfd read */
        tick();
    }
    if (C.stopping) {
        /* give children that already got Shutdown a moment, then clean up */
        reap();
    }
    cleanup();
    HMOE_LOG_INFO("stopped");
    rc = C.config_error ? 1 : C.panic ? 2 : 0;
    return rc;
}
