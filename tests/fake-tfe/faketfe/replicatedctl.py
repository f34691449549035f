"""replicatedctl (docs/design/tfe-tools.md §4): system status, app status/stop/start, app-config, params,
version."""

import os
import sys
import time

from .cli import parse_cobra, wrapper_flags
from .conf import HIDDEN_ITEMS, KNOWN_ITEMS, parse_settings_text
from .daemon import app_status, load_daemon, require_container, system_status
from .gotext import GoMap, GoStruct, TemplateError, go_json, render_template, to_yaml
from .state import ToolExit, load_knobs, now, rand_hex, read_json, state_lock, write_json


CTL_USAGE = """Replicated CLI

Usage:
  replicatedctl [command]

Available Commands:
  app            Manage apps
  app-config     Manage app config
  params         Manage Replicated daemon parameters
  system         Get Replicated system information
  version        Get the Replicated CLI version information

Flags:
  -h, --help          help for replicatedctl
      --host string   Replicated API host (default "unix:///var/run/replicated/replicated-cli.sock")
"""


APP_USAGE = """Manage apps

Usage:
  replicatedctl app [command]

Available Commands:
  apply-config Apply app config
  inspect      Inspect the app
  start        Start the app
  status       Get the app status
  stop         Stop the app
"""


def unknown_cmd(cmd, parent):
    return ToolExit(1, 'Error: unknown command "%s" for "%s"\nRun \'%s --help\' for usage.' % (cmd, parent, parent))


def emit(data, flags, tmpl_data, indent=4, per_item=False):
    if flags.get("template") is not None:
        try:
            items = tmpl_data if per_item else [tmpl_data]
            for it in items:
                sys.stdout.write(render_template(flags["template"], it) + "\n")
        except TemplateError as e:
            raise ToolExit(1, "Error: %s" % e)
        return
    fmt = flags.get("output") or "json"
    if fmt == "json":
        sys.stdout.write(go_json(data, indent) + "\n")
    elif fmt == "yaml":
        sys.stdout.write(to_yaml(data))
    else:
        raise ToolExit(1, 'Error: unsupported output format "%s"' % fmt)


def ctl_main(argv, sd, knobs):
    push, args, _tty = wrapper_flags(argv)
    args = push + args
    d = require_container(sd)  # docker exec replicated ...: the container must exist
    t = now()
    if args and args[0] == "admin":
        raise unknown_cmd("admin", "replicatedctl")
    common = {"host": (None, True), "help": ("h", False)}
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(CTL_USAGE)
        return 0
    cmd, rest = args[0], args[1:]
    if cmd == "version":
        fl, _ = parse_cobra(rest, dict(common, quiet=(None, False)))
        if fl.get("quiet"):
            print(knobs["replicated_version"])
        else:
            print("replicatedctl version %s" % knobs["replicated_version"])
        return 0
    if cmd == "system":
        if not rest or rest[0] in ("-h", "--help"):
            print("Get Replicated system information\n\nUsage:\n  replicatedctl system [command]\n\n"
                  "Available Commands:\n  status      Gets the Replicated system status")
            return 0
        if rest[0] != "status":
            raise unknown_cmd(rest[0], "replicatedctl system")
        fl, _ = parse_cobra(rest[1:], dict(common, output=("o", True), quiet=("q", False), template=(None, True)))
        st = system_status(d, knobs, t)
        if fl.get("quiet"):
            order = {"failed": 2, "initializing": 1, "ready": 0}
            print(max(st.values(), key=lambda v: order.get(v, 3)))
            return 0
        emit(st, fl, GoMap(st))
        return 0
    if cmd == "app":
        if not rest or rest[0] in ("-h", "--help"):
            sys.stdout.write(APP_USAGE)
            return 0
        sub, rest = rest[0], rest[1:]
        if sub == "status":
            fl, _ = parse_cobra(rest, dict(common, output=("o", True), template=(None, True)))
            st = app_status(sd, d, knobs, t)
            emit([st], fl, [GoStruct("*types.AppStatus", st)], per_item=True)
            return 0
        if sub in ("stop", "start"):
            fl, _ = parse_cobra(rest, dict(common, attach=("a", False), force=("f", False), quiet=("q", False),
                                           raw=(None, False), template=(None, True)))
            return app_stop_start(sd, knobs, argv, sub, fl)
        if sub == "apply-config":
            parse_cobra(rest, dict(common, attach=("a", False), force=("f", False), quiet=("q", False)))
            print("Task ID: %s" % rand_hex(16))
            return 0
        raise unknown_cmd(sub, "replicatedctl app")
    if cmd == "app-config":
        if not rest or rest[0] in ("-h", "--help"):
            print("Manage app config\n\nUsage:\n  replicatedctl app-config [command]\n\n"
                  "Available Commands:\n  export      Export app config settings\n"
                  "  import      Import app config settings\n  set         Set an app config item")
            return 0
        sub, rest = rest[0], rest[1:]
        cfg_path = os.path.join(sd, "app-config.json")
        if sub == "export":
            fl, _ = parse_cobra(rest, dict(common, output=("o", True), template=(None, True), hidden=(None, False)))
            settings = read_json(cfg_path, {}) if d.get("settings_imported") else {}
            keys = set(settings) | KNOWN_ITEMS
            if not fl.get("hidden"):
                keys -= HIDDEN_ITEMS
            data = {k: ({"value": settings[k]} if k in settings else {}) for k in sorted(keys)}
            tdata = GoMap({k: GoStruct("ConfigItem", Value=settings.get(k, ""), Data="") for k in sorted(keys)},
                          zero=lambda: GoStruct("ConfigItem", Value="", Data=""))
            emit(data, fl, tdata, indent=2)
            return 0
        if sub == "set":
            fl, pos = parse_cobra(rest, dict(common, value=(None, True), data=(None, True),
                                             **{"skip-validation": (None, False)}))
            if len(pos) != 1 or fl.get("value") is None:
                raise ToolExit(1, "Error: usage: replicatedctl app-config set NAME --value VALUE")
            with state_lock(sd):
                s = read_json(cfg_path, {})
                s[pos[0]] = fl["value"]
                write_json(cfg_path, s)
            return 0
        if sub == "import":
            fl, _ = parse_cobra(rest, dict(common, format=(None, True), **{"skip-validation": (None, False)}))
            settings, errs = parse_settings_text(sys.stdin.read(), "<stdin>")
            if errs:
                raise ToolExit(1, "Error: " + "; ".join(errs))
            with state_lock(sd):
                s = read_json(cfg_path, {})
                s.update(settings)
                write_json(cfg_path, s)
            return 0
        raise unknown_cmd(sub, "replicatedctl app-config")
    if cmd == "params":
        if not rest or rest[0] != "export":
            raise unknown_cmd(rest[0] if rest else "", "replicatedctl params")
        fl, _ = parse_cobra(rest[1:], dict(common, output=("o", True), template=(None, True)))
        p = read_json(os.path.join(sd, "params.json"), {})
        emit(p, fl, GoMap(p), indent=4)
        return 0
    raise unknown_cmd(cmd, "replicatedctl")


def app_stop_start(sd, knobs, argv, sub, fl):
    task = rand_hex(16)
    with state_lock(sd):
        d = load_daemon(sd)
        t = now()
        cur = app_status(sd, d, knobs, t)
        path = os.path.join(sd, "app.json")
        app = read_json(path, {"ops": []})
        noop = (sub == "stop" and cur["State"] == "stopped" and not cur["IsTransitioning"]) or \
               (sub == "start" and cur["State"] == "started" and not cur["IsTransitioning"]) or \
               (sub == "start" and not d.get("config_ok"))
        if not noop:
            app["ops"].append({"op": sub, "t": t, "by": "replicatedctl", "task_id": task})
            write_json(path, app)
    if fl.get("quiet"):
        print(task)
    elif fl.get("template") is not None:
        try:
            print(render_template(fl["template"], GoStruct("*types.Task", ID=task)))
        except TemplateError as e:
            raise ToolExit(1, "Error: %s" % e)
    else:
        print("Task ID: %s" % task)
    if fl.get("attach"):
        target = "stopped" if sub == "stop" else "started"
        deadline = time.time() + 3600
        while time.time() < deadline:
            st = app_status(sd, load_daemon(sd), load_knobs(sd), now())
            if st["State"] == target and not st["IsTransitioning"]:
                break
            if not d.get("config_ok") and sub == "start":
                raise ToolExit(1, "Error: %s" % st["Error"])
            time.sleep(0.05)
        print("App %s" % target)
    return 0
