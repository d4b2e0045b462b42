/*
 * log.c - see log.h. The message is escaped (text_log_escape) before it is
 * written: log lines quote client text (paths, names, libvips messages), and
 * a newline or other control byte in it must never start a forged line.
 */
#include "core/log.h"

#include "core/text.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static log_level_t threshold = LOG_WARN;

void log_set_level(log_level_t level) { threshold = level; }
log_level_t log_get_level(void) { return threshold; }

void log_msg(log_level_t level, const char *fmt, ...) {
    static const char *names[] = {"error", "warn", "info", "debug"};
    if (level > threshold)
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                     names[level]);
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + text_log_escape(line + n, sizeof line - (size_t)n - 1, msg);
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
