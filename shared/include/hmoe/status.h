/* hmoe/status.h: status codes for external failures, and a thread-local error message.
 * Functions that can fail on input or the OS return enum hmoe_status and put the detail in
 * hmoe_err_set(); callers print hmoe_err_msg(). Internal invariants use HMOE_ASSERT instead. */
#ifndef HMOE_STATUS_H
#define HMOE_STATUS_H

#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

enum hmoe_status {
    HMOE_OK = 0,
    HMOE_E_NOMEM = -1,
    HMOE_E_IO = -2,
    HMOE_E_PROTO = -3,
    HMOE_E_TIMEOUT = -4,
    HMOE_E_PEER_DEAD = -5,
    HMOE_E_CUDA = -6,
    HMOE_E_INVAL = -7,
    HMOE_E_UNSUPPORTED = -8,
    HMOE_E_FORMAT = -9, /* a model or data file is malformed */
    HMOE_E_RANGE = -10, /* a request is out of range (context full, prompt too long) */
};

/* Short name of a status ("ok", "out of memory", ...). Never NULL. */
const char *hmoe_status_str(enum hmoe_status st);

/* Sets this thread's error message (printf format); returns nothing. */
void hmoe_err_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prefixes the current message with more context: "ctx: old message". */
void hmoe_err_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* This thread's last error message ("" when none). Valid until the next hmoe_err_set. */
const char *hmoe_err_msg(void);
void hmoe_err_clear(void);

/* Sets the message and returns the status: `return hmoe_fail(HMOE_E_INVAL, "bad %d", x);` */
enum hmoe_status hmoe_fail(enum hmoe_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Broken internal invariant: print where, then abort(). Stays on in release builds. */
void hmoe_abort_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
#define HMOE_ABORT(...) hmoe_abort_at(__FILE__, __LINE__, __VA_ARGS__)
#define HMOE_ASSERT(x)                                                                        \
    do {                                                                                      \
        if (!(x)) hmoe_abort_at(__FILE__, __LINE__, "assertion failed: %s", #x);              \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif
