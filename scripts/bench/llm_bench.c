/*
 * llm_bench: drives many chat completions through the LLM gateway, for
 * scripts/bench/llm_gateway.sh.
 *
 * Usage: llm_bench BASE_URL REQUESTS CONCURRENCY
 * Keeps CONCURRENCY requests in flight (llm.max_concurrency is set to it) on
 * one event loop until REQUESTS have completed, against an OpenAI-compatible
 * endpoint at BASE_URL, and checks every answer. Prints one line:
 *   requests=N concurrency=C ok=K seconds=S rps=R cpu_us_per_request=U max_rss_kib=M
 * CPU time and peak RSS are this process's (getrusage). No store is opened
 * (nothing is recorded) and retries are off, so what is measured is the
 * gateway, the HTTP layer and libcurl. Built by the CMake target llm_bench
 * (not part of `all`). Depends on llm, loop, config and error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "config.h"
#include "error.h"
#include "llm.h"
#include "loop.h"

struct bench {
    struct loop *loop;
    struct llm *gw;
    long total, started, finished, ok;
    char first_error[512];
};

static const struct llm_message prompt[] = {
    {"system", "You are a benchmark."},
    {"user", "Say hello."},
};

static void start_one(struct bench *b);

static void on_done(struct llm_call *call, const struct llm_result *res, void *ud)
{
    struct bench *b = ud;
    (void)call;
    b->finished++;
    if (res->rc == 0 && res->text[0])
        b->ok++;
    else if (!b->first_error[0])
        snprintf(b->first_error, sizeof b->first_error, "%s",
                 res->rc < 0 ? res->error : "empty answer");
    if (b->started < b->total)
        start_one(b);
    else if (b->finished == b->total)
        loop_stop(b->loop);
}

static void start_one(struct bench *b)
{
    struct llm_request req = {.messages = prompt, .nmessages = 2, .max_tokens = 16};
    b->started++;
    if (llm_chat(b->gw, &req, on_done, b, NULL) < 0) {
        fprintf(stderr, "llm_bench: %s\n", error_message());
        exit(1);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: llm_bench BASE_URL REQUESTS CONCURRENCY\n");
        return 2;
    }
    long total = strtol(argv[2], NULL, 10), conc = strtol(argv[3], NULL, 10);
    if (total <= 0 || conc <= 0) {
        fprintf(stderr, "llm_bench: REQUESTS and CONCURRENCY must be positive\n");
        return 2;
    }
    /* one socket per request in flight, plus the loop's own */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    setenv("OPENAI_API_KEY", "bench-key", 1);
    setenv("OPENAI_BASE_URL", argv[1], 1);
    setenv("THALAMUS_PROVIDER", "openai", 1);
    setenv("THALAMUS_MODEL", "bench-model", 1);
    struct config *cfg = NULL;
    struct bench b = {.total = total};
    if (config_load(&cfg, NULL) < 0 || loop_new(&b.loop) < 0) {
        fprintf(stderr, "llm_bench: %s\n", error_message());
        return 1;
    }
    cfg->llm_max_concurrency = conc;
    cfg->llm_max_retries = 0;
    if (llm_new(&b.gw, b.loop, cfg, NULL) < 0) {
        fprintf(stderr, "llm_bench: %s\n", error_message());
        return 1;
    }
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    double t0 = now_s();
    for (long i = 0; i < conc && i < total; i++)
        start_one(&b);
    if (loop_run(b.loop) < 0) {
        fprintf(stderr, "llm_bench: %s\n", error_message());
        return 1;
    }
    double secs = now_s() - t0;
    getrusage(RUSAGE_SELF, &after);
    double cpu = (double)(after.ru_utime.tv_sec - before.ru_utime.tv_sec) +
                 (double)(after.ru_stime.tv_sec - before.ru_stime.tv_sec) +
                 (double)(after.ru_utime.tv_usec - before.ru_utime.tv_usec) / 1e6 +
                 (double)(after.ru_stime.tv_usec - before.ru_stime.tv_usec) / 1e6;
    printf("requests=%ld concurrency=%ld ok=%ld seconds=%.3f rps=%.0f cpu_us_per_request=%.1f "
           "max_rss_kib=%ld\n",
           total, conc, b.ok, secs, (double)total / secs, cpu * 1e6 / (double)total,
           after.ru_maxrss);
    if (b.ok != total)
        fprintf(stderr, "llm_bench: %ld of %ld requests failed; first error: %s\n", total - b.ok,
                total, b.first_error);
    llm_free(b.gw);
    loop_free(b.loop);
    config_free(cfg);
    return b.ok == total ? 0 : 1;
}
