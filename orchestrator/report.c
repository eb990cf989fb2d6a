/*
 * report: renders a run document (research_export()) into report.html,
 * report.md, metric.svg, tree.svg and run.json.
 *
 * The document is first read into plain structs (report_internal.h), with
 * every field optional: missing strings are NULL, missing numbers absent,
 * ids may be strings or numbers, parent links are resolved by id, a best
 * node the document does not name is found from the metrics. The HTML page
 * and the Markdown file then say the same things in the same order: the
 * summary, the two figures (report_svg.c), the experiments, insights, notes,
 * decisions, usage by agent and the configuration with the sandbox
 * isolation. Every string from the document goes through report_escape()
 * (HTML) or md_escape() (Markdown). Depends on alloc, buf, error, fsutil,
 * utf8, report_svg and cJSON.
 */
#include "report.h"
#include "report_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "error.h"
#include "fsutil.h"
#include "utf8.h"

/* ---- reading the document ------------------------------------------------- */

static const cJSON *get(const cJSON *o, const char *key)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
}

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *v = get(o, key);
    return cJSON_IsString(v) && v->valuestring ? v->valuestring : NULL;
}

static bool num(const cJSON *o, const char *key, double *out)
{
    const cJSON *v = get(o, key);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return false;
    *out = v->valuedouble;
    return true;
}

/* An id given as a string or a number, as an owned string; NULL otherwise. */
static char *id_of(const cJSON *v)
{
    if (cJSON_IsString(v) && v->valuestring)
        return xstrdup(v->valuestring);
    if (cJSON_IsNumber(v) && isfinite(v->valuedouble))
        return xasprintf("%.15g", v->valuedouble);
    return NULL;
}

bool report_node_ok(const struct report_node *node)
{
    return node->has_metric && (!node->status || !strcmp(node->status, "ok"));
}

static bool unfinished(const char *status)
{
    return status && (!strcmp(status, "running") || !strcmp(status, "pending"));
}

struct id_index {
    const char *id;
    int index;
};

static int id_cmp(const void *a, const void *b)
{
    return strcmp(((const struct id_index *)a)->id, ((const struct id_index *)b)->id);
}

static int find_node(const struct id_index *ix, size_t n, const char *id)
{
    if (!id)
        return -1;
    struct id_index key = {id, 0};
    const struct id_index *hit = bsearch(&key, ix, n, sizeof *ix, id_cmp);
    return hit ? hit->index : -1;
}

static void read_node(struct report_node *nd, const cJSON *j)
{
    nd->id = id_of(get(j, "id"));
    nd->parent_id = id_of(get(j, "parent"));
    nd->status = str(j, "status");
    nd->title = str(j, "title");
    nd->hypothesis = str(j, "hypothesis");
    nd->kind = str(j, "kind");
    nd->label = str(j, "label");
    nd->commit = str(j, "commit");
    nd->insight = str(j, "insight");
    nd->has_metric = num(j, "metric", &nd->metric);
    double order;
    nd->order = num(j, "order", &order) && order >= 1 && order < 1e9 ? (int)order : 0;
    nd->parent = -1;
}

static void run_clear(struct report_run *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->nodes[i].id);
        free(r->nodes[i].parent_id);
    }
    free(r->nodes);
    free(r->baseline_node);
    free(r->best_node);
    memset(r, 0, sizeof *r);
}

static void run_read(struct report_run *r, const cJSON *doc)
{
    memset(r, 0, sizeof *r);
    r->doc = doc;
    r->run = get(doc, "run");
    r->id = str(r->run, "id");
    r->status = str(r->run, "status");
    const cJSON *task = get(r->run, "task");
    r->metric_name = str(task, "metric");
    const char *goal = str(task, "goal");
    r->minimize = goal && !strcmp(goal, "minimize");

    const cJSON *nodes = get(doc, "nodes");
    size_t cap = cJSON_IsArray(nodes) ? (size_t)cJSON_GetArraySize(nodes) : 0;
    r->nodes = xcalloc(cap + 1, sizeof *r->nodes);
    const cJSON *j;
    if (cap)
        cJSON_ArrayForEach(j, nodes)
        {
            if (cJSON_IsObject(j) && r->n < cap)
                read_node(&r->nodes[r->n++], j);
        }

    /* Parents by id. */
    struct id_index *ix = xcalloc(r->n + 1, sizeof *ix);
    size_t nix = 0;
    for (size_t i = 0; i < r->n; i++)
        if (r->nodes[i].id)
            ix[nix++] = (struct id_index){r->nodes[i].id, (int)i};
    qsort(ix, nix, sizeof *ix, id_cmp);
    int max_order = 0;
    for (size_t i = 0; i < r->n; i++) {
        r->nodes[i].parent = find_node(ix, nix, r->nodes[i].parent_id);
        if (r->nodes[i].order > max_order)
            max_order = r->nodes[i].order;
    }
    /* A finished experiment the document gives no order to goes last. */
    for (size_t i = 0; i < r->n; i++) {
        struct report_node *nd = &r->nodes[i];
        if (!nd->order && nd->status && !unfinished(nd->status))
            nd->order = ++max_order;
        nd->failed = nd->order > 0 && !report_node_ok(nd);
    }

    /* Baseline: as the run says, else the node of kind "baseline". */
    const cJSON *base = get(r->run, "baseline");
    r->baseline_node = id_of(get(base, "node"));
    for (size_t i = 0; i < r->n && !r->baseline_node; i++)
        if (r->nodes[i].kind && !strcmp(r->nodes[i].kind, "baseline") && r->nodes[i].id)
            r->baseline_node = xstrdup(r->nodes[i].id);
    r->has_baseline = num(base, "metric", &r->baseline_metric);
    int bi = find_node(ix, nix, r->baseline_node);
    if (!r->has_baseline && bi >= 0 && report_node_ok(&r->nodes[bi])) {
        r->has_baseline = true;
        r->baseline_metric = r->nodes[bi].metric;
    }

    /* Best: as the run says, else the best finished metric. */
    r->best_node = id_of(get(get(r->run, "best"), "node"));
    if (!r->best_node) {
        int best = -1;
        for (size_t i = 0; i < r->n; i++) {
            const struct report_node *nd = &r->nodes[i];
            if (report_node_ok(nd) && nd->id &&
                (best < 0 || (r->minimize ? nd->metric < r->nodes[best].metric
                                          : nd->metric > r->nodes[best].metric)))
                best = (int)i;
        }
        if (best >= 0)
            r->best_node = xstrdup(r->nodes[best].id);
    }
    free(ix);
}

static const struct report_node *node_by_id(const struct report_run *r, const char *id)
{
    for (size_t i = 0; id && i < r->n; i++)
        if (r->nodes[i].id && !strcmp(r->nodes[i].id, id))
            return &r->nodes[i];
    return NULL;
}

/* ---- formatting shared by both outputs ------------------------------------- */

/* Appends s for Markdown: markup characters backslash-escaped, < > & as
 * entities, line breaks as spaces (table cells and list items stay one
 * line), invalid UTF-8 and control characters as U+FFFD. */
static void md_escape(struct buf *out, const char *s)
{
    if (!s)
        return;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = utf8_sequence_length((const unsigned char *)s + i, n - i);
        if (len == 0 || (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f) {
            buf_puts(out, "\xef\xbf\xbd");
            i += len ? len : 1;
            continue;
        }
        if (c == '\n' || c == '\r' || c == '\t')
            buf_putc(out, ' ');
        else if (c == '<')
            buf_puts(out, "&lt;");
        else if (c == '>')
            buf_puts(out, "&gt;");
        else if (c == '&')
            buf_puts(out, "&amp;");
        else if (strchr("\\`*_[]|#!~", c)) {
            buf_putc(out, '\\');
            buf_putc(out, (char)c);
        } else
            buf_append(out, s + i, len);
        i += len;
    }
}

typedef void (*escape_fn)(struct buf *, const char *);

static void metric_text(char *out, size_t size, const struct report_node *nd)
{
    if (nd && nd->has_metric)
        report_format_metric(out, size, nd->metric);
    else
        snprintf(out, size, "%s", "\xe2\x80\x94"); /* em dash */
}

/* The change of node against its parent, e.g. "+0.0123 (+1.4%)", and
 * whether it is an improvement (1), a loss (-1) or neither (0). */
static int change_text(char *out, size_t size, const struct report_run *r,
                       const struct report_node *nd)
{
    snprintf(out, size, "%s", "");
    if (nd->parent < 0 || !report_node_ok(nd) || !report_node_ok(&r->nodes[nd->parent]))
        return 0;
    double p = r->nodes[nd->parent].metric, d = nd->metric - p;
    char pct[32] = "";
    if (p != 0 && isfinite(d / fabs(p)))
        snprintf(pct, sizeof pct, " (%+.1f%%)", 100 * d / fabs(p));
    char v[32];
    report_format_metric(v, sizeof v, d);
    snprintf(out, size, "%s%s%s", d > 0 ? "+" : "", v, pct);
    if (d == 0)
        return 0;
    return (d < 0) == r->minimize ? 1 : -1;
}

static void short_commit(char *out, size_t size, const char *commit)
{
    snprintf(out, size, "%.10s", commit ? commit : "");
}

/* A JSON value as short text: strings as they are, others printed. */
static char *value_text(const cJSON *v)
{
    if (cJSON_IsString(v))
        return xstrdup(v->valuestring ? v->valuestring : "");
    if (cJSON_IsNull(v) || !v)
        return xstrdup("\xe2\x80\x94");
    if (cJSON_IsNumber(v)) {
        char m[40];
        snprintf(m, sizeof m, "%.10g", v->valuedouble);
        return xstrdup(m);
    }
    char *s = cJSON_PrintUnformatted(v);
    return s ? s : xstrdup("?");
}

/* Calls fn for each leaf of a JSON object with its dotted key. */
typedef void (*leaf_fn)(const char *key, const cJSON *value, void *ud);

static void each_leaf(const cJSON *o, const char *prefix, leaf_fn fn, void *ud, int depth)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, o)
    {
        if (!c->string)
            continue;
        char *key = prefix ? xasprintf("%s.%s", prefix, c->string) : xstrdup(c->string);
        if (cJSON_IsObject(c) && c->child && depth < 8)
            each_leaf(c, key, fn, ud, depth + 1);
        else
            fn(key, c, ud);
        free(key);
    }
}

static void count_statuses(const struct report_run *r, size_t *ok, size_t *failed, size_t *open)
{
    *ok = *failed = *open = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (report_node_ok(&r->nodes[i]) && r->nodes[i].order)
            (*ok)++;
        else if (r->nodes[i].failed)
            (*failed)++;
        else
            (*open)++;
    }
}

static void now_utc(char *out, size_t size)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- summary rows, shared ------------------------------------------------- */

/* Calls row(label, text) for each line of the run's summary. */
typedef void (*row_fn)(struct buf *b, const char *label, const char *text, const char *cls);

static void summary_rows(struct buf *b, const struct report_run *r, row_fn row)
{
    const cJSON *run = r->run, *task = get(run, "task");
    char t[256], m[32];
    row(b, "task", str(task, "name"), NULL);
    if (r->metric_name || str(task, "goal")) {
        snprintf(t, sizeof t, "%s (%s)", r->metric_name ? r->metric_name : "metric",
                 r->minimize ? "minimize" : "maximize");
        row(b, "metric", t, NULL);
    }
    row(b, "status", r->status ? r->status : "unknown", "status");
    row(b, "stop reason", str(run, "stop_reason"), NULL);
    row(b, "started", str(run, "started"), NULL);
    row(b, "finished", str(run, "finished"), NULL);
    const char *provider = str(run, "provider"), *model = str(run, "model");
    if (provider || model) {
        snprintf(t, sizeof t, "%s%s%s", provider ? provider : "", provider && model ? " / " : "",
                 model ? model : "");
        row(b, "model", t, NULL);
    }
    if (r->has_baseline) {
        report_format_metric(m, sizeof m, r->baseline_metric);
        snprintf(t, sizeof t, "%s (node %.40s)", m, r->baseline_node ? r->baseline_node : "?");
        row(b, "baseline", t, NULL);
    }
    const struct report_node *best = node_by_id(r, r->best_node);
    double bm;
    bool has_best = num(get(run, "best"), "metric", &bm);
    if (!has_best && best && best->has_metric) {
        bm = best->metric;
        has_best = true;
    }
    if (has_best) {
        report_format_metric(m, sizeof m, bm);
        char change[64] = "";
        if (r->has_baseline && bm != r->baseline_metric) {
            char d[32];
            report_format_metric(d, sizeof d, bm - r->baseline_metric);
            snprintf(change, sizeof change, ", %s%s against the baseline",
                     bm > r->baseline_metric ? "+" : "", d);
        }
        const char *title = str(get(run, "best"), "title");
        if (!title && best)
            title = best->title;
        char *line = xasprintf("%s (node %s%s): %s", m, r->best_node ? r->best_node : "?", change,
                               title ? title : "");
        row(b, "best", line, "best");
        free(line);
    } else
        row(b, "best", "none yet", NULL);
    size_t ok, failed, open;
    count_statuses(r, &ok, &failed, &open);
    snprintf(t, sizeof t, "%zu: %zu with a metric, %zu without", r->n, ok, failed);
    if (open)
        snprintf(t + strlen(t), sizeof t - strlen(t), ", %zu not finished", open);
    row(b, "experiments", t, NULL);
    row(b, "sandbox isolation", str(run, "isolation"), "isolation");
}

/* ---- HTML ------------------------------------------------------------------ */

static const char html_style[] =
    ":root{--fg:#111827;--muted:#6b7280;--line:#e5e7eb;--accent:#2563eb;--bg:#fff}\n"
    "*{box-sizing:border-box}\n"
    "body{margin:0;background:#f3f4f6;color:var(--fg);font:15px/1.5 system-ui,-apple-system,"
    "'Segoe UI',Roboto,'DejaVu Sans',sans-serif}\n"
    "main{max-width:1120px;margin:0 auto;padding:24px 28px 48px;background:var(--bg)}\n"
    "h1{font-size:1.7em;margin:.2em 0 .1em}h2{font-size:1.25em;margin:2em 0 .6em;"
    "padding-bottom:.25em;border-bottom:2px solid var(--line)}\n"
    ".sub{color:var(--muted);margin:0 0 1em}\n"
    "code,.mono{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:.9em}\n"
    "table{border-collapse:collapse;width:100%;font-size:.92em}\n"
    "th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);"
    "vertical-align:top}\n"
    "th{background:#f9fafb;font-weight:600}tbody tr:nth-child(even){background:#fafafa}\n"
    "td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}td.num{white-space:nowrap}\n"
    "table.facts th{width:11em;background:none;color:var(--muted);font-weight:500}\n"
    ".badge{display:inline-block;padding:0 .5em;border-radius:9px;font-size:.85em;"
    "color:#fff;background:#607d8b;white-space:nowrap}\n"
    ".badge.ok{background:#2e7d32}.badge.failed{background:#c62828}"
    ".badge.timeout{background:#e65100}.badge.invalid{background:#b28704}"
    ".badge.oom{background:#6a1b9a}.badge.killed{background:#5d4037}"
    ".badge.running{background:#1565c0}.badge.pending{background:#9e9e9e}"
    ".badge.finished{background:#2e7d32}.badge.interrupted{background:#e65100}\n"
    ".badge.improve{background:#2e7d32}.badge.maintain{background:#607d8b}"
    ".badge.decline{background:#c62828}\n"
    ".better{color:#2e7d32}.worse{color:#c62828}\n"
    "tr.best td{background:#fff7e0}\n"
    ".idea small{display:block;color:var(--muted)}\n"
    ".warn{background:#fff4e5;border-left:4px solid #e65100;padding:6px 10px}\n"
    "figure{margin:0}figcaption{color:var(--muted);font-size:.9em;margin-top:.3em}\n"
    "figure svg{max-width:100%;height:auto}\n"
    ".scroll{overflow:auto;max-height:900px;border:1px solid var(--line)}\n"
    ".scroll svg{display:block;max-width:none}\n"
    "ul.insights li,ul.notes li{margin:.3em 0}\n"
    ".empty{color:var(--muted);font-style:italic}\n"
    "footer{margin-top:3em;color:var(--muted);font-size:.85em}\n"
    "@media print{body{background:#fff;-webkit-print-color-adjust:exact;print-color-adjust:exact}"
    "main{max-width:none;padding:0}"
    ".scroll{overflow:visible;max-height:none;border:0}.scroll svg{max-width:100%;height:auto}"
    "h2{break-after:avoid}tr,figure,li{break-inside:avoid}}\n";

static void html_row(struct buf *b, const char *label, const char *text, const char *cls)
{
    if (!text)
        return;
    buf_puts(b, "<tr><th>");
    report_escape(b, label);
    buf_puts(b, "</th><td>");
    if (cls && !strcmp(cls, "status")) {
        buf_puts(b, "<span class=\"badge ");
        report_escape(b, text);
        buf_puts(b, "\">");
        report_escape(b, text);
        buf_puts(b, "</span>");
    } else if (cls && !strcmp(cls, "isolation") && !strcmp(text, "none")) {
        buf_puts(b, "<span class=\"warn\">none: experiments ran without isolation</span>");
    } else
        report_escape(b, text);
    buf_puts(b, "</td></tr>\n");
}

static void html_badge(struct buf *b, const char *value)
{
    if (!value)
        return;
    buf_puts(b, "<span class=\"badge ");
    report_escape(b, value);
    buf_puts(b, "\">");
    report_escape(b, value);
    buf_puts(b, "</span>");
}

static void html_experiments(struct buf *b, const struct report_run *r)
{
    buf_puts(b, "<h2 id=\"experiments-heading\">Experiments</h2>\n");
    if (r->n == 0) {
        buf_puts(b, "<p class=\"empty\">No experiments yet.</p>\n");
    }
    buf_puts(b, "<table id=\"experiments\"><thead><tr><th>node</th><th>idea</th>"
                "<th>kind</th><th>status</th><th class=\"num\">metric</th>"
                "<th class=\"num\">change against parent</th><th>label</th>"
                "<th>commit</th></tr></thead>\n<tbody>\n");
    char m[32], ch[96], c[16];
    for (size_t i = 0; i < r->n; i++) {
        const struct report_node *nd = &r->nodes[i];
        bool is_best = r->best_node && nd->id && !strcmp(nd->id, r->best_node);
        buf_puts(b, is_best ? "<tr class=\"best\" data-node=\"" : "<tr data-node=\"");
        report_escape(b, nd->id);
        buf_puts(b, "\"><td class=\"mono\">");
        report_escape(b, nd->id);
        if (nd->parent_id) {
            buf_puts(b, "<br><small>from ");
            report_escape(b, nd->parent_id);
            buf_puts(b, "</small>");
        }
        buf_puts(b, "</td><td class=\"idea\">");
        report_escape(b, nd->title ? nd->title : nd->kind);
        if (nd->hypothesis) {
            buf_puts(b, "<small>");
            report_escape(b, nd->hypothesis);
            buf_puts(b, "</small>");
        }
        buf_puts(b, "</td><td>");
        report_escape(b, nd->kind);
        buf_puts(b, "</td><td>");
        html_badge(b, nd->status);
        metric_text(m, sizeof m, nd);
        int dir = change_text(ch, sizeof ch, r, nd);
        short_commit(c, sizeof c, nd->commit);
        buf_printf(b, "</td><td class=\"num metric\">%s</td><td class=\"num %s\">", m,
                   dir > 0   ? "better"
                   : dir < 0 ? "worse"
                             : "");
        report_escape(b, ch);
        buf_puts(b, "</td><td>");
        html_badge(b, nd->label);
        buf_puts(b, "</td><td class=\"mono\">");
        report_escape(b, c);
        buf_puts(b, "</td></tr>\n");
    }
    buf_puts(b, "</tbody></table>\n");
}

static void html_insights(struct buf *b, const struct report_run *r)
{
    const cJSON *list = get(r->doc, "insights"), *it;
    buf_puts(b, "<h2 id=\"insights\">Key insights</h2>\n");
    if (!cJSON_GetArraySize(list)) {
        buf_puts(b, "<p class=\"empty\">No insights recorded.</p>\n");
        return;
    }
    buf_puts(b, "<ul class=\"insights\">\n");
    cJSON_ArrayForEach(it, list)
    {
        char *node = id_of(get(it, "node"));
        buf_puts(b, "<li>");
        html_badge(b, str(it, "label"));
        if (node) {
            buf_puts(b, " <span class=\"mono\">");
            report_escape(b, node);
            buf_puts(b, "</span>");
        }
        buf_puts(b, " ");
        report_escape(b, str(it, "text"));
        buf_puts(b, "</li>\n");
        free(node);
    }
    buf_puts(b, "</ul>\n");
}

static void html_notes(struct buf *b, const struct report_run *r)
{
    const cJSON *notes = get(r->doc, "notes"), *decisions = get(r->doc, "decisions"), *it;
    buf_puts(b, "<h2 id=\"notes\">Notes and decisions</h2>\n");
    if (!cJSON_GetArraySize(notes) && !cJSON_GetArraySize(decisions)) {
        buf_puts(b, "<p class=\"empty\">No notes or decisions.</p>\n");
        return;
    }
    if (cJSON_GetArraySize(notes)) {
        buf_puts(b, "<ul class=\"notes\" id=\"notes-list\">\n");
        cJSON_ArrayForEach(it, notes)
        {
            buf_puts(b, "<li>");
            if (str(it, "time")) {
                buf_puts(b, "<span class=\"mono\">");
                report_escape(b, str(it, "time"));
                buf_puts(b, "</span> ");
            }
            report_escape(b, str(it, "text"));
            buf_puts(b, "</li>\n");
        }
        buf_puts(b, "</ul>\n");
    }
    if (cJSON_GetArraySize(decisions)) {
        buf_puts(b, "<table id=\"decisions\"><thead><tr><th>node</th><th>decision</th>"
                    "<th>reason</th><th>time</th></tr></thead>\n<tbody>\n");
        cJSON_ArrayForEach(it, decisions)
        {
            char *node = id_of(get(it, "node"));
            buf_puts(b, "<tr><td class=\"mono\">");
            report_escape(b, node);
            buf_puts(b, "</td><td>");
            report_escape(b, str(it, "decision"));
            buf_puts(b, "</td><td>");
            report_escape(b, str(it, "reason"));
            buf_puts(b, "</td><td class=\"mono\">");
            report_escape(b, str(it, "time"));
            buf_puts(b, "</td></tr>\n");
            free(node);
        }
        buf_puts(b, "</tbody></table>\n");
    }
}

static void number_cell(char *out, size_t size, const cJSON *o, const char *key, const char *fmt)
{
    double v;
    if (num(o, key, &v))
        snprintf(out, size, fmt, v);
    else
        snprintf(out, size, "%s", "\xe2\x80\x94");
}

struct usage_row {
    char *agent;
    char requests[32], input[32], output[32], cost[32];
};

static struct usage_row *usage_rows(const struct report_run *r, size_t *n_out)
{
    const cJSON *list = get(r->doc, "usage"), *it;
    size_t n = 0, cap = (size_t)cJSON_GetArraySize(list) + 1;
    struct usage_row *rows = xcalloc(cap + 1, sizeof *rows);
    double total[4] = {0};
    bool cost_known = true;
    cJSON_ArrayForEach(it, list)
    {
        if (n + 1 >= cap)
            break;
        struct usage_row *u = &rows[n++];
        u->agent = xstrdup(str(it, "agent") ? str(it, "agent") : "?");
        number_cell(u->requests, sizeof u->requests, it, "requests", "%.0f");
        number_cell(u->input, sizeof u->input, it, "input_tokens", "%.0f");
        number_cell(u->output, sizeof u->output, it, "output_tokens", "%.0f");
        number_cell(u->cost, sizeof u->cost, it, "cost", "%.4f");
        const char *keys[4] = {"requests", "input_tokens", "output_tokens", "cost"};
        for (int k = 0; k < 4; k++) {
            double v;
            if (num(it, keys[k], &v))
                total[k] += v;
            else if (k == 3)
                cost_known = false;
        }
    }
    if (n) {
        struct usage_row *u = &rows[n++];
        u->agent = xstrdup("total");
        snprintf(u->requests, sizeof u->requests, "%.0f", total[0]);
        snprintf(u->input, sizeof u->input, "%.0f", total[1]);
        snprintf(u->output, sizeof u->output, "%.0f", total[2]);
        if (cost_known)
            snprintf(u->cost, sizeof u->cost, "%.4f", total[3]);
        else
            snprintf(u->cost, sizeof u->cost, "%.4f + unknown", total[3]);
    }
    *n_out = n;
    return rows;
}

static void usage_rows_free(struct usage_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(rows[i].agent);
    free(rows);
}

static void html_usage(struct buf *b, const struct report_run *r)
{
    size_t n;
    struct usage_row *rows = usage_rows(r, &n);
    buf_puts(b, "<h2 id=\"usage\">Model usage</h2>\n");
    if (!n)
        buf_puts(b, "<p class=\"empty\">No model calls recorded.</p>\n");
    else {
        buf_puts(b, "<table id=\"usage-table\"><thead><tr><th>agent</th>"
                    "<th class=\"num\">requests</th><th class=\"num\">input tokens</th>"
                    "<th class=\"num\">output tokens</th><th class=\"num\">cost</th></tr>"
                    "</thead>\n<tbody>\n");
        for (size_t i = 0; i < n; i++) {
            buf_puts(b, i + 1 == n ? "<tr class=\"total\"><td><b>" : "<tr><td>");
            report_escape(b, rows[i].agent);
            buf_printf(b,
                       "%s</td><td class=\"num\">%s</td><td class=\"num\">%s</td>"
                       "<td class=\"num\">%s</td><td class=\"num\">%s</td></tr>\n",
                       i + 1 == n ? "</b>" : "", rows[i].requests, rows[i].input, rows[i].output,
                       rows[i].cost);
        }
        buf_puts(b, "</tbody></table>\n");
    }
    usage_rows_free(rows, n);
}

struct leaf_ctx {
    struct buf *b;
    escape_fn esc;
    const char *before, *middle, *after;
};

static void leaf_row(const char *key, const cJSON *value, void *ud)
{
    struct leaf_ctx *c = ud;
    char *text = value_text(value);
    buf_puts(c->b, c->before);
    c->esc(c->b, key);
    buf_puts(c->b, c->middle);
    c->esc(c->b, text);
    buf_puts(c->b, c->after);
    free(text);
}

static void html_config(struct buf *b, const struct report_run *r)
{
    const char *iso = str(r->run, "isolation");
    buf_puts(b, "<h2 id=\"configuration\">Configuration</h2>\n<p>Sandbox isolation: ");
    if (iso && !strcmp(iso, "none"))
        buf_puts(b, "<span class=\"warn\"><b>none</b>: the experiments ran without the "
                    "sandbox's isolation</span>");
    else {
        buf_puts(b, "<b>");
        report_escape(b, iso ? iso : "unknown");
        buf_puts(b, "</b>");
    }
    buf_puts(b, "</p>\n");
    struct leaf_ctx c = {b, report_escape, "<tr><td class=\"mono\">", "</td><td class=\"mono\">",
                         "</td></tr>\n"};
    const cJSON *budget = get(r->run, "budget");
    if (cJSON_IsObject(budget) && budget->child) {
        buf_puts(b, "<h3>Budget</h3>\n<table id=\"budget-table\"><thead><tr><th>item</th>"
                    "<th>value</th></tr></thead>\n<tbody>\n");
        each_leaf(budget, NULL, leaf_row, &c, 0);
        buf_puts(b, "</tbody></table>\n");
    }
    const cJSON *config = get(r->run, "config");
    if (cJSON_IsObject(config) && config->child) {
        buf_puts(b, "<h3>Settings</h3>\n<table id=\"config-table\"><thead><tr><th>key</th>"
                    "<th>value</th></tr></thead>\n<tbody>\n");
        each_leaf(config, NULL, leaf_row, &c, 0);
        buf_puts(b, "</tbody></table>\n");
    } else
        buf_puts(b, "<p class=\"empty\">The configuration was not recorded.</p>\n");
}

static void render_html(struct buf *b, const struct report_run *r, const char *metric_svg,
                        const char *tree_svg, const char *generated)
{
    const char *task = str(get(r->run, "task"), "name");
    buf_puts(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                "<title>");
    report_escape(b, task ? task : "research run");
    buf_puts(b, " \xe2\x80\x94 thalamus report</title>\n<style>\n");
    buf_puts(b, html_style);
    buf_puts(b, "</style>\n</head>\n<body>\n<main>\n<header>\n<h1>");
    report_escape(b, task ? task : "Research run");
    buf_puts(b, "</h1>\n<p class=\"sub\">Research report of run <code id=\"run-id\">");
    report_escape(b, r->id ? r->id : "?");
    buf_puts(b, "</code></p>\n</header>\n<section id=\"summary\">\n<table class=\"facts\">\n");
    summary_rows(b, r, html_row);
    buf_puts(b, "</table>\n</section>\n");

    buf_puts(b, "<section id=\"progress\">\n<h2>Progress</h2>\n<figure>\n");
    buf_puts(b, metric_svg);
    buf_puts(b, "<figcaption>The metric of each experiment in the order they finished; "
                "crosses under the axis are experiments without a metric (failed, timed "
                "out, invalid); the line is the best so far, the dashed line the "
                "baseline. Hover a point for its idea.</figcaption>\n</figure>\n</section>\n");

    buf_puts(b, "<section id=\"tree-section\">\n<h2>Experiment tree</h2>\n<figure>\n"
                "<div class=\"scroll\">\n");
    buf_puts(b, tree_svg);
    buf_puts(b, "</div>\n<figcaption>Each experiment builds on its parent; colour shows its "
                "status, the label its metric and idea (hover for the whole title). The "
                "square is the baseline.</figcaption>\n</figure>\n</section>\n");

    buf_puts(b, "<section id=\"experiments-section\">\n");
    html_experiments(b, r);
    buf_puts(b, "</section>\n<section id=\"insights-section\">\n");
    html_insights(b, r);
    buf_puts(b, "</section>\n<section id=\"notes-section\">\n");
    html_notes(b, r);
    buf_puts(b, "</section>\n<section id=\"usage-section\">\n");
    html_usage(b, r);
    buf_puts(b, "</section>\n<section id=\"config-section\">\n");
    html_config(b, r);
    buf_printf(b,
               "</section>\n<footer>Generated by thalamus %s on %s from run.json. The "
               "Markdown version is report.md.</footer>\n</main>\n</body>\n</html>\n",
               THALAMUS_VERSION, generated);
}

/* ---- Markdown -------------------------------------------------------------- */

static void md_row(struct buf *b, const char *label, const char *text, const char *cls)
{
    (void)cls;
    if (!text)
        return;
    buf_puts(b, "| ");
    md_escape(b, label);
    buf_puts(b, " | ");
    md_escape(b, text);
    buf_puts(b, " |\n");
}

static void render_md(struct buf *b, const struct report_run *r, const char *generated)
{
    const char *task = str(get(r->run, "task"), "name");
    buf_puts(b, "# ");
    md_escape(b, task ? task : "Research run");
    buf_puts(b, "\n\nResearch report of run ");
    md_escape(b, r->id ? r->id : "?");
    buf_puts(b, ".\n\n| | |\n|---|---|\n");
    summary_rows(b, r, md_row);

    buf_puts(b, "\n## Progress\n\n![The metric of each experiment in the order they finished, "
                "with the best so far and the baseline](metric.svg)\n\n"
                "Crosses under the axis are experiments without a metric.\n");
    buf_puts(b, "\n## Experiment tree\n\n![The experiment tree, coloured by status and "
                "labelled with metric and idea](tree.svg)\n");

    buf_puts(b, "\n## Experiments\n\n");
    if (!r->n)
        buf_puts(b, "No experiments yet.\n");
    else
        buf_puts(b, "| node | parent | idea | kind | status | metric | change against parent "
                    "| label | commit |\n|---|---|---|---|---|--:|--:|---|---|\n");
    char m[32], ch[96], c[16];
    for (size_t i = 0; i < r->n; i++) {
        const struct report_node *nd = &r->nodes[i];
        bool is_best = r->best_node && nd->id && !strcmp(nd->id, r->best_node);
        metric_text(m, sizeof m, nd);
        change_text(ch, sizeof ch, r, nd);
        short_commit(c, sizeof c, nd->commit);
        buf_puts(b, "| ");
        md_escape(b, nd->id);
        buf_puts(b, " | ");
        md_escape(b, nd->parent_id);
        buf_puts(b, " | ");
        md_escape(b, nd->title ? nd->title : nd->kind);
        buf_puts(b, " | ");
        md_escape(b, nd->kind);
        buf_puts(b, " | ");
        md_escape(b, nd->status);
        buf_printf(b, " | %s%s%s | ", is_best ? "**" : "", m, is_best ? "**" : "");
        md_escape(b, ch);
        buf_puts(b, " | ");
        md_escape(b, nd->label);
        buf_puts(b, " | ");
        md_escape(b, c);
        buf_puts(b, " |\n");
    }

    const cJSON *it, *list = get(r->doc, "insights");
    buf_puts(b, "\n## Key insights\n\n");
    if (!cJSON_GetArraySize(list))
        buf_puts(b, "No insights recorded.\n");
    cJSON_ArrayForEach(it, list)
    {
        char *node = id_of(get(it, "node"));
        buf_puts(b, "- ");
        if (str(it, "label")) {
            buf_puts(b, "**");
            md_escape(b, str(it, "label"));
            buf_puts(b, "** ");
        }
        if (node) {
            buf_puts(b, "(node ");
            md_escape(b, node);
            buf_puts(b, ") ");
        }
        md_escape(b, str(it, "text"));
        buf_puts(b, "\n");
        free(node);
    }

    const cJSON *notes = get(r->doc, "notes"), *decisions = get(r->doc, "decisions");
    buf_puts(b, "\n## Notes and decisions\n\n");
    if (!cJSON_GetArraySize(notes) && !cJSON_GetArraySize(decisions))
        buf_puts(b, "No notes or decisions.\n");
    cJSON_ArrayForEach(it, notes)
    {
        buf_puts(b, "- ");
        if (str(it, "time")) {
            md_escape(b, str(it, "time"));
            buf_puts(b, ": ");
        }
        md_escape(b, str(it, "text"));
        buf_puts(b, "\n");
    }
    if (cJSON_GetArraySize(decisions)) {
        buf_puts(b, "\n| node | decision | reason | time |\n|---|---|---|---|\n");
        cJSON_ArrayForEach(it, decisions)
        {
            char *node = id_of(get(it, "node"));
            buf_puts(b, "| ");
            md_escape(b, node);
            buf_puts(b, " | ");
            md_escape(b, str(it, "decision"));
            buf_puts(b, " | ");
            md_escape(b, str(it, "reason"));
            buf_puts(b, " | ");
            md_escape(b, str(it, "time"));
            buf_puts(b, " |\n");
            free(node);
        }
    }

    size_t n;
    struct usage_row *rows = usage_rows(r, &n);
    buf_puts(b, "\n## Model usage\n\n");
    if (!n)
        buf_puts(b, "No model calls recorded.\n");
    else
        buf_puts(b, "| agent | requests | input tokens | output tokens | cost |\n"
                    "|---|--:|--:|--:|--:|\n");
    for (size_t i = 0; i < n; i++) {
        buf_puts(b, "| ");
        md_escape(b, rows[i].agent);
        buf_printf(b, " | %s | %s | %s | %s |\n", rows[i].requests, rows[i].input, rows[i].output,
                   rows[i].cost);
    }
    usage_rows_free(rows, n);

    const char *iso = str(r->run, "isolation");
    buf_puts(b, "\n## Configuration\n\nSandbox isolation: **");
    md_escape(b, iso ? iso : "unknown");
    buf_puts(b, iso && !strcmp(iso, "none")
                    ? "** (the experiments ran without the sandbox's isolation)\n"
                    : "**\n");
    struct leaf_ctx lc = {b, md_escape, "| ", " | ", " |\n"};
    const cJSON *budget = get(r->run, "budget"), *config = get(r->run, "config");
    if (cJSON_IsObject(budget) && budget->child) {
        buf_puts(b, "\n### Budget\n\n| item | value |\n|---|---|\n");
        each_leaf(budget, NULL, leaf_row, &lc, 0);
    }
    if (cJSON_IsObject(config) && config->child) {
        buf_puts(b, "\n### Settings\n\n| key | value |\n|---|---|\n");
        each_leaf(config, NULL, leaf_row, &lc, 0);
    }
    buf_printf(b, "\n---\nGenerated by thalamus %s on %s from run.json.\n", THALAMUS_VERSION,
               generated);
}

/* ---- files ----------------------------------------------------------------- */

void report_files_free(struct report_files *f)
{
    if (!f)
        return;
    free(f->html);
    free(f->markdown);
    free(f->metric_svg);
    free(f->tree_svg);
    free(f->document);
    memset(f, 0, sizeof *f);
}

static int write_file(const char *path, const char *data, size_t len)
{
    return fs_write_atomic(path, data, len, 0644);
}

static const char xml_decl[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

int report_render(const cJSON *doc, const char *out_dir, struct report_files *out)
{
    memset(out, 0, sizeof *out);
    if (!cJSON_IsObject(doc))
        return error_setc(TH_EUSAGE, "the run document is not a JSON object");
    int rc = fs_mkdir_p(out_dir, 0755);
    if (rc < 0)
        return rc;

    struct report_run run;
    run_read(&run, doc);
    char generated[32];
    now_utc(generated, sizeof generated);

    struct buf metric, tree, page, md;
    buf_init(&metric, 0);
    buf_init(&tree, 0);
    buf_init(&page, 0);
    buf_init(&md, 0);
    char *json = NULL;
    buf_puts(&metric, xml_decl);
    buf_puts(&tree, xml_decl);
    size_t decl = strlen(xml_decl);
    report_metric_svg(&metric, &run);
    report_tree_svg(&tree, &run);
    render_html(&page, &run, buf_str(&metric) + decl, buf_str(&tree) + decl, generated);
    render_md(&md, &run, generated);
    json = cJSON_Print(doc);
    if (!json) {
        rc = error_set("cannot print the run document");
        goto cleanup;
    }

    out->html = fs_join(out_dir, "report.html");
    out->markdown = fs_join(out_dir, "report.md");
    out->metric_svg = fs_join(out_dir, "metric.svg");
    out->tree_svg = fs_join(out_dir, "tree.svg");
    out->document = fs_join(out_dir, "run.json");
    if ((rc = write_file(out->metric_svg, metric.data, metric.len)) < 0 ||
        (rc = write_file(out->tree_svg, tree.data, tree.len)) < 0 ||
        (rc = write_file(out->document, json, strlen(json))) < 0 ||
        (rc = write_file(out->markdown, md.data, md.len)) < 0 ||
        (rc = write_file(out->html, page.data, page.len)) < 0)
        goto cleanup;

cleanup:
    if (rc < 0)
        report_files_free(out);
    free(json);
    buf_free(&metric);
    buf_free(&tree);
    buf_free(&page);
    buf_free(&md);
    run_clear(&run);
    return rc;
}
