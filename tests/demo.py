#!/usr/bin/env python3
"""The main job, locally: boot one TFE node from nothing to a released launch hook.

Starts moto's server (Secrets Manager) and the project's Auto Scaling + IMDSv2 emulator on
127.0.0.1, stores the node's secrets, creates an Auto Scaling group with launch and terminate
hooks and launches an instance into Pending:Wait, then runs the real `tfe-node-agent boot` with
the fake TFE tools, and prints a timeline of what the Auto Scaling service saw.
Run it through tests/demo.sh (which installs what it needs and builds the binary)."""

import base64, json, os, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.environ.get("TFE_TEST_VENV", os.path.join(ROOT, ".venv"))
AGENT = os.environ.get("TFE_NODE_AGENT_BIN", os.path.join(ROOT, "target/debug/tfe-node-agent"))
T0 = time.monotonic()


def say(msg):
    print(f"[demo {time.monotonic() - T0:6.2f}s] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what, check, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    sys.exit(f"demo: {what} did not come up within {timeout}s")


def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


def main():
    work = tempfile.mkdtemp(prefix="tfe-node-agent-demo-")
    procs = []
    try:
        # --- peers -----------------------------------------------------------------------------
        moto_port = free_port()
        procs.append(subprocess.Popen([os.path.join(VENV, "bin/moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        moto = f"http://127.0.0.1:{moto_port}"
        port_file = os.path.join(work, "emulator.port")
        procs.append(subprocess.Popen([sys.executable, os.path.join(ROOT, "tests/emulator/aws_emulator.py"),
                                       "--port", "0", "--port-file", port_file],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait("emulator", lambda: os.path.exists(port_file))
        emu = "http://127.0.0.1:" + open(port_file).read().strip()
        wait("moto", lambda: socket.socket().connect_ex(("127.0.0.1", moto_port)) == 0)
        say(f"moto (Secrets Manager) on {moto}, Auto Scaling + IMDSv2 emulator on {emu}")

        # --- secrets: only their ids go into the agent's config ----------------------------------
        import boto3
        sm = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto,
                          aws_access_key_id="demo", aws_secret_access_key="demo")
        shared = {k: os.urandom(16).hex() for k in (
            "enc_password", "install_id", "root_secret", "user_token", "archivist_token", "cookie_hash",
            "internal_api_token", "registry_session_encryption_key", "registry_session_secret_key")}
        shared.update(pg_password=os.urandom(12).hex(), redis_pass=os.urandom(12).hex())
        sm.create_secret(Name="tfe/shared", SecretString=json.dumps(shared))
        sm.create_secret(Name="tfe/license", SecretBinary=b"demo license bytes")
        say("stored secrets tfe/shared and tfe/license in Secrets Manager")

        # --- the Auto Scaling group and a new instance ------------------------------------------
        http("POST", emu + "/_emulator/groups", {"name": "tfe-asg", "hooks": [
            {"name": "tfe-launch", "transition": "autoscaling:EC2_INSTANCE_LAUNCHING",
             "heartbeat_timeout": 30, "default_result": "ABANDON"},
            {"name": "tfe-terminate", "transition": "autoscaling:EC2_INSTANCE_TERMINATING",
             "heartbeat_timeout": 30, "default_result": "CONTINUE"}]})
        inst = http("POST", emu + "/_emulator/instances", {"group": "tfe-asg", "private_ip": "10.0.1.5"})
        say(f"instance {inst['id']} launched into {inst['lifecycle_state']} (hook tfe-launch, HeartbeatTimeout 30s)")

        # --- the node's config and the fake TFE tools -------------------------------------------
        fake_state = os.path.join(work, "fake-tfe")
        os.makedirs(fake_state)
        etc = os.path.join(work, "etc")
        json.dump({"replicated_conf": os.path.join(etc, "replicated.conf"), "replicated_user": "nobody",
                   "install_duration_s": 2.0, "system_ready_after_s": 1.0, "app_started_after_s": 4.0},
                  open(os.path.join(fake_state, "behaviour.json"), "w"))
        tools = os.path.join(ROOT, "tests/fake-tfe")
        text = open(os.path.join(ROOT, "packaging/agent.toml.example")).read()
        for old, new in [("/opt/tfe/install.sh", f"{tools}/install.sh"),
                         ("/usr/local/bin/replicatedctl", f"{tools}/replicatedctl"),
                         ('/usr/local/bin/replicated"', f'{tools}/replicated"'),
                         ("/etc/", etc + "/"), ("/var/lib/tfe-node-agent", os.path.join(work, "state")),
                         ('poll_interval = "5s"', 'poll_interval = "1s"'),
                         ("state_dir =", 'file_owner = "nobody"\nstate_dir =')]:
            text = text.replace(old, new)
        config = os.path.join(work, "agent.toml")
        open(config, "w").write(text)

        env = {"PATH": os.environ["PATH"], "TFE_NODE_AGENT_CONFIG": config,
               "AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo",
               "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
               "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto, "AWS_ENDPOINT_URL_AUTO_SCALING": emu,
               "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{inst['imds_port']}",
               "FAKE_TFE_STATE": fake_state}
        say(f"running: tfe-node-agent boot   (config {config})")
        print("-" * 100, flush=True)
        rc = subprocess.run([AGENT, "boot"], env=env, stdin=subprocess.DEVNULL, timeout=300).returncode
        print("-" * 100, flush=True)
        say(f"tfe-node-agent boot exited {rc}")

        # --- what the Auto Scaling service saw -------------------------------------------------
        say("timeline as the Auto Scaling + IMDS emulator recorded it:")
        for e in http("GET", emu + "/_emulator/events")["events"]:
            if e["kind"] == "api":
                detail = f"{e['action']} -> {e['status']}" + (f" {e['error_code']}" if e["error_code"] else "")
                if e["action"] == "CompleteLifecycleAction":
                    detail += f" ({e['params'].get('LifecycleActionResult')})"
            elif e["kind"] == "lifecycle":
                detail = f"hook {e['hook']}: {e['result']} by {e['cause']}, {e['from_state']} -> {e['to_state']}"
            elif e["kind"] == "state":
                detail = f"instance {e['from_state']} -> {e['to_state']} ({e['cause']})"
            else:
                detail = f"IMDS target-lifecycle-state {e['from_target']} -> {e['to_target']}"
            print(f"    t={e['t']:7.2f}s  {e['kind']:<9} {detail}")
        calls = [json.loads(l) for l in open(os.path.join(fake_state, "calls.jsonl"))]
        installs = [c for c in calls if c["tool"] == "install.sh" and c["event"] == "start"]
        say(f"install.sh ran {len(installs)} time(s): {' '.join(installs[0]['argv']) if installs else '-'}")
        leaked = [k for k, v in shared.items() if v in open(os.path.join(fake_state, "calls.jsonl")).read()]
        released = [e for e in http("GET", emu + "/_emulator/events?kind=lifecycle")["events"]
                    if e["hook"] == "tfe-launch"]
        if rc == 0 and released and released[-1]["result"] == "CONTINUE" and not leaked:
            say(f"DEMO OK: launch hook tfe-launch released with CONTINUE; instance is "
                f"{http('GET', emu + '/_emulator/instances/' + inst['id'])['lifecycle_state']}")
            return 0
        say("DEMO FAILED")
        return 1
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        if os.environ.get("KEEP_DEMO_DIR"):
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
