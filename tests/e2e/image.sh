#!/usr/bin/env bash
# Usage: image.sh [nspawn|vm|qemu-tools]   (default nspawn)
#
# The guest image for the end-to-end tier: a Debian bookworm root filesystem (mmdebstrap) with
# systemd, cloud-init 22.4 and python3, prepared to stand in for a TFE AMI without the agent:
#  - docker.service and the three replicated*.service units as stand-ins (oneshot, RemainAfterExit)
#    whose ExecStop logs "e2e stand-in <unit> stopping", so the journal shows when each stops;
#  - a `replicated` system user (the AMI provides it: see "Known limit" in docs/operate/files.md);
#  - cloud-init restricted to the NoCloud seed (it must never probe 169.254.169.254), no apt
#    sources (the test's user data adds its loopback repo), an empty fstab (an nspawn guest must
#    not remount the host's root), C.UTF-8 locale, an empty machine-id.
#
# `vm` adds the cloud kernel, a small initrd (virtio + ext4) and systemd-networkd with DHCP, for the
# QEMU scenario (tests/e2e_qemu.rs), and copies vmlinuz and initrd.img next to the rootfs.
# `qemu-tools` is not a guest: a bookworm root holding qemu-system-x86 and netcat, which the QEMU
# scenario runs through chroot, because this machine kind's backported qemu-utils conflicts with
# bookworm's qemu-system-x86 and the host's packages are left alone.
#
# Prints the image's directory (rootfs/ in it). Cached under $TFE_E2E_CACHE (default
# /var/cache/tfe-node-agent-e2e), keyed by the variant and this file's sha256: a change to the
# recipe builds a new image; `rm -rf` the cache for newer bookworm packages. A guest image never
# holds the agent or the fake TFE tools: each run lays those over it, so it does not depend on the
# build.
#
# Needs root, mmdebstrap and the Debian mirror the host's own apt uses (tests/setup.sh installs the
# tools). The mirror is TFE_E2E_MIRROR when set, else the first Debian archive in the host's apt
# sources (deb822 `URIs:` or a one-line `deb URL bookworm …` entry), so no mirror is written here.
set -euo pipefail
cache="${TFE_E2E_CACHE:-/var/cache/tfe-node-agent-e2e}"

host_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # The URIs of a stanza whose Suites include bookworm (not -security: another archive).
    awk 'BEGIN{RS=""} /Suites:[^\n]*bookworm( |$|\n|-updates)/ { if (match($0, /URIs:[ \t]*[^ \t\n]+/)) { u=substr($0, RSTART, RLENGTH); sub(/URIs:[ \t]*/, "", u); if (u !~ /security/) { print u; exit } } }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" && $3 == "bookworm" && $2 !~ /security/ { print $2; exit }' "$f"
  done
}
mirror="${TFE_E2E_MIRROR:-$(host_mirror | head -n1)}"
if [ -z "$mirror" ]; then
  echo "image.sh: no Debian bookworm archive in the host's apt sources; set TFE_E2E_MIRROR" >&2
  exit 1
fi
variant="${1:-nspawn}"
case "$variant" in nspawn | vm | qemu-tools) ;; *) echo "image.sh: unknown variant $variant" >&2; exit 2 ;; esac
key=$(sha256sum "$0" | cut -c1-16)
out="$cache/bookworm-$variant-$key"

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ -f "$out/ready" ]; then
  echo "$out"
  exit 0
fi
rm -rf "$out" "$out.tmp"
mkdir -p "$out.tmp"
R="$out.tmp/rootfs"
start=$(date +%s)
echo "image.sh: building the bookworm $variant image in $out (about a minute)" >&2
include=systemd-sysv,udev,dbus,cloud-init,python3,passwd,procps,iproute2,ca-certificates
hooks=()
case "$variant" in
  vm)
    include="$include,linux-image-cloud-amd64"
    # Only what a virtio disk with ext4 needs: a 6 MB initrd instead of 36 MB.
    hooks=(--essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d"; echo MODULES=list > "$1/etc/initramfs-tools/conf.d/e2e.conf"; printf "virtio_pci\nvirtio_blk\next4\n" >> "$1/etc/initramfs-tools/modules"')
    ;;
  # Without Recommends: 54 packages instead of 312 (a GUI).
  qemu-tools) include=qemu-system-x86,qemu-utils,netcat-openbsd hooks=(--aptopt='APT::Install-Recommends "false"') ;;
esac
mmdebstrap --variant=minbase --quiet --include="$include" "${hooks[@]}" \
  --dpkgopt=force-unsafe-io --aptopt='Acquire::Languages "none"' \
  bookworm "$R" "$mirror" >&2

if [ "$variant" = qemu-tools ]; then
  mv "$out.tmp" "$out"
  touch "$out/ready"
  echo "image.sh: built in $(($(date +%s) - start)) s" >&2
  echo "$out"
  exit 0
fi

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

if [ "$variant" = vm ]; then
  # nspawn skips networkd (no CAP_NET_ADMIN there); in the VM it gets the QEMU user network's lease.
  mkdir -p "$R/etc/systemd/network"
  printf '[Match]\nName=en* eth*\n[Network]\nDHCP=ipv4\n' >"$R/etc/systemd/network/80-e2e-dhcp.network"
  chroot "$R" systemctl enable systemd-networkd.service >/dev/null 2>&1
  cp "$R"/boot/vmlinuz-* "$out.tmp/vmlinuz"
  cp "$R"/boot/initrd.img-* "$out.tmp/initrd.img"
fi

mv "$out.tmp" "$out"
touch "$out/ready"
echo "image.sh: built in $(($(date +%s) - start)) s" >&2
echo "$out"
