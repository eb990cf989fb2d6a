/*
 * research_review: the review gates of the research loop and the records of
 * the human's decisions (see review.h and docs/chat.md).
 *
 * A gate holds its level, the decisions of a decisions file (or the
 * terminal to ask on) and the ideas approved in `thalamus chat`. The loop
 * calls review_ideas() when an expansion is about to keep ideas and
 * review_code() when a coder's change is about to run; both record what
 * was decided with review_record() and mark the node's idea so that its
 * commit message says who decided. Questions on the terminal are read
 * with a plain read() on standard input: Ctrl-C while a question waits
 * ends the question and is passed on to the loop's own handler, which
 * stops the run as usual. Depends on research_internal, ledger, config,
 * memory, store, buf, fsutil, log and cJSON.
 */
#include "review.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "config.h"
#include "error.h"
#include "fsutil.h"
#include "ledger.h"
#include "log.h"
#include "memory.h"
#include "research_internal.h"

#define MAX_DECISIONS_FILE (4 << 20)
#define MAX_ANSWER         4096

struct review_gate {
    enum review_level level;
    bool interactive;
    char *file;
    cJSON *entries;     /* decisions of the file, in order */
    char *default_idea; /* "approve" or "veto" */
    char *default_code; /* "approve" or "veto" */
    cJSON *approved;    /* [{node, idea, reason}] from the chat, taken once */
    bool interrupted;
    struct store *store;
    struct memory *mem;
    char *workspace;
};

enum review_level review_level_parse(const char *s)
{
    if (s && !strcmp(s, "review-ideas"))
        return REVIEW_IDEAS;
    if (s && !strcmp(s, "review-code"))
        return REVIEW_CODE;
    return REVIEW_FULL;
}

static const char *json_str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* "n3", "3" or 3 as a node id; -1 when it is none. */
static long node_of(const cJSON *v)
{
    if (cJSON_IsNumber(v))
        return (long)v->valuedouble;
    if (!cJSON_IsString(v))
        return -1;
    const char *p = v->valuestring[0] == 'n' ? v->valuestring + 1 : v->valuestring;
    char *end;
    long id = strtol(p, &end, 10);
    return end == p || *end || id < 0 ? -1 : id;
}

/* ---- the decisions file ---------------------------------------------------------- */

static int file_error(const char *path, int line, const char *what)
{
    return error_setc(TH_EUSAGE, "%s:%d: %s (see docs/chat.md for the decisions file)", path, line,
                      what);
}

static bool valid_decision(const char *d, bool allow_edit)
{
    return d && (!strcmp(d, "approve") || !strcmp(d, "veto") || (allow_edit && !strcmp(d, "edit")));
}

static int load_decisions(struct review_gate *g, const char *path)
{
    struct buf b;
    buf_init(&b, MAX_DECISIONS_FILE);
    int rc = buf_read_file(&b, path);
    if (rc < 0) {
        buf_free(&b);
        return error_setc(TH_EUSAGE, "cannot read the decisions file '%s': %s", path,
                          error_message());
    }
    g->entries = cJSON_CreateArray();
    const char *p = buf_str(&b);
    for (int line = 1; *p && rc == 0; line++) {
        size_t len = strcspn(p, "\n");
        char *text = xstrndup(p, len);
        p += len + (p[len] == '\n');
        const char *s = text + strspn(text, " \t\r");
        if (!*s || *s == '#') {
            free(text);
            continue;
        }
        cJSON *o = cJSON_Parse(s);
        free(text);
        if (!cJSON_IsObject(o)) {
            cJSON_Delete(o);
            rc = file_error(path, line, "each line must be a JSON object");
            break;
        }
        const char *d = json_str(o, "decision");
        const char *dkey = cJSON_GetObjectItem(o, "default")        ? "default"
                           : cJSON_GetObjectItem(o, "default_code") ? "default_code"
                                                                    : NULL;
        if (dkey) {
            const char *dv = json_str(o, dkey);
            if (!valid_decision(dv, false)) {
                rc = file_error(path, line, "a default must be \"approve\" or \"veto\"");
            } else {
                char **slot = !strcmp(dkey, "default") ? &g->default_idea : &g->default_code;
                free(*slot);
                *slot = xstrdup(dv);
            }
            cJSON_Delete(o);
            continue;
        }
        bool code = cJSON_GetObjectItem(o, "code") != NULL;
        const cJSON *what = cJSON_GetObjectItem(o, code ? "code" : "idea");
        if (!cJSON_IsString(what) && !cJSON_IsNumber(what))
            rc = file_error(path, line,
                            "a decision needs \"idea\" (a title or a position) or \"code\" (a "
                            "node or a title)");
        else if (!valid_decision(d, true))
            rc = file_error(path, line, "\"decision\" must be \"approve\", \"veto\" or \"edit\"");
        else if (code && !strcmp(d, "edit") && !cJSON_IsObject(cJSON_GetObjectItem(o, "files")))
            rc = file_error(path, line,
                            "a code edit needs \"files\": { \"path\": \"new content\" }, "
                            "paths relative to the experiment");
        if (rc < 0)
            cJSON_Delete(o);
        else
            cJSON_AddItemToArray(g->entries, o);
    }
    buf_free(&b);
    return rc;
}

/* The file's entry for an idea at position pos (1-based) of node's list, or
 * for node's code change, or NULL. */
static const cJSON *find_entry(const struct review_gate *g, bool code, long node, int pos,
                               const char *title)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, g->entries)
    {
        const cJSON *what = cJSON_GetObjectItem(e, code ? "code" : "idea");
        if (!what)
            continue;
        const cJSON *nv = cJSON_GetObjectItem(e, "node");
        if (nv && node_of(nv) != node)
            continue;
        if (code && (cJSON_IsNumber(what) || (what->valuestring[0] == 'n' && node_of(what) >= 0))) {
            if (node_of(what) == node)
                return e;
        } else if (cJSON_IsNumber(what)) {
            if ((int)what->valuedouble == pos)
                return e;
        } else if (title && !strcasecmp(what->valuestring, title)) {
            return e;
        }
    }
    return NULL;
}

/* ---- the gate ----------------------------------------------------------------------- */

int review_gate_new(struct review_gate **out, const struct research_options *o,
                    const struct config *cfg, const char *workspace, struct store *store,
                    struct memory *mem)
{
    *out = NULL;
    enum review_level level = review_level_parse(cfg->loop_autonomy);
    if (o->review && level == REVIEW_FULL)
        level = REVIEW_IDEAS;
    bool approved = cJSON_GetArraySize(o->approved) > 0;
    if (level == REVIEW_FULL && !approved)
        return 0;
    const char *file = o->review_file ? o->review_file : cfg->loop_review_file;
    struct review_gate *g = xcalloc(1, sizeof *g);
    g->level = level;
    g->store = store;
    g->mem = mem;
    g->workspace = xstrdup(workspace);
    g->approved = approved ? cJSON_Duplicate(o->approved, true) : NULL;
    g->interactive = !file && isatty(STDIN_FILENO);
    int rc = 0;
    if (level != REVIEW_FULL && file) {
        /* --review-file is relative to where thalamus runs, loop.review_file to the workspace */
        g->file = file[0] == '/' || o->review_file ? xstrdup(file) : fs_join(workspace, file);
        rc = load_decisions(g, g->file);
    } else if (level != REVIEW_FULL && !g->interactive) {
        rc =
            error_setc(TH_EUSAGE,
                       "%s%s%s asks a human to review, but standard input is not a terminal: "
                       "give the decisions in a file with --review-file FILE (or "
                       "loop.review_file; see docs/chat.md)%s",
                       o->review ? "--review" : "loop.autonomy = \"",
                       o->review              ? ""
                       : level == REVIEW_CODE ? "review-code"
                                              : "review-ideas",
                       o->review ? "" : "\"", o->review ? "" : ", or set loop.autonomy = \"full\"");
    }
    if (rc < 0) {
        review_gate_free(g);
        return rc;
    }
    if (!g->default_idea)
        g->default_idea = xstrdup("approve");
    if (!g->default_code)
        g->default_code = xstrdup("approve");
    *out = g;
    return 0;
}

void review_gate_free(struct review_gate *g)
{
    if (!g)
        return;
    cJSON_Delete(g->entries);
    cJSON_Delete(g->approved);
    free(g->default_idea);
    free(g->default_code);
    free(g->file);
    free(g->workspace);
    free(g);
}

/* ---- asking on the terminal ------------------------------------------------------------ */

static volatile sig_atomic_t got_interrupt;

static void on_question_interrupt(int signo)
{
    (void)signo;
    got_interrupt = 1;
}

/* Asks question on the terminal and sets *out to the answer without its
 * line break (the caller frees it). Returns 0, 1 at the end of input, or 2
 * when Ctrl-C was pressed: that signal is then raised again for the loop's
 * own handler. */
static int ask(struct review_gate *g, const char *question, char **out)
{
    *out = NULL;
    if (g->interrupted)
        return 2;
    /* our handler first: a Ctrl-C once the question shows is the answer's */
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_question_interrupt;
    sigemptyset(&sa.sa_mask);
    got_interrupt = 0;
    sigaction(SIGINT, &sa, &old);
    printf("%s", question);
    fflush(stdout);
    struct buf b;
    buf_init(&b, MAX_ANSWER);
    int rc = 0;
    for (;;) {
        /* poll with a short timeout: a Ctrl-C between the check and a
         * blocking read would otherwise go unseen */
        if (got_interrupt) {
            rc = 2;
            break;
        }
        struct pollfd p = {STDIN_FILENO, POLLIN, 0};
        int ready = poll(&p, 1, 200);
        if (ready == 0 || (ready < 0 && errno == EINTR))
            continue;
        char c;
        ssize_t n = ready < 0 ? -1 : read(STDIN_FILENO, &c, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = 1;
            break;
        }
        if (n == 0) {
            rc = b.len ? 0 : 1;
            break;
        }
        if (c == '\n')
            break;
        if (buf_putc(&b, c) < 0) {
            error_clear();
            break;
        }
    }
    sigaction(SIGINT, &old, NULL);
    if (rc == 2) {
        putchar('\n');
        g->interrupted = true;
        raise(SIGINT); /* the loop's handler stops the run */
    }
    *out = xstrdup(buf_str(&b));
    buf_free(&b);
    return rc;
}

/* Runs $VISUAL or $EDITOR (else vi) on the files of paths (NULL-terminated)
 * and waits for it. */
static int run_editor(const char *const *paths)
{
    size_t n = 0;
    while (paths[n])
        n++;
    const char **argv = xcalloc(n + 5, sizeof *argv);
    argv[0] = "sh";
    argv[1] = "-c";
    argv[2] = "exec ${VISUAL:-${EDITOR:-vi}} \"$@\"";
    argv[3] = "sh";
    for (size_t i = 0; i < n; i++)
        argv[4 + i] = paths[i];
    pid_t pid = fork();
    if (pid == 0) {
        execv("/bin/sh", (char *const *)argv);
        _exit(127);
    }
    free(argv);
    int status = 0;
    if (pid > 0)
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
    if (pid < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return error_set("the editor failed; set EDITOR to one that works");
    return 0;
}

/* Runs the editor on a copy of *obj as JSON and replaces *obj by what was
 * saved, when it is a JSON object. */
int review_edit_json(cJSON **obj)
{
    char path[] = "/tmp/thalamus-edit-XXXXXX.json";
    int fd = mkstemps(path, 5);
    if (fd < 0)
        return error_set("cannot create a file to edit: %s", strerror(errno));
    char *text = cJSON_Print(*obj);
    int rc = fs_write_all(fd, text, strlen(text));
    free(text);
    close(fd);
    if (rc == 0) {
        const char *paths[] = {path, NULL};
        rc = run_editor(paths);
    }
    if (rc == 0) {
        struct buf b;
        buf_init(&b, 1 << 20);
        rc = buf_read_file(&b, path);
        cJSON *j = rc == 0 ? cJSON_Parse(buf_str(&b)) : NULL;
        if (cJSON_IsObject(j)) {
            cJSON_Delete(*obj);
            *obj = j;
        } else {
            cJSON_Delete(j);
            if (rc == 0)
                rc = error_set("the edited idea is not a JSON object; the idea is unchanged");
        }
        buf_free(&b);
    }
    unlink(path);
    return rc;
}

/* ---- records -------------------------------------------------------------------------- */

int review_record(struct store *store, struct memory *mem, const char *run, long node,
                  const cJSON *idea, const char *decision, const char *by, const char *reason)
{
    const char *title = json_str(idea, "title") ? json_str(idea, "title") : "?";
    const cJSON *params = cJSON_GetObjectItem(idea, "params");
    bool human = by && !strcmp(by, "human");
    char *nodename = node >= 0 ? xasprintf("n%ld", node) : NULL;
    int rc = memory_begin(mem);
    if (rc < 0) {
        free(nodename);
        return rc;
    }
    cJSON *payload = cJSON_CreateObject();
    cJSON_AddStringToObject(payload, "decision", decision);
    cJSON_AddStringToObject(payload, "by", by);
    cJSON_AddStringToObject(payload, "title", title);
    if (json_str(idea, "hypothesis"))
        cJSON_AddStringToObject(payload, "hypothesis", json_str(idea, "hypothesis"));
    if (cJSON_IsObject(params))
        cJSON_AddItemToObject(payload, "params", cJSON_Duplicate(params, true));
    if (reason && reason[0])
        cJSON_AddStringToObject(payload, "reason", reason);
    char *ptext = cJSON_PrintUnformatted(payload);
    char *text =
        xasprintf("The %s %s the idea '%s'%s%s", human ? "human" : "review default", decision,
                  title, reason && reason[0] ? ": " : "", reason && reason[0] ? reason : "");
    struct memory_episode ep = {0};
    ep.run = (char *)run;
    ep.node = nodename;
    ep.agent = "human";
    ep.kind = "human_note";
    ep.text = text;
    ep.payload = ptext;
    ep.importance = human ? 0.9 : 0.5;
    int64_t eid;
    rc = memory_episode_add(mem, &ep, &eid);
    if (rc == 0 && !strcmp(decision, "vetoed")) {
        /* the planners never propose it again: its parameters count as
         * proposed, and its text joins the idea bank of the novelty filter */
        cJSON *ip = cJSON_CreateObject();
        if (cJSON_IsObject(params))
            cJSON_AddItemToObject(ip, "params", cJSON_Duplicate(params, true));
        cJSON_AddStringToObject(ip, "title", title);
        cJSON_AddStringToObject(ip, "decision", "vetoed");
        if (reason && reason[0])
            cJSON_AddStringToObject(ip, "reason", reason);
        char *iptext = cJSON_PrintUnformatted(ip);
        char *itext = research_idea_text(idea);
        struct memory_episode ie = {0};
        ie.run = (char *)run;
        ie.node = nodename;
        ie.agent = "human";
        ie.kind = "idea";
        ie.text = itext;
        ie.payload = iptext;
        ie.importance = 0.9;
        rc = memory_episode_add(mem, &ie, &eid);
        if (rc == 0) {
            struct memory_item it;
            memory_item_init(&it);
            it.kind = "idea";
            it.title = (char *)title;
            it.text = itext;
            it.source = "human";
            cJSON_AddStringToObject(ip, "run", run ? run : "");
            char *meta = cJSON_PrintUnformatted(ip);
            it.metadata = meta;
            it.importance = 0.9;
            int64_t iid;
            rc = memory_item_add(mem, &it, &iid, NULL);
            free(meta);
        }
        free(iptext);
        free(itext);
        cJSON_Delete(ip);
    }
    if (rc == 0 && run) {
        char *why = xasprintf("'%s'%s%s", title, reason && reason[0] ? ": " : "",
                              reason && reason[0] ? reason : "");
        char *d = xasprintf("%s by %s", decision, by);
        rc = rs_event_add(store, run, node, "decision", d, why, title);
        free(d);
        free(why);
    }
    free(text);
    free(ptext);
    cJSON_Delete(payload);
    free(nodename);
    if (rc < 0) {
        memory_rollback(mem);
        return rc;
    }
    return memory_commit(mem);
}

static void mark(cJSON *idea, const char *key, const char *decision, const char *by,
                 const char *reason)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "decision", decision);
    cJSON_AddStringToObject(r, "by", by);
    if (reason && reason[0])
        cJSON_AddStringToObject(r, "reason", reason);
    if (cJSON_GetObjectItem(idea, key))
        cJSON_ReplaceItemInObject(idea, key, r);
    else
        cJSON_AddItemToObject(idea, key, r);
}

void review_commit_lines(struct buf *b, const struct rs_node *n)
{
    if (!n->idea || (n->kind && !strcmp(n->kind, "debug")))
        return;
    const char *keys[] = {"review", "code_review"};
    const char *what[] = {"idea", "code"};
    for (int i = 0; i < 2; i++) {
        const cJSON *r = cJSON_GetObjectItem(n->idea, keys[i]);
        const char *d = json_str(r, "decision"), *by = json_str(r, "by");
        if (!d || !by)
            continue;
        const char *reason = json_str(r, "reason");
        buf_printf(b, "Review: %s %s by %s%s%s%s\n", what[i], d, by, reason ? " (" : "",
                   reason ? reason : "", reason ? ")" : "");
    }
}

/* ---- ideas ---------------------------------------------------------------------------- */

void review_apply_edit(cJSON *idea, const cJSON *edit)
{
    const char *fields[] = {"title", "hypothesis", "rationale"};
    for (int i = 0; i < 3; i++) {
        const char *v = json_str(edit, fields[i]);
        if (v && v[0])
            cJSON_ReplaceItemInObject(idea, fields[i], cJSON_CreateString(v));
    }
    const cJSON *changes = cJSON_GetObjectItem(edit, "changes");
    if (cJSON_IsArray(changes))
        cJSON_ReplaceItemInObject(idea, "changes", cJSON_Duplicate(changes, true));
    const cJSON *params = cJSON_GetObjectItem(edit, "params");
    if (!cJSON_IsObject(params))
        return;
    cJSON *p = cJSON_GetObjectItem(idea, "params");
    if (!cJSON_IsObject(p)) {
        cJSON_DeleteItemFromObject(idea, "params");
        p = cJSON_AddObjectToObject(idea, "params");
    }
    cJSON *ch = cJSON_GetObjectItem(idea, "changes");
    if (!cJSON_IsArray(ch)) {
        cJSON_DeleteItemFromObject(idea, "changes");
        ch = cJSON_AddArrayToObject(idea, "changes");
    }
    const cJSON *v;
    cJSON_ArrayForEach(v, params)
    {
        if (cJSON_GetObjectItem(p, v->string))
            cJSON_ReplaceItemInObject(p, v->string, cJSON_Duplicate(v, true));
        else
            cJSON_AddItemToObject(p, v->string, cJSON_Duplicate(v, true));
        char *val = cJSON_PrintUnformatted(v);
        char *line = xasprintf("%s = %s (set in the review)", v->string, val);
        cJSON_AddItemToArray(ch, cJSON_CreateString(line));
        free(line);
        free(val);
    }
}

static void print_idea(int pos, const cJSON *idea, const cJSON *score, bool kept)
{
    FILE *f = stdout;
    const cJSON *sv = cJSON_GetObjectItem(score, "score");
    printf("%s%2d. %s%s", term_bold(f), pos,
           json_str(idea, "title") ? json_str(idea, "title") : "?", term_reset(f));
    if (cJSON_IsNumber(sv))
        printf("  (critic %.2f)", sv->valuedouble);
    printf("%s\n", kept ? "" : "  (not kept unless another is vetoed)");
    if (json_str(idea, "hypothesis"))
        printf("    %s\n", json_str(idea, "hypothesis"));
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(idea, "changes")) if (cJSON_IsString(c))
        printf("    - %s\n", c->valuestring);
    const cJSON *p = cJSON_GetObjectItem(idea, "params");
    if (cJSON_IsObject(p)) {
        char *s = cJSON_PrintUnformatted(p);
        printf("    params %s\n", s);
        free(s);
    }
}

/* Asks about one idea. Sets *decision ("approve", "veto" or "edit") and
 * *reason; an edit has already replaced the idea's fields. */
static int ask_idea(struct review_gate *g, cJSON **idea, const char **decision, char **reason)
{
    *reason = NULL;
    for (;;) {
        char *a = NULL;
        int rc = ask(g, "approve, veto or edit? [a/v/e] (a): ", &a);
        if (rc != 0) {
            free(a);
            *decision = NULL;
            return rc;
        }
        const char *s = a + strspn(a, " \t");
        if (!*s || *s == 'a' || *s == 'y') {
            *decision = "approve";
        } else if (*s == 'v' || *s == 'n') {
            *decision = "veto";
            free(a);
            rc = ask(g, "why (it steers later ideas; Enter for no reason): ", reason);
            return rc == 2 ? 2 : 0;
        } else if (*s == 'e') {
            *decision = "edit";
            if (review_edit_json(idea) < 0) {
                log_error("%s", error_message());
                error_clear();
                free(a);
                continue;
            }
        } else {
            printf("answer a (approve), v (veto) or e (edit)\n");
            free(a);
            continue;
        }
        free(a);
        return 0;
    }
}

int review_ideas(struct review_gate *g, const char *run, long node, cJSON *ideas,
                 const cJSON *scores, int **order, int *norder, long *keep)
{
    if (!g)
        return 0;
    int rc = 0;
    /* ideas approved in the chat for this node come first, and are kept */
    int added = 0;
    for (int i = cJSON_GetArraySize(g->approved) - 1; i >= 0; i--) {
        cJSON *a = cJSON_GetArrayItem(g->approved, i);
        if (node_of(cJSON_GetObjectItem(a, "node")) != node)
            continue;
        cJSON *idea = cJSON_DetachItemFromObject(a, "idea");
        cJSON_DeleteItemFromArray(g->approved, i);
        if (!cJSON_IsObject(idea)) {
            cJSON_Delete(idea);
            continue;
        }
        cJSON_AddItemToArray(ideas, idea);
        const cJSON *mark = cJSON_GetObjectItem(idea, "review");
        const char *d = json_str(mark, "decision") ? json_str(mark, "decision") : "approved";
        if ((rc = review_record(g->store, g->mem, run, node, idea, d, "human",
                                json_str(mark, "reason"))) < 0)
            return rc;
        *order = xreallocarray(*order, (size_t)*norder + 2, sizeof **order);
        memmove(*order + 1, *order, (size_t)*norder * sizeof **order);
        (*order)[0] = cJSON_GetArraySize(ideas) - 1;
        (*norder)++;
        added++;
    }
    if (added > *keep)
        *keep = added;
    if (g->level == REVIEW_FULL)
        return 0;
    int count = *norder;
    int *out = xcalloc((size_t)count + 1, sizeof *out);
    int nout = 0;
    long approved = 0;
    if (g->interactive) {
        printf("\n%sReview of the ideas for n%ld (run %s)%s: %ld of %d to keep\n",
               term_bold(stdout), node, run, term_reset(stdout), *keep, count);
    }
    for (int k = 0; k < count && rc >= 0; k++) {
        int idx = (*order)[k];
        cJSON *idea = cJSON_GetArrayItem(ideas, idx);
        if (approved >= *keep || g->interrupted) {
            out[nout++] = idx; /* not kept: recorded by the loop as before */
            continue;
        }
        const cJSON *existing = cJSON_GetObjectItem(idea, "review");
        if (existing) { /* approved in the chat */
            out[nout++] = idx;
            approved++;
            continue;
        }
        const char *decision = NULL, *by = "human";
        char *reason = NULL;
        if (g->interactive) {
            print_idea(k + 1, idea, cJSON_GetArrayItem(scores, idx), true);
            cJSON *copy = cJSON_Duplicate(idea, true);
            int a = ask_idea(g, &copy, &decision, &reason);
            if (a != 0 || !decision) {
                cJSON_Delete(copy);
                free(reason);
                if (a == 1) { /* the end of input: this one and the rest by the default */
                    g->interactive = false;
                    k--;
                    continue;
                }
                out[nout++] = idx; /* interrupted: not kept */
                continue;
            }
            if (!strcmp(decision, "edit"))
                cJSON_ReplaceItemInArray(ideas, idx, copy);
            else
                cJSON_Delete(copy);
            idea = cJSON_GetArrayItem(ideas, idx);
        } else {
            const char *title = json_str(idea, "title");
            const cJSON *e = find_entry(g, false, node, k + 1, title);
            if (e) {
                decision = json_str(e, "decision");
                reason = json_str(e, "reason") ? xstrdup(json_str(e, "reason")) : NULL;
                if (!strcmp(decision, "edit"))
                    review_apply_edit(idea, e);
            } else {
                decision = g->default_idea;
                by = "default";
            }
        }
        const char *done = !strcmp(decision, "veto")   ? "vetoed"
                           : !strcmp(decision, "edit") ? "edited"
                                                       : "approved";
        if (strcmp(done, "vetoed")) {
            mark(idea, "review", done, by, reason);
            out[nout++] = idx;
            approved++;
        }
        rc = review_record(g->store, g->mem, run, node, idea, done, by, reason);
        if (g->interactive)
            printf("%s%s%s\n", term_dim(stdout), done, term_reset(stdout));
        free(reason);
    }
    if (approved < *keep)
        *keep = approved;
    /* the approved ones first, in their order, then the rest */
    int *final = xcalloc((size_t)count + 1, sizeof *final);
    int nfinal = 0;
    for (int i = 0; i < nout; i++)
        if (cJSON_GetObjectItem(cJSON_GetArrayItem(ideas, out[i]), "review"))
            final[nfinal++] = out[i];
    for (int i = 0; i < nout; i++)
        if (!cJSON_GetObjectItem(cJSON_GetArrayItem(ideas, out[i]), "review"))
            final[nfinal++] = out[i];
    free(out);
    free(*order);
    *order = final;
    *norder = nfinal;
    return rc;
}

/* ---- code ------------------------------------------------------------------------------ */

/* The patch from the experiment directory of commit parent to tree. */
static int code_diff(const char *workspace, const char *parent, const char *tree, char **out)
{
    struct ledger *l;
    int rc = ledger_open(&l, workspace);
    if (rc == 0) {
        rc = ledger_diff_tree(l, parent, tree, out);
        ledger_free(l);
    }
    if (rc < 0)
        error_prefix("cannot show the code change");
    return rc;
}

/* Whether path is a plain relative path inside the experiment directory. */
static bool safe_relative(const char *path)
{
    if (!path[0] || path[0] == '/')
        return false;
    for (const char *p = path; *p;) {
        size_t len = strcspn(p, "/");
        if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        p += len;
        if (*p == '/')
            p++;
    }
    return true;
}

/* Writes the files of an "edit" entry ({ "files": { path: content } }) into
 * dir. */
static int write_files(const char *dir, const cJSON *files)
{
    if (!cJSON_IsObject(files) || !files->child)
        return error_setc(TH_EUSAGE, "a code edit in the decisions file needs \"files\": "
                                     "{ \"path\": \"new content\" }");
    const cJSON *f;
    cJSON_ArrayForEach(f, files)
    {
        if (!cJSON_IsString(f) || !safe_relative(f->string))
            return error_setc(TH_EUSAGE,
                              "code edit of '%s': the path must be relative to the experiment "
                              "and the content a string",
                              f->string);
    }
    cJSON_ArrayForEach(f, files)
    {
        char *path = fs_join(dir, f->string);
        char *slash = strrchr(path, '/');
        *slash = '\0';
        int rc = fs_mkdir_p(path, 0755);
        *slash = '/';
        if (rc == 0)
            rc = fs_write_atomic(path, f->valuestring, strlen(f->valuestring), 0644);
        free(path);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Opens the editor on the files the diff changes (those still present). */
static int edit_changed_files(const char *dir, const char *diff)
{
    size_t n = 0, cap = 8;
    char **paths = xcalloc(cap + 1, sizeof *paths);
    for (const char *p = diff; (p = strstr(p, "+++ b/")) != NULL;) {
        if (p != diff && p[-1] != '\n') {
            p++;
            continue;
        }
        p += 6;
        size_t len = strcspn(p, "\n");
        char *rel = xstrndup(p, len);
        if (safe_relative(rel)) {
            if (n == cap) {
                cap *= 2;
                paths = xreallocarray(paths, cap + 1, sizeof *paths);
            }
            paths[n++] = fs_join(dir, rel);
            paths[n] = NULL;
        }
        free(rel);
        p += len;
    }
    int rc = n ? run_editor((const char *const *)paths)
               : error_setc(TH_EUSAGE, "the change has no file left to edit");
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    return rc;
}

int review_code(struct review_gate *g, const char *run, struct rs_node *n,
                const char *parent_commit, const char *dir, char **veto, bool *edited)
{
    *veto = NULL;
    *edited = false;
    if (!g || g->level != REVIEW_CODE || !n->tree || !parent_commit || g->interrupted)
        return 0;
    char *diff = NULL;
    int rc = code_diff(g->workspace, parent_commit, n->tree, &diff);
    if (rc < 0)
        return rc;
    const char *decision = NULL, *by = "human";
    char *reason = NULL;
    if (g->interactive) {
        printf("\n%sReview of the code change of n%ld (run %s)%s: %s\n%s%s", term_bold(stdout),
               n->id, run, term_reset(stdout), n->title ? n->title : "",
               diff[0] ? diff : "(no change)\n",
               diff[0] && diff[strlen(diff) - 1] != '\n' ? "\n" : "");
        for (;;) {
            char *a = NULL;
            int q = ask(g, "run it, edit it or veto it? [a/e/v] (a): ", &a);
            const char *s = a ? a + strspn(a, " \t") : "";
            if (q == 2) {
                free(a);
                free(diff);
                return 0; /* interrupted: the loop stops before it runs */
            }
            if (q == 1 || !*s || *s == 'a' || *s == 'y') {
                decision = "approve";
                by = q == 1 ? "default" : "human";
            } else if (*s == 'v' || *s == 'n') {
                decision = "veto";
                if (ask(g, "why (the debug attempt is told; Enter for no reason): ", &reason) ==
                    2) {
                    free(a);
                    free(reason);
                    free(diff);
                    return 0;
                }
            } else if (*s == 'e') {
                if (edit_changed_files(dir, diff) < 0) {
                    printf("%s\n", error_message());
                    error_clear();
                    free(a);
                    continue;
                }
                decision = "edit";
            } else {
                printf("answer a (approve), e (edit) or v (veto)\n");
                free(a);
                continue;
            }
            free(a);
            break;
        }
    } else {
        const cJSON *e = find_entry(g, true, n->id, 0, n->title);
        if (e) {
            decision = json_str(e, "decision");
            reason = json_str(e, "reason") ? xstrdup(json_str(e, "reason")) : NULL;
            if (!strcmp(decision, "edit") &&
                (rc = write_files(dir, cJSON_GetObjectItem(e, "files"))) < 0) {
                free(reason);
                free(diff);
                return error_prefix("decisions file, code change of n%ld", n->id);
            }
        } else {
            decision = g->default_code;
            by = "default";
        }
    }
    free(diff);
    bool vetoed = !strcmp(decision, "veto");
    *edited = !strcmp(decision, "edit");
    if (!n->idea)
        n->idea = cJSON_CreateObject();
    mark(n->idea, "code_review", vetoed ? "vetoed" : *edited ? "edited" : "approved", by, reason);
    cJSON *idea = cJSON_Duplicate(n->idea, true);
    if (!json_str(idea, "title"))
        cJSON_AddStringToObject(idea, "title", n->title ? n->title : "experiment");
    cJSON_DeleteItemFromObject(idea, "params"); /* a code veto is not a veto of the parameters */
    rc = review_record(g->store, g->mem, run, n->id, idea,
                       vetoed    ? "code vetoed"
                       : *edited ? "code edited"
                                 : "code approved",
                       by, reason);
    cJSON_Delete(idea);
    if (vetoed)
        *veto = xasprintf("the code change was vetoed by the %s%s%s",
                          !strcmp(by, "human") ? "human" : "review default",
                          reason && reason[0] ? ": " : "", reason && reason[0] ? reason : "");
    free(reason);
    return rc;
}
