"""The Vagrant lab as far as the default suite can check it: the Vagrantfile validates for
every mode and director count and lays out the namespace lab's addresses, the provisioning
scripts (the same ones `pyvs lab` runs in its namespaces, see
test_live.py) and the box's build scripts pass shellcheck, and the box holds every package
the scripts install.  Booting the VMs is scripts/vagrant-smoke.sh's job (minutes, not
seconds)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pyvs.lab import netns

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


@pytest.mark.parametrize("mode,directors", [("nat", "1"), ("dr", "1"), ("tun", "1"),
                                            ("nat", "2"), ("dr", "2")])
def test_vagrantfile_validates(mode: str, directors: str) -> None:
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed (Debian: vagrant vagrant-libvirt)")
    plugins = subprocess.run(["vagrant", "plugin", "list"], capture_output=True, text=True,
                             cwd=VAGRANT).stdout
    # with vagrant-libvirt a plain validate also checks the libvirt provider's settings;
    # without any provider only --ignore-provider can validate
    cmd = ["vagrant", "validate"] + ([] if "vagrant-libvirt" in plugins else ["-p"])
    proc = subprocess.run(cmd, cwd=VAGRANT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYVS_MODE": mode, "PYVS_REALSERVERS": "3",
                               "PYVS_DIRECTORS": directors})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Vagrantfile validated successfully." in proc.stdout


def test_vagrantfile_rejects_a_bad_mode() -> None:
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed (Debian: vagrant vagrant-libvirt)")
    proc = subprocess.run(["vagrant", "validate", "-p"], cwd=VAGRANT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYVS_MODE": "nat2"})
    assert proc.returncode != 0
    assert 'PYVS_MODE must be nat, dr or tun (got "nat2")' in proc.stdout + proc.stderr


@pytest.mark.parametrize("env,message", [
    ({"PYVS_DIRECTORS": "3"}, 'PYVS_DIRECTORS must be 1 or 2 (got "3")'),
    ({"PYVS_DIRECTORS": "2", "PYVS_MODE": "tun"},
     "PYVS_DIRECTORS=2: the director pair runs NAT or DR, not TUN (PYVS_MODE=nat or dr)")])
def test_vagrantfile_rejects_a_bad_director_count(env: dict, message: str) -> None:
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed (Debian: vagrant vagrant-libvirt)")
    proc = subprocess.run(["vagrant", "validate", "-p"], cwd=VAGRANT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})
    assert (proc.returncode, proc.stdout.strip() + proc.stderr.strip()) == (1, message)


# Vagrant prints no machine list without a provider to ask, so this stands in for
# Vagrant.configure and records what the Vagrantfile defines: each machine's lab networks
# (address, libvirt network) and its provisioning environment
RECORDER = """
require "json"
class Rec
  def initialize(machines, name) @machines, @name = machines, name end
  def define(name)
    @machines[name] = { "networks" => [], "env" => {} }
    yield Rec.new(@machines, name)
  end
  def network(kind, **o)
    @machines[@name]["networks"] << [o[:ip], o[:libvirt__network_name]] if kind == "private_network"
  end
  def provision(_kind, **o) @machines[@name]["env"] = o[:env] end
  def provider(*) end
  def method_missing(*) self end
  def respond_to_missing?(*) true end
end
module Vagrant
  def self.configure(_)
    machines = {}
    yield Rec.new(machines, nil)
    puts JSON.generate(machines)
  end
end
load "Vagrantfile"
"""


def layout(mode: str, directors: str) -> dict:
    if shutil.which("ruby") is None:
        pytest.skip("ruby is not installed (Debian: ruby, which vagrant needs)")
    proc = subprocess.run(["ruby", "-e", RECORDER], cwd=VAGRANT, capture_output=True,
                          text=True, timeout=60, check=True,
                          env={**os.environ, "PYVS_MODE": mode, "PYVS_DIRECTORS": directors,
                               "PYVS_REALSERVERS": "1"})
    return json.loads(proc.stdout)


@pytest.mark.parametrize("mode", ["nat", "dr"])
def test_vagrantfile_director_pair_is_the_namespace_lab_s(mode: str) -> None:
    """PYVS_DIRECTORS=2: director2 at the namespace lab's second-director addresses, the
    same floating addresses (the VMs' lab interfaces are eth1, eth2 where the namespaces
    have eth0, eth1), master and backup sync daemons on the client-side interface, the
    client reaching the VIP on its segment, NAT's realservers routing via the floating
    inside gateway."""
    state = {**netns.layout(mode, 1, 1), "directors": 2}
    if mode == "nat":
        state["dip"] = netns.INSIDE_GATEWAY
    pair = netns.directors(state)
    vm_dev = {"eth0": "eth1", "eth1": "eth2"}
    floating = " ".join(f"{vm_dev[dev]}={addr}" for dev, addr in netns.floating(state))
    net = {"eth0": "pyvs-client" if mode == "nat" else "pyvs-lan", "eth1": "pyvs-rs"}
    common = {"PYVS_MODE": mode, "PYVS_VIP": state["vip"], "PYVS_DIP": state["dip"],
              "PYVS_INIT": "systemd", "PYVS_PROJECT": "/vagrant", "PYVS_IFACE": "eth1"}
    want = {d["host"]: {"networks": [[d[dev], net[dev]] for dev in ("eth0", "eth1") if d[dev]],
                        "env": {**common, "PYVS_VIP_IFACE": "eth1", "PYVS_REALSERVERS": "1",
                                "PYVS_FLOATING": floating, "PYVS_VRRP_STATE": state_,
                                "PYVS_SYNC_IFACE": "eth1"}}
            for d, state_ in zip(pair, ("master", "backup"))}
    want["rs1"] = {"networks": [[state["realservers"][0], net["eth1" if mode == "nat" else
                                                                "eth0"]]],
                   "env": {**common, "PYVS_NAME": "rs1", "PYVS_CLIENT_NET":
                           "198.51.100.0/24" if mode == "nat" else "default"}}
    want["client"] = {"networks": [[state["clients"][0], net["eth0"]]],
                      "env": {**common, "PYVS_GATEWAY": state["gateway"],
                              "PYVS_VIP_ONLINK": "1"}}
    assert layout(mode, "2") == want


def test_vagrantfile_one_director_has_no_pair_settings() -> None:
    got = layout("nat", "1")
    assert list(got) == ["director", "rs1", "client"]
    assert got["director"]["env"] == {
        "PYVS_MODE": "nat", "PYVS_VIP": "198.51.100.100", "PYVS_DIP": "192.0.2.1",
        "PYVS_INIT": "systemd", "PYVS_PROJECT": "/vagrant", "PYVS_IFACE": "eth1",
        "PYVS_VIP_IFACE": "eth1", "PYVS_REALSERVERS": "1"}
    assert got["client"]["env"]["PYVS_VIP_ONLINK"] == ""


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


NETNS = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                           reason="needs root and unshare (util-linux) for a network namespace")
# a lab interface in a fresh network namespace: one end of a veth pair
VETH = ("ip link add eth1 type veth peer name peer1 && ip addr add {addr}/24 dev eth1 && "
        "ip link set eth1 up && ip link set peer1 up && ")


def in_netns(setup: str, script: str, after: str = "", **env: str):
    return subprocess.run(
        ["unshare", "-n", "bash", "-c", f"{setup}bash {PROVISION / script} && {after}:"],
        env={"PATH": os.environ["PATH"], "PYVS_INIT": "none", "PYVS_IFACE": "eth1", **env},
        capture_output=True, text=True, timeout=30)


@NETNS
def test_client_of_a_director_pair_reaches_the_vip_on_its_segment() -> None:
    """PYVS_VIP_ONLINK=1: the route a one-director layout left via the director goes, so
    the client ARPs for the VIP and follows its holder."""
    proc = in_netns(VETH.format(addr="203.0.113.2") + "ip route add 203.0.113.100/32 via "
                    "203.0.113.1 && ", "client.sh", "ip -4 route show && ",
                    PYVS_MODE="dr", PYVS_VIP="203.0.113.100", PYVS_GATEWAY="203.0.113.1",
                    PYVS_VIP_ONLINK="1")
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0, "provision[client.sh]: client ready: VIP 203.0.113.100 on the segment (held by "
           "the active director)\n203.0.113.0/24 dev eth1 proto kernel scope link src "
           "203.0.113.2 \n", "")


@NETNS
def test_client_of_a_director_pair_refuses_a_vip_off_its_segment() -> None:
    proc = in_netns(VETH.format(addr="198.51.100.2"), "client.sh", PYVS_MODE="dr",
                    PYVS_VIP="203.0.113.100", PYVS_VIP_ONLINK="1")
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        1, "", "provision[client.sh]: the VIP 203.0.113.100 is not on a segment of this host "
               "(ip route get 203.0.113.100)\n")


@NETNS
def test_director_refuses_a_bad_vrrp_state() -> None:
    proc = in_netns(VETH.format(addr="203.0.113.1"), "director.sh", PYVS_MODE="dr",
                    PYVS_VIP="203.0.113.100", PYVS_VRRP_STATE="primary")
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        1, "", "provision[director.sh]: PYVS_VRRP_STATE must be master or backup "
               "(got 'primary')\n")


@NETNS
def test_director_of_a_pair_leaves_the_vip_to_the_vrrp_transition() -> None:
    """NAT with PYVS_FLOATING: provisioning puts no VIP on the client-side interface (only
    the active director holds it, pyvs.lab.vrrp puts it there); without, it does."""
    setup = VETH.format(addr="198.51.100.1")
    env = {"PYVS_MODE": "nat", "PYVS_VIP": "198.51.100.100", "PYVS_VIP_IFACE": "eth1"}
    pair = in_netns(setup, "director.sh", "ip -4 -o addr show dev eth1 | wc -l && ", **env,
                    PYVS_FLOATING="eth1=198.51.100.100 eth2=192.0.2.100")
    one = in_netns(setup, "director.sh", "ip -4 -o addr show dev eth1 | wc -l && ", **env)
    assert pair.returncode == one.returncode == 0, pair.stderr + one.stderr
    assert pair.stdout.splitlines()[-3:] == [
        "provision[director.sh]: floating with the active director: eth1=198.51.100.100 "
        "eth2=192.0.2.100", "provision[director.sh]: director ready (nat, VIP 198.51.100.100)",
        "1"]
    assert one.stdout.splitlines()[-3:] == [
        "provision[director.sh]: VIP 198.51.100.100 on eth1",
        "provision[director.sh]: director ready (nat, VIP 198.51.100.100)", "2"]
