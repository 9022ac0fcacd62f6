"""The Vagrant lab as far as this machine can check it: the Vagrantfile validates for every
mode, and the provisioning scripts (the same ones `pyvs lab` runs in its namespaces, see
test_live.py) pass shellcheck.  No VM can boot here."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

VAGRANT = Path(__file__).resolve().parents[1] / "vagrant"
PROVISION = Path(__file__).resolve().parents[1] / "pyvs" / "data" / "provision"
SCRIPTS = sorted(PROVISION.glob("*.sh"))


def test_provisioning_scripts_pass_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian: shellcheck)")
    assert {p.name for p in SCRIPTS} == {"common.sh", "director.sh", "realserver.sh",
                                         "client.sh"}
    proc = subprocess.run(["shellcheck", "-x", *map(str, SCRIPTS)], cwd=PROVISION,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("mode", ["nat", "dr", "tun"])
def test_vagrantfile_validates(mode: str) -> None:
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed (Debian: vagrant vagrant-libvirt)")
    plugins = subprocess.run(["vagrant", "plugin", "list"], capture_output=True, text=True,
                             cwd=VAGRANT).stdout
    # with vagrant-libvirt a plain validate also checks the libvirt provider's settings;
    # without any provider only --ignore-provider can validate
    cmd = ["vagrant", "validate"] + ([] if "vagrant-libvirt" in plugins else ["-p"])
    proc = subprocess.run(cmd, cwd=VAGRANT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYVS_MODE": mode, "PYVS_REALSERVERS": "3"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Vagrantfile validated successfully." in proc.stdout


def test_vagrantfile_rejects_a_bad_mode() -> None:
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed (Debian: vagrant vagrant-libvirt)")
    proc = subprocess.run(["vagrant", "validate", "-p"], cwd=VAGRANT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYVS_MODE": "nat2"})
    assert proc.returncode != 0
    assert 'PYVS_MODE must be nat, dr or tun (got "nat2")' in proc.stdout + proc.stderr


def test_provisioning_fails_loudly_on_bad_input(tmp_path) -> None:
    env = {"PATH": os.environ["PATH"], "PYVS_MODE": "nat2", "PYVS_VIP": "10.0.0.1"}
    proc = subprocess.run(["bash", str(PROVISION / "client.sh")], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "PYVS_MODE must be nat, dr or tun (got 'nat2')" in proc.stderr
