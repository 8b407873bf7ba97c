"""Setting up one program's sandbox: private mounts, rlimits, privilege drop, clean fds.

Runs in the fork server (`mount_tmpfs`, `expose_runtime` once) and in the program's process
before any untrusted code (`prepare`). Standard library only.
"""

import os
import resource

KEEP = []  # runtime paths (interpreter, site-packages, the sandbox modules) that must stay visible
_MS_BIND, _MS_REC, _MS_REMOUNT, _MNT_DETACH = 4096, 16384, 32, 2
_PR_SET_NO_NEW_PRIVS, _PR_CAPBSET_DROP = 38, 24


def libc():
    import ctypes

    lib = ctypes.CDLL(None, use_errno=True)
    lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return lib, ctypes


def _check(rc, what):
    if rc != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount_tmpfs(size_bytes, keep=None):
    """Cover /tmp, /var/tmp, /dev/shm and /run/lock with fresh tmpfs. Runtime paths that live
    below one of them (a checkout or virtualenv under /tmp, say) are bind-mounted back at the
    same place from an O_PATH handle opened before the cover, so the interpreter and its
    packages stay importable while everything else there is hidden."""
    lib, _ = libc()
    opts = f"size={size_bytes},mode=1777".encode()
    keep = [os.path.realpath(p) for p in (KEEP if keep is None else keep) if os.path.exists(p)]
    for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
        if not os.path.isdir(d):
            continue
        real = os.path.realpath(d)
        inside = sorted({p for p in keep if p == real or p.startswith(real + "/")})
        handles = [(p, os.open(p, os.O_PATH)) for p in inside]
        _check(lib.mount(b"tmpfs", d.encode(), b"tmpfs", 0, opts), f"mount tmpfs on {d}")
        for p, fd in handles:
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                os.makedirs(p, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(p), exist_ok=True)
                open(p, "a").close()
            _check(lib.mount(f"/proc/self/fd/{fd}".encode(), p.encode(), None, _MS_BIND | _MS_REC, None),
                   f"bind {p} back over the tmpfs")
            os.close(fd)


def expose_runtime(paths):
    """Make the interpreter readable by the unprivileged uid when it lives under a folder others
    cannot traverse (e.g. a pyenv under /root, mode 0700): inside the private mount namespace,
    cover that folder with an empty tmpfs (hiding everything else in it) and bind-mount back only
    the runtime paths. The host's permissions are untouched."""
    lib, _ = libc()
    closed = {}  # first ancestor others cannot traverse -> runtime paths below it
    for p in paths:
        p = os.path.realpath(p)
        parts = p.strip("/").split("/")
        for i in range(1, len(parts)):
            anc = "/" + "/".join(parts[:i])
            if not os.stat(anc).st_mode & 0o001:
                closed.setdefault(anc, set()).add(p)
                break
    for n, (anc, subs) in enumerate(sorted(closed.items())):
        stash = []
        for k, sub in enumerate(sorted(subs)):
            st = f"/tmp/.runtime{n}_{k}"
            os.makedirs(st)
            _check(lib.mount(sub.encode(), st.encode(), None, _MS_BIND | _MS_REC, None), f"bind {sub}")
            stash.append((st, sub))
        _check(lib.mount(b"tmpfs", anc.encode(), b"tmpfs", 0, b"size=1m,mode=0755"), f"tmpfs on {anc}")
        for st, sub in stash:
            os.makedirs(sub, exist_ok=True)
            _check(lib.mount(st.encode(), sub.encode(), None, _MS_BIND | _MS_REC, None), f"rebind {sub}")
            _check(lib.umount2(st.encode(), _MNT_DETACH), f"umount {st}")
            os.rmdir(st)


# Mounts left writable by `make_all_readonly`: kernel and device file systems (their files are not
# the host's data), and the tmpfs covers (`mount_tmpfs`), which are the program's only scratch space.
_PSEUDO_FS = {"proc", "sysfs", "cgroup", "cgroup2", "devtmpfs", "devpts", "mqueue", "securityfs", "debugfs",
              "tracefs", "bpf", "pstore", "fusectl", "configfs", "binfmt_misc", "hugetlbfs", "autofs", "nsfs"}
_PSEUDO_DIRS = ("/proc", "/sys", "/dev")
# statvfs bit -> mount flag, for the flags a user namespace locks (a remount must keep them)
_LOCKED = {2: 2, 4: 4, 8: 8, 1024: 1024, 2048: 2048, 4096: 1 << 21}  # nosuid nodev noexec noatime nodiratime relatime


def _mount_points():
    """(mount point, fs type) of every mount in this mount namespace, top of each stack once."""
    seen = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            point = left.split()[4].encode().decode("unicode_escape")  # \040 and friends
            seen[point] = right.split()[0]
    return list(seen.items())


def make_all_readonly():
    """Remount every mount of the server's private mount namespace read-only (kernel and device
    file systems and the tmpfs covers excepted), so a program can write nowhere on the host's
    disks, whatever the file permissions say: not the checkout, the venv or the home directory
    (what the real user could write in user-namespace mode), nor a world-writable folder outside
    /tmp. Programs lose every capability, so they cannot remount anything writable again."""
    lib, _ = libc()
    covers = {os.path.realpath(d) for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")}
    for point, fstype in _mount_points():
        if fstype in _PSEUDO_FS or point in covers or any(
                point == d or point.startswith(d + "/") for d in _PSEUDO_DIRS):
            continue
        try:
            have = os.statvfs(point).f_flag
        except OSError:  # hidden under another mount, or not ours to see
            continue
        if have & 1:  # already read-only
            continue
        flags = _MS_REMOUNT | _MS_BIND | 1 | sum(m for st, m in _LOCKED.items() if have & st)
        _check(lib.mount(None, point.encode(), None, flags, None), f"remount {point} read-only")


def loopback_up():
    """Bring `lo` up in the program's fresh network namespace (it has no other interface, so no
    route out): client/server programs can talk to themselves on 127.0.0.1, as upstream harnesses
    allow, and nothing else is reachable."""
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up, iff_running = 0x8913, 0x8914, 0x1, 0x40
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sh", fcntl.ioctl(s, siocgifflags, struct.pack("16sh", b"lo", 0)))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up | iff_running))


def join_cgroup(procs_file):
    """Move this process (and so everything it will fork) into the memory cgroup the executor
    made for this worker slot: the program's processes together stay under its memory limit."""
    if procs_file:
        with open(procs_file, "w") as f:
            f.write(str(os.getpid()))


def drop_capabilities():
    """User-namespace mode: the program runs as the namespace's root; take every capability away
    (bounding set first, so an exec cannot regain them), so it cannot mount, unmount, remount,
    ptrace or change its uid."""
    lib, ctypes = libc()
    for cap in range(64):
        if lib.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            if ctypes.get_errno() == 22:  # EINVAL: past the last capability this kernel knows
                break
            raise OSError(ctypes.get_errno(), f"PR_CAPBSET_DROP {cap}")

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    hdr, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words
    if lib.capset(ctypes.byref(hdr), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def mount_proc():
    lib, _ = libc()
    _check(lib.mount(b"proc", b"/proc", b"proc", 2 | 4 | 8, None), "mount proc")  # nosuid, nodev, noexec


def set_limits(job):
    def lim(res, soft, hard=None):
        hard = soft if hard is None else hard
        _cur_soft, cur_hard = resource.getrlimit(res)
        if cur_hard != resource.RLIM_INFINITY:
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        resource.setrlimit(res, (soft, hard))

    cpu = int(job["cpu_s"]) + 1
    lim(resource.RLIMIT_CPU, cpu, cpu + 1)
    lim(resource.RLIMIT_AS, job["memory_mb"] << 20)
    lim(resource.RLIMIT_FSIZE, job["fsize_mb"] << 20)
    lim(resource.RLIMIT_CORE, 0)
    if job.get("nproc"):
        lim(resource.RLIMIT_NPROC, job["nproc"])


def no_new_privs():
    """prctl(PR_SET_NO_NEW_PRIVS): execve of a setuid/setcap binary can no longer gain privileges."""
    lib, ctypes = libc()
    if lib.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(NO_NEW_PRIVS): {os.strerror(err)}")


def prepare(job):
    """Namespaces, limits, privilege drop, fds. Returns the work dir."""
    if job.get("new_ns"):
        mount_tmpfs(job["fsize_mb"] << 20)
        work = "/tmp/work"
    else:
        work = job["workdir"]
    os.makedirs(work, exist_ok=True)
    uid = job.get("uid")
    if uid is not None:
        os.chown(work, uid, uid)
    os.chmod(work, 0o700)
    set_limits(job)
    no_new_privs()
    if job.get("drop_caps"):
        drop_capabilities()
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)  # real, effective and saved uid: no way back to root
    os.chdir(work)
    os.environ.clear()
    os.environ.update(job["env"])
    os.environ["HOME"] = work
    os.environ["TMPDIR"] = work
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    return work
