/*
 * test_sandbox_parts: unit tests of the sandbox's parts that need no
 * sandbox: output capture (head and tail within a cap), UTF-8 clean-up,
 * Python traceback parsing (frames in the experiment's files only, source
 * lines read beneath the work dir and never through .. or a symbolic link),
 * results.json checks (missing, symlink, fifo, directory, too big, not JSON,
 * not an object), opening beneath a directory, the seccomp filter (in a
 * forked child: each blocked call fails with EPERM, fork still works), the
 * clean environment of a job (no API key, the allow-list, the task's
 * variables) and the validation of binds. Depends on the sandbox module's
 * internal header and the check.h harness.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "error.h"
#include "sandbox.h"
#include "sandbox_internal.h"

static char dir[] = "/tmp/thalamus-test-sandbox-parts-XXXXXX";

static void write_file(const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fputs(text, f);
    fclose(f);
}

static int open_dir(const char *rel)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    REQUIRE(fd >= 0);
    return fd;
}

/* ---- capture ---- */

static void test_capture_small(void)
{
    struct sandbox_capture c;
    struct sandbox_output out;
    sandbox_capture_init(&c, 100);
    sandbox_capture_add(&c, "hello ", 6);
    sandbox_capture_add(&c, "world\n", 6);
    sandbox_capture_finish(&c, &out);
    CHECK_EQ_STR(out.text, "hello world\n");
    CHECK_EQ_INT(out.total, 12);
    CHECK(!out.truncated);
    free(out.text);
}

static void test_capture_head_and_tail(void)
{
    struct sandbox_capture c;
    struct sandbox_output out;
    char data[1000];
    for (int i = 0; i < 1000; i++)
        data[i] = (char)('a' + i % 26);
    sandbox_capture_init(&c, 20);
    /* uneven chunks, so the ring wraps at odd places */
    size_t sizes[] = {3, 7, 1, 250, 2, 600, 137};
    size_t off = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        sandbox_capture_add(&c, data + off, sizes[i]);
        off += sizes[i];
    }
    REQUIRE(off == 1000);
    sandbox_capture_finish(&c, &out);
    CHECK(out.truncated);
    CHECK_EQ_INT(out.total, 1000);
    CHECK(!strncmp(out.text, data, 10));
    CHECK_CONTAINS(out.text, "[... 980 bytes left out ...]");
    CHECK(!memcmp(out.text + out.len - 10, data + 990, 10));
    free(out.text);

    /* one chunk larger than the whole cap */
    sandbox_capture_init(&c, 20);
    sandbox_capture_add(&c, data, 1000);
    sandbox_capture_finish(&c, &out);
    CHECK(!strncmp(out.text, data, 10));
    CHECK(!memcmp(out.text + out.len - 10, data + 990, 10));
    free(out.text);
}

static void test_utf8_clean(void)
{
    char *s = sandbox_utf8_clean("ok \xc3\xa9 \xff x\0y \xe0\x80\x80", 15);
    CHECK_EQ_STR(s, "ok \xc3\xa9 \xef\xbf\xbd x\xef\xbf\xbdy \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    free(s);
    s = sandbox_utf8_clean("", 0);
    CHECK_EQ_STR(s, "");
    free(s);
}

/* ---- tracebacks ---- */

static const char python_stderr[] =
    "step 1\n"
    "Traceback (most recent call last):\n"
    "  File \"/work/train.py\", line 2, in <module>\n"
    "    import missing\n"
    "ModuleNotFoundError: No module named 'missing'\n"
    "\n"
    "During handling of the above exception, another exception occurred:\n"
    "\n"
    "Traceback (most recent call last):\n"
    "  File \"/work/train.py\", line 4, in <module>\n"
    "    main()\n"
    "  File \"/usr/lib/python3.11/json/__init__.py\", line 346, in loads\n"
    "    return _default_decoder.decode(s)\n"
    "           ^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
    "  File \"/work/lib/helper.py\", line 3, in check\n"
    "    raise ValueError(f\"bad value: {x}\")\n"
    "ValueError: bad value: 7\n";

static void test_traceback_python(void)
{
    write_file("train.py", "import json\nimport lib.helper\n\nmain()\n");
    write_file("lib/helper.py", "def check(x):\n    if x > 3:\n        raise ValueError(x)\n"
                                "    return x\n");
    int wd = open_dir(".");
    struct sandbox_traceback *tb = sandbox_traceback_parse(python_stderr, wd, "/work");
    close(wd);
    REQUIRE(tb);
    CHECK(tb->python);
    CHECK_EQ_STR(tb->type, "ValueError");
    CHECK_EQ_STR(tb->message, "bad value: 7");
    REQUIRE(tb->nframes == 2);
    CHECK_EQ_STR(tb->frames[0].file, "/work/train.py");
    CHECK_EQ_INT(tb->frames[0].line, 4);
    CHECK_EQ_STR(tb->frames[0].function, "<module>");
    CHECK_EQ_INT(tb->frames[0].first_line, 2);
    REQUIRE(tb->frames[0].nsource == 3); /* lines 2 to 4: the file has 4 */
    CHECK_EQ_STR(tb->frames[0].source[2], "main()");
    CHECK_EQ_STR(tb->frames[1].file, "/work/lib/helper.py");
    CHECK_EQ_STR(tb->frames[1].function, "check");
    CHECK_EQ_INT(tb->frames[1].first_line, 1);
    REQUIRE(tb->frames[1].nsource == 4);
    CHECK_EQ_STR(tb->frames[1].source[2], "        raise ValueError(x)");
    REQUIRE(tb->nlines > 0);
    CHECK_EQ_STR(tb->lines[tb->nlines - 1], "ValueError: bad value: 7");
    cJSON *j = sandbox_traceback_to_json(tb);
    char *text = cJSON_PrintUnformatted(j);
    CHECK_CONTAINS(text, "\"type\":\"ValueError\"");
    CHECK_CONTAINS(text, "\"file\":\"/work/lib/helper.py\"");
    free(text);
    cJSON_Delete(j);
    sandbox_traceback_free(tb);
}

static void test_traceback_syntax_error(void)
{
    write_file("bad.py", "print(1)\nx = (\n");
    int wd = open_dir(".");
    struct sandbox_traceback *tb =
        sandbox_traceback_parse("  File \"/work/bad.py\", line 2\n    x = (\n        ^\n"
                                "SyntaxError: '(' was never closed\n",
                                wd, "/work");
    close(wd);
    REQUIRE(tb);
    CHECK(tb->python);
    CHECK_EQ_STR(tb->type, "SyntaxError");
    CHECK_EQ_STR(tb->message, "'(' was never closed");
    REQUIRE(tb->nframes == 1);
    CHECK(tb->frames[0].function == NULL);
    REQUIRE(tb->frames[0].nsource == 2);
    CHECK_EQ_STR(tb->frames[0].source[1], "x = (");
    sandbox_traceback_free(tb);
}

static void test_traceback_other_programs(void)
{
    struct sandbox_traceback *tb =
        sandbox_traceback_parse("loading\n\nerror: cannot open 'data.csv'\n  \n", -1, "/work");
    REQUIRE(tb);
    CHECK(!tb->python);
    CHECK(tb->type == NULL);
    REQUIRE(tb->nlines == 2);
    CHECK_EQ_STR(tb->lines[0], "loading");
    CHECK_EQ_STR(tb->lines[1], "error: cannot open 'data.csv'");
    sandbox_traceback_free(tb);
    CHECK(sandbox_traceback_parse("", -1, "/work") == NULL);
}

/* Frames naming ../ or a symbolic link read nothing outside the work dir. */
static void test_traceback_never_leaves_workdir(void)
{
    write_file("secret.txt", "TOP-SECRET-LINE\n");
    char sub[600], link[600], target[600];
    snprintf(sub, sizeof sub, "%s/work", dir);
    mkdir(sub, 0755);
    snprintf(link, sizeof link, "%s/work/link.py", dir);
    snprintf(target, sizeof target, "%s/secret.txt", dir);
    unlink(link);
    REQUIRE(symlink(target, link) == 0);
    int wd = open_dir("work");
    struct sandbox_traceback *tb =
        sandbox_traceback_parse("Traceback (most recent call last):\n"
                                "  File \"/work/../secret.txt\", line 1, in a\n"
                                "  File \"/work/link.py\", line 1, in b\n"
                                "  File \"../secret.txt\", line 1, in c\n"
                                "RuntimeError: x\n",
                                wd, "/work");
    close(wd);
    REQUIRE(tb);
    CHECK(tb->python);
    CHECK_EQ_INT(tb->nframes, 3);
    for (size_t i = 0; i < tb->nframes; i++)
        CHECK_EQ_INT(tb->frames[i].nsource, 0);
    cJSON *j = sandbox_traceback_to_json(tb);
    char *text = cJSON_PrintUnformatted(j);
    CHECK(!strstr(text, "TOP-SECRET"));
    free(text);
    cJSON_Delete(j);
    sandbox_traceback_free(tb);
}

/* ---- results.json ---- */

static void results_case(const char *setup, size_t cap, const char *want_error)
{
    char sub[600];
    snprintf(sub, sizeof sub, "%s/r", dir);
    char cmd[3000];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir '%s' && cd '%s' && %s", sub, sub, sub, setup);
    REQUIRE(system(cmd) == 0);
    int wd = open_dir("r");
    cJSON *results = NULL;
    char *error = NULL;
    sandbox_results_read(wd, cap, &results, &error);
    close(wd);
    if (want_error) {
        CHECK(results == NULL);
        CHECK_CONTAINS(error, want_error);
        if (error && strstr(error, "root:"))
            CHECK_FAIL("the error shows the content of the linked file: %s", error);
    } else {
        CHECK(error == NULL);
        REQUIRE(results);
        CHECK_EQ_INT(cJSON_GetObjectItem(results, "score")->valuedouble, 3);
    }
    cJSON_Delete(results);
    free(error);
}

static void test_results(void)
{
    results_case("true", 1024, "missing");
    results_case("echo '{\"score\": 3}' > results.json", 1024, NULL);
    results_case("ln -s /etc/passwd results.json", 1024, "symbolic link");
    results_case("ln -s ../../../../etc/passwd results.json", 1024, "symbolic link");
    results_case("mkfifo results.json", 1024, "not a regular file");
    results_case("mkdir results.json", 1024, "not a regular file");
    results_case("echo '{\"score\": 3, \"pad\": \"xxxxxxxxxxxxxxxxxxxxxxx\"}' > results.json", 16,
                 "larger than the limit of 16 bytes");
    results_case("echo '{\"score\": ' > results.json", 1024, "not valid JSON");
    results_case(": > results.json", 1024, "empty");
    results_case("echo '[1, 2]' > results.json", 1024, "must hold a JSON object, got an array");
    cJSON *r = NULL;
    char *e = NULL;
    sandbox_results_read(-1, 10, &r, &e);
    CHECK_EQ_STR(e, "missing");
    free(e);
}

static void test_open_beneath(void)
{
    char cmd[1400];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && rm -rf b && mkdir -p b/a && echo x > b/a/c.txt && ln -s a b/l && "
             "echo out > outside.txt",
             dir);
    REQUIRE(system(cmd) == 0);
    int wd = open_dir("b");
    int fd = sandbox_open_beneath(wd, "a/c.txt", O_RDONLY);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    errno = 0;
    CHECK(sandbox_open_beneath(wd, "../outside.txt", O_RDONLY) < 0);
    CHECK(sandbox_open_beneath(wd, "a/../../outside.txt", O_RDONLY) < 0);
    CHECK(sandbox_open_beneath(wd, "l/c.txt", O_RDONLY) < 0);
    CHECK(sandbox_open_beneath(wd, "/etc/passwd", O_RDONLY) < 0);
    CHECK(sandbox_open_beneath(wd, "a//c.txt", O_RDONLY) < 0);
    close(wd);
}

/* ---- seccomp ---- */

#define EXPECT_EPERM(name, call)                                                                   \
    do {                                                                                           \
        errno = 0;                                                                                 \
        long r_ = (long)(call);                                                                    \
        if (r_ != -1 || errno != EPERM)                                                            \
            dprintf(report, "%s: %ld errno %d\n", name, r_, errno);                                \
    } while (0)

static void seccomp_child(int report)
{
    struct sock_fprog prog;
    if (!sandbox_seccomp_filter(&prog) || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) {
        dprintf(report, "cannot install the filter: %s\n", strerror(errno));
        return;
    }
    EXPECT_EPERM("ptrace", syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0));
    EXPECT_EPERM("process_vm_readv", syscall(SYS_process_vm_readv, 1, 0, 0, 0, 0, 0));
    EXPECT_EPERM("unshare", syscall(SYS_unshare, CLONE_NEWUSER));
    EXPECT_EPERM("setns", syscall(SYS_setns, 0, 0));
    EXPECT_EPERM("mount", syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, 0));
    EXPECT_EPERM("umount2", syscall(SYS_umount2, "/tmp", 0));
    EXPECT_EPERM("pivot_root", syscall(SYS_pivot_root, ".", "."));
    EXPECT_EPERM("chroot", syscall(SYS_chroot, "/"));
    EXPECT_EPERM("bpf", syscall(SYS_bpf, 0, 0, 0));
    EXPECT_EPERM("perf_event_open", syscall(SYS_perf_event_open, 0, 0, -1, -1, 0));
    EXPECT_EPERM("keyctl", syscall(SYS_keyctl, 0, 0, 0, 0, 0));
    EXPECT_EPERM("add_key", syscall(SYS_add_key, "user", "k", "v", 1, 0));
    EXPECT_EPERM("request_key", syscall(SYS_request_key, "user", "k", 0, 0));
    EXPECT_EPERM("userfaultfd", syscall(SYS_userfaultfd, 0));
#ifdef SYS_io_uring_setup
    EXPECT_EPERM("io_uring_setup", syscall(SYS_io_uring_setup, 1, 0));
#endif
    EXPECT_EPERM("kexec_load", syscall(SYS_kexec_load, 0, 0, 0, 0));
    EXPECT_EPERM("init_module", syscall(SYS_init_module, 0, 0, ""));
    EXPECT_EPERM("finit_module", syscall(SYS_finit_module, -1, "", 0));
    EXPECT_EPERM("delete_module", syscall(SYS_delete_module, "x", 0));
    EXPECT_EPERM("open_by_handle_at", syscall(SYS_open_by_handle_at, -1, 0, 0));
    EXPECT_EPERM("reboot", syscall(SYS_reboot, 0, 0, 0, 0));
    EXPECT_EPERM("swapon", syscall(SYS_swapon, "/x", 0));
    EXPECT_EPERM("personality", syscall(SYS_personality, ADDR_NO_RANDOMIZE));
    EXPECT_EPERM("clone(CLONE_NEWUSER)", syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0));
    EXPECT_EPERM("clone(CLONE_NEWNET)", syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0));
    EXPECT_EPERM("ioctl(TIOCSTI)", syscall(SYS_ioctl, 0, TIOCSTI, "x"));
#ifdef SYS_clone3
    errno = 0;
    if (syscall(SYS_clone3, NULL, 0) != -1 || errno != ENOSYS)
        dprintf(report, "clone3: errno %d, expected ENOSYS\n", errno);
#endif
    if (syscall(SYS_personality, 0xffffffff) == -1)
        dprintf(report, "querying the personality failed: %d\n", errno);
    pid_t pid = fork();
    if (pid == 0)
        _exit(7);
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 7)
        dprintf(report, "fork under the filter failed: %s\n", strerror(errno));
}

static void test_seccomp_filter(void)
{
    int p[2];
    REQUIRE(pipe(p) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        seccomp_child(p[1]);
        _exit(0);
    }
    close(p[1]);
    char report[4096];
    ssize_t n = read(p[0], report, sizeof report - 1);
    close(p[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    if (n > 0) {
        report[n] = '\0';
        CHECK_FAIL("calls the filter should block:\n%s", report);
    }
}

/* ---- jobs and plans ---- */

/* The strings of a serialized job: dir, argv..., env..., paths... */
static bool job_has(const struct buf *job, const char *want)
{
    const char *s = job->data + sizeof(struct sandbox_job_head);
    const char *end = job->data + job->len;
    while (s < end) {
        if (!strcmp(s, want))
            return true;
        s += strlen(s) + 1;
    }
    return false;
}

static bool job_mentions(const struct buf *job, const char *part)
{
    for (size_t i = 0; i + strlen(part) <= job->len; i++)
        if (!memcmp(job->data + i, part, strlen(part)))
            return true;
    return false;
}

static void test_job_environment(void)
{
    setenv("OPENAI_API_KEY", "sk-test-never-in-the-sandbox", 1);
    setenv("ANTHROPIC_API_KEY", "sk-ant-never", 1);
    setenv("OMP_NUM_THREADS", "3", 1);
    setenv("FOO_HOST_ONLY", "bar", 1);
    char *argv[] = {"python3", "train.py", NULL};
    char *env[] = {"EXTRA=1", "HOME=/elsewhere", NULL};
    struct sandbox_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.argv = argv;
    spec.env = env;
    sandbox_limits_default(&spec.limits);
    struct buf job;
    struct plan_cgroup pc = {false, false};
    REQUIRE(sandbox_job_build(&job, &spec, "/work", pc) == 0);
    struct sandbox_job_head h;
    memcpy(&h, job.data, sizeof h);
    CHECK_EQ_INT(h.nargv, 2);
    CHECK(job_has(&job, "/work"));
    CHECK(job_has(&job, "train.py"));
    CHECK(job_has(&job, "TMPDIR=/tmp"));
    CHECK(job_has(&job, "PYTHONUNBUFFERED=1"));
    CHECK(job_has(&job, "OMP_NUM_THREADS=3"));
    CHECK(job_has(&job, "EXTRA=1"));
    CHECK(job_has(&job, "HOME=/elsewhere")); /* the task's declaration wins */
    CHECK(job_has(&job, "/usr/bin/python3"));
    CHECK(!job_mentions(&job, "sk-test"));
    CHECK(!job_mentions(&job, "sk-ant"));
    CHECK(!job_mentions(&job, "FOO_HOST_ONLY"));
    bool has_as = false;
    for (uint32_t i = 0; i < h.nrlimits; i++)
        has_as |= h.rlimits[i].resource == RLIMIT_AS;
    CHECK(has_as); /* no memory cgroup: the address-space limit */
    buf_free(&job);

    char *bad_key[] = {"OPENAI_API_KEY=x", NULL};
    spec.env = bad_key;
    CHECK_EQ_INT(sandbox_job_build(&job, &spec, "/work", pc), TH_EUSAGE);
    CHECK_CONTAINS(error_message(), "API keys never enter");
    char *bad_name[] = {"1BAD=x", NULL};
    spec.env = bad_name;
    CHECK_EQ_INT(sandbox_job_build(&job, &spec, "/work", pc), TH_EUSAGE);
    unsetenv("OPENAI_API_KEY");
    unsetenv("ANTHROPIC_API_KEY");
    unsetenv("OMP_NUM_THREADS");
    unsetenv("FOO_HOST_ONLY");
}

static int plan_with_bind(const char *bind)
{
    char *argv[] = {"true", NULL};
    char *binds[] = {(char *)bind, NULL};
    struct sandbox_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.argv = argv;
    spec.binds = binds;
    sandbox_limits_default(&spec.limits);
    struct sandbox_ids ids = {false, 1000, 1000, -1};
    struct sandbox_plan plan;
    int rc = sandbox_plan_build(&plan, &spec, &ids);
    if (rc == 0) {
        bool found = false;
        for (size_t i = 0; i < plan.nops; i++)
            found |= plan.ops[i].kind == PLAN_BIND_RO && !strcmp(plan.ops[i].path, "/tmp/data/x");
        if (!found)
            CHECK_FAIL("the bind is missing from the plan");
        sandbox_plan_free(&plan);
    }
    return rc;
}

static void test_plan_binds(void)
{
    char good[600];
    snprintf(good, sizeof good, "%s:/data/x", dir);
    CHECK_EQ_INT(plan_with_bind(good), 0);
    CHECK_EQ_INT(plan_with_bind("relative/path"), TH_EUSAGE);
    CHECK_EQ_INT(plan_with_bind("/nonexistent-thalamus-path"), TH_EUSAGE);
    CHECK_CONTAINS(error_message(), "cannot use");
    snprintf(good, sizeof good, "%s:/work/data", dir);
    CHECK_EQ_INT(plan_with_bind(good), TH_EUSAGE);
    CHECK_CONTAINS(error_message(), "would cover the sandbox's /work");
    snprintf(good, sizeof good, "%s:/data/../etc", dir);
    CHECK_EQ_INT(plan_with_bind(good), TH_EUSAGE);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    char lib[600];
    snprintf(lib, sizeof lib, "%s/lib", dir);
    mkdir(lib, 0755);
    RUN(test_capture_small);
    RUN(test_capture_head_and_tail);
    RUN(test_utf8_clean);
    RUN(test_traceback_python);
    RUN(test_traceback_syntax_error);
    RUN(test_traceback_other_programs);
    RUN(test_traceback_never_leaves_workdir);
    RUN(test_results);
    RUN(test_open_beneath);
    RUN(test_seccomp_filter);
    RUN(test_job_environment);
    RUN(test_plan_binds);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    return check_summary();
}
