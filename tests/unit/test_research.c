/*
 * Tests of the research loop's records: the value rule, the run and node
 * rows in a real SQLite store, and the JSON document research_export()
 * gives the report (field names, statuses, best node, order, decisions).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "check.h"
#include "error.h"
#include "research_internal.h"
#include "store.h"

static char root[] = "/tmp/thalamus-research-XXXXXX";

static void test_value_rule(void)
{
    CHECK(fabs(research_value("maximize", "ok", 0.8, 0.8) - 0.5) < 1e-12);
    CHECK(fabs(research_value("maximize", "ok", 0.88, 0.8) - 1 / (1 + exp(-1.0))) < 1e-9);
    CHECK(research_value("maximize", "ok", 0.72, 0.8) < 0.5);
    CHECK(research_value("minimize", "ok", 0.72, 0.8) > 0.5);
    CHECK(research_value("maximize", "failed", 0.99, 0.8) == 0);
    CHECK(research_value("maximize", "invalid", NAN, 0.8) == 0);
    CHECK(research_value("maximize", "ok", NAN, 0.8) == 0);
    /* a clean run is always worth more than a failure */
    CHECK(research_value("maximize", "ok", 0.0, 0.8) > 0);
    /* without a baseline metric, the metric itself in the goal's direction */
    CHECK(research_value("maximize", "ok", 2, NAN) > research_value("maximize", "ok", 1, NAN));
}

static struct store *open_store(const char *name)
{
    research_register_migrations();
    char *path = xasprintf("%s/%s.db", root, name);
    struct store *s = NULL;
    int rc = store_open(&s, path);
    free(path);
    return rc == 0 ? s : NULL;
}

static void add_node(struct store *s, long id, long parent, const char *kind, const char *state,
                     const char *status, double metric, long order)
{
    struct rs_node n;
    rs_node_init(&n);
    n.id = id;
    n.parent = parent;
    n.kind = xstrdup(kind);
    n.state = xstrdup(state);
    n.status = status ? xstrdup(status) : NULL;
    n.title = xasprintf("idea %ld", id);
    n.metric = metric;
    n.order = order;
    n.commit = !strcmp(state, "done") ? xasprintf("%040ld", id) : NULL;
    n.params = cJSON_Parse("{\"lr\": 0.1}");
    n.label = id ? xstrdup("improve") : NULL;
    n.insight = id == 2 ? xstrdup("lower is better") : NULL;
    CHECK(rs_node_save(s, "r1", &n) == 0);
    rs_node_clear(&n);
}

static void test_export(void)
{
    struct store *s = open_store("export");
    REQUIRE(s);
    cJSON *doc = NULL;
    CHECK(research_export(s, NULL, &doc) == TH_ENOTFOUND);
    CHECK_CONTAINS(error_message(), "no run yet");
    error_clear();
    char *id = NULL;
    long seq = 0;
    REQUIRE(rs_run_next_id(s, &id, &seq) == 0);
    CHECK_EQ_STR(id, "r1");
    struct rs_run r = {0};
    r.id = id;
    r.seq = seq;
    r.status = xstrdup("finished");
    r.started = rs_now();
    r.provider = xstrdup("offline");
    r.model = xstrdup("");
    r.task_name = xstrdup("toy");
    r.metric = xstrdup("accuracy");
    r.goal = xstrdup("maximize");
    r.baseline = xasprintf("%040d", 0);
    r.isolation = xstrdup("full");
    r.config = cJSON_Parse("{\"loop\": {\"rounds\": 2}}");
    r.limits = cJSON_Parse("{\"rounds\": 2, \"experiments\": null}");
    r.stop_reason = xstrdup("round limit reached: 2 rounds");
    r.expansions = 2;
    REQUIRE(rs_run_save(s, &r) == 0);
    add_node(s, 0, -1, "baseline", "done", "ok", 0.5, 1);
    add_node(s, 1, 0, "draft", "done", "failed", NAN, 2);
    add_node(s, 2, 0, "draft", "done", "ok", 0.75, 3);
    add_node(s, 3, 1, "debug", "running", NULL, NAN, 0);
    add_node(s, 4, 2, "improve", "pending", NULL, NAN, 0);
    CHECK(rs_event_add(s, "r1", 2, "decision", "kept", "ranked 1 of 3", "idea 2") == 0);
    CHECK(rs_event_add(s, "r1", -1, "note", NULL, NULL, "try momentum") == 0);

    REQUIRE(research_export(s, "r1", &doc) == 0);
    const cJSON *run = cJSON_GetObjectItem(doc, "run");
    CHECK_EQ_STR(cJSON_GetObjectItem(run, "id")->valuestring, "r1");
    CHECK_EQ_STR(cJSON_GetObjectItem(run, "status")->valuestring, "finished");
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(run, "model")));
    CHECK_EQ_STR(cJSON_GetObjectItem(cJSON_GetObjectItem(run, "task"), "metric")->valuestring,
                 "accuracy");
    const cJSON *best = cJSON_GetObjectItem(run, "best");
    CHECK_EQ_STR(cJSON_GetObjectItem(best, "node")->valuestring, "n2");
    CHECK(cJSON_GetObjectItem(best, "metric")->valuedouble == 0.75);
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(run, "baseline"), "metric")->valuedouble == 0.5);
    const cJSON *budget = cJSON_GetObjectItem(run, "budget");
    CHECK_EQ_INT(cJSON_GetObjectItem(budget, "experiments")->valueint, 2);
    CHECK(cJSON_IsObject(cJSON_GetObjectItem(budget, "limits")));
    const cJSON *nodes = cJSON_GetObjectItem(doc, "nodes");
    REQUIRE(cJSON_GetArraySize(nodes) == 5);
    const cJSON *n0 = cJSON_GetArrayItem(nodes, 0);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(n0, "parent")));
    const char *statuses[] = {"ok", "failed", "ok", "running", "pending"};
    for (int i = 0; i < 5; i++) {
        const cJSON *n = cJSON_GetArrayItem(nodes, i);
        CHECK_EQ_STR(cJSON_GetObjectItem(n, "status")->valuestring, statuses[i]);
        for (const char *const *k =
                 (const char *const[]){"id", "parent", "metric", "commit", "title", "kind", "label",
                                       "order", "params", NULL};
             *k; k++)
            CHECK(cJSON_GetObjectItem(n, *k) != NULL);
    }
    CHECK_EQ_STR(cJSON_GetObjectItem(cJSON_GetArrayItem(nodes, 3), "parent")->valuestring, "n1");
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(nodes, 1), "metric")));
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(nodes, 4), "commit")));
    CHECK_EQ_INT(cJSON_GetObjectItem(cJSON_GetArrayItem(nodes, 2), "order")->valueint, 3);
    const cJSON *ins = cJSON_GetObjectItem(doc, "insights");
    REQUIRE(cJSON_GetArraySize(ins) == 1);
    CHECK_EQ_STR(cJSON_GetObjectItem(cJSON_GetArrayItem(ins, 0), "text")->valuestring,
                 "lower is better");
    const cJSON *dec = cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "decisions"), 0);
    CHECK_EQ_STR(cJSON_GetObjectItem(dec, "decision")->valuestring, "kept");
    CHECK_EQ_STR(cJSON_GetObjectItem(dec, "node")->valuestring, "n2");
    const cJSON *note = cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "notes"), 0);
    CHECK_EQ_STR(cJSON_GetObjectItem(note, "text")->valuestring, "try momentum");
    CHECK(cJSON_IsArray(cJSON_GetObjectItem(doc, "usage")));
    cJSON_Delete(doc);

    /* the latest run by default, by id or by number */
    struct rs_run back;
    REQUIRE(rs_run_load(s, "1", &back) == 0);
    CHECK_EQ_STR(back.id, "r1");
    CHECK_EQ_INT(back.expansions, 2);
    rs_run_clear(&back);
    CHECK(rs_run_load(s, "r9", &back) == TH_ENOTFOUND);
    CHECK_CONTAINS(error_message(), "'thalamus runs' lists the runs");
    error_clear();
    struct rs_node *list = NULL;
    size_t count = 0;
    REQUIRE(rs_nodes_load(s, "r1", &list, &count) == 0);
    CHECK_EQ_INT(count, 5);
    CHECK_EQ_INT(list[3].parent, 1);
    CHECK(isnan(list[1].metric));
    CHECK_EQ_STR(rs_node_status(&list[3]), "running");
    rs_nodes_free(list, count);
    rs_run_clear(&r);
    store_close(s);
}

int main(void)
{
    if (!mkdtemp(root))
        return 1;
    RUN(test_value_rule);
    RUN(test_export);
    char *cmd = xasprintf("rm -rf '%s'", root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", root);
    free(cmd);
    return check_summary();
}
