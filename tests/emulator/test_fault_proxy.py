"""Tests for fault_proxy.py: boto3's Secrets Manager client through the proxy to moto's server.

Run from the repository root (moto_server comes from the same venv as the interpreter):
    .venv/bin/python -m unittest discover -s tests/emulator -v
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

from test_aws_emulator import wait_until

HERE = Path(__file__).resolve().parent
PROXY = HERE / "fault_proxy.py"
MOTO = Path(sys.executable).parent / "moto_server"

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


def start(cmd, marker, timeout=30):
    """Starts a server told to use port 0 and returns (process, port) from its `marker` line."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found = {}

    def read():
        for line in proc.stdout:  # keeps draining, so a chatty server never blocks on the pipe
            if marker in line and "port" not in found:
                found["port"] = int(line.split(marker, 1)[1].split()[0].strip("/"))

    def port():
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited early")
        return found.get("port")

    threading.Thread(target=read, daemon=True).start()
    try:
        return proc, wait_until(port, timeout=timeout)
    except BaseException:
        stop(proc)
        raise


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    proc.stdout.close()


class FaultProxyTests(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        moto, moto_port = start([str(MOTO), "-H", "127.0.0.1", "-p", "0"], "Running on http://127.0.0.1:")
        cls.addClassCleanup(stop, moto)
        cls.moto_url = f"http://127.0.0.1:{moto_port}"
        cls.dir = tempfile.TemporaryDirectory(prefix="fault-proxy-test-")
        cls.addClassCleanup(cls.dir.cleanup)
        cls.port_file = os.path.join(cls.dir.name, "port")
        proxy, port = start([sys.executable, str(PROXY), "--upstream", cls.moto_url, "--port", "0",
                             "--port-file", cls.port_file], "fault-proxy listening on 127.0.0.1:")
        cls.addClassCleanup(stop, proxy)
        cls.proxy, cls.url = proxy, f"http://127.0.0.1:{port}"
        cls.sm = cls.client(read_timeout=5)
        cls.sm.create_secret(Name="tfe/one", SecretString="value-one")

    @classmethod
    def client(cls, **config):
        return boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=cls.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            # One attempt: every fault must surface, not be retried away.
                            config=Config(retries={"mode": "standard", "total_max_attempts": 1},
                                          connect_timeout=2, **config))

    def setUp(self):
        self.control("POST", "/_faults", {"clear": True})
        self.since = self.control("GET", "/_faults/events")["next"]

    def control(self, method, path, body=None, expect=200):
        data = None if method == "GET" else json.dumps(body or {}).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                status, payload = resp.status, json.load(resp)
        except urllib.error.HTTPError as e:
            status, payload = e.code, json.load(e)
        self.assertEqual(status, expect, payload)
        return payload

    def arm(self, *rules):
        return self.control("POST", "/_faults", {"add": list(rules)})

    def events(self):
        return [(e["action"], e["status"], e["error_code"], e["fault"])
                for e in self.control("GET", f"/_faults/events?since={self.since}")["events"]]

    def test_forwards_unchanged_without_rules(self):
        self.assertEqual(self.sm.get_secret_value(SecretId="tfe/one")["SecretString"], "value-one")
        batch = self.sm.batch_get_secret_value(SecretIdList=["tfe/one"])["SecretValues"]
        self.assertEqual([v["SecretString"] for v in batch], ["value-one"])
        with self.assertRaises(ClientError) as ctx:  # upstream errors pass through as they are
            self.sm.get_secret_value(SecretId="tfe/missing")
        self.assertEqual(ctx.exception.response["Error"]["Code"], "ResourceNotFoundException")
        self.assertEqual(self.events(), [("GetSecretValue", 200, None, None),
                                         ("BatchGetSecretValue", 200, None, None),
                                         # moto's status for it (AWS answers 400)
                                         ("GetSecretValue", 404, "ResourceNotFoundException", None)])
        with open(self.port_file) as f:
            self.assertEqual(f"http://127.0.0.1:{f.read().strip()}", self.url)

    def test_error_kinds_use_the_json_error_shape(self):
        self.arm(*({"target": "api", "action": "GetSecretValue", "kind": k} for k in ("throttle", "http500", "http503")))
        for code, status in (("ThrottlingException", 400), ("InternalServiceError", 500), ("ServiceUnavailable", 503)):
            with self.assertRaises(ClientError) as ctx:
                self.sm.get_secret_value(SecretId="tfe/one")
            self.assertEqual(ctx.exception.response["Error"]["Code"], code)
            self.assertEqual(ctx.exception.response["ResponseMetadata"]["HTTPStatusCode"], status)
        self.sm.batch_get_secret_value(SecretIdList=["tfe/one"])  # another operation: untouched
        self.assertEqual(self.sm.get_secret_value(SecretId="tfe/one")["SecretString"], "value-one")
        self.assertEqual(self.events(), [
            ("GetSecretValue", 400, "ThrottlingException", "throttle"),
            ("GetSecretValue", 500, "InternalServiceError", "http500"),
            ("GetSecretValue", 503, "ServiceUnavailable", "http503"),
            ("BatchGetSecretValue", 200, None, None), ("GetSecretValue", 200, None, None)])

    def test_reset_hang_and_lost(self):
        self.arm({"target": "api", "action": "BatchGetSecretValue", "kind": "reset"},
                 {"target": "api", "action": "BatchGetSecretValue", "kind": "hang", "hang_s": 3},
                 {"target": "api", "action": "CreateSecret", "kind": "lost"})
        with self.assertRaises(ConnectionClosedError):
            self.sm.batch_get_secret_value(SecretIdList=["tfe/one"])
        impatient = self.client(read_timeout=0.5)
        start = time.monotonic()
        with self.assertRaises(ReadTimeoutError):
            impatient.batch_get_secret_value(SecretIdList=["tfe/one"])
        self.assertLess(time.monotonic() - start, 2.5)
        with self.assertRaises(ConnectionClosedError):
            self.sm.create_secret(Name="tfe/lost", SecretString="made-anyway")
        # The lost CreateSecret took effect upstream: a retry would find the secret there.
        self.assertEqual(self.sm.get_secret_value(SecretId="tfe/lost")["SecretString"], "made-anyway")
        self.assertEqual(self.events(), [("BatchGetSecretValue", None, None, "reset"),
                                         ("BatchGetSecretValue", None, None, "hang"),
                                         ("CreateSecret", 200, None, "lost"), ("GetSecretValue", 200, None, None)])

    def test_count_skip_window_and_control(self):
        shown = self.arm({"target": "api", "action": "GetSecretValue", "kind": "throttle", "count": 2, "skip": 1})
        self.assertEqual([(r["remaining"], r["skip"]) for r in shown["rules"]], [(2, 1)])
        outcomes = []
        for _ in range(4):
            try:
                self.sm.get_secret_value(SecretId="tfe/one")
                outcomes.append("ok")
            except ClientError as e:
                outcomes.append(e.response["Error"]["Code"])
        self.assertEqual(outcomes, ["ok", "ThrottlingException", "ThrottlingException", "ok"])
        self.assertEqual(self.control("GET", "/_faults")["rules"], [])
        self.arm({"target": "api", "action": "*", "kind": "http503", "for_s": 0.5})
        start, spoiled = time.monotonic(), 0
        for _ in range(50):  # bounded: about 1 s
            try:
                self.sm.get_secret_value(SecretId="tfe/one")
                break
            except ClientError:
                spoiled += 1
                time.sleep(0.02)
        self.assertGreaterEqual(time.monotonic() - start, 0.45)
        self.assertGreater(spoiled, 2)
        for bad in ({"add": [{"target": "imds", "kind": "http401"}]}, {"add": [{"target": "api", "kind": "x"}]},
                    {"throttle": None}, {"add": "no"}):
            self.control("POST", "/_faults", bad, expect=400)
        self.control("GET", "/_faults/events?since=x", expect=400)
        self.control("GET", "/_faults/nope", expect=404)


if __name__ == "__main__":
    unittest.main()
