/*
 * loop: the epoll event loop of thalamus (see loop.h).
 *
 * Every fd the loop waits on is registered with one epoll instance whose
 * epoll_data points at a struct loop_io; the loop's own fds (its self-pipe and
 * the pidfds of watched children) use internal loop_io watchers that do not
 * keep loop_run() alive. Watchers and child watches removed while callbacks
 * are being dispatched are only marked dead and freed at the end of the
 * iteration, so a callback may remove any handle, even one whose event is
 * still pending in the same epoll_wait() batch. Timers live in a binary
 * min-heap ordered by (due time, insertion sequence), each knowing its heap
 * index so cancelling is O(log n). Children are watched with pidfd_open()
 * where the kernel has it, otherwise through a SIGCHLD handler that wakes the
 * loop through the self-pipe, after which each watched pid is polled with
 * waitpid(pid, WNOHANG) (never waitpid(-1), which would steal other
 * children). SIGINT and SIGTERM handlers write the signal number to the same
 * self-pipe. The signal handlers are process-wide, so only one loop at a time
 * may own them. Depends on alloc, error, log and Linux (epoll, pidfd_open).
 */
#define _GNU_SOURCE
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "log.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define LOOP_MAX_EVENTS 256
#define TIMER_FIRING    SIZE_MAX /* heap index of a timer whose callback runs */
#define WAKE_BYTE       0        /* self-pipe byte asking the loop to poll children */

struct loop_io {
    struct loop *loop;
    int fd;
    int events;    /* LOOP_READ | LOOP_WRITE; 0 when paused (not in epoll) */
    bool internal; /* the loop's own fd: does not keep loop_run() alive */
    bool dead;     /* removed; freed at the end of the iteration */
    loop_io_cb cb;
    void *ud;
    struct loop_io *prev, *next;
};

struct loop_timer {
    struct loop *loop;
    uint64_t due; /* monotonic ms */
    uint64_t seq; /* insertion order, breaks ties between equal due times */
    size_t index; /* position in the heap, or TIMER_FIRING */
    loop_timer_cb cb;
    void *ud;
};

struct loop_child {
    struct loop *loop;
    pid_t pid;
    int pidfd;          /* -1: watched through SIGCHLD */
    struct loop_io *io; /* internal watcher of pidfd */
    bool dead;          /* reported or unwatched; freed at the end of the iteration */
    loop_child_cb cb;
    void *ud;
    struct loop_child *prev, *next;
};

struct loop {
    int epfd;
    int pipe_rd, pipe_wr; /* self-pipe written by the signal handlers */
    bool use_pidfd;

    struct loop_io *ios;      /* every live watcher, internal ones included */
    struct loop_io *dead_ios; /* removed during dispatch, linked through next */
    int active_ios;           /* live, non-internal watchers with events != 0 */

    struct loop_timer **heap;
    size_t heap_len, heap_cap;
    uint64_t timer_seq;

    struct loop_child *children;
    int live_children;
    int dead_children; /* dead but still linked, until the end of the iteration */

    uint64_t now;
    bool dispatching; /* inside an iteration's callbacks: defer frees */
    bool running;
    bool stopped;

    bool chld_installed, shutdown_installed;
    struct sigaction old_chld, old_int, old_term;
    loop_shutdown_cb shutdown_cb;
    void *shutdown_ud;
    int shutdown_count;
};

/* The write end of the self-pipe of the loop that owns the signal handlers. */
static volatile sig_atomic_t signal_fd = -1;
static struct loop *signal_owner;

static uint64_t clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Inside an iteration the time of the iteration, outside a fresh reading. */
static uint64_t current_now(struct loop *loop)
{
    if (!loop->dispatching)
        loop->now = clock_ms();
    return loop->now;
}

static void on_signal(int signo)
{
    int saved_errno = errno;
    int fd = signal_fd;
    if (fd >= 0) {
        unsigned char byte = (unsigned char)signo;
        ssize_t n = write(fd, &byte, 1); /* a full pipe already means "wake up" */
        (void)n;
    }
    errno = saved_errno;
}

static void wake(struct loop *loop)
{
    unsigned char byte = WAKE_BYTE;
    ssize_t n = write(loop->pipe_wr, &byte, 1);
    (void)n;
}

/* ---- fd watchers ---- */

static uint32_t epoll_mask(int events)
{
    return ((events & LOOP_READ) ? EPOLLIN : 0u) | ((events & LOOP_WRITE) ? EPOLLOUT : 0u);
}

int loop_io_set(struct loop_io *io, int events)
{
    struct loop *loop = io->loop;
    events &= LOOP_READ | LOOP_WRITE;
    if (io->dead)
        return error_set("cannot change fd watcher of fd %d: it was removed", io->fd);
    if (events == io->events)
        return 0;
    struct epoll_event ev = {.events = epoll_mask(events), .data.ptr = io};
    if (events == 0) {
        /* Fails only if fd was already closed, which removed it from epoll. */
        epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, &ev);
    } else {
        int op = io->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
        if (epoll_ctl(loop->epfd, op, io->fd, &ev) < 0)
            return error_set("cannot watch fd %d: %s", io->fd, strerror(errno));
    }
    if (!io->internal)
        loop->active_ios += (events != 0) - (io->events != 0);
    io->events = events;
    return 0;
}

static int io_add(struct loop *loop, struct loop_io **out, int fd, int events, bool internal,
                  loop_io_cb cb, void *ud)
{
    struct loop_io *io = xcalloc(1, sizeof *io);
    io->loop = loop;
    io->fd = fd;
    io->internal = internal;
    io->cb = cb;
    io->ud = ud;
    *out = NULL;
    if (loop_io_set(io, events) < 0) {
        free(io);
        return TH_ERR;
    }
    io->next = loop->ios;
    if (loop->ios)
        loop->ios->prev = io;
    loop->ios = io;
    *out = io;
    return 0;
}

int loop_io_add(struct loop *loop, struct loop_io **out, int fd, int events, loop_io_cb cb,
                void *ud)
{
    return io_add(loop, out, fd, events, false, cb, ud);
}

void loop_io_remove(struct loop_io *io)
{
    if (!io || io->dead)
        return;
    struct loop *loop = io->loop;
    loop_io_set(io, 0); /* cannot fail when pausing */
    io->dead = true;
    if (io->prev)
        io->prev->next = io->next;
    else
        loop->ios = io->next;
    if (io->next)
        io->next->prev = io->prev;
    if (loop->dispatching) {
        io->prev = NULL;
        io->next = loop->dead_ios;
        loop->dead_ios = io;
    } else {
        free(io);
    }
}

static void dispatch_io(const struct epoll_event *ev)
{
    struct loop_io *io = ev->data.ptr;
    if (io->dead || io->events == 0)
        return;
    int got = 0;
    if (ev->events & EPOLLIN)
        got |= LOOP_READ;
    if (ev->events & EPOLLOUT)
        got |= LOOP_WRITE;
    if (ev->events & (EPOLLERR | EPOLLHUP))
        got |= LOOP_ERROR | io->events; /* let the owner read the EOF or the error */
    got &= io->events | LOOP_ERROR;
    if (got)
        io->cb(io, io->fd, got, io->ud);
}

/* ---- timers ---- */

static bool timer_before(const struct loop_timer *a, const struct loop_timer *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_place(struct loop *loop, size_t i, struct loop_timer *t)
{
    loop->heap[i] = t;
    t->index = i;
}

static void heap_up(struct loop *loop, size_t i)
{
    struct loop_timer *t = loop->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!timer_before(t, loop->heap[parent]))
            break;
        heap_place(loop, i, loop->heap[parent]);
        i = parent;
    }
    heap_place(loop, i, t);
}

static void heap_down(struct loop *loop, size_t i)
{
    struct loop_timer *t = loop->heap[i];
    size_t n = loop->heap_len;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n)
            break;
        if (child + 1 < n && timer_before(loop->heap[child + 1], loop->heap[child]))
            child++;
        if (!timer_before(loop->heap[child], t))
            break;
        heap_place(loop, i, loop->heap[child]);
        i = child;
    }
    heap_place(loop, i, t);
}

static void heap_remove(struct loop *loop, size_t i)
{
    struct loop_timer *last = loop->heap[--loop->heap_len];
    if (i == loop->heap_len)
        return;
    heap_place(loop, i, last);
    if (i > 0 && timer_before(last, loop->heap[(i - 1) / 2]))
        heap_up(loop, i);
    else
        heap_down(loop, i);
}

struct loop_timer *loop_timer_add(struct loop *loop, uint64_t ms, loop_timer_cb cb, void *ud)
{
    struct loop_timer *t = xmalloc(sizeof *t);
    uint64_t now = current_now(loop);
    t->loop = loop;
    t->due = ms > UINT64_MAX - now ? UINT64_MAX : now + ms;
    t->seq = loop->timer_seq++;
    t->cb = cb;
    t->ud = ud;
    if (loop->heap_len == loop->heap_cap) {
        loop->heap_cap = loop->heap_cap ? 2 * loop->heap_cap : 16;
        loop->heap = xreallocarray(loop->heap, loop->heap_cap, sizeof *loop->heap);
    }
    loop->heap[loop->heap_len++] = t;
    heap_up(loop, loop->heap_len - 1);
    return t;
}

void loop_timer_cancel(struct loop_timer *timer)
{
    if (!timer || timer->index == TIMER_FIRING)
        return;
    heap_remove(timer->loop, timer->index);
    free(timer);
}

/* Fires the timers due by loop->now that existed when the pass began, so a
 * 0 ms timer added by a timer callback waits for the next iteration. */
static void run_timers(struct loop *loop)
{
    uint64_t limit = loop->timer_seq;
    while (loop->heap_len > 0 && !loop->stopped) {
        struct loop_timer *t = loop->heap[0];
        if (t->due > loop->now || t->seq >= limit)
            break;
        heap_remove(loop, 0);
        t->index = TIMER_FIRING;
        t->cb(t, t->ud);
        free(t);
    }
}

static int next_timeout(struct loop *loop)
{
    if (loop->stopped)
        return 0;
    if (loop->heap_len == 0)
        return -1;
    uint64_t now = clock_ms();
    uint64_t due = loop->heap[0]->due;
    if (due <= now)
        return 0;
    return due - now > INT_MAX ? INT_MAX : (int)(due - now);
}

/* ---- signals ---- */

static int claim_signals(struct loop *loop)
{
    if (signal_owner && signal_owner != loop)
        return error_set("cannot catch signals: another event loop already catches them");
    signal_owner = loop;
    signal_fd = loop->pipe_wr;
    return 0;
}

static void release_signals(struct loop *loop)
{
    if (loop->shutdown_installed) {
        sigaction(SIGINT, &loop->old_int, NULL);
        sigaction(SIGTERM, &loop->old_term, NULL);
        loop->shutdown_installed = false;
    }
    if (loop->chld_installed) {
        sigaction(SIGCHLD, &loop->old_chld, NULL);
        loop->chld_installed = false;
    }
    if (signal_owner == loop) {
        signal_fd = -1;
        signal_owner = NULL;
    }
}

static int install_handler(int signo, int flags, struct sigaction *old)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART | flags;
    if (sigaction(signo, &sa, old) < 0)
        return error_set("cannot catch signal %d: %s", signo, strerror(errno));
    return 0;
}

int loop_on_shutdown(struct loop *loop, loop_shutdown_cb cb, void *ud)
{
    int rc = TH_ERR;
    loop->shutdown_cb = cb;
    loop->shutdown_ud = ud;
    if (loop->shutdown_installed)
        return 0;
    if (claim_signals(loop) < 0)
        goto cleanup;
    if (install_handler(SIGINT, 0, &loop->old_int) < 0)
        goto cleanup;
    if (install_handler(SIGTERM, 0, &loop->old_term) < 0) {
        sigaction(SIGINT, &loop->old_int, NULL);
        goto cleanup;
    }
    loop->shutdown_installed = true;
    rc = 0;
cleanup:
    if (rc < 0 && !loop->chld_installed && signal_owner == loop) {
        signal_fd = -1;
        signal_owner = NULL;
    }
    return rc;
}

static int install_sigchld(struct loop *loop)
{
    if (claim_signals(loop) < 0)
        return TH_ERR;
    if (install_handler(SIGCHLD, SA_NOCLDSTOP, &loop->old_chld) < 0) {
        if (!loop->shutdown_installed) {
            signal_fd = -1;
            signal_owner = NULL;
        }
        return TH_ERR;
    }
    loop->chld_installed = true;
    return 0;
}

/* ---- children ---- */

/* Marks child dead and stops watching it; frees it unless callbacks are being
 * dispatched, in which case the end of the iteration does. */
static void child_release(struct loop_child *child)
{
    struct loop *loop = child->loop;
    child->dead = true;
    loop->live_children--;
    if (child->io) {
        loop_io_remove(child->io);
        child->io = NULL;
    }
    if (child->pidfd >= 0) {
        close(child->pidfd);
        child->pidfd = -1;
    }
    if (loop->dispatching) {
        loop->dead_children++;
        return;
    }
    if (child->prev)
        child->prev->next = child->next;
    else
        loop->children = child->next;
    if (child->next)
        child->next->prev = child->prev;
    free(child);
}

/* Reaps child if it has exited; returns whether it was reported. */
static bool child_poll(struct loop_child *child)
{
    int status = 0;
    pid_t r;
    do
        r = waitpid(child->pid, &status, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return false;
    if (r < 0) {
        log_warn("process %d was reaped outside the event loop; its exit status is lost",
                 (int)child->pid);
        status = -1;
    }
    child_release(child);
    child->cb(child, child->pid, status, child->ud);
    return true;
}

static void on_pidfd(struct loop_io *io, int fd, int events, void *ud)
{
    (void)io;
    (void)fd;
    (void)events;
    child_poll(ud);
}

/* The SIGCHLD fallback: polls every child that has no pidfd. Children added
 * by the callbacks are at the head of the list and are not visited; their
 * own wake byte makes the loop poll them later. */
static void poll_children(struct loop *loop)
{
    for (struct loop_child *c = loop->children; c; c = c->next)
        if (!c->dead && c->pidfd < 0)
            child_poll(c);
}

static bool pidfd_available(void)
{
    static int probed = -1; /* -1 unknown, 0 no, 1 yes */
    const char *env = getenv("THALAMUS_LOOP_NO_PIDFD");
    if (env && *env && strcmp(env, "0") != 0)
        return false;
    if (probed < 0) {
        int fd = (int)syscall(SYS_pidfd_open, getpid(), 0);
        if (fd >= 0) {
            close(fd);
            probed = 1;
        } else {
            probed = errno == ENOSYS || errno == EPERM ? 0 : 1;
        }
    }
    return probed == 1;
}

int loop_child_watch(struct loop *loop, struct loop_child **out, pid_t pid, loop_child_cb cb,
                     void *ud)
{
    int rc = TH_ERR;
    int pidfd = -1;
    struct loop_child *child = NULL;
    siginfo_t info;

    *out = NULL;
    if (pid <= 0)
        return error_set("cannot watch process %d: not a process id", (int)pid);
    memset(&info, 0, sizeof info);
    if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) < 0) {
        if (errno == ECHILD)
            return error_set("cannot watch process %d: not a child of this process", (int)pid);
        return error_set("cannot watch process %d: %s", (int)pid, strerror(errno));
    }
    if (loop->use_pidfd) {
        pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (pidfd < 0 && (errno == ENOSYS || errno == EPERM)) {
            log_debug("pidfd_open unavailable (%s); watching children through SIGCHLD",
                      strerror(errno));
            loop->use_pidfd = false;
        } else if (pidfd < 0) {
            rc = error_set("cannot watch process %d: %s", (int)pid, strerror(errno));
            goto cleanup;
        }
    }
    if (pidfd < 0 && !loop->chld_installed && install_sigchld(loop) < 0)
        goto cleanup;

    child = xcalloc(1, sizeof *child);
    child->loop = loop;
    child->pid = pid;
    child->pidfd = -1;
    child->cb = cb;
    child->ud = ud;
    if (pidfd >= 0) {
        if (io_add(loop, &child->io, pidfd, LOOP_READ, true, on_pidfd, child) < 0)
            goto cleanup;
        child->pidfd = pidfd;
        pidfd = -1;
    } else {
        wake(loop); /* it may have exited before the SIGCHLD handler existed */
    }
    child->next = loop->children;
    if (loop->children)
        loop->children->prev = child;
    loop->children = child;
    loop->live_children++;
    *out = child;
    child = NULL;
    rc = 0;
cleanup:
    if (pidfd >= 0)
        close(pidfd);
    free(child);
    return rc;
}

void loop_child_unwatch(struct loop_child *child)
{
    if (child && !child->dead)
        child_release(child);
}

/* ---- the self-pipe ---- */

static void deliver_shutdown(struct loop *loop, int signo)
{
    loop->shutdown_count++;
    if (loop->shutdown_cb)
        loop->shutdown_cb(loop, signo, loop->shutdown_count, loop->shutdown_ud);
}

static void on_pipe(struct loop_io *io, int fd, int events, void *ud)
{
    struct loop *loop = ud;
    unsigned char bytes[128];
    bool poll = false;
    (void)io;
    (void)events;
    for (;;) {
        ssize_t n = read(fd, bytes, sizeof bytes);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++) {
            if (bytes[i] == SIGINT || bytes[i] == SIGTERM)
                deliver_shutdown(loop, bytes[i]);
            else
                poll = true; /* SIGCHLD or a wake byte */
        }
    }
    if (poll)
        poll_children(loop);
}

/* ---- the loop ---- */

int loop_new(struct loop **out)
{
    int rc = TH_ERR;
    int fds[2];
    struct loop_io *pipe_io;
    struct loop *loop = xcalloc(1, sizeof *loop);

    *out = NULL;
    loop->pipe_rd = loop->pipe_wr = -1;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        rc = error_set("cannot create an epoll instance: %s", strerror(errno));
        goto cleanup;
    }
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
        rc = error_set("cannot create the event loop's pipe: %s", strerror(errno));
        goto cleanup;
    }
    loop->pipe_rd = fds[0];
    loop->pipe_wr = fds[1];
    if (io_add(loop, &pipe_io, loop->pipe_rd, LOOP_READ, true, on_pipe, loop) < 0)
        goto cleanup;
    loop->use_pidfd = pidfd_available();
    loop->now = clock_ms();
    *out = loop;
    loop = NULL;
    rc = 0;
cleanup:
    loop_free(loop);
    return rc;
}

void loop_free(struct loop *loop)
{
    if (!loop)
        return;
    release_signals(loop);
    while (loop->ios) {
        struct loop_io *io = loop->ios;
        loop->ios = io->next;
        free(io);
    }
    while (loop->dead_ios) {
        struct loop_io *io = loop->dead_ios;
        loop->dead_ios = io->next;
        free(io);
    }
    while (loop->children) {
        struct loop_child *child = loop->children;
        loop->children = child->next;
        if (child->pidfd >= 0)
            close(child->pidfd);
        free(child);
    }
    for (size_t i = 0; i < loop->heap_len; i++)
        free(loop->heap[i]);
    free(loop->heap);
    if (loop->pipe_rd >= 0)
        close(loop->pipe_rd);
    if (loop->pipe_wr >= 0)
        close(loop->pipe_wr);
    if (loop->epfd >= 0)
        close(loop->epfd);
    free(loop);
}

/* Frees the handles removed during the iteration that just ended. */
static void sweep(struct loop *loop)
{
    while (loop->dead_ios) {
        struct loop_io *io = loop->dead_ios;
        loop->dead_ios = io->next;
        free(io);
    }
    if (loop->dead_children == 0)
        return;
    struct loop_child **link = &loop->children, *prev = NULL;
    while (*link) {
        struct loop_child *child = *link;
        if (child->dead) {
            *link = child->next;
            if (child->next)
                child->next->prev = prev;
            free(child);
        } else {
            prev = child;
            link = &child->next;
        }
    }
    loop->dead_children = 0;
}

static bool loop_alive(const struct loop *loop)
{
    return loop->active_ios > 0 || loop->heap_len > 0 || loop->live_children > 0;
}

int loop_run(struct loop *loop)
{
    struct epoll_event events[LOOP_MAX_EVENTS];
    int rc = 0;

    if (loop->running)
        return error_set("cannot run the event loop from one of its own callbacks");
    loop->running = true;
    while (!loop->stopped && loop_alive(loop)) {
        int n = epoll_wait(loop->epfd, events, LOOP_MAX_EVENTS, next_timeout(loop));
        if (n < 0) {
            if (errno != EINTR) {
                rc = error_set("cannot wait for events: %s", strerror(errno));
                break;
            }
            n = 0;
        }
        loop->now = clock_ms();
        loop->dispatching = true;
        for (int i = 0; i < n && !loop->stopped; i++)
            dispatch_io(&events[i]);
        run_timers(loop);
        loop->dispatching = false;
        sweep(loop);
    }
    loop->running = false;
    loop->stopped = false;
    return rc;
}

void loop_stop(struct loop *loop)
{
    loop->stopped = true;
}

uint64_t loop_now(struct loop *loop)
{
    return current_now(loop);
}

bool loop_uses_pidfd(struct loop *loop)
{
    return loop->use_pidfd;
}
