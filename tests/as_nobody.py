"""Run a command as `nobody` (uid/gid 65534), for the sandbox tests. Started as root.

    python tests/as_nobody.py [--no-userns] -- PROGRAM ARGS...

--no-userns: first enter a user namespace that maps uids 0-65535 to themselves and set its
`user.max_user_namespaces` to 0 there, so `nobody` cannot create user namespaces any more (the
machine's own setting is untouched): what a host with user namespaces disabled looks like to an
unprivileged user.
"""

import ctypes
import os
import sys

CLONE_NEWUSER = 0x10000000


def _disable_userns() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    child = os.fork()
    if child == 0:  # the parent writes our maps once we are in the new namespace
        os.close(go_r)
        os.close(done_w)
        ok = libc.unshare(CLONE_NEWUSER) == 0
        os.write(go_w, b"1" if ok else b"0")
        if not ok or os.read(done_r, 1) != b"1":
            os._exit(3)
        with open("/proc/sys/user/max_user_namespaces", "w") as f:
            f.write("0")
        return
    os.close(go_w)
    os.close(done_r)
    if os.read(go_r, 1) == b"1":
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{child}/{name}", "w") as f:
                f.write("0 0 65536\n")
        os.write(done_w, b"1")
    _, status = os.waitpid(child, 0)
    os._exit(os.waitstatus_to_exitcode(status))


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] == "--no-userns":
        args = args[1:]
        _disable_userns()  # returns in the child only
    if args and args[0] == "--":
        args = args[1:]
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    os.environ.update(HOME="/", USER="nobody", LOGNAME="nobody")
    os.execv(args[0], args)


if __name__ == "__main__":
    main()
