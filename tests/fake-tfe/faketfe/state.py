"""Shared by every tool: the knobs in $FAKE_TFE_STATE/behaviour.json (re-read at every invocation), the
fake's own errors, the state directory and its JSON files, and calls.jsonl (README.md, "Knobs" and "Files")."""

import contextlib
import fcntl
import json
import os
import random
import string
import time

from .procs import parse_environ, proc_info

EX_STATE = 70  # fake-tfe's own misconfiguration (not a behaviour of the real tools)


DEFAULT_HEALTH_CHECKS = [
    {
        "name": "Archivist Health Check",
        "description": "checks that Archivist is up and healthy",
        "url": "http://archivist.ptfe:7675/_health_check",
    },
    {
        "name": "Terraform Enterprise Health Check",
        "description": "checks that Terraform Enterprise is up and can communicate with Redis and Postgres",
        "url": "http://atlas.ptfe:9292/_health_check?full",
    },
    {
        "name": "Terraform Enterprise Vault Health Check",
        "description": "checks that Terraform Enterprise can connect to Vault and is able to encrypt and decrypt tokens",
        "url": "http://atlas.ptfe:9292/_health_check/_vault_token",
    },
    {
        "name": "RabbitMQ Health Check",
        "description": "checks that RabbitMQ can be connected to and that we can send and consume messages",
        "url": "amqp://rabbitmq.ptfe:5672",
    },
    {
        "name": "Vault Server Health Check",
        "description": "checks that the configured Vault Server is healthy",
        "url": "http://vault.ptfe:8200/v1/sys/health",
    },
]

NUM = (int, float)
KNOBS = {
    # name: (default, allowed types, allow None)
    "replicated_conf": ("/etc/replicated.conf", (str,), False),
    "require_root": (True, (bool,), False),
    "install_duration_s": (0.3, NUM, False),
    "install_exit_code": (0, (int,), False),
    "install_hang": (False, (bool,), False),
    "timed_prompt_s": (None, NUM, True),
    "interfaces": ([["eth0", "10.0.0.5"]], (list,), False),
    "metadata_public_address": (None, (str,), True),
    "firewalld_active": (False, (bool,), False),
    "docker_installed": (True, (bool,), False),
    "enforce_file_permissions": (True, (bool,), False),
    "replicated_user": ("replicated", (str,), False),
    "latest_release_sequence": (742, (int,), False),
    "replicated_version": ("2.53.7", (str,), False),
    "system_ready_after_s": (0.5, NUM, False),
    "app_started_after_s": (1.5, NUM, False),
    "app_stop_duration_s": (0.5, NUM, False),
    "system_status_on_config_error": ("ready", (str,), False),
    "system_status_override": ({}, (dict,), False),
    "health_checks": (None, (list,), True),
    "health_failing_checks": ([], (list, dict), False),
    "health_exit_code_on_failure": (0, (int,), False),
    "health_error_line": (False, (bool, str), False),
    "drain_duration_s": (1.0, NUM, False),
    "drain_exit_code": (0, (int,), False),
    "support_bundle_duration_s": (0.2, NUM, False),
    "support_bundle_exit_code": (0, (int,), False),
    "list_nodes_extra": ([], (list,), False),
    "iact_crlf": (False, (bool,), False),
    "stdout_override": ({}, (dict,), False),
    "hang": ([], (list,), False),
}


class FakeError(Exception):
    """Misconfiguration of the fake itself: message to stderr, exit 70."""


class ToolExit(Exception):
    """Behaviour of the tool: print `message` (if any) to stderr and exit with `code`."""

    def __init__(self, code, message=None):
        super().__init__(message)
        self.code = code
        self.message = message


def state_dir():
    d = os.environ.get("FAKE_TFE_STATE")
    if not d:
        raise FakeError("FAKE_TFE_STATE is not set")
    try:
        os.makedirs(d, exist_ok=True)
    except OSError as e:
        raise FakeError("cannot create FAKE_TFE_STATE %r: %s" % (d, e))
    return d


def load_knobs(sd):
    path = os.path.join(sd, "behaviour.json")
    raw = {}
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except (OSError, ValueError) as e:
            raise FakeError("invalid %s: %s" % (path, e))
        if not isinstance(raw, dict):
            raise FakeError("invalid %s: not a JSON object" % path)
    knobs = {}
    for k, v in raw.items():
        if k.startswith("_"):
            continue  # comments
        if k not in KNOBS:
            raise FakeError('unknown knob "%s" in %s (known: %s)' % (k, path, ", ".join(sorted(KNOBS))))
        _default, types, nullable = KNOBS[k]
        ok = (v is None and nullable) or (isinstance(v, types) and not (isinstance(v, bool) and bool not in types))
        if not ok:
            raise FakeError('knob "%s" in %s has the wrong type: %r' % (k, path, v))
        knobs[k] = v
    for k, (default, _t, _n) in KNOBS.items():
        knobs.setdefault(k, json.loads(json.dumps(default)))
    # derived: health checks
    checks = []
    for c in knobs["health_checks"] or DEFAULT_HEALTH_CHECKS:
        if isinstance(c, str):
            known = [d for d in DEFAULT_HEALTH_CHECKS if d["name"] == c]
            c = dict(known[0]) if known else {"name": c, "description": "checks that %s is healthy" % c}
        elif not (isinstance(c, dict) and isinstance(c.get("name"), str)):
            raise FakeError("health_checks entries must be names or objects with a \"name\"")
        checks.append(c)
    knobs["_checks"] = checks
    if not all(isinstance(v, str) for v in knobs["stdout_override"].values()):
        raise FakeError("stdout_override maps command keys to strings")
    if not all(isinstance(v, str) for v in knobs["hang"]):
        raise FakeError("hang is a list of command keys (strings)")
    names = [c["name"] for c in checks]
    for n in knobs["health_failing_checks"]:
        if n not in names:
            raise FakeError('health_failing_checks: unknown check "%s" (checks: %s)' % (n, "; ".join(names)))
    return knobs


def now():
    return time.time()


def read_json(path, default=None):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def write_json(path, obj):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def state_lock(sd):
    fd = os.open(os.path.join(sd, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def log_call(sd, tool, argv, event, **extra):
    rec = {"t": now(), "tool": tool, "argv": list(argv), "pid": os.getpid(), "event": event}
    if event == "start":
        # What the caller handed this process, and the caller itself (the agent, or a sh/bash wrapper the
        # agent started): lets a test check that no secret reaches a child's argv or environment.
        rec["env"] = parse_environ(b"\0".join(b"%s=%s" % kv for kv in os.environb.items()))
        rec["parent"] = proc_info(os.getppid())
    rec.update(extra)
    line = (json.dumps(rec, sort_keys=False) + "\n").encode("utf-8")
    fd = os.open(os.path.join(sd, "calls.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def rand_hex(n=32):
    return "".join(random.SystemRandom().choice("0123456789abcdef") for _ in range(n))


def rand_alnum(n=32):
    alphabet = string.ascii_letters + string.digits
    return "".join(random.SystemRandom().choice(alphabet) for _ in range(n))
