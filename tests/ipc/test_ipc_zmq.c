/* tests/ipc/test_ipc_zmq.c: ROUTER/DEALER on ipc:// in a private directory: envelopes go both
 * ways with the identity; malformed payloads and extra frames are rejected with the socket
 * still usable; receive times out instead of blocking; over-long socket paths are refused. */
#include <stdlib.h>
#include <unistd.h>
#include <zmq.h>

#include "hmoe/ctrl.h"
#include "hmoe/zmq_util.h"
#include "hmoe_test.h"

int main(void)
{
    char dir[] = "/tmp/hmoe-zmq-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char ep[256];
    CHECK(hmoe_zmq_endpoint(ep, sizeof ep, dir, "ctrl") == HMOE_OK);
    char longdir[200];
    memset(longdir, 'a', sizeof longdir - 1);
    longdir[sizeof longdir - 1] = 0;
    CHECK(hmoe_zmq_endpoint(ep, sizeof ep, longdir, "ctrl") == HMOE_E_INVAL);
    CHECK(hmoe_zmq_endpoint(ep, sizeof ep, dir, "ctrl") == HMOE_OK);

    void *ctx = hmoe_zmq_ctx_new();
    void *r = NULL, *d = NULL;
    CHECK(hmoe_zmq_socket(ctx, ZMQ_ROUTER, NULL, HMOE_CTRL_MAX_MSG, &r) == HMOE_OK);
    CHECK(hmoe_zmq_bind(r, ep) == HMOE_OK);
    CHECK(hmoe_zmq_socket(ctx, ZMQ_DEALER, "E7", HMOE_CTRL_MAX_MSG, &d) == HMOE_OK);
    CHECK(hmoe_zmq_connect(d, ep) == HMOE_OK);

    struct hmoe_ctrl_arena a;
    CHECK(hmoe_ctrl_arena_init(&a, 0) == HMOE_OK);
    struct hmoe_ctrl_msg m;
    CHECK(hmoe_ctrl_recv(r, 1, 50, &a, &m) == HMOE_E_TIMEOUT);

    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__Hello h = HMOE__HELLO__INIT;
    h.role = HMOE__ROLE__ROLE_CPU_EXPERT;
    h.id = 7;
    h.version = (char *)"t";
    e.body_case = HMOE__ENVELOPE__BODY_HELLO;
    e.hello = &h;
    CHECK(hmoe_ctrl_send(d, NULL, 0, &e) == HMOE_OK);
    CHECK(hmoe_ctrl_recv(r, 1, 2000, &a, &m) == HMOE_OK);
    CHECK(m.ident_len == 2 && memcmp(m.ident, "E7", 2) == 0);
    CHECK(m.env && m.env->body_case == HMOE__ENVELOPE__BODY_HELLO && m.env->hello->id == 7);

    /* reply addressed by identity */
    Hmoe__Heartbeat hb = HMOE__HEARTBEAT__INIT;
    hb.time_ms = 99;
    e.body_case = HMOE__ENVELOPE__BODY_HEARTBEAT;
    e.heartbeat = &hb;
    CHECK(hmoe_ctrl_send(r, m.ident, m.ident_len, &e) == HMOE_OK);
    CHECK(hmoe_ctrl_recv(d, 0, 2000, &a, &m) == HMOE_OK);
    CHECK(m.env && m.env->heartbeat->time_ms == 99);
    /* sending to an unknown identity fails instead of vanishing */
    CHECK(hmoe_ctrl_send(r, "nobody", 6, &e) == HMOE_E_IO);

    /* garbage payload, then an extra frame: both rejected, then a good message still passes */
    CHECK(zmq_send(d, "\xff\xff\xff", 3, 0) == 3);
    CHECK(hmoe_ctrl_recv(r, 1, 2000, &a, &m) == HMOE_E_PROTO);
    CHECK(zmq_send(d, "a", 1, ZMQ_SNDMORE) == 1 && zmq_send(d, "b", 1, 0) == 1);
    CHECK(hmoe_ctrl_recv(r, 1, 2000, &a, &m) == HMOE_E_PROTO);
    e.body_case = HMOE__ENVELOPE__BODY_HELLO;
    e.hello = &h; /* body is a union: reset the pointer */
    CHECK(hmoe_ctrl_send(d, NULL, 0, &e) == HMOE_OK);
    CHECK(hmoe_ctrl_recv(r, 1, 2000, &a, &m) == HMOE_OK);

    hmoe_ctrl_arena_free(&a);
    hmoe_zmq_close(d);
    hmoe_zmq_close(r);
    hmoe_zmq_ctx_term(ctx);
    char sock[300];
    snprintf(sock, sizeof sock, "%s/ctrl", dir);
    unlink(sock);
    CHECK(rmdir(dir) == 0);
    TEST_DONE();
}
