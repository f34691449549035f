"""Fault rules shared by the Auto Scaling + IMDS emulator and the Secrets Manager fault proxy.

Python standard library only. A rule says which requests to spoil (by target, operation or IMDS path,
instance) and how (kind), for how many requests (count) or how long (for_s), after letting a number
of matching requests through (skip). The servers ask `take()` for every request and carry out the
kind themselves; this module also holds the socket-level kinds (reset, hang) they share.

See README.md next to this file for the rule format.
"""

import fnmatch
import socket
import struct
import threading
import time

# Kinds per target. "api" = an AWS API (Query or JSON protocol); "imds" = the metadata service.
KINDS = {
    "api": ("throttle", "http500", "http503", "reset", "hang", "lost"),
    "imds": ("http401", "http404", "http503", "reset", "hang"),
}
DEFAULT_HANG_S = 30.0


class RuleError(ValueError):
    """A rule the engine refuses (the control API answers 400 with the message)."""


class Rule:
    def __init__(self, rid: int, spec: dict, targets: tuple[str, ...]):
        if not isinstance(spec, dict):
            raise RuleError("a rule must be a JSON object")
        unknown = set(spec) - {"target", "action", "path", "instance", "kind", "count", "for_s", "skip",
                               "hang_s"}
        if unknown:
            raise RuleError(f"unknown rule field(s): {', '.join(sorted(unknown))}")
        self.id = rid
        self.target = spec.get("target")
        if self.target not in targets:
            raise RuleError(f"target must be one of {', '.join(targets)}")
        self.kind = spec.get("kind")
        if self.kind not in KINDS[self.target]:
            raise RuleError(f"kind for target {self.target} must be one of {', '.join(KINDS[self.target])}")
        key_name = "action" if self.target == "api" else "path"
        other = "path" if self.target == "api" else "action"
        if other in spec:
            raise RuleError(f"a {self.target} rule has {key_name!r}, not {other!r}")
        self.pattern = spec.get(key_name, "*")
        if not isinstance(self.pattern, str) or not self.pattern:
            raise RuleError(f"{key_name} must be a non-empty string (\"*\" for any)")
        if self.target == "imds":  # "meta-data/x", "/latest/meta-data/x" and "/meta-data/x" alike
            self.pattern = self.pattern.lstrip("/").removeprefix("latest/")
        self.instance = spec.get("instance")
        if self.instance is not None and (self.target != "imds" or not isinstance(self.instance, str)):
            raise RuleError("instance is a string, and only for imds rules")
        self.for_s = self._number(spec, "for_s", None, positive=True)
        # With only a time window the count is unlimited; with both, whichever ends first.
        self.remaining = self._int(spec, "count", None if self.for_s is not None and "count" not in spec else 1,
                                   minimum=1)
        self.skip = self._int(spec, "skip", 0, minimum=0)
        self.hang_s = self._number(spec, "hang_s", DEFAULT_HANG_S, positive=True)
        self.fired = 0
        self.window_end: float | None = None  # the window starts at the rule's first fault

    @staticmethod
    def _int(spec, name, default, minimum):
        value = spec.get(name, default)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise RuleError(f"{name} must be an integer >= {minimum}")
        return value

    @staticmethod
    def _number(spec, name, default, positive):
        value = spec.get(name, default)
        if value is None:
            return None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or (positive and value <= 0):
            raise RuleError(f"{name} must be a number > 0")
        return float(value)

    def matches(self, target: str, key: str, instance: str | None) -> bool:
        return (self.target == target and fnmatch.fnmatchcase(key, self.pattern)
                and (self.instance is None or self.instance == instance))

    def spent(self, now: float) -> bool:
        return self.remaining == 0 or (self.window_end is not None and now >= self.window_end)

    def view(self, now: float) -> dict:
        out = {"id": self.id, "target": self.target, "kind": self.kind,
               ("action" if self.target == "api" else "path"): self.pattern,
               "remaining": self.remaining, "skip": self.skip, "fired": self.fired}
        if self.instance is not None:
            out["instance"] = self.instance
        if self.for_s is not None:
            out["for_s"] = self.for_s
            out["window_left_s"] = None if self.window_end is None else round(max(0.0, self.window_end - now), 3)
        if self.kind == "hang":
            out["hang_s"] = self.hang_s
        return out


class FaultEngine:
    """Armed rules, checked in the order they were armed. Thread-safe."""

    def __init__(self, targets: tuple[str, ...] = ("api", "imds")):
        self.targets = targets
        self.lock = threading.Lock()
        self.rules: list[Rule] = []
        self.legacy: dict[int, str] = {}  # rule id -> action, for the old {"throttle": …} form
        self._next_id = 1
        self._wake = threading.Event()  # set by clear(): hung requests end at once

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def add(self, specs) -> list[dict]:
        if not isinstance(specs, list) or not specs:
            raise RuleError("add takes a non-empty list of rules")
        with self.lock:
            rules = []
            for spec in specs:  # all or nothing: one bad rule arms none
                rules.append(Rule(self._next_id + len(rules), spec, self.targets))
            self._next_id += len(rules)
            self.rules.extend(rules)
            now = self.now()
            return [r.view(now) for r in rules]

    def set_legacy_throttle(self, action: str, count: int):
        """`{"throttle": {"action": A, "count": N}}`: replaces an earlier legacy throttle of A."""
        with self.lock:
            self.rules = [r for r in self.rules if self.legacy.get(r.id) != action]
            if count > 0:
                rule = Rule(self._next_id, {"target": "api", "action": action, "kind": "throttle",
                                            "count": count}, self.targets)
                self._next_id += 1
                self.rules.append(rule)
                self.legacy[rule.id] = action

    def clear(self, only_throttles: bool = False):
        with self.lock:
            if only_throttles:
                self.rules = [r for r in self.rules if not (r.target == "api" and r.kind == "throttle")]
            else:
                self.rules = []
                self._wake.set()
                self._wake = threading.Event()
            self.legacy = {k: v for k, v in self.legacy.items() if any(r.id == k for r in self.rules)}

    def take(self, target: str, key: str, instance: str | None = None) -> Rule | None:
        """The rule that spoils this request, if any (its count and skip are consumed).

        A matching rule that is still skipping counts the request and lets it on to later rules;
        the first matching rule that is not skipping fires.
        """
        with self.lock:
            now = self.now()
            self.rules = [r for r in self.rules if not r.spent(now)]
            for rule in self.rules:
                if not rule.matches(target, key, instance):
                    continue
                if rule.skip > 0:
                    rule.skip -= 1
                    continue
                if rule.for_s is not None and rule.window_end is None:
                    rule.window_end = now + rule.for_s
                if rule.remaining is not None:
                    rule.remaining -= 1
                rule.fired += 1
                return rule
            return None

    def view(self) -> dict:
        with self.lock:
            now = self.now()
            self.rules = [r for r in self.rules if not r.spent(now)]
            throttles = {}
            for r in self.rules:
                if r.id in self.legacy:
                    throttles[self.legacy[r.id]] = r.remaining
            return {"rules": [r.view(now) for r in self.rules], "throttles": throttles}

    def hang(self, seconds: float):
        """Sleeps like a server that never answers; ends early when the rules are cleared."""
        self._wake.wait(seconds)


def reset_connection(handler):
    """Closes a BaseHTTPRequestHandler's connection with an RST (SO_LINGER 0), so the client sees
    "connection reset by peer" instead of an answer or a clean end of stream."""
    handler.close_connection = True
    conn = handler.connection
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    # The socket's fd closes only when its last file object does: close rfile (a makefile; wfile
    # is not) first, so the reset goes out now, before the server's own shutdown(SHUT_WR) could
    # send a FIN. wfile stays open: the server flushes it after the handler returns.
    try:
        handler.rfile.close()
    except OSError:
        pass
    try:
        conn.close()
    except OSError:
        pass


def hang_connection(handler, engine: FaultEngine, seconds: float):
    """Sends nothing for `seconds`, then closes the connection (a clean end of stream)."""
    handler.close_connection = True
    engine.hang(seconds)


def control(engine: FaultEngine, body: dict) -> dict:
    """The shared part of the control request: {"add": [RULE…]} and/or {"clear": true}."""
    if body.get("clear"):
        engine.clear()
    if "add" in body:
        engine.add(body["add"])
    return engine.view()
