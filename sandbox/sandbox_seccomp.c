/*
 * sandbox_seccomp: the seccomp BPF filter of every sandboxed process.
 *
 * Namespaces already confine most of what a process can reach; the filter
 * removes what experiments never need and what stays dangerous inside
 * namespaces (kernel attack surface, or a way around the set-up): ptrace and
 * cross-process memory access, every mount API (the set-up is finished when
 * the filter is installed), kexec, bpf, perf_event_open, the keyring,
 * userfaultfd, io_uring, new namespaces (unshare, setns, clone with
 * CLONE_NEW* flags), file handles, kernel modules, reboot, swap, accounting,
 * clock setting, personality changes other than the harmless ones, and the
 * terminal-injection ioctls. A blocked call fails with EPERM, so programs
 * see an ordinary error; clone3 fails with ENOSYS, which makes glibc fall
 * back to clone, whose flags the filter can inspect. A system call of
 * another architecture (int 0x80 on x86_64) or of the x32 ABI kills the
 * process. The program is written by hand with the macros of
 * linux/filter.h, built once. Depends on Linux headers.
 */
#define _GNU_SOURCE
#include "sandbox_internal.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#if defined(__x86_64__)
#define FILTER_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define FILTER_ARCH AUDIT_ARCH_AARCH64
#endif

#ifdef FILTER_ARCH

#ifndef __X32_SYSCALL_BIT
#define __X32_SYSCALL_BIT 0x40000000
#endif

#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ARG_LO(n) (offsetof(struct seccomp_data, args[n]))
#else
#define ARG_LO(n) (offsetof(struct seccomp_data, args[n]) + 4)
#endif

/* clone() flags that create namespaces (CLONE_NEWTIME is not one clone()
 * takes: its bit is part of the exit signal there). */
#define NEW_NAMESPACE_FLAGS                                                                        \
    (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |  \
     CLONE_NEWNET)

#define RET(v)         BPF_STMT(BPF_RET | BPF_K, (v))
#define DENY(e)        RET(SECCOMP_RET_ERRNO | ((e)&SECCOMP_RET_DATA))
#define LOAD(off)      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (off))
#define IF_EQ(v, t, f) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (v), (t), (f))
/* "if nr == x: return EPERM" */
#define BLOCK(nr) IF_EQ((nr), 0, 1), DENY(EPERM)

static struct sock_filter program[] = {
    LOAD(offsetof(struct seccomp_data, arch)),
    IF_EQ(FILTER_ARCH, 1, 0),
    RET(SECCOMP_RET_KILL_PROCESS),
    LOAD(offsetof(struct seccomp_data, nr)),
#ifdef __x86_64__
    BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, __X32_SYSCALL_BIT, 0, 1),
    RET(SECCOMP_RET_KILL_PROCESS),
#endif

    /* debugging other processes */
    BLOCK(__NR_ptrace),
    BLOCK(__NR_process_vm_readv),
    BLOCK(__NR_process_vm_writev),
#ifdef __NR_pidfd_getfd
    BLOCK(__NR_pidfd_getfd),
#endif
    /* file systems and namespaces */
    BLOCK(__NR_mount),
    BLOCK(__NR_umount2),
    BLOCK(__NR_pivot_root),
    BLOCK(__NR_chroot),
#ifdef __NR_open_tree
    BLOCK(__NR_open_tree),
    BLOCK(__NR_move_mount),
    BLOCK(__NR_fsopen),
    BLOCK(__NR_fsconfig),
    BLOCK(__NR_fsmount),
    BLOCK(__NR_fspick),
#endif
#ifdef __NR_mount_setattr
    BLOCK(__NR_mount_setattr),
#endif
    BLOCK(__NR_unshare),
    BLOCK(__NR_setns),
    BLOCK(__NR_open_by_handle_at),
    BLOCK(__NR_name_to_handle_at),
    BLOCK(__NR_quotactl),
#ifdef __NR_quotactl_fd
    BLOCK(__NR_quotactl_fd),
#endif
    BLOCK(__NR_swapon),
    BLOCK(__NR_swapoff),
    BLOCK(__NR_acct),
    /* kernel attack surface */
    BLOCK(__NR_kexec_load),
#ifdef __NR_kexec_file_load
    BLOCK(__NR_kexec_file_load),
#endif
    BLOCK(__NR_bpf),
    BLOCK(__NR_perf_event_open),
    BLOCK(__NR_keyctl),
    BLOCK(__NR_add_key),
    BLOCK(__NR_request_key),
    BLOCK(__NR_userfaultfd),
#ifdef __NR_io_uring_setup
    BLOCK(__NR_io_uring_setup),
    BLOCK(__NR_io_uring_enter),
    BLOCK(__NR_io_uring_register),
#endif
    BLOCK(__NR_init_module),
    BLOCK(__NR_finit_module),
    BLOCK(__NR_delete_module),
    BLOCK(__NR_reboot),
    BLOCK(__NR_syslog),
    BLOCK(__NR_vhangup),
    BLOCK(__NR_fanotify_init),
#ifdef __NR_lookup_dcookie
    BLOCK(__NR_lookup_dcookie),
#endif
#ifdef __NR_uselib
    BLOCK(__NR_uselib),
#endif
#ifdef __NR_iopl
    BLOCK(__NR_iopl),
    BLOCK(__NR_ioperm),
#endif
    BLOCK(__NR_settimeofday),
    BLOCK(__NR_clock_settime),
    BLOCK(__NR_clock_adjtime),
    BLOCK(__NR_sethostname),
    BLOCK(__NR_setdomainname),

/* clone3 keeps its flags in memory the filter cannot read */
#ifdef __NR_clone3
    IF_EQ(__NR_clone3, 0, 1),
    DENY(ENOSYS),
#endif
    /* clone: no new namespaces */
    IF_EQ(__NR_clone, 0, 4),
    LOAD(ARG_LO(0)),
    BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, NEW_NAMESPACE_FLAGS, 0, 1),
    DENY(EPERM),
    RET(SECCOMP_RET_ALLOW),
    /* personality: only querying and the harmless personas */
    IF_EQ(__NR_personality, 0, 8),
    LOAD(ARG_LO(0)),
    IF_EQ(0x0, 5, 0),        /* PER_LINUX */
    IF_EQ(0x8, 4, 0),        /* PER_LINUX32 */
    IF_EQ(0x20000, 3, 0),    /* UNAME26 */
    IF_EQ(0x20008, 2, 0),    /* UNAME26 | PER_LINUX32 */
    IF_EQ(0xffffffff, 1, 0), /* query */
    DENY(EPERM),
    RET(SECCOMP_RET_ALLOW),
    /* ioctl: no faking terminal input */
    IF_EQ(__NR_ioctl, 0, 4),
    LOAD(ARG_LO(1)),
    IF_EQ(TIOCSTI, 1, 0),
    IF_EQ(TIOCLINUX, 0, 1),
    DENY(EPERM),

    RET(SECCOMP_RET_ALLOW),
};

bool sandbox_seccomp_filter(struct sock_fprog *out)
{
    out->len = (unsigned short)(sizeof program / sizeof program[0]);
    out->filter = program;
    return true;
}

#else

bool sandbox_seccomp_filter(struct sock_fprog *out)
{
    out->len = 0;
    out->filter = NULL;
    return false;
}

#endif
