# tfe-node-agent %preun ($1: 0 = removal, 1 = upgrade). On removal, stop and disable the agent
# before its files go; on upgrade, nothing (the new package's %post restarts a running agent).
unit=tfe-node-agent.service
if [ "$1" -eq 0 ]; then
  if [ -d /run/systemd/system ]; then
    # A plain stop makes the agent exit (the node keeps serving); during an ASG termination the
    # agent itself finishes the drain and the hook before it exits.
    systemctl stop "$unit" || :
  fi
  systemctl disable "$unit" >/dev/null 2>&1 || :
fi
exit 0
