/*
 * bench_clock: the two clocks the benchmark drivers read, wall time
 * (monotonic) and the process's CPU time, in seconds.
 */
#ifndef THALAMUS_BENCH_CLOCK_H
#define THALAMUS_BENCH_CLOCK_H

#include <time.h>

static inline double bench_seconds(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline double wall(void)
{
    return bench_seconds(CLOCK_MONOTONIC);
}

static inline double cpu(void)
{
    return bench_seconds(CLOCK_PROCESS_CPUTIME_ID);
}

#endif
