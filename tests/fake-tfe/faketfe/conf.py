"""/etc/replicated.conf (Go struct Params) and the settings file it imports (docs/design/tfe-tools.md §2,
§3): parsing with Go's typing, readability by the `replicated` user, and the daemon's checks at first start."""

import json
import os
import pwd
import re


def _gotype(v):
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


PARAM_TYPES = {
    "ReleaseSequence": "int",
    "BypassPreflightChecks": "bool",
    "ForceUseImportedSettings": "bool",
    "RemoveImportSettingsFrom": "bool",
}
for _k in ("DaemonAuthenticationType DaemonAuthenticationPassword TlsBootstrapType TlsBootstrapHostname "
           "TlsBootstrapCert TlsBootstrapKey ImportSettingsFrom LicenseFileLocation "
           "LicenseBootstrapAirgapPackagePath LicenseBootstrapChannelID LogLevel DaemonToken DockerHubUsername "
           "DockerHubPassword LocalAddress HttpProxy SnapshotsStore SnapshotsPath SnapshotsS3Bucket "
           "SnapshotsAWSRegion SnapshotsAWSKeyID SnapshotsAWSSecretKey SnapshotsAWSServerSideEncryption "
           "SnapshotsAWSSSEKMSKeyID SnapshotsSFTPHost SnapshotsSFTPUsername SnapshotsSFTPPrivateKeyPEM").split():
    PARAM_TYPES[_k] = "string"


def parse_params_text(text):
    """Go json.Unmarshal into struct Params. Returns (params_dict or None, go_error or None)."""
    try:
        obj = json.loads(text)
    except ValueError as e:
        return None, "invalid character in JSON: %s" % e
    if not isinstance(obj, dict):
        return None, "json: cannot unmarshal %s into Go value of type main.Params" % _gotype(obj)
    for k, v in obj.items():
        want = PARAM_TYPES.get(k)
        if want is None or v is None:
            continue  # unknown keys are ignored by encoding/json; null leaves the zero value
        if want == "int":
            ok = isinstance(v, int) and not isinstance(v, bool)
            if not ok and isinstance(v, float) and v.is_integer():
                ok = False  # 504.0: Go refuses floats for int fields
            if not ok:
                t = "number %s" % json.dumps(v) if isinstance(v, float) else _gotype(v)
                return obj, "json: cannot unmarshal %s into Go struct field Params.%s of type int" % (t, k)
        elif want == "bool" and not isinstance(v, bool):
            return obj, "json: cannot unmarshal %s into Go struct field Params.%s of type bool" % (_gotype(v), k)
        elif want == "string" and not isinstance(v, str):
            return obj, "json: cannot unmarshal %s into Go struct field Params.%s of type string" % (_gotype(v), k)
    return obj, None


def conf_parse_error(knobs):
    """What the replicated CLI prints when it re-reads a badly typed /etc/replicated.conf (docs/design/tfe-tools.md §2)."""
    try:
        with open(knobs["replicated_conf"], encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    _p, err = parse_params_text(text)
    return err


def readable_by_replicated(path, knobs):
    """None if the (non-root) replicated user could read `path`, else an error string."""
    try:
        st = os.stat(path)
    except OSError as e:
        return "open %s: %s" % (path, os.strerror(e.errno).lower())
    if not os.path.isfile(path):
        return "read %s: is a directory" % path if os.path.isdir(path) else "open %s: not a regular file" % path
    if not os.access(path, os.R_OK):
        return "open %s: permission denied" % path
    if not knobs["enforce_file_permissions"]:
        return None
    mode = st.st_mode & 0o777
    if mode & 0o004:
        return None
    try:
        pw = pwd.getpwnam(knobs["replicated_user"])
        uid, gids = pw.pw_uid, {pw.pw_gid} | set(os.getgrouplist(pw.pw_name, pw.pw_gid))
    except KeyError:
        uid, gids = None, set()
    if uid is not None and st.st_uid == uid and mode & 0o400:
        return None
    if st.st_gid in gids and mode & 0o040:
        return None
    return ("open %s: permission denied (mode %04o, owner uid %d: not readable by the %r user the replicated "
            "container runs as; use 0644, or 0600 owned by %s)"
            % (path, mode, st.st_uid, knobs["replicated_user"], knobs["replicated_user"]))


HIDDEN_ITEMS = {
    "install_id", "root_secret", "user_token", "archivist_token", "cookie_hash", "internal_api_token",
    "registry_session_encryption_key", "registry_session_secret_key",
}
# Config items of the TFE app that `app-config export` lists even when unset (shown as {}). [INF] subset of §3.2.
KNOWN_ITEMS = set("""
hostname production_type installation_type enable_active_active enc_password disk_path capacity_concurrency
capacity_memory capacity_cpus tbw_image custom_image_tag enable_metrics_collection pg_user pg_password pg_dbname
pg_netloc pg_extra_params placement aws_instance_profile aws_access_key_id aws_secret_access_key s3_bucket
s3_region s3_endpoint s3_sse s3_sse_kms_key_id azure_account_name azure_container azure_account_key azure_endpoint
azure_use_msi azure_client_id gcs_credentials gcs_project gcs_bucket redis_host redis_port redis_use_password_auth
redis_pass redis_use_tls iact_subnet_list iact_subnet_time_limit trusted_proxies extra_no_proxy hairpin_addressing
force_tls restrict_worker_metadata_access tls_vers tls_ciphers ca_certs log_forwarding_enabled log_forwarding_config
metrics_endpoint_enabled metrics_endpoint_port_http metrics_endpoint_port_https extern_vault_enable extern_vault_addr
extern_vault_role_id extern_vault_secret_id extern_vault_path extern_vault_token_renew extern_vault_namespace
extern_vault_propagate vault_path vault_store_snapshot
""".split()) | HIDDEN_ITEMS


def parse_settings_text(text, path):
    """Settings file (§3.1). Returns (settings {key: str}, errors)."""
    try:
        obj = json.loads(text)
    except ValueError as e:
        return None, ["failed to parse settings file %s: %s" % (path, e)]
    if not isinstance(obj, dict):
        return None, ["failed to parse settings file %s: json: cannot unmarshal %s into Go value of type "
                      "map[string]ConfigItem" % (path, _gotype(obj))]
    errors, settings = [], {}
    for k in sorted(obj):
        item = obj[k]
        if not isinstance(item, dict):
            errors.append('settings file %s: item "%s": json: cannot unmarshal %s into Go value of type ConfigItem '
                          '(want {"value": "<string>"})' % (path, k, _gotype(item)))
            continue
        extra = set(item) - {"value", "data"}
        if extra:
            errors.append('settings file %s: item "%s": unexpected field(s) %s (want {"value": "<string>"})'
                          % (path, k, ", ".join(sorted(extra))))
        if "value" not in item:
            errors.append('settings file %s: item "%s" has no "value"' % (path, k))
            continue
        v = item["value"]
        if not isinstance(v, str):
            errors.append('settings file %s: item "%s": json: cannot unmarshal %s into Go struct field '
                          'ConfigItem.value of type string (all values must be strings)' % (path, k, _gotype(v)))
            continue
        if "data" in item and not isinstance(item["data"], str):
            errors.append('settings file %s: item "%s": "data" must be a string' % (path, k))
        settings[k] = v
    return settings, errors


def check_daemon_config(knobs, release_sequence_flag):
    """The fake daemon's first start: read replicated.conf and everything it points to (§2, §3, §8.2).

    Returns dict(errors=[...], params=dict|None, settings=dict|None, release_sequence=int|None).
    """
    res = {"errors": [], "params": None, "settings": None, "release_sequence": None, "settings_path": None}
    errs = res["errors"]
    conf = knobs["replicated_conf"]
    try:
        with open(conf, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        errs.append("open %s: %s" % (conf, os.strerror(e.errno).lower()))
        return res
    params, perr = parse_params_text(text)
    if perr:
        errs.append("Error parsing config file: %s" % perr)
        return res
    res["params"] = params
    rs = params.get("ReleaseSequence")
    if rs is None and release_sequence_flag not in (None, ""):
        if re.fullmatch(r"[0-9]+", release_sequence_flag):
            rs = int(release_sequence_flag)
        else:
            errs.append('invalid RELEASE_SEQUENCE "%s" (from install.sh release-sequence=): not an integer'
                        % release_sequence_flag)
    res["release_sequence"] = rs

    dat = params.get("DaemonAuthenticationType")
    if dat is not None and dat not in ("anonymous", "password"):
        errs.append('DaemonAuthenticationType must be "anonymous" or "password" (got "%s")' % dat)
    if dat == "password" and not params.get("DaemonAuthenticationPassword"):
        errs.append('DaemonAuthenticationType is "password" but DaemonAuthenticationPassword is empty')

    tls = params.get("TlsBootstrapType")
    if tls is not None:
        if tls not in ("self-signed", "server-path", "key-cert"):
            errs.append('TlsBootstrapType must be one of "self-signed", "server-path", "key-cert" (got "%s")' % tls)
        elif tls == "server-path":
            if not params.get("TlsBootstrapHostname"):
                errs.append('TlsBootstrapHostname is required with TlsBootstrapType "server-path"')
            for k in ("TlsBootstrapCert", "TlsBootstrapKey"):
                p = params.get(k)
                if not p:
                    errs.append('%s is required with TlsBootstrapType "server-path"' % k)
                else:
                    e = readable_by_replicated(p, knobs)
                    if e:
                        errs.append("%s: %s" % (k, e))
        elif tls == "key-cert":
            for k in ("TlsBootstrapCert", "TlsBootstrapKey"):
                if "-----BEGIN" not in (params.get(k) or ""):
                    errs.append('%s must hold an inline PEM with TlsBootstrapType "key-cert"' % k)

    airgap = params.get("LicenseBootstrapAirgapPackagePath")
    if airgap:
        if "ReleaseSequence" in params:
            errs.append("ReleaseSequence must be omitted with LicenseBootstrapAirgapPackagePath")
        e = readable_by_replicated(airgap, knobs)
        if e:
            errs.append("LicenseBootstrapAirgapPackagePath: %s" % e)

    lic = params.get("LicenseFileLocation")
    if lic is not None:
        e = readable_by_replicated(lic, knobs)
        if e:
            errs.append("LicenseFileLocation: %s" % e)

    sp = params.get("ImportSettingsFrom")
    if not sp:
        errs.append("ImportSettingsFrom is not set: application settings were not imported "
                    "(the console would prompt for configuration)")
    elif not os.path.isabs(sp):
        errs.append('ImportSettingsFrom must be an absolute path (got "%s")' % sp)
    else:
        res["settings_path"] = sp
        e = readable_by_replicated(sp, knobs)
        if e:
            errs.append("ImportSettingsFrom: %s" % e)
        else:
            with open(sp, encoding="utf-8") as f:
                settings, serrs = parse_settings_text(f.read(), sp)
            errs.extend(serrs)
            if settings is not None:
                for k in ("hostname", "enc_password"):
                    if not settings.get(k):
                        errs.append('required config item "%s" is not set in %s' % (k, sp))
                if settings.get("enable_active_active") != "1":
                    errs.append('config item "enable_active_active" must be "1" (got %s) in %s'
                                % (json.dumps(settings.get("enable_active_active")), sp))
                res["settings"] = settings
    return res
