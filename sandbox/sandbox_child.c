/*
 * sandbox_child: what runs in the process that clone() creates, up to the
 * exec of the program, and the init that then supervises it.
 *
 * The process is a copy of thalamus made by a raw clone() system call, so
 * whatever locks other threads of thalamus held (malloc's, say) stay held
 * forever here: this file calls no allocator, no stdio, nothing of glibc
 * that takes a lock or knows about threads (set*id() go through syscall()
 * for that reason). Everything it needs was computed in the parent
 * (sandbox_plan.c) and packed into a mapping of its own, where its job
 * arrives too: the copy has no heap (sandbox.c leaves it out).
 * The steps:
 *   1. arrange fds (0 /dev/null, 1 and 2 the output pipes, 3 the socket),
 *      close every other one, hide the copy of thalamus's command line and
 *      environment, wait until the parent has written the uid and gid maps
 *      and placed us in the cgroups;
 *   2. (full isolation) open the sources of the binds, become the inner uid
 *      keeping capabilities in the new user namespace; mount the size-capped
 *      tmpfs of /work and /tmp, then the new root's tmpfs over it, fill the
 *      root (binds, each made read-only at once, links, generated files),
 *      make the root read-only, bind the devices, /work, /tmp and a new
 *      /proc, and pivot_root into it (the old root is detached, nothing of it
 *      stays visible); bring up loopback, set the host name;
 *   3. drop every capability, set no_new_privs and the seccomp filter,
 *      report ready (with an fd of /work) and wait for the job: the program,
 *      its environment, where to run, its rlimits. A sandbox may wait here
 *      prepared, ahead of the spawn that uses it;
 *   4. set the rlimits, vfork the program (which starts a new session and
 *      execs), and become its init: reap every process, relay SIGTERM, and
 *      when the program ends kill what is left, report the program's status
 *      and the CPU time of all, and exit.
 * Depends on sandbox_internal.h and Linux.
 */
#define _GNU_SOURCE
#include "sandbox_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define FD_SOCK 3

#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#define MOUNT_ATTR_NOSUID 0x00000002
#define MOUNT_ATTR_NODEV  0x00000004
#define MOUNT_ATTR_NOEXEC 0x00000008
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef SECCOMP_FILTER_FLAG_SPEC_ALLOW
#define SECCOMP_FILTER_FLAG_SPEC_ALLOW (1UL << 2)
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT           47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

struct child_mount_attr {
    uint64_t attr_set;
    uint64_t attr_clr;
    uint64_t propagation;
    uint64_t userns_fd;
};

/* The socket to the parent: the plan's number until fds are arranged. */
static int report_fd = -1;

/* ---- small helpers that allocate nothing ---- */

static void str_append(char *dst, size_t cap, const char *s)
{
    size_t n = strlen(dst);
    while (*s && n + 1 < cap)
        dst[n++] = *s++;
    dst[n] = '\0';
}

static void send_msg(const struct sandbox_msg *m)
{
    ssize_t r;
    do
        r = send(report_fd, m, sizeof *m, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
}

/* Reports "cannot WHAT 'ARG'" with errno and exits. */
static _Noreturn void child_fail(const char *what, const char *arg)
{
    struct sandbox_msg m;
    memset(&m, 0, sizeof m);
    m.type = MSG_SETUP_ERROR;
    m.err = errno;
    str_append(m.text, sizeof m.text, what);
    if (arg) {
        str_append(m.text, sizeof m.text, " '");
        str_append(m.text, sizeof m.text, arg);
        str_append(m.text, sizeof m.text, "'");
    }
    send_msg(&m);
    _exit(125);
}

/* Waits for the parent's go-ahead byte; exits quietly when the parent is
 * gone. */
static void wait_go(void)
{
    char c = 0;
    ssize_t r;
    do
        r = recv(report_fd, &c, 1, 0);
    while (r < 0 && errno == EINTR);
    if (r != 1 || c != SANDBOX_GO)
        _exit(125);
}

static int write_all(int fd, const char *data, size_t len)
{
    while (len) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static long sys_close_range(unsigned first)
{
#ifdef SYS_close_range
    return syscall(SYS_close_range, first, ~0U, 0);
#else
    (void)first;
    errno = ENOSYS;
    return -1;
#endif
}

/* ---- step 1: fds and signals ---- */

static void reset_signals(void)
{
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &sa, NULL); /* fails harmlessly for SIGKILL, SIGSTOP, reserved ones */
}

/* 0 /dev/null, 1 and 2 the output pipes, 3 the socket; nothing else. */
static void arrange_fds(const struct sandbox_plan *p)
{
    report_fd = p->sock_fd;
    int sock = fcntl(p->sock_fd, F_DUPFD_CLOEXEC, 10);
    int out = fcntl(p->out_fd, F_DUPFD_CLOEXEC, 10);
    int err = fcntl(p->err_fd, F_DUPFD_CLOEXEC, 10);
    if (sock < 0 || out < 0 || err < 0)
        child_fail("duplicate the sandbox's fds", NULL);
    report_fd = sock;
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0)
        child_fail("open", "/dev/null");
    if (dup2(null, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0 ||
        dup3(sock, FD_SOCK, O_CLOEXEC) < 0)
        child_fail("arrange the sandbox's fds", NULL);
    report_fd = FD_SOCK;
    if (sys_close_range(FD_SOCK + 1) < 0) {
        struct rlimit rl;
        long max =
            getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536 ? (long)rl.rlim_cur : 65536;
        for (long fd = FD_SOCK + 1; fd < max; fd++)
            close((int)fd);
    }
}

/* The init is a copy of thalamus: its command line and environment (API
 * keys!) would show in /proc/1/cmdline and /proc/1/environ. Overwrites both
 * areas in place (located through /proc/self/stat, fields 48 to 51) and
 * renames the process. */
static void hide_thalamus_image(void)
{
    char buf[2048];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = '\0';
    char *s = NULL;
    for (char *p = buf; *p; p++)
        if (*p == ')')
            s = p; /* the name may hold ')' itself: the last one ends it */
    if (!s)
        return;
    unsigned long v[4] = {0, 0, 0, 0};
    int field = 2; /* the name was field 2 */
    for (s++; *s && field < 51;) {
        while (*s == ' ')
            s++;
        field++;
        unsigned long x = 0;
        while (*s >= '0' && *s <= '9')
            x = x * 10 + (unsigned long)(*s++ - '0');
        while (*s && *s != ' ')
            s++;
        if (field >= 48 && field <= 51)
            v[field - 48] = x;
    }
    if (field == 51 && v[0] && v[1] > v[0] && v[2] && v[3] > v[2]) {
        static const char name[] = "sandbox-init";
        memset((void *)v[0], 0, v[1] - v[0]);
        if (v[1] - v[0] > sizeof name)
            memcpy((void *)v[0], name, sizeof name);
        memset((void *)v[2], 0, v[3] - v[2]);
    }
    prctl(PR_SET_NAME, "sandbox-init", 0, 0, 0);
}

/* Moves this process (only) into each v1 cgroup of the sandbox. */
static void join_cgroups(const struct sandbox_plan *p)
{
    for (char **t = p->cgroup_tasks; t && *t; t++) {
        int fd = open(*t, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1)
            child_fail("join the cgroup", *t);
        close(fd);
    }
}

/* ---- step 2: the new root ---- */

/* Switches to the inner uid and gid while keeping every capability in the
 * new user namespace (the mounts below need them, and files must be
 * created by a uid the namespace maps). Raw system calls: glibc's set*id()
 * would try to signal threads this copy does not have. */
static void become_inner_ids(const struct sandbox_plan *p)
{
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        child_fail("keep capabilities", NULL);
    if (p->setgroups && syscall(SYS_setgroups, 0, NULL) < 0)
        child_fail("clear the supplementary groups", NULL);
    if (syscall(SYS_setresgid, p->inner_gid, p->inner_gid, p->inner_gid) < 0)
        child_fail("set the sandbox's gid", NULL);
    if (syscall(SYS_setresuid, p->inner_uid, p->inner_uid, p->inner_uid) < 0)
        child_fail("set the sandbox's uid", NULL);
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    if (syscall(SYS_capget, &h, d) < 0)
        child_fail("read capabilities", NULL);
    d[0].effective = d[0].permitted;
    d[1].effective = d[1].permitted;
    if (syscall(SYS_capset, &h, d) < 0)
        child_fail("raise capabilities in the user namespace", NULL);
}

static int set_mount_attr(const char *path, uint64_t attrs, bool recursive)
{
#ifdef SYS_mount_setattr
    struct child_mount_attr a = {attrs, 0, 0, 0};
    return (int)syscall(SYS_mount_setattr, AT_FDCWD, path, recursive ? AT_RECURSIVE : 0, &a,
                        sizeof a);
#else
    (void)path;
    (void)attrs;
    (void)recursive;
    errno = ENOSYS;
    return -1;
#endif
}

/* Remounts the bind at path with flags, keeping the flags the kernel locks
 * on mounts that came from a more privileged namespace (older kernels
 * without mount_setattr; only the top mount changes). */
static int remount_bind(const char *path, unsigned long flags)
{
    struct statvfs sv;
    if (statvfs(path, &sv) < 0)
        return -1;
    unsigned long keep = 0;
    if (sv.f_flag & ST_NOSUID)
        keep |= MS_NOSUID;
    if (sv.f_flag & ST_NODEV)
        keep |= MS_NODEV;
    if (sv.f_flag & ST_NOEXEC)
        keep |= MS_NOEXEC;
    if (sv.f_flag & ST_NOATIME)
        keep |= MS_NOATIME;
    if (sv.f_flag & ST_NODIRATIME)
        keep |= MS_NODIRATIME;
    if (sv.f_flag & ST_RELATIME)
        keep |= MS_RELATIME;
    if (sv.f_flag & ST_RDONLY)
        keep |= MS_RDONLY;
    return mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | flags | keep, NULL);
}

/* Opens the source of every bind while the host's tree is whole (the stage
 * tmpfs covers SANDBOX_STAGE, and sources may live there), with the
 * identity thalamus had, which the sandbox was given these paths by. */
static void open_sources(const struct sandbox_plan *p)
{
    for (size_t i = 0; i < p->nops; i++) {
        p->src_fds[i] = -1;
        if (p->ops[i].kind != PLAN_BIND_RO && p->ops[i].kind != PLAN_BIND_DEV)
            continue;
        p->src_fds[i] = open(p->ops[i].src, O_PATH | O_CLOEXEC);
        if (p->src_fds[i] < 0)
            child_fail("open the bind source", p->ops[i].src);
    }
}

/* op's path as the sandbox will see it, for messages. */
static const char *inside(const struct plan_op *op)
{
    return op->path + sizeof SANDBOX_STAGE - 1;
}

static void make_mount_point(const struct plan_op *op)
{
    if (op->src_is_dir) {
        if (mkdir(op->path, 0755) < 0 && errno != EEXIST)
            child_fail("create the mount point", inside(op));
        return;
    }
    int fd = open(op->path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        struct stat st;
        if (stat(op->path, &st) == 0)
            return; /* exists inside an earlier read-only bind */
        child_fail("create the mount point", inside(op));
    }
    close(fd);
}

static void fd_path(char *out, size_t cap, int fd);

/* Creates op in the new root; device binds only get their mount point
 * (they are bound after the root turns read-only and nodev). src is the fd
 * of a bind's source. */
static void run_op(const struct plan_op *op, int src)
{
    char from[32];
    switch (op->kind) {
    case PLAN_DIR:
        if (mkdir(op->path, 0755) < 0 && errno != EEXIST) {
            struct stat st;
            if (stat(op->path, &st) == 0 && S_ISDIR(st.st_mode))
                return;
            child_fail("create the directory", inside(op));
        }
        return;
    case PLAN_FILE: {
        int fd = open(op->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 || write_all(fd, op->data, op->len) < 0)
            child_fail("write", inside(op));
        close(fd);
        return;
    }
    case PLAN_SYMLINK:
        if (symlink(op->src, op->path) < 0)
            child_fail("create the symbolic link", inside(op));
        return;
    case PLAN_BIND_RO:
        make_mount_point(op);
        fd_path(from, sizeof from, src);
        if (mount(from, op->path, NULL, MS_BIND | MS_REC, NULL) < 0)
            child_fail("bind", op->src);
        close(src);
        /* at once: a later mount point under this bind must not be created on
         * the host's file system */
        if (set_mount_attr(op->path, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                           true) < 0 &&
            (errno != ENOSYS || remount_bind(op->path, MS_RDONLY | MS_NOSUID | MS_NODEV) < 0))
            child_fail("make read-only", inside(op));
        return;
    case PLAN_BIND_DEV:
        make_mount_point(op);
        return;
    }
}

static void bind_device(const struct plan_op *op, int src)
{
    char from[32];
    fd_path(from, sizeof from, src);
    if (mount(from, op->path, NULL, MS_BIND, NULL) < 0)
        child_fail("bind", op->src);
    close(src);
    if (set_mount_attr(op->path, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, false) < 0 &&
        (errno != ENOSYS || remount_bind(op->path, MS_NOSUID | MS_NOEXEC) < 0))
        child_fail("restrict", inside(op));
}

/* Reports ready, with fd (when >= 0) riding along. */
static void send_ready(int fd)
{
    struct sandbox_msg m;
    memset(&m, 0, sizeof m);
    m.type = MSG_READY;
    struct iovec iov = {&m, sizeof m};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (fd >= 0) {
        mh.msg_control = control.buf;
        mh.msg_controllen = sizeof control.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    ssize_t r;
    do
        r = sendmsg(report_fd, &mh, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        _exit(125);
}

/* "/proc/self/fd/N", to bind a directory known by its fd. */
static void fd_path(char *out, size_t cap, int fd)
{
    char num[16];
    int n = 0;
    do
        num[n++] = (char)('0' + fd % 10);
    while ((fd /= 10) && n < 15);
    out[0] = '\0';
    str_append(out, cap, "/proc/self/fd/");
    size_t len = strlen(out);
    while (n && len + 1 < cap)
        out[len++] = num[--n];
    out[len] = '\0';
}

static void stage_path(char *out, size_t cap, const char *inside)
{
    out[0] = '\0';
    str_append(out, cap, SANDBOX_STAGE);
    str_append(out, cap, inside);
}

/* Builds the new root at SANDBOX_STAGE and pivots into it. Returns an fd
 * of /work (the directory on the work file system). */
static int build_root(const struct sandbox_plan *p)
{
    char path[512], src[32];
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        child_fail("make the mounts private", "/");
    /* The work file system first, one tmpfs for /work and /tmp so that their
     * cap is one total; the root's tmpfs then covers it, and it stays
     * reachable through these fds only. */
    if (mount("tmpfs", SANDBOX_STAGE, "tmpfs", MS_NOSUID | MS_NODEV, p->data_opts) < 0)
        child_fail("mount the work file system on", SANDBOX_STAGE);
    stage_path(path, sizeof path, "/work");
    if (mkdir(path, 0755) < 0)
        child_fail("create the directory", path);
    int work = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (work < 0)
        child_fail("open", path);
    stage_path(path, sizeof path, "/tmp");
    if (mkdir(path, 01777) < 0 || chmod(path, 01777) < 0)
        child_fail("create the directory", path);
    int tmp = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (tmp < 0)
        child_fail("open", path);
    if (mount("tmpfs", SANDBOX_STAGE, "tmpfs", MS_NOSUID | MS_NODEV, p->root_opts) < 0)
        child_fail("mount the new root on", SANDBOX_STAGE);

    for (size_t i = 0; i < p->nops; i++)
        run_op(&p->ops[i], p->src_fds[i]);
    /* The root itself (the binds already are) becomes read-only. */
    if (mount(NULL, SANDBOX_STAGE, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
              NULL) < 0)
        child_fail("make read-only", SANDBOX_STAGE);
    for (size_t i = 0; i < p->nops; i++)
        if (p->ops[i].kind == PLAN_BIND_DEV)
            bind_device(&p->ops[i], p->src_fds[i]);
    fd_path(src, sizeof src, work);
    stage_path(path, sizeof path, "/work");
    if (mount(src, path, NULL, MS_BIND, NULL) < 0)
        child_fail("bind", path);
    fd_path(src, sizeof src, tmp);
    stage_path(path, sizeof path, "/tmp");
    if (mount(src, path, NULL, MS_BIND, NULL) < 0)
        child_fail("bind", path);
    close(tmp);
    stage_path(path, sizeof path, "/proc");
    if (mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        child_fail("mount a new /proc (the host's /proc may have masked paths, as in a "
                   "container started without --privileged) on",
                   path);

    /* pivot_root(".", ".") stacks the old root under the new one; detaching
     * it leaves nothing of the host's tree behind. */
    if (chdir(SANDBOX_STAGE) < 0)
        child_fail("change directory to", SANDBOX_STAGE);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        child_fail("pivot_root to", SANDBOX_STAGE);
    if (umount2(".", MNT_DETACH) < 0)
        child_fail("detach the host's root", NULL);
    if (chdir("/") < 0)
        child_fail("change directory to", "/");
    return work;
}

static void loopback_up(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        child_fail("create a socket to configure", "lo");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    memcpy(ifr.ifr_name, "lo", 3);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        child_fail("read the flags of", "lo");
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        child_fail("bring up", "lo");
    close(s);
}

/* ---- step 3: the job ---- */

struct job {
    struct sandbox_job_head head;
    const char *dir;
    char **argv, **envp, **paths;
};

/* Receives the job into the plan's buffer and points job's arrays into it.
 * Exits quietly when the parent is gone (a prepared sandbox never used). */
static void receive_job(const struct sandbox_plan *p, struct job *j)
{
    ssize_t n;
    do
        n = recv(report_fd, p->job_buf, SANDBOX_JOB_MAX, 0);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        _exit(125);
    if ((size_t)n < sizeof j->head) {
        errno = EPROTO;
        child_fail("read the job", NULL);
    }
    memcpy(&j->head, p->job_buf, sizeof j->head);
    const struct sandbox_job_head *h = &j->head;
    if (h->nargv == 0 || h->nargv > SANDBOX_JOB_PTRS || h->nenv > SANDBOX_JOB_PTRS ||
        h->npaths == 0 || h->npaths > SANDBOX_JOB_PTRS ||
        h->nargv + h->nenv + h->npaths + 3 > SANDBOX_JOB_PTRS ||
        h->nrlimits > sizeof h->rlimits / sizeof h->rlimits[0]) {
        errno = EPROTO;
        child_fail("read the job", NULL);
    }
    char *s = p->job_buf + sizeof j->head, *end = p->job_buf + n;
    char **ptr = p->job_ptrs;
    uint32_t counts[4] = {1, h->nargv, h->nenv, h->npaths};
    for (int part = 0; part < 4; part++) {
        if (part == 1)
            j->argv = ptr;
        else if (part == 2)
            j->envp = ptr;
        else if (part == 3)
            j->paths = ptr;
        for (uint32_t i = 0; i < counts[part]; i++) {
            char *nul = memchr(s, '\0', (size_t)(end - s));
            if (!nul) {
                errno = EPROTO;
                child_fail("read the job", NULL);
            }
            if (part == 0)
                j->dir = s;
            else
                *ptr++ = s;
            s = nul + 1;
        }
        if (part > 0)
            *ptr++ = NULL;
    }
}

static void set_limits(const struct job *j)
{
    for (uint32_t i = 0; i < j->head.nrlimits; i++)
        if (setrlimit(j->head.rlimits[i].resource, &j->head.rlimits[i].value) < 0)
            child_fail("set a resource limit", NULL);
}

/* ---- step 4: privileges, limits, the program ---- */

static void drop_privileges(const struct sandbox_plan *p)
{
    for (int cap = 0; cap <= p->cap_last; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL && p->full)
            child_fail("drop capabilities from the bounding set", NULL);
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        child_fail("set no_new_privs", NULL);
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    if (syscall(SYS_capset, &h, d) < 0)
        child_fail("drop capabilities", NULL);
    prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
    /* Not dumpable: the program (same uid) cannot read this process's memory
     * or fds through /proc/1, and this process is a copy of thalamus. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

static void install_filter(const struct sandbox_plan *p)
{
    if (p->filter.len == 0)
        return;
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_SPEC_ALLOW, &p->filter) <
            0 &&
        syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &p->filter) < 0)
        child_fail("install the seccomp filter", NULL);
}

/* Exits when the parent is already gone (its death before PR_SET_PDEATHSIG
 * would otherwise go unnoticed). */
static void check_parent_alive(void)
{
    char c;
    ssize_t r = recv(report_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r == 0)
        _exit(125);
}

/* Reports that the program cannot be run (err from execve). */
static void report_exec_error(int err, const char *program)
{
    struct sandbox_msg m;
    memset(&m, 0, sizeof m);
    m.type = MSG_EXEC_ERROR;
    m.err = err;
    str_append(m.text, sizeof m.text, program);
    send_msg(&m);
}

/* Runs in the program's process. When it shares this process's memory
 * until it execs (vfork), a failure is left in *failed for the init to
 * report; with failed NULL it reports the failure itself. Then it exits. */
static _Noreturn void exec_program(const struct job *j, volatile int *failed)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setsid();
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    int err = ENOENT;
    for (char *const *c = j->paths; *c; c++) {
        execve(*c, j->argv, j->envp);
        if (errno == EACCES)
            err = EACCES;
        else if (errno != ENOENT && errno != ENOTDIR) {
            err = errno;
            break;
        }
    }
    if (failed)
        *failed = err;
    else
        report_exec_error(err, j->argv[0]);
    _exit(err == ENOENT ? 127 : 126);
}

/* ---- init ---- */

/* Kills the processes that are our children now (isolation none, where
 * init is a subreaper outside any pid namespace). Returns how many. */
static int kill_children(void)
{
    char path[64] = "/proc/self/task/";
    char num[16];
    long tid = syscall(SYS_gettid);
    int n = 0;
    do
        num[n++] = (char)('0' + tid % 10);
    while ((tid /= 10) && n < 15);
    size_t len = strlen(path);
    while (n)
        path[len++] = num[--n];
    path[len] = '\0';
    str_append(path, sizeof path, "/children");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char buf[4096];
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r <= 0)
        return 0;
    buf[r] = '\0';
    int count = 0;
    long pid = 0;
    for (char *s = buf;; s++) {
        if (*s >= '0' && *s <= '9') {
            pid = pid * 10 + (*s - '0');
            continue;
        }
        if (pid > 0) {
            kill((pid_t)pid, SIGKILL);
            count++;
        }
        pid = 0;
        if (!*s)
            break;
    }
    return count;
}

static void kill_everything_else(const struct sandbox_plan *p, pid_t program)
{
    if (p->full) {
        kill(-1, SIGKILL); /* everything in the pid namespace but init */
    } else {
        kill(-program, SIGKILL);
        kill_children();
    }
    for (;;) {
        int st;
        pid_t r = waitpid(-1, &st, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        if (!p->full)
            kill_children(); /* orphans reparented to us meanwhile */
    }
}

static _Noreturn void init_loop(const struct sandbox_plan *p, pid_t program, const sigset_t *set)
{
    int status = 0;
    bool ended = false;
    while (!ended) {
        siginfo_t si;
        int sig = sigwaitinfo(set, &si);
        if (sig == SIGCHLD) {
            int st;
            pid_t r;
            while ((r = waitpid(-1, &st, WNOHANG)) > 0)
                if (r == program) {
                    status = st;
                    ended = true;
                }
        } else if (sig > 0) {
            /* SIGTERM, SIGINT or SIGHUP: relay to everything */
            if (p->full) {
                kill(-1, SIGTERM);
            } else {
                kill(-program, SIGTERM);
                kill(program, SIGTERM);
            }
        }
    }
    kill_everything_else(p, program);
    struct rusage ch, self;
    struct sandbox_msg m;
    memset(&m, 0, sizeof m);
    m.type = MSG_FINAL;
    m.status = status;
    if (getrusage(RUSAGE_CHILDREN, &ch) == 0 && getrusage(RUSAGE_SELF, &self) == 0) {
        m.utime_us = (int64_t)ch.ru_utime.tv_sec * 1000000 + ch.ru_utime.tv_usec +
                     (int64_t)self.ru_utime.tv_sec * 1000000 + self.ru_utime.tv_usec;
        m.stime_us = (int64_t)ch.ru_stime.tv_sec * 1000000 + ch.ru_stime.tv_usec +
                     (int64_t)self.ru_stime.tv_sec * 1000000 + self.ru_stime.tv_usec;
        m.maxrss_kib = ch.ru_maxrss;
    }
    send_msg(&m);
    _exit(0);
}

_Noreturn void sandbox_child_main(const struct sandbox_plan *p)
{
    reset_signals();
    arrange_fds(p);
    hide_thalamus_image();
    join_cgroups(p);
    wait_go(); /* maps written */
    int work = -1;
    if (p->full) {
        if (p->cgroup_ns)
            unshare(CLONE_NEWCGROUP); /* the sandbox's cgroup becomes the root it sees */
        open_sources(p);
        become_inner_ids(p);
        work = build_root(p);
        if (!p->network)
            loopback_up();
        if (sethostname("sandbox", 7) < 0)
            child_fail("set the host name", NULL);
    } else if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
        child_fail("become a subreaper", NULL);
    }
    setsid();
    /* after the last change of uid, which clears it */
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    check_parent_alive();
    drop_privileges(p);
    install_filter(p);
    send_ready(work);
    if (work >= 0)
        close(work);

    struct job j;
    receive_job(p, &j);
    if (chdir(j.dir) < 0)
        child_fail("change directory to", j.dir);
    set_limits(&j);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    /* vfork: this process is a copy of thalamus, and copying its mappings
     * again for a process that only execs cost about a millisecond per
     * experiment; the program's process only makes system calls on its
     * way to execve (or _exits), while this one waits. AddressSanitizer's
     * vfork maps shadow memory afterwards, which the address-space rlimit
     * just set (when no cgroup limits memory) refuses: a sanitized build
     * makes a copy. */
    volatile int exec_failed = 0;
#ifdef __SANITIZE_ADDRESS__
    pid_t program = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (program == 0)
        exec_program(&j, NULL);
#else
    pid_t program = vfork();
    if (program == 0)
        exec_program(&j, &exec_failed);
#endif
    if (program < 0)
        child_fail("start the program's process", NULL);
    struct sandbox_msg m;
    memset(&m, 0, sizeof m);
    m.type = MSG_STARTED;
    m.status = (int32_t)program;
    send_msg(&m);
    if (exec_failed)
        report_exec_error(exec_failed, j.argv[0]);
    /* The pipes belong to the program: their ends close when it and its
     * descendants are gone. */
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, 1);
        dup2(null, 2);
        close(null);
    }
    init_loop(p, program, &set);
}
