"""A seccomp-BPF denylist for sandboxed programs, built by hand and installed through prctl (no libseccomp).

What a math program never needs is refused with an errno (so Python raises a clean OSError instead of dying):
namespace and mount calls, ptrace and cross-process memory access, kernel modules, keyrings, bpf, perf,
io_uring, userfaultfd, exec, clone with any CLONE_NEW* flag, clone3 (ENOSYS, so libc falls back to clone, whose
flags the filter can read) and every socket family except AF_UNIX. A foreign architecture or an x32 call kills the
process (the numbers below are x86_64's; other machines get no filter and `available()` says so).
"""
import ctypes
import errno
import platform
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
_RET_ALLOW, _RET_KILL_PROCESS, _RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16  # struct seccomp_data; args[0]'s low 32 bits on little-endian
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_CLONE_NEW_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
_AF_UNIX = 1

DENIED_X86_64 = {  # name -> number (asm/unistd_64.h)
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "pidfd_getfd": 438,
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "move_mount": 429, "open_tree": 428,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    "setns": 308, "unshare": 272, "bpf": 321, "keyctl": 250, "add_key": 248, "request_key": 249,
    "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "init_module": 175, "finit_module": 313, "delete_module": 176, "kexec_load": 246,
    "kexec_file_load": 320, "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "quotactl": 179,
    "quotactl_fd": 443, "open_by_handle_at": 304, "name_to_handle_at": 303, "fanotify_init": 300,
    "lookup_dcookie": 212, "personality": 135, "syslog": 103, "iopl": 172, "ioperm": 173, "uselib": 134,
    "vhangup": 153, "execve": 59, "execveat": 322, "sethostname": 170, "setdomainname": 171,
    "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159,
}  # fmt: skip
_NR_CLONE, _NR_CLONE3, _NR_SOCKET = 56, 435, 41


def available() -> bool:
    return platform.machine() == "x86_64"


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def build_filter() -> bytes:
    """The BPF program (struct sock_filter[]): arch check, x32 kill, then one test per rule, else allow."""
    deny = _RET_ERRNO | errno.EPERM
    prog = [_insn(_LD_W_ABS, _OFF_ARCH), _insn(_JEQ_K, AUDIT_ARCH_X86_64, 1, 0), _insn(_RET_K, _RET_KILL_PROCESS),
            _insn(_LD_W_ABS, _OFF_NR), _insn(_JGE_K, _X32_BIT, 0, 1), _insn(_RET_K, _RET_KILL_PROCESS)]  # fmt: skip
    for number in sorted(DENIED_X86_64.values()):
        prog += [_insn(_JEQ_K, number, 0, 1), _insn(_RET_K, deny)]
    prog += [_insn(_JEQ_K, _NR_CLONE3, 0, 1), _insn(_RET_K, _RET_ERRNO | errno.ENOSYS)]
    # clone: refuse namespace flags (A is reloaded with args[0]; the allow path returns directly).
    prog += [_insn(_JEQ_K, _NR_CLONE, 0, 3), _insn(_LD_W_ABS, _OFF_ARG0), _insn(_JSET_K, _CLONE_NEW_FLAGS, 0, 5),
             _insn(_RET_K, deny)]  # fmt: skip
    # socket: AF_UNIX only.
    prog += [_insn(_JEQ_K, _NR_SOCKET, 0, 3), _insn(_LD_W_ABS, _OFF_ARG0), _insn(_JEQ_K, _AF_UNIX, 1, 0),
             _insn(_RET_K, _RET_ERRNO | errno.EAFNOSUPPORT)]  # fmt: skip
    prog += [_insn(_RET_K, _RET_ALLOW)]
    return b"".join(prog)


def install() -> None:
    """PR_SET_NO_NEW_PRIVS, then the filter on the calling thread (inherited by every child). Raises OSError."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if not available():
        return
    code = build_filter()
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HxxxxxxP", len(code) // 8, ctypes.addressof(buffer))  # struct sock_fprog
    fprog_buffer = ctypes.create_string_buffer(fprog, len(fprog))
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, fprog_buffer, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
