/*
 * test_config_llm: the configuration keys of the LLM gateway (llm.timeout
 * ... llm.budget): their defaults, reading them from thalamus.lua, the
 * errors that name a wrong key, type or field, and their JSON form (an
 * unset temperature is null). Depends on config, error, cJSON and check.h.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "config.h"
#include "error.h"

static char dir[] = "/tmp/thalamus-test-config-llm-XXXXXX";

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
    CHECK(load(text, &cfg) < 0);
    CHECK_EQ_STR(error_message(), message);
    config_free(cfg);
}

static void test_defaults(void)
{
    struct config *cfg;
    REQUIRE(config_load(&cfg, NULL) == 0);
    CHECK(cfg->llm_timeout == 600);
    CHECK(cfg->llm_connect_timeout == 10);
    CHECK(cfg->llm_idle_timeout == 60);
    CHECK_EQ_INT(cfg->llm_max_retries, 4);
    CHECK(cfg->llm_retry_max_seconds == 120);
    CHECK_EQ_INT(cfg->llm_max_response_bytes, 8 << 20);
    CHECK(isnan(cfg->llm_temperature));
    CHECK_EQ_INT(cfg->llm_max_tokens, 4096);
    CHECK_EQ_INT(cfg->llm_json_repairs, 2);
    CHECK_EQ_STR(cfg->llm_cache, "off");
    CHECK_EQ_STR(cfg->llm_anthropic_version, "2023-06-01");
    CHECK_EQ_INT(cfg->llm_prices_len, 0);
    CHECK_EQ_INT(cfg->llm_budget.run.tokens, 0);
    CHECK(cfg->llm_budget.run.cost < 0);
    CHECK_EQ_INT(cfg->llm_budget.sites_len, 0);
    cJSON *j = config_to_json(cfg);
    cJSON *llm = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "values"), "llm");
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(llm, "temperature")));
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(llm, "prices")), 0);
    cJSON_Delete(j);
    config_free(cfg);
}

static void test_values_from_file(void)
{
    struct config *cfg;
    REQUIRE(load("return { llm = { timeout = 30, connect_timeout = 0.5, idle_timeout = 2.5,\n"
                 "  max_retries = 0, retry_max_seconds = 9, max_response_bytes = 1000,\n"
                 "  temperature = 0, max_tokens = 64, json_repairs = 0, cache = 'replay',\n"
                 "  anthropic_version = '2024-10-22',\n"
                 "  prices = { ['b-model'] = { input = 1, output = 2 },\n"
                 "             ['a-model'] = { input = 0.15, output = 0.6 } },\n"
                 "  budget = { tokens = 1000, cost = 0, sites = { planner = { tokens = 10 },\n"
                 "             critic = { cost = 0.5 } } } } }\n",
                 &cfg) == 0);
    CHECK(cfg->llm_timeout == 30);
    CHECK(cfg->llm_connect_timeout == 0.5);
    CHECK(cfg->llm_idle_timeout == 2.5);
    CHECK_EQ_INT(cfg->llm_max_retries, 0);
    CHECK(cfg->llm_temperature == 0);
    CHECK_EQ_INT(cfg->llm_json_repairs, 0);
    CHECK_EQ_STR(cfg->llm_cache, "replay");
    CHECK_EQ_STR(cfg->llm_anthropic_version, "2024-10-22");
    REQUIRE(cfg->llm_prices_len == 2);
    CHECK_EQ_STR(cfg->llm_prices[0].model, "a-model"); /* sorted */
    CHECK(cfg->llm_prices[0].input == 0.15 && cfg->llm_prices[0].output == 0.6);
    CHECK_EQ_INT(cfg->llm_budget.run.tokens, 1000);
    CHECK(cfg->llm_budget.run.cost == 0); /* a zero budget is a budget */
    REQUIRE(cfg->llm_budget.sites_len == 2);
    for (size_t i = 0; i < 2; i++) {
        const struct config_site_budget *s = &cfg->llm_budget.sites[i];
        if (!strcmp(s->site, "planner"))
            CHECK(s->limit.tokens == 10 && s->limit.cost < 0);
        else
            CHECK(!strcmp(s->site, "critic") && s->limit.tokens == 0 && s->limit.cost == 0.5);
    }
    cJSON *j = config_to_json(cfg);
    char *text = cJSON_PrintUnformatted(cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "values"), "llm"), "budget"));
    CHECK_CONTAINS(text, "\"tokens\":1000");
    CHECK_CONTAINS(text, "\"planner\":{\"tokens\":10}");
    free(text);
    CHECK_EQ_STR(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "sources"), "llm.prices")->valuestring,
                 "thalamus.lua");
    cJSON_Delete(j);
    config_free(cfg);
}

static void test_errors(void)
{
    expect_error("return { llm = { timeout = 0 } }",
                 "thalamus.lua: llm.timeout must be a positive number of seconds, got 0");
    expect_error(
        "return { llm = { idle_timeout = 'soon' } }",
        "thalamus.lua: llm.idle_timeout must be a positive number of seconds, got \"soon\"");
    expect_error("return { llm = { max_retries = 1.5 } }",
                 "thalamus.lua: llm.max_retries must be a non-negative integer, got 1.5");
    expect_error("return { llm = { temperature = 2.5 } }",
                 "thalamus.lua: llm.temperature must be a number from 0 to 2, got 2.5");
    expect_error("return { llm = { cache = 'on' } }",
                 "thalamus.lua: llm.cache must be one of \"off\", \"read-write\" or \"replay\", "
                 "got \"on\"");
    expect_error("return { llm = { prices = { m = { input = 1 } } } }",
                 "thalamus.lua: llm.prices[\"m\"] needs both input and output (money per million "
                 "tokens)");
    expect_error("return { llm = { prices = { m = { input = -1, output = 1 } } } }",
                 "thalamus.lua: llm.prices[\"m\"].input must be a non-negative number, got -1");
    expect_error("return { llm = { prices = { m = { input = 1, output = 1, cached = 2 } } } }",
                 "thalamus.lua: llm.prices[\"m\"] has the unknown field \"cached\"");
    expect_error("return { llm = { prices = 'cheap' } }",
                 "thalamus.lua: llm.prices must be a table of prices by model, such as { "
                 "[\"gpt-4o-mini\"] = { input = 0.15, output = 0.6 } }, got \"cheap\"");
    expect_error(
        "return { llm = { budget = { tokns = 5 } } }",
        "thalamus.lua: llm.budget has the unknown field \"tokns\"; did you mean 'tokens'?");
    expect_error("return { llm = { budget = { tokens = -5 } } }",
                 "thalamus.lua: llm.budget.tokens must be a non-negative integer, got -5");
    expect_error("return { llm = { budget = { sites = { planner = 5 } } } }",
                 "thalamus.lua: llm.budget.sites.planner must be a table { tokens = N, cost = X "
                 "}, got 5");
    expect_error("return { llm = { budget = { sites = { planner = { sites = {} } } } } }",
                 "thalamus.lua: llm.budget.sites.planner has the unknown field \"sites\"");
    expect_error("return { llm = { max_tokns = 5 } }",
                 "thalamus.lua: unknown key 'llm.max_tokns'; did you mean 'llm.max_tokens'?");
}

int main(void)
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
    if (!mkdtemp(dir))
        return 1;
    RUN(test_defaults);
    RUN(test_values_from_file);
    RUN(test_errors);
    char path[300];
    snprintf(path, sizeof path, "%s/thalamus.lua", dir);
    unlink(path);
    rmdir(dir);
    return check_summary();
}
