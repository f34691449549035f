"""Command-line parsing shared by replicatedctl and replicated: cobra-style flags, and the /usr/local/bin
wrapper's leading flags (-i, -t, --tty=0, --no-tty, admin)."""

import os

from .state import ToolExit


def parse_cobra(args, spec):
    """spec: {long_name: (short or None, takes_value)}. Returns (flags, positionals). Raises ToolExit."""
    flags, pos = {}, []
    shorts = {s: n for n, (s, _v) in spec.items() if s}
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            pos.extend(args[i + 1:])
            break
        if a.startswith("--"):
            name, eq, val = a[2:].partition("=")
            if name not in spec:
                raise ToolExit(1, "Error: unknown flag: --%s" % name)
            if spec[name][1]:
                if not eq:
                    if i + 1 >= len(args):
                        raise ToolExit(1, "Error: flag needs an argument: --%s" % name)
                    i += 1
                    val = args[i]
                flags[name] = val
            else:
                flags[name] = True if not eq else val not in ("false", "0")
        elif a.startswith("-") and len(a) > 1:
            body = a[1:]
            k = 0
            while k < len(body):
                c = body[k]
                if c not in shorts:
                    raise ToolExit(1, "Error: unknown shorthand flag: '%s' in %s" % (c, a))
                name = shorts[c]
                if spec[name][1]:
                    val = body[k + 1:].lstrip("=")
                    if not val:
                        if i + 1 >= len(args):
                            raise ToolExit(1, "Error: flag needs an argument: '%s' in %s" % (c, a))
                        i += 1
                        val = args[i]
                    flags[name] = val
                    break
                flags[name] = True
                k += 1
        else:
            pos.append(a)
        i += 1
    return flags, pos


def wrapper_flags(args):
    """The /usr/local/bin wrapper's leading-flag loop (INST common/cli-script.sh)."""
    interactive = tty = None
    push = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("admin", "--help", "-h", "--no-tty"):
            push.append(a)
        elif a in ("-i", "--interactive", "--interactive=1"):
            interactive = 1
        elif a == "--interactive=0":
            interactive = 0
        elif a in ("-t", "--tty", "--tty=1"):
            tty = 1
        elif a == "--tty=0":
            tty = 0
        elif a in ("-it", "-ti"):
            interactive = tty = 1
        else:
            break
        i += 1
    explicit = interactive is not None or tty is not None
    if not explicit:
        if os.isatty(0):
            interactive = tty = 1
        elif os.isatty(1):
            interactive = 1
    if explicit and "--no-tty" not in push and "admin" in push and tty != 1:
        push.append("--no-tty")  # later wrappers pass --no-tty on with an explicit --tty=0 (§4.1)
    return push, args[i:], {"tty": tty == 1, "interactive": interactive == 1, "explicit": explicit,
                            "no_tty": "--no-tty" in push}
