/*
 * cmd_llm: the model commands `thalamus ask`, `thalamus models` and
 * `thalamus usage`.
 *
 * ask and models work inside and outside a workspace. Inside one they use
 * its thalamus.lua and record every call in its database (usage, cost,
 * cache, budgets); outside one they use the defaults and the environment,
 * and nothing is recorded (so the cache and per-run budgets, which live in
 * the database, are not available there). Each runs one event loop until its
 * request is answered; Ctrl-C (or SIGTERM) cancels the request in flight and
 * exits with status 130. usage reads the workspace's database only.
 * Depends on command, llm, loop, config, workspace, store, buf, log and
 * cJSON.
 */
#include "command.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "config.h"
#include "error.h"
#include "llm.h"
#include "log.h"
#include "loop.h"
#include "workspace.h"

#define MAX_STDIN_PROMPT ((size_t)16 << 20)

/* ---- what the commands share ------------------------------------------ */

struct context {
    char *workspace; /* NULL outside one */
    struct config *cfg;
    struct store *store; /* NULL outside a workspace */
    struct loop *loop;
    struct llm *gw;
    struct llm_call *call;
    bool interrupted;
    bool finished;
    int rc;
};

static int context_open(struct context *ctx, bool need_store, bool need_gateway)
{
    memset(ctx, 0, sizeof *ctx);
    int rc = workspace_find(".", &ctx->workspace);
    if (rc == TH_ENOTFOUND && !need_store) {
        error_clear();
        rc = 0;
    }
    if (rc < 0)
        return rc;
    if ((rc = config_load(&ctx->cfg, ctx->workspace)) < 0)
        return rc;
    if (ctx->workspace) {
        llm_register_migrations();
        if ((rc = workspace_store_open(ctx->workspace, &ctx->store)) < 0)
            return rc;
    }
    if (!need_gateway)
        return 0;
    if ((rc = loop_new(&ctx->loop)) < 0)
        return rc;
    return llm_new(&ctx->gw, ctx->loop, ctx->cfg, ctx->store);
}

static void context_close(struct context *ctx)
{
    llm_free(ctx->gw);
    loop_free(ctx->loop);
    store_close(ctx->store);
    config_free(ctx->cfg);
    free(ctx->workspace);
}

static void on_interrupt(struct loop *loop, int signo, int count, void *ud)
{
    struct context *ctx = ud;
    (void)signo;
    (void)count;
    if (ctx->finished)
        return;
    llm_cancel(ctx->call);
    ctx->call = NULL;
    ctx->interrupted = true;
    loop_stop(loop);
}

/* Runs the loop until the call finishes or the user interrupts it. */
static int run_call(struct context *ctx)
{
    if (loop_on_shutdown(ctx->loop, on_interrupt, ctx) < 0)
        return TH_ERR;
    if (loop_run(ctx->loop) < 0)
        return TH_ERR;
    if (ctx->interrupted) {
        log_error("interrupted: the request was cancelled");
        return EXIT_INTERRUPTED;
    }
    return ctx->rc;
}

static void print_json(cJSON *j)
{
    char *s = cJSON_Print(j);
    printf("%s\n", s);
    free(s);
}

/* ---- thalamus ask ------------------------------------------------------- */

static const struct cli_option ask_options[] = {
    {"provider", 'p', "P", "provider: openai, anthropic or offline (default: llm.provider)"},
    {"model", 'm', "M", "model (default: llm.model)"},
    {"system", 's', "TEXT", "system prompt"},
    {"stream", 0, NULL, "print the answer as it arrives"},
    {"json", 0, NULL, "print the answer with usage, cost and timing as JSON"},
    {"json-object", 0, NULL, "ask for a JSON object, checked and repaired (llm.json_repairs)"},
    {"schema", 0, "JSON", "keys the object must have, e.g. '{\"title\":\"string\"}'"},
    {"temperature", 't', "T", "sampling temperature, 0 to 2 (default: llm.temperature)"},
    {"max-tokens", 0, "N", "most tokens in the answer (default: llm.max_tokens)"},
    {"stop", 0, "TEXT", "stop sequence"},
    {"seed", 0, "N", "sampling seed (openai)"},
    {"run", 0, "RUN", "count the call against RUN's budget (llm.budget)"},
    {"agent", 0, "NAME", "caller recorded in usage (default: ask)"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

struct ask_state {
    struct context *ctx;
    bool json, stream, object;
    bool streamed_any;
};

static void on_token(const char *text, size_t len, void *ud)
{
    struct ask_state *st = ud;
    if (st->json)
        return;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    st->streamed_any = true;
}

static cJSON *result_json(const struct llm_result *res)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "answer", res->text);
    if (res->json)
        cJSON_AddItemToObject(o, "object", cJSON_Duplicate(res->json, 1));
    cJSON_AddStringToObject(o, "provider", res->provider);
    cJSON_AddStringToObject(o, "model", res->model);
    cJSON_AddStringToObject(o, "finish_reason", res->finish_reason);
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)res->prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)res->completion_tokens);
    cJSON_AddNumberToObject(u, "total_tokens",
                            (double)(res->prompt_tokens + res->completion_tokens));
    cJSON_AddBoolToObject(u, "estimated", res->usage_estimated);
    if (res->cost_known)
        cJSON_AddNumberToObject(o, "cost", res->cost);
    else
        cJSON_AddNullToObject(o, "cost");
    cJSON_AddBoolToObject(o, "cached", res->cached);
    cJSON_AddNumberToObject(o, "latency_ms", (double)res->latency_ms);
    cJSON_AddNumberToObject(o, "attempts", res->attempts);
    cJSON_AddNumberToObject(o, "repairs", res->repairs);
    return o;
}

static void ask_done(struct llm_call *call, const struct llm_result *res, void *ud)
{
    struct ask_state *st = ud;
    struct context *ctx = st->ctx;
    (void)call;
    ctx->call = NULL;
    ctx->finished = true;
    ctx->rc = res->rc;
    if (res->rc < 0) {
        if (st->streamed_any)
            putchar('\n');
        return; /* the message is recorded with error_set() */
    }
    if (st->json) {
        cJSON *o = result_json(res);
        print_json(o);
        cJSON_Delete(o);
    } else if (st->object) {
        char *s = cJSON_Print(res->json);
        printf("%s\n", s);
        free(s);
    } else if (st->stream) {
        if (!st->streamed_any || (res->text[0] && res->text[strlen(res->text) - 1] != '\n'))
            putchar('\n');
    } else {
        size_t n = strlen(res->text);
        printf("%s%s", res->text, n && res->text[n - 1] == '\n' ? "" : "\n");
    }
    fflush(stdout);
}

static int read_prompt(const char *arg, struct buf *out)
{
    if (strcmp(arg, "-"))
        return buf_puts(out, arg);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
        if (buf_append(out, chunk, n) < 0)
            return error_prefix("the prompt on standard input is too large");
    if (ferror(stdin))
        return error_set("cannot read the prompt from standard input");
    if (out->len == 0)
        return error_setc(TH_EUSAGE, "the prompt on standard input is empty");
    return 0;
}

static int parse_number(const char *option, const char *value, double min, double max, double *out)
{
    char *end;
    double v = strtod(value, &end);
    if (end == value || *end || !(v >= min && v <= max))
        return error_setc(TH_EUSAGE, "option '--%s' needs a number from %g to %g, got '%s'", option,
                          min, max, value);
    *out = v;
    return 0;
}

static int cmd_ask(const struct command *cmd, struct cli_args *args)
{
    const struct cli_option *o = cmd->options;
    struct context ctx;
    struct buf prompt;
    cJSON *schema = NULL;
    struct ask_state st = {.ctx = &ctx};
    struct llm_message msgs[2];
    size_t nmsgs = 0;
    struct llm_request req = {0};
    const char *stop[1];
    int rc;

    buf_init(&prompt, MAX_STDIN_PROMPT);
    memset(&ctx, 0, sizeof ctx);
    st.json = cli_flag(o, args, "json");
    st.stream = cli_flag(o, args, "stream");
    st.object = cli_flag(o, args, "json-object") || cli_value(o, args, "schema");
    if (st.object && st.stream) {
        rc = error_setc(TH_EUSAGE, "--stream cannot be combined with --json-object or --schema");
        goto cleanup;
    }
    if (cli_value(o, args, "schema")) {
        schema = cJSON_Parse(cli_value(o, args, "schema"));
        if (!schema) {
            rc = error_setc(TH_EUSAGE, "--schema is not valid JSON; write it like "
                                       "'{\"title\": \"string\", \"score\": \"number\"}'");
            goto cleanup;
        }
        if ((rc = llm_schema_check(schema)) < 0)
            goto cleanup;
    }
    if (cli_value(o, args, "temperature")) {
        req.has_temperature = true;
        if ((rc = parse_number("temperature", cli_value(o, args, "temperature"), 0, 2,
                               &req.temperature)) < 0)
            goto cleanup;
    }
    if (cli_value(o, args, "max-tokens") &&
        (rc = cli_positive_int("max-tokens", cli_value(o, args, "max-tokens"), &req.max_tokens)) <
            0)
        goto cleanup;
    if (cli_value(o, args, "seed")) {
        double seed;
        if ((rc = parse_number("seed", cli_value(o, args, "seed"), -9007199254740991.0,
                               9007199254740991.0, &seed)) < 0)
            goto cleanup;
        req.has_seed = true;
        req.seed = (long long)seed;
    }
    if ((rc = read_prompt(args->positional[0], &prompt)) < 0)
        goto cleanup;
    if ((rc = context_open(&ctx, false, true)) < 0)
        goto cleanup;

    if (cli_value(o, args, "system"))
        msgs[nmsgs++] = (struct llm_message){"system", cli_value(o, args, "system")};
    msgs[nmsgs++] = (struct llm_message){"user", buf_str(&prompt)};
    req.provider = cli_value(o, args, "provider");
    req.model = cli_value(o, args, "model");
    req.messages = msgs;
    req.nmessages = nmsgs;
    if (cli_value(o, args, "stop")) {
        stop[0] = cli_value(o, args, "stop");
        req.stop = stop;
        req.nstop = 1;
    }
    req.json = st.object;
    req.schema = schema;
    if (st.object && !schema) {
        schema = cJSON_CreateObject(); /* any object */
        req.schema = schema;
    }
    if (st.stream) {
        req.on_token = on_token;
        req.token_ud = &st;
    }
    req.agent = cli_value(o, args, "agent") ? cli_value(o, args, "agent") : "ask";
    req.run = cli_value(o, args, "run");
    if ((rc = llm_chat(ctx.gw, &req, ask_done, &st, &ctx.call)) < 0)
        goto cleanup;
    rc = run_call(&ctx);
cleanup:
    context_close(&ctx);
    cJSON_Delete(schema);
    buf_free(&prompt);
    return rc;
}

const struct command command_ask = {
    "ask",
    "[--provider P] [--model M] [--system TEXT] [--stream] [--json] PROMPT",
    "ask the configured model one question",
    "Sends PROMPT ('-' reads it from standard input) to the model and prints the answer.\n"
    "--stream prints it as it arrives; --json prints it with the tokens used, the cost\n"
    "(from llm.prices) and the timing (with --stream too, the answer is streamed but only\n"
    "the JSON is printed); --json-object asks for a JSON object, extracts and\n"
    "checks it (with --schema, its keys and types) and asks again when it is not right.\n"
    "Inside a workspace the call is recorded in its database (see 'thalamus usage'), the\n"
    "response cache (llm.cache) and, with --run, the run's budget (llm.budget) apply;\n"
    "outside one, only the defaults and the environment are used and nothing is recorded.\n"
    "Ctrl-C cancels the request. See docs/llm.md.",
    ask_options,
    1,
    1,
    cmd_ask};

/* ---- thalamus models ---------------------------------------------------- */

static const struct cli_option models_options[] = {
    {"provider", 'p', "P", "provider: openai or anthropic (default: llm.provider)"},
    {"json", 0, NULL, "print JSON"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

struct models_state {
    struct context *ctx;
    bool json;
};

static void models_done(struct llm_call *call, const struct llm_result *res, void *ud)
{
    struct models_state *st = ud;
    (void)call;
    st->ctx->call = NULL;
    st->ctx->finished = true;
    st->ctx->rc = res->rc;
    if (res->rc < 0)
        return;
    if (st->json) {
        cJSON *copy = cJSON_Duplicate(res->json, 1);
        print_json(copy);
        cJSON_Delete(copy);
        return;
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, res->json)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id");
        const cJSON *extra = cJSON_GetObjectItemCaseSensitive(m, "display_name");
        if (!cJSON_IsString(extra))
            extra = cJSON_GetObjectItemCaseSensitive(m, "owned_by");
        if (cJSON_IsString(extra))
            printf("%-40s %s%s%s\n", id->valuestring, term_dim(stdout), extra->valuestring,
                   term_reset(stdout));
        else
            printf("%s\n", id->valuestring);
    }
}

static int cmd_models(const struct command *cmd, struct cli_args *args)
{
    struct context ctx;
    struct models_state st = {&ctx, cli_flag(cmd->options, args, "json")};
    int rc = context_open(&ctx, false, true);
    if (rc == 0)
        rc = llm_models(ctx.gw, cli_value(cmd->options, args, "provider"), models_done, &st,
                        &ctx.call);
    if (rc == 0)
        rc = run_call(&ctx);
    context_close(&ctx);
    return rc;
}

const struct command command_models = {
    "models",
    "[--provider P] [--json]",
    "list the provider's models",
    "Asks the provider (llm.provider, or --provider) for the models it serves: GET\n"
    "{base_url}/models for openai-compatible servers, the Models API for anthropic.",
    models_options,
    0,
    0,
    cmd_models};

/* ---- thalamus usage ----------------------------------------------------- */

static const struct cli_option usage_options[] = {
    {"run", 0, "RUN", "only the calls of run RUN"},
    {"json", 0, NULL, "print JSON"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static void usage_row(const char *label, const cJSON *row)
{
    const cJSON *cost = cJSON_GetObjectItemCaseSensitive(row, "cost");
    char cost_text[32];
    if (cJSON_IsNumber(cost))
        snprintf(cost_text, sizeof cost_text, "%.6f", cost->valuedouble);
    else
        snprintf(cost_text, sizeof cost_text, "unknown");
    printf("%-36s %7.0f %12.0f %12.0f %12s\n", label,
           cJSON_GetObjectItemCaseSensitive(row, "calls")->valuedouble,
           cJSON_GetObjectItemCaseSensitive(row, "prompt_tokens")->valuedouble,
           cJSON_GetObjectItemCaseSensitive(row, "completion_tokens")->valuedouble, cost_text);
}

static const char *str_or(const cJSON *o, const char *key, const char *fallback)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : fallback;
}

static void print_usage(const cJSON *report)
{
    const char *run = str_or(report, "run", NULL);
    FILE *out = stdout;
    if (run)
        printf("Model usage of run '%s'\n\n", run);
    else
        printf("Model usage of all calls recorded in this workspace\n\n");
    printf("%s%-36s %7s %12s %12s %12s%s\n", term_bold(out), "model", "calls", "prompt",
           "completion", "cost", term_reset(out));
    const cJSON *row;
    cJSON_ArrayForEach(row, cJSON_GetObjectItemCaseSensitive(report, "by_model"))
    {
        char label[256];
        snprintf(label, sizeof label, "%s/%s", str_or(row, "provider", "?"),
                 str_or(row, "model", "?"));
        usage_row(label, row);
    }
    printf("\n%s%-36s %7s %12s %12s %12s%s\n", term_bold(out), "caller (agent / site)", "calls",
           "prompt", "completion", "cost", term_reset(out));
    cJSON_ArrayForEach(row, cJSON_GetObjectItemCaseSensitive(report, "by_caller"))
    {
        const char *agent = str_or(row, "agent", "(none)");
        const char *site = str_or(row, "site", NULL);
        char label[256];
        if (site && strcmp(site, agent))
            snprintf(label, sizeof label, "%s / %s", agent, site);
        else
            snprintf(label, sizeof label, "%s", agent);
        usage_row(label, row);
    }
    printf("\n");
    usage_row("total", cJSON_GetObjectItemCaseSensitive(report, "total"));
}

static int cmd_usage(const struct command *cmd, struct cli_args *args)
{
    struct context ctx;
    cJSON *report = NULL;
    int rc = context_open(&ctx, true, false);
    if (rc == 0)
        rc = llm_usage_report(ctx.store, cli_value(cmd->options, args, "run"), &report);
    if (rc == 0) {
        if (cli_flag(cmd->options, args, "json"))
            print_json(report);
        else
            print_usage(report);
    }
    cJSON_Delete(report);
    context_close(&ctx);
    return rc;
}

const struct command command_usage = {
    "usage",
    "[--run RUN] [--json]",
    "show the tokens and cost of model calls",
    "Sums the model calls recorded in the workspace's database by model and by caller\n"
    "(agent and call site), for every call or for one run: calls, prompt and completion\n"
    "tokens, and cost from llm.prices ('unknown' when a model has no price).",
    usage_options,
    0,
    0,
    cmd_usage};
