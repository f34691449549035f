#!/usr/bin/env python3
"""Loopback forwarding proxy that injects faults into an AWS JSON-protocol service (Secrets Manager).

moto has no fault injection, so tests put this proxy between the agent and moto's server. Every
request is forwarded unchanged, except those an armed rule spoils; rules are keyed by the operation
named in the `X-Amz-Target` header (`secretsmanager.BatchGetSecretValue` -> `BatchGetSecretValue`)
and use the rule engine of the Auto Scaling emulator (faults.py). Python 3.11 standard library only.

Usage: fault_proxy.py --upstream URL [--port 0] [--port-file PATH] [--log PATH]
Control: POST/GET /_faults, events: GET /_faults/events[?since=N]. See README.md next to this file.
"""

import argparse
import http.client
import json
import logging
import signal
import sys
import threading
import time
import uuid
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import faults
from aws_emulator import Handler, write_port_file

log = logging.getLogger("fault-proxy")

# Secrets Manager's JSON error shape for the error kinds: (__type, message, HTTP status).
ERRORS = {"throttle": ("ThrottlingException", "Rate exceeded", 400),
          "http500": ("InternalServiceError", "An error occurred on the server side (injected fault).", 500),
          "http503": ("ServiceUnavailable", "Service is unavailable (injected fault).", 503)}
# Not forwarded either way: they describe one hop, and bodies are re-framed with Content-Length.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "content-length", "host"}
UPSTREAM_TIMEOUT = 30


class Proxy:
    def __init__(self, upstream: str, port: int):
        url = urlsplit(upstream)
        if url.scheme != "http" or not url.hostname:
            raise SystemExit(f"--upstream must be http://host[:port], not {upstream!r}")
        self.upstream = (url.hostname, url.port or 80)
        self.engine = faults.FaultEngine(("api",))
        self.lock = threading.Lock()
        self.events: list[dict] = []
        self.started = time.monotonic()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), ProxyHandler)  # loopback only
        self.httpd.proxy = self
        self.port = self.httpd.server_address[1]

    def record(self, **fields):
        with self.lock:
            event = {"seq": len(self.events), "t": round(time.monotonic() - self.started, 3), "kind": "api",
                     **fields}
            self.events.append(event)
        log.info("event %s", json.dumps(event))

    def forward(self, method: str, path: str, headers, body: bytes) -> tuple[int, list, bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=UPSTREAM_TIMEOUT)
        try:
            conn.request(method, path, body=body,
                         headers={k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP})
            resp = conn.getresponse()
            return resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP], resp.read()
        finally:
            conn.close()


class ProxyHandler(Handler):
    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str):
        proxy: Proxy = self.server.proxy
        raw = self.read_body()
        url = urlsplit(self.path)
        if url.path == "/_faults" or url.path.startswith("/_faults/"):
            return self._control(proxy, method, url, raw)
        target = self.headers.get("X-Amz-Target", "")
        action = target.rsplit(".", 1)[-1]
        rule = proxy.engine.take("api", action)
        kind = rule.kind if rule else None
        if kind in ERRORS:
            code, message, status = ERRORS[kind]
            proxy.record(action=action, status=status, error_code=code, fault=kind)
            return self.send(status, json.dumps({"__type": code, "message": message}),
                             "application/x-amz-json-1.1", {"x-amzn-RequestId": str(uuid.uuid4())})
        if kind in ("reset", "hang"):
            proxy.record(action=action, status=None, error_code=None, fault=kind)
            if kind == "reset":
                return faults.reset_connection(self)
            return faults.hang_connection(self, proxy.engine, rule.hang_s)
        try:
            status, headers, body = proxy.forward(method, self.path, self.headers, raw)
        except OSError as e:
            log.warning("upstream %s failed: %s", action, e)
            proxy.record(action=action, status=502, error_code="UpstreamUnavailable", fault=kind)
            return self.send(502, json.dumps({"__type": "UpstreamUnavailable", "message": str(e)}),
                             "application/x-amz-json-1.1")
        error_code = None
        if status >= 400:
            try:
                error_code = str(json.loads(body).get("__type", "")).rsplit("#", 1)[-1] or None
            except (ValueError, AttributeError):
                pass
        # Never the body: Secrets Manager's answers hold secret values.
        proxy.record(action=action, status=status, error_code=error_code, fault=kind)
        if kind == "lost":  # the upstream acted; the caller never hears so
            return faults.reset_connection(self)
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _control(self, proxy: Proxy, method: str, url, raw: bytes):
        try:
            if (method, url.path) == ("GET", "/_faults"):
                status, reply = 200, proxy.engine.view()
            elif (method, url.path) == ("POST", "/_faults"):
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict) or set(body) - {"add", "clear"}:
                    raise faults.RuleError('body must be {"add": [RULE…]} and/or {"clear": true}')
                status, reply = 200, faults.control(proxy.engine, body)
            elif (method, url.path) == ("GET", "/_faults/events"):
                since = dict(parse_qsl(url.query)).get("since", "0")
                if not since.isdigit():
                    raise faults.RuleError("since must be a non-negative integer")
                with proxy.lock:
                    status, reply = 200, {"events": proxy.events[int(since):], "next": len(proxy.events)}
            else:
                status, reply = 404, {"error": f"no control endpoint {method} {url.path}"}
        except (ValueError, faults.RuleError) as e:  # JSONDecodeError is a ValueError
            status, reply = 400, {"error": str(e)}
        self.send(status, json.dumps(reply), "application/json")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="the service to forward to, http://host:port")
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = pick a free one)")
    ap.add_argument("--port-file", help="write the chosen port here once listening")
    ap.add_argument("--log", help="append a debug log (events, upstream errors) to this file")
    args = ap.parse_args(argv)
    if args.log:
        logging.basicConfig(filename=args.log, level=logging.DEBUG,
                            format="%(asctime)s %(threadName)s %(levelname)s %(message)s")
    proxy = Proxy(args.upstream, args.port)
    threading.Thread(target=proxy.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                     name="proxy-http", daemon=True).start()
    if args.port_file:
        write_port_file(args.port_file, proxy.port)
    print(f"fault-proxy listening on 127.0.0.1:{proxy.port}", flush=True)

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(0.2):  # a timed wait keeps the main thread responsive to signals
        pass
    proxy.httpd.shutdown()
    proxy.httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
