/*
 * test_llm_util: unit tests of the LLM gateway's pure helpers: SHA-256
 * against the FIPS 180-4 vectors (in one piece and in odd-sized pieces),
 * UTF-8 validation (overlongs, surrogates, truncation, > U+10FFFF),
 * redaction of secrets, Retry-After in seconds and as an HTTP date,
 * full-jitter backoff bounds, token estimates, the one-line summary of
 * servers' error replies (OpenAI, Anthropic, Ollama, vLLM, HTML, text),
 * retryable statuses and price look-up by prefix. Depends on llm_util,
 * sha256, config and check.h.
 */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "config.h"
#include "llm_internal.h"
#include "sha256.h"

static void test_sha256_vectors(void)
{
    char hex[SHA256_HEX_SIZE];
    sha256_hex("", 0, hex);
    CHECK_EQ_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256_hex("abc", 3, hex);
    CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_hex(two, strlen(two), hex);
    CHECK_EQ_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* a million 'a', fed in pieces of 997 bytes */
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    struct sha256 h;
    unsigned char d[32];
    sha256_init(&h);
    for (size_t i = 0; i < 1000000; i += 997)
        sha256_update(&h, a + i, i + 997 > 1000000 ? 1000000 - i : 997);
    sha256_final(&h, d);
    char got[SHA256_HEX_SIZE];
    for (int i = 0; i < 32; i++)
        snprintf(got + 2 * i, 3, "%02x", d[i]);
    CHECK_EQ_STR(got, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
}

static void test_utf8(void)
{
    size_t bad = 99;
    CHECK(llm_utf8_valid("plain ascii", 11, &bad));
    CHECK(llm_utf8_valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, &bad));
    CHECK(!llm_utf8_valid("ab\xff", 3, &bad));
    CHECK_EQ_INT(bad, 2);
    CHECK(!llm_utf8_valid("\xc0\xaf", 2, &bad));         /* overlong '/' */
    CHECK(!llm_utf8_valid("\xe0\x80\xaf", 3, &bad));     /* overlong */
    CHECK(!llm_utf8_valid("\xed\xa0\x80", 3, &bad));     /* surrogate U+D800 */
    CHECK(!llm_utf8_valid("\xf4\x90\x80\x80", 4, &bad)); /* past U+10FFFF */
    CHECK(!llm_utf8_valid("x\xe2\x82", 3, &bad));        /* cut short */
    CHECK_EQ_INT(bad, 1);
    CHECK(!llm_utf8_valid("\xc3\x28", 2, &bad)); /* bad continuation */
    CHECK(llm_utf8_valid("nul\0inside", 10, &bad));
}

static void test_redact(void)
{
    const char *secrets[] = {"sk-abc123", NULL, "", "sk-abc1234567"};
    char *r = llm_redact("key sk-abc1234567 and sk-abc123, twice sk-abc123sk-abc123", secrets, 4);
    CHECK_EQ_STR(r, "key [redacted] and [redacted], twice [redacted][redacted]");
    free(r);
    r = llm_redact("nothing secret", secrets, 4);
    CHECK_EQ_STR(r, "nothing secret");
    free(r);
}

static void test_retry_after(void)
{
    CHECK_EQ_INT(llm_retry_after_ms("2", 0), 2000);
    CHECK_EQ_INT(llm_retry_after_ms(" 0.5 ", 0), 500);
    CHECK_EQ_INT(llm_retry_after_ms("0", 0), 0);
    CHECK_EQ_INT(llm_retry_after_ms("999999999", 0), 86400000); /* capped at a day */
    CHECK_EQ_INT(llm_retry_after_ms("soon", 0), -1);
    CHECK_EQ_INT(llm_retry_after_ms("-3", 0), -1);
    CHECK_EQ_INT(llm_retry_after_ms("3s", 0), -1);
    CHECK_EQ_INT(llm_retry_after_ms(NULL, 0), -1);
    /* Wed, 21 Oct 2015 07:28:00 GMT is 1445412480 */
    CHECK_EQ_INT(llm_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", 1445412477), 3000);
    CHECK_EQ_INT(llm_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", 1445412490), 0);
}

static void test_backoff(void)
{
    CHECK_EQ_INT(llm_backoff_ms(1, 0.0, 500, 30000), 0);
    CHECK_EQ_INT(llm_backoff_ms(1, 0.5, 500, 30000), 250);
    CHECK_EQ_INT(llm_backoff_ms(2, 0.5, 500, 30000), 500);
    CHECK_EQ_INT(llm_backoff_ms(3, 0.5, 500, 30000), 1000);
    CHECK_EQ_INT(llm_backoff_ms(30, 0.5, 500, 30000), 15000); /* capped */
    CHECK_EQ_INT(llm_backoff_ms(1000, 0.5, 500, 30000), 15000);
    CHECK(llm_backoff_ms(4, 1.0, 500, 30000) < 4000); /* unit is below 1 */
    for (int retry = 1; retry < 12; retry++)
        for (double u = 0; u < 1; u += 0.125)
            CHECK(llm_backoff_ms(retry, u, 500, 30000) <= 30000);
}

static void test_estimate(void)
{
    CHECK_EQ_INT(llm_estimate_tokens(0), 0);
    CHECK_EQ_INT(llm_estimate_tokens(1), 1);
    CHECK_EQ_INT(llm_estimate_tokens(3), 1);
    CHECK_EQ_INT(llm_estimate_tokens(4), 2);
    CHECK_EQ_INT(llm_estimate_tokens(3000), 1000);
}

static void check_message(const char *body, const char *want, const char *want_type)
{
    char *type = NULL;
    char *m = llm_server_message(body, strlen(body), &type);
    CHECK_EQ_STR(m, want);
    if (want_type)
        CHECK_EQ_STR(type, want_type);
    else
        CHECK(type == NULL);
    free(m);
    free(type);
}

static void test_server_message(void)
{
    check_message("{\"error\": {\"message\": \"Invalid key\", \"type\": \"invalid_request_error\","
                  " \"code\": \"invalid_api_key\"}}",
                  "Invalid key", "invalid_api_key");
    check_message("{\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", "
                  "\"message\": \"Overloaded\"}}",
                  "Overloaded", "overloaded_error");
    check_message("{\"error\": \"model 'x' not found\"}", "model 'x' not found", NULL);
    check_message("{\"object\": \"error\", \"message\": \"too long\", \"type\": "
                  "\"BadRequestError\"}",
                  "too long", "BadRequestError");
    check_message("<html><head><TITLE>503 Service Unavailable</TITLE></head></html>",
                  "503 Service Unavailable", NULL);
    check_message("  upstream\n\tconnect error  ", "upstream connect error", NULL);
    char *type;
    char big[1000];
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char *m = llm_server_message(big, strlen(big), &type);
    CHECK(strlen(m) <= 203);
    CHECK_CONTAINS(m, "...");
    free(m);
    m = llm_server_message("bad \xff bytes", 11, &type);
    CHECK_EQ_STR(m, "bad ? bytes");
    free(m);
}

static void test_statuses(void)
{
    long yes[] = {408, 409, 429, 500, 502, 503, 504, 529};
    long no[] = {200, 400, 401, 403, 404, 413, 422, 501};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        CHECK(llm_status_retryable(yes[i]));
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        CHECK(!llm_status_retryable(no[i]));
}

static void test_prices(void)
{
    struct config_price prices[] = {
        {"gpt-4o", 2.5, 10}, {"gpt-4o-mini", 0.15, 0.6}, {"claude", 3, 15}};
    struct config cfg = {0};
    cfg.llm_prices = prices;
    cfg.llm_prices_len = 3;
    CHECK(llm_price_for(&cfg, "gpt-4o-mini") == &prices[1]);
    CHECK(llm_price_for(&cfg, "gpt-4o-mini-2024-07-18") == &prices[1]);
    CHECK(llm_price_for(&cfg, "gpt-4o-2024-08-06") == &prices[0]);
    CHECK(llm_price_for(&cfg, "gpt-3.5") == NULL);
    CHECK(llm_price_for(&cfg, NULL) == NULL);
}

int main(void)
{
    RUN(test_sha256_vectors);
    RUN(test_utf8);
    RUN(test_redact);
    RUN(test_retry_after);
    RUN(test_backoff);
    RUN(test_estimate);
    RUN(test_server_message);
    RUN(test_statuses);
    RUN(test_prices);
    return check_summary();
}
