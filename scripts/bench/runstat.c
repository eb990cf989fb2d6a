/*
 * runstat: runs a command many times and prints the median and minimum wall
 * time and the peak resident set size of the runs, as
 * "median_ms min_ms peak_rss_kib". A small C launcher rather than a script,
 * because a child's peak RSS (ru_maxrss) includes the memory of the process
 * it was forked from: from a Python or shell parent that would be measured
 * instead of the command. Usage: runstat RUNS CMD [ARGS...]
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: runstat RUNS CMD [ARGS...]\n");
        return 2;
    }
    int runs = atoi(argv[1]);
    if (runs < 1)
        runs = 1;
    double *ms = calloc((size_t)runs, sizeof *ms);
    long peak = 0;
    for (int i = 0; i < runs; i++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            int null = open("/dev/null", O_WRONLY);
            dup2(null, 1);
            execvp(argv[2], argv + 2);
            _exit(127);
        }
        int status;
        struct rusage ru;
        if (wait4(pid, &status, 0, &ru) < 0) {
            perror("wait4");
            return 1;
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "runstat: '%s' failed (status %d)\n", argv[2], status);
            return 1;
        }
        ms[i] = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
        if (ru.ru_maxrss > peak)
            peak = ru.ru_maxrss;
    }
    qsort(ms, (size_t)runs, sizeof *ms, compare);
    printf("%.2f %.2f %ld\n", ms[runs / 2], ms[0], peak);
    free(ms);
    return 0;
}
