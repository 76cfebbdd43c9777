/* hmoe/doorbell.h: sequence-numbered doorbells in shared memory for hand-offs between
 * processes. The ringer bumps (or sets) a 32-bit sequence and wakes sleepers with a shared
 * futex only when someone sleeps; the waiter spins briefly, then futex-waits in short slices
 * so a dead peer (an `alive` word cleared by the supervisor) or a timeout ends the wait. One
 * ringer and any number of waiters per doorbell; lock-free, safe across processes. */
#ifndef HMOE_DOORBELL_H
#define HMOE_DOORBELL_H

#include <stdatomic.h>
#include <stdint.h>

#include "hmoe/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One cache line; lives in shared memory (zero-initialised = sequence 0, no waiters). */
struct hmoe_doorbell {
    _Atomic uint32_t seq;
    _Atomic uint32_t waiters;
    uint32_t pad[14];
};

struct hmoe_doorbell_wait {
    uint32_t spin_us;              /* busy-poll this long before sleeping (0 = sleep at once) */
    uint32_t timeout_ms;           /* total wait; 0 = forever (still checks `alive`) */
    const _Atomic uint32_t *alive; /* optional: when it reads 0 the wait fails PEER_DEAD */
};

/* Bumps the sequence by one and wakes sleepers; returns the new sequence. */
uint32_t hmoe_doorbell_ring(struct hmoe_doorbell *db);
/* Sets the sequence to v (e.g. "answered request v") and wakes sleepers. */
void hmoe_doorbell_set(struct hmoe_doorbell *db, uint32_t v);
/* Wakes sleepers without changing the sequence (they re-check `alive`). */
void hmoe_doorbell_kick(struct hmoe_doorbell *db);
static inline uint32_t hmoe_doorbell_read(const struct hmoe_doorbell *db)
{
    return atomic_load_explicit(&db->seq, memory_order_acquire);
}

/* Waits until the sequence differs from `old`; *now gets the new value. Returns HMOE_OK,
 * HMOE_E_TIMEOUT or HMOE_E_PEER_DEAD (message set). */
enum hmoe_status hmoe_doorbell_wait_change(struct hmoe_doorbell *db, uint32_t old, uint32_t *now,
                                           const struct hmoe_doorbell_wait *w);
/* Waits until the sequence equals `target`. Same returns. */
enum hmoe_status hmoe_doorbell_wait_for(struct hmoe_doorbell *db, uint32_t target,
                                        const struct hmoe_doorbell_wait *w);

#ifdef __cplusplus
}
#endif
#endif
