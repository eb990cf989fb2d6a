/*
 * sandbox: the parent's side of a sandboxed run (see sandbox.h).
 *
 * A run has two halves. Preparing creates the sandbox: it picks the host
 * uid (sandbox_ids.c), creates the cgroups (sandbox_cgroup.c), computes the
 * child's plan (sandbox_plan.c), clones the child into new namespaces with a
 * raw clone() (so the child is pid 1 of its pid namespace; with clone3, born
 * inside its cgroup v2 directory), writes the uid and gid maps, and waits
 * until the child (which joins any v1 cgroups itself) reports its root is
 * built, receiving an fd of its /work. Claiming gives a
 * prepared sandbox its job: the cgroup limits are written, the experiment is
 * copied into /work through the fd (sandbox_workdir.c), and the job (argv,
 * environment, rlimits) is sent; the spawn returns once the child reports
 * the program's process started. sandbox_spawn() normally does both at
 * once; with spec->prepare_next, a sandbox of the same shape is started
 * once the program runs, so that the next spawn only claims it (its child
 * sets itself up while thalamus goes on, and the claim collects its
 * report). From the start on everything is asynchronous on the loop: the
 * output pipes feed head-and-tail captures (and the live output
 * callback), the socket brings the program's final
 * status and CPU time from the sandbox's init, timers enforce the wall clock
 * (SIGTERM to init, which relays it to every process, then SIGKILL after
 * the grace period: the pid namespace dies with its init) and the CPU time,
 * and the loop's child watch reports init's end. Then the result is
 * assembled (status, times, peak memory, output, results.json, a traceback,
 * /work copied back) and handed to the callback; the cgroups are removed and
 * the uid released right after it. Depends on alloc, buf, error, log, loop,
 * fsutil and the rest of sandbox/.
 */
#define _GNU_SOURCE
#include "sandbox.h"

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "fsutil.h"
#include "log.h"
#include "loop.h"
#include "sandbox_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SETUP_TIMEOUT_MS  30000
#define CPU_POLL_MS       500
#define MAX_OUTPUT_BYTES  ((size_t)64 << 20)
#define MAX_RESULTS_BYTES ((size_t)64 << 20)
#define READS_PER_EVENT   16

enum run_state {
    RUN_RUNNING,
    RUN_STOPPING, /* SIGTERM sent, waiting for the end or the grace period */
    RUN_ENDED,
};

struct sandbox {
    struct loop *loop;
    sandbox_done_cb cb;
    void *ud;
    sandbox_output_cb on_output;
    void *output_ud;
    enum sandbox_isolation isolation;
    struct sandbox_limits limits;
    bool results_required;
    char *work_dir;   /* host directory: copy-back target, or the cwd with isolation none */
    bool own_workdir; /* isolation none without a work dir: a temporary one we remove */
    char *program;    /* argv[0], for messages */

    struct sandbox_ids ids;
    struct sandbox_cgroup *cg;
    pid_t pid;         /* the sandbox's init, as the host sees it */
    pid_t program_pid; /* the program (a host pid only with isolation none) */
    int sock, out_fd, err_fd, workfd;
    struct loop_child *child;
    struct loop_io *sock_io, *out_io, *err_io;
    struct loop_timer *wall_timer, *kill_timer, *cpu_timer;
    struct sandbox_capture out, err;
    struct timespec start;

    enum run_state state;
    const char *stop_limit; /* "wall" or "cpu" when a limit stopped the run */
    bool cancelled;
    bool have_final;
    struct sandbox_msg final;
    bool exec_failed;
    int exec_err;
    bool prepared; /* claimed from the prepared sandboxes */
};

const char *sandbox_status_name(enum sandbox_status status)
{
    static const char *const names[] = {"ok", "failed", "timeout", "oom", "killed", "invalid"};
    return (unsigned)status < sizeof names / sizeof names[0] ? names[status] : "unknown";
}

void sandbox_limits_default(struct sandbox_limits *l)
{
    memset(l, 0, sizeof *l);
    l->grace_ms = 2000;
    l->memory_mb = 2048;
    l->pids = 256;
    l->disk_mb = 1024;
    l->open_files = 1024;
    l->output_bytes = (size_t)1 << 20;
    l->results_bytes = (size_t)1 << 20;
}

static double elapsed_ms(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - since->tv_sec) * 1e3 +
           (double)(now.tv_nsec - since->tv_nsec) / 1e6;
}

/* ---- validation ---- */

static int validate(const struct sandbox_spec *spec)
{
    const struct sandbox_limits *l = &spec->limits;
    if (!spec->argv || !spec->argv[0] || !spec->argv[0][0])
        return error_setc(TH_EUSAGE, "the sandbox needs a command to run");
    if (spec->work_dir && !fs_is_dir(spec->work_dir))
        return error_setc(TH_EUSAGE, "the work directory '%s' %s", spec->work_dir,
                          fs_exists(spec->work_dir) ? "is not a directory" : "does not exist");
    if (l->memory_mb < 0 || l->pids < 0 || l->cpu_seconds < 0 || l->file_mb < 0 ||
        l->open_files < 0 || l->disk_mb < 0)
        return error_setc(TH_EUSAGE, "sandbox limits cannot be negative");
    if (spec->isolation == SANDBOX_ISOLATION_FULL && l->disk_mb == 0)
        return error_setc(TH_EUSAGE, "the sandbox's disk cap must be at least 1 MiB");
    if (l->open_files > 0 && l->open_files < 16)
        return error_setc(TH_EUSAGE, "the sandbox's open-file limit must be at least 16");
    if (l->output_bytes < 2 || l->output_bytes > MAX_OUTPUT_BYTES)
        return error_setc(TH_EUSAGE, "the sandbox's output cap must be between 2 bytes and %zu MiB",
                          MAX_OUTPUT_BYTES >> 20);
    if (l->results_bytes < 1 || l->results_bytes > MAX_RESULTS_BYTES)
        return error_setc(TH_EUSAGE, "the results.json cap must be between 1 byte and %zu MiB",
                          MAX_RESULTS_BYTES >> 20);
    return 0;
}

/* ---- the set-up handshake ---- */

/* Receives one message (and an fd riding along, when fd is not NULL) before
 * the set-up deadline. Returns 1, 0 on EOF, or -1 with errno (ETIMEDOUT). */
static int recv_msg(int sock, struct sandbox_msg *m, int *fd, const struct timespec *start)
{
    for (;;) {
        double left = SETUP_TIMEOUT_MS - elapsed_ms(start);
        if (left <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd pfd = {sock, POLLIN, 0};
        int r = poll(&pfd, 1, (int)left + 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            continue;
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } control;
        struct iovec iov = {m, sizeof *m};
        struct msghdr mh;
        memset(&mh, 0, sizeof mh);
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = control.buf;
        mh.msg_controllen = sizeof control.buf;
        ssize_t n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                int got;
                memcpy(&got, CMSG_DATA(c), sizeof got);
                if (fd && *fd < 0)
                    *fd = got;
                else
                    close(got);
            }
        if ((size_t)n != sizeof *m) {
            errno = EPROTO;
            return -1;
        }
        m->text[sizeof m->text - 1] = '\0';
        return 1;
    }
}

static int write_proc_file(pid_t pid, const char *name, const char *text)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/%s", (long)pid, name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return error_set("cannot open '%s': %s", path, strerror(errno));
    ssize_t n = write(fd, text, strlen(text));
    int saved = errno;
    close(fd);
    if (n != (ssize_t)strlen(text))
        return error_set("cannot write the sandbox's %s: %s", name, strerror(saved));
    return 0;
}

static int write_id_maps(pid_t pid, const struct sandbox_ids *ids)
{
    char line[64];
    if (!ids->root_mode && write_proc_file(pid, "setgroups", "deny") < 0)
        return TH_ERR;
    snprintf(line, sizeof line, "%u %lu 1\n", SANDBOX_INNER_ID, (unsigned long)ids->host_uid);
    if (write_proc_file(pid, "uid_map", line) < 0)
        return TH_ERR;
    snprintf(line, sizeof line, "%u %lu 1\n", SANDBOX_INNER_ID, (unsigned long)ids->host_gid);
    return write_proc_file(pid, "gid_map", line);
}

static void handle_msg(struct sandbox *sb, const struct sandbox_msg *m);

/* Waits for the message of type want; a set-up error, EOF or the deadline
 * fail with a message. Other messages go to sb's run when sb is given: the
 * program's own report that it cannot be run may come before the init's
 * report that it started it (when the program's process is a copy of the
 * init's, not a vfork). */
static int await_msg(int sock, int want, struct sandbox_msg *m, int *fd,
                     const struct timespec *start, struct sandbox *sb)
{
    for (;;) {
        int r = recv_msg(sock, m, fd, start);
        if (r == 0)
            return error_set("cannot set up the sandbox: its first process ended during the "
                             "set-up");
        if (r < 0)
            return error_set("cannot set up the sandbox: %s", strerror(errno));
        if (m->type == MSG_SETUP_ERROR)
            return error_set("cannot set up the sandbox: cannot %s: %s", m->text, strerror(m->err));
        if (m->type == want)
            return 0;
        if (sb)
            handle_msg(sb, m);
    }
}

/* Kills and reaps a child that is not watched by a loop. */
static void abandon_child(pid_t pid)
{
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* ---- cgroups made ahead and removed late ---- */

/* Making a sandbox's cgroups (a directory per controller, then the limits)
 * and removing them after its end cost about half a millisecond per
 * sandbox, between one experiment's end and the next one's start. So the
 * cgroups of an ended sandbox are set aside (retired) and removed, and a
 * spare set is made for the next sandbox, once a spawn has started its
 * program (cgroups_tidy()); sandbox_run() and sandbox_release_prepared()
 * tidy up before they return. */
#define MAX_RETIRED 8
static struct sandbox_cgroup *spare_cg;
static long spare_memory_mb, spare_pids; /* the limits written on spare_cg */
static bool spare_failed;                /* no cgroups here: stop trying */
static struct sandbox_cgroup *retired[MAX_RETIRED];
static size_t nretired;

static void cgroups_retire(struct sandbox_cgroup *cg)
{
    if (!cg)
        return;
    if (nretired == MAX_RETIRED)
        sandbox_cgroup_destroy(retired[--nretired]);
    retired[nretired++] = cg;
}

static void cgroups_tidy(const struct sandbox_spec *spec);

/* Removes the retired cgroups and the spare. */
static void cgroups_drop(void)
{
    cgroups_tidy(NULL);
    sandbox_cgroup_destroy(spare_cg);
    spare_cg = NULL;
}

static pid_t cgroups_owner;

/* At exit, in the process that made them (not in a copy of it). */
static void cgroups_at_exit(void)
{
    if (getpid() == cgroups_owner)
        cgroups_drop();
}

/* Removes the retired cgroups; with spec, makes a spare set with its
 * limits unless there is one. */
static void cgroups_tidy(const struct sandbox_spec *spec)
{
    while (nretired)
        sandbox_cgroup_destroy(retired[--nretired]);
    if (!spec || spare_cg || spare_failed)
        return;
    struct sandbox_cgroup *cg = NULL;
    if (sandbox_cgroup_create(&cg) < 0 || !cg ||
        sandbox_cgroup_set_limits(cg, spec->limits.memory_mb, spec->limits.pids) < 0) {
        /* the spawn that needs cgroups says what is wrong */
        error_clear();
        sandbox_cgroup_destroy(cg);
        spare_failed = true;
        return;
    }
    spare_cg = cg;
    spare_memory_mb = spec->limits.memory_mb;
    spare_pids = spec->limits.pids;
    if (cgroups_owner != getpid()) {
        cgroups_owner = getpid();
        atexit(cgroups_at_exit);
    }
}

/* ---- prepared sandboxes ---- */

/* A sandbox whose child waits for its job. */
struct prepared {
    pid_t pid;
    bool ready;            /* its MSG_READY was received */
    struct timespec start; /* of the set-up */
    int sock, out_fd, err_fd, workfd;
    struct sandbox_ids ids;
    struct sandbox_cgroup *cg;
    long memory_mb, pids; /* the cgroup limits written; -1: none yet */
    char *shape;          /* what makes two sandboxes interchangeable (shape_key()) */
};

#define MAX_PREPARED 4
static struct prepared *pool[MAX_PREPARED];
static size_t npool;

static void prepared_free(struct prepared *pr)
{
    if (!pr)
        return;
    if (pr->pid > 0)
        abandon_child(pr->pid);
    close_fd(&pr->sock);
    close_fd(&pr->out_fd);
    close_fd(&pr->err_fd);
    close_fd(&pr->workfd);
    sandbox_cgroup_destroy(pr->cg);
    sandbox_ids_release(&pr->ids);
    free(pr->shape);
    free(pr);
}

static char *shape_key(const struct sandbox_spec *spec)
{
    /* without isolation only the cgroup limits differ, and a claim writes them */
    if (spec->isolation == SANDBOX_ISOLATION_NONE)
        return xstrdup("none");
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b, "full net=%d disk=%ld", spec->network ? 1 : 0, spec->limits.disk_mb);
    for (char *const *x = spec->binds; x && *x; x++)
        buf_printf(&b, "\n%s", *x);
    return buf_detach(&b, NULL);
}

static long clone_flags(const struct sandbox_spec *spec)
{
    long flags = SIGCHLD;
    if (spec->isolation == SANDBOX_ISOLATION_FULL) {
        flags |= CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS;
        if (!spec->network)
            flags |= CLONE_NEWNET;
    }
    return flags;
}

struct clone3_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
        set_tid_size, cgroup;
};

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

/* clone(), fork-like (the child returns 0 on a copy of this stack). With
 * cgfd >= 0 it tries clone3 to create the child inside that cgroup, and
 * sets *in_cgroup when that worked. */
static pid_t clone_child(long flags, int cgfd, bool *in_cgroup)
{
    *in_cgroup = false;
#ifdef SYS_clone3
    static bool clone3_works = true;
    if (cgfd >= 0 && clone3_works) {
        struct clone3_args a;
        memset(&a, 0, sizeof a);
        a.flags = (uint64_t)(flags & ~0xffL) | CLONE_INTO_CGROUP;
        a.exit_signal = (uint64_t)(flags & 0xff);
        a.cgroup = (uint64_t)cgfd;
        long pid = syscall(SYS_clone3, &a, sizeof a);
        if (pid >= 0) {
            *in_cgroup = pid > 0;
            return (pid_t)pid;
        }
        if (errno == ENOSYS || errno == E2BIG || errno == EINVAL || errno == EOPNOTSUPP)
            clone3_works = false; /* an old kernel: use clone and move the child */
        else
            return -1;
    }
#else
    (void)cgfd;
#endif
    return (pid_t)syscall(SYS_clone, flags, 0, 0, 0, 0);
}

/* Leaves thalamus's heap out of (or, with false, back in) the processes it
 * clones. A sandbox's first process reads only its packed plan (outside the
 * heap, sandbox_plan_pack()), and its copy of a heap of megabytes would cost
 * twice: the clone copies the heap's page tables, and while that process
 * lives, thalamus takes a copy-on-write fault on each heap page it writes
 * (hundreds per experiment). Only the clone of a sandbox leaves it out:
 * other forks may run code (fork handlers) that reads the heap. Returns
 * whether it tried: then it must be called again with false, even when it
 * failed (a heap that another thread shrank meanwhile is left out in
 * part). */
static bool heap_left_out(bool out)
{
    static uintptr_t start;
    static bool looked;
    if (!looked) {
        looked = true;
        FILE *f = fopen("/proc/self/maps", "re");
        char line[512];
        unsigned long a, b;
        while (f && fgets(line, sizeof line, f))
            if (strstr(line, "[heap]") && sscanf(line, "%lx-%lx", &a, &b) == 2) {
                start = a;
                break;
            }
        if (f)
            fclose(f);
    }
    uintptr_t end = (uintptr_t)sbrk(0);
    if (!start || end <= start)
        return false;
    madvise((void *)start, end - start, out ? MADV_DONTFORK : MADV_DOFORK);
    return true;
}

/* Starts creating a sandbox of spec's shape: the child is cloned and told
 * to go on, and builds its root while the caller does something else;
 * prepare_finish() waits until it is ready for its job. */
static int prepare_start(const struct sandbox_spec *spec, struct prepared **out)
{
    struct sandbox_plan plan, packed;
    void *region = NULL;
    size_t region_size = 0;
    bool have_plan = false;
    int sv[2] = {-1, -1}, outp[2] = {-1, -1}, errp[2] = {-1, -1};
    int rc = 0;
    struct prepared *pr = xcalloc(1, sizeof *pr);
    pr->sock = pr->out_fd = pr->err_fd = pr->workfd = -1;
    pr->ids.slot = -1;
    pr->memory_mb = pr->pids = -1;
    clock_gettime(CLOCK_MONOTONIC, &pr->start);
    *out = NULL;

    pr->shape = shape_key(spec);
    if (spec->isolation == SANDBOX_ISOLATION_FULL) {
        if ((rc = sandbox_ids_acquire(&pr->ids)) < 0)
            goto fail;
    } else {
        pr->ids.host_uid = geteuid();
        pr->ids.host_gid = getegid();
    }
    bool limits_set = false;
    if (spare_cg) {
        pr->cg = spare_cg;
        spare_cg = NULL;
        limits_set = spare_memory_mb == spec->limits.memory_mb && spare_pids == spec->limits.pids;
    } else if (sandbox_cgroup_create(&pr->cg) < 0) {
        log_warn("%s; running without a cgroup (rlimits only)", error_message());
        pr->cg = NULL;
    }
    if (pr->cg) {
        if (!limits_set &&
            (rc = sandbox_cgroup_set_limits(pr->cg, spec->limits.memory_mb, spec->limits.pids)) < 0)
            goto fail;
        pr->memory_mb = spec->limits.memory_mb;
        pr->pids = spec->limits.pids;
    }
    if ((rc = sandbox_plan_build(&plan, spec, &pr->ids)) < 0)
        goto fail;
    have_plan = true;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0 ||
        pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
        rc = error_set("cannot create the sandbox's pipes: %s", strerror(errno));
        goto fail;
    }
    plan.sock_fd = sv[1];
    plan.out_fd = outp[1];
    plan.err_fd = errp[1];
    plan.cgroup_tasks = sandbox_cgroup_v1_tasks(pr->cg);
    if ((rc = sandbox_plan_pack(&plan, &packed, &region, &region_size)) < 0)
        goto fail;
    int cgfd = sandbox_cgroup_v2_fd(pr->cg);
    bool in_v2 = false;
    /* the child starts with every signal blocked: none of thalamus's
     * handlers runs in it (its heap is not there) */
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    bool heap_out = heap_left_out(true);
    pid_t pid = clone_child(clone_flags(spec), cgfd, &in_v2);
    if (pid == 0)
        sandbox_child_main(&packed);
    int clone_errno = errno;
    if (heap_out)
        heap_left_out(false);
    sigprocmask(SIG_SETMASK, &old, NULL);
    errno = clone_errno;
    munmap(region, region_size); /* the child has its own copy */
    region = NULL;
    if (cgfd >= 0)
        close(cgfd);
    if (pid < 0) {
        int err = errno;
        if (spec->isolation == SANDBOX_ISOLATION_FULL &&
            (err == EPERM || err == EINVAL || err == ENOSPC || err == EUSERS || err == EACCES)) {
            char *why = sandbox_explain_no_isolation(err);
            rc = error_set("%s", why);
            free(why);
        } else {
            rc = error_set("cannot create the sandbox's processes: %s", strerror(err));
        }
        goto fail;
    }
    pr->pid = pid;
    close_fd(&sv[1]);
    close_fd(&outp[1]);
    close_fd(&errp[1]);
    pr->sock = sv[0];
    pr->out_fd = outp[0];
    pr->err_fd = errp[0];
    sv[0] = outp[0] = errp[0] = -1;

    if (spec->isolation == SANDBOX_ISOLATION_FULL && (rc = write_id_maps(pid, &pr->ids)) < 0)
        goto fail;
    if (pr->cg && !in_v2 && (rc = sandbox_cgroup_attach_v2(pr->cg, pid)) < 0)
        goto fail;
    char go = SANDBOX_GO;
    if (send(pr->sock, &go, 1, MSG_NOSIGNAL) != 1) {
        rc = error_set("cannot set up the sandbox: its first process ended during the set-up");
        goto fail;
    }
    sandbox_plan_free(&plan); /* the child has its own copy */
    *out = pr;
    return 0;
fail:
    for (int i = 0; i < 2; i++) {
        close_fd(&sv[i]);
        close_fd(&outp[i]);
        close_fd(&errp[i]);
    }
    if (have_plan)
        sandbox_plan_free(&plan);
    if (region)
        munmap(region, region_size);
    prepared_free(pr);
    return rc;
}

/* Waits until the child of pr reports its root is built (with an fd of
 * /work when full); on failure pr is freed. */
static int prepare_finish(struct prepared *pr, bool full)
{
    struct sandbox_msg m;
    int rc = await_msg(pr->sock, MSG_READY, &m, &pr->workfd, &pr->start, NULL);
    if (rc == 0 && full && pr->workfd < 0)
        rc = error_set("cannot set up the sandbox: no /work received");
    if (rc < 0) {
        prepared_free(pr);
        return rc;
    }
    pr->ready = true;
    return 0;
}

/* Creates a sandbox of spec's shape, up to where it waits for its job. */
static int prepare(const struct sandbox_spec *spec, struct prepared **out)
{
    int rc = prepare_start(spec, out);
    if (rc == 0 && (rc = prepare_finish(*out, spec->isolation == SANDBOX_ISOLATION_FULL)) < 0)
        *out = NULL;
    return rc;
}

/* A prepared sandbox of spec's shape from the pool, or NULL. */
static struct prepared *pool_take(const struct sandbox_spec *spec)
{
    if (npool == 0)
        return NULL;
    char *shape = shape_key(spec);
    struct prepared *found = NULL;
    for (size_t i = 0; i < npool && !found; i++) {
        if (strcmp(pool[i]->shape, shape))
            continue;
        found = pool[i];
        pool[i] = pool[--npool];
    }
    free(shape);
    if (found && waitpid(found->pid, NULL, WNOHANG) != 0) {
        found->pid = -1; /* died while waiting (or was reaped): set it aside */
        prepared_free(found);
        found = NULL;
    }
    if (found && !found->ready) {
        /* usually ready long ago: its message waits in the socket */
        clock_gettime(CLOCK_MONOTONIC, &found->start);
        if (prepare_finish(found, spec->isolation == SANDBOX_ISOLATION_FULL) < 0) {
            log_debug("a prepared sandbox failed: %s", error_message());
            error_clear();
            found = NULL;
        }
    }
    return found;
}

/* Starts preparing a sandbox of spec's shape (with spec's cgroup limits,
 * likely those of the next run) unless one is in the pool. Its child sets
 * itself up while thalamus goes on; pool_take() collects its report. */
static void pool_fill(const struct sandbox_spec *spec)
{
    if (npool == MAX_PREPARED)
        return;
    char *shape = shape_key(spec);
    bool have = false;
    for (size_t i = 0; i < npool; i++)
        have |= !strcmp(pool[i]->shape, shape);
    free(shape);
    struct prepared *pr;
    if (have)
        return;
    if (prepare_start(spec, &pr) < 0) {
        log_debug("cannot prepare the next sandbox: %s", error_message());
        error_clear();
        return;
    }
    pool[npool++] = pr;
}

void sandbox_release_prepared(void)
{
    while (npool)
        prepared_free(pool[--npool]);
    cgroups_drop();
    spare_failed = false;
}

/* ---- ending a run ---- */

static void kill_now(struct sandbox *sb)
{
    if (sb->isolation == SANDBOX_ISOLATION_NONE) {
        if (sb->program_pid > 0)
            kill(-sb->program_pid, SIGKILL);
        sandbox_cgroup_kill(sb->cg);
    }
    kill(sb->pid, SIGKILL);
}

static void on_kill_timer(struct loop_timer *t, void *ud)
{
    struct sandbox *sb = ud;
    (void)t;
    sb->kill_timer = NULL;
    log_debug("sandbox %ld: grace period over, killing it", (long)sb->pid);
    kill_now(sb);
}

/* SIGTERM to everything in the sandbox (init relays it), SIGKILL after the
 * grace period. */
static void stop_run(struct sandbox *sb, const char *limit)
{
    if (sb->state != RUN_RUNNING)
        return;
    sb->state = RUN_STOPPING;
    sb->stop_limit = limit;
    if (!limit)
        sb->cancelled = true;
    if (sb->cpu_timer) {
        loop_timer_cancel(sb->cpu_timer);
        sb->cpu_timer = NULL;
    }
    kill(sb->pid, SIGTERM);
    if (sb->limits.grace_ms == 0)
        kill_now(sb);
    else
        sb->kill_timer = loop_timer_add(sb->loop, sb->limits.grace_ms, on_kill_timer, sb);
}

void sandbox_cancel(struct sandbox *sb)
{
    if (sb)
        stop_run(sb, NULL);
}

static void on_wall_timer(struct loop_timer *t, void *ud)
{
    struct sandbox *sb = ud;
    (void)t;
    sb->wall_timer = NULL;
    log_debug("sandbox %ld: wall-clock limit reached", (long)sb->pid);
    stop_run(sb, "wall");
}

static void on_cpu_timer(struct loop_timer *t, void *ud)
{
    struct sandbox *sb = ud;
    (void)t;
    sb->cpu_timer = NULL;
    struct sandbox_cgroup_stats st;
    sandbox_cgroup_stats(sb->cg, &st);
    if (st.has_cpu && st.cpu_ns >= (uint64_t)sb->limits.cpu_seconds * 1000000000u) {
        log_debug("sandbox %ld: CPU-time limit reached", (long)sb->pid);
        stop_run(sb, "cpu");
        return;
    }
    sb->cpu_timer = loop_timer_add(sb->loop, CPU_POLL_MS, on_cpu_timer, sb);
}

/* ---- reading ---- */

static void handle_msg(struct sandbox *sb, const struct sandbox_msg *m)
{
    switch (m->type) {
    case MSG_EXEC_ERROR:
        sb->exec_failed = true;
        sb->exec_err = m->err;
        break;
    case MSG_FINAL:
        sb->have_final = true;
        sb->final = *m;
        break;
    default:
        break;
    }
}

/* Reads what the socket holds; returns false at EOF. */
static bool read_socket(struct sandbox *sb)
{
    for (;;) {
        struct sandbox_msg m;
        ssize_t n = recv(sb->sock, &m, sizeof m, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN;
        if (n == 0)
            return false;
        if ((size_t)n == sizeof m)
            handle_msg(sb, &m);
    }
}

static void on_socket(struct loop_io *io, int fd, int events, void *ud)
{
    struct sandbox *sb = ud;
    (void)fd;
    (void)events;
    if (!read_socket(sb)) {
        loop_io_remove(io);
        sb->sock_io = NULL;
    }
}

/* Reads up to limit chunks of a pipe; returns false at EOF or error. */
static bool read_pipe(struct sandbox *sb, enum sandbox_stream stream, int limit)
{
    int fd = stream == SANDBOX_STDOUT ? sb->out_fd : sb->err_fd;
    struct sandbox_capture *c = stream == SANDBOX_STDOUT ? &sb->out : &sb->err;
    char chunk[65536];
    for (int i = 0; limit < 0 || i < limit; i++) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN;
        if (n == 0)
            return false;
        sandbox_capture_add(c, chunk, (size_t)n);
        if (sb->on_output)
            sb->on_output(stream, chunk, (size_t)n, sb->output_ud);
    }
    return true;
}

static void on_pipe(struct loop_io *io, int fd, int events, void *ud)
{
    struct sandbox *sb = ud;
    (void)events;
    enum sandbox_stream stream = fd == sb->out_fd ? SANDBOX_STDOUT : SANDBOX_STDERR;
    if (!read_pipe(sb, stream, READS_PER_EVENT)) {
        loop_io_remove(io);
        if (stream == SANDBOX_STDOUT)
            sb->out_io = NULL;
        else
            sb->err_io = NULL;
    }
}

/* ---- the result ---- */

static const char *signal_name(int sig)
{
    static char other[16];
    switch (sig) {
    case SIGHUP:
        return "SIGHUP";
    case SIGINT:
        return "SIGINT";
    case SIGQUIT:
        return "SIGQUIT";
    case SIGILL:
        return "SIGILL";
    case SIGTRAP:
        return "SIGTRAP";
    case SIGABRT:
        return "SIGABRT";
    case SIGBUS:
        return "SIGBUS";
    case SIGFPE:
        return "SIGFPE";
    case SIGKILL:
        return "SIGKILL";
    case SIGUSR1:
        return "SIGUSR1";
    case SIGSEGV:
        return "SIGSEGV";
    case SIGUSR2:
        return "SIGUSR2";
    case SIGPIPE:
        return "SIGPIPE";
    case SIGALRM:
        return "SIGALRM";
    case SIGTERM:
        return "SIGTERM";
    case SIGXCPU:
        return "SIGXCPU";
    case SIGXFSZ:
        return "SIGXFSZ";
    case SIGSYS:
        return "SIGSYS";
    default:
        snprintf(other, sizeof other, "signal %d", sig);
        return other;
    }
}

static bool is_outside_kill(int sig)
{
    return sig == SIGKILL || sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT;
}

/* Decides status, reason and limit of r from what the run reported. */
static void decide_status(struct sandbox *sb, struct sandbox_result *r,
                          const struct sandbox_cgroup_stats *st, int init_status)
{
    const struct sandbox_limits *l = &sb->limits;
    int ws = sb->final.status;
    r->exit_code = -1;
    if (sb->have_final && WIFEXITED(ws))
        r->exit_code = WEXITSTATUS(ws);
    if (sb->have_final && WIFSIGNALED(ws))
        r->signal = WTERMSIG(ws);
    else if (!sb->have_final && init_status != -1 && WIFSIGNALED(init_status))
        r->signal = WTERMSIG(init_status); /* everything died with the sandbox's init */
    bool oom = st->has_memory && st->oom_kills > 0;
    bool cpu_used_up = l->cpu_seconds > 0 && r->cpu_ms >= (double)l->cpu_seconds * 1000 - 50;

    if (sb->exec_failed) {
        r->status = SANDBOX_FAILED;
        r->reason = xasprintf("cannot run '%s': %s", sb->program, strerror(sb->exec_err));
    } else if (sb->stop_limit && !strcmp(sb->stop_limit, "wall")) {
        r->status = SANDBOX_TIMEOUT;
        r->limit = "wall";
        r->reason =
            xasprintf("the wall-clock limit of %.3g s was reached", (double)l->timeout_ms / 1000);
    } else if ((sb->stop_limit && !strcmp(sb->stop_limit, "cpu")) ||
               (sb->have_final && WIFSIGNALED(ws) &&
                (r->signal == SIGXCPU || (r->signal == SIGKILL && cpu_used_up && !oom)))) {
        r->status = SANDBOX_TIMEOUT;
        r->limit = "cpu";
        r->reason = xasprintf("the CPU-time limit of %ld s was reached", l->cpu_seconds);
    } else if (sb->cancelled) {
        r->status = SANDBOX_KILLED;
        r->reason = xstrdup("cancelled");
    } else if (!sb->have_final) {
        r->status = SANDBOX_KILLED;
        r->reason = init_status != -1 && WIFSIGNALED(init_status)
                        ? xasprintf("the sandbox's init was killed by %s",
                                    signal_name(WTERMSIG(init_status)))
                        : xstrdup("the sandbox's init ended without a report");
    } else if (oom && r->exit_code != 0) {
        r->status = SANDBOX_OOM;
        r->limit = "memory";
        r->reason = xasprintf("the memory limit of %ld MiB was reached (%llu process%s killed "
                              "by the out-of-memory killer)",
                              l->memory_mb, (unsigned long long)st->oom_kills,
                              st->oom_kills == 1 ? "" : "es");
    } else if (r->signal) {
        if (r->signal == SIGXFSZ) {
            r->status = SANDBOX_FAILED;
            r->reason = xasprintf("killed by SIGXFSZ: a file grew past the limit of %ld MiB",
                                  l->file_mb > 0 ? l->file_mb : l->disk_mb);
        } else {
            r->status = is_outside_kill(r->signal) ? SANDBOX_KILLED : SANDBOX_FAILED;
            r->reason = xasprintf("killed by %s", signal_name(r->signal));
        }
    } else if (r->exit_code != 0) {
        bool memory_error = r->traceback && r->traceback->python && r->traceback->type &&
                            !strcmp(r->traceback->type, "MemoryError");
        if (memory_error && l->memory_mb > 0 && !sandbox_cgroup_limits_memory(sb->cg)) {
            r->status = SANDBOX_OOM;
            r->limit = "memory";
            r->reason = xasprintf("the memory limit of %ld MiB was reached (MemoryError under "
                                  "the address-space limit)",
                                  l->memory_mb);
        } else {
            r->status = SANDBOX_FAILED;
            r->reason = xasprintf("exited with status %d", r->exit_code);
        }
    } else if (r->results_error && (strcmp(r->results_error, "missing") || sb->results_required)) {
        r->status = SANDBOX_INVALID;
        r->reason = !strcmp(r->results_error, "missing")
                        ? xstrdup("the program did not write results.json")
                        : xstrdup(r->results_error);
    } else {
        r->status = SANDBOX_OK;
    }
    if ((r->status == SANDBOX_FAILED || r->status == SANDBOX_TIMEOUT) && r->pids_limit_hit) {
        char *more = xasprintf("%s; the process limit of %ld was reached", r->reason, l->pids);
        free(r->reason);
        r->reason = more;
    }
}

static void drain(struct sandbox *sb)
{
    if (sb->sock >= 0)
        read_socket(sb);
    if (sb->out_fd >= 0)
        read_pipe(sb, SANDBOX_STDOUT, -1);
    if (sb->err_fd >= 0)
        read_pipe(sb, SANDBOX_STDERR, -1);
}

static void release(struct sandbox *sb)
{
    loop_io_remove(sb->sock_io);
    loop_io_remove(sb->out_io);
    loop_io_remove(sb->err_io);
    sb->sock_io = sb->out_io = sb->err_io = NULL;
    loop_timer_cancel(sb->wall_timer);
    loop_timer_cancel(sb->kill_timer);
    loop_timer_cancel(sb->cpu_timer);
    sb->wall_timer = sb->kill_timer = sb->cpu_timer = NULL;
    close_fd(&sb->sock);
    close_fd(&sb->out_fd);
    close_fd(&sb->err_fd);
    close_fd(&sb->workfd);
    cgroups_retire(sb->cg); /* removed once the next sandbox runs */
    sb->cg = NULL;
    sandbox_ids_release(&sb->ids);
    sandbox_capture_free(&sb->out);
    sandbox_capture_free(&sb->err);
    free(sb->work_dir);
    free(sb->program);
    free(sb);
}

static void on_child_exit(struct loop_child *child, pid_t pid, int status, void *ud)
{
    struct sandbox *sb = ud;
    (void)child;
    (void)pid;
    sb->child = NULL;
    sb->state = RUN_ENDED;
    struct sandbox_result *r = xcalloc(1, sizeof *r);
    r->wall_ms = elapsed_ms(&sb->start);
    if (sb->isolation == SANDBOX_ISOLATION_NONE)
        sandbox_cgroup_kill(sb->cg); /* stragglers outside any pid namespace */
    drain(sb);

    struct sandbox_cgroup_stats st;
    sandbox_cgroup_stats(sb->cg, &st);
    r->isolation = sb->isolation;
    r->uid = sb->ids.host_uid;
    r->prepared = sb->prepared;
    if (st.has_cpu) {
        r->cpu_ms = (double)st.cpu_ns / 1e6;
        r->cpu_exact = true;
    } else if (sb->have_final) {
        r->cpu_ms = (double)(sb->final.utime_us + sb->final.stime_us) / 1e3;
        r->cpu_exact = !sb->stop_limit && !sb->cancelled;
    }
    if (st.has_memory && st.peak_bytes) {
        r->peak_memory_bytes = st.peak_bytes;
        r->memory_from_cgroup = true;
    } else if (sb->have_final) {
        r->peak_memory_bytes = (uint64_t)sb->final.maxrss_kib * 1024;
    }
    r->pids_limit_hit = st.has_pids && st.pids_max_hits > 0;
    sandbox_capture_finish(&sb->out, &r->out);
    sandbox_capture_finish(&sb->err, &r->err);
    sandbox_results_read(sb->workfd, sb->limits.results_bytes, &r->results, &r->results_error);
    const char *prefix = sb->isolation == SANDBOX_ISOLATION_FULL ? "/work" : sb->work_dir;
    r->traceback = sandbox_traceback_parse(r->err.text, sb->workfd, prefix);
    decide_status(sb, r, &st, status);
    if (r->status == SANDBOX_OK) {
        sandbox_traceback_free(r->traceback);
        r->traceback = NULL;
    } else if (!r->traceback) {
        r->traceback = xcalloc(1, sizeof *r->traceback);
    }
    if (sb->isolation == SANDBOX_ISOLATION_FULL && sb->work_dir && sb->workfd >= 0 &&
        sandbox_workdir_copy_out(sb->workfd, sb->work_dir) < 0) {
        r->work_error = xstrdup(error_message());
        log_warn("%s", r->work_error);
    }
    if (sb->own_workdir && sb->work_dir && sandbox_workdir_remove(sb->work_dir) < 0)
        log_warn("%s", error_message());
    log_debug("sandbox %ld ended: %s%s%s, wall %.1f ms, cpu %.1f ms", (long)sb->pid,
              sandbox_status_name(r->status), r->reason ? ": " : "", r->reason ? r->reason : "",
              r->wall_ms, r->cpu_ms);

    /* Every process of the sandbox is gone: the cgroups are removed and the
     * uid released right after the callback (release()), which need not
     * wait for that bookkeeping. */
    sandbox_done_cb cb = sb->cb;
    void *cb_ud = sb->ud;
    cb(sb, r, cb_ud);
    release(sb);
}

/* ---- spawning ---- */

/* Gives the prepared sandbox pr its job; on failure pr's child is killed. */
static int claim(struct sandbox *sb, struct prepared *pr, const struct sandbox_spec *spec)
{
    struct buf job;
    struct sandbox_msg m;
    int rc;
    sb->pid = pr->pid;
    sb->sock = pr->sock;
    sb->out_fd = pr->out_fd;
    sb->err_fd = pr->err_fd;
    sb->workfd = pr->workfd;
    sb->ids = pr->ids;
    sb->cg = pr->cg;
    bool limits_set = pr->memory_mb == spec->limits.memory_mb && pr->pids == spec->limits.pids;
    pr->pid = -1;
    pr->sock = pr->out_fd = pr->err_fd = pr->workfd = -1;
    pr->ids.slot = -1;
    pr->cg = NULL;
    prepared_free(pr);

    if (sb->isolation == SANDBOX_ISOLATION_NONE) {
        sb->workfd = open(sb->work_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (sb->workfd < 0)
            return error_set("cannot open the work directory '%s': %s", sb->work_dir,
                             strerror(errno));
    }
    if (sb->cg && !limits_set &&
        (rc = sandbox_cgroup_set_limits(sb->cg, spec->limits.memory_mb, spec->limits.pids)) < 0)
        return rc;
    if (sb->isolation == SANDBOX_ISOLATION_FULL && sb->work_dir &&
        (rc = sandbox_workdir_copy_in(sb->work_dir, sb->workfd, &sb->ids)) < 0)
        return rc;
    struct plan_cgroup pc = {sandbox_cgroup_limits_memory(sb->cg),
                             sandbox_cgroup_limits_pids(sb->cg)};
    const char *dir = sb->isolation == SANDBOX_ISOLATION_FULL ? "/work" : sb->work_dir;
    if ((rc = sandbox_job_build(&job, spec, dir, pc)) < 0)
        return rc;
    ssize_t n = send(sb->sock, job.data, job.len, MSG_NOSIGNAL);
    int err = errno;
    buf_free(&job);
    if (n < 0)
        return error_set("cannot start the sandboxed program: %s", strerror(err));
    if ((rc = await_msg(sb->sock, MSG_STARTED, &m, NULL, &sb->start, sb)) < 0)
        return rc;
    sb->program_pid = (pid_t)m.status;
    return 0;
}

int sandbox_spawn(struct loop *loop, const struct sandbox_spec *spec, sandbox_done_cb cb, void *ud,
                  struct sandbox **out)
{
    int rc = validate(spec);
    if (out)
        *out = NULL;
    if (rc < 0)
        return rc;
    /* once per process: a run spawns hundreds of sandboxes */
    static bool warned_none;
    if (spec->isolation == SANDBOX_ISOLATION_NONE && !warned_none) {
        warned_none = true;
        log_warn("sandbox isolation is \"none\": '%s' runs with this user's full access to the "
                 "host (only the clean environment, rlimits, cgroup limits and the seccomp "
                 "filter apply)",
                 spec->argv[0]);
    }

    struct sandbox *sb = xcalloc(1, sizeof *sb);
    clock_gettime(CLOCK_MONOTONIC, &sb->start);
    sb->loop = loop;
    sb->cb = cb;
    sb->ud = ud;
    sb->on_output = spec->on_output;
    sb->output_ud = spec->output_ud;
    sb->isolation = spec->isolation;
    sb->limits = spec->limits;
    sb->results_required = spec->results_required;
    sb->program = xstrdup(spec->argv[0]);
    sb->pid = -1;
    sb->sock = sb->out_fd = sb->err_fd = sb->workfd = -1;
    sb->ids.slot = -1;
    sandbox_capture_init(&sb->out, spec->limits.output_bytes);
    sandbox_capture_init(&sb->err, spec->limits.output_bytes);
    if (spec->work_dir) {
        sb->work_dir = realpath(spec->work_dir, NULL);
        if (!sb->work_dir) {
            rc = error_set("cannot resolve the work directory '%s': %s", spec->work_dir,
                           strerror(errno));
            goto fail;
        }
    } else if (spec->isolation == SANDBOX_ISOLATION_NONE) {
        char tmpl[] = "/tmp/thalamus-work-XXXXXX";
        if (!mkdtemp(tmpl)) {
            rc = error_set("cannot create a work directory: %s", strerror(errno));
            goto fail;
        }
        sb->work_dir = xstrdup(tmpl);
        sb->own_workdir = true;
    }
    struct prepared *pr = pool_take(spec);
    bool warm = pr != NULL;
    sb->prepared = warm;
    /* Without isolation the job needs nothing from the ready report (no
     * /work to fill): it is sent at once, and the child finds it waiting
     * once it is ready (claim() waits for MSG_STARTED, passing MSG_READY). */
    if (!pr && spec->isolation == SANDBOX_ISOLATION_NONE)
        rc = prepare_start(spec, &pr);
    else if (!pr)
        rc = prepare(spec, &pr);
    if (rc < 0)
        goto fail;
    if ((rc = claim(sb, pr, spec)) < 0)
        goto fail_child;
    fcntl(sb->sock, F_SETFL, O_NONBLOCK);
    fcntl(sb->out_fd, F_SETFL, O_NONBLOCK);
    fcntl(sb->err_fd, F_SETFL, O_NONBLOCK);
    if ((rc = loop_child_watch(loop, &sb->child, sb->pid, on_child_exit, sb)) < 0)
        goto fail_child;
    if (loop_io_add(loop, &sb->sock_io, sb->sock, LOOP_READ, on_socket, sb) < 0 ||
        loop_io_add(loop, &sb->out_io, sb->out_fd, LOOP_READ, on_pipe, sb) < 0 ||
        loop_io_add(loop, &sb->err_io, sb->err_fd, LOOP_READ, on_pipe, sb) < 0) {
        rc = TH_ERR;
        loop_child_unwatch(sb->child);
        sb->child = NULL;
        goto fail_child;
    }
    if (spec->limits.timeout_ms > 0)
        sb->wall_timer = loop_timer_add(loop, spec->limits.timeout_ms, on_wall_timer, sb);
    if (spec->limits.cpu_seconds > 0 && sandbox_cgroup_counts_cpu(sb->cg))
        sb->cpu_timer = loop_timer_add(loop, CPU_POLL_MS, on_cpu_timer, sb);
    log_debug("sandbox %ld started '%s' as uid %lu (%s isolation, %s) in %.2f ms", (long)sb->pid,
              spec->argv[0], (unsigned long)sb->ids.host_uid,
              spec->isolation == SANDBOX_ISOLATION_FULL ? "full" : "no",
              warm ? "prepared ahead" : "set up now", elapsed_ms(&sb->start));
    /* while the program runs: the next sandbox of this shape, then the
     * cgroups (the spare one may have gone to that sandbox) */
    if (spec->prepare_next)
        pool_fill(spec);
    cgroups_tidy(spec);
    if (out)
        *out = sb;
    return 0;

fail_child:
    if (sb->pid > 0)
        abandon_child(sb->pid);
fail:
    if (sb->own_workdir && sb->work_dir) {
        char *msg = xstrdup(error_message());
        sandbox_workdir_remove(sb->work_dir);
        error_setc(rc, "%s", msg);
        free(msg);
    }
    release(sb);
    return rc;
}

/* ---- the synchronous wrapper ---- */

struct run_state_sync {
    struct sandbox *sb;
    struct sandbox_result *result;
};

static void on_sync_done(struct sandbox *sb, struct sandbox_result *result, void *ud)
{
    struct run_state_sync *s = ud;
    (void)sb;
    s->result = result;
    s->sb = NULL;
}

static void on_sync_shutdown(struct loop *loop, int signo, int count, void *ud)
{
    struct run_state_sync *s = ud;
    (void)loop;
    log_warn("%s: stopping the sandboxed program", signo == SIGINT ? "interrupted" : "terminated");
    if (count > 1 && s->sb)
        kill_now(s->sb);
    else if (s->sb)
        sandbox_cancel(s->sb);
}

int sandbox_run(const struct sandbox_spec *spec, struct sandbox_result **out)
{
    struct loop *loop = NULL;
    struct run_state_sync s = {NULL, NULL};
    *out = NULL;
    int rc = loop_new(&loop);
    if (rc < 0)
        return rc;
    if ((rc = loop_on_shutdown(loop, on_sync_shutdown, &s)) < 0)
        goto cleanup;
    if ((rc = sandbox_spawn(loop, spec, on_sync_done, &s, &s.sb)) < 0)
        goto cleanup;
    if ((rc = loop_run(loop)) < 0) {
        if (s.sb) {
            kill_now(s.sb);
            loop_run(loop);
        }
        goto cleanup;
    }
    *out = s.result;
    s.result = NULL;
cleanup:
    sandbox_result_free(s.result);
    loop_free(loop);
    cgroups_drop();
    return rc;
}

/* ---- results ---- */

void sandbox_result_free(struct sandbox_result *r)
{
    if (!r)
        return;
    free(r->reason);
    free(r->out.text);
    free(r->err.text);
    cJSON_Delete(r->results);
    free(r->results_error);
    sandbox_traceback_free(r->traceback);
    free(r->work_error);
    free(r);
}

static void add_output(cJSON *o, const char *name, const struct sandbox_output *out)
{
    cJSON *j = cJSON_AddObjectToObject(o, name);
    char *clean = sandbox_utf8_clean(out->text ? out->text : "", out->len);
    cJSON_AddStringToObject(j, "text", clean);
    free(clean);
    cJSON_AddNumberToObject(j, "bytes", (double)out->total);
    cJSON_AddBoolToObject(j, "truncated", out->truncated);
}

cJSON *sandbox_result_to_json(const struct sandbox_result *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", sandbox_status_name(r->status));
    if (r->reason)
        cJSON_AddStringToObject(o, "reason", r->reason);
    else
        cJSON_AddNullToObject(o, "reason");
    cJSON_AddStringToObject(o, "isolation",
                            r->isolation == SANDBOX_ISOLATION_FULL ? "full" : "none");
    if (r->exit_code >= 0)
        cJSON_AddNumberToObject(o, "exit_code", r->exit_code);
    else
        cJSON_AddNullToObject(o, "exit_code");
    if (r->signal) {
        cJSON_AddNumberToObject(o, "signal", r->signal);
        cJSON_AddStringToObject(o, "signal_name", signal_name(r->signal));
    } else {
        cJSON_AddNullToObject(o, "signal");
        cJSON_AddNullToObject(o, "signal_name");
    }
    if (r->limit)
        cJSON_AddStringToObject(o, "limit", r->limit);
    else
        cJSON_AddNullToObject(o, "limit");
    cJSON_AddNumberToObject(o, "wall_ms", r->wall_ms);
    cJSON_AddNumberToObject(o, "cpu_ms", r->cpu_ms);
    cJSON_AddBoolToObject(o, "cpu_exact", r->cpu_exact);
    cJSON_AddNumberToObject(o, "peak_memory_bytes", (double)r->peak_memory_bytes);
    cJSON_AddStringToObject(o, "peak_memory_source",
                            r->memory_from_cgroup ? "cgroup" : "largest process");
    cJSON_AddBoolToObject(o, "pids_limit_hit", r->pids_limit_hit);
    cJSON_AddNumberToObject(o, "uid", (double)r->uid);
    cJSON_AddBoolToObject(o, "prepared", r->prepared);
    add_output(o, "stdout", &r->out);
    add_output(o, "stderr", &r->err);
    if (r->results)
        cJSON_AddItemToObject(o, "results", cJSON_Duplicate(r->results, 1));
    else
        cJSON_AddNullToObject(o, "results");
    if (r->results_error)
        cJSON_AddStringToObject(o, "results_error", r->results_error);
    else
        cJSON_AddNullToObject(o, "results_error");
    if (r->traceback)
        cJSON_AddItemToObject(o, "traceback", sandbox_traceback_to_json(r->traceback));
    else
        cJSON_AddNullToObject(o, "traceback");
    if (r->work_error)
        cJSON_AddStringToObject(o, "work_error", r->work_error);
    else
        cJSON_AddNullToObject(o, "work_error");
    return o;
}
