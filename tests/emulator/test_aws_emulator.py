"""Tests for aws_emulator.py, driven through boto3 (a real AWS SDK parses the XML) and urllib.

Run from the repository root:
    .venv/bin/python -m unittest discover -s tests/emulator -v

Every wait is bounded in both iterations and time, and every emulator process is
stopped by its own PID in a cleanup hook.
"""

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
from email.utils import parsedate_to_datetime
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

EMULATOR = Path(__file__).resolve().parent / "aws_emulator.py"
LAUNCH = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATE = "autoscaling:EC2_INSTANCE_TERMINATING"
IID = "i-0123456789abcdef0"

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"  # never let botocore reach a real IMDS


def wait_until(predicate, timeout=5.0, interval=0.05):
    """Poll predicate() until truthy; bounded by time *and* iteration count."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


class EmulatorProcess:
    """The emulator as a subprocess on a free port (read from --port-file)."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="aws-emulator-test-")
        self.port_file = os.path.join(self.dir.name, "port")
        self.log_file = os.path.join(self.dir.name, "emulator.log")
        self.proc = subprocess.Popen(
            [sys.executable, str(EMULATOR), "--port", "0", "--port-file", self.port_file, "--log", self.log_file],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            self.port = wait_until(self._read_port, timeout=10)
        except Exception:
            self.stop()
            raise
        self.url = f"http://127.0.0.1:{self.port}"

    def _read_port(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"emulator exited early: {self.proc.stderr.read()}")
        try:
            with open(self.port_file) as f:
                text = f.read()
        except FileNotFoundError:
            return None
        return int(text) if text.endswith("\n") else None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()
        self.dir.cleanup()


class EmulatorTestCase(unittest.TestCase):
    """One emulator process per test class; state is reset before every test."""

    @classmethod
    def setUpClass(cls):
        cls.emu = EmulatorProcess()
        cls.addClassCleanup(cls.emu.stop)
        cls.asg = boto3.client(
            "autoscaling", region_name="us-east-1", endpoint_url=cls.emu.url,
            aws_access_key_id="testing", aws_secret_access_key="testing",
            # One attempt: throttling must surface, not be retried away.
            config=Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=2, read_timeout=5))

    def setUp(self):
        self.control("POST", "/_emulator/reset")

    # ---- helpers

    def control(self, method, path, body=None, expect=200):
        data = None if body is None and method == "GET" else json.dumps(body or {}).encode()
        req = urllib.request.Request(self.emu.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                status, payload = resp.status, json.load(resp)
        except urllib.error.HTTPError as e:
            status, payload = e.code, json.load(e)
        self.assertEqual(status, expect, payload)
        return payload

    def group(self, name="tfe-asg", hooks=(), **extra):
        self.control("POST", "/_emulator/groups", {"name": name, "hooks": list(hooks), **extra})

    def launch(self, group="tfe-asg", **extra):
        return self.control("POST", "/_emulator/instances", {"group": group, **extra})

    def instance(self, iid):
        return self.control("GET", f"/_emulator/instances/{iid}")

    def events(self, kind=None):
        return self.control("GET", "/_emulator/events" + (f"?kind={kind}" if kind else ""))["events"]

    def state(self, iid):
        """Lifecycle state as the AWS API reports it (None once terminated)."""
        rows = self.asg.describe_auto_scaling_instances(InstanceIds=[iid])["AutoScalingInstances"]
        return rows[0]["LifecycleState"] if rows else None

    def complete(self, iid, hook, result="CONTINUE", group="tfe-asg"):
        return self.asg.complete_lifecycle_action(
            AutoScalingGroupName=group, LifecycleHookName=hook, LifecycleActionResult=result, InstanceId=iid)

    def heartbeat(self, iid, hook, group="tfe-asg"):
        return self.asg.record_lifecycle_action_heartbeat(
            AutoScalingGroupName=group, LifecycleHookName=hook, InstanceId=iid)

    def assertApiError(self, code, call, *args, message=None, **kwargs):
        with self.assertRaises(ClientError) as ctx:
            call(*args, **kwargs)
        self.assertEqual(ctx.exception.response["Error"]["Code"], code)
        if message is not None:
            self.assertEqual(ctx.exception.response["Error"]["Message"], message)
        return ctx.exception

    def imds(self, port, path, token=None, method="GET", headers=None):
        """Raw IMDS request; returns (status, body, headers)."""
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            hdrs = dict(headers or {})
            if token:
                hdrs["X-aws-ec2-metadata-token"] = token
            conn.request(method, path, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.read().decode(), resp.headers
        finally:
            conn.close()

    def token(self, port, ttl="60"):
        status, body, headers = self.imds(port, "/latest/api/token", method="PUT",
                                          headers={"X-aws-ec2-metadata-token-ttl-seconds": ttl})
        self.assertEqual(status, 200)
        return body


def hook(name, transition, timeout=30, default="ABANDON", **extra):
    return {"name": name, "transition": transition, "heartbeat_timeout": timeout, "default_result": default, **extra}


class AutoScalingApiTests(EmulatorTestCase):

    def test_describe_instances_hooks_and_groups(self):
        self.group(hooks=[hook("tfe-launch", LAUNCH, 30), hook("tfe-drain", TERMINATE, 3600, "CONTINUE")])
        self.launch(id=IID)
        rows = self.asg.describe_auto_scaling_instances(InstanceIds=[IID, "i-00000000000000000"])
        self.assertEqual(rows["AutoScalingInstances"], [{
            "InstanceId": IID, "InstanceType": "m5.xlarge", "AutoScalingGroupName": "tfe-asg",
            "AvailabilityZone": "us-east-1a", "LifecycleState": "Pending:Wait", "HealthStatus": "HEALTHY",
            "ProtectedFromScaleIn": False}])
        self.assertEqual(len(self.asg.describe_auto_scaling_instances()["AutoScalingInstances"]), 1)

        hooks = self.asg.describe_lifecycle_hooks(AutoScalingGroupName="tfe-asg")["LifecycleHooks"]
        self.assertEqual(hooks, [
            {"LifecycleHookName": "tfe-launch", "AutoScalingGroupName": "tfe-asg", "LifecycleTransition": LAUNCH,
             "HeartbeatTimeout": 30, "GlobalTimeout": 3000, "DefaultResult": "ABANDON"},
            {"LifecycleHookName": "tfe-drain", "AutoScalingGroupName": "tfe-asg", "LifecycleTransition": TERMINATE,
             "HeartbeatTimeout": 3600, "GlobalTimeout": 172800, "DefaultResult": "CONTINUE"}])
        only = self.asg.describe_lifecycle_hooks(AutoScalingGroupName="tfe-asg", LifecycleHookNames=["tfe-drain"])
        self.assertEqual([h["LifecycleHookName"] for h in only["LifecycleHooks"]], ["tfe-drain"])
        self.assertApiError("ValidationError", self.asg.describe_lifecycle_hooks, AutoScalingGroupName="nope",
                            message="Group nope not found")

        groups = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=["tfe-asg"])["AutoScalingGroups"]
        self.assertEqual(len(groups), 1)
        self.assertEqual(groups[0]["DesiredCapacity"], 1)
        self.assertEqual(groups[0]["Instances"][0]["LifecycleState"], "Pending:Wait")
        self.assertEqual(groups[0]["AvailabilityZones"], ["us-east-1a"])
        self.assertEqual(self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=["x"])["AutoScalingGroups"], [])

    def test_heartbeat_then_complete_continue(self):
        self.group(hooks=[hook("tfe-launch", LAUNCH)])
        self.launch(id=IID)
        self.heartbeat(IID, "tfe-launch")
        self.complete(IID, "tfe-launch", "CONTINUE")
        self.assertEqual(self.state(IID), "InService")
        self.assertApiError("ValidationError", self.complete, IID, "tfe-launch",
                            message=f"No active Lifecycle Action found with instance ID {IID}")
        self.assertApiError("ValidationError", self.heartbeat, IID, "tfe-launch")
        [ev] = self.events("lifecycle")
        self.assertEqual({k: ev[k] for k in ("instance", "group", "hook", "transition", "result", "cause",
                                             "from_state", "to_state")},
                         {"instance": IID, "group": "tfe-asg", "hook": "tfe-launch", "transition": LAUNCH,
                          "result": "CONTINUE", "cause": "complete", "from_state": "Pending:Wait",
                          "to_state": "InService"})
        api = [e for e in self.events("api") if e["action"] == "CompleteLifecycleAction"]
        self.assertEqual([(e["status"], e["error_code"]) for e in api], [(200, None), (400, "ValidationError")])
        self.assertEqual(api[0]["params"]["InstanceId"], IID)

    def test_validation_by_token_hook_and_result(self):
        self.group(hooks=[hook("tfe-launch", LAUNCH), hook("tfe-drain", TERMINATE)])
        token = self.launch(id=IID)["actions"][0]["token"]
        # The terminate hook has no action while the instance is launching.
        self.assertApiError("ValidationError", self.complete, IID, "tfe-drain")
        self.assertApiError("ValidationError", self.complete, IID, "tfe-launch", group="other")
        self.assertApiError("ValidationError", self.complete, IID, "tfe-launch", "MAYBE")
        bogus = "00000000-0000-0000-0000-000000000000"
        self.assertApiError("ValidationError", self.asg.complete_lifecycle_action, AutoScalingGroupName="tfe-asg",
                            LifecycleHookName="tfe-launch", LifecycleActionResult="CONTINUE",
                            LifecycleActionToken=bogus, message=f"No active Lifecycle Action found with token {bogus}")
        self.asg.record_lifecycle_action_heartbeat(AutoScalingGroupName="tfe-asg", LifecycleHookName="tfe-launch",
                                                   LifecycleActionToken=token)
        self.asg.complete_lifecycle_action(AutoScalingGroupName="tfe-asg", LifecycleHookName="tfe-launch",
                                           LifecycleActionResult="ABANDON", LifecycleActionToken=token)
        self.assertIsNone(self.state(IID))  # abandoned launch: terminated, gone from the API
        self.assertEqual(self.instance(IID)["lifecycle_state"], "Terminated")

    def test_heartbeat_timeout_applies_default_result(self):
        self.group(hooks=[hook("tfe-launch", LAUNCH, timeout=1, default="CONTINUE")])
        start = time.monotonic()
        self.launch(id=IID)
        wait_until(lambda: self.instance(IID)["lifecycle_state"] == "InService", timeout=5)
        self.assertGreaterEqual(time.monotonic() - start, 0.9)
        [ev] = self.events("lifecycle")
        self.assertEqual((ev["cause"], ev["result"], ev["to_state"]), ("heartbeat-timeout", "CONTINUE", "InService"))
        self.assertApiError("ValidationError", self.complete, IID, "tfe-launch")

    def test_heartbeats_keep_the_action_alive(self):
        self.group(hooks=[hook("tfe-launch", LAUNCH, timeout=2)])
        self.launch(id=IID)
        for _ in range(6):  # 3 s of heartbeats, well past the 2 s timeout
            time.sleep(0.5)
            self.heartbeat(IID, "tfe-launch")
        self.assertEqual(self.state(IID), "Pending:Wait")
        self.assertEqual(self.events("lifecycle"), [])
        self.complete(IID, "tfe-launch")
        self.assertEqual(self.state(IID), "InService")

    def test_global_timeout_is_not_extended_by_heartbeats(self):
        # global_timeout is a test-only override (AWS: min(172800, 100 * HeartbeatTimeout)).
        self.group(hooks=[hook("tfe-launch", LAUNCH, timeout=1, global_timeout=2)])
        self.launch(id=IID)
        for _ in range(20):  # heartbeat every 0.3 s until the global deadline ends the wait
            if self.instance(IID)["lifecycle_state"] != "Pending:Wait":
                break
            try:
                self.heartbeat(IID, "tfe-launch")
            except ClientError:
                break
            time.sleep(0.3)
        wait_until(lambda: self.events("lifecycle"), timeout=3)
        [ev] = self.events("lifecycle")
        self.assertEqual((ev["cause"], ev["result"], ev["to_state"]), ("global-timeout", "ABANDON", "Terminated"))
        self.assertGreaterEqual(ev["t"], 1.9)

    def test_throttling(self):
        self.group()
        self.control("POST", "/_emulator/faults", {"throttle": {"action": "DescribeAutoScalingInstances", "count": 2}})
        for _ in range(2):
            self.assertApiError("Throttling", self.asg.describe_auto_scaling_instances, message="Rate exceeded")
        self.asg.describe_auto_scaling_instances()
        self.asg.describe_lifecycle_hooks(AutoScalingGroupName="tfe-asg")  # other actions unaffected
        codes = [(e["action"], e["status"], e["error_code"]) for e in self.events("api")]
        self.assertEqual(codes, [("DescribeAutoScalingInstances", 400, "Throttling")] * 2
                         + [("DescribeAutoScalingInstances", 200, None), ("DescribeLifecycleHooks", 200, None)])

    def test_terminate_with_wait_state_delay(self):
        self.group(hooks=[hook("tfe-drain", TERMINATE)])
        port = self.launch(id=IID)["imds_port"]
        token = self.token(port)
        target = "/latest/meta-data/autoscaling/target-lifecycle-state"
        self.assertEqual(self.imds(port, target, token)[1], "InService")
        start = time.monotonic()
        self.control("POST", f"/_emulator/instances/{IID}/terminate", {"wait_state_delay": 1})
        self.assertEqual(self.imds(port, target, token)[:2], (200, "Terminated"))
        self.assertEqual(self.state(IID), "InService")
        self.assertApiError("ValidationError", self.complete, IID, "tfe-drain")
        wait_until(lambda: self.state(IID) == "Terminating:Wait", timeout=5)
        self.assertGreaterEqual(time.monotonic() - start, 0.9)
        self.complete(IID, "tfe-drain", "CONTINUE")
        self.assertIsNone(self.state(IID))
        states = [(e["from_state"], e["to_state"], e["cause"]) for e in self.events("state")]
        self.assertEqual(states, [("Pending", "InService", "launch"),
                                  ("InService", "Terminating:Wait", "wait-state-delay"),
                                  ("Terminating:Wait", "Terminated", "complete")])

    def test_terminate_via_api_and_keepalive(self):
        self.group(hooks=[hook("tfe-drain", TERMINATE)])
        self.launch(id=IID)
        activity = self.asg.terminate_instance_in_auto_scaling_group(
            InstanceId=IID, ShouldDecrementDesiredCapacity=True)["Activity"]
        self.assertEqual((activity["StatusCode"], activity["AutoScalingGroupName"]), ("InProgress", "tfe-asg"))
        self.assertEqual(self.state(IID), "Terminating:Wait")
        self.assertApiError("ValidationError", self.asg.terminate_instance_in_auto_scaling_group,
                            InstanceId="i-nope", ShouldDecrementDesiredCapacity=True)
        # Several requests on one HTTP/1.1 connection, as the Rust SDK does.
        conn = http.client.HTTPConnection("127.0.0.1", self.emu.port, timeout=5)
        try:
            for body in ("Action=DescribeAutoScalingInstances&Version=2011-01-01",
                         "Action=NoSuchThing&Version=2011-01-01",
                         "Action=CompleteLifecycleAction&Version=2011-01-01&AutoScalingGroupName=tfe-asg"
                         f"&LifecycleHookName=tfe-drain&LifecycleActionResult=ABANDON&InstanceId={IID}"):
                conn.request("POST", "/", body, {"Content-Type": "application/x-www-form-urlencoded"})
                resp = conn.getresponse()
                text = resp.read().decode()
                if "NoSuchThing" in body:
                    self.assertEqual(resp.status, 400)
                    self.assertIn("<Code>InvalidAction</Code>", text)
                else:
                    self.assertEqual(resp.status, 200, text)
        finally:
            conn.close()
        self.assertIsNone(self.state(IID))  # ABANDON without retention still terminates

    def test_retention_on_abandon(self):
        self.group(hooks=[hook("tfe-drain", TERMINATE, timeout=1)], retain_on_terminate_abandon=True)
        a, b = self.launch(id="i-0000000000000000a")["id"], self.launch(id="i-0000000000000000b")["id"]
        for iid in (a, b):
            self.control("POST", f"/_emulator/instances/{iid}/terminate")
        self.complete(a, "tfe-drain", "ABANDON")
        self.assertEqual(self.state(a), "Terminating:Retained")
        # b: the heartbeat timeout applies DefaultResult ABANDON, which also retains.
        wait_until(lambda: self.state(b) == "Terminating:Retained", timeout=5)
        causes = {e["instance"]: (e["cause"], e["to_state"]) for e in self.events("lifecycle")}
        self.assertEqual(causes, {a: ("complete", "Terminating:Retained"),
                                  b: ("heartbeat-timeout", "Terminating:Retained")})
        self.asg.terminate_instance_in_auto_scaling_group(InstanceId=a, ShouldDecrementDesiredCapacity=False)
        self.assertIsNone(self.state(a))

    def test_warm_pool(self):
        self.group(hooks=[hook("tfe-launch", LAUNCH)])
        created = self.launch(id=IID, warm=True)
        self.assertEqual((created["lifecycle_state"], created["target_lifecycle_state"]),
                         ("Warmed:Pending:Wait", "Warmed:Stopped"))
        self.complete(IID, "tfe-launch")
        self.assertEqual(self.state(IID), "Warmed:Stopped")
        self.assertEqual(self.asg.describe_auto_scaling_groups()["AutoScalingGroups"][0]["Instances"], [])
        left = self.control("POST", f"/_emulator/instances/{IID}/leave-warm-pool")
        self.assertEqual((left["lifecycle_state"], left["target_lifecycle_state"]), ("Pending:Wait", "InService"))
        self.assertNotEqual(left["actions"][0]["token"], created["actions"][0]["token"])
        self.complete(IID, "tfe-launch")
        self.assertEqual(self.state(IID), "InService")
        self.control("POST", f"/_emulator/instances/{IID}/leave-warm-pool", expect=409)
        path = [(e["from_state"], e["to_state"]) for e in self.events("lifecycle")]
        self.assertEqual(path, [("Warmed:Pending:Wait", "Warmed:Stopped"), ("Pending:Wait", "InService")])

    def test_control_errors(self):
        self.group()
        self.control("POST", "/_emulator/groups", {"name": "tfe-asg"}, expect=409)
        self.control("POST", "/_emulator/groups", {"name": "g2", "hooks": [hook("h", "autoscaling:NOPE")]},
                     expect=400)
        self.control("POST", "/_emulator/groups", {"name": "g2", "hooks": [hook("h", LAUNCH, timeout=0)]},
                     expect=400)
        self.control("POST", "/_emulator/instances", {"group": "missing"}, expect=404)
        self.control("GET", "/_emulator/instances/i-missing", expect=404)
        self.control("POST", "/_emulator/nope", expect=404)
        iid = self.launch()["id"]
        self.assertRegex(iid, r"^i-[0-9a-f]{17}$")
        self.control("POST", "/_emulator/instances", {"group": "tfe-asg", "id": iid}, expect=409)


class ImdsTests(EmulatorTestCase):

    def test_token_flow_and_static_paths(self):
        self.group()
        port = self.launch(id=IID, private_ip="10.0.1.5")["imds_port"]
        md = "/latest/meta-data/"
        self.assertEqual(self.imds(port, md + "instance-id")[0], 401)
        self.assertEqual(self.imds(port, md + "instance-id", token="made-up")[0], 401)
        self.assertEqual(self.imds(port, "/latest/api/token", method="PUT")[0], 400)
        for bad in ("0", "21601", "abc"):
            self.assertEqual(self.imds(port, "/latest/api/token", method="PUT",
                                       headers={"X-aws-ec2-metadata-token-ttl-seconds": bad})[0], 400)
        self.assertEqual(self.imds(port, "/latest/api/token", method="PUT",
                                   headers={"X-aws-ec2-metadata-token-ttl-seconds": "60",
                                            "X-Forwarded-For": "1.2.3.4"})[0], 403)
        self.assertEqual(self.imds(port, "/latest/api/token")[0], 405)
        status, token, headers = self.imds(port, "/latest/api/token", method="PUT",
                                           headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
        self.assertEqual((status, headers["X-aws-ec2-metadata-token-ttl-seconds"]), (200, "21600"))
        expected = {"instance-id": IID, "placement/region": "us-east-1", "placement/availability-zone": "us-east-1a",
                    "local-ipv4": "10.0.1.5", "instance-type": "m5.xlarge",
                    "autoscaling/target-lifecycle-state": "InService", "events/maintenance/scheduled": "[]"}
        for path, value in expected.items():
            self.assertEqual(self.imds(port, md + path, token)[:2], (200, value), path)
        status, doc, _ = self.imds(port, "/latest/dynamic/instance-identity/document", token)
        doc = json.loads(doc)
        self.assertEqual((doc["instanceId"], doc["region"], doc["availabilityZone"], doc["privateIp"],
                          doc["accountId"], doc["instanceType"]),
                         (IID, "us-east-1", "us-east-1a", "10.0.1.5", "123456789012", "m5.xlarge"))
        for path in ("spot/instance-action", "events/recommendations/rebalance", "nope", ""):
            self.assertEqual(self.imds(port, md + path, token)[0], 404, path)

    def test_date_header_follows_clock_skew(self):
        self.group()
        port = self.launch(id=IID)["imds_port"]

        def date_offset():
            before = time.time()
            _, _, headers = self.imds(port, "/latest/api/token", method="PUT",
                                      headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
            return parsedate_to_datetime(headers["Date"]).timestamp() - before

        self.assertLess(abs(date_offset()), 2)
        self.control("POST", f"/_emulator/instances/{IID}/imds", {"clock_skew_s": 600})
        self.assertLess(abs(date_offset() - 600), 2)
        self.control("POST", f"/_emulator/instances/{IID}/imds", {"clock_skew_s": -30.5})
        self.assertLess(abs(date_offset() + 30.5), 2)
        self.control("POST", f"/_emulator/instances/{IID}/imds", {"clock_skew_s": "soon"}, expect=400)

    def test_target_lifecycle_state_values(self):
        self.group(hooks=[hook("tfe-launch", LAUNCH), hook("tfe-drain", TERMINATE)])
        target = "/latest/meta-data/autoscaling/target-lifecycle-state"
        # AWS semantics: the target is set when the transition *begins*.
        port = self.launch(id=IID)["imds_port"]
        token = self.token(port)
        self.assertEqual(self.imds(port, target, token)[:2], (200, "InService"))
        # defer_target_state: 404 while Pending:Wait, the value appears once InService.
        deferred = self.launch(id="i-0000000000000000d", defer_target_state=True)
        dport = deferred["imds_port"]
        dtoken = self.token(dport)
        self.assertEqual(self.imds(dport, target, dtoken)[0], 404)
        self.complete(deferred["id"], "tfe-launch")
        self.assertEqual(self.imds(dport, target, dtoken)[:2], (200, "InService"))
        self.control("POST", f"/_emulator/instances/{deferred['id']}/terminate")
        self.assertEqual(self.imds(dport, target, dtoken)[:2], (200, "Terminated"))
        self.assertEqual(self.state(deferred["id"]), "Terminating:Wait")
        warm = self.launch(warm=True)
        wtoken = self.token(warm["imds_port"])
        self.assertEqual(self.imds(warm["imds_port"], target, wtoken)[:2], (200, "Warmed:Stopped"))
        self.assertEqual(self.instance(deferred["id"])["target_lifecycle_state"], "Terminated")

    def test_notices(self):
        self.group()
        port = self.launch(id=IID)["imds_port"]
        token = self.token(port)
        spot = {"action": "terminate", "time": "2026-11-21T12:00:00Z"}
        maint = [{"NotBefore": "21 Jan 2026 09:00:43 GMT", "Code": "system-reboot", "Description": "reboot",
                  "EventId": "instance-event-0d59937288b749b32", "NotAfter": "21 Jan 2026 09:17:23 GMT",
                  "State": "active"}]
        self.control("POST", f"/_emulator/instances/{IID}/imds",
                     {"spot_instance_action": spot, "rebalance": {"noticeTime": "2026-11-21T11:58:00Z"},
                      "maintenance": maint})
        md = "/latest/meta-data/"
        self.assertEqual(json.loads(self.imds(port, md + "spot/instance-action", token)[1]), spot)
        self.assertEqual(json.loads(self.imds(port, md + "events/recommendations/rebalance", token)[1]),
                         {"noticeTime": "2026-11-21T11:58:00Z"})
        self.assertEqual(json.loads(self.imds(port, md + "events/maintenance/scheduled", token)[1]), maint)
        self.control("POST", f"/_emulator/instances/{IID}/imds", {"spot_instance_action": None})  # merge
        self.assertEqual(self.imds(port, md + "spot/instance-action", token)[0], 404)
        self.assertEqual(self.imds(port, md + "events/recommendations/rebalance", token)[0], 200)

    def test_token_expiry_fault_and_ttl(self):
        self.group()
        port = self.launch(id=IID)["imds_port"]
        path = "/latest/meta-data/instance-id"
        token = self.token(port)
        self.assertEqual(self.imds(port, path, token)[0], 200)
        self.control("POST", "/_emulator/faults", {"expire_imds_tokens": True})
        self.assertEqual(self.imds(port, path, token)[0], 401)
        self.assertEqual(self.imds(port, path, self.token(port))[0], 200)
        short = self.token(port, ttl="1")
        wait_until(lambda: self.imds(port, path, short)[0] == 401, timeout=3, interval=0.2)

    def test_request_counters_and_separate_listeners(self):
        self.group()
        a, b = self.launch(id="i-0000000000000000a"), self.launch(id="i-0000000000000000b")
        self.assertNotEqual(a["imds_port"], b["imds_port"])
        token = self.token(a["imds_port"])
        for _ in range(3):
            self.imds(a["imds_port"], "/latest/meta-data/instance-id", token)
        self.imds(a["imds_port"], "/latest/meta-data/placement/region", token)
        tb = self.token(b["imds_port"])
        self.assertEqual(self.imds(b["imds_port"], "/latest/meta-data/instance-id", tb)[1], "i-0000000000000000b")
        self.assertEqual(self.instance(a["id"])["imds_requests"],
                         {"/latest/api/token": 1, "/latest/meta-data/instance-id": 3,
                          "/latest/meta-data/placement/region": 1})
        self.control("POST", "/_emulator/reset")
        with self.assertRaises(OSError):  # listeners are closed by reset
            self.imds(a["imds_port"], "/latest/meta-data/instance-id", token)


def raw_query(port, body, timeout=5.0):
    """One Query API request on a raw socket; returns the first bytes of the answer (b"" for a clean
    end of stream), or the OSError the connection ended with, and the seconds it took."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    start = time.monotonic()
    try:
        data = body.encode()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: emulator\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(data) + data)
        try:
            return sock.recv(64), time.monotonic() - start
        except OSError as e:
            return e, time.monotonic() - start
    finally:
        sock.close()


DESCRIBE = "Action=DescribeAutoScalingInstances&Version=2011-01-01"


class FaultTests(EmulatorTestCase):

    def faults(self, body, expect=200):
        return self.control("POST", "/_emulator/faults", body, expect=expect)

    def api_faults(self):
        return [(e["action"], e["status"], e["error_code"], e["fault"]) for e in self.events("api")]

    def test_error_kinds_answer_well_formed_aws_errors(self):
        self.group()
        self.faults({"add": [{"target": "api", "action": "DescribeAutoScalingInstances", "kind": k}
                             for k in ("throttle", "http500", "http503")]})
        for code, status in (("Throttling", 400), ("InternalFailure", 500), ("ServiceUnavailable", 503)):
            err = self.assertApiError(code, self.asg.describe_auto_scaling_instances)
            self.assertEqual(err.response["ResponseMetadata"]["HTTPStatusCode"], status)
        self.asg.describe_auto_scaling_instances()  # each rule had count 1
        self.assertEqual(self.api_faults(), [
            ("DescribeAutoScalingInstances", 400, "Throttling", "throttle"),
            ("DescribeAutoScalingInstances", 500, "InternalFailure", "http500"),
            ("DescribeAutoScalingInstances", 503, "ServiceUnavailable", "http503"),
            ("DescribeAutoScalingInstances", 200, None, None)])
        self.assertEqual(self.control("GET", "/_emulator/faults")["rules"], [])

    def test_reset_hang_and_lost_answer_nothing(self):
        self.group(hooks=[hook("tfe-launch", LAUNCH)])
        self.launch(id=IID)
        self.faults({"add": [{"target": "api", "action": "DescribeAutoScalingInstances", "kind": "reset"},
                             {"target": "api", "action": "DescribeAutoScalingInstances", "kind": "hang",
                              "hang_s": 0.5},
                             {"target": "api", "action": "CompleteLifecycleAction", "kind": "lost"}]})
        answer, _ = raw_query(self.emu.port, DESCRIBE)
        self.assertIsInstance(answer, ConnectionResetError)
        answer, took = raw_query(self.emu.port, DESCRIBE)
        self.assertEqual(answer, b"")  # nothing, then a clean close
        self.assertGreaterEqual(took, 0.45)
        complete = ("Action=CompleteLifecycleAction&Version=2011-01-01&AutoScalingGroupName=tfe-asg"
                    f"&LifecycleHookName=tfe-launch&LifecycleActionResult=CONTINUE&InstanceId={IID}")
        answer, _ = raw_query(self.emu.port, complete)
        self.assertIsInstance(answer, ConnectionResetError)
        # The lost Complete took effect: the retry a client would send finds no action.
        self.assertEqual(self.state(IID), "InService")
        self.assertApiError("ValidationError", self.complete, IID, "tfe-launch",
                            message=f"No active Lifecycle Action found with instance ID {IID}")
        self.assertEqual(self.api_faults()[:3], [
            ("DescribeAutoScalingInstances", None, None, "reset"),
            ("DescribeAutoScalingInstances", None, None, "hang"),
            ("CompleteLifecycleAction", 200, None, "lost")])
        [resolution] = self.events("lifecycle")
        self.assertEqual((resolution["result"], resolution["cause"]), ("CONTINUE", "complete"))

    def test_count_skip_window_and_wildcards(self):
        self.group()
        self.faults({"add": [{"target": "api", "action": "Describe*", "kind": "throttle", "count": 2, "skip": 1}]})
        shown = self.control("GET", "/_emulator/faults")["rules"]
        self.assertEqual([(r["action"], r["remaining"], r["skip"], r["fired"]) for r in shown],
                         [("Describe*", 2, 1, 0)])
        self.asg.describe_auto_scaling_instances()  # skipped
        self.assertApiError("Throttling", self.asg.describe_auto_scaling_groups)
        self.assertEqual(self.control("GET", "/_emulator/faults")["rules"][0]["remaining"], 1)
        self.assertApiError("Throttling", self.asg.describe_lifecycle_hooks, AutoScalingGroupName="tfe-asg")
        self.asg.describe_auto_scaling_instances()  # spent
        # A window: every matching request for 0.6 s from the first one it spoils.
        self.faults({"add": [{"target": "api", "action": "*", "kind": "http503", "for_s": 0.6}]})
        window = self.control("GET", "/_emulator/faults")["rules"][0]
        self.assertEqual((window["remaining"], window["window_left_s"]), (None, None))
        start = time.monotonic()
        spoiled = 0
        for _ in range(60):  # bounded: about 1.2 s at most
            try:
                self.asg.describe_auto_scaling_instances()
                break
            except ClientError as e:
                self.assertEqual(e.response["Error"]["Code"], "ServiceUnavailable")
                spoiled += 1
                time.sleep(0.02)
        self.assertGreaterEqual(time.monotonic() - start, 0.55)
        self.assertGreater(spoiled, 3)
        faulted = [e for e in self.events("api") if e["fault"] == "http503"]
        self.assertEqual(len(faulted), spoiled)
        self.assertLessEqual(faulted[-1]["t"] - faulted[0]["t"], 0.65)
        # clear drops every rule.
        self.faults({"add": [{"target": "api", "kind": "throttle", "count": 5}]})
        self.assertEqual(self.faults({"clear": True})["rules"], [])
        self.asg.describe_auto_scaling_instances()

    def test_clear_ends_a_hang_at_once(self):
        self.group()
        self.faults({"add": [{"target": "api", "kind": "hang", "hang_s": 20}]})
        result = {}
        worker = threading.Thread(target=lambda: result.update(answer=raw_query(self.emu.port, DESCRIBE, 10)))
        worker.start()
        wait_until(lambda: self.events("api"), timeout=5)
        self.faults({"clear": True})
        worker.join(timeout=5)
        self.assertFalse(worker.is_alive())
        answer, took = result["answer"]
        self.assertEqual(answer, b"")
        self.assertLess(took, 5)

    def test_the_first_forms_still_work(self):
        self.group()
        reply = self.faults({"throttle": {"action": "DescribeAutoScalingInstances", "count": 3}})
        self.assertEqual(reply["throttles"], {"DescribeAutoScalingInstances": 3})
        # Re-arming an action replaces its count; another action is added beside it.
        self.faults({"throttle": {"action": "DescribeAutoScalingInstances", "count": 1}})
        reply = self.faults({"throttle": {"action": "DescribeLifecycleHooks", "count": 2}})
        self.assertEqual(reply["throttles"], {"DescribeAutoScalingInstances": 1, "DescribeLifecycleHooks": 2})
        self.assertApiError("Throttling", self.asg.describe_auto_scaling_instances, message="Rate exceeded")
        self.asg.describe_auto_scaling_instances()
        self.assertEqual(self.faults({"throttle": None})["throttles"], {})
        self.asg.describe_lifecycle_hooks(AutoScalingGroupName="tfe-asg")

    def test_bad_rules_are_refused_whole(self):
        bad = [{"target": "nope", "kind": "throttle"},
               {"target": "api", "kind": "http401"},
               {"target": "imds", "kind": "lost"},
               {"target": "api", "kind": "throttle", "count": 0},
               {"target": "api", "kind": "throttle", "for_s": -1},
               {"target": "api", "kind": "throttle", "path": "meta-data/instance-id"},
               {"target": "api", "kind": "throttle", "instance": IID},
               {"target": "api", "kind": "throttle", "colour": "red"}]
        for rule in bad:
            self.faults({"add": [{"target": "api", "kind": "throttle"}, rule]}, expect=400)
        self.faults({"add": []}, expect=400)
        self.faults({"bogus": 1}, expect=400)
        self.assertEqual(self.control("GET", "/_emulator/faults")["rules"], [])


class ImdsFaultTests(EmulatorTestCase):

    def test_imds_fault_kinds(self):
        self.group()
        port = self.launch(id=IID)["imds_port"]
        token = self.token(port)
        md = "/latest/meta-data/"
        self.control("POST", "/_emulator/faults", {"add": [
            {"target": "imds", "path": "meta-data/instance-id", "kind": "http503", "count": 2},
            {"target": "imds", "instance": IID, "path": "meta-data/local-ipv4", "kind": "http404"},
            {"target": "imds", "instance": "i-someoneelse", "path": "*", "kind": "http503", "count": 100},
            {"target": "imds", "path": "meta-data/placement/*", "kind": "reset"},
            {"target": "imds", "path": "api/token", "kind": "hang", "hang_s": 0.4}]})
        self.assertEqual(self.imds(port, md + "instance-id", token)[0], 503)
        self.assertEqual(self.imds(port, md + "instance-id", token)[0], 503)
        self.assertEqual(self.imds(port, md + "instance-id", token)[:2], (200, IID))
        self.assertEqual(self.imds(port, md + "local-ipv4", token)[0], 404)
        self.assertEqual(self.imds(port, md + "local-ipv4", token)[0], 200)
        with self.assertRaises(ConnectionResetError):
            self.imds(port, md + "placement/region", token)
        start = time.monotonic()
        with self.assertRaises(http.client.RemoteDisconnected):
            self.imds(port, "/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        self.assertGreaterEqual(time.monotonic() - start, 0.35)
        events = [(e["method"], e["path"].removeprefix("/latest/"), e["status"], e["fault"])
                  for e in self.events("imds")]
        self.assertEqual(events[1:], [
            ("GET", "meta-data/instance-id", 503, "http503"), ("GET", "meta-data/instance-id", 503, "http503"),
            ("GET", "meta-data/instance-id", 200, None),
            ("GET", "meta-data/local-ipv4", 404, "http404"), ("GET", "meta-data/local-ipv4", 200, None),
            ("GET", "meta-data/placement/region", None, "reset"), ("PUT", "api/token", None, "hang")])
        self.assertEqual(events[0], ("PUT", "api/token", 200, None))
        self.assertTrue(all(e["instance"] == IID for e in self.events("imds")))

    def test_a_401_fault_revokes_the_token(self):
        self.group()
        port = self.launch(id=IID)["imds_port"]
        token = self.token(port)
        path = "/latest/meta-data/autoscaling/target-lifecycle-state"
        self.control("POST", "/_emulator/faults", {"add": [{"target": "imds", "path": path, "kind": "http401"}]})
        self.assertEqual(self.imds(port, path, token)[0], 401)
        # Revoked, not just refused once: the old token stays bad, a new one works.
        self.assertEqual(self.imds(port, "/latest/meta-data/instance-id", token)[0], 401)
        self.assertEqual(self.imds(port, path, self.token(port))[:2], (200, "InService"))


class StandbyTests(EmulatorTestCase):

    def test_standby_round_trip_fires_the_launch_hook_again(self):
        self.group(hooks=[hook("tfe-launch", LAUNCH), hook("tfe-drain", TERMINATE)])
        first = self.launch(id=IID)
        port = first["imds_port"]
        self.complete(IID, "tfe-launch")
        target = "/latest/meta-data/autoscaling/target-lifecycle-state"
        token = self.token(port)

        [activity] = self.asg.enter_standby(InstanceIds=[IID], AutoScalingGroupName="tfe-asg",
                                            ShouldDecrementDesiredCapacity=True)["Activities"]
        self.assertEqual((activity["Description"], activity["StatusCode"], activity["Progress"],
                          activity["AutoScalingGroupName"]),
                         (f"Moving EC2 instance to Standby: {IID}", "InProgress", 50, "tfe-asg"))
        self.assertIn(f"user request put instance {IID} into standby state", activity["Cause"])
        self.assertEqual(self.state(IID), "Standby")
        self.assertEqual(self.imds(port, target, token)[:2], (200, "Standby"))
        self.assertEqual(self.instance(IID)["actions"], [])  # no hook for standby
        self.assertEqual(len(self.events("lifecycle")), 1)

        [activity] = self.asg.exit_standby(InstanceIds=[IID], AutoScalingGroupName="tfe-asg")["Activities"]
        self.assertEqual((activity["Description"], activity["StatusCode"], activity["Progress"]),
                         (f"Moving EC2 instance out of Standby: {IID}", "PreInService", 30))
        self.assertEqual(self.state(IID), "Pending:Wait")
        self.assertEqual(self.imds(port, target, token)[:2], (200, "InService"))
        [action] = self.instance(IID)["actions"]
        self.assertEqual(action["hook"], "tfe-launch")
        self.assertNotEqual(action["token"], first["actions"][0]["token"])
        self.complete(IID, "tfe-launch")
        self.assertEqual(self.state(IID), "InService")
        states = [(e["from_state"], e["to_state"], e["cause"]) for e in self.events("state")]
        # Hook resolutions are state events too (cause as in the lifecycle event).
        self.assertEqual(states, [("Pending", "Pending:Wait", "launch"), ("Pending:Wait", "InService", "complete"),
                                  ("InService", "Standby", "enter-standby"),
                                  ("Standby", "Pending:Wait", "exit-standby"),
                                  ("Pending:Wait", "InService", "complete")])
        self.assertEqual([(e["hook"], e["result"]) for e in self.events("lifecycle")],
                         [("tfe-launch", "CONTINUE")] * 2)

    def test_without_a_launch_hook_exit_standby_is_in_service_at_once(self):
        self.group(hooks=[hook("tfe-drain", TERMINATE)])
        self.launch(id=IID)
        self.control("POST", f"/_emulator/instances/{IID}/enter-standby")
        self.assertEqual(self.instance(IID)["target_lifecycle_state"], "Standby")
        back = self.control("POST", f"/_emulator/instances/{IID}/exit-standby")
        self.assertEqual((back["lifecycle_state"], back["target_lifecycle_state"]), ("InService", "InService"))
        # A Standby instance can still be terminated, and the terminate hook fires.
        self.control("POST", f"/_emulator/instances/{IID}/enter-standby")
        self.asg.terminate_instance_in_auto_scaling_group(InstanceId=IID, ShouldDecrementDesiredCapacity=False)
        self.assertEqual(self.state(IID), "Terminating:Wait")

    def test_standby_errors(self):
        self.group(hooks=[hook("tfe-launch", LAUNCH)])
        self.group(name="other")
        self.launch(id=IID)  # Pending:Wait
        self.assertApiError("ValidationError", self.asg.enter_standby, InstanceIds=[IID],
                            AutoScalingGroupName="tfe-asg", ShouldDecrementDesiredCapacity=False,
                            message=f"The instance {IID} is not in InService.")
        self.assertApiError("ValidationError", self.asg.exit_standby, InstanceIds=[IID],
                            AutoScalingGroupName="tfe-asg", message=f"The instance {IID} is not in Standby.")
        self.complete(IID, "tfe-launch")
        self.assertApiError("ValidationError", self.asg.enter_standby, InstanceIds=[IID],
                            AutoScalingGroupName="other", ShouldDecrementDesiredCapacity=False,
                            message=f"The instance {IID} is not part of Auto Scaling group other.")
        # All or nothing: one bad id moves none.
        self.assertApiError("ValidationError", self.asg.enter_standby, InstanceIds=[IID, "i-0000000000000000f"],
                            AutoScalingGroupName="tfe-asg", ShouldDecrementDesiredCapacity=False)
        self.assertEqual(self.state(IID), "InService")
        self.control("POST", f"/_emulator/instances/{IID}/exit-standby", expect=409)


class CapacityTests(EmulatorTestCase):
    """Launch templates, group sizes and the capacity-managed groups' real launches and scale-ins."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ec2 = boto3.client(
            "ec2", region_name="us-east-1", endpoint_url=cls.emu.url,
            aws_access_key_id="testing", aws_secret_access_key="testing",
            config=Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=2, read_timeout=5))

    def template(self, name="tfe", versions=("release=504", "release=505")):
        return self.control("POST", "/_emulator/launch-templates",
                            {"name": name, "versions": [{"user_data": u} for u in versions]})

    def managed(self, hooks=(), version="1", **sizes):
        lt = self.template()
        self.group(hooks=hooks, launch_template={"id": lt["id"], "version": version},
                   **{"min_size": 0, "max_size": 3, "desired_capacity": 0, **sizes})
        return lt

    def describe(self, name="tfe-asg"):
        [g] = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
        return g

    def live(self, state=None):
        """Instances that are not gone, optionally only those in `state`."""
        return [i for i in self.control("GET", "/_emulator/instances")["instances"]
                if i["lifecycle_state"] not in ("Terminated",) and (state is None or i["lifecycle_state"] == state)]

    def test_launch_templates_control_and_ec2_wire(self):
        lt = self.template()
        self.assertRegex(lt["id"], r"^lt-[0-9a-f]{17}$")
        self.assertEqual((lt["name"], lt["versions"], lt["default_version"]), ("tfe", [1, 2], 1))
        added = self.control("POST", "/_emulator/launch-templates/tfe/versions", {"user_data": "release=506"})
        self.assertEqual((added["version"], added["versions"]), (3, [1, 2, 3]))
        self.assertEqual(self.control("POST", f"/_emulator/launch-templates/{lt['id']}/versions", {})["version"], 4)
        self.assertEqual([t["id"] for t in self.control("GET", "/_emulator/launch-templates")["launch_templates"]],
                         [lt["id"]])
        self.control("POST", "/_emulator/launch-templates", {"name": "tfe"}, expect=409)
        self.control("POST", "/_emulator/launch-templates/nope/versions", {}, expect=404)

        rows = self.ec2.describe_launch_template_versions(LaunchTemplateId=lt["id"])["LaunchTemplateVersions"]
        self.assertEqual([(r["VersionNumber"], r["DefaultVersion"]) for r in rows],
                         [(4, False), (3, False), (2, False), (1, True)])
        self.assertEqual(rows[-1]["LaunchTemplateData"]["UserData"], base64.b64encode(b"release=504").decode())
        self.assertEqual((rows[0]["LaunchTemplateId"], rows[0]["LaunchTemplateName"]), (lt["id"], "tfe"))
        picked = self.ec2.describe_launch_template_versions(LaunchTemplateName="tfe", Versions=["$Latest", "2", "$Default"])
        self.assertEqual([r["VersionNumber"] for r in picked["LaunchTemplateVersions"]], [4, 2, 1])
        every = self.ec2.describe_launch_template_versions(Versions=["$Latest"])["LaunchTemplateVersions"]
        self.assertEqual([r["VersionNumber"] for r in every], [4])
        self.assertApiError("InvalidLaunchTemplateId.NotFound", self.ec2.describe_launch_template_versions,
                            LaunchTemplateId="lt-00000000000000000",
                            message="The specified launch template, with template ID lt-00000000000000000, does not exist.")
        self.assertApiError("InvalidLaunchTemplateName.NotFoundException", self.ec2.describe_launch_template_versions,
                            LaunchTemplateName="nope",
                            message="The specified launch template, with template name nope, does not exist.")
        self.assertApiError("InvalidLaunchTemplateId.VersionNotFound", self.ec2.describe_launch_template_versions,
                            LaunchTemplateId=lt["id"], Versions=["9"],
                            message=f"Could not find the specified version 9 for the launch template with ID {lt['id']}.")
        self.assertApiError("MissingParameter", self.ec2.describe_launch_template_versions)
        actions = [(e["action"], e["status"], e["error_code"]) for e in self.events("api")]
        self.assertEqual(actions[-1], ("DescribeLaunchTemplateVersions", 400, "MissingParameter"))
        # Faults apply to the EC2 action like to the others, answered in EC2's error shape.
        self.control("POST", "/_emulator/faults", {"add": [{"target": "api", "action": "DescribeLaunchTemplateVersions",
                                                            "kind": "throttle"}]})
        self.assertApiError("Throttling", self.ec2.describe_launch_template_versions, LaunchTemplateId=lt["id"])

    def test_group_sizes_template_and_processes_in_describe(self):
        lt = self.managed(version="$Latest", min_size=0, max_size=2)
        g = self.describe()
        self.assertEqual((g["MinSize"], g["MaxSize"], g["DesiredCapacity"], g["SuspendedProcesses"], g["Instances"]),
                         (0, 2, 0, [], []))
        self.assertEqual(g["LaunchTemplate"], {"LaunchTemplateId": lt["id"], "LaunchTemplateName": "tfe",
                                               "Version": "$Latest"})
        self.asg.suspend_processes(AutoScalingGroupName="tfe-asg", ScalingProcesses=["AZRebalance", "ReplaceUnhealthy"])
        procs = self.describe()["SuspendedProcesses"]
        self.assertEqual([p["ProcessName"] for p in procs], ["AZRebalance", "ReplaceUnhealthy"])
        self.assertRegex(procs[0]["SuspensionReason"], r"^User suspended at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.asg.suspend_processes(AutoScalingGroupName="tfe-asg")
        self.assertEqual(len(self.describe()["SuspendedProcesses"]), 9)
        self.asg.resume_processes(AutoScalingGroupName="tfe-asg", ScalingProcesses=["Launch"])
        self.assertNotIn("Launch", [p["ProcessName"] for p in self.describe()["SuspendedProcesses"]])
        self.asg.resume_processes(AutoScalingGroupName="tfe-asg")
        self.assertEqual(self.describe()["SuspendedProcesses"], [])
        self.assertApiError("ValidationError", self.asg.suspend_processes, AutoScalingGroupName="tfe-asg",
                            ScalingProcesses=["Nope"])
        self.assertApiError("ValidationError", self.asg.suspend_processes, AutoScalingGroupName="missing")
        # An unmanaged group keeps today's view: desired = its instances.
        self.group("plain", min_size=1)
        self.launch("plain")
        plain = self.describe("plain")
        self.assertEqual((plain["MinSize"], plain["MaxSize"], plain["DesiredCapacity"]), (1, 10, 1))
        self.assertNotIn("LaunchTemplate", plain)
        self.assertApiError("ValidationError", self.asg.set_desired_capacity, AutoScalingGroupName="plain",
                            DesiredCapacity=2)
        self.control("POST", "/_emulator/groups", {"name": "bad", "desired_capacity": 1}, expect=400)
        self.control("POST", "/_emulator/groups", {"name": "bad", "launch_template": {"name": "tfe", "version": "7"}},
                     expect=400)
        self.control("POST", "/_emulator/groups", {"name": "bad", "launch_template": {"name": "nope"}}, expect=404)

    def test_scale_out_launches_instances_with_their_own_imds(self):
        self.managed(hooks=[hook("tfe-launch", LAUNCH)], max_size=2)
        self.assertApiError("ValidationError", self.asg.set_desired_capacity, AutoScalingGroupName="tfe-asg",
                            DesiredCapacity=5, message="New SetDesiredCapacity value 5 is above max value 2 for the "
                                                       "AutoScalingGroup.")
        self.asg.set_desired_capacity(AutoScalingGroupName="tfe-asg", DesiredCapacity=2, HonorCooldown=False)
        waiting = wait_until(lambda: len(self.live("Pending:Wait")) == 2 and self.live("Pending:Wait"), timeout=3)
        time.sleep(0.2)  # never more than desired
        self.assertEqual(len(self.live()), 2)
        self.assertEqual(len({i["imds_port"] for i in waiting}), 2)
        self.assertEqual(len({i["private_ip"] for i in waiting}), 2)
        self.assertEqual(sorted(i["availability_zone"] for i in waiting), ["us-east-1a", "us-east-1b"])
        for inst in waiting:
            self.assertRegex(inst["id"], r"^i-[0-9a-f]{17}$")
            self.assertEqual((inst["template_version"], inst["user_data"], inst["in_service_at"]),
                             (1, "release=504", None))
            self.assertAlmostEqual(inst["launched_at"], time.time(), delta=5)
            token = self.token(inst["imds_port"])
            self.assertEqual(self.imds(inst["imds_port"], "/latest/meta-data/instance-id", token)[1], inst["id"])
            self.assertEqual(self.imds(inst["imds_port"], "/latest/user-data", token)[1], "release=504")
            self.assertEqual(self.imds(inst["imds_port"], "/latest/meta-data/placement/availability-zone",
                                       token)[1], inst["availability_zone"])
            self.complete(inst["id"], "tfe-launch")
        g = self.describe()
        self.assertEqual(g["DesiredCapacity"], 2)
        self.assertEqual(sorted((i["LifecycleState"], i["HealthStatus"], i["LaunchTemplate"]["Version"])
                                for i in g["Instances"]), [("InService", "HEALTHY", "1")] * 2)
        self.assertTrue(all(i["in_service_at"] for i in self.live()))
        launches = self.events("launch")
        self.assertEqual([(e["template_version"], e["cause"]) for e in launches], [(1, "scale-out")] * 2)
        [cap] = [e for e in self.events("capacity") if e["cause"] == "SetDesiredCapacity"]
        self.assertEqual((cap["desired_capacity"], cap["changed"]), (2, ["desired_capacity"]))
        ins = [e for e in self.events("state") if e["to_state"] == "InService"]
        self.assertEqual([(e["template_version"], e["cause"], e["hook"]) for e in ins],
                         [(1, "complete", "tfe-launch")] * 2)
        self.assertTrue(all(isinstance(e["time"], float) for e in ins))

    def test_scale_in_goes_through_the_terminate_hook(self):
        self.managed(hooks=[hook("tfe-drain", TERMINATE)], desired_capacity=2)
        wait_until(lambda: len(self.live("InService")) == 2, timeout=3)
        self.asg.set_desired_capacity(AutoScalingGroupName="tfe-asg", DesiredCapacity=0)
        draining = wait_until(lambda: len(self.live("Terminating:Wait")) == 2 and self.live("Terminating:Wait"),
                              timeout=3)
        self.assertEqual([e["cause"] for e in self.events("state") if e["to_state"] == "Terminating:Wait"],
                         ["scale-in"] * 2)
        self.assertEqual({i["target_lifecycle_state"] for i in draining}, {"Terminated"})
        for inst in draining:
            self.complete(inst["id"], "tfe-drain")
        time.sleep(0.2)
        self.assertEqual((self.live(), self.describe()["Instances"], len(self.events("launch"))), ([], [], 2))

    def test_suspended_processes_stop_launches_and_scale_in(self):
        self.managed()
        self.asg.suspend_processes(AutoScalingGroupName="tfe-asg", ScalingProcesses=["Launch"])
        self.asg.set_desired_capacity(AutoScalingGroupName="tfe-asg", DesiredCapacity=1)
        time.sleep(0.3)
        self.assertEqual(self.live(), [])
        self.asg.resume_processes(AutoScalingGroupName="tfe-asg", ScalingProcesses=["Launch"])
        wait_until(lambda: len(self.live("InService")) == 1, timeout=3)
        self.asg.suspend_processes(AutoScalingGroupName="tfe-asg", ScalingProcesses=["Terminate"])
        self.asg.set_desired_capacity(AutoScalingGroupName="tfe-asg", DesiredCapacity=0)
        time.sleep(0.3)
        self.assertEqual(len(self.live("InService")), 1)
        self.asg.resume_processes(AutoScalingGroupName="tfe-asg")
        wait_until(lambda: self.live() == [], timeout=3)
        self.assertEqual([e["action"] for e in self.events("processes")], ["suspend", "resume", "suspend", "resume"])

    def test_an_abandoned_launch_is_replaced(self):
        self.managed(hooks=[hook("tfe-launch", LAUNCH)], desired_capacity=1)
        [first] = wait_until(lambda: self.live("Pending:Wait"), timeout=3)
        self.complete(first["id"], "tfe-launch", "ABANDON")
        self.assertEqual(self.instance(first["id"])["lifecycle_state"], "Terminated")
        [second] = wait_until(lambda: self.live("Pending:Wait"), timeout=3)
        self.assertNotEqual(second["id"], first["id"])
        self.assertEqual([e["cause"] for e in self.events("launch")], ["scale-out", "replacement"])

    def test_update_group_to_a_new_version_and_the_termination_policy(self):
        lt = self.managed(desired_capacity=1, max_size=3)
        [old] = wait_until(lambda: self.live("InService"), timeout=3)
        self.asg.update_auto_scaling_group(AutoScalingGroupName="tfe-asg",
                                           LaunchTemplate={"LaunchTemplateId": lt["id"], "Version": "2"},
                                           DesiredCapacity=2)
        wait_until(lambda: len(self.live("InService")) == 2, timeout=3)
        [new] = [i for i in self.live() if i["id"] != old["id"]]
        self.assertEqual((new["template_version"], new["user_data"]), (2, "release=505"))
        self.assertEqual(self.describe()["LaunchTemplate"]["Version"], "2")
        [cap] = [e for e in self.events("capacity") if e["cause"] == "UpdateAutoScalingGroup"]
        self.assertEqual((cap["changed"], cap["launch_template"]["version"]),
                         (["desired_capacity", "launch_template"], "2"))
        # Back to version 1 by name: the newer instance is now the one off the current version, so it goes first.
        self.asg.update_auto_scaling_group(AutoScalingGroupName="tfe-asg",
                                           LaunchTemplate={"LaunchTemplateName": "tfe", "Version": "1"})
        self.asg.set_desired_capacity(AutoScalingGroupName="tfe-asg", DesiredCapacity=1)
        wait_until(lambda: len(self.live()) == 1, timeout=3)
        self.assertEqual(self.live()[0]["id"], old["id"])
        # MinSize above the current desired raises desired (AWS); the errors.
        self.asg.update_auto_scaling_group(AutoScalingGroupName="tfe-asg", MinSize=2)
        self.assertEqual(self.describe()["DesiredCapacity"], 2)
        self.assertApiError("ValidationError", self.asg.update_auto_scaling_group, AutoScalingGroupName="tfe-asg",
                            DesiredCapacity=5,
                            message="Desired capacity:5 must be between the specified min size:2 and max size:3")
        self.assertApiError("ValidationError", self.asg.set_desired_capacity, AutoScalingGroupName="tfe-asg",
                            DesiredCapacity=1, message="New SetDesiredCapacity value 1 is below min value 2 for the "
                                                       "AutoScalingGroup.")
        self.assertApiError("ValidationError", self.asg.update_auto_scaling_group, AutoScalingGroupName="tfe-asg",
                            LaunchTemplate={"LaunchTemplateId": "lt-00000000000000000", "Version": "1"})
        self.assertApiError("ValidationError", self.asg.update_auto_scaling_group, AutoScalingGroupName="tfe-asg",
                            LaunchTemplate={"LaunchTemplateId": lt["id"], "Version": "9"})
        self.assertApiError("ValidationError", self.asg.update_auto_scaling_group, AutoScalingGroupName="tfe-asg",
                            MinSize=3, MaxSize=2)
        self.assertApiError("ValidationError", self.asg.set_desired_capacity, AutoScalingGroupName="missing",
                            DesiredCapacity=1)
        self.assertEqual(self.describe()["MaxSize"], 3)  # a refused update changes nothing

    def test_an_unmanaged_group_gets_a_template_and_a_launch_delay(self):
        lt = self.template()
        self.group(launch_delay=0.5)
        self.launch(id=IID)
        self.asg.update_auto_scaling_group(AutoScalingGroupName="tfe-asg", MaxSize=3, DesiredCapacity=2,
                                           LaunchTemplate={"LaunchTemplateName": "tfe", "Version": "$Latest"})
        start = time.monotonic()
        time.sleep(0.2)
        self.assertEqual(len(self.live()), 1)
        wait_until(lambda: len(self.live("InService")) == 2, timeout=3)
        self.assertGreaterEqual(time.monotonic() - start, 0.45)
        [launched] = [i for i in self.live() if i["id"] != IID]
        self.assertEqual(launched["template_version"], 2)  # $Latest resolved at launch
        # Scale-in prefers the instance not on the current version (the control-created one has none).
        self.asg.set_desired_capacity(AutoScalingGroupName="tfe-asg", DesiredCapacity=1)
        wait_until(lambda: len(self.live()) == 1, timeout=3)
        self.assertEqual(self.live()[0]["id"], launched["id"])
        self.assertEqual(self.control("GET", f"/_emulator/launch-templates")["launch_templates"][0]["id"], lt["id"])

    def test_standby_without_decrement_is_replaced(self):
        self.managed(desired_capacity=1)
        [first] = wait_until(lambda: self.live("InService"), timeout=3)
        self.asg.enter_standby(AutoScalingGroupName="tfe-asg", InstanceIds=[first["id"]],
                               ShouldDecrementDesiredCapacity=False)
        wait_until(lambda: len(self.live("InService")) == 1, timeout=3)
        self.asg.exit_standby(AutoScalingGroupName="tfe-asg", InstanceIds=[first["id"]])
        self.assertEqual(self.describe()["DesiredCapacity"], 2)
        self.asg.enter_standby(AutoScalingGroupName="tfe-asg", InstanceIds=[first["id"]],
                               ShouldDecrementDesiredCapacity=True)
        self.assertEqual(self.describe()["DesiredCapacity"], 1)
        time.sleep(0.2)
        self.assertEqual(len(self.events("launch")), 2)


class ProcessTests(unittest.TestCase):

    def test_port_file_stdout_and_sigterm(self):
        emu = EmulatorProcess()
        self.addCleanup(emu.stop)
        with open(emu.port_file) as f:
            self.assertRegex(f.read(), r"^\d+\n$")
        self.assertEqual(emu.proc.stdout.readline().strip(), f"aws-emulator listening on 127.0.0.1:{emu.port}")
        emu.proc.send_signal(signal.SIGTERM)
        self.assertEqual(emu.proc.wait(timeout=5), 0)


if __name__ == "__main__":
    unittest.main()
