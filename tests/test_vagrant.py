"""The Vagrant lab as far as the default suite can check it: the Vagrantfile validates for
every mode, the provisioning scripts (the same ones `pyvs lab` runs in its namespaces, see
test_live.py) and the box's build scripts pass shellcheck, and the box holds every package
the scripts install.  Booting the VMs is scripts/vagrant-smoke.sh's job (minutes, not
seconds)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

VAGRANT = Path(__file__).resolve().parents[1] / "vagrant"
PROVISION = Path(__file__).resolve().parents[1] / "pyvs" / "data" / "provision"
SCRIPTS = sorted(PROVISION.glob("*.sh"))
BOX = VAGRANT / "box"


def test_provisioning_scripts_pass_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian: shellcheck)")
    assert {p.name for p in SCRIPTS} == {"common.sh", "director.sh", "realserver.sh",
                                         "client.sh"}
    proc = subprocess.run(["shellcheck", "-x", *map(str, SCRIPTS)], cwd=PROVISION,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_box_scripts_pass_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian: shellcheck)")
    scripts = [BOX / "build.sh", BOX / "configure.sh", BOX / "install-grub",
               VAGRANT.parent / "scripts" / "vagrant-smoke.sh"]
    proc = subprocess.run(["shellcheck", "-x", *map(str, scripts)], cwd=BOX,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_box_holds_every_package_provisioning_installs() -> None:
    """Provisioning in the pyvs box must need no network (in DR the lab segment may hide
    the mirror), so every `install_packages` of the scripts is in the box's list."""
    text = (BOX / "build.sh").read_text()
    box = {p for line in re.findall(r"^packages=(?:\$packages,)?(\S+)$", text, re.M)
           for p in line.split(",")}
    wanted = {p for script in SCRIPTS
              for line in re.findall(r"^\s*install_packages (.+?)(?:\s+#.*)?$",
                                     script.read_text(), re.M)
              for p in line.split()}
    assert {"curl", "python3-venv", "libnetfilter-queue-dev", "openssh-server",
            "sudo", "rsync"} <= box
    assert wanted and not wanted - box, f"not in the box: {sorted(wanted - box)}"


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


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare (util-linux) for a network namespace")
def test_provisioning_refuses_an_unconfigured_lab_interface() -> None:
    """A VM whose lab interface Vagrant did not configure (seen when a `vagrant up` resumed
    a half-created VM) must stop at once with the reason, not route via nowhere."""
    env = {"PATH": os.environ["PATH"], "PYVS_MODE": "nat", "PYVS_VIP": "198.51.100.100",
           "PYVS_GATEWAY": "198.51.100.1", "PYVS_INIT": "none", "PYVS_IFACE": "eth1"}
    proc = subprocess.run(["unshare", "-n", "bash", str(PROVISION / "client.sh")], env=env,
                          capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        1, "", "provision[client.sh]: the lab interface eth1 has no IPv4 address "
               "(PYVS_IFACE; ip -br addr)\n")
