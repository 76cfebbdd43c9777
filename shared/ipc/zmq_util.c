/* shared/ipc/zmq_util.c: ZeroMQ socket helpers (see hmoe/zmq_util.h). */
#include "hmoe/zmq_util.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

void *hmoe_zmq_ctx_new(void)
{
    void *c = zmq_ctx_new();
    if (!c) hmoe_err_set("zmq_ctx_new: %s", zmq_strerror(errno));
    return c;
}

void hmoe_zmq_ctx_term(void *ctx)
{
    if (!ctx) return;
    while (zmq_ctx_term(ctx) != 0 && errno == EINTR) {
    }
}

enum hmoe_status hmoe_zmq_socket(void *ctx, int type, const char *identity, long long max_msg,
                                 void **out)
{
    *out = NULL;
    void *s = zmq_socket(ctx, type);
    if (!s) return hmoe_fail(HMOE_E_IO, "zmq_socket: %s", zmq_strerror(errno));
    int zero = 0, one = 1;
    int64_t mx = max_msg > 0 ? (int64_t)max_msg : -1;
    int rc = zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (rc == 0) rc = zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &mx, sizeof mx);
    if (rc == 0 && type == ZMQ_ROUTER)
        rc = zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    if (rc == 0 && identity && *identity)
        rc = zmq_setsockopt(s, ZMQ_ROUTING_ID, identity, strlen(identity));
    if (rc != 0) {
        int e = errno;
        zmq_close(s);
        return hmoe_fail(HMOE_E_IO, "zmq_setsockopt: %s", zmq_strerror(e));
    }
    *out = s;
    return HMOE_OK;
}

enum hmoe_status hmoe_zmq_bind(void *sock, const char *endpoint)
{
    if (zmq_bind(sock, endpoint) != 0)
        return hmoe_fail(HMOE_E_IO, "zmq_bind(%s): %s", endpoint, zmq_strerror(errno));
    return HMOE_OK;
}

enum hmoe_status hmoe_zmq_connect(void *sock, const char *endpoint)
{
    if (zmq_connect(sock, endpoint) != 0)
        return hmoe_fail(HMOE_E_IO, "zmq_connect(%s): %s", endpoint, zmq_strerror(errno));
    return HMOE_OK;
}

void hmoe_zmq_close(void *sock)
{
    if (sock) zmq_close(sock);
}

enum hmoe_status hmoe_zmq_endpoint(char *buf, size_t n, const char *run_dir, const char *name)
{
    int w = snprintf(buf, n, "ipc://%s/%s", run_dir, name);
    if (w < 0 || (size_t)w >= n || strlen(buf) - 6 > 107)
        return hmoe_fail(HMOE_E_INVAL, "socket path %s/%s is too long for a Unix socket (107)",
                         run_dir, name);
    return HMOE_OK;
}
