"""The fake Replicated daemon: no process, only daemon.json, app.json and app-config.json in the state
directory; every query works out the current state from them, the clock and the knobs."""

import contextlib
import os

from .conf import check_daemon_config, parse_params_text
from .gotext import rfc3339nano
from .state import ToolExit, now, rand_alnum, rand_hex, read_json, state_lock, write_json


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
