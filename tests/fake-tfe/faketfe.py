#!/usr/bin/env python3
"""fake-tfe: fake versions of the Replicated-era TFE tools (install.sh, replicatedctl, replicated).

Stdlib only. Behaviour follows docs/design/tfe-tools.md (sections 1-5 and 8); see README.md
next to this file for the knobs, the state files and which behaviours are [INF] choices.

There is no background daemon: the fake "Replicated daemon" is a set of JSON files in $FAKE_TFE_STATE and
every query (system status, app status, health-check, ...) computes the current state from those files,
the current time and the knobs in behaviour.json (re-read at every invocation).

Entry points: `python3 faketfe.py install.sh|replicatedctl|replicated ARGS...`, or the wrappers
install.sh / replicatedctl / replicated in this directory.
"""

import contextlib
import fcntl
import json
import os
import pwd
import random
import re
import shutil
import signal
import string
import subprocess
import sys
import time

EX_STATE = 70  # fake-tfe's own misconfiguration (not a behaviour of the real tools)

# --------------------------------------------------------------------------------------------------
# knobs

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


# --------------------------------------------------------------------------------------------------
# small file helpers


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


def _decode(b):
    # backslashreplace keeps calls.jsonl valid UTF-8 JSON (lone surrogates would not be) for any byte
    return b.decode("utf-8", "backslashreplace")


def _environ(raw):
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
    return {"pid": pid, "argv": [_decode(a) for a in argv], "env": _environ(environ)}


def log_call(sd, tool, argv, event, **extra):
    rec = {"t": now(), "tool": tool, "argv": list(argv), "pid": os.getpid(), "event": event}
    if event == "start":
        # What the caller handed this process, and the caller itself (the agent, or a sh/bash wrapper the
        # agent started): lets a test check that no secret reaches a child's argv or environment.
        rec["env"] = _environ(b"\0".join(b"%s=%s" % kv for kv in os.environb.items()))
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


def rfc3339nano(t):
    """Go time.RFC3339Nano in UTC: fractional seconds with trailing zeros trimmed."""
    ns = int(round(t * 1e9))
    secs, frac = divmod(ns, 10**9)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    f = ("%09d" % frac).rstrip("0")
    return base + ("." + f if f else "") + "Z"


def go_json(obj, indent):
    """json.MarshalIndent look-alike: given indent, ', '/': ' separators, HTML characters escaped."""
    s = json.dumps(obj, indent=indent, ensure_ascii=False)
    for a, b in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        s = s.replace(a, b)
    return s


def to_yaml(obj, ind=0):
    pad = " " * ind
    out = []
    if isinstance(obj, dict):
        if not obj:
            return pad + "{}\n"
        for k in obj:
            v = obj[k]
            if isinstance(v, (dict, list)) and v:
                out.append("%s%s:\n%s" % (pad, k, to_yaml(v, ind + 2)))
            else:
                out.append("%s%s: %s\n" % (pad, k, yaml_scalar(v)))
    elif isinstance(obj, list):
        if not obj:
            return pad + "[]\n"
        for v in obj:
            sub = to_yaml(v, ind + 2) if isinstance(v, (dict, list)) else pad + "  " + yaml_scalar(v) + "\n"
            out.append(pad + "- " + sub.lstrip(" "))
    else:
        out.append(pad + yaml_scalar(obj) + "\n")
    return "".join(out)


def yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    s = str(v)
    if s == "" or re.search(r"[:#\n\"'{}\[\],&*!|>%@`]|^\s|\s$", s) or s in ("true", "false", "null", "yes", "no") \
            or re.match(r"^[-+0-9.]", s):
        return json.dumps(s)
    return s


# --------------------------------------------------------------------------------------------------
# /etc/replicated.conf (Go struct Params) and the settings file


def _gotype(v):
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


PARAM_TYPES = {
    "ReleaseSequence": "int",
    "BypassPreflightChecks": "bool",
    "ForceUseImportedSettings": "bool",
    "RemoveImportSettingsFrom": "bool",
}
for _k in ("DaemonAuthenticationType DaemonAuthenticationPassword TlsBootstrapType TlsBootstrapHostname "
           "TlsBootstrapCert TlsBootstrapKey ImportSettingsFrom LicenseFileLocation "
           "LicenseBootstrapAirgapPackagePath LicenseBootstrapChannelID LogLevel DaemonToken DockerHubUsername "
           "DockerHubPassword LocalAddress HttpProxy SnapshotsStore SnapshotsPath SnapshotsS3Bucket "
           "SnapshotsAWSRegion SnapshotsAWSKeyID SnapshotsAWSSecretKey SnapshotsAWSServerSideEncryption "
           "SnapshotsAWSSSEKMSKeyID SnapshotsSFTPHost SnapshotsSFTPUsername SnapshotsSFTPPrivateKeyPEM").split():
    PARAM_TYPES[_k] = "string"


def parse_params_text(text):
    """Go json.Unmarshal into struct Params. Returns (params_dict or None, go_error or None)."""
    try:
        obj = json.loads(text)
    except ValueError as e:
        return None, "invalid character in JSON: %s" % e
    if not isinstance(obj, dict):
        return None, "json: cannot unmarshal %s into Go value of type main.Params" % _gotype(obj)
    for k, v in obj.items():
        want = PARAM_TYPES.get(k)
        if want is None or v is None:
            continue  # unknown keys are ignored by encoding/json; null leaves the zero value
        if want == "int":
            ok = isinstance(v, int) and not isinstance(v, bool)
            if not ok and isinstance(v, float) and v.is_integer():
                ok = False  # 504.0: Go refuses floats for int fields
            if not ok:
                t = "number %s" % json.dumps(v) if isinstance(v, float) else _gotype(v)
                return obj, "json: cannot unmarshal %s into Go struct field Params.%s of type int" % (t, k)
        elif want == "bool" and not isinstance(v, bool):
            return obj, "json: cannot unmarshal %s into Go struct field Params.%s of type bool" % (_gotype(v), k)
        elif want == "string" and not isinstance(v, str):
            return obj, "json: cannot unmarshal %s into Go struct field Params.%s of type string" % (_gotype(v), k)
    return obj, None


def conf_parse_error(knobs):
    """What the replicated CLI prints when it re-reads a badly typed /etc/replicated.conf (docs/design/tfe-tools.md §2)."""
    try:
        with open(knobs["replicated_conf"], encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    _p, err = parse_params_text(text)
    return err


def readable_by_replicated(path, knobs):
    """None if the (non-root) replicated user could read `path`, else an error string."""
    try:
        st = os.stat(path)
    except OSError as e:
        return "open %s: %s" % (path, os.strerror(e.errno).lower())
    if not os.path.isfile(path):
        return "read %s: is a directory" % path if os.path.isdir(path) else "open %s: not a regular file" % path
    if not os.access(path, os.R_OK):
        return "open %s: permission denied" % path
    if not knobs["enforce_file_permissions"]:
        return None
    mode = st.st_mode & 0o777
    if mode & 0o004:
        return None
    try:
        pw = pwd.getpwnam(knobs["replicated_user"])
        uid, gids = pw.pw_uid, {pw.pw_gid} | set(os.getgrouplist(pw.pw_name, pw.pw_gid))
    except KeyError:
        uid, gids = None, set()
    if uid is not None and st.st_uid == uid and mode & 0o400:
        return None
    if st.st_gid in gids and mode & 0o040:
        return None
    return ("open %s: permission denied (mode %04o, owner uid %d: not readable by the %r user the replicated "
            "container runs as; use 0644, or 0600 owned by %s)"
            % (path, mode, st.st_uid, knobs["replicated_user"], knobs["replicated_user"]))


HIDDEN_ITEMS = {
    "install_id", "root_secret", "user_token", "archivist_token", "cookie_hash", "internal_api_token",
    "registry_session_encryption_key", "registry_session_secret_key",
}
# Config items of the TFE app that `app-config export` lists even when unset (shown as {}). [INF] subset of §3.2.
KNOWN_ITEMS = set("""
hostname production_type installation_type enable_active_active enc_password disk_path capacity_concurrency
capacity_memory capacity_cpus tbw_image custom_image_tag enable_metrics_collection pg_user pg_password pg_dbname
pg_netloc pg_extra_params placement aws_instance_profile aws_access_key_id aws_secret_access_key s3_bucket
s3_region s3_endpoint s3_sse s3_sse_kms_key_id azure_account_name azure_container azure_account_key azure_endpoint
azure_use_msi azure_client_id gcs_credentials gcs_project gcs_bucket redis_host redis_port redis_use_password_auth
redis_pass redis_use_tls iact_subnet_list iact_subnet_time_limit trusted_proxies extra_no_proxy hairpin_addressing
force_tls restrict_worker_metadata_access tls_vers tls_ciphers ca_certs log_forwarding_enabled log_forwarding_config
metrics_endpoint_enabled metrics_endpoint_port_http metrics_endpoint_port_https extern_vault_enable extern_vault_addr
extern_vault_role_id extern_vault_secret_id extern_vault_path extern_vault_token_renew extern_vault_namespace
extern_vault_propagate vault_path vault_store_snapshot
""".split()) | HIDDEN_ITEMS


def parse_settings_text(text, path):
    """Settings file (§3.1). Returns (settings {key: str}, errors)."""
    try:
        obj = json.loads(text)
    except ValueError as e:
        return None, ["failed to parse settings file %s: %s" % (path, e)]
    if not isinstance(obj, dict):
        return None, ["failed to parse settings file %s: json: cannot unmarshal %s into Go value of type "
                      "map[string]ConfigItem" % (path, _gotype(obj))]
    errors, settings = [], {}
    for k in sorted(obj):
        item = obj[k]
        if not isinstance(item, dict):
            errors.append('settings file %s: item "%s": json: cannot unmarshal %s into Go value of type ConfigItem '
                          '(want {"value": "<string>"})' % (path, k, _gotype(item)))
            continue
        extra = set(item) - {"value", "data"}
        if extra:
            errors.append('settings file %s: item "%s": unexpected field(s) %s (want {"value": "<string>"})'
                          % (path, k, ", ".join(sorted(extra))))
        if "value" not in item:
            errors.append('settings file %s: item "%s" has no "value"' % (path, k))
            continue
        v = item["value"]
        if not isinstance(v, str):
            errors.append('settings file %s: item "%s": json: cannot unmarshal %s into Go struct field '
                          'ConfigItem.value of type string (all values must be strings)' % (path, k, _gotype(v)))
            continue
        if "data" in item and not isinstance(item["data"], str):
            errors.append('settings file %s: item "%s": "data" must be a string' % (path, k))
        settings[k] = v
    return settings, errors


def check_daemon_config(knobs, release_sequence_flag):
    """The fake daemon's first start: read replicated.conf and everything it points to (§2, §3, §8.2).

    Returns dict(errors=[...], params=dict|None, settings=dict|None, release_sequence=int|None).
    """
    res = {"errors": [], "params": None, "settings": None, "release_sequence": None, "settings_path": None}
    errs = res["errors"]
    conf = knobs["replicated_conf"]
    try:
        with open(conf, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        errs.append("open %s: %s" % (conf, os.strerror(e.errno).lower()))
        return res
    params, perr = parse_params_text(text)
    if perr:
        errs.append("Error parsing config file: %s" % perr)
        return res
    res["params"] = params
    rs = params.get("ReleaseSequence")
    if rs is None and release_sequence_flag not in (None, ""):
        if re.fullmatch(r"[0-9]+", release_sequence_flag):
            rs = int(release_sequence_flag)
        else:
            errs.append('invalid RELEASE_SEQUENCE "%s" (from install.sh release-sequence=): not an integer'
                        % release_sequence_flag)
    res["release_sequence"] = rs

    dat = params.get("DaemonAuthenticationType")
    if dat is not None and dat not in ("anonymous", "password"):
        errs.append('DaemonAuthenticationType must be "anonymous" or "password" (got "%s")' % dat)
    if dat == "password" and not params.get("DaemonAuthenticationPassword"):
        errs.append('DaemonAuthenticationType is "password" but DaemonAuthenticationPassword is empty')

    tls = params.get("TlsBootstrapType")
    if tls is not None:
        if tls not in ("self-signed", "server-path", "key-cert"):
            errs.append('TlsBootstrapType must be one of "self-signed", "server-path", "key-cert" (got "%s")' % tls)
        elif tls == "server-path":
            if not params.get("TlsBootstrapHostname"):
                errs.append('TlsBootstrapHostname is required with TlsBootstrapType "server-path"')
            for k in ("TlsBootstrapCert", "TlsBootstrapKey"):
                p = params.get(k)
                if not p:
                    errs.append('%s is required with TlsBootstrapType "server-path"' % k)
                else:
                    e = readable_by_replicated(p, knobs)
                    if e:
                        errs.append("%s: %s" % (k, e))
        elif tls == "key-cert":
            for k in ("TlsBootstrapCert", "TlsBootstrapKey"):
                if "-----BEGIN" not in (params.get(k) or ""):
                    errs.append('%s must hold an inline PEM with TlsBootstrapType "key-cert"' % k)

    airgap = params.get("LicenseBootstrapAirgapPackagePath")
    if airgap:
        if "ReleaseSequence" in params:
            errs.append("ReleaseSequence must be omitted with LicenseBootstrapAirgapPackagePath")
        e = readable_by_replicated(airgap, knobs)
        if e:
            errs.append("LicenseBootstrapAirgapPackagePath: %s" % e)

    lic = params.get("LicenseFileLocation")
    if lic is not None:
        e = readable_by_replicated(lic, knobs)
        if e:
            errs.append("LicenseFileLocation: %s" % e)

    sp = params.get("ImportSettingsFrom")
    if not sp:
        errs.append("ImportSettingsFrom is not set: application settings were not imported "
                    "(the console would prompt for configuration)")
    elif not os.path.isabs(sp):
        errs.append('ImportSettingsFrom must be an absolute path (got "%s")' % sp)
    else:
        res["settings_path"] = sp
        e = readable_by_replicated(sp, knobs)
        if e:
            errs.append("ImportSettingsFrom: %s" % e)
        else:
            with open(sp, encoding="utf-8") as f:
                settings, serrs = parse_settings_text(f.read(), sp)
            errs.extend(serrs)
            if settings is not None:
                for k in ("hostname", "enc_password"):
                    if not settings.get(k):
                        errs.append('required config item "%s" is not set in %s' % (k, sp))
                if settings.get("enable_active_active") != "1":
                    errs.append('config item "enable_active_active" must be "1" (got %s) in %s'
                                % (json.dumps(settings.get("enable_active_active")), sp))
                res["settings"] = settings
    return res


# --------------------------------------------------------------------------------------------------
# the fake daemon model


def daemon_path(sd):
    return os.path.join(sd, "daemon.json")


def load_daemon(sd):
    return read_json(daemon_path(sd))


def require_container(sd):
    d = load_daemon(sd)
    if not d:
        raise ToolExit(1, "Error: No such container: replicated")
    return d


def daemon_start(sd, knobs, opts):
    """Called by install.sh at 'Starting replicated and replicated-ui service'."""
    t = now()
    with state_lock(sd):
        d = load_daemon(sd)
        if d is None:
            d = {
                "app_id": rand_hex(32),
                "iact": rand_alnum(32),
                "first_started_at": t,
                "starts": 0,
                "setup_complete": False,
                "settings_imported": False,
                "settings_import_count": 0,
                "settings_imported_at": None,
                "config_ok": False,
                "errors": [],
                "release_sequence": None,
            }
        d["starts"] += 1
        d["started_at"] = t
        d["private_address"] = opts["private_address"]
        d["public_address"] = opts["public_address"]
        d["disable_replicated_ui"] = opts["disable_replicated_ui"]
        d["replicated_conf"] = knobs["replicated_conf"]
        d["last_start_imported"] = False
        app = read_json(os.path.join(sd, "app.json"), {"ops": []})
        if not d["setup_complete"]:
            # initial startup (or a previous start never completed setup): read everything
            res = check_daemon_config(knobs, opts.get("release_sequence"))
            d["config_ok"] = not res["errors"]
            d["errors"] = res["errors"]
            d["release_sequence"] = res["release_sequence"]
            if res["params"] is not None:
                write_json(os.path.join(sd, "params.json"), res["params"])
            if d["config_ok"]:
                _import_settings(sd, d, res, t)
                d["setup_complete"] = True
                app["ops"].append({"op": "start", "t": t, "by": "daemon", "task_id": rand_hex(16)})
                write_json(os.path.join(sd, "app.json"), app)
        else:
            # Replicated upgrade / restart: replicated.conf is not read again, except ForceUseImportedSettings
            try:
                with open(knobs["replicated_conf"], encoding="utf-8") as f:
                    params, perr = parse_params_text(f.read())
            except OSError:
                params, perr = None, None
            if params and not perr and params.get("ForceUseImportedSettings") is True:
                res = check_daemon_config(knobs, opts.get("release_sequence"))
                if res["settings"] is not None and not res["errors"]:
                    _import_settings(sd, d, res, t)
                else:
                    d["reimport_errors"] = res["errors"]
        write_json(daemon_path(sd), d)
    return d


def _import_settings(sd, d, res, t):
    write_json(os.path.join(sd, "app-config.json"), res["settings"])
    d["settings_imported"] = True
    d["settings_import_count"] = d.get("settings_import_count", 0) + 1
    d["settings_imported_at"] = t
    d["last_start_imported"] = True
    if res["params"].get("RemoveImportSettingsFrom") is True and res["settings_path"]:
        with contextlib.suppress(OSError):
            os.remove(res["settings_path"])


def system_status(d, knobs, t):
    if t < d["started_at"] + knobs["system_ready_after_s"]:
        st = {"Replicated": "initializing", "Retraced": "initializing"}
    else:
        st = {"Replicated": "ready", "Retraced": "ready"}
        if not d["config_ok"]:
            st["Replicated"] = knobs["system_status_on_config_error"]
    st.update(knobs["system_status_override"])
    return st


def app_status(sd, d, knobs, t):
    """Current app status object (Go field order of §4.3)."""
    seq = d.get("release_sequence")
    if seq is None:
        seq = knobs["latest_release_sequence"] if d.get("config_ok") else 0
    base = {"AppID": d["app_id"], "Sequence": seq, "PatchSequence": 0}
    ops = read_json(os.path.join(sd, "app.json"), {"ops": []})["ops"]
    if not d.get("config_ok") or not ops:
        err = "; ".join(d.get("errors") or []) or "app is not configured"
        return dict(base, State="stopped", DesiredState="stopped", Error=err, IsCancellable=False,
                    IsTransitioning=False, LastModifiedAt=rfc3339nano(d["started_at"]))
    state, desired, canc, trans, lm = phase_of(ops[-1], d, knobs, t)
    return dict(base, State=state, DesiredState=desired, Error="", IsCancellable=canc, IsTransitioning=trans,
                LastModifiedAt=rfc3339nano(lm))


def phase_of(op, d, knobs, t):
    """(State, DesiredState, IsCancellable, IsTransitioning, LastModifiedAt) at time t after `op`."""
    T = op["t"]
    if op["op"] == "stop":
        end = T + knobs["app_stop_duration_s"]
        if t < end:
            return "stopping", "stopped", False, True, T
        return "stopped", "stopped", False, False, end
    # start
    if op.get("by") == "daemon":
        ready = T + knobs["system_ready_after_s"]
        done = max(ready, T + knobs["app_started_after_s"])
        if t < ready:
            return "stopped", "started", True, True, T
        if t < done:
            return "starting", "started", False, True, ready
        return "started", "started", False, False, done
    done = T + knobs["app_started_after_s"]
    if t < done:
        return "starting", "started", False, True, T
    return "started", "started", False, False, done


def app_state(sd, d, knobs, t):
    return app_status(sd, d, knobs, t)["State"]


# --------------------------------------------------------------------------------------------------
# Go text/template subset


class TemplateError(Exception):
    pass


class GoStruct(dict):
    """A Go struct: unknown fields are an error (maps print <no value> instead)."""

    def __init__(self, typename, *a, **kw):
        super().__init__(*a, **kw)
        self.typename = typename


class GoMap(dict):
    """A Go map; `zero` builds the zero value returned for missing keys (None = <no value>)."""

    def __init__(self, *a, zero=None, **kw):
        super().__init__(*a, **kw)
        self.zero = zero


_TOK = re.compile(r'''\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<raw>`[^`]*`)|(?P<lp>\()|(?P<rp>\))|(?P<pipe>\|)
                      |(?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)|(?P<num>-?[0-9]+(?:\.[0-9]+)?)
                      |(?P<ident>[A-Za-z_][A-Za-z0-9_]*))''', re.X)


def _tokenize(src):
    toks, pos = [], 0
    src = src.strip()
    while pos < len(src):
        m = _TOK.match(src, pos)
        if not m or m.end() == pos:
            raise TemplateError("unexpected %r in command" % src[pos:].strip()[:10])
        kind = m.lastgroup
        val = m.group(kind)
        toks.append((kind, val))
        pos = m.end()
        while pos < len(src) and src[pos].isspace():
            pos += 1
    return toks


def _truth(v):
    return not (v is None or v is False or v == 0 and not isinstance(v, bool) and isinstance(v, NUM)
                or (isinstance(v, (str, list, dict)) and len(v) == 0))


def _fmt(v):
    if v is None:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, GoStruct):
        return "{" + " ".join(_fmt(x) for x in v.values()) + "}"
    if isinstance(v, dict):
        return "map[" + " ".join("%s:%s" % (k, _fmt(v[k])) for k in sorted(v)) + "]"
    if isinstance(v, list):
        return "[" + " ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _eq(a, *bs):
    if not bs:
        raise TemplateError("wrong number of args for eq: want at least 2 got 1")
    return any(a == b for b in bs)


FUNCS = {
    "eq": _eq,
    "ne": lambda a, b: a != b,
    "not": lambda a: not _truth(a),
    "len": lambda a: len(a),
    "print": lambda *a: "".join(_fmt(x) for x in a),
    "println": lambda *a: " ".join(_fmt(x) for x in a) + "\n",
    "index": lambda a, *ks: _index(a, ks),
}


def _index(a, ks):
    for k in ks:
        a = a[k] if isinstance(a, list) else a.get(k)
    return a


def _field(v, path, src):
    for name in [p for p in path.split(".") if p]:
        if isinstance(v, GoStruct):
            if name not in v:
                raise TemplateError('executing "output" at <%s>: can\'t evaluate field %s in type %s'
                                    % (src, name, v.typename))
            v = v[name]
        elif isinstance(v, dict):
            if name in v:
                v = v[name]
            else:
                v = v.zero() if isinstance(v, GoMap) and v.zero else None
        elif v is None:
            raise TemplateError('executing "output" at <%s>: nil pointer evaluating interface {}.%s' % (src, name))
        else:
            raise TemplateError('executing "output" at <%s>: can\'t evaluate field %s in type %s'
                                % (src, name, type(v).__name__))
    return v


def _eval_pipeline(toks, i, dot, stop):
    """Evaluate `cmd | cmd ...` starting at toks[i]; returns (value, next index)."""
    val, have = None, False
    while True:
        args, j = [], i
        while j < len(toks) and toks[j][0] not in ("pipe",) + stop:
            kind, tv = toks[j]
            if kind == "lp":
                v, j = _eval_pipeline(toks, j + 1, dot, ("rp",))
                if j >= len(toks) or toks[j][0] != "rp":
                    raise TemplateError("unclosed left paren")
                args.append(("v", v))
                j += 1
                continue
            args.append((kind, tv))
            j += 1
        if not args:
            raise TemplateError("missing value for command")
        head_kind, head = args[0]
        vals = [_operand(k, v, dot) for k, v in args[1:]]
        if head_kind == "ident" and head not in ("true", "false", "nil"):
            if head in ("if", "else", "end", "range", "with", "define", "template", "block"):
                raise TemplateError("fake-tfe supports expressions only, not {{%s}}" % head)
            if head not in FUNCS and head not in ("and", "or"):
                raise TemplateError('function "%s" not defined' % head)
            if have:
                vals.append(val)
            if head == "and":
                val = next((x for x in vals if not _truth(x)), vals[-1] if vals else None)
            elif head == "or":
                val = next((x for x in vals if _truth(x)), vals[-1] if vals else None)
            else:
                val = FUNCS[head](*vals)
        else:
            if len(args) > 1 or have:
                raise TemplateError("can't give argument to non-function %s" % head)
            val = _operand(head_kind, head, dot)
        have = True
        i = j
        if i < len(toks) and toks[i][0] == "pipe":
            i += 1
            continue
        return val, i


def _operand(kind, tv, dot):
    if kind == "v":
        return tv
    if kind == "field":
        return dot if tv == "." else _field(dot, tv, tv)
    if kind == "str":
        return json.loads(tv)
    if kind == "raw":
        return tv[1:-1]
    if kind == "num":
        return float(tv) if "." in tv else int(tv)
    if kind == "ident":
        if tv in ("true", "false"):
            return tv == "true"
        if tv == "nil":
            return None
        if tv in FUNCS:
            return FUNCS[tv]()
        raise TemplateError('function "%s" not defined' % tv)
    raise TemplateError("unexpected %s" % tv)


def render_template(tpl, dot):
    out, pos = [], 0
    while True:
        a = tpl.find("{{", pos)
        if a < 0:
            out.append(tpl[pos:])
            break
        text = tpl[pos:a]
        inner_start = a + 2
        if tpl.startswith("- ", inner_start) or tpl.startswith("-\t", inner_start) or tpl.startswith("-\n", inner_start):
            text = text.rstrip()
            inner_start += 1
        out.append(text)
        b = tpl.find("}}", inner_start)
        if b < 0:
            raise TemplateError("template: output:1: unclosed action")
        inner = tpl[inner_start:b]
        pos = b + 2
        if inner.endswith(" -") or inner.endswith("\t-") or inner.endswith("\n-"):
            inner = inner[:-1]
            rest = tpl[pos:]
            pos += len(rest) - len(rest.lstrip())
        s = inner.strip()
        if s.startswith("/*") and s.endswith("*/"):
            continue
        toks = _tokenize(inner)
        if not toks:
            raise TemplateError("template: output:1: missing value for command")
        try:
            v, i = _eval_pipeline(toks, 0, dot, ())
        except TemplateError as e:
            raise TemplateError("template: output:1:%d: %s" % (a + 3, e))
        if i != len(toks):
            raise TemplateError("template: output:1: unexpected %s in operand" % toks[i][1])
        out.append(_fmt(v))
    return "".join(out)


# --------------------------------------------------------------------------------------------------
# cobra-ish flag parsing for replicatedctl


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


# --------------------------------------------------------------------------------------------------
# install.sh

INSTALL_FLAGS = {
    # canonical: takes a value
    "no-proxy": False, "http-proxy": True, "additional-no-proxy": True, "private-address": True,
    "local-address": True, "public-address": True, "no-public-address": False, "disable-replicated-ui": False,
    "airgap": False, "no-docker": False, "docker-version": True, "install-docker-only": False,
    "no-ce-on-ee": False, "release-sequence": True, "release-patch-sequence": True, "fast-timeouts": False,
    "no-auto": False, "bypass-firewalld-warning": False, "hard-fail-on-firewalld": False,
    "skip-preflights": False, "ignore-preflights": False, "prompt-on-preflight-warnings": False,
    "bypass-storagedriver-warnings": False, "hard-fail-on-loopback": False, "log-level": True,
    "ui-bind-port": True, "daemon-token": True, "no-operator": False, "is-migration": False, "tags": True,
    "registry-advertise-address": True, "skip-pull": False, "selinux-replicated-domain": True,
    "force-replicated-downgrade": False, "registry-address-override": True, "registry-path-prefix": True,
    "artifactory-address": True, "artifactory-access-method": True, "artifactory-docker-repo-key": True,
    "artifactory-quay-repo-key": True, "artifactory-auth": True, "disable-replicated-host-networking": False,
}


class Out:
    def __init__(self, pace):
        self.pace = pace

    def line(self, s=""):
        sys.stdout.write(s + "\n")
        sys.stdout.flush()

    def step(self, s):
        self.line(s)
        if self.pace > 0:
            time.sleep(self.pace)

    def raw(self, s):
        sys.stdout.write(s)
        sys.stdout.flush()


def block_forever():
    while True:
        time.sleep(3600)


def read_conf_naive(knobs, key):
    """install.sh's readReplicatedConf: grep -o '"Key":\\s*"[^"]*' (string values only)."""
    try:
        with open(knobs["replicated_conf"], encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    m = re.findall(r'"%s":\s*"([^"]*)' % re.escape(key), text)
    return m[0] if m else ""


def install_main(argv, sd, knobs):
    out = Out(0)
    # require64Bit / requireRootUser
    if knobs["require_root"] and os.geteuid() != 0:
        raise ToolExit(1, "Error: This script requires admin privileges. Please re-run it as root.")

    # flag loop: `while [ "$1" != "" ]` stops at the first empty argument
    flags, order = {}, []
    read_timeout, fast = 20.0, False
    additional = []
    for a in argv:
        if a == "":
            break
        name, _sep, value = a.partition("=")
        canon = name.replace("_", "-")
        if canon not in INSTALL_FLAGS:
            raise ToolExit(1, 'Error: unknown parameter "%s"' % name)
        order.append(canon)
        if canon == "local-address":
            canon = "private-address"
        if canon == "additional-no-proxy":
            additional.append(value)
        elif canon == "fast-timeouts":
            read_timeout, fast = 1.0, True
        elif canon == "no-auto":
            read_timeout = None
        flags[canon] = value if INSTALL_FLAGS[canon] else True

    if flags.get("http-proxy") and not re.match(r"https?://", flags["http-proxy"]):
        # [INF] the real template only checks a prompted value; the fake checks the flag too
        raise ToolExit(1, 'Proxy address must have prefix "http(s)://"')

    def timed_prompt(default_override=None):
        if knobs["timed_prompt_s"] is not None:
            wait = knobs["timed_prompt_s"]
        elif read_timeout is None:
            block_forever()
        elif fast:
            wait = read_timeout
        else:
            wait = default_override or read_timeout
        time.sleep(max(0.0, wait))

    airgap = "airgap" in flags
    # checkFirewalld
    if knobs["firewalld_active"] and "bypass-firewalld-warning" not in flags:
        if "hard-fail-on-firewalld" in flags:
            raise ToolExit(1, "Firewalld is active")
        out.raw("Firewalld is active, do you wish to continue? (Y/n) ")
        timed_prompt()
        out.line()

    if "install-docker-only" in flags:
        out.line("Docker already installed" if knobs["docker_installed"] else "Installing docker")
        return 0

    # ---- addresses
    out.line("Determining local address")
    private = None
    if "private-address" in flags:
        private = flags["private-address"]
        out.line("The installer will use local address '%s' (from parameter)" % private)
    if not private:
        conf_local = read_conf_naive(knobs, "LocalAddress")
        if conf_local:
            out.line("Validating local address found in /etc/replicated.conf: '%s'" % conf_local)
        ifaces = knobs["interfaces"]
        if not ifaces:
            raise ToolExit(1, "Error: The installer couldn't discover any valid network interfaces on this machine.\n"
                              "Check your network configuration and re-run this script again.\n"
                              "If you want to skip this discovery process, pass the 'local-address' arg to this "
                              "script, e.g. 'sudo ./install.sh local-address=1.2.3.4'")
        if len(ifaces) == 1:
            private = ifaces[0][1]
            out.line("The installer will use network interface '%s' (with IP address '%s')" % tuple(ifaces[0][:2]))
        else:
            out.line("The installer was unable to automatically detect the private IP address of this machine.")
            out.line("Please choose one of the following network interfaces:")
            for i, (n, ip) in enumerate(ifaces):
                out.line("[%d] %-5s\t%s" % (i, n, ip))
            out.raw("Enter desired number (0-%d): " % (len(ifaces) - 1))
            block_forever()  # untimed `read < /dev/tty` (§1.5): the "unbounded delay"

    public = flags.get("public-address") or None
    if not airgap:
        out.line("Determining service address")
        if public:
            out.line("The installer will use service address '%s' (from parameter)" % public)
        elif "no-public-address" not in flags:
            if knobs["metadata_public_address"]:
                public = knobs["metadata_public_address"]
                out.line("The installer will use service address '%s' (discovered from EC2 metadata service)"
                         % public)
            else:
                out.line("The installer was unable to automatically detect the service IP address of this machine.")
                out.line("Please enter the address or leave blank for unspecified.")
                out.raw("Service IP address: ")
                timed_prompt(120.0)
                out.line()

    # ---- proxy
    proxy = flags.get("http-proxy") or None
    if "no-proxy" not in flags:
        if not proxy:
            conf_proxy = read_conf_naive(knobs, "HttpProxy")
            if conf_proxy:
                proxy = conf_proxy
                out.line("The installer will use the proxy at '%s' (imported from /etc/replicated.conf 'HttpProxy')"
                         % proxy)
            else:
                for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
                    if os.environ.get(var):
                        proxy = os.environ[var]
                        out.line("The installer will use the proxy at '%s' (imported from env var '%s')"
                                 % (proxy, var))
                        break
        if not proxy and not airgap:
            out.raw("Does this machine require a proxy to access the Internet? (y/N) ")
            timed_prompt()
            out.line()
    else:
        proxy = None
    no_proxy = None
    if proxy:
        hosts = ["localhost", "127.0.0.1", "172.17.0.1", private]
        for a in additional:
            hosts.extend(h for h in a.split(","))
        no_proxy = ",".join(sorted(set(h for h in hosts if h)))

    # ---- docker
    if ("no-docker" in flags or airgap) and not knobs["docker_installed"]:
        raise ToolExit(1, "Docker is not installed. Please install Docker before running this installation script.")

    # ---- the rest, paced over install_duration_s
    steps = []
    if "skip-preflights" not in flags:
        steps.append("\nRunning preflight checks...")
    if "skip-pull" in flags:
        steps.append("Skip docker pull flag detected, will not pull replicated and replicated-ui images")
    elif airgap:
        steps.append("Loading replicated and replicated-ui images from package")
        steps.append("Loading replicated debian, command, statsd-graphite, and premkit images from package")
    else:
        steps.append("Pulling replicated and replicated-ui images")
    steps += ["Tagging replicated and replicated-ui images", "Stopping replicated and replicated-ui service",
              "Installing replicated and replicated-ui service", "Starting replicated and replicated-ui service",
              "Installing replicated command alias"]
    operator = "no-operator" not in flags and "is-migration" not in flags
    if operator:
        steps.append("Installing local operator")
        if not airgap:
            steps.append("Installing local operator with command:\ncurl -sSL "
                         "https://get.replicated.com/operator?replicated_operator_tag=%s" % knobs["replicated_version"])
            steps.append("Pulling latest replicated-operator image")
        steps += ["Stopping replicated-operator service", "Installing replicated-operator service",
                  "Starting replicated-operator service", "\nOperator installation successful\n"]
    out.pace = float(knobs["install_duration_s"]) / (len(steps) + 1)

    opts = {"private_address": private, "public_address": public,
            "disable_replicated_ui": "disable-replicated-ui" in flags,
            "release_sequence": flags.get("release-sequence")}
    for s in steps:
        if knobs["install_hang"] and (s.startswith("Pulling replicated") or s.startswith("Loading replicated and")
                                      or s.startswith("Skip docker")):
            # blocked like an installer waiting on a prompt; the agent must kill the process group
            child = subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL)
            pid_path = os.path.join(sd, "install-child.pid")
            with open(pid_path + ".tmp", "w") as f:
                f.write("%d\n" % child.pid)
            os.replace(pid_path + ".tmp", pid_path)
            out.line(s)
            block_forever()
        if s.startswith("Installing replicated and replicated-ui service"):
            # ensureReplicatedConfReadable
            conf = knobs["replicated_conf"]
            if os.path.exists(conf):
                try:
                    os.chmod(conf, os.stat(conf).st_mode | 0o444)
                except OSError as e:
                    sys.stderr.write("chmod: changing permissions of '%s': %s\n" % (conf, os.strerror(e.errno)))
        if s.startswith("Starting replicated and replicated-ui service"):
            daemon_start(sd, knobs, opts)
        out.step(s)
        if knobs["install_exit_code"] and (s.startswith("Pulling replicated") or s.startswith("Loading replicated and")
                                           or s.startswith("Skip docker")):
            raise ToolExit(knobs["install_exit_code"],
                           'Error response from daemon: Get "https://registry.replicated.com/v2/": net/http: '
                           "request canceled while waiting for connection (fake-tfe install_exit_code=%d)"
                           % knobs["install_exit_code"])

    write_json(os.path.join(sd, "install.json"), {
        "completed_at": now(),
        "argv": list(argv),
        "flags": flags,
        "flag_order": order,
        "private_address": private,
        "public_address": public,
        "proxy_address": proxy,
        "no_proxy_addresses": no_proxy,
        "additional_no_proxy": ",".join(additional) if additional else None,
        "airgap": airgap,
        "disable_replicated_ui": "disable-replicated-ui" in flags,
        "fast_timeouts": fast,
        "release_sequence_flag": flags.get("release-sequence"),
    })
    # outro
    if "disable-replicated-ui" not in flags:
        port = flags.get("ui-bind-port") or "8800"
        out.line("To continue the installation, visit the following URL in your browser:\n\n  http://%s:%s"
                 % (public or "<this_server_address>", port))
    if not shutil.which("replicated"):
        out.line("\nTo create an alias for the replicated cli command run the following in your current shell or "
                 "log out and log back in:\n\n  source /etc/replicated.alias")
    out.line()
    return 0


# --------------------------------------------------------------------------------------------------
# replicatedctl

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


# --------------------------------------------------------------------------------------------------
# replicated (admin)

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
        out.line("Generating support bundle...")
        out.line("Support bundle uploaded to support-bundles/%s/%s/replicated-support%d.tar.gz"
                 % (rfc3339nano(t), d.get("private_address"), int(t)))
        return 0
    raise ToolExit(1, 'Error: unknown admin command "%s"\nRun \'replicated admin\' to list the available admin '
                      "commands." % cmd)


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


# --------------------------------------------------------------------------------------------------
# dispatch

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


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.stderr.write("usage: faketfe.py install.sh|replicatedctl|replicated ARGS...\n")
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
