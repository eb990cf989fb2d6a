/* Tests of config: defaults, thalamus.lua values, the restricted Lua state,
 * error messages that name the key, environment overrides and masking. */
#include "check.h"
#include "config.h"
#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char dir[] = "/tmp/thalamus-test-config-XXXXXX";

static void clear_env(void)
{
    const char *vars[] = {"THALAMUS_PROVIDER",
                          "THALAMUS_MODEL",
                          "OPENAI_BASE_URL",
                          "ANTHROPIC_BASE_URL",
                          "OPENAI_API_KEY",
                          "ANTHROPIC_API_KEY",
                          NULL};
    for (const char **v = vars; *v; v++)
        unsetenv(*v);
}

/* Writes text as dir/thalamus.lua and loads it. */
static int load(const char *text, struct config **out)
{
    char path[256];
    snprintf(path, sizeof path, "%s/thalamus.lua", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -100;
    fputs(text, f);
    fclose(f);
    *out = NULL;
    return config_load(out, dir);
}

static void expect_error(const char *text, const char *message)
{
    struct config *cfg;
    int rc = load(text, &cfg);
    CHECK(rc < 0);
    CHECK_EQ_STR(error_message(), message);
    config_free(cfg);
}

static void test_defaults_outside_workspace(void)
{
    clear_env();
    struct config *cfg;
    REQUIRE(config_load(&cfg, NULL) == 0);
    CHECK_EQ_STR(cfg->llm_provider, "offline");
    CHECK_EQ_STR(cfg->llm_base_url, "https://api.openai.com/v1");
    CHECK_EQ_STR(cfg->task_goal, "maximize");
    CHECK_EQ_INT(cfg->loop_jobs, 2);
    CHECK(cfg->file == NULL);
    config_free(cfg);
}

static void test_full_file(void)
{
    clear_env();
    struct config *cfg;
    int rc =
        load("local lr = { min = 0.001, max = 1, scale = 'log' }\n"
             "return {\n"
             "  task = { name = 'demo', command = { 'python3', 'train.py' },\n"
             "           metric = 'accuracy', goal = 'minimize',\n"
             "           search_space = { lr = lr, units = { min = 1, max = 64, integer = true },\n"
             "                            act = { choices = { 'relu', 'tanh', 3, true } } } },\n"
             "  sandbox = { timeout = 30, memory_mb = 256 },\n"
             "  loop = { rounds = 2, ideas = 4, jobs = 1.0 },\n"
             "  llm = { model = 'm1' },\n"
             "}\n",
             &cfg);
    REQUIRE(rc == 0);
    CHECK_EQ_STR(cfg->task_name, "demo");
    CHECK_EQ_STR(cfg->task_command[0], "python3");
    CHECK_EQ_STR(cfg->task_command[1], "train.py");
    CHECK(cfg->task_command[2] == NULL);
    CHECK_EQ_STR(cfg->task_goal, "minimize");
    CHECK_EQ_INT(cfg->sandbox_timeout, 30);
    CHECK_EQ_INT(cfg->loop_jobs, 1);
    REQUIRE(cfg->search_space_len == 3);
    /* sorted by name */
    CHECK_EQ_STR(cfg->search_space[0].name, "act");
    CHECK_EQ_INT(cJSON_GetArraySize(cfg->search_space[0].choices), 4);
    CHECK_EQ_STR(cfg->search_space[1].name, "lr");
    CHECK(cfg->search_space[1].log_scale);
    CHECK(cfg->search_space[2].integer);
    CHECK_EQ_INT(cfg->search_space[2].max, 64);

    cJSON *j = config_to_json(cfg);
    cJSON *src = cJSON_GetObjectItem(j, "sources");
    CHECK_EQ_STR(cJSON_GetObjectItem(src, "loop.jobs")->valuestring, "thalamus.lua");
    CHECK_EQ_STR(cJSON_GetObjectItem(src, "loop.rounds")->valuestring, "thalamus.lua");
    CHECK_EQ_STR(cJSON_GetObjectItem(src, "llm.max_concurrency")->valuestring, "default");
    cJSON *values = cJSON_GetObjectItem(j, "values");
    CHECK_EQ_STR(cJSON_GetObjectItem(cJSON_GetObjectItem(values, "llm"), "model")->valuestring,
                 "m1");
    cJSON_Delete(j);
    config_free(cfg);
}

static void test_string_command_uses_shell(void)
{
    clear_env();
    struct config *cfg;
    REQUIRE(load("return { task = { command = 'python3 train.py --fast' } }", &cfg) == 0);
    CHECK_EQ_STR(cfg->task_command[0], "/bin/sh");
    CHECK_EQ_STR(cfg->task_command[1], "-c");
    CHECK_EQ_STR(cfg->task_command[2], "python3 train.py --fast");
    config_free(cfg);
}

static void test_errors_name_the_key(void)
{
    clear_env();
    expect_error("return { loop = { jobs = 'two' } }",
                 "thalamus.lua: loop.jobs must be a positive integer, got \"two\"");
    expect_error("return { loop = { jobs = 0 } }",
                 "thalamus.lua: loop.jobs must be a positive integer, got 0");
    expect_error("return { loop = { jobs = 1.5 } }",
                 "thalamus.lua: loop.jobs must be a positive integer, got 1.5");
    expect_error("return { loop = { job = 2 } }",
                 "thalamus.lua: unknown key 'loop.job'; did you mean 'loop.jobs'?");
    expect_error("return { loops = {} }",
                 "thalamus.lua: unknown key 'loops'; did you mean 'loop'?");
    expect_error("return { zzz = {} }",
                 "thalamus.lua: unknown key 'zzz' (known: task, sandbox, loop, llm, memory, "
                 "literature, agents, think)");
    expect_error(
        "return { task = { goal = 'max' } }",
        "thalamus.lua: task.goal must be one of \"maximize\" or \"minimize\", got \"max\"");
    expect_error("return { task = { command = { 'python3', 7 } } }",
                 "thalamus.lua: task.command[2] must be a string, got 7");
    expect_error("return { task = { search_space = { lr = { min = 1, max = 0.5 } } } }",
                 "thalamus.lua: task.search_space.lr.min (1) must be less than "
                 "task.search_space.lr.max (0.5)");
    expect_error(
        "return { task = { search_space = { lr = { min = 0, max = 1, scale = 'log' } } } }",
        "thalamus.lua: task.search_space.lr has a log scale, so its min must be above 0, "
        "got 0");
    expect_error("return { task = { search_space = { lr = { mni = 0, max = 1 } } } }",
                 "thalamus.lua: unknown field \"mni\" in task.search_space.lr (did you mean "
                 "'min'?); expected min, max, scale, integer or choices");
    expect_error("return { task = { search_space = { f = { choices = {} } } } }",
                 "thalamus.lua: task.search_space.f.choices must be a non-empty list of strings, "
                 "numbers or booleans, got a table");
    expect_error("return { llm = { provider = 'gpt' } }",
                 "thalamus.lua: llm.provider must be one of \"offline\", \"openai\" or "
                 "\"anthropic\", got \"gpt\"");
    expect_error("return 42", "thalamus.lua must return a table, got 42; end the file with "
                              "'return { ... }'");
}

static void test_syntax_and_runtime_errors(void)
{
    clear_env();
    expect_error("return {\n  loop = { jobs = 2 \n}\n x",
                 "thalamus.lua:4: '}' expected (to close '{' at line 1) near 'x'");
    expect_error("local t = nil\nreturn t.x", "thalamus.lua:2: attempt to index a nil value "
                                              "(local 't')");
}

static void test_restricted_state(void)
{
    clear_env();
    expect_error("return { task = { name = io.read() } }",
                 "thalamus.lua:1: attempt to index a nil value (global 'io')");
    expect_error("os.execute('touch /tmp/x')\nreturn {}",
                 "thalamus.lua:1: attempt to index a nil value (global 'os')");
    expect_error("require('socket')\nreturn {}",
                 "thalamus.lua:1: attempt to call a nil value (global 'require')");
    expect_error("dofile('/etc/passwd')\nreturn {}",
                 "thalamus.lua:1: attempt to call a nil value (global 'dofile')");
    expect_error("load('return 1')\nreturn {}",
                 "thalamus.lua:1: attempt to call a nil value (global 'load')");
    struct config *cfg;
    CHECK(load("while true do end", &cfg) < 0);
    CHECK_CONTAINS(error_message(), "did not finish");
    CHECK(load("local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 100) .. i end return {}",
               &cfg) < 0);
    CHECK_CONTAINS(error_message(), "MiB of memory");
    /* the standard helpers configs use are there */
    REQUIRE(load("return { task = { name = string.format('%s-%d', 'x', math.floor(2.5)) } }",
                 &cfg) == 0);
    CHECK_EQ_STR(cfg->task_name, "x-2");
    config_free(cfg);
}

static void test_environment_overrides(void)
{
    clear_env();
    struct config *cfg;
    setenv("OPENAI_API_KEY", "sk-secret-value-123", 1);
    REQUIRE(load("return { llm = { model = 'file-model' } }", &cfg) == 0);
    CHECK_EQ_STR(cfg->llm_provider, "openai");
    CHECK_EQ_STR(cfg->llm_api_key_env, "OPENAI_API_KEY");
    cJSON *j = config_to_json(cfg);
    char *text = cJSON_Print(j);
    CHECK(strstr(text, "sk-secret") == NULL);
    CHECK_CONTAINS(text, "\"api_key\":\t\"(set)\"");
    free(text);
    cJSON_Delete(j);
    char *printed = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&printed, &len);
    config_print(cfg, mem);
    fclose(mem);
    CHECK(strstr(printed, "sk-secret") == NULL);
    CHECK_CONTAINS(printed, "OPENAI_API_KEY is set");
    free(printed);
    config_free(cfg);

    setenv("THALAMUS_PROVIDER", "anthropic", 1);
    setenv("THALAMUS_MODEL", "env-model", 1);
    setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/", 1);
    REQUIRE(load("return { llm = { model = 'file-model', provider = 'openai' } }", &cfg) == 0);
    CHECK_EQ_STR(cfg->llm_provider, "anthropic");
    CHECK_EQ_STR(cfg->llm_model, "env-model");
    CHECK_EQ_STR(cfg->llm_base_url, "http://127.0.0.1:9/");
    CHECK_EQ_STR(cfg->llm_api_key_env, "ANTHROPIC_API_KEY");
    j = config_to_json(cfg);
    CHECK_EQ_STR(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "sources"), "llm.model")->valuestring,
                 "environment THALAMUS_MODEL");
    cJSON_Delete(j);
    config_free(cfg);

    setenv("THALAMUS_PROVIDER", "bogus", 1);
    CHECK(load("return {}", &cfg) < 0);
    CHECK_EQ_STR(error_message(), "THALAMUS_PROVIDER: llm.provider must be one of \"offline\", "
                                  "\"openai\" or \"anthropic\", got \"bogus\"");
    clear_env();
}

static void test_missing_file(void)
{
    clear_env();
    char empty[] = "/tmp/thalamus-test-config-empty-XXXXXX";
    REQUIRE(mkdtemp(empty));
    struct config *cfg = NULL;
    CHECK(config_load(&cfg, empty) < 0);
    CHECK_CONTAINS(error_message(), "has no thalamus.lua");
    rmdir(empty);
}

static void test_docs_list_every_key(void)
{
    clear_env();
    FILE *f = fopen(THALAMUS_SOURCE_DIR "/docs/config.md", "r");
    REQUIRE(f);
    static char docs[65536];
    size_t n = fread(docs, 1, sizeof docs - 1, f);
    fclose(f);
    docs[n] = '\0';
    struct config *cfg;
    REQUIRE(config_load(&cfg, NULL) == 0);
    cJSON *j = config_to_json(cfg);
    cJSON *key;
    int count = 0;
    cJSON_ArrayForEach(key, cJSON_GetObjectItem(j, "sources"))
    {
        char row[128];
        snprintf(row, sizeof row, "| `%s` |", key->string);
        CHECK_CONTAINS(docs, row);
        count++;
    }
    CHECK(count >= 16);
    cJSON_Delete(j);
    config_free(cfg);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    RUN(test_defaults_outside_workspace);
    RUN(test_full_file);
    RUN(test_string_command_uses_shell);
    RUN(test_errors_name_the_key);
    RUN(test_syntax_and_runtime_errors);
    RUN(test_restricted_state);
    RUN(test_environment_overrides);
    RUN(test_missing_file);
    RUN(test_docs_list_every_key);
    char path[300];
    snprintf(path, sizeof path, "%s/thalamus.lua", dir);
    unlink(path);
    rmdir(dir);
    return check_summary();
}
