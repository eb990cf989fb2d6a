/*
 * loop_curl: libcurl's multi socket interface on the event loop (see
 * loop_curl.h).
 *
 * curl's socket callback gets one loop_io watcher per socket (a struct
 * lc_socket, attached to the socket with curl_multi_assign) whose interest
 * follows CURL_POLL_IN / OUT / INOUT and which is removed on CURL_POLL_REMOVE.
 * curl's timer callback owns at most one loop timer; it never calls curl back
 * directly (a 0 ms timeout becomes a 0 ms timer). Whenever a socket or the
 * timer is ready the loop calls curl_multi_socket_action() and then drains
 * curl_multi_info_read() for finished transfers, whose state (a struct
 * lc_transfer) rides in CURLOPT_PRIVATE. Depends on loop, alloc, error, log
 * and libcurl.
 */
#include "loop_curl.h"

#include <stdbool.h>
#include <stdlib.h>

#include "alloc.h"
#include "error.h"
#include "log.h"

struct lc_transfer {
    CURL *easy;
    loop_curl_done_cb cb;
    void *ud;
    struct lc_transfer *prev, *next;
};

struct lc_socket {
    struct loop_curl *lc;
    struct loop_io *io;
    struct lc_socket *prev, *next;
};

struct loop_curl {
    struct loop *loop;
    CURLM *multi;
    struct loop_timer *timer; /* curl's timeout, if any */
    struct lc_transfer *transfers;
    int running;
    struct lc_socket *sockets;
    bool closing;      /* tearing down: schedule no timer, assign no socket */
    bool reaping;      /* done callbacks are being called */
    bool free_pending; /* loop_curl_free() was called by a done callback */
};

static void transfer_forget(struct loop_curl *lc, struct lc_transfer *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        lc->transfers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    lc->running--;
    curl_easy_setopt(t->easy, CURLOPT_PRIVATE, NULL);
    free(t);
}

static void socket_free(struct loop_curl *lc, struct lc_socket *sock)
{
    if (sock->prev)
        sock->prev->next = sock->next;
    else
        lc->sockets = sock->next;
    if (sock->next)
        sock->next->prev = sock->prev;
    loop_io_remove(sock->io);
    free(sock);
}

static void destroy(struct loop_curl *lc)
{
    lc->closing = true;
    while (lc->transfers) {
        CURL *easy = lc->transfers->easy;
        transfer_forget(lc, lc->transfers);
        curl_multi_remove_handle(lc->multi, easy);
    }
    loop_timer_cancel(lc->timer);
    lc->timer = NULL;
    curl_multi_cleanup(lc->multi); /* may still report sockets to remove */
    while (lc->sockets)
        socket_free(lc, lc->sockets);
    free(lc);
}

/* Hands every finished transfer back to its owner. */
static void reap(struct loop_curl *lc)
{
    CURLMsg *msg;
    int left;

    lc->reaping = true;
    while (!lc->free_pending && (msg = curl_multi_info_read(lc->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        /* msg dies with curl_multi_remove_handle(): copy what it says first */
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        char *priv = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        curl_multi_remove_handle(lc->multi, easy);
        struct lc_transfer *t = (struct lc_transfer *)priv;
        if (!t)
            continue;
        loop_curl_done_cb cb = t->cb;
        void *ud = t->ud;
        transfer_forget(lc, t);
        cb(easy, result, ud);
    }
    lc->reaping = false;
    if (lc->free_pending)
        destroy(lc);
}

static void socket_action(struct loop_curl *lc, curl_socket_t fd, int flags)
{
    int running;
    CURLMcode mc = curl_multi_socket_action(lc->multi, fd, flags, &running);
    if (mc != CURLM_OK)
        log_warn("curl: %s", curl_multi_strerror(mc));
    reap(lc);
}

static void on_io(struct loop_io *io, int fd, int events, void *ud)
{
    struct lc_socket *sock = ud; /* may be freed by socket_action() */
    int flags = 0;
    (void)io;
    if (events & LOOP_READ)
        flags |= CURL_CSELECT_IN;
    if (events & LOOP_WRITE)
        flags |= CURL_CSELECT_OUT;
    if (events & LOOP_ERROR)
        flags |= CURL_CSELECT_ERR;
    socket_action(sock->lc, fd, flags);
}

static void on_timer(struct loop_timer *timer, void *ud)
{
    struct loop_curl *lc = ud;
    (void)timer;
    lc->timer = NULL; /* fired: freed by the loop once this returns */
    socket_action(lc, CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_SOCKETFUNCTION */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct loop_curl *lc = userp;
    struct lc_socket *sock = socketp;
    (void)easy;

    if (what == CURL_POLL_REMOVE) {
        if (sock) {
            if (!lc->closing)
                curl_multi_assign(lc->multi, fd, NULL);
            socket_free(lc, sock);
        }
        return 0;
    }
    int events =
        ((what & CURL_POLL_IN) ? LOOP_READ : 0) | ((what & CURL_POLL_OUT) ? LOOP_WRITE : 0);
    if (sock) {
        if (loop_io_set(sock->io, events) < 0) {
            log_warn("curl: %s", error_message());
            return -1;
        }
        return 0;
    }
    if (lc->closing)
        return 0;
    sock = xcalloc(1, sizeof *sock);
    sock->lc = lc;
    if (loop_io_add(lc->loop, &sock->io, fd, events, on_io, sock) < 0) {
        log_warn("curl: %s", error_message());
        free(sock);
        return -1;
    }
    sock->next = lc->sockets;
    if (lc->sockets)
        lc->sockets->prev = sock;
    lc->sockets = sock;
    curl_multi_assign(lc->multi, fd, sock);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: never calls curl back from here. */
static int on_timer_change(CURLM *multi, long timeout_ms, void *userp)
{
    struct loop_curl *lc = userp;
    (void)multi;
    loop_timer_cancel(lc->timer);
    lc->timer = NULL;
    if (timeout_ms >= 0 && !lc->closing)
        lc->timer = loop_timer_add(lc->loop, (uint64_t)timeout_ms, on_timer, lc);
    return 0;
}

int loop_curl_new(struct loop *loop, struct loop_curl **out)
{
    *out = NULL;
    CURLM *multi = curl_multi_init();
    if (!multi)
        return error_set("cannot create a curl multi handle");
    struct loop_curl *lc = xcalloc(1, sizeof *lc);
    lc->loop = loop;
    lc->multi = multi;
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, lc);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_timer_change);
    curl_multi_setopt(multi, CURLMOPT_TIMERDATA, lc);
    *out = lc;
    return 0;
}

int loop_curl_add(struct loop_curl *lc, CURL *easy, loop_curl_done_cb cb, void *ud)
{
    if (lc->free_pending || lc->closing)
        return error_set("cannot start transfer: the curl driver is being freed");
    struct lc_transfer *t = xcalloc(1, sizeof *t);
    t->easy = easy;
    t->cb = cb;
    t->ud = ud;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
    CURLMcode mc = curl_multi_add_handle(lc->multi, easy);
    if (mc != CURLM_OK) {
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        free(t);
        return error_set("cannot start transfer: %s", curl_multi_strerror(mc));
    }
    t->next = lc->transfers;
    if (lc->transfers)
        lc->transfers->prev = t;
    lc->transfers = t;
    lc->running++;
    return 0;
}

void loop_curl_cancel(struct loop_curl *lc, CURL *easy)
{
    for (struct lc_transfer *t = lc->transfers; t; t = t->next) {
        if (t->easy == easy) {
            transfer_forget(lc, t);
            curl_multi_remove_handle(lc->multi, easy);
            return;
        }
    }
}

int loop_curl_running(struct loop_curl *lc)
{
    return lc->running;
}

void loop_curl_free(struct loop_curl *lc)
{
    if (!lc || lc->free_pending)
        return;
    if (lc->reaping) {
        /* called from a done callback: reap() finishes the job */
        while (lc->transfers)
            loop_curl_cancel(lc, lc->transfers->easy);
        lc->free_pending = true;
        return;
    }
    destroy(lc);
}
