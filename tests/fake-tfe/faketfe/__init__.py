"""fake-tfe: fake versions of the Replicated-era TFE tools (install.sh, replicatedctl, replicated).

Stdlib only. Behaviour follows docs/design/tfe-tools.md (sections 1-5 and 8); see README.md
next to this package for the knobs, the state files and which behaviours are [INF] choices.

There is no background daemon: the fake "Replicated daemon" is a set of JSON files in $FAKE_TFE_STATE and
every query (system status, app status, health-check, ...) computes the current state from those files,
the current time and the knobs in behaviour.json (re-read at every invocation).

One module per tool (install, replicatedctl, admin for `replicated admin`) over shared parts: state (knobs,
state files, calls.jsonl), procs (process helpers), conf (replicated.conf and the settings file), daemon
(the fake daemon), gotext (Go-style output and templates), cli (flag parsing); dispatch runs one call.

Entry points: the wrappers install.sh / replicatedctl / replicated next to this package, or
`python3 -S path/to/faketfe install.sh|replicatedctl|replicated ARGS...` (__main__.py).
"""

from .conf import parse_params_text
from .dispatch import command_key, knob_for, main
from .gotext import GoMap, GoStruct, TemplateError, render_template, rfc3339nano

__all__ = ["GoMap", "GoStruct", "TemplateError", "command_key", "knob_for", "main", "parse_params_text",
           "render_template", "rfc3339nano"]
