#!/usr/bin/env python3
"""The cluster demo (issue 15), locally: two TFE nodes of release 504 boot against one Redis, the
cluster view, then `tfe-node-agent repave` to release 505 (drain both, 0 → 1 new node, validate,
→ 2), and the downtime report.

The world (tests/cluster_world.py): moto (Secrets Manager), the Auto Scaling + IMDSv2 emulator
(a capacity-managed group whose launch template versions carry the agent config as cloud-init user
data, version 1 release 504, version 2 release 505) and a redis-server on 127.0.0.1; a launcher
that starts a real `tfe-node-agent run` with the fake TFE tools for every instance the emulator
launches. The orchestrator runs as an operator would, with the endpoints in the standard AWS
variables. Run it through tests/demo-cluster.sh (which installs what it needs and builds the binary)."""

import os, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_world import AGENT, GROUP, World  # noqa: E402

T0 = time.monotonic()
SHOWN = ("is in service", "released", "node-drain", "left the cluster", "joined", "created cluster",
         "install.sh finished", "install.sh failed", "install.sh exited", "ERROR")


def say(msg):
    print(f"[demo {time.monotonic() - T0:6.2f}s] {msg}", flush=True)


def rule():
    print("-" * 100, flush=True)


def main():
    def log(node, line):
        if any(s in line for s in SHOWN):
            print(f"  node{node['n']} (v{node['version']}) {line}", end="", flush=True)

    world = World(capacity=2, log=log)
    try:
        world.start()
        say(f"moto on {world.moto}, Auto Scaling + IMDSv2 emulator on {world.emu}, "
            f"redis-server on 127.0.0.1:{world.redis_port}")
        say(f"launch template {world.template['id']}: version 1 = release 504, version 2 = release 505 "
            f"(cloud-init user data); group {GROUP}: desired 2 on version 1, hooks tfe-launch and tfe-terminate")
        rule()
        old = world.wait_in_service(1, 2, timeout=120)
        world.cluster_view(2, 504)
        view = world.agent_cmd("cluster", timeout=60)
        rule()
        say(f"two release-504 nodes in service: {' '.join(i['id'] for i in old)}; tfe-node-agent cluster:")
        print("\n".join("    " + l for l in view.stdout.splitlines()), flush=True)
        rule()
        cmd = ["repave", "--group", GROUP, "--launch-template-version", "2", "--yes", "--poll-interval", "1s"]
        say("running: tfe-node-agent " + " ".join(cmd))
        rule()
        orch = subprocess.Popen([AGENT, *cmd], env=world.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        world.procs.append(orch)
        out = []
        for line in orch.stdout:
            out.append(line)
            print("  repave | " + line, end="", flush=True)
        rc = orch.wait(timeout=300)
        rule()
        say(f"tfe-node-agent repave exited {rc}")
        if rc != 0:
            say(f"DEMO FAILED: the repave exited {rc}; instances now:")
            for i in world.instances():
                print(f"    {i['id']} version {i['template_version']} {i['lifecycle_state']}")
            return 1
        new = world.wait_in_service(2, 2, timeout=60)
        world.cluster_view(2, 505)
        view2 = world.agent_cmd("cluster", timeout=60)
        say("tfe-node-agent cluster after the repave:")
        print("\n".join("    " + l for l in view2.stdout.splitlines()), flush=True)
        rule()

        # --- the downtime, as the Auto Scaling emulator saw it -----------------------------------
        states = world.events("state")
        launches = [e for e in world.events("launch") if e["template_version"] == 2]
        old_out = max(e["time"] for e in states if e["instance"] in {i["id"] for i in old}
                      and e["from_state"] == "InService")
        first = launches[0]["instance"]
        first_in = min(e["time"] for e in states if e["instance"] == first and e["to_state"] == "InService")
        build = first_in - launches[0]["time"]
        downtime = first_in - old_out
        mixed = False
        serving = {}
        for e in states:
            if e["to_state"] == "InService":
                serving[e["instance"]] = e["template_version"]
            else:
                serving.pop(e["instance"], None)
            mixed |= len(set(serving.values())) > 1
        say("downtime report (from the emulator's event log):")
        print(f"    last release-504 node out of service -> first release-505 node in service: {downtime:6.2f} s")
        print(f"    the first new node's own build (launch -> InService):                     {build:6.2f} s")
        print(f"    downtime - build: {downtime - build:+.2f} s (target: <= +10 s)")
        print(f"    504 and 505 nodes ever in service together: {'YES' if mixed else 'no'}")
        leaked = world.leaked(out + [view.stdout, view2.stdout])
        drains = sum(1 for n in world.nodes if n["version"] == 1
                     for l in open(os.path.join(n["fake_state"], "calls.jsonl"))
                     if '"start"' in l and "node-drain" in l)
        rule()
        if rc == 0 and len(new) == 2 and not mixed and not leaked and drains == 2:
            say(f"DEMO OK: both 504 nodes drained once each, one 505 node built and validated, then the second; "
                f"{len(new)} release-505 nodes in service; downtime {downtime:.1f} s for a {build:.1f} s build")
            return 0
        say(f"DEMO FAILED (exit {rc}, new {len(new)}, mixed {mixed}, leaked {leaked}, drains {drains})")
        for e in world.errors:
            print("  launcher: " + e)
        return 1
    finally:
        world.close()


if __name__ == "__main__":
    sys.exit(main())
