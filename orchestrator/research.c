/*
 * research: the research loop of `thalamus run` and `thalamus resume` (see
 * research.h and docs/research.md).
 *
 * The MCTS engine owns the search over the experiment tree; this file gives
 * its nodes a meaning. Node 0 is the baseline, run once before the search.
 * Expanding a node that ran asks the retriever for context, the planner for
 * ideas, drops ideas already tried (memory similarity against the idea
 * bank, unless their parameters differ), has the critic rank the rest and
 * adds the best as children; expanding a failed node adds one debug attempt.
 * Evaluating a node materialises its parent's files from git, has the coder
 * apply the idea (or fix the failure, given its traceback), runs the result
 * in the sandbox, has the critic label it, records it in memory and the
 * store, and commits it to the ledger. The agents agents.extra adds to a
 * stage run after its own agent and their outputs are merged. When a human
 * reviews (review.h), the gate sees the ideas before they are kept and the
 * code before it runs. Experiments wait for one of loop.jobs slots; agents
 * and model calls run concurrently on the loop. Every state change is one
 * transaction, and a node's commit is recorded in the transaction after the
 * one that stored its outcome, so that a resumed run finds a commit that
 * was made but not recorded under the node's ref. Progress goes to standard
 * output: a live status line on a terminal, event lines, or JSON lines.
 * Depends on agent, config, ledger, llm, log, loop, mcts, memory, review,
 * sandbox, store, workspace and research_store.
 */
#include "research.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "alloc.h"
#include "buf.h"
#include "command.h"
#include "config.h"
#include "error.h"
#include "fsutil.h"
#include "ledger.h"
#include "llm.h"
#include "log.h"
#include "loop.h"
#include "mcts.h"
#include "memory.h"
#include "research_internal.h"
#include "review.h"
#include "sandbox.h"
#include "workspace.h"

#define OUTPUT_TAIL 3000 /* bytes of each stream kept in the store and notes */
#define RETRIEVE_K  6

enum live_kind { LIVE_EXPAND, LIVE_EVALUATE };

/* Work in flight on one node. */
struct live {
    struct research *r;
    long id;
    enum live_kind kind;
    int step;
    bool engine;  /* answer the engine when done (else the baseline) */
    bool waiting; /* in the queue for a job slot */
    bool slot;    /* holds one of the loop.jobs slots */
    bool counted; /* expand: its round is counted in run.expansions */
    bool dir_ready; /* evaluate: its work directory was materialised while waiting */
    struct live *next_waiting;
    struct agent_task *task;
    struct sandbox *sb;
    uint64_t started_ms;
    const char *phase;
    cJSON *context; /* expand: retrieved items */
    cJSON *ideas;   /* expand: proposed ideas */
    cJSON *failure; /* evaluate: the parent's failure, when debugging */
    /* the agents of a stage run one after the other (agents.extra) */
    int stage;          /* 0..4 as agent_stages */
    int next_extra;     /* index of the next extra agent of the stage */
    cJSON *stage_input; /* what each agent of the stage is given */
    cJSON *stage_outs;  /* the outputs of those that succeeded */
};

struct research {
    struct research_options opt;
    char *workspace;
    struct config *cfg;
    struct store *store;
    struct memory *mem;
    struct loop *loop;
    struct llm *gw;
    struct agent_runtime *rt;
    struct ledger *ledger;
    struct mcts *tree;
    char *stage_agent[5];  /* retrieve, ideate, review, implement, analyse */
    char **stage_extra[5]; /* agents.extra of each stage, NULL-terminated */
    int lock_fd;
    char *run_dir;

    struct rs_run run;
    struct rs_node *nodes;
    struct live **live;
    size_t n, cap;
    struct live *queue_head, *queue_tail;
    int running_experiments;
    int inflight;             /* live entries */
    long experiments_started; /* non-baseline experiments started, all sessions */
    long resume_pending;      /* experiments left pending by a crash, run before the search */
    long expanding;           /* expansions in flight (rounds not counted yet) */
    bool pumping;

    char *model_label;
    long limit_rounds, limit_experiments, limit_seconds, limit_iterations;
    long limit_tokens;
    double limit_cost, target;
    long drafts, keep, ideas, jobs;
    long experiments_done; /* non-baseline nodes finished, all sessions */
    long next_order;
    uint64_t session_start;
    double seconds_before;
    uint64_t rng;

    bool engine_running, engine_done, interrupted, finished, failed;
    bool stopping;      /* no new expansion */
    bool dropping;      /* and experiments not started yet stay pending */
    struct buf reasons; /* why the run stopped, one per line */
    char *fatal;
    struct review_gate *gate; /* loop.autonomy, --review, chat approvals; NULL: none */

    /* progress */
    bool live_status;
    bool status_shown;
    struct loop_timer *tick;
    struct loop_timer *deadline;

    /* what git gets once the next experiment has started (see flush_later()):
     * notes of committed experiments, and experiments committed in memory
     * whose refs (and state "done" in the store) are still to be written */
    struct ledger_note *notes;
    size_t nnotes, notes_cap;
    long *refs;
    size_t nrefs, refs_cap;
    long *saves; /* running nodes whose recorded files the store gets later */
    size_t nsaves, saves_cap;
    struct loop_timer *later_timer;

    /* the work directory of node ahead_id, written from ahead_commit by
     * another thread while an expansion chooses its ideas (write_ahead()) */
    struct ledger_writeout *ahead;
    long ahead_id;
    char *ahead_commit;
};

/* ---- small helpers ------------------------------------------------------------ */

static uint64_t rng_next(struct research *r)
{
    r->rng ^= r->rng << 13;
    r->rng ^= r->rng >> 7;
    r->rng ^= r->rng << 17;
    return r->rng;
}

static double rng_uniform(struct research *r)
{
    return (double)(rng_next(r) >> 11) / 9007199254740992.0;
}

static double sign_of(const struct research *r)
{
    return r->cfg->task_goal && !strcmp(r->cfg->task_goal, "minimize") ? -1 : 1;
}

static char *node_name(long id)
{
    return xasprintf("n%ld", id);
}

static char *node_rel_dir(struct research *r, long id)
{
    return xasprintf("%s/runs/%s/n%ld", WORKSPACE_STATE_DIR, r->run.id, id);
}

static char *node_abs_dir(struct research *r, long id)
{
    char *rel = node_rel_dir(r, id);
    char *abs = fs_join(r->workspace, rel);
    free(rel);
    return abs;
}

/* Removes the work directory of node id, one made ahead for a start that
 * did not come: a failure leaves it (and says so with -v). */
static void remove_work_dir(struct research *r, long id)
{
    char *dir = node_abs_dir(r, id);
    if (fs_remove_tree(dir) < 0) {
        log_debug("%s", error_message());
        error_clear();
    }
    free(dir);
}

static void set_str(char **field, const char *value)
{
    free(*field);
    *field = value ? xstrdup(value) : NULL;
}

static char *fmt_metric(double v)
{
    if (isnan(v))
        return xstrdup("-");
    return xasprintf("%.6g", v);
}

static double elapsed_seconds(struct research *r)
{
    return r->seconds_before + (double)(loop_now(r->loop) - r->session_start) / 1000.0;
}

static const char *json_str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- progress ------------------------------------------------------------------ */

static void status_clear(struct research *r)
{
    if (r->status_shown) {
        fputs("\r\033[K", stdout);
        r->status_shown = false;
    }
}

static void status_draw(struct research *r)
{
    if (!r->live_status || r->finished)
        return;
    struct buf b;
    buf_init(&b, 4096);
    buf_printf(&b, "%s %s", r->run.id, r->stopping ? "stopping" : "running");
    buf_printf(&b, " · round %ld", r->run.expansions);
    buf_printf(&b, " · %ld experiment%s", r->experiments_done, r->experiments_done == 1 ? "" : "s");
    int shown = 0;
    for (size_t i = 0; i < r->n; i++) {
        struct live *l = r->live[i];
        if (!l || l->kind != LIVE_EVALUATE || l->waiting)
            continue;
        if (shown++ == 0)
            buf_puts(&b, " · now:");
        if (shown <= 4)
            buf_printf(&b, " n%ld %s %.0fs", l->id, l->phase ? l->phase : "",
                       (double)(loop_now(r->loop) - l->started_ms) / 1000.0);
    }
    int best = research_best(&r->run, r->nodes, r->n);
    if (best >= 0) {
        char *m = fmt_metric(r->nodes[best].metric);
        buf_printf(&b, " · best n%d %s=%s", best, r->cfg->task_metric, m);
        free(m);
    }
    long tokens;
    double cost;
    rs_usage(r->store, r->run.id, &tokens, &cost);
    if (tokens > 0) {
        buf_printf(&b, " · %ld tokens", tokens);
        if (!isnan(cost))
            buf_printf(&b, " $%.4f", cost);
    }
    /* one line: cut to the terminal's width (in characters) */
    struct winsize ws;
    size_t cols = ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 10 ? ws.ws_col - 1 : 79;
    size_t chars = 0, cut = b.len;
    for (size_t i = 0; i < b.len; i++)
        if (((unsigned char)b.data[i] & 0xC0) != 0x80 && chars++ == cols) {
            cut = i;
            break;
        }
    fprintf(stdout, "\r\033[K%s%.*s%s", term_dim(stdout), (int)cut, buf_str(&b),
            term_reset(stdout));
    fflush(stdout);
    r->status_shown = true;
    buf_free(&b);
}

static void on_tick(struct loop_timer *timer, void *ud)
{
    struct research *r = ud;
    (void)timer;
    r->tick = NULL;
    if (r->finished)
        return;
    status_draw(r);
    r->tick = loop_timer_add(r->loop, 1000, on_tick, r);
}

/* Reports an event: a JSON line with --json, else a line of text (above the
 * live status on a terminal). fields may be NULL; it is consumed. */
static void emit(struct research *r, const char *event, cJSON *fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void emit(struct research *r, const char *event, cJSON *fields, const char *fmt, ...)
{
    if (r->opt.progress == RESEARCH_PROGRESS_JSON) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "event", event);
        cJSON_AddStringToObject(o, "run", r->run.id);
        char *now = rs_now();
        cJSON_AddStringToObject(o, "time", now);
        free(now);
        if (fields) {
            cJSON *c = fields->child;
            while (c) {
                cJSON *next = c->next;
                cJSON_DetachItemViaPointer(fields, c);
                cJSON_AddItemToObject(o, c->string, c);
                c = next;
            }
        }
        char *s = cJSON_PrintUnformatted(o);
        printf("%s\n", s);
        fflush(stdout);
        free(s);
        cJSON_Delete(o);
    } else {
        va_list ap;
        va_start(ap, fmt);
        status_clear(r);
        vprintf(fmt, ap);
        putchar('\n');
        va_end(ap);
        status_draw(r);
        fflush(stdout);
    }
    cJSON_Delete(fields);
}

/* ---- transactions ---------------------------------------------------------------- */

static int tx_begin(struct research *r)
{
    return memory_begin(r->mem);
}

static int tx_commit(struct research *r, int rc)
{
    if (rc < 0) {
        memory_rollback(r->mem);
        return rc;
    }
    return memory_commit(r->mem);
}

static int save_node(struct research *r, long id)
{
    return rs_node_save(r->store, r->run.id, &r->nodes[id]);
}

static int save_run(struct research *r)
{
    r->run.seconds = elapsed_seconds(r);
    return rs_run_save(r->store, &r->run);
}

/* A fatal error (the store or git failed): stop everything, keep what is
 * saved, report the message at the end. */
static void fatal(struct research *r, int rc);
static void request_stop(struct research *r, const char *reason, bool hard);
static void maybe_finish(struct research *r);

/* Starts the search once the baseline and the experiments a crash left
 * pending are done. */
static void start_engine(struct research *r)
{
    if (r->engine_running || r->engine_done || r->stopping || r->interrupted || !r->tree ||
        r->resume_pending > 0 || strcmp(r->nodes[0].state, "done"))
        return;
    r->engine_running = true;
    if (mcts_run(r->tree, r->loop) < 0) {
        r->engine_running = false;
        fatal(r, TH_ERR);
    }
}

/* ---- nodes ---------------------------------------------------------------------- */

static long node_add(struct research *r, long parent, const char *kind)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 32;
        r->nodes = xreallocarray(r->nodes, r->cap, sizeof *r->nodes);
        r->live = xreallocarray(r->live, r->cap, sizeof *r->live);
    }
    long id = (long)r->n++;
    rs_node_init(&r->nodes[id]);
    r->live[id] = NULL;
    r->nodes[id].id = id;
    r->nodes[id].parent = parent;
    r->nodes[id].kind = xstrdup(kind);
    r->nodes[id].state = xstrdup("pending");
    return id;
}

static struct live *live_new(struct research *r, long id, enum live_kind kind, bool engine)
{
    struct live *l = xcalloc(1, sizeof *l);
    l->r = r;
    l->id = id;
    l->kind = kind;
    l->engine = engine;
    l->started_ms = loop_now(r->loop);
    r->live[id] = l;
    r->inflight++;
    return l;
}

static void live_free(struct live *l)
{
    struct research *r = l->r;
    if (l->slot)
        r->running_experiments--;
    if (l->kind == LIVE_EXPAND && !l->counted)
        r->expanding--;
    r->live[l->id] = NULL;
    r->inflight--;
    if (l->dir_ready)
        remove_work_dir(r, l->id); /* prepared for a start that did not come */
    cJSON_Delete(l->context);
    cJSON_Delete(l->ideas);
    cJSON_Delete(l->failure);
    cJSON_Delete(l->stage_input);
    cJSON_Delete(l->stage_outs);
    free(l);
}

static bool is_failed(const struct rs_node *n)
{
    return n->state && !strcmp(n->state, "done") && n->status && strcmp(n->status, "ok");
}

/* A failed node that may still get a debug attempt. */
static bool debuggable(struct research *r, long id)
{
    const struct rs_node *n = &r->nodes[id];
    if (id == 0 || !is_failed(n) || r->live[id])
        return false;
    if (n->debug_depth >= r->cfg->loop_debug_attempts)
        return false;
    for (size_t i = 0; i < r->n; i++)
        if (r->nodes[i].parent == id)
            return false;
    return true;
}

/* ---- agents ---------------------------------------------------------------------- */

static void on_agent(struct agent_task *task, const struct agent_result *res, void *ud);

static int start_agent(struct live *l, const char *agent)
{
    struct research *r = l->r;
    char *node = node_name(l->id);
    struct agent_call_options o = {r->run.id, node};
    int rc = agent_start(r->rt, agent, l->stage_input, &o, on_agent, l, &l->task);
    free(node);
    return rc;
}

/* Starts the agents of a stage on input (consumed): the built-in (or its
 * replacement) first, then those agents.extra adds, one after the other;
 * on_agent() sees their outputs merged (see merge_stage()). */
static int start_stage(struct live *l, int stage, cJSON *input)
{
    cJSON_Delete(l->stage_input);
    cJSON_Delete(l->stage_outs);
    l->stage = stage;
    l->next_extra = 0;
    l->stage_input = input;
    l->stage_outs = cJSON_CreateArray();
    return start_agent(l, l->r->stage_agent[stage]);
}

/* The outputs of a stage's agents as one: items and ideas are joined; the
 * critics' reviews rank ideas by their mean position, with mean scores;
 * an analysis takes the first label and joins the insights; the last
 * coder's output stands for the edits (each coder edits what the one
 * before left). */
static cJSON *merge_stage(int stage, const cJSON *outs)
{
    int n = cJSON_GetArraySize(outs);
    const cJSON *first = cJSON_GetArrayItem(outs, 0);
    if (n == 1 || stage == 3)
        return cJSON_Duplicate(cJSON_GetArrayItem(outs, n - 1), true);
    cJSON *m = cJSON_Duplicate(first, true);
    if (stage == 0 || stage == 1) {
        const char *key = stage == 0 ? "items" : "ideas";
        cJSON *all = cJSON_GetObjectItem(m, key);
        for (int i = 1; i < n && cJSON_IsArray(all); i++) {
            const cJSON *x;
            cJSON_ArrayForEach(x, cJSON_GetObjectItem(cJSON_GetArrayItem(outs, i), key))
                cJSON_AddItemToArray(all, cJSON_Duplicate(x, true));
        }
    } else if (stage == 2) {
        int ideas = cJSON_GetArraySize(cJSON_GetObjectItem(first, "scores"));
        double *pos = xcalloc((size_t)ideas + 1, sizeof *pos);
        double *sum = xcalloc((size_t)ideas + 1, sizeof *sum);
        int *cnt = xcalloc((size_t)ideas + 1, sizeof *cnt);
        for (int i = 0; i < n; i++) {
            const cJSON *o = cJSON_GetArrayItem(outs, i);
            int p = 0;
            const cJSON *x;
            cJSON_ArrayForEach(x, cJSON_GetObjectItem(o, "ranking"))
            {
                int k = cJSON_IsNumber(x) ? (int)x->valuedouble - 1 : -1;
                if (k >= 0 && k < ideas)
                    pos[k] += ++p;
            }
            for (int k = 0; k < ideas; k++) {
                const cJSON *sc = cJSON_GetObjectItem(
                    cJSON_GetArrayItem(cJSON_GetObjectItem(o, "scores"), k), "score");
                if (cJSON_IsNumber(sc)) {
                    sum[k] += sc->valuedouble;
                    cnt[k]++;
                }
            }
        }
        cJSON *scores = cJSON_GetObjectItem(m, "scores");
        for (int k = 0; k < ideas; k++)
            if (cnt[k])
                cJSON_ReplaceItemInObject(cJSON_GetArrayItem(scores, k), "score",
                                          cJSON_CreateNumber(sum[k] / cnt[k]));
        int *order = xcalloc((size_t)ideas + 1, sizeof *order);
        for (int k = 0; k < ideas; k++)
            order[k] = k;
        for (int a = 1; a < ideas; a++) /* insertion sort by mean position */
            for (int b = a; b > 0 && pos[order[b]] < pos[order[b - 1]]; b--) {
                int t = order[b];
                order[b] = order[b - 1];
                order[b - 1] = t;
            }
        cJSON *ranking = cJSON_CreateArray();
        for (int k = 0; k < ideas; k++)
            cJSON_AddItemToArray(ranking, cJSON_CreateNumber(order[k] + 1));
        cJSON_ReplaceItemInObject(m, "ranking", ranking);
        free(order);
        free(pos);
        free(sum);
        free(cnt);
    } else if (stage == 4) {
        struct buf b;
        buf_init(&b, 1 << 20);
        for (int i = 0; i < n; i++) {
            const char *ins =
                cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(outs, i), "insight"));
            if (ins && ins[0])
                buf_printf(&b, "%s%s", b.len ? " " : "", ins);
        }
        cJSON_ReplaceItemInObject(m, "insight", cJSON_CreateString(buf_str(&b)));
        buf_free(&b);
    }
    return m;
}

/* Keeps res and starts the stage's next agent: true when one started. */
static bool stage_next(struct live *l, const struct agent_result *res)
{
    struct research *r = l->r;
    if (res->rc == 0)
        cJSON_AddItemToArray(l->stage_outs, cJSON_Duplicate(res->output, true));
    else if (l->next_extra > 0)
        log_warn("n%ld: agent '%s' failed: %s", l->id, res->agent, res->error);
    char **extra = r->stage_extra[l->stage];
    while (extra && extra[l->next_extra] && !r->dropping && !r->interrupted) {
        const char *name = extra[l->next_extra++];
        if (start_agent(l, name) == 0)
            return true;
        log_warn("n%ld: agent '%s' could not start: %s", l->id, name, error_message());
        error_clear();
    }
    return false;
}

static cJSON *node_summary(struct research *r, long id)
{
    const struct rs_node *n = &r->nodes[id];
    cJSON *o = cJSON_CreateObject();
    char *name = node_name(id);
    cJSON_AddStringToObject(o, "id", name);
    free(name);
    if (n->params)
        cJSON_AddItemToObject(o, "params", cJSON_Duplicate(n->params, true));
    if (!isnan(n->metric))
        cJSON_AddNumberToObject(o, "metric", n->metric);
    cJSON_AddStringToObject(o, "status", rs_node_status(n));
    if (n->title)
        cJSON_AddStringToObject(o, "title", n->title);
    return o;
}

/* ---- the experiment queue -------------------------------------------------------- */

static void eval_begin(struct live *l);

static void queue_pump(struct research *r)
{
    if (r->pumping)
        return;
    r->pumping = true;
    while (r->queue_head && r->running_experiments < r->jobs && !r->interrupted) {
        struct live *l = r->queue_head;
        r->queue_head = l->next_waiting;
        if (!r->queue_head)
            r->queue_tail = NULL;
        l->waiting = false;
        l->next_waiting = NULL;
        bool over =
            l->id != 0 && r->limit_experiments && r->experiments_started >= r->limit_experiments;
        if ((r->dropping || over) && l->id != 0) {
            /* not started: the node stays pending for a resume */
            long id = l->id;
            bool engine = l->engine;
            live_free(l);
            if (engine && r->engine_running)
                mcts_evaluated(r->tree, (mcts_id)id, 0, 0);
            else if (!engine)
                r->resume_pending--;
            continue;
        }
        if (l->id != 0 && r->limit_experiments &&
            ++r->experiments_started >= r->limit_experiments) {
            char *t = xasprintf("experiment limit reached: %ld experiments", r->limit_experiments);
            request_stop(r, t, false);
            free(t);
        } else if (l->id != 0 && !r->limit_experiments) {
            r->experiments_started++;
        }
        r->running_experiments++;
        l->slot = true;
        l->phase = "starting";
        l->started_ms = loop_now(r->loop);
        eval_begin(l);
    }
    r->pumping = false;
    maybe_finish(r);
}

static void eval_enqueue(struct research *r, long id, bool engine)
{
    struct live *l = live_new(r, id, LIVE_EVALUATE, engine);
    l->waiting = true;
    l->phase = "waiting";
    if (r->queue_tail)
        r->queue_tail->next_waiting = l;
    else
        r->queue_head = l;
    r->queue_tail = l;
    queue_pump(r);
}

/* ---- evaluation --------------------------------------------------------------------- */

enum eval_step { EV_CODER = 1, EV_SANDBOX, EV_CRITIC };

static void eval_record(struct live *l);
static void eval_commit(struct research *r, long id, bool found);
static void flush_later(struct research *r);
static void save_later(struct research *r, long id);
static void eval_analyse(struct live *l);
static void on_sandbox(struct sandbox *sb, struct sandbox_result *res, void *ud);

static void eval_fail_now(struct live *l, const char *status, const char *reason)
{
    struct rs_node *n = &l->r->nodes[l->id];
    if (l->slot) {
        l->slot = false;
        l->r->running_experiments--;
        queue_pump(l->r);
    }
    set_str(&n->status, status);
    set_str(&n->reason, reason);
    eval_analyse(l);
}

/* Has another thread write, while the expansion of parent chooses its
 * ideas, the work directory its first idea will most likely run in: that of
 * the next node id, from parent's commit. The first experiment of an
 * expansion then starts without creating its files in between (a few
 * hundred microseconds each on some disks). Another node may get that id
 * first: ahead_take() checks both. One at a time. */
static void write_ahead(struct research *r, long parent)
{
    const char *from = r->nodes[parent].commit;
    if (r->ahead || !from || r->dropping)
        return;
    long id = (long)r->n;
    char *dir = node_abs_dir(r, id);
    if (ledger_materialise_start(r->ledger, from, dir, &r->ahead) == 0) {
        r->ahead_id = id;
        r->ahead_commit = xstrdup(from);
    } else {
        log_debug("n%ld: %s", id, error_message());
        error_clear();
    }
    free(dir);
}

/* Waits for the directory written ahead if it is node id's (with id -1,
 * whosever it is). True when it holds the files of commit from; otherwise
 * the caller materialises it again (which empties it first). */
static bool ahead_take(struct research *r, long id, const char *from)
{
    if (!r->ahead || (id >= 0 && id != r->ahead_id))
        return false;
    int rc = ledger_materialise_finish(r->ahead);
    r->ahead = NULL;
    bool ok = rc == 0 && from && !strcmp(from, r->ahead_commit);
    if (rc < 0) {
        log_debug("n%ld: %s", r->ahead_id, error_message());
        error_clear();
    } else if (ok) {
        log_debug("n%ld: work directory written while the ideas were chosen", r->ahead_id);
    }
    free(r->ahead_commit);
    r->ahead_commit = NULL;
    return ok;
}

/* At the end of the run: a directory written ahead for a node that never
 * started (or never came) is removed. */
static void ahead_drop(struct research *r)
{
    if (!r->ahead)
        return;
    long id = r->ahead_id;
    ahead_take(r, -1, NULL);
    if (id >= (long)r->n || !strcmp(r->nodes[id].state, "pending"))
        remove_work_dir(r, id);
}

/* Materialises the work directories of the first experiments waiting for a
 * slot (as many as there are slots), so that creating their files is done
 * while others run rather than between two experiments. eval_begin() uses
 * such a directory as it is; live_free() removes one whose experiment
 * never started. A failure here only leaves the work to eval_begin(). */
static void prepare_waiting(struct research *r)
{
    long k = 0;
    for (struct live *w = r->queue_head; w && k < r->jobs; w = w->next_waiting, k++) {
        const struct rs_node *n = &r->nodes[w->id];
        const char *from = w->id != 0 ? r->nodes[n->parent].commit : NULL;
        if (w->dir_ready || !from || r->dropping)
            continue;
        if (ahead_take(r, w->id, from)) {
            w->dir_ready = true;
            continue;
        }
        char *dir = node_abs_dir(r, w->id);
        if (ledger_materialise(r->ledger, from, dir) == 0) {
            w->dir_ready = true;
            log_debug("n%ld: work directory prepared while waiting", w->id);
        } else {
            log_debug("n%ld: %s", w->id, error_message());
            error_clear();
        }
        free(dir);
    }
}

static int spawn_sandbox(struct live *l)
{
    struct research *r = l->r;
    const struct config *cfg = r->cfg;
    if (!cfg->task_command)
        return error_setc(TH_ECONFIG, "task.command is not set in thalamus.lua: say how to run "
                                      "one experiment, e.g. command = { \"python3\", "
                                      "\"train.py\" }");
    char *dir = node_abs_dir(r, l->id);
    size_t nb = 0;
    for (char **b = cfg->sandbox_binds; b && *b; b++)
        nb++;
    char **binds = xcalloc(nb + 1, sizeof *binds);
    for (size_t i = 0; i < nb; i++)
        binds[i] = cfg->sandbox_binds[i][0] == '/' ? xstrdup(cfg->sandbox_binds[i])
                                                   : fs_join(r->workspace, cfg->sandbox_binds[i]);
    struct sandbox_spec spec;
    memset(&spec, 0, sizeof spec);
    sandbox_limits_default(&spec.limits);
    spec.argv = cfg->task_command;
    spec.work_dir = dir;
    spec.isolation =
        !strcmp(cfg->sandbox_isolation, "none") ? SANDBOX_ISOLATION_NONE : SANDBOX_ISOLATION_FULL;
    spec.network = cfg->sandbox_network;
    spec.binds = binds;
    spec.env = cfg->sandbox_env;
    spec.results_required = true;
    spec.prepare_next = true;
    spec.limits.timeout_ms = (uint64_t)cfg->sandbox_timeout * 1000;
    spec.limits.memory_mb = cfg->sandbox_memory_mb;
    spec.limits.cpu_seconds = cfg->sandbox_cpu_seconds;
    spec.limits.pids = cfg->sandbox_pids;
    spec.limits.disk_mb = cfg->sandbox_disk_mb;
    l->step = EV_SANDBOX;
    l->phase = "running";
    int rc = sandbox_spawn(r->loop, &spec, on_sandbox, l, &l->sb);
    if (rc == 0) {
        /* while the experiment runs: its recorded files and the commits,
         * refs and notes of those before it, and the next ones' work
         * directories */
        flush_later(r);
        prepare_waiting(r);
    }
    for (size_t i = 0; i < nb; i++)
        free(binds[i]);
    free(binds);
    free(dir);
    return rc;
}

/* Writes the node's files as a tree and runs them. */
/* Records the tree of the node's work directory dir and the parameters as
 * the experiment will read them. */
static int record_tree(struct research *r, long id, const char *dir)
{
    struct rs_node *n = &r->nodes[id];
    char tree[LEDGER_HEX_SIZE];
    int rc = ledger_write_tree(r->ledger, dir, tree);
    if (rc < 0)
        return rc;
    set_str(&n->tree, tree);
    char *pf = fs_join(dir, r->cfg->task_params_file);
    struct buf b;
    buf_init(&b, 1 << 20);
    if (buf_read_file(&b, pf) == 0) {
        cJSON *p = cJSON_Parse(buf_str(&b));
        if (cJSON_IsObject(p)) {
            cJSON_Delete(n->params);
            n->params = p;
        } else {
            cJSON_Delete(p);
        }
    }
    error_clear();
    buf_free(&b);
    free(pf);
    save_later(r, id); /* a crash meanwhile runs the node again anyway */
    return 0;
}

static void eval_run(struct live *l)
{
    struct research *r = l->r;
    struct rs_node *n = &r->nodes[l->id];
    char *dir = node_abs_dir(r, l->id);
    int rc = record_tree(r, l->id, dir);
    char *veto = NULL;
    bool edited = false;
    if (rc == 0 && l->id != 0 && r->gate)
        rc = ledger_flush(r->ledger); /* the gate shows the change from its own ledger */
    if (rc == 0 && l->id != 0)
        rc = review_code(r->gate, r->run.id, n, r->nodes[n->parent].commit, dir, &veto, &edited);
    if (rc == 0 && edited)
        rc = record_tree(r, l->id, dir); /* the human changed the files */
    free(dir);
    if (rc < 0) {
        fatal(r, rc);
        return;
    }
    if (veto) {
        eval_fail_now(l, "failed", veto);
        free(veto);
        return;
    }
    /* a sandbox that cannot be created is the host's problem (or the
     * configuration's), not the experiment's: stop, saying how to fix it */
    if ((rc = spawn_sandbox(l)) < 0) {
        error_prefix("cannot run experiment n%ld", l->id);
        fatal(r, rc);
    }
}

static void eval_begin(struct live *l)
{
    struct research *r = l->r;
    struct rs_node *n = &r->nodes[l->id];
    char *now = rs_now();
    set_str(&n->state, "running");
    set_str(&n->started, now);
    free(now);
    /* the store learns it with the next deferred writes (within a second):
     * a resume runs a node again whether it was pending or running */
    save_later(r, l->id);
    int rc = 0;
    if (l->id != 0) {
        cJSON *f = cJSON_CreateObject();
        char *name = node_name(l->id), *pname = node_name(n->parent);
        cJSON_AddStringToObject(f, "node", name);
        cJSON_AddStringToObject(f, "parent", pname);
        cJSON_AddStringToObject(f, "kind", n->kind);
        cJSON_AddStringToObject(f, "title", n->title ? n->title : "");
        emit(r, "experiment_started", f, "%s  %-4s started from %s: %s", r->run.id, name, pname,
             n->title ? n->title : "");
        free(name);
        free(pname);
    }
    const char *from = l->id == 0 ? r->run.baseline : r->nodes[n->parent].commit;
    char *dir = node_abs_dir(r, l->id);
    if (l->dir_ready || ahead_take(r, l->id, from))
        l->dir_ready = false; /* materialised while it waited, or ahead */
    else if (!from)
        rc = error_set("the parent has no commit");
    else
        rc = ledger_materialise(r->ledger, from, dir);
    free(dir);
    if (rc < 0) {
        fatal(r, rc);
        return;
    }
    if (l->id == 0) {
        eval_run(l);
        return;
    }
    cJSON *in = cJSON_CreateObject();
    cJSON_AddItemToObject(in, "idea",
                          n->idea ? cJSON_Duplicate(n->idea, true) : cJSON_CreateObject());
    char *rel = node_rel_dir(r, l->id);
    cJSON_AddStringToObject(in, "dir", rel);
    free(rel);
    if (!strcmp(n->kind, "debug")) {
        const struct rs_node *p = &r->nodes[n->parent];
        cJSON *f = cJSON_AddObjectToObject(in, "failure");
        cJSON_AddStringToObject(f, "error", p->reason ? p->reason : p->status);
        cJSON *tb = p->traceback ? cJSON_Parse(p->traceback) : NULL;
        cJSON_AddItemToObject(f, "traceback", tb ? tb : cJSON_CreateArray());
        cJSON_AddStringToObject(f, "output", p->output ? p->output : "");
    }
    l->step = EV_CODER;
    l->phase = "coding";
    if ((rc = start_stage(l, 3, in)) < 0) {
        char *why = xasprintf("the coder could not start: %s", error_message());
        eval_fail_now(l, "failed", why);
        free(why);
    }
}

static void coder_done(struct live *l, const struct agent_result *res)
{
    struct research *r = l->r;
    struct rs_node *n = &r->nodes[l->id];
    if (res->rc < 0) {
        char *why = xasprintf("the coder failed: %s", res->error ? res->error : "unknown error");
        emit(r, "coder_failed", NULL, "%s  n%ld  %s", r->run.id, l->id, why);
        /* record the unchanged files so the commit exists */
        char *dir = node_abs_dir(r, l->id);
        char tree[LEDGER_HEX_SIZE];
        if (ledger_write_tree(r->ledger, dir, tree) == 0)
            set_str(&n->tree, tree);
        free(dir);
        eval_fail_now(l, "failed", why);
        free(why);
        return;
    }
    set_str(&n->message, json_str(res->output, "message"));
    eval_run(l);
}

static char *tail_of(const char *text, size_t max)
{
    size_t len = strlen(text);
    return xstrdup(len > max ? text + len - max : text);
}

static void on_sandbox(struct sandbox *sb, struct sandbox_result *res, void *ud)
{
    struct live *l = ud;
    struct research *r = l->r;
    struct rs_node *n = &r->nodes[l->id];
    (void)sb;
    l->sb = NULL;
    if (r->interrupted) {
        /* cancelled: the node stays "running" in the store and runs again on resume */
        sandbox_result_free(res);
        live_free(l);
        maybe_finish(r);
        return;
    }
    set_str(&n->status, sandbox_status_name(res->status));
    set_str(&n->reason, res->reason);
    n->seconds = res->wall_ms / 1000.0;
    cJSON_Delete(n->results);
    n->results = res->results ? cJSON_Duplicate(res->results, true) : NULL;
    n->metric = NAN;
    if (res->status == SANDBOX_OK) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(res->results, r->cfg->task_metric);
        if (cJSON_IsNumber(m) && isfinite(m->valuedouble)) {
            n->metric = m->valuedouble;
        } else {
            set_str(&n->status, "invalid");
            char *why = xasprintf("results.json has no number '%s'", r->cfg->task_metric);
            set_str(&n->reason, why);
            free(why);
        }
    }
    char *out = tail_of(res->out.text ? res->out.text : "", OUTPUT_TAIL);
    char *err = tail_of(res->err.text ? res->err.text : "", OUTPUT_TAIL);
    free(n->output);
    n->output =
        err[0] ? xasprintf("%s%s%s", out, out[0] ? "\n--- stderr ---\n" : "", err) : xstrdup(out);
    free(out);
    free(err);
    free(n->traceback);
    n->traceback = NULL;
    if (res->traceback) {
        cJSON *j = sandbox_result_to_json(res);
        cJSON *tb = cJSON_GetObjectItem(j, "traceback");
        if (tb)
            n->traceback = cJSON_PrintUnformatted(tb);
        cJSON_Delete(j);
    }
    sandbox_result_free(res);
    l->slot = false;
    r->running_experiments--;
    queue_pump(r);
    eval_analyse(l);
}

static void eval_analyse(struct live *l)
{
    struct research *r = l->r;
    struct rs_node *n = &r->nodes[l->id];
    if (l->id == 0) {
        eval_record(l);
        return;
    }
    const struct rs_node *p = &r->nodes[n->parent];
    cJSON *in = cJSON_CreateObject();
    cJSON_AddStringToObject(in, "mode", "analyse");
    cJSON *res = cJSON_AddObjectToObject(in, "result");
    if (!isnan(n->metric))
        cJSON_AddNumberToObject(res, "metric", n->metric);
    cJSON_AddStringToObject(res, "status", n->status);
    if (n->params)
        cJSON_AddItemToObject(res, "params", cJSON_Duplicate(n->params, true));
    cJSON_AddStringToObject(res, "title", n->title ? n->title : "");
    if (n->reason)
        cJSON_AddStringToObject(res, "error", n->reason);
    cJSON_AddItemToObject(in, "parent", node_summary(r, n->parent));
    cJSON_AddItemToObject(in, "baseline", node_summary(r, 0));
    if (!isnan(p->metric))
        cJSON_AddNumberToObject(in, "tolerance",
                                fmax(1e-12, r->cfg->loop_tolerance * fabs(p->metric)));
    l->step = EV_CRITIC;
    l->phase = "analysing";
    if (start_stage(l, 4, in) < 0) {
        log_warn("n%ld: the critic could not start: %s", l->id, error_message());
        eval_record(l);
    }
}

static void critic_done(struct live *l, const struct agent_result *res)
{
    struct research *r = l->r;
    struct rs_node *n = &r->nodes[l->id];
    if (res->rc == 0) {
        set_str(&n->label, json_str(res->output, "label"));
        set_str(&n->insight, json_str(res->output, "insight"));
    } else {
        log_warn("n%ld: the critic's analysis failed: %s", l->id, res->error);
    }
    eval_record(l);
}

static int record_memory(struct research *r, long id)
{
    const struct rs_node *n = &r->nodes[id];
    char *node = node_name(id);
    cJSON *payload = cJSON_CreateObject();
    cJSON_AddItemToObject(payload, "params",
                          n->params ? cJSON_Duplicate(n->params, true) : cJSON_CreateObject());
    if (!isnan(n->metric))
        cJSON_AddNumberToObject(payload, "metric", n->metric);
    else
        cJSON_AddNullToObject(payload, "metric");
    cJSON_AddStringToObject(payload, "status", n->status);
    cJSON_AddStringToObject(payload, "node", node);
    cJSON_AddStringToObject(payload, "title", n->title ? n->title : "");
    char *ptext = cJSON_PrintUnformatted(payload);
    char *m = fmt_metric(n->metric);
    char *text =
        xasprintf("%s: %s, %s = %s%s%s", n->title ? n->title : node, n->status, r->cfg->task_metric,
                  m, n->reason ? " (" : "", n->reason ? n->reason : "");
    if (n->reason) {
        char *t = xasprintf("%s)", text);
        free(text);
        text = t;
    }
    struct memory_episode ep = {0};
    ep.run = r->run.id;
    ep.node = node;
    ep.agent = "research";
    ep.kind = "result";
    ep.text = text;
    ep.payload = ptext;
    ep.importance = 0.5;
    int64_t eid;
    int rc = memory_episode_add(r->mem, &ep, &eid);
    free(ptext);
    cJSON_Delete(payload);
    if (rc == 0 && n->label) {
        cJSON *a = cJSON_CreateObject();
        cJSON_AddStringToObject(a, "label", n->label);
        cJSON_AddStringToObject(a, "insight", n->insight ? n->insight : "");
        cJSON_AddStringToObject(a, "title", n->title ? n->title : "");
        char *atext = cJSON_PrintUnformatted(a);
        struct memory_episode an = {0};
        an.run = r->run.id;
        an.node = node;
        an.agent = r->stage_agent[4];
        an.kind = "analysis";
        an.text = n->insight && n->insight[0] ? n->insight : n->label;
        an.payload = atext;
        an.importance = 0.5;
        rc = memory_episode_add(r->mem, &an, &eid);
        free(atext);
        cJSON_Delete(a);
    }
    if (rc == 0 && n->insight && n->insight[0]) {
        struct memory_item it;
        memory_item_init(&it);
        it.kind = "insight";
        it.title = n->title;
        it.text = n->insight;
        it.source = "research";
        cJSON *meta = cJSON_CreateObject();
        cJSON_AddStringToObject(meta, "run", r->run.id);
        cJSON_AddStringToObject(meta, "node", node);
        cJSON_AddStringToObject(meta, "label", n->label ? n->label : "");
        char *mtext = cJSON_PrintUnformatted(meta);
        it.metadata = mtext;
        it.importance = n->label && !strcmp(n->label, "improve") ? 0.7 : 0.5;
        int64_t iid;
        rc = memory_item_add(r->mem, &it, &iid, NULL);
        free(mtext);
        cJSON_Delete(meta);
    }
    free(text);
    free(m);
    free(node);
    return rc;
}

/* Stores the outcome (state "committing") with its memory episodes, in one
 * transaction, then commits. */
static void eval_record(struct live *l)
{
    struct research *r = l->r;
    long id = l->id;
    struct rs_node *n = &r->nodes[id];
    char *now = rs_now();
    set_str(&n->finished, now);
    free(now);
    if (isnan(n->seconds))
        n->seconds = (double)(loop_now(r->loop) - l->started_ms) / 1000.0;
    double base = r->nodes[0].metric;
    n->value = id == 0 ? (strcmp(n->status, "ok") ? 0 : 0.5)
                       : research_value(r->cfg->task_goal, n->status, n->metric, base);
    n->order = ++r->next_order;
    set_str(&n->state, "committing");
    int rc = tx_begin(r);
    if (rc == 0) {
        rc = save_node(r, id);
        if (rc == 0)
            rc = record_memory(r, id);
        if (rc == 0)
            rc = save_run(r);
        rc = tx_commit(r, rc);
    }
    if (rc < 0) {
        live_free(l);
        fatal(r, rc);
        return;
    }
    bool engine = l->engine;
    live_free(l);
    eval_commit(r, id, false);
    if (r->failed)
        return;
    if (id != 0)
        r->experiments_done++;
    /* report */
    const struct rs_node *p = n->parent >= 0 ? &r->nodes[n->parent] : NULL;
    char *m = fmt_metric(n->metric);
    struct buf delta;
    buf_init(&delta, 256);
    if (p && !isnan(p->metric) && !isnan(n->metric))
        buf_printf(&delta, " (%+.4g vs n%ld)", n->metric - p->metric, n->parent);
    cJSON *f = cJSON_CreateObject();
    char *name = node_name(id);
    cJSON_AddStringToObject(f, "node", name);
    if (p) {
        char *pn = node_name(n->parent);
        cJSON_AddStringToObject(f, "parent", pn);
        free(pn);
    }
    cJSON_AddStringToObject(f, "status", n->status);
    if (!isnan(n->metric))
        cJSON_AddNumberToObject(f, "metric", n->metric);
    if (n->label)
        cJSON_AddStringToObject(f, "label", n->label);
    cJSON_AddStringToObject(f, "commit", n->commit ? n->commit : "");
    cJSON_AddStringToObject(f, "title", n->title ? n->title : "");
    cJSON_AddNumberToObject(f, "seconds", n->seconds);
    const char *colour = !strcmp(n->status, "ok") ? "" : term_red(stdout);
    emit(r, id == 0 ? "baseline" : "experiment", f,
         "%s  %-4s %s%-7s%s %s=%s%s%s%s  %s  %.1fs  %.7s", r->run.id, name, colour, n->status,
         colour[0] ? term_reset(stdout) : "", r->cfg->task_metric, m, buf_str(&delta),
         n->label ? "  " : "", n->label ? n->label : "", n->title ? n->title : "", n->seconds,
         n->commit ? n->commit : "");
    free(name);
    free(m);
    buf_free(&delta);
    if (id == 0 && strcmp(n->status, "ok"))
        log_warn("the baseline experiment did not run cleanly (%s: %s); ideas will build on it "
                 "anyway",
                 n->status, n->reason ? n->reason : "no reason given");
    /* answer the engine */
    if (engine && r->engine_running && !r->interrupted)
        mcts_evaluated(r->tree, (mcts_id)id, n->value, 0);
    else if (r->tree && !engine)
        mcts_backup(r->tree, (mcts_id)id, n->value);
    /* limits */
    if (!isnan(r->target) && !isnan(n->metric) && !strcmp(n->status, "ok") &&
        sign_of(r) * n->metric >= sign_of(r) * r->target) {
        char *t = xasprintf("target reached: n%ld has %s = %.6g (target %.6g)", id,
                            r->cfg->task_metric, n->metric, r->target);
        request_stop(r, t, true);
        free(t);
    }
    if (!engine && id != 0)
        r->resume_pending--;
    start_engine(r);
    maybe_finish(r);
}

static char *commit_body(struct research *r, const struct rs_node *n)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    if (n->hypothesis && n->hypothesis[0])
        buf_printf(&b, "Hypothesis: %s\n\n", n->hypothesis);
    if (n->rationale && n->rationale[0])
        buf_printf(&b, "Rationale: %s\n\n", n->rationale);
    const cJSON *changes = n->idea ? cJSON_GetObjectItem(n->idea, "changes") : NULL;
    if (cJSON_GetArraySize(changes) > 0) {
        buf_puts(&b, "Changes:\n");
        const cJSON *c;
        cJSON_ArrayForEach(c, changes) if (cJSON_IsString(c))
            buf_printf(&b, "- %s\n", c->valuestring);
        buf_putc(&b, '\n');
    }
    char *m = fmt_metric(n->metric);
    buf_printf(&b, "Result: %s, %s = %s", n->status, r->cfg->task_metric, m);
    free(m);
    if (n->parent >= 0 && !isnan(r->nodes[n->parent].metric)) {
        char *pm = fmt_metric(r->nodes[n->parent].metric);
        buf_printf(&b, " (parent n%ld: %s)", n->parent, pm);
        free(pm);
    }
    if (n->label)
        buf_printf(&b, "; %s", n->label);
    buf_puts(&b, ".\n");
    if (n->reason)
        buf_printf(&b, "Reason: %s\n", n->reason);
    if (n->insight && n->insight[0])
        buf_printf(&b, "Insight: %s\n", n->insight);
    review_commit_lines(&b, n);
    return buf_detach(&b, NULL);
}

static char *note_text(struct research *r, const struct rs_node *n)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    char *m = fmt_metric(n->metric);
    buf_printf(&b, "run: %s\nnode: n%ld\nstatus: %s\n%s: %s\n", r->run.id, n->id, n->status,
               r->cfg->task_metric, m);
    free(m);
    if (n->label)
        buf_printf(&b, "label: %s\n", n->label);
    if (!isnan(n->seconds))
        buf_printf(&b, "seconds: %.2f\n", n->seconds);
    if (n->reason)
        buf_printf(&b, "reason: %s\n", n->reason);
    if (n->results) {
        char *s = agent_json_print(n->results, true);
        buf_printf(&b, "\nresults.json:\n%s\n", s);
        free(s);
    }
    if (n->output && n->output[0])
        buf_printf(&b, "\noutput (tail):\n%s\n", n->output);
    return buf_detach(&b, NULL);
}

/* How long what git gets later (a committed experiment's ref and note) may
 * wait for the next sandbox to start before it is written anyway. */
#define LATER_WAIT_MS 1000

static void notes_clear(struct research *r)
{
    for (size_t i = 0; i < r->nnotes; i++) {
        free((char *)r->notes[i].commit);
        free((char *)r->notes[i].text);
    }
    r->nnotes = 0;
}

/* Writes the refs of the experiments committed in memory (the ledger writes
 * their objects first), then records them as done, in one transaction with
 * the running nodes' recorded files. On a failure the rest stay due for the
 * next try; if none comes, the store still says "committing", and a resume
 * makes the same commit again. */
static void write_due(struct research *r)
{
    size_t k = 0;
    int rc = 0;
    while (k < r->nrefs) {
        char *name = node_name(r->refs[k]);
        rc = ledger_set_ref(r->ledger, r->run.id, name, r->nodes[r->refs[k]].commit);
        free(name);
        if (rc < 0)
            break;
        k++;
    }
    bool saved = true;
    if (k > 0 || r->nsaves > 0) {
        int trc = tx_begin(r);
        for (size_t i = 0; i < k && trc == 0; i++)
            trc = save_node(r, r->refs[i]);
        /* a node that has moved on since was saved by its next step */
        for (size_t i = 0; i < r->nsaves && trc == 0; i++)
            if (!strcmp(r->nodes[r->saves[i]].state, "running"))
                trc = save_node(r, r->saves[i]);
        if ((trc = tx_commit(r, trc)) < 0) {
            saved = false; /* the refs are there; the save is tried again */
            rc = trc;
        }
    }
    if (saved)
        r->nsaves = 0;
    if (rc < 0) {
        log_warn("cannot record the latest experiments in git and the store yet (tried "
                 "again later): %s",
                 error_message());
        error_clear();
    }
    if (saved && k > 0) {
        memmove(r->refs, r->refs + k, (r->nrefs - k) * sizeof *r->refs);
        r->nrefs -= k;
    }
}

/* Writes the queued notes, in one commit of the notes. On a failure they
 * stay queued for the next try (and a resume writes whichever are
 * missing). */
static void write_notes(struct research *r)
{
    if (r->nnotes == 0)
        return;
    if (ledger_add_notes(r->ledger, r->notes, r->nnotes) < 0) {
        log_warn("cannot write the notes of %zu experiments to git yet: %s", r->nnotes,
                 error_message());
        error_clear();
        return;
    }
    notes_clear(r);
}

/* Writes what git gets later: the objects the ledger keeps in memory (a
 * recorded tree, commits), the refs of experiments committed in memory,
 * and the notes; and checkpoints the store's write-ahead log when due.
 * Called once a sandbox has started, so that this overlaps its run instead
 * of delaying it; else after LATER_WAIT_MS; and at the end of the run. */
static void flush_later(struct research *r)
{
    if (r->later_timer)
        loop_timer_cancel(r->later_timer);
    r->later_timer = NULL;
    if (ledger_flush(r->ledger) < 0) {
        log_warn("cannot write the experiments' files to git yet: %s", error_message());
        error_clear();
    }
    if (r->nrefs || r->nsaves)
        write_due(r);
    write_notes(r);
    /* the store's log into the database, when it is due: the pause of
     * syncing both files falls here rather than into a commit between two
     * experiments */
    if (memory_checkpoint_due(r->mem) < 0) {
        log_warn("%s", error_message());
        error_clear();
    }
}

static void on_later_timer(struct loop_timer *timer, void *ud)
{
    struct research *r = ud;
    (void)timer;
    r->later_timer = NULL;
    flush_later(r);
}

static void later_soon(struct research *r)
{
    if (!r->later_timer)
        r->later_timer = loop_timer_add(r->loop, LATER_WAIT_MS, on_later_timer, r);
}

/* Queues text (taken) as the note of commit (see flush_later()). The note
 * is the full record of the experiment in git, but nothing in the loop
 * reads it. */
static void queue_note(struct research *r, const char *commit, char *text)
{
    if (r->nnotes == r->notes_cap)
        r->notes = xreallocarray(r->notes, r->notes_cap = r->notes_cap ? r->notes_cap * 2 : 8,
                                 sizeof *r->notes);
    r->notes[r->nnotes++] = (struct ledger_note){xstrdup(commit), text};
    later_soon(r);
}

/* Appends id to the list *ids (n entries, room for *cap) unless it holds it,
 * and has what is due written soon (see flush_later()). */
static void queue_id(struct research *r, long **ids, size_t *n, size_t *cap, long id)
{
    for (size_t i = 0; i < *n; i++)
        if ((*ids)[i] == id)
            return;
    if (*n == *cap)
        *ids = xreallocarray(*ids, *cap = *cap ? *cap * 2 : 8, sizeof **ids);
    (*ids)[(*n)++] = id;
    later_soon(r);
}

/* Queues the save of running node id (its state, start and recorded files). */
static void save_later(struct research *r, long id)
{
    queue_id(r, &r->saves, &r->nsaves, &r->saves_cap, id);
}

/* Queues the ref of node id, committed in memory. */
static void queue_ref(struct research *r, long id)
{
    queue_id(r, &r->refs, &r->nrefs, &r->refs_cap, id);
}

/* The commit time of node n: when it finished (so that committing it again
 * after a crash gives the same commit), else now (0). */
static long long commit_time(const struct rs_node *n)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    char z = 0;
    if (!n->finished ||
        sscanf(n->finished, "%d-%d-%dT%d:%d:%d%c", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &z) != 7 ||
        z != 'Z')
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (long long)timegm(&tm);
}

/* Queues the note of node id's commit when git has none (a session that
 * ended before writing its notes). */
static void queue_missing_note(struct research *r, long id, const char *commit)
{
    char *text = NULL;
    if (id == 0 || !commit)
        return;
    if (ledger_note(r->ledger, commit, &text) == 0) {
        free(text);
        return;
    }
    error_clear();
    queue_note(r, commit, note_text(r, &r->nodes[id]));
}

/* Commits node id (state committing) and records the commit (state done).
 * On resume (found), a commit already under the node's ref (made before a
 * crash) is taken as it is; a node that just ran has none (its ref is
 * written after its commit), and an older ref of the same name is
 * replaced. A new commit is made in memory: the loop goes on with it at
 * once, and its objects, its ref and the state "done" reach git and the
 * store once the next experiment has started (flush_later()). */
static void eval_commit(struct research *r, long id, bool found)
{
    struct rs_node *n = &r->nodes[id];
    char *name = node_name(id);
    char hex[LEDGER_HEX_SIZE];
    bool later = false;
    int rc = found ? ledger_find(r->ledger, r->run.id, name, hex) : TH_ENOTFOUND;
    if (rc == TH_ENOTFOUND) {
        error_clear();
        if (id == 0) {
            rc = ledger_set_ref(r->ledger, r->run.id, name, r->run.baseline);
            snprintf(hex, sizeof hex, "%s", r->run.baseline);
        } else {
            char *body = commit_body(r, n);
            char *metric = isnan(n->metric) ? NULL : xasprintf("%.12g", n->metric);
            const char *title = n->title && n->title[0] ? n->title : "Experiment";
            struct ledger_commit c = {
                .run = r->run.id,
                .node = name,
                .parent = r->nodes[n->parent].commit,
                .tree = n->tree,
                .title = title,
                .body = body,
                .status = n->status,
                .metric_name = r->cfg->task_metric,
                .metric = metric,
                .model = r->model_label,
                .time = commit_time(n),
                .later = true,
            };
            if (!c.tree)
                rc = error_set("experiment n%ld has no recorded files", id);
            else if ((rc = ledger_commit(r->ledger, &c, hex)) == 0)
                queue_note(r, hex, note_text(r, n));
            later = rc == 0;
            free(metric);
            free(body);
        }
    } else if (rc == 0) {
        queue_missing_note(r, id, hex); /* committed before a crash */
    }
    free(name);
    if (rc == 0) {
        set_str(&n->commit, hex);
        set_str(&n->state, "done");
        if (later)
            queue_ref(r, id);
        else if ((rc = tx_begin(r)) == 0)
            rc = tx_commit(r, save_node(r, id));
    }
    if (rc < 0)
        fatal(r, rc);
}

/* ---- expansion ------------------------------------------------------------------------ */

enum expand_step { EX_RETRIEVE = 1, EX_IDEATE, EX_REVIEW };

static void expand_answer(struct research *r, long id)
{
    if (r->engine_running)
        mcts_expanded(r->tree, (mcts_id)id, 0);
}

static void expand_debug(struct research *r, long id)
{
    const struct rs_node *p = &r->nodes[id];
    long c = node_add(r, id, "debug");
    struct rs_node *n = &r->nodes[c];
    p = &r->nodes[id]; /* node_add may move the array */
    n->debug_depth = p->debug_depth + 1;
    n->idea = p->idea ? cJSON_Duplicate(p->idea, true) : cJSON_CreateObject();
    char *title = xasprintf("Debug %s", p->title ? p->title : "the experiment");
    if (!strncmp(p->title ? p->title : "", "Debug ", 6))
        set_str(&title, p->title);
    n->title = title;
    char *hyp = xasprintf("Fixing the %s of n%ld (%s) makes the experiment run.", p->status, id,
                          p->reason ? p->reason : "no reason given");
    n->hypothesis = hyp;
    n->rationale = xstrdup("Traceback-guided debugging: the coder sees the failure, its "
                           "traceback and the end of the output.");
    mcts_id got = mcts_add_child(r->tree, (mcts_id)id, 1, NULL, 0);
    int rc = got == (mcts_id)c ? 0 : error_set("the search tree and the store disagree");
    if (rc == 0 && (rc = tx_begin(r)) == 0) {
        rc = save_node(r, c);
        if (rc == 0)
            rc = rs_event_add(r->store, r->run.id, c, "decision", "debug", n->hypothesis, NULL);
        rc = tx_commit(r, rc);
    }
    if (rc < 0) {
        fatal(r, rc);
        return;
    }
    emit(r, "debug", NULL, "%s  n%ld  debug attempt of n%ld (%s)", r->run.id, c, id, p->status);
    expand_answer(r, id);
}

static void expand_begin(struct research *r, long id)
{
    const struct rs_node *n = &r->nodes[id];
    if (r->stopping || r->interrupted) {
        expand_answer(r, id);
        return;
    }
    if (id != 0 && is_failed(n)) {
        if (debuggable(r, id))
            expand_debug(r, id);
        else
            expand_answer(r, id);
        return;
    }
    if (r->limit_rounds && r->run.expansions + r->expanding >= r->limit_rounds) {
        char *t = xasprintf("round limit reached: %ld rounds", r->limit_rounds);
        request_stop(r, t, false);
        free(t);
        expand_answer(r, id);
        return;
    }
    /* a round counts once its ideas are recorded, so a crash before that
     * does not use it up */
    r->expanding++;
    struct live *l = live_new(r, id, LIVE_EXPAND, true);
    write_ahead(r, id);
    l->phase = "retrieving";
    l->step = EX_RETRIEVE;
    cJSON *in = cJSON_CreateObject();
    cJSON_AddItemToObject(in, "node", node_summary(r, id));
    cJSON_AddNumberToObject(in, "k", RETRIEVE_K);
    if (start_stage(l, 0, in) < 0) {
        log_warn("n%ld: the retriever could not start: %s", id, error_message());
        l->context = cJSON_CreateArray();
        struct agent_result none = {.rc = TH_ERR, .error = "not started"};
        l->task = NULL;
        on_agent(NULL, &none, l);
    }
}

static void ideate(struct live *l)
{
    struct research *r = l->r;
    cJSON *in = cJSON_CreateObject();
    cJSON_AddItemToObject(in, "node", node_summary(r, l->id));
    cJSON_AddNumberToObject(in, "k", (double)(l->id == 0 ? r->drafts : r->ideas));
    if (l->id == 0)
        cJSON_AddBoolToObject(in, "draft", true);
    cJSON_AddItemToObject(in, "context",
                          l->context ? cJSON_Duplicate(l->context, true) : cJSON_CreateArray());
    char *dir = node_abs_dir(r, l->id);
    if (fs_is_dir(dir)) {
        char *rel = node_rel_dir(r, l->id);
        cJSON_AddStringToObject(in, "dir", rel);
        free(rel);
    }
    free(dir);
    cJSON_AddNumberToObject(in, "seed", (double)(r->run.seed + l->id));
    l->step = EX_IDEATE;
    l->phase = "ideating";
    if (start_stage(l, 1, in) < 0) {
        log_warn("n%ld: the planner could not start: %s", l->id, error_message());
        long id = l->id;
        live_free(l);
        expand_answer(r, id);
    }
}

char *research_idea_text(const cJSON *idea)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    const char *t = json_str(idea, "title"), *h = json_str(idea, "hypothesis");
    buf_printf(&b, "%s\n%s", t ? t : "", h ? h : "");
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(idea, "changes")) if (cJSON_IsString(c))
        buf_printf(&b, "\n%s", c->valuestring);
    return buf_detach(&b, NULL);
}

/* Whether idea repeats one in the idea bank: a similar text and no
 * different parameters. Sets *why. */
static bool is_repeat(struct research *r, const cJSON *idea, char **why)
{
    char *text = research_idea_text(idea);
    struct memory_match *m = NULL;
    size_t n = 0;
    bool repeat = false;
    if (memory_similar(r->mem, text, "idea", r->cfg->loop_novelty_threshold, 5, &m, &n) < 0) {
        log_warn("the novelty check failed: %s", error_message());
        error_clear();
    }
    const cJSON *params = cJSON_GetObjectItem(idea, "params");
    for (size_t i = 0; i < n && !repeat; i++) {
        struct memory_item it;
        memory_item_init(&it);
        if (memory_item_get(r->mem, m[i].id, &it) < 0) {
            error_clear();
            continue;
        }
        cJSON *meta = it.metadata ? cJSON_Parse(it.metadata) : NULL;
        const cJSON *old = cJSON_GetObjectItem(meta, "params");
        if (!cJSON_IsObject(params) || (old && cJSON_Compare(params, old, true))) {
            repeat = true;
            *why = xasprintf("too similar to the tried idea '%s' (similarity %.2f)",
                             m[i].title ? m[i].title : "?", m[i].similarity);
        }
        cJSON_Delete(meta);
        memory_item_clear(&it);
    }
    memory_matches_free(m, n);
    free(text);
    return repeat;
}

static void review(struct live *l)
{
    struct research *r = l->r;
    cJSON *in = cJSON_CreateObject();
    cJSON_AddStringToObject(in, "mode", "review");
    cJSON_AddItemToObject(in, "ideas", cJSON_Duplicate(l->ideas, true));
    cJSON_AddItemToObject(in, "node", node_summary(r, l->id));
    l->step = EX_REVIEW;
    l->phase = "reviewing";
    if (start_stage(l, 2, in) < 0) {
        log_warn("n%ld: the critic could not start: %s", l->id, error_message());
        struct agent_result none = {.rc = TH_ERR, .error = "not started"};
        l->task = NULL;
        on_agent(NULL, &none, l);
    }
}

static int add_idea_records(struct research *r, long parent, const cJSON *idea, long child,
                            const char *decision, const char *reason)
{
    char *pn = node_name(parent);
    cJSON *payload = cJSON_CreateObject();
    const cJSON *params = cJSON_GetObjectItem(idea, "params");
    if (params)
        cJSON_AddItemToObject(payload, "params", cJSON_Duplicate(params, true));
    cJSON_AddStringToObject(payload, "title",
                            json_str(idea, "title") ? json_str(idea, "title") : "");
    cJSON_AddStringToObject(payload, "decision", decision);
    char *ptext = cJSON_PrintUnformatted(payload);
    char *text = research_idea_text(idea);
    struct memory_episode ep = {0};
    ep.run = r->run.id;
    ep.node = pn;
    ep.agent = r->stage_agent[1];
    ep.kind = "idea";
    ep.text = text;
    ep.payload = ptext;
    ep.importance = 0.5;
    int64_t eid;
    int rc = memory_episode_add(r->mem, &ep, &eid);
    if (rc == 0 && child >= 0) {
        struct memory_item it;
        memory_item_init(&it);
        it.kind = "idea";
        it.title = (char *)json_str(idea, "title");
        it.text = text;
        it.source = "research";
        cJSON *meta = cJSON_CreateObject();
        if (params)
            cJSON_AddItemToObject(meta, "params", cJSON_Duplicate(params, true));
        cJSON_AddStringToObject(meta, "run", r->run.id);
        char *cn = node_name(child);
        cJSON_AddStringToObject(meta, "node", cn);
        free(cn);
        char *mtext = cJSON_PrintUnformatted(meta);
        it.metadata = mtext;
        int64_t iid;
        rc = memory_item_add(r->mem, &it, &iid, NULL);
        free(mtext);
        cJSON_Delete(meta);
    }
    if (rc == 0)
        rc = rs_event_add(r->store, r->run.id, child >= 0 ? child : parent, "decision", decision,
                          reason, json_str(idea, "title"));
    free(text);
    free(ptext);
    cJSON_Delete(payload);
    free(pn);
    return rc;
}

/* Adds the kept ideas (in ranking order) as children, and records every
 * decision, in one transaction. */
static void expand_finish(struct live *l, const cJSON *ranking, const cJSON *scores)
{
    struct research *r = l->r;
    long id = l->id;
    long keep = id == 0 ? r->drafts : r->keep;
    int count = cJSON_GetArraySize(l->ideas);
    int *order = xcalloc((size_t)count + 1, sizeof *order);
    int norder = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, ranking)
    {
        int pos = cJSON_IsNumber(x) ? (int)x->valuedouble : 0;
        if (pos >= 1 && pos <= count && norder < count) {
            bool dup = false;
            for (int i = 0; i < norder; i++)
                dup |= order[i] == pos - 1;
            if (!dup)
                order[norder++] = pos - 1;
        }
    }
    for (int i = 0; i < count; i++) { /* ideas the ranking forgot, in their order */
        bool seen = false;
        for (int j = 0; j < norder; j++)
            seen |= order[j] == i;
        if (!seen)
            order[norder++] = i;
    }
    int rc = review_ideas(r->gate, r->run.id, id, l->ideas, scores, &order, &norder, &keep);
    if (rc < 0) {
        free(order);
        live_free(l);
        fatal(r, rc);
        return;
    }
    rc = tx_begin(r);
    int kept = 0;
    const char *kind = id == 0 ? "draft" : "improve";
    for (int k = 0; k < norder && rc == 0; k++) {
        cJSON *idea = cJSON_GetArrayItem(l->ideas, order[k]);
        const cJSON *score = cJSON_GetArrayItem(scores, order[k]);
        const cJSON *sv = cJSON_GetObjectItem(score, "score");
        double s = cJSON_IsNumber(sv) ? sv->valuedouble : NAN;
        if (kept < keep) {
            long c = node_add(r, id, kind);
            struct rs_node *n = &r->nodes[c];
            n->idea = cJSON_Duplicate(idea, true);
            set_str(&n->title, json_str(idea, "title"));
            set_str(&n->hypothesis, json_str(idea, "hypothesis"));
            set_str(&n->rationale, json_str(idea, "rationale"));
            n->score = s;
            mcts_id got = mcts_add_child(r->tree, (mcts_id)id, isnan(s) ? 1 : s, NULL, 0);
            if (got != (mcts_id)c) {
                rc = error_set("the search tree and the store disagree");
                break;
            }
            char *why = isnan(s) ? xasprintf("ranked %d of %d", k + 1, norder)
                                 : xasprintf("ranked %d of %d by the critic (score %.3f)", k + 1,
                                             norder, s);
            rc = save_node(r, c);
            if (rc == 0)
                rc = add_idea_records(r, id, idea, c, "kept", why);
            free(why);
            kept++;
        } else {
            char *why =
                xasprintf("ranked %d of %d; only the best %ld are kept", k + 1, norder, keep);
            rc = add_idea_records(r, id, idea, -1, "not kept", why);
            free(why);
        }
    }
    if (rc == 0)
        rc = save_run(r);
    if (rc == 0)
        rc = tx_commit(r, rc);
    else
        memory_rollback(r->mem);
    free(order);
    if (rc < 0) {
        live_free(l);
        fatal(r, rc);
        return;
    }
    cJSON *f = cJSON_CreateObject();
    char *name = node_name(id);
    cJSON_AddStringToObject(f, "node", name);
    cJSON_AddNumberToObject(f, "proposed", count);
    cJSON_AddNumberToObject(f, "kept", kept);
    emit(r, "expanded", f, "%s  %-4s round %ld: %d idea%s kept of %d", r->run.id, name,
         r->run.expansions, kept, kept == 1 ? "" : "s", count);
    free(name);
    live_free(l);
    expand_answer(r, id);
}

static void ideas_done(struct live *l, const struct agent_result *res)
{
    struct research *r = l->r;
    /* the round happened, whatever it gave */
    r->run.expansions++;
    r->expanding--;
    l->counted = true;
    if (res->rc < 0) {
        log_warn("n%ld: the planner failed: %s", l->id, res->error);
        long id = l->id;
        live_free(l);
        expand_answer(r, id);
        return;
    }
    const cJSON *ideas = cJSON_GetObjectItem(res->output, "ideas");
    cJSON *fresh = cJSON_CreateArray();
    int rc = tx_begin(r);
    const cJSON *idea;
    cJSON_ArrayForEach(idea, ideas)
    {
        char *why = NULL;
        if (rc == 0 && is_repeat(r, idea, &why)) {
            rc = add_idea_records(r, l->id, idea, -1, "dropped", why);
            emit(r, "dropped", NULL, "%s  n%ld  dropped '%s': %s", r->run.id, l->id,
                 json_str(idea, "title") ? json_str(idea, "title") : "?", why);
        } else {
            cJSON_AddItemToArray(fresh, cJSON_Duplicate(idea, true));
        }
        free(why);
    }
    rc = tx_commit(r, rc);
    if (rc < 0) {
        cJSON_Delete(fresh);
        live_free(l);
        fatal(r, rc);
        return;
    }
    l->ideas = fresh;
    if (cJSON_GetArraySize(fresh) == 0) {
        emit(r, "expanded", NULL, "%s  n%ld  no new idea", r->run.id, l->id);
        long id = l->id;
        live_free(l);
        expand_answer(r, id);
        return;
    }
    review(l);
}

/* ---- agent results ------------------------------------------------------------------- */

static void check_usage(struct research *r)
{
    if (!r->limit_tokens && isnan(r->limit_cost))
        return;
    long tokens;
    double cost;
    rs_usage(r->store, r->run.id, &tokens, &cost);
    if (r->limit_tokens && tokens >= r->limit_tokens) {
        char *t = xasprintf("token budget spent: %ld of %ld tokens (llm.budget.tokens)", tokens,
                            r->limit_tokens);
        request_stop(r, t, true);
        free(t);
    }
    if (!isnan(r->limit_cost) && !isnan(cost) && cost >= r->limit_cost) {
        char *t =
            xasprintf("money budget spent: %.4f of %.4f (llm.budget.cost)", cost, r->limit_cost);
        request_stop(r, t, true);
        free(t);
    }
}

static void on_agent(struct agent_task *task, const struct agent_result *res, void *ud)
{
    struct live *l = ud;
    struct research *r = l->r;
    (void)task;
    l->task = NULL;
    if (task && stage_next(l, res))
        return;
    /* the stage's result: its agents' outputs merged, or the first failure */
    struct agent_result merged = *res;
    cJSON *out = NULL;
    if (task && cJSON_GetArraySize(l->stage_outs) > 0) {
        out = merge_stage(l->stage, l->stage_outs);
        merged.rc = 0;
        merged.output = out;
        merged.error = NULL;
        res = &merged;
    }
    if (l->kind == LIVE_EVALUATE) {
        switch (l->step) {
        case EV_CODER:
            coder_done(l, res);
            break;
        case EV_CRITIC:
            critic_done(l, res);
            break;
        }
    } else {
        switch (l->step) {
        case EX_RETRIEVE:
            cJSON_Delete(l->context);
            l->context = res->rc == 0
                             ? cJSON_Duplicate(cJSON_GetObjectItem(res->output, "items"), true)
                             : cJSON_CreateArray();
            if (res->rc < 0)
                log_warn("n%ld: the retriever failed: %s", l->id, res->error);
            ideate(l);
            break;
        case EX_IDEATE:
            ideas_done(l, res);
            break;
        case EX_REVIEW:
            if (res->rc < 0)
                log_warn("n%ld: the critic's review failed: %s; keeping ideas in the planner's "
                         "order",
                         l->id, res->error);
            expand_finish(l, res->rc == 0 ? cJSON_GetObjectItem(res->output, "ranking") : NULL,
                          res->rc == 0 ? cJSON_GetObjectItem(res->output, "scores") : NULL);
            break;
        }
    }
    cJSON_Delete(out);
    check_usage(r);
}

/* ---- engine callbacks ------------------------------------------------------------------ */

static void cb_expand(struct mcts *t, mcts_id node, void *ud)
{
    (void)t;
    expand_begin(ud, (long)node);
}

static void cb_evaluate(struct mcts *t, mcts_id node, void *ud)
{
    struct research *r = ud;
    (void)t;
    const struct rs_node *n = &r->nodes[node];
    if (n->state && !strcmp(n->state, "done")) {
        mcts_evaluated(r->tree, node, n->value, 0);
        return;
    }
    if (r->dropping || r->interrupted) {
        mcts_evaluated(r->tree, node, 0, 0); /* stays pending in the store */
        return;
    }
    eval_enqueue(r, (long)node, true);
}

static bool cb_terminal(struct mcts *t, mcts_id node, void *ud)
{
    struct research *r = ud;
    (void)t;
    const struct rs_node *n = &r->nodes[node];
    return node != 0 && is_failed(n) && !debuggable(r, (long)node);
}

/* Whether the engine has something to start: a node that ran cleanly and
 * has no children yet, a failed node to debug, or a node to evaluate. */
static bool work_left(struct research *r)
{
    for (size_t i = 0; i < r->n; i++) {
        const struct rs_node *n = &r->nodes[i];
        if (r->live[i])
            continue;
        if (!strcmp(n->state, "pending") || debuggable(r, (long)i))
            return true;
        if (!strcmp(n->state, "done") && (i == 0 || !is_failed(n))) {
            bool leaf = true;
            for (size_t j = i + 1; j < r->n && leaf; j++)
                leaf = r->nodes[j].parent != (long)i;
            if (leaf)
                return true;
        }
    }
    return false;
}

static mcts_id cb_select(struct mcts *t, void *ud)
{
    struct research *r = ud;
    (void)t;
    if (!work_left(r)) {
        /* wait for what is in flight instead of re-walking finished leaves:
         * a node the engine waits for makes it pause */
        for (size_t i = 0; i < r->n; i++)
            if (r->live[i] && r->live[i]->engine)
                return (mcts_id)i;
        return MCTS_NONE;
    }
    if (r->cfg->loop_debug_attempts == 0 || rng_uniform(r) >= r->cfg->loop_debug_probability)
        return MCTS_NONE;
    long count = 0, pick = -1;
    for (size_t i = 1; i < r->n; i++)
        if (debuggable(r, (long)i) && rng_next(r) % (uint64_t)++count == 0)
            pick = (long)i;
    return pick < 0 ? MCTS_NONE : (mcts_id)pick;
}

static void cb_done(struct mcts *t, enum mcts_stop why, void *ud)
{
    struct research *r = ud;
    r->engine_running = false;
    r->engine_done = true;
    if (why == MCTS_STOP_ERROR) {
        error_set("%s", mcts_last_error(t) ? mcts_last_error(t) : "the search failed");
        fatal(r, TH_ERR);
        return;
    }
    if (why == MCTS_STOP_EXHAUSTED && !r->stopping)
        request_stop(r, "nothing left to try: every idea of the tree was run", false);
    if (why == MCTS_STOP_ITERATIONS && !r->stopping) {
        char *s = xasprintf("iteration limit reached: %ld iterations",
                            r->run.iterations + (long)mcts_iterations(t));
        request_stop(r, s, false);
        free(s);
    }
    maybe_finish(r);
}

/* ---- stopping ---------------------------------------------------------------------------- */

/* Stops starting expansions; a hard stop also leaves the experiments that
 * have not started pending and drops the expansions in flight. Experiments
 * that run finish and are recorded. */
static void request_stop(struct research *r, const char *reason, bool hard)
{
    if (reason && !strstr(buf_str(&r->reasons), reason))
        buf_printf(&r->reasons, "%s\n", reason);
    if (!r->stopping) {
        r->stopping = true;
        if (r->engine_running)
            mcts_cancel(r->tree);
    }
    if (!hard || r->dropping)
        return;
    r->dropping = true;
    for (size_t i = 0; i < r->n; i++) {
        struct live *l = r->live[i];
        if (l && l->kind == LIVE_EXPAND) {
            if (l->task)
                agent_cancel(l->task);
            l->task = NULL;
            long id = l->id;
            live_free(l);
            expand_answer(r, id);
        }
    }
    queue_pump(r);
}

/* Stops the engine without waiting for its answers (after an interrupt or
 * a fatal error, nothing in flight will answer). */
static void abandon(struct research *r)
{
    r->stopping = r->dropping = true;
    for (size_t i = 0; i < r->n; i++) {
        struct live *l = r->live[i];
        if (!l)
            continue;
        if (l->task) {
            agent_cancel(l->task);
            l->task = NULL;
        }
        if (l->sb) {
            sandbox_cancel(l->sb);
            continue; /* its callback frees it */
        }
        live_free(l);
    }
    r->queue_head = r->queue_tail = NULL;
    if (r->engine_running) {
        mcts_cancel(r->tree);
        r->engine_running = false;
        r->engine_done = true;
    }
    maybe_finish(r);
}

static void fatal(struct research *r, int rc)
{
    (void)rc;
    if (!r->fatal)
        r->fatal = xstrdup(error_message());
    r->failed = true;
    r->interrupted = true; /* stop everything in flight */
    abandon(r);
}

static void on_shutdown(struct loop *loop, int signo, int count, void *ud)
{
    struct research *r = ud;
    (void)signo;
    if (count > 1) {
        loop_stop(loop); /* a second Ctrl-C: leave at once */
        return;
    }
    status_clear(r);
    fprintf(stderr, "interrupted: stopping the run (Ctrl-C again to leave at once)\n");
    r->interrupted = true;
    if (!strstr(buf_str(&r->reasons), "interrupted"))
        buf_puts(&r->reasons, "interrupted (Ctrl-C)\n");
    abandon(r);
}

static void on_deadline(struct loop_timer *timer, void *ud)
{
    struct research *r = ud;
    (void)timer;
    r->deadline = NULL;
    char *t = xasprintf("time limit reached: %ld seconds", r->limit_seconds);
    request_stop(r, t, true);
    free(t);
}

static void maybe_finish(struct research *r)
{
    if (r->finished || r->inflight > 0 || r->engine_running)
        return;
    if (!r->stopping && !r->interrupted && !r->engine_done)
        return;
    r->finished = true;
    if (r->tick)
        loop_timer_cancel(r->tick);
    if (r->deadline)
        loop_timer_cancel(r->deadline);
    r->tick = r->deadline = NULL;
    loop_stop(r->loop);
}

/* ---- set-up -------------------------------------------------------------------------------- */

/* A run writes into .thalamus/ and .git/: say so plainly when it cannot. */
static int check_writable(struct research *r)
{
    const char *dirs[] = {WORKSPACE_STATE_DIR, ".git"};
    for (int i = 0; i < 2; i++) {
        char *path = fs_join(r->workspace, dirs[i]);
        int rc = 0;
        if (i == 0 && !fs_exists(path) && mkdir(path, 0755) < 0)
            rc = error_set("cannot create '%s': %s; a run keeps its records there", path,
                           strerror(errno));
        else if (fs_exists(path) && access(path, W_OK) < 0)
            rc = error_set("cannot write to '%s': %s; a run records its experiments in "
                           ".thalamus/ and as git commits, so the workspace must be writable",
                           path, strerror(errno));
        free(path);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int open_all(struct research *r)
{
    int rc = config_load(&r->cfg, r->workspace);
    if (rc < 0 || (rc = check_writable(r)) < 0)
        return rc;
    llm_register_migrations();
    memory_register_migrations();
    research_register_migrations();
    if ((rc = workspace_store_open(r->workspace, &r->store)) < 0)
        return rc;
    struct memory_params params;
    memory_params_from_config(&params, r->cfg);
    if ((rc = memory_new(&r->mem, r->store, &params)) < 0 || (rc = loop_new(&r->loop)) < 0 ||
        (rc = llm_new(&r->gw, r->loop, r->cfg, r->store)) < 0)
        return rc;
    memory_defer_checkpoints(r->mem); /* flush_later() runs them */
    struct agent_runtime_options o = {
        .loop = r->loop,
        .cfg = r->cfg,
        .workspace = r->workspace,
        .llm = r->gw,
        .memory = r->mem,
    };
    if ((rc = agent_runtime_new(&r->rt, &o)) < 0)
        return rc;
    for (int s = 0; s < 5; s++) {
        const char **names = NULL;
        if ((rc = agent_stage_agents(r->rt, agent_stages[s], &names)) < 0)
            return rc;
        r->stage_agent[s] = xstrdup(names[0]);
        size_t n = 0;
        while (names[n])
            n++;
        r->stage_extra[s] = xcalloc(n, sizeof *r->stage_extra[s]);
        for (size_t i = 1; i < n; i++)
            r->stage_extra[s][i - 1] = xstrdup(names[i]);
        free(names);
    }
    return ledger_open(&r->ledger, r->workspace);
}

static int lock_run(struct research *r)
{
    char *rel = xasprintf("%s/runs/%s", WORKSPACE_STATE_DIR, r->run.id);
    r->run_dir = fs_join(r->workspace, rel);
    free(rel);
    int rc = fs_mkdir_p(r->run_dir, 0755);
    if (rc < 0)
        return rc;
    char *path = fs_join(r->run_dir, "lock");
    r->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (r->lock_fd < 0)
        rc = error_set("cannot open '%s': %s", path, strerror(errno));
    else if (flock(r->lock_fd, LOCK_EX | LOCK_NB) < 0)
        rc = error_set("run '%s' is in use by another thalamus process; wait for it to end or "
                       "stop it with Ctrl-C",
                       r->run.id);
    free(path);
    return rc;
}

static cJSON *effective_config(struct research *r)
{
    cJSON *all = config_to_json(r->cfg);
    cJSON *values = cJSON_GetObjectItem(all, "values");
    cJSON *out = cJSON_CreateObject();
    const char *sections[] = {"task", "loop", "sandbox"};
    for (int i = 0; i < 3; i++) {
        cJSON *s = cJSON_GetObjectItem(values, sections[i]);
        if (s)
            cJSON_AddItemToObject(out, sections[i], cJSON_Duplicate(s, true));
    }
    cJSON *loop = cJSON_GetObjectItem(out, "loop");
    if (loop) { /* what this run uses, after the command line */
        cJSON_ReplaceItemInObject(loop, "rounds", cJSON_CreateNumber((double)r->limit_rounds));
        cJSON_ReplaceItemInObject(loop, "ideas", cJSON_CreateNumber((double)r->ideas));
        cJSON_ReplaceItemInObject(loop, "jobs", cJSON_CreateNumber((double)r->jobs));
        cJSON_ReplaceItemInObject(loop, "drafts", cJSON_CreateNumber((double)r->drafts));
        cJSON_ReplaceItemInObject(loop, "keep", cJSON_CreateNumber((double)r->keep));
    }
    cJSON_Delete(all);
    return out;
}

static cJSON *limits_json(struct research *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "rounds", (double)r->limit_rounds);
    if (r->limit_experiments)
        cJSON_AddNumberToObject(o, "experiments", (double)r->limit_experiments);
    else
        cJSON_AddNullToObject(o, "experiments");
    if (r->limit_iterations)
        cJSON_AddNumberToObject(o, "iterations", (double)r->limit_iterations);
    else
        cJSON_AddNullToObject(o, "iterations");
    if (r->limit_tokens)
        cJSON_AddNumberToObject(o, "tokens", (double)r->limit_tokens);
    else
        cJSON_AddNullToObject(o, "tokens");
    if (!isnan(r->limit_cost))
        cJSON_AddNumberToObject(o, "cost", r->limit_cost);
    else
        cJSON_AddNullToObject(o, "cost");
    if (r->limit_seconds)
        cJSON_AddNumberToObject(o, "seconds", (double)r->limit_seconds);
    else
        cJSON_AddNullToObject(o, "seconds");
    if (!isnan(r->target))
        cJSON_AddNumberToObject(o, "target", r->target);
    else
        cJSON_AddNullToObject(o, "target");
    return o;
}

static long num_of(const cJSON *o, const char *key, long def)
{
    const cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsNumber(v) ? (long)v->valuedouble : def;
}

/* Limits and knobs: the command line, else (on resume) the run's own, else
 * the configuration. */
static void settle_limits(struct research *r, const cJSON *saved_limits, const cJSON *saved_cfg)
{
    const struct research_options *o = &r->opt;
    const struct config *cfg = r->cfg;
    const cJSON *sl = cJSON_GetObjectItem(saved_cfg, "loop");
    r->limit_rounds = o->rounds ? o->rounds : num_of(saved_limits, "rounds", cfg->loop_rounds);
    r->ideas = o->ideas ? o->ideas : num_of(sl, "ideas", cfg->loop_ideas);
    r->jobs = o->jobs ? o->jobs : num_of(sl, "jobs", cfg->loop_jobs);
    r->drafts = o->drafts ? o->drafts : num_of(sl, "drafts", cfg->loop_drafts);
    r->keep = o->keep ? o->keep : num_of(sl, "keep", cfg->loop_keep);
    r->limit_experiments = o->experiments
                               ? o->experiments
                               : num_of(saved_limits, "experiments", cfg->loop_experiments);
    r->limit_seconds = o->seconds ? o->seconds : num_of(saved_limits, "seconds", cfg->loop_seconds);
    r->limit_iterations = o->iterations ? o->iterations : num_of(saved_limits, "iterations", 0);
    /* the gateway refuses calls over these too */
    r->cfg->llm_budget.run.tokens =
        o->tokens ? o->tokens : num_of(saved_limits, "tokens", cfg->llm_budget.run.tokens);
    const cJSON *sc = cJSON_GetObjectItem(saved_limits, "cost");
    if (!isnan(o->cost))
        r->cfg->llm_budget.run.cost = o->cost;
    else if (cJSON_IsNumber(sc))
        r->cfg->llm_budget.run.cost = sc->valuedouble;
    r->limit_tokens = cfg->llm_budget.run.tokens;
    r->limit_cost = cfg->llm_budget.run.cost >= 0 ? cfg->llm_budget.run.cost : NAN;
    const cJSON *t = cJSON_GetObjectItem(saved_limits, "target");
    r->target = !isnan(o->target) ? o->target : cJSON_IsNumber(t) ? t->valuedouble : NAN;
}

static int new_run(struct research *r)
{
    if (!r->cfg->task_command)
        return error_setc(TH_ECONFIG, "task.command is not set in thalamus.lua: say how to run "
                                      "one experiment, e.g. command = { \"python3\", "
                                      "\"train.py\" }");
    char baseline[LEDGER_HEX_SIZE];
    int rc = ledger_head(r->ledger, baseline);
    if (rc < 0)
        return rc;
    if (!ledger_has_experiment(r->ledger, baseline))
        return error_set("the commit at HEAD (%.12s) has no '%s/' directory: commit the "
                         "baseline experiment first",
                         baseline, LEDGER_EXPERIMENT);
    struct rs_run *run = &r->run;
    if ((rc = rs_run_next_id(r->store, &run->id, &run->seq)) < 0)
        return rc;
    run->status = xstrdup("running");
    run->started = rs_now();
    run->provider = xstrdup(r->cfg->llm_provider);
    run->model = xstrdup(r->cfg->llm_model ? r->cfg->llm_model : "");
    run->task_name = xstrdup(r->cfg->task_name ? r->cfg->task_name : "");
    run->metric = xstrdup(r->cfg->task_metric);
    run->goal = xstrdup(r->cfg->task_goal);
    run->baseline = xstrdup(baseline);
    run->isolation = xstrdup(r->cfg->sandbox_isolation);
    run->seed = r->opt.seed ? r->opt.seed : (long)(time(NULL) % 1000000);
    settle_limits(r, NULL, NULL);
    run->config = effective_config(r);
    run->limits = limits_json(r);
    long id = node_add(r, -1, "baseline");
    struct rs_node *n = &r->nodes[id];
    n->title = xstrdup("Baseline");
    n->hypothesis = xstrdup("The experiment as committed, unchanged.");
    n->rationale = xstrdup("Every idea is measured against it.");
    if ((rc = lock_run(r)) < 0)
        return rc;
    if ((rc = tx_begin(r)) == 0) {
        rc = rs_run_save(r->store, run);
        if (rc == 0)
            rc = save_node(r, 0);
        rc = tx_commit(r, rc);
    }
    return rc;
}

/* Loads a run to resume and repairs what a crash left: a node being
 * committed gets its commit (found under its ref, or made now); a node that
 * was running goes back to pending. */
static int load_run(struct research *r)
{
    const char *id = r->opt.resume && r->opt.resume[0] ? r->opt.resume : NULL;
    int rc = rs_run_load(r->store, id, &r->run);
    if (rc < 0)
        return rc;
    if (!strcmp(r->run.status, "finished"))
        return error_setc(TH_EUSAGE,
                          "run '%s' has finished (%s); start a new one with "
                          "'thalamus run'",
                          r->run.id, r->run.stop_reason ? r->run.stop_reason : "done");
    if ((rc = lock_run(r)) < 0)
        return rc;
    size_t n = 0;
    struct rs_node *nodes = NULL;
    if ((rc = rs_nodes_load(r->store, r->run.id, &nodes, &n)) < 0)
        return rc;
    r->nodes = nodes;
    r->n = r->cap = n;
    r->live = xcalloc(n ? n : 1, sizeof *r->live);
    settle_limits(r, r->run.limits, r->run.config);
    cJSON_Delete(r->run.limits);
    r->run.limits = limits_json(r);
    r->seconds_before = r->run.seconds;
    for (size_t i = 0; i < n; i++) {
        if (r->nodes[i].order > r->next_order)
            r->next_order = r->nodes[i].order;
        if (i > 0 && r->nodes[i].order > 0)
            r->experiments_done++;
    }
    r->experiments_started = r->experiments_done;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct rs_node *x = &r->nodes[i];
        if (!strcmp(x->state, "committing")) {
            eval_commit(r, (long)i, true);
            if (r->failed)
                return TH_ERR;
        } else if (!strcmp(x->state, "running")) {
            set_str(&x->state, "pending");
            set_str(&x->started, NULL);
            x->seconds = NAN;
            if ((rc = tx_begin(r)) == 0)
                rc = tx_commit(r, save_node(r, (long)i));
        }
    }
    free(r->run.status);
    r->run.status = xstrdup("running");
    free(r->run.stop_reason);
    r->run.stop_reason = NULL;
    if (rc == 0 && (rc = tx_begin(r)) == 0)
        rc = tx_commit(r, rs_run_save(r->store, &r->run));
    return rc;
}

static int build_tree(struct research *r)
{
    struct mcts_options o;
    mcts_options_default(&o);
    o.c = r->cfg->loop_exploration;
    o.backup = MCTS_BACKUP_MAX;
    o.max_inflight = (int)r->jobs;
    o.evaluate_children = true;
    o.seed = (uint64_t)r->run.seed;
    if (r->limit_iterations)
        o.budget.iterations = r->limit_iterations > r->run.iterations
                                  ? (uint64_t)(r->limit_iterations - r->run.iterations)
                                  : 1;
    struct mcts_callbacks cb = {cb_expand, cb_evaluate, cb_terminal, cb_select, cb_done};
    int rc = mcts_new(&r->tree, &o, &cb, r);
    if (rc < 0)
        return rc;
    for (size_t i = 1; i < r->n; i++) {
        const struct rs_node *x = &r->nodes[i];
        if (mcts_add_child(r->tree, (mcts_id)x->parent, isnan(x->score) ? 1 : x->score, NULL, 0) !=
            (mcts_id)i)
            return error_set("cannot rebuild the experiment tree of run '%s'", r->run.id);
    }
    for (size_t i = 0; i < r->n; i++) {
        const struct rs_node *x = &r->nodes[i];
        if (!strcmp(x->state, "done") && !isnan(x->value))
            mcts_backup(r->tree, (mcts_id)i, x->value);
    }
    return 0;
}

static void print_summary(struct research *r)
{
    status_clear(r);
    int best = research_best(&r->run, r->nodes, r->n);
    const struct rs_node *b = best >= 0 ? &r->nodes[best] : NULL;
    const struct rs_node *base = r->n ? &r->nodes[0] : NULL;
    if (r->opt.progress == RESEARCH_PROGRESS_JSON) {
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "status", r->run.status);
        cJSON_AddStringToObject(f, "stop_reason", r->run.stop_reason ? r->run.stop_reason : "");
        cJSON_AddNumberToObject(f, "experiments", (double)r->experiments_done);
        if (b) {
            char *name = node_name(b->id);
            cJSON_AddStringToObject(f, "best", name);
            cJSON_AddNumberToObject(f, "best_metric", b->metric);
            cJSON_AddStringToObject(f, "best_commit", b->commit ? b->commit : "");
            free(name);
        }
        if (base && !isnan(base->metric))
            cJSON_AddNumberToObject(f, "baseline_metric", base->metric);
        emit(r, "finished", f, "%s", "");
        return;
    }
    FILE *out = stdout;
    printf("\n%s%s %s%s after %ld experiment%s in %.0f s\n", term_bold(out), r->run.id,
           r->run.status, term_reset(out), r->experiments_done, r->experiments_done == 1 ? "" : "s",
           r->run.seconds);
    if (r->run.stop_reason)
        for (const char *p = r->run.stop_reason; *p;) {
            size_t len = strcspn(p, "\n");
            printf("  stopped: %.*s\n", (int)len, p);
            p += len + (p[len] == '\n');
        }
    if (b && base && !isnan(base->metric)) {
        double gain = b->metric - base->metric;
        printf("  best: n%ld %s = %.6g (baseline %.6g, %+.6g%s)  %s  %.12s\n", b->id,
               r->cfg->task_metric, b->metric, base->metric, gain, base->metric != 0 ? "" : "",
               b->title ? b->title : "", b->commit ? b->commit : "");
    } else if (b) {
        printf("  best: n%ld %s = %.6g  %s\n", b->id, r->cfg->task_metric, b->metric,
               b->title ? b->title : "");
    } else {
        printf("  no experiment produced a %s\n", r->cfg->task_metric);
    }
    printf("  review: thalamus log %s, thalamus show n%d, or git log --graph --oneline "
           "--glob='refs/thalamus/runs/%s/*'\n",
           r->run.id, best >= 0 ? best : 0, r->run.id);
}

static void research_free(struct research *r)
{
    if (r->tree)
        mcts_free(r->tree);
    agent_runtime_free(r->rt);
    llm_free(r->gw);
    sandbox_release_prepared();
    ahead_drop(r);
    for (size_t i = 0; i < r->n; i++)
        if (r->live && r->live[i])
            live_free(r->live[i]);
    notes_clear(r);
    free(r->notes);
    free(r->refs);
    free(r->saves);
    rs_nodes_free(r->nodes, r->n);
    free(r->live);
    memory_free(r->mem);
    if (r->loop)
        loop_free(r->loop);
    store_close(r->store);
    ledger_free(r->ledger);
    review_gate_free(r->gate);
    config_free(r->cfg);
    rs_run_clear(&r->run);
    for (int s = 0; s < 5; s++) {
        free(r->stage_agent[s]);
        for (char **x = r->stage_extra[s]; x && *x; x++)
            free(*x);
        free(r->stage_extra[s]);
    }
    if (r->lock_fd > 0)
        close(r->lock_fd);
    free(r->run_dir);
    free(r->model_label);
    free(r->fatal);
    free(r->workspace);
    buf_free(&r->reasons);
}

int research_run(const struct research_options *opt)
{
    struct research r;
    memset(&r, 0, sizeof r);
    r.opt = *opt;
    r.lock_fd = -1;
    r.workspace = xstrdup(opt->workspace);
    buf_init(&r.reasons, 1 << 16);
    int rc = open_all(&r);
    if (rc == 0)
        rc = review_gate_new(&r.gate, opt, r.cfg, r.workspace, r.store, r.mem);
    if (rc == 0)
        rc = opt->resume ? load_run(&r) : new_run(&r);
    if (rc == 0)
        rc = build_tree(&r);
    if (rc == 0)
        rc = loop_on_shutdown(r.loop, on_shutdown, &r);
    if (rc < 0)
        goto cleanup;
    r.rng = (uint64_t)r.run.seed * 2654435761u + 88172645463325252ull;
    r.model_label =
        !strcmp(r.cfg->llm_provider, "offline")
            ? xstrdup("offline")
            : xasprintf("%s/%s", r.cfg->llm_provider,
                        r.cfg->llm_model && r.cfg->llm_model[0] ? r.cfg->llm_model : "default");
    r.session_start = loop_now(r.loop);
    r.live_status = opt->progress == RESEARCH_PROGRESS_AUTO && isatty(STDOUT_FILENO);
    if (!strcmp(r.cfg->sandbox_isolation, "none"))
        log_warn("sandbox.isolation is \"none\": experiments run with your own access rights");
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "model", r.model_label);
    cJSON_AddStringToObject(f, "isolation", r.cfg->sandbox_isolation);
    cJSON_AddItemToObject(f, "limits", cJSON_Duplicate(r.run.limits, true));
    emit(&r, opt->resume ? "resumed" : "started", f,
         "%s%s %s%s: %s, goal %s %s, %ld rounds, %ld jobs, model %s", term_bold(stdout),
         opt->resume ? "resuming" : "run", r.run.id, term_reset(stdout),
         r.cfg->task_name ? r.cfg->task_name : "task", r.cfg->task_goal, r.cfg->task_metric,
         r.limit_rounds, r.jobs, r.model_label);
    if (r.live_status)
        r.tick = loop_timer_add(r.loop, 1000, on_tick, &r);
    if (r.limit_seconds) {
        double left = (double)r.limit_seconds - r.seconds_before;
        r.deadline =
            loop_timer_add(r.loop, left > 0 ? (uint64_t)(left * 1000) : 0, on_deadline, &r);
    }
    if (strcmp(r.nodes[0].state, "done"))
        eval_enqueue(&r, 0, false);
    for (size_t i = 1; i < r.n; i++)
        if (!strcmp(r.nodes[i].state, "pending") &&
            !strcmp(r.nodes[r.nodes[i].parent].state, "done")) {
            r.resume_pending++;
            eval_enqueue(&r, (long)i, false);
        }
    if (opt->resume) {
        for (size_t i = 1; i < r.n; i++)
            if (!strcmp(r.nodes[i].state, "done"))
                queue_missing_note(&r, (long)i, r.nodes[i].commit);
        flush_later(&r);
    }
    start_engine(&r);
    if (!r.finished && loop_run(r.loop) < 0)
        rc = TH_ERR;
    flush_later(&r);
    /* the end: save the run's state */
    if (r.engine_running || r.engine_done)
        r.run.iterations += (long)mcts_iterations(r.tree);
    free(r.run.status);
    r.run.status = xstrdup(r.failed ? "failed" : r.interrupted ? "interrupted" : "finished");
    if (!r.interrupted || r.failed) {
        char *now = rs_now();
        set_str(&r.run.finished, now);
        free(now);
    }
    if (r.reasons.len) {
        char *s = xstrndup(buf_str(&r.reasons), r.reasons.len - 1);
        free(r.run.stop_reason);
        r.run.stop_reason = s;
    }
    if (r.failed) {
        set_str(&r.run.stop_reason, r.fatal);
        free(r.run.status);
        r.run.status = xstrdup("interrupted"); /* resumable once the cause is fixed */
    }
    int src = tx_begin(&r);
    if (src == 0)
        src = tx_commit(&r, save_run(&r));
    if (src < 0)
        log_error("%s", error_message());
    print_summary(&r);
    if (r.failed) {
        rc = error_set("%s", r.fatal);
        fprintf(stderr,
                "the run is saved; once the cause is fixed, continue it with 'thalamus "
                "resume %s'\n",
                r.run.id);
    } else if (r.interrupted) {
        fprintf(stderr, "interrupted: continue with 'thalamus resume %s'\n", r.run.id);
        rc = EXIT_INTERRUPTED;
    }
cleanup:
    research_free(&r);
    return rc;
}
