/*
 * test_loop_curl: unit tests of libcurl on the event loop (loop_curl.h).
 *
 * Real HTTP over loopback on one thread: the test runs a tiny HTTP/1.1
 * server on 127.0.0.1 whose listening and client sockets are watched by the
 * same loop that drives curl. Checks one GET, 50 concurrent GETs, a refused
 * connection, cancelling a transfer in flight, and freeing the driver with
 * transfers in flight (from outside and from a done callback). Depends on
 * loop, loop_curl, buf, error, libcurl and the check.h harness.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "check.h"
#include "error.h"
#include "loop.h"
#include "loop_curl.h"

/* ---- the test server ---- */

#define BODY_PREFIX "hello from "

struct server;

struct conn {
    struct server *srv;
    int fd;
    struct loop_io *io;
    struct buf in, out;
    size_t out_off;
    struct conn *prev, *next;
};

struct server {
    struct loop *loop;
    int lfd;
    int port;
    struct loop_io *lio;
    struct conn *conns;
    int accepted, served;
};

static void conn_close(struct conn *c)
{
    struct server *srv = c->srv;
    loop_io_remove(c->io);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

/* Answers "GET /path" with "hello from /path". */
static void conn_respond(struct conn *c)
{
    char path[256] = "?";
    sscanf(buf_str(&c->in), "GET %255s", path);
    size_t body_len = strlen(BODY_PREFIX) + strlen(path);
    buf_printf(&c->out,
               "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
               "Connection: close\r\n\r\n" BODY_PREFIX "%s",
               body_len, path);
    loop_io_set(c->io, LOOP_WRITE);
}

static void conn_ready(struct loop_io *io, int fd, int events, void *ud)
{
    struct conn *c = ud;
    (void)io;
    if (c->out.len == 0) {
        char chunk[1024];
        for (;;) {
            ssize_t n = read(fd, chunk, sizeof chunk);
            if (n < 0 && errno == EAGAIN)
                return;
            if (n <= 0 || buf_append(&c->in, chunk, (size_t)n) < 0) {
                conn_close(c);
                return;
            }
            if (strstr(buf_str(&c->in), "\r\n\r\n")) {
                conn_respond(c);
                return;
            }
        }
    }
    if (events & (LOOP_WRITE | LOOP_ERROR)) {
        ssize_t n = write(fd, c->out.data + c->out_off, c->out.len - c->out_off);
        if (n < 0 && errno == EAGAIN)
            return;
        if (n > 0)
            c->out_off += (size_t)n;
        if (n <= 0 || c->out_off == c->out.len) {
            c->srv->served += n > 0;
            conn_close(c);
        }
    }
}

static void server_accept(struct loop_io *io, int fd, int events, void *ud)
{
    struct server *srv = ud;
    (void)io;
    (void)events;
    for (;;) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
            return;
        struct conn *c = calloc(1, sizeof *c);
        REQUIRE(c != NULL);
        c->srv = srv;
        c->fd = cfd;
        buf_init(&c->in, 64 * 1024);
        buf_init(&c->out, 0);
        if (loop_io_add(srv->loop, &c->io, cfd, LOOP_READ, conn_ready, c) < 0) {
            close(cfd);
            free(c);
            continue;
        }
        c->next = srv->conns;
        if (srv->conns)
            srv->conns->prev = c;
        srv->conns = c;
        srv->accepted++;
    }
}

/* A listening socket on an ephemeral loopback port. */
static int listen_loopback(int *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 128) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

static void server_start(struct server *srv, struct loop *loop)
{
    memset(srv, 0, sizeof *srv);
    srv->loop = loop;
    srv->lfd = listen_loopback(&srv->port);
    REQUIRE(srv->lfd >= 0);
    REQUIRE(loop_io_add(loop, &srv->lio, srv->lfd, LOOP_READ, server_accept, srv) == 0);
}

static void server_stop(struct server *srv)
{
    while (srv->conns)
        conn_close(srv->conns);
    loop_io_remove(srv->lio);
    close(srv->lfd);
}

/* ---- the client side ---- */

struct request {
    CURL *easy;
    struct buf body;
    char path[64];
    int done;
    CURLcode result;
    long status;
    int *outstanding;
    struct loop *loop;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct request *r = ud;
    if (buf_append(&r->body, data, size * nmemb) < 0)
        return 0;
    return size * nmemb;
}

static void request_init(struct request *r, struct loop *loop, int port, const char *path)
{
    char url[128];
    memset(r, 0, sizeof *r);
    r->loop = loop;
    buf_init(&r->body, 1 << 20);
    snprintf(r->path, sizeof r->path, "%s", path);
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    r->easy = curl_easy_init();
    REQUIRE(r->easy != NULL);
    curl_easy_setopt(r->easy, CURLOPT_URL, url);
    curl_easy_setopt(r->easy, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
}

static void request_free(struct request *r)
{
    curl_easy_cleanup(r->easy);
    buf_free(&r->body);
}

static void request_done(CURL *easy, CURLcode result, void *ud)
{
    struct request *r = ud;
    CHECK(easy == r->easy);
    r->done++;
    r->result = result;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r->status);
    if (r->outstanding && --*r->outstanding == 0)
        loop_stop(r->loop);
}

static void never_done(CURL *easy, CURLcode result, void *ud)
{
    (void)easy;
    (void)result;
    (*(int *)ud)++;
}

static void stop_cb(struct loop_timer *timer, void *ud)
{
    (void)timer;
    loop_stop(ud);
}

/* A timer that stops a loop that would otherwise hang a broken test. */
static struct loop_timer *guard;

static void guard_fired(struct loop_timer *timer, void *ud)
{
    (void)timer;
    guard = NULL;
    CHECK_FAIL("timed out");
    loop_stop(ud);
}

static void guard_start(struct loop *loop)
{
    guard = loop_timer_add(loop, 8000, guard_fired, loop);
}

static void guard_cancel(void)
{
    loop_timer_cancel(guard);
    guard = NULL;
}

static struct loop *new_loop(void)
{
    struct loop *loop = NULL;
    if (loop_new(&loop) < 0)
        CHECK_FAIL("loop_new: %s", error_message());
    REQUIRE(loop != NULL);
    return loop;
}

static struct loop_curl *new_curl(struct loop *loop)
{
    struct loop_curl *lc = NULL;
    if (loop_curl_new(loop, &lc) < 0)
        CHECK_FAIL("loop_curl_new: %s", error_message());
    REQUIRE(lc != NULL);
    return lc;
}

static bool body_is(const struct request *r)
{
    char want[128];
    snprintf(want, sizeof want, BODY_PREFIX "%s", r->path);
    return strcmp(buf_str(&r->body), want) == 0;
}

/* ---- tests ---- */

static void test_one_get(void)
{
    struct loop *loop = new_loop();
    struct loop_curl *lc = new_curl(loop);
    struct server srv;
    struct request r;
    int outstanding = 1;

    server_start(&srv, loop);
    request_init(&r, loop, srv.port, "/one");
    r.outstanding = &outstanding;
    REQUIRE(loop_curl_add(lc, r.easy, request_done, &r) == 0);
    CHECK_EQ_INT(loop_curl_running(lc), 1);
    guard_start(loop);
    CHECK_EQ_INT(loop_run(loop), 0);
    guard_cancel();

    CHECK_EQ_INT(r.done, 1);
    CHECK_EQ_INT(r.result, CURLE_OK);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(buf_str(&r.body), BODY_PREFIX "/one");
    CHECK_EQ_INT(loop_curl_running(lc), 0);
    CHECK_EQ_INT(srv.served, 1);

    /* With the server gone and curl idle, nothing keeps the loop running. */
    server_stop(&srv);
    CHECK_EQ_INT(loop_run(loop), 0);
    loop_curl_free(lc);
    loop_free(loop);
    request_free(&r);
}

#define CONCURRENT 50

static void test_concurrent_gets(void)
{
    struct loop *loop = new_loop();
    struct loop_curl *lc = new_curl(loop);
    struct server srv;
    struct request *rs = calloc(CONCURRENT, sizeof *rs);
    int outstanding = CONCURRENT;

    REQUIRE(rs != NULL);
    server_start(&srv, loop);
    for (int i = 0; i < CONCURRENT; i++) {
        char path[32];
        snprintf(path, sizeof path, "/req/%d", i);
        request_init(&rs[i], loop, srv.port, path);
        rs[i].outstanding = &outstanding;
        REQUIRE(loop_curl_add(lc, rs[i].easy, request_done, &rs[i]) == 0);
    }
    CHECK_EQ_INT(loop_curl_running(lc), CONCURRENT);
    guard_start(loop);
    CHECK_EQ_INT(loop_run(loop), 0);
    guard_cancel();

    int bad = 0;
    for (int i = 0; i < CONCURRENT; i++)
        if (rs[i].done != 1 || rs[i].result != CURLE_OK || rs[i].status != 200 || !body_is(&rs[i]))
            bad++;
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(outstanding, 0);
    CHECK_EQ_INT(loop_curl_running(lc), 0);
    CHECK_EQ_INT(srv.served, CONCURRENT);
    CHECK(srv.accepted >= CONCURRENT);

    server_stop(&srv);
    loop_curl_free(lc);
    loop_free(loop);
    for (int i = 0; i < CONCURRENT; i++)
        request_free(&rs[i]);
    free(rs);
}

static void test_refused(void)
{
    struct loop *loop = new_loop();
    struct loop_curl *lc = new_curl(loop);
    struct request r;
    int port;

    int fd = listen_loopback(&port); /* take a free port, then free it */
    REQUIRE(fd >= 0);
    close(fd);
    request_init(&r, loop, port, "/nobody");
    REQUIRE(loop_curl_add(lc, r.easy, request_done, &r) == 0);
    CHECK_EQ_INT(loop_run(loop), 0); /* returns by itself once curl is done */
    CHECK_EQ_INT(r.done, 1);
    CHECK_EQ_INT(r.result, CURLE_COULDNT_CONNECT);
    CHECK_EQ_INT(loop_curl_running(lc), 0);
    loop_curl_free(lc);
    loop_free(loop);
    request_free(&r);
}

struct cancel_test {
    struct loop_curl *lc;
    CURL *easy;
    int calls;
};

static void cancel_now(struct loop_timer *timer, void *ud)
{
    struct cancel_test *ct = ud;
    (void)timer;
    CHECK_EQ_INT(loop_curl_running(ct->lc), 1);
    loop_curl_cancel(ct->lc, ct->easy);
    CHECK_EQ_INT(loop_curl_running(ct->lc), 0);
    loop_curl_cancel(ct->lc, ct->easy); /* not in flight any more: no-op */
}

/* The server accepts the connection (in the kernel) but never answers. */
static void test_cancel_in_flight(void)
{
    struct loop *loop = new_loop();
    struct cancel_test ct = {0};
    struct request r;
    int port;

    int silent = listen_loopback(&port);
    REQUIRE(silent >= 0);
    ct.lc = new_curl(loop);
    request_init(&r, loop, port, "/silent");
    ct.easy = r.easy;
    REQUIRE(loop_curl_add(ct.lc, r.easy, never_done, &ct.calls) == 0);
    loop_timer_add(loop, 100, cancel_now, &ct);
    /* Returns by itself: the cancelled transfer leaves no socket or timer. */
    CHECK_EQ_INT(loop_run(loop), 0);
    CHECK_EQ_INT(ct.calls, 0);

    /* The handle can be used again once cancelled. */
    struct server srv;
    int outstanding = 1;
    server_start(&srv, loop);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/again", srv.port);
    curl_easy_setopt(r.easy, CURLOPT_URL, url);
    snprintf(r.path, sizeof r.path, "/again");
    buf_reset(&r.body);
    r.outstanding = &outstanding;
    REQUIRE(loop_curl_add(ct.lc, r.easy, request_done, &r) == 0);
    guard_start(loop);
    CHECK_EQ_INT(loop_run(loop), 0);
    guard_cancel();
    CHECK_EQ_INT(r.done, 1);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r));
    CHECK_EQ_INT(ct.calls, 0);

    server_stop(&srv);
    loop_curl_free(ct.lc);
    loop_free(loop);
    request_free(&r);
    close(silent);
}

struct free_test {
    struct loop_curl *lc;
    struct loop *loop;
};

static void free_now(struct loop_timer *timer, void *ud)
{
    struct free_test *ft = ud;
    (void)timer;
    CHECK(loop_curl_running(ft->lc) > 0);
    loop_curl_free(ft->lc);
    ft->lc = NULL;
}

#define SILENT_TRANSFERS 5

/* loop_curl_free() from a timer while transfers wait for a silent server. */
static void test_free_in_flight(void)
{
    int n_fds = check_count_fds();
    struct loop *loop = new_loop();
    struct free_test ft = {new_curl(loop), loop};
    struct request rs[SILENT_TRANSFERS];
    int calls = 0, port;

    int silent = listen_loopback(&port);
    REQUIRE(silent >= 0);
    for (int i = 0; i < SILENT_TRANSFERS; i++) {
        request_init(&rs[i], loop, port, "/silent");
        REQUIRE(loop_curl_add(ft.lc, rs[i].easy, never_done, &calls) == 0);
    }
    loop_timer_add(loop, 100, free_now, &ft);
    CHECK_EQ_INT(loop_run(loop), 0); /* nothing of curl's is left behind */
    CHECK(ft.lc == NULL);
    CHECK_EQ_INT(calls, 0);
    loop_free(loop);
    for (int i = 0; i < SILENT_TRANSFERS; i++)
        request_free(&rs[i]);
    close(silent);
    CHECK_EQ_INT(check_count_fds(), n_fds);
}

struct free_in_done {
    struct loop_curl *lc;
    int calls;
};

static void free_from_done(CURL *easy, CURLcode result, void *ud)
{
    struct free_in_done *fd = ud;
    (void)easy;
    (void)result;
    fd->calls++;
    loop_curl_free(fd->lc);
}

/* loop_curl_free() from a done callback, with other transfers still in
 * flight or finishing in the same batch: none of them is reported. */
static void test_free_from_done_callback(void)
{
    int n_fds = check_count_fds();
    struct loop *loop = new_loop();
    struct free_in_done fd = {new_curl(loop), 0};
    struct server srv;
    struct request rs[4];
    int silent_port;

    int silent = listen_loopback(&silent_port);
    REQUIRE(silent >= 0);
    server_start(&srv, loop);
    for (int i = 0; i < 4; i++) {
        request_init(&rs[i], loop, i == 3 ? silent_port : srv.port, "/x");
        REQUIRE(loop_curl_add(fd.lc, rs[i].easy, free_from_done, &fd) == 0);
    }
    loop_timer_add(loop, 300, stop_cb, loop);
    CHECK_EQ_INT(loop_run(loop), 0);
    CHECK_EQ_INT(fd.calls, 1);

    server_stop(&srv);
    CHECK_EQ_INT(loop_run(loop), 0); /* curl left nothing behind */
    loop_free(loop);
    for (int i = 0; i < 4; i++)
        request_free(&rs[i]);
    close(silent);
    CHECK_EQ_INT(check_count_fds(), n_fds);
}

int main(void)
{
    alarm(60); /* a hung loop fails the test instead of blocking CTest */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "curl_global_init failed\n");
        return 1;
    }
    RUN(test_one_get);
    RUN(test_concurrent_gets);
    RUN(test_refused);
    RUN(test_cancel_in_flight);
    RUN(test_free_in_flight);
    RUN(test_free_from_done_callback);
    curl_global_cleanup();
    return check_summary();
}
