/* hmoe/zmq_util.h: ZeroMQ helpers for the control plane: sockets with LINGER 0 and an inbound
 * size cap, ROUTER (coordinator) and DEALER (workers, clients) on ipc:// endpoints in the run
 * directory. Sockets are not thread-safe: one thread per socket. */
#ifndef HMOE_ZMQ_UTIL_H
#define HMOE_ZMQ_UTIL_H

#include <stddef.h>

#include "hmoe/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* New context (1 I/O thread). NULL with hmoe_err_msg() on failure. */
void *hmoe_zmq_ctx_new(void);
/* Terminates a context after every socket was closed. NULL is a no-op. */
void hmoe_zmq_ctx_term(void *ctx);

/* Creates a socket of zmq `type` (ZMQ_ROUTER, ZMQ_DEALER, ...) with LINGER 0, ZMQ_MAXMSGSIZE
 * max_msg (bytes; bigger inbound messages drop the connection), and the identity when given
 * (DEALER). A ROUTER gets ROUTER_MANDATORY so sends to a gone peer fail instead of vanishing. */
enum hmoe_status hmoe_zmq_socket(void *ctx, int type, const char *identity, long long max_msg,
                                 void **out);
enum hmoe_status hmoe_zmq_bind(void *sock, const char *endpoint);
enum hmoe_status hmoe_zmq_connect(void *sock, const char *endpoint);
void hmoe_zmq_close(void *sock); /* NULL is a no-op */

/* "ipc://<run_dir>/<name>" into buf; HMOE_E_INVAL when the socket path exceeds the 107 bytes
 * a Unix socket allows. */
enum hmoe_status hmoe_zmq_endpoint(char *buf, size_t n, const char *run_dir, const char *name);

#ifdef __cplusplus
}
#endif
#endif
