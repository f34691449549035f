"""One invocation of a tool: log it, apply the `stdout_override` and `hang` knobs, run the tool, map the
fake's own errors to exit 70 and the tool's to their codes, log the end of a long-running command."""

import contextlib
import os
import sys

from .admin import replicated_main
from .cli import wrapper_flags
from .install import install_main
from .procs import hang_forever
from .replicatedctl import ctl_main
from .state import EX_STATE, FakeError, ToolExit, load_knobs, log_call, state_dir


def _long_running(tool, argv):
    if tool == "install.sh":
        return True
    _push, rest, _t = wrapper_flags(argv)
    rest = [a for a in rest if a != "--no-tty"]
    if tool == "replicated":
        return bool(rest) and rest[0] == "node-drain"
    return len(rest) >= 2 and rest[0] == "app" and rest[1] in ("stop", "start")


def command_key(tool, argv):
    """`tool` and its command words, without wrapper flags or options: "replicatedctl app status",
    "replicated health-check", "install.sh"."""
    if tool == "install.sh":
        return tool
    _push, rest, _t = wrapper_flags(argv)
    words = []
    for a in rest:
        if a.startswith("-"):
            if words:
                break
            continue  # `replicated admin --no-tty health-check`
        words.append(a)
    return " ".join([tool] + words)


def knob_for(table, key):
    """The entry of `table` (a dict or list of command keys) naming `key` or a command prefix of it."""
    for k in table:
        if key == k or key.startswith(k + " "):
            return table[k] if isinstance(table, dict) else True
    return None


def main(tool, argv):
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except AttributeError:
        pass
    try:
        sd = state_dir()
    except FakeError as e:
        sys.stderr.write("fake-tfe: %s\n" % e)
        return EX_STATE
    log_call(sd, tool, argv, "start", euid=os.geteuid())
    long_running = _long_running(tool, argv)
    code = 1
    try:
        knobs = load_knobs(sd)
        key = command_key(tool, argv)
        override = knob_for(knobs["stdout_override"], key)
        if override is not None:
            # surrogateescape: "\udcff" in behaviour.json stands for the raw byte 0xff
            sys.stdout.buffer.write(str(override).encode("utf-8", "surrogateescape"))
            sys.stdout.flush()
            code = 0
        elif knob_for(knobs["hang"], key):
            hang_forever(sd)
        elif tool == "install.sh":
            code = install_main(argv, sd, knobs)
        elif tool == "replicatedctl":
            code = ctl_main(argv, sd, knobs)
        elif tool == "replicated":
            code = replicated_main(argv, sd, knobs)
        else:
            raise FakeError("unknown tool %r" % tool)
    except FakeError as e:
        sys.stderr.write("fake-tfe: %s\n" % e)
        code = EX_STATE
    except ToolExit as e:
        if e.message:
            sys.stderr.write(e.message + "\n")
        code = e.code
    except BrokenPipeError:
        code = 141
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
    if long_running:
        log_call(sd, tool, argv, "end", exit_code=code)
    return code
