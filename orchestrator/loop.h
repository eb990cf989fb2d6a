/*
 * loop: the single-threaded event loop everything in thalamus runs on.
 *
 * One epoll instance multiplexes file descriptors (sockets, pipes), one-shot
 * monotonic timers (a binary heap, so ten thousand pending timers cost
 * little), exits of child processes (a pidfd per child where the kernel has
 * pidfd_open, a SIGCHLD self-pipe otherwise) and SIGINT / SIGTERM, which are
 * turned into an orderly shutdown callback instead of killing the process.
 * loop_curl.h wires libcurl's multi socket interface onto it.
 *
 * Handles returned by the loop are owned by the loop: an fd watcher lives
 * until loop_io_remove(), a timer until it fires or is cancelled, a child
 * watch until the child's exit has been reported or it is unwatched. All
 * removal functions are safe to call from inside any callback.
 * Depends on alloc and error.
 */
#ifndef THALAMUS_LOOP_H
#define THALAMUS_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct loop;
struct loop_io;
struct loop_timer;
struct loop_child;

enum {
    LOOP_READ = 1 << 0,
    LOOP_WRITE = 1 << 1,
    /* Error or hang-up on the fd: reported whatever was asked, together with
     * the asked events, so that the owner reads the EOF or the error. */
    LOOP_ERROR = 1 << 2,
};

typedef void (*loop_io_cb)(struct loop_io *io, int fd, int events, void *ud);
typedef void (*loop_timer_cb)(struct loop_timer *timer, void *ud);
/* status is as returned by waitpid(): use WIFEXITED() and friends. It is -1
 * when the status was lost because something else reaped the child (another
 * waitpid() caller, or SIGCHLD set to SIG_IGN). */
typedef void (*loop_child_cb)(struct loop_child *child, pid_t pid, int status, void *ud);
/* signo is SIGINT or SIGTERM; count is how many such signals arrived so far. */
typedef void (*loop_shutdown_cb)(struct loop *loop, int signo, int count, void *ud);

/* Creates a loop. Fails (TH_ERR) only when the kernel refuses an epoll
 * instance or a pipe. Free with loop_free(). THALAMUS_LOOP_NO_PIDFD=1 in the
 * environment makes the loop watch children through SIGCHLD even where
 * pidfd_open() works (for tests). */
int loop_new(struct loop **out);

/* Releases the loop and every handle still registered on it, without calling
 * their callbacks, and restores the signal dispositions it changed. Child
 * processes are not killed or reaped. Not to be called from one of the loop's
 * callbacks. */
void loop_free(struct loop *loop);

/* Watches fd for events (LOOP_READ | LOOP_WRITE; 0 adds it paused). The loop
 * does not own or close fd: remove the watcher before closing fd. Fails
 * (TH_ERR) when epoll refuses fd, e.g. a regular file or an fd already
 * watched by this loop. */
int loop_io_add(struct loop *loop, struct loop_io **out, int fd, int events, loop_io_cb cb,
                void *ud);
/* Changes the watched events; 0 pauses the watcher without removing it. A
 * paused watcher does not keep loop_run() going. */
int loop_io_set(struct loop_io *io, int events);
/* Stops watching and frees io; an event of io still pending in the current
 * iteration is dropped. */
void loop_io_remove(struct loop_io *io);

/* Calls cb once, ms milliseconds after loop_now() (0: on the next iteration;
 * a 0 ms timer added by a timer callback never fires in the same pass).
 * Timers due at the same time fire in the order they were added. The timer is
 * freed once its callback returns. Cannot fail. */
struct loop_timer *loop_timer_add(struct loop *loop, uint64_t ms, loop_timer_cb cb, void *ud);
/* Cancels a timer that has not fired yet (calling it from the timer's own
 * callback is allowed and does nothing). */
void loop_timer_cancel(struct loop_timer *timer);

/* Reports the exit of child pid (a child of this process) and reaps it with
 * waitpid(pid): other children of the process are never reaped. Fails
 * (TH_ERR) when pid is not an unreaped child of this process, or when the
 * SIGCHLD fallback is needed and another loop owns the signal handlers. */
int loop_child_watch(struct loop *loop, struct loop_child **out, pid_t pid, loop_child_cb cb,
                     void *ud);
/* Stops watching (the child is then not reaped) and frees child. */
void loop_child_unwatch(struct loop_child *child);

/* Catches SIGINT and SIGTERM and calls cb from the loop for each one, instead
 * of letting them terminate the process. What to do (stop launching work,
 * cancel, save, exit) is the caller's decision. Calling it again replaces cb.
 * Signal handlers are process-wide: only one loop at a time may catch signals
 * (this, or the SIGCHLD fallback of loop_child_watch()); otherwise TH_ERR.
 * loop_free() restores the previous handlers. */
int loop_on_shutdown(struct loop *loop, loop_shutdown_cb cb, void *ud);

/* Monotonic milliseconds: inside callbacks, the time the current iteration
 * started (refreshed once per iteration); outside loop_run(), read afresh. */
uint64_t loop_now(struct loop *loop);

/* Runs until loop_stop() is called or nothing is left to wait for (no fd
 * watcher with events, no timer, no watched child; the shutdown handler alone
 * does not keep it going). Returns 0, or TH_ERR if waiting itself failed or
 * if called from one of the loop's callbacks. */
int loop_run(struct loop *loop);

/* Makes loop_run() return after the current callback: no further fd event or
 * timer of the iteration is dispatched (signals and child exits already read
 * from the kernel still are). Called outside loop_run(), the next loop_run()
 * returns at once. */
void loop_stop(struct loop *loop);

/* Whether children are watched through pidfds (false: SIGCHLD fallback). */
bool loop_uses_pidfd(struct loop *loop);

#endif
