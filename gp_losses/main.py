"""Search entry point: `python -m scoop [-n W] gp_losses/main.py --task pose [...]`.

SCOOP starts scripts, not modules: `gp_losses/main.py COMMAND ...` runs any other `gp-losses`
command under it too, e.g. `python -m scoop -n 2 gp_losses/main.py retrain RUN_DIR`.

Run as a script, the directory of this file would come first on sys.path; the repository root
replaces it so that `gp_losses`, `primitives` and `tasks` import as packages.
"""

import os
import sys

if __package__ in (None, ""):
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.path.insert(0, os.path.dirname(_here))

from gp_losses.cli import main, search_main  # noqa: E402
from gp_losses.sandbox import fork_starter_from_here  # noqa: E402

fork_starter_from_here()  # in every SCOOP process: each imports this script first
if __name__ == "__main__":
    command = sys.argv[1:2] and not sys.argv[1].startswith("-")
    code = main(sys.argv[1:]) if command else search_main()
    if code:  # SCOOP prints a traceback for any SystemExit, even exit(0): raise only on failure
        sys.exit(code)
