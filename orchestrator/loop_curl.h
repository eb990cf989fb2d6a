/*
 * loop_curl: libcurl's multi socket interface driven by the event loop.
 *
 * Installs CURLMOPT_SOCKETFUNCTION and CURLMOPT_TIMERFUNCTION so that curl
 * tells the loop which sockets and which timeout to wait for, and the loop
 * calls curl_multi_socket_action() when they are ready. Each transfer added
 * with loop_curl_add() reports its completion through its own callback, so
 * many HTTP requests progress at once on the loop's one thread.
 * Depends on loop, libcurl.
 */
#ifndef THALAMUS_LOOP_CURL_H
#define THALAMUS_LOOP_CURL_H

#include <curl/curl.h>

#include "loop.h"

struct loop_curl;

/* Called once when a transfer ends, successfully or not. The easy handle is
 * no longer part of the multi handle; the callback owns it again. */
typedef void (*loop_curl_done_cb)(CURL *easy, CURLcode result, void *ud);

/* Drives a new curl multi handle with loop. Fails (TH_ERR) only if curl
 * cannot create a multi handle. Free with loop_curl_free(). */
int loop_curl_new(struct loop *loop, struct loop_curl **out);

/* Starts a transfer. loop_curl uses the handle's CURLOPT_PRIVATE until the
 * transfer ends. Returns TH_ERR if curl refuses the handle. */
int loop_curl_add(struct loop_curl *lc, CURL *easy, loop_curl_done_cb cb, void *ud);

/* Cancels a transfer in flight; its callback is not called. Does nothing if
 * easy is not in flight on lc. Like curl_multi_remove_handle(), not to be
 * called from inside one of curl's own callbacks (write, header...); done
 * callbacks are fine. */
void loop_curl_cancel(struct loop_curl *lc, CURL *easy);

/* Number of transfers in flight. */
int loop_curl_running(struct loop_curl *lc);

/* Cancels every transfer in flight (their callbacks are not called), then
 * releases the multi handle. Easy handles stay with their owners. May be
 * called from a done callback; must be called before loop_free(). */
void loop_curl_free(struct loop_curl *lc);

#endif
