/* The expert thread pool: every job runs once on each of nth threads, the in-job barrier orders
 * phases, jobs after the threads fell asleep on the futex still run, nth is clamped, and
 * node-local memory can be allocated and written. Also meant for a ThreadSanitizer build. */
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "hmoe/expert_pool.h"
#include "hmoe/log.h"
#include "hmoe_test.h"

#define NTH 4

struct job {
    struct hmoe_pool *pool;
    _Atomic int calls;
    int seen[NTH]; /* written by thread tid only */
    long phase1[NTH];
    long sums[NTH];
    long round;
};

static void job_fn(void *arg, int tid, int nth)
{
    struct job *j = arg;
    atomic_fetch_add(&j->calls, 1);
    j->seen[tid]++;
    j->phase1[tid] = j->round * 100 + tid;
    hmoe_pool_barrier(j->pool);
    long s = 0; /* phase 2 reads what every thread wrote in phase 1 */
    for (int i = 0; i < nth; i++) s += j->phase1[i];
    j->sums[tid] = s;
    hmoe_pool_barrier(j->pool);
}

int main(void)
{
    hmoe_log_init("T", HMOE_LOG_LVL_WARN, 0);
    struct hmoe_pool *p;
    struct hmoe_pool_opts o = {.n_threads = NTH, .numa_node = -1, .spin_us = 20};
    CHECK(hmoe_pool_init(&o, &p) == HMOE_OK);
    if (!p) TEST_DONE();
    CHECK(hmoe_pool_size(p) == NTH);
    CHECK(strlen(hmoe_pool_describe(p)) > 0);
    struct job j;
    memset(&j, 0, sizeof j);
    j.pool = p;
    int rounds = 300, expect_calls = 0;
    for (int r = 0; r < rounds; r++) {
        int nth = 1 + r % NTH;
        j.round = r;
        if (r % 50 == 25) { /* let the workers go to sleep on the futex */
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
        }
        hmoe_pool_run(p, nth, job_fn, &j);
        expect_calls += nth;
        long want = 0;
        for (int i = 0; i < nth; i++) want += (long)r * 100 + i;
        for (int i = 0; i < nth; i++) CHECKF(j.sums[i] == want, "round %d tid %d", r, i);
    }
    CHECK(atomic_load(&j.calls) == expect_calls);
    hmoe_pool_set_spin(p, 0);
    for (int r = 0; r < 20; r++) hmoe_pool_run(p, 99, job_fn, &j); /* clamped to NTH */
    CHECK(atomic_load(&j.calls) == expect_calls + 20 * NTH);
    size_t nb = 3u << 20;
    unsigned char *m = hmoe_pool_mem_alloc(p, nb);
    CHECK(m != NULL);
    if (m) {
        memset(m, 0xab, nb);
        CHECK(m[nb - 1] == 0xab);
        hmoe_pool_mem_free(m, nb);
    }
    hmoe_pool_free(p);
    hmoe_pool_free(NULL);

    o.n_threads = 1; /* the caller alone */
    CHECK(hmoe_pool_init(&o, &p) == HMOE_OK);
    memset(&j, 0, sizeof j);
    j.pool = p;
    hmoe_pool_run(p, 4, job_fn, &j);
    CHECK(atomic_load(&j.calls) == 1);
    hmoe_pool_free(p);
    o.n_threads = -1;
    CHECK(hmoe_pool_init(&o, &p) == HMOE_E_INVAL);
    o.n_threads = 2;
    o.numa_node = 4000;
    CHECK(hmoe_pool_init(&o, &p) != HMOE_OK);
    CHECK(p == NULL);
    TEST_DONE();
}
