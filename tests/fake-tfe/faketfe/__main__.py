"""`python3 -S path/to/faketfe TOOL ARGS...`: how install.sh runs the fakes (its pid stays the agent's
child's). Python puts this directory first on sys.path; the package's parent takes its place, so
the modules are imported as the package `faketfe`."""

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from faketfe import main  # noqa: E402

if len(sys.argv) < 2:
    sys.stderr.write("usage: python3 -S faketfe install.sh|replicatedctl|replicated ARGS...\n")
    sys.exit(2)
sys.exit(main(sys.argv[1], sys.argv[2:]))
