/*
 * sandbox_check: what isolation this host offers.
 *
 * sandbox_can_isolate() answers, once per process, whether one clone()
 * with new user, pid, mount, network, ipc and uts namespaces works, and
 * when it does not, explains why and how to fix it (the sysctls that gate
 * unprivileged user namespaces, or the explicit sandbox.isolation = "none").
 * sandbox_check() probes each feature on its own for `thalamus sandbox
 * check`: every namespace, the per-sandbox uid, the seccomp filter (in a
 * forked child that installs it and checks a blocked call fails with
 * EPERM), the cgroup functions and their rlimit fallbacks, pidfd,
 * recursive read-only binds, and a test run of /bin/true. Depends on alloc,
 * buf, error, loop and the rest of sandbox/.
 */
#define _GNU_SOURCE
#include "sandbox.h"

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "loop.h"
#include "sandbox_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif

#define ALL_NAMESPACES                                                                             \
    (CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)

/* Clones a child with flags that exits at once; returns 0 or an errno. */
static int try_clone(long flags)
{
    pid_t pid = (pid_t)syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0)
        _exit(0);
    if (pid < 0)
        return errno;
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    return 0;
}

static long read_number(const char *path)
{
    FILE *f = fopen(path, "r");
    long v = -1;
    if (f) {
        if (fscanf(f, "%ld", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

char *sandbox_explain_no_isolation(int err)
{
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b, "cannot create a sandbox: this host does not allow new user namespaces (%s); ",
               strerror(err));
    long unpriv = read_number("/proc/sys/kernel/unprivileged_userns_clone");
    long max = read_number("/proc/sys/user/max_user_namespaces");
    long apparmor = read_number("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
    if (unpriv == 0)
        buf_puts(&b, "enable them with 'sysctl -w kernel.unprivileged_userns_clone=1', ");
    else if (max == 0)
        buf_puts(&b, "enable them with 'sysctl -w user.max_user_namespaces=15000', ");
    else if (apparmor == 1)
        buf_puts(&b, "AppArmor restricts them: allow them with 'sysctl -w "
                     "kernel.apparmor_restrict_unprivileged_userns=0' or an AppArmor profile "
                     "for thalamus, ");
    else
        buf_puts(&b, "in a container, allow unshare/clone of namespaces in its seccomp and "
                     "AppArmor profiles (or check user.max_user_namespaces), ");
    buf_puts(&b, "or set sandbox.isolation = \"none\" in thalamus.lua to run experiments "
                 "without isolation (not recommended: they then run with your full access)");
    return buf_detach(&b, NULL);
}

bool sandbox_can_isolate(char **problem)
{
    static int cached = -1;
    static int cached_err;
    if (cached < 0) {
        cached_err = try_clone(ALL_NAMESPACES);
        cached = cached_err == 0;
    }
    if (!cached && problem)
        *problem = sandbox_explain_no_isolation(cached_err);
    return cached == 1;
}

/* ---- the report ---- */

struct report_builder {
    struct sandbox_report *r;
    size_t cap;
};

static void add(struct report_builder *b, const char *name, bool active, char *detail)
{
    struct sandbox_report *r = b->r;
    if (r->nfeatures == b->cap)
        r->features =
            xreallocarray(r->features, b->cap = b->cap ? 2 * b->cap : 16, sizeof *r->features);
    r->features[r->nfeatures].name = name;
    r->features[r->nfeatures].active = active;
    r->features[r->nfeatures].detail = detail;
    r->nfeatures++;
}

static void add_namespace(struct report_builder *b, const char *name, long flag, const char *what)
{
    int err = try_clone(CLONE_NEWUSER | flag);
    add(b, name, err == 0, err ? xasprintf("unavailable: %s", strerror(err)) : xstrdup(what));
}

/* Installs the filter in a forked child and checks that keyctl fails with
 * EPERM while getpid still works. */
static bool seccomp_works(char **detail)
{
    struct sock_fprog prog;
    if (!sandbox_seccomp_filter(&prog)) {
        *detail = xstrdup("no filter for this architecture");
        return false;
    }
    pid_t pid = fork();
    if (pid == 0) {
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
            syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
            _exit(2);
        errno = 0;
        long r = syscall(SYS_keyctl, 0, 0, 0, 0, 0);
        _exit(r < 0 && errno == EPERM && syscall(SYS_getpid) > 0 ? 0 : 3);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0) {
        *detail = xasprintf("cannot test: %s", strerror(errno));
        return false;
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        *detail = xasprintf("%u-instruction BPF filter, blocked calls fail with EPERM",
                            (unsigned)prog.len);
        return true;
    }
    *detail = xstrdup(WIFEXITED(st) && WEXITSTATUS(st) == 2
                          ? "the kernel refuses seccomp filters"
                          : "the filter did not block a call it should");
    return false;
}

static bool mount_setattr_available(void)
{
#ifdef SYS_mount_setattr
    errno = 0;
    syscall(SYS_mount_setattr, -1, "", 0, NULL, 0);
    return errno != ENOSYS;
#else
    return false;
#endif
}

struct sandbox_report *sandbox_check(void)
{
    struct sandbox_report *r = xcalloc(1, sizeof *r);
    struct report_builder b = {r, 0};
    r->run_ms = -1;
    r->can_isolate = sandbox_can_isolate(&r->problem);

    int err = try_clone(CLONE_NEWUSER);
    bool root = sandbox_ids_root_mode();
    add(&b, "user namespace", err == 0,
        err    ? xasprintf("unavailable: %s", strerror(err))
        : root ? xasprintf("uid %d inside maps to a host uid of its own per sandbox (%u and up)",
                           SANDBOX_INNER_ID, SANDBOX_UID_BASE)
               : xasprintf("uid %d inside maps to this user's uid %lu (not root: no per-sandbox "
                           "uid)",
                           SANDBOX_INNER_ID, (unsigned long)geteuid()));
    if (err == 0) {
        add_namespace(&b, "pid namespace", CLONE_NEWPID,
                      "a sandbox sees only its own processes; its init is pid 1");
        add_namespace(&b, "mount namespace", CLONE_NEWNS,
                      "a root of its own: read-only system directories, /work, /tmp, /proc, "
                      "a minimal /dev");
        add_namespace(&b, "network namespace", CLONE_NEWNET,
                      "only a loopback of its own, unless sandbox.network = true");
        add_namespace(&b, "ipc namespace", CLONE_NEWIPC,
                      "no System V IPC or POSIX message queues shared with the host");
        add_namespace(&b, "uts namespace", CLONE_NEWUTS, "host name 'sandbox'");
        if (access("/proc/self/ns/cgroup", F_OK) == 0)
            add_namespace(&b, "cgroup namespace", CLONE_NEWCGROUP,
                          "the sandbox's own cgroup is the root it sees");
        else
            add(&b, "cgroup namespace", false, xstrdup("unavailable: the kernel has none"));
    }
    add(&b, "per-sandbox uid", root,
        root ? xstrdup("each sandbox runs as its own unprivileged host uid, so RLIMIT_NPROC "
                       "counts only its processes")
             : xasprintf("not root: sandboxes run as uid %lu; RLIMIT_NPROC counts per user "
                         "namespace on Linux 5.14 and later",
                         (unsigned long)geteuid()));
    char *detail = NULL;
    bool sc = seccomp_works(&detail);
    add(&b, "seccomp", sc, detail);

    struct sandbox_cgroup_support cs;
    sandbox_cgroup_support(&cs);
    const char *why = cs.why_not ? cs.why_not : "not delegated";
    add(&b, "cgroup memory", cs.memory != NULL,
        cs.memory ? xasprintf("%s; peak memory and out-of-memory kills are measured", cs.memory)
                  : xasprintf("%s; fallback: RLIMIT_AS (address space) of each process, a "
                              "Python MemoryError counts as oom",
                              why));
    add(&b, "cgroup pids", cs.pids != NULL,
        cs.pids ? xstrdup(cs.pids)
                : xasprintf("%s; fallback: RLIMIT_NPROC for the sandbox's uid", why));
    add(&b, "cgroup cpu accounting", cs.cpu != NULL,
        cs.cpu ? xasprintf("%s; the CPU limit counts all processes together", cs.cpu)
               : xstrdup("fallback: CPU time reported by the sandbox's init; the CPU limit is "
                         "RLIMIT_CPU per process"));
    add(&b, "cgroup kill", cs.kill != NULL,
        cs.kill ? xstrdup(cs.kill)
                : xstrdup("not needed with full isolation: killing the sandbox's init kills its "
                          "pid namespace"));
    sandbox_cgroup_support_free(&cs);

    struct loop *loop = NULL;
    bool pidfd = false;
    if (loop_new(&loop) == 0) {
        pidfd = loop_uses_pidfd(loop);
        loop_free(loop);
    }
    error_clear();
    add(&b, "pidfd", pidfd,
        xstrdup(pidfd ? "children are watched through pidfds"
                      : "children are watched through SIGCHLD"));
    bool msa = mount_setattr_available();
    add(&b, "recursive read-only binds", msa,
        xstrdup(msa ? "mount_setattr makes every bind read-only, submounts included"
                    : "fallback: remount of each bind (its submounts keep their host flags)"));

    if (r->can_isolate) {
        struct sandbox_spec spec;
        memset(&spec, 0, sizeof spec);
        char *argv[] = {"/bin/true", NULL};
        spec.argv = argv;
        sandbox_limits_default(&spec.limits);
        spec.limits.timeout_ms = 30000;
        struct sandbox_result *res = NULL;
        if (sandbox_run(&spec, &res) < 0) {
            r->run_error = xstrdup(error_message());
        } else {
            if (res->status == SANDBOX_OK)
                r->run_ms = res->wall_ms;
            else
                r->run_error =
                    xasprintf("/bin/true ended with status %s: %s",
                              sandbox_status_name(res->status), res->reason ? res->reason : "");
            sandbox_result_free(res);
        }
        error_clear();
    }
    return r;
}

void sandbox_report_free(struct sandbox_report *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nfeatures; i++)
        free(r->features[i].detail);
    free(r->features);
    free(r->problem);
    free(r->run_error);
    free(r);
}

cJSON *sandbox_report_to_json(const struct sandbox_report *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "can_isolate", r->can_isolate);
    if (r->problem)
        cJSON_AddStringToObject(o, "problem", r->problem);
    else
        cJSON_AddNullToObject(o, "problem");
    cJSON *f = cJSON_AddObjectToObject(o, "features");
    for (size_t i = 0; i < r->nfeatures; i++) {
        cJSON *x = cJSON_AddObjectToObject(f, r->features[i].name);
        cJSON_AddBoolToObject(x, "active", r->features[i].active);
        cJSON_AddStringToObject(x, "detail", r->features[i].detail);
    }
    cJSON *run = cJSON_AddObjectToObject(o, "test_run");
    cJSON_AddBoolToObject(run, "ok", r->run_ms >= 0);
    if (r->run_ms >= 0)
        cJSON_AddNumberToObject(run, "wall_ms", r->run_ms);
    else
        cJSON_AddNullToObject(run, "wall_ms");
    if (r->run_error)
        cJSON_AddStringToObject(run, "error", r->run_error);
    else
        cJSON_AddNullToObject(run, "error");
    return o;
}
