/*
 * sandbox_internal: what the files of the sandbox module share, and nothing
 * outside sandbox/ uses.
 *
 * - the plan (sandbox_plan.c): everything the child will do, computed in the
 *   parent before the clone, so that the child only makes system calls;
 * - the child (sandbox_child.c): set-up inside the namespaces, the init
 *   process and the exec of the program;
 * - the messages the child sends back over its socket;
 * - ids (sandbox_ids.c): which host uid a sandbox runs as;
 * - cgroups (sandbox_cgroup.c), seccomp (sandbox_seccomp.c), the copy of
 *   /work in and out (sandbox_workdir.c), output capture
 *   (sandbox_capture.c), results.json (sandbox_results.c) and tracebacks
 *   (sandbox_traceback.c).
 * Depends on sandbox.h, buf and Linux headers.
 */
#ifndef THALAMUS_SANDBOX_INTERNAL_H
#define THALAMUS_SANDBOX_INTERNAL_H

#include <linux/filter.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "buf.h"
#include "sandbox.h"

/* The uid and gid the program has inside the sandbox, named "sandbox" in
 * its /etc/passwd. */
#define SANDBOX_INNER_ID 1000

/* Where the sandbox's root is assembled in the child's private mount
 * namespace before pivot_root (a tmpfs is mounted over it there; the host's
 * directory is untouched). */
#define SANDBOX_STAGE "/tmp"

/* ---- ids ---------------------------------------------------------------- */

struct sandbox_ids {
    bool root_mode; /* running as root: a uid of its own from a high range */
    uid_t host_uid; /* what the sandbox's uid maps to on the host */
    gid_t host_gid;
    int slot; /* root_mode: the slot held in the lock file, else -1 */
};

/* Root (with the range mapped in the current user namespace): claims a free
 * per-sandbox uid (SANDBOX_UID_BASE + slot) with a lock that other thalamus
 * processes respect. Otherwise the caller's own uid and gid. */
int sandbox_ids_acquire(struct sandbox_ids *ids);
void sandbox_ids_release(struct sandbox_ids *ids);
/* Whether this process would run sandboxes as root with per-sandbox uids. */
bool sandbox_ids_root_mode(void);

#define SANDBOX_UID_BASE  1600000000u
#define SANDBOX_UID_SLOTS 65536

/* ---- the plan ------------------------------------------------------------ */

enum plan_op_kind {
    PLAN_DIR,      /* mkdir path */
    PLAN_BIND_RO,  /* bind src at path (made read-only with the whole root) */
    PLAN_BIND_DEV, /* bind the device node src at path (nosuid, noexec) */
    PLAN_SYMLINK,  /* symlink path -> src */
    PLAN_FILE,     /* a file at path holding data */
};

struct plan_op {
    enum plan_op_kind kind;
    char *path;      /* absolute, under SANDBOX_STAGE */
    char *src;       /* host path, or the symlink's target */
    char *data;      /* PLAN_FILE */
    size_t len;      /* PLAN_FILE */
    bool src_is_dir; /* binds: whether the mount point is a directory */
};

struct plan_rlimit {
    int resource;
    struct rlimit value;
};

/* The largest job (see below) and the most strings it may hold. */
#define SANDBOX_JOB_MAX  (128 * 1024)
#define SANDBOX_JOB_PTRS 4096

/* What a sandbox is, as opposed to what runs in it: computed in the parent
 * before the clone, used by the child up to the point where it waits for
 * its job. */
struct sandbox_plan {
    bool full;       /* namespaces and a new root (else isolation none) */
    bool network;    /* keep the host's network namespace */
    bool setgroups;  /* root mode: setgroups() is allowed and used */
    bool cgroup_ns;  /* unshare a cgroup namespace once placed in the cgroups */
    uid_t inner_uid; /* full: SANDBOX_INNER_ID */
    gid_t inner_gid;
    struct plan_op *ops;
    size_t nops;
    /* nops entries: the child opens each bind's source here (O_PATH) before
     * the stage covers any host path */
    int *src_fds;
    char *root_opts;          /* tmpfs options of the new root */
    char *data_opts;          /* tmpfs options of the file system of /work and /tmp */
    struct sock_fprog filter; /* empty (len 0) when seccomp is not supported */
    int cap_last;             /* highest capability number of the kernel */
    char **cgroup_tasks;      /* v1 `tasks` files the child writes "0" to */
    /* the child's ends, as numbered in the parent */
    int sock_fd, out_fd, err_fd;
    /* where the child receives its job (it may not allocate); set by
     * sandbox_plan_pack() */
    char *job_buf;   /* SANDBOX_JOB_MAX bytes */
    char **job_ptrs; /* SANDBOX_JOB_PTRS entries */
};

/* Computes the plan of spec's shape (isolation, network, binds, disk cap)
 * for ids. Fails (TH_EUSAGE) on a bad bind. */
int sandbox_plan_build(struct sandbox_plan *plan, const struct sandbox_spec *spec,
                       const struct sandbox_ids *ids);
void sandbox_plan_free(struct sandbox_plan *plan);
/* Copies plan into out, whose every pointer is into one new private
 * mapping (*region, *size bytes; munmap it), with room for the job
 * (job_buf, job_ptrs): what the child reads then lies outside the heap,
 * which the clone leaves out. */
int sandbox_plan_pack(const struct sandbox_plan *in, struct sandbox_plan *out, void **region,
                      size_t *size);

/* What the sandbox's cgroups enforce, which the rlimits then need not. */
struct plan_cgroup {
    bool memory; /* no RLIMIT_AS */
    bool pids;   /* RLIMIT_NPROC one above the cgroup's limit, so the cgroup counts refusals */
};

/* The job: the message that makes a prepared sandbox run a program. A
 * struct sandbox_job_head, then NUL-terminated strings: the directory to
 * run in, nargv arguments, nenv environment entries, npaths candidate
 * paths of argv[0]. */
struct sandbox_job_head {
    uint32_t nargv, nenv, npaths, nrlimits;
    struct plan_rlimit rlimits[8];
};

/* Serializes spec's job into out: the clean environment (an allow-list
 * plus spec->env; never an API key), PATH candidates, rlimits. dir is where
 * the program runs ("/work", or the host work dir with isolation none).
 * Fails (TH_EUSAGE) on a bad environment entry or a job over
 * SANDBOX_JOB_MAX bytes. */
int sandbox_job_build(struct buf *out, const struct sandbox_spec *spec, const char *dir,
                      struct plan_cgroup cgroup);

/* ---- the child ------------------------------------------------------------ */

/* Entry point of the process created by clone(): waits for the parent's
 * go-ahead, sets up, reports ready, waits for its job, forks the program
 * and becomes its init. Never returns. */
_Noreturn void sandbox_child_main(const struct sandbox_plan *plan);

/* The byte the parent sends once the maps are written and the child is in
 * its cgroups. */
#define SANDBOX_GO 'g'

enum sandbox_msg_type {
    MSG_READY = 1,   /* set up; with full isolation, an fd of /work rides along */
    MSG_SETUP_ERROR, /* set-up failed: text says what, err why */
    MSG_STARTED,     /* the program's process exists: status holds its pid (host pid with none) */
    MSG_EXEC_ERROR,  /* execve failed: err says why */
    MSG_FINAL,       /* the program ended: status is its wait status */
};

struct sandbox_msg {
    int32_t type;
    int32_t err;
    int32_t status;
    int32_t pad;
    int64_t utime_us, stime_us; /* MSG_FINAL: every reaped process of the sandbox */
    int64_t maxrss_kib;         /* MSG_FINAL: the largest of them */
    char text[480];
};

/* ---- seccomp -------------------------------------------------------------- */

/* Fills out with the filter (a static program, not to be freed). Returns
 * false when this architecture has no filter. */
bool sandbox_seccomp_filter(struct sock_fprog *out);

/* ---- cgroups ------------------------------------------------------------- */

struct sandbox_cgroup;

struct sandbox_cgroup_stats {
    bool has_memory;
    uint64_t peak_bytes;
    uint64_t oom_kills;
    bool has_pids;
    uint64_t pids_max_hits;
    bool has_cpu;
    uint64_t cpu_ns;
};

/* Creates the sandbox's cgroups in whatever the host delegates (cgroup v2,
 * or v1 memory, pids and cpuacct hierarchies). Sets *out to NULL, and
 * succeeds, when nothing usable is delegated. */
int sandbox_cgroup_create(struct sandbox_cgroup **out);
/* Sets the memory and pids limits (0: none). */
int sandbox_cgroup_set_limits(struct sandbox_cgroup *cg, long memory_mb, long pids);
/* Joining the cgroups. Moving a process into a cgroup through cgroup.procs
 * takes a global lock whose writer waits for an RCU grace period (up to
 * tens of milliseconds); a process that writes "0" to a v1 `tasks` file
 * moves only itself and skips it, and clone3(CLONE_INTO_CGROUP) creates the
 * child inside a v2 cgroup without moving anything. So the child joins the
 * v1 cgroups itself (these `tasks` files, NULL-terminated; the caller
 * frees them), and is created inside the v2 one (this directory's fd, or
 * -1 when there is none; the caller closes it). */
char **sandbox_cgroup_v1_tasks(const struct sandbox_cgroup *cg);
int sandbox_cgroup_v2_fd(const struct sandbox_cgroup *cg);
/* Moves pid into the v2 cgroup through cgroup.procs, where clone3 with
 * CLONE_INTO_CGROUP is not available. */
int sandbox_cgroup_attach_v2(struct sandbox_cgroup *cg, pid_t pid);
bool sandbox_cgroup_limits_memory(const struct sandbox_cgroup *cg);
bool sandbox_cgroup_limits_pids(const struct sandbox_cgroup *cg);
bool sandbox_cgroup_counts_cpu(const struct sandbox_cgroup *cg);
void sandbox_cgroup_stats(struct sandbox_cgroup *cg, struct sandbox_cgroup_stats *st);
/* Kills every process in cg (cgroup.kill, or SIGKILL to each listed pid). */
void sandbox_cgroup_kill(struct sandbox_cgroup *cg);
/* Kills what is left and removes the cgroups. NULL is allowed. */
void sandbox_cgroup_destroy(struct sandbox_cgroup *cg);

/* For `sandbox check`: how each function is provided, or NULL when it is
 * not (the caller frees the strings). */
struct sandbox_cgroup_support {
    char *memory, *pids, *cpu, *kill;
    char *why_not; /* when something is missing: a hint */
};
void sandbox_cgroup_support(struct sandbox_cgroup_support *out);
void sandbox_cgroup_support_free(struct sandbox_cgroup_support *s);

/* ---- /work ---------------------------------------------------------------- */

/* Copies the tree under src into the directory dst_fd (the sandbox's
 * tmpfs), creating files as ids' host uid so that the sandbox owns them. */
int sandbox_workdir_copy_in(const char *src, int dst_fd, const struct sandbox_ids *ids);
/* Makes dst mirror the tree of src_fd: writes new and changed files,
 * removes what is gone; never follows a symbolic link of either tree. New
 * entries are owned by dst's owner. */
int sandbox_workdir_copy_out(int src_fd, const char *dst);
/* Removes path and everything under it, never following a link. */
int sandbox_workdir_remove(const char *path);

/* ---- output capture -------------------------------------------------------- */

struct sandbox_capture {
    struct buf head;
    char *tail; /* a ring of tail_max bytes, made once the head is full */
    size_t tail_max, tail_len, tail_pos;
    size_t total;
};

void sandbox_capture_init(struct sandbox_capture *c, size_t max);
void sandbox_capture_add(struct sandbox_capture *c, const char *data, size_t len);
/* Moves the kept text into out and frees c. */
void sandbox_capture_finish(struct sandbox_capture *c, struct sandbox_output *out);
void sandbox_capture_free(struct sandbox_capture *c);

/* ---- results and tracebacks ---------------------------------------------- */

/* Opens rel (a relative path) beneath dirfd without following any symbolic
 * link and without leaving dirfd's tree; -1 with errno on failure. */
int sandbox_open_beneath(int dirfd, const char *rel, int flags);

/* Reads results.json from dirfd (or dirfd < 0: no work dir). Sets *results
 * to the parsed object, or *error to why it is unusable ("missing" when it
 * does not exist). */
void sandbox_results_read(int dirfd, size_t max_bytes, cJSON **results, char **error);

/* Parses the stderr text of a failed run. Frames whose file is under
 * work_prefix (e.g. "/work") are kept, with source lines read beneath
 * workfd (when >= 0). Returns NULL when stderr is empty. */
struct sandbox_traceback *sandbox_traceback_parse(const char *text, int workfd,
                                                  const char *work_prefix);
void sandbox_traceback_free(struct sandbox_traceback *tb);
cJSON *sandbox_traceback_to_json(const struct sandbox_traceback *tb);

/* Makes text valid UTF-8 without NUL bytes (each bad byte becomes U+FFFD),
 * for JSON; the caller frees the result. */
char *sandbox_utf8_clean(const char *text, size_t len);

/* ---- probing ------------------------------------------------------------- */

/* Whether a full sandbox can be created (user, pid, mount, net, ipc and uts
 * namespaces in one clone). When not, *problem (caller frees) says why and
 * how to fix it. The answer is cached. */
bool sandbox_can_isolate(char **problem);

/* Why clone() of a user namespace failed with err, and how to fix it; the
 * caller frees the text. */
char *sandbox_explain_no_isolation(int err);

#endif
