/*
 * lua_spec: runs one Lua spec of the agents (tests/lua/NAME_spec.lua) through
 * the full agent runtime. It copies tests/lua/fixture into a temporary
 * workspace (a task with a search space, a parameter file, the spec helper
 * agents/lib/spec.lua and fixture agents), adds a symbolic link that leads
 * out of the experiment, opens a fresh memory, and runs the spec as an
 * agent (role tool) with the built-in agents of the source tree and the
 * offline strategy. The spec returns { results = { { name, ok, error } } };
 * each is printed like the C tests, then "N passed, N failed".
 * Usage: lua_spec SPEC.lua. Depends on agent, llm, memory, loop, config,
 * store and fsutil.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "alloc.h"
#include "buf.h"
#include "config.h"
#include "error.h"
#include "fsutil.h"
#include "llm.h"
#include "loop.h"
#include "memory.h"
#include "store.h"

struct state {
    struct loop *loop;
    cJSON *output;
    char *error, *traceback;
    bool done;
};

static void on_done(struct agent_task *t, const struct agent_result *res, void *ud)
{
    (void)t;
    struct state *st = ud;
    st->done = true;
    if (res->rc == 0)
        st->output = cJSON_Duplicate(res->output, 1);
    st->error = res->error ? xstrdup(res->error) : NULL;
    st->traceback = res->traceback ? xstrdup(res->traceback) : NULL;
    loop_stop(st->loop);
}

static void on_timeout(struct loop_timer *t, void *ud)
{
    (void)t;
    struct state *st = ud;
    st->error = xstrdup("the spec did not finish within 100 s");
    loop_stop(st->loop);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: lua_spec SPEC.lua\n");
        return 2;
    }
    unsetenv("OPENAI_API_KEY");
    unsetenv("ANTHROPIC_API_KEY");
    unsetenv("THALAMUS_PROVIDER");
    char ws[] = "/tmp/thalamus-lua-spec-XXXXXX";
    if (!mkdtemp(ws))
        return 1;
    int status = 1;
    struct buf src;
    buf_init(&src, 0);
    struct config *cfg = NULL;
    struct loop *loop = NULL;
    struct store *store = NULL;
    struct memory *memory = NULL;
    struct llm *gw = NULL;
    struct agent_runtime *rt = NULL;
    struct state st = {0};
    char *db = NULL, *link = NULL;
    if (fs_copy_tree(THALAMUS_SOURCE_DIR "/tests/lua/fixture", ws, NULL, NULL) < 0 ||
        buf_read_file(&src, argv[1]) < 0)
        goto fail;
    link = fs_join(ws, "experiment/outside");
    if (symlink("/tmp", link) < 0) {
        error_set("cannot create the fixture's symbolic link");
        goto fail;
    }
    db = fs_join(ws, "memory.db");
    llm_register_migrations();
    memory_register_migrations();
    if (config_load(&cfg, ws) < 0 || loop_new(&loop) < 0 || store_open(&store, db) < 0 ||
        memory_new(&memory, store, NULL) < 0 || llm_new(&gw, loop, cfg, store) < 0)
        goto fail;
    struct agent_runtime_options o = {.loop = loop,
                                      .cfg = cfg,
                                      .workspace = ws,
                                      .llm = gw,
                                      .memory = memory,
                                      .data_dir = THALAMUS_SOURCE_DIR,
                                      .strategy = "offline"};
    if (agent_runtime_new(&rt, &o) < 0)
        goto fail;
    const char *base = strrchr(argv[1], '/');
    char *chunk = xasprintf("tests/lua/%s", base ? base + 1 : argv[1]);
    int rc = agent_define(rt, "spec", buf_str(&src), chunk);
    free(chunk);
    if (rc < 0)
        goto fail;
    st.loop = loop;
    if (agent_start(rt, "spec", NULL, NULL, on_done, &st, NULL) < 0)
        goto fail;
    struct loop_timer *guard = loop_timer_add(loop, 100000, on_timeout, &st);
    loop_run(loop);
    loop_timer_cancel(guard);
    if (!st.output) {
        fprintf(stderr, "the spec failed: %s\n%s\n", st.error ? st.error : "?",
                st.traceback ? st.traceback : "");
        goto done;
    }
    int passed = 0, failed = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItem(st.output, "results"))
    {
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(r, "name"));
        if (cJSON_IsTrue(cJSON_GetObjectItem(r, "ok"))) {
            fprintf(stderr, "ok   %s\n", name);
            passed++;
        } else {
            fprintf(stderr, "FAIL %s\n  %s\n", name,
                    cJSON_GetStringValue(cJSON_GetObjectItem(r, "error")));
            failed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    status = failed || passed == 0 ? 1 : 0;
    goto done;
fail:
    fprintf(stderr, "lua_spec: %s\n", error_message());
done:
    agent_runtime_free(rt);
    llm_free(gw);
    memory_free(memory);
    loop_free(loop);
    store_close(store);
    config_free(cfg);
    cJSON_Delete(st.output);
    free(st.error);
    free(st.traceback);
    buf_free(&src);
    free(db);
    free(link);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", ws);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", ws);
    return status;
}
