/*
 * clock.h - the two clocks upres uses.
 *
 * now_s() is wall-clock Unix time for anything stored or shown (job
 * timestamps, expiry); mono_s() is monotonic time for measuring durations
 * and timeouts, which must not jump when the system clock is set.
 */
#ifndef UPRES_CORE_CLOCK_H
#define UPRES_CORE_CLOCK_H

double now_s(void);  /* Unix seconds (CLOCK_REALTIME), sub-second precision */
double mono_s(void); /* seconds since an arbitrary start (CLOCK_MONOTONIC) */

#endif
