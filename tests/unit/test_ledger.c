/*
 * Tests of the ledger: experiment directories materialised from commits,
 * trees written from directories, commits with trailers, refs and notes,
 * diffs limited to the experiment, and that none of it touches the user's
 * HEAD, index or working tree. Repositories are made with the git program
 * and read back with it, so the ledger is checked against real git.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "check.h"
#include "error.h"
#include "fsutil.h"
#include "ledger.h"

static char root[] = "/tmp/thalamus-ledger-XXXXXX";
static char *repo;

#define GIT_ENV                                                                                    \
    "GIT_CONFIG_NOSYSTEM=1 HOME=/nonexistent GIT_AUTHOR_NAME=T GIT_AUTHOR_EMAIL=t@x "              \
    "GIT_COMMITTER_NAME=T GIT_COMMITTER_EMAIL=t@x "

/* Runs a shell command in the repository; its standard output, trimmed, in
 * a new string (NULL when it failed). */
static char *sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *sh(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char cmd[4096];
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char *full = xasprintf("cd '%s' && " GIT_ENV "%s", repo, cmd);
    FILE *p = popen(full, "r");
    free(full);
    if (!p)
        return NULL;
    struct buf b;
    buf_init(&b, 1 << 20);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, p)) > 0)
        buf_append(&b, chunk, n);
    int status = pclose(p);
    while (b.len && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == ' '))
        b.data[--b.len] = '\0';
    if (status != 0) {
        buf_free(&b);
        return NULL;
    }
    return b.data ? buf_detach(&b, NULL) : xstrdup("");
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static char *read_text(const char *path)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    if (buf_read_file(&b, path) < 0) {
        error_clear();
        buf_free(&b);
        return NULL;
    }
    return b.data ? buf_detach(&b, NULL) : xstrdup("");
}

static void make_repo(void)
{
    repo = fs_join(root, "repo");
    char *cmd = xasprintf("mkdir -p '%s/experiment/sub' && cd '%s' && git init -q -b main . && "
                          "printf 'print(1)\\n' > experiment/train.py && "
                          "printf '{\"lr\": 0.1}\\n' > experiment/params.json && "
                          "printf '#!/bin/sh\\n' > experiment/sub/run.sh && "
                          "chmod +x experiment/sub/run.sh && ln -s train.py experiment/link.py && "
                          "printf 'return {}\\n' > thalamus.lua && "
                          "printf 'a local change\\n' > notes.txt",
                          repo, repo);
    if (system(cmd) != 0)
        abort();
    free(cmd);
    char *out = sh("git add experiment thalamus.lua && git commit -qm baseline && echo done");
    if (!out || strcmp(out, "done"))
        abort();
    free(out);
    /* an uncommitted, staged change the ledger must leave alone */
    out = sh("printf 'staged\\n' > staged.txt && git add staged.txt && echo ok");
    free(out);
}

static void test_materialise_and_tree_round_trip(void)
{
    struct ledger *l = NULL;
    REQUIRE(ledger_open(&l, repo) == 0);
    char head[LEDGER_HEX_SIZE];
    REQUIRE(ledger_head(l, head) == 0);
    char *expected_head = sh("git rev-parse HEAD");
    CHECK_EQ_STR(head, expected_head);
    free(expected_head);
    CHECK(ledger_has_experiment(l, head));

    char *dir = fs_join(root, "work/r1/n0");
    REQUIRE(ledger_materialise(l, head, dir) == 0);
    char *p = fs_join(dir, "train.py");
    char *text = read_text(p);
    CHECK_EQ_STR(text, "print(1)\n");
    free(text);
    free(p);
    p = fs_join(dir, "sub/run.sh");
    struct stat st;
    CHECK(stat(p, &st) == 0 && (st.st_mode & 0100));
    free(p);
    p = fs_join(dir, "link.py");
    char target[64] = {0};
    CHECK(readlink(p, target, sizeof target - 1) > 0);
    CHECK_EQ_STR(target, "train.py");
    free(p);
    /* a run's outputs are not part of the experiment */
    p = fs_join(dir, "results.json");
    write_text(p, "{\"score\": 1}");
    free(p);
    p = fs_join(dir, "__pycache__");
    mkdir(p, 0755);
    free(p);

    char tree[LEDGER_HEX_SIZE];
    REQUIRE(ledger_write_tree(l, dir, tree) == 0);
    char *expected = sh("git rev-parse HEAD:experiment");
    CHECK_EQ_STR(tree, expected);
    free(expected);

    /* materialising again replaces what was there */
    p = fs_join(dir, "stray.txt");
    write_text(p, "x");
    REQUIRE(ledger_materialise(l, head, dir) == 0);
    CHECK(!fs_exists(p));
    free(p);
    free(dir);
    ledger_free(l);
}

/* With on, files of this process may hold 1 byte (a longer write fails
 * with EFBIG, its signal ignored); with off, as before. */
static void tiny_files(bool on)
{
    static struct rlimit old;
    static void (*was)(int);
    if (on) {
        getrlimit(RLIMIT_FSIZE, &old);
        struct rlimit tiny = {1, old.rlim_max};
        was = signal(SIGXFSZ, SIG_IGN);
        REQUIRE(setrlimit(RLIMIT_FSIZE, &tiny) == 0);
    } else {
        setrlimit(RLIMIT_FSIZE, &old);
        signal(SIGXFSZ, was);
    }
}

/* Materialising in two steps writes what ledger_materialise() writes (the
 * files created by another thread), and a failure there comes back from
 * the second step as this module's error. */
static void test_materialise_on_a_thread(void)
{
    struct ledger *l = NULL;
    REQUIRE(ledger_open(&l, repo) == 0);
    char head[LEDGER_HEX_SIZE];
    REQUIRE(ledger_head(l, head) == 0);
    char *dir = fs_join(root, "work/r1/n9");
    REQUIRE(fs_mkdir_p(dir, 0755) == 0);
    char *stray = fs_join(dir, "stray.txt");
    write_text(stray, "x");
    struct ledger_writeout *w = NULL;
    REQUIRE(ledger_materialise_start(l, head, dir, &w) == 0);
    CHECK_EQ_INT(ledger_materialise_finish(w), 0);
    CHECK(!fs_exists(stray)); /* emptied first */
    char tree[LEDGER_HEX_SIZE];
    REQUIRE(ledger_write_tree(l, dir, tree) == 0);
    char *expected = sh("git rev-parse HEAD:experiment");
    CHECK_EQ_STR(tree, expected); /* every file, mode and link, byte for byte */
    free(expected);
    char *p = fs_join(dir, "sub/run.sh");
    struct stat st;
    CHECK(stat(p, &st) == 0 && (st.st_mode & 0100));
    free(p);
    CHECK_EQ_INT(ledger_materialise_finish(NULL), 0);
    /* the thread creates the directory, not its parents */
    char *orphan = fs_join(root, "work/none/n1");
    REQUIRE(ledger_materialise_start(l, head, orphan, &w) == 0);
    CHECK(ledger_materialise_finish(w) < 0);
    CHECK_CONTAINS(error_message(), "none/n1': No such file or directory");
    error_clear();
    free(orphan);

    /* files may be no longer than 1 byte: writing params.json fails on the
     * thread, and the error says where */
    tiny_files(true);
    w = NULL;
    int start = ledger_materialise_start(l, head, dir, &w);
    int rc = start == 0 ? ledger_materialise_finish(w) : start;
    tiny_files(false);
    CHECK_EQ_INT(start, 0);
    CHECK(rc < 0);
    CHECK_CONTAINS(error_message(), "cannot write '");
    CHECK_CONTAINS(error_message(), "n9/params.json': File too large");
    error_clear();
    /* and the synchronous form, the same */
    tiny_files(true);
    rc = ledger_materialise(l, head, dir);
    tiny_files(false);
    CHECK(rc < 0);
    CHECK_CONTAINS(error_message(), "n9/params.json': File too large");
    error_clear();
    free(stray);
    free(dir);
    ledger_free(l);
}

/* The baseline's experiment materialised in root/REL with params.json
 * set to params; its path in a new string. */
static char *experiment_with(struct ledger *l, const char *head, const char *rel,
                             const char *params)
{
    char *dir = fs_join(root, rel);
    REQUIRE(ledger_materialise(l, head, dir) == 0);
    char *p = fs_join(dir, "params.json");
    write_text(p, params);
    free(p);
    return dir;
}

static void test_commit_ref_note_and_diff(void)
{
    struct ledger *l = NULL;
    REQUIRE(ledger_open(&l, repo) == 0);
    char head[LEDGER_HEX_SIZE];
    REQUIRE(ledger_head(l, head) == 0);
    char *index_before = sh("git ls-files -s");
    char *dir = experiment_with(l, head, "work/r1/n1", "{\"lr\": 0.3}\n");
    char tree[LEDGER_HEX_SIZE], commit[LEDGER_HEX_SIZE];
    REQUIRE(ledger_write_tree(l, dir, tree) == 0);
    struct ledger_commit c = {
        .run = "r1",
        .node = "n1",
        .parent = head,
        .tree = tree,
        .title = "Raise the learning rate\nsecond line dropped",
        .body = "Hypothesis: faster.",
        .status = "ok",
        .metric_name = "accuracy",
        .metric = "0.91",
        .model = "offline",
        .note = "status: ok\naccuracy: 0.91\n",
    };
    REQUIRE(ledger_commit(l, &c, commit) == 0);

    char *parent = sh("git rev-parse %s^", commit);
    CHECK_EQ_STR(parent, head);
    free(parent);
    char *msg = sh("git log -1 --format=%%B %s", commit);
    REQUIRE(msg);
    CHECK(!strncmp(msg, "Raise the learning rate\n\nHypothesis: faster.", 44));
    CHECK_CONTAINS(msg, "\nThalamus-Run: r1\n");
    CHECK_CONTAINS(msg, "\nThalamus-Node: n1\n");
    CHECK_CONTAINS(msg, "\nThalamus-Status: ok\n");
    CHECK_CONTAINS(msg, "\nThalamus-Metric: accuracy=0.91\n");
    CHECK_CONTAINS(msg, "\nThalamus-Model: offline");
    free(msg);
    char *trailers =
        sh("git log -1 --format='%%(trailers:key=Thalamus-Node,valueonly)' %s", commit);
    CHECK_EQ_STR(trailers, "n1");
    free(trailers);
    char *ref = sh("git rev-parse refs/thalamus/runs/r1/n1");
    CHECK_EQ_STR(ref, commit);
    free(ref);
    char found[LEDGER_HEX_SIZE];
    CHECK(ledger_find(l, "r1", "n1", found) == 0);
    CHECK_EQ_STR(found, commit);
    CHECK(ledger_find(l, "r1", "n9", found) == TH_ENOTFOUND);
    error_clear();
    char *note = sh("git notes --ref=thalamus show %s", commit);
    CHECK_EQ_STR(note, "status: ok\naccuracy: 0.91");
    free(note);
    char *lnote = NULL;
    CHECK(ledger_note(l, commit, &lnote) == 0);
    CHECK_CONTAINS(lnote, "accuracy: 0.91");
    free(lnote);
    /* the rest of the tree is the parent's */
    char *names = sh("git diff --name-only %s %s", head, commit);
    CHECK_EQ_STR(names, "experiment/params.json");
    free(names);
    char *diff = NULL;
    REQUIRE(ledger_diff(l, head, commit, &diff) == 0);
    CHECK_CONTAINS(diff, "-{\"lr\": 0.1}");
    CHECK_CONTAINS(diff, "+{\"lr\": 0.3}");
    CHECK_CONTAINS(diff, "experiment/params.json");
    free(diff);
    /* HEAD, the index and the working tree are the user's */
    char *now = sh("git rev-parse HEAD");
    CHECK_EQ_STR(now, head);
    free(now);
    char *index_after = sh("git ls-files -s");
    CHECK_EQ_STR(index_after, index_before);
    free(index_after);
    free(index_before);
    char *status = sh("git status --porcelain");
    CHECK_EQ_STR(status, "A  staged.txt\n?? notes.txt");
    free(status);
    char *fsck = sh("git fsck --no-dangling 2>&1 && echo clean");
    CHECK_CONTAINS(fsck, "clean");
    free(fsck);
    /* a failed experiment has no metric trailer; a child builds on it */
    struct ledger_commit f = c;
    f.node = "n2";
    f.parent = commit;
    f.status = "failed";
    f.metric = NULL;
    f.note = NULL;
    char child[LEDGER_HEX_SIZE];
    REQUIRE(ledger_commit(l, &f, child) == 0);
    msg = sh("git log -1 --format=%%B %s", child);
    CHECK(msg && !strstr(msg, "Thalamus-Metric"));
    CHECK_CONTAINS(msg, "Thalamus-Status: failed");
    free(msg);
    char *graph = sh("git log --oneline --glob='refs/thalamus/runs/r1/*' | wc -l");
    CHECK_EQ_STR(graph, "3");
    free(graph);
    free(dir);
    ledger_free(l);
}

/* Notes are fanned out by the commit id's first two hex digits, so the
 * notes tree that each experiment rewrites stays small however long the
 * run; git reads them, beside a flat note written by git itself. */
static void test_notes_fan_out(void)
{
    struct ledger *l = NULL;
    REQUIRE(ledger_open(&l, repo) == 0);
    char head[LEDGER_HEX_SIZE], tree[LEDGER_HEX_SIZE];
    REQUIRE(ledger_head(l, head) == 0);
    char *before = sh("git ls-tree -r refs/notes/thalamus | wc -l");
    int notes_before = before ? atoi(before) : -1;
    free(before);
    /* a note git writes flat, on the baseline */
    char *old = sh("git notes --ref=thalamus add -f -m 'from git' %s && echo ok", head);
    CHECK_EQ_STR(old, "ok");
    free(old);
    char *dir = fs_join(root, "work/r9/n1");
    REQUIRE(ledger_materialise(l, head, dir) == 0);
    REQUIRE(ledger_write_tree(l, dir, tree) == 0);
    char first[LEDGER_HEX_SIZE] = "", last[LEDGER_HEX_SIZE] = "";
    for (int i = 1; i <= 40; i++) {
        char node[16], note[64];
        snprintf(node, sizeof node, "n%d", i);
        snprintf(note, sizeof note, "status: ok\nexperiment: %d\n", i);
        struct ledger_commit c = {.run = "r9",
                                  .node = node,
                                  .parent = head,
                                  .tree = tree,
                                  .title = node,
                                  .status = "ok",
                                  .note = note};
        REQUIRE(ledger_commit(l, &c, last) == 0);
        if (i == 1)
            memcpy(first, last, sizeof first);
    }
    /* the top of the notes tree: the flat note, then two-digit directories */
    char *top = sh("git ls-tree refs/notes/thalamus | awk '{print $2, length($4)}' | sort | "
                   "uniq -c | awk '{print $2, $3}' | tr '\\n' ' '");
    CHECK_EQ_STR(top, "blob 40 tree 2");
    free(top);
    char *count = sh("git ls-tree -r refs/notes/thalamus | wc -l");
    CHECK(count && atoi(count) == notes_before + 41);
    free(count);
    const char *commits[3] = {first, last, head};
    const char *expected[3] = {"status: ok\nexperiment: 1", "status: ok\nexperiment: 40",
                               "from git"};
    for (int i = 0; i < 3; i++) {
        char *note = sh("git notes --ref=thalamus show %s", commits[i]);
        CHECK_EQ_STR(note, expected[i]);
        free(note);
    }
    char *lnote = NULL;
    REQUIRE(ledger_note(l, last, &lnote) == 0);
    CHECK_CONTAINS(lnote, "experiment: 40");
    free(lnote);
    /* one notes commit per note, each on the one before */
    char *chain = sh("git rev-list --count refs/notes/thalamus");
    CHECK(chain && atoi(chain) == notes_before + 41);
    free(chain);
    char *fsck = sh("git fsck --no-dangling 2>&1 && echo clean");
    CHECK_CONTAINS(fsck, "clean");
    free(fsck);
    free(dir);
    ledger_free(l);
}

/* A tree holds the files' bytes, whatever the repository's line-ending
 * settings, so materialising it gives back exactly what was recorded. */
static void test_tree_keeps_bytes(void)
{
    char *out = sh("git config core.autocrlf true && echo ok");
    CHECK_EQ_STR(out, "ok");
    free(out);
    struct ledger *l = NULL;
    REQUIRE(ledger_open(&l, repo) == 0);
    /* inside the working tree, where git would convert them */
    char *dir = fs_join(repo, ".thalamus/runs/bytes");
    REQUIRE(fs_mkdir_p(dir, 0755) == 0);
    char *p = fs_join(dir, "crlf.txt");
    write_text(p, "a\r\nb\r\n");
    free(p);
    p = fs_join(dir, "empty.txt");
    write_text(p, "");
    free(p);
    char tree[LEDGER_HEX_SIZE];
    REQUIRE(ledger_write_tree(l, dir, tree) == 0);
    REQUIRE(ledger_flush(l) == 0);
    out = sh("git cat-file blob %s:crlf.txt | od -An -c | tr -d ' \\n'", tree);
    CHECK_EQ_STR(out, "a\\r\\nb\\r\\n");
    free(out);
    out = sh("git cat-file -s %s:empty.txt", tree);
    CHECK_EQ_STR(out, "0");
    free(out);
    out = sh("git config --unset core.autocrlf && rm -rf .thalamus && echo ok");
    free(out);
    free(dir);
    ledger_free(l);
}

/* A recorded tree's new objects stay in memory, readable by the ledger
 * that wrote them, until a flush or a commit writes them; a file already in
 * the repository is not written again; ledger_free() writes what is left. */
static void test_tree_kept_until_needed(void)
{
    struct ledger *l = NULL;
    REQUIRE(ledger_open(&l, repo) == 0);
    char head[LEDGER_HEX_SIZE];
    REQUIRE(ledger_head(l, head) == 0);
    char *dir = experiment_with(l, head, "work/r3/n1", "{\"lr\": 0.7}\n");
    char *p;
    char tree[LEDGER_HEX_SIZE], commit[LEDGER_HEX_SIZE];
    REQUIRE(ledger_write_tree(l, dir, tree) == 0);
    char *out = sh("git cat-file -e %s || echo missing", tree);
    CHECK_EQ_STR(out, "missing");
    free(out);
    /* this ledger reads it already */
    char *diff = NULL;
    REQUIRE(ledger_diff_tree(l, head, tree, &diff) == 0);
    CHECK_CONTAINS(diff, "+{\"lr\": 0.7}");
    free(diff);
    /* a commit writes the tree before itself */
    struct ledger_commit c = {.run = "r3",
                              .node = "n1",
                              .parent = head,
                              .tree = tree,
                              .title = "Kept",
                              .status = "ok",
                              .metric_name = "score",
                              .model = "offline"};
    REQUIRE(ledger_commit(l, &c, commit) == 0);
    out = sh("git cat-file -p %s:experiment/params.json", commit);
    CHECK_EQ_STR(out, "{\"lr\": 0.7}");
    free(out);
    /* ledger_flush: the new blob and tree, and only those, reach the disk */
    p = fs_join(dir, "params.json");
    write_text(p, "{\"lr\": 0.8}\n");
    free(p);
    char *before = sh("git count-objects | cut -d' ' -f1");
    REQUIRE(ledger_write_tree(l, dir, tree) == 0);
    out = sh("git count-objects | cut -d' ' -f1");
    CHECK_EQ_STR(out, before);
    free(out);
    REQUIRE(ledger_flush(l) == 0);
    out = sh("git cat-file -p %s:params.json", tree);
    CHECK_EQ_STR(out, "{\"lr\": 0.8}");
    free(out);
    out = sh("echo $(( $(git count-objects | cut -d' ' -f1) - %s ))", before);
    CHECK_EQ_STR(out, "2");
    free(out);
    free(before);
    /* what is still kept when the ledger closes is written */
    p = fs_join(dir, "params.json");
    write_text(p, "{\"lr\": 0.9}\n");
    free(p);
    REQUIRE(ledger_write_tree(l, dir, tree) == 0);
    ledger_free(l);
    out = sh("git cat-file -p %s:params.json", tree);
    CHECK_EQ_STR(out, "{\"lr\": 0.9}");
    free(out);
    out = sh("git fsck --no-dangling 2>&1 && echo clean");
    CHECK_CONTAINS(out, "clean");
    free(out);
    free(dir);
}

/* A commit made later is kept in memory with its tree: this ledger reads
 * it at once (a child's directory can be materialised from it), nothing of
 * it is on disk and no ref names it until ledger_set_ref() writes both.
 * With a given time, making it again gives the same commit. */
static void test_commit_later(void)
{
    struct ledger *l = NULL;
    REQUIRE(ledger_open(&l, repo) == 0);
    char head[LEDGER_HEX_SIZE];
    REQUIRE(ledger_head(l, head) == 0);
    char *dir = experiment_with(l, head, "work/r4/n1", "{\"lr\": 0.05}\n");
    char *p;
    char tree[LEDGER_HEX_SIZE], commit[LEDGER_HEX_SIZE], found[LEDGER_HEX_SIZE];
    REQUIRE(ledger_write_tree(l, dir, tree) == 0);
    struct ledger_commit c = {.run = "r4",
                              .node = "n1",
                              .parent = head,
                              .tree = tree,
                              .title = "Later",
                              .status = "ok",
                              .metric_name = "score",
                              .metric = "0.5",
                              .model = "offline",
                              .time = 1790000000,
                              .later = true};
    REQUIRE(ledger_commit(l, &c, commit) == 0);
    char *out = sh("git cat-file -e %s || echo missing", commit);
    CHECK_EQ_STR(out, "missing");
    free(out);
    CHECK_EQ_INT(ledger_find(l, "r4", "n1", found), TH_ENOTFOUND);
    error_clear();
    char *child = fs_join(root, "work/r4/n2");
    REQUIRE(ledger_materialise(l, commit, child) == 0);
    p = fs_join(child, "params.json");
    char *text = read_text(p);
    CHECK_EQ_STR(text, "{\"lr\": 0.05}\n");
    free(text);
    free(p);
    free(child);
    REQUIRE(ledger_set_ref(l, "r4", "n1", commit) == 0);
    out = sh("git rev-parse refs/thalamus/runs/r4/n1");
    CHECK_EQ_STR(out, commit);
    free(out);
    out = sh("git log -1 --format='%%at %%ad' --date=iso-strict %s", commit);
    CHECK_EQ_STR(out, "1790000000 2026-09-21T14:13:20+00:00");
    free(out);
    ledger_free(l);
    /* made again from the same record (a resume after a crash): the same */
    REQUIRE(ledger_open(&l, repo) == 0);
    c.later = false;
    char again[LEDGER_HEX_SIZE];
    REQUIRE(ledger_commit(l, &c, again) == 0);
    CHECK_EQ_STR(again, commit);
    out = sh("git fsck --no-dangling 2>&1 && echo clean");
    CHECK_CONTAINS(out, "clean");
    free(out);
    ledger_free(l);
    free(dir);
}

/* Notes added together make one commit of the notes; two in the same
 * fan-out directory both land there; a note written flat, or an earlier
 * note of the same commit, is replaced. */
static void test_notes_in_one_commit(void)
{
    struct ledger *l = NULL;
    REQUIRE(ledger_open(&l, repo) == 0);
    char head[LEDGER_HEX_SIZE];
    REQUIRE(ledger_head(l, head) == 0);
    char *out = sh("git notes --ref=thalamus add -f -m 'flat' %s 2>/dev/null && echo ok", head);
    CHECK_EQ_STR(out, "ok");
    free(out);
    char *count = sh("git rev-list --count refs/notes/thalamus");
    int before = count ? atoi(count) : -1;
    free(count);
    const char *same1 = "aa00000000000000000000000000000000000001";
    const char *same2 = "aa00000000000000000000000000000000000002";
    /* (other notes may be under aa/ too: the earlier tests' commits are
     * dated now, so their ids vary) */
    const char *both_in_aa =
        "git ls-tree -r --name-only refs/notes/thalamus | grep -cx -e 'aa/%s' -e 'aa/%s'";
    struct ledger_note notes[3] = {
        {head, "status: ok\nthe baseline\n"}, {same1, "first\n"}, {same2, "second\n"}};
    REQUIRE(ledger_add_notes(l, notes, 3) == 0);
    count = sh("git rev-list --count refs/notes/thalamus");
    CHECK(count && atoi(count) == before + 1);
    free(count);
    const char *want[3] = {"status: ok\nthe baseline\n", "first\n", "second\n"};
    for (int i = 0; i < 3; i++) {
        char *text = NULL;
        REQUIRE(ledger_note(l, notes[i].commit, &text) == 0);
        CHECK_EQ_STR(text, want[i]);
        free(text);
    }
    out = sh(both_in_aa, same1 + 2, same2 + 2);
    CHECK_EQ_STR(out, "2");
    free(out);
    out = sh("git ls-tree --name-only refs/notes/thalamus | grep -c '^%s$' || true", head);
    CHECK_EQ_STR(out, "0"); /* the flat note is gone, replaced */
    free(out);
    out = sh("git notes --ref=thalamus show %s", head);
    CHECK_EQ_STR(out, "status: ok\nthe baseline");
    free(out);
    /* again for one of them: replaced, not added */
    struct ledger_note again = {same2, "second, again\n"};
    REQUIRE(ledger_add_notes(l, &again, 1) == 0);
    out = sh(both_in_aa, same1 + 2, same2 + 2);
    CHECK_EQ_STR(out, "2");
    free(out);
    char *text = NULL;
    REQUIRE(ledger_note(l, same2, &text) == 0);
    CHECK_EQ_STR(text, "second, again\n");
    free(text);
    struct ledger_note bad = {"not-a-commit", "x"};
    CHECK(ledger_add_notes(l, &bad, 1) < 0);
    CHECK_CONTAINS(error_message(), "is not a commit id");
    error_clear();
    out = sh("git fsck --no-dangling 2>&1 && echo clean");
    CHECK_CONTAINS(out, "clean");
    free(out);
    ledger_free(l);
}

static void test_errors(void)
{
    struct ledger *l = NULL;
    char *plain = fs_join(root, "plain");
    mkdir(plain, 0755);
    CHECK(ledger_open(&l, plain) < 0);
    CHECK_CONTAINS(error_message(), "is not a git repository");
    error_clear();
    free(plain);
    REQUIRE(ledger_open(&l, repo) == 0);
    CHECK(!ledger_has_experiment(l, "0123456789012345678901234567890123456789"));
    char *dir = fs_join(root, "work/x");
    CHECK(ledger_materialise(l, "0123456789012345678901234567890123456789", dir) == TH_ENOTFOUND);
    CHECK_CONTAINS(error_message(), "is not in the repository");
    error_clear();
    free(dir);
    ledger_free(l);
}

int main(void)
{
    if (!mkdtemp(root))
        return 1;
    make_repo();
    RUN(test_materialise_and_tree_round_trip);
    RUN(test_materialise_on_a_thread);
    RUN(test_commit_ref_note_and_diff);
    RUN(test_tree_keeps_bytes);
    RUN(test_tree_kept_until_needed);
    RUN(test_commit_later);
    RUN(test_notes_fan_out);
    RUN(test_notes_in_one_commit);
    RUN(test_errors);
    char *cmd = xasprintf("rm -rf '%s'", root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", root);
    free(cmd);
    free(repo);
    return check_summary();
}
