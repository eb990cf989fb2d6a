/*
 * fake_llm: runs tests/e2e/fake_llm.py (the scriptable fake OpenAI and
 * Anthropic server) as a child process for the C tests, and talks to its
 * control endpoints with blocking libcurl calls: fake_script() appends
 * behaviours (a JSON list), fake_requests() returns what the server
 * received, fake_stats() its counters. The child serves until its standard
 * input closes, so it cannot outlive a crashed test. Header-only, like
 * check.h.
 */
#ifndef THALAMUS_TEST_FAKE_LLM_H
#define THALAMUS_TEST_FAKE_LLM_H

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct fake_llm {
    pid_t pid;
    int stdin_fd;
    int port;
    char url[64]; /* http://127.0.0.1:PORT */
};

/* Starts the fake server; 0 on success. */
static int fake_start(struct fake_llm *f)
{
    char portfile[] = "/tmp/thalamus-fake-port-XXXXXX";
    int fd = mkstemp(portfile);
    if (fd < 0)
        return -1;
    close(fd);
    unlink(portfile);
    int in[2];
    if (pipe(in) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(in[0], 0);
        close(in[0]);
        close(in[1]);
        execlp("python3", "python3", THALAMUS_SOURCE_DIR "/tests/e2e/fake_llm.py", portfile,
               (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    f->pid = pid;
    f->stdin_fd = in[1];
    f->port = 0;
    for (int i = 0; i < 600 && !f->port; i++) { /* up to 30 s on a loaded machine */
        FILE *pf = fopen(portfile, "r");
        if (pf) {
            if (fscanf(pf, "%d", &f->port) != 1)
                f->port = 0;
            fclose(pf);
        }
        if (!f->port) {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    unlink(portfile);
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%d", f->port);
    return f->port ? 0 : -1;
}

static void fake_stop(struct fake_llm *f)
{
    if (f->pid <= 0)
        return;
    close(f->stdin_fd);
    int status;
    for (int i = 0; i < 100; i++) {
        if (waitpid(f->pid, &status, WNOHANG) == f->pid) {
            f->pid = 0;
            return;
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(f->pid, SIGKILL);
    waitpid(f->pid, &status, 0);
    f->pid = 0;
}

static size_t fake_collect(char *data, size_t size, size_t nmemb, void *ud)
{
    char **out = ud;
    size_t old = *out ? strlen(*out) : 0, n = size * nmemb;
    char *p = realloc(*out, old + n + 1);
    if (!p)
        return 0;
    memcpy(p + old, data, n);
    p[old + n] = '\0';
    *out = p;
    return n;
}

/* A blocking control request; returns the parsed JSON reply (caller deletes). */
static cJSON *fake_control(const struct fake_llm *f, const char *path, const char *post)
{
    char url[128];
    char *body = NULL;
    snprintf(url, sizeof url, "%s%s", f->url, path);
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, fake_collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &body);
    if (post)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, post);
    CURLcode rc = curl_easy_perform(e);
    curl_easy_cleanup(e);
    cJSON *j = rc == CURLE_OK && body ? cJSON_Parse(body) : NULL;
    free(body);
    return j;
}

static void fake_script(const struct fake_llm *f, const char *json_list)
{
    cJSON_Delete(fake_control(f, "/_control/script", json_list));
}

static void fake_reset(const struct fake_llm *f)
{
    cJSON_Delete(fake_control(f, "/_control/reset", "{}"));
}

/* The recorded requests (a JSON array; caller deletes). */
static cJSON *fake_requests(const struct fake_llm *f)
{
    return fake_control(f, "/_control/requests", NULL);
}

/* A counter of /_control/stats: "max_in_flight" or "requests". */
static int fake_stat(const struct fake_llm *f, const char *name)
{
    cJSON *j = fake_control(f, "/_control/stats", NULL);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    int n = cJSON_IsNumber(v) ? v->valueint : -1;
    cJSON_Delete(j);
    return n;
}

#endif
