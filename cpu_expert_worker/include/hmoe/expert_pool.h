/* hmoe/expert_pool.h: a fixed thread pool pinned to the cores of one NUMA node (hwloc), with a
 * spin-then-futex doorbell, an in-job barrier, and node-local memory for the expert weights.
 * The calling thread takes part in every job as thread 0. No allocation or syscall on the
 * dispatch path besides the futex wake/wait once the spin budget is spent. */
#ifndef HMOE_EXPERT_POOL_H
#define HMOE_EXPERT_POOL_H

#include <stddef.h>

#include "hmoe/status.h"

#ifdef __cplusplus
extern "C" {
#endif

struct hmoe_pool;

struct hmoe_pool_opts {
    int n_threads; /* threads incl. the caller; 0 = one per core of the node (or of the machine) */
    int numa_node; /* OS index of the NUMA node to pin to; -1 = the whole machine, no membind */
    int spin_us;   /* how long an idle thread spins before it sleeps on the futex: 0 = 1000,
                    * < 0 = sleep at once */
    int bind_caller; /* also pin the calling thread (thread 0) to the node's first core */
};

/* Creates the pool (threads started, pinned where hwloc allows; failed bindings are logged at
 * WARN and ignored). Returns HMOE_E_INVAL (bad options or unknown node) or HMOE_E_NOMEM. */
enum hmoe_status hmoe_pool_init(const struct hmoe_pool_opts *o, struct hmoe_pool **out);
/* Stops and joins the threads. NULL is a no-op. Not while a job runs. */
void hmoe_pool_free(struct hmoe_pool *p);
int hmoe_pool_size(const struct hmoe_pool *p);

/* fn(arg, tid, nth) runs once on each of threads 0..nth-1 (tid 0 = the caller); returns when all
 * have returned. nth is clamped to [1, size]. Only one thread may call run at a time. */
typedef void (*hmoe_pool_fn)(void *arg, int tid, int nth);
void hmoe_pool_run(struct hmoe_pool *p, int nth, hmoe_pool_fn fn, void *arg);
/* Inside a job: waits until all nth threads of the job have arrived (spinning). */
void hmoe_pool_barrier(struct hmoe_pool *p);
/* Changes the spin budget of idle threads (0 = sleep at once; for latency measurements). */
void hmoe_pool_set_spin(struct hmoe_pool *p, int spin_us);

/* Node-local memory: anonymous mapping, MADV_HUGEPAGE and hwloc membind to the pool's node
 * (each step that the OS refuses is logged at DEBUG and skipped). Pages are not touched here:
 * let the pool's threads first-touch them. Returns NULL (and sets the error) on failure. */
void *hmoe_pool_mem_alloc(struct hmoe_pool *p, size_t nbytes);
void hmoe_pool_mem_free(void *ptr, size_t nbytes);

/* One line describing the binding ("node 0: 16 threads on cores 0-15, membind ok"). */
const char *hmoe_pool_describe(const struct hmoe_pool *p);

#ifdef __cplusplus
}
#endif
#endif
