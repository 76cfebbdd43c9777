/* proto/ctrl.c: hostile-input codec for the control plane: arena allocator for protobuf-c,
 * Envelope decode with size caps and field checks, encode, and ZeroMQ send/receive of one
 * Envelope per message. See hmoe/ctrl.h. */
#include "hmoe/ctrl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static void *arena_alloc(void *ctx, size_t n)
{
    struct hmoe_ctrl_arena *a = ctx;
    size_t off = (a->used + 15u) & ~(size_t)15u;
    if (n == 0) n = 1;
    if (off > a->cap || n > a->cap - off) return NULL; /* protobuf-c fails the unpack */
    a->used = off + n;
    return a->buf + off;
}

static void arena_free(void *ctx, void *p)
{
    (void)ctx;
    (void)p; /* released all at once by hmoe_ctrl_arena_reset */
}

enum hmoe_status hmoe_ctrl_arena_init(struct hmoe_ctrl_arena *a, size_t cap)
{
    memset(a, 0, sizeof *a);
    if (!cap) cap = HMOE_CTRL_ARENA_BYTES;
    a->buf = malloc(cap);
    if (!a->buf) return hmoe_fail(HMOE_E_NOMEM, "ctrl arena: cannot allocate %zu bytes", cap);
    a->cap = cap;
    a->alloc.alloc = arena_alloc;
    a->alloc.free = arena_free;
    a->alloc.allocator_data = a;
    return HMOE_OK;
}

void hmoe_ctrl_arena_free(struct hmoe_ctrl_arena *a)
{
    if (!a) return;
    free(a->buf);
    memset(a, 0, sizeof *a);
}

void hmoe_ctrl_arena_reset(struct hmoe_ctrl_arena *a)
{
    a->used = 0;
}

const char *hmoe_ctrl_body_name(Hmoe__Envelope__BodyCase c)
{
    switch (c) {
    case HMOE__ENVELOPE__BODY__NOT_SET:
        return "none";
    case HMOE__ENVELOPE__BODY_HELLO:
        return "hello";
    case HMOE__ENVELOPE__BODY_CONFIG:
        return "config";
    case HMOE__ENVELOPE__BODY_PROGRESS:
        return "progress";
    case HMOE__ENVELOPE__BODY_READY:
        return "ready";
    case HMOE__ENVELOPE__BODY_STEP_BEGIN:
        return "step_begin";
    case HMOE__ENVELOPE__BODY_STEP_END:
        return "step_end";
    case HMOE__ENVELOPE__BODY_STATS:
        return "stats";
    case HMOE__ENVELOPE__BODY_PLACEMENT:
        return "placement";
    case HMOE__ENVELOPE__BODY_HEARTBEAT:
        return "heartbeat";
    case HMOE__ENVELOPE__BODY_SHUTDOWN:
        return "shutdown";
    case HMOE__ENVELOPE__BODY_REQUEST:
        return "request";
    case HMOE__ENVELOPE__BODY_TOKEN:
        return "token";
    case HMOE__ENVELOPE__BODY_DONE:
        return "done";
    case HMOE__ENVELOPE__BODY_STATUS_REQUEST:
        return "status_request";
    case HMOE__ENVELOPE__BODY_STATUS_REPLY:
        return "status_reply";
    case HMOE__ENVELOPE__BODY_ERROR:
        return "error";
    default:
        return "unknown";
    }
}

/* protobuf-c NUL-terminates strings but does not bound them; a string may hold NULs. */
static int str_ok(const char *s)
{
    return s && strnlen(s, HMOE_CTRL_MAX_STR + 1) <= HMOE_CTRL_MAX_STR;
}

static int role_ok(Hmoe__Role r)
{
    return r >= HMOE__ROLE__ROLE_UNSPECIFIED && r <= HMOE__ROLE__ROLE_CLIENT;
}

static int model_info_ok(const Hmoe__ModelInfo *mi)
{
    return !mi || mi->n_eos_token_ids <= 64;
}

static int placement_ok(const Hmoe__ExpertPlacement *p)
{
    if (!p) return 1;
    if (p->num_layers > 4096 || p->num_experts > 65536) return 0;
    if (!str_ok(p->backend)) return 0;
    return (uint64_t)p->home.len == (uint64_t)p->num_layers * p->num_experts;
}

#define BAD(...) return hmoe_fail(HMOE_E_PROTO, __VA_ARGS__)

static enum hmoe_status check_body(const Hmoe__Envelope *e)
{
    switch (e->body_case) {
    case HMOE__ENVELOPE__BODY_HELLO:
        if (!role_ok(e->hello->role)) BAD("hello: unknown role %d", (int)e->hello->role);
        if (!str_ok(e->hello->version)) BAD("hello: version string too long");
        break;
    case HMOE__ENVELOPE__BODY_CONFIG: {
        const Hmoe__WorkerConfig *c = e->config;
        if (!str_ok(c->model) || !str_ok(c->run_id) || !str_ok(c->topology) ||
            !str_ok(c->log_level) || !str_ok(c->logits_region) || !str_ok(c->expert_kernels) ||
            !str_ok(c->backend))
            BAD("config: string field too long");
        if (c->n_regions > 1024) BAD("config: %zu regions", c->n_regions);
        for (size_t i = 0; i < c->n_regions; i++)
            if (!str_ok(c->regions[i])) BAD("config: region name too long");
        if (c->n_expert_workers > 1024) BAD("config: %u expert workers", c->n_expert_workers);
        break;
    }
    case HMOE__ENVELOPE__BODY_PROGRESS:
        if (!str_ok(e->progress->what)) BAD("progress: string too long");
        break;
    case HMOE__ENVELOPE__BODY_READY:
        if (!model_info_ok(e->ready->model)) BAD("ready: too many eos ids");
        break;
    case HMOE__ENVELOPE__BODY_STEP_BEGIN:
        if (e->step_begin->n_tokens > HMOE_CTRL_MAX_TOKENS)
            BAD("step_begin: %zu tokens", e->step_begin->n_tokens);
        break;
    case HMOE__ENVELOPE__BODY_STEP_END:
        if (!str_ok(e->step_end->error)) BAD("step_end: error string too long");
        if (e->step_end->n_worker_handoffs > 1024 || e->step_end->n_worker_pairs > 1024 ||
            e->step_end->n_worker_compute_us > 1024)
            BAD("step_end: counters of more than 1024 workers");
        break;
    case HMOE__ENVELOPE__BODY_PLACEMENT:
        if (!placement_ok(e->placement)) BAD("placement: home table does not match its shape");
        break;
    case HMOE__ENVELOPE__BODY_SHUTDOWN:
        if (!str_ok(e->shutdown->reason)) BAD("shutdown: reason too long");
        break;
    case HMOE__ENVELOPE__BODY_REQUEST: {
        const Hmoe__Request *r = e->request;
        if (r->n_tokens > HMOE_CTRL_MAX_TOKENS) BAD("request: %zu tokens", r->n_tokens);
        if (!str_ok(r->system_prompt) || !str_ok(r->chat_template))
            BAD("request: system prompt or template name too long");
        if (r->n_stop > 8) BAD("request: %zu stop strings (at most 8)", r->n_stop);
        if (r->n_history > 4096) BAD("request: %zu history messages", r->n_history);
        for (size_t i = 0; i < r->n_history; i++)
            if (!str_ok(r->history[i]->role) || !r->history[i]->content)
                BAD("request: bad history message %zu", i);
        for (size_t i = 0; i < r->n_stop; i++)
            if (!str_ok(r->stop[i])) BAD("request: stop string too long");
        /* the prompt may be long text: bounded by the message size only */
        if (!r->prompt) BAD("request: prompt missing");
        break;
    }
    case HMOE__ENVELOPE__BODY_TOKEN:
        if (!str_ok(e->token->text)) BAD("token: text too long");
        break;
    case HMOE__ENVELOPE__BODY_DONE:
        if (!str_ok(e->done->finish_reason)) BAD("done: finish reason too long");
        break;
    case HMOE__ENVELOPE__BODY_STATUS_REPLY: {
        const Hmoe__StatusReply *s = e->status_reply;
        if (s->n_workers > 1024) BAD("status: %zu workers", s->n_workers);
        for (size_t i = 0; i < s->n_workers; i++)
            if (!role_ok(s->workers[i]->role) || !str_ok(s->workers[i]->state))
                BAD("status: bad worker entry %zu", i);
        if (!placement_ok(s->placement)) BAD("status: bad placement");
        if (!model_info_ok(s->model_info)) BAD("status: bad model info");
        if (!str_ok(s->model) || !str_ok(s->run_dir)) BAD("status: string too long");
        break;
    }
    case HMOE__ENVELOPE__BODY_ERROR:
        if (!str_ok(e->error->message) || !str_ok(e->error->hint)) BAD("error: string too long");
        break;
    case HMOE__ENVELOPE__BODY_STATS:
    case HMOE__ENVELOPE__BODY_HEARTBEAT:
    case HMOE__ENVELOPE__BODY_STATUS_REQUEST:
        break;
    case HMOE__ENVELOPE__BODY__NOT_SET:
        BAD("envelope without a body");
    default:
        BAD("envelope with unknown body %d", (int)e->body_case);
    }
    return HMOE_OK;
}

enum hmoe_status hmoe_ctrl_decode(struct hmoe_ctrl_arena *a, const void *buf, size_t len,
                                  Hmoe__Envelope **out)
{
    *out = NULL;
    hmoe_ctrl_arena_reset(a);
    if (len > HMOE_CTRL_MAX_MSG) BAD("message of %zu bytes exceeds %u", len, HMOE_CTRL_MAX_MSG);
    if (len == 0) BAD("empty message");
    Hmoe__Envelope *e = hmoe__envelope__unpack(&a->alloc, len, buf);
    if (!e) BAD("malformed protobuf (%zu bytes)", len);
    if (e->proto_version != HMOE_CTRL_PROTO_VERSION)
        BAD("protocol version %u, expected %u", e->proto_version, HMOE_CTRL_PROTO_VERSION);
    enum hmoe_status st = check_body(e);
    if (st != HMOE_OK) return st;
    *out = e;
    return HMOE_OK;
}

enum hmoe_status hmoe_ctrl_encode(Hmoe__Envelope *env, uint8_t **out, size_t *len)
{
    env->proto_version = HMOE_CTRL_PROTO_VERSION;
    size_t n = hmoe__envelope__get_packed_size(env);
    if (n > HMOE_CTRL_MAX_MSG)
        return hmoe_fail(HMOE_E_INVAL, "envelope (%s) of %zu bytes is too large",
                         hmoe_ctrl_body_name(env->body_case), n);
    uint8_t *b = malloc(n ? n : 1);
    if (!b) return hmoe_fail(HMOE_E_NOMEM, "encode: %zu bytes", n);
    size_t w = hmoe__envelope__pack(env, b);
    HMOE_ASSERT(w == n);
    *out = b;
    *len = n;
    return HMOE_OK;
}

enum hmoe_status hmoe_ctrl_send(void *sock, const void *ident, size_t ident_len,
                                Hmoe__Envelope *env)
{
    uint8_t *b = NULL;
    size_t n = 0;
    enum hmoe_status st = hmoe_ctrl_encode(env, &b, &n);
    if (st != HMOE_OK) return st;
    if (ident && zmq_send(sock, ident, ident_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        int err = errno;
        free(b);
        return hmoe_fail(HMOE_E_IO, "zmq send (identity): %s", zmq_strerror(err));
    }
    int rc = zmq_send(sock, b, n, ZMQ_DONTWAIT);
    int err = errno;
    free(b);
    if (rc < 0) return hmoe_fail(HMOE_E_IO, "zmq send: %s", zmq_strerror(err));
    return HMOE_OK;
}

/* Drops the remaining frames of a multipart message. */
static void drain(void *sock)
{
    int more = 0;
    size_t sz = sizeof more;
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        int rc = zmq_msg_recv(&m, sock, ZMQ_DONTWAIT);
        zmq_msg_close(&m);
        if (rc < 0) break;
        sz = sizeof more;
    }
}

static int has_more(void *sock)
{
    int more = 0;
    size_t sz = sizeof more;
    return zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) == 0 && more;
}

enum hmoe_status hmoe_ctrl_recv(void *sock, int router, int timeout_ms, struct hmoe_ctrl_arena *a,
                                struct hmoe_ctrl_msg *m)
{
    m->ident_len = 0;
    m->env = NULL;
    if (timeout_ms > 0) {
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&it, 1, timeout_ms);
        if (rc < 0) return hmoe_fail(HMOE_E_IO, "zmq_poll: %s", zmq_strerror(errno));
        if (rc == 0) return hmoe_fail(HMOE_E_TIMEOUT, "no message within %d ms", timeout_ms);
    }
    zmq_msg_t f;
    zmq_msg_init(&f);
    if (zmq_msg_recv(&f, sock, ZMQ_DONTWAIT) < 0) {
        int err = errno;
        zmq_msg_close(&f);
        if (err == EAGAIN) return hmoe_fail(HMOE_E_TIMEOUT, "no message");
        return hmoe_fail(HMOE_E_IO, "zmq recv: %s", zmq_strerror(err));
    }
    if (router) {
        size_t n = zmq_msg_size(&f);
        if (n > sizeof m->ident) n = sizeof m->ident; /* zmq identities are <= 255 bytes */
        memcpy(m->ident, zmq_msg_data(&f), n);
        m->ident_len = n;
        zmq_msg_close(&f);
        if (!has_more(sock)) return hmoe_fail(HMOE_E_PROTO, "message without a payload frame");
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&f);
            return hmoe_fail(HMOE_E_PROTO, "payload frame missing");
        }
    }
    if (has_more(sock)) {
        zmq_msg_close(&f);
        drain(sock);
        return hmoe_fail(HMOE_E_PROTO, "unexpected extra frames");
    }
    enum hmoe_status st = hmoe_ctrl_decode(a, zmq_msg_data(&f), zmq_msg_size(&f), &m->env);
    zmq_msg_close(&f);
    return st;
}
