/*
 * Tests of the report module: escaping and truncation of text from the run
 * document, nice tick values, the tidy tree layout (no two nodes of a depth
 * share a row, parents between their children, cycles and long chains
 * survive), and whole renders of an empty document, of hostile titles and of
 * a run whose counts the figures and table must match.
 */
#include "check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "fsutil.h"
#include "report.h"

static char *escaped(const char *s)
{
    struct buf b;
    buf_init(&b, 0);
    report_escape(&b, s);
    return buf_detach(&b, NULL);
}

static void test_escape_specials(void)
{
    char *s = escaped("<a href=\"x\">Tom & Jerry's</a>");
    CHECK_EQ_STR(s, "&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;");
    free(s);
    s = escaped("caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac");
    CHECK_EQ_STR(s, "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac");
    free(s);
    s = escaped(NULL);
    CHECK_EQ_STR(s, "");
    free(s);
}

static void test_escape_repairs_bytes(void)
{
    /* A stray byte, a truncated sequence and a control character each become
     * U+FFFD, so that the SVG files stay well-formed XML. */
    char *s = escaped("a\xff"
                      "b\xc3"
                      "c\x01"
                      "d\te\n");
    CHECK_EQ_STR(s, "a\xef\xbf\xbd"
                    "b\xef\xbf\xbd"
                    "c\xef\xbf\xbd"
                    "d\te\n");
    free(s);
}

static void test_truncate(void)
{
    char *s = report_truncate("short", 10);
    CHECK_EQ_STR(s, "short");
    free(s);
    s = report_truncate("exactly ten", 11);
    CHECK_EQ_STR(s, "exactly ten");
    free(s);
    s = report_truncate("a rather long idea title", 8);
    CHECK_EQ_STR(s, "a rathe\xe2\x80\xa6");
    free(s);
    /* Two-byte characters are never cut in half. */
    s = report_truncate("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 3);
    CHECK_EQ_STR(s, "\xc3\xa9\xc3\xa9\xe2\x80\xa6");
    free(s);
    s = report_truncate("word    spaces", 6);
    CHECK_EQ_STR(s, "word\xe2\x80\xa6");
    free(s);
    s = report_truncate(NULL, 5);
    CHECK_EQ_STR(s, "");
    free(s);
}

/* Ticks must cover [lo, hi], be evenly spaced by 1, 2 or 5 times a power of
 * ten, and each be a whole multiple of that step. */
static void check_ticks(double lo, double hi, int target, int cap)
{
    double t[64];
    int n = report_ticks(lo, hi, target, t, cap);
    REQUIRE(n >= 2 && n <= cap);
    CHECK(t[0] <= lo + 1e-12);
    CHECK(t[n - 1] >= hi - 1e-12);
    double step = t[1] - t[0];
    double mantissa = step / pow(10, floor(log10(step)));
    CHECK(fabs(mantissa - 1) < 1e-6 || fabs(mantissa - 2) < 1e-6 || fabs(mantissa - 5) < 1e-6);
    for (int i = 1; i < n; i++)
        CHECK(fabs((t[i] - t[i - 1]) - step) < step * 1e-6);
    for (int i = 0; i < n; i++)
        CHECK(fabs(t[i] / step - round(t[i] / step)) < 1e-6);
}

static void test_ticks_nice(void)
{
    double t[16];
    int n = report_ticks(0.81, 0.85, 6, t, 16);
    REQUIRE(n == 5);
    CHECK(fabs(t[0] - 0.81) < 1e-12 && fabs(t[4] - 0.85) < 1e-12);
    n = report_ticks(0, 100, 6, t, 16);
    REQUIRE(n == 6);
    CHECK(t[0] == 0 && t[1] == 20 && t[5] == 100);
    n = report_ticks(1, 9, 10, t, 16);
    CHECK(n == 9 && t[0] == 1 && t[8] == 9);
    check_ticks(0.81, 0.85, 6, 16);
    check_ticks(-3.7, 12.2, 6, 16);
    check_ticks(1e-5, 3e-5, 5, 16);
    check_ticks(12345, 98765, 6, 16);
    check_ticks(0, 1e6, 100, 5); /* the cap wins over the target */
}

static void test_ticks_degenerate(void)
{
    double t[16];
    int n = report_ticks(0.5, 0.5, 6, t, 16);
    REQUIRE(n >= 2);
    CHECK(t[0] < 0.5 && t[n - 1] > 0.5);
    n = report_ticks(0, 0, 6, t, 16);
    REQUIRE(n >= 2);
    CHECK(t[0] < 0 && t[n - 1] > 0);
    n = report_ticks(NAN, INFINITY, 6, t, 16);
    REQUIRE(n >= 2);
    CHECK(isfinite(t[0]) && isfinite(t[n - 1]) && t[0] < t[n - 1]);
    n = report_ticks(5, 1, 6, t, 16); /* reversed bounds */
    REQUIRE(n >= 2);
    CHECK(t[0] <= 1 && t[n - 1] >= 5);
    CHECK_EQ_INT(report_ticks(0, 1, 6, t, 0), 0);
}

/* Checks the layout's promises for one forest. */
static void check_layout(const int *parent, size_t n)
{
    int *depth = xcalloc(n + 1, sizeof *depth);
    double *row = xcalloc(n + 1, sizeof *row);
    size_t rows = report_tree_layout(parent, n, depth, row);
    size_t leaves = 0;
    for (size_t i = 0; i < n; i++) {
        bool leaf = true;
        double lo = INFINITY, hi = -INFINITY;
        for (size_t k = 0; k < n; k++)
            if (parent[k] == (int)i) {
                leaf = false;
                CHECK_EQ_INT(depth[k], depth[i] + 1);
                lo = fmin(lo, row[k]);
                hi = fmax(hi, row[k]);
            }
        if (leaf) {
            leaves++;
            CHECK(row[i] == floor(row[i]));
        } else
            CHECK(row[i] >= lo && row[i] <= hi);
        CHECK(row[i] >= 0 && row[i] < (double)rows);
        for (size_t k = i + 1; k < n; k++)
            if (depth[k] == depth[i] && fabs(row[k] - row[i]) < 1)
                CHECK_FAIL("nodes %zu and %zu overlap at depth %d", i, k, depth[i]);
    }
    CHECK_EQ_INT(rows, leaves);
    free(depth);
    free(row);
}

static void test_layout_no_overlap(void)
{
    /* Random trees, built the way a search grows them: each node's parent is
     * an earlier node, often a recent one. */
    unsigned seed = 12345;
    for (int round = 0; round < 20; round++) {
        size_t n = 1 + (size_t)(round * 7);
        int *parent = xcalloc(n, sizeof *parent);
        parent[0] = -1;
        for (size_t i = 1; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            size_t span = (seed >> 16) % 3 == 0 ? i : (i < 4 ? i : 4);
            parent[i] = (int)(i - 1 - (seed >> 8) % span);
        }
        check_layout(parent, n);
        free(parent);
    }
    int star[101];
    star[0] = -1;
    for (int i = 1; i <= 100; i++)
        star[i] = 0;
    check_layout(star, 101);
    int forest[] = {-1, 0, -1, 2, 2, -1};
    check_layout(forest, 6);
}

static void test_layout_exact(void)
{
    /* 0 has children 1 and 2; 1 has children 3 and 4. */
    int parent[] = {-1, 0, 0, 1, 1};
    int depth[5];
    double row[5];
    CHECK_EQ_INT(report_tree_layout(parent, 5, depth, row), 3);
    CHECK(row[3] == 0 && row[4] == 1 && row[2] == 2);
    CHECK(row[1] == 0.5 && row[0] == 1.25);
    CHECK(depth[0] == 0 && depth[1] == 1 && depth[3] == 2 && depth[2] == 1);
}

static void test_layout_bad_parents(void)
{
    /* A cycle (0 -> 1 -> 0), a self-parent and an out-of-range parent. */
    int parent[] = {1, 0, 2, 99, 3};
    int depth[5];
    double row[5];
    size_t rows = report_tree_layout(parent, 5, depth, row);
    CHECK(rows >= 3);
    for (int i = 0; i < 5; i++)
        CHECK(depth[i] >= 0 && depth[i] < 5);
    CHECK(depth[2] == 0 && depth[3] == 0 && depth[4] == 1);
    CHECK_EQ_INT(report_tree_layout(parent, 0, depth, row), 0);
}

static void test_layout_long_chain(void)
{
    size_t n = 200000; /* deeper than any recursion would survive */
    int *parent = xmalloc(n * sizeof *parent);
    int *depth = xmalloc(n * sizeof *depth);
    double *row = xmalloc(n * sizeof *row);
    for (size_t i = 0; i < n; i++)
        parent[i] = (int)i - 1;
    CHECK_EQ_INT(report_tree_layout(parent, n, depth, row), 1);
    CHECK_EQ_INT(depth[n - 1], n - 1);
    CHECK(row[0] == 0 && row[n - 1] == 0);
    free(parent);
    free(depth);
    free(row);
}

/* ---- whole renders ---------------------------------------------------------- */

static char tmpdir[64];

static char *read_out(const char *name)
{
    char *path = fs_join(tmpdir, name);
    struct buf b;
    buf_init(&b, 0);
    int rc = buf_read_file(&b, path);
    free(path);
    if (rc < 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_detach(&b, NULL);
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; p && (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static int render(const char *json)
{
    cJSON *doc = cJSON_Parse(json);
    struct report_files f;
    int rc = report_render(doc, tmpdir, &f);
    if (rc == 0) {
        CHECK(fs_exists(f.html) && fs_exists(f.markdown) && fs_exists(f.metric_svg) &&
              fs_exists(f.tree_svg) && fs_exists(f.document));
        report_files_free(&f);
    }
    cJSON_Delete(doc);
    return rc;
}

static void test_render_refuses_non_object(void)
{
    CHECK_EQ_INT(render("[1, 2]"), TH_EUSAGE);
    CHECK_CONTAINS(error_message(), "not a JSON object");
    error_clear();
}

static void test_render_empty(void)
{
    REQUIRE(render("{}") == 0);
    char *html = read_out("report.html"), *md = read_out("report.md");
    char *metric = read_out("metric.svg");
    REQUIRE(html && md && metric);
    CHECK_CONTAINS(html, "<!DOCTYPE html>");
    CHECK_CONTAINS(html, "No experiments yet");
    CHECK_CONTAINS(metric, "no experiment has finished yet");
    CHECK_EQ_INT(count(html, "<tr data-node"), 0);
    CHECK_CONTAINS(md, "No experiments yet");
    CHECK(!strstr(html, "<script"));
    /* Nothing loaded from elsewhere: no sources, links, imports or urls. */
    CHECK(!strstr(html, "src=") && !strstr(html, "<link") && !strstr(html, "@import") &&
          !strstr(html, "url("));
    free(html);
    free(md);
    free(metric);
}

static void test_render_escapes_titles(void)
{
    REQUIRE(render("{\"run\": {\"id\": \"r1\", \"task\": {\"name\": \"<b>bold</b> & co\"}},"
                   " \"nodes\": [{\"id\": \"n0\", \"parent\": null, \"status\": \"ok\","
                   " \"metric\": 1, \"order\": 1, \"kind\": \"baseline\","
                   " \"title\": \"<script>alert('x')</script>\"},"
                   " {\"id\": \"n1\", \"parent\": \"n0\", \"status\": \"ok\", \"metric\": 2,"
                   " \"order\": 2, \"title\": \"a | b *c* \\\"q\\\"\\nnext\"}],"
                   " \"notes\": [{\"text\": \"<img src=x onerror=alert(1)>\"}]}") == 0);
    char *html = read_out("report.html"), *md = read_out("report.md");
    char *tree = read_out("tree.svg");
    REQUIRE(html && md && tree);
    CHECK(!strstr(html, "<script"));
    CHECK(!strstr(html, "<img"));
    CHECK(!strstr(html, "<b>bold"));
    CHECK_CONTAINS(html, "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;");
    CHECK_CONTAINS(html, "&lt;b&gt;bold&lt;/b&gt; &amp; co");
    CHECK(!strstr(tree, "<script"));
    CHECK(!strstr(md, "<script"));
    CHECK(!strstr(md, "<img"));
    /* Pipes cannot break a Markdown table row, nor newlines end it. */
    CHECK_CONTAINS(md, "a \\| b \\*c\\* \"q\" next");
    free(html);
    free(md);
    free(tree);
}

static void test_render_counts(void)
{
    /* Baseline, two children with metrics, one failure, one still running;
     * the goal is to minimise, so n2 (0.5) is best. */
    REQUIRE(render("{\"run\": {\"id\": \"r2\", \"task\": {\"metric\": \"loss\", \"goal\":"
                   " \"minimize\"}, \"baseline\": {\"node\": \"n0\", \"metric\": 1.0},"
                   " \"isolation\": \"none\"},"
                   " \"nodes\": ["
                   " {\"id\": \"n0\", \"status\": \"ok\", \"metric\": 1.0, \"order\": 1},"
                   " {\"id\": \"n1\", \"parent\": \"n0\", \"status\": \"ok\", \"metric\": 0.8,"
                   "  \"order\": 2},"
                   " {\"id\": \"n2\", \"parent\": \"n1\", \"status\": \"ok\", \"metric\": 0.5,"
                   "  \"order\": 4},"
                   " {\"id\": \"n3\", \"parent\": \"n1\", \"status\": \"timeout\", \"metric\":"
                   "  null, \"order\": 3},"
                   " {\"id\": \"n4\", \"parent\": \"n2\", \"status\": \"running\"}],"
                   " \"usage\": [{\"agent\": \"coder\", \"requests\": 3, \"input_tokens\": 10,"
                   " \"output_tokens\": 5, \"cost\": 0.25}, {\"agent\": \"planner\","
                   " \"requests\": 1, \"input_tokens\": 2, \"output_tokens\": 1, \"cost\":"
                   " 0.5}]}") == 0);
    char *html = read_out("report.html"), *metric = read_out("metric.svg");
    char *tree = read_out("tree.svg"), *md = read_out("report.md");
    REQUIRE(html && metric && tree && md);
    CHECK_EQ_INT(count(metric, "<circle class=\"point"), 3);
    CHECK_EQ_INT(count(metric, "<g class=\"fail "), 1);
    CHECK_EQ_INT(count(metric, "class=\"point best\""), 1);
    CHECK_CONTAINS(metric, "class=\"point best\" cx");
    CHECK_CONTAINS(metric, "data-node=\"n2\" data-order=\"4\" data-metric=\"0.5\"");
    CHECK_EQ_INT(count(tree, "<g class=\"node "), 5);
    CHECK_EQ_INT(count(tree, "<path class=\"edge\""), 4);
    CHECK_EQ_INT(count(html, "<tr data-node") + count(html, "<tr class=\"best\" data-node"), 5);
    CHECK_CONTAINS(html, "<tr class=\"best\" data-node=\"n2\"");
    /* Lower is better: n1 against n0 is an improvement, shown as such. */
    CHECK_CONTAINS(html, "<td class=\"num better\">-0.2 (-20.0%)</td>");
    CHECK_CONTAINS(html, "0.7500"); /* total cost */
    CHECK_CONTAINS(html, "ran without the sandbox");
    CHECK_CONTAINS(md, "| total | 4 | 12 | 6 | 0.7500 |");
    free(html);
    free(metric);
    free(tree);
    free(md);
}

static void test_render_odd_documents(void)
{
    /* Numeric ids, a loop of parents, wrong types everywhere: it renders, and
     * the nodes are all there. */
    REQUIRE(
        render("{\"run\": {\"id\": 7, \"task\": \"x\", \"best\": {\"node\": 2},"
               " \"config\": {\"a\": {\"b\": [1, {\"c\": null}], \"d\": true}},"
               " \"budget\": 3},"
               " \"nodes\": [{\"id\": 1, \"parent\": 2, \"status\": \"ok\", \"metric\": \"0.5\","
               " \"order\": -1}, {\"id\": 2, \"parent\": 1, \"status\": \"weird\","
               " \"metric\": 1e308, \"order\": 1e12}, 5, null, {\"title\": null}],"
               " \"insights\": {\"node\": 1}, \"notes\": [1, \"x\", {\"text\": 2}],"
               " \"decisions\": \"none\", \"usage\": [{\"agent\": 3, \"cost\": \"free\"}]}") == 0);
    char *tree = read_out("tree.svg"), *html = read_out("report.html");
    REQUIRE(tree && html);
    CHECK_EQ_INT(count(tree, "<g class=\"node "), 3);
    CHECK_CONTAINS(tree, "data-node=\"2\"");
    CHECK_CONTAINS(tree, "<g class=\"node other best\"");
    CHECK_CONTAINS(html,
                   "<td class=\"mono\">a.b</td><td class=\"mono\">[1,{&quot;c&quot;:null}]</td>");
    CHECK_CONTAINS(html, "<td class=\"mono\">a.d</td><td class=\"mono\">true</td>");
    free(tree);
    free(html);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/thalamus-report-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_escape_specials);
    RUN(test_escape_repairs_bytes);
    RUN(test_truncate);
    RUN(test_ticks_nice);
    RUN(test_ticks_degenerate);
    RUN(test_layout_no_overlap);
    RUN(test_layout_exact);
    RUN(test_layout_bad_parents);
    RUN(test_layout_long_chain);
    RUN(test_render_refuses_non_object);
    RUN(test_render_empty);
    RUN(test_render_escapes_titles);
    RUN(test_render_counts);
    RUN(test_render_odd_documents);
    const char *names[] = {"report.html", "report.md", "metric.svg", "tree.svg", "run.json"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *p = fs_join(tmpdir, names[i]);
        unlink(p);
        free(p);
    }
    rmdir(tmpdir);
    return check_summary();
}
