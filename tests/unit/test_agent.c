/*
 * test_agent: the Lua agent runtime (agent.h) on its event loop. Checks that
 * 1,000 agents each waiting for a reply of the fake model server
 * (tests/e2e/fake_llm.py) all complete, and that errors in some of them
 * leave the others running; that an endless loop is stopped within its
 * instruction slice, even inside pcall, while the slice restarts at every
 * wait; that a memory bomb fails alone and its memory comes back; that
 * waiting works inside pcall and xpcall and is refused inside coroutines an
 * agent makes; that the sandboxed environment has no os, io, debug, native
 * or binary loading; that workspace files cannot be reached outside the
 * workspace; that wrong outputs name the field; agents.call and parallel;
 * a coder asked again after a failed apply; streaming; thalamus.memory on a
 * real store; cancelling; and the built-in agents' llm strategies against
 * the scripted fake server, checking what they sent. Depends on agent, llm,
 * memory, loop, config, store and the check.h and fake_llm.h helpers.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "alloc.h"
#include "buf.h"
#include "check.h"
#include "config.h"
#include "error.h"
#include "fake_llm.h"
#include "fsutil.h"
#include "llm.h"
#include "loop.h"
#include "memory.h"
#include "store.h"

static struct fake_llm fake;
static char wsdir[] = "/tmp/thalamus-test-agent-XXXXXX";

static void write_file(const char *rel, const char *text)
{
    char *path = fs_join(wsdir, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    fs_mkdir_p(path, 0777);
    *slash = '/';
    REQUIRE(fs_write_atomic(path, text, strlen(text), 0644) == 0);
    free(path);
}

static const char config_text[] =
    "return {\n"
    "  task = { name = 'toy', metric = 'score', goal = 'maximize',\n"
    "    search_space = { lr = { min = 0.001, max = 1, scale = 'log' },\n"
    "                     depth = { min = 1, max = 8, integer = true },\n"
    "                     act = { choices = { 'tanh', 'relu' } } } },\n"
    "  llm = { max_retries = 0 },\n"
    "}\n";

/* ---- the environment of one test ---------------------------------------- */

struct env {
    struct loop *loop;
    struct config *cfg;
    struct llm *gw;
    struct store *store;
    struct memory *memory;
    struct agent_runtime *rt;
};

struct opts {
    const char *provider; /* "openai" against the fake, or "offline" */
    long cpu_slice;
    size_t memory_limit;
    bool store;
    const char *strategy;
};

static void env_open(struct env *e, const struct opts *o)
{
    memset(e, 0, sizeof *e);
    unsetenv("ANTHROPIC_API_KEY");
    unsetenv("OPENAI_API_KEY");
    unsetenv("THALAMUS_PROVIDER");
    if (o->provider && !strcmp(o->provider, "openai")) {
        char base[128];
        snprintf(base, sizeof base, "%s/v1", fake.url);
        setenv("OPENAI_API_KEY", "test-key", 1);
        setenv("OPENAI_BASE_URL", base, 1);
        setenv("THALAMUS_MODEL", "test-model", 1);
    }
    REQUIRE(loop_new(&e->loop) == 0);
    REQUIRE(config_load(&e->cfg, wsdir) == 0);
    e->cfg->llm_max_concurrency = 32;
    if (o->store) {
        char *db = fs_join(wsdir, ".thalamus/memory.db");
        unlink(db);
        free(db);
        store_reset_migrations();
        llm_register_migrations();
        memory_register_migrations();
        char *dir = fs_join(wsdir, ".thalamus");
        fs_mkdir_p(dir, 0777);
        char *path = fs_join(dir, "memory.db");
        REQUIRE(store_open(&e->store, path) == 0);
        free(dir);
        free(path);
        REQUIRE(memory_new(&e->memory, e->store, NULL) == 0);
    }
    REQUIRE(llm_new(&e->gw, e->loop, e->cfg, e->store) == 0);
    struct agent_runtime_options ro = {
        .loop = e->loop,
        .cfg = e->cfg,
        .workspace = wsdir,
        .llm = e->gw,
        .memory = e->memory,
        .data_dir = THALAMUS_SOURCE_DIR,
        .strategy = o->strategy,
        .cpu_slice = o->cpu_slice,
        .memory_limit = o->memory_limit,
    };
    REQUIRE(agent_runtime_new(&e->rt, &ro) == 0);
}

static void env_close(struct env *e)
{
    agent_runtime_free(e->rt);
    llm_free(e->gw);
    memory_free(e->memory);
    loop_free(e->loop);
    store_close(e->store);
    config_free(e->cfg);
}

struct outcome {
    bool done;
    int rc;
    char *output; /* compact JSON */
    char *error, *traceback;
    int attempts;
};

static int outstanding;
static struct loop *running_loop;

static void on_done(struct agent_task *t, const struct agent_result *res, void *ud)
{
    (void)t;
    struct outcome *o = ud;
    o->done = true;
    o->rc = res->rc;
    o->attempts = res->attempts;
    if (res->rc == 0)
        o->output = cJSON_PrintUnformatted(res->output);
    o->error = res->error ? xstrdup(res->error) : NULL;
    o->traceback = res->traceback ? xstrdup(res->traceback) : NULL;
    if (--outstanding == 0)
        loop_stop(running_loop);
}

static void outcome_free(struct outcome *o)
{
    free(o->output);
    free(o->error);
    free(o->traceback);
    memset(o, 0, sizeof *o);
}

static void guard(struct loop_timer *t, void *ud)
{
    (void)t;
    CHECK_FAIL("timed out");
    loop_stop(ud);
}

static void run_loop(struct env *e)
{
    running_loop = e->loop;
    struct loop_timer *t = loop_timer_add(e->loop, 90000, guard, e->loop);
    CHECK_EQ_INT(loop_run(e->loop), 0);
    loop_timer_cancel(t);
}

/* Starts agent name with input (JSON text) and runs the loop until it ends. */
static void run_one(struct env *e, const char *name, const char *input, struct outcome *o)
{
    memset(o, 0, sizeof *o);
    cJSON *in = input ? cJSON_Parse(input) : NULL;
    REQUIRE(!input || in);
    outstanding = 1;
    int rc = agent_start(e->rt, name, in, NULL, on_done, o, NULL);
    cJSON_Delete(in);
    if (rc < 0) {
        o->done = true;
        o->rc = rc;
        o->error = xstrdup(error_message());
        return;
    }
    run_loop(e);
    CHECK(o->done);
}

static void define(struct env *e, const char *name, const char *src)
{
    int rc = agent_define(e->rt, name, src, name);
    if (rc < 0)
        CHECK_FAIL("agent_define(%s): %s", name, error_message());
    REQUIRE(rc == 0);
}

/* ---- concurrency and containment ----------------------------------------- */

#define MANY 1000

static void test_thousand_agents_await_the_model(void)
{
    fake_reset(&fake);
    struct env e;
    env_open(&e, &(struct opts){.provider = "openai"});
    define(&e, "asker",
           "local thalamus = require('thalamus')\n"
           "return { name = 'asker', role = 'tool', run = function(ctx, input)\n"
           "  local text, info = thalamus.llm.chat{ prompt = 'question ' .. input.i }\n"
           "  if input.i % 100 == 7 then error('agent ' .. input.i .. ' fails on purpose') end\n"
           "  return { i = input.i, text = text, tokens = info.completion_tokens }\n"
           "end }\n");
    static struct outcome o[MANY];
    outstanding = MANY;
    for (int i = 0; i < MANY; i++) {
        char input[64];
        snprintf(input, sizeof input, "{\"i\": %d}", i);
        cJSON *in = cJSON_Parse(input);
        memset(&o[i], 0, sizeof o[i]);
        REQUIRE(agent_start(e.rt, "asker", in, NULL, on_done, &o[i], NULL) == 0);
        cJSON_Delete(in);
    }
    CHECK_EQ_INT(agent_pending(e.rt), MANY);
    run_loop(&e);
    int ok = 0, failed = 0;
    for (int i = 0; i < MANY; i++) {
        CHECK(o[i].done);
        if (i % 100 == 7) {
            failed += o[i].rc < 0 && strstr(o[i].error, "fails on purpose") && o[i].traceback &&
                      strstr(o[i].traceback, "asker:4:");
        } else {
            char want[128];
            snprintf(want, sizeof want, "{\"i\":%d,\"text\":\"Hello from the fake model.\"", i);
            ok += o[i].rc == 0 && !strncmp(o[i].output, want, strlen(want));
        }
        outcome_free(&o[i]);
    }
    CHECK_EQ_INT(ok, MANY - MANY / 100);
    CHECK_EQ_INT(failed, MANY / 100);
    CHECK_EQ_INT(fake_stat(&fake, "requests"), MANY);
    CHECK_EQ_INT(agent_pending(e.rt), 0);
    env_close(&e);
}

static const char spin_src[] =
    "local thalamus = require('thalamus')\n"
    "local state = { n = 0 }\n"
    "return { name = 'spin', role = 'tool', run = function(ctx, input)\n"
    "  if input.report then return { n = state.n } end\n"
    "  if input.steps then\n"
    "    for round = 1, input.rounds do\n"
    "      for i = 1, input.steps do state.n = state.n + 1 end\n"
    "      thalamus.sleep(0)\n"
    "    end\n"
    "    return { n = state.n }\n"
    "  end\n"
    "  if input.pcall then\n"
    "    while true do pcall(function() while true do state.n = state.n + 1 end end) end\n"
    "  end\n"
    "  while true do state.n = state.n + 1 end\n"
    "end }\n";

static long report(struct env *e)
{
    struct outcome o;
    run_one(e, "spin", "{\"report\": true}", &o);
    cJSON *j = o.output ? cJSON_Parse(o.output) : NULL;
    long n = j ? (long)cJSON_GetObjectItem(j, "n")->valuedouble : -1;
    cJSON_Delete(j);
    outcome_free(&o);
    return n;
}

#define SLICE 2000000L

static void test_endless_loop_stopped_within_its_slice(void)
{
    struct env e;
    env_open(&e, &(struct opts){.provider = "offline", .cpu_slice = SLICE});
    define(&e, "spin", spin_src);
    define(&e, "sleeper",
           "local thalamus = require('thalamus')\n"
           "return { name = 'sleeper', role = 'tool', run = function(ctx, input)\n"
           "  thalamus.sleep(0.02) return { woke = true } end }\n");
    struct outcome sleeper, spin;
    outstanding = 2;
    memset(&sleeper, 0, sizeof sleeper);
    memset(&spin, 0, sizeof spin);
    REQUIRE(agent_start(e.rt, "sleeper", NULL, NULL, on_done, &sleeper, NULL) == 0);
    REQUIRE(agent_start(e.rt, "spin", NULL, NULL, on_done, &spin, NULL) == 0);
    run_loop(&e);
    CHECK_EQ_INT(spin.rc, TH_ERR);
    CHECK_CONTAINS(spin.error, "agents.cpu_slice");
    CHECK_CONTAINS(spin.traceback, "spin:15:");
    CHECK_EQ_INT(sleeper.rc, 0);
    CHECK_EQ_STR(sleeper.output, "{\"woke\":true}");
    /* each iteration is 4 VM instructions: it stopped within its slice */
    long n = report(&e);
    CHECK(n > 0);
    CHECK(n * 4 <= SLICE + 2000);
    CHECK(n * 4 >= SLICE / 2);
    outcome_free(&sleeper);
    outcome_free(&spin);

    /* pcall cannot swallow the interruption */
    run_one(&e, "spin", "{\"pcall\": true}", &spin);
    CHECK_EQ_INT(spin.rc, TH_ERR);
    CHECK_CONTAINS(spin.error, "agents.cpu_slice");
    outcome_free(&spin);

    /* the slice starts again at every wait: 10 slices of work in all, never
     * more than half a slice between two waits */
    long before = report(&e);
    run_one(&e, "spin", "{\"steps\": 250000, \"rounds\": 40}", &spin);
    CHECK_EQ_INT(spin.rc, 0);
    CHECK_EQ_INT(report(&e) - before, 250000L * 40);
    outcome_free(&spin);
    env_close(&e);
}

static void test_memory_bomb_is_contained(void)
{
    struct env e;
    env_open(&e, &(struct opts){.provider = "offline", .memory_limit = (size_t)24 << 20});
    define(&e, "bomb",
           "return { name = 'bomb', role = 'tool', run = function(ctx, input)\n"
           "  local t = {}\n"
           "  while true do t[#t + 1] = string.rep('x', 65536) .. #t end\n"
           "end }\n");
    define(&e, "sleeper",
           "local thalamus = require('thalamus')\n"
           "return { name = 'sleeper', role = 'tool', run = function(ctx, input)\n"
           "  local keep = string.rep('y', 1000)\n"
           "  thalamus.sleep(0.01) return { n = #keep } end }\n");
    enum { SLEEPERS = 20 };
    struct outcome s[SLEEPERS], bomb;
    outstanding = SLEEPERS + 1;
    for (int i = 0; i < SLEEPERS; i++) {
        memset(&s[i], 0, sizeof s[i]);
        REQUIRE(agent_start(e.rt, "sleeper", NULL, NULL, on_done, &s[i], NULL) == 0);
    }
    memset(&bomb, 0, sizeof bomb);
    REQUIRE(agent_start(e.rt, "bomb", NULL, NULL, on_done, &bomb, NULL) == 0);
    run_loop(&e);
    CHECK_EQ_INT(bomb.rc, TH_ERR);
    CHECK_CONTAINS(bomb.error, "ran out of memory");
    CHECK_CONTAINS(bomb.error, "agents.memory_mb");
    int ok = 0;
    for (int i = 0; i < SLEEPERS; i++) {
        ok += s[i].rc == 0 && !strcmp(s[i].output, "{\"n\":1000}");
        outcome_free(&s[i]);
    }
    CHECK_EQ_INT(ok, SLEEPERS);
    CHECK(agent_memory_used(e.rt) < ((size_t)8 << 20));
    outcome_free(&bomb);
    /* and the runtime goes on */
    run_one(&e, "sleeper", NULL, &s[0]);
    CHECK_EQ_INT(s[0].rc, 0);
    outcome_free(&s[0]);
    env_close(&e);
}

/* ---- waiting ---------------------------------------------------------------- */

static void test_waiting_inside_pcall(void)
{
    fake_reset(&fake);
    fake_script(&fake, "[{\"reply\": \"first\"}, {\"status\": 400, \"json\": {\"error\": "
                       "{\"message\": \"bad request\"}}}]");
    struct env e;
    env_open(&e, &(struct opts){.provider = "openai"});
    define(&e, "careful",
           "local thalamus = require('thalamus')\n"
           "return { name = 'careful', role = 'tool', run = function(ctx, input)\n"
           "  local ok1, text = pcall(function() thalamus.sleep(0) return thalamus.llm.chat{ "
           "prompt = 'a' } end)\n"
           "  local ok2, err2 = pcall(thalamus.llm.chat, { prompt = 'b' })\n"
           "  local ok3, err3 = pcall(function() thalamus.sleep(0) error('after a wait') end)\n"
           "  local ok4, err4 = xpcall(function() thalamus.sleep(0) error({}) end,\n"
           "    function(m) return 'handled ' .. type(m) end)\n"
           "  local ok5, v5 = pcall(pcall, function() thalamus.sleep(0.001) return 5 end)\n"
           "  return { ok1 = ok1, text = text, ok2 = ok2, err2 = tostring(err2):match('400') "
           "~= nil,\n"
           "    ok3 = ok3, err3 = err3:match('after a wait') ~= nil, ok4 = ok4, err4 = err4, ok5 "
           "= ok5 }\n"
           "end }\n");
    struct outcome o;
    run_one(&e, "careful", NULL, &o);
    CHECK_EQ_INT(o.rc, 0);
    CHECK_EQ_STR(o.output, "{\"err2\":true,\"err3\":true,\"err4\":\"handled table\",\"ok1\":true,"
                           "\"ok2\":false,\"ok3\":false,\"ok4\":false,\"ok5\":true,\"text\":"
                           "\"first\"}");
    outcome_free(&o);

    /* not inside a coroutine the agent made, nor inside a C call */
    define(&e, "nested",
           "local thalamus = require('thalamus')\n"
           "return { name = 'nested', role = 'tool', run = function(ctx, input)\n"
           "  local co = coroutine.wrap(function() thalamus.sleep(0) end)\n"
           "  local ok, err = pcall(co)\n"
           "  local ok2, err2 = pcall(table.sort, {3, 2, 1}, function(a, b) thalamus.sleep(0) "
           "return a < b end)\n"
           "  local ok3, err3 = pcall(coroutine.resume, coroutine.running())\n"
           "  return { ok = ok, err = err, ok2 = ok2, err2 = err2, ok3 = ok3, err3 = err3 }\n"
           "end }\n");
    run_one(&e, "nested", NULL, &o);
    CHECK_EQ_INT(o.rc, 0);
    CHECK_CONTAINS(o.output, "\"ok\":false");
    CHECK_CONTAINS(o.output, "thalamus.sleep can only wait in an agent's own code");
    CHECK_CONTAINS(o.output, "\"ok2\":false");
    CHECK_CONTAINS(o.output, "cannot wait here");
    CHECK_CONTAINS(o.output, "resumed by thalamus only");
    outcome_free(&o);
    env_close(&e);
}

static void test_stream_calls_back_in_the_agent(void)
{
    fake_reset(&fake);
    /* a pause between the words, so that each arrives on its own */
    fake_script(&fake, "[{\"reply\": \"alpha beta gamma delta\", \"drip\": 0.05}]");
    struct env e;
    env_open(&e, &(struct opts){.provider = "openai"});
    define(&e, "streamer",
           "local thalamus = require('thalamus')\n"
           "return { name = 'streamer', role = 'tool', run = function(ctx, input)\n"
           "  local chunks = {}\n"
           "  local text = thalamus.llm.stream({ prompt = 'go' }, function(s) chunks[#chunks + 1] "
           "= s end)\n"
           "  return { text = text, joined = table.concat(chunks), many = #chunks > 1 }\n"
           "end }\n");
    struct outcome o;
    run_one(&e, "streamer", NULL, &o);
    CHECK_EQ_INT(o.rc, 0);
    CHECK_EQ_STR(o.output, "{\"joined\":\"alpha beta gamma delta\",\"many\":true,"
                           "\"text\":\"alpha beta gamma delta\"}");
    outcome_free(&o);
    env_close(&e);
}

static void stop_loop(struct loop_timer *t, void *ud)
{
    (void)t;
    loop_stop(ud);
}

static void test_call_and_parallel(void)
{
    struct env e;
    env_open(&e, &(struct opts){.provider = "offline"});
    define(&e, "double",
           "local thalamus = require('thalamus')\n"
           "return { name = 'double', role = 'tool', run = function(ctx, input)\n"
           "  thalamus.sleep(input.wait or 0)\n"
           "  if input.x < 0 then error('negative') end\n"
           "  return { y = 2 * input.x, depth = ctx.depth, run = ctx.run }\n"
           "end }\n");
    define(&e, "boss",
           "local thalamus = require('thalamus')\n"
           "local agents = thalamus.agents\n"
           "return { name = 'boss', role = 'tool', run = function(ctx, input)\n"
           "  local one = agents.call('double', { x = 21 })\n"
           "  local events = {}\n"
           "  local function note(e) events[#events + 1] = e end\n"
           "  local outs, errs, failed = agents.parallel{\n"
           "    { 'double', { x = 1, wait = 0.01 } },\n"
           "    { agent = 'double', input = { x = -1 } },\n"
           "    function() note('s3') thalamus.sleep(0.02) note('e3') return 'fn' end,\n"
           "    function() error('fn fails') end,\n"
           "    function() note('s5') thalamus.sleep(0.02) note('e5') end,\n"
           "  }\n"
           "  local order = table.concat(events, ',')\n"
           "  local ok, err = pcall(agents.call, 'nobody', {})\n"
           "  return { one = one.y, depth = one.depth, o1 = outs[1].y, e2 = errs[2] ~= nil and "
           "errs[2]:match('negative') ~= nil,\n"
           "    o3 = outs[3], e4 = errs[4]:match('fn fails') ~= nil, failed = failed, n = "
           "outs.n,\n"
           "    order = order, unknown = err:match(\"unknown agent 'nobody'\") ~= nil }\n"
           "end }\n");
    struct outcome o;
    run_one(&e, "boss", NULL, &o);
    CHECK_EQ_INT(o.rc, 0);
    CHECK_EQ_STR(o.output, "{\"depth\":1,\"e2\":true,\"e4\":true,\"failed\":2,\"n\":5,\"o1\":2,"
                           "\"o3\":\"fn\",\"one\":42,\"order\":\"s3,s5,e3,e5\",\"unknown\":true}");
    outcome_free(&o);

    /* a parent cancelled while its children wait */
    struct agent_task *t;
    memset(&o, 0, sizeof o);
    define(&e, "slowboss",
           "local thalamus = require('thalamus')\n"
           "return { name = 'slowboss', role = 'tool', run = function(ctx, input)\n"
           "  return thalamus.agents.parallel{ { 'double', { x = 1, wait = 30 } }, function() "
           "thalamus.sleep(30) end }\n"
           "end }\n");
    REQUIRE(agent_start(e.rt, "slowboss", NULL, NULL, on_done, &o, &t) == 0);
    loop_timer_add(e.loop, 50, stop_loop, e.loop);
    CHECK_EQ_INT(loop_run(e.loop), 0);
    CHECK_EQ_INT(agent_pending(e.rt), 3);
    env_close(&e); /* frees the runtime with the tasks waiting: no callback, no leak */
    CHECK(!o.done);
}

/* ---- the environment -------------------------------------------------------- */

static void test_sandboxed_environment(void)
{
    struct env e;
    env_open(&e, &(struct opts){.provider = "offline"});
    define(&e, "probe",
           "return { name = 'probe', role = 'tool', run = function(ctx, input)\n"
           "  local out = {}\n"
           "  for _, name in ipairs({ 'os', 'io', 'debug', 'package', 'dofile', 'loadfile', "
           "'require', 'load', 'string', 'coroutine', 'utf8', 'thalamus' }) do\n"
           "    out[name] = _G[name] ~= nil\n"
           "  end\n"
           "  out.binary = load(string.dump(function() return 1 end)) ~= nil\n"
           "  out.text = load('return 1 + 1')()\n"
           "  out.gc = pcall(collectgarbage, 'collect')\n"
           "  out.strmeta = getmetatable('')\n"
           "  out.native = pcall(require, 'socket')\n"
           "  string.upper = nil\n"
           "  leaked_global = 1\n"
           "  return out\n"
           "end }\n");
    define(&e, "probe2",
           "return { name = 'probe2', role = 'tool', run = function(ctx, input)\n"
           "  return { upper = string.upper ~= nil, leaked = leaked_global ~= nil }\n"
           "end }\n");
    struct outcome o;
    run_one(&e, "probe", NULL, &o);
    CHECK_EQ_INT(o.rc, 0);
    CHECK_EQ_STR(o.output, "{\"binary\":false,\"coroutine\":true,\"debug\":false,\"dofile\":false,"
                           "\"gc\":false,\"io\":false,\"load\":true,\"loadfile\":false,\"native\":"
                           "false,\"os\":false,\"package\":false,\"require\":true,\"string\":"
                           "true,\"strmeta\":false,\"text\":2,\"thalamus\":true,\"utf8\":true}");
    outcome_free(&o);
    /* one agent's changes to its globals do not reach another */
    run_one(&e, "probe2", NULL, &o);
    CHECK_EQ_STR(o.output, "{\"leaked\":false,\"upper\":true}");
    outcome_free(&o);
    env_close(&e);
}

static void test_workspace_files_are_confined(void)
{
    struct env e;
    env_open(&e, &(struct opts){.provider = "offline"});
    char *link = fs_join(wsdir, "escape");
    unlink(link);
    REQUIRE(symlink("/etc", link) == 0);
    define(&e, "reader",
           "local ws = require('thalamus').workspace\n"
           "return { name = 'reader', role = 'tool', run = function(ctx, input)\n"
           "  local out = { r = {} }\n"
           "  for i, p in ipairs({ 'thalamus.lua', '../etc/passwd', '/etc/passwd', "
           "'escape/passwd', 'experiment/../thalamus.lua', 'nope.txt' }) do\n"
           "    local text, err = ws.read(p)\n"
           "    out.r[i] = text and 'read' or err\n"
           "  end\n"
           "  out.list = ws.list('experiment')\n"
           "  out.exists = ws.exists('TASK.md')\n"
           "  out.task = ctx.task.description\n"
           "  return out\n"
           "end }\n");
    struct outcome o;
    run_one(&e, "reader", NULL, &o);
    CHECK_EQ_INT(o.rc, 0);
    if (o.rc < 0)
        CHECK_FAIL("%s", o.error);
    cJSON *j = cJSON_Parse(o.output);
    REQUIRE(j);
    const cJSON *r = cJSON_GetObjectItem(j, "r");
    CHECK_EQ_STR(cJSON_GetArrayItem(r, 0)->valuestring, "read");
    CHECK_CONTAINS(cJSON_GetArrayItem(r, 1)->valuestring, "goes up with '..'");
    CHECK_CONTAINS(cJSON_GetArrayItem(r, 2)->valuestring, "is an absolute path");
    CHECK_CONTAINS(cJSON_GetArrayItem(r, 3)->valuestring, "outside through a symbolic link");
    CHECK_CONTAINS(cJSON_GetArrayItem(r, 4)->valuestring, "goes up with '..'");
    CHECK_CONTAINS(cJSON_GetArrayItem(r, 5)->valuestring, "does not exist");
    char *list = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "list"));
    CHECK_EQ_STR(list, "[\"params.json\"]");
    free(list);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(j, "exists")));
    CHECK_CONTAINS(cJSON_GetObjectItem(j, "task")->valuestring, "Toy task");
    cJSON_Delete(j);
    outcome_free(&o);
    unlink(link);
    free(link);
    env_close(&e);
}

/* ---- outputs --------------------------------------------------------------- */

static void test_wrong_outputs_name_the_field(void)
{
    struct env e;
    env_open(&e, &(struct opts){.provider = "offline"});
    struct {
        const char *role, *body, *input, *want;
    } cases[] = {
        {"planner",
         "return { ideas = { { title = 'a', hypothesis = 'h', changes = {}, "
         "rationale = 'r' }, { title = 5 } } }",
         NULL, "ideas[2].title must be a non-empty string, not a number"},
        {"planner",
         "return { ideas = { { title = 'a', hypothesis = 'h', changes = {}, "
         "rationale = 'r', params = { lr = 5 } } } }",
         NULL, "ideas[1].params.lr is 5, outside task.search_space.lr"},
        {"planner",
         "return { ideas = { { title = 'a', hypothesis = 'h', changes = {}, "
         "rationale = 'r', params = { act = 'gelu' } } } }",
         NULL, "ideas[1].params.act is not one of the choices"},
        {"retriever",
         "return { items = { { kind = 'paper', text = 't', source = 's', score = 1 "
         "}, { kind = 'note', text = 't', source = 's', score = 2 } } }",
         NULL, "items must be ranked best first"},
        {"coder", "return { edits = { { path = '../thalamus.lua', content = 'x' } } }",
         "{\"idea\": {}}", "edits[1].path: the path '../thalamus.lua' goes up with '..'"},
        {"coder", "return { edits = { { path = '/etc/passwd', content = 'x' } } }",
         "{\"idea\": {}}", "is an absolute path"},
        {"critic",
         "return { scores = { { feasibility = 2, novelty = 0, expected_gain = 0 } }, "
         "ranking = { 1 } }",
         "{\"mode\": \"review\", \"ideas\": [{}]}",
         "scores[1].feasibility must be a number from 0 to 1, not 2"},
        {"critic",
         "return { scores = { { feasibility = 1, novelty = 0, expected_gain = 0 }, { "
         "feasibility = 1, novelty = 0, expected_gain = 0 } }, ranking = { 1, 1 } }",
         "{\"mode\": \"review\", \"ideas\": [{}, {}]}", "ranking lists idea 1 twice"},
        {"critic", "return { label = 'better', insight = 'x' }",
         "{\"mode\": \"analyse\", \"result\": {}}", "label must be \"improve\""},
        {"critic", "return nil", "{\"mode\": \"analyse\", \"result\": {}}", "not nothing"},
        {"tool", "return { f = function() end }", NULL, "f: a function cannot be encoded"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char src[1024];
        snprintf(src, sizeof src,
                 "return { name = 'shape', role = '%s', run = function(ctx, input) %s end }",
                 cases[i].role, cases[i].body);
        define(&e, "shape", src);
        struct outcome o;
        run_one(&e, "shape", cases[i].input, &o);
        CHECK_EQ_INT(o.rc, TH_ERR);
        CHECK_CONTAINS(o.error, cases[i].want);
        outcome_free(&o);
    }
    /* inputs too */
    define(&e, "shape", "return { name = 'shape', role = 'critic', run = function() end }");
    cJSON *in = cJSON_Parse("{\"mode\": \"judge\"}");
    CHECK_EQ_INT(agent_start(e.rt, "shape", in, NULL, on_done, NULL, NULL), TH_EUSAGE);
    CHECK_CONTAINS(error_message(), "needs mode = \"review\"");
    cJSON_Delete(in);
    CHECK_EQ_INT(agent_start(e.rt, "nobody", NULL, NULL, on_done, NULL, NULL), TH_ENOTFOUND);
    /* a definition of the wrong shape */
    CHECK(agent_define(e.rt, "odd", "return { name = 'odd', role = 'judge', run = print }", "odd") <
          0);
    CHECK_CONTAINS(error_message(), "the field 'role' must be one of");
    CHECK(agent_define(e.rt, "odd", "return { name = 'even', role = 'tool', run = print }", "odd") <
          0);
    CHECK_CONTAINS(error_message(), "the field 'name' is 'even'");
    CHECK(agent_define(e.rt, "odd", "x = ", "odd") < 0);
    CHECK_CONTAINS(error_message(), "odd:1:");
    env_close(&e);
}

static void test_coder_asked_again_after_a_failed_apply(void)
{
    struct env e;
    env_open(&e, &(struct opts){.provider = "offline"});
    define(&e, "fixer",
           "return { name = 'fixer', role = 'coder', run = function(ctx, input)\n"
           "  if not input.apply_error then\n"
           "    return { edits = { { path = 'params.json', search = 'no such text', replace = "
           "'x' } } }\n"
           "  end\n"
           "  assert(input.apply_error.reason:match('is not in'), input.apply_error.reason)\n"
           "  return { edits = { { path = 'params.json', search = '\"lr\": 0.1', replace = "
           "'\"lr\": 0.2' },\n"
           "                     { path = 'sub/new.txt', content = 'new file' } } }\n"
           "end }\n");
    struct outcome o;
    run_one(&e, "fixer", "{\"idea\": {\"title\": \"t\"}, \"dir\": \"experiment\"}", &o);
    CHECK_EQ_INT(o.rc, 0);
    CHECK_EQ_INT(o.attempts, 2);
    CHECK_CONTAINS(o.output, "\"applied\":[\"params.json\",\"sub/new.txt\"]");
    struct buf b;
    buf_init(&b, 0);
    char *p = fs_join(wsdir, "experiment/params.json");
    REQUIRE(buf_read_file(&b, p) == 0);
    CHECK_CONTAINS(buf_str(&b), "\"lr\": 0.2");
    free(p);
    buf_free(&b);
    outcome_free(&o);

    /* a symbolic link inside the experiment that leads outside: refused at
     * every attempt, nothing written anywhere */
    char *link = fs_join(wsdir, "experiment/out");
    unlink(link);
    REQUIRE(symlink("/tmp", link) == 0);
    define(&e, "escaper",
           "return { name = 'escaper', role = 'coder', run = function(ctx, input)\n"
           "  return { edits = { { path = 'params.json', content = 'changed' },\n"
           "                     { path = 'out/thalamus-escaped.txt', content = 'x' } } }\n"
           "end }\n");
    run_one(&e, "escaper", "{\"idea\": {}, \"dir\": \"experiment\"}", &o);
    CHECK_EQ_INT(o.rc, TH_ERR);
    CHECK_EQ_INT(o.attempts, 3);
    CHECK_CONTAINS(o.error, "could not be applied (3 attempts)");
    CHECK_CONTAINS(o.error, "symbolic link");
    CHECK(!fs_exists("/tmp/thalamus-escaped.txt"));
    buf_init(&b, 0);
    p = fs_join(wsdir, "experiment/params.json");
    REQUIRE(buf_read_file(&b, p) == 0);
    CHECK_CONTAINS(buf_str(&b), "\"lr\": 0.2"); /* all or nothing */
    free(p);
    buf_free(&b);
    outcome_free(&o);
    unlink(link);
    free(link);
    /* a dir outside the workspace */
    run_one(&e, "escaper", "{\"idea\": {}, \"dir\": \"../x\"}", &o);
    CHECK(o.rc < 0);
    CHECK_CONTAINS(o.error, "dir must be a directory of the workspace");
    outcome_free(&o);
    env_close(&e);
}

/* ---- modules ------------------------------------------------------------- */

static void test_json_and_template(void)
{
    struct env e;
    env_open(&e, &(struct opts){.provider = "offline"});
    define(&e, "jt",
           "local thalamus = require('thalamus')\n"
           "local json, tpl = thalamus.json, thalamus.template\n"
           "return { name = 'jt', role = 'tool', run = function(ctx, input)\n"
           "  local v = json.decode('{\"b\": [1, 2.5, null, []], \"a\": {\"z\": true, \"y\": "
           "null}}', { keep_order = true })\n"
           "  local bad, err = json.decode('{\"a\": }')\n"
           "  local okenc, encerr = pcall(json.encode, { 1, 2, x = 3 })\n"
           "  local okmiss, misserr = pcall(tpl.render, 'hi {{who}} {{ node.metric }}', { node = "
           "{} })\n"
           "  return {\n"
           "    again = json.encode(v), null = v.b[3] == json.null, empty = "
           "json.encode(json.array()),\n"
           "    bad = bad == nil and err:match('line 1') ~= nil, mixed = encerr:match('both list') "
           "~= nil,\n"
           "    text = tpl.render('{{a}} {{ n.x }} {b} {{t}}', { a = 'x', n = { x = 1.5 }, t = { 1 "
           "} }),\n"
           "    missing = misserr:match('no value for the placeholder {{who}}') ~= nil,\n"
           "    file = tpl.file('hello.md', { who = 'you' }),\n"
           "  }\n"
           "end }\n");
    write_file("agents/prompts/hello.md", "Hello {{who}}!");
    struct outcome o;
    run_one(&e, "jt", NULL, &o);
    CHECK_EQ_INT(o.rc, 0);
    CHECK_EQ_STR(o.output,
                 "{\"again\":\"{\\\"b\\\":[1,2.5,null,[]],\\\"a\\\":{\\\"z\\\":true,\\\"y\\\":"
                 "null}}\",\"bad\":true,\"empty\":\"[]\",\"file\":\"Hello you!\",\"missing\":true,"
                 "\"mixed\":true,\"null\":true,\"text\":\"x 1.5 {b} [1]\"}");
    outcome_free(&o);
    env_close(&e);
}

static void test_memory_module(void)
{
    struct env e;
    env_open(&e, &(struct opts){.provider = "offline", .store = true});
    define(&e, "rememberer",
           "local memory = require('thalamus').memory\n"
           "return { name = 'rememberer', role = 'tool', run = function(ctx, input)\n"
           "  local a = memory.remember{ kind = 'note', text = 'momentum helps spiral data', "
           "metadata = { k = 1 } }\n"
           "  local b = memory.remember{ kind = 'paper', title = 'Spirals', text = 'two spirals "
           "benchmark' }\n"
           "  memory.link(a, b, 'supports', 0.8)\n"
           "  memory.record{ kind = 'result', text = 'ran', payload = { metric = 0.9 } }\n"
           "  local hits = memory.recall('spiral momentum', { k = 5 })\n"
           "  local eps = memory.episodes{ kind = 'result' }\n"
           "  local bad = pcall(memory.remember, { kind = 'gossip', text = 'x' })\n"
           "  return { n = #hits, first = hits[1].kind, meta = hits[1].metadata.k, ep = "
           "eps[1].payload.metric,\n"
           "           agent = eps[1].agent, run = eps[1].run, bad = bad, avail = "
           "memory.available() }\n"
           "end }\n");
    struct outcome o;
    memset(&o, 0, sizeof o);
    outstanding = 1;
    REQUIRE(agent_start(e.rt, "rememberer", NULL, &(struct agent_call_options){"run-9", "n1"},
                        on_done, &o, NULL) == 0);
    run_loop(&e);
    CHECK_EQ_INT(o.rc, 0);
    CHECK_EQ_STR(o.output, "{\"agent\":\"rememberer\",\"avail\":true,\"bad\":false,\"ep\":0.9,"
                           "\"first\":\"note\",\"meta\":1,\"n\":2,\"run\":\"run-9\"}");
    outcome_free(&o);
    env_close(&e);
}

/* ---- the built-in agents with a model ------------------------------------ */

static const cJSON *last_request(cJSON *reqs)
{
    return cJSON_GetArrayItem(reqs, cJSON_GetArraySize(reqs) - 1);
}

static char *request_text(const cJSON *req)
{
    return cJSON_PrintUnformatted(cJSON_GetObjectItem(req, "json"));
}

static void test_builtin_agents_with_a_model(void)
{
    fake_reset(&fake);
    struct env e;
    env_open(&e, &(struct opts){.provider = "openai", .store = true});
    CHECK_EQ_STR(agent_runtime_strategy(e.rt), "llm");
    define(&e, "seed",
           "local memory = require('thalamus').memory\n"
           "return { name = 'seed', role = 'tool', run = function()\n"
           "  memory.remember{ kind = 'paper', title = 'Cyclical learning rates', text = "
           "'cyclical learning rate schedules for toy tasks' }\n"
           "  memory.record{ kind = 'analysis', text = 'x', payload = { label = 'decline', "
           "insight = 'relu with depth 8 diverged', title = 'deep relu' } }\n"
           "end }\n");
    struct outcome o;
    run_one(&e, "seed", NULL, &o);
    CHECK_EQ_INT(o.rc, 0);
    outcome_free(&o);

    /* planner */
    fake_script(&fake, "[{\"reply\": \"{\\\"ideas\\\": [{\\\"title\\\": \\\"Warm restarts\\\", "
                       "\\\"hypothesis\\\": \\\"restarts escape plateaus\\\", \\\"changes\\\": "
                       "[\\\"add a cosine schedule\\\"], \\\"rationale\\\": \\\"the paper\\\", "
                       "\\\"params\\\": {\\\"lr\\\": 0.3, \\\"depth\\\": 99}}]}\"}]");
    run_one(&e, "planner",
            "{\"k\": 1, \"node\": {\"id\": \"n1\", \"params\": {\"lr\": 0.1, "
            "\"depth\": 2, \"act\": \"tanh\"}, \"metric\": 0.7}}",
            &o);
    CHECK_EQ_INT(o.rc, 0);
    CHECK_CONTAINS(o.output, "\"title\":\"Warm restarts\"");
    CHECK_CONTAINS(o.output, "\"params\":{\"act\":\"tanh\",\"depth\":2,\"lr\":0.3}");
    cJSON *reqs = fake_requests(&fake);
    char *sent = request_text(last_request(reqs));
    CHECK_CONTAINS(sent, "Toy task for the tests");  /* TASK.md */
    CHECK_CONTAINS(sent, "<<<MEMORY");               /* delimited memory */
    CHECK_CONTAINS(sent, "Cyclical learning rates"); /* recalled */
    CHECK_CONTAINS(sent, "decline: deep relu");      /* past labels */
    CHECK_CONTAINS(sent, "FILE params.json");        /* the node's code */
    free(sent);
    cJSON_Delete(reqs);
    outcome_free(&o);

    /* critic: review and analyse */
    fake_script(&fake, "[{\"reply\": \"{\\\"scores\\\": [{\\\"feasibility\\\": 9, "
                       "\\\"novelty\\\": 0.2, \\\"expected_gain\\\": 0.1}, {\\\"feasibility\\\": "
                       "1, \\\"novelty\\\": 0.9, \\\"expected_gain\\\": 0.9}]}\"},"
                       "{\"reply\": \"{\\\"label\\\": \\\"improve\\\", \\\"insight\\\": "
                       "\\\"a higher rate helped\\\"}\"}]");
    run_one(&e, "critic",
            "{\"mode\": \"review\", \"ideas\": [{\"title\": \"a\", \"params\": "
            "{\"lr\": 0.1}}, {\"title\": \"b\", \"params\": {\"lr\": 0.5}}]}",
            &o);
    CHECK_EQ_INT(o.rc, 0);
    CHECK_CONTAINS(o.output, "\"ranking\":[2,1]");
    CHECK_CONTAINS(o.output, "\"feasibility\":0.9"); /* a 1-10 score scaled */
    outcome_free(&o);
    run_one(&e, "critic",
            "{\"mode\": \"analyse\", \"result\": {\"metric\": 0.8, \"title\": "
            "\"raise lr\"}, \"parent\": {\"metric\": 0.7}}",
            &o);
    CHECK_EQ_INT(o.rc, 0);
    CHECK_CONTAINS(o.output, "\"insight\":\"a higher rate helped\"");
    CHECK_CONTAINS(o.output, "\"label\":\"improve\"");
    reqs = fake_requests(&fake);
    sent = request_text(last_request(reqs));
    CHECK_CONTAINS(sent, "raise lr improved score from 0.7 to 0.8");
    free(sent);
    cJSON_Delete(reqs);
    outcome_free(&o);

    /* coder: its edits applied in the experiment */
    fake_script(&fake,
                "[{\"reply\": \"{\\\"edits\\\": [{\\\"path\\\": \\\"notes.txt\\\", "
                "\\\"content\\\": \\\"schedule added\\\"}], \\\"message\\\": \\\"ok\\\"}\"}]");
    run_one(&e, "coder",
            "{\"idea\": {\"title\": \"Warm restarts\"}, \"dir\": \"experiment\", "
            "\"failure\": {\"error\": \"ValueError: bad lr\"}}",
            &o);
    CHECK_EQ_INT(o.rc, 0);
    CHECK_CONTAINS(o.output, "\"applied\":[\"notes.txt\"]");
    char *notes = fs_join(wsdir, "experiment/notes.txt");
    CHECK(fs_exists(notes));
    unlink(notes);
    free(notes);
    reqs = fake_requests(&fake);
    sent = request_text(last_request(reqs));
    CHECK_CONTAINS(sent, "ValueError: bad lr");
    CHECK_CONTAINS(sent, "<<<FAILURE");
    free(sent);
    cJSON_Delete(reqs);
    outcome_free(&o);

    /* retriever: reranked, low scores dropped */
    fake_script(&fake, "[{\"reply\": \"{\\\"scores\\\": [{\\\"relevance\\\": 9, "
                       "\\\"task_match\\\": 8}]}\"}]");
    run_one(&e, "retriever", "{\"query\": \"learning rate schedules\"}", &o);
    CHECK_EQ_INT(o.rc, 0);
    CHECK_CONTAINS(o.output, "Cyclical learning rates");
    CHECK_CONTAINS(o.output, "\"score\":0.86");
    outcome_free(&o);

    /* a model that keeps failing: the agent's error says so */
    fake_script(&fake, "[{\"status\": 401, \"json\": {\"error\": {\"message\": \"bad key\"}}}]");
    run_one(&e, "planner", "{\"k\": 1}", &o);
    CHECK_EQ_INT(o.rc, TH_ERR);
    CHECK_CONTAINS(o.error, "thalamus.llm.chat_json: 401");
    outcome_free(&o);
    env_close(&e);
}

static void test_offline_gateway_and_listing(void)
{
    struct env e;
    env_open(&e, &(struct opts){.provider = "offline"});
    CHECK_EQ_STR(agent_runtime_strategy(e.rt), "offline");
    define(&e, "asker",
           "local thalamus = require('thalamus')\n"
           "return { name = 'asker', role = 'tool', run = function(ctx)\n"
           "  return { available = thalamus.llm.available(), configured = ctx.llm.configured, "
           "ok = pcall(thalamus.llm.chat, { prompt = 'x' }) }\n"
           "end }\n");
    struct outcome o;
    run_one(&e, "asker", NULL, &o);
    CHECK_EQ_STR(o.output, "{\"available\":false,\"configured\":false,\"ok\":false}");
    outcome_free(&o);
    write_file("agents/critic.lua",
               "return { name = 'critic', role = 'critic', description = 'mine', run = function() "
               "end }\n");
    write_file("agents/broken.lua", "return 42\n");
    struct agent_info *list;
    size_t n;
    REQUIRE(agent_list(e.rt, &list, &n) == 0);
    int seen = 0;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(list[i].name, "critic")) {
            CHECK_EQ_STR(list[i].source, "agents/critic.lua");
            CHECK_EQ_STR(list[i].description, "mine");
            CHECK_EQ_STR(list[i].stages, "review,analyse");
            seen++;
        }
        if (!strcmp(list[i].name, "broken")) {
            CHECK(list[i].role == NULL);
            CHECK_CONTAINS(list[i].error, "must return a table");
            seen++;
        }
        if (!strcmp(list[i].name, "planner")) {
            CHECK_EQ_STR(list[i].source, "built-in");
            CHECK_EQ_STR(list[i].strategy, "offline");
            seen++;
        }
    }
    CHECK_EQ_INT(seen, 3);
    agent_infos_free(list, n);
    char *p = fs_join(wsdir, "agents/critic.lua");
    unlink(p);
    free(p);
    p = fs_join(wsdir, "agents/broken.lua");
    unlink(p);
    free(p);
    env_close(&e);
}

static void test_sandbox_module(void)
{
    struct env e;
    env_open(&e, &(struct opts){.provider = "offline"});
    free(e.cfg->sandbox_isolation); /* the same on hosts without user namespaces */
    e.cfg->sandbox_isolation = xstrdup("none");
    define(&e, "runner",
           "local thalamus = require('thalamus')\n"
           "return { name = 'runner', role = 'tool', run = function(ctx, input)\n"
           "  local r = thalamus.sandbox.run{ argv = { '/bin/sh', '-c', 'echo hi; echo "
           "{\\\"score\\\": 3} > results.json; exit 3' }, dir = 'experiment', timeout = 30 }\n"
           "  local ok, err = pcall(thalamus.sandbox.run, { argv = { '/bin/true' }, dir = '..' })\n"
           "  return { status = r.status, code = r.exit_code, out = r.stdout.text, score = "
           "r.results and r.results.score, refused = err }\n"
           "end }\n");
    struct outcome o;
    run_one(&e, "runner", NULL, &o);
    CHECK_EQ_INT(o.rc, 0);
    if (o.rc < 0)
        CHECK_FAIL("%s", o.error);
    else
        CHECK_CONTAINS(o.output, "\"code\":3,\"out\":\"hi\\n\"");
    CHECK_CONTAINS(o.output, "\"status\":\"failed\"");
    CHECK_CONTAINS(o.output, "goes up with '..'");
    char *results = fs_join(wsdir, "experiment/results.json");
    CHECK(fs_exists(results)); /* /work mirrored back */
    unlink(results);
    free(results);
    outcome_free(&o);
    env_close(&e);
}

static void test_http_module(void)
{
    fake_reset(&fake);
    fake_script(&fake, "[{\"reply\": \"fetched\"}, {\"status\": 404, \"json\": "
                       "{\"error\": \"no such page\"}}]");
    struct env e;
    env_open(&e, &(struct opts){.provider = "offline"});
    char src[2048];
    snprintf(src, sizeof src,
             "local thalamus = require('thalamus')\n"
             "return { name = 'fetcher', role = 'tool', run = function(ctx, input)\n"
             "  local r1 = thalamus.http.request{ url = '%s/v1/chat/completions', method = "
             "'POST', body = '{\"q\": 1}',\n"
             "    headers = { ['X-Test'] = 'yes', ['Content-Type'] = 'application/json' } }\n"
             "  local r2 = thalamus.http.get('%s/missing')\n"
             "  local ok, err = pcall(thalamus.http.get, 'http://127.0.0.1:1/', { timeout = 5 })\n"
             "  local ok2, err2 = pcall(thalamus.http.get, 'http://x/', { headers = { A = "
             "'b\\r\\nC: d' } })\n"
             "  local reply = thalamus.json.decode(r1.body)\n"
             "  return { s1 = r1.status, text = reply.choices[1].message.content, ct = "
             "r1.content_type,\n"
             "    s2 = r2.status, refused = not ok and err:match('thalamus.http') ~= nil, inject "
             "= err2:match('line break') ~= nil }\n"
             "end }\n",
             fake.url, fake.url);
    define(&e, "fetcher", src);
    struct outcome o;
    run_one(&e, "fetcher", NULL, &o);
    CHECK_EQ_INT(o.rc, 0);
    if (o.rc < 0)
        CHECK_FAIL("%s", o.error);
    else
        CHECK_EQ_STR(o.output, "{\"ct\":\"application/json\",\"inject\":true,\"refused\":true,"
                               "\"s1\":200,\"s2\":404,\"text\":\"fetched\"}");
    cJSON *reqs = fake_requests(&fake);
    const cJSON *first = cJSON_GetArrayItem(reqs, 0);
    CHECK_EQ_STR(cJSON_GetObjectItem(first, "method")->valuestring, "POST");
    CHECK_EQ_STR(cJSON_GetObjectItem(first, "body")->valuestring, "{\"q\": 1}");
    CHECK_EQ_STR(cJSON_GetObjectItem(cJSON_GetObjectItem(first, "headers"), "x-test")->valuestring,
                 "yes");
    cJSON_Delete(reqs);
    outcome_free(&o);
    env_close(&e);
}

static void test_extra_agents_by_stage(void)
{
    char path[600];
    snprintf(path, sizeof path, "%s/extra.lua", wsdir);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fputs("return { agents = { extra = { review = { 'skeptic', 'pedant' }, ideate = { 'wild' } },"
          " cpu_slice = 5000 } }\n",
          f);
    fclose(f);
    struct config *cfg = NULL;
    REQUIRE(config_load_file(&cfg, path, wsdir) == 0);
    REQUIRE(cfg->agents_extra);
    CHECK_EQ_STR(cfg->agents_extra[0], "ideate:wild");
    CHECK_EQ_STR(cfg->agents_extra[1], "review:skeptic");
    CHECK_EQ_STR(cfg->agents_extra[2], "review:pedant");
    CHECK(cfg->agents_extra[3] == NULL);
    CHECK_EQ_INT(cfg->agents_cpu_slice, 5000);
    cJSON *j = config_to_json(cfg);
    char *v = cJSON_PrintUnformatted(cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "values"), "agents"), "extra"));
    CHECK_EQ_STR(v, "{\"ideate\":[\"wild\"],\"review\":[\"skeptic\",\"pedant\"]}");
    free(v);
    cJSON_Delete(j);
    config_free(cfg);

    f = fopen(path, "w");
    REQUIRE(f);
    fputs("return { agents = { extra = { reviews = { 'skeptic' } } } }\n", f);
    fclose(f);
    CHECK(config_load_file(&cfg, path, wsdir) < 0);
    CHECK_CONTAINS(error_message(), "agents.extra has the key \"reviews\"");
    CHECK_CONTAINS(error_message(), "did you mean 'review'?");
    f = fopen(path, "w");
    REQUIRE(f);
    fputs("return { agents = { extra = { review = { 'no good' } } } }\n", f);
    fclose(f);
    CHECK(config_load_file(&cfg, path, wsdir) < 0);
    CHECK_CONTAINS(error_message(), "agents.extra.review[1] must be an agent name");
    unlink(path);

    /* the runtime checks that they exist and have the stage's role */
    struct env e;
    env_open(&e, &(struct opts){.provider = "offline"});
    char *extra[] = {"review:skeptic", "ideate:skeptic", NULL};
    e.cfg->agents_extra = extra;
    define(&e, "skeptic", "return { name = 'skeptic', role = 'critic', run = function() end }");
    const char **list = NULL;
    REQUIRE(agent_stage_agents(e.rt, "review", &list) == 0);
    CHECK_EQ_STR(list[0], "critic");
    CHECK_EQ_STR(list[1], "skeptic");
    CHECK(list[2] == NULL);
    free(list);
    CHECK(agent_stage_agents(e.rt, "ideate", &list) < 0);
    CHECK_CONTAINS(error_message(), "agents.extra.ideate names 'skeptic', a critic");
    CHECK(agent_stage_agents(e.rt, "judge", &list) < 0);
    e.cfg->agents_extra = NULL;
    env_close(&e);
}

int main(void)
{
    if (!mkdtemp(wsdir))
        return 1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    signal(SIGPIPE, SIG_IGN);
    write_file("thalamus.lua", config_text);
    write_file("TASK.md", "# Toy task for the tests\n\nMaximise the score.\n");
    write_file("experiment/params.json",
               "{\n  \"lr\": 0.1,\n  \"depth\": 2,\n  \"act\": \"tanh\"\n}\n");
    if (fake_start(&fake) < 0) {
        fprintf(stderr, "cannot start the fake server\n");
        return 1;
    }
    RUN(test_thousand_agents_await_the_model);
    RUN(test_endless_loop_stopped_within_its_slice);
    RUN(test_memory_bomb_is_contained);
    RUN(test_waiting_inside_pcall);
    RUN(test_stream_calls_back_in_the_agent);
    RUN(test_call_and_parallel);
    RUN(test_sandboxed_environment);
    RUN(test_workspace_files_are_confined);
    RUN(test_wrong_outputs_name_the_field);
    RUN(test_coder_asked_again_after_a_failed_apply);
    RUN(test_json_and_template);
    RUN(test_memory_module);
    RUN(test_builtin_agents_with_a_model);
    RUN(test_offline_gateway_and_listing);
    RUN(test_extra_agents_by_stage);
    RUN(test_sandbox_module);
    RUN(test_http_module);
    fake_stop(&fake);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", wsdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", wsdir);
    curl_global_cleanup();
    return check_summary();
}
