#!/usr/bin/env bash
# The guest image for the end-to-end tier: a Debian bookworm root filesystem (mmdebstrap) with
# systemd, cloud-init 22.4 and python3, prepared to stand in for a TFE AMI without the agent:
#  - docker.service and the three replicated*.service units as stand-ins (oneshot, RemainAfterExit)
#    whose ExecStop logs "e2e stand-in <unit> stopping", so the journal shows when each stops;
#  - a `replicated` system user (the AMI provides it: see "Known limit" in the README);
#  - cloud-init restricted to the NoCloud seed (it must never probe 169.254.169.254), no apt
#    sources (the test's user data adds its loopback repo), an empty fstab (an nspawn guest must
#    not remount the host's root), C.UTF-8 locale, an empty machine-id.
#
# Prints the rootfs path. Cached under $TFE_E2E_CACHE (default /var/cache/tfe-node-agent-e2e), keyed
# by this file's sha256: a change to the recipe builds a new image; `rm -rf` the cache for newer
# bookworm packages. The image never holds the agent or the fake TFE tools: each run lays those
# over it (overlayfs), so the image does not depend on the build.
#
# Needs root, mmdebstrap and network access to deb.debian.org (tests/setup.sh installs the tools).
set -euo pipefail
cache="${TFE_E2E_CACHE:-/var/cache/tfe-node-agent-e2e}"
mirror="${TFE_E2E_MIRROR:-http://deb.debian.org/debian}"
key=$(sha256sum "$0" | cut -c1-16)
out="$cache/bookworm-$key"

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ -f "$out/ready" ]; then
  echo "$out/rootfs"
  exit 0
fi
rm -rf "$out" "$out.tmp"
mkdir -p "$out.tmp"
R="$out.tmp/rootfs"
start=$(date +%s)
echo "image.sh: building the bookworm guest image in $out (about a minute)" >&2
mmdebstrap --variant=minbase --quiet \
  --include=systemd-sysv,udev,dbus,cloud-init,python3,passwd,procps,iproute2,ca-certificates \
  --dpkgopt=force-unsafe-io --aptopt='Acquire::Languages "none"' \
  bookworm "$R" "$mirror" >&2

for unit in docker replicated replicated-ui replicated-operator; do
  cat >"$R/etc/systemd/system/$unit.service" <<EOF
[Unit]
Description=e2e stand-in for $unit.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/echo "e2e stand-in $unit.service started"
ExecStop=/bin/echo "e2e stand-in $unit.service stopping"
[Install]
WantedBy=multi-user.target
EOF
  ln -sf "/etc/systemd/system/$unit.service" "$R/etc/systemd/system/multi-user.target.wants/$unit.service"
done

chroot "$R" useradd --system --no-create-home --shell /usr/sbin/nologin replicated
cat >"$R/etc/cloud/cloud.cfg.d/90-e2e.cfg" <<'EOF'
# e2e: only the NoCloud seed the test writes; never a network datasource.
datasource_list: [NoCloud, None]
EOF
# Timers that would run apt against the test's repo at random moments.
for t in apt-daily.timer apt-daily-upgrade.timer; do ln -sf /dev/null "$R/etc/systemd/system/$t"; done
: >"$R/etc/apt/sources.list"
rm -f "$R"/etc/apt/sources.list.d/*
echo LANG=C.UTF-8 >"$R/etc/default/locale"
: >"$R/etc/fstab"
: >"$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id" "$R/etc/hostname"
mkdir -p "$R/var/log/journal"
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/*

mv "$out.tmp" "$out"
touch "$out/ready"
echo "image.sh: built in $(($(date +%s) - start)) s" >&2
echo "$out/rootfs"
