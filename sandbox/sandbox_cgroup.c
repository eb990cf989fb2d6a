/*
 * sandbox_cgroup: the cgroups of a sandbox, wherever the host delegates
 * them.
 *
 * Four functions are wanted: a memory limit (with peak usage and OOM-kill
 * counts), a pids limit (with a count of refused forks), CPU accounting of
 * every process, and killing everything at once. Each is taken from the
 * cgroup v2 hierarchy when the controller is enabled there, else from the
 * cgroup v1 hierarchy that has it (memory, pids, cpuacct), else it is
 * missing and the caller falls back to rlimits. A function is usable only
 * when this process can create a child of its own cgroup in that hierarchy
 * (probed once with mkdir and rmdir). Each sandbox gets a directory named
 * thalamus-PID-N in every hierarchy used; directories left by a thalamus
 * that died are removed when the next one starts. Depends on alloc, buf,
 * error, log and sandbox_internal.h.
 */
#define _GNU_SOURCE
#include "sandbox_internal.h"

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum cg_func {
    CG_MEMORY,
    CG_PIDS,
    CG_CPU,
    CG_KILL,
    CG_NFUNC,
};

/* Where this process can create child cgroups for one function. */
struct cg_base {
    char *dir; /* our own cgroup's directory; NULL: function unavailable */
    bool v2;
};

struct cg_discovery {
    bool done;
    struct cg_base base[CG_NFUNC];
    char *why_not;
};

static struct cg_discovery disc;

struct sandbox_cgroup {
    char *dirs[CG_NFUNC]; /* distinct directories created */
    bool v2[CG_NFUNC];
    size_t ndirs;
    int func_dir[CG_NFUNC]; /* index into dirs, or -1 */
};

/* ---- small file helpers ---- */

static int write_text(const char *dir, const char *file, const char *text)
{
    char *path = xasprintf("%s/%s", dir, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    int rc = 0;
    if (fd < 0 || write(fd, text, strlen(text)) < 0)
        rc = -1;
    int saved = errno;
    if (fd >= 0)
        close(fd);
    free(path);
    errno = saved;
    return rc;
}

/* Reads a small file; NULL when missing. The caller frees. */
static char *read_text(const char *dir, const char *file)
{
    char *path = file ? xasprintf("%s/%s", dir, file) : xstrdup(dir);
    struct buf b;
    buf_init(&b, 1 << 20);
    char *text = NULL;
    if (buf_read_file(&b, path) == 0)
        text = buf_detach(&b, NULL);
    else
        error_clear();
    buf_free(&b);
    free(path);
    return text;
}

/* The number after "key " on a line of a flat-keyed file. */
static bool keyed_value(const char *text, const char *key, uint64_t *out)
{
    size_t n = strlen(key);
    for (const char *line = text; line && *line;) {
        if (!strncmp(line, key, n) && line[n] == ' ') {
            *out = strtoull(line + n + 1, NULL, 10);
            return true;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return false;
}

static bool has_word(const char *list, const char *word, const char *seps)
{
    size_t n = strlen(word);
    for (const char *s = list; s && *s;) {
        size_t len = strcspn(s, seps);
        if (len == n && !strncmp(s, word, n))
            return true;
        s += len;
        s += strspn(s, seps);
    }
    return false;
}

/* ---- discovery ---- */

struct mount_entry {
    char *root, *point, *type, *opts;
};

static void mounts_free(struct mount_entry *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(m[i].root);
        free(m[i].point);
        free(m[i].type);
        free(m[i].opts);
    }
    free(m);
}

/* The cgroup mounts of /proc/self/mountinfo. */
static struct mount_entry *cgroup_mounts(size_t *n_out)
{
    char *text = read_text("/proc/self/mountinfo", NULL);
    struct mount_entry *m = NULL;
    size_t n = 0, cap = 0;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *fields[16];
        int nf = 0;
        for (char *save = NULL, *tok = strtok_r(line, " ", &save); tok && nf < 16;
             tok = strtok_r(NULL, " ", &save))
            fields[nf++] = tok;
        int dash = -1;
        for (int i = 6; i < nf; i++)
            if (!strcmp(fields[i], "-")) {
                dash = i;
                break;
            }
        if (dash < 0 || dash + 3 >= nf + 1 || dash + 1 >= nf)
            continue;
        const char *type = fields[dash + 1];
        if (strcmp(type, "cgroup") && strcmp(type, "cgroup2"))
            continue;
        if (n == cap)
            m = xreallocarray(m, cap = cap ? 2 * cap : 16, sizeof *m);
        m[n].root = xstrdup(fields[3]);
        m[n].point = xstrdup(fields[4]);
        m[n].type = xstrdup(type);
        m[n].opts = xstrdup(dash + 3 < nf ? fields[dash + 3] : "");
        n++;
    }
    free(text);
    *n_out = n;
    return m;
}

/* Our cgroup's directory in mount m for the cgroup path path. */
static char *cgroup_dir(const struct mount_entry *m, const char *path)
{
    size_t rl = strlen(m->root);
    if (!strcmp(m->root, "/"))
        return xasprintf("%s%s", m->point, strcmp(path, "/") ? path : "");
    if (strncmp(path, m->root, rl) || (path[rl] && path[rl] != '/'))
        return NULL;
    return xasprintf("%s%s", m->point, path + rl);
}

/* Whether this process may create (and remove) a child cgroup in dir; and
 * whether such a child has the file named has (may be NULL). */
static bool can_create_child(const char *dir, const char *has, bool *has_it)
{
    char *probe = xasprintf("%s/thalamus-probe-%ld", dir, (long)getpid());
    bool ok = mkdir(probe, 0755) == 0;
    if (ok && has) {
        char *file = xasprintf("%s/%s", probe, has);
        *has_it = access(file, F_OK) == 0;
        free(file);
    }
    if (ok)
        rmdir(probe);
    free(probe);
    return ok;
}

/* Removes the thalamus-PID-N directories, and the thalamus-probe-PID ones
 * (can_create_child()), of processes that no longer exist. */
static void remove_stale(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));) {
        long pid;
        if ((sscanf(e->d_name, "thalamus-%ld-", &pid) != 1 &&
             sscanf(e->d_name, "thalamus-probe-%ld", &pid) != 1) ||
            pid <= 0 || pid == (long)getpid())
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        char *path = xasprintf("%s/%s", dir, e->d_name);
        if (rmdir(path) == 0)
            log_debug("removed the stale cgroup '%s'", path);
        free(path);
    }
    closedir(d);
}

static void set_base(enum cg_func f, const char *dir, bool v2)
{
    disc.base[f].dir = xstrdup(dir);
    disc.base[f].v2 = v2;
}

static void discover(void)
{
    if (disc.done)
        return;
    disc.done = true;
    size_t nm = 0;
    struct mount_entry *mounts = cgroup_mounts(&nm);
    char *self = read_text("/proc/self/cgroup", NULL);
    char *v2dir = NULL;
    bool v2_writable = false;
    /* cgroup v2 */
    for (char *line = self; line && *line;) {
        if (!strncmp(line, "0::", 3)) {
            size_t len = strcspn(line + 3, "\n");
            char *path = xstrndup(line + 3, len);
            for (size_t i = 0; i < nm && !v2dir; i++)
                if (!strcmp(mounts[i].type, "cgroup2"))
                    v2dir = cgroup_dir(&mounts[i], path);
            free(path);
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    bool v2_kill = false;
    if (v2dir && (v2_writable = can_create_child(v2dir, "cgroup.kill", &v2_kill))) {
        char *controllers = read_text(v2dir, "cgroup.controllers");
        char *subtree = read_text(v2dir, "cgroup.subtree_control");
        static const char *const wanted[] = {"memory", "pids"};
        for (int i = 0; i < 2; i++) {
            if (!has_word(controllers, wanted[i], " \n"))
                continue;
            bool enabled = has_word(subtree, wanted[i], " \n");
            if (!enabled) {
                char *plus = xasprintf("+%s", wanted[i]);
                enabled = write_text(v2dir, "cgroup.subtree_control", plus) == 0;
                free(plus);
            }
            if (enabled)
                set_base(i == 0 ? CG_MEMORY : CG_PIDS, v2dir, true);
        }
        set_base(CG_CPU, v2dir, true);
        if (v2_kill)
            set_base(CG_KILL, v2dir, true);
        free(controllers);
        free(subtree);
        remove_stale(v2dir);
    }
    /* cgroup v1, for what v2 does not give */
    for (char *line = self; line && *line;) {
        char *colon1 = strchr(line, ':');
        char *colon2 = colon1 ? strchr(colon1 + 1, ':') : NULL;
        char *end = strchr(line, '\n');
        if (!end)
            end = line + strlen(line);
        if (colon2 && colon2 < end && colon1[1] != ':') {
            char *controllers = xstrndup(colon1 + 1, (size_t)(colon2 - colon1 - 1));
            char *path = xstrndup(colon2 + 1, (size_t)(end - colon2 - 1));
            static const struct {
                enum cg_func func;
                const char *controller;
            } v1[] = {{CG_MEMORY, "memory"}, {CG_PIDS, "pids"}, {CG_CPU, "cpuacct"}};
            for (size_t k = 0; k < sizeof v1 / sizeof v1[0]; k++) {
                if (disc.base[v1[k].func].dir || !has_word(controllers, v1[k].controller, ","))
                    continue;
                for (size_t i = 0; i < nm; i++) {
                    if (strcmp(mounts[i].type, "cgroup") ||
                        !has_word(mounts[i].opts, v1[k].controller, ","))
                        continue;
                    char *dir = cgroup_dir(&mounts[i], path);
                    if (dir && can_create_child(dir, NULL, NULL)) {
                        set_base(v1[k].func, dir, false);
                        remove_stale(dir);
                    }
                    free(dir);
                    break;
                }
            }
            free(controllers);
            free(path);
        }
        line = *end ? end + 1 : end;
    }
    if (!disc.base[CG_KILL].dir) {
        /* kill through the pids or memory hierarchy's list of processes */
        enum cg_func from = disc.base[CG_PIDS].dir ? CG_PIDS : CG_MEMORY;
        if (disc.base[from].dir)
            set_base(CG_KILL, disc.base[from].dir, disc.base[from].v2);
    }
    if (!disc.base[CG_MEMORY].dir || !disc.base[CG_PIDS].dir) {
        if (!v2dir && nm == 0)
            disc.why_not = xstrdup("no cgroup file system is mounted");
        else if (v2dir && !v2_writable && geteuid() != 0)
            disc.why_not = xasprintf("this user cannot create cgroups under '%s'; with systemd, "
                                     "run thalamus under 'systemd-run --user --scope -p "
                                     "Delegate=yes'",
                                     v2dir);
        else
            disc.why_not = xstrdup("the host does not delegate these controllers to this "
                                   "process's cgroup");
    }
    free(v2dir);
    free(self);
    mounts_free(mounts, nm);
}

/* ---- one sandbox's cgroups ---- */

int sandbox_cgroup_create(struct sandbox_cgroup **out)
{
    static unsigned seq;
    discover();
    *out = NULL;
    struct sandbox_cgroup *cg = xcalloc(1, sizeof *cg);
    unsigned n = ++seq;
    for (int f = 0; f < CG_NFUNC; f++) {
        cg->func_dir[f] = -1;
        const struct cg_base *b = &disc.base[f];
        if (!b->dir)
            continue;
        char *dir = xasprintf("%s/thalamus-%ld-%u", b->dir, (long)getpid(), n);
        for (size_t i = 0; i < cg->ndirs; i++)
            if (!strcmp(cg->dirs[i], dir))
                cg->func_dir[f] = (int)i;
        if (cg->func_dir[f] >= 0) {
            free(dir);
            continue;
        }
        if (mkdir(dir, 0755) < 0) {
            int rc = error_set("cannot create the sandbox's cgroup '%s': %s", dir, strerror(errno));
            free(dir);
            sandbox_cgroup_destroy(cg);
            return rc;
        }
        cg->func_dir[f] = (int)cg->ndirs;
        cg->v2[cg->ndirs] = b->v2;
        cg->dirs[cg->ndirs++] = dir;
    }
    if (cg->ndirs == 0) {
        free(cg);
        return 0;
    }
    *out = cg;
    return 0;
}

int sandbox_cgroup_set_limits(struct sandbox_cgroup *cg, long memory_mb, long pids)
{
    int i = cg->func_dir[CG_MEMORY];
    if (i >= 0) {
        /* 0: no limit ("max" in v2, -1 in v1) */
        char *value = memory_mb > 0 ? xasprintf("%lld", (long long)memory_mb << 20)
                                    : xstrdup(cg->v2[i] ? "max" : "-1");
        int rc = 0;
        /* v1: memsw must stay >= the limit, so order the two writes by direction */
        if (!cg->v2[i])
            write_text(cg->dirs[i], "memory.memsw.limit_in_bytes", "-1");
        if (write_text(cg->dirs[i], cg->v2[i] ? "memory.max" : "memory.limit_in_bytes", value) < 0)
            rc = error_set("cannot set the sandbox's memory limit in '%s': %s", cg->dirs[i],
                           strerror(errno));
        /* no swapping around the limit (where swap accounting exists) */
        else if (cg->v2[i])
            write_text(cg->dirs[i], "memory.swap.max", "0");
        else
            write_text(cg->dirs[i], "memory.memsw.limit_in_bytes", value);
        free(value);
        if (rc < 0)
            return rc;
    }
    i = cg->func_dir[CG_PIDS];
    if (i >= 0) {
        /* the sandbox's init counts too */
        char *max = pids > 0 ? xasprintf("%ld", pids + 1) : xstrdup("max");
        int rc = 0;
        if (write_text(cg->dirs[i], "pids.max", max) < 0)
            rc = error_set("cannot set the sandbox's pids limit in '%s': %s", cg->dirs[i],
                           strerror(errno));
        free(max);
        if (rc < 0)
            return rc;
    }
    return 0;
}

char **sandbox_cgroup_v1_tasks(const struct sandbox_cgroup *cg)
{
    char **tasks = xcalloc(CG_NFUNC + 1, sizeof *tasks);
    size_t n = 0;
    for (size_t i = 0; cg && i < cg->ndirs; i++)
        if (!cg->v2[i])
            tasks[n++] = xasprintf("%s/tasks", cg->dirs[i]);
    return tasks;
}

int sandbox_cgroup_v2_fd(const struct sandbox_cgroup *cg)
{
    for (size_t i = 0; cg && i < cg->ndirs; i++)
        if (cg->v2[i])
            return open(cg->dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return -1;
}

int sandbox_cgroup_attach_v2(struct sandbox_cgroup *cg, pid_t pid)
{
    char text[32];
    snprintf(text, sizeof text, "%ld", (long)pid);
    for (size_t i = 0; cg && i < cg->ndirs; i++)
        if (cg->v2[i] && write_text(cg->dirs[i], "cgroup.procs", text) < 0)
            return error_set("cannot move the sandbox into the cgroup '%s': %s", cg->dirs[i],
                             strerror(errno));
    return 0;
}

bool sandbox_cgroup_limits_memory(const struct sandbox_cgroup *cg)
{
    return cg && cg->func_dir[CG_MEMORY] >= 0;
}

bool sandbox_cgroup_limits_pids(const struct sandbox_cgroup *cg)
{
    return cg && cg->func_dir[CG_PIDS] >= 0;
}

bool sandbox_cgroup_counts_cpu(const struct sandbox_cgroup *cg)
{
    return cg && cg->func_dir[CG_CPU] >= 0;
}

void sandbox_cgroup_stats(struct sandbox_cgroup *cg, struct sandbox_cgroup_stats *st)
{
    memset(st, 0, sizeof *st);
    if (!cg)
        return;
    int i = cg->func_dir[CG_MEMORY];
    if (i >= 0) {
        const char *dir = cg->dirs[i];
        char *peak = read_text(dir, cg->v2[i] ? "memory.peak" : "memory.max_usage_in_bytes");
        char *events = read_text(dir, cg->v2[i] ? "memory.events" : "memory.oom_control");
        st->has_memory = true;
        st->peak_bytes = peak ? strtoull(peak, NULL, 10) : 0;
        if (events)
            keyed_value(events, "oom_kill", &st->oom_kills);
        free(peak);
        free(events);
    }
    i = cg->func_dir[CG_PIDS];
    if (i >= 0) {
        char *events = read_text(cg->dirs[i], "pids.events");
        st->has_pids = true;
        if (events)
            keyed_value(events, "max", &st->pids_max_hits);
        free(events);
    }
    i = cg->func_dir[CG_CPU];
    if (i >= 0) {
        uint64_t v = 0;
        if (cg->v2[i]) {
            char *stat = read_text(cg->dirs[i], "cpu.stat");
            if (stat && keyed_value(stat, "usage_usec", &v)) {
                st->has_cpu = true;
                st->cpu_ns = v * 1000;
            }
            free(stat);
        } else {
            char *usage = read_text(cg->dirs[i], "cpuacct.usage");
            if (usage) {
                st->has_cpu = true;
                st->cpu_ns = strtoull(usage, NULL, 10);
            }
            free(usage);
        }
    }
}

/* SIGKILL to every pid listed in dir's cgroup.procs; returns how many. */
static int kill_listed(const char *dir)
{
    char *procs = read_text(dir, "cgroup.procs");
    int n = 0;
    for (char *s = procs; s && *s;) {
        long pid = strtol(s, &s, 10);
        if (pid > 0 && kill((pid_t)pid, SIGKILL) == 0)
            n++;
        while (*s == '\n')
            s++;
        if (*s && (*s < '0' || *s > '9'))
            break;
    }
    free(procs);
    return n;
}

void sandbox_cgroup_kill(struct sandbox_cgroup *cg)
{
    if (!cg || cg->func_dir[CG_KILL] < 0)
        return;
    int i = cg->func_dir[CG_KILL];
    if (cg->v2[i] && write_text(cg->dirs[i], "cgroup.kill", "1") == 0)
        return;
    for (int round = 0; round < 100 && kill_listed(cg->dirs[i]) > 0; round++)
        ;
}

void sandbox_cgroup_destroy(struct sandbox_cgroup *cg)
{
    if (!cg)
        return;
    for (size_t i = 0; i < cg->ndirs; i++) {
        /* Killed processes leave the cgroup as they exit: retry briefly. */
        for (int attempt = 0; rmdir(cg->dirs[i]) < 0 && errno == EBUSY && attempt < 200;
             attempt++) {
            if (attempt == 0)
                sandbox_cgroup_kill(cg);
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        free(cg->dirs[i]);
    }
    free(cg);
}

/* ---- for `sandbox check` ---- */

static char *describe(enum cg_func f)
{
    const struct cg_base *b = &disc.base[f];
    if (!b->dir)
        return NULL;
    return xasprintf("cgroup %s under %s", b->v2 ? "v2" : "v1", b->dir);
}

void sandbox_cgroup_support(struct sandbox_cgroup_support *out)
{
    discover();
    out->memory = describe(CG_MEMORY);
    out->pids = describe(CG_PIDS);
    out->cpu = describe(CG_CPU);
    out->kill = describe(CG_KILL);
    out->why_not = disc.why_not ? xstrdup(disc.why_not) : NULL;
}

void sandbox_cgroup_support_free(struct sandbox_cgroup_support *s)
{
    free(s->memory);
    free(s->pids);
    free(s->cpu);
    free(s->kill);
    free(s->why_not);
}
