"""Process helpers: what /proc says about a process (argv, environment), and blocking like a hung tool."""

import os
import subprocess
import time


def _decode(b):
    # backslashreplace keeps calls.jsonl valid UTF-8 JSON (lone surrogates would not be) for any byte
    return b.decode("utf-8", "backslashreplace")


def parse_environ(raw):
    env = {}
    for item in raw.split(b"\0"):
        if item:
            k, _sep, v = item.partition(b"=")
            env[_decode(k)] = _decode(v)
    return env


def proc_info(pid):
    """argv and environment of process `pid` from /proc; None when it is gone or unreadable."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read()
        with open("/proc/%d/environ" % pid, "rb") as f:
            environ = f.read()
    except OSError:
        return None
    argv = cmdline.split(b"\0")
    if argv and argv[-1] == b"":
        argv.pop()
    return {"pid": pid, "argv": [_decode(a) for a in argv], "env": parse_environ(environ)}


def block_forever():
    while True:
        time.sleep(3600)


def hang_forever(sd):
    """A hung tool: a `sleep 3600` child in this process group (pid appended to hang-children.pids), then
    blocked until killed. Whoever runs the tool has to kill the whole group."""
    child = subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL)
    fd = os.open(os.path.join(sd, "hang-children.pids"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"%d\n" % child.pid)
    finally:
        os.close(fd)
    block_forever()
