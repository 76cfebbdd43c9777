/* The expert worker's thread pool: threads pinned one per core of a NUMA node (hwloc), a
 * generation-counter doorbell that idle threads spin on, then sleep on with a futex; every
 * worker acknowledges every job on a second counter, so job fields are never read while the
 * caller rewrites them. Also allocates node-local memory (membind + MADV_HUGEPAGE). */
#include "hmoe/expert_pool.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "hmoe/log.h"
#include "hmoe/clock.h"

#ifdef HMOE_HAVE_HWLOC
#include <hwloc.h>
#endif

struct pool_thread {
    struct hmoe_pool *pool;
    int tid;
    pthread_t th;
    int started;
};

struct hmoe_pool {
    /* doorbell line: written by the caller once per job */
    _Alignas(64) _Atomic uint32_t gen;
    _Atomic int sleepers;
    hmoe_pool_fn fn;
    void *arg;
    int nth;
    _Atomic int stop;
    _Atomic int spin_us;
    /* completion line: written by the workers */
    _Alignas(64) _Atomic uint32_t done;
    _Atomic int caller_sleeping;
    /* barrier line */
    _Alignas(64) _Atomic int bar_count;
    _Atomic uint32_t bar_gen;

    _Alignas(64) int n;
    struct pool_thread *threads;
    char desc[256];
#ifdef HMOE_HAVE_HWLOC
    hwloc_topology_t topo;
    hwloc_nodeset_t nodeset; /* NULL = no membind */
    hwloc_cpuset_t *cpus;    /* [n] one PU per thread, NULL entries = unbound */
#endif
};

static void futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr, int n)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

/* Waits until *addr != val: spins for spin_us, then sleeps. `sleeping` counts sleepers so the
 * writer wakes only when someone sleeps (Dekker pairing, both sides seq_cst). */
static uint32_t wait_change(_Atomic uint32_t *addr, uint32_t val, _Atomic int *sleeping,
                            int spin_us)
{
    uint32_t v;
    if (spin_us > 0) {
        int64_t until = 0;
        for (unsigned i = 0;; i++) {
            if ((v = atomic_load_explicit(addr, memory_order_acquire)) != val) return v;
            if ((i & 255) == 0) {
                int64_t t = (int64_t)hmoe_clock_ns();
                if (!until)
                    until = t + (int64_t)spin_us * 1000;
                else if (t > until)
                    break;
            }
            hmoe_cpu_relax();
        }
    }
    atomic_fetch_add(sleeping, 1);
    while ((v = atomic_load(addr)) == val) futex_wait(addr, val);
    atomic_fetch_sub(sleeping, 1);
    return v;
}

static void bind_self(struct hmoe_pool *p, int tid)
{
#ifdef HMOE_HAVE_HWLOC
    if (!p->cpus || !p->cpus[tid]) return;
    if (hwloc_set_cpubind(p->topo, p->cpus[tid], HWLOC_CPUBIND_THREAD) != 0)
        HMOE_LOG_WARN("pool: binding thread %d failed (%s), left unbound", tid, strerror(errno));
#else
    (void)p;
    (void)tid;
#endif
}

static void *worker_main(void *a)
{
    struct pool_thread *w = a;
    struct hmoe_pool *p = w->pool;
    bind_self(p, w->tid);
    uint32_t seen = 0;
    for (;;) {
        seen = wait_change(&p->gen, seen, &p->sleepers, atomic_load(&p->spin_us));
        if (atomic_load(&p->stop)) break;
        if (w->tid < p->nth) p->fn(p->arg, w->tid, p->nth);
        /* every worker acknowledges every job */
        if (atomic_fetch_add(&p->done, 1) + 1 == (uint32_t)(p->n - 1) &&
            atomic_load(&p->caller_sleeping))
            futex_wake(&p->done, 1);
    }
    return NULL;
}

void hmoe_pool_run(struct hmoe_pool *p, int nth, hmoe_pool_fn fn, void *arg)
{
    if (nth < 1) nth = 1;
    if (nth > p->n) nth = p->n;
    if (p->n == 1) {
        p->nth = 1;
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    p->nth = nth;
    atomic_store(&p->bar_count, 0);
    atomic_store(&p->done, 0);
    atomic_fetch_add(&p->gen, 1); /* seq_cst: publishes the job fields */
    if (atomic_load(&p->sleepers) > 0) futex_wake(&p->gen, INT_MAX);
    fn(arg, 0, nth);
    uint32_t target = (uint32_t)(p->n - 1), d;
    /* the caller spins as long as the idle workers do (at least 100 us), then sleeps: a futex
     * wake of the caller costs tens of us on a VM, a large part of a ~300 us step */
    int spin = atomic_load_explicit(&p->spin_us, memory_order_relaxed);
    int64_t until = (int64_t)hmoe_clock_ns() + (int64_t)(spin > 100 ? spin : 100) * 1000;
    for (unsigned i = 0; (d = atomic_load_explicit(&p->done, memory_order_acquire)) != target;
         i++) {
        if ((i & 255) == 255 && (int64_t)hmoe_clock_ns() > until) {
            atomic_store(&p->caller_sleeping, 1);
            while ((d = atomic_load(&p->done)) != target) futex_wait(&p->done, d);
            atomic_store(&p->caller_sleeping, 0);
            break;
        }
        hmoe_cpu_relax();
    }
}

void hmoe_pool_barrier(struct hmoe_pool *p)
{
    int nth = p->nth;
    if (nth <= 1) return;
    uint32_t g = atomic_load(&p->bar_gen);
    if (atomic_fetch_add(&p->bar_count, 1) + 1 == nth) {
        atomic_store(&p->bar_count, 0);
        atomic_fetch_add(&p->bar_gen, 1);
        return;
    }
    /* spin; yield once the wait gets long (an oversubscribed or preempted thread) */
    for (unsigned i = 0; atomic_load_explicit(&p->bar_gen, memory_order_acquire) == g; i++) {
        if (i < 4096)
            hmoe_cpu_relax();
        else
            sched_yield();
    }
}

void hmoe_pool_set_spin(struct hmoe_pool *p, int spin_us)
{
    atomic_store(&p->spin_us, spin_us < 0 ? 0 : spin_us);
}

int hmoe_pool_size(const struct hmoe_pool *p)
{
    return p->n;
}

const char *hmoe_pool_describe(const struct hmoe_pool *p)
{
    return p->desc;
}

/* Picks the cpusets (one PU per core of the node, or of the machine) and the nodeset. */
static enum hmoe_status pool_topology(struct hmoe_pool *p, const struct hmoe_pool_opts *o)
{
#ifdef HMOE_HAVE_HWLOC
    if (hwloc_topology_init(&p->topo) != 0 || hwloc_topology_load(p->topo) != 0) {
        HMOE_LOG_WARN("pool: hwloc topology failed, threads left unbound");
        if (p->topo) hwloc_topology_destroy(p->topo);
        p->topo = NULL;
        if (o->numa_node >= 0)
            return hmoe_fail(HMOE_E_UNSUPPORTED, "pool: no topology to find node %d", o->numa_node);
        if (p->n <= 0) p->n = (int)sysconf(_SC_NPROCESSORS_ONLN);
        snprintf(p->desc, sizeof p->desc, "%d threads, unbound (no topology)", p->n);
        return HMOE_OK;
    }
    hwloc_const_cpuset_t set = hwloc_topology_get_allowed_cpuset(p->topo);
    if (o->numa_node >= 0) {
        hwloc_obj_t node = hwloc_get_numanode_obj_by_os_index(p->topo, (unsigned)o->numa_node);
        if (!node)
            return hmoe_fail(HMOE_E_INVAL, "pool: no NUMA node %d on this machine", o->numa_node);
        set = node->cpuset;
        p->nodeset = hwloc_bitmap_dup(node->nodeset);
    }
    int ncores = hwloc_get_nbobjs_inside_cpuset_by_type(p->topo, set, HWLOC_OBJ_CORE);
    hwloc_obj_type_t unit = HWLOC_OBJ_CORE;
    if (ncores <= 0) {
        unit = HWLOC_OBJ_PU;
        ncores = hwloc_get_nbobjs_inside_cpuset_by_type(p->topo, set, HWLOC_OBJ_PU);
    }
    if (ncores <= 0) return hmoe_fail(HMOE_E_INVAL, "pool: the node has no CPUs");
    if (p->n <= 0) p->n = ncores;
    p->cpus = calloc((size_t)p->n, sizeof *p->cpus);
    if (!p->cpus) return hmoe_fail(HMOE_E_NOMEM, "pool: cpusets");
    for (int i = 0; i < p->n; i++) {
        hwloc_obj_t c =
            hwloc_get_obj_inside_cpuset_by_type(p->topo, set, unit, (unsigned)(i % ncores));
        if (!c || !c->cpuset) continue;
        p->cpus[i] = hwloc_bitmap_dup(c->cpuset);
        if (p->cpus[i]) hwloc_bitmap_singlify(p->cpus[i]);
    }
    char cs[128] = "";
    hwloc_bitmap_list_snprintf(cs, sizeof cs, set);
    snprintf(p->desc, sizeof p->desc, "%s %d: %d threads on %d %s (cpus %s)%s",
             o->numa_node >= 0 ? "node" : "machine", o->numa_node >= 0 ? o->numa_node : 0, p->n,
             ncores, unit == HWLOC_OBJ_CORE ? "cores" : "PUs", cs,
             p->n > ncores ? ", oversubscribed" : "");
    return HMOE_OK;
#else
    if (o->numa_node >= 0)
        return hmoe_fail(HMOE_E_UNSUPPORTED, "pool: built without hwloc, cannot bind node %d",
                         o->numa_node);
    if (p->n <= 0) p->n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (p->n <= 0) p->n = 1;
    snprintf(p->desc, sizeof p->desc, "%d threads, unbound (built without hwloc)", p->n);
    return HMOE_OK;
#endif
}

enum hmoe_status hmoe_pool_init(const struct hmoe_pool_opts *o, struct hmoe_pool **out)
{
    *out = NULL;
    if (!o || o->n_threads < 0 || o->n_threads > 4096)
        return hmoe_fail(HMOE_E_INVAL, "pool: bad thread count");
    struct hmoe_pool *p = aligned_alloc(64, (sizeof *p + 63) / 64 * 64);
    if (!p) return hmoe_fail(HMOE_E_NOMEM, "pool");
    memset(p, 0, sizeof *p);
    p->n = o->n_threads;
    atomic_store(&p->spin_us, o->spin_us == 0 ? 1000 : o->spin_us < 0 ? 0 : o->spin_us);
    enum hmoe_status st = pool_topology(p, o);
    if (st != HMOE_OK) {
        hmoe_pool_free(p);
        return st;
    }
    p->threads = calloc((size_t)p->n, sizeof *p->threads);
    if (!p->threads) {
        hmoe_pool_free(p);
        return hmoe_fail(HMOE_E_NOMEM, "pool: threads");
    }
    if (o->bind_caller) bind_self(p, 0);
    for (int i = 1; i < p->n; i++) {
        p->threads[i].pool = p;
        p->threads[i].tid = i;
        int rc = pthread_create(&p->threads[i].th, NULL, worker_main, &p->threads[i]);
        if (rc != 0) {
            hmoe_pool_free(p);
            return hmoe_fail(HMOE_E_NOMEM, "pool: pthread_create: %s", strerror(rc));
        }
        p->threads[i].started = 1;
    }
    HMOE_LOG_DEBUG("pool: %s", p->desc);
    *out = p;
    return HMOE_OK;
}

void hmoe_pool_free(struct hmoe_pool *p)
{
    if (!p) return;
    if (p->threads) {
        atomic_store(&p->stop, 1);
        atomic_fetch_add(&p->gen, 1);
        futex_wake(&p->gen, INT_MAX);
        for (int i = 1; i < p->n; i++)
            if (p->threads[i].started) pthread_join(p->threads[i].th, NULL);
        free(p->threads);
    }
#ifdef HMOE_HAVE_HWLOC
    if (p->cpus) {
        for (int i = 0; i < p->n; i++) hwloc_bitmap_free(p->cpus[i]);
        free(p->cpus);
    }
    if (p->nodeset) hwloc_bitmap_free(p->nodeset);
    if (p->topo) hwloc_topology_destroy(p->topo);
#endif
    free(p);
}

void *hmoe_pool_mem_alloc(struct hmoe_pool *p, size_t nbytes)
{
    if (nbytes == 0) nbytes = 1;
    void *m = mmap(NULL, nbytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        hmoe_err_set("pool: mmap %zu bytes: %s", nbytes, strerror(errno));
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    if (madvise(m, nbytes, MADV_HUGEPAGE) != 0)
        HMOE_LOG_DEBUG("pool: MADV_HUGEPAGE refused: %s", strerror(errno));
#endif
#ifdef HMOE_HAVE_HWLOC
    if (p && p->topo && p->nodeset &&
        hwloc_set_area_membind(p->topo, m, nbytes, p->nodeset, HWLOC_MEMBIND_BIND,
                               HWLOC_MEMBIND_BYNODESET) != 0)
        HMOE_LOG_WARN("pool: membind of %zu bytes failed (%s); relying on first touch", nbytes,
                      strerror(errno));
#else
    (void)p;
#endif
    return m;
}

void hmoe_pool_mem_free(void *ptr, size_t nbytes)
{
    if (ptr) munmap(ptr, nbytes ? nbytes : 1);
}
