/*
 * sandbox: runs untrusted experiment code in Linux isolation, with limits,
 * and reports what happened.
 *
 * A sandbox is a new user, pid, mount, network, ipc, uts and cgroup namespace
 * whose root is a fresh tmpfs holding read-only binds of the host's system
 * directories, a minimal /dev, a fresh /proc, and a private, size-capped
 * tmpfs that holds /work (a copy of the experiment's directory, copied back
 * when the run ends) and /tmp. The program runs as an unprivileged uid with
 * no capabilities, no_new_privs, a seccomp filter, rlimits and (where the
 * host delegates one) a cgroup, in a clean environment. The first process of
 * the sandbox is a small init of ours (pid 1 of the namespace): it reaps
 * orphans, relays SIGTERM and reports the program's status and CPU time;
 * when the program ends, everything else in the sandbox is killed, so no
 * orphan and no zombie outlives a run.
 *
 * Runs are asynchronous on the event loop (loop.h): sandbox_spawn() returns
 * once the program is started, and the callback receives the result record
 * once every process of the sandbox has ended (the cgroups are removed just
 * after). sandbox_run() is the synchronous convenience around it.
 * docs/sandbox.md describes the isolation and the guarantees of each limit.
 * Depends on alloc, buf, error, log, loop, fsutil, cJSON and Linux.
 */
#ifndef THALAMUS_SANDBOX_H
#define THALAMUS_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

struct loop;
struct sandbox;

enum sandbox_isolation {
    SANDBOX_ISOLATION_FULL = 0, /* namespaces, new root, unprivileged uid */
    SANDBOX_ISOLATION_NONE,     /* explicit opt-out: limits and clean environment only */
};

enum sandbox_status {
    SANDBOX_OK = 0,  /* exited 0 and results.json (if any) is valid */
    SANDBOX_FAILED,  /* non-zero exit, a crash signal, or the program could not start */
    SANDBOX_TIMEOUT, /* the wall-clock or CPU-time limit was reached */
    SANDBOX_OOM,     /* the memory limit was reached */
    SANDBOX_KILLED,  /* stopped from outside: cancelled, or killed by a signal it did not cause */
    SANDBOX_INVALID, /* exited 0 but results.json is missing (when required) or unusable */
};

enum sandbox_stream {
    SANDBOX_STDOUT = 1,
    SANDBOX_STDERR = 2,
};

struct sandbox_limits {
    uint64_t timeout_ms;  /* wall clock from start to end; 0: none */
    uint64_t grace_ms;    /* between SIGTERM and SIGKILL when a limit or a cancel stops a run */
    long cpu_seconds;     /* CPU time of all processes together; 0: none */
    long memory_mb;       /* cgroup memory limit, else RLIMIT_AS; 0: none */
    long pids;            /* processes and threads at once, the sandbox's init not counted */
    long disk_mb;         /* size of the tmpfs holding /work and /tmp together */
    long file_mb;         /* largest file (RLIMIT_FSIZE); 0: disk_mb */
    long open_files;      /* RLIMIT_NOFILE */
    size_t output_bytes;  /* kept of each of stdout and stderr: half head, half tail */
    size_t results_bytes; /* largest results.json accepted */
};

/* Called with each chunk of output as it is read (from the loop). */
typedef void (*sandbox_output_cb)(enum sandbox_stream stream, const char *data, size_t len,
                                  void *ud);

struct sandbox_spec {
    /* The program and its arguments, NULL-terminated. argv[0] without a '/'
     * is looked up in the sandbox's PATH. */
    char *const *argv;
    /* Host directory the program sees as /work: copied in before the start
     * and made to mirror /work again when the run ends (new and changed
     * files written, deleted ones removed, owned by the directory's owner).
     * NULL: /work starts empty and is discarded. */
    const char *work_dir;
    enum sandbox_isolation isolation;
    bool network; /* share the host's network (default: only a private loopback) */
    /* Extra read-only binds, "HOST" or "HOST:INSIDE" (absolute paths),
     * NULL-terminated; NULL for none. */
    char *const *binds;
    /* Extra environment variables "NAME=VALUE", NULL-terminated; NULL for none. */
    char *const *env;
    struct sandbox_limits limits;
    /* A run that exits 0 without results.json is invalid (otherwise it is
     * ok, and only a present but unusable results.json makes it invalid). */
    bool results_required;
    sandbox_output_cb on_output; /* may be NULL */
    void *output_ud;
    /* Once this program has started, prepare a sandbox of the same shape
     * (isolation, and with full isolation network, binds and disk cap) so
     * that the next spawn of that shape only hands it the program: it then
     * starts in a fraction of the time. At most one per shape is kept; see
     * sandbox_release_prepared(). */
    bool prepare_next;
};

struct sandbox_output {
    char *text;     /* what was kept: the head, a marker line, the tail; NUL-terminated */
    size_t len;     /* bytes in text */
    size_t total;   /* bytes the program wrote */
    bool truncated; /* total > what was kept */
};

struct sandbox_frame {
    char *file;     /* as printed, e.g. "/work/train.py" */
    int line;       /* 0 when unknown */
    char *function; /* NULL for a frame without one (a SyntaxError) */
    int first_line; /* number of source[0] */
    char **source;  /* lines around `line` read from the work dir, or NULL */
    size_t nsource;
};

struct sandbox_traceback {
    bool python;                  /* a Python traceback was found in stderr */
    char *type;                   /* Python: exception type, e.g. "ValueError" */
    char *message;                /* Python: the exception's message; may be "" */
    struct sandbox_frame *frames; /* Python: frames in the experiment's own files */
    size_t nframes;
    char **lines; /* the last error lines of stderr (every failure) */
    size_t nlines;
};

struct sandbox_result {
    enum sandbox_status status;
    char *reason; /* one line on why the status is not ok; NULL when ok */
    enum sandbox_isolation isolation;
    int exit_code;     /* the program's exit status; -1 when it died of a signal or never ran */
    int signal;        /* the signal that ended the program, else 0 */
    const char *limit; /* which limit ended the run: "wall", "cpu", "memory"; else NULL */
    double wall_ms;    /* from start to the end of every process of the sandbox */
    double cpu_ms;     /* user + system time of every process of the sandbox */
    bool cpu_exact;    /* false: processes killed at the end are not counted (no cgroup) */
    uint64_t peak_memory_bytes; /* cgroup peak, else the largest single process's peak RSS */
    bool memory_from_cgroup;
    bool pids_limit_hit; /* a fork failed for the process limit (known with a pids cgroup) */
    uid_t uid;           /* host uid the program ran as */
    bool prepared;       /* the sandbox was prepared before the spawn (prepare_next) */
    struct sandbox_output out, err;
    cJSON *results;                      /* results.json, an object; NULL when absent or unusable */
    char *results_error;                 /* why results is NULL; NULL when it was read */
    struct sandbox_traceback *traceback; /* for every status but ok; NULL when ok */
    char *work_error;                    /* copying /work back failed: why; else NULL */
};

/* Called once per run from the loop; result belongs to the callee, who frees
 * it with sandbox_result_free(). The sandbox handle is freed after the
 * callback returns. */
typedef void (*sandbox_done_cb)(struct sandbox *sb, struct sandbox_result *result, void *ud);

/* The built-in limits: no timeout, 2 s grace, no CPU limit, 2048 MiB memory,
 * 256 pids, 1024 MiB disk, 1024 open files, 1 MiB of output per stream and
 * of results.json. */
void sandbox_limits_default(struct sandbox_limits *limits);

/* Starts spec on loop. Returns once the program has been started (or could
 * not be: an exec failure is reported through the callback as a failed run
 * with exit code 127 or 126). Fails with a message, without calling cb, when
 * the spec is invalid (TH_EUSAGE) or the host cannot create the sandbox, e.g.
 * without user namespaces (the message says how to enable them, or to set
 * sandbox.isolation = "none"). spec is not referenced after the call, except
 * spec->on_output and spec->output_ud. *out (may be NULL) is valid until cb
 * returns. */
int sandbox_spawn(struct loop *loop, const struct sandbox_spec *spec, sandbox_done_cb cb, void *ud,
                  struct sandbox **out);

/* Stops a running sandbox (SIGTERM to everything in it, SIGKILL after the
 * grace period); its callback then reports status killed. Does nothing once
 * the run is ending. */
void sandbox_cancel(struct sandbox *sb);

/* Kills and reaps the sandboxes prepared ahead (prepare_next) and releases
 * what they hold. They die with thalamus anyway (parent-death signal); call
 * this before exiting for a clean shutdown. */
void sandbox_release_prepared(void);

/* Runs spec to completion on a private loop and stores the result in *out
 * (free with sandbox_result_free()). SIGINT and SIGTERM cancel the run.
 * Fails like sandbox_spawn(). */
int sandbox_run(const struct sandbox_spec *spec, struct sandbox_result **out);

void sandbox_result_free(struct sandbox_result *result);

/* The result as a JSON object (see docs/sandbox.md); the caller deletes it. */
cJSON *sandbox_result_to_json(const struct sandbox_result *result);

/* "ok", "failed", "timeout", "oom", "killed" or "invalid". */
const char *sandbox_status_name(enum sandbox_status status);

/* What the host offers, for `thalamus sandbox check`. */
struct sandbox_feature {
    const char *name; /* e.g. "user namespace" */
    bool active;
    char *detail; /* how it is provided, or why not and the fallback */
};

struct sandbox_report {
    struct sandbox_feature *features;
    size_t nfeatures;
    bool can_isolate; /* a full sandbox can be created here */
    char *problem;    /* when !can_isolate: why, and how to fix it */
    double run_ms;    /* a test run of /bin/true in a full sandbox; < 0 when not run */
    char *run_error;  /* why the test run failed, or NULL */
};

/* Probes the host: namespaces, uid mapping, seccomp, cgroup controllers,
 * pidfd, and a test run. Cannot fail; free with sandbox_report_free(). */
struct sandbox_report *sandbox_check(void);
void sandbox_report_free(struct sandbox_report *report);
cJSON *sandbox_report_to_json(const struct sandbox_report *report);

#endif
