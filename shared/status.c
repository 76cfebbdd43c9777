/* Status strings, the thread-local error message and the abort path. */
#include "hmoe/status.h"

#include <execinfo.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

static _Thread_local char err_buf[1024];

const char *hmoe_status_str(enum hmoe_status st)
{
    switch (st) {
    case HMOE_OK: return "ok";
    case HMOE_E_NOMEM: return "out of memory";
    case HMOE_E_IO: return "I/O error";
    case HMOE_E_PROTO: return "protocol error";
    case HMOE_E_TIMEOUT: return "timed out";
    case HMOE_E_PEER_DEAD: return "peer died";
    case HMOE_E_CUDA: return "CUDA error";
    case HMOE_E_INVAL: return "invalid argument";
    case HMOE_E_UNSUPPORTED: return "unsupported";
    case HMOE_E_FORMAT: return "malformed file";
    case HMOE_E_RANGE: return "out of range";
    }
    return "unknown status";
}

void hmoe_err_set(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
}

void hmoe_err_prefix(const char *fmt, ...)
{
    char pre[512], old[sizeof err_buf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, err_buf, sizeof old);
    /* Truncation is fine: the message is for people. */
    int n = snprintf(err_buf, sizeof err_buf, "%.500s: ", pre);
    if (n > 0 && (size_t)n < sizeof err_buf) snprintf(err_buf + n, sizeof err_buf - (size_t)n, "%.*s", (int)(sizeof err_buf - (size_t)n - 1), old);
}

const char *hmoe_err_msg(void)
{
    return err_buf;
}

void hmoe_err_clear(void)
{
    err_buf[0] = '\0';
}

enum hmoe_status hmoe_fail(enum hmoe_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return st;
}

void hmoe_abort_at(const char *file, int line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "hmoe: pid %d: %s:%d: %s\n", (int)getpid(), file, line, msg);
    void *frames[64];
    int n = backtrace(frames, 64);
    backtrace_symbols_fd(frames, n, 2);
    abort();
}
