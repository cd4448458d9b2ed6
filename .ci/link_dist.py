"""Hard-link one installed distribution (its files as its RECORD lists them) from this interpreter's
environment into another virtual environment on the same file system.

The wheel smoke test needs torch in a fresh venv; a second copy costs about 1 GB of disk, which a CI machine
may not have. Linked, the fresh venv holds the very files pip would unpack from the same pinned wheel, and
pip sees the distribution installed. Exits 1 (the caller then installs it the usual way) when the two
environments are on different file systems or the distribution is missing.

    python .ci/link_dist.py torch build/wheel-venv/bin/python
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path


def main(name: str, target_python: str) -> int:
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        print(f"link_dist: {name} is not installed here", file=sys.stderr)
        return 1
    site = Path(subprocess.check_output(
        [target_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    linked = 0
    for rel in dist.files or []:
        src = Path(dist.locate_file(rel))
        if not src.is_file():
            continue
        dst = site / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            dst.unlink()
        try:
            os.link(src, dst)
        except OSError as exc:
            print(f"link_dist: cannot link {src} into {site} ({exc.strerror})", file=sys.stderr)
            return 1
        linked += 1
    print(f"link_dist: {name} {dist.version}: {linked} files linked into {site}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: link_dist.py DISTRIBUTION TARGET_PYTHON")
    sys.exit(main(sys.argv[1], sys.argv[2]))
