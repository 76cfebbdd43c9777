/* shared/ipc/doorbell.c: futex doorbells (see hmoe/doorbell.h). The waiter announces itself in
 * `waiters` before re-checking the sequence and sleeping; the ringer stores the sequence before
 * reading `waiters` (both seq_cst), so either the ringer sees the sleeper or the sleeper sees the
 * new sequence (and FUTEX_WAIT returns EAGAIN). */
#include "hmoe/doorbell.h"
#include "hmoe/clock.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Sleep slice: the longest a waiter can miss a dead peer or a lost wake. */
#define SLICE_MS 20

static long futex(_Atomic uint32_t *addr, int op, uint32_t val, const struct timespec *ts)
{
    /* shared (not FUTEX_PRIVATE_FLAG): the word lives in memory mapped by several processes */
    return syscall(SYS_futex, (uint32_t *)addr, op, val, ts, NULL, 0);
}

static void wake(struct hmoe_doorbell *db)
{
    if (atomic_load(&db->waiters) > 0) futex(&db->seq, FUTEX_WAKE, INT32_MAX, NULL);
}

uint32_t hmoe_doorbell_ring(struct hmoe_doorbell *db)
{
    uint32_t v = atomic_fetch_add(&db->seq, 1u) + 1u;
    wake(db);
    return v;
}

void hmoe_doorbell_set(struct hmoe_doorbell *db, uint32_t v)
{
    atomic_store(&db->seq, v);
    wake(db);
}

void hmoe_doorbell_kick(struct hmoe_doorbell *db)
{
    futex(&db->seq, FUTEX_WAKE, INT32_MAX, NULL);
}

/* mode 0: until seq != v; mode 1: until seq == v. */
static enum hmoe_status wait_impl(struct hmoe_doorbell *db, int mode, uint32_t v, uint32_t *now,
                                  const struct hmoe_doorbell_wait *w)
{
    static const struct hmoe_doorbell_wait dflt = {0, 0, NULL};
    if (!w) w = &dflt;
    uint64_t t0 = hmoe_clock_ns();
    uint64_t spin_end = t0 + (uint64_t)w->spin_us * 1000u;
    uint64_t deadline = w->timeout_ms ? t0 + (uint64_t)w->timeout_ms * 1000000u : 0;
    unsigned iter = 0;
    for (;;) {
        uint32_t cur = atomic_load_explicit(&db->seq, memory_order_acquire);
        if (mode == 0 ? cur != v : cur == v) {
            if (now) *now = cur;
            return HMOE_OK;
        }
        if (w->alive && atomic_load_explicit(w->alive, memory_order_acquire) == 0)
            return hmoe_fail(HMOE_E_PEER_DEAD, "doorbell: peer is gone");
        uint64_t t = (++iter & 63u) == 0 || w->spin_us == 0 ? hmoe_clock_ns() : t0;
        if (deadline && t >= deadline)
            return hmoe_fail(HMOE_E_TIMEOUT, "doorbell: no answer within %u ms", w->timeout_ms);
        if (t < spin_end) {
            hmoe_cpu_relax();
            continue;
        }
        /* sleep one slice (bounded so `alive` and the deadline are re-checked) */
        uint64_t slice = (uint64_t)SLICE_MS * 1000000u;
        if (deadline && deadline - t < slice) slice = deadline - t;
        struct timespec ts = {(time_t)(slice / 1000000000u), (long)(slice % 1000000000u)};
        atomic_fetch_add(&db->waiters, 1u);
        if (atomic_load(&db->seq) == cur) futex(&db->seq, FUTEX_WAIT, cur, &ts);
        atomic_fetch_sub(&db->waiters, 1u);
    }
}

enum hmoe_status hmoe_doorbell_wait_change(struct hmoe_doorbell *db, uint32_t old, uint32_t *now,
                                           const struct hmoe_doorbell_wait *w)
{
    return wait_impl(db, 0, old, now, w);
}

enum hmoe_status hmoe_doorbell_wait_for(struct hmoe_doorbell *db, uint32_t target,
                                        const struct hmoe_doorbell_wait *w)
{
    return wait_impl(db, 1, target, NULL, w);
}
