/*
 * test_llm_json: unit tests of structured replies (llm_json.c) with the
 * kinds of malformed replies models give: bare objects, objects in prose,
 * fenced blocks (with and without a language, unclosed), braces and escaped
 * quotes inside strings, several objects (the first valid one wins, and the
 * inside of an invalid object is not searched), arrays and scalars instead
 * of objects, truncated JSON, trailing commas, single quotes, empty and
 * huge hostile inputs (bounded work), and schemas: checking, required and
 * optional keys, union types, integer versus number, and the messages and
 * instruction a model reads. Depends on llm (llm_json.c), error, cJSON and
 * check.h.
 */
#include <stdlib.h>
#include <time.h>

#include "check.h"
#include "error.h"
#include "llm.h"

static cJSON *schema;

/* Extracts from text and returns the object printed compactly, or NULL. */
static char *extract(const char *text)
{
    cJSON *obj = NULL;
    if (llm_json_extract(text, schema, &obj) < 0)
        return NULL;
    char *s = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    return s;
}

static void expect_object(const char *text, const char *want)
{
    char *got = extract(text);
    if (!got || strcmp(got, want))
        CHECK_FAIL("extract(%s): got %s, want %s (%s)", text, got ? got : "(error)", want,
                   got ? "" : error_message());
    free(got);
}

static void expect_error(const char *text, const char *message)
{
    char *got = extract(text);
    if (got)
        CHECK_FAIL("extract(%s): got %s, want an error", text, got);
    else
        CHECK_CONTAINS(error_message(), message);
    free(got);
}

static void use_schema(const char *json)
{
    cJSON_Delete(schema);
    schema = json ? cJSON_Parse(json) : NULL;
    if (json)
        REQUIRE(schema && llm_schema_check(schema) == 0);
}

static void test_plain_and_prose(void)
{
    use_schema(NULL);
    expect_object("{\"a\": 1}", "{\"a\":1}");
    expect_object("  \n{\"a\": 1}\n ", "{\"a\":1}");
    expect_object("Sure! Here is the object: {\"a\": 1}. Anything else?", "{\"a\":1}");
    expect_object("{\"outer\": {\"inner\": [1, {\"x\": null}]}} trailing",
                  "{\"outer\":{\"inner\":[1,{\"x\":null}]}}");
    expect_object("{}", "{}");
}

static void test_fences(void)
{
    use_schema(NULL);
    expect_object("Here:\n```json\n{\"a\": \"b\"}\n```\nDone.", "{\"a\":\"b\"}");
    expect_object("```\n{\"a\": 2}\n```", "{\"a\":2}");
    expect_object("```JSON\n{\"a\": 3}", "{\"a\":3}"); /* unclosed fence */
    expect_object("```python\nprint('{')\n```\n```json\n{\"b\": 1}\n```", "{\"b\":1}");
}

static void test_strings_with_braces_and_escapes(void)
{
    use_schema(NULL);
    expect_object("note {\"t\": \"a } brace\"} end", "{\"t\":\"a } brace\"}");
    expect_object("x {\"t\": \"quote \\\" and { brace\"} y", "{\"t\":\"quote \\\" and { brace\"}");
    expect_object("{\"t\": \"backslash at end \\\\\"} tail", "{\"t\":\"backslash at end \\\\\"}");
    expect_object("{\"t\": \"unicode \\u00e9\"}", "{\"t\":\"unicode é\"}");
}

static void test_first_valid_wins(void)
{
    use_schema("{\"score\": \"number\"}");
    expect_object("Example: {\"name\": \"x\"}. Answer: {\"score\": 3}", "{\"score\":3}");
    expect_object("{\"score\": 1} and {\"score\": 2}", "{\"score\":1}");
    /* an invalid outer object is one unit: its inside is not searched */
    expect_error("{\"wrapper\": {\"score\": 5}}", "the key \"score\" is missing");
    use_schema(NULL);
    expect_object("first {\"a\": 1} second {\"b\": 2}", "{\"a\":1}");
}

static void test_not_objects(void)
{
    use_schema(NULL);
    expect_error("", "holds no JSON object");
    expect_error("no json here", "holds no JSON object");
    expect_error("[1, 2, 3]", "holds no JSON object");
    expect_error("\"just a string\"", "holds no JSON object");
    expect_error("42", "holds no JSON object");
    expect_error("{\"a\": 1", "holds no JSON object");   /* truncated */
    expect_error("{\"a\": 1,}", "holds no JSON object"); /* trailing comma */
    expect_error("{'a': 1}", "holds no JSON object");    /* single quotes */
    expect_error("{\"a\": \"unterminated}", "holds no JSON object");
    expect_error("}}}{{{", "holds no JSON object");
    expect_object("[{\"a\": 1}]", "{\"a\":1}"); /* an object inside an array is found */
}

static void test_hostile_input_is_bounded(void)
{
    use_schema(NULL);
    size_t n = 4 << 20;
    char *text = malloc(n + 1);
    memset(text, '{', n);
    text[n] = '\0';
    clock_t start = clock();
    expect_error(text, "holds no JSON object");
    memset(text, ' ', n);
    for (size_t i = 0; i < n; i += 2)
        text[i] = '{';
    strcpy(text + n - 20, "{\"found\": true}");
    char *got = extract(text);
    free(got); /* found or not, it must end promptly */
    double secs = (double)(clock() - start) / CLOCKS_PER_SEC;
    CHECK(secs < 60); /* bounded (generous for sanitizer builds) */
    free(text);
}

static void test_schema_check(void)
{
    cJSON *s = cJSON_Parse("{\"a\": \"string\", \"b\": \"number|null\", \"c\": \"array?\", "
                           "\"d\": \"any\", \"e\": \"integer\", \"f\": \"boolean?\", "
                           "\"g\": \"object\"}");
    CHECK_EQ_INT(llm_schema_check(s), 0);
    cJSON_Delete(s);
    const char *bad[] = {
        "[]",    "{\"a\": 1}", "{\"a\": \"strnig\"}", "{\"a\": \"string||\"}", "{\"a\": \"\"}",
        "\"x\"", NULL};
    for (const char **b = bad; *b; b++) {
        s = cJSON_Parse(*b);
        CHECK_EQ_INT(llm_schema_check(s), TH_EUSAGE);
        cJSON_Delete(s);
    }
    s = cJSON_Parse("{\"score\": \"nmber\"}");
    llm_schema_check(s);
    CHECK_CONTAINS(error_message(), "\"score\" has the unknown type \"nmber\"");
    cJSON_Delete(s);
}

static void check_validate(const char *obj_json, const char *message)
{
    cJSON *obj = cJSON_Parse(obj_json);
    int rc = llm_json_validate(obj, schema);
    if (message) {
        CHECK(rc < 0);
        CHECK_EQ_STR(error_message(), message);
    } else if (rc < 0) {
        CHECK_FAIL("%s: %s", obj_json, error_message());
    }
    cJSON_Delete(obj);
}

static void test_validate_messages(void)
{
    use_schema("{\"title\": \"string\", \"score\": \"number\", \"n\": \"integer?\", "
               "\"tags\": \"array?\", \"why\": \"string|null\"}");
    check_validate("{\"title\": \"t\", \"score\": 1.5, \"why\": null}", NULL);
    check_validate("{\"title\": \"t\", \"score\": 2, \"n\": 3, \"tags\": [], \"why\": \"w\", "
                   "\"extra\": true}",
                   NULL);
    check_validate("{\"score\": 1, \"why\": null}", "the key \"title\" is missing");
    check_validate("{\"title\": 5, \"score\": 1, \"why\": null}",
                   "\"title\" must be a string, not an integer");
    check_validate("{\"title\": \"t\", \"score\": \"high\", \"why\": null}",
                   "\"score\" must be a number, not a string");
    check_validate("{\"title\": \"t\", \"score\": 1, \"n\": 2.5, \"why\": null}",
                   "\"n\" must be an integer, not a number");
    check_validate("{\"title\": \"t\", \"score\": 1, \"why\": 3}",
                   "\"why\" must be a string or null, not an integer");
    check_validate("{\"title\": \"t\", \"score\": 1, \"tags\": {}, \"why\": null}",
                   "\"tags\" must be an array, not an object");
    check_validate("[]", "the reply must be a JSON object, not an array");
}

static void test_instruction(void)
{
    use_schema("{\"title\": \"string\", \"tags\": \"array?\"}");
    char *s = llm_json_instruction(schema);
    CHECK_CONTAINS(s, "only one JSON object");
    CHECK_CONTAINS(s, "\"title\" (string), \"tags\" (array, optional)");
    free(s);
    s = llm_json_instruction(NULL);
    CHECK_CONTAINS(s, "JSON object");
    free(s);
}

int main(void)
{
    RUN(test_plain_and_prose);
    RUN(test_fences);
    RUN(test_strings_with_braces_and_escapes);
    RUN(test_first_valid_wins);
    RUN(test_not_objects);
    RUN(test_hostile_input_is_bounded);
    RUN(test_schema_check);
    RUN(test_validate_messages);
    RUN(test_instruction);
    cJSON_Delete(schema);
    return check_summary();
}
