#!/usr/bin/env python3
"""Benchmark of the termination path with the real `target/release/tfe-node-agent run`.

Against moto (Secrets Manager), the Auto Scaling + IMDSv2 emulator and the fake TFE tools, one
fresh instance, state dir and fake TFE state per run, it measures:
  1. ASG termination notice -> node-drain started (IMDS target-lifecycle-state polled every
     [termination].poll_interval: expect ~poll/2 on average, at most ~poll, plus process starts);
  2. SIGTERM during a system shutdown (fake `systemctl is-system-running` says "stopping")
     -> node-drain started;
  3. idle cost of `run` once in service: RSS, CPU, IMDS requests per second;
  4. `render --dry-run`, wall and CPU time per run;
  5. the binary's size as built and stripped of every symbol (`strip` on a copy).
T0 is the wall clock just before the notice; T1 is the fake node-drain's own "start" record in
$FAKE_TFE_STATE/calls.jsonl (wall clock, written once its Python is up), and also the agent's
"node-drain started" log line (ms timestamps). Run it with tests/bench/termination.sh.
  6. (issue 11) idle `run` with the HTTP API listening (`idle-http`; `idle` has it off), and the
     latency of /livez, /status and /metrics over BENCH_HTTP_REQUESTS sequential requests, kept-alive
     and one connection per request, in service (`http-idle`) and while the launch hook is
     heartbeated (`http-heartbeat`).
Env: BENCH_RUNS (10), BENCH_IDLE_SECONDS (60), BENCH_HTTP_REQUESTS (2000), KEEP_BENCH_DIR=1 keeps
the temp dir, BENCH_ONLY (comma-separated parts of asg-1s,asg-200ms,sigterm,idle,idle-http,
http-idle,http-heartbeat,render; default all)."""

import datetime, json, math, os, platform, random, re, resource, shutil, signal, socket, statistics, subprocess, sys
import tempfile, threading, time, urllib.request
import http.client as http_client

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.environ.get("TFE_TEST_VENV", os.path.join(ROOT, ".venv"))
AGENT = os.environ.get("TFE_NODE_AGENT_BIN", os.path.join(ROOT, "target/release/tfe-node-agent"))
RUNS = int(os.environ.get("BENCH_RUNS", "10"))
IDLE_S = float(os.environ.get("BENCH_IDLE_SECONDS", "60"))
HTTP_REQUESTS = int(os.environ.get("BENCH_HTTP_REQUESTS", "2000"))
ONLY = [p for p in os.environ.get("BENCH_ONLY", "").split(",") if p]  # see the docstring
KNOBS = {"replicated_user": "nobody", "drain_duration_s": 0.2, "install_duration_s": 0.2,
         "system_ready_after_s": 0.3, "app_started_after_s": 0.8, "app_stop_duration_s": 0.1}
BOOT_TIMEOUT, DRAIN_TIMEOUT = 90, 60
rng = random.Random(1)  # the notice's phase against the poll loop: uniform, but reproducible


def say(msg):
    print(f"[bench] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what, check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (v := check()):
            return v
        time.sleep(0.02)
    raise RuntimeError(f"{what}: not within {timeout}s")


def http(method, url, body=None):
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


def set_keys(text, section, keys):
    """Sets `keys` (TOML values) in `[section]` of the config text, adding the section if absent."""
    new = "".join(f"{k} = {v}\n" for k, v in keys.items())
    m = re.search(rf"^\[{section}\][^\n]*\n", text, re.M)
    if not m:
        return text.rstrip("\n") + f"\n\n[{section}]\n{new}"
    nxt = re.search(r"^\[", text[m.end():], re.M)
    end = m.end() + nxt.start() if nxt else len(text)
    body = "".join(l for l in text[m.end():end].splitlines(True) if l.split("=")[0].strip() not in keys)
    return text[:m.end()] + new + body + text[end:]


class Node:
    """One fresh instance in the emulator, its own dirs and config, and the agent `run` on it."""

    def __init__(self, bench, name, termination=None, systemctl=None, run=True, listen="127.0.0.1:0",
                 group="tfe-asg", knobs=None, readiness_poll="200ms"):
        self.dir = os.path.join(bench.work, name)
        etc, self.fake = os.path.join(self.dir, "etc"), os.path.join(self.dir, "fake-tfe")
        os.makedirs(self.fake)
        json.dump(dict(KNOBS, **(knobs or {}), replicated_conf=os.path.join(etc, "replicated.conf")),
                  open(os.path.join(self.fake, "behaviour.json"), "w"))
        bench.n += 1
        self.inst = http("POST", bench.emu + "/_emulator/instances",
                         {"group": group, "private_ip": f"10.0.{bench.n // 250}.{bench.n % 250 + 5}"})
        q, tools = json.dumps, os.path.join(ROOT, "tests/fake-tfe")
        text = open(os.path.join(ROOT, "packaging/agent.toml.example")).read()
        text = set_keys(text, "install", {"script": q(f"{tools}/install.sh")})
        text = set_keys(text, "tools", {"replicatedctl": q(f"{tools}/replicatedctl"),
                                        "replicated": q(f"{tools}/replicated"),
                                        **({"systemctl": q(systemctl)} if systemctl else {})})
        text = set_keys(text, "readiness", {"poll_interval": q(readiness_poll)})
        # Port 0 (the agent logs the port it took), so no other agent on the machine is in the way.
        text = set_keys(text, "observe", {"listen": q(listen)})
        text = set_keys(text, "paths", {
            "replicated_conf": q(f"{etc}/replicated.conf"), "settings": q(f"{etc}/ptfe-settings.json"),
            "license": q(f"{etc}/ptfe-license.rli"), "tls_cert": q(f"{etc}/cert.pem"),
            "tls_key": q(f"{etc}/key.pem"), "state_dir": q(os.path.join(self.dir, "state")),
            "file_owner": q("nobody")})
        # The example names a Redis; the benchmark measures the agent without a cluster store, as
        # its earlier figures did.
        text = set_keys(text, "cluster", {"enabled": "false"})
        # Likewise without preflight (its own benchmark is tests/bench/preflight.py): the example's
        # PostgreSQL, Redis and bucket do not exist here.
        text = set_keys(text, "preflight", {"enabled": "false"})
        if termination:
            text = set_keys(text, "termination", {k: q(v) for k, v in termination.items()})
        config = os.path.join(self.dir, "agent.toml")
        open(config, "w").write(text)
        env = {"PATH": os.environ["PATH"], "TFE_NODE_AGENT_CONFIG": config,
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_CONFIG_FILE": os.path.join(self.dir, "no-aws-config"),
               "AWS_SHARED_CREDENTIALS_FILE": os.path.join(self.dir, "no-aws-credentials"),
               "AWS_ENDPOINT_URL_SECRETS_MANAGER": bench.moto, "AWS_ENDPOINT_URL_AUTO_SCALING": bench.emu,
               "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{self.inst['imds_port']}",
               "FAKE_TFE_STATE": self.fake}
        self.env = env
        if not run:
            return
        self.lines, self.log = [], open(os.path.join(self.dir, "agent.log"), "w")
        self.proc = subprocess.Popen([AGENT, "run"], env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.PIPE, text=True)
        bench.procs.append(self.proc)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            self.log.write(line)
            self.log.flush()

    def line(self, needle, timeout):
        """The wall-clock time the agent logged the first line holding `needle` (bounded wait)."""
        try:
            hit = wait(f"agent line {needle!r}", lambda: next((l for l in self.lines if needle in l), None), timeout)
        except RuntimeError:
            sys.stderr.write("".join(self.lines[-30:]))
            raise
        return datetime.datetime.fromisoformat(hit.split()[0]).timestamp()

    def api(self):
        """(host, port) of the agent's HTTP API, from its "HTTP API listening on" line."""
        hit = wait("agent line 'HTTP API listening on http://'",
                   lambda: next((l for l in self.lines if "HTTP API listening on http://" in l), None), 10)
        host, port = re.search(r"listening on http://([^\s/]+):(\d+)", hit).groups()
        return host, int(port)

    def drain_started(self):
        """The fake node-drain's own start record (wall clock)."""
        def find():
            if os.path.exists(p := os.path.join(self.fake, "calls.jsonl")):
                for c in map(json.loads, open(p)):
                    if c["event"] == "start" and "node-drain" in c["argv"]:
                        return c["t"]
        return wait("node-drain start in calls.jsonl", find, 10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def summary(ms):
    return {"runs_ms": [round(x, 1) for x in ms], "median_ms": round(statistics.median(ms), 1),
            "mean_ms": round(statistics.mean(ms), 1), "min_ms": round(min(ms), 1), "max_ms": round(max(ms), 1)}


def series(bench, name, notify, termination=None, systemctl=None, phase=1.0, first=None):
    """RUNS fresh nodes; `notify(node)` gives the notice; latency to the fake drain's start, to the
    agent's "node-drain started" line and (when given) to its first line holding `first`."""
    drain_ms, agent_ms, first_ms = [], [], []
    for i in range(RUNS):
        node = Node(bench, f"{name}-{i}", termination, systemctl)
        try:
            node.line("is in service", BOOT_TIMEOUT)
            time.sleep(0.5 + rng.uniform(0, phase))
            t0 = time.time()
            notify(node)
            drain_ms.append((node.drain_started() - t0) * 1000)
            agent_ms.append((node.line("node-drain started", DRAIN_TIMEOUT) - t0) * 1000)
            if first:
                first_ms.append((node.line(first, DRAIN_TIMEOUT) - t0) * 1000)
            if systemctl:
                node.proc.wait(timeout=DRAIN_TIMEOUT)
            else:
                node.line("terminate hook tfe-terminate released with CONTINUE", DRAIN_TIMEOUT)
        finally:
            node.stop()
        say(f"{name} run {i + 1}/{RUNS}: node-drain started after {drain_ms[-1]:.0f} ms "
            f"(agent logged it at {agent_ms[-1]:.0f} ms)")
    out = dict(summary(drain_ms), agent_logged=summary(agent_ms))
    if first:
        out["agent_first_line"] = dict(summary(first_ms), line=first)
    return out


def proc_status(pid):
    st = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status"))
    ticks = sum(int(x) for x in open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[11:13])
    return {"rss_kib": int(st["VmRSS"].split()[0]), "hwm_kib": int(st["VmHWM"].split()[0]),
            "anon_kib": int(st["RssAnon"].split()[0]), "file_kib": int(st["RssFile"].split()[0]),
            "threads": int(st["Threads"]), "cpu_s": ticks / os.sysconf("SC_CLK_TCK"), "t": time.monotonic(),
            "task_ns": task_ns(pid)}


def task_ns(pid):
    """Each live thread's CPU time in ns (schedstat: exact, where /proc/PID/stat counts ticks)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[tid] = int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        except (OSError, IndexError, ValueError):
            pass
    return out


def idle(bench, name="idle", listen="off"):
    """`run` once in service and left alone for IDLE_S; `listen` is its [observe].listen (no
    request is made to it)."""
    node = Node(bench, name, listen=listen)
    url = f"{bench.emu}/_emulator/instances/{node.inst['id']}"
    try:
        node.line("is in service", BOOT_TIMEOUT)
        time.sleep(1)
        a, imds_a = proc_status(node.proc.pid), http("GET", url)["imds_requests"]
        max_rss = a["rss_kib"]
        while time.monotonic() < a["t"] + IDLE_S:
            time.sleep(min(1.0, max(0.0, a["t"] + IDLE_S - time.monotonic())))
            max_rss = max(max_rss, proc_status(node.proc.pid)["rss_kib"])
        b, imds_b = proc_status(node.proc.pid), http("GET", url)["imds_requests"]
    finally:
        node.stop()
    wall, cpu = b["t"] - a["t"], b["cpu_s"] - a["cpu_s"]
    # Exact, unless a thread ended within the window (its time is then only in the ticks).
    exact_s = sum(ns - a["task_ns"].get(tid, 0) for tid, ns in b["task_ns"].items()) / 1e9
    ended = len(set(a["task_ns"]) - set(b["task_ns"]))
    per_path = {p: n - imds_a.get(p, 0) for p, n in imds_b.items() if n - imds_a.get(p, 0)}
    return {"listen": listen, "window_s": round(wall, 2), "rss_end_kib": b["rss_kib"], "rss_max_sampled_kib": max(max_rss, b["rss_kib"]),
            "rss_anon_end_kib": b["anon_kib"], "rss_file_end_kib": b["file_kib"],
            "vm_hwm_kib": b["hwm_kib"], "threads": b["threads"], "cpu_s": round(cpu, 3),
            "cpu_pct_of_one_core": round(100 * cpu / wall, 3),
            "cpu_s_schedstat": round(exact_s, 4), "cpu_pct_schedstat": round(100 * exact_s / wall, 4),
            "threads_ended_in_window": ended, "imds_requests": sum(per_path.values()),
            "imds_requests_per_s": round(sum(per_path.values()) / wall, 3), "imds_by_path": per_path}


HTTP_PATHS = [("/livez", {}), ("/status", {}), ("/metrics", {}),
              ("/metrics", {"Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"})]
HTTP_TIME_LIMIT = 120  # s per batch of HTTP_REQUESTS; a batch past it stops early and says so


def quantile(xs, q):
    """Nearest-rank quantile of a non-empty list."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(len(xs) * q) - 1))]


def requests(pid, host, port, path, headers, keepalive):
    """HTTP_REQUESTS sequential GETs with http.client: on one kept-alive connection (connected before
    the clock starts; a connection the server ends, e.g. at its 30 s lifetime, is reopened and that
    request not counted) or one connection per request (connect, request, read, close: all timed).
    Client-side round trips in µs, and the agent's own CPU (schedstat) over the batch."""
    us, reconnects, size, status = [], 0, 0, None
    conn = http_client.HTTPConnection(host, port, timeout=10)
    conn.connect()
    cpu0, start = sum(task_ns(pid).values()), time.monotonic()
    for _ in range(HTTP_REQUESTS):
        if time.monotonic() - start > HTTP_TIME_LIMIT:
            break
        t0 = time.perf_counter_ns()
        try:
            if not keepalive:
                conn = http_client.HTTPConnection(host, port, timeout=10)
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            body = r.read()
        except (http_client.RemoteDisconnected, ConnectionError, http_client.BadStatusLine):
            if not keepalive:
                raise
            reconnects += 1
            conn.close()
            conn = http_client.HTTPConnection(host, port, timeout=10)
            conn.connect()
            continue
        t1 = time.perf_counter_ns()
        if r.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {r.status}")
        if not keepalive:
            conn.close()
        us.append((t1 - t0) / 1000)
        size, status = len(body), r.status
    wall = time.monotonic() - start
    cpu = (sum(task_ns(pid).values()) - cpu0) / 1e3
    conn.close()
    return {"requests": len(us), "reconnects": reconnects, "body_bytes": size, "wall_s": round(wall, 2),
            "p50_us": round(quantile(us, 0.5)), "p99_us": round(quantile(us, 0.99)),
            "max_us": round(max(us)), "mean_us": round(statistics.mean(us)),
            "agent_cpu_us_per_request": round(cpu / max(1, len(us)), 1)}


def http_latency(bench, name, heartbeat=False):
    """/livez (the floor: client, loopback, hyper), /status and /metrics (0.0.4 and OpenMetrics),
    each HTTP_REQUESTS sequential requests kept-alive and then one connection per request, against
    `run` in service and idle, or (heartbeat) still booting with its launch hook held: group
    tfe-asg-hb's HeartbeatTimeout of 3 s makes a heartbeat every second, and the fake app never
    starts, so the readiness loop keeps polling (every 5 s) and the hook stays held."""
    node = Node(bench, name, group="tfe-asg-hb" if heartbeat else "tfe-asg",
                knobs={"app_started_after_s": 3600.0} if heartbeat else None,
                readiness_poll="5s" if heartbeat else "200ms")
    try:
        host, port = node.api()
        status = lambda: json.loads(urllib.request.urlopen(f"http://{host}:{port}/status", timeout=10).read())
        if heartbeat:
            wait("two launch hook heartbeats", lambda: status()["launch_hook"]["heartbeats_sent"] >= 2, BOOT_TIMEOUT)
        else:
            node.line("is in service", BOOT_TIMEOUT)
        pid = node.proc.pid
        time.sleep(1)
        events0 = http("GET", f"{bench.emu}/_emulator/events?kind=api")["next"]
        beats0, rss0 = status()["launch_hook"]["heartbeats_sent"], proc_status(pid)["rss_kib"]
        t0, batches = time.monotonic(), []
        for path, headers in HTTP_PATHS:
            for keepalive in (True, False):
                b = requests(pid, host, port, path, headers, keepalive)
                b.update(path=path, format="openmetrics" if "openmetrics" in headers.get("Accept", "") else None,
                         connection="kept-alive" if keepalive else "per-request")
                batches.append(b)
                say(f"{name} {path}{' (OpenMetrics)' if b['format'] else ''} {b['connection']}: "
                    f"p50 {b['p50_us']} µs, p99 {b['p99_us']} µs over {b['requests']} requests")
        window = time.monotonic() - t0
        end = proc_status(pid)
        out = {"batches": batches, "window_s": round(window, 1), "rss_before_kib": rss0,
               "rss_after_kib": end["rss_kib"], "vm_hwm_kib": end["hwm_kib"]}
        if heartbeat:
            doc = status()
            events = http("GET", f"{bench.emu}/_emulator/events?kind=api&since={events0}")["events"]
            t = [e["t"] for e in events if e.get("action") == "RecordLifecycleActionHeartbeat"]
            gaps = [b - a for a, b in zip(t, t[1:])]
            out.update(heartbeats_sent=doc["launch_hook"]["heartbeats_sent"] - beats0,
                       heartbeats_at_emulator=len(t), heartbeat_gap_max_s=round(max(gaps), 3) if gaps else None,
                       heartbeat_gap_median_s=round(statistics.median(gaps), 3) if gaps else None,
                       launch_hook=doc.get("launch_hook"), phase=doc.get("phase"))
    finally:
        node.stop()
    return out


def render(bench):
    """`render --dry-run` (agent.toml, the secrets from moto, the identity from IMDS, the files
    rendered to stdout) RUNS times: wall time and the process's own CPU time, per run."""
    node, wall, cpu = Node(bench, "render", run=False), [], []
    for _ in range(RUNS):
        before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
        p = subprocess.run([AGENT, "render", "--dry-run"], env=node.env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall.append((time.monotonic() - t0) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000)
        if p.returncode != 0:
            raise RuntimeError(f"render --dry-run exited {p.returncode}:\n{p.stderr}")
    return dict(summary(wall), cpu=summary(cpu))


def binary():
    """The agent's size as built and with every symbol stripped (on a copy; the build is not touched)."""
    path = os.path.relpath(AGENT, ROOT) if AGENT.startswith(ROOT + os.sep) else AGENT
    out = {"path": path, "bytes": os.path.getsize(AGENT)}
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "agent")
        if shutil.which("strip") and subprocess.run(["strip", "-o", copy, AGENT]).returncode == 0:
            out["stripped_bytes"] = os.path.getsize(copy)
    return out


def machine():
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": model, "kernel": platform.release(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


class Bench:
    def __init__(self):
        self.work, self.procs, self.n = tempfile.mkdtemp(prefix="tfe-node-agent-bench-"), [], 0

    def start(self):
        """moto, the emulator, the secrets and a group with a launch and a terminate hook."""
        moto_port, port_file = free_port(), os.path.join(self.work, "emulator.port")
        for argv in ([os.path.join(VENV, "bin/moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
                     [sys.executable, os.path.join(ROOT, "tests/emulator/aws_emulator.py"), "--port-file", port_file]):
            self.procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait("emulator", lambda: os.path.exists(port_file), 20)
        wait("moto", lambda: socket.socket().connect_ex(("127.0.0.1", moto_port)) == 0, 30)
        self.moto, self.emu = f"http://127.0.0.1:{moto_port}", "http://127.0.0.1:" + open(port_file).read().strip()
        import boto3
        sm = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=self.moto,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        shared = {k: os.urandom(16).hex() for k in "enc_password install_id root_secret user_token archivist_token "
                  "cookie_hash internal_api_token registry_session_encryption_key registry_session_secret_key".split()}
        shared.update(pg_password="pg-bench", redis_pass="redis-bench")
        sm.create_secret(Name="tfe/shared", SecretString=json.dumps(shared))
        sm.create_secret(Name="tfe/license", SecretBinary=b"bench license bytes")
        http("POST", self.emu + "/_emulator/groups", {"name": "tfe-asg", "hooks": [
            {"name": "tfe-launch", "transition": "autoscaling:EC2_INSTANCE_LAUNCHING", "heartbeat_timeout": 60,
             "default_result": "ABANDON"},
            {"name": "tfe-terminate", "transition": "autoscaling:EC2_INSTANCE_TERMINATING", "heartbeat_timeout": 60,
             "default_result": "CONTINUE"}]})
        # A launch hook heartbeated every second (HeartbeatTimeout / 3), for http-heartbeat.
        http("POST", self.emu + "/_emulator/groups", {"name": "tfe-asg-hb", "hooks": [
            {"name": "tfe-launch", "transition": "autoscaling:EC2_INSTANCE_LAUNCHING", "heartbeat_timeout": 3,
             "default_result": "ABANDON"}]})

    def close(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if os.environ.get("KEEP_BENCH_DIR"):
            say(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def main():
    def stop(signum, _):  # so `finally` cleans up, on Ctrl-C too
        raise SystemExit(f"bench: stopped by signal {signum}")
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, stop)
    started, bench = time.monotonic(), Bench()
    try:
        bench.start()
        terminate = lambda n: http("POST", f"{bench.emu}/_emulator/instances/{n.inst['id']}/terminate", {})
        systemctl = os.path.join(bench.work, "systemctl")
        open(systemctl, "w").write("#!/bin/sh\necho stopping\n")
        os.chmod(systemctl, 0o755)
        res = {"runs": RUNS, "knobs": KNOBS}
        parts = {"asg-1s": ("asg_notice_poll_1s", lambda: series(bench, "asg-1s", terminate)),
                 "asg-200ms": ("asg_notice_poll_200ms", lambda: series(
                     bench, "asg-200ms", terminate, {"poll_interval": "200ms"}, phase=0.2)),
                 "sigterm": ("sigterm_shutdown", lambda: series(
                     bench, "sigterm", lambda n: n.proc.send_signal(signal.SIGTERM), systemctl=systemctl,
                     first="received signal")),
                 "idle": ("idle", lambda: idle(bench)),
                 "idle-http": ("idle_http", lambda: idle(bench, "idle-http", "127.0.0.1:0")),
                 "http-idle": ("http_idle", lambda: http_latency(bench, "http-idle")),
                 "http-heartbeat": ("http_heartbeat", lambda: http_latency(bench, "http-heartbeat", True)),
                 "render": ("render", lambda: render(bench))}
        for part in ONLY or parts:
            key, run = parts[part]
            res[key] = run()
    finally:
        bench.close()
    res["binary"], res["machine"], res["duration_s"] = binary(), machine(), round(time.monotonic() - started, 1)
    os.makedirs(os.path.join(ROOT, "target/bench"), exist_ok=True)
    json.dump(res, open(os.path.join(ROOT, "target/bench/termination.json"), "w"), indent=2)
    print(f"\n== tfe-node-agent termination benchmark ({RUNS} runs each; ms from notice to the fake node-drain's start) ==")
    for key, what in [("asg_notice_poll_1s", "ASG notice, poll_interval 1s (default)"),
                      ("asg_notice_poll_200ms", "ASG notice, poll_interval 200ms"),
                      ("sigterm_shutdown", "SIGTERM, system stopping")]:
        if key not in res:
            continue
        s = res[key]
        print(f"  {what:<40} median {s['median_ms']:7.1f}  max {s['max_ms']:7.1f}  min {s['min_ms']:7.1f}"
              f"   (agent log line: median {s['agent_logged']['median_ms']:.0f}, max {s['agent_logged']['max_ms']:.0f})")
        if (f := s.get("agent_first_line")):
            print(f"  {'':<40} agent logged {f['line']!r}: median {f['median_ms']:.0f}, max {f['max_ms']:.0f} ms")
    for i in filter(None, (res.get("idle"), res.get("idle_http"))):
        tick = 100 / os.sysconf("SC_CLK_TCK") / i["window_s"]
        print(f"  idle `run` ([observe].listen {i['listen']!r}) over {i['window_s']:.0f}s: RSS {i['rss_end_kib']} KiB ({i['rss_end_kib'] / 1024:.1f} MiB) "
              f"at end ({i['rss_anon_end_kib']} KiB anonymous, {i['rss_file_end_kib']} KiB file pages), "
              f"max sampled {i['rss_max_sampled_kib']} KiB, VmHWM {i['vm_hwm_kib']} KiB, {i['threads']} threads")
        ended = f", {i['threads_ended_in_window']} threads ended in the window: not counted" \
            if i["threads_ended_in_window"] else ""
        print(f"    CPU {i['cpu_s_schedstat'] * 1000:.1f} ms = {i['cpu_pct_schedstat']:.4f} % of one core (schedstat{ended}); "
              f"{i['cpu_s']:.2f} s = {i['cpu_pct_of_one_core']:.3f} % in clock ticks ({tick:.3f} % each)")
        print(f"    IMDS {i['imds_requests']} requests = {i['imds_requests_per_s']:.2f}/s {i['imds_by_path']}")
    for key, what in [("http_idle", "in service, idle"), ("http_heartbeat", "launch hook held, heartbeat every 1 s")]:
        if not (h := res.get(key)):
            continue
        print(f"  HTTP API, {what} ({HTTP_REQUESTS} sequential requests each, µs round trip at the client):")
        for b in h["batches"]:
            what_path = b["path"] + (" (OpenMetrics)" if b["format"] else "")
            print(f"    {what_path:<24} {b['connection']:<11} p50 {b['p50_us']:6d}  p99 {b['p99_us']:6d}  "
                  f"max {b['max_us']:6d}  agent CPU {b['agent_cpu_us_per_request']:6.1f} µs/request  "
                  f"({b['body_bytes']} bytes{', %d reconnects' % b['reconnects'] if b['reconnects'] else ''})")
        print(f"    RSS {h['rss_before_kib']} KiB before, {h['rss_after_kib']} KiB after the {h['window_s']:.0f}s of "
              f"requests (VmHWM {h['vm_hwm_kib']} KiB)")
        if "heartbeats_at_emulator" in h:
            print(f"    heartbeats during it: {h['heartbeats_sent']} sent (its /status), {h['heartbeats_at_emulator']} "
                  f"at the emulator, gap median "
                  f"{h['heartbeat_gap_median_s']} s, max {h['heartbeat_gap_max_s']} s; hook at the end: "
                  f"{(h['launch_hook'] or {}).get('state')!r}, phase {h['phase']!r}")
    if (r := res.get("render")):
        print(f"  render --dry-run: median {r['median_ms']:.1f} ms wall, {r['cpu']['median_ms']:.1f} ms CPU "
              f"(max {r['max_ms']:.1f} / {r['cpu']['max_ms']:.1f})")
    b = res["binary"]
    stripped = f"{b['stripped_bytes'] / 1e6:.2f} MB" if "stripped_bytes" in b else "? (no `strip` to hand)"
    print(f"  binary {b['path']}: {b['bytes'] / 1e6:.2f} MB as built, {stripped} stripped of every symbol")
    m = res["machine"]
    print(f"  machine: {m['nproc']} CPUs, {m['cpu_model']}, kernel {m['kernel']}, {m['date']}; "
          f"took {res['duration_s']:.0f}s; JSON: target/bench/termination.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
