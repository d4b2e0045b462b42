/*
 * log.h - one-line log messages to stderr.
 *
 * Levels: error, warn, info, debug. The threshold is process-wide (set once at
 * start-up from -v / UPRES_LOG_LEVEL); log lines are written with a single
 * write so lines from several threads do not interleave.
 */
#ifndef UPRES_CORE_LOG_H
#define UPRES_CORE_LOG_H

typedef enum { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 } log_level_t;

void log_set_level(log_level_t level);
log_level_t log_get_level(void);
void log_msg(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
