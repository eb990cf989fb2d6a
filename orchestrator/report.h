/*
 * report: the research report of a run, as one self-contained HTML page and
 * as Markdown with its figures in SVG files.
 *
 * report_render() takes the run document of research_export() (see
 * docs/report.md for its shape) and writes report.html (inline CSS and SVG,
 * no script, no external asset), report.md with metric.svg and tree.svg
 * beside it, and run.json, the document itself, so that the report can be
 * rendered again later. The figures are the metric of every experiment in
 * the order they finished with the best-so-far curve and the baseline, and
 * the experiment tree coloured by status; then come the table of
 * experiments, insights, notes, decisions, model usage, configuration and
 * isolation. Every field may be missing or null: a run in progress, a run
 * with only its baseline or one where everything failed still renders, and
 * all text from the document is escaped. The layout helpers are exposed for
 * the unit tests. Depends on alloc, buf, error, fsutil, utf8 and cJSON.
 */
#ifndef THALAMUS_REPORT_H
#define THALAMUS_REPORT_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "buf.h"

struct report_files {
    char *html;       /* out_dir/report.html */
    char *markdown;   /* out_dir/report.md */
    char *metric_svg; /* out_dir/metric.svg */
    char *tree_svg;   /* out_dir/tree.svg */
    char *document;   /* out_dir/run.json */
};

/* Renders doc into out_dir (created when missing), each file written
 * atomically, and fills *out with the paths written (free them with
 * report_files_free()). Fails with TH_EUSAGE when doc is not a JSON object,
 * with TH_ERR when a file cannot be written. */
int report_render(const cJSON *doc, const char *out_dir, struct report_files *out);

void report_files_free(struct report_files *files);

/* ---- helpers, exposed for the unit tests -------------------------------- */

/* Appends s escaped for HTML and XML text and attributes (& < > " ' become
 * entities), with invalid UTF-8 and control characters other than tab and
 * newline replaced by U+FFFD. A NULL s appends nothing. */
void report_escape(struct buf *out, const char *s);

/* A copy of s cut to at most max characters (code points), ending in an
 * ellipsis when it was cut; never cuts a UTF-8 sequence. NULL gives "". */
char *report_truncate(const char *s, size_t max);

/* Fills ticks with "nice" values (1, 2 or 5 times a power of ten apart)
 * covering [lo, hi], about target of them, at most cap; returns how many.
 * lo == hi and non-finite bounds are handled (never 0 ticks for cap >= 2). */
int report_ticks(double lo, double hi, int target, double *ticks, int cap);

/* Tidy layout of a forest of n nodes, parent[i] being the index of node i's
 * parent or -1 (out-of-range parents and cycles are treated as roots). Sets
 * depth[i] (0 for roots) and row[i]: leaves take rows 0, 1, 2... in
 * depth-first order, children in index order, and a parent sits midway
 * between its first and last child, so two nodes at the same depth are
 * always at least one row apart. Returns the number of rows used. */
size_t report_tree_layout(const int *parent, size_t n, int *depth, double *row);

#endif
