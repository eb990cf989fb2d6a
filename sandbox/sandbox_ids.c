/*
 * sandbox_ids: which host uid and gid a sandbox runs as.
 *
 * Mapping the sandbox's user to host root would make every file root owns
 * on a bind the sandbox's own, and RLIMIT_NPROC toothless. So when thalamus
 * runs as root (and the range is mapped in its user namespace), each
 * sandbox gets a uid and gid of its own, SANDBOX_UID_BASE + slot, that no
 * file on the host belongs to; a slot is claimed with an open-file-
 * description lock on one byte of /run/thalamus/sandbox-uids.lock (so
 * concurrent thalamus processes never share a uid, and a crashed one frees
 * its slots), plus an in-process bitmap (a process's own locks do not
 * conflict with each other). Otherwise the sandbox maps the caller's own
 * uid and gid, which is all an unprivileged user namespace allows. Depends
 * on error, log and sandbox_internal.h.
 */
#define _GNU_SOURCE
#include "sandbox_internal.h"

#include "error.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOCK_DIR  "/run/thalamus"
#define LOCK_FILE LOCK_DIR "/sandbox-uids.lock"

static unsigned char used[SANDBOX_UID_SLOTS / 8];
static int lock_fd = -2; /* -2: not opened yet; -1: unavailable */
static unsigned next_slot;

/* Whether [first, first + count) is inside one line of a uid_map/gid_map. */
static bool range_mapped(const char *map, unsigned long first, unsigned long count)
{
    FILE *f = fopen(map, "r");
    if (!f)
        return false;
    unsigned long inside, outside, n;
    bool ok = false;
    while (!ok && fscanf(f, "%lu %lu %lu", &inside, &outside, &n) == 3)
        ok = first >= inside && first - inside + count <= n;
    fclose(f);
    return ok;
}

bool sandbox_ids_root_mode(void)
{
    static int cached = -1;
    if (cached < 0)
        cached = geteuid() == 0 &&
                 range_mapped("/proc/self/uid_map", SANDBOX_UID_BASE, SANDBOX_UID_SLOTS) &&
                 range_mapped("/proc/self/gid_map", SANDBOX_UID_BASE, SANDBOX_UID_SLOTS);
    return cached == 1;
}

static void open_lock(void)
{
    if (lock_fd != -2)
        return;
    lock_fd = -1;
    if (mkdir(LOCK_DIR, 0755) < 0 && errno != EEXIST) {
        log_debug("cannot create '%s' (%s): sandbox uids are unique within this process only",
                  LOCK_DIR, strerror(errno));
        return;
    }
    lock_fd = open(LOCK_FILE, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lock_fd < 0)
        log_debug("cannot open '%s' (%s): sandbox uids are unique within this process only",
                  LOCK_FILE, strerror(errno));
    next_slot = ((unsigned)getpid() * 2654435761u) % SANDBOX_UID_SLOTS;
}

static bool lock_slot(int slot, short type)
{
    if (lock_fd < 0)
        return true;
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = slot;
    fl.l_len = 1;
    return fcntl(lock_fd, F_OFD_SETLK, &fl) == 0;
}

int sandbox_ids_acquire(struct sandbox_ids *ids)
{
    memset(ids, 0, sizeof *ids);
    ids->slot = -1;
    if (!sandbox_ids_root_mode()) {
        ids->host_uid = geteuid();
        ids->host_gid = getegid();
        return 0;
    }
    open_lock();
    for (unsigned i = 0; i < SANDBOX_UID_SLOTS; i++) {
        unsigned slot = (next_slot + i) % SANDBOX_UID_SLOTS;
        if (used[slot / 8] & (1u << (slot % 8)))
            continue;
        if (!lock_slot((int)slot, F_WRLCK))
            continue;
        used[slot / 8] |= (unsigned char)(1u << (slot % 8));
        next_slot = (slot + 1) % SANDBOX_UID_SLOTS;
        ids->root_mode = true;
        ids->slot = (int)slot;
        ids->host_uid = SANDBOX_UID_BASE + slot;
        ids->host_gid = SANDBOX_UID_BASE + slot;
        return 0;
    }
    return error_set("cannot run a sandbox: all %d sandbox uids are in use", SANDBOX_UID_SLOTS);
}

void sandbox_ids_release(struct sandbox_ids *ids)
{
    if (ids->slot < 0)
        return;
    lock_slot(ids->slot, F_UNLCK);
    used[ids->slot / 8] &= (unsigned char)~(1u << (ids->slot % 8));
    ids->slot = -1;
}
