/*
 * llm_util: small pure helpers of the LLM gateway (see llm_internal.h):
 * UTF-8 validation, redaction of secrets, Retry-After and backoff
 * arithmetic, token estimates, the one-line summary of a server's error
 * reply, and price look-up. Depends on buf, alloc, config, cJSON and
 * libcurl (curl_getdate for HTTP dates).
 */
#include "llm_internal.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"

bool llm_utf8_valid(const char *str, size_t len, size_t *bad)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07;
        } else {
            goto invalid;
        }
        if (n > len - i - 1)
            goto invalid;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                goto invalid;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            goto invalid;
        i += n + 1;
    }
    return true;
invalid:
    if (bad)
        *bad = i;
    return false;
}

char *llm_redact(const char *text, const char *const *secrets, size_t n)
{
    struct buf b;
    buf_init(&b, 0);
    const char *p = text;
    while (*p) {
        size_t best = 0;
        for (size_t i = 0; i < n; i++) {
            size_t len = secrets[i] ? strlen(secrets[i]) : 0;
            if (len && len > best && !strncmp(p, secrets[i], len))
                best = len;
        }
        if (best) {
            buf_puts(&b, "[redacted]");
            p += best;
        } else {
            buf_putc(&b, *p++);
        }
    }
    return buf_detach(&b, NULL);
}

long llm_retry_after_ms(const char *value, time_t now)
{
    if (!value)
        return -1;
    while (*value == ' ')
        value++;
    if (isdigit((unsigned char)*value)) {
        char *end;
        double s = strtod(value, &end);
        while (*end == ' ')
            end++;
        if (*end || s < 0)
            return -1;
        if (s > 86400)
            s = 86400;
        return (long)(s * 1000);
    }
    time_t t = curl_getdate(value, NULL);
    if (t == (time_t)-1)
        return -1;
    return t <= now ? 0 : (long)(t - now) * 1000;
}

uint64_t llm_backoff_ms(int retry, double unit, uint64_t base_ms, uint64_t cap_ms)
{
    uint64_t ceiling = base_ms;
    for (int i = 1; i < retry && ceiling < cap_ms; i++)
        ceiling *= 2;
    if (ceiling > cap_ms)
        ceiling = cap_ms;
    if (unit < 0)
        unit = 0;
    if (unit >= 1)
        unit = 0.999999;
    return (uint64_t)(unit * (double)ceiling);
}

long llm_estimate_tokens(size_t bytes)
{
    return (long)((bytes + 2) / 3);
}

bool llm_status_retryable(long status)
{
    switch (status) {
    case 408:
    case 409:
    case 429:
    case 500:
    case 502:
    case 503:
    case 504:
    case 529:
        return true;
    default:
        return false;
    }
}

/* Collapses whitespace and control characters, and cuts to max bytes
 * (at a UTF-8 boundary), adding "..." when cut. */
static char *one_line(const char *s, size_t len, size_t max)
{
    struct buf b;
    buf_init(&b, 0);
    bool space = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || c == ' ') {
            space = b.len > 0;
            continue;
        }
        if (space) {
            buf_putc(&b, ' ');
            space = false;
        }
        if (b.len >= max) {
            while (b.len && ((unsigned char)b.data[b.len - 1] & 0xC0) == 0x80)
                b.len--;
            if (b.len && (unsigned char)b.data[b.len - 1] >= 0xC0)
                b.len--;
            b.data[b.len] = '\0';
            buf_puts(&b, "...");
            break;
        }
        buf_putc(&b, (char)c);
    }
    char *out = buf_detach(&b, NULL);
    size_t bad;
    if (!llm_utf8_valid(out, strlen(out), &bad)) {
        /* never pass invalid bytes on into messages */
        for (unsigned char *p = (unsigned char *)out; *p; p++)
            if (*p >= 0x80)
                *p = '?';
    }
    return out;
}

static const char *find_ci(const char *hay, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (!strncasecmp(hay + i, needle, n))
            return hay + i;
    return NULL;
}

char *llm_server_message(const char *body, size_t len, char **type)
{
    *type = NULL;
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (root) {
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
        const cJSON *msg = NULL, *kind = NULL;
        if (cJSON_IsObject(err)) {
            msg = cJSON_GetObjectItemCaseSensitive(err, "message");
            kind = cJSON_GetObjectItemCaseSensitive(err, "code");
            if (!cJSON_IsString(kind))
                kind = cJSON_GetObjectItemCaseSensitive(err, "type");
        } else if (cJSON_IsString(err)) {
            msg = err;
        } else {
            msg = cJSON_GetObjectItemCaseSensitive(root, "message");
            kind = cJSON_GetObjectItemCaseSensitive(root, "type");
        }
        char *out = NULL;
        if (cJSON_IsString(msg) && msg->valuestring[0])
            out = one_line(msg->valuestring, strlen(msg->valuestring), 300);
        if (cJSON_IsString(kind))
            *type = one_line(kind->valuestring, strlen(kind->valuestring), 80);
        cJSON_Delete(root);
        if (out)
            return out;
    }
    const char *title = find_ci(body, len, "<title>");
    if (title) {
        title += 7;
        const char *end = find_ci(title, len - (size_t)(title - body), "</title>");
        size_t tlen = end ? (size_t)(end - title) : 0;
        if (tlen)
            return one_line(title, tlen, 200);
    }
    return one_line(body, len, 200);
}

const struct config_price *llm_price_for(const struct config *cfg, const char *model)
{
    const struct config_price *best = NULL;
    size_t best_len = 0;
    if (!model)
        return NULL;
    for (size_t i = 0; i < cfg->llm_prices_len; i++) {
        const struct config_price *p = &cfg->llm_prices[i];
        size_t n = strlen(p->model);
        if (!strcmp(p->model, model))
            return p;
        if (n > best_len && !strncmp(p->model, model, n)) {
            best = p;
            best_len = n;
        }
    }
    return best;
}
