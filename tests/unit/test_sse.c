/*
 * test_sse: unit tests of the server-sent events parser (sse.h): the same
 * stream fed whole and split at every byte gives the same events; LF, CRLF
 * and CR line ends (CRLF split across chunks); comments, unknown fields and
 * id / retry are ignored; multi-line data joins with "\n"; a byte-order mark
 * is skipped; an event open at the end is reported as pending, not
 * delivered; the caps on lines and events; and a callback's error stops the
 * parser. Depends on sse, buf, error and check.h.
 */
#include <stdlib.h>

#include "buf.h"
#include "check.h"
#include "error.h"
#include "sse.h"

struct seen {
    struct buf log; /* "type=data|" per event */
    int events;
    int stop_at; /* the callback fails on this event (0: never) */
};

static int on_event(const char *event, const char *data, size_t len, void *ud)
{
    struct seen *s = ud;
    s->events++;
    CHECK_EQ_INT(strlen(data), len);
    buf_printf(&s->log, "%s=%s|", event, data);
    if (s->stop_at && s->events == s->stop_at)
        return error_set("stop");
    return 0;
}

/* Feeds text in pieces of size step (0: whole) and returns the event log. */
static char *parse(const char *text, size_t step, bool *pending, int *rc_out)
{
    struct sse_parser p;
    struct seen s = {.stop_at = 0};
    buf_init(&s.log, 0);
    sse_init(&p, 64, on_event, &s);
    size_t len = strlen(text);
    int rc = 0;
    if (!step)
        step = len ? len : 1;
    for (size_t i = 0; i < len && rc == 0; i += step)
        rc = sse_feed(&p, text + i, i + step > len ? len - i : step);
    if (pending)
        *pending = sse_pending(&p);
    if (rc_out)
        *rc_out = rc;
    sse_free(&p);
    return buf_detach(&s.log, NULL);
}

static void expect(const char *text, const char *log)
{
    size_t len = strlen(text);
    for (size_t step = 0; step <= len; step++) {
        int rc;
        char *got = parse(text, step, NULL, &rc);
        if (strcmp(got, log) || rc)
            CHECK_FAIL("step %zu: got \"%s\" (rc %d), want \"%s\"", step, got, rc, log);
        free(got);
    }
}

static void test_basic_events(void)
{
    expect("data: hello\n\n", "message=hello|");
    expect("data:no space\n\ndata:  two spaces\n\n", "message=no space|message= two spaces|");
    expect("event: add\ndata: 1\n\nevent: remove\ndata: 2\n\n", "add=1|remove=2|");
    expect("data: [DONE]\n\n", "message=[DONE]|");
}

static void test_line_ends(void)
{
    expect("data: a\r\n\r\ndata: b\r\r", "message=a|message=b|");
    expect("data: x\r\n\r\n", "message=x|");
    expect("data: mixed\n\r\ndata: y\r\n\n", "message=mixed|message=y|");
}

static void test_multiline_and_ignored_fields(void)
{
    expect("data: line1\ndata: line2\n\n", "message=line1\nline2|");
    expect(": a comment\nid: 7\nretry: 100\nfoo: bar\ndata: z\n\n", "message=z|");
    expect("data\n\n", "message=|");
    expect("event: only\n\n", ""); /* no data: nothing is dispatched */
    expect("\n\n\ndata: after blank lines\n\n", "message=after blank lines|");
}

static void test_bom(void)
{
    expect("\xEF\xBB\xBF"
           "data: bom\n\n",
           "message=bom|");
    expect("\xEF"
           "data: no bom\n\n",
           ""); /* a lone 0xEF starts an unknown field, not a mark */
}

static void test_pending_at_end(void)
{
    bool pending;
    int rc;
    char *log = parse("data: done\n\ndata: cut", 0, &pending, &rc);
    CHECK_EQ_STR(log, "message=done|");
    CHECK(pending);
    free(log);
    log = parse("data: a\ndata: b\n", 3, &pending, &rc);
    CHECK_EQ_STR(log, "");
    CHECK(pending);
    free(log);
    log = parse("data: complete\n\n", 0, &pending, &rc);
    CHECK(!pending);
    free(log);
}

static void test_caps(void)
{
    char big[200];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char *text = NULL;
    int rc;
    text = malloc(300);
    snprintf(text, 300, "data: %s\n\n", big);
    for (size_t step = 1; step < 300; step += 37) {
        char *log = parse(text, step, NULL, &rc);
        CHECK(rc < 0);
        CHECK_EQ_STR(log, "");
        free(log);
    }
    CHECK_CONTAINS(error_message(), "exceeds 64 bytes");
    /* many short data lines that add up past the cap */
    struct buf b;
    buf_init(&b, 0);
    for (int i = 0; i < 20; i++)
        buf_puts(&b, "data: 12345\n");
    buf_puts(&b, "\n");
    char *log = parse(buf_str(&b), 0, NULL, &rc);
    CHECK(rc < 0);
    free(log);
    buf_free(&b);
    free(text);
}

static void test_callback_error_stops(void)
{
    struct sse_parser p;
    struct seen s = {.stop_at = 2};
    buf_init(&s.log, 0);
    sse_init(&p, 0, on_event, &s);
    const char *t = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    CHECK(sse_feed(&p, t, strlen(t)) < 0);
    CHECK_EQ_STR(error_message(), "stop");
    CHECK_EQ_INT(s.events, 2);
    CHECK(sse_feed(&p, "data: 4\n\n", 9) < 0);
    CHECK_EQ_INT(s.events, 2);
    sse_free(&p);
    buf_free(&s.log);
}

int main(void)
{
    RUN(test_basic_events);
    RUN(test_line_ends);
    RUN(test_multiline_and_ignored_fields);
    RUN(test_bom);
    RUN(test_pending_at_end);
    RUN(test_caps);
    RUN(test_callback_error_stops);
    return check_summary();
}
