/* hmoe/worker_link.h: a worker's control link to the coordinator: DEALER socket with the
 * worker's identity ("G0", "E3"), the Hello handshake, heartbeats both ways (Paranoid Pirate:
 * a coordinator silent for hb_timeout_ms is presumed dead), and the minimal worker argv
 * (--role --id --ctrl --run-dir [--log-level]). Implemented in proto/worker_link.c. */
#ifndef HMOE_WORKER_LINK_H
#define HMOE_WORKER_LINK_H

#include <stdint.h>

#include "hmoe/ctrl.h"

#ifdef __cplusplus
extern "C" {
#endif

struct hmoe_worker_args {
    const char *role; /* "gpu" or "cpu" */
    int id;
    const char *ctrl; /* coordinator endpoint, ipc://... */
    const char *run_dir;
    const char *log_level;
    int numa_node; /* --numa-node N (cpu workers; -2 = not given) */
    char name[16];  /* "G0", "E3": set by hmoe_worker_start (log role, link identity) */
};

/* Parses the worker argv. Returns HMOE_E_INVAL with a message on a bad or missing flag. */
enum hmoe_status hmoe_worker_args_parse(int argc, char **argv, struct hmoe_worker_args *a);

/* The start of every worker's main(): parses argv, starts logging as a->name = "<role_char><id>",
 * asks for SIGTERM when the coordinator dies, ignores SIGPIPE. Returns 0 to go on, else the exit
 * code: 1 for bad arguments (message on stderr, prefixed with prog), 3 when the coordinator is
 * already gone. */
int hmoe_worker_start(int argc, char **argv, char role_char, const char *prog,
                      struct hmoe_worker_args *a);

struct hmoe_worker_link {
    void *ctx, *sock;
    struct hmoe_ctrl_arena arena;
    char ident[16];
    uint64_t seq;
    uint64_t last_rx_ms, last_tx_ms;
    int hb_ms;         /* send a heartbeat when idle this long */
    int hb_timeout_ms; /* coordinator presumed dead after this silence */
};

/* Monotonic milliseconds. */
uint64_t hmoe_now_ms(void);
uint64_t hmoe_now_us(void);

/* Connects to endpoint as `ident` and sends Hello{role, id, pid}. */
enum hmoe_status hmoe_worker_link_open(struct hmoe_worker_link *l, const char *endpoint,
                                       const char *ident, Hmoe__Role role, uint32_t id);
void hmoe_worker_link_close(struct hmoe_worker_link *l);
/* Sends one envelope (seq filled in). */
enum hmoe_status hmoe_worker_link_send(struct hmoe_worker_link *l, Hmoe__Envelope *e);
/* Waits up to timeout_ms for one message, sending heartbeats as due. Heartbeats from the
 * coordinator are absorbed (they only refresh liveness) and reported as HMOE_E_TIMEOUT when
 * nothing else came. HMOE_E_PEER_DEAD when the coordinator was silent for hb_timeout_ms. An
 * undecodable message is logged, dropped and waited past (it still counts as a sign of life). */
enum hmoe_status hmoe_worker_link_poll(struct hmoe_worker_link *l, int timeout_ms,
                                       struct hmoe_ctrl_msg *m);
/* Sends an Error (code, one-line message) / a LoadProgress (what, done of total). */
void hmoe_worker_link_send_error(struct hmoe_worker_link *l, enum hmoe_status code,
                                 const char *msg);
void hmoe_worker_link_send_progress(struct hmoe_worker_link *l, const char *what, uint64_t done,
                                    uint64_t total);
/* Sends a heartbeat now if one is due (call from long loops). */
void hmoe_worker_link_tick(struct hmoe_worker_link *l);

#ifdef __cplusplus
}
#endif
#endif
