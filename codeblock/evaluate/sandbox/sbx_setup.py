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


def make_readonly(paths):
    """Bind each path onto itself and remount it read-only (keeping the flags the kernel locks),
    inside the fork server's private mount namespace. Programs, which lose every capability
    (`drop_capabilities`), cannot remount them writable or unmount the cover."""
    lib, _ = libc()
    keep = 2 | 4 | 8 | 1024 | 2048 | 4096  # nosuid, nodev, noexec, noatime, nodiratime, relatime
    for p in sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)}):
        _check(lib.mount(p.encode(), p.encode(), None, _MS_BIND | _MS_REC, None), f"bind {p}")
        flags = _MS_REMOUNT | _MS_BIND | 1 | (os.statvfs(p).f_flag & keep)  # 1 = MS_RDONLY
        _check(lib.mount(None, p.encode(), None, flags, None), f"remount {p} read-only")


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
