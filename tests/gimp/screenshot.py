"""Makes docs/dialog.png: the Style Transfer dialog in GIMP 3.0.4 (the Debian 13 tree), opened
over an image with a photo layer and a painting layer, with a finished preview, the plug-in
installed by install.py as in the end-to-end tests (so the weights are random: the preview shows
the plumbing, not real style transfer). Not part of the test run; needs root and
`tests/gimp/make-tree.sh trixie`.

    python3 -m tests.gimp.screenshot [OUT.png]      (from the repository root)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from .session import REPO, GimpSession
from .tree import Tree


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else REPO / "docs" / "dialog.png"
    tree = Tree("trixie")
    reason = tree.missing_reason()
    if reason:
        print(reason, file=sys.stderr)
        return 1
    session = GimpSession(tree)
    try:
        session.set_up()
        found = session.run_gui("gui_preview.py", "dialog shot", timeout=600,
                                NST_PREVIEW_MODE="shot",
                                NST_PREVIEW_DUMP_DIR=f"{session.work}/previews")
        shot = tree.host_path(f"{session.work}/dialog-shot.json.shot.png")
        dialog = found.get("shot", {})
        if dialog.get("driver", {}).get("capture_rc") != 0 or not shot.is_file():
            print(f"no picture of the dialog: {found}\n{session.log[-1]}", file=sys.stderr)
            return 1
        shutil.copyfile(shot, out)
        print(f"wrote {out} (dialog closed with: {dialog.get('status')}; the preview is made "
              "with random weights)")
        return 0
    finally:
        session.tear_down()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
