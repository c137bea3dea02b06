"""The sandbox's file-system view: a read-only root holding only what the interpreter needs, then pivot_root.

Runs in the sandbox's worker after it entered its own user and mount namespaces (it holds every capability there,
none outside). The new root is a small tmpfs with: the Python installation and site-packages directories bind-mounted
read-only at their own paths, /usr and the /lib* and /bin trees (or their merged-usr symlinks), /etc/ld.so.cache,
the null/zero/random devices and an empty work dir (/tmp unless a bound tree lives there; each program mounts
its own size-capped tmpfs on it). No /proc, /sys, /home, /root, /etc/passwd, sockets or the project. The old root is detached afterwards.
"""
import os
import sys

from evaluation import kernel

SYSTEM_TREES = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin")
SYSTEM_FILES = ("/etc/ld.so.cache",)
DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
WORK_DIR_CANDIDATES = ("/tmp", "/work", "/sandbox-work")  # the first that no bound tree already uses
MOUNTPOINT_CANDIDATES = ("/mnt", "/media", "/srv", "/opt", "/tmp", "/var/tmp", "/run")
_STATVFS_TO_MS = {os.ST_NOEXEC: kernel.MS_NOEXEC, os.ST_NOATIME: kernel.MS_NOATIME,
                  os.ST_NODIRATIME: kernel.MS_NODIRATIME, os.ST_RELATIME: kernel.MS_RELATIME}  # fmt: skip


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def python_trees(extra: list[str], excluded: str) -> list[str]:
    """Directories the interpreter reads: its prefixes and sys.path entries (real paths), minus the project."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, *extra}
    for entry in sys.path:
        candidates.add(entry if os.path.isdir(entry) else os.path.dirname(entry))  # zip entries: their folder
    trees = []
    for path in sorted({os.path.realpath(p) for p in candidates if p}, key=len):
        if not os.path.isdir(path) or _inside(excluded, path):  # binding it would show the project
            continue
        if not any(_inside(path, tree) for tree in trees):
            trees.append(path)
    return trees


def _bind_read_only(source: str, target: str) -> None:
    kernel.mount(source, target, None, kernel.MS_BIND)
    # A bind mount inside a user namespace must keep the source's locked flags when remounted.
    flags = kernel.MS_REMOUNT | kernel.MS_BIND | kernel.MS_RDONLY | kernel.MS_NOSUID | kernel.MS_NODEV
    existing = os.statvfs(source).f_flag
    flags |= sum(ms for st, ms in _STATVFS_TO_MS.items() if existing & st)
    kernel.mount(None, target, None, flags)


def _mirror(path: str, new_root: str, trees: list[str]) -> None:
    target = new_root + path
    if os.path.islink(path):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.symlink(os.readlink(path), target)
    elif os.path.isdir(path):
        os.makedirs(target, exist_ok=True)
        _bind_read_only(path, target)
        trees.append(path)
    elif os.path.isfile(path):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "w").close()
        _bind_read_only(path, target)


def _pick_mountpoint(trees: list[str]) -> str:
    for candidate in MOUNTPOINT_CANDIDATES:
        if os.path.isdir(candidate) and not os.path.islink(candidate):
            if not any(_inside(tree, candidate) or _inside(candidate, tree) for tree in trees):
                return candidate
    raise OSError(f"no directory to build the sandbox root on (tried {', '.join(MOUNTPOINT_CANDIDATES)})")


def build_and_enter(python_dirs: list[str]) -> tuple[list[str], str]:
    """Make the minimal read-only root and pivot into it; (the directories bind-mounted, the work dir)."""
    kernel.mount(None, "/", None, kernel.MS_REC | kernel.MS_PRIVATE)  # nothing propagates back to the host
    new_root = _pick_mountpoint([*python_dirs, *SYSTEM_TREES])
    kernel.mount("tmpfs", new_root, "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV, "size=4m,nr_inodes=4096,mode=0755")
    bound: list[str] = []
    for path in (*SYSTEM_TREES, *SYSTEM_FILES):
        _mirror(path, new_root, bound)
    for path in python_dirs:
        if not any(_inside(path, tree) for tree in bound):
            _mirror(path, new_root, bound)
    os.makedirs(new_root + "/dev")
    for device in DEVICES:
        if os.path.exists(device):
            open(new_root + device, "w").close()
            kernel.mount(device, new_root + device, None, kernel.MS_BIND)
    work_dir = next(d for d in WORK_DIR_CANDIDATES if not os.path.lexists(new_root + d))
    os.mkdir(new_root + work_dir, 0o755)
    os.chdir(new_root)
    os.mkdir(".old-root")
    kernel.pivot_root(".", ".old-root")
    os.chdir("/")
    kernel.umount2("/.old-root", kernel.MNT_DETACH)
    os.rmdir("/.old-root")
    kernel.mount(None, "/", None, kernel.MS_REMOUNT | kernel.MS_BIND | kernel.MS_RDONLY | kernel.MS_NOSUID
                 | kernel.MS_NODEV)  # fmt: skip
    return bound, work_dir
