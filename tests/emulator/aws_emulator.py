#!/usr/bin/env python3
"""EC2 Auto Scaling (Query API) + per-instance IMDSv2 emulator for tfe-node-agent tests.

Python 3.11 standard library only, so the Rust integration tests and the demo can
spawn it with any python3.  It speaks the real wire formats (AWS Query protocol in,
XML out; IMDSv2 token flow), so aws-sdk-autoscaling, aws-config's IMDS client and
boto3 all work against it unchanged, and it enforces lifecycle-hook semantics
(wait states, tokens, heartbeat/global timeouts, DefaultResult, retention).

Usage: aws_emulator.py [--port 0] [--port-file PATH] [--log PATH]
See README.md next to this file for the control API and the event format.
"""

import argparse
import base64
import json
import logging
import os
import re
import secrets
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

import faults

log = logging.getLogger("aws-emulator")

NAMESPACE = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
EC2_NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
RESULTS = ("CONTINUE", "ABANDON")
REGION, AZ, INSTANCE_TYPE, ACCOUNT_ID = "us-east-1", "us-east-1a", "m5.xlarge", "123456789012"
# States after which the instance no longer exists for the Auto Scaling API.
GONE = ("Terminated", "Warmed:Terminated")
# Steady states a launch can end in; reaching one also fixes the IMDS target state.
STEADY = ("InService", "Warmed:Stopped")
TICK_SECONDS = 0.05
IMDS_FAULT_STATUS = {"http401": 401, "http404": 404, "http503": 503}
# Armed faults that answer an error instead of acting: (code, message, HTTP status).
FAULT_ERRORS = {"throttle": ("Throttling", "Rate exceeded", 400),
                "http500": ("InternalFailure", "An internal error occurred (injected fault).", 500),
                "http503": ("ServiceUnavailable", "Service is unavailable (injected fault).", 503)}
MAX_IMDS_TTL = 21600
# Capacity-managed launches cycle through these zones.
AZS = ("us-east-1a", "us-east-1b", "us-east-1c")
# Every Auto Scaling process SuspendProcesses / ResumeProcesses know (none named = all of them).
PROCESSES = ("Launch", "Terminate", "AddToLoadBalancer", "AlarmNotification", "AZRebalance", "HealthCheck",
             "InstanceRefresh", "ReplaceUnhealthy", "ScheduledActions")


def iso(ts: float) -> str:
    """AWS timestamp format (millisecond precision, Z suffix); both SDKs parse it."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class ApiError(Exception):
    """An error reported through the Query API as an <ErrorResponse>."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class ControlError(Exception):
    """A control-API error (HTTP status + message); also mapped to ApiError where shared."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# --------------------------------------------------------------------------- model

@dataclass
class Hook:
    name: str
    group: str
    transition: str
    heartbeat_timeout: int
    default_result: str
    global_timeout_override: int | None = None  # test-only: real AWS derives it

    @property
    def global_timeout(self) -> int:
        return self.global_timeout_override or min(172800, 100 * self.heartbeat_timeout)


@dataclass
class Group:
    name: str
    hooks: dict[str, Hook]
    retain_on_terminate_abandon: bool
    wait_state_delay: float  # used by the API's TerminateInstanceInAutoScalingGroup
    created: float = field(default_factory=time.time)
    min_size: int = 0
    max_size: int | None = None          # None: unmanaged groups report max(10, instances)
    desired: int | None = None           # None unless capacity-managed (has a launch template)
    template_id: str | None = None       # the group's launch template (capacity-managed when set)
    template_version: str | None = None  # as given: "3", "$Latest" or "$Default"
    launch_delay: float = 0.0            # seconds between deciding a launch and making it
    suspended: dict[str, float] = field(default_factory=dict)  # process -> wall time suspended
    pending_launches: list[float] = field(default_factory=list)  # monotonic due times
    launches: int = 0                    # launches made (cycles the AZ)
    owed_replacements: int = 0           # instances lost other than by scale-in, not yet replaced

    def hooks_for(self, transition: str) -> list[Hook]:
        return [h for h in self.hooks.values() if h.transition == transition]

    @property
    def managed(self) -> bool:
        return self.template_id is not None


@dataclass
class LaunchTemplate:
    id: str
    name: str
    versions: list[tuple[str, float]]  # (user data, wall-clock creation) of version i+1
    default_version: int = 1

    def resolve(self, version: str | None) -> int | None:
        """A version spec ("3", "$Latest", "$Default"; None = $Default) as an existing number, else None."""
        if version in (None, "$Default"):
            return self.default_version
        if version == "$Latest":
            return len(self.versions)
        if isinstance(version, str) and version.isdigit() and 1 <= int(version) <= len(self.versions):
            return int(version)
        return None

    def view(self) -> dict:
        return {"id": self.id, "name": self.name, "versions": list(range(1, len(self.versions) + 1)),
                "default_version": self.default_version, "latest_version": len(self.versions)}


@dataclass
class LifecycleAction:
    """One hook's pending action on one instance (AWS issues one token per hook)."""
    hook: Hook
    token: str
    entered_at: float
    deadline: float          # last heartbeat + HeartbeatTimeout, capped at global_deadline
    global_deadline: float   # entered_at + GlobalTimeout; heartbeats never extend it


@dataclass
class Instance:
    id: str
    group: str
    private_ip: str
    spot: bool
    defer_target: bool
    state: str = "Pending"
    target: str | None = None             # IMDS autoscaling/target-lifecycle-state (None = 404)
    actions: dict[str, LifecycleAction] = field(default_factory=dict)
    done_state: str | None = None         # where the current wait goes once every hook CONTINUEs
    terminate_at: float | None = None     # pending wait_state_delay: enter Terminating:Wait then
    launched_at: float = field(default_factory=time.time)
    imds: dict = field(default_factory=lambda: {"spot_instance_action": None, "rebalance": None,
                                                "maintenance": [], "clock_skew_s": 0.0})
    imds_tokens: dict[str, float] = field(default_factory=dict)   # token -> monotonic expiry
    imds_requests: Counter = field(default_factory=Counter)
    imds_port: int | None = None
    az: str = AZ
    template_id: str | None = None
    template_version: int | None = None   # the launch template version it was launched from
    user_data: str | None = None
    in_service_at: float | None = None    # wall clock, last time it reached InService
    live_seen: bool = False               # it has counted toward capacity at some point
    gone_noted: bool = False              # it has stopped counting toward capacity


class Model:
    """All emulator state.  Every access goes through self.lock (an RLock so helpers nest)."""

    def __init__(self):
        self.lock = threading.RLock()
        self.started = time.monotonic()
        self.faults = faults.FaultEngine(("api", "imds"))
        # Makes a capacity launch: (group, cause) -> Instance; the Emulator sets it (it owns the IMDS listeners).
        self.launcher = None
        self.reset()

    def reset(self):
        with self.lock:
            self.groups: dict[str, Group] = {}
            self.instances: dict[str, Instance] = {}
            self.templates: dict[str, LaunchTemplate] = {}
            self.events: list[dict] = []
            self.faults.clear()
            self._next_ip = 10

    def _alloc_ip(self) -> str:
        """The next free 10.0.<n>.<m> (m in 1..254), skipping addresses any instance already holds."""
        used = {i.private_ip for i in self.instances.values()}
        while True:
            k, self._next_ip = self._next_ip, self._next_ip + 1
            ip = f"10.0.{1 + (k - 1) // 254}.{1 + (k - 1) % 254}"
            if ip not in used:
                return ip

    @staticmethod
    def now() -> float:
        return time.monotonic()  # deadlines must not jump with the wall clock

    def record(self, kind: str, **fields):
        event = {"seq": len(self.events), "t": round(self.now() - self.started, 3), "kind": kind, **fields}
        self.events.append(event)
        log.info("event %s", json.dumps(event))

    # ---- control-side operations

    def create_group(self, spec: dict):
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise ControlError(400, "group needs a non-empty 'name'")
        if name in self.groups:
            raise ControlError(409, f"group {name} already exists")
        hooks = {}
        for h in spec.get("hooks") or []:
            hook = self._parse_hook(name, h)
            hooks[hook.name] = hook
        delay = spec.get("wait_state_delay", 0)
        if not isinstance(delay, (int, float)) or delay < 0:
            raise ControlError(400, "wait_state_delay must be a number >= 0")
        launch_delay = spec.get("launch_delay", 0)
        if isinstance(launch_delay, bool) or not isinstance(launch_delay, (int, float)) or launch_delay < 0:
            raise ControlError(400, "launch_delay must be a number >= 0")
        sizes = {}
        for key in ("min_size", "max_size", "desired_capacity"):
            value = spec.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ControlError(400, f"{key} must be an integer >= 0")
            sizes[key] = value
        group = Group(name, hooks, bool(spec.get("retain_on_terminate_abandon", False)), delay,
                      min_size=sizes["min_size"] or 0, max_size=sizes["max_size"], launch_delay=float(launch_delay))
        lt = spec.get("launch_template")
        if lt is not None:
            if not isinstance(lt, dict):
                raise ControlError(400, "launch_template must be {\"id\"|\"name\": str, \"version\": str}")
            ref = lt.get("id") or lt.get("name")
            version = lt.get("version", "$Default")
            if isinstance(version, int) and not isinstance(version, bool):
                version = str(version)
            template = self.templates_lookup(ref)
            if template is None:
                raise ControlError(404, f"launch template {ref} not found")
            if not isinstance(version, str) or template.resolve(version) is None:
                raise ControlError(400, f"launch template {template.id} has no version {version!r}")
            group.template_id, group.template_version = template.id, version
            desired = sizes["desired_capacity"]
            group.desired = group.min_size if desired is None else desired
            if group.max_size is None:
                group.max_size = max(10, group.min_size, group.desired)
            if not group.min_size <= group.desired <= group.max_size:
                raise ControlError(400, f"Desired capacity:{group.desired} must be between the specified "
                                        f"min size:{group.min_size} and max size:{group.max_size}")
        elif sizes["desired_capacity"] is not None:
            raise ControlError(400, "desired_capacity needs a launch_template (a group without one is not "
                                    "capacity-managed: its desired capacity is its instance count)")
        elif group.max_size is not None and group.min_size > group.max_size:
            raise ControlError(400, "min_size must be <= max_size")
        self.groups[name] = group
        if group.managed:
            self.record_capacity(group, "create", ["min_size", "max_size", "desired_capacity", "launch_template"])

    # ---- launch templates

    def templates_lookup(self, ref) -> LaunchTemplate | None:
        """A template by id or by name."""
        if not isinstance(ref, str):
            return None
        return self.templates.get(ref) or next((t for t in self.templates.values() if t.name == ref), None)

    def template(self, ref: str) -> LaunchTemplate:
        template = self.templates_lookup(ref)
        if template is None:
            raise ControlError(404, f"launch template {ref} not found")
        return template

    @staticmethod
    def _user_data(spec) -> str:
        if not isinstance(spec, dict) or not isinstance(spec.get("user_data", ""), str):
            raise ControlError(400, "a version is {\"user_data\": \"<plain text>\"}")
        return spec.get("user_data", "")

    def create_template(self, spec: dict) -> LaunchTemplate:
        name, versions = spec.get("name"), spec.get("versions") or [{}]
        if not isinstance(name, str) or not re.fullmatch(r"[a-zA-Z0-9().\-/_]{3,128}", name):
            raise ControlError(400, "launch template needs a 'name' (3-128 of letters, digits, ( ) . - / _)")
        if any(t.name == name for t in self.templates.values()):
            raise ControlError(409, f"launch template {name} already exists")
        if not isinstance(versions, list):
            raise ControlError(400, "versions must be a list of {\"user_data\": ...}")
        now = time.time()
        template = LaunchTemplate("lt-" + secrets.token_hex(9)[:17], name,
                                  [(self._user_data(v), now) for v in versions])
        self.templates[template.id] = template
        return template

    def add_template_version(self, ref: str, spec: dict) -> int:
        template = self.template(ref)
        template.versions.append((self._user_data(spec), time.time()))
        return len(template.versions)

    # ---- capacity

    def live(self, group: Group) -> list[Instance]:
        return [i for i in self.instances.values() if i.group == group.name and self.counts(i)]

    @staticmethod
    def counts(inst: Instance) -> bool:
        """Whether the instance counts toward its group's capacity: not terminating (nor about to), not
        gone, not in the warm pool, not in Standby (AWS replaces a standby instance unless desired was
        decremented)."""
        return (inst.state not in GONE and not inst.state.startswith(("Warmed:", "Terminating"))
                and inst.state != "Standby" and inst.terminate_at is None)

    def record_capacity(self, group: Group, cause: str, changed: list[str]):
        template = self.templates.get(group.template_id)
        self.record("capacity", group=group.name, cause=cause, changed=changed, min_size=group.min_size,
                    max_size=group.max_size, desired_capacity=group.desired,
                    launch_template=None if template is None else {
                        "id": template.id, "name": template.name, "version": group.template_version,
                        "resolved_version": template.resolve(group.template_version)},
                    time=time.time())

    def group_or_error(self, name: str) -> Group:
        group = self.groups.get(name)
        if group is None:
            # AWS's wording for SetDesiredCapacity / UpdateAutoScalingGroup on an unknown group (unverified).
            raise ApiError("ValidationError", f"AutoScalingGroup name not found - AutoScalingGroup {name} not found")
        return group

    def set_desired(self, group: Group, desired: int, cause: str):
        if not group.managed:
            raise ApiError("ValidationError", f"emulator: group {group.name} has no launch template, so it is not "
                                              "capacity-managed (give it one with UpdateAutoScalingGroup)")
        if desired > group.max_size:
            raise ApiError("ValidationError", f"New SetDesiredCapacity value {desired} is above max value "
                                              f"{group.max_size} for the AutoScalingGroup.")
        if desired < group.min_size:
            raise ApiError("ValidationError", f"New SetDesiredCapacity value {desired} is below min value "
                                              f"{group.min_size} for the AutoScalingGroup.")
        if desired != group.desired:
            group.desired = desired
            self.record_capacity(group, cause, ["desired_capacity"])

    def update_group(self, group: Group, min_size: int | None, max_size: int | None, desired: int | None,
                     template_ref: str | None, by_name: bool, version: str | None):
        """UpdateAutoScalingGroup: validate everything first, then apply all of it (or nothing)."""
        template = self.templates.get(group.template_id)
        if template_ref is not None:
            template = self.templates.get(template_ref) if not by_name else \
                next((t for t in self.templates.values() if t.name == template_ref), None)
            if template is None:
                what = f"template name {template_ref}" if by_name else f"template ID {template_ref}"
                raise ApiError("ValidationError", "You must use a valid fully-formed launch template. "
                                                  f"The specified launch template, with {what}, does not exist.")
            if version is None:
                version = "$Default"
        elif version is not None and template is None:
            raise ApiError("ValidationError", "You must use a valid fully-formed launch template. "
                                              "Either a LaunchTemplateId or a LaunchTemplateName must be specified.")
        new_version = group.template_version if version is None else version
        if template is not None and template.resolve(new_version) is None:
            raise ApiError("ValidationError", "You must use a valid fully-formed launch template. Could not find "
                                              f"the specified version {new_version} for the launch template "
                                              f"with ID {template.id}.")
        new_min = group.min_size if min_size is None else min_size
        live = len(self.live(group))
        new_max = group.max_size if max_size is None else max_size
        if template is not None and new_max is None:
            new_max = max(10, new_min, live)
        effective_max = max(10, live) if new_max is None else new_max
        if new_min > effective_max:
            raise ApiError("ValidationError", f"Max bound, {effective_max}, must be greater than or equal to "
                                              f"min bound, {new_min}")  # unverified wording
        if template is None:
            if desired is not None:
                raise ApiError("ValidationError", f"emulator: group {group.name} has no launch template, so it is "
                                                  "not capacity-managed; give it one to set DesiredCapacity")
            new_desired = None
        else:
            current = group.desired if group.desired is not None else live
            new_desired = desired
            if new_desired is None:  # AWS: a new min above / max below the current size moves desired
                new_desired = max(new_min, min(effective_max, current))
            if not new_min <= new_desired <= effective_max:
                raise ApiError("ValidationError", f"Desired capacity:{new_desired} must be between the specified "
                                                  f"min size:{new_min} and max size:{new_max}")
        changed = [k for k, old, new in (("min_size", group.min_size, new_min), ("max_size", group.max_size, new_max),
                                         ("desired_capacity", group.desired, new_desired),
                                         ("launch_template", (group.template_id, group.template_version),
                                          (template.id if template else None, new_version if template else None)))
                   if old != new]
        group.min_size, group.max_size, group.desired = new_min, new_max, new_desired
        if template is not None:
            group.template_id, group.template_version = template.id, new_version
        if changed:
            self.record_capacity(group, "UpdateAutoScalingGroup", changed)

    def suspend(self, group: Group, processes: list[str], suspend: bool):
        unknown = [p for p in processes if p not in PROCESSES]
        if unknown:
            # The AWS text for an unknown process name is unverified.
            raise ApiError("ValidationError", f"Process names {', '.join(unknown)} are not valid. Valid values: "
                                              + ", ".join(PROCESSES))
        now = time.time()
        for p in processes or PROCESSES:
            if suspend:
                group.suspended.setdefault(p, now)
            else:
                group.suspended.pop(p, None)
        self.record("processes", group=group.name, action="suspend" if suspend else "resume",
                    processes=list(processes or PROCESSES), suspended=sorted(group.suspended), time=now)

    def launch(self, group: Group, imds_port: int, cause: str) -> Instance:
        """A capacity launch: a new instance from the group's launch template, version resolved now."""
        template = self.templates[group.template_id]
        version = template.resolve(group.template_version)
        iid = "i-" + secrets.token_hex(9)[:17]
        inst = Instance(iid, group.name, self._alloc_ip(), False, False, imds_port=imds_port,
                        az=AZS[group.launches % len(AZS)], template_id=template.id, template_version=version,
                        user_data=template.versions[version - 1][0])
        group.launches += 1
        self.instances[iid] = inst
        self.record("launch", instance=iid, group=group.name, template_version=version, cause=cause,
                    availability_zone=inst.az, private_ip=inst.private_ip, imds_port=imds_port, time=time.time())
        self._begin(inst, LAUNCHING, "Pending:Wait", "InService", "launch")
        return inst

    def _capacity(self, group: Group, now: float):
        """One ticker step of a capacity-managed group: scale in, or plan and make launches."""
        live = self.live(group)
        excess = len(live) - group.desired
        if excess > 0:
            group.pending_launches.clear()
            if "Terminate" not in group.suspended:
                current = self.templates[group.template_id].resolve(group.template_version)
                # Simplified default termination policy: off the current version first, then oldest launch.
                for inst in sorted(live, key=lambda i: (i.template_version == current, i.launched_at))[:excess]:
                    self.terminate(inst.id, group.wait_state_delay, "scale-in")
            return
        missing = -excess
        group.owed_replacements = min(group.owed_replacements, missing)
        if "Launch" in group.suspended:
            group.pending_launches.clear()
            return
        del group.pending_launches[missing:]  # desired went down: drop the latest plans
        while len(group.pending_launches) < missing:
            group.pending_launches.append(now + group.launch_delay)
        while group.pending_launches and group.pending_launches[0] <= now and self.launcher is not None:
            group.pending_launches.pop(0)
            cause = "scale-out"
            if group.owed_replacements > 0:
                group.owed_replacements -= 1
                cause = "replacement"
            self.launcher(group, cause)

    @staticmethod
    def _parse_hook(group: str, h: dict) -> Hook:
        name, transition = h.get("name"), h.get("transition")
        timeout, result = h.get("heartbeat_timeout", 3600), h.get("default_result", "ABANDON")
        override = h.get("global_timeout")
        if not isinstance(name, str) or not name:
            raise ControlError(400, "hook needs a non-empty 'name'")
        if transition not in (LAUNCHING, TERMINATING):
            raise ControlError(400, f"hook {name}: transition must be {LAUNCHING} or {TERMINATING}")
        # Any integer >= 1 (real AWS: 30..7200) so tests can expire hooks in seconds.
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1:
            raise ControlError(400, f"hook {name}: heartbeat_timeout must be an integer >= 1")
        if result not in RESULTS:
            raise ControlError(400, f"hook {name}: default_result must be CONTINUE or ABANDON")
        if override is not None and (not isinstance(override, int) or override < 1):
            raise ControlError(400, f"hook {name}: global_timeout must be an integer >= 1")
        return Hook(name, group, transition, timeout, result, override)

    def create_instance(self, spec: dict, imds_port: int) -> Instance:
        group = spec.get("group")
        if group not in self.groups:
            raise ControlError(404, f"group {group} not found")
        iid = spec.get("id") or "i-" + secrets.token_hex(9)[:17]
        if not isinstance(iid, str) or not re.fullmatch(r"i-[0-9a-zA-Z]{1,17}", iid):
            raise ControlError(400, f"bad instance id {iid!r}")
        if iid in self.instances:
            raise ControlError(409, f"instance {iid} already exists")
        ip = spec.get("private_ip")
        if ip is None:
            ip = self._alloc_ip()
        inst = Instance(iid, group, ip, bool(spec.get("spot", False)), bool(spec.get("defer_target_state", False)),
                        imds_port=imds_port)
        self.instances[iid] = inst
        if spec.get("warm", False):
            self._begin(inst, LAUNCHING, "Warmed:Pending:Wait", "Warmed:Stopped", "launch")
        else:
            self._begin(inst, LAUNCHING, "Pending:Wait", "InService", "launch")
        return inst

    def instance(self, iid: str) -> Instance:
        inst = self.instances.get(iid)
        if inst is None:
            # Same text as AWS's TerminateInstanceInAutoScalingGroup for an unknown id.
            raise ControlError(404, f"Instance Id not found - No managed instance found for instance ID: {iid}")
        return inst

    def terminate(self, iid: str, delay: float, cause: str) -> Instance:
        inst = self.instance(iid)
        if inst.state in GONE:
            raise ControlError(404, f"Instance Id not found - No managed instance found for instance ID: {iid}")
        if inst.state == "Terminating:Retained":
            # Retained instances stay until explicitly terminated; no hooks run again.
            self._set_state(inst, "Terminated", cause)
            return inst
        if "Terminating" in inst.state or inst.terminate_at is not None:
            raise ControlError(409, f"instance {iid} is already terminating ({inst.state})")
        inst.actions.clear()  # an unfinished launch wait is cancelled by the termination
        warm = inst.state.startswith("Warmed:")
        self._set_target(inst, "Warmed:Terminated" if warm else "Terminated")
        if delay > 0 and inst.state == "InService":
            # IMDS already says Terminated, but the wait state (and so any action a
            # Complete/Heartbeat could address) only appears after the delay.
            inst.terminate_at = self.now() + delay
            self._note_capacity(inst, cause)
        else:
            self._enter_terminating(inst, cause)
        return inst

    def _enter_terminating(self, inst: Instance, cause: str):
        prefix = "Warmed:" if inst.state.startswith("Warmed:") else ""
        self._begin(inst, TERMINATING, prefix + "Terminating:Wait", prefix + "Terminated", cause)

    def leave_warm_pool(self, iid: str) -> Instance:
        inst = self.instance(iid)
        if inst.state != "Warmed:Stopped":
            raise ControlError(409, f"instance {iid} is {inst.state}, not Warmed:Stopped")
        # The launch hook fires a second time, now for Pending:Wait (AWS warm-pool docs).
        self._begin(inst, LAUNCHING, "Pending:Wait", "InService", "leave-warm-pool")
        return inst

    def standby_check(self, iid: str, group: str | None, enter: bool) -> Instance:
        """The instance, if it may enter (InService) or exit (Standby) standby; else the AWS-like error."""
        inst = self.instance(iid)
        if inst.state in GONE:
            raise ControlError(404, f"Instance Id not found - No managed instance found for instance ID: {iid}")
        if group is not None and inst.group != group:
            raise ControlError(400, f"The instance {iid} is not part of Auto Scaling group {group}.")
        if enter and (inst.state != "InService" or inst.terminate_at is not None):
            raise ControlError(409, f"The instance {iid} is not in InService.")
        if not enter and inst.state != "Standby":
            raise ControlError(409, f"The instance {iid} is not in Standby.")
        return inst

    def enter_standby(self, iid: str, group: str | None = None) -> Instance:
        """InService -> Standby (EnteringStandby is skipped, like the Proceed states). No hook fires."""
        inst = self.standby_check(iid, group, enter=True)
        self._set_state(inst, "Standby", "enter-standby")
        self._set_target(inst, "Standby")
        return inst

    def exit_standby(self, iid: str, group: str | None = None) -> Instance:
        """Standby -> Pending:Wait with a new action and token per launch hook (the launch hooks fire
        again, as for a new instance), or straight to InService without one."""
        inst = self.standby_check(iid, group, enter=False)
        if inst.defer_target:
            self._set_target(inst, None)  # not populated until the steady state, as at launch
        self._begin(inst, LAUNCHING, "Pending:Wait", "InService", "exit-standby")
        return inst

    def set_imds(self, iid: str, spec: dict) -> Instance:
        inst = self.instance(iid)
        for key in ("spot_instance_action", "rebalance"):  # null removes the notice (404)
            if key in spec:
                inst.imds[key] = spec[key]
        if "maintenance" in spec:
            inst.imds["maintenance"] = spec["maintenance"] or []
        if "target_lifecycle_state" in spec:  # override (null = 404) until the next transition
            self._set_target(inst, spec["target_lifecycle_state"])
        if "clock_skew_s" in spec:  # how far IMDS's Date header runs ahead (negative: behind)
            skew = spec["clock_skew_s"]
            if isinstance(skew, bool) or not isinstance(skew, (int, float)):
                raise ControlError(400, "clock_skew_s must be a number of seconds")
            inst.imds["clock_skew_s"] = float(skew)
        return inst

    def set_faults(self, spec: dict) -> dict:
        unknown = set(spec) - {"throttle", "expire_imds_tokens", "add", "clear"}
        if unknown:
            raise ControlError(400, f"unknown fault field(s): {', '.join(sorted(unknown))}")
        if "throttle" in spec:  # the first form: one throttle per action, re-arming replaces it
            rule = spec["throttle"]
            if rule is None:
                self.faults.clear(only_throttles=True)
            elif not isinstance(rule, dict) or not isinstance(rule.get("count"), int) or not rule.get("action"):
                raise ControlError(400, "throttle must be {\"action\": str, \"count\": int} or null")
            else:
                self.faults.set_legacy_throttle(rule["action"], rule["count"])
        if spec.get("expire_imds_tokens"):
            for inst in self.instances.values():
                inst.imds_tokens.clear()
        try:
            return faults.control(self.faults, spec)
        except faults.RuleError as e:
            raise ControlError(400, str(e)) from None

    def view(self, inst: Instance) -> dict:
        now = self.now()
        return {
            "id": inst.id, "group": inst.group, "lifecycle_state": inst.state,
            "target_lifecycle_state": inst.target, "private_ip": inst.private_ip,
            "imds_port": inst.imds_port, "imds_requests": dict(inst.imds_requests),
            "terminate_in": None if inst.terminate_at is None else round(max(0.0, inst.terminate_at - now), 3),
            "actions": [{"hook": a.hook.name, "transition": a.hook.transition, "token": a.token,
                         "heartbeat_deadline_in": round(a.deadline - now, 3),
                         "global_deadline_in": round(a.global_deadline - now, 3)}
                        for a in inst.actions.values()],
            "availability_zone": inst.az, "launch_template_id": inst.template_id,
            "template_version": inst.template_version, "user_data": inst.user_data,
            "launched_at": inst.launched_at, "in_service_at": inst.in_service_at,
        }

    # ---- Query-API-side operations

    def find_action(self, group: str, hook_name: str, iid: str | None, token: str | None):
        """Locate the active action addressed by Complete/Heartbeat, as AWS validates it."""
        if not iid and not token:
            raise ApiError("ValidationError", "Either InstanceId or LifecycleActionToken must be specified.")
        if iid:
            inst = self.instances.get(iid)
        else:
            inst = next((i for i in self.instances.values()
                         if any(a.token == token for a in i.actions.values())), None)
        # The action must belong to this group and this hook; the hook's transition then
        # necessarily matches the wait state, because actions are only created per hook.
        action = inst.actions.get(hook_name) if inst and inst.group == group else None
        if action is not None and token and action.token != token:
            action = None
        if action is None:
            what = f"instance ID {iid}" if iid else f"token {token}"
            raise ApiError("ValidationError", f"No active Lifecycle Action found with {what}")
        return inst, action

    def complete(self, inst: Instance, action: LifecycleAction, result: str):
        self._resolve(inst, action.hook.name, result, "complete")

    def heartbeat(self, action: LifecycleAction):
        action.deadline = min(self.now() + action.hook.heartbeat_timeout, action.global_deadline)

    # ---- time

    def tick(self):
        with self.lock:
            now = self.now()
            for inst in list(self.instances.values()):
                if inst.terminate_at is not None and now >= inst.terminate_at:
                    inst.terminate_at = None
                    self._enter_terminating(inst, "wait-state-delay")
                for name, action in list(inst.actions.items()):
                    if name not in inst.actions:
                        continue  # an ABANDON earlier in this loop cancelled it
                    if now >= action.global_deadline:
                        self._resolve(inst, name, action.hook.default_result, "global-timeout")
                    elif now >= action.deadline:
                        self._resolve(inst, name, action.hook.default_result, "heartbeat-timeout")
            for group in list(self.groups.values()):
                if group.managed:
                    self._capacity(group, now)

    # ---- transitions

    def _begin(self, inst: Instance, transition: str, wait_state: str, done_state: str, cause: str):
        """Start a transition: enter the wait state if hooks exist, else go straight through."""
        if transition == LAUNCHING and not inst.defer_target:
            # AWS sets the target while the instance *prepares* to transition, i.e. it is
            # already InService during Pending:Wait (the AWS user-data tutorial relies on it).
            self._set_target(inst, done_state)
        hooks = self.groups[inst.group].hooks_for(transition)
        if not hooks:
            self._set_state(inst, done_state, cause)
            return
        now = self.now()
        inst.actions = {h.name: LifecycleAction(h, str(uuid.uuid4()), now,
                                                now + min(h.heartbeat_timeout, h.global_timeout),
                                                now + h.global_timeout) for h in hooks}
        inst.done_state = done_state
        self._set_state(inst, wait_state, cause)

    def _resolve(self, inst: Instance, hook_name: str, result: str, cause: str):
        """Apply a hook result, whether from CompleteLifecycleAction or a timeout."""
        action = inst.actions.pop(hook_name)
        from_state = inst.state
        warm = from_state.startswith("Warmed:")
        if result == "ABANDON":
            inst.actions.clear()  # ABANDON skips the remaining hooks
            if warm:
                to_state = "Warmed:Terminated"
            elif action.hook.transition == TERMINATING and self.groups[inst.group].retain_on_terminate_abandon:
                to_state = "Terminating:Retained"  # RetentionTriggers.TerminateHookAbandon=retain
            else:
                to_state = "Terminated"  # an abandoned launch is terminated (and replaced)
        elif inst.actions:
            to_state = from_state  # other hooks of this transition are still pending
        else:
            to_state = inst.done_state
        self.record("lifecycle", instance=inst.id, group=inst.group, hook=hook_name,
                    transition=action.hook.transition, result=result, cause=cause,
                    from_state=from_state, to_state=to_state)
        if to_state != from_state:
            self._change_state(inst, to_state, cause, hook=hook_name, result=result)
        if result == "ABANDON":
            self._set_target(inst, "Warmed:Terminated" if warm else "Terminated")
        elif to_state in STEADY:
            self._set_target(inst, to_state)

    def _set_state(self, inst: Instance, state: str, cause: str):
        self._change_state(inst, state, cause)
        if state in STEADY:
            self._set_target(inst, state)

    def _change_state(self, inst: Instance, state: str, cause: str, **extra):
        """Every lifecycle state change goes through here: one `state` event each."""
        from_state, inst.state = inst.state, state
        now = time.time()
        if state == "InService":
            inst.in_service_at = now
        self.record("state", instance=inst.id, from_state=from_state, to_state=state, cause=cause,
                    template_version=inst.template_version, time=now, **extra)
        self._note_capacity(inst, cause)

    def _note_capacity(self, inst: Instance, cause: str):
        """Track when an instance starts and stops counting toward capacity; one lost other than by
        scale-in is owed a replacement (an abandoned launch, a terminate that kept desired, …)."""
        if self.counts(inst):
            inst.live_seen, inst.gone_noted = True, False
        elif inst.live_seen and not inst.gone_noted:
            inst.gone_noted = True
            group = self.groups.get(inst.group)
            if group is not None and group.managed and cause != "scale-in":
                group.owed_replacements += 1

    def _set_target(self, inst: Instance, target: str | None):
        if target != inst.target:
            self.record("target", instance=inst.id, from_target=inst.target, to_target=target)
            inst.target = target


# --------------------------------------------------------------------------- Query API

def members(params: dict, name: str) -> list[str]:
    """Collect a Query-protocol list `Name.member.N` in N order."""
    pat = re.compile(re.escape(name) + r"\.member\.(\d+)$")
    found = sorted((int(m.group(1)), v) for k, v in params.items() if (m := pat.match(k)))
    return [v for _, v in found]


def xml_fields(pairs) -> str:
    """Render (tag, value) pairs; bools as true/false, None omitted, raw XML passed via bytes."""
    out = []
    for tag, value in pairs:
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        text = value.decode() if isinstance(value, bytes) else escape(str(value))
        out.append(f"<{tag}>{text}</{tag}>")
    return "".join(out)


def member_list(items: list[str]) -> bytes:
    return "".join(f"<member>{i}</member>" for i in items).encode()


class QueryApi:
    """The Auto Scaling Query API: form-encoded Action requests, XML responses."""

    def __init__(self, model: Model):
        self.model = model
        self.actions = {
            "DescribeAutoScalingInstances": self.describe_instances,
            "DescribeAutoScalingGroups": self.describe_groups,
            "DescribeLifecycleHooks": self.describe_hooks,
            "CompleteLifecycleAction": self.complete,
            "RecordLifecycleActionHeartbeat": self.heartbeat,
            "TerminateInstanceInAutoScalingGroup": self.terminate,
            "EnterStandby": self.enter_standby,
            "ExitStandby": self.exit_standby,
            "SetDesiredCapacity": self.set_desired_capacity,
            "UpdateAutoScalingGroup": self.update_group,
            "SuspendProcesses": self.suspend_processes,
            "ResumeProcesses": self.resume_processes,
        }
        # EC2 actions answered on the same port, in EC2's own Query flavour (its XML and error shape).
        self.ec2_actions = {
            "DescribeLaunchTemplateVersions": self.describe_template_versions,
        }

    def handle(self, params: dict, fault: str | None = None) -> tuple[int, bytes, str]:
        """Answers one request. `fault` is an armed fault's kind: the error kinds answer that error
        instead of acting; "lost" acts for real (the caller then drops the answer)."""
        action, request_id = params.get("Action", ""), str(uuid.uuid4())
        with self.model.lock:
            try:
                if fault in FAULT_ERRORS:
                    raise ApiError(*FAULT_ERRORS[fault])
                handler = self.actions.get(action) or self.ec2_actions.get(action)
                if handler is None:
                    raise ApiError("InvalidAction", f"The action {action or '(none)'} is not valid for this web service.")
                result = handler(params)
                if action in self.ec2_actions:
                    body = (f'<{action}Response xmlns="{EC2_NAMESPACE}"><requestId>{request_id}</requestId>'
                            f"{result}</{action}Response>")
                else:
                    body = (f'<{action}Response xmlns="{NAMESPACE}">'
                            + (f"<{action}Result>{result}</{action}Result>" if result else f"<{action}Result/>")
                            + f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
                            + f"</{action}Response>")
                status, code = 200, None
            except ApiError as e:
                side = "Receiver" if e.status >= 500 else "Sender"
                if action in self.ec2_actions:  # EC2's error shape
                    body = (f"<Response><Errors><Error><Code>{escape(e.code)}</Code><Message>{escape(e.message)}"
                            f"</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>")
                    self.model.record("api", action=action, params=params, status=e.status, error_code=e.code,
                                      fault=fault)
                    return e.status, body.encode(), request_id
                body = (f'<ErrorResponse xmlns="{NAMESPACE}"><Error><Type>{side}</Type>'
                        f"<Code>{escape(e.code)}</Code><Message>{escape(e.message)}</Message></Error>"
                        f"<RequestId>{request_id}</RequestId></ErrorResponse>")
                status, code = e.status, e.code
            except Exception:  # a bug must still produce a well-formed 500 the SDK can parse
                log.exception("%s failed", action)
                body = (f'<ErrorResponse xmlns="{NAMESPACE}"><Error><Type>Receiver</Type>'
                        f"<Code>InternalFailure</Code><Message>emulator bug, see --log</Message></Error>"
                        f"<RequestId>{request_id}</RequestId></ErrorResponse>")
                status, code = 500, "InternalFailure"
            self.model.record("api", action=action, params=params, status=status, error_code=code, fault=fault)
        return status, body.encode(), request_id

    def record_unanswered(self, params: dict, fault: str):
        """A request answered with no response at all (reset, hang): recorded on arrival."""
        with self.model.lock:
            self.model.record("api", action=params.get("Action", ""), params=params, status=None,
                              error_code=None, fault=fault)

    @staticmethod
    def required(params: dict, name: str) -> str:
        value = params.get(name)
        if not value:
            # The wording AWS uses for a missing required member.
            raise ApiError("ValidationError", f"1 validation error detected: Value null at "
                           f"'{name[0].lower() + name[1:]}' failed to satisfy constraint: Member must not be null")
        return value

    def describe_instances(self, params: dict) -> str:
        wanted = set(members(params, "InstanceIds"))
        rows = [i for i in self.model.instances.values()
                if i.state not in GONE and (not wanted or i.id in wanted)]
        return "<AutoScalingInstances>" + "".join(
            "<member>" + xml_fields([
                ("InstanceId", i.id), ("InstanceType", INSTANCE_TYPE), ("AutoScalingGroupName", i.group),
                ("AvailabilityZone", i.az), ("LifecycleState", i.state), ("HealthStatus", "HEALTHY"),
                ("LaunchTemplate", self.instance_template(i)),
                ("ProtectedFromScaleIn", False)]) + "</member>" for i in rows) + "</AutoScalingInstances>"

    def instance_template(self, inst: Instance) -> bytes | None:
        """An instance's LaunchTemplate element: the version it was launched from, as a number string."""
        template = self.model.templates.get(inst.template_id)
        if template is None:
            return None
        return xml_fields([("LaunchTemplateId", template.id), ("LaunchTemplateName", template.name),
                           ("Version", inst.template_version)]).encode()

    def describe_groups(self, params: dict) -> str:
        wanted = set(members(params, "AutoScalingGroupNames"))
        out = []
        for g in self.model.groups.values():
            if wanted and g.name not in wanted:
                continue  # unknown names are silently absent, as in AWS
            # Warm-pool, retained and gone instances do not count toward capacity.
            live = [i for i in self.model.instances.values() if i.group == g.name and i.state not in GONE
                    and not i.state.startswith("Warmed:") and i.state != "Terminating:Retained"]
            instances = [xml_fields([("InstanceId", i.id), ("InstanceType", INSTANCE_TYPE),
                                     ("AvailabilityZone", i.az), ("LifecycleState", i.state),
                                     ("HealthStatus", "HEALTHY"), ("LaunchTemplate", self.instance_template(i)),
                                     ("ProtectedFromScaleIn", False)])
                         for i in live]
            template = self.model.templates.get(g.template_id)
            spec = None if template is None else xml_fields([
                ("LaunchTemplateId", template.id), ("LaunchTemplateName", template.name),
                ("Version", g.template_version)]).encode()
            suspended = [xml_fields([("ProcessName", p), ("SuspensionReason", f"User suspended at {iso(t)[:19]}Z")])
                         for p, t in g.suspended.items()]
            out.append("<member>" + xml_fields([
                ("AutoScalingGroupName", g.name),
                ("AutoScalingGroupARN", f"arn:aws:autoscaling:{REGION}:{ACCOUNT_ID}:autoScalingGroup:"
                                        f"{uuid.uuid5(uuid.NAMESPACE_DNS, g.name)}:autoScalingGroupName/{g.name}"),
                ("LaunchTemplate", spec),
                ("MinSize", g.min_size), ("MaxSize", max(10, len(live)) if g.max_size is None else g.max_size),
                ("DesiredCapacity", g.desired if g.managed else len(live)),
                ("DefaultCooldown", 300), ("AvailabilityZones", member_list(list(AZS) if g.managed else [AZ])),
                ("HealthCheckType", "EC2"), ("HealthCheckGracePeriod", 300),
                ("Instances", member_list(instances)), ("CreatedTime", iso(g.created)),
                ("SuspendedProcesses", member_list(suspended)),
                ("NewInstancesProtectedFromScaleIn", False)]) + "</member>")
        return f"<AutoScalingGroups>{''.join(out)}</AutoScalingGroups>"

    def describe_hooks(self, params: dict) -> str:
        name = self.required(params, "AutoScalingGroupName")
        group = self.model.groups.get(name)
        if group is None:
            raise ApiError("ValidationError", f"Group {name} not found")  # exact AWS text unverified
        wanted = set(members(params, "LifecycleHookNames"))
        return "<LifecycleHooks>" + "".join(
            "<member>" + xml_fields([
                ("LifecycleHookName", h.name), ("AutoScalingGroupName", h.group),
                ("LifecycleTransition", h.transition), ("HeartbeatTimeout", h.heartbeat_timeout),
                ("GlobalTimeout", h.global_timeout), ("DefaultResult", h.default_result)]) + "</member>"
            for h in group.hooks.values() if not wanted or h.name in wanted) + "</LifecycleHooks>"

    def _lookup(self, params: dict):
        group = self.required(params, "AutoScalingGroupName")
        hook = self.required(params, "LifecycleHookName")
        return self.model.find_action(group, hook, params.get("InstanceId"), params.get("LifecycleActionToken"))

    def complete(self, params: dict) -> str:
        result = self.required(params, "LifecycleActionResult")
        if result not in RESULTS:
            raise ApiError("ValidationError", "LifecycleActionResult must be either CONTINUE or ABANDON")
        inst, action = self._lookup(params)
        self.model.complete(inst, action, result)
        return ""

    def heartbeat(self, params: dict) -> str:
        _, action = self._lookup(params)
        self.model.heartbeat(action)
        return ""

    def _standby(self, params: dict, enter: bool) -> str:
        group = self.required(params, "AutoScalingGroupName")
        ids = members(params, "InstanceIds")
        if not ids:
            raise ApiError("ValidationError", "The parameter InstanceIds must contain at least one instance.")
        try:
            for iid in ids:  # all or nothing: check every instance before moving any
                self.model.standby_check(iid, group, enter)
            g = self.model.groups[group]
            # A managed group's desired capacity follows (simplified: clamped to [min, max], never refused).
            if g.managed and (not enter or params.get("ShouldDecrementDesiredCapacity") == "true"):
                desired = g.desired - len(ids) if enter else g.desired + len(ids)
                desired = max(g.min_size, min(g.max_size, desired))
                if desired != g.desired:
                    g.desired = desired
                    self.model.record_capacity(g, "EnterStandby" if enter else "ExitStandby", ["desired_capacity"])
            for iid in ids:
                (self.model.enter_standby if enter else self.model.exit_standby)(iid, group)
        except ControlError as e:
            raise ApiError("ValidationError", e.message) from None
        now = time.time()
        # The shapes and texts of the AWS CLI reference's examples for these two calls.
        return "<Activities>" + "".join("<member>" + xml_fields([
            ("ActivityId", uuid.uuid4()), ("AutoScalingGroupName", group),
            ("Description", f"Moving EC2 instance {'to' if enter else 'out of'} Standby: {iid}"),
            ("Cause", f"At {iso(now)[:19]}Z user request put instance {iid} into standby state." if enter else
             f"At {iso(now)[:19]}Z instance {iid} was moved out of standby in response to a user request."),
            ("StartTime", iso(now)), ("StatusCode", "InProgress" if enter else "PreInService"),
            ("Progress", 50 if enter else 30),
            ("Details", json.dumps({"Subnet ID": "subnet-0123456789abcdef0", "Availability Zone": AZ}))])
            + "</member>" for iid in ids) + "</Activities>"

    def enter_standby(self, params: dict) -> str:
        self.required(params, "ShouldDecrementDesiredCapacity")
        return self._standby(params, enter=True)

    def exit_standby(self, params: dict) -> str:
        return self._standby(params, enter=False)

    def terminate(self, params: dict) -> str:
        iid = self.required(params, "InstanceId")
        self.required(params, "ShouldDecrementDesiredCapacity")
        inst = self.model.instances.get(iid)
        try:
            delay = self.model.groups[inst.group].wait_state_delay if inst else 0
            inst = self.model.terminate(iid, delay, "api-terminate")
        except ControlError as e:
            raise ApiError("ValidationError", e.message) from None
        g = self.model.groups[inst.group]
        if g.managed and params.get("ShouldDecrementDesiredCapacity") == "true" and g.desired > g.min_size:
            g.desired -= 1  # simplified: at min size AWS refuses; here desired just stays
            self.model.record_capacity(g, "TerminateInstanceInAutoScalingGroup", ["desired_capacity"])
        now = time.time()
        return "<Activity>" + xml_fields([
            ("ActivityId", uuid.uuid4()), ("AutoScalingGroupName", inst.group),
            ("Description", f"Terminating EC2 instance: {iid}"),
            ("Cause", f"At {iso(now)[:19]}Z instance {iid} was taken out of service in response to a user request."),
            ("StartTime", iso(now)), ("StatusCode", "InProgress"), ("Progress", 0)]) + "</Activity>"

    @staticmethod
    def integer(params: dict, name: str, required: bool = False) -> int | None:
        value = QueryApi.required(params, name) if required else params.get(name)
        if value is None:
            return None
        if not value.isdigit():
            raise ApiError("ValidationError", f"1 validation error detected: Value '{value}' at "
                           f"'{name[0].lower() + name[1:]}' failed to satisfy constraint: Member must be an integer")
        return int(value)

    def set_desired_capacity(self, params: dict) -> str:
        group = self.model.group_or_error(self.required(params, "AutoScalingGroupName"))
        desired = self.integer(params, "DesiredCapacity", required=True)  # HonorCooldown: ignored
        self.model.set_desired(group, desired, "SetDesiredCapacity")
        return ""

    def update_group(self, params: dict) -> str:
        group = self.model.group_or_error(self.required(params, "AutoScalingGroupName"))
        by_id, by_name = params.get("LaunchTemplate.LaunchTemplateId"), params.get("LaunchTemplate.LaunchTemplateName")
        if by_id and by_name:
            raise ApiError("ValidationError", "You must use a valid fully-formed launch template. Either a "
                                              "LaunchTemplateId or a LaunchTemplateName must be specified, not both.")
        self.model.update_group(group, self.integer(params, "MinSize"), self.integer(params, "MaxSize"),
                                self.integer(params, "DesiredCapacity"), by_id or by_name, bool(by_name),
                                params.get("LaunchTemplate.Version"))
        return ""

    def _processes(self, params: dict, suspend: bool) -> str:
        group = self.model.group_or_error(self.required(params, "AutoScalingGroupName"))
        self.model.suspend(group, members(params, "ScalingProcesses"), suspend)
        return ""

    def suspend_processes(self, params: dict) -> str:
        return self._processes(params, True)

    def resume_processes(self, params: dict) -> str:
        return self._processes(params, False)

    def describe_template_versions(self, params: dict) -> str:
        """EC2 DescribeLaunchTemplateVersions: one template (id or name) and some or all versions, or every
        template's $Latest / $Default."""
        model, tid, tname = self.model, params.get("LaunchTemplateId"), params.get("LaunchTemplateName")
        pat = re.compile(r"LaunchTemplateVersion\.(\d+)$")
        found = sorted((int(m.group(1)), v) for k, v in params.items() if (m := pat.match(k)))
        wanted = [v for _, v in found]
        if tid or tname:
            template = model.templates.get(tid) if tid else \
                next((t for t in model.templates.values() if t.name == tname), None)
            if template is None:
                if tid:
                    raise ApiError("InvalidLaunchTemplateId.NotFound",
                                   f"The specified launch template, with template ID {tid}, does not exist.")
                raise ApiError("InvalidLaunchTemplateName.NotFoundException",
                               f"The specified launch template, with template name {tname}, does not exist.")
            rows = []
            for spec in wanted:
                number = template.resolve(spec)
                if number is None:
                    raise ApiError("InvalidLaunchTemplateId.VersionNotFound", f"Could not find the specified "
                                   f"version {spec} for the launch template with ID {template.id}.")
                rows.append((template, number))
            if not wanted:
                rows = [(template, n) for n in range(len(template.versions), 0, -1)]
        else:
            if not wanted or any(v not in ("$Latest", "$Default") for v in wanted):
                raise ApiError("MissingParameter", "To describe the launch template data for all your launch "
                               "templates, for '--versions' specify '$Latest', '$Default', or both, and omit "
                               "'--launch-template-id', '--launch-template-name', and version numbers.")
            keys = dict.fromkeys((t.id, t.resolve(v)) for t in model.templates.values() for v in wanted)
            rows = [(model.templates[tid], number) for tid, number in keys]
        items = []
        for template, number in rows:
            user_data, created = template.versions[number - 1]
            data = xml_fields([("imageId", "ami-0abcdef1234567890"), ("instanceType", INSTANCE_TYPE),
                               ("userData", base64.b64encode(user_data.encode()).decode())])
            items.append("<item>" + xml_fields([
                ("launchTemplateId", template.id), ("launchTemplateName", template.name),
                ("versionNumber", number), ("createTime", iso(created)),
                ("createdBy", f"arn:aws:iam::{ACCOUNT_ID}:root"),
                ("defaultVersion", number == template.default_version),
                ("launchTemplateData", data.encode())]) + "</item>")
        return f"<launchTemplateVersionSet>{''.join(items)}</launchTemplateVersionSet>"


# --------------------------------------------------------------------------- HTTP plumbing

class Handler(BaseHTTPRequestHandler):
    """Shared HTTP/1.1 plumbing: always Content-Length, so keep-alive works for hyper."""

    protocol_version = "HTTP/1.1"
    # An answer goes out in two sends (head, then body); with Nagle on, the body of every answer
    # after the first on a kept-alive connection waited for the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        log.debug("%s %s", self.address_string(), fmt % args)

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def send(self, status: int, body: bytes | str = b"", ctype: str = "text/plain", headers: dict | None = None):
        body = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


class ImdsHandler(Handler):
    """IMDSv2 for one instance (server.instance_id); counts every request per path."""

    def _instance(self, path: str) -> Instance | None:
        inst = self.server.model.instances.get(self.server.instance_id)
        if inst is None or inst.imds_port != self.server.server_address[1]:
            # Listener of an instance wiped by reset (a stale keep-alive client): refuse.
            self.close_connection = True
            return None
        inst.imds_requests[path] += 1
        return inst

    def date_time_string(self, timestamp=None):
        """The Date header of every answer, off by the instance's clock_skew_s (BaseHTTPRequestHandler
        stamps it in send_response), so a test can put this node's clock behind or ahead of IMDS's."""
        inst = self.server.model.instances.get(self.server.instance_id)
        skew = inst.imds["clock_skew_s"] if inst is not None else 0.0
        return super().date_time_string((time.time() if timestamp is None else timestamp) + skew)

    def do_PUT(self):
        self.read_body()
        self._serve("PUT")

    def do_GET(self):
        self._serve("GET")

    def _serve(self, method: str):
        """Every request is an `imds` event; an armed fault (matched on the path after /latest/)
        answers instead of IMDS. A 401 fault also revokes the instance's tokens."""
        path = urlsplit(self.path).path
        model = self.server.model
        with model.lock:
            inst = self._instance(path)
            if inst is None:
                return self.send(404)
            rule = model.faults.take("imds", path.removeprefix("/latest/"), inst.id)
            kind = rule.kind if rule else None
            headers = None
            if kind is None:
                status, body, headers = self._answer(method, inst, path)
            else:
                status, body = IMDS_FAULT_STATUS.get(kind), ""
                if kind == "http401":
                    inst.imds_tokens.clear()
            model.record("imds", instance=inst.id, method=method, path=path, status=status, fault=kind)
        if kind == "reset":
            return faults.reset_connection(self)
        if kind == "hang":
            return faults.hang_connection(self, model.faults, rule.hang_s)
        self.send(status, body, headers=headers)

    def _answer(self, method: str, inst: Instance, path: str) -> tuple[int, str, dict | None]:
        if method == "PUT":
            if path != "/latest/api/token":
                return 404, "", None
            if "X-Forwarded-For" in self.headers:
                return 403, "", None  # real IMDS refuses tokens for proxied requests
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= MAX_IMDS_TTL:
                return 400, "", None
            token = secrets.token_urlsafe(40)
            inst.imds_tokens[token] = Model.now() + int(ttl)
            # aws-config rejects a token reply that does not echo the TTL header.
            return 200, token, {"X-aws-ec2-metadata-token-ttl-seconds": ttl}
        if path == "/latest/api/token":
            return 405, "", None
        token = self.headers.get("X-aws-ec2-metadata-token")
        if not token or inst.imds_tokens.get(token, 0) <= Model.now():
            return 401, "", None  # IMDSv2 required; clients must refresh on 401
        value = self.lookup(inst, path)
        return (404, "", None) if value is None else (200, value, None)

    @staticmethod
    def lookup(inst: Instance, path: str) -> str | None:
        md = "/latest/meta-data/"
        notices = {md + "spot/instance-action": inst.imds["spot_instance_action"],
                   md + "events/recommendations/rebalance": inst.imds["rebalance"]}
        if path in notices:
            value = notices[path]
            return None if value is None else value if isinstance(value, str) else json.dumps(value)
        static = {
            md + "instance-id": inst.id,
            md + "instance-type": INSTANCE_TYPE,
            md + "instance-life-cycle": "spot" if inst.spot else "on-demand",
            md + "local-ipv4": inst.private_ip,
            md + "placement/region": REGION,
            md + "placement/availability-zone": inst.az,
            "/latest/user-data": inst.user_data,
            md + "autoscaling/target-lifecycle-state": inst.target,
            md + "events/maintenance/scheduled": json.dumps(inst.imds["maintenance"]),
            "/latest/dynamic/instance-identity/document": json.dumps({
                "accountId": ACCOUNT_ID, "architecture": "x86_64", "availabilityZone": inst.az,
                "billingProducts": None, "devpayProductCodes": None, "marketplaceProductCodes": None,
                "imageId": "ami-0abcdef1234567890", "instanceId": inst.id, "instanceType": INSTANCE_TYPE,
                "kernelId": None, "pendingTime": iso(inst.launched_at)[:19] + "Z",
                "privateIp": inst.private_ip, "ramdiskId": None, "region": REGION, "version": "2017-09-30",
            }, indent=2),
        }
        return static.get(path)


class ImdsServer:
    """One listener per instance, so several agents can share one emulator."""

    def __init__(self, model: Model):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), ImdsHandler)
        self.httpd.model = model
        self.httpd.instance_id = None
        self.port = self.httpd.server_address[1]

    def start(self, instance_id: str):
        self.httpd.instance_id = instance_id
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                         name=f"imds-{instance_id}", daemon=True).start()

    def close(self):
        if self.httpd.instance_id is not None:
            self.httpd.shutdown()
        self.httpd.server_close()


class ControlApi:
    """JSON control API under /_emulator/ used by tests and the demo to drive the model."""

    def __init__(self, emulator: "Emulator"):
        self.emu, self.model = emulator, emulator.model

    def route(self, method: str, path: str, query: dict, body: dict) -> tuple[int, dict]:
        parts = path.strip("/").split("/")[1:]  # drop "_emulator"
        m = self.model
        if (method, parts) == ("POST", ["reset"]):
            self.emu.reset()  # takes the lock itself; closes listeners outside it
            return 200, {}
        with m.lock:
            match method, parts:
                case "POST", ["groups"]:
                    m.create_group(body)
                    return 200, {}
                case "POST", ["instances"]:
                    inst = self.emu.create_instance(body)
                    return 200, m.view(inst)
                case "GET", ["instances"]:
                    return 200, {"instances": [m.view(i) for i in m.instances.values()]}
                case "POST", ["launch-templates"]:
                    return 200, m.create_template(body).view()
                case "GET", ["launch-templates"]:
                    return 200, {"launch_templates": [t.view() for t in m.templates.values()]}
                case "POST", ["launch-templates", ref, "versions"]:
                    return 200, {"version": m.add_template_version(ref, body), **m.template(ref).view()}
                case "GET", ["instances", iid]:
                    return 200, m.view(m.instance(iid))
                case "POST", ["instances", iid, "terminate"]:
                    delay = body.get("wait_state_delay", 0)
                    if not isinstance(delay, (int, float)) or delay < 0:
                        raise ControlError(400, "wait_state_delay must be a number >= 0")
                    return 200, m.view(m.terminate(iid, delay, "terminate"))
                case "POST", ["instances", iid, "leave-warm-pool"]:
                    return 200, m.view(m.leave_warm_pool(iid))
                case "POST", ["instances", iid, "imds"]:
                    return 200, m.view(m.set_imds(iid, body))
                case "POST", ["faults"]:
                    return 200, m.set_faults(body)
                case "GET", ["faults"]:
                    return 200, m.faults.view()
                case "POST", ["instances", iid, "enter-standby"]:
                    return 200, m.view(m.enter_standby(iid))
                case "POST", ["instances", iid, "exit-standby"]:
                    return 200, m.view(m.exit_standby(iid))
                case "GET", ["events"]:
                    since, kind = query.get("since", "0"), query.get("kind")
                    if not since.isdigit():
                        raise ControlError(400, "since must be a non-negative integer")
                    since = int(since)
                    events = [e for e in m.events[since:] if kind is None or e["kind"] == kind]
                    return 200, {"events": events, "next": len(m.events)}
        raise ControlError(404, f"no control endpoint {method} {path}")


class MainHandler(Handler):
    """Port shared by the Query API (any path except /_emulator/...) and the control API."""

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str):
        raw = self.read_body()
        url = urlsplit(self.path)
        emu: Emulator = self.server.emulator
        if url.path.startswith("/_emulator/"):
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise ControlError(400, "body must be a JSON object")
                status, reply = emu.control.route(method, url.path, dict(parse_qsl(url.query)), body)
            except json.JSONDecodeError as e:
                status, reply = 400, {"error": f"bad JSON: {e}"}
            except ControlError as e:
                status, reply = e.status, {"error": e.message}
            except Exception as e:  # report bugs to the test instead of dropping the connection
                log.exception("control request failed")
                status, reply = 500, {"error": f"internal error: {e!r}"}
            return self.send(status, json.dumps(reply), "application/json")
        # Query protocol: POST form body (SDKs) or GET query string; SigV4 headers ignored.
        source = raw.decode("utf-8", "replace") if method == "POST" else url.query
        params = dict(parse_qsl(source, keep_blank_values=True))
        rule = emu.model.faults.take("api", params.get("Action", ""))
        kind = rule.kind if rule else None
        if kind in ("reset", "hang"):
            emu.query.record_unanswered(params, kind)
            if kind == "reset":
                return faults.reset_connection(self)
            return faults.hang_connection(self, emu.model.faults, rule.hang_s)
        status, body, request_id = emu.query.handle(params, kind)
        if kind == "lost":  # it happened, but the caller never hears so
            return faults.reset_connection(self)
        self.send(status, body, "text/xml", {"x-amzn-RequestId": request_id})


class Emulator:
    def __init__(self, port: int):
        self.model = Model()
        self.query = QueryApi(self.model)
        self.control = ControlApi(self)
        self.imds_servers: dict[str, ImdsServer] = {}
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), MainHandler)  # loopback only
        self.httpd.emulator = self
        self.port = self.httpd.server_address[1]
        self.stopping = threading.Event()
        self.model.launcher = self.launch

    def launch(self, group: Group, cause: str) -> Instance:
        """A capacity launch (called by the ticker under the model lock): a new IMDS listener and instance."""
        server = ImdsServer(self.model)
        try:
            inst = self.model.launch(group, server.port, cause)
        except Exception:
            server.close()
            raise
        server.start(inst.id)
        self.imds_servers[inst.id] = server
        return inst

    def create_instance(self, spec: dict) -> Instance:
        server = ImdsServer(self.model)
        try:
            inst = self.model.create_instance(spec, server.port)
        except Exception:
            server.close()
            raise
        server.start(inst.id)
        self.imds_servers[inst.id] = server
        return inst

    def reset(self):
        with self.model.lock:
            servers, self.imds_servers = list(self.imds_servers.values()), {}
            self.model.reset()
        for server in servers:
            server.close()

    def _ticker(self):
        while not self.stopping.wait(TICK_SECONDS):
            try:
                self.model.tick()
            except Exception:  # never let one bad tick stop timeouts for good
                log.exception("tick failed")

    def serve(self):
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                         name="main-http", daemon=True).start()
        threading.Thread(target=self._ticker, name="ticker", daemon=True).start()

    def stop(self):
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.reset()


def write_port_file(path: str, port: int):
    """Atomic: readers never see a partial file (write a temp file, then rename)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = pick a free one)")
    ap.add_argument("--port-file", help="write the chosen port here once listening")
    ap.add_argument("--log", help="append a debug log (requests, events) to this file")
    args = ap.parse_args(argv)
    if args.log:
        logging.basicConfig(filename=args.log, level=logging.DEBUG,
                            format="%(asctime)s %(threadName)s %(levelname)s %(message)s")
    emulator = Emulator(args.port)
    emulator.serve()
    if args.port_file:
        write_port_file(args.port_file, emulator.port)
    print(f"aws-emulator listening on 127.0.0.1:{emulator.port}", flush=True)

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(0.2):  # a timed wait keeps the main thread responsive to signals
        pass
    emulator.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
