/*
 * test_llm: the LLM gateway (llm.h) on its event loop against the fake
 * OpenAI / Anthropic server of tests/e2e/fake_llm.py, run as a child. Checks
 * what the CLI cannot show: results never arrive from inside llm_chat;
 * malformed requests fail at once; the per-provider concurrency limit
 * (the server never sees more than llm.max_concurrency requests at once)
 * and its FIFO order; cancelling queued and in-flight calls; budgets that
 * reserve estimates for calls in flight, and count this process's spending
 * when there is no store; usage rows in a store with cost; streamed tokens
 * that join into the final text; a stream request answered with plain JSON;
 * a dropped connection retried; structured replies repaired; freeing the
 * gateway with calls in flight; and a call cancelled from its own token
 * callback. Depends on llm, loop, config, store,
 * alloc, error, cJSON and the check.h and fake_llm.h helpers.
 */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "check.h"
#include "config.h"
#include "error.h"
#include "fake_llm.h"
#include "llm.h"
#include "loop.h"
#include "store.h"

static struct fake_llm fake;

struct outcome {
    int calls;
    int rc;
    enum llm_failure failure;
    char error[1024];
    char text[512];
    long prompt, completion;
    int attempts, repairs;
    double cost;
    bool cost_known, cached;
    char json[256];
    struct buf tokens;
    int token_calls;
    int *outstanding;
    struct loop *loop;
    int order; /* completion order */
};

static int completed;

static void outcome_init(struct outcome *o, struct loop *loop, int *outstanding)
{
    memset(o, 0, sizeof *o);
    buf_init(&o->tokens, 0);
    o->loop = loop;
    o->outstanding = outstanding;
}

static void on_done(struct llm_call *call, const struct llm_result *res, void *ud)
{
    struct outcome *o = ud;
    (void)call;
    o->calls++;
    o->rc = res->rc;
    o->failure = res->failure;
    snprintf(o->error, sizeof o->error, "%s", res->error ? res->error : "");
    snprintf(o->text, sizeof o->text, "%s", res->text);
    o->prompt = res->prompt_tokens;
    o->completion = res->completion_tokens;
    o->attempts = res->attempts;
    o->repairs = res->repairs;
    o->cost = res->cost;
    o->cost_known = res->cost_known;
    o->cached = res->cached;
    o->order = ++completed;
    if (res->json) {
        char *s = cJSON_PrintUnformatted(res->json);
        snprintf(o->json, sizeof o->json, "%s", s);
        free(s);
    }
    if (!o->outstanding || --*o->outstanding == 0)
        loop_stop(o->loop);
}

static void on_token(const char *text, size_t len, void *ud)
{
    struct outcome *o = ud;
    o->token_calls++;
    buf_append(&o->tokens, text, len);
}

static void guard(struct loop_timer *t, void *ud)
{
    (void)t;
    CHECK_FAIL("timed out");
    loop_stop(ud);
}

static void run(struct loop *loop)
{
    struct loop_timer *t = loop_timer_add(loop, 60000, guard, loop);
    CHECK_EQ_INT(loop_run(loop), 0);
    loop_timer_cancel(t);
}

struct env {
    struct loop *loop;
    struct config *cfg;
    struct llm *gw;
    struct store *store;
};

static void env_open(struct env *e, const char *provider, struct store *store)
{
    char base[128];
    unsetenv("ANTHROPIC_API_KEY");
    unsetenv("OPENAI_API_KEY");
    if (!strcmp(provider, "anthropic")) {
        setenv("ANTHROPIC_API_KEY", "test-key", 1);
        setenv("ANTHROPIC_BASE_URL", fake.url, 1);
    } else if (!strcmp(provider, "openai")) {
        snprintf(base, sizeof base, "%s/v1", fake.url);
        setenv("OPENAI_API_KEY", "test-key", 1);
        setenv("OPENAI_BASE_URL", base, 1);
    }
    setenv("THALAMUS_MODEL", "test-model", 1);
    memset(e, 0, sizeof *e);
    REQUIRE(loop_new(&e->loop) == 0);
    REQUIRE(config_load(&e->cfg, NULL) == 0);
    e->store = store;
    e->cfg->llm_max_retries = 2;
}

static void env_start(struct env *e)
{
    REQUIRE(llm_new(&e->gw, e->loop, e->cfg, e->store) == 0);
}

static void env_close(struct env *e)
{
    llm_free(e->gw);
    loop_free(e->loop);
    config_free(e->cfg);
}

static struct llm_message user_msg[] = {{"user", "hi"}};

static struct llm_request simple(void)
{
    struct llm_request r = {.messages = user_msg, .nmessages = 1};
    return r;
}

static void test_offline_is_async(void)
{
    struct env e;
    env_open(&e, "offline", NULL);
    env_start(&e);
    struct outcome o;
    outcome_init(&o, e.loop, NULL);
    struct llm_request r = simple();
    REQUIRE(llm_chat(e.gw, &r, on_done, &o, NULL) == 0);
    CHECK_EQ_INT(o.calls, 0);
    CHECK_EQ_INT(llm_pending(e.gw), 1);
    run(e.loop);
    CHECK_EQ_INT(o.calls, 1);
    CHECK_EQ_INT(o.failure, LLM_FAIL_OFFLINE);
    CHECK_CONTAINS(o.error, "no model is configured");
    CHECK_EQ_INT(llm_pending(e.gw), 0);
    env_close(&e);
    buf_free(&o.tokens);
}

static void test_malformed_requests_fail_at_once(void)
{
    struct env e;
    env_open(&e, "openai", NULL);
    env_start(&e);
    struct outcome o;
    outcome_init(&o, e.loop, NULL);
    struct llm_request r = simple();
    r.nmessages = 0;
    CHECK_EQ_INT(llm_chat(e.gw, &r, on_done, &o, NULL), TH_EUSAGE);
    struct llm_message bad[] = {{"robot", "x"}};
    r = simple();
    r.messages = bad;
    CHECK_EQ_INT(llm_chat(e.gw, &r, on_done, &o, NULL), TH_EUSAGE);
    CHECK_CONTAINS(error_message(), "role 'robot'");
    r = simple();
    r.provider = "openia";
    CHECK_EQ_INT(llm_chat(e.gw, &r, on_done, &o, NULL), TH_EUSAGE);
    CHECK_CONTAINS(error_message(), "unknown provider 'openia'");
    cJSON *schema = cJSON_Parse("{\"a\": \"string\"}");
    r = simple();
    r.schema = schema;
    r.on_token = on_token;
    CHECK_EQ_INT(llm_chat(e.gw, &r, on_done, &o, NULL), TH_EUSAGE);
    cJSON_Delete(schema);
    r = simple();
    r.has_temperature = true;
    r.temperature = 3;
    CHECK_EQ_INT(llm_chat(e.gw, &r, on_done, &o, NULL), TH_EUSAGE);
    free(e.cfg->llm_model);
    e.cfg->llm_model = xstrdup("");
    r = simple();
    CHECK_EQ_INT(llm_chat(e.gw, &r, on_done, &o, NULL), TH_EUSAGE);
    CHECK_CONTAINS(error_message(), "no model is set");
    CHECK_EQ_INT(llm_pending(e.gw), 0);
    CHECK_EQ_INT(o.calls, 0);
    env_close(&e);
    buf_free(&o.tokens);
}

#define BURST 12

static void test_concurrency_limit(void)
{
    fake_reset(&fake);
    for (int i = 0; i < BURST; i++)
        fake_script(&fake, "[{\"reply\": \"ok\", \"delay\": 0.25}]");
    struct env e;
    env_open(&e, "openai", NULL);
    e.cfg->llm_max_concurrency = 3;
    env_start(&e);
    struct outcome o[BURST];
    int outstanding = BURST;
    for (int i = 0; i < BURST; i++) {
        outcome_init(&o[i], e.loop, &outstanding);
        struct llm_request r = simple();
        REQUIRE(llm_chat(e.gw, &r, on_done, &o[i], NULL) == 0);
    }
    run(e.loop);
    int ok = 0;
    for (int i = 0; i < BURST; i++) {
        ok += o[i].rc == 0 && !strcmp(o[i].text, "ok");
        buf_free(&o[i].tokens);
    }
    CHECK_EQ_INT(ok, BURST);
    int most = fake_stat(&fake, "max_in_flight");
    CHECK(most <= 3);
    CHECK(most >= 2);
    CHECK_EQ_INT(fake_stat(&fake, "requests"), BURST);
    env_close(&e);
}

static void test_fifo_order(void)
{
    fake_reset(&fake);
    struct env e;
    env_open(&e, "anthropic", NULL);
    e.cfg->llm_max_concurrency = 1;
    env_start(&e);
    enum { N = 6 };
    struct outcome o[N];
    char prompts[N][16];
    struct llm_message msgs[N];
    int outstanding = N;
    completed = 0;
    for (int i = 0; i < N; i++) {
        snprintf(prompts[i], sizeof prompts[i], "prompt %d", i);
        msgs[i] = (struct llm_message){"user", prompts[i]};
        outcome_init(&o[i], e.loop, &outstanding);
        struct llm_request r = {.messages = &msgs[i], .nmessages = 1};
        REQUIRE(llm_chat(e.gw, &r, on_done, &o[i], NULL) == 0);
    }
    run(e.loop);
    cJSON *reqs = fake_requests(&fake);
    REQUIRE(cJSON_GetArraySize(reqs) == N);
    for (int i = 0; i < N; i++) {
        const cJSON *body = cJSON_GetObjectItem(cJSON_GetArrayItem(reqs, i), "json");
        const cJSON *m = cJSON_GetArrayItem(cJSON_GetObjectItem(body, "messages"), 0);
        CHECK_EQ_STR(cJSON_GetObjectItem(m, "content")->valuestring, prompts[i]);
        CHECK_EQ_INT(o[i].order, i + 1);
        buf_free(&o[i].tokens);
    }
    cJSON_Delete(reqs);
    env_close(&e);
}

static void cancel_first(struct loop_timer *t, void *ud)
{
    (void)t;
    llm_cancel(ud);
}

static void test_cancel_queued_and_in_flight(void)
{
    fake_reset(&fake);
    fake_script(&fake, "[{\"reply\": \"first\", \"delay\": 5}, {\"reply\": \"third\"}]");
    struct env e;
    env_open(&e, "openai", NULL);
    e.cfg->llm_max_concurrency = 1;
    env_start(&e);
    struct outcome o[3];
    struct llm_call *calls[3];
    int outstanding = 1;
    for (int i = 0; i < 3; i++) {
        outcome_init(&o[i], e.loop, &outstanding);
        struct llm_request r = simple();
        REQUIRE(llm_chat(e.gw, &r, on_done, &o[i], &calls[i]) == 0);
    }
    llm_cancel(calls[1]);                                 /* not started yet */
    loop_timer_add(e.loop, 1000, cancel_first, calls[0]); /* once the server has it */
    run(e.loop);
    CHECK_EQ_INT(o[0].calls, 0);
    CHECK_EQ_INT(o[1].calls, 0);
    CHECK_EQ_INT(o[2].calls, 1);
    CHECK_EQ_STR(o[2].text, "third");
    CHECK_EQ_INT(fake_stat(&fake, "requests"), 2);
    CHECK_EQ_INT(llm_pending(e.gw), 0);
    for (int i = 0; i < 3; i++)
        buf_free(&o[i].tokens);
    env_close(&e);
}

static void test_budget_reserves_calls_in_flight(void)
{
    fake_reset(&fake);
    fake_script(&fake, "[{\"reply\": \"ok\", \"delay\": 0.3, \"usage\": [11, 7]}]");
    struct env e;
    env_open(&e, "openai", NULL);
    e.cfg->llm_max_tokens = 100;
    e.cfg->llm_budget.run.tokens = 150; /* one call's estimate (104) fits, two do not */
    env_start(&e);
    struct outcome o[3];
    int outstanding = 2;
    for (int i = 0; i < 2; i++) {
        outcome_init(&o[i], e.loop, &outstanding);
        struct llm_request r = simple();
        r.run = "run-1";
        REQUIRE(llm_chat(e.gw, &r, on_done, &o[i], NULL) == 0);
    }
    run(e.loop);
    CHECK_EQ_INT(o[0].rc, 0);
    CHECK_EQ_INT(o[1].failure, LLM_FAIL_BUDGET);
    CHECK_CONTAINS(o[1].error, "counting calls in flight");
    CHECK_EQ_INT(fake_stat(&fake, "requests"), 1);
    /* no store: this process's spending (18 tokens) counts */
    outstanding = 1;
    outcome_init(&o[2], e.loop, &outstanding);
    struct llm_request r = simple();
    r.run = "run-1";
    REQUIRE(llm_chat(e.gw, &r, on_done, &o[2], NULL) == 0);
    run(e.loop);
    CHECK_EQ_INT(o[2].rc, 0);
    e.cfg->llm_budget.run.tokens = 120; /* 36 spent + 104 > 120 */
    outcome_init(&o[0], e.loop, &outstanding);
    outstanding = 1;
    REQUIRE(llm_chat(e.gw, &r, on_done, &o[0], NULL) == 0);
    run(e.loop);
    CHECK_EQ_INT(o[0].failure, LLM_FAIL_BUDGET);
    CHECK_CONTAINS(o[0].error, "has used 36 of its 120 tokens");
    CHECK_EQ_INT(fake_stat(&fake, "requests"), 2);
    for (int i = 0; i < 3; i++)
        buf_free(&o[i].tokens);
    env_close(&e);
}

static void test_usage_in_store(void)
{
    fake_reset(&fake);
    fake_script(&fake, "[{\"reply\": \"stored\", \"usage\": [1000, 500]}]");
    char path[] = "/tmp/thalamus-test-llm-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    close(fd);
    unlink(path);
    store_reset_migrations();
    llm_register_migrations();
    struct store *store = NULL;
    REQUIRE(store_open(&store, path) == 0);
    struct env e;
    env_open(&e, "openai", store);
    e.cfg->llm_prices = xcalloc(1, sizeof *e.cfg->llm_prices);
    e.cfg->llm_prices[0] = (struct config_price){xstrdup("test-model"), 2.0, 10.0};
    e.cfg->llm_prices_len = 1;
    env_start(&e);
    struct outcome o;
    outcome_init(&o, e.loop, NULL);
    struct llm_request r = simple();
    r.agent = "critic";
    r.run = "r7";
    REQUIRE(llm_chat(e.gw, &r, on_done, &o, NULL) == 0);
    run(e.loop);
    CHECK_EQ_INT(o.rc, 0);
    CHECK(o.cost_known);
    CHECK(fabs(o.cost - (1000 * 2.0 + 500 * 10.0) / 1e6) < 1e-12);
    sqlite3_stmt *st;
    REQUIRE(sqlite3_prepare_v2(store->db,
                               "SELECT provider, model, agent, run, site, prompt_tokens,"
                               " completion_tokens, cost, outcome, attempts FROM llm_usage",
                               -1, &st, NULL) == SQLITE_OK);
    REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    CHECK_EQ_STR((const char *)sqlite3_column_text(st, 0), "openai");
    CHECK_EQ_STR((const char *)sqlite3_column_text(st, 1), "test-model");
    CHECK_EQ_STR((const char *)sqlite3_column_text(st, 2), "critic");
    CHECK_EQ_STR((const char *)sqlite3_column_text(st, 3), "r7");
    CHECK_EQ_STR((const char *)sqlite3_column_text(st, 4), "critic");
    CHECK_EQ_INT(sqlite3_column_int(st, 5), 1000);
    CHECK_EQ_INT(sqlite3_column_int(st, 6), 500);
    CHECK(fabs(sqlite3_column_double(st, 7) - 0.007) < 1e-12);
    CHECK_EQ_STR((const char *)sqlite3_column_text(st, 8), "ok");
    CHECK_EQ_INT(sqlite3_column_int(st, 9), 1);
    CHECK(sqlite3_step(st) == SQLITE_DONE);
    sqlite3_finalize(st);
    cJSON *report = NULL;
    REQUIRE(llm_usage_report(store, "r7", &report) == 0);
    const cJSON *total = cJSON_GetObjectItem(report, "total");
    CHECK_EQ_INT(cJSON_GetObjectItem(total, "total_tokens")->valueint, 1500);
    cJSON_Delete(report);
    env_close(&e);
    store_close(store);
    unlink(path);
    buf_free(&o.tokens);
}

static void test_stream_tokens_join(void)
{
    const char *providers[] = {"openai", "anthropic"};
    for (int p = 0; p < 2; p++) {
        fake_reset(&fake);
        fake_script(&fake, "[{\"reply\": \"alpha beta gamma delta\", \"usage\": [9, 4]}]");
        struct env e;
        env_open(&e, providers[p], NULL);
        env_start(&e);
        struct outcome o;
        outcome_init(&o, e.loop, NULL);
        struct llm_request r = simple();
        r.on_token = on_token;
        r.token_ud = &o;
        REQUIRE(llm_chat(e.gw, &r, on_done, &o, NULL) == 0);
        run(e.loop);
        CHECK_EQ_INT(o.rc, 0);
        CHECK_EQ_STR(o.text, "alpha beta gamma delta");
        CHECK_EQ_STR(buf_str(&o.tokens), o.text);
        CHECK(o.token_calls >= 4);
        CHECK_EQ_INT(o.prompt, 9);
        CHECK_EQ_INT(o.completion, 4);
        env_close(&e);
        buf_free(&o.tokens);
    }
}

static void test_stream_answered_with_plain_json(void)
{
    fake_reset(&fake);
    fake_script(&fake, "[{\"status\": 200, \"json\": {\"model\": \"m\", \"choices\": "
                       "[{\"message\": {\"content\": \"whole\"}, \"finish_reason\": \"stop\"}],"
                       " \"usage\": {\"prompt_tokens\": 3, \"completion_tokens\": 1}}}]");
    struct env e;
    env_open(&e, "openai", NULL);
    env_start(&e);
    struct outcome o;
    outcome_init(&o, e.loop, NULL);
    struct llm_request r = simple();
    r.on_token = on_token;
    r.token_ud = &o;
    REQUIRE(llm_chat(e.gw, &r, on_done, &o, NULL) == 0);
    run(e.loop);
    CHECK_EQ_INT(o.rc, 0);
    CHECK_EQ_STR(o.text, "whole");
    CHECK_EQ_STR(buf_str(&o.tokens), "whole");
    CHECK_EQ_INT(o.token_calls, 1);
    env_close(&e);
    buf_free(&o.tokens);
}

static void test_dropped_connection_is_retried(void)
{
    fake_reset(&fake);
    fake_script(&fake, "[{\"close\": true}, {\"reply\": \"second try\"}]");
    struct env e;
    env_open(&e, "openai", NULL);
    env_start(&e);
    struct outcome o;
    outcome_init(&o, e.loop, NULL);
    struct llm_request r = simple();
    REQUIRE(llm_chat(e.gw, &r, on_done, &o, NULL) == 0);
    run(e.loop);
    CHECK_EQ_INT(o.rc, 0);
    CHECK_EQ_STR(o.text, "second try");
    CHECK_EQ_INT(o.attempts, 2);
    env_close(&e);
    buf_free(&o.tokens);
}

static void test_structured_repair(void)
{
    fake_reset(&fake);
    fake_script(&fake, "[{\"reply\": \"```json\\n{\\\"ideas\\\": \\\"one\\\"}\\n```\"},"
                       " {\"reply\": \"{\\\"ideas\\\": [\\\"a\\\", \\\"b\\\"], \\\"n\\\": 2}\"}]");
    struct env e;
    env_open(&e, "openai", NULL);
    env_start(&e);
    struct outcome o;
    outcome_init(&o, e.loop, NULL);
    cJSON *schema = cJSON_Parse("{\"ideas\": \"array\", \"n\": \"integer\"}");
    struct llm_request r = simple();
    REQUIRE(llm_chat_json(e.gw, &r, schema, on_done, &o, NULL) == 0);
    run(e.loop);
    CHECK_EQ_INT(o.rc, 0);
    CHECK_EQ_STR(o.json, "{\"ideas\":[\"a\",\"b\"],\"n\":2}");
    CHECK_EQ_INT(o.repairs, 1);
    CHECK_EQ_INT(o.prompt, 22); /* the fake's 11 prompt tokens, twice */
    cJSON *reqs = fake_requests(&fake);
    const cJSON *second = cJSON_GetObjectItem(cJSON_GetArrayItem(reqs, 1), "json");
    const cJSON *msgs = cJSON_GetObjectItem(second, "messages");
    int n = cJSON_GetArraySize(msgs);
    CHECK_EQ_INT(n, 4); /* system instruction, user, assistant, repair */
    CHECK_CONTAINS(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, n - 1), "content")->valuestring,
                   "\"ideas\" must be an array, not a string");
    cJSON_Delete(reqs);
    cJSON_Delete(schema);
    env_close(&e);
    buf_free(&o.tokens);
}

struct cancel_in_token {
    struct llm_call *call;
    struct loop *loop;
    int tokens;
};

static void cancel_on_token(const char *text, size_t len, void *ud)
{
    struct cancel_in_token *ct = ud;
    (void)text;
    (void)len;
    ct->tokens++;
    llm_cancel(ct->call); /* from inside the stream's own token callback */
}

static void never_done(struct llm_call *call, const struct llm_result *res, void *ud)
{
    (void)call;
    (void)res;
    (void)ud;
    CHECK_FAIL("a cancelled call reported a result");
}

static void test_cancel_from_token_callback(void)
{
    fake_reset(&fake);
    fake_script(&fake, "[{\"reply\": \"one two three four five\", \"drip\": 0.05},"
                       " {\"reply\": \"after\"}]");
    struct env e;
    env_open(&e, "anthropic", NULL);
    e.cfg->llm_max_concurrency = 1;
    env_start(&e);
    struct cancel_in_token ct = {.loop = e.loop};
    struct llm_request r = simple();
    r.on_token = cancel_on_token;
    r.token_ud = &ct;
    REQUIRE(llm_chat(e.gw, &r, never_done, NULL, &ct.call) == 0);
    struct outcome o;
    outcome_init(&o, e.loop, NULL);
    struct llm_request next = simple(); /* queued behind it: runs once it is cancelled */
    REQUIRE(llm_chat(e.gw, &next, on_done, &o, NULL) == 0);
    run(e.loop);
    CHECK_EQ_INT(ct.tokens, 1);
    CHECK_EQ_INT(o.rc, 0);
    CHECK_EQ_STR(o.text, "after");
    CHECK_EQ_INT(llm_pending(e.gw), 0);
    env_close(&e);
    buf_free(&o.tokens);
}

static void stop_loop(struct loop_timer *t, void *ud)
{
    (void)t;
    loop_stop(ud);
}

static void test_free_with_calls_in_flight(void)
{
    int fds = check_count_fds();
    fake_reset(&fake);
    fake_script(&fake, "[{\"reply\": \"x\", \"delay\": 2}, {\"reply\": \"x\", \"delay\": 2}]");
    struct env e;
    env_open(&e, "openai", NULL);
    e.cfg->llm_max_concurrency = 1;
    env_start(&e);
    struct outcome o[3];
    for (int i = 0; i < 3; i++) {
        outcome_init(&o[i], e.loop, NULL);
        struct llm_request r = simple();
        REQUIRE(llm_chat(e.gw, &r, on_done, &o[i], NULL) == 0);
    }
    loop_timer_add(e.loop, 300, stop_loop, e.loop);
    CHECK_EQ_INT(loop_run(e.loop), 0);
    CHECK_EQ_INT(llm_pending(e.gw), 3);
    env_close(&e);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(o[i].calls, 0);
        buf_free(&o[i].tokens);
    }
    CHECK_EQ_INT(check_count_fds(), fds);
}

int main(void)
{
    alarm(300);
    signal(SIGPIPE, SIG_IGN);
    const char *proxies[] = {"http_proxy", "HTTP_PROXY", "https_proxy",       "HTTPS_PROXY",
                             "all_proxy",  "ALL_PROXY",  "THALAMUS_PROVIDER", NULL};
    for (const char **p = proxies; *p; p++)
        unsetenv(*p);
    if (fake_start(&fake) < 0) {
        fprintf(stderr, "cannot start tests/e2e/fake_llm.py\n");
        return 1;
    }
    RUN(test_offline_is_async);
    RUN(test_malformed_requests_fail_at_once);
    RUN(test_concurrency_limit);
    RUN(test_fifo_order);
    RUN(test_cancel_queued_and_in_flight);
    RUN(test_budget_reserves_calls_in_flight);
    RUN(test_usage_in_store);
    RUN(test_stream_tokens_join);
    RUN(test_stream_answered_with_plain_json);
    RUN(test_dropped_connection_is_retried);
    RUN(test_structured_repair);
    RUN(test_free_with_calls_in_flight);
    RUN(test_cancel_from_token_callback);
    fake_stop(&fake);
    return check_summary();
}
