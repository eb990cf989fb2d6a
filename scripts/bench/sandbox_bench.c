/*
 * sandbox_bench: spawn-to-exit latency and throughput of the sandbox
 * through its C interface on the event loop, the way the research loop
 * uses it (no thalamus process start-up included).
 *
 *   sandbox_bench latency RUNS [prepared]   one /bin/true at a time; prints
 *                                           "median_ms min_ms p90_ms"
 *   sandbox_bench compare RUNS CMD [ARGS]   RUNS rounds of three, one after
 *                                           the other: /bin/true in a sandbox
 *                                           set up at the spawn, CMD started
 *                                           with fork and exec, /bin/true in a
 *                                           prepared sandbox; prints one
 *                                           "median_ms min_ms p90_ms" line each
 *   sandbox_bench throughput RUNS JOBS      RUNS runs of /bin/true, JOBS at a
 *                                           time; prints "total_s runs_per_s"
 *
 * Latency is measured from sandbox_spawn() to the result callback. A
 * prepared run sets prepare_next, so it claims the sandbox prepared once
 * the previous prepared run's program had started (for a program as short
 * as /bin/true that preparation falls within the previous run's measured
 * interval; throughput counts everything). "compare" interleaves its three
 * kinds of runs because what one run leaves to the kernel (network
 * namespaces are torn down asynchronously) slows the next ones: measured
 * in separate batches, whichever comes later looks slower. Every run must
 * end with status ok (CMD with status 0), or the benchmark fails. Depends
 * on loop and sandbox.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "loop.h"
#include "sandbox.h"

struct bench {
    struct loop *loop;
    struct sandbox_spec spec;
    int total, started, done, failed;
    double t_start, t_done;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void start_next(struct bench *b);

static void print_stats(double *ms, int runs)
{
    qsort(ms, (size_t)runs, sizeof *ms, compare);
    printf("%.2f %.2f %.2f\n", ms[runs / 2], ms[0], ms[(runs * 9) / 10]);
}

/* One sandboxed /bin/true on b's loop: spawn to callback, in ms. */
static double one_run(struct bench *b)
{
    b->total = 1;
    b->started = b->done = 0;
    double t0 = now_ms();
    start_next(b);
    loop_run(b->loop);
    return b->t_done - t0;
}

/* fork + exec of argv, to its exit, in ms. */
static double one_exec(char **argv)
{
    double t0 = now_ms();
    pid_t pid = fork();
    if (pid == 0) {
        execvp(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "sandbox_bench: '%s' failed\n", argv[0]);
        exit(1);
    }
    return now_ms() - t0;
}

static void on_done(struct sandbox *sb, struct sandbox_result *r, void *ud)
{
    struct bench *b = ud;
    (void)sb;
    b->t_done = now_ms();
    b->done++;
    if (r->status != SANDBOX_OK) {
        fprintf(stderr, "sandbox_bench: a run ended with %s: %s\n", sandbox_status_name(r->status),
                r->reason ? r->reason : "");
        b->failed++;
    }
    sandbox_result_free(r);
    if (b->started < b->total)
        start_next(b);
}

static void start_next(struct bench *b)
{
    b->started++;
    if (sandbox_spawn(b->loop, &b->spec, on_done, b, NULL) < 0) {
        fprintf(stderr, "sandbox_bench: %s\n", error_message());
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc < 3 ||
        (strcmp(argv[1], "latency") && strcmp(argv[1], "throughput") &&
         strcmp(argv[1], "compare")) ||
        (!strcmp(argv[1], "compare") && argc < 4)) {
        fprintf(stderr, "usage: sandbox_bench latency RUNS [prepared] | compare RUNS CMD [ARGS] "
                        "| throughput RUNS JOBS\n");
        return 2;
    }
    struct bench b;
    memset(&b, 0, sizeof b);
    char *cmd[] = {"/bin/true", NULL};
    b.spec.argv = cmd;
    sandbox_limits_default(&b.spec.limits);
    b.spec.limits.timeout_ms = 60000;
    if (loop_new(&b.loop) < 0) {
        fprintf(stderr, "sandbox_bench: %s\n", error_message());
        return 1;
    }
    int runs = atoi(argv[2]);
    if (runs < 1)
        runs = 1;
    if (!strcmp(argv[1], "latency")) {
        double *ms = calloc((size_t)runs, sizeof *ms);
        b.spec.prepare_next = argc > 3 && !strcmp(argv[3], "prepared");
        if (b.spec.prepare_next) /* the first run prepares the second */
            one_run(&b);
        for (int i = 0; i < runs; i++)
            ms[i] = one_run(&b);
        print_stats(ms, runs);
        free(ms);
    } else if (!strcmp(argv[1], "compare")) {
        double *cold = calloc((size_t)runs, sizeof *cold);
        double *ext = calloc((size_t)runs, sizeof *ext);
        double *warm = calloc((size_t)runs, sizeof *warm);
        struct bench w = b;
        w.spec.prepare_next = true;
        w.spec.limits.disk_mb = b.spec.limits.disk_mb + 1; /* another shape: not claimed cold */
        one_run(&w);
        for (int i = 0; i < runs; i++) {
            cold[i] = one_run(&b);
            ext[i] = one_exec(argv + 3);
            warm[i] = one_run(&w);
        }
        b.failed += w.failed;
        print_stats(cold, runs);
        print_stats(ext, runs);
        print_stats(warm, runs);
        free(cold);
        free(ext);
        free(warm);
    } else {
        int jobs = argc > 3 ? atoi(argv[3]) : 2;
        if (jobs < 1)
            jobs = 1;
        b.total = runs;
        double t0 = now_ms();
        for (int i = 0; i < jobs && b.started < runs; i++)
            start_next(&b);
        loop_run(b.loop);
        double s = (now_ms() - t0) / 1e3;
        printf("%.2f %.1f\n", s, runs / s);
    }
    sandbox_release_prepared();
    loop_free(b.loop);
    return b.failed ? 1 : 0;
}
