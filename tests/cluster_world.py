#!/usr/bin/env python3
"""A capacity-managed Auto Scaling group of real nodes on one machine, for the cluster demo
(tests/demo_cluster.py) and the repave benchmark (tests/bench/repave.py); the Rust tests have the
same world in tests/common/group.rs.

moto's server (Secrets Manager), the Auto Scaling + IMDSv2 emulator and a redis-server (TFE's
external Redis, the cluster store) on 127.0.0.1; a launch template whose versions carry the agent
config as cloud-init user data (cloud-init/baked-ami.yaml rendered; version 1 installs release 504,
version 2 release 505); a group with launch and terminate hooks; and a launcher thread that starts
a real `tfe-node-agent run` (its own dir, fake TFE tools state and IMDS port, the config from its
version's user data) for every instance the emulator launches, and stops it (SIGTERM, as the
instance's shutdown would) once the instance is Terminated and the agent has left the cluster."""

import base64, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.environ.get("TFE_TEST_VENV", os.path.join(ROOT, ".venv"))
AGENT = os.environ.get("TFE_NODE_AGENT_BIN", os.path.join(ROOT, "target/debug/tfe-node-agent"))
GROUP, TEMPLATE = "tfe-asg", "tfe"
RELEASES = {1: 504, 2: 505}
MAX_NODES = 16  # the launcher's bound on agents started over the world's life


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what, check, timeout=30, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = check()
        if v:
            return v
        time.sleep(step)
    raise RuntimeError(f"{what}: not within {timeout}s")


def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


def user_data(release):
    """cloud-init/baked-ami.yaml as Terraform's templatefile() renders it."""
    values = {"secret_shared_id": "tfe/shared", "secret_license_id": "tfe/license",
              "release_sequence": str(release), "tfe_hostname": "tfe.example.com",
              "pg_netloc": "db.internal:5432", "pg_dbname": "tfe", "pg_user": "tfe", "s3_bucket": "tfe-data",
              "aws_region": "us-east-1", "redis_host": "127.0.0.1", "launch_hook": "tfe-launch",
              "terminate_hook": "tfe-terminate"}
    text = open(os.path.join(ROOT, "cloud-init/baked-ami.yaml")).read()
    return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], text)


def agent_toml_of(data):
    """The agent.toml the user data's write_files entry holds (its `content: |` block)."""
    lines = data.splitlines()
    at = lines.index("  - path: /etc/tfe-node-agent/agent.toml")
    at = next(i for i in range(at, len(lines)) if lines[i].strip() == "content: |")
    body = lines[at + 1:]
    indent = next(len(l) - len(l.lstrip()) for l in body if l.strip())
    out = []
    for l in body:
        if not l.strip():
            out.append("")
        elif len(l) - len(l.lstrip()) >= indent:
            out.append(l[indent:])
        else:
            break
    return "\n".join(out) + "\n"


def localize(text, home, redis_port, region=False):
    """agent.toml from user data made runnable here: the node's own paths, the fake TFE tools, the
    local redis-server (plain), short intervals, an HTTP API port of its own, no preflight. The
    release stays the user data's. Sections are appended or edited by key (the template's
    agent.toml has [secrets] [replicated] [settings] [install] [lifecycle])."""
    tools = os.path.join(ROOT, "tests/fake-tfe")
    edits = {
        "settings": {"redis_port": f'"{redis_port}"', "redis_use_password_auth": '"0"', "redis_use_tls": '"0"'},
        "install": {"script": f'"{tools}/install.sh"'},
        "tools": {"replicatedctl": f'"{tools}/replicatedctl"', "replicated": f'"{tools}/replicated"'},
        "readiness": {"poll_interval": '"200ms"'},
        "termination": {"poll_interval": '"500ms"'},
        "paths": {"replicated_conf": f'"{home}/etc/replicated.conf"', "settings": f'"{home}/etc/ptfe-settings.json"',
                  "license": f'"{home}/etc/ptfe-license.rli"', "state_dir": f'"{home}/state"',
                  "file_owner": '"nobody"', "tls_cert": f'"{home}/etc/cert.pem"', "tls_key": f'"{home}/etc/key.pem"'},
        "observe": {"listen": '"127.0.0.1:0"'},
        "cluster": {"enabled": "true", "heartbeat_interval": '"1s"', "node_ttl": '"3s"'},
        "preflight": {"enabled": "false"},
    }
    if region:
        edits["aws"] = {"region": '"us-east-1"'}
    out, section = [], None
    for line in text.splitlines():
        m = re.match(r"\[(\w+)\]", line)
        if m:
            section = m.group(1)
        k = re.match(r"(\w+)\s*=", line)
        if k and section in edits and k.group(1) in edits[section]:
            line = f"{k.group(1)} = {edits[section].pop(k.group(1))}"
        out.append(line)
    # Keys not in the text: added under their section (a new section at the end if need be).
    text = "\n".join(out) + "\n"
    for section, keys in edits.items():
        if not keys:
            continue
        add = "".join(f"{k} = {v}\n" for k, v in keys.items())
        if re.search(rf"^\[{section}\]$", text, re.M):
            text = re.sub(rf"^\[{section}\]\n", f"[{section}]\n{add}", text, count=1, flags=re.M)
        else:
            text += f"\n[{section}]\n{add}"
    return text


class World:
    def __init__(self, capacity=2, install_s=1.5, drain_s=1.5, app_started_s=1.0, install_fails_on=(),
                 log=None):
        self.work = tempfile.mkdtemp(prefix="tfe-node-agent-cluster-")
        self.procs, self.nodes, self.lock = [], [], threading.Lock()
        self.stop = threading.Event()
        self.knobs = {"install_duration_s": install_s, "system_ready_after_s": 0.5,
                      "app_started_after_s": app_started_s, "drain_duration_s": drain_s, "app_stop_duration_s": 0.3}
        self.install_fails_on = set(install_fails_on)
        self.log = log or (lambda n, line: None)
        self.capacity = capacity
        self.errors = []

    # --- peers --------------------------------------------------------------------------------
    def start(self):
        moto_port = free_port()
        self.procs.append(subprocess.Popen([os.path.join(VENV, "bin/moto_server"), "-H", "127.0.0.1", "-p",
                                            str(moto_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.moto = f"http://127.0.0.1:{moto_port}"
        port_file = os.path.join(self.work, "emulator.port")
        self.procs.append(subprocess.Popen([sys.executable, os.path.join(ROOT, "tests/emulator/aws_emulator.py"),
                                            "--port", "0", "--port-file", port_file],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait("emulator", lambda: os.path.exists(port_file))
        self.emu = "http://127.0.0.1:" + open(port_file).read().strip()
        wait("moto", lambda: socket.socket().connect_ex(("127.0.0.1", moto_port)) == 0)
        import boto3
        sm = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=self.moto,
                          aws_access_key_id="demo", aws_secret_access_key="demo")
        self.secrets = {k: os.urandom(16).hex() for k in (
            "enc_password", "install_id", "root_secret", "user_token", "archivist_token", "cookie_hash",
            "internal_api_token", "registry_session_encryption_key", "registry_session_secret_key")}
        self.secrets.update(pg_password=os.urandom(12).hex(), redis_pass=os.urandom(12).hex())
        sm.create_secret(Name="tfe/shared", SecretString=json.dumps(self.secrets))
        sm.create_secret(Name="tfe/license", SecretBinary=bytes(range(256)) * 8)
        self.redis_port = free_port()
        conf = os.path.join(self.work, "redis.conf")
        open(conf, "w").write(f'bind 127.0.0.1\nport {self.redis_port}\nsave ""\nappendonly no\n'
                              f'dir {self.work}\nlogfile {self.work}/redis.log\n')
        self.procs.append(subprocess.Popen(["redis-server", conf], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL))
        wait("redis-server", lambda: subprocess.run(["redis-cli", "-p", str(self.redis_port), "PING"],
                                                    capture_output=True, text=True).stdout.strip() == "PONG")
        # The operator's config: version 1's, with a region.
        home = os.path.join(self.work, "operator")
        os.makedirs(home)
        self.operator_config = os.path.join(home, "agent.toml")
        open(self.operator_config, "w").write(localize(agent_toml_of(user_data(504)), home, self.redis_port, True))
        self.template = http("POST", self.emu + "/_emulator/launch-templates", {
            "name": TEMPLATE, "versions": [{"user_data": user_data(RELEASES[v])} for v in (1, 2)]})
        self.launcher = threading.Thread(target=self._launcher, daemon=True)
        self.launcher.start()
        http("POST", self.emu + "/_emulator/groups", {
            "name": GROUP, "min_size": 0, "max_size": 4, "desired_capacity": self.capacity,
            "launch_template": {"name": TEMPLATE, "version": "1"}, "hooks": [
                {"name": "tfe-launch", "transition": "autoscaling:EC2_INSTANCE_LAUNCHING",
                 "heartbeat_timeout": 60, "default_result": "ABANDON"},
                {"name": "tfe-terminate", "transition": "autoscaling:EC2_INSTANCE_TERMINATING",
                 "heartbeat_timeout": 60, "default_result": "CONTINUE"}]})
        return self

    def env(self, config=None, instance=None, fake_state=None):
        env = {"PATH": os.environ["PATH"], "AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo",
               "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
               "AWS_ENDPOINT_URL_SECRETS_MANAGER": self.moto, "AWS_ENDPOINT_URL_AUTO_SCALING": self.emu,
               "TFE_NODE_AGENT_CONFIG": config or self.operator_config}
        if instance:
            env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = f"http://127.0.0.1:{instance['imds_port']}"
            env["FAKE_TFE_STATE"] = fake_state
        else:
            env.update(AWS_ENDPOINT_URL_EC2=self.emu, AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
        return env

    # --- the launcher -------------------------------------------------------------------------
    def _launcher(self):
        while not self.stop.wait(0.2):
            try:
                instances = http("GET", self.emu + "/_emulator/instances")["instances"]
            except Exception:
                continue
            with self.lock:
                for inst in instances:
                    node = next((n for n in self.nodes if n["id"] == inst["id"]), None)
                    if node is None and inst.get("template_version") and inst["lifecycle_state"] != "Terminated":
                        if len(self.nodes) >= MAX_NODES:
                            continue
                        try:
                            self.nodes.append(self._boot(inst))
                        except Exception as e:  # noqa: BLE001 - shown by the caller
                            self.errors.append(f"{inst['id']}: {e}")
                    elif node and inst["lifecycle_state"] == "Terminated" and not node.get("stopped"):
                        node.setdefault("terminated", time.monotonic())
                        left = any("left the cluster" in l for l in node["lines"])
                        if left or time.monotonic() - node["terminated"] > 5:
                            node["stopped"] = True
                            if node["agent"].poll() is None:
                                node["agent"].send_signal(signal.SIGTERM)

    def _boot(self, inst):
        n = len(self.nodes) + 1
        version = inst["template_version"]
        home = os.path.join(self.work, f"node{n}-{inst['id']}")
        fake_state = os.path.join(home, "fake-tfe")
        os.makedirs(fake_state)
        knobs = dict(self.knobs, replicated_conf=os.path.join(home, "etc/replicated.conf"), replicated_user="nobody")
        if version in self.install_fails_on:
            knobs["install_exit_code"] = 1
        json.dump(knobs, open(os.path.join(fake_state, "behaviour.json"), "w"))
        config = os.path.join(home, "agent.toml")
        open(config, "w").write(localize(agent_toml_of(inst["user_data"]), home, self.redis_port))
        agent = subprocess.Popen([AGENT, "run"], env=self.env(config, inst, fake_state), stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.procs.append(agent)
        node = {"n": n, "id": inst["id"], "version": version, "agent": agent, "lines": [], "fake_state": fake_state}

        def pump():
            for line in agent.stderr:
                node["lines"].append(line)
                self.log(node, line)
        threading.Thread(target=pump, daemon=True).start()
        return node

    # --- reading back -------------------------------------------------------------------------
    def instances(self):
        return http("GET", self.emu + "/_emulator/instances")["instances"]

    def events(self, kind=None):
        return http("GET", self.emu + "/_emulator/events" + (f"?kind={kind}" if kind else ""))["events"]

    def wait_in_service(self, version, count, timeout=120):
        def ok():
            live = [i for i in self.instances() if i["lifecycle_state"] != "Terminated"]
            good = [i for i in live if i["lifecycle_state"] == "InService" and i["template_version"] == version]
            return good if len(good) == count == len(live) else None
        return wait(f"{count} version-{version} instances InService", ok, timeout, 0.2)

    def agent_cmd(self, *args, timeout=300, **kw):
        return subprocess.run([AGENT, *args], env=self.env(), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout, **kw)

    def cluster_view(self, live, release, timeout=30):
        def ok():
            out = self.agent_cmd("cluster", "--json", timeout=60)
            if out.returncode != 0:
                return None
            view = json.loads(out.stdout)
            return view if view.get("consistent") and view.get("live") == live and \
                view.get("release_sequence") == release else None
        return wait(f"a consistent view of {live} live nodes at release {release}", ok, timeout, 0.3)

    def leaked(self, texts):
        """Secret values found in `texts`, the fake tools' logs, the agents' output or Redis."""
        found = []
        logs = [open(os.path.join(n["fake_state"], "calls.jsonl")).read()
                for n in self.nodes if os.path.exists(os.path.join(n["fake_state"], "calls.jsonl"))]
        keys = subprocess.run(["redis-cli", "-p", str(self.redis_port), "--scan"], capture_output=True,
                              text=True).stdout.split()
        dump = "".join(subprocess.run(["redis-cli", "-p", str(self.redis_port), "GET", k], capture_output=True,
                                      text=True, errors="replace").stdout for k in keys)
        everything = "".join(texts) + "".join(logs) + "".join("".join(n["lines"]) for n in self.nodes) + dump
        for k, v in self.secrets.items():
            if v in everything:
                found.append(k)
        return found

    def close(self):
        self.stop.set()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if os.environ.get("KEEP_DEMO_DIR"):
            print(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)
