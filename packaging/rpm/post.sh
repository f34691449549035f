# tfe-node-agent %post ($1: 1 = install, 2 = upgrade). Never starts the agent: cloud-init writes
# /etc/tfe-node-agent/agent.toml and runs `systemctl enable --now --no-block tfe-node-agent.service`.
unit=tfe-node-agent.service
# systemd never tightens an existing ConfigurationDirectory, so the package does it.
install -d -o root -g root -m 0700 /etc/tfe-node-agent
chmod 0700 /etc/tfe-node-agent
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || :
  # Upgrade: restart only an agent that was configured, enabled and running. try-restart never
  # starts a stopped unit; --no-block because the unit is ready only once TFE is. A restart during
  # a drain is safe: the agent adopts the running drain.
  if [ "$1" -ge 2 ] && [ -f /etc/tfe-node-agent/agent.toml ] \
    && systemctl is-enabled --quiet "$unit" && systemctl is-active --quiet "$unit"; then
    systemctl try-restart --no-block "$unit" || :
  fi
fi
exit 0
