/* proto/worker_link.c: the worker side of the control link (see hmoe/worker_link.h). */
#include "hmoe/worker_link.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "hmoe/clock.h"
#include "hmoe/log.h"
#include "hmoe/zmq_util.h"

uint64_t hmoe_now_us(void)
{
    return hmoe_clock_ns() / 1000u;
}

uint64_t hmoe_now_ms(void)
{
    return hmoe_now_us() / 1000u;
}

static int parse_int(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < -1000000 || v > 1000000) return 0;
    *out = (int)v;
    return 1;
}

enum hmoe_status hmoe_worker_args_parse(int argc, char **argv, struct hmoe_worker_args *a)
{
    memset(a, 0, sizeof *a);
    a->id = -1;
    a->numa_node = -2;
    a->log_level = "info";
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (i + 1 >= argc) return hmoe_fail(HMOE_E_INVAL, "%s needs a value", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--role"))
            a->role = v;
        else if (!strcmp(f, "--id")) {
            if (!parse_int(v, &a->id) || a->id < 0 || a->id > 999)
                return hmoe_fail(HMOE_E_INVAL, "--id %s: expected 0..999", v);
        } else if (!strcmp(f, "--ctrl"))
            a->ctrl = v;
        else if (!strcmp(f, "--run-dir"))
            a->run_dir = v;
        else if (!strcmp(f, "--log-level"))
            a->log_level = v;
        else if (!strcmp(f, "--numa-node")) {
            if (!parse_int(v, &a->numa_node) || a->numa_node < -1)
                return hmoe_fail(HMOE_E_INVAL, "--numa-node %s: expected -1 or a node", v);
        } else
            return hmoe_fail(HMOE_E_INVAL, "unknown flag %s", f);
    }
    if (!a->role || a->id < 0 || !a->ctrl || !a->run_dir)
        return hmoe_fail(HMOE_E_INVAL, "workers need --role --id --ctrl --run-dir (they are "
                                       "started by hmoe-coordinator)");
    if (hmoe_log_level_parse(a->log_level) < 0)
        return hmoe_fail(HMOE_E_INVAL, "--log-level %s: expected debug|info|warn|error",
                         a->log_level);
    return HMOE_OK;
}

enum hmoe_status hmoe_worker_link_open(struct hmoe_worker_link *l, const char *endpoint,
                                       const char *ident, Hmoe__Role role, uint32_t id)
{
    memset(l, 0, sizeof *l);
    l->hb_ms = 1000;
    l->hb_timeout_ms = 15000;
    snprintf(l->ident, sizeof l->ident, "%s", ident);
    enum hmoe_status st = hmoe_ctrl_arena_init(&l->arena, 0);
    if (st) return st;
    l->ctx = hmoe_zmq_ctx_new();
    if (!l->ctx) return HMOE_E_IO;
    if ((st = hmoe_zmq_socket(l->ctx, ZMQ_DEALER, ident, HMOE_CTRL_MAX_MSG, &l->sock)) ||
        (st = hmoe_zmq_connect(l->sock, endpoint)))
        return st;
    l->last_rx_ms = hmoe_now_ms();
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__Hello h = HMOE__HELLO__INIT;
    h.role = role;
    h.id = id;
    h.pid = (uint32_t)getpid();
    h.version = (char *)"0.1.0";
    e.body_case = HMOE__ENVELOPE__BODY_HELLO;
    e.hello = &h;
    return hmoe_worker_link_send(l, &e);
}

void hmoe_worker_link_close(struct hmoe_worker_link *l)
{
    hmoe_zmq_close(l->sock);
    l->sock = NULL;
    hmoe_zmq_ctx_term(l->ctx);
    l->ctx = NULL;
    hmoe_ctrl_arena_free(&l->arena);
}

enum hmoe_status hmoe_worker_link_send(struct hmoe_worker_link *l, Hmoe__Envelope *e)
{
    e->seq = ++l->seq;
    l->last_tx_ms = hmoe_now_ms();
    /* DEALER send queues locally (HWM 1000): DONTWAIT fails only when far behind */
    return hmoe_ctrl_send(l->sock, NULL, 0, e);
}

void hmoe_worker_link_tick(struct hmoe_worker_link *l)
{
    uint64_t now = hmoe_now_ms();
    if (now - l->last_tx_ms < (uint64_t)l->hb_ms) return;
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__Heartbeat hb = HMOE__HEARTBEAT__INIT;
    hb.time_ms = now;
    e.body_case = HMOE__ENVELOPE__BODY_HEARTBEAT;
    e.heartbeat = &hb;
    if (hmoe_worker_link_send(l, &e) != HMOE_OK)
        HMOE_LOG_WARN("heartbeat send failed: %s", hmoe_err_msg());
}

void hmoe_worker_link_send_error(struct hmoe_worker_link *l, enum hmoe_status code, const char *msg)
{
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__Error er = HMOE__ERROR__INIT;
    er.code = code;
    er.message = (char *)msg;
    e.body_case = HMOE__ENVELOPE__BODY_ERROR;
    e.error = &er;
    hmoe_worker_link_send(l, &e);
}

void hmoe_worker_link_send_progress(struct hmoe_worker_link *l, const char *what, uint64_t done,
                                    uint64_t total)
{
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__LoadProgress p = HMOE__LOAD_PROGRESS__INIT;
    p.what = (char *)what;
    p.done = done;
    p.total = total;
    e.body_case = HMOE__ENVELOPE__BODY_PROGRESS;
    e.progress = &p;
    hmoe_worker_link_send(l, &e);
}

enum hmoe_status hmoe_worker_link_poll(struct hmoe_worker_link *l, int timeout_ms,
                                       struct hmoe_ctrl_msg *m)
{
    uint64_t end = hmoe_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        hmoe_worker_link_tick(l);
        uint64_t now = hmoe_now_ms();
        int wait = now >= end ? 0 : (int)(end - now);
        if (wait > l->hb_ms) wait = l->hb_ms;
        enum hmoe_status st = hmoe_ctrl_recv(l->sock, 0, wait > 0 ? wait : 0, &l->arena, m);
        if (st == HMOE_E_TIMEOUT) {
            /* silent only when nothing is queued: after a long load (the worker did not poll)
             * the coordinator's heartbeats are waiting in the socket */
            now = hmoe_now_ms();
            if (now - l->last_rx_ms > (uint64_t)l->hb_timeout_ms)
                return hmoe_fail(HMOE_E_PEER_DEAD, "coordinator silent for %llu ms",
                                 (unsigned long long)(now - l->last_rx_ms));
            if (now >= end) return st;
            continue;
        }
        if (st == HMOE_E_PROTO) { /* a live peer sent it: drop it and keep waiting */
            l->last_rx_ms = hmoe_now_ms();
            HMOE_LOG_WARN("dropped a bad control message: %s", hmoe_err_msg());
            if (hmoe_now_ms() >= end) return HMOE_E_TIMEOUT;
            continue;
        }
        if (st != HMOE_OK) return st;
        l->last_rx_ms = hmoe_now_ms();
        if (m->env->body_case == HMOE__ENVELOPE__BODY_HEARTBEAT) {
            if (hmoe_now_ms() >= end) return hmoe_fail(HMOE_E_TIMEOUT, "heartbeat only");
            continue;
        }
        return HMOE_OK;
    }
}

int hmoe_worker_start(int argc, char **argv, char role_char, const char *prog,
                      struct hmoe_worker_args *a)
{
    if (hmoe_worker_args_parse(argc, argv, a) != HMOE_OK) {
        fprintf(stderr, "%s: %s\n", prog, hmoe_err_msg());
        return 1;
    }
    snprintf(a->name, sizeof a->name, "%c%d", role_char, a->id);
    /* the level was validated by hmoe_worker_args_parse */
    hmoe_log_init(a->name, (enum hmoe_log_level)hmoe_log_level_parse(a->log_level), 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1) return 3; /* the coordinator is already gone */
    signal(SIGPIPE, SIG_IGN);
    return 0;
}
