/*
 * metrics.h - the process's own counters and histograms, for Prometheus.
 *
 * Every metric is declared once, in the catalogue in metrics.c (name, type,
 * help, the name of its one label or none), and fed from where the event
 * happens: metrics_add for a counter, metrics_observe for a histogram, each
 * with the label's value ("" for a metric without a label). metrics_render
 * writes them all in Prometheus' text exposition format (version 0.0.4);
 * what the process does not count itself (jobs by status, queue depth: the
 * database's figures) the caller appends with metrics_gauge.
 *
 * Counts are per process, since its start: Prometheus sums them over the
 * processes it scrapes. A bounded number of series (METRICS_MAX_SERIES, a
 * few per model); a new series past that is dropped, with one warning.
 *
 * Thread safety: all functions may be called from any thread.
 */
#ifndef UPRES_CORE_METRICS_H
#define UPRES_CORE_METRICS_H

#include <stdio.h>

#define METRICS_MAX_SERIES 256

/* Add v (>= 0) to counter name's series for label. An unknown name is a programming error (assert). */
void metrics_add(const char *name, const char *label, double v);

/* Count v in histogram name's series for label (buckets in seconds, see metrics.c). */
void metrics_observe(const char *name, const char *label, double v);

/* Write every declared metric and its series to f. */
void metrics_render(FILE *f);

/*
 * Write one gauge sample to f: "# HELP" and "# TYPE" lines when first is
 * set, then name{label_name="label"} v (no braces when label_name is NULL).
 * The label's value is escaped as the format wants.
 */
void metrics_gauge(FILE *f, int first, const char *name, const char *help, const char *label_name,
                   const char *label, double v);

/* Forget every series (tests). */
void metrics_reset(void);

#endif
