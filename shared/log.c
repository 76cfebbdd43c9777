/* Logging: one line per record on stderr, text or JSONL. */
#include "hmoe/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int hmoe_log_level_cur = HMOE_LOG_LVL_INFO;
static char log_role[16] = "-";
static int log_json;

void hmoe_log_init(const char *role, enum hmoe_log_level level, int json)
{
    snprintf(log_role, sizeof log_role, "%s", role ? role : "-");
    hmoe_log_level_cur = (int)level;
    log_json = json;
}

int hmoe_log_level_parse(const char *s)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, names[i]) == 0) return i;
    return -1;
}

static void json_escape(char *dst, size_t cap, const char *src)
{
    size_t j = 0;
    for (; *src && j + 7 < cap; src++) {
        unsigned char c = (unsigned char)*src;
        if (c == '"' || c == '\\') {
            dst[j++] = '\\';
            dst[j++] = (char)c;
        } else if (c < 0x20) {
            j += (size_t)snprintf(dst + j, cap - j, "\\u%04x", c);
        } else {
            dst[j++] = (char)c;
        }
    }
    dst[j] = '\0';
}

void hmoe_log_write(enum hmoe_log_level level, const char *fmt, ...)
{
    static const char lvl_char[] = "DIWE";
    static const char *lvl_name[] = {"debug", "info", "warn", "error"};
    char msg[2048], ts[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03dZ", (int)(tv.tv_usec / 1000));

    if (log_json) {
        char esc[4096];
        json_escape(esc, sizeof esc, msg);
        fprintf(stderr, "{\"ts\":\"%s\",\"role\":\"%s\",\"pid\":%d,\"level\":\"%s\",\"msg\":\"%s\"}\n",
                ts, log_role, (int)getpid(), lvl_name[level], esc);
    } else {
        fprintf(stderr, "%s %s %d %c %s\n", ts, log_role, (int)getpid(), lvl_char[level], msg);
    }
}
