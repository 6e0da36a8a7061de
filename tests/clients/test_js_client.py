"""The JavaScript client library (``clients/js``): ``npm test`` there, under Node's test runner.

That builds the TypeScript and runs the library's own tests: unit tests on a scripted socket, the check that
``src/protocol.ts`` still matches ``croupier schema``, and end-to-end tests against a real ``croupier serve``
they start (embedded PostgreSQL, a fresh data dir, 127.0.0.1 only) and stop by PID: both codecs, a node
restart with resume, a bet retried across a reconnect charged once, typed errors, 4401 and 4409.
Skipped, in one line saying why, without Node.js 20+ or without ``npm ci --prefix clients/js``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "js"
TIMEOUT = 240
"""Seconds for the build and the tests (they take about a minute)."""


def _croupier() -> Path:
    return Path(sys.executable).with_name("croupier")


def _skip_reason() -> str | None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node/npm not found: install Node.js 20+ to run the JavaScript client tests (clients/js)"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    major = version.lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < 20:
        return f"node {version or '?'} is too old: the JavaScript client tests need Node.js 20+"
    if not (PACKAGE / "node_modules").is_dir():
        return "clients/js/node_modules missing: run `npm ci --prefix clients/js`"
    if not _croupier().exists():
        return f"no croupier script next to {sys.executable}: install the package (`make test` does)"
    return None


@pytest.mark.timeout(TIMEOUT + 60)
def test_js_client() -> None:
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    npm = shutil.which("npm")
    assert npm is not None
    env = {**os.environ, "CROUPIER_BIN": str(_croupier()), "NO_COLOR": "1", "npm_config_update_notifier": "false"}
    # Its own process group: on a timeout the whole tree (npm, node, the croupier nodes it started) gets SIGTERM,
    # which the tests turn into a clean stop of their nodes.
    with subprocess.Popen(
        [npm, "test"], cwd=PACKAGE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    ) as process:
        try:
            output, _ = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                output, _ = process.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                output, _ = process.communicate()
            pytest.fail(f"npm test (clients/js) took over {TIMEOUT} s:\n{output.decode(errors='replace')[-20000:]}")
    if process.returncode != 0:
        pytest.fail(f"npm test (clients/js) failed ({process.returncode}):\n{output.decode(errors='replace')[-20000:]}")
