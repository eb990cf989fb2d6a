/*
 * test_http: unit tests of the asynchronous HTTP client (http.h) against the
 * fake server of tests/e2e/fake_llm.py on loopback: a GET with a collected
 * body and headers, a POST whose method, headers and body the server
 * records, a streamed reply handed over in chunks, a callback that refuses
 * data, the size cap (collected and streamed), the idle and total timeouts,
 * a refused connection, cancelling, a hundred requests in flight on one
 * loop, a URL that is not HTTP, and freeing the client with requests in
 * flight without leaking descriptors. Depends on http, loop, buf, error,
 * cJSON, libcurl and the check.h and fake_llm.h helpers.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "check.h"
#include "error.h"
#include "fake_llm.h"
#include "http.h"
#include "loop.h"

static struct fake_llm fake;

struct result {
    int done;
    long status;
    enum http_failure failure;
    char error[512];
    struct buf body;     /* collected body, copied */
    struct buf streamed; /* on_data chunks */
    int chunks;
    char header[128];
    int refuse_after; /* on_data fails after this many chunks (0: never) */
    struct loop *loop;
    int *outstanding;
};

static void result_init(struct result *r, struct loop *loop)
{
    memset(r, 0, sizeof *r);
    buf_init(&r->body, 0);
    buf_init(&r->streamed, 0);
    r->loop = loop;
}

static void result_free(struct result *r)
{
    buf_free(&r->body);
    buf_free(&r->streamed);
}

static int on_data(struct http_request *req, const char *data, size_t len, void *ud)
{
    struct result *r = ud;
    CHECK(http_status(req) == 200);
    r->chunks++;
    if (r->refuse_after && r->chunks > r->refuse_after)
        return error_set("refused by the test");
    return buf_append(&r->streamed, data, len);
}

static void on_done(struct http_request *req, const struct http_response *resp, void *ud)
{
    struct result *r = ud;
    r->done++;
    r->status = resp->status;
    r->failure = resp->failure;
    snprintf(r->error, sizeof r->error, "%s", resp->error ? resp->error : "");
    buf_append(&r->body, buf_str(resp->body), resp->body->len);
    const char *h = http_header(req, "x-test");
    snprintf(r->header, sizeof r->header, "%s", h ? h : "");
    if (!r->outstanding || --*r->outstanding == 0)
        loop_stop(r->loop);
}

static void never(struct http_request *req, const struct http_response *resp, void *ud)
{
    (void)req;
    (void)resp;
    (*(int *)ud)++;
}

static struct loop *new_loop(void)
{
    struct loop *loop = NULL;
    REQUIRE(loop_new(&loop) == 0);
    return loop;
}

static struct http_client *new_client(struct loop *loop)
{
    struct http_client *c = NULL;
    REQUIRE(http_client_new(loop, &c) == 0);
    return c;
}

static void guard(struct loop_timer *t, void *ud)
{
    (void)t;
    CHECK_FAIL("timed out");
    loop_stop(ud);
}

/* Runs the loop with a guard against hanging. */
static void run(struct loop *loop)
{
    struct loop_timer *t = loop_timer_add(loop, 30000, guard, loop);
    CHECK_EQ_INT(loop_run(loop), 0);
    loop_timer_cancel(t);
}

static char *url(const char *path)
{
    static char u[256];
    snprintf(u, sizeof u, "%s%s", fake.url, path);
    return u;
}

static void test_get_collects_body_and_headers(void)
{
    fake_reset(&fake);
    fake_script(&fake, "[{\"status\": 200, \"body\": \"plain text\", \"content_type\": "
                       "\"text/plain\", \"headers\": {\"X-Test\": \"  yes  \"}}]");
    struct loop *loop = new_loop();
    struct http_client *c = new_client(loop);
    struct result r;
    result_init(&r, loop);
    struct http_options o = {
        .url = url("/v1/thing"), .on_done = on_done, .ud = &r, .timeout_ms = 20000};
    REQUIRE(http_start(c, &o, NULL) == 0);
    CHECK_EQ_INT(r.done, 0); /* never from inside http_start */
    CHECK_EQ_INT(http_running(c), 1);
    run(loop);
    CHECK_EQ_INT(r.done, 1);
    CHECK_EQ_INT(r.failure, HTTP_OK);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(buf_str(&r.body), "plain text");
    CHECK_EQ_STR(r.header, "yes");
    CHECK_EQ_INT(http_running(c), 0);
    cJSON *reqs = fake_requests(&fake);
    const cJSON *first = cJSON_GetArrayItem(reqs, 0);
    CHECK_EQ_STR(cJSON_GetObjectItem(first, "method")->valuestring, "GET");
    CHECK_EQ_STR(cJSON_GetObjectItem(first, "path")->valuestring, "/v1/thing");
    const cJSON *h = cJSON_GetObjectItem(first, "headers");
    CHECK_CONTAINS(cJSON_GetObjectItem(h, "user-agent")->valuestring, "thalamus/");
    cJSON_Delete(reqs);
    http_client_free(c);
    loop_free(loop);
    result_free(&r);
}

static void test_post_sends_method_headers_body(void)
{
    fake_reset(&fake);
    fake_script(&fake, "[{\"status\": 201, \"json\": {\"ok\": true}}]");
    struct loop *loop = new_loop();
    struct http_client *c = new_client(loop);
    struct result r;
    result_init(&r, loop);
    const char *headers[] = {"Authorization: Bearer abc", "X-Custom: 42", NULL};
    const char body[] = "{\"hello\": \"world\"}";
    struct http_options o = {.url = url("/v1/post"),
                             .headers = headers,
                             .body = body,
                             .body_len = strlen(body),
                             .on_done = on_done,
                             .ud = &r};
    REQUIRE(http_start(c, &o, NULL) == 0);
    run(loop);
    CHECK_EQ_INT(r.status, 201);
    CHECK_EQ_STR(buf_str(&r.body), "{\"ok\": true}");
    cJSON *reqs = fake_requests(&fake);
    const cJSON *first = cJSON_GetArrayItem(reqs, 0);
    CHECK_EQ_STR(cJSON_GetObjectItem(first, "method")->valuestring, "POST");
    CHECK_EQ_STR(cJSON_GetObjectItem(first, "body")->valuestring, body);
    const cJSON *h = cJSON_GetObjectItem(first, "headers");
    CHECK_EQ_STR(cJSON_GetObjectItem(h, "authorization")->valuestring, "Bearer abc");
    CHECK_EQ_STR(cJSON_GetObjectItem(h, "x-custom")->valuestring, "42");
    CHECK(cJSON_GetObjectItem(h, "expect") == NULL);
    cJSON_Delete(reqs);
    http_client_free(c);
    loop_free(loop);
    result_free(&r);
}

static void test_stream_chunks(void)
{
    fake_reset(&fake);
    fake_script(&fake, "[{\"sse\": [[null, \"one\"], [\"named\", \"two\"], [null, \"three\"]],"
                       " \"drip\": 0.05}]");
    struct loop *loop = new_loop();
    struct http_client *c = new_client(loop);
    struct result r;
    result_init(&r, loop);
    struct http_options o = {
        .url = url("/v1/stream"), .on_data = on_data, .on_done = on_done, .ud = &r};
    REQUIRE(http_start(c, &o, NULL) == 0);
    run(loop);
    CHECK_EQ_INT(r.failure, HTTP_OK);
    CHECK_EQ_STR(buf_str(&r.streamed), "data: one\n\nevent: named\ndata: two\n\ndata: three\n\n");
    CHECK(r.chunks >= 2); /* the drip makes separate reads */
    CHECK_EQ_INT(r.body.len, 0);
    http_client_free(c);
    loop_free(loop);
    result_free(&r);
}

static void test_error_status_is_collected_not_streamed(void)
{
    fake_reset(&fake);
    fake_script(&fake, "[{\"status\": 503, \"json\": {\"error\": \"down\"}}]");
    struct loop *loop = new_loop();
    struct http_client *c = new_client(loop);
    struct result r;
    result_init(&r, loop);
    struct http_options o = {.url = url("/x"), .on_data = on_data, .on_done = on_done, .ud = &r};
    REQUIRE(http_start(c, &o, NULL) == 0);
    run(loop);
    CHECK_EQ_INT(r.failure, HTTP_OK);
    CHECK_EQ_INT(r.status, 503);
    CHECK_EQ_INT(r.chunks, 0);
    CHECK_EQ_STR(buf_str(&r.body), "{\"error\": \"down\"}");
    http_client_free(c);
    loop_free(loop);
    result_free(&r);
}

static void test_callback_refusal_aborts(void)
{
    fake_reset(&fake);
    fake_script(&fake, "[{\"sse\": [[null, \"a\"], [null, \"b\"], [null, \"c\"]], \"drip\": "
                       "0.05}]");
    struct loop *loop = new_loop();
    struct http_client *c = new_client(loop);
    struct result r;
    result_init(&r, loop);
    r.refuse_after = 1;
    struct http_options o = {.url = url("/s"), .on_data = on_data, .on_done = on_done, .ud = &r};
    REQUIRE(http_start(c, &o, NULL) == 0);
    run(loop);
    CHECK_EQ_INT(r.failure, HTTP_FAIL_CALLBACK);
    CHECK_EQ_STR(r.error, "refused by the test");
    http_client_free(c);
    loop_free(loop);
    result_free(&r);
}

static void test_size_cap(void)
{
    fake_reset(&fake);
    char script[2048];
    snprintf(script, sizeof script,
             "[{\"status\": 200, \"body\": \"%0500d\"}, {\"sse\": [[null, \"%0300d\"], "
             "[null, \"%0300d\"]]}]",
             0, 0, 0);
    fake_script(&fake, script);
    struct loop *loop = new_loop();
    struct http_client *c = new_client(loop);
    struct result r1, r2;
    result_init(&r1, loop);
    result_init(&r2, loop);
    struct http_options o = {.url = url("/big"), .max_body = 100, .on_done = on_done, .ud = &r1};
    REQUIRE(http_start(c, &o, NULL) == 0);
    run(loop);
    CHECK_EQ_INT(r1.failure, HTTP_FAIL_TOO_LARGE);
    CHECK_CONTAINS(r1.error, "exceeds the limit of 100 bytes");
    CHECK(r1.body.len <= 100);
    struct http_options s = {
        .url = url("/big"), .max_body = 400, .on_data = on_data, .on_done = on_done, .ud = &r2};
    REQUIRE(http_start(c, &s, NULL) == 0);
    run(loop);
    CHECK_EQ_INT(r2.failure, HTTP_FAIL_TOO_LARGE);
    CHECK(r2.streamed.len <= 400);
    http_client_free(c);
    loop_free(loop);
    result_free(&r1);
    result_free(&r2);
}

static void test_idle_and_total_timeouts(void)
{
    fake_reset(&fake);
    fake_script(&fake, "[{\"sse\": [[null, \"first\"], [null, \"late\"]], \"stall\": 5},"
                       " {\"reply\": \"slow\", \"delay\": 5}]");
    struct loop *loop = new_loop();
    struct http_client *c = new_client(loop);
    struct result r1, r2;
    result_init(&r1, loop);
    result_init(&r2, loop);
    struct http_options o = {.url = url("/v1/chat/completions"),
                             .idle_timeout_ms = 300,
                             .on_data = on_data,
                             .on_done = on_done,
                             .ud = &r1};
    REQUIRE(http_start(c, &o, NULL) == 0);
    run(loop);
    CHECK_EQ_INT(r1.failure, HTTP_FAIL_IDLE);
    CHECK_CONTAINS(r1.error, "no data from 127.0.0.1:");
    CHECK_EQ_STR(buf_str(&r1.streamed), "data: first\n\n");
    struct http_options t = {.url = url("/v1/chat/completions"),
                             .timeout_ms = 300,
                             .idle_timeout_ms = 100,
                             .body = "{}",
                             .body_len = 2,
                             .on_done = on_done,
                             .ud = &r2};
    REQUIRE(http_start(c, &t, NULL) == 0);
    run(loop);
    CHECK_EQ_INT(r2.failure, HTTP_FAIL_TIMEOUT); /* idle does not count before the reply */
    CHECK_CONTAINS(r2.error, "within 0.3 s");
    http_client_free(c);
    loop_free(loop);
    result_free(&r1);
    result_free(&r2);
}

static int closed_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&sa, sizeof sa);
    getsockname(fd, (struct sockaddr *)&sa, &len);
    close(fd);
    return ntohs(sa.sin_port);
}

static void test_refused_and_bad_url(void)
{
    struct loop *loop = new_loop();
    struct http_client *c = new_client(loop);
    struct result r;
    result_init(&r, loop);
    char u[64];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/", closed_port());
    struct http_options o = {.url = u, .on_done = on_done, .ud = &r};
    REQUIRE(http_start(c, &o, NULL) == 0);
    run(loop);
    CHECK_EQ_INT(r.failure, HTTP_FAIL_CONNECT);
    CHECK_CONTAINS(r.error, "Connection refused");
    CHECK_EQ_INT(r.status, 0);
    struct http_options bad = {.url = "file:///etc/passwd", .on_done = on_done, .ud = &r};
    CHECK_EQ_INT(http_start(c, &bad, NULL), TH_EUSAGE);
    CHECK_CONTAINS(error_message(), "not an http:// or https:// URL");
    bad.url = "not a url";
    CHECK_EQ_INT(http_start(c, &bad, NULL), TH_EUSAGE);
    http_client_free(c);
    loop_free(loop);
    result_free(&r);
}

static void cancel_cb(struct loop_timer *t, void *ud)
{
    (void)t;
    http_cancel(ud);
}

static void test_cancel_in_flight(void)
{
    int fds = check_count_fds();
    fake_reset(&fake);
    fake_script(&fake, "[{\"reply\": \"x\", \"delay\": 3}]");
    struct loop *loop = new_loop();
    struct http_client *c = new_client(loop);
    int calls = 0;
    struct http_request *req = NULL;
    struct http_options o = {.url = url("/v1/chat/completions"),
                             .body = "{}",
                             .body_len = 2,
                             .on_done = never,
                             .ud = &calls};
    REQUIRE(http_start(c, &o, &req) == 0);
    loop_timer_add(loop, 200, cancel_cb, req);
    CHECK_EQ_INT(loop_run(loop), 0); /* ends by itself: nothing left */
    CHECK_EQ_INT(calls, 0);
    CHECK_EQ_INT(http_running(c), 0);
    http_client_free(c);
    loop_free(loop);
    CHECK_EQ_INT(check_count_fds(), fds);
}

#define MANY 100

static void test_many_in_flight(void)
{
    fake_reset(&fake);
    struct loop *loop = new_loop();
    struct http_client *c = new_client(loop);
    struct result *rs = calloc(MANY, sizeof *rs);
    int outstanding = MANY;
    REQUIRE(rs);
    char script[64];
    snprintf(script, sizeof script, "[%s]", "{\"reply\": \"hi\", \"delay\": 0.3}");
    for (int i = 0; i < MANY; i++)
        fake_script(&fake, script);
    for (int i = 0; i < MANY; i++) {
        result_init(&rs[i], loop);
        rs[i].outstanding = &outstanding;
        struct http_options o = {.url = url("/v1/chat/completions"),
                                 .body = "{}",
                                 .body_len = 2,
                                 .on_done = on_done,
                                 .ud = &rs[i]};
        REQUIRE(http_start(c, &o, NULL) == 0);
    }
    CHECK_EQ_INT(http_running(c), MANY);
    run(loop);
    int ok = 0;
    for (int i = 0; i < MANY; i++) {
        ok += rs[i].status == 200 && strstr(buf_str(&rs[i].body), "\"hi\"");
        result_free(&rs[i]);
    }
    CHECK_EQ_INT(ok, MANY);
    CHECK(fake_stat(&fake, "max_in_flight") > 1); /* they overlapped */
    free(rs);
    http_client_free(c);
    loop_free(loop);
}

static void stop_loop(struct loop_timer *t, void *ud)
{
    (void)t;
    loop_stop(ud);
}

static void test_free_with_requests_in_flight(void)
{
    int fds = check_count_fds();
    fake_reset(&fake);
    fake_script(&fake, "[{\"reply\": \"x\", \"delay\": 2}, {\"reply\": \"x\", \"delay\": 2}]");
    struct loop *loop = new_loop();
    struct http_client *c = new_client(loop);
    int calls = 0;
    for (int i = 0; i < 2; i++) {
        struct http_options o = {.url = url("/v1/chat/completions"),
                                 .body = "{}",
                                 .body_len = 2,
                                 .on_done = never,
                                 .ud = &calls};
        REQUIRE(http_start(c, &o, NULL) == 0);
    }
    loop_timer_add(loop, 300, stop_loop, loop);
    CHECK_EQ_INT(loop_run(loop), 0);
    CHECK_EQ_INT(http_running(c), 2);
    http_client_free(c);
    loop_free(loop);
    CHECK_EQ_INT(calls, 0);
    CHECK_EQ_INT(check_count_fds(), fds);
}

int main(void)
{
    alarm(240);
    signal(SIGPIPE, SIG_IGN);
    /* the fake server is on loopback: no proxy of the environment applies */
    const char *proxies[] = {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                             "all_proxy",  "ALL_PROXY",  NULL};
    for (const char **p = proxies; *p; p++)
        unsetenv(*p);
    if (fake_start(&fake) < 0) {
        fprintf(stderr, "cannot start tests/e2e/fake_llm.py\n");
        return 1;
    }
    RUN(test_get_collects_body_and_headers);
    RUN(test_post_sends_method_headers_body);
    RUN(test_stream_chunks);
    RUN(test_error_status_is_collected_not_streamed);
    RUN(test_callback_refusal_aborts);
    RUN(test_size_cap);
    RUN(test_idle_and_total_timeouts);
    RUN(test_refused_and_bad_url);
    RUN(test_cancel_in_flight);
    RUN(test_many_in_flight);
    RUN(test_free_with_requests_in_flight);
    fake_stop(&fake);
    return check_summary();
}
