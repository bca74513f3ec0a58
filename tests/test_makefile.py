"""The Makefile's set-up steps print a line, not pages: what apt says goes to a log, shown
only when it fails. (apt-get here is a stand-in script first on PATH: nothing is installed.)"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from .conftest import ROOT


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("make"), reason="`make browser` installs only as root")
@pytest.mark.parametrize("apt_fails", [False, True])
def test_installing_chromium_is_one_line_unless_it_fails(tmp_path, apt_fails):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    apt_get = fake_bin / "apt-get"
    apt_get.write_text('#!/bin/sh\nfor i in $(seq 300); do echo "apt-get $1: line $i"; done\n'
                       + ("exit 100\n" if apt_fails else ""))
    apt_get.chmod(0o755)
    log = tmp_path / "logs" / "apt.log"
    result = subprocess.run(["make", "-s", "--no-print-directory", "browser", f"CHROMIUM={tmp_path / 'none'}",
                             f"APT_LOG={log}"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr  # without chromium the browser tests skip, saying why
    shown = result.stdout.splitlines() + result.stderr.splitlines()
    logged = log.read_text().splitlines()
    if apt_fails:  # the update failed: its output is shown, then what it means
        assert len(logged) == 300 and all(line in shown for line in logged)
        assert shown[-1] == "could not install chromium: the browser tests will be skipped"
    else:
        assert len(logged) == 600 and "apt-get install: line 300" in logged
        assert shown == [f"installing chromium for the browser tests (log: {log})"]
