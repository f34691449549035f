# tfe-node-agent %postun ($1: 0 = removal, 1 = upgrade): let systemd forget the removed or
# replaced unit file. agent.toml (written by cloud-init, not owned by the package) is kept.
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || :
fi
if [ "$1" -eq 0 ]; then
  # Only when empty: an agent.toml left there stays.
  rmdir /etc/tfe-node-agent 2>/dev/null || :
fi
exit 0
