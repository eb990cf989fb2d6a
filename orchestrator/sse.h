/*
 * sse: an incremental parser of server-sent events (text/event-stream).
 *
 * Bytes arrive in chunks of any size (one byte at a time works); the parser
 * splits them into lines (LF, CRLF or CR, also when a CRLF is split between
 * two chunks), skips a leading byte-order mark and comment lines, gathers
 * `event:` and `data:` fields (several data lines join with "\n") and calls
 * back once per event at each blank line, as the WHATWG specification says.
 * `id:` and `retry:` are accepted and ignored. A line or an event larger than
 * the cap is an error, so a misbehaving server cannot make it grow without
 * bound; an event still open when the stream ends is not delivered (see
 * sse_pending()). Depends on buf and error.
 */
#ifndef THALAMUS_SSE_H
#define THALAMUS_SSE_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/* Receives one event: its type ("message" when the event named none) and its
 * data (NUL-terminated, len bytes). Returns 0, or a negative code with
 * error_set() to stop the parser (sse_feed() then returns that code). */
typedef int (*sse_event_cb)(const char *event, const char *data, size_t len, void *ud);

struct sse_parser {
    struct buf line;  /* the current, unfinished line */
    struct buf data;  /* data lines of the current event */
    struct buf event; /* the event's type */
    bool have_data;   /* a data field was seen in the current event */
    bool after_cr;    /* the last byte was CR: a following LF belongs to it */
    bool started;     /* past the optional byte-order mark */
    bool failed;
    sse_event_cb cb;
    void *ud;
};

/* Prepares p; events and lines may be at most max bytes (0: 1 MiB). */
void sse_init(struct sse_parser *p, size_t max, sse_event_cb cb, void *ud);

/* Parses len bytes. Returns 0, the callback's error, or TH_ERR when a line
 * or event is over the cap. After an error, every further call fails. */
int sse_feed(struct sse_parser *p, const char *data, size_t len);

/* Whether the stream so far ends inside an event or a line (i.e. it was cut
 * off, not closed after a complete event). */
bool sse_pending(const struct sse_parser *p);

void sse_free(struct sse_parser *p);

#endif
