/*
 * ledger_bench: what recording an experiment in git costs, alone. In a new
 * repository (made with the git program, its experiment/ directory holding
 * FILES files), records N experiments in a chain as the research loop does:
 * each changes one file of its work directory, writes the directory as a
 * tree (ledger_write_tree) and commits it with a note (ledger_commit). The
 * work directory is written before the clock starts, so the figures are the
 * ledger's own. Prints the median and mean wall and CPU time per
 * experiment, for the first and the last tenth of the chain, and the files
 * the repository's object database holds at the end. With NOTES 0 the
 * commits get no note (the research loop writes notes off its critical
 * path, while the next experiment runs), which shows what notes cost.
 * Usage: ledger_bench DIR N [FILES=3] [NOTES=1]
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "bench_clock.h"
#include "error.h"
#include "fsutil.h"
#include "ledger.h"

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, size_t n)
{
    double *s = xreallocarray(NULL, n, sizeof *s);
    memcpy(s, v, n * sizeof *s);
    qsort(s, n, sizeof *s, by_value);
    double m = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    free(s);
    return m;
}

static double mean(const double *v, size_t n)
{
    double t = 0;
    for (size_t i = 0; i < n; i++)
        t += v[i];
    return t / (double)n;
}

static void report(const char *what, const double *w, const double *c, size_t n)
{
    printf("  %-16s wall median %.3f ms, mean %.3f ms; CPU median %.3f ms, mean %.3f ms\n", what,
           1e3 * median(w, n), 1e3 * mean(w, n), 1e3 * median(c, n), 1e3 * mean(c, n));
}

static int fail(const char *what)
{
    fprintf(stderr, "ledger_bench: %s: %s\n", what, error_message());
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: ledger_bench DIR N [FILES] [NOTES]\n");
        return 2;
    }
    const char *dir = argv[1];
    long n = atol(argv[2]), files = argc > 3 ? atol(argv[3]) : 3;
    bool notes = argc > 4 ? atol(argv[4]) != 0 : true;
    if (n < 10 || files < 1) {
        fprintf(stderr, "ledger_bench: N must be at least 10 and FILES at least 1\n");
        return 2;
    }
    char *repo = fs_join(dir, "repo");
    char *cmd = xasprintf("mkdir -p '%s/experiment' && cd '%s' && git init -q -b main . && "
                          "for i in $(seq %ld); do seq $((i * 40)) > experiment/file$i.txt; "
                          "done && git add -A && git -c user.name=b -c user.email=b@l commit -qm "
                          "base",
                          repo, repo, files);
    if (system(cmd) != 0) {
        fprintf(stderr, "ledger_bench: cannot make the repository in '%s'\n", repo);
        return 1;
    }
    free(cmd);
    struct ledger *l = NULL;
    char head[LEDGER_HEX_SIZE], parent[LEDGER_HEX_SIZE], tree[LEDGER_HEX_SIZE];
    if (ledger_open(&l, repo) < 0 || ledger_head(l, head) < 0)
        return fail("cannot open the repository");
    memcpy(parent, head, sizeof parent);
    char *work = fs_join(dir, "work");
    char *changed = fs_join(work, "file1.txt");
    double *w = xreallocarray(NULL, (size_t)n, sizeof *w);
    double *c = xreallocarray(NULL, (size_t)n, sizeof *c);
    if (ledger_materialise(l, head, work) < 0)
        return fail("cannot write the work directory");
    for (long i = 0; i < n; i++) {
        char text[64], node[32], note[96], metric[32];
        int len = snprintf(text, sizeof text, "experiment %ld\n", i + 1);
        FILE *f = fopen(changed, "w");
        if (!f || fwrite(text, 1, (size_t)len, f) != (size_t)len || fclose(f) != 0) {
            fprintf(stderr, "ledger_bench: cannot change '%s'\n", changed);
            return 1;
        }
        snprintf(node, sizeof node, "n%ld", i + 1);
        snprintf(metric, sizeof metric, "0.%06ld", i + 1);
        snprintf(note, sizeof note, "status: ok\naccuracy: %s\n", metric);
        double w0 = wall(), c0 = cpu();
        struct ledger_commit lc = {.run = "r1",
                                   .node = node,
                                   .parent = parent,
                                   .tree = tree,
                                   .title = node,
                                   .status = "ok",
                                   .metric_name = "accuracy",
                                   .metric = metric,
                                   .model = "offline",
                                   .note = notes ? note : NULL};
        if (ledger_write_tree(l, work, tree) < 0 || ledger_commit(l, &lc, parent) < 0)
            return fail("cannot record an experiment");
        w[i] = wall() - w0;
        c[i] = cpu() - c0;
    }
    ledger_free(l);
    size_t tenth = (size_t)n / 10;
    printf("ledger: %ld experiments, %ld files each, one file changed per experiment, %s\n", n,
           files, notes ? "with notes" : "without notes");
    report("all", w, c, (size_t)n);
    report("first tenth", w, c, tenth);
    report("last tenth", w + n - tenth, c + n - tenth, tenth);
    fflush(stdout);
    cmd = xasprintf("cd '%s/.git/objects' && printf '  object database: %%s loose objects, "
                    "%%s packs\\n' $(find . -path './[0-9a-f][0-9a-f]/*' -type f | wc -l) "
                    "$(ls pack | grep -c '\\.pack$')",
                    repo);
    if (system(cmd) != 0)
        fprintf(stderr, "ledger_bench: cannot count the objects\n");
    free(cmd);
    free(w);
    free(c);
    free(changed);
    free(work);
    free(repo);
    return 0;
}
