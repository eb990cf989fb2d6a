/*
 * report_svg: the figures of the research report, drawn as SVG in C.
 *
 * The metric chart plots every finished experiment by finish order (a dot
 * when it gave a metric, a cross in a strip under the axis when it did not),
 * the best-so-far step line and the baseline as a dashed line, with nice
 * ticks on both axes. The tree chart lays the experiment tree out tidily
 * (depth left to right, one row per leaf, a parent midway between its
 * children), colours each node by status and labels it with its metric and
 * its idea's title, cut short with the whole title in a tooltip. Also the
 * text helpers they share: escaping, truncation, tick values. Depends on
 * alloc, buf, utf8 and report_internal.
 */
#include "report.h"
#include "report_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "utf8.h"

/* ---- text ----------------------------------------------------------------- */

void report_escape(struct buf *out, const char *s)
{
    if (!s)
        return;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = utf8_sequence_length((const unsigned char *)s + i, n - i);
        if (len == 0 || (c < 0x20 && c != '\t' && c != '\n') || c == 0x7f) {
            buf_puts(out, "\xef\xbf\xbd"); /* U+FFFD */
            i += len ? len : 1;
            continue;
        }
        switch (c) {
        case '&':
            buf_puts(out, "&amp;");
            break;
        case '<':
            buf_puts(out, "&lt;");
            break;
        case '>':
            buf_puts(out, "&gt;");
            break;
        case '"':
            buf_puts(out, "&quot;");
            break;
        case '\'':
            buf_puts(out, "&#39;");
            break;
        default:
            buf_append(out, s + i, len);
        }
        i += len;
    }
}

char *report_truncate(const char *s, size_t max)
{
    if (!s)
        return xstrdup("");
    size_t n = strlen(s), i = 0, chars = 0;
    while (i < n && chars < max) {
        size_t len = utf8_sequence_length((const unsigned char *)s + i, n - i);
        i += len ? len : 1;
        chars++;
    }
    if (i >= n)
        return xstrdup(s);
    /* Cut one character earlier to make room for the ellipsis. */
    size_t keep = 0, k = 0;
    for (size_t c = 0; c + 1 < max && k < n; c++) {
        size_t len = utf8_sequence_length((const unsigned char *)s + k, n - k);
        k += len ? len : 1;
        keep = k;
    }
    while (keep > 0 && s[keep - 1] == ' ')
        keep--;
    return xasprintf("%.*s\xe2\x80\xa6", (int)keep, s);
}

void report_format_metric(char *out, size_t size, double v)
{
    if (!isfinite(v))
        snprintf(out, size, "%s", "n/a");
    else if (v != 0 && (fabs(v) >= 1e6 || fabs(v) < 1e-3))
        snprintf(out, size, "%.3e", v);
    else
        snprintf(out, size, "%.4g", v);
}

/* ---- scales ---------------------------------------------------------------- */

/* The nice step (1, 2 or 5 times a power of ten) at or above raw. */
static double nice_step(double raw)
{
    double mag = pow(10, floor(log10(raw)));
    double f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

int report_ticks(double lo, double hi, int target, double *ticks, int cap)
{
    if (cap < 1)
        return 0;
    if (!isfinite(lo) || !isfinite(hi)) {
        lo = isfinite(lo) ? lo : isfinite(hi) ? hi : 0;
        hi = lo;
    }
    if (lo > hi) {
        double t = lo;
        lo = hi;
        hi = t;
    }
    if (hi - lo <= 1e-12 * fmax(1, fmax(fabs(lo), fabs(hi)))) {
        double pad = lo == 0 ? 1 : fabs(lo) * 0.1;
        lo -= pad;
        hi += pad;
    }
    if (cap < 2 || !isfinite(hi - lo)) {
        ticks[0] = lo;
        if (cap >= 2)
            ticks[1] = hi;
        return cap < 2 ? 1 : 2;
    }
    if (target < 2)
        target = 2;
    double step = nice_step((hi - lo) / (target - 1));
    double start, end;
    long count;
    for (;;) {
        start = floor(lo / step) * step;
        end = ceil(hi / step) * step;
        count = lround((end - start) / step) + 1;
        if (count <= cap)
            break;
        step = nice_step(step * 1.01);
    }
    for (long i = 0; i < count; i++) {
        double t = start + (double)i * step;
        ticks[i] = fabs(t) < step * 1e-9 ? 0 : t;
    }
    return (int)count;
}

/* Decimals that show the ticks step apart without noise. */
static int tick_decimals(double step)
{
    int d = (int)-floor(log10(step) + 1e-9);
    return d < 0 ? 0 : d > 12 ? 12 : d;
}

static void format_tick(char *out, size_t size, double v, double step)
{
    if (fabs(v) >= 1e6 || (step < 1e-4 && v != 0))
        snprintf(out, size, "%.3g", v);
    else
        snprintf(out, size, "%.*f", tick_decimals(step), v);
}

/* ---- tree layout ---------------------------------------------------------- */

size_t report_tree_layout(const int *parent, size_t n, int *depth, double *row)
{
    if (n == 0)
        return 0;
    int *eff = xmalloc(n * sizeof *eff);
    for (size_t i = 0; i < n; i++)
        eff[i] = parent[i] >= 0 && (size_t)parent[i] < n && (size_t)parent[i] != i ? parent[i] : -1;

    /* Break cycles: walk up from each node; meeting the walk itself means a
     * cycle, which is cut by making the node met a root. */
    unsigned char *state = xcalloc(n, 1); /* 0 unseen, 1 on this walk, 2 done */
    int *path = xmalloc(n * sizeof *path);
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        int cur = (int)i;
        while (cur >= 0 && state[cur] == 0) {
            state[cur] = 1;
            path[len++] = cur;
            cur = eff[cur];
        }
        if (cur >= 0 && state[cur] == 1)
            eff[cur] = -1;
        for (size_t k = 0; k < len; k++)
            state[path[k]] = 2;
    }

    /* Children of each node in index order (counting sort by parent). */
    size_t *first = xcalloc(n + 1, sizeof *first);
    int *kids = xmalloc(n * sizeof *kids);
    for (size_t i = 0; i < n; i++)
        if (eff[i] >= 0)
            first[eff[i] + 1]++;
    for (size_t i = 0; i < n; i++)
        first[i + 1] += first[i];
    size_t *fill = xmalloc(n * sizeof *fill);
    memcpy(fill, first, n * sizeof *fill);
    for (size_t i = 0; i < n; i++)
        if (eff[i] >= 0)
            kids[fill[eff[i]]++] = (int)i;

    /* Depth-first from each root with an explicit stack (a run may be a long
     * chain): a node is placed once all its children are. */
    size_t next_row = 0;
    size_t *cursor = fill; /* reused: index of the next child to visit */
    int *stack = path;
    for (size_t r = 0; r < n; r++) {
        if (eff[r] >= 0)
            continue;
        size_t top = 0;
        stack[top++] = (int)r;
        depth[r] = 0;
        cursor[r] = first[r];
        while (top > 0) {
            int v = stack[top - 1];
            if (cursor[v] < first[v + 1]) {
                int c = kids[cursor[v]++];
                depth[c] = depth[v] + 1;
                cursor[c] = first[c];
                stack[top++] = c;
                continue;
            }
            top--;
            if (first[v] == first[v + 1])
                row[v] = (double)next_row++;
            else
                row[v] = (row[kids[first[v]]] + row[kids[first[v + 1] - 1]]) / 2;
        }
    }
    free(eff);
    free(state);
    free(path);
    free(first);
    free(kids);
    free(fill);
    return next_row;
}

/* ---- colours -------------------------------------------------------------- */

static const struct {
    const char *status, *colour;
} status_colours[] = {
    {"ok", "#2e7d32"},  {"failed", "#c62828"}, {"timeout", "#e65100"}, {"invalid", "#b28704"},
    {"oom", "#6a1b9a"}, {"killed", "#5d4037"}, {"running", "#1565c0"}, {"pending", "#9e9e9e"},
};

static const char *colour_of(const char *status)
{
    for (size_t i = 0; i < sizeof status_colours / sizeof status_colours[0]; i++)
        if (status && !strcmp(status, status_colours[i].status))
            return status_colours[i].colour;
    return "#607d8b";
}

/* A status usable as a class name: known ones as they are, else "other". */
static const char *status_class(const char *status)
{
    for (size_t i = 0; i < sizeof status_colours / sizeof status_colours[0]; i++)
        if (status && !strcmp(status, status_colours[i].status))
            return status;
    return "other";
}

static void svg_open(struct buf *b, const char *id, double w, double h, const char *label)
{
    buf_printf(b,
               "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"%s\" width=\"%.0f\" "
               "height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" aria-label=\"",
               id, w, h, w, h);
    report_escape(b, label);
    buf_puts(b, "\" font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, "
                "'DejaVu Sans', sans-serif\" font-size=\"12\">\n");
    buf_printf(b, "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#ffffff\"/>\n", w,
               h);
}

static void node_tooltip(struct buf *b, const struct report_node *nd)
{
    char m[32];
    buf_puts(b, "<title>#");
    report_escape(b, nd->id);
    if (nd->title) {
        buf_puts(b, " ");
        report_escape(b, nd->title);
    }
    buf_puts(b, "\n");
    report_escape(b, nd->status ? nd->status : "unknown");
    if (nd->has_metric) {
        report_format_metric(m, sizeof m, nd->metric);
        buf_printf(b, ", metric %s", m);
    }
    buf_puts(b, "</title>");
}

/* ---- metric chart ---------------------------------------------------------- */

#define CHART_W      820.0
#define CHART_H      380.0
#define CHART_LEFT   72.0
#define CHART_RIGHT  24.0
#define CHART_TOP    36.0
#define CHART_BOTTOM 300.0 /* y of the x axis */
#define FAIL_STRIP   322.0 /* y of the crosses of failed experiments */

struct scale {
    double d0, d1, r0, r1;
};

static double scale_at(const struct scale *s, double v)
{
    if (s->d1 == s->d0)
        return (s->r0 + s->r1) / 2;
    return s->r0 + (v - s->d0) / (s->d1 - s->d0) * (s->r1 - s->r0);
}

static int by_order(const void *a, const void *b)
{
    const struct report_node *x = *(const struct report_node *const *)a;
    const struct report_node *y = *(const struct report_node *const *)b;
    return x->order < y->order ? -1 : x->order > y->order;
}

static bool better(const struct report_run *run, double a, double b)
{
    return run->minimize ? a < b : a > b;
}

void report_metric_svg(struct buf *b, const struct report_run *run)
{
    struct report_node **done = xcalloc(run->n + 1, sizeof *done);
    size_t nd = 0;
    int max_order = 0;
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < run->n; i++) {
        struct report_node *node = &run->nodes[i];
        if (node->order <= 0)
            continue;
        done[nd++] = node;
        if (node->order > max_order)
            max_order = node->order;
        if (report_node_ok(node)) {
            lo = fmin(lo, node->metric);
            hi = fmax(hi, node->metric);
        }
    }
    qsort(done, nd, sizeof *done, by_order);
    if (run->has_baseline) {
        lo = fmin(lo, run->baseline_metric);
        hi = fmax(hi, run->baseline_metric);
    }
    bool any_metric = isfinite(lo);
    if (!any_metric)
        lo = 0, hi = 1;

    double yt[16], xt[16];
    int nyt = report_ticks(lo, hi, 6, yt, 16);
    int nxt = report_ticks(1, max_order > 1 ? max_order : 1, 10, xt, 16);
    /* Orders are whole numbers: keep integer ticks within the data. */
    int nx = 0;
    for (int i = 0; i < nxt; i++)
        if (xt[i] == floor(xt[i]) && xt[i] >= 1 && xt[i] <= (max_order > 1 ? max_order : 1))
            xt[nx++] = xt[i];
    struct scale ys = {yt[0], yt[nyt - 1], CHART_BOTTOM, CHART_TOP};
    struct scale xs = {0.5, (max_order > 1 ? max_order : 1) + 0.5, CHART_LEFT,
                       CHART_W - CHART_RIGHT};

    char label[128];
    svg_open(b, "metric-chart", CHART_W, CHART_H, "metric of each experiment in finish order");

    /* Grid and axes. */
    buf_puts(b, "<g class=\"axis y-axis\">\n");
    double ystep = nyt > 1 ? yt[1] - yt[0] : 1;
    for (int i = 0; i < nyt; i++) {
        double y = scale_at(&ys, yt[i]);
        format_tick(label, sizeof label, yt[i], ystep);
        buf_printf(b,
                   "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                   "stroke=\"#e5e7eb\"/>\n<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" "
                   "text-anchor=\"end\" fill=\"#374151\">%s</text>\n",
                   CHART_LEFT, y, CHART_W - CHART_RIGHT, y, CHART_LEFT - 8, y + 4, label);
    }
    buf_printf(b,
               "<text class=\"axis-label\" transform=\"translate(16 %.1f) rotate(-90)\" "
               "text-anchor=\"middle\" fill=\"#111827\">",
               (CHART_TOP + CHART_BOTTOM) / 2);
    report_escape(b, run->metric_name ? run->metric_name : "metric");
    buf_printf(b, " (%s)</text>\n</g>\n", run->minimize ? "lower is better" : "higher is better");

    buf_puts(b, "<g class=\"axis x-axis\">\n");
    buf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#6b7280\"/>\n",
               CHART_LEFT, CHART_BOTTOM, CHART_W - CHART_RIGHT, CHART_BOTTOM);
    buf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#6b7280\"/>\n",
               CHART_LEFT, CHART_TOP, CHART_LEFT, CHART_BOTTOM);
    for (int i = 0; i < nx; i++) {
        double x = scale_at(&xs, xt[i]);
        buf_printf(b,
                   "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#6b7280\"/>\n"
                   "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
                   "fill=\"#374151\">%.0f</text>\n",
                   x, CHART_BOTTOM, x, CHART_BOTTOM + 5, x, CHART_BOTTOM + 40, xt[i]);
    }
    buf_printf(b,
               "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#6b7280\" "
               "font-size=\"10\">no metric</text>\n",
               CHART_LEFT - 8, FAIL_STRIP + 4);
    buf_printf(b,
               "<text class=\"axis-label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
               "fill=\"#111827\">experiment, in the order finished</text>\n</g>\n",
               (CHART_LEFT + CHART_W - CHART_RIGHT) / 2, CHART_H - 8);

    if (run->has_baseline) {
        double y = scale_at(&ys, run->baseline_metric);
        report_format_metric(label, sizeof label, run->baseline_metric);
        buf_printf(b,
                   "<g class=\"baseline\"><line class=\"baseline\" x1=\"%.1f\" y1=\"%.1f\" "
                   "x2=\"%.1f\" y2=\"%.1f\" stroke=\"#6b7280\" stroke-dasharray=\"6 4\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#4b5563\" "
                   "font-size=\"11\">baseline %s</text></g>\n",
                   CHART_LEFT, y, CHART_W - CHART_RIGHT, y, CHART_W - CHART_RIGHT - 4, y - 5,
                   label);
    }

    /* Best so far: a step line through the running best. */
    bool started = false;
    double best = 0;
    for (size_t i = 0; i < nd; i++) {
        if (!report_node_ok(done[i]))
            continue;
        double x = scale_at(&xs, done[i]->order);
        if (!started) {
            best = done[i]->metric;
            buf_printf(b,
                       "<path class=\"best-so-far\" fill=\"none\" stroke=\"#2563eb\" "
                       "stroke-width=\"2\" d=\"M%.1f %.1f",
                       x, scale_at(&ys, best));
            started = true;
        } else if (better(run, done[i]->metric, best)) {
            best = done[i]->metric;
            buf_printf(b, " H%.1f V%.1f", x, scale_at(&ys, best));
        }
    }
    if (started)
        buf_printf(b, " H%.1f\"/>\n", scale_at(&xs, max_order));

    /* The experiments, with dots smaller when many share the axis. */
    double radius = fmax(2.5, fmin(4.5, (xs.r1 - xs.r0) / (xs.d1 - xs.d0) / 2.5));
    buf_puts(b, "<g class=\"experiments\">\n");
    for (size_t i = 0; i < nd; i++) {
        const struct report_node *node = done[i];
        double x = scale_at(&xs, node->order);
        bool is_base = run->baseline_node && node->id && !strcmp(node->id, run->baseline_node);
        bool is_best = run->best_node && node->id && !strcmp(node->id, run->best_node);
        if (report_node_ok(node)) {
            buf_printf(b,
                       "<circle class=\"point%s%s\" cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" "
                       "fill=\"%s\" stroke=\"%s\" stroke-width=\"%s\" data-node=\"",
                       is_base ? " baseline" : "", is_best ? " best" : "", x,
                       scale_at(&ys, node->metric), is_best ? 6 : radius,
                       is_base ? "#ffffff" : "#2e7d32", is_best ? "#f59e0b" : "#2e7d32",
                       is_best || radius > 3 ? "2" : "1");
            report_escape(b, node->id);
            buf_printf(b, "\" data-order=\"%d\" data-metric=\"%.17g\">", node->order, node->metric);
        } else {
            buf_printf(b, "<g class=\"fail %s\" transform=\"translate(%.1f %.1f)\" data-node=\"",
                       status_class(node->status), x, FAIL_STRIP);
            report_escape(b, node->id);
            buf_printf(b,
                       "\" data-order=\"%d\"><path d=\"M-4 -4L4 4M-4 4L4 -4\" stroke=\"%s\" "
                       "stroke-width=\"2\"/>",
                       node->order, colour_of(node->status));
        }
        node_tooltip(b, node);
        buf_puts(b, report_node_ok(node) ? "</circle>\n" : "</g>\n");
    }
    buf_puts(b, "</g>\n");

    if (nd == 0 || !started)
        buf_printf(b,
                   "<text class=\"empty\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
                   "fill=\"#6b7280\">%s</text>\n",
                   (CHART_LEFT + CHART_W) / 2, (CHART_TOP + CHART_BOTTOM) / 2,
                   nd == 0 ? "no experiment has finished yet" : "no experiment gave a metric yet");

    /* Legend. */
    buf_printf(b,
               "<g class=\"legend\" font-size=\"11\" fill=\"#374151\" "
               "transform=\"translate(%.1f 16)\">"
               "<circle cx=\"0\" cy=\"-4\" r=\"4.5\" fill=\"#2e7d32\"/>"
               "<text x=\"9\" y=\"0\">experiment</text>"
               "<path d=\"M88 -8L96 0M88 0L96 -8\" stroke=\"#c62828\" stroke-width=\"2\"/>"
               "<text x=\"101\" y=\"0\">no metric</text>"
               "<line x1=\"170\" y1=\"-4\" x2=\"192\" y2=\"-4\" stroke=\"#2563eb\" "
               "stroke-width=\"2\"/><text x=\"197\" y=\"0\">best so far</text>"
               "<circle cx=\"279\" cy=\"-4\" r=\"5\" fill=\"#2e7d32\" stroke=\"#f59e0b\" "
               "stroke-width=\"2\"/><text x=\"288\" y=\"0\">best</text>"
               "<line x1=\"325\" y1=\"-4\" x2=\"347\" y2=\"-4\" stroke=\"#6b7280\" "
               "stroke-dasharray=\"6 4\"/><text x=\"352\" y=\"0\">baseline</text></g>\n",
               CHART_LEFT);
    buf_puts(b, "</svg>\n");
    free(done);
}

/* ---- experiment tree ------------------------------------------------------- */

#define TREE_ROW    26.0
#define TREE_COLUMN 300.0
#define TREE_LEFT   20.0
#define TREE_TOP    52.0
#define TREE_LABEL  32  /* characters of a title shown */
#define TREE_CHAR   7.2 /* average width of a character of the labels */

static size_t text_chars(const char *s)
{
    size_t n = 0;
    for (; s && *s; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

void report_tree_svg(struct buf *b, const struct report_run *run)
{
    size_t n = run->n;
    int *parent = xcalloc(n + 1, sizeof *parent);
    int *depth = xcalloc(n + 1, sizeof *depth);
    double *row = xcalloc(n + 1, sizeof *row);
    for (size_t i = 0; i < n; i++)
        parent[i] = run->nodes[i].parent;
    size_t rows = report_tree_layout(parent, n, depth, row);
    int max_depth = 0;
    for (size_t i = 0; i < n; i++)
        if (depth[i] > max_depth)
            max_depth = depth[i];

    double w = TREE_LEFT + max_depth * TREE_COLUMN + TREE_COLUMN + 40;
    if (w < 640)
        w = 640;
    double h = TREE_TOP + (rows ? (double)rows : 1) * TREE_ROW + 10;
    svg_open(b, "tree", w, h, "experiment tree coloured by status");

    /* Legend: the statuses present. */
    buf_puts(b, "<g class=\"legend\" font-size=\"11\" fill=\"#374151\">");
    double lx = TREE_LEFT;
    for (size_t s = 0; s < sizeof status_colours / sizeof status_colours[0]; s++) {
        bool present = false;
        for (size_t i = 0; i < n && !present; i++)
            present =
                run->nodes[i].status && !strcmp(run->nodes[i].status, status_colours[s].status);
        if (!present)
            continue;
        buf_printf(b, "<circle cx=\"%.1f\" cy=\"18\" r=\"5\" fill=\"%s\"/>", lx + 5,
                   status_colours[s].colour);
        buf_printf(b, "<text x=\"%.1f\" y=\"22\">%s</text>", lx + 14, status_colours[s].status);
        lx += 24 + 7 * strlen(status_colours[s].status);
    }
    buf_printf(b,
               "<circle cx=\"%.1f\" cy=\"18\" r=\"6\" fill=\"none\" stroke=\"#f59e0b\" "
               "stroke-width=\"3\"/><text x=\"%.1f\" y=\"22\">best</text>",
               lx + 6, lx + 16);
    buf_puts(b, "</g>\n");

    if (n == 0)
        buf_printf(b,
                   "<text class=\"empty\" x=\"%.1f\" y=\"%.1f\" fill=\"#6b7280\">no "
                   "experiments yet</text>\n",
                   TREE_LEFT, TREE_TOP + 4);

#define NODE_X(i) (TREE_LEFT + 8 + depth[i] * TREE_COLUMN)
#define NODE_Y(i) (TREE_TOP + row[i] * TREE_ROW)
    /* Labels first: an edge leaves its parent where the label ends. */
    char **titles = xcalloc(n + 1, sizeof *titles);
    char(*metrics)[32] = xcalloc(n + 1, sizeof *metrics);
    double *label_end = xcalloc(n + 1, sizeof *label_end);
    for (size_t i = 0; i < n; i++) {
        const struct report_node *node = &run->nodes[i];
        if (node->has_metric)
            report_format_metric(metrics[i], sizeof metrics[i], node->metric);
        else
            snprintf(metrics[i], sizeof metrics[i], "%s", status_class(node->status));
        titles[i] = report_truncate(node->title ? node->title : node->kind, TREE_LABEL);
        size_t chars = text_chars(node->id) + text_chars(metrics[i]) + text_chars(titles[i]) + 2;
        label_end[i] = fmin(18 + TREE_CHAR * (double)chars, TREE_COLUMN - 30);
    }

    buf_puts(b, "<g class=\"edges\" fill=\"none\" stroke=\"#9ca3af\" stroke-width=\"1.5\">\n");
    for (size_t i = 0; i < n; i++) {
        int p = parent[i];
        if (p < 0 || (size_t)p >= n || depth[i] != depth[p] + 1)
            continue; /* a root, or a parent link the layout cut */
        double bus = NODE_X((size_t)p) + TREE_COLUMN - 24;
        buf_printf(b, "<path class=\"edge\" d=\"M%.1f %.1fH%.1fV%.1fH%.1f\"/>\n",
                   NODE_X((size_t)p) + label_end[p], NODE_Y((size_t)p), bus, NODE_Y(i),
                   NODE_X(i) - 8);
    }
    buf_puts(b, "</g>\n<g class=\"nodes\">\n");
    for (size_t i = 0; i < n; i++) {
        const struct report_node *node = &run->nodes[i];
        bool is_best = run->best_node && node->id && !strcmp(node->id, run->best_node);
        bool is_base = run->baseline_node && node->id && !strcmp(node->id, run->baseline_node);
        buf_printf(b, "<g class=\"node %s%s%s\" transform=\"translate(%.1f %.1f)\" data-node=\"",
                   status_class(node->status), is_best ? " best" : "", is_base ? " baseline" : "",
                   NODE_X(i), NODE_Y(i));
        report_escape(b, node->id);
        buf_puts(b, "\"");
        if (node->has_metric)
            buf_printf(b, " data-metric=\"%.17g\"", node->metric);
        buf_puts(b, ">");
        node_tooltip(b, node);
        if (is_best)
            buf_puts(b, "<circle r=\"10\" fill=\"none\" stroke=\"#f59e0b\" stroke-width=\"3\"/>");
        if (is_base)
            buf_printf(b,
                       "<rect x=\"-7\" y=\"-7\" width=\"14\" height=\"14\" rx=\"2\" fill=\"%s\"/>",
                       colour_of(node->status));
        else
            buf_printf(b, "<circle r=\"7\" fill=\"%s\"/>", colour_of(node->status));
        buf_puts(b, "<text x=\"14\" y=\"4\" fill=\"#111827\"><tspan fill=\"#6b7280\">");
        report_escape(b, node->id);
        buf_puts(b, "</tspan> <tspan font-weight=\"600\">");
        report_escape(b, metrics[i]);
        buf_puts(b, "</tspan> ");
        report_escape(b, titles[i]);
        buf_puts(b, "</text></g>\n");
        free(titles[i]);
    }
    free(titles);
    free(metrics);
    free(label_end);
#undef NODE_X
#undef NODE_Y
    buf_puts(b, "</g>\n</svg>\n");
    free(parent);
    free(depth);
    free(row);
}
