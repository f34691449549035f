#!/usr/bin/env bash
# fake-tfe install.sh: stands in for the Replicated/TFE install.sh (docs/design/tfe-tools.md §1). The agent runs it as
# `/bin/bash <path> <flags...>`. All logic lives in the faketfe package (found next to this script, after
# resolving symlinks, or in $FAKE_TFE_HOME); `exec` keeps this process's pid and process group.
if [ -z "${FAKE_TFE_STATE:-}" ]; then
    echo "fake-tfe: FAKE_TFE_STATE is not set" >&2
    exit 70
fi
_self="${BASH_SOURCE[0]}"
_dir="$(cd "$(dirname "$(readlink -f "$_self" 2>/dev/null || echo "$_self")")" && pwd)"
_pkg="${FAKE_TFE_HOME:+$FAKE_TFE_HOME/faketfe}"
if [ -z "$_pkg" ] || [ ! -f "$_pkg/__main__.py" ]; then
    _pkg="$_dir/faketfe"
fi
if [ ! -f "$_pkg/__main__.py" ]; then
    echo "fake-tfe: cannot find the faketfe package (looked in \$FAKE_TFE_HOME and $_dir)" >&2
    exit 70
fi
exec /usr/bin/env python3 -S "$_pkg" install.sh "$@"
