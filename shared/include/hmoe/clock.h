/* hmoe/clock.h: the monotonic clock every timer, benchmark and timeout of the project reads. */
#ifndef HMOE_CLOCK_H
#define HMOE_CLOCK_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

uint64_t hmoe_clock_ns(void); /* CLOCK_MONOTONIC in nanoseconds */
double hmoe_clock_s(void);    /* the same in seconds */

#ifdef __cplusplus
}
#endif
#endif
