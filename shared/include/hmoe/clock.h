/* hmoe/clock.h: the monotonic clock every timer, benchmark and timeout of the project reads, and
 * the pause of its spin-waits. */
#ifndef HMOE_CLOCK_H
#define HMOE_CLOCK_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

uint64_t hmoe_clock_ns(void); /* CLOCK_MONOTONIC in nanoseconds */
double hmoe_clock_s(void);    /* the same in seconds */

/* One spin-wait pause (x86 PAUSE, arm64 YIELD): lets a sibling hyperthread run and saves power. */
static inline void hmoe_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#ifdef __cplusplus
}
#endif
#endif
