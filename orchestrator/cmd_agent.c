/*
 * cmd_agent: `thalamus agent list`, `thalamus agent run` and `thalamus
 * agent new`.
 *
 * list loads every built-in and workspace agent and shows its name, role,
 * strategy, source and stages (or why its file does not load). run starts
 * one agent with the full runtime: the workspace's configuration, memory
 * and model gateway on one event loop; its checked output is printed as
 * JSON on standard output, and a failure prints the error and the Lua
 * traceback on stderr and exits 1 (Ctrl-C cancels it, exit 130). new writes
 * a commented starting file for an agent of a role into the workspace's
 * agents/. list and run work outside a workspace too (built-in agents,
 * defaults, no memory). Depends on command, agent, llm, memory, loop,
 * config, workspace, store, buf, log and cJSON.
 */
#include "command.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "agent_host.h"
#include "alloc.h"
#include "buf.h"
#include "config.h"
#include "error.h"
#include "llm.h"
#include "log.h"
#include "loop.h"
#include "memory.h"
#include "workspace.h"

#define MAX_STDIN_INPUT ((size_t)16 << 20)

static const struct cli_option agent_options[] = {
    {"input", 'i', "JSON", "run: the agent's input, a JSON object ('-' reads it from stdin)"},
    {"run", 0, "RUN", "run: the run the call belongs to (ctx.run; budgets and usage)"},
    {"node", 0, "NODE", "run: the node it works on (ctx.node)"},
    {"strategy", 0, "S", "run, list: llm or offline (default: llm when a model is configured)"},
    {"role", 'r', "ROLE", "new: planner, retriever, coder, critic or tool"},
    {"json", 0, NULL, "list: print JSON"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

struct context {
    struct agent_host h;
    int rc;
};

static int context_open(struct context *c, const char *strategy)
{
    memset(c, 0, sizeof *c);
    return agent_host_open(&c->h, strategy);
}

static void context_close(struct context *c)
{
    agent_host_close(&c->h);
}

/* ---- list ------------------------------------------------------------------ */

static int list_agents(const struct cli_option *o, struct cli_args *args)
{
    struct context c;
    struct agent_info *list = NULL;
    size_t n = 0;
    int rc = context_open(&c, cli_value(o, args, "strategy"));
    if (rc == 0)
        rc = agent_list(c.h.rt, &list, &n);
    if (rc < 0)
        goto cleanup;
    int broken = 0;
    if (cli_flag(o, args, "json")) {
        cJSON *a = cJSON_CreateArray();
        for (size_t i = 0; i < n; i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "name", list[i].name);
            if (list[i].role)
                cJSON_AddStringToObject(e, "role", list[i].role);
            else
                cJSON_AddNullToObject(e, "role");
            cJSON_AddStringToObject(e, "description", list[i].description);
            cJSON_AddStringToObject(e, "source", list[i].source);
            cJSON_AddStringToObject(e, "strategy", list[i].strategy);
            cJSON *stages = cJSON_AddArrayToObject(e, "stages");
            char *copy = xstrdup(list[i].stages);
            for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ","))
                cJSON_AddItemToArray(stages, cJSON_CreateString(tok));
            free(copy);
            if (list[i].error) {
                cJSON_AddStringToObject(e, "error", list[i].error);
                broken++;
            }
            cJSON_AddItemToArray(a, e);
        }
        char *s = agent_json_print(a, true);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(a);
    } else {
        FILE *f = stdout;
        printf("%s%-14s %-10s %-9s %-22s %s%s\n", term_bold(f), "NAME", "ROLE", "STRATEGY",
               "SOURCE", "STAGES", term_reset(f));
        for (size_t i = 0; i < n; i++) {
            const struct agent_info *a = &list[i];
            printf("%-14s %-10s %-9s %-22s %s\n", a->name, a->role ? a->role : "?", a->strategy,
                   a->source, a->stages[0] ? a->stages : "-");
            if (a->error) {
                printf("  %serror: %s%s\n", term_red(f), a->error, term_reset(f));
                broken++;
            } else if (a->description[0]) {
                printf("  %s%s%s\n", term_dim(f), a->description, term_reset(f));
            }
        }
    }
    if (broken) {
        log_error("%d agent file%s could not be loaded", broken, broken == 1 ? "" : "s");
        rc = 1;
    }
cleanup:
    agent_infos_free(list, n);
    context_close(&c);
    return rc;
}

/* ---- run ------------------------------------------------------------------- */

static void on_done(struct agent_task *task, const struct agent_result *res, void *ud)
{
    struct context *c = ud;
    (void)task;
    c->rc = res->rc;
    if (res->rc == 0) {
        char *s = agent_json_print(res->output, true);
        printf("%s\n", s);
        fflush(stdout);
        free(s);
        if (res->attempts > 1)
            log_info("agent %s: the edits applied at attempt %d", res->agent, res->attempts);
    } else {
        log_error("%s", res->error);
        if (res->traceback && !log_json())
            fprintf(stderr, "%s\n", res->traceback);
        else if (res->traceback)
            log_error("%s", res->traceback);
    }
}

static int read_input(const char *arg, cJSON **out)
{
    struct buf b;
    buf_init(&b, MAX_STDIN_INPUT);
    int rc = 0;
    if (!strcmp(arg, "-")) {
        char chunk[65536];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
            if (buf_append(&b, chunk, n) < 0) {
                rc = error_prefix("the input on standard input is too large");
                break;
            }
        if (rc == 0 && ferror(stdin))
            rc = error_set("cannot read the input from standard input");
    } else {
        rc = buf_puts(&b, arg);
    }
    if (rc == 0) {
        *out = cJSON_ParseWithLength(buf_str(&b), b.len);
        if (!*out || !cJSON_IsObject(*out)) {
            cJSON_Delete(*out);
            *out = NULL;
            rc = error_setc(TH_EUSAGE, "--input must be a JSON object, such as "
                                       "'{\"mode\": \"review\", \"ideas\": [...]}'");
        }
    }
    buf_free(&b);
    return rc;
}

static int run_agent(const struct cli_option *o, struct cli_args *args)
{
    if (args->npositional != 2)
        return error_setc(TH_EUSAGE, "'agent run' needs the agent's name, e.g. 'thalamus agent "
                                     "run planner'");
    cJSON *input = NULL;
    const char *in = cli_value(o, args, "input");
    int rc = in ? read_input(in, &input) : 0;
    if (rc < 0)
        return rc;
    struct context c;
    rc = context_open(&c, cli_value(o, args, "strategy"));
    struct agent_call_options co = {cli_value(o, args, "run"), cli_value(o, args, "node")};
    if (rc == 0)
        rc = agent_host_run(&c.h, args->positional[1], input, &co, on_done, &c);
    if (rc == EXIT_INTERRUPTED)
        log_error("interrupted: the agent was cancelled");
    else if (rc == 0)
        rc = c.rc < 0 ? 1 : 0; /* the error is printed already */
    cJSON_Delete(input);
    context_close(&c);
    return rc;
}

/* ---- new ------------------------------------------------------------------- */

static int new_agent(const struct cli_option *o, struct cli_args *args)
{
    if (args->npositional != 2)
        return error_setc(TH_EUSAGE, "'agent new' needs a name, e.g. 'thalamus agent new skeptic "
                                     "--role critic'");
    const char *role = cli_value(o, args, "role");
    if (!role)
        return error_setc(TH_EUSAGE, "'agent new' needs --role: planner, retriever, coder, "
                                     "critic or tool");
    char *ws = NULL, *path = NULL;
    int rc = workspace_find(".", &ws);
    if (rc == 0)
        rc = agent_new_file(ws, args->positional[1], role, &path);
    if (rc == 0) {
        printf("%s\n", path);
        log_info("wrote a starting %s; edit it, then try 'thalamus agent run %s'", role,
                 args->positional[1]);
    }
    free(path);
    free(ws);
    return rc;
}

static int cmd_agent(const struct command *cmd, struct cli_args *args)
{
    const struct cli_option *o = cmd->options;
    const char *sub = args->positional[0];
    if (!strcmp(sub, "list")) {
        if (args->npositional > 1)
            return error_setc(TH_EUSAGE, "'agent list' takes no arguments");
        return list_agents(o, args);
    }
    if (!strcmp(sub, "run"))
        return run_agent(o, args);
    if (!strcmp(sub, "new"))
        return new_agent(o, args);
    return error_setc(TH_EUSAGE, "unknown agent subcommand '%s'; use 'list', 'run' or 'new'", sub);
}

const struct command command_agent = {
    "agent",
    "list [--json] | run NAME [--input JSON|-] [--run RUN] [--node NODE] | new NAME --role ROLE",
    "list, run or create Lua agents",
    "'list' shows every agent: the built-in planner, retriever, coder and critic and the\n"
    "workspace's agents/*.lua (a file with a built-in's name replaces it), with its role,\n"
    "the strategy it will use (llm when a model is configured, else offline), where it\n"
    "comes from and the loop stages it serves (agents.extra adds some).\n"
    "\n"
    "'run' runs one agent with the full runtime (configuration, memory, model gateway)\n"
    "and prints its output as JSON. --input gives its input as a JSON object ('-' reads\n"
    "it from standard input). A coder given \"dir\" applies its edits there. A failure\n"
    "prints the error and the Lua traceback and exits 1; Ctrl-C cancels the agent.\n"
    "\n"
    "'new' writes agents/NAME.lua, a commented starting file for an agent of ROLE.\n"
    "See docs/agents.md.",
    agent_options,
    1,
    2,
    cmd_agent};
