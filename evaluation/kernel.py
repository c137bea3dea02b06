"""Thin ctypes wrappers over the Linux calls the sandbox needs and Python 3.11 lacks (standard library only).

unshare, mount/umount2/pivot_root, prctl, capset and the capability bounding set. Each raises OSError with the
call's name on failure, so a refused layer is reported precisely by `rho-eval sandbox-info`.
"""
import ctypes
import os
import struct

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 0x1, 0x2, 0x4, 0x8, 0x20
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = 0x400, 0x800, 0x1000, 0x4000, 0x40000, 0x200000
MNT_DETACH = 2
_PR_SET_PDEATHSIG, _PR_CAPBSET_DROP, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 1, 24, 47, 4
_PR_GET_NO_NEW_PRIVS, _PR_GET_SECCOMP = 39, 21
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_CAP_V3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result == -1:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")
    return result


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda text: None if text is None else os.fsencode(text)  # noqa: E731
    _check(_libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)),
           f"mount {source or fstype} on {target}")  # fmt: skip


def umount2(target: str, flags: int) -> None:
    _check(_libc.umount2(os.fsencode(target), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    number = _SYS_PIVOT_ROOT[os.uname().machine]
    _check(_libc.syscall(number, os.fsencode(new_root), os.fsencode(put_old)), "pivot_root")


def prctl(option: int, arg: int = 0) -> int:
    return _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), f"prctl({option})")


def set_parent_death_signal(signal_number: int) -> None:
    prctl(_PR_SET_PDEATHSIG, signal_number)


def become_subreaper() -> None:
    """Orphaned descendants are reparented to the caller (as to a PID namespace's init), so it can reap them."""
    prctl(36, 1)  # PR_SET_CHILD_SUBREAPER


def no_new_privs() -> bool:
    return prctl(_PR_GET_NO_NEW_PRIVS) == 1


def seccomp_mode() -> int:
    return prctl(_PR_GET_SECCOMP)  # 2 = filter


def drop_capabilities() -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable sets of the calling thread."""
    for capability in range(64):
        if _libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows (EINVAL)
    _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = ctypes.create_string_buffer(struct.pack("Ii", _CAP_V3, 0))
    data = ctypes.create_string_buffer(bytes(24))  # two __user_cap_data_struct {effective, permitted, inheritable}
    _check(_libc.capset(header, data), "capset")


def effective_capabilities() -> int:
    header = ctypes.create_string_buffer(struct.pack("Ii", _CAP_V3, 0))
    data = ctypes.create_string_buffer(24)
    _check(_libc.capget(header, data), "capget")
    low, _, _, high, _, _ = struct.unpack("6I", data.raw)
    return low | (high << 32)
