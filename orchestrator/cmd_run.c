/*
 * cmd_run: `thalamus run` and `thalamus resume`, which drive the research
 * loop, and the review commands `thalamus runs`, `status`, `log` and
 * `show`, which read what a run recorded in the store and in git. Every
 * review command takes --json. Depends on command, research, ledger,
 * workspace, store, log and cJSON.
 */
#include "command.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "ledger.h"
#include "llm.h"
#include "log.h"
#include "memory.h"
#include "research_internal.h"
#include "workspace.h"

/* ---- run and resume ------------------------------------------------------------- */

static const struct cli_option run_options[] = {
    {"rounds", 'r', "N", "rounds of the loop: expansions of the tree (loop.rounds)"},
    {"ideas", 'k', "K", "ideas proposed per expansion (loop.ideas)"},
    {"jobs", 'j', "J", "experiments run at the same time (loop.jobs)"},
    {"drafts", 0, "N", "first drafts from the baseline (loop.drafts)"},
    {"keep", 0, "M", "ideas kept after the review (loop.keep)"},
    {"experiments", 'n', "N", "stop after N experiments (loop.experiments)"},
    {"iterations", 0, "N", "stop after N iterations of the search"},
    {"seconds", 0, "S", "stop after S seconds of wall time (loop.seconds)"},
    {"tokens", 0, "N", "stop after N model tokens (llm.budget.tokens)"},
    {"cost", 0, "X", "stop after spending X on models (llm.budget.cost)"},
    {"target", 0, "VALUE", "stop once an experiment's metric reaches VALUE"},
    {"provider", 0, "P", "offline, openai or anthropic (llm.provider)"},
    {"model", 'm', "M", "model name (llm.model)"},
    {"seed", 0, "N", "seed of the search (default: from the clock)"},
    {"json", 0, NULL, "write events as JSON lines"},
    {"review", 0, NULL, "approve, veto or edit ideas before they run (loop.autonomy)"},
    {"review-file", 0, "FILE", "the review's decisions, without a terminal (docs/chat.md)"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static int opt_long(const struct cli_option *o, struct cli_args *a, const char *name, long *out)
{
    const char *v = cli_value(o, a, name);
    if (!v)
        return 0;
    char *opt = xasprintf("--%s", name);
    int rc = cli_positive_int(opt, v, out);
    free(opt);
    return rc;
}

static int run_or_resume(const struct command *cmd, struct cli_args *args, const char *resume)
{
    const struct cli_option *o = cmd->options;
    struct research_options ro;
    memset(&ro, 0, sizeof ro);
    ro.target = NAN;
    ro.cost = NAN;
    ro.resume = resume;
    int rc = 0;
    if ((rc = opt_long(o, args, "rounds", &ro.rounds)) < 0 ||
        (rc = opt_long(o, args, "ideas", &ro.ideas)) < 0 ||
        (rc = opt_long(o, args, "jobs", &ro.jobs)) < 0 ||
        (rc = opt_long(o, args, "drafts", &ro.drafts)) < 0 ||
        (rc = opt_long(o, args, "keep", &ro.keep)) < 0 ||
        (rc = opt_long(o, args, "experiments", &ro.experiments)) < 0 ||
        (rc = opt_long(o, args, "seconds", &ro.seconds)) < 0 ||
        (rc = opt_long(o, args, "iterations", &ro.iterations)) < 0 ||
        (rc = opt_long(o, args, "tokens", &ro.tokens)) < 0 ||
        (rc = opt_long(o, args, "seed", &ro.seed)) < 0)
        return rc;
    const char *target = cli_value(o, args, "target");
    if (target) {
        char *end;
        ro.target = strtod(target, &end);
        if (end == target || *end || !isfinite(ro.target))
            return error_setc(TH_EUSAGE,
                              "--target needs a number, such as '--target 0.95', not "
                              "'%s'",
                              target);
    }
    const char *cost = cli_value(o, args, "cost");
    if (cost) {
        char *end;
        ro.cost = strtod(cost, &end);
        if (end == cost || *end || !isfinite(ro.cost) || ro.cost < 0)
            return error_setc(TH_EUSAGE, "--cost needs an amount, such as '--cost 2.5', not '%s'",
                              cost);
    }
    const char *provider = cli_value(o, args, "provider");
    if (provider)
        setenv("THALAMUS_PROVIDER", provider, 1);
    const char *model = cli_value(o, args, "model");
    if (model)
        setenv("THALAMUS_MODEL", model, 1);
    ro.progress = cli_flag(o, args, "json") ? RESEARCH_PROGRESS_JSON : RESEARCH_PROGRESS_AUTO;
    ro.review = cli_flag(o, args, "review");
    ro.review_file = cli_value(o, args, "review-file");
    char *ws = NULL;
    if ((rc = workspace_find(".", &ws)) < 0)
        return rc;
    ro.workspace = ws;
    rc = research_run(&ro);
    free(ws);
    return rc;
}

static int cmd_run(const struct command *cmd, struct cli_args *args)
{
    return run_or_resume(cmd, args, NULL);
}

static int cmd_resume(const struct command *cmd, struct cli_args *args)
{
    return run_or_resume(cmd, args, args->npositional ? args->positional[0] : "");
}

const struct command command_run = {
    "run",
    "[--rounds N] [--ideas K] [--jobs J] [--experiments N] [--seconds S] [--tokens N] "
    "[--cost X] [--target V] [--provider P] [--model M] [--review [--review-file F]] [--json]",
    "run a research loop",
    "Runs the baseline experiment, then grows a tree of experiments: each round picks a\n"
    "node by UCT, retrieves what is known, asks the planner for ideas, drops those already\n"
    "tried, keeps the critic's best, and runs each in the sandbox after the coder applied\n"
    "it; failures get traceback-guided debug attempts. Every experiment is a git commit\n"
    "under refs/thalamus/runs/RUN/ (see docs/git.md). Stops at the first limit reached:\n"
    "rounds, iterations, experiments, seconds, tokens or cost (llm.budget), --target, or\n"
    "when nothing is left to try. Ctrl-C stops cleanly; 'thalamus resume' continues. Options "
    "override thalamus.lua.\n"
    "--review (or loop.autonomy) has you approve, veto or edit the ideas before they run,\n"
    "and at loop.autonomy = \"review-code\" each code change too: on the terminal, or from\n"
    "the decisions file --review-file FILE (see docs/chat.md).",
    run_options,
    0,
    0,
    cmd_run};

const struct command command_resume = {
    "resume",
    "[RUN] [--jobs J] [--rounds N] [--experiments N] [--seconds S] [--target V] [--json]",
    "continue an interrupted run",
    "Continues RUN (default: the latest run) where it stopped: experiments that were\n"
    "recorded stay as they are, one that was running runs again, and a commit made but\n"
    "not yet recorded is found under the node's ref. The run's own limits apply unless\n"
    "given again here (give a larger --rounds or --experiments to go further).",
    run_options,
    0,
    1,
    cmd_resume};

/* ---- review: shared ------------------------------------------------------------------ */

static const struct cli_option review_options[] = {
    {"json", 0, NULL, "print JSON"},
    {"run", 0, "RUN", "show: the run the node belongs to (default: the latest)"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

struct review {
    char *workspace;
    struct store *store;
    struct rs_run run;
    struct rs_node *nodes;
    size_t n;
};

static int review_open(struct review *v, const char *run)
{
    memset(v, 0, sizeof *v);
    int rc = workspace_find(".", &v->workspace);
    if (rc < 0)
        return rc;
    llm_register_migrations();
    memory_register_migrations();
    research_register_migrations();
    if ((rc = workspace_store_open(v->workspace, &v->store)) < 0)
        return rc;
    if (run == (const char *)-1)
        return 0;
    if ((rc = rs_run_load(v->store, run, &v->run)) < 0)
        return rc;
    return rs_nodes_load(v->store, v->run.id, &v->nodes, &v->n);
}

static void review_close(struct review *v)
{
    rs_nodes_free(v->nodes, v->n);
    rs_run_clear(&v->run);
    store_close(v->store);
    free(v->workspace);
}

static void print_json(cJSON *j)
{
    char *s = agent_json_print(j, true);
    printf("%s\n", s);
    free(s);
    cJSON_Delete(j);
}

static char *metric_text(double v)
{
    return isnan(v) ? xstrdup("-") : xasprintf("%.6g", v);
}

static const char *status_colour(const char *status, FILE *f)
{
    if (!strcmp(status, "ok"))
        return term_green(f);
    if (!strcmp(status, "pending") || !strcmp(status, "running"))
        return term_yellow(f);
    return term_red(f);
}

/* ---- runs ----------------------------------------------------------------------------- */

static int cmd_runs(const struct command *cmd, struct cli_args *args)
{
    struct review v;
    struct rs_run *runs = NULL;
    size_t nruns = 0;
    int rc = review_open(&v, (const char *)-1);
    if (rc == 0)
        rc = rs_runs_list(v.store, &runs, &nruns);
    if (rc < 0)
        goto cleanup;
    bool json = cli_flag(cmd->options, args, "json");
    cJSON *a = json ? cJSON_CreateArray() : NULL;
    FILE *f = stdout;
    if (!json && nruns == 0)
        printf("no run yet; start one with 'thalamus run'\n");
    else if (!json)
        printf("%s%-5s %-12s %-20s %5s  %-24s %s%s\n", term_bold(f), "RUN", "STATUS", "STARTED",
               "EXPS", "BEST", "STOPPED BECAUSE", term_reset(f));
    for (size_t i = 0; i < nruns && rc == 0; i++) {
        struct rs_node *nodes = NULL;
        size_t n = 0;
        if ((rc = rs_nodes_load(v.store, runs[i].id, &nodes, &n)) < 0)
            break;
        if (json) {
            cJSON_AddItemToArray(a, research_run_json(v.store, &runs[i], nodes, n));
        } else {
            long exps = 0;
            for (size_t k = 1; k < n; k++)
                exps += nodes[k].order > 0;
            int best = research_best(&runs[i], nodes, n);
            char *bm = best >= 0 ? metric_text(nodes[best].metric) : xstrdup("-");
            char *bt = best >= 0 ? xasprintf("n%d %s=%s", best, runs[i].metric, bm) : xstrdup("-");
            const char *reason = runs[i].stop_reason ? runs[i].stop_reason : "";
            const char *status = runs[i].status;
            if (!strcmp(status, "running") && !rs_run_active(v.store, runs[i].id)) {
                status = "interrupted";
                reason = "the process ended without saving";
            }
            printf("%-5s %-12s %-20s %5ld  %-24s %.*s\n", runs[i].id, status, runs[i].started, exps,
                   bt, (int)strcspn(reason, "\n"), reason);
            free(bm);
            free(bt);
        }
        rs_nodes_free(nodes, n);
    }
    if (json && rc == 0)
        print_json(a);
    else
        cJSON_Delete(a);
cleanup:
    rs_runs_free(runs, nruns);
    review_close(&v);
    return rc;
}

/* ---- status ---------------------------------------------------------------------------- */

static int cmd_status(const struct command *cmd, struct cli_args *args)
{
    struct review v;
    int rc = review_open(&v, args->npositional ? args->positional[0] : NULL);
    if (rc < 0)
        goto cleanup;
    const char *statuses[] = {"ok",  "failed", "timeout", "invalid",
                              "oom", "killed", "running", "pending"};
    long counts[8] = {0};
    for (size_t i = 0; i < v.n; i++)
        for (int s = 0; s < 8; s++)
            if (!strcmp(rs_node_status(&v.nodes[i]), statuses[s]))
                counts[s]++;
    cJSON *doc = research_run_json(v.store, &v.run, v.nodes, v.n);
    cJSON *c = cJSON_AddObjectToObject(doc, "counts");
    for (int s = 0; s < 8; s++)
        cJSON_AddNumberToObject(c, statuses[s], (double)counts[s]);
    double base = v.n ? v.nodes[0].metric : NAN;
    int best = research_best(&v.run, v.nodes, v.n);
    if (best >= 0 && !isnan(base))
        cJSON_AddNumberToObject(doc, "improvement", v.nodes[best].metric - base);
    else
        cJSON_AddNullToObject(doc, "improvement");
    if (cli_flag(cmd->options, args, "json")) {
        print_json(doc);
        goto cleanup;
    }
    FILE *f = stdout;
    const char *shown = cJSON_GetObjectItem(doc, "status")->valuestring;
    printf("%srun %s%s  %s  (%s, %s %s)\n", term_bold(f), v.run.id, term_reset(f), shown,
           v.run.task_name ? v.run.task_name : "", v.run.goal, v.run.metric);
    printf("started   %s%s%s\n", v.run.started, v.run.finished ? ", finished " : "",
           v.run.finished ? v.run.finished : "");
    printf("model     %s%s%s\n", v.run.provider, v.run.model && v.run.model[0] ? "/" : "",
           v.run.model ? v.run.model : "");
    char *bm = metric_text(base);
    printf("baseline  n0 %s = %s  (commit %.12s)\n", v.run.metric, bm, v.run.baseline);
    free(bm);
    if (best >= 0) {
        const struct rs_node *b = &v.nodes[best];
        char *m = metric_text(b->metric);
        printf("best      n%d %s = %s", best, v.run.metric, m);
        if (!isnan(base))
            printf("  (%+.6g over the baseline%s)", b->metric - base, base != 0 ? "" : "");
        printf("  %s  %.12s\n", b->title ? b->title : "", b->commit ? b->commit : "");
        free(m);
    } else {
        printf("best      none yet\n");
    }
    printf("nodes    ");
    for (int s = 0; s < 8; s++)
        if (counts[s])
            printf(" %s%ld %s%s", status_colour(statuses[s], f), counts[s], statuses[s],
                   term_reset(f));
    printf("\n");
    cJSON *budget = cJSON_GetObjectItem(doc, "budget");
    cJSON *limits = cJSON_GetObjectItem(budget, "limits");
    const char *keys[] = {"experiments", "rounds", "tokens", "cost", "seconds"};
    printf("budget   ");
    for (int k = 0; k < 5; k++) {
        cJSON *used = cJSON_GetObjectItem(budget, keys[k]);
        cJSON *lim = cJSON_GetObjectItem(limits, keys[k]);
        if (!cJSON_IsNumber(used))
            continue;
        if (cJSON_IsNumber(lim))
            printf(" %s %g/%g", keys[k], used->valuedouble, lim->valuedouble);
        else
            printf(" %s %g", keys[k], used->valuedouble);
    }
    printf("\n");
    const cJSON *why = cJSON_GetObjectItem(doc, "stop_reason");
    if (cJSON_IsString(why))
        for (const char *p = why->valuestring; *p;) {
            size_t len = strcspn(p, "\n");
            printf("stopped   %.*s\n", (int)len, p);
            p += len + (p[len] == '\n');
        }
    if (!strcmp(shown, "interrupted"))
        printf("continue with 'thalamus resume %s'\n", v.run.id);
    cJSON_Delete(doc);
cleanup:
    review_close(&v);
    return rc;
}

/* ---- log -------------------------------------------------------------------------------- */

static void log_walk(const struct review *v, long id, struct buf *prefix, bool last, bool root,
                     char ***labels, long **order, size_t *k)
{
    char *label = root ? xasprintf("n%ld", id)
                       : xasprintf("%s%s n%ld", buf_str(prefix), last ? "└─" : "├─", id);
    (*labels)[*k] = label;
    (*order)[*k] = id;
    (*k)++;
    size_t mark = prefix->len;
    if (!root)
        buf_puts(prefix, last ? "   " : "│  ");
    long lastchild = -1;
    for (size_t i = 0; i < v->n; i++)
        if (v->nodes[i].parent == id)
            lastchild = (long)i;
    for (size_t i = 0; i < v->n; i++)
        if (v->nodes[i].parent == id)
            log_walk(v, (long)i, prefix, (long)i == lastchild, false, labels, order, k);
    prefix->len = mark;
    if (prefix->data)
        prefix->data[mark] = '\0';
}

/* Display width of a UTF-8 string (code points). */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

static int cmd_log(const struct command *cmd, struct cli_args *args)
{
    struct review v;
    int rc = review_open(&v, args->npositional ? args->positional[0] : NULL);
    if (rc < 0)
        goto cleanup;
    if (cli_flag(cmd->options, args, "json")) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "run", v.run.id);
        cJSON_AddItemToObject(doc, "nodes", research_nodes_json(v.nodes, v.n));
        print_json(doc);
        goto cleanup;
    }
    if (v.n == 0) {
        printf("run %s has no experiment yet\n", v.run.id);
        goto cleanup;
    }
    char **labels = xcalloc(v.n, sizeof *labels);
    long *order = xcalloc(v.n, sizeof *order);
    size_t k = 0;
    struct buf prefix;
    buf_init(&prefix, 1 << 16);
    log_walk(&v, 0, &prefix, true, true, &labels, &order, &k);
    buf_free(&prefix);
    size_t w = 4;
    for (size_t i = 0; i < k; i++)
        if (width(labels[i]) > w)
            w = width(labels[i]);
    FILE *f = stdout;
    int best = research_best(&v.run, v.nodes, v.n);
    printf("%srun %s%s  %s %s; %s%s\n", term_bold(f), v.run.id, term_reset(f), v.run.goal,
           v.run.metric, v.run.status, best >= 0 ? "; * marks the best" : "");
    printf("%s%-*s  %-8s %10s %10s  %-8s %-7s  %s%s\n", term_bold(f), (int)w, "NODE", "STATUS",
           v.run.metric, "CHANGE", "LABEL", "COMMIT", "IDEA", term_reset(f));
    for (size_t i = 0; i < k; i++) {
        const struct rs_node *n = &v.nodes[order[i]];
        const char *st = rs_node_status(n);
        char *m = metric_text(n->metric);
        char *d = n->parent >= 0 && !isnan(n->metric) && !isnan(v.nodes[n->parent].metric)
                      ? xasprintf("%+.4g", n->metric - v.nodes[n->parent].metric)
                      : xstrdup("");
        printf("%s%*s  %s%-8s%s %10s %10s  %-8s %-7.7s  %s%s\n", labels[i],
               (int)(w - width(labels[i])), "", status_colour(st, f), st, term_reset(f), m, d,
               n->label ? n->label : "", n->commit ? n->commit : "", n->title ? n->title : "",
               (long)best == n->id ? " *" : "");
        free(m);
        free(d);
        free(labels[i]);
    }
    free(labels);
    free(order);
    printf("%sgit log --graph --oneline --glob='refs/thalamus/runs/%s/*'%s\n", term_dim(f),
           v.run.id, term_reset(f));
cleanup:
    review_close(&v);
    return rc;
}

/* ---- show -------------------------------------------------------------------------------- */

/* NODE is "n3", "3", "r2/n3" or "r2:n3". */
static int parse_node(const char *arg, char **run, long *id)
{
    const char *sep = strpbrk(arg, "/:");
    *run = sep ? xstrndup(arg, (size_t)(sep - arg)) : NULL;
    const char *p = sep ? sep + 1 : arg;
    if (*p == 'n')
        p++;
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || *end || v < 0) {
        free(*run);
        *run = NULL;
        return error_setc(TH_EUSAGE,
                          "'%s' is not a node; name one as 'n3' (or 'r2/n3' for "
                          "another run), as 'thalamus log' shows",
                          arg);
    }
    *id = v;
    return 0;
}

static void print_block(const char *title, const char *text)
{
    FILE *f = stdout;
    printf("\n%s%s%s\n%s", term_bold(f), title, term_reset(f), text);
    if (text[0] && text[strlen(text) - 1] != '\n')
        putchar('\n');
}

static int cmd_show(const struct command *cmd, struct cli_args *args)
{
    char *run = NULL;
    long id = 0;
    int rc = parse_node(args->positional[0], &run, &id);
    if (rc < 0)
        return rc;
    const char *want = run ? run : cli_value(cmd->options, args, "run");
    struct review v;
    struct ledger *ledger = NULL;
    char *diff = NULL;
    rc = review_open(&v, want);
    if (rc < 0)
        goto cleanup;
    if (id >= (long)v.n) {
        rc = error_setc(TH_ENOTFOUND,
                        "run %s has no node n%ld (it has n0 to n%zu); 'thalamus "
                        "log %s' shows them",
                        v.run.id, id, v.n ? v.n - 1 : 0, v.run.id);
        goto cleanup;
    }
    const struct rs_node *n = &v.nodes[id];
    const struct rs_node *p = n->parent >= 0 ? &v.nodes[n->parent] : NULL;
    if (p && p->commit && n->commit && ledger_open(&ledger, v.workspace) == 0) {
        if (ledger_diff(ledger, p->commit, n->commit, &diff) < 0) {
            log_warn("%s", error_message());
            error_clear();
        }
    }
    error_clear();
    if (cli_flag(cmd->options, args, "json")) {
        cJSON *all = research_nodes_json(v.nodes, v.n);
        cJSON *o = cJSON_DetachItemFromArray(all, (int)id);
        cJSON_Delete(all);
        cJSON_AddStringToObject(o, "run", v.run.id);
        cJSON_AddStringToObject(o, "diff", diff ? diff : "");
        cJSON_AddStringToObject(o, "output", n->output ? n->output : "");
        cJSON *tb = n->traceback ? cJSON_Parse(n->traceback) : NULL;
        cJSON_AddItemToObject(o, "traceback", tb ? tb : cJSON_CreateNull());
        cJSON *hist = cJSON_AddArrayToObject(o, "debug_history");
        for (const struct rs_node *x = n; x && x->kind && !strcmp(x->kind, "debug");) {
            const struct rs_node *xp = &v.nodes[x->parent];
            cJSON *h = cJSON_CreateObject();
            char *name = xasprintf("n%ld", xp->id);
            cJSON_AddStringToObject(h, "node", name);
            free(name);
            cJSON_AddStringToObject(h, "status", rs_node_status(xp));
            if (xp->reason)
                cJSON_AddStringToObject(h, "reason", xp->reason);
            cJSON_AddItemToArray(hist, h);
            x = xp;
        }
        print_json(o);
        goto cleanup;
    }
    FILE *f = stdout;
    const char *st = rs_node_status(n);
    printf("%sn%ld%s  %s  (run %s, %s)\n", term_bold(f), id, term_reset(f),
           n->title ? n->title : "", v.run.id, n->kind);
    char *m = metric_text(n->metric);
    printf("status    %s%s%s", status_colour(st, f), st, term_reset(f));
    if (n->reason)
        printf(" (%s)", n->reason);
    printf("\n%-9s %s", v.run.metric, m);
    if (p && !isnan(p->metric) && !isnan(n->metric))
        printf("  (%+.6g against n%ld", n->metric - p->metric, p->id);
    else if (p)
        printf("  (parent n%ld", p->id);
    if (p && !isnan(v.nodes[0].metric) && !isnan(n->metric) && id != 0)
        printf(", %+.6g against the baseline)", n->metric - v.nodes[0].metric);
    else if (p)
        printf(")");
    printf("\n");
    free(m);
    if (n->label)
        printf("label     %s\n", n->label);
    if (n->commit)
        printf("commit    %s\n", n->commit);
    if (!isnan(n->seconds))
        printf("time      %.2f s\n", n->seconds);
    if (n->hypothesis)
        print_block("Hypothesis", n->hypothesis);
    if (n->rationale)
        print_block("Rationale", n->rationale);
    const cJSON *changes = n->idea ? cJSON_GetObjectItem(n->idea, "changes") : NULL;
    if (cJSON_GetArraySize(changes) > 0) {
        struct buf b;
        buf_init(&b, 1 << 20);
        const cJSON *c;
        cJSON_ArrayForEach(c, changes) if (cJSON_IsString(c))
            buf_printf(&b, "- %s\n", c->valuestring);
        print_block("Changes", buf_str(&b));
        buf_free(&b);
    }
    if (n->insight)
        print_block("Insight", n->insight);
    if (n->kind && !strcmp(n->kind, "debug")) {
        struct buf b;
        buf_init(&b, 1 << 20);
        for (const struct rs_node *x = n; x->kind && !strcmp(x->kind, "debug");) {
            const struct rs_node *xp = &v.nodes[x->parent];
            buf_printf(&b, "n%ld debugs n%ld, which was %s%s%s%s\n", x->id, xp->id,
                       rs_node_status(xp), xp->reason ? " (" : "", xp->reason ? xp->reason : "",
                       xp->reason ? ")" : "");
            x = xp;
        }
        print_block("Debug history", buf_str(&b));
    }
    bool has_debug = false;
    for (size_t i = 0; i < v.n; i++)
        if (v.nodes[i].parent == id && v.nodes[i].kind && !strcmp(v.nodes[i].kind, "debug")) {
            if (!has_debug)
                printf("\n%sDebug attempts%s\n", term_bold(f), term_reset(f));
            has_debug = true;
            printf("n%zu %s\n", i, rs_node_status(&v.nodes[i]));
        }
    if (n->results) {
        char *s = agent_json_print(n->results, true);
        print_block("Results", s);
        free(s);
    }
    if (diff)
        print_block(p ? "Diff against the parent" : "Diff", diff[0] ? diff : "(no change)\n");
    if (n->output && n->output[0])
        print_block("Output (tail)", n->output);
cleanup:
    free(diff);
    ledger_free(ledger);
    review_close(&v);
    free(run);
    return rc;
}

const struct command command_runs = {
    "runs", "[--json]", "list the research runs of the workspace", NULL, review_options, 0,
    0,      cmd_runs};

const struct command command_status = {
    "status",
    "[RUN] [--json]",
    "show a run: best experiment, gain over the baseline, counts, budget",
    "Shows RUN (default: the latest): its state, the baseline and the best experiment with\n"
    "its gain, how many experiments ended in each status, the budget used against the\n"
    "limits, and why it stopped.",
    review_options,
    0,
    1,
    cmd_status};

const struct command command_log = {
    "log",
    "[RUN] [--json]",
    "show the experiment tree of a run",
    "Prints the tree of RUN (default: the latest): each node with its status, metric,\n"
    "change against its parent, the critic's label, its commit and the idea's title.\n"
    "--json gives the nodes with id, parent, status, metric, commit and title.",
    review_options,
    0,
    1,
    cmd_log};

const struct command command_show = {
    "show",
    "NODE [--run RUN] [--json]",
    "show one experiment: idea, diff, results, output, debug history",
    "NODE is a node of the latest run ('n3'), or of another ('r2/n3'). Shows its idea,\n"
    "hypothesis and rationale, its result against its parent and the baseline, the\n"
    "critic's insight, the diff of its files against its parent's, results.json, the end\n"
    "of its output, and its debug history.",
    review_options,
    1,
    1,
    cmd_show};
