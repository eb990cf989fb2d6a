/*
 * report_internal: what the report's files share: the run document read
 * into plain structs (report.c), and the SVG figures drawn from them
 * (report_svg.c). Depends on buf and cJSON.
 */
#ifndef THALAMUS_REPORT_INTERNAL_H
#define THALAMUS_REPORT_INTERNAL_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/* One experiment. Strings point into the document or are NULL, except id
 * and parent_id, which are owned (a document may give numbers for them). */
struct report_node {
    char *id;
    char *parent_id;
    const char *status, *title, *hypothesis, *kind, *label, *commit, *insight;
    bool has_metric; /* metric is a finite number */
    double metric;
    int order;   /* finish order, 0 when the experiment has not finished */
    int parent;  /* index into report_run.nodes, -1 when none */
    bool failed; /* finished without a usable metric */
};

struct report_run {
    const cJSON *doc, *run;
    const char *id, *status, *metric_name;
    bool minimize;
    bool has_baseline;
    double baseline_metric;
    char *baseline_node, *best_node; /* owned, or NULL */
    struct report_node *nodes;
    size_t n;
};

/* Whether node i finished well: status "ok" with a metric. */
bool report_node_ok(const struct report_node *node);

/* Draws the metric chart and the experiment tree as standalone SVG
 * documents (also fit to be inlined in HTML). */
void report_metric_svg(struct buf *out, const struct report_run *run);
void report_tree_svg(struct buf *out, const struct report_run *run);

/* Formats a metric compactly into out (size at least 32). */
void report_format_metric(char *out, size_t size, double v);

#endif
