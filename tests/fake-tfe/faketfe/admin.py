"""replicated admin (docs/design/tfe-tools.md §5, `tfe-admin`): health-check, node-drain, list-nodes,
retrieve-iact, app-config, rotate-encryption-password, support-bundle."""

import contextlib
import fcntl
import os
import re
import signal
import sys
import time

from .cli import parse_cobra, wrapper_flags
from .conf import conf_parse_error
from .daemon import app_state, require_container
from .gotext import rfc3339nano
from .state import ToolExit, log_call, now, read_json, state_lock, write_json


ADMIN_USAGE = """Usage: replicated admin [--no-tty] <command> [args]

Available admin commands:
  app-config                  Set an application config item in real time (-k KEY -v VALUE)
  health-check                Run health checks against the Terraform Enterprise services
  list-nodes                  List the active nodes
  node-drain                  Drain the local node
  retrieve-iact               Retrieve the initial admin creation token
  rotate-encryption-password  Rotate the encryption password
  support-bundle              Generate a support bundle
"""


class TtyOut:
    def __init__(self, tty):
        self.tty = tty

    def line(self, s=""):
        sys.stdout.write(s + ("\r\n" if self.tty else "\n"))
        sys.stdout.flush()

    def color(self, s, code):
        return "\x1b[%sm%s\x1b[0m" % (code, s) if self.tty else s


def replicated_main(argv, sd, knobs):
    push, args, tty = wrapper_flags(argv)
    d = require_container(sd)
    perr = conf_parse_error(knobs)
    if perr:
        sys.stderr.write("Error parsing config file: %s\n" % perr)
        sys.stderr.flush()
    if "admin" not in push:
        if not args or "--help" in push or "-h" in push:
            print("Usage: replicated [admin] <command>\n\nUse `replicated admin` for the application's admin "
                  "commands.")
            return 0
        raise ToolExit(1, 'Error: unknown command "%s" for "replicated"' % args[0])
    while args and args[0] in ("--no-tty",):  # `replicated admin --no-tty cmd` as documented by Replicated
        tty["no_tty"] = True
        args = args[1:]
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(ADMIN_USAGE)
        return 0
    cmd, rest = args[0], args[1:]
    out = TtyOut(tty["tty"])
    t = now()
    state = app_state(sd, d, knobs, t)

    def need_running():
        if state != "started":
            raise ToolExit(1, 'Error: cannot run admin command "%s": the application is not running (State: %s)'
                           % (cmd, state))

    if cmd == "health-check":
        return health_check(out, knobs, state == "started")
    if cmd == "node-drain":
        need_running()
        return node_drain(out, sd, knobs, argv)
    if cmd == "list-nodes":
        need_running()
        for ip in [d.get("private_address")] + list(knobs["list_nodes_extra"]):
            if ip:
                out.line(ip)
        return 0
    if cmd == "retrieve-iact":
        need_running()
        if not tty["tty"] and not tty["explicit"] and not tty["no_tty"]:
            return 0  # "Without this flag set, the command will return an empty string" (§6.1)
        settings = read_json(os.path.join(sd, "app-config.json"), {})
        token = settings.get("user_token") or d["iact"]
        sys.stdout.write(token + ("\r\n" if tty["tty"] or knobs["iact_crlf"] else "\n"))
        return 0
    if cmd == "app-config":
        need_running()
        fl, _pos = parse_cobra(rest, {"key": ("k", True), "value": ("v", True)})
        if "key" not in fl or "value" not in fl:
            raise ToolExit(1, "Error: usage: replicated admin app-config -k KEY -v VALUE")
        with state_lock(sd):
            p = os.path.join(sd, "app-config.json")
            s = read_json(p, {})
            s[fl["key"]] = fl["value"]
            write_json(p, s)
        return 0
    if cmd == "rotate-encryption-password":
        need_running()
        if len(rest) != 2:
            raise ToolExit(1, "Error: usage: replicated admin rotate-encryption-password CURRENT NEW")
        with state_lock(sd):
            p = os.path.join(sd, "app-config.json")
            s = read_json(p, {})
            if s.get("enc_password") != rest[0]:
                out.line("Error rotating encryption password:")
                out.line("Error:")
                out.line("exit status 1")
                out.line("Output:")
                out.line("Encryption password not rotated!")
                out.line("Error reading previous Vault configuration: failed decrypting unseal key: could not "
                         "decrypt ciphertext: chacha20poly1305: message authentication failed")
                return 1
            s["enc_password"] = rest[1]
            write_json(p, s)
        n = 1 + len(knobs["list_nodes_extra"])
        out.line("Encryption password successfully rotated!")
        out.line()
        out.line("Updating the `enc_password` application configuration on %d node(s) to reflect the new "
                 "encryption password." % n)
        out.line()
        out.line("You must update any installation or automation processes to reflect the new encryption password!")
        return 0
    if cmd == "support-bundle":
        need_running()
        return support_bundle(out, sd, d, knobs, t)
    raise ToolExit(1, 'Error: unknown admin command "%s"\nRun \'replicated admin\' to list the available admin '
                      "commands." % cmd)


def support_bundle(out, sd, d, knobs, t):
    """Every node's bundle (§5.2). Active/Active (the settings say enable_active_active=1): one
    object per node under support-bundles/<JobID RFC3339>/<node-ip>/ in the `s3_bucket` setting's
    bucket, modelled as files under $FAKE_TFE_STATE/object-store/<bucket>/. Standalone: one file
    in $FAKE_TFE_STATE/var/lib/replicated/support-bundles/. The printed lines are [INF]."""
    out.line("Generating support bundle...")
    time.sleep(max(0.0, float(knobs["support_bundle_duration_s"])))
    code = knobs["support_bundle_exit_code"]
    if code:
        sys.stderr.write("Error: support bundle failed (fake-tfe support_bundle_exit_code=%d)\n" % code)
        return code
    settings = read_json(os.path.join(sd, "app-config.json"), {})
    name = "replicated-support%d.tar.gz" % int(t * 1000)
    if settings.get("enable_active_active") != "1":
        where = os.path.join(sd, "var/lib/replicated/support-bundles")
        os.makedirs(where, exist_ok=True)
        _write_bundle(os.path.join(where, name), d.get("private_address"))
        out.line("Support bundle written to /var/lib/replicated/support-bundles/%s" % name)
        return 0
    job = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    bucket = settings.get("s3_bucket") or "unknown-bucket"
    for ip in [d.get("private_address")] + list(knobs["list_nodes_extra"]):
        key = "support-bundles/%s/%s/%s" % (job, ip, name)
        path = os.path.join(sd, "object-store", bucket, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _write_bundle(path, ip)
        out.line("Support bundle uploaded to %s" % key)
    return 0


def _write_bundle(path, ip):
    import io
    import tarfile
    data = ("fake support bundle of node %s\n" % ip).encode()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("replicated-support/node.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def health_check(out, knobs, running):
    failing = knobs["health_failing_checks"]
    if knobs["health_error_line"]:
        line = ("Error parsing config file: json: cannot unmarshal string into Go struct field "
                "Params.ReleaseSequence of type int")
        if knobs["health_error_line"] == "stderr":
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        else:
            out.line(line)
    failed = 0
    for c in knobs["_checks"]:
        out.line("checking: %s..." % c["name"])
        out.line("|  %s" % c.get("description", ""))
        url = c.get("url", "http://atlas.ptfe:9292/_health_check")
        reason = None
        if not running:
            host = re.sub(r"^[a-z]+://([^:/]+).*$", r"\1", url)
            reason = 'Get "%s": dial tcp: lookup %s: no such host' % (url, host)
        elif c["name"] in failing:
            reason = failing[c["name"]] if isinstance(failing, dict) else None
            reason = reason or c.get("failure") or "%s did not return a healthy status, 500" % url
        if reason:
            failed += 1
            out.line("|- %s" % out.color("✗ ERROR: %s" % reason, "31"))
        else:
            out.line("|- %s" % out.color("✓ PASS", "32"))
        out.line()
    if failed:
        out.line("%d checks failed." % failed)
        return knobs["health_exit_code_on_failure"]
    out.line("  All checks passed.")
    return 0


def _update_drain(sd, blocking=True, **changes):
    fd = os.open(os.path.join(sd, "drain.json.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError:
            return
        p = os.path.join(sd, "drain.json")
        dr = read_json(p, None) or {"drains_started": 0, "drains_completed": 0, "drains_failed": 0,
                                    "drains_interrupted": 0, "last_started_at": None, "last_completed_at": None,
                                    "last_exit_code": None}
        for k, v in changes.items():
            if k.startswith("inc_"):
                dr[k[4:]] = dr.get(k[4:], 0) + v
            else:
                dr[k] = v
        write_json(p, dr)
    finally:
        os.close(fd)


def node_drain(out, sd, knobs, argv):
    _update_drain(sd, inc_drains_started=1, last_started_at=now())

    def on_signal(signum, _frame):
        code = 128 + signum
        with contextlib.suppress(Exception):
            log_call(sd, "replicated", argv, "end", exit_code=code, signal=signal.Signals(signum).name)
        with contextlib.suppress(Exception):
            _update_drain(sd, blocking=False, inc_drains_interrupted=1, last_exit_code=code)
        os._exit(code)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    out.line("Draining node...")
    time.sleep(max(0.0, float(knobs["drain_duration_s"])))
    code = knobs["drain_exit_code"]
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if code == 0:
        out.line("Node drained.")
        _update_drain(sd, inc_drains_completed=1, last_completed_at=now(), last_exit_code=0)
    else:
        sys.stderr.write("Error: node drain failed (fake-tfe drain_exit_code=%d)\n" % code)
        _update_drain(sd, inc_drains_failed=1, last_exit_code=code)
    return code
