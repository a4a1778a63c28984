"""What using and developing the package costs: wheel size, ``cps-tiles --help`` time, test tiers.

    python benchmarks/package.py                     # writes benchmarks/package.md
    python benchmarks/package.py --before REV        # also builds the wheel of commit REV

The wheel is built with ``pip wheel --no-deps``; ``--help`` is timed in fresh interpreters (best
and median of 7); the test tiers are the README's default run and the slow tier ``.ci/run`` adds,
each in one fresh pytest process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, git_rev, machine, md_table  # noqa: E402


def wheel(source: Path, out: Path) -> tuple[int, int, int]:
    """(wheel bytes, unpacked bytes, bytes under cps_tiles/codecs) of the wheel built from ``source``."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)], check=True,
                   capture_output=True)
    (path,) = out.glob("cps_tiles-*.whl")
    infos = zipfile.ZipFile(path).infolist()
    return (path.stat().st_size, sum(i.file_size for i in infos),
            sum(i.file_size for i in infos if i.filename.startswith("cps_tiles/codecs/")))


def wheel_of_commit(rev: str, tmp: Path) -> tuple[int, int, int]:
    src = tmp / "src"
    subprocess.run(["git", "worktree", "add", "--detach", str(src), rev], cwd=ROOT, check=True, capture_output=True)
    try:
        return wheel(src, tmp / "before")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(src)], cwd=ROOT, check=True, capture_output=True)


def help_seconds(runs: int = 7) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cps_tiles.cli", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def pytest_seconds(*args: str) -> tuple[float, str]:
    """Wall time of one pytest run in the repository and its closing line."""
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=ROOT,
                       capture_output=True, text=True)
    return time.perf_counter() - t, r.stdout.strip().splitlines()[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", help="a commit whose wheel to measure too")
    p.add_argument("--no-tests", action="store_true", help="skip the test-tier timings")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "package.md")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        if a.before:
            rows.append([f"commit {a.before}", *(f"{b / 1e6:.1f} MB" for b in wheel_of_commit(a.before, Path(tmp)))])
        rows.append([f"this tree ({git_rev()})", *(f"{b / 1e6:.1f} MB" for b in wheel(ROOT, Path(tmp) / "now"))])
    best, median = help_seconds()
    parts = [
        "# Package: wheel size, start-up, test tiers\n",
        f"Command: `python benchmarks/package.py{' --before ' + a.before if a.before else ''}` (commit {git_rev()}); "
        f"machine: {machine()}.\n",
        "## Wheel\n",
        md_table(["built from", "wheel", "unpacked", "of it, codecs"], rows) + "\n",
        "## `cps-tiles --help`\n",
        f"Fresh interpreter, 7 runs: best {best:.2f} s, median {median:.2f} s (imports no torch, zarr or dask: "
        "`tests/test_architecture.py`).\n",
    ]
    if not a.no_tests:
        fast, fast_line = pytest_seconds()
        slow, slow_line = pytest_seconds("-m", "slow")
        parts += ["## Test tiers\n",
                  md_table(["run", "command", "wall time", "result"],
                           [["default", "`python -m pytest -q`", f"{fast / 60:.1f} min", fast_line],
                            ["slow tier", "`python -m pytest -q -m slow`", f"{slow / 60:.1f} min", slow_line]]) + "\n",
                  "`.ci/run` runs both (`--slow`) with the full hypothesis profile, after `scripts/setup.sh` and "
                  "`ruff check`.\n"]
    a.out.write_text("\n".join(parts))
    print(a.out.read_text())


if __name__ == "__main__":
    main()
