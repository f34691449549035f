"""install.sh (docs/design/tfe-tools.md §1): flags, prompts, addresses, proxy, the paced progress lines,
and the daemon's start."""

import os
import re
import shutil
import subprocess
import sys
import time

from .daemon import daemon_start
from .procs import block_forever
from .state import ToolExit, now, write_json


INSTALL_FLAGS = {
    # canonical: takes a value
    "no-proxy": False, "http-proxy": True, "additional-no-proxy": True, "private-address": True,
    "local-address": True, "public-address": True, "no-public-address": False, "disable-replicated-ui": False,
    "airgap": False, "no-docker": False, "docker-version": True, "install-docker-only": False,
    "no-ce-on-ee": False, "release-sequence": True, "release-patch-sequence": True, "fast-timeouts": False,
    "no-auto": False, "bypass-firewalld-warning": False, "hard-fail-on-firewalld": False,
    "skip-preflights": False, "ignore-preflights": False, "prompt-on-preflight-warnings": False,
    "bypass-storagedriver-warnings": False, "hard-fail-on-loopback": False, "log-level": True,
    "ui-bind-port": True, "daemon-token": True, "no-operator": False, "is-migration": False, "tags": True,
    "registry-advertise-address": True, "skip-pull": False, "selinux-replicated-domain": True,
    "force-replicated-downgrade": False, "registry-address-override": True, "registry-path-prefix": True,
    "artifactory-address": True, "artifactory-access-method": True, "artifactory-docker-repo-key": True,
    "artifactory-quay-repo-key": True, "artifactory-auth": True, "disable-replicated-host-networking": False,
}


class Out:
    def __init__(self, pace):
        self.pace = pace

    def line(self, s=""):
        sys.stdout.write(s + "\n")
        sys.stdout.flush()

    def step(self, s):
        self.line(s)
        if self.pace > 0:
            time.sleep(self.pace)

    def raw(self, s):
        sys.stdout.write(s)
        sys.stdout.flush()


def read_conf_naive(knobs, key):
    """install.sh's readReplicatedConf: grep -o '"Key":\\s*"[^"]*' (string values only)."""
    try:
        with open(knobs["replicated_conf"], encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    m = re.findall(r'"%s":\s*"([^"]*)' % re.escape(key), text)
    return m[0] if m else ""


def install_main(argv, sd, knobs):
    out = Out(0)
    # require64Bit / requireRootUser
    if knobs["require_root"] and os.geteuid() != 0:
        raise ToolExit(1, "Error: This script requires admin privileges. Please re-run it as root.")

    # flag loop: `while [ "$1" != "" ]` stops at the first empty argument
    flags, order = {}, []
    read_timeout, fast = 20.0, False
    additional = []
    for a in argv:
        if a == "":
            break
        name, _sep, value = a.partition("=")
        canon = name.replace("_", "-")
        if canon not in INSTALL_FLAGS:
            raise ToolExit(1, 'Error: unknown parameter "%s"' % name)
        order.append(canon)
        if canon == "local-address":
            canon = "private-address"
        if canon == "additional-no-proxy":
            additional.append(value)
        elif canon == "fast-timeouts":
            read_timeout, fast = 1.0, True
        elif canon == "no-auto":
            read_timeout = None
        flags[canon] = value if INSTALL_FLAGS[canon] else True

    if flags.get("http-proxy") and not re.match(r"https?://", flags["http-proxy"]):
        # [INF] the real template only checks a prompted value; the fake checks the flag too
        raise ToolExit(1, 'Proxy address must have prefix "http(s)://"')

    def timed_prompt(default_override=None):
        if knobs["timed_prompt_s"] is not None:
            wait = knobs["timed_prompt_s"]
        elif read_timeout is None:
            block_forever()
        elif fast:
            wait = read_timeout
        else:
            wait = default_override or read_timeout
        time.sleep(max(0.0, wait))

    airgap = "airgap" in flags
    # checkFirewalld
    if knobs["firewalld_active"] and "bypass-firewalld-warning" not in flags:
        if "hard-fail-on-firewalld" in flags:
            raise ToolExit(1, "Firewalld is active")
        out.raw("Firewalld is active, do you wish to continue? (Y/n) ")
        timed_prompt()
        out.line()

    if "install-docker-only" in flags:
        out.line("Docker already installed" if knobs["docker_installed"] else "Installing docker")
        return 0

    # ---- addresses
    out.line("Determining local address")
    private = None
    if "private-address" in flags:
        private = flags["private-address"]
        out.line("The installer will use local address '%s' (from parameter)" % private)
    if not private:
        conf_local = read_conf_naive(knobs, "LocalAddress")
        if conf_local:
            out.line("Validating local address found in /etc/replicated.conf: '%s'" % conf_local)
        ifaces = knobs["interfaces"]
        if not ifaces:
            raise ToolExit(1, "Error: The installer couldn't discover any valid network interfaces on this machine.\n"
                              "Check your network configuration and re-run this script again.\n"
                              "If you want to skip this discovery process, pass the 'local-address' arg to this "
                              "script, e.g. 'sudo ./install.sh local-address=1.2.3.4'")
        if len(ifaces) == 1:
            private = ifaces[0][1]
            out.line("The installer will use network interface '%s' (with IP address '%s')" % tuple(ifaces[0][:2]))
        else:
            out.line("The installer was unable to automatically detect the private IP address of this machine.")
            out.line("Please choose one of the following network interfaces:")
            for i, (n, ip) in enumerate(ifaces):
                out.line("[%d] %-5s\t%s" % (i, n, ip))
            out.raw("Enter desired number (0-%d): " % (len(ifaces) - 1))
            block_forever()  # untimed `read < /dev/tty` (§1.5): the "unbounded delay"

    public = flags.get("public-address") or None
    if not airgap:
        out.line("Determining service address")
        if public:
            out.line("The installer will use service address '%s' (from parameter)" % public)
        elif "no-public-address" not in flags:
            if knobs["metadata_public_address"]:
                public = knobs["metadata_public_address"]
                out.line("The installer will use service address '%s' (discovered from EC2 metadata service)"
                         % public)
            else:
                out.line("The installer was unable to automatically detect the service IP address of this machine.")
                out.line("Please enter the address or leave blank for unspecified.")
                out.raw("Service IP address: ")
                timed_prompt(120.0)
                out.line()

    # ---- proxy
    proxy = flags.get("http-proxy") or None
    if "no-proxy" not in flags:
        if not proxy:
            conf_proxy = read_conf_naive(knobs, "HttpProxy")
            if conf_proxy:
                proxy = conf_proxy
                out.line("The installer will use the proxy at '%s' (imported from /etc/replicated.conf 'HttpProxy')"
                         % proxy)
            else:
                for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
                    if os.environ.get(var):
                        proxy = os.environ[var]
                        out.line("The installer will use the proxy at '%s' (imported from env var '%s')"
                                 % (proxy, var))
                        break
        if not proxy and not airgap:
            out.raw("Does this machine require a proxy to access the Internet? (y/N) ")
            timed_prompt()
            out.line()
    else:
        proxy = None
    no_proxy = None
    if proxy:
        hosts = ["localhost", "127.0.0.1", "172.17.0.1", private]
        for a in additional:
            hosts.extend(h for h in a.split(","))
        no_proxy = ",".join(sorted(set(h for h in hosts if h)))

    # ---- docker
    if ("no-docker" in flags or airgap) and not knobs["docker_installed"]:
        raise ToolExit(1, "Docker is not installed. Please install Docker before running this installation script.")

    # ---- the rest, paced over install_duration_s
    steps = []
    if "skip-preflights" not in flags:
        steps.append("\nRunning preflight checks...")
    if "skip-pull" in flags:
        steps.append("Skip docker pull flag detected, will not pull replicated and replicated-ui images")
    elif airgap:
        steps.append("Loading replicated and replicated-ui images from package")
        steps.append("Loading replicated debian, command, statsd-graphite, and premkit images from package")
    else:
        steps.append("Pulling replicated and replicated-ui images")
    steps += ["Tagging replicated and replicated-ui images", "Stopping replicated and replicated-ui service",
              "Installing replicated and replicated-ui service", "Starting replicated and replicated-ui service",
              "Installing replicated command alias"]
    operator = "no-operator" not in flags and "is-migration" not in flags
    if operator:
        steps.append("Installing local operator")
        if not airgap:
            steps.append("Installing local operator with command:\ncurl -sSL "
                         "https://get.replicated.com/operator?replicated_operator_tag=%s" % knobs["replicated_version"])
            steps.append("Pulling latest replicated-operator image")
        steps += ["Stopping replicated-operator service", "Installing replicated-operator service",
                  "Starting replicated-operator service", "\nOperator installation successful\n"]
    out.pace = float(knobs["install_duration_s"]) / (len(steps) + 1)

    opts = {"private_address": private, "public_address": public,
            "disable_replicated_ui": "disable-replicated-ui" in flags,
            "release_sequence": flags.get("release-sequence")}
    for s in steps:
        if knobs["install_hang"] and (s.startswith("Pulling replicated") or s.startswith("Loading replicated and")
                                      or s.startswith("Skip docker")):
            # blocked like an installer waiting on a prompt; the agent must kill the process group
            child = subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL)
            pid_path = os.path.join(sd, "install-child.pid")
            with open(pid_path + ".tmp", "w") as f:
                f.write("%d\n" % child.pid)
            os.replace(pid_path + ".tmp", pid_path)
            out.line(s)
            block_forever()
        if s.startswith("Installing replicated and replicated-ui service"):
            # ensureReplicatedConfReadable
            conf = knobs["replicated_conf"]
            if os.path.exists(conf):
                try:
                    os.chmod(conf, os.stat(conf).st_mode | 0o444)
                except OSError as e:
                    sys.stderr.write("chmod: changing permissions of '%s': %s\n" % (conf, os.strerror(e.errno)))
        if s.startswith("Starting replicated and replicated-ui service"):
            daemon_start(sd, knobs, opts)
        out.step(s)
        if knobs["install_exit_code"] and (s.startswith("Pulling replicated") or s.startswith("Loading replicated and")
                                           or s.startswith("Skip docker")):
            raise ToolExit(knobs["install_exit_code"],
                           'Error response from daemon: Get "https://registry.replicated.com/v2/": net/http: '
                           "request canceled while waiting for connection (fake-tfe install_exit_code=%d)"
                           % knobs["install_exit_code"])

    write_json(os.path.join(sd, "install.json"), {
        "completed_at": now(),
        "argv": list(argv),
        "flags": flags,
        "flag_order": order,
        "private_address": private,
        "public_address": public,
        "proxy_address": proxy,
        "no_proxy_addresses": no_proxy,
        "additional_no_proxy": ",".join(additional) if additional else None,
        "airgap": airgap,
        "disable_replicated_ui": "disable-replicated-ui" in flags,
        "fast_timeouts": fast,
        "release_sequence_flag": flags.get("release-sequence"),
    })
    # outro
    if "disable-replicated-ui" not in flags:
        port = flags.get("ui-bind-port") or "8800"
        out.line("To continue the installation, visit the following URL in your browser:\n\n  http://%s:%s"
                 % (public or "<this_server_address>", port))
    if not shutil.which("replicated"):
        out.line("\nTo create an alias for the replicated cli command run the following in your current shell or "
                 "log out and log back in:\n\n  source /etc/replicated.alias")
    out.line()
    return 0
