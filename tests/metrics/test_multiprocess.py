"""The supervisor's metrics directory: wiped at start, made and removed when not given, orphans removed."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from server.metrics.multiprocess import ENV, PREFIX, MultiprocessDir, metrics_enabled, worker_metrics_dir


def test_one_worker_or_metrics_off_needs_no_directory() -> None:
    assert worker_metrics_dir({}, 1) is None
    assert worker_metrics_dir({"CROUPIER_METRICS": "off"}, 4) is None
    assert metrics_enabled({}) and metrics_enabled({"CROUPIER_METRICS": "1"})
    assert not metrics_enabled({"CROUPIER_METRICS": "0"})


def test_a_given_directory_is_wiped_and_kept(tmp_path: Path) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("not ours")
    given = MultiprocessDir({ENV: str(tmp_path)})
    assert given.env() == {ENV: str(tmp_path)}
    assert not (tmp_path / "counter_123.db").exists()
    given.close()
    assert (tmp_path / "notes.txt").exists()


def test_a_directory_of_its_own_is_removed_and_so_are_those_of_dead_supervisors() -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    orphan = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{dead}-"))
    made = MultiprocessDir({})
    assert made.path.is_dir() and made.path.name.startswith(PREFIX)
    assert not orphan.exists()
    made.close()
    assert not made.path.exists()
