"""Tests for the fake TFE tools (install.sh, replicatedctl, replicated).

Run from the repository root:  python3 -m unittest discover -s tests/fake-tfe -v
Stdlib only. Every test gets its own temporary FAKE_TFE_STATE, replicated.conf and settings file.
State transitions are driven by rewriting behaviour.json (knobs are re-read at every invocation), so the
tests do not depend on wall-clock sleeps except where a duration itself is under test.
"""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
INSTALL = os.path.join(HERE, "install.sh")
CTL = os.path.join(HERE, "replicatedctl")
REP = os.path.join(HERE, "replicated")
sys.path.insert(0, HERE)
import faketfe  # noqa: E402

STD_FLAGS = ["fast-timeouts", "bypass-firewalld-warning", "no-proxy", "private-address=10.0.1.5",
             "public-address=10.0.1.5", "disable-replicated-ui"]

SETTINGS = {
    "hostname": {"value": "tfe.example.com"},
    "production_type": {"value": "external"},
    "enable_active_active": {"value": "1"},
    "enc_password": {"value": "767fee4e6046de48943df2decc55f3cd"},
    "pg_extra_params": {"value": "sslmode=require&connect_timeout=5"},
    "user_token": {"value": "87c07f934a979d9e071dc30bdc570dd4"},
    "root_secret": {"value": "e41028914bbe63f1bb6f3c6a59be7cd5"},
    "capacity_memory": {"value": "512"},
}

HEALTH_ALL_PASS = """checking: Archivist Health Check...
|  checks that Archivist is up and healthy
|- ✓ PASS

checking: Terraform Enterprise Health Check...
|  checks that Terraform Enterprise is up and can communicate with Redis and Postgres
|- ✓ PASS

checking: Terraform Enterprise Vault Health Check...
|  checks that Terraform Enterprise can connect to Vault and is able to encrypt and decrypt tokens
|- ✓ PASS

checking: RabbitMQ Health Check...
|  checks that RabbitMQ can be connected to and that we can send and consume messages
|- ✓ PASS

checking: Vault Server Health Check...
|  checks that the configured Vault Server is healthy
|- ✓ PASS

  All checks passed.
"""

_BIN = None


def fast_python_bin():
    """A PATH dir whose python3 is this interpreter with -S (skips slow site hooks; fakes are stdlib only)."""
    global _BIN
    if _BIN is None:
        _BIN = tempfile.mkdtemp(prefix="fake-tfe-bin-")
        os.chmod(_BIN, 0o755)
        p = os.path.join(_BIN, "python3")
        with open(p, "w") as f:
            f.write('#!/bin/sh\nexec "%s" -S "$@"\n' % sys.executable)
        os.chmod(p, 0o755)
    return _BIN


def tearDownModule():
    if _BIN:
        shutil.rmtree(_BIN, ignore_errors=True)


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="fake-tfe-test-")
        os.chmod(self.tmp, 0o755)
        self.state = os.path.join(self.tmp, "state")
        os.mkdir(self.state)
        self.conf = os.path.join(self.tmp, "replicated.conf")
        self.settings_path = os.path.join(self.tmp, "ptfe-settings.json")
        self.license = os.path.join(self.tmp, "license.rli")
        with open(self.license, "w") as f:
            f.write("fake license\n")
        os.chmod(self.license, 0o644)
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
        env["FAKE_TFE_STATE"] = self.state
        env["PATH"] = fast_python_bin() + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        self.env = env
        self.knobs = {"replicated_conf": self.conf, "install_duration_s": 0.02, "system_ready_after_s": 0,
                      "app_started_after_s": 0, "app_stop_duration_s": 0, "drain_duration_s": 0.05}
        self.write_knobs()
        self.write_settings(SETTINGS)
        self.write_conf({"DaemonAuthenticationType": "password", "DaemonAuthenticationPassword": "console-pw",
                         "TlsBootstrapType": "self-signed", "BypassPreflightChecks": True,
                         "ImportSettingsFrom": self.settings_path, "LicenseFileLocation": self.license,
                         "ReleaseSequence": 504})

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    # helpers
    def write_knobs(self, **kw):
        self.knobs.update(kw)
        with open(os.path.join(self.state, "behaviour.json.tmp"), "w") as f:
            json.dump(self.knobs, f)
        os.replace(os.path.join(self.state, "behaviour.json.tmp"), os.path.join(self.state, "behaviour.json"))

    def write_settings(self, obj, mode=0o644):
        with open(self.settings_path, "w") as f:
            f.write(obj if isinstance(obj, str) else json.dumps(obj, indent=2))
        os.chmod(self.settings_path, mode)

    def write_conf(self, obj, mode=0o600):
        with open(self.conf, "w") as f:
            f.write(obj if isinstance(obj, str) else json.dumps(obj, indent=2))
        os.chmod(self.conf, mode)

    def conf_obj(self):
        with open(self.conf) as f:
            return json.load(f)

    def run_tool(self, path, *args, timeout=20, env=None, **kw):
        cmd = ["/bin/bash", path] if path == INSTALL else [path]
        r = subprocess.run(cmd + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout, env=env or self.env, **kw)
        # decode by hand: text=True would turn the TTY mode's \r\n into \n
        r.stdout, r.stderr = r.stdout.decode("utf-8"), r.stderr.decode("utf-8")
        return r

    def install(self, *flags, ok=True):
        r = self.run_tool(INSTALL, *(flags or STD_FLAGS))
        if ok:
            self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def ctl(self, *args, rc=0):
        r = self.run_tool(CTL, *args)
        if rc is not None:
            self.assertEqual(r.returncode, rc, "replicatedctl %s: %s" % (args, r.stderr))
        return r

    def rep(self, *args, rc=0):
        r = self.run_tool(REP, *args)
        if rc is not None:
            self.assertEqual(r.returncode, rc, "replicated %s: %s" % (args, r.stderr))
        return r

    def app(self):
        return json.loads(self.ctl("app", "status").stdout)[0]

    def daemon(self):
        with open(os.path.join(self.state, "daemon.json")) as f:
            return json.load(f)

    def state_json(self, name):
        with open(os.path.join(self.state, name)) as f:
            return json.load(f)

    def calls(self):
        with open(os.path.join(self.state, "calls.jsonl")) as f:
            return [json.loads(line) for line in f]


class TestEnvironment(Base):
    def test_state_unset_exits_70(self):
        env = dict(self.env)
        del env["FAKE_TFE_STATE"]
        for tool, args in ((INSTALL, STD_FLAGS), (CTL, ["system", "status"]), (REP, ["admin", "health-check"])):
            r = self.run_tool(tool, *args, env=env)
            self.assertEqual(r.returncode, 70, tool)
            self.assertEqual(r.stderr, "fake-tfe: FAKE_TFE_STATE is not set\n")

    def test_before_install_no_container(self):
        for tool, args in ((CTL, ["system", "status"]), (CTL, ["app", "status"]), (REP, ["admin", "health-check"])):
            r = self.run_tool(tool, *args)
            self.assertEqual(r.returncode, 1)
            self.assertEqual(r.stderr, "Error: No such container: replicated\n")
            self.assertEqual(r.stdout, "")

    def test_unknown_knob_is_rejected(self):
        self.write_knobs(health_failing="x")
        r = self.run_tool(CTL, "version")
        self.assertEqual(r.returncode, 70)
        self.assertIn('unknown knob "health_failing"', r.stderr)


class TestInstallFlags(Base):
    def test_dash_and_underscore_spellings(self):
        r = self.install("fast_timeouts", "bypass_firewalld_warning", "no_proxy", "private_address=10.0.1.5",
                         "public_address=10.0.1.6", "disable_replicated_ui", "log_level=debug")
        self.assertIn("The installer will use local address '10.0.1.5' (from parameter)\n", r.stdout)
        self.assertIn("The installer will use service address '10.0.1.6' (from parameter)\n", r.stdout)
        inst = self.state_json("install.json")
        self.assertEqual(inst["flags"]["private-address"], "10.0.1.5")
        self.assertEqual(inst["flags"]["log-level"], "debug")
        self.assertTrue(inst["disable_replicated_ui"])
        self.assertEqual(self.daemon()["private_address"], "10.0.1.5")

    def test_local_address_alias(self):
        self.install("no-proxy", "local-address=10.9.9.9", "public-address=10.9.9.9")
        self.assertEqual(self.daemon()["private_address"], "10.9.9.9")

    def test_every_known_flag_is_accepted(self):
        flags = ["no-proxy", "additional-no-proxy=a.example", "private-address=10.0.1.5", "public-address=10.0.1.5",
                 "disable-replicated-ui", "no-docker", "docker-version=20.10.7", "no-ce-on-ee",
                 "release-sequence=504", "release-patch-sequence=0", "fast-timeouts", "bypass-firewalld-warning",
                 "hard-fail-on-firewalld", "skip-preflights", "ignore-preflights", "prompt-on-preflight-warnings",
                 "bypass-storagedriver-warnings", "hard-fail-on-loopback", "log-level=info", "ui-bind-port=8800",
                 "no-operator", "is-migration", "tags=a", "registry-advertise-address=10.0.1.5", "skip-pull",
                 "selinux-replicated-domain=spc_t", "force-replicated-downgrade", "registry-address-override=r",
                 "registry-path-prefix=p", "artifactory-address=a", "artifactory-access-method=m",
                 "artifactory-docker-repo-key=k", "artifactory-quay-repo-key=k", "artifactory-auth=x",
                 "disable-replicated-host-networking", "no-public-address", "airgap"]
        r = self.install(*flags)
        self.assertIn("Skip docker pull flag detected", r.stdout)
        r = self.install("install-docker-only")
        self.assertNotIn("Determining local address", r.stdout)

    def test_unknown_flag(self):
        for bad, name in (("--no-proxy", "--no-proxy"), ("foo=bar=baz", "foo"), ("private-adress=1.2.3.4",
                                                                                   "private-adress")):
            r = self.install(*(STD_FLAGS + [bad]), ok=False)
            self.assertEqual(r.returncode, 1)
            self.assertEqual(r.stderr, 'Error: unknown parameter "%s"\n' % name)
            self.assertEqual(r.stdout, "")
        self.assertFalse(os.path.exists(os.path.join(self.state, "daemon.json")))

    def test_value_is_everything_after_first_equals_and_repeatable_no_proxy(self):
        self.install("fast-timeouts", "http-proxy=http://user:p=w@proxy.internal:3128", "private-address=10.0.1.5",
                     "public-address=10.0.1.5", "additional-no-proxy=b.example,a.example",
                     "additional_no_proxy=c.example")
        inst = self.state_json("install.json")
        self.assertEqual(inst["proxy_address"], "http://user:p=w@proxy.internal:3128")
        self.assertEqual(inst["additional_no_proxy"], "b.example,a.example,c.example")
        self.assertEqual(inst["no_proxy_addresses"],
                         "10.0.1.5,127.0.0.1,172.17.0.1,a.example,b.example,c.example,localhost")

    def test_bad_http_proxy(self):
        r = self.install("fast-timeouts", "http-proxy=proxy.internal:3128", "private-address=10.0.1.5", ok=False)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr, 'Proxy address must have prefix "http(s)://"\n')

    def test_empty_argument_ends_flag_parsing(self):
        self.install(*(STD_FLAGS + ["", "not-a-flag"]))

    def test_require_root(self):
        if os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"):
            self.skipTest("needs root (to drop privileges) and a /usr/bin/python3 that user nobody can run")
        env = dict(self.env, PATH="/usr/bin:/bin")
        os.chmod(self.state, 0o777)
        with open(os.path.join(self.state, "calls.jsonl"), "a"):
            pass
        os.chmod(os.path.join(self.state, "calls.jsonl"), 0o666)
        r = self.run_tool(INSTALL, *STD_FLAGS, user=65534, group=65534, env=env)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stderr, "Error: This script requires admin privileges. Please re-run it as root.\n")
        self.write_knobs(require_root=False)
        os.chmod(self.conf, 0o644)  # a non-root fake daemon has to be able to read it
        r = self.run_tool(INSTALL, *STD_FLAGS, user=65534, group=65534, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(self.daemon()["config_ok"], self.daemon()["errors"])

    def test_progress_lines_and_url_block(self):
        r = self.install(*[f for f in STD_FLAGS if f != "disable-replicated-ui"])
        expected = ["Determining local address", "The installer will use local address '10.0.1.5' (from parameter)",
                    "Running preflight checks...", "Pulling replicated and replicated-ui images",
                    "Tagging replicated and replicated-ui images", "Stopping replicated and replicated-ui service",
                    "Installing replicated and replicated-ui service", "Starting replicated and replicated-ui service",
                    "Installing replicated command alias", "Installing local operator",
                    "Installing local operator with command:", "Pulling latest replicated-operator image",
                    "Stopping replicated-operator service", "Installing replicated-operator service",
                    "Starting replicated-operator service", "Operator installation successful"]
        lines = r.stdout.splitlines()
        idx = [lines.index(e) for e in expected]
        self.assertEqual(idx, sorted(idx))
        self.assertEqual(lines[lines.index("Running preflight checks...") - 1], "")
        self.assertIn("To continue the installation, visit the following URL in your browser:\n\n"
                      "  http://10.0.1.5:8800\n", r.stdout)
        r = self.install(*STD_FLAGS)
        self.assertNotIn("8800", r.stdout)
        self.assertNotIn("To continue the installation", r.stdout)
        self.assertTrue(self.daemon()["disable_replicated_ui"])

    def test_install_duration(self):
        self.write_knobs(install_duration_s=0.6)
        t0 = time.time()
        self.install()
        self.assertGreaterEqual(time.time() - t0, 0.55)

    def test_without_private_address_single_interface(self):
        r = self.install("fast-timeouts", "no-proxy", "public-address=10.0.1.5")
        self.assertIn("Determining local address\nThe installer will use network interface 'eth0' "
                      "(with IP address '10.0.0.5')\n", r.stdout)
        self.assertEqual(self.daemon()["private_address"], "10.0.0.5")

    def test_without_private_address_several_interfaces_blocks(self):
        self.write_knobs(interfaces=[["eth0", "10.0.0.5"], ["eth1", "10.1.0.5"]])
        p = subprocess.Popen(["/bin/bash", INSTALL, "fast-timeouts", "no-proxy"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env, start_new_session=True)
        try:
            with self.assertRaises(subprocess.TimeoutExpired):
                p.wait(timeout=1.5)
        finally:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate(timeout=5)
        self.assertIn("Please choose one of the following network interfaces:", out.decode())
        self.assertTrue(out.decode().endswith("Enter desired number (0-1): "))
        self.assertFalse(os.path.exists(os.path.join(self.state, "daemon.json")))

    def test_proxy_prompt_without_no_proxy(self):
        t0 = time.time()
        r = self.install("fast-timeouts", "private-address=10.0.1.5", "public-address=10.0.1.5")
        self.assertGreaterEqual(time.time() - t0, 1.0)  # fast-timeouts: read -t 1
        self.assertIn("Does this machine require a proxy to access the Internet? (y/N) ", r.stdout)
        self.assertIsNone(self.state_json("install.json")["proxy_address"])

    def test_install_exit_code(self):
        self.write_knobs(install_exit_code=7)
        r = self.install(ok=False)
        self.assertEqual(r.returncode, 7)
        self.assertIn("install_exit_code=7", r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.state, "daemon.json")))
        ends = [c for c in self.calls() if c["tool"] == "install.sh" and c["event"] == "end"]
        self.assertEqual(ends[-1]["exit_code"], 7)
        self.assertEqual(self.ctl("app", "status", rc=1).stderr, "Error: No such container: replicated\n")

    def test_chmod_a_plus_r_of_replicated_conf(self):
        os.chmod(self.conf, 0o600)
        self.install()
        self.assertEqual(stat.S_IMODE(os.stat(self.conf).st_mode), 0o644)
        os.chmod(self.conf, 0o640)
        self.install()
        self.assertEqual(stat.S_IMODE(os.stat(self.conf).st_mode), 0o644)

    def test_install_hang_writes_child_pid(self):
        self.write_knobs(install_hang=True)
        p = subprocess.Popen(["/bin/bash", INSTALL] + STD_FLAGS, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=self.env, start_new_session=True)
        pid_file = os.path.join(self.state, "install-child.pid")
        try:
            for _ in range(100):
                if os.path.exists(pid_file):
                    break
                time.sleep(0.05)
            with open(pid_file) as f:
                child = int(f.read().strip())
            self.assertTrue(os.path.exists("/proc/%d" % child))
            self.assertEqual(os.getpgid(child), p.pid)  # same process group as install.sh
            with self.assertRaises(subprocess.TimeoutExpired):
                p.wait(timeout=0.3)
        finally:
            os.killpg(p.pid, signal.SIGTERM)
            p.communicate(timeout=5)

        def alive(pid):
            try:
                with open("/proc/%d/stat" % pid) as f:
                    return f.read().split(") ", 1)[1][0] != "Z"
            except FileNotFoundError:
                return False
        for _ in range(100):
            if not alive(child):
                break
            time.sleep(0.05)
        self.assertFalse(alive(child))
        self.assertFalse(os.path.exists(os.path.join(self.state, "daemon.json")))


class TestConfigStrictness(Base):
    def assert_not_ready(self, error_fragment):
        d = self.daemon()
        self.assertFalse(d["config_ok"])
        self.assertTrue(any(error_fragment in e for e in d["errors"]), d["errors"])
        a = self.app()
        self.assertEqual((a["State"], a["DesiredState"], a["IsTransitioning"]), ("stopped", "stopped", False))
        self.assertIn(error_fragment, a["Error"])
        r = self.rep("--tty=0", "admin", "health-check")
        self.assertTrue(r.stdout.endswith("\n5 checks failed.\n"), r.stdout)
        self.assertEqual(self.ctl("app-config", "export", "--template", "{{.hostname.Value}}").stdout, "\n")
        return r

    def test_string_release_sequence_never_ready(self):
        c = self.conf_obj()
        c["ReleaseSequence"] = "504"
        self.write_conf(c)
        self.install()
        r = self.assert_not_ready("json: cannot unmarshal string into Go struct field Params.ReleaseSequence of "
                                  "type int")
        self.assertIn("Error parsing config file: json: cannot unmarshal string into Go struct field "
                      "Params.ReleaseSequence of type int\n", r.stderr)
        self.assertEqual(self.app()["Sequence"], 0)

    def test_non_string_setting_value(self):
        s = dict(SETTINGS, capacity_memory={"value": 512})
        self.write_settings(s)
        self.install()
        self.assert_not_ready('item "capacity_memory"')

    def test_setting_without_value_wrapper(self):
        s = dict(SETTINGS, hostname="tfe.example.com")
        self.write_settings(s)
        self.install()
        self.assert_not_ready('item "hostname"')

    def test_required_settings(self):
        s = {k: v for k, v in SETTINGS.items() if k != "enc_password"}
        s["enable_active_active"] = {"value": "0"}
        self.write_settings(s)
        self.install()
        self.assert_not_ready('"enc_password" is not set')
        self.assertTrue(any('"enable_active_active" must be "1"' in e for e in self.daemon()["errors"]))

    def test_import_settings_from_must_be_absolute(self):
        c = self.conf_obj()
        c["ImportSettingsFrom"] = "ptfe-settings.json"
        self.write_conf(c)
        self.install()
        self.assert_not_ready("ImportSettingsFrom must be an absolute path")

    def test_settings_file_must_be_readable_by_replicated_user(self):
        self.write_settings(SETTINGS, mode=0o600)
        self.install()
        self.assert_not_ready("permission denied")

    def test_settings_file_permissions_not_enforced_with_knob(self):
        self.write_settings(SETTINGS, mode=0o600)
        self.write_knobs(enforce_file_permissions=False)
        self.install()
        self.assertTrue(self.daemon()["config_ok"], self.daemon()["errors"])

    def test_settings_file_0600_owned_by_replicated_user(self):
        import pwd
        self.write_settings(SETTINGS, mode=0o600)
        self.write_knobs(replicated_user=pwd.getpwuid(os.geteuid()).pw_name)  # "the files belong to replicated"
        self.install()
        self.assertTrue(self.daemon()["config_ok"], self.daemon()["errors"])

    def test_invalid_json_and_wrong_types(self):
        self.write_conf('{"ImportSettingsFrom": "%s",}' % self.settings_path)
        self.install()
        self.assert_not_ready("Error parsing config file")

    def test_bool_param_type(self):
        c = self.conf_obj()
        c["BypassPreflightChecks"] = "true"
        self.write_conf(c)
        self.install()
        self.assert_not_ready("Params.BypassPreflightChecks of type bool")

    def test_license_and_tls(self):
        c = self.conf_obj()
        c["LicenseFileLocation"] = os.path.join(self.tmp, "missing.rli")
        c["TlsBootstrapType"] = "server-path"
        c["TlsBootstrapHostname"] = "tfe.example.com"
        c["TlsBootstrapCert"] = os.path.join(self.tmp, "missing.crt")
        c["TlsBootstrapKey"] = os.path.join(self.tmp, "missing.key")
        self.write_conf(c)
        self.install()
        self.assert_not_ready("LicenseFileLocation: open")
        errs = " | ".join(self.daemon()["errors"])
        self.assertIn("TlsBootstrapCert: open", errs)
        self.assertIn("TlsBootstrapKey: open", errs)

    def test_bad_tls_type(self):
        c = self.conf_obj()
        c["TlsBootstrapType"] = "selfsigned"
        self.write_conf(c)
        self.install()
        self.assert_not_ready("TlsBootstrapType must be one of")

    def test_settings_imported_only_once_unless_forced(self):
        self.install()
        self.write_settings(dict(SETTINGS, hostname={"value": "changed.example.com"}))
        self.install()
        d = self.daemon()
        self.assertEqual((d["starts"], d["settings_import_count"]), (2, 1))
        self.assertEqual(self.ctl("app-config", "export", "--template", "{{.hostname.Value}}").stdout,
                         "tfe.example.com\n")
        c = self.conf_obj()
        c["ForceUseImportedSettings"] = True
        self.write_conf(c)
        self.install()
        self.assertEqual(self.daemon()["settings_import_count"], 2)
        self.assertEqual(self.ctl("app-config", "export", "--template", "{{.hostname.Value}}").stdout,
                         "changed.example.com\n")

    def test_failed_setup_is_retried_by_next_install(self):
        c = self.conf_obj()
        c["ReleaseSequence"] = "504"
        self.write_conf(c)
        self.install()
        self.assertFalse(self.daemon()["config_ok"])
        c["ReleaseSequence"] = 504
        self.write_conf(c)
        self.install()
        self.assertTrue(self.daemon()["config_ok"])
        self.assertEqual(self.app()["State"], "started")

    def test_remove_import_settings_from(self):
        c = self.conf_obj()
        c["RemoveImportSettingsFrom"] = True
        self.write_conf(c)
        self.install()
        self.assertTrue(self.daemon()["config_ok"])
        self.assertFalse(os.path.exists(self.settings_path))


class TestLifecycle(Base):
    def test_happy_path_progression(self):
        self.write_knobs(system_ready_after_s=1000, app_started_after_s=2000)
        self.install()
        d = self.daemon()
        self.assertTrue(d["config_ok"], d["errors"])
        self.assertEqual((d["release_sequence"], d["settings_imported"], d["private_address"]),
                         (504, True, "10.0.1.5"))
        # 1. daemon initializing, app stopped but transitioning towards started
        self.assertEqual(self.ctl("system", "status").stdout,
                         '{\n    "Replicated": "initializing",\n    "Retraced": "initializing"\n}\n')
        self.assertEqual(self.ctl("system", "status", "-q").stdout, "initializing\n")
        self.assertEqual(self.ctl("system", "status", "--template",
                                  '{{and (eq .Replicated "ready") (eq .Retraced "ready")}}').stdout, "false\n")
        a = self.app()
        self.assertEqual((a["State"], a["DesiredState"], a["IsCancellable"], a["IsTransitioning"]),
                         ("stopped", "started", True, True))
        r = self.rep("admin", "--tty=0", "health-check")
        self.assertTrue(r.stdout.endswith("\n\n5 checks failed.\n"))
        # 2. system ready, app starting
        self.write_knobs(system_ready_after_s=0)
        self.assertEqual(self.ctl("system", "status").stdout,
                         '{\n    "Replicated": "ready",\n    "Retraced": "ready"\n}\n')
        self.assertEqual(self.ctl("system", "status", "-o", "json", "-q").stdout, "ready\n")
        self.assertEqual(self.ctl("system", "status", "--template",
                                  '{{and (eq .Replicated "ready") (eq .Retraced "ready")}}').stdout, "true\n")
        a = self.app()
        self.assertEqual((a["State"], a["DesiredState"], a["IsCancellable"], a["IsTransitioning"]),
                         ("starting", "started", False, True))
        # 3. app started
        self.write_knobs(app_started_after_s=0)
        a = self.app()
        self.assertEqual((a["State"], a["DesiredState"], a["IsCancellable"], a["IsTransitioning"]),
                         ("started", "started", False, False))
        self.assertEqual(self.ctl("app", "status", "--template", "{{.State}}").stdout, "started\n")
        r = self.rep("admin", "--tty=0", "health-check")
        self.assertEqual(r.stdout, HEALTH_ALL_PASS)
        self.assertEqual(r.stderr, "")

    def test_app_status_layout(self):
        self.install()
        out = self.ctl("app", "status").stdout
        pat = (r'\[\n    \{\n        "AppID": "[0-9a-f]{32}",\n        "Sequence": 504,\n'
               r'        "PatchSequence": 0,\n        "State": "started",\n        "DesiredState": "started",\n'
               r'        "Error": "",\n        "IsCancellable": false,\n        "IsTransitioning": false,\n'
               r'        "LastModifiedAt": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z"\n    \}\n\]\n$')
        self.assertRegex(out, pat)
        self.assertEqual(json.loads(out)[0]["AppID"], self.app()["AppID"])  # stable per state dir

    def test_real_time_progression(self):
        self.write_knobs(system_ready_after_s=0.5, app_started_after_s=1.0)
        self.install()
        seen = []
        deadline = time.time() + 10
        while time.time() < deadline:
            a = self.app()
            if not seen or seen[-1] != a["State"]:
                seen.append(a["State"])
            if a["State"] == "started":
                break
            time.sleep(0.05)
        self.assertEqual(seen[-1], "started")
        self.assertIn("starting", seen)

    def test_app_stop_and_start(self):
        self.install()
        self.write_knobs(app_stop_duration_s=1000)
        r = self.ctl("app", "stop")
        self.assertRegex(r.stdout, r"^Task ID: [0-9a-f]{16}\n$")
        a = self.app()
        self.assertEqual((a["State"], a["DesiredState"], a["IsTransitioning"]), ("stopping", "stopped", True))
        self.write_knobs(app_stop_duration_s=0)
        a = self.app()
        self.assertEqual((a["State"], a["DesiredState"], a["IsTransitioning"]), ("stopped", "stopped", False))
        self.assertIn("the application is not running", self.rep("admin", "--tty=0", "node-drain", rc=1).stderr)
        self.assertTrue(self.rep("admin", "--tty=0", "health-check").stdout.endswith("5 checks failed.\n"))
        self.write_knobs(app_started_after_s=1000)
        self.assertRegex(self.ctl("app", "start", "-q").stdout, r"^[0-9a-f]{16}\n$")
        a = self.app()
        self.assertEqual((a["State"], a["DesiredState"], a["IsTransitioning"]), ("starting", "started", True))
        self.write_knobs(app_started_after_s=0)
        self.assertEqual(self.app()["State"], "started")
        r = self.ctl("app", "restart", rc=1)
        self.assertIn('Error: unknown command "restart" for "replicatedctl app"', r.stderr)
        evs = [(c["argv"][1], c["event"]) for c in self.calls() if c["tool"] == "replicatedctl"
               and c["argv"][:1] == ["app"] and c["argv"][1] in ("stop", "start")]
        self.assertEqual(evs, [("stop", "start"), ("stop", "end"), ("start", "start"), ("start", "end")])

    def test_app_stop_attach_waits(self):
        self.install()
        self.write_knobs(app_stop_duration_s=0.5)
        t0 = time.time()
        r = self.ctl("app", "stop", "--attach")
        self.assertGreaterEqual(time.time() - t0, 0.45)
        self.assertTrue(r.stdout.endswith("App stopped\n"))
        self.assertEqual(self.app()["State"], "stopped")

    def test_unknown_subcommand(self):
        self.install()
        self.assertIn('unknown command "bogus" for "replicatedctl"', self.ctl("bogus", rc=1).stderr)
        self.assertIn("unknown admin command", self.rep("admin", "--tty=0", "bogus", rc=1).stderr)
        self.assertRegex(self.ctl("version").stdout, r"^replicatedctl version \d+\.\d+\.\d+\n$")


class TestHealthCheck(Base):
    def setUp(self):
        super().setUp()
        self.install()

    def test_failing_checks(self):
        self.write_knobs(health_failing_checks=["Terraform Enterprise Health Check",
                                                "Terraform Enterprise Vault Health Check"])
        r = self.rep("admin", "--tty=0", "health-check")
        self.assertEqual(r.returncode, 0)  # default health_exit_code_on_failure
        self.assertIn("checking: Terraform Enterprise Health Check...\n|  checks that Terraform Enterprise is up "
                      "and can communicate with Redis and Postgres\n|- ✗ ERROR: http://atlas.ptfe:9292/"
                      "_health_check?full did not return a healthy status, 500\n\n", r.stdout)
        self.assertIn("|- ✗ ERROR: http://atlas.ptfe:9292/_health_check/_vault_token did not return a healthy "
                      "status, 500\n\n", r.stdout)
        self.assertEqual(r.stdout.count("|- ✓ PASS\n"), 3)
        self.assertTrue(r.stdout.endswith("\n\n2 checks failed.\n"))
        self.write_knobs(health_exit_code_on_failure=3)
        self.rep("admin", "--tty=0", "health-check", rc=3)

    def test_custom_failure_reason_and_error_line(self):
        self.write_knobs(health_failing_checks={"RabbitMQ Health Check": "rabbit is sad"}, health_error_line=True)
        r = self.rep("--tty=0", "admin", "health-check")
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0], "Error parsing config file: json: cannot unmarshal string into Go struct field "
                                   "Params.ReleaseSequence of type int")
        self.assertIn("|- ✗ ERROR: rabbit is sad", lines)
        self.assertEqual(lines[-1], "1 checks failed.")

    def test_tty_output(self):
        r = self.rep("admin", "-t", "health-check")
        self.assertIn("|- \x1b[32m✓ PASS\x1b[0m\r\n", r.stdout)
        self.assertTrue(r.stdout.endswith("  All checks passed.\r\n"))

    def test_unknown_check_name_is_a_fake_error(self):
        self.write_knobs(health_failing_checks=["Redis"])
        self.assertEqual(self.rep("admin", "--tty=0", "health-check", rc=70).returncode, 70)


class TestDrain(Base):
    def setUp(self):
        super().setUp()
        self.install()

    def test_drain_counts_and_duration(self):
        self.write_knobs(drain_duration_s=0.5)
        t0 = time.time()
        r = self.rep("admin", "--tty=0", "node-drain")
        self.assertGreaterEqual(time.time() - t0, 0.5)
        self.assertEqual(r.stdout, "Draining node...\nNode drained.\n")
        self.write_knobs(drain_duration_s=0)
        self.rep("--tty=0", "admin", "node-drain")
        dr = self.state_json("drain.json")
        self.assertEqual((dr["drains_started"], dr["drains_completed"], dr["drains_failed"]), (2, 2, 0))
        self.assertGreaterEqual(dr["last_completed_at"], dr["last_started_at"])
        drains = [c for c in self.calls() if c["tool"] == "replicated" and "node-drain" in c["argv"]]
        self.assertEqual([c["event"] for c in drains], ["start", "end", "start", "end"])
        self.assertEqual([c.get("exit_code") for c in drains if c["event"] == "end"], [0, 0])

    def test_drain_exit_code(self):
        self.write_knobs(drain_exit_code=4, drain_duration_s=0)
        r = self.rep("admin", "--tty=0", "node-drain", rc=4)
        self.assertEqual(r.stdout, "Draining node...\n")
        dr = self.state_json("drain.json")
        self.assertEqual((dr["drains_started"], dr["drains_completed"], dr["drains_failed"]), (1, 0, 1))

    def test_drain_sigterm_exits_immediately(self):
        self.write_knobs(drain_duration_s=60)
        p = subprocess.Popen([REP, "admin", "--tty=0", "node-drain"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env, text=True)
        self.assertEqual(p.stdout.readline(), "Draining node...\n")
        t0 = time.time()
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=5)
        self.assertLess(time.time() - t0, 2)
        self.assertEqual(p.returncode, 143)
        p.stdout.close()
        p.stderr.close()
        dr = self.state_json("drain.json")
        self.assertEqual((dr["drains_started"], dr["drains_completed"], dr["drains_interrupted"]), (1, 0, 1))
        end = [c for c in self.calls() if c["event"] == "end" and "node-drain" in c["argv"]]
        self.assertEqual((end[0]["exit_code"], end[0]["signal"]), (143, "SIGTERM"))

    def test_concurrent_drains_are_all_counted(self):
        self.write_knobs(drain_duration_s=0.2)
        ps = [subprocess.Popen([REP, "admin", "--tty=0", "node-drain"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env) for _ in range(6)]
        self.assertEqual([p.wait(timeout=20) for p in ps], [0] * 6)
        dr = self.state_json("drain.json")
        self.assertEqual((dr["drains_started"], dr["drains_completed"]), (6, 6))

    def test_list_nodes_and_iact(self):
        self.assertEqual(self.rep("admin", "--tty=0", "list-nodes").stdout, "10.0.1.5\n")
        self.assertEqual(self.rep("admin", "--tty=0", "retrieve-iact").stdout, "87c07f934a979d9e071dc30bdc570dd4\n")
        self.assertEqual(self.rep("admin", "retrieve-iact").stdout, "")  # no TTY flag in automation: empty
        self.assertEqual(self.rep("admin", "-t", "retrieve-iact").stdout, "87c07f934a979d9e071dc30bdc570dd4\r\n")


class TestIactWithoutUserToken(Base):
    def test_generated_token(self):
        self.write_settings({k: v for k, v in SETTINGS.items() if k != "user_token"})
        self.install()
        tok = self.rep("--tty=0", "admin", "retrieve-iact").stdout
        self.assertRegex(tok, r"^[A-Za-z0-9]{32}\n$")
        self.assertEqual(self.rep("admin", "--tty=0", "retrieve-iact").stdout, tok)


class TestAppConfigExport(Base):
    def test_export(self):
        self.install()
        out = self.ctl("app-config", "export").stdout
        obj = json.loads(out)
        self.assertEqual(list(obj), sorted(obj))
        self.assertIn('\n  "hostname": {\n    "value": "tfe.example.com"\n  },\n', out)
        self.assertIn('"value": "sslmode=require\\u0026connect_timeout=5"', out)  # Go escapes &
        self.assertEqual(obj["redis_host"], {})
        self.assertEqual(obj["enc_password"], {"value": "767fee4e6046de48943df2decc55f3cd"})
        for hidden in ("user_token", "root_secret", "install_id"):
            self.assertNotIn(hidden, obj)
        obj = json.loads(self.ctl("app-config", "export", "--hidden").stdout)
        self.assertEqual(obj["user_token"], {"value": "87c07f934a979d9e071dc30bdc570dd4"})
        self.assertEqual(obj["install_id"], {})
        self.assertEqual(self.ctl("app-config", "export", "--template", "{{ .enc_password.Value }}").stdout,
                         "767fee4e6046de48943df2decc55f3cd\n")


class TestOverridesAndHangs(Base):
    def setUp(self):
        super().setUp()
        self.install()

    def test_stdout_override_by_command_prefix_with_raw_bytes(self):
        self.write_knobs(stdout_override={"replicatedctl system": "not json \udcff\n",
                                          "replicated health-check": ""})
        r = subprocess.run([CTL, "system", "status", "-o", "json"], env=self.env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, timeout=20)
        self.assertEqual((r.returncode, r.stdout), (0, b"not json \xff\n"))
        self.assertEqual(self.rep("admin", "--tty=0", "health-check").stdout, "")
        # Other commands are untouched, and every call is still logged.
        self.assertEqual(self.app()["State"], "started")
        self.assertEqual([c["argv"] for c in self.calls() if c["event"] == "start"][-3:],
                         [["system", "status", "-o", "json"], ["admin", "--tty=0", "health-check"],
                          ["app", "status"]])

    def test_command_keys(self):
        k = faketfe.command_key
        self.assertEqual(k("replicated", ["admin", "--tty=0", "health-check"]), "replicated health-check")
        self.assertEqual(k("replicated", ["--tty=0", "admin", "node-drain"]), "replicated node-drain")
        self.assertEqual(k("replicatedctl", ["app", "status", "-o", "json"]), "replicatedctl app status")
        self.assertEqual(k("install.sh", ["no-proxy"]), "install.sh")
        self.assertTrue(faketfe.knob_for(["replicatedctl"], "replicatedctl app status"))
        self.assertIsNone(faketfe.knob_for(["replicatedctl app"], "replicatedctl apps"))

    def test_hang_blocks_with_a_child_in_the_same_process_group(self):
        self.write_knobs(hang=["replicatedctl system status"])
        p = subprocess.Popen([CTL, "system", "status"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=self.env, start_new_session=True)
        pids = os.path.join(self.state, "hang-children.pids")

        def read_pids():
            try:
                with open(pids) as f:
                    return f.read()
            except FileNotFoundError:
                return ""
        try:
            for _ in range(100):
                if read_pids().endswith("\n"):
                    break
                time.sleep(0.05)
            child = int(read_pids().split()[-1])
            self.assertEqual(os.getpgid(child), p.pid)
            with self.assertRaises(subprocess.TimeoutExpired):
                p.wait(timeout=0.3)
            self.assertEqual(self.ctl("app", "status").returncode, 0)  # only the named command hangs
        finally:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)

    def test_override_and_hang_knobs_are_type_checked(self):
        self.write_knobs(stdout_override={"replicatedctl": 5})
        self.assertEqual(self.ctl("version", rc=None).returncode, 70)
        self.write_knobs(stdout_override={}, hang="replicatedctl")
        self.assertEqual(self.ctl("version", rc=None).returncode, 70)


class TestCallsLog(Base):
    def test_calls_jsonl(self):
        p = subprocess.Popen(["/bin/bash", INSTALL] + STD_FLAGS, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=self.env)
        p.communicate(timeout=20)
        self.ctl("system", "status")
        calls = self.calls()
        inst = [c for c in calls if c["tool"] == "install.sh"]
        self.assertEqual([c["event"] for c in inst], ["start", "end"])
        self.assertEqual(inst[0]["argv"], STD_FLAGS)
        self.assertEqual(inst[0]["pid"], p.pid)  # install.sh execs python: same pid as the agent's child
        self.assertEqual(inst[1]["exit_code"], 0)
        last = calls[-1]
        self.assertEqual((last["tool"], last["argv"], last["event"]), ("replicatedctl", ["system", "status"],
                                                                       "start"))
        for c in calls:
            self.assertIsInstance(c["t"], float)
            self.assertIsInstance(c["pid"], int)
        self.assertFalse(any("console-pw" in a or "767fee4e" in a for c in calls for a in c["argv"]))

    def test_start_lines_record_the_environment_and_the_parent(self):
        # The parent here is a `sh -c` wrapper, as the agent's node-drain and install wrappers are.
        env = dict(self.env, FAKE_TFE_MARK="mark-of-the-caller")
        r = subprocess.run(["/bin/sh", "-c", '"$0" system status; exit 0', CTL], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        start = [c for c in self.calls() if c["tool"] == "replicatedctl"][-1]
        self.assertEqual(start["env"]["FAKE_TFE_MARK"], "mark-of-the-caller")
        parent = start["parent"]
        self.assertEqual(parent["argv"], ["/bin/sh", "-c", '"$0" system status; exit 0', CTL])
        self.assertEqual(parent["env"]["FAKE_TFE_MARK"], "mark-of-the-caller")
        self.assertIsInstance(parent["pid"], int)
        # A byte that is not UTF-8 in the environment still gives a JSON line (backslashreplace).
        envb = {k.encode(): v.encode() for k, v in self.env.items()}
        envb[b"FAKE_TFE_RAW"] = b"raw-\xff-byte"
        subprocess.run([CTL, "version"], env=envb, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=20)
        self.assertEqual(self.calls()[-1]["env"]["FAKE_TFE_RAW"], "raw-\\xff-byte")

    def test_end_lines_carry_no_environment(self):
        self.install()
        end = [c for c in self.calls() if c["event"] == "end"][-1]
        self.assertNotIn("env", end)
        self.assertNotIn("parent", end)

    def test_concurrent_appends(self):
        self.install()
        ps = [subprocess.Popen([CTL, "app", "status", "--template", "{{.State}} %d" % i], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env)
              for i in range(16)]
        for p in ps:
            p.wait(timeout=20)
        calls = [c for c in self.calls() if c["tool"] == "replicatedctl"]
        self.assertEqual(sorted(c["argv"][-1] for c in calls), sorted("{{.State}} %d" % i for i in range(16)))


class TestUnits(unittest.TestCase):
    """In-process checks of the helpers (no subprocess)."""

    def test_template_subset(self):
        r = faketfe.render_template
        st = faketfe.GoMap({"Replicated": "ready", "Retraced": "initializing"})
        self.assertEqual(r('{{and (eq .Replicated "ready") (eq .Retraced "ready")}}', st), "false")
        self.assertEqual(r('{{or (eq .Replicated "x") .Retraced}}', st), "initializing")
        self.assertEqual(r("{{.Replicated}}/{{ .Retraced }}", st), "ready/initializing")
        self.assertEqual(r("{{.SystemStatus}}", st), "<no value>")
        self.assertEqual(r('{{- .Replicated -}} x {{- "y" }}', st), "readyxy")
        self.assertEqual(r('{{.Replicated | eq "ready"}}', st), "true")
        app = faketfe.GoStruct("*types.AppStatus", State="started", IsTransitioning=False)
        self.assertEqual(r("{{.State}} {{not .IsTransitioning}}", app), "started true")
        with self.assertRaises(faketfe.TemplateError):
            r("{{.Nope}}", app)
        with self.assertRaises(faketfe.TemplateError):
            r("{{nofunc .State}}", app)

    def test_params_typing(self):
        p = faketfe.parse_params_text
        self.assertIsNone(p('{"ReleaseSequence": 504, "Unknown": [1]}')[1])
        self.assertEqual(p('{"ReleaseSequence": "504"}')[1],
                         "json: cannot unmarshal string into Go struct field Params.ReleaseSequence of type int")
        self.assertIn("number 504.5", p('{"ReleaseSequence": 504.5}')[1])
        self.assertIn("of type string", p('{"ImportSettingsFrom": 1}')[1])

    def test_rfc3339nano(self):
        self.assertEqual(faketfe.rfc3339nano(1610054111.5), "2021-01-07T21:15:11.5Z")
        self.assertEqual(faketfe.rfc3339nano(1610054111.0), "2021-01-07T21:15:11Z")


if __name__ == "__main__":
    unittest.main()
