/* hmoe/log.h: one line per record on stderr: "<ISO8601 ms> <role> <pid> <L> <msg>".
 * The level is checked before the arguments are evaluated. Thread-safe (one fprintf per record). */
#ifndef HMOE_LOG_H
#define HMOE_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

enum hmoe_log_level { HMOE_LOG_LVL_DEBUG = 0, HMOE_LOG_LVL_INFO, HMOE_LOG_LVL_WARN, HMOE_LOG_LVL_ERROR };

extern int hmoe_log_level_cur;

/* role: "C", "G0", "E3", ... (copied, at most 15 chars). json: JSONL records instead of text. */
void hmoe_log_init(const char *role, enum hmoe_log_level level, int json);
/* Parses "debug|info|warn|error"; returns -1 when unknown. */
int hmoe_log_level_parse(const char *s);
void hmoe_log_write(enum hmoe_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define HMOE_LOG_(lvl, ...)                                                                   \
    do {                                                                                      \
        if ((int)(lvl) >= hmoe_log_level_cur) hmoe_log_write((lvl), __VA_ARGS__);             \
    } while (0)
#define HMOE_LOG_DEBUG(...) HMOE_LOG_(HMOE_LOG_LVL_DEBUG, __VA_ARGS__)
#define HMOE_LOG_INFO(...) HMOE_LOG_(HMOE_LOG_LVL_INFO, __VA_ARGS__)
#define HMOE_LOG_WARN(...) HMOE_LOG_(HMOE_LOG_LVL_WARN, __VA_ARGS__)
#define HMOE_LOG_ERROR(...) HMOE_LOG_(HMOE_LOG_LVL_ERROR, __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif
