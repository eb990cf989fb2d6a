/*
 * sandbox_plan: everything the sandbox's child will do, computed in the
 * parent (the child may not allocate; see sandbox_child.c).
 *
 * The plan is the sandbox's shape. It lists the new root's contents in
 * order: read-only binds of the host's system directories (or the same
 * symbolic links where the host has merged /usr), the parts of /etc that
 * programs need (dynamic linker cache, certificates, time zone,
 * alternatives, Python's configuration...) plus a generated passwd, group,
 * hosts and hostname (and resolv.conf only with the network), a minimal
 * /dev (null, zero, full, random and urandom bound from the host; fd,
 * stdin, stdout, stderr and shm as links), the mount points of /work, /tmp
 * and /proc, and the extra read-only binds of the spec. The job is what
 * runs in it, sent once the sandbox is ready: the directory, argv, the
 * clean environment (an allow-list plus the task's variables; never an
 * API key), the PATH candidates of argv[0] and the rlimits. Depends on
 * alloc, buf, error, log and sandbox_internal.h.
 */
#define _GNU_SOURCE
#include "sandbox_internal.h"

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SANDBOX_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* The host's system directories, bound read-only (or re-created as the same
 * symbolic link). */
static const char *const system_dirs[] = {"/usr",   "/bin",   "/sbin",   "/lib",
                                          "/lib32", "/lib64", "/libx32", NULL};

/* Entries of the host's /etc that the sandbox sees; a trailing '*' matches
 * a prefix. */
static const char *const etc_entries[] = {"alternatives",
                                          "ca-certificates",
                                          "ca-certificates.conf",
                                          "debian_version",
                                          "fonts",
                                          "gai.conf",
                                          "host.conf",
                                          "inputrc",
                                          "ld.so.cache",
                                          "ld.so.conf",
                                          "ld.so.conf.d",
                                          "locale.alias",
                                          "localtime",
                                          "magic",
                                          "magic.mime",
                                          "matplotlibrc",
                                          "mime.types",
                                          "nsswitch.conf",
                                          "os-release",
                                          "protocols",
                                          "python3*",
                                          "services",
                                          "ssl",
                                          "timezone",
                                          NULL};

/* Variables passed through from thalamus's environment when set. */
static const char *const env_allowed[] = {"LANG",
                                          "LC_ALL",
                                          "LC_CTYPE",
                                          "TZ",
                                          "OMP_NUM_THREADS",
                                          "MKL_NUM_THREADS",
                                          "OPENBLAS_NUM_THREADS",
                                          "NUMEXPR_NUM_THREADS",
                                          "VECLIB_MAXIMUM_THREADS",
                                          "NUMBA_NUM_THREADS",
                                          NULL};

/* Inside paths an extra bind may not cover. */
static const char *const reserved_paths[] = {"/work", "/tmp", "/proc", "/dev", NULL};

static const char *const devices[] = {"null", "zero", "full", "random", "urandom", NULL};

struct plan_builder {
    struct sandbox_plan *plan;
    size_t cap;
};

static struct plan_op *add_op(struct plan_builder *b, enum plan_op_kind kind, const char *inside)
{
    struct sandbox_plan *p = b->plan;
    if (p->nops == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        p->ops = xreallocarray(p->ops, b->cap, sizeof *p->ops);
    }
    struct plan_op *op = &p->ops[p->nops++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->path = xasprintf("%s%s", SANDBOX_STAGE, inside);
    return op;
}

static void add_file(struct plan_builder *b, const char *inside, const char *data)
{
    struct plan_op *op = add_op(b, PLAN_FILE, inside);
    op->data = xstrdup(data);
    op->len = strlen(data);
}

static char *read_link(const char *path)
{
    char target[PATH_MAX];
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n < 0)
        return NULL;
    target[n] = '\0';
    return xstrdup(target);
}

/* Mirrors host path at inside: a link as the same link, a directory or a
 * file as a read-only bind. Missing paths are skipped. */
static void add_host_entry(struct plan_builder *b, const char *host, const char *inside)
{
    struct stat st;
    if (lstat(host, &st) < 0)
        return;
    if (S_ISLNK(st.st_mode)) {
        char *target = read_link(host);
        if (target) {
            add_op(b, PLAN_SYMLINK, inside)->src = target;
        }
        return;
    }
    if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
        return;
    struct plan_op *op = add_op(b, PLAN_BIND_RO, inside);
    op->src = xstrdup(host);
    op->src_is_dir = S_ISDIR(st.st_mode);
}

static bool etc_wanted(const char *name)
{
    for (const char *const *e = etc_entries; *e; e++) {
        size_t n = strlen(*e);
        if ((*e)[n - 1] == '*' ? !strncmp(name, *e, n - 1) : !strcmp(name, *e))
            return true;
    }
    return false;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void add_etc(struct plan_builder *b, bool network)
{
    add_op(b, PLAN_DIR, "/etc");
    DIR *d = opendir("/etc");
    char **names = NULL;
    size_t n = 0, cap = 0;
    if (d) {
        for (struct dirent *e; (e = readdir(d));) {
            if (e->d_name[0] == '.' || !etc_wanted(e->d_name))
                continue;
            if (n == cap)
                names = xreallocarray(names, cap = cap ? 2 * cap : 32, sizeof *names);
            names[n++] = xstrdup(e->d_name);
        }
        closedir(d);
    }
    qsort(names, n, sizeof *names, compare_names);
    for (size_t i = 0; i < n; i++) {
        char *host = xasprintf("/etc/%s", names[i]);
        add_host_entry(b, host, host);
        free(host);
        free(names[i]);
    }
    free(names);

    add_file(b, "/etc/passwd",
             "root:x:0:0:root:/root:/usr/sbin/nologin\n"
             "sandbox:x:1000:1000:sandbox:/work:/bin/sh\n"
             "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    add_file(b, "/etc/group", "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n");
    add_file(b, "/etc/hostname", "sandbox\n");
    struct buf text;
    buf_init(&text, 1 << 20);
    if (network && buf_read_file(&text, "/etc/hosts") == 0)
        add_file(b, "/etc/hosts", buf_str(&text));
    else
        add_file(b, "/etc/hosts", "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost\n");
    buf_reset(&text);
    error_clear();
    /* Only a sandbox with the network resolves names. */
    if (network && buf_read_file(&text, "/etc/resolv.conf") == 0)
        add_file(b, "/etc/resolv.conf", buf_str(&text));
    error_clear();
    buf_free(&text);
}

static void add_dev(struct plan_builder *b)
{
    add_op(b, PLAN_DIR, "/dev");
    for (const char *const *d = devices; *d; d++) {
        char *host = xasprintf("/dev/%s", *d);
        struct stat st;
        if (stat(host, &st) == 0 && S_ISCHR(st.st_mode))
            add_op(b, PLAN_BIND_DEV, host)->src = xstrdup(host);
        free(host);
    }
    static const char *const links[][2] = {{"/dev/fd", "/proc/self/fd"},
                                           {"/dev/stdin", "/proc/self/fd/0"},
                                           {"/dev/stdout", "/proc/self/fd/1"},
                                           {"/dev/stderr", "/proc/self/fd/2"},
                                           {"/dev/shm", "/tmp"}};
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
        add_op(b, PLAN_SYMLINK, links[i][0])->src = xstrdup(links[i][1]);
}

/* A clean absolute path: no empty, "." or ".." components. */
static bool clean_absolute(const char *p)
{
    if (p[0] != '/' || p[1] == '\0')
        return false;
    for (const char *s = p; *s;) {
        s++; /* past '/' */
        size_t n = strcspn(s, "/");
        if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
            return false;
        s += n;
    }
    return true;
}

static bool path_within(const char *p, const char *dir)
{
    size_t n = strlen(dir);
    return !strncmp(p, dir, n) && (p[n] == '\0' || p[n] == '/');
}

static int add_extra_bind(struct plan_builder *b, const char *entry)
{
    const char *colon = strchr(entry, ':');
    char *host = colon ? xstrndup(entry, (size_t)(colon - entry)) : xstrdup(entry);
    char *inside = xstrdup(colon ? colon + 1 : entry);
    int rc = 0;
    struct stat st;
    if (host[0] != '/' || !clean_absolute(inside)) {
        rc = error_setc(TH_EUSAGE,
                        "bad sandbox bind '%s': use an absolute host path, optionally "
                        "followed by ':' and an absolute path inside the sandbox",
                        entry);
        goto cleanup;
    }
    for (const char *const *r = reserved_paths; *r; r++)
        if (path_within(inside, *r) || path_within(*r, inside)) {
            rc = error_setc(TH_EUSAGE, "bad sandbox bind '%s': '%s' would cover the sandbox's %s",
                            entry, inside, *r);
            goto cleanup;
        }
    if (stat(host, &st) < 0) {
        rc = error_setc(TH_EUSAGE, "bad sandbox bind '%s': cannot use '%s': %s", entry, host,
                        strerror(errno));
        goto cleanup;
    }
    if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
        rc = error_setc(TH_EUSAGE, "bad sandbox bind '%s': '%s' is not a file or directory", entry,
                        host);
        goto cleanup;
    }
    /* the directories leading to the mount point */
    for (char *s = strchr(inside + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = '\0';
        add_op(b, PLAN_DIR, inside);
        *s = '/';
    }
    struct plan_op *op = add_op(b, PLAN_BIND_RO, inside);
    op->src = host;
    op->src_is_dir = S_ISDIR(st.st_mode);
    host = NULL;
cleanup:
    free(host);
    free(inside);
    return rc;
}

/* ---- environment ---- */

static bool valid_env_name(const char *s, size_t n)
{
    if (n == 0 || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] == '_' || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
              (s[i] >= '0' && s[i] <= '9')))
            return false;
    return true;
}

static bool looks_like_api_key(const char *name, size_t n)
{
    static const char suffix[] = "_API_KEY";
    size_t sl = sizeof suffix - 1;
    return (n == sl - 1 && !strncmp(name, suffix + 1, n)) ||
           (n >= sl && !strncmp(name + n - sl, suffix, sl));
}

struct env_list {
    char **v;
    size_t n, cap;
};

static void env_set(struct env_list *e, const char *name, const char *value)
{
    size_t nl = strlen(name);
    char *entry = xasprintf("%s=%s", name, value);
    for (size_t i = 0; i < e->n; i++)
        if (!strncmp(e->v[i], name, nl) && e->v[i][nl] == '=') {
            free(e->v[i]);
            e->v[i] = entry;
            return;
        }
    if (e->n + 1 >= e->cap)
        e->v = xreallocarray(e->v, e->cap = e->cap ? 2 * e->cap : 32, sizeof *e->v);
    e->v[e->n++] = entry;
    e->v[e->n] = NULL;
}

static void free_list(struct env_list *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->v[i]);
    free(e->v);
    e->v = NULL;
    e->n = e->cap = 0;
}

static void env_set_raw(struct env_list *e, char *entry)
{
    if (e->n + 1 >= e->cap)
        e->v = xreallocarray(e->v, e->cap = e->cap ? 2 * e->cap : 32, sizeof *e->v);
    e->v[e->n++] = entry;
    e->v[e->n] = NULL;
}

static int build_env(struct env_list *e, const struct sandbox_spec *spec, const char *dir)
{
    bool full = spec->isolation == SANDBOX_ISOLATION_FULL;
    const char *user = full ? "sandbox" : (getenv("USER") ? getenv("USER") : "sandbox");
    env_set(e, "PATH", !full && getenv("PATH") ? getenv("PATH") : SANDBOX_PATH);
    env_set(e, "HOME", dir);
    env_set(e, "PWD", dir);
    env_set(e, "TMPDIR", "/tmp");
    env_set(e, "USER", user);
    env_set(e, "LOGNAME", user);
    env_set(e, "PYTHONUNBUFFERED", "1");
    env_set(e, "PYTHONDONTWRITEBYTECODE", "1"); /* no __pycache__ in the experiment's files */
    env_set(e, "LANG", "C.UTF-8");
    for (const char *const *a = env_allowed; *a; a++) {
        const char *v = getenv(*a);
        if (v && *v)
            env_set(e, *a, v);
    }
    for (char *const *x = spec->env; x && *x; x++) {
        const char *eq = strchr(*x, '=');
        size_t n = eq ? (size_t)(eq - *x) : strlen(*x);
        if (!eq || !valid_env_name(*x, n))
            return error_setc(TH_EUSAGE, "bad sandbox environment entry '%.*s': use NAME=VALUE",
                              (int)(n > 64 ? 64 : n), *x);
        if (looks_like_api_key(*x, n))
            return error_setc(TH_EUSAGE,
                              "refusing to pass '%.*s' into the sandbox: API keys never enter it",
                              (int)n, *x);
        char *name = xstrndup(*x, n);
        env_set(e, name, eq + 1);
        free(name);
    }
    return 0;
}

/* The candidates for argv[0], in PATH order; the caller frees them. */
static void exec_paths(struct env_list *out, const char *prog, char **envp)
{
    if (strchr(prog, '/')) {
        env_set_raw(out, xstrdup(prog));
        return;
    }
    const char *path = SANDBOX_PATH;
    for (char **e = envp; *e; e++)
        if (!strncmp(*e, "PATH=", 5))
            path = *e + 5;
    for (const char *s = path;;) {
        size_t len = strcspn(s, ":");
        env_set_raw(out, len ? xasprintf("%.*s/%s", (int)len, s, prog) : xstrdup(prog));
        if (!s[len])
            break;
        s += len + 1;
    }
}

/* ---- limits ---- */

static void add_rlimit(struct sandbox_job_head *h, int resource, rlim_t soft, rlim_t hard)
{
    struct rlimit cur;
    if (getrlimit(resource, &cur) == 0 && cur.rlim_max != RLIM_INFINITY) {
        if (hard > cur.rlim_max)
            hard = cur.rlim_max;
        if (soft > hard)
            soft = hard;
    }
    h->rlimits[h->nrlimits].resource = resource;
    h->rlimits[h->nrlimits].value.rlim_cur = soft;
    h->rlimits[h->nrlimits].value.rlim_max = hard;
    h->nrlimits++;
}

static int read_cap_last(void)
{
    static int cached = -1;
    if (cached >= 0)
        return cached;
    FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "r");
    int v = CAP_LAST_CAP;
    if (f) {
        if (fscanf(f, "%d", &v) != 1)
            v = CAP_LAST_CAP;
        fclose(f);
    }
    cached = v;
    return v;
}

static void build_limits(struct sandbox_job_head *h, const struct sandbox_limits *l, bool full,
                         struct plan_cgroup cgroup)
{
    const rlim_t mib = 1 << 20;
    if (l->cpu_seconds > 0)
        add_rlimit(h, RLIMIT_CPU, (rlim_t)l->cpu_seconds, (rlim_t)l->cpu_seconds + 1);
    if (l->memory_mb > 0 && !cgroup.memory)
        add_rlimit(h, RLIMIT_AS, (rlim_t)l->memory_mb * mib, (rlim_t)l->memory_mb * mib);
    /* Counted per uid (per user namespace on recent kernels): only
     * meaningful for a sandbox's own uid, so not with isolation none. The
     * init counts too. With a pids cgroup this is only a backstop. */
    if (l->pids > 0 && full) {
        rlim_t n = (rlim_t)l->pids + (cgroup.pids ? 2 : 1);
        add_rlimit(h, RLIMIT_NPROC, n, n);
    }
    long file_mb = l->file_mb > 0 ? l->file_mb : l->disk_mb;
    if (file_mb > 0)
        add_rlimit(h, RLIMIT_FSIZE, (rlim_t)file_mb * mib, (rlim_t)file_mb * mib);
    if (l->open_files > 0)
        add_rlimit(h, RLIMIT_NOFILE, (rlim_t)l->open_files, (rlim_t)l->open_files);
    add_rlimit(h, RLIMIT_CORE, 0, 0);
}

int sandbox_job_build(struct buf *out, const struct sandbox_spec *spec, const char *dir,
                      struct plan_cgroup cgroup)
{
    struct sandbox_job_head h;
    struct env_list env = {NULL, 0, 0}, paths = {NULL, 0, 0};
    size_t nargv = 0;
    int rc = 0;
    memset(&h, 0, sizeof h);
    buf_init(out, SANDBOX_JOB_MAX);
    if ((rc = build_env(&env, spec, dir)) < 0)
        goto cleanup;
    exec_paths(&paths, spec->argv[0], env.v);
    while (spec->argv[nargv])
        nargv++;
    h.nargv = (uint32_t)nargv;
    h.nenv = (uint32_t)env.n;
    h.npaths = (uint32_t)paths.n;
    build_limits(&h, &spec->limits, spec->isolation == SANDBOX_ISOLATION_FULL, cgroup);
    if (nargv + env.n + paths.n + 3 > SANDBOX_JOB_PTRS) {
        rc = error_setc(TH_EUSAGE,
                        "the command has too many arguments for the sandbox (at most "
                        "%d with the environment)",
                        SANDBOX_JOB_PTRS - 3 - (int)(env.n + paths.n));
        goto cleanup;
    }
    bool fits = buf_append(out, &h, sizeof h) == 0 && buf_append(out, dir, strlen(dir) + 1) == 0;
    for (size_t i = 0; fits && i < nargv; i++)
        fits = buf_append(out, spec->argv[i], strlen(spec->argv[i]) + 1) == 0;
    for (size_t i = 0; fits && i < env.n; i++)
        fits = buf_append(out, env.v[i], strlen(env.v[i]) + 1) == 0;
    for (size_t i = 0; fits && i < paths.n; i++)
        fits = buf_append(out, paths.v[i], strlen(paths.v[i]) + 1) == 0;
    if (!fits)
        rc = error_setc(TH_EUSAGE,
                        "the command and its environment exceed the sandbox's limit of %d KiB",
                        SANDBOX_JOB_MAX / 1024);
cleanup:
    free_list(&env);
    free_list(&paths);
    if (rc < 0)
        buf_free(out);
    return rc;
}

/* ---- public ---- */

static void add_root(struct plan_builder *b, bool network)
{
    for (const char *const *d = system_dirs; *d; d++)
        add_host_entry(b, *d, *d);
    add_etc(b, network);
    add_dev(b);
    static const char *const mount_points[] = {"/work", "/tmp", "/proc", "/var", NULL};
    for (const char *const *m = mount_points; *m; m++)
        add_op(b, PLAN_DIR, *m);
    add_op(b, PLAN_SYMLINK, "/var/tmp")->src = xstrdup("/tmp");
}

/* The root's part of the plan comes from the host (its /etc, its merged or
 * split /usr) and changes rarely: it is computed once per ROOT_CACHE_SECONDS
 * for each network setting and copied into each plan. */
#define ROOT_CACHE_SECONDS 60

static struct root_cache {
    struct sandbox_plan ops; /* only ops and nops are used */
    time_t made;
} root_cache[2];

static void copy_root(struct plan_builder *b, bool network)
{
    struct root_cache *c = &root_cache[network];
    time_t now = time(NULL);
    if (!c->made || now - c->made > ROOT_CACHE_SECONDS || now < c->made) {
        sandbox_plan_free(&c->ops);
        struct plan_builder cb = {&c->ops, 0};
        add_root(&cb, network);
        c->made = now;
    }
    for (size_t i = 0; i < c->ops.nops; i++) {
        const struct plan_op *from = &c->ops.ops[i];
        struct plan_op *op = add_op(b, from->kind, "");
        free(op->path);
        op->path = xstrdup(from->path);
        op->src = from->src ? xstrdup(from->src) : NULL;
        if (from->data) {
            op->data = xmalloc(from->len + 1);
            memcpy(op->data, from->data, from->len + 1);
        }
        op->len = from->len;
        op->src_is_dir = from->src_is_dir;
    }
}

int sandbox_plan_build(struct sandbox_plan *p, const struct sandbox_spec *spec,
                       const struct sandbox_ids *ids)
{
    struct plan_builder b = {p, 0};
    int rc = 0;
    memset(p, 0, sizeof *p);
    p->sock_fd = p->out_fd = p->err_fd = -1;
    p->full = spec->isolation == SANDBOX_ISOLATION_FULL;
    p->network = spec->network;
    p->setgroups = ids->root_mode;
    p->cgroup_ns = access("/proc/self/ns/cgroup", F_OK) == 0;
    p->inner_uid = SANDBOX_INNER_ID;
    p->inner_gid = SANDBOX_INNER_ID;
    p->cap_last = read_cap_last();
    if (!sandbox_seccomp_filter(&p->filter))
        log_warn("no seccomp filter for this architecture: sandboxed programs can make every "
                 "system call the namespaces allow");
    if (p->full) {
        long mb = spec->limits.disk_mb;
        long inodes = mb * 64 < 16384 ? 16384 : (mb * 64 > 1048576 ? 1048576 : mb * 64);
        p->root_opts = xstrdup("size=4m,nr_inodes=4096,mode=0755");
        p->data_opts = xasprintf("size=%ldm,nr_inodes=%ld,mode=0755", mb, inodes);
        copy_root(&b, spec->network);
        for (char *const *x = spec->binds; x && *x && rc == 0; x++)
            rc = add_extra_bind(&b, *x);
    } else if (spec->binds && spec->binds[0]) {
        log_warn("sandbox binds are ignored with isolation \"none\": the program sees the "
                 "whole host");
    }
    if (rc < 0)
        sandbox_plan_free(p);
    else
        p->src_fds = xcalloc(p->nops ? p->nops : 1, sizeof *p->src_fds);
    return rc;
}

void sandbox_plan_free(struct sandbox_plan *p)
{
    for (size_t i = 0; i < p->nops; i++) {
        free(p->ops[i].path);
        free(p->ops[i].src);
        free(p->ops[i].data);
    }
    free(p->ops);
    free(p->src_fds);
    free(p->root_opts);
    free(p->data_opts);
    for (char **t = p->cgroup_tasks; t && *t; t++)
        free(*t);
    free(p->cgroup_tasks);
    memset(p, 0, sizeof *p);
}

/* ---- the plan in one mapping ---- */

struct packer {
    char *base;
    size_t used, size; /* with base NULL: only counting */
};

static void *pack_bytes(struct packer *k, const void *data, size_t len)
{
    size_t at = (k->used + 15) & ~(size_t)15;
    k->used = at + len;
    if (!k->base)
        return NULL;
    if (data)
        memcpy(k->base + at, data, len);
    return k->base + at;
}

static char *pack_str(struct packer *k, const char *s)
{
    return s ? pack_bytes(k, s, strlen(s) + 1) : NULL;
}

/* Lays in out (pointing into k's mapping, when it has one) the copy of in. */
static void pack_into(struct packer *k, const struct sandbox_plan *in, struct sandbox_plan *out)
{
    *out = *in;
    out->ops = pack_bytes(k, in->ops, in->nops * sizeof *in->ops);
    for (size_t i = 0; i < in->nops; i++) {
        const struct plan_op *op = &in->ops[i];
        char *path = pack_str(k, op->path), *src = pack_str(k, op->src);
        char *data = op->data ? pack_bytes(k, op->data, op->len + 1) : NULL;
        if (k->base) {
            out->ops[i].path = path;
            out->ops[i].src = src;
            out->ops[i].data = data;
        }
    }
    out->src_fds = pack_bytes(k, in->src_fds, (in->nops ? in->nops : 1) * sizeof *in->src_fds);
    out->root_opts = pack_str(k, in->root_opts);
    out->data_opts = pack_str(k, in->data_opts);
    if (in->filter.filter)
        out->filter.filter =
            pack_bytes(k, in->filter.filter, in->filter.len * sizeof *in->filter.filter);
    size_t ntasks = 0;
    while (in->cgroup_tasks && in->cgroup_tasks[ntasks])
        ntasks++;
    out->cgroup_tasks =
        in->cgroup_tasks ? pack_bytes(k, NULL, (ntasks + 1) * sizeof(char *)) : NULL;
    for (size_t i = 0; i < ntasks; i++) {
        char *t = pack_str(k, in->cgroup_tasks[i]);
        if (k->base)
            out->cgroup_tasks[i] = t;
    }
    if (k->base && out->cgroup_tasks)
        out->cgroup_tasks[ntasks] = NULL;
    out->job_buf = pack_bytes(k, NULL, SANDBOX_JOB_MAX);
    out->job_ptrs = pack_bytes(k, NULL, SANDBOX_JOB_PTRS * sizeof(char *));
}

int sandbox_plan_pack(const struct sandbox_plan *in, struct sandbox_plan *out, void **region,
                      size_t *size)
{
    struct packer k = {NULL, 0, 0};
    pack_into(&k, in, out);
    size_t len = (k.used + 4095) & ~(size_t)4095;
    void *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return error_set("cannot set up the sandbox: %s", strerror(errno));
    k = (struct packer){base, 0, len};
    pack_into(&k, in, out);
    *region = base;
    *size = len;
    return 0;
}
