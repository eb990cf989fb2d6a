/*
 * test_sandbox_loop: sandboxes driven through the C interface on the event
 * loop, the way the research loop runs experiments. Checks that many
 * sandboxes run at once (each with its own uid, output and results.json),
 * that cancelling and the wall-clock limit stop a program that ignores
 * SIGTERM, that output streams to the callback while the record keeps head
 * and tail, that a prepared sandbox (prepare_next, with and without
 * isolation) runs the next program with its own work directory and limits
 * (and one that died while it waited is replaced), that cgroups made ahead
 * and removed late still give each sandbox its limits and leave none
 * behind, that the sandbox's first process has no copy of this process's
 * heap, that the synchronous wrapper works, and that no process of a
 * finished sandbox and no child of this process and no fd is left behind.
 * Depends on loop, sandbox and the check.h harness.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "error.h"
#include "loop.h"
#include "sandbox.h"

#define MANY 12

static char dir[] = "/tmp/thalamus-test-sandbox-loop-XXXXXX";

static struct loop *new_loop(void)
{
    struct loop *loop = NULL;
    if (loop_new(&loop) < 0)
        CHECK_FAIL("loop_new: %s", error_message());
    REQUIRE(loop);
    return loop;
}

static void base_spec(struct sandbox_spec *spec, char **argv)
{
    memset(spec, 0, sizeof *spec);
    spec->argv = argv;
    sandbox_limits_default(&spec->limits);
    spec->limits.timeout_ms = 60000;
    spec->limits.memory_mb = 256;
    spec->limits.disk_mb = 16;
}

/* The children of this (single-threaded) process, at most max of them. */
static int children_of_self(pid_t *out, int max)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%ld/children", (long)getpid());
    FILE *f = fopen(path, "r");
    int n = 0;
    long pid;
    while (f && n < max && fscanf(f, "%ld", &pid) == 1)
        out[n++] = (pid_t)pid;
    if (f)
        fclose(f);
    return n;
}

/* Pids of the processes whose real uid is uid. */
static int processes_of(uid_t uid)
{
    DIR *d = opendir("/proc");
    int n = 0;
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[300], line[256];
        snprintf(path, sizeof path, "/proc/%s/status", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "Uid:", 4)) {
                if ((uid_t)strtoul(line + 4, NULL, 10) == uid)
                    n++;
                break;
            }
        fclose(f);
    }
    closedir(d);
    return n;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* ---- many at once ---- */

struct many {
    int done;
    int ok[MANY];
    uid_t uids[MANY];
};

struct one {
    struct many *m;
    int index;
};

static void on_many(struct sandbox *sb, struct sandbox_result *r, void *ud)
{
    struct one *o = ud;
    (void)sb;
    o->m->done++;
    o->m->uids[o->index] = r->uid;
    char want[32];
    snprintf(want, sizeof want, "job %d\n", o->index);
    cJSON *n = r->results ? cJSON_GetObjectItem(r->results, "n") : NULL;
    if (r->status == SANDBOX_OK && !strcmp(r->out.text, want) && n &&
        (int)n->valuedouble == o->index)
        o->m->ok[o->index] = 1;
    else
        fprintf(stderr, "  job %d: %s (%s) stdout '%s' stderr '%s'\n", o->index,
                sandbox_status_name(r->status), r->reason ? r->reason : "", r->out.text,
                r->err.text);
    sandbox_result_free(r);
}

static void test_many_at_once(void)
{
    struct loop *loop = new_loop();
    struct many m;
    struct one ones[MANY];
    memset(&m, 0, sizeof m);
    char *argv[] = {"/bin/sh", "-c",
                    "sleep 0.2; echo job $N; printf '{\"n\": %s}' $N > results.json", NULL};
    for (int i = 0; i < MANY; i++) {
        struct sandbox_spec spec;
        base_spec(&spec, argv);
        char env[32];
        snprintf(env, sizeof env, "N=%d", i);
        char *envv[] = {env, NULL};
        spec.env = envv;
        ones[i].m = &m;
        ones[i].index = i;
        if (sandbox_spawn(loop, &spec, on_many, &ones[i], NULL) < 0)
            CHECK_FAIL("spawn %d: %s", i, error_message());
    }
    CHECK(loop_run(loop) == 0);
    CHECK_EQ_INT(m.done, MANY);
    for (int i = 0; i < MANY; i++) {
        CHECK_EQ_INT(m.ok[i], 1);
        for (int j = 0; j < i; j++)
            if (geteuid() == 0 && m.uids[i] == m.uids[j])
                CHECK_FAIL("sandboxes %d and %d ran at once as the same uid %lu", i, j,
                           (unsigned long)m.uids[i]);
        if (geteuid() == 0)
            CHECK_EQ_INT(processes_of(m.uids[i]), 0);
    }
    loop_free(loop);
}

/* ---- stopping ---- */

static void store_result(struct sandbox *sb, struct sandbox_result *r, void *ud)
{
    (void)sb;
    *(struct sandbox_result **)ud = r;
}

struct cancel_ctx {
    struct sandbox *sb;
};

static void cancel_later(struct loop_timer *t, void *ud)
{
    struct cancel_ctx *c = ud;
    (void)t;
    sandbox_cancel(c->sb);
}

static const char ignore_term[] = "import signal, time\n"
                                  "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                  "print('ready', flush=True)\n"
                                  "time.sleep(60)\n";

static void test_cancel(void)
{
    struct loop *loop = new_loop();
    char *argv[] = {"python3", "-c", (char *)ignore_term, NULL};
    struct sandbox_spec spec;
    base_spec(&spec, argv);
    spec.limits.grace_ms = 200;
    struct sandbox_result *r = NULL;
    struct cancel_ctx c;
    REQUIRE(sandbox_spawn(loop, &spec, store_result, &r, &c.sb) == 0);
    loop_timer_add(loop, 1000, cancel_later, &c);
    CHECK(loop_run(loop) == 0);
    REQUIRE(r);
    CHECK_EQ_INT(r->status, SANDBOX_KILLED);
    CHECK_EQ_STR(r->reason, "cancelled");
    CHECK_EQ_INT(r->signal, 9); /* it ignored SIGTERM: SIGKILL after the grace period */
    if (geteuid() == 0)
        CHECK_EQ_INT(processes_of(r->uid), 0);
    sandbox_result_free(r);
    loop_free(loop);
}

static void test_wall_clock_limit(void)
{
    struct loop *loop = new_loop();
    char *argv[] = {"python3", "-c", (char *)ignore_term, NULL};
    struct sandbox_spec spec;
    base_spec(&spec, argv);
    spec.limits.timeout_ms = 1000;
    spec.limits.grace_ms = 300;
    struct sandbox_result *r = NULL;
    REQUIRE(sandbox_spawn(loop, &spec, store_result, &r, NULL) == 0);
    CHECK(loop_run(loop) == 0);
    REQUIRE(r);
    CHECK_EQ_INT(r->status, SANDBOX_TIMEOUT);
    CHECK_EQ_STR(r->limit, "wall");
    CHECK_EQ_INT(r->signal, 9);
    CHECK_CONTAINS(r->out.text, "ready");
    if (geteuid() == 0)
        CHECK_EQ_INT(processes_of(r->uid), 0);
    sandbox_result_free(r);
    loop_free(loop);
}

/* ---- output ---- */

struct streamed {
    size_t out, err;
};

static void on_output(enum sandbox_stream stream, const char *data, size_t len, void *ud)
{
    struct streamed *s = ud;
    (void)data;
    if (stream == SANDBOX_STDOUT)
        s->out += len;
    else
        s->err += len;
}

static void test_output_stream_and_cap(void)
{
    struct loop *loop = new_loop();
    char *argv[] = {"python3", "-c",
                    "import sys\n"
                    "print('FIRST-LINE')\n"
                    "for i in range(100000): print('%029d' % i)\n"
                    "print('LAST-LINE')\n"
                    "sys.stderr.write('to stderr\\n')\n",
                    NULL};
    struct sandbox_spec spec;
    base_spec(&spec, argv);
    spec.limits.output_bytes = 64 * 1024;
    struct streamed s = {0, 0};
    spec.on_output = on_output;
    spec.output_ud = &s;
    struct sandbox_result *r = NULL;
    REQUIRE(sandbox_spawn(loop, &spec, store_result, &r, NULL) == 0);
    CHECK(loop_run(loop) == 0);
    REQUIRE(r);
    size_t expected = 11 + 100000 * 30 + 10;
    CHECK_EQ_INT(r->status, SANDBOX_OK);
    CHECK_EQ_INT(s.out, expected);
    CHECK_EQ_INT(s.err, 10);
    CHECK_EQ_INT(r->out.total, expected);
    CHECK(r->out.truncated);
    CHECK(!strncmp(r->out.text, "FIRST-LINE\n", 11));
    CHECK(r->out.len > 10 && !strcmp(r->out.text + r->out.len - 10, "LAST-LINE\n"));
    CHECK_CONTAINS(r->out.text, "bytes left out");
    CHECK(r->out.len < 64 * 1024 + 100);
    CHECK_EQ_STR(r->err.text, "to stderr\n");
    sandbox_result_free(r);
    loop_free(loop);
}

/* ---- a prepared sandbox ---- */

static void test_prepared_sandbox(void)
{
    struct loop *loop = new_loop();
    char work[600];
    snprintf(work, sizeof work, "%s/work", dir);
    REQUIRE(mkdir(work, 0755) == 0);
    char *first[] = {"/bin/sh", "-c", "echo one > a.txt", NULL};
    char *second[] = {"/bin/sh", "-c", "cat a.txt; echo '{\"x\": 1}' > results.json", NULL};
    struct sandbox_spec spec;
    base_spec(&spec, first);
    spec.work_dir = work;
    spec.prepare_next = true;
    struct sandbox_result *r = NULL;
    REQUIRE(sandbox_spawn(loop, &spec, store_result, &r, NULL) == 0);
    CHECK(loop_run(loop) == 0);
    REQUIRE(r);
    CHECK_EQ_INT(r->status, SANDBOX_OK);
    CHECK(!r->prepared);
    sandbox_result_free(r);
    r = NULL;

    spec.argv = second;
    spec.prepare_next = false;
    REQUIRE(sandbox_spawn(loop, &spec, store_result, &r, NULL) == 0);
    CHECK(loop_run(loop) == 0);
    REQUIRE(r);
    CHECK_EQ_INT(r->status, SANDBOX_OK);
    CHECK(r->prepared);
    CHECK_EQ_STR(r->out.text, "one\n");
    CHECK(r->results && cJSON_GetObjectItem(r->results, "x"));
    sandbox_result_free(r);

    /* a prepared sandbox that died while it waited is set aside: the next
     * spawn sets one up */
    r = NULL;
    spec.prepare_next = true;
    REQUIRE(sandbox_spawn(loop, &spec, store_result, &r, NULL) == 0);
    CHECK(loop_run(loop) == 0);
    REQUIRE(r);
    CHECK(!r->prepared);
    sandbox_result_free(r);
    r = NULL;
    pid_t waiting[8];
    int nwaiting = children_of_self(waiting, 8);
    CHECK_EQ_INT(nwaiting, 1);
    for (int i = 0; i < nwaiting; i++) {
        siginfo_t si;
        kill(waiting[i], SIGKILL);
        waitid(P_PID, (id_t)waiting[i], &si, WEXITED | WNOWAIT); /* dead, not reaped */
    }
    spec.prepare_next = false;
    REQUIRE(sandbox_spawn(loop, &spec, store_result, &r, NULL) == 0);
    CHECK(loop_run(loop) == 0);
    REQUIRE(r);
    CHECK_EQ_INT(r->status, SANDBOX_OK);
    CHECK(!r->prepared);
    CHECK_EQ_STR(r->out.text, "one\n");
    sandbox_result_free(r);

    /* a prepared sandbox that is never used goes away on request */
    r = NULL;
    spec.prepare_next = true;
    REQUIRE(sandbox_spawn(loop, &spec, store_result, &r, NULL) == 0);
    CHECK(loop_run(loop) == 0);
    sandbox_result_free(r);
    sandbox_release_prepared();
    loop_free(loop);
}

/* Directories named thalamus-PID-N (this process's sandboxes) under the
 * cgroup mounts, searched to depth. */
static int own_cgroups_under(const char *path, const char *prefix, int depth)
{
    DIR *d = opendir(path);
    int n = 0;
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_type != DT_DIR || e->d_name[0] == '.')
            continue;
        if (!strncmp(e->d_name, prefix, strlen(prefix))) {
            n++;
        } else if (depth > 0) {
            char sub[4096];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            n += own_cgroups_under(sub, prefix, depth - 1);
        }
    }
    closedir(d);
    return n;
}

static int own_cgroups(void)
{
    char prefix[64], line[1024], mnt[512], type[64];
    snprintf(prefix, sizeof prefix, "thalamus-%ld-", (long)getpid());
    FILE *f = fopen("/proc/self/mounts", "r");
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "%*s %511s %63s", mnt, type) == 2 &&
            (!strcmp(type, "cgroup") || !strcmp(type, "cgroup2")))
            n += own_cgroups_under(mnt, prefix, 3);
    if (f)
        fclose(f);
    return n;
}

static void run_one(struct loop *loop, const struct sandbox_spec *spec, struct sandbox_result **r)
{
    *r = NULL;
    REQUIRE(sandbox_spawn(loop, spec, store_result, r, NULL) == 0);
    CHECK(loop_run(loop) == 0);
    REQUIRE(*r);
}

/* A sandbox's cgroups are made ahead (a spare set, once a spawn has started
 * its program, with that spawn's limits) and removed late (once the next
 * spawn has started its program): each sandbox still gets its own limits,
 * and none is left once the sandboxes are released. */
static void test_cgroups_made_ahead(void)
{
    struct loop *loop = new_loop();
    char *small[] = {"/bin/true", NULL};
    char *big[] = {"python3", "-c", "b = bytearray(160 << 20); print('allocated')", NULL};
    struct sandbox_spec spec;
    struct sandbox_result *r;
    base_spec(&spec, small); /* 256 MB */
    run_one(loop, &spec, &r);
    CHECK_EQ_INT(r->status, SANDBOX_OK);
    sandbox_result_free(r);
    /* the spare has 256 MB; this sandbox has 48 */
    base_spec(&spec, big);
    spec.limits.memory_mb = 48;
    run_one(loop, &spec, &r);
    CHECK_EQ_INT(r->status, SANDBOX_OOM);
    CHECK(!strstr(r->out.text, "allocated"));
    sandbox_result_free(r);
    /* the spare has 48 MB; this one has 256 again */
    base_spec(&spec, big);
    run_one(loop, &spec, &r);
    CHECK_EQ_INT(r->status, SANDBOX_OK);
    CHECK_EQ_STR(r->out.text, "allocated\n");
    sandbox_result_free(r);
    sandbox_release_prepared();
    CHECK_EQ_INT(own_cgroups(), 0);
    loop_free(loop);
}

/* Without isolation too, a sandbox is prepared once the program before it
 * has started, and the next spawn gets it with that spawn's own work
 * directory and limits. */
static void test_prepared_without_isolation(void)
{
    struct loop *loop = new_loop();
    char one[600], two[600], *real;
    snprintf(one, sizeof one, "%s/none-one", dir);
    snprintf(two, sizeof two, "%s/none-two", dir);
    REQUIRE(mkdir(one, 0755) == 0 && mkdir(two, 0755) == 0);
    char *first[] = {"/bin/sh", "-c", "sleep 0.2; pwd", NULL};
    char *big[] = {"python3", "-c",
                   "import os; print(os.getcwd()); b = bytearray(160 << 20); "
                   "print('allocated')",
                   NULL};
    struct sandbox_spec spec;
    struct sandbox_result *r = NULL;
    base_spec(&spec, first);
    spec.isolation = SANDBOX_ISOLATION_NONE;
    spec.work_dir = one;
    spec.prepare_next = true;
    REQUIRE(sandbox_spawn(loop, &spec, store_result, &r, NULL) == 0);
    pid_t kids[8];
    /* the running sandbox, and the one prepared for the next spawn */
    CHECK_EQ_INT(children_of_self(kids, 8), 2);
    CHECK(loop_run(loop) == 0);
    REQUIRE(r);
    CHECK_EQ_INT(r->status, SANDBOX_OK);
    CHECK(!r->prepared);
    REQUIRE((real = realpath(one, NULL)));
    CHECK(!strncmp(r->out.text, real, strlen(real)));
    free(real);
    sandbox_result_free(r);

    /* prepared with 256 MB; this one has 48 */
    base_spec(&spec, big);
    spec.isolation = SANDBOX_ISOLATION_NONE;
    spec.work_dir = two;
    spec.prepare_next = true;
    spec.limits.memory_mb = 48;
    run_one(loop, &spec, &r);
    CHECK(r->prepared);
    CHECK_EQ_INT(r->status, SANDBOX_OOM);
    CHECK(!strstr(r->out.text, "allocated"));
    REQUIRE((real = realpath(two, NULL)));
    CHECK(!strncmp(r->out.text, real, strlen(real)));
    free(real);
    sandbox_result_free(r);
    /* prepared with 48 MB; this one has 256 again */
    spec.limits.memory_mb = 256;
    run_one(loop, &spec, &r);
    CHECK(r->prepared);
    CHECK_EQ_INT(r->status, SANDBOX_OK);
    CHECK_CONTAINS(r->out.text, "allocated\n");
    sandbox_result_free(r);

    CHECK_EQ_INT(children_of_self(kids, 8), 1);
    sandbox_release_prepared();
    CHECK_EQ_INT(children_of_self(kids, 8), 0);
    CHECK_EQ_INT(own_cgroups(), 0);
    loop_free(loop);
}

/* Whether the maps of process pid name a region. */
static bool maps_have(pid_t pid, const char *name)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%ld/maps", (long)pid);
    FILE *f = fopen(path, "r");
    bool found = false;
    while (f && !found && fgets(line, sizeof line, f))
        found = strstr(line, name) != NULL;
    if (f)
        fclose(f);
    return found;
}

/* The sandbox's first process, a copy of this one, has no copy of its heap
 * (what it reads of the plan is packed apart), and runs all the same. */
static void test_first_process_has_no_heap(void)
{
    struct loop *loop = new_loop();
    char *argv[] = {"/bin/sh", "-c", "sleep 0.3; echo done", NULL};
    struct sandbox_spec spec;
    base_spec(&spec, argv);
    void *grown = malloc(1 << 16);
    /* (a sanitizer's allocator keeps no [heap]) */
    bool heap = maps_have(getpid(), "[heap]");
    struct sandbox_result *r = NULL;
    REQUIRE(sandbox_spawn(loop, &spec, store_result, &r, NULL) == 0);
    pid_t kids[8];
    int n = children_of_self(kids, 8);
    CHECK_EQ_INT(n, 1);
    for (int i = 0; i < n && heap; i++)
        CHECK(!maps_have(kids[i], "[heap]"));
    CHECK(loop_run(loop) == 0);
    REQUIRE(r);
    CHECK_EQ_INT(r->status, SANDBOX_OK);
    CHECK_EQ_STR(r->out.text, "done\n");
    sandbox_result_free(r);
    free(grown);
    loop_free(loop);
}

static void test_synchronous_run(void)
{
    char *argv[] = {"/bin/sh", "-c", "exit 3", NULL};
    struct sandbox_spec spec;
    base_spec(&spec, argv);
    struct sandbox_result *r = NULL;
    REQUIRE(sandbox_run(&spec, &r) == 0);
    CHECK_EQ_INT(r->status, SANDBOX_FAILED);
    CHECK_EQ_INT(r->exit_code, 3);
    CHECK_EQ_STR(r->reason, "exited with status 3");
    sandbox_result_free(r);

    char *none[] = {"/nonexistent/program", NULL};
    base_spec(&spec, none);
    REQUIRE(sandbox_run(&spec, &r) == 0);
    CHECK_EQ_INT(r->status, SANDBOX_FAILED);
    CHECK_EQ_INT(r->exit_code, 127);
    CHECK_CONTAINS(r->reason, "cannot run '/nonexistent/program'");
    sandbox_result_free(r);

    char *empty[] = {NULL};
    base_spec(&spec, empty);
    CHECK_EQ_INT(sandbox_run(&spec, &r), TH_EUSAGE);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    struct sandbox_report *rep = sandbox_check();
    bool can = rep->can_isolate;
    sandbox_report_free(rep);
    if (!can) {
        printf("skipped: this host cannot create sandboxes\n");
        return 77;
    }
    int fds = count_fds();
    RUN(test_many_at_once);
    RUN(test_cancel);
    RUN(test_wall_clock_limit);
    RUN(test_output_stream_and_cap);
    RUN(test_prepared_sandbox);
    RUN(test_cgroups_made_ahead);
    RUN(test_prepared_without_isolation);
    RUN(test_first_process_has_no_heap);
    RUN(test_synchronous_run);
    /* nothing left: no fd, and no child of this process */
    CHECK_EQ_INT(count_fds(), fds);
    errno = 0;
    if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD) {
        fprintf(stderr, "FAIL a child process was left behind\n");
        check_failed++;
    }
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    return check_summary();
}
