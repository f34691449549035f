#!/usr/bin/env python3
"""The main job, locally: two TFE nodes from nothing to released launch hooks, in one cluster on
one Redis, then a scale-in of one of them to a drained node and a released terminate hook.

Starts moto's server (Secrets Manager), the project's Auto Scaling + IMDSv2 emulator and a
redis-server (TFE's external Redis, where the agents keep the cluster view) on 127.0.0.1, stores
the nodes' secrets, creates an Auto Scaling group with launch and terminate hooks and launches two
instances into Pending:Wait, then runs the real `tfe-node-agent run` for each with the fake TFE
tools. Once both are in service it prints `tfe-node-agent cluster`, scales the first one in
(TerminateInstanceInAutoScalingGroup through the Query API), waits for its agent to drain the node,
release the terminate hook and leave the cluster, prints the cluster again, stops the agents like
the OS shutdown would, and prints a timeline of what Auto Scaling saw.
Run it through tests/demo.sh (which installs what it needs and builds the binary)."""

import json, os, shutil, signal, socket, subprocess, sys, tempfile, threading, time, urllib.request

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
        # A stand-in .rli: binary, of a license's size (preflight refuses placeholders).
        sm.create_secret(Name="tfe/license", SecretBinary=bytes(range(256)) * 8)
        say("stored secrets tfe/shared and tfe/license in Secrets Manager")

        # --- the cluster store: a redis-server, as TFE's external Redis -------------------------
        redis_port = free_port()
        redis_conf = os.path.join(work, "redis.conf")
        open(redis_conf, "w").write(f'bind 127.0.0.1\nport {redis_port}\nsave ""\nappendonly no\n'
                                    f'dir {work}\nlogfile {work}/redis.log\n')
        procs.append(subprocess.Popen(["redis-server", redis_conf],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait("redis-server", lambda: subprocess.run(["redis-cli", "-p", str(redis_port), "PING"],
                                                    capture_output=True, text=True).stdout.strip() == "PONG")
        say(f"redis-server on 127.0.0.1:{redis_port}")

        # --- the Auto Scaling group and two new instances ---------------------------------------
        http("POST", emu + "/_emulator/groups", {"name": "tfe-asg", "wait_state_delay": 1.0, "hooks": [
            {"name": "tfe-launch", "transition": "autoscaling:EC2_INSTANCE_LAUNCHING",
             "heartbeat_timeout": 30, "default_result": "ABANDON"},
            {"name": "tfe-terminate", "transition": "autoscaling:EC2_INSTANCE_TERMINATING",
             "heartbeat_timeout": 30, "default_result": "CONTINUE"}]})
        insts = [http("POST", emu + "/_emulator/instances", {"group": "tfe-asg", "private_ip": ip})
                 for ip in ("10.0.1.5", "10.0.2.7")]
        for inst in insts:
            say(f"instance {inst['id']} launched into {inst['lifecycle_state']} (hook tfe-launch, HeartbeatTimeout 30s)")

        # --- each node's config and fake TFE tools ----------------------------------------------
        tools = os.path.join(ROOT, "tests/fake-tfe")
        example = open(os.path.join(ROOT, "packaging/agent.toml.example")).read()
        nodes = []
        for n, inst in enumerate(insts, 1):
            home = os.path.join(work, f"node{n}")
            fake_state = os.path.join(home, "fake-tfe")
            os.makedirs(fake_state)
            etc = os.path.join(home, "etc")
            json.dump({"replicated_conf": os.path.join(etc, "replicated.conf"), "replicated_user": "nobody",
                       "install_duration_s": 2.0, "system_ready_after_s": 1.0, "app_started_after_s": 4.0,
                       "drain_duration_s": 3.0, "app_stop_duration_s": 1.0},
                      open(os.path.join(fake_state, "behaviour.json"), "w"))
            text = example
            for old, new in [("/opt/tfe/install.sh", f"{tools}/install.sh"),
                             ("/usr/local/bin/replicatedctl", f"{tools}/replicatedctl"),
                             ('/usr/local/bin/replicated"', f'{tools}/replicated"'),
                             ("/etc/", etc + "/"), ("/var/lib/tfe-node-agent", os.path.join(home, "state")),
                             ('\npoll_interval = "5s"', '\npoll_interval = "1s"'),
                             ("state_dir =", 'file_owner = "nobody"\nstate_dir ='),
                             # Two agents on one machine: each API on a port of its own.
                             ('listen = "127.0.0.1:18800"', 'listen = "127.0.0.1:0"'),
                             ('redis_host = "redis.internal"', 'redis_host = "127.0.0.1"'),
                             ('redis_port = "6379"', f'redis_port = "{redis_port}"'),
                             ('redis_use_password_auth = "1"', 'redis_use_password_auth = "0"'),
                             ('redis_use_tls = "1"', 'redis_use_tls = "0"'),
                             ("\n[cluster]", '\n[cluster]\nheartbeat_interval = "1s"\nnode_ttl = "3s"\n#'),
                             # Preflight probes the demo's Redis, the license, the disk, IMDS and the
                             # clock; the demo has no PostgreSQL or S3 bucket.
                             ("\n[preflight]", '\n[preflight]\nskip = ["postgres", "object_storage"]\n#')]:
                assert old in text, old
                text = text.replace(old, new)
            config = os.path.join(home, "agent.toml")
            open(config, "w").write(text)
            env = {"PATH": os.environ["PATH"], "TFE_NODE_AGENT_CONFIG": config,
                   "AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo",
                   "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                   "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto, "AWS_ENDPOINT_URL_AUTO_SCALING": emu,
                   "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{inst['imds_port']}",
                   "FAKE_TFE_STATE": fake_state}
            nodes.append({"n": n, "inst": inst, "env": env, "fake_state": fake_state, "lines": []})

        say("running: tfe-node-agent run   on both nodes")
        print("-" * 100, flush=True)
        for node in nodes:
            agent = subprocess.Popen([AGENT, "run"], env=node["env"], stdin=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
            procs.append(agent)
            node["agent"] = agent
            def pump(node=node):
                for line in node["agent"].stderr:
                    node["lines"].append(line)
                    print(f"  {node['n']} " + line, end="", flush=True)
            threading.Thread(target=pump, daemon=True).start()
        for node in nodes:
            wait(f"node {node['n']} in service", lambda: any("is in service" in l for l in node["lines"]), timeout=120)

        def cluster_view(what):
            out = subprocess.run([AGENT, "cluster"], env=nodes[-1]["env"], stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=60)
            print("-" * 100, flush=True)
            say(f"tfe-node-agent cluster ({what}) exited {out.returncode}:")
            for line in out.stdout.splitlines():
                print("    " + line)
            print("-" * 100, flush=True)
            return out

        # Both records written by now (the first heartbeat is at the join); a view within a few
        # heartbeats lists both live.
        view = None
        for _ in range(20):
            out = subprocess.run([AGENT, "cluster", "--json"], env=nodes[-1]["env"], stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=60)
            view = json.loads(out.stdout) if out.returncode == 0 else None
            if view and view["live"] == 2:
                break
            time.sleep(0.5)
        both = cluster_view("both nodes in service")

        # --- scale-in: the Auto Scaling API, as an operator or a scaling policy would ------------
        first = nodes[0]
        inst = first["inst"]
        agent = first["agent"]
        lines = first["lines"]
        asg = boto3.client("autoscaling", region_name="us-east-1", endpoint_url=emu,
                           aws_access_key_id="demo", aws_secret_access_key="demo")
        asg.terminate_instance_in_auto_scaling_group(InstanceId=inst["id"], ShouldDecrementDesiredCapacity=True)
        say(f"scale-in: TerminateInstanceInAutoScalingGroup {inst['id']}")
        wait("the terminate hook's release", lambda: any("terminate hook tfe-terminate released" in l for l in lines),
             timeout=120)
        wait("node 1 leaving the cluster", lambda: any("left the cluster" in l for l in lines), timeout=30)
        one = cluster_view("node 1 drained and gone")
        # The instance now shuts down: systemd stops the agent.
        agent.send_signal(signal.SIGTERM)
        rc = agent.wait(timeout=30)
        time.sleep(0.2)
        print("-" * 100, flush=True)
        say(f"node 1: tfe-node-agent run exited {rc} on SIGTERM")
        fake_state = first["fake_state"]
        # Node 2 served throughout; stopping its agent (not a system shutdown) leaves it serving.
        still = nodes[1]["agent"].poll() is None
        nodes[1]["agent"].send_signal(signal.SIGTERM)
        nodes[1]["agent"].wait(timeout=30)
        time.sleep(0.2)

        # --- what the Auto Scaling service saw -------------------------------------------------
        say("timeline as the Auto Scaling + IMDS emulator recorded it:")
        number = {n["inst"]["id"]: f"node {n['n']}" for n in nodes}
        for e in http("GET", emu + "/_emulator/events")["events"]:
            if e["kind"] == "api":
                detail = f"{e['action']} -> {e['status']}" + (f" {e['error_code']}" if e["error_code"] else "")
                if e["action"] == "CompleteLifecycleAction":
                    detail += f" ({e['params'].get('LifecycleActionResult')})"
            elif e["kind"] == "lifecycle":
                detail = f"hook {e['hook']}: {e['result']} by {e['cause']}, {e['from_state']} -> {e['to_state']}"
            elif e["kind"] == "state" and "hook" in e:
                continue  # the hook's resolution, listed once as its "lifecycle" event
            elif e["kind"] == "state":
                detail = f"instance {e['from_state']} -> {e['to_state']} ({e['cause']})"
            elif e["kind"] == "target":
                detail = f"IMDS target-lifecycle-state {e['from_target']} -> {e['to_target']}"
            else:
                continue  # one "imds" event per IMDS request: every poll, too many to list
            print(f"    t={e['t']:7.2f}s  {number.get(e.get('instance'), ''):<7} {e['kind']:<9} {detail}")
        calls = [json.loads(l) for l in open(os.path.join(fake_state, "calls.jsonl"))]
        installs = [c for c in calls if c["tool"] == "install.sh" and c["event"] == "start"]
        say(f"install.sh ran {len(installs)} time(s): {' '.join(installs[0]['argv']) if installs else '-'}")
        drains = json.load(open(os.path.join(fake_state, "drain.json")))
        say(f"node-drain started {drains['drains_started']} time(s), completed {drains['drains_completed']}")
        redis_dump = subprocess.run(["redis-cli", "-p", str(redis_port), "--scan"], capture_output=True,
                                    text=True).stdout
        redis_dump += "".join(subprocess.run(["redis-cli", "-p", str(redis_port), "GET", k], capture_output=True,
                                             text=True).stdout for k in redis_dump.split() if not k.endswith(":nodes"))
        leaked = [k for k, v in shared.items()
                  if any(v in open(os.path.join(n["fake_state"], "calls.jsonl")).read() for n in nodes)
                  or any(v in l for n in nodes for l in n["lines"]) or v in redis_dump
                  or v in both.stdout or v in one.stdout]
        events = http("GET", emu + "/_emulator/events?kind=lifecycle")["events"]
        results = [{e["hook"]: e["result"] for e in events if e["instance"] == n["inst"]["id"]} for n in nodes]
        state = http("GET", emu + "/_emulator/instances/" + inst["id"])["lifecycle_state"]
        if (rc == 0 and results == [{"tfe-launch": "CONTINUE", "tfe-terminate": "CONTINUE"}, {"tfe-launch": "CONTINUE"}]
                and not leaked and drains["drains_started"] == 1 and drains["drains_completed"] == 1
                and both.returncode == 0 and view and view["live"] == 2 and one.returncode == 0 and still):
            say(f"DEMO OK: two nodes in one cluster; launch hooks released with CONTINUE; node 1 drained once, "
                f"terminate hook tfe-terminate released with CONTINUE, left the cluster; instance is {state}")
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
