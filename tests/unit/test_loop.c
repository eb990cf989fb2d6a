/*
 * test_loop: unit tests of the event loop (loop.h).
 *
 * Checks timer order and cancellation (10,000 random timers included), fd
 * readiness on pipes and socketpairs, removing watchers from callbacks while
 * their events are pending, exits of 200 children reported through pidfds and
 * through the SIGCHLD fallback without reaping anyone else's children,
 * SIGINT / SIGTERM turned into shutdown callbacks, loop_run() returning when
 * nothing is left, and that the loop leaves no fd behind. Depends on loop,
 * error and the check.h harness.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "error.h"
#include "loop.h"

/* ---- helpers ---- */

static struct loop *new_loop(bool pidfd)
{
    struct loop *loop = NULL;
    if (!pidfd)
        setenv("THALAMUS_LOOP_NO_PIDFD", "1", 1);
    int rc = loop_new(&loop);
    unsetenv("THALAMUS_LOOP_NO_PIDFD");
    if (rc < 0)
        CHECK_FAIL("loop_new: %s", error_message());
    REQUIRE(loop != NULL);
    return loop;
}

static void stop_cb(struct loop_timer *timer, void *ud)
{
    (void)timer;
    loop_stop(ud);
}

/* Marks in seen[] the fds open now (below max). */
static void list_fds(bool *seen, int max)
{
    DIR *dir = opendir("/proc/self/fd");
    memset(seen, 0, (size_t)max * sizeof *seen);
    if (!dir)
        return;
    for (struct dirent *de; (de = readdir(dir));) {
        int fd = atoi(de->d_name);
        if (de->d_name[0] != '.' && fd >= 0 && fd < max)
            seen[fd] = true;
    }
    closedir(dir);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* ---- timers ---- */

struct order {
    struct loop *loop;
    uint64_t start;
    int ids[16];
    int n;
    bool early;
};

struct order_timer {
    struct order *order;
    int id;
    uint64_t ms;
};

static void order_fire(struct loop_timer *timer, void *ud)
{
    struct order_timer *ot = ud;
    struct order *o = ot->order;
    (void)timer;
    if (o->n < 16)
        o->ids[o->n++] = ot->id;
    if (loop_now(o->loop) < o->start + ot->ms)
        o->early = true;
}

static void test_timer_order(void)
{
    struct order o = {0};
    struct order_timer ts[] = {
        {&o, 1, 30}, {&o, 2, 10}, {&o, 3, 20}, {&o, 4, 5}, {&o, 5, 5}, {&o, 6, 5},
    };
    const int want[] = {4, 5, 6, 2, 3, 1};

    o.loop = new_loop(true);
    o.start = loop_now(o.loop);
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        REQUIRE(loop_timer_add(o.loop, ts[i].ms, order_fire, &ts[i]) != NULL);
    CHECK_EQ_INT(loop_run(o.loop), 0);
    CHECK_EQ_INT(o.n, 6);
    for (int i = 0; i < 6; i++)
        CHECK_EQ_INT(o.ids[i], want[i]);
    CHECK(!o.early);
    CHECK(loop_now(o.loop) >= o.start + 30);
    loop_free(o.loop);
}

static struct order_timer zero_z;

static void zero_add_z(struct loop_timer *timer, void *ud)
{
    struct order_timer *ot = ud;
    order_fire(timer, ud);
    REQUIRE(loop_timer_add(ot->order->loop, 0, order_fire, &zero_z) != NULL);
}

/* A 0 ms timer added by a timer callback waits for the next pass, behind
 * 0 ms timers that were already there. */
static void test_timer_zero(void)
{
    struct order o = {0};
    struct order_timer a = {&o, 1, 0}, b = {&o, 2, 0};
    zero_z = (struct order_timer){&o, 3, 0};

    o.loop = new_loop(true);
    o.start = loop_now(o.loop);
    loop_timer_add(o.loop, 0, zero_add_z, &a);
    loop_timer_add(o.loop, 0, order_fire, &b);
    CHECK_EQ_INT(loop_run(o.loop), 0);
    CHECK_EQ_INT(o.n, 3);
    CHECK_EQ_INT(o.ids[0], 1);
    CHECK_EQ_INT(o.ids[1], 2);
    CHECK_EQ_INT(o.ids[2], 3);
    loop_free(o.loop);
}

struct rearm_test {
    struct loop *loop;
    struct loop_io *io;
    int timer_calls, io_calls;
};

static void rearm_io(struct loop_io *io, int fd, int events, void *ud)
{
    struct rearm_test *rt = ud;
    (void)io;
    (void)fd;
    (void)events;
    rt->io_calls++;
}

static void rearm_timer(struct loop_timer *timer, void *ud)
{
    struct rearm_test *rt = ud;
    (void)timer;
    if (++rt->timer_calls < 100)
        loop_timer_add(rt->loop, 0, rearm_timer, rt);
    else
        loop_io_remove(rt->io);
}

/* A timer that keeps re-adding itself at 0 ms does not starve fd events. */
static void test_timer_zero_no_starve(void)
{
    struct rearm_test rt = {0};
    int fds[2];

    rt.loop = new_loop(true);
    REQUIRE(pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
    REQUIRE(loop_io_add(rt.loop, &rt.io, fds[1], LOOP_WRITE, rearm_io, &rt) == 0);
    loop_timer_add(rt.loop, 0, rearm_timer, &rt);
    CHECK_EQ_INT(loop_run(rt.loop), 0);
    CHECK_EQ_INT(rt.timer_calls, 100);
    CHECK(rt.io_calls >= 99); /* one per iteration */
    loop_free(rt.loop);
    close(fds[0]);
    close(fds[1]);
}

struct cancel_test {
    struct loop_timer *t[7];
    int fired[7];
};

struct cancel_arg {
    struct cancel_test *ct;
    int id;
};

static void cancel_fire(struct loop_timer *timer, void *ud)
{
    struct cancel_arg *a = ud;
    struct cancel_test *ct = a->ct;
    ct->fired[a->id]++;
    if (a->id == 1) {
        loop_timer_cancel(ct->t[3]); /* same due time, still pending */
        loop_timer_cancel(ct->t[5]); /* later */
    }
    if (a->id == 2)
        loop_timer_cancel(timer); /* self: no-op, freed after return */
}

static void test_timer_cancel(void)
{
    struct cancel_test ct = {0};
    struct cancel_arg args[7];
    const uint64_t ms[7] = {0, 10, 20, 10, 15, 50, 30};
    struct loop *loop = new_loop(true);

    for (int i = 1; i < 7; i++) {
        args[i] = (struct cancel_arg){&ct, i};
        ct.t[i] = loop_timer_add(loop, ms[i], cancel_fire, &args[i]);
    }
    loop_timer_cancel(ct.t[4]); /* before the loop runs */
    CHECK_EQ_INT(loop_run(loop), 0);
    CHECK_EQ_INT(ct.fired[1], 1);
    CHECK_EQ_INT(ct.fired[2], 1);
    CHECK_EQ_INT(ct.fired[3], 0);
    CHECK_EQ_INT(ct.fired[4], 0);
    CHECK_EQ_INT(ct.fired[5], 0);
    CHECK_EQ_INT(ct.fired[6], 1);
    loop_free(loop);
}

#define MANY 10000

struct many;

struct many_arg {
    struct many *m;
    int id;
};

struct many {
    struct loop *loop;
    uint64_t due[MANY];
    struct many_arg args[MANY];
    struct loop_timer *timers[MANY];
    int fired[MANY];
    int nfired;
    uint64_t last_due;
    int last_id;
    int order_errors, early;
};

static void many_fire(struct loop_timer *timer, void *ud)
{
    struct many_arg *a = ud;
    struct many *m = a->m;
    (void)timer;
    m->fired[a->id]++;
    m->nfired++;
    if (m->due[a->id] < m->last_due || (m->due[a->id] == m->last_due && a->id < m->last_id))
        m->order_errors++;
    if (loop_now(m->loop) < m->due[a->id])
        m->early++;
    m->last_due = m->due[a->id];
    m->last_id = a->id;
}

static void many_setup(struct loop_timer *timer, void *ud)
{
    struct many *m = ud;
    uint64_t base = loop_now(m->loop); /* what timers added now count from */
    (void)timer;
    for (int i = 0; i < MANY; i++) {
        uint64_t ms = rng() % 200;
        m->args[i] = (struct many_arg){m, i};
        m->due[i] = base + ms;
        m->timers[i] = loop_timer_add(m->loop, ms, many_fire, &m->args[i]);
    }
    for (int i = 0; i < MANY; i += 10)
        loop_timer_cancel(m->timers[i]);
    m->last_id = -1;
}

static void test_timer_many(void)
{
    struct many *m = calloc(1, sizeof *m);
    REQUIRE(m != NULL);
    m->loop = new_loop(true);
    loop_timer_add(m->loop, 0, many_setup, m);
    CHECK_EQ_INT(loop_run(m->loop), 0);
    CHECK_EQ_INT(m->nfired, MANY - MANY / 10);
    CHECK_EQ_INT(m->order_errors, 0);
    CHECK_EQ_INT(m->early, 0);
    int wrong = 0;
    for (int i = 0; i < MANY; i++)
        wrong += m->fired[i] != (i % 10 == 0 ? 0 : 1);
    CHECK_EQ_INT(wrong, 0);
    loop_free(m->loop);
    free(m);
}

/* ---- fd watchers ---- */

struct pipe_test {
    int rfd, wfd;
    struct loop_io *rio, *wio;
    int writes;
    char got[64];
    size_t got_len;
    int bad_events;
};

static void pipe_writable(struct loop_io *io, int fd, int events, void *ud)
{
    struct pipe_test *pt = ud;
    static const char *const msgs[] = {"hello", "world"};
    if (!(events & LOOP_WRITE) || fd != pt->wfd)
        pt->bad_events++;
    if (pt->writes < 2) {
        CHECK_EQ_INT(write(fd, msgs[pt->writes], 5), 5);
        pt->writes++;
    } else {
        pt->writes++; /* would mean the pause did not work */
    }
    CHECK_EQ_INT(loop_io_set(io, 0), 0);
}

static void pipe_readable(struct loop_io *io, int fd, int events, void *ud)
{
    struct pipe_test *pt = ud;
    if (!(events & LOOP_READ) || fd != pt->rfd)
        pt->bad_events++;
    ssize_t n = read(fd, pt->got + pt->got_len, sizeof pt->got - 1 - pt->got_len);
    REQUIRE(n > 0);
    pt->got_len += (size_t)n;
    pt->got[pt->got_len] = '\0';
    if (pt->got_len == 5) {
        CHECK_EQ_INT(loop_io_set(pt->wio, LOOP_WRITE), 0); /* resume the writer */
    } else if (pt->got_len == 10) {
        loop_io_remove(io);
        loop_io_remove(pt->wio);
    }
}

/* A writer paused after each write and resumed by the reader. */
static void test_io_pipe(void)
{
    struct pipe_test pt = {0};
    int fds[2];
    struct loop *loop = new_loop(true);

    REQUIRE(pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
    pt.rfd = fds[0];
    pt.wfd = fds[1];
    REQUIRE(loop_io_add(loop, &pt.rio, pt.rfd, LOOP_READ, pipe_readable, &pt) == 0);
    REQUIRE(loop_io_add(loop, &pt.wio, pt.wfd, LOOP_WRITE, pipe_writable, &pt) == 0);
    CHECK_EQ_INT(loop_run(loop), 0);
    CHECK_EQ_STR(pt.got, "helloworld");
    CHECK_EQ_INT(pt.writes, 2);
    CHECK_EQ_INT(pt.bad_events, 0);
    loop_free(loop);
    close(fds[0]);
    close(fds[1]);
}

struct sock_test {
    int a, b;
    struct loop_io *aio, *bio;
    size_t filled, drained;
    size_t drained_at_write;
    int writable_calls;
};

static void sock_a_writable(struct loop_io *io, int fd, int events, void *ud)
{
    struct sock_test *st = ud;
    (void)fd;
    CHECK(events & LOOP_WRITE);
    st->writable_calls++;
    st->drained_at_write = st->drained;
    loop_io_remove(io);
    loop_io_remove(st->bio);
}

static void sock_b_readable(struct loop_io *io, int fd, int events, void *ud)
{
    struct sock_test *st = ud;
    char buf[65536];
    ssize_t n;
    (void)io;
    CHECK(events & LOOP_READ);
    while ((n = read(fd, buf, sizeof buf)) > 0)
        st->drained += (size_t)n;
}

/* Write readiness appears only once the peer drained a full buffer. */
static void test_io_write_ready(void)
{
    struct sock_test st = {0};
    int sv[2];
    char chunk[4096];
    struct loop *loop = new_loop(true);

    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    st.a = sv[0];
    st.b = sv[1];
    memset(chunk, 'x', sizeof chunk);
    for (;;) {
        ssize_t n = write(st.a, chunk, sizeof chunk);
        if (n < 0)
            break;
        st.filled += (size_t)n;
    }
    CHECK(errno == EAGAIN);
    REQUIRE(loop_io_add(loop, &st.aio, st.a, LOOP_WRITE, sock_a_writable, &st) == 0);
    /* added paused, then enabled: loop_io_set turns interest on */
    REQUIRE(loop_io_add(loop, &st.bio, st.b, 0, sock_b_readable, &st) == 0);
    REQUIRE(loop_io_set(st.bio, LOOP_READ) == 0);
    CHECK_EQ_INT(loop_run(loop), 0);
    CHECK_EQ_INT(st.writable_calls, 1);
    CHECK(st.drained_at_write > 0);
    CHECK(st.filled > 0);
    loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

struct remove_test {
    struct loop *loop;
    int p1[2], p2[2], p3[2];
    struct loop_io *w1, *w2, *w3;
    int calls1, calls2, calls3;
};

static void remove_check_new(struct loop_timer *timer, void *ud)
{
    struct remove_test *rt = ud;
    (void)timer;
    loop_io_remove(rt->w3);
}

static void remove_readable(struct loop_io *io, int fd, int events, void *ud)
{
    struct remove_test *rt = ud;
    (void)fd;
    (void)events;
    if (io == rt->w3) {
        rt->calls3++;
        return;
    }
    struct loop_io *other = io == rt->w1 ? rt->w2 : rt->w1;
    int *other_pipe = io == rt->w1 ? rt->p2 : rt->p1;
    if (io == rt->w1)
        rt->calls1++;
    else
        rt->calls2++;
    /* The other watcher's event is pending in this very batch. */
    loop_io_remove(other);
    close(other_pipe[0]);
    close(other_pipe[1]);
    other_pipe[0] = other_pipe[1] = -1;
    /* Most likely reuses the fd numbers just closed: the stale event must not
     * reach the new watcher. */
    REQUIRE(pipe2(rt->p3, O_NONBLOCK | O_CLOEXEC) == 0);
    REQUIRE(loop_io_add(rt->loop, &rt->w3, rt->p3[0], LOOP_READ, remove_readable, rt) == 0);
    loop_timer_add(rt->loop, 20, remove_check_new, rt);
    loop_io_remove(io); /* and itself */
}

static void test_io_remove_in_callback(void)
{
    struct remove_test rt = {0};
    rt.loop = new_loop(true);
    REQUIRE(pipe2(rt.p1, O_NONBLOCK | O_CLOEXEC) == 0);
    REQUIRE(pipe2(rt.p2, O_NONBLOCK | O_CLOEXEC) == 0);
    CHECK_EQ_INT(write(rt.p1[1], "a", 1), 1);
    CHECK_EQ_INT(write(rt.p2[1], "b", 1), 1);
    REQUIRE(loop_io_add(rt.loop, &rt.w1, rt.p1[0], LOOP_READ, remove_readable, &rt) == 0);
    REQUIRE(loop_io_add(rt.loop, &rt.w2, rt.p2[0], LOOP_READ, remove_readable, &rt) == 0);
    CHECK_EQ_INT(loop_run(rt.loop), 0);
    CHECK_EQ_INT(rt.calls1 + rt.calls2, 1);
    CHECK_EQ_INT(rt.calls3, 0);
    loop_free(rt.loop);
    for (int i = 0; i < 2; i++) {
        if (rt.p1[i] >= 0)
            close(rt.p1[i]);
        if (rt.p2[i] >= 0)
            close(rt.p2[i]);
        close(rt.p3[i]);
    }
}

struct hup_test {
    int events;
    ssize_t nread;
};

static void hup_readable(struct loop_io *io, int fd, int events, void *ud)
{
    struct hup_test *ht = ud;
    char c;
    ht->events = events;
    ht->nread = read(fd, &c, 1);
    loop_io_remove(io);
}

/* A closed writer is reported as LOOP_ERROR together with LOOP_READ. */
static void test_io_hangup(void)
{
    struct hup_test ht = {0, -2};
    struct loop_io *io;
    int fds[2];
    struct loop *loop = new_loop(true);

    REQUIRE(pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
    close(fds[1]);
    REQUIRE(loop_io_add(loop, &io, fds[0], LOOP_READ, hup_readable, &ht) == 0);
    CHECK_EQ_INT(loop_run(loop), 0);
    CHECK(ht.events & LOOP_ERROR);
    CHECK(ht.events & LOOP_READ);
    CHECK_EQ_INT(ht.nread, 0);
    loop_free(loop);
    close(fds[0]);
}

/* ---- loop_run's end ---- */

static void never_io(struct loop_io *io, int fd, int events, void *ud)
{
    (void)io;
    (void)fd;
    (void)events;
    (*(int *)ud)++;
}

static void never_shutdown(struct loop *loop, int signo, int count, void *ud)
{
    (void)loop;
    (void)signo;
    (void)count;
    (void)ud;
}

static void count_timer(struct loop_timer *timer, void *ud)
{
    (void)timer;
    (*(int *)ud)++;
}

static void test_run_returns(void)
{
    struct loop *loop = new_loop(true);
    struct loop_io *io;
    int fds[2], calls = 0, fired = 0;

    CHECK_EQ_INT(loop_run(loop), 0); /* nothing at all */

    /* A paused watcher and a shutdown handler keep nothing alive. */
    REQUIRE(pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
    REQUIRE(loop_io_add(loop, &io, fds[1], LOOP_WRITE, never_io, &calls) == 0);
    REQUIRE(loop_io_set(io, 0) == 0);
    REQUIRE(loop_on_shutdown(loop, never_shutdown, NULL) == 0);
    CHECK_EQ_INT(loop_run(loop), 0);
    CHECK_EQ_INT(calls, 0);
    loop_io_remove(io);

    /* loop_stop() from a callback leaves later timers for the next run. */
    loop_timer_add(loop, 0, stop_cb, loop);
    loop_timer_add(loop, 0, count_timer, &fired);
    loop_timer_add(loop, 10, count_timer, &fired);
    CHECK_EQ_INT(loop_run(loop), 0);
    CHECK_EQ_INT(fired, 0);
    CHECK_EQ_INT(loop_run(loop), 0);
    CHECK_EQ_INT(fired, 2);

    /* loop_stop() before loop_run(): returns at once, the next run is normal. */
    loop_timer_add(loop, 0, count_timer, &fired);
    loop_stop(loop);
    CHECK_EQ_INT(loop_run(loop), 0);
    CHECK_EQ_INT(fired, 2);
    CHECK_EQ_INT(loop_run(loop), 0);
    CHECK_EQ_INT(fired, 3);

    loop_free(loop);
    close(fds[0]);
    close(fds[1]);
}

/* ---- children ---- */

#define NCHILD 200

struct kids {
    struct loop *loop;
    pid_t pids[NCHILD];
    int reports[NCHILD];
    int status[NCHILD];
    int unknown;
    pid_t s1, s2;
    struct loop_child *w2;
    int s1_status, s1_reports, s2_reports;
    pid_t s2_waited;
    int s2_status;
};

static pid_t spawn(int code, int delay_ms)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (delay_ms > 0)
            usleep((useconds_t)delay_ms * 1000);
        _exit(code);
    }
    return pid;
}

static pid_t spawn_sleeper(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        alarm(20); /* never outlive a broken test by much */
        for (;;)
            pause();
    }
    return pid;
}

static void kid_exited(struct loop_child *child, pid_t pid, int status, void *ud)
{
    struct kids *k = ud;
    (void)child;
    if (pid == k->s1) {
        k->s1_reports++;
        k->s1_status = status;
        /* Unwatch the other sleeper from this callback, then reap it here:
         * the loop must not have stolen it. */
        loop_child_unwatch(k->w2);
        kill(k->s2, SIGKILL);
        k->s2_waited = waitpid(k->s2, &k->s2_status, 0);
        return;
    }
    if (pid == k->s2) {
        k->s2_reports++;
        return;
    }
    for (int i = 0; i < NCHILD; i++) {
        if (k->pids[i] == pid) {
            k->reports[i]++;
            k->status[i] = status;
            return;
        }
    }
    k->unknown++;
}

static void kill_s1(struct loop_timer *timer, void *ud)
{
    struct kids *k = ud;
    (void)timer;
    kill(k->s1, SIGKILL);
}

enum { UNWATCHED_INDEX = 7 };

/* Static, so that the memory stays reachable in the forked children too
 * (valgrind checks them for leaks as well). */
static struct kids kids;

static void run_children(bool pidfd)
{
    struct kids *k = &kids;
    struct loop_child *w;
    int st;

    memset(k, 0, sizeof *k);
    k->loop = new_loop(pidfd);
    if (pidfd && !loop_uses_pidfd(k->loop))
        fprintf(stderr, "  note: pidfd_open unavailable, children watched through SIGCHLD\n");
    if (!pidfd)
        CHECK(!loop_uses_pidfd(k->loop));

    CHECK(loop_child_watch(k->loop, &w, 1, kid_exited, k) < 0);
    CHECK_CONTAINS(error_message(), "not a child");

    pid_t stranger = spawn(42, 0); /* exits, never watched */
    REQUIRE(stranger > 0);
    k->s1 = spawn_sleeper();
    k->s2 = spawn_sleeper();
    REQUIRE(k->s1 > 0 && k->s2 > 0);
    REQUIRE(loop_child_watch(k->loop, &w, k->s1, kid_exited, k) == 0);
    REQUIRE(loop_child_watch(k->loop, &k->w2, k->s2, kid_exited, k) == 0);
    for (int i = 0; i < NCHILD; i++) {
        k->pids[i] = spawn(i, i % 5);
        REQUIRE(k->pids[i] > 0);
        REQUIRE(loop_child_watch(k->loop, &w, k->pids[i], kid_exited, k) == 0);
        if (i == UNWATCHED_INDEX)
            loop_child_unwatch(w);
    }
    loop_timer_add(k->loop, 30, kill_s1, k);
    CHECK_EQ_INT(loop_run(k->loop), 0);

    int wrong = 0;
    for (int i = 0; i < NCHILD; i++) {
        if (i == UNWATCHED_INDEX) {
            CHECK_EQ_INT(k->reports[i], 0);
            continue;
        }
        if (k->reports[i] != 1 || !WIFEXITED(k->status[i]) || WEXITSTATUS(k->status[i]) != i)
            wrong++;
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(k->unknown, 0);
    CHECK_EQ_INT(k->s1_reports, 1);
    CHECK(WIFSIGNALED(k->s1_status) && WTERMSIG(k->s1_status) == SIGKILL);
    CHECK_EQ_INT(k->s2_reports, 0);
    CHECK_EQ_INT(k->s2_waited, k->s2);
    CHECK(WIFSIGNALED(k->s2_status) && WTERMSIG(k->s2_status) == SIGKILL);

    /* Children the loop did not watch are still there for their owner. */
    CHECK_EQ_INT(waitpid(k->pids[UNWATCHED_INDEX], &st, 0), k->pids[UNWATCHED_INDEX]);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == UNWATCHED_INDEX);
    CHECK_EQ_INT(waitpid(stranger, &st, 0), stranger);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 42);

    /* No zombie left behind. */
    errno = 0;
    CHECK_EQ_INT(waitpid(-1, &st, WNOHANG), -1);
    CHECK_EQ_INT(errno, ECHILD);
    loop_free(k->loop);
}

static void test_children_pidfd(void)
{
    run_children(true);
}

static void test_children_sigchld(void)
{
    run_children(false);
}

/* ---- signals ---- */

struct shutdown_test {
    int signos[4], counts[4];
    int n;
};

static volatile sig_atomic_t prev_handler_hits;

static void prev_handler(int signo)
{
    (void)signo;
    prev_handler_hits++;
}

static void on_shutdown(struct loop *loop, int signo, int count, void *ud)
{
    struct shutdown_test *s = ud;
    if (s->n < 4) {
        s->signos[s->n] = signo;
        s->counts[s->n] = count;
        s->n++;
    }
    if (count == 2)
        loop_stop(loop);
}

static void send_signals(struct loop_timer *timer, void *ud)
{
    (void)timer;
    (void)ud;
    raise(SIGINT);
    kill(getpid(), SIGTERM);
}

static void test_signals(void)
{
    struct shutdown_test s = {0};
    struct sigaction sa, orig_int, orig_term, now;
    struct loop *other;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = prev_handler;
    sigemptyset(&sa.sa_mask);
    REQUIRE(sigaction(SIGINT, &sa, &orig_int) == 0);
    sa.sa_handler = SIG_DFL;
    REQUIRE(sigaction(SIGTERM, &sa, &orig_term) == 0);

    struct loop *loop = new_loop(true);
    REQUIRE(loop_on_shutdown(loop, on_shutdown, &s) == 0);
    other = new_loop(true);
    CHECK(loop_on_shutdown(other, on_shutdown, &s) < 0); /* one owner at a time */
    loop_free(other);

    loop_timer_add(loop, 0, send_signals, NULL);
    loop_timer_add(loop, 5000, count_timer, &s.n); /* keeps the loop running */
    CHECK_EQ_INT(loop_run(loop), 0);
    CHECK_EQ_INT(s.n, 2);
    CHECK_EQ_INT(s.signos[0], SIGINT);
    CHECK_EQ_INT(s.counts[0], 1);
    CHECK_EQ_INT(s.signos[1], SIGTERM);
    CHECK_EQ_INT(s.counts[1], 2);
    CHECK_EQ_INT(prev_handler_hits, 0);
    loop_free(loop); /* frees the pending 5 s timer too */

    /* The previous dispositions are back. */
    REQUIRE(sigaction(SIGINT, NULL, &now) == 0);
    CHECK(now.sa_handler == prev_handler);
    REQUIRE(sigaction(SIGTERM, NULL, &now) == 0);
    CHECK(now.sa_handler == SIG_DFL);
    raise(SIGINT);
    CHECK_EQ_INT(prev_handler_hits, 1);

    /* And a new loop may own the signals. */
    loop = new_loop(true);
    CHECK_EQ_INT(loop_on_shutdown(loop, on_shutdown, &s), 0);
    loop_free(loop);

    sigaction(SIGINT, &orig_int, NULL);
    sigaction(SIGTERM, &orig_term, NULL);
}

/* ---- fds ---- */

static void fd_child_exited(struct loop_child *child, pid_t pid, int status, void *ud)
{
    (void)child;
    (void)pid;
    *(int *)ud = status;
}

static void fd_readable(struct loop_io *io, int fd, int events, void *ud)
{
    char c;
    (void)events;
    (void)ud;
    CHECK_EQ_INT(read(fd, &c, 1), 1);
    loop_io_remove(io);
}

#define MAX_FD 4096

/* Uses every feature of a loop, checks that every fd it opened is
 * close-on-exec, and that loop_free() closes them all. */
static void use_everything(bool pidfd, const bool *before)
{
    static bool during[MAX_FD];
    struct loop *loop = new_loop(pidfd);
    struct loop_io *io;
    struct loop_child *child;
    int fds[2], status = -1, sleeper_status = -1, fired = 0;

    REQUIRE(pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
    CHECK_EQ_INT(write(fds[1], "x", 1), 1);
    REQUIRE(loop_io_add(loop, &io, fds[0], LOOP_READ, fd_readable, NULL) == 0);
    REQUIRE(loop_on_shutdown(loop, never_shutdown, NULL) == 0);
    pid_t pid = spawn(3, 5);
    REQUIRE(pid > 0);
    REQUIRE(loop_child_watch(loop, &child, pid, fd_child_exited, &status) == 0);
    pid_t sleeper = spawn_sleeper();
    REQUIRE(sleeper > 0);
    REQUIRE(loop_child_watch(loop, &child, sleeper, fd_child_exited, &sleeper_status) == 0);
    loop_timer_add(loop, 1, count_timer, &fired);
    loop_timer_add(loop, 1000, count_timer, &fired); /* left pending */

    list_fds(during, MAX_FD);
    int not_cloexec = 0;
    for (int fd = 0; fd < MAX_FD; fd++)
        if (during[fd] && !before[fd] && fd != fds[0] && fd != fds[1] &&
            !(fcntl(fd, F_GETFD) & FD_CLOEXEC))
            not_cloexec++;
    CHECK_EQ_INT(not_cloexec, 0);

    loop_timer_add(loop, 100, stop_cb, loop);
    CHECK_EQ_INT(loop_run(loop), 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 3);
    loop_free(loop); /* with the sleeper still watched and a timer pending */
    kill(sleeper, SIGKILL);
    CHECK_EQ_INT(waitpid(sleeper, NULL, 0), sleeper);
    close(fds[0]);
    close(fds[1]);
}

static void test_no_fd_leak(void)
{
    static bool before[MAX_FD];
    int n_before = check_count_fds();
    REQUIRE(n_before > 0);
    list_fds(before, MAX_FD);
    use_everything(true, before);
    use_everything(false, before);
    CHECK_EQ_INT(check_count_fds(), n_before);
}

int main(void)
{
    alarm(60); /* a hung loop fails the test instead of blocking CTest */
    RUN(test_timer_order);
    RUN(test_timer_zero);
    RUN(test_timer_zero_no_starve);
    RUN(test_timer_cancel);
    RUN(test_timer_many);
    RUN(test_io_pipe);
    RUN(test_io_write_ready);
    RUN(test_io_remove_in_callback);
    RUN(test_io_hangup);
    RUN(test_run_returns);
    RUN(test_children_pidfd);
    RUN(test_children_sigchld);
    RUN(test_signals);
    RUN(test_no_fd_leak);
    return check_summary();
}
