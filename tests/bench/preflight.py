#!/usr/bin/env python3
"""Benchmark of `tfe-node-agent preflight` (the release binary) against local peers.

Peers on loopback: moto (Secrets Manager and an S3 bucket), the Auto Scaling + IMDSv2 emulator (one
instance), a redis-server with a password, and a PostgreSQL 15 cluster initdb'd as `nobody` in a temp
dir. Two series of BENCH_RUNS runs each:
  1. all checks passing: the process's wall time (start to exit: config, secrets, every probe) and
     the report's own `duration` (the checks alone, run at once), with each check's median;
  2. Redis black-holed (a socket that accepts connections and never answers) with
     `[preflight].check_timeout = "2s"`: the report's duration must be the timeout plus a small
     margin, not the sum of the checks.
Run it with tests/bench/preflight.sh. Env: BENCH_RUNS (10), KEEP_BENCH_DIR=1 keeps the temp dir.
Report on stdout and in target/bench/preflight.json."""

import json, os, shutil, socket, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from termination import AGENT, ROOT, RUNS, Bench, Node, free_port, machine, say, set_keys, wait  # noqa: E402

PG_BIN = "/usr/lib/postgresql/15/bin"
CHECK_TIMEOUT_S = 2.0


def start_redis(bench, password):
    port = free_port()
    bench.procs.append(subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--requirepass", password], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait("redis-server", lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 10)
    return port


def start_postgres(bench, user, password, db):
    """A cluster owned by `nobody` (initdb refuses root), scram-sha-256 over TCP on loopback."""
    os.chmod(bench.work, 0o711)  # nobody passes through to its own directory, lists nothing
    data = os.path.join(bench.work, "pg")
    os.makedirs(data)
    pwfile = os.path.join(bench.work, "pg.pw")
    open(pwfile, "w").write(password + "\n")
    for p in (data, pwfile):
        shutil.chown(p, "nobody", "nogroup")
    as_nobody = ["runuser", "-u", "nobody", "--"]
    subprocess.run(as_nobody + [f"{PG_BIN}/initdb", "-D", data, "-U", user, "--pwfile", pwfile,
                                "--auth", "scram-sha-256"], check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    bench.procs.append(subprocess.Popen(
        as_nobody + [f"{PG_BIN}/postgres", "-D", data, "-h", "127.0.0.1", "-p", str(port), "-k", data],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait("postgres", lambda: subprocess.run(as_nobody + [f"{PG_BIN}/pg_isready", "-h", "127.0.0.1", "-p", str(port)],
                                            stdout=subprocess.DEVNULL).returncode == 0, 30)
    subprocess.run(as_nobody + ["psql", "-h", data, "-p", str(port), "-U", user, "-d", "postgres", "-q", "-c",
                                f"CREATE DATABASE {db}"], check=True, env={"PATH": os.environ["PATH"], "PGPASSWORD": password})
    return port


def black_hole(bench):
    """A listening socket that is never accepted from: connections complete (the backlog) and hang."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    bench.holes = getattr(bench, "holes", []) + [s]
    return s.getsockname()[1]


def configure(node, redis_port, pg_port, check_timeout=None):
    q = json.dumps
    text = open(node.env["TFE_NODE_AGENT_CONFIG"]).read()
    text = set_keys(text, "settings", {
        "redis_host": q("127.0.0.1"), "redis_port": q(str(redis_port)), "redis_use_tls": q("0"),
        "redis_use_password_auth": q("1"), "pg_netloc": q(f"127.0.0.1:{pg_port}"),
        "pg_extra_params": q("sslmode=disable"), "s3_bucket": q("tfe-bench"), "s3_region": q("us-east-1")})
    keys = {"enabled": "true"}
    if check_timeout:
        keys["check_timeout"] = q(f"{check_timeout}s")
    text = set_keys(text, "preflight", keys)
    open(node.env["TFE_NODE_AGENT_CONFIG"], "w").write(text)


def run_series(node, name):
    walls, reports = [], []
    for _ in range(RUNS):
        t0 = time.monotonic()
        out = subprocess.run([AGENT, "preflight", "--json"], env=node.env, capture_output=True, text=True, timeout=120)
        walls.append((time.monotonic() - t0) * 1000)
        try:
            reports.append(json.loads(out.stdout))
        except ValueError:
            sys.stderr.write(out.stderr)
            raise
    checks = {}
    for r in reports:
        for c in r["checks"]:
            checks.setdefault(c["id"], []).append(c)
    res = {"wall_ms": {"median": round(statistics.median(walls), 1), "max": round(max(walls), 1),
                       "min": round(min(walls), 1)},
           "checks_ms": {"median": round(statistics.median(r["duration"] * 1000 for r in reports), 1),
                         "max": round(max(r["duration"] * 1000 for r in reports), 1)},
           "per_check_median_ms": {k: round(statistics.median(c["duration"] * 1000 for c in v), 1)
                                   for k, v in checks.items()},
           "verdicts": {k: sorted({c["verdict"] for c in v}) for k, v in checks.items()}}
    say(f"{name}: {res}")
    return res


def main():
    bench = Bench()
    started = time.monotonic()
    try:
        bench.start()
        import boto3
        s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=bench.moto,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket="tfe-bench")
        # Secret values from Bench.start: pg_password "pg-bench", redis_pass "redis-bench"; the
        # license there is a stand-in line of text, so its check is skipped below.
        redis_port = start_redis(bench, "redis-bench")
        pg_port = start_postgres(bench, "tfe", "pg-bench", "tfe")
        node = Node(bench, "preflight", run=False)
        node.env["AWS_ENDPOINT_URL_S3"] = bench.moto
        configure(node, redis_port, pg_port)
        text = open(node.env["TFE_NODE_AGENT_CONFIG"]).read()
        open(node.env["TFE_NODE_AGENT_CONFIG"], "w").write(
            set_keys(text, "preflight", {"enabled": "true", "skip": '["license"]'}))
        res = {"runs": RUNS, "all_pass": run_series(node, "all checks passing")}
        configure(node, black_hole(bench), pg_port, CHECK_TIMEOUT_S)
        res["redis_black_holed"] = run_series(node, f"redis black-holed, check_timeout {CHECK_TIMEOUT_S}s")
        res["check_timeout_ms"] = CHECK_TIMEOUT_S * 1000
    finally:
        bench.close()
    res["machine"], res["duration_s"] = machine(), round(time.monotonic() - started, 1)
    os.makedirs(os.path.join(ROOT, "target/bench"), exist_ok=True)
    json.dump(res, open(os.path.join(ROOT, "target/bench/preflight.json"), "w"), indent=2)
    a, b = res["all_pass"], res["redis_black_holed"]
    print(f"\n== tfe-node-agent preflight benchmark ({RUNS} runs each) ==")
    print(f"  all passing:       checks median {a['checks_ms']['median']} ms (max {a['checks_ms']['max']}), "
          f"process wall median {a['wall_ms']['median']} ms (max {a['wall_ms']['max']})")
    print(f"    per check (median ms): {a['per_check_median_ms']}")
    print(f"  Redis black-holed: checks median {b['checks_ms']['median']} ms (max {b['checks_ms']['max']}) "
          f"against check_timeout {res['check_timeout_ms']:.0f} ms; process wall median {b['wall_ms']['median']} ms")


if __name__ == "__main__":
    main()
