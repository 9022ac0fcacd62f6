"""Run one kernel-lab scenario inside the guest and record what the kernel showed.

    python3 runner.py SCENARIO.json OUTDIR

Python 3 standard library only (the guest has python3 and nothing else): the host turns the
scenario's YAML into JSON.  The runner builds the namespaces (a switch holding the bridges,
the client, one or two directors, the realservers running peers.py), applies the sysctls and
the ipvsadm commands in their order, starts the captures, runs the timeline and, at each
observation point, records every listing with time.time() taken just before and just after
the command (the clock tcpdump stamps packets with).  OUTDIR gets record.json and the
captures.

Commands run in a namespace by setns(2) on the runner itself, then fork/exec: one exec per
command instead of `ip netns exec`'s two, which matters under software emulation.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLONE_NEWNET = 0x40000000
LIBC = ctypes.CDLL(None, use_errno=True)
ROOT_NS = os.open("/proc/self/ns/net", os.O_RDONLY)
MODULES = ("ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_sh ip_vs_dh ip_vs_sed ip_vs_nq "
           "ip_vs_fo ip_vs_ovf ip_vs_mh ip_vs_lblc ip_vs_lblcr ipip nf_conntrack").split()

# Addresses, as the pyvs namespace lab lays them out.  NAT: clients and VIP on the front
# segment, realservers behind the director on the back segment.  DR/TUN: one segment.
LAYOUT = {
    "nat": {"front": "198.51.100", "back": "192.0.2", "vip": "198.51.100.100"},
    "dr": {"front": "203.0.113", "back": None, "vip": "203.0.113.100"},
    "tun": {"front": "203.0.113", "back": None, "vip": "203.0.113.100"},
}
DIRECTOR_HOST = {1: 1, 2: 254}          # last octet of director N on each segment

VIEWS = [                               # (name, argv or /proc path), in the order taken
    ("/proc/net/ip_vs_conn", None), ("/proc/net/ip_vs", None),
    ("/proc/net/ip_vs_stats", None),
    ("-L -n -c", ["ipvsadm", "-L", "-n", "-c"]),
    ("-L -n", ["ipvsadm", "-L", "-n"]),
    ("-L -n --stats --exact", ["ipvsadm", "-L", "-n", "--stats", "--exact"]),
    ("-L -n --rate", ["ipvsadm", "-L", "-n", "--rate"]),
    ("-L -n --persistent-conn", ["ipvsadm", "-L", "-n", "--persistent-conn"]),
    ("-L -n --timeout", ["ipvsadm", "-L", "-n", "--timeout"]),
    ("-S -n", ["ipvsadm", "-S", "-n"]),
]
SYNC_VIEWS = [("/proc/net/ip_vs_conn_sync", None), ("-L --daemon", ["ipvsadm", "-L", "--daemon"])]


class Lab:
    def __init__(self, scenario: dict, out: Path) -> None:
        self.sc = scenario
        self.out = out
        topo = scenario.get("topology", {})
        self.mode = topo.get("mode", "nat")
        self.nets = LAYOUT[self.mode]
        self.ndirectors = topo.get("directors", 1)
        self.nrs = topo.get("realservers", 2)
        self.nclients = topo.get("clients", 1)
        self.hosts = (["c"] + [f"d{i}" for i in range(1, self.ndirectors + 1)]
                      + [f"r{i}" for i in range(1, self.nrs + 1)])
        self.procs: list[subprocess.Popen] = []
        self.captures: dict[str, dict] = {}
        self.client: subprocess.Popen | None = None
        self.record: dict = {"scenario": scenario, "log": []}

    # -- namespaces ------------------------------------------------------------------
    def enter(self, ns: str | None) -> None:
        fd = ROOT_NS if ns is None else os.open(f"/run/netns/{ns}", os.O_RDONLY)
        if LIBC.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        if ns is not None:
            os.close(fd)

    def sh(self, ns: str | None, cmd: str | list[str], check: bool = True) -> dict:
        argv = shlex.split(cmd) if isinstance(cmd, str) else cmd
        self.enter(ns)
        try:
            t0 = time.time()
            p = subprocess.run(argv, capture_output=True, text=True)
            t1 = time.time()
        finally:
            self.enter(None)
        res = {"host": ns, "argv": argv, "t0": t0, "t1": t1, "rc": p.returncode,
               "out": p.stdout, "err": p.stderr}
        if check and p.returncode != 0:
            raise RuntimeError(f"{ns}: {' '.join(argv)}: {p.stderr.strip()}")
        return res

    def read(self, ns: str, path: str) -> dict:
        self.enter(ns)
        try:
            t0 = time.time()
            try:
                text, rc = Path(path).read_text(), 0
            except OSError as exc:
                text, rc = str(exc), 1
            t1 = time.time()
        finally:
            self.enter(None)
        return {"host": ns, "argv": ["cat", path], "t0": t0, "t1": t1, "rc": rc, "out": text,
                "err": ""}

    def write_sysctl(self, ns: str, name: str, value: str) -> dict:
        path = "/proc/sys/" + name.replace(".", "/")
        self.enter(ns)
        try:
            t0 = time.time()
            Path(path).write_text(f"{value}\n")
            t1 = time.time()
        finally:
            self.enter(None)
        return {"host": ns, "sysctl": f"{name}={value}", "t0": t0, "t1": t1, "rc": 0}

    def popen(self, ns: str, argv: list[str], **kw) -> subprocess.Popen:
        self.enter(ns)
        try:
            p = subprocess.Popen(argv, **kw)
        finally:
            self.enter(None)
        self.procs.append(p)
        return p

    def veth(self, ns: str, ifname: str, bridge: str, addrs: list[str]) -> None:
        outer = f"{ns}-{ifname}"
        self.sh(None, f"ip link add {outer} type veth peer name {ifname} netns {ns}")
        self.sh(None, f"ip link set {outer} netns sw")
        self.sh("sw", f"ip link set {outer} master {bridge} up")
        for a in addrs:
            self.sh(ns, f"ip addr add {a} dev {ifname}")
        self.sh(ns, f"ip link set {ifname} up")

    def build(self) -> None:
        created = self.record["netns_created"] = {}
        for ns in ["sw"] + self.hosts:
            res = self.sh(None, f"ip netns add {ns}")
            created[ns] = [res["t0"], res["t1"]]    # the estimator's phase starts here
            self.sh(ns, "ip link set lo up")
            for knob in ("all", "default"):
                self.write_sysctl(ns, f"net.ipv6.conf.{knob}.disable_ipv6", "1")
        front, back, vip = self.nets["front"], self.nets["back"], self.nets["vip"]
        bridges = ["front"] + (["back"] if back else [])
        for br in bridges:
            self.sh("sw", f"ip link add {br} type bridge mcast_snooping 0")
            self.sh("sw", f"ip link set {br} up")
        self.veth("c", "eth0", "front",
                  [f"{front}.{2 + i}/24" for i in range(self.nclients)])
        for n in range(1, self.ndirectors + 1):
            d, h = f"d{n}", DIRECTOR_HOST[n]
            addrs = [f"{front}.{h}/24"] + ([f"{vip}/32"] if n == 1 else [])
            self.veth(d, "eth0", "front", addrs)
            if back:
                self.veth(d, "eth1", "back", [f"{back}.{h}/24"])
            self.write_sysctl(d, "net.ipv4.ip_forward", "1")
        for i in range(1, self.nrs + 1):
            r = f"r{i}"
            if self.mode == "nat":
                self.veth(r, "eth0", "back", [f"{back}.{10 + i}/24"])
                self.sh(r, f"ip route add default via {back}.1")
            else:
                self.veth(r, "eth0", "front", [f"{front}.{10 + i}/24"])
                for knob in ("all", "eth0"):
                    self.write_sysctl(r, f"net.ipv4.conf.{knob}.arp_ignore", "1")
                    self.write_sysctl(r, f"net.ipv4.conf.{knob}.arp_announce", "2")
                if self.mode == "dr":
                    self.sh(r, f"ip addr add {vip}/32 dev lo")
                else:
                    self.sh(r, f"ip addr add {vip}/32 dev tunl0")
                    self.sh(r, "ip link set tunl0 up")
                    for knob in ("all", "default", "tunl0", "eth0"):
                        self.write_sysctl(r, f"net.ipv4.conf.{knob}.rp_filter", "0")
        for i in range(1, self.nrs + 1):
            p = self.popen(f"r{i}", [sys.executable, str(HERE / "peers.py"), "server", f"r{i}"],
                           stdout=subprocess.PIPE, text=True)
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        self.client = self.popen("c", [sys.executable, str(HERE / "peers.py"), "client"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    # -- configuration -----------------------------------------------------------------
    def directors_of(self, item: dict) -> list[str]:
        d = item.get("director", "all")
        if d == "all":
            return [f"d{n}" for n in range(1, self.ndirectors + 1)]
        return [f"d{d}"]

    def configure(self) -> None:
        rec = self.record
        rec["defaults"] = {d: self.vs_sysctls(d) for d in self.directors_of({})}
        for d in self.directors_of({}):
            for name, value in self.sc.get("sysctls", {}).items():
                rec["log"].append(self.write_sysctl(d, f"net.ipv4.vs.{name}", str(value)))
        for step in self.sc.get("setup", []):
            rec["log"].append(self.sh(step.get("host", "d1"), step["cmd"]))
        for item in self.sc.get("ipvsadm", []):
            item = item if isinstance(item, dict) else {"cmd": item}
            for d in self.directors_of(item):
                rec["log"].append(self.sh(d, ["ipvsadm", *shlex.split(item["cmd"])]))

    def vs_sysctls(self, ns: str) -> dict:
        self.enter(ns)
        try:
            base = Path("/proc/sys/net/ipv4/vs")
            return {p.name: p.read_text().strip() for p in sorted(base.iterdir())
                    if p.stat().st_mode & 0o444}
        finally:
            self.enter(None)

    def capture(self, name: str, ns: str, iface: str, expr: list[str]) -> None:
        path = self.out / f"{name}.pcap"
        argv = ["tcpdump", "-i", iface, "-s", "0", "-U", "-n", "-Z", "root", "-w", str(path),
                *expr]
        p = self.popen(ns, argv, stderr=subprocess.PIPE, text=True)
        assert p.stderr is not None
        lines: list[str] = []                    # "tcpdump: listening on ..., link-type ..."
        while not lines or "listening on" not in lines[-1]:
            lines.append(p.stderr.readline().strip())
            if not lines[-1] or len(lines) > 5:
                raise RuntimeError(f"{ns}: tcpdump: {' '.join(lines)}")
        self.captures[name] = {"file": path.name, "host": ns, "argv": argv,
                               "started": lines, "timestamps": "tcpdump default (-j not given)",
                               "proc": p}

    def start_captures(self) -> None:
        self.capture("director", "d1", "any", [])
        self.capture("client", "c", "eth0", [])
        if self.ndirectors > 1:
            self.capture("sync", "d2", "eth0", ["udp", "port", "8848"])

    def stop_captures(self) -> None:
        for cap in self.captures.values():
            p = cap.pop("proc")
            p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=20)
            cap["summary"] = err.strip().splitlines()

    # -- timeline ----------------------------------------------------------------------
    def client_op(self, op: dict) -> dict:
        assert self.client is not None and self.client.stdin and self.client.stdout
        self.client.stdin.write(json.dumps(op) + "\n")
        self.client.stdin.flush()
        return json.loads(self.client.stdout.readline())

    def src(self, ev: dict) -> str:
        return f"{self.nets['front']}.{1 + ev.get('src', 1)}"

    def do(self, ev: dict) -> dict:
        vip = ev.get("dst", self.nets["vip"])
        if "observe" in ev:
            return {"observe": ev["observe"], "commands": self.observe()}
        if "connect" in ev:
            op = {"op": "connect", "id": ev["connect"], "src": self.src(ev), "dst": vip,
                  "port": ev.get("port", 80), "wait": ev.get("wait", True)}
            if "sport" in ev:
                op["sport"] = ev["sport"]
            return self.client_op(op)
        if "send" in ev:
            return self.client_op({"op": "send", "id": ev["send"],
                                   "data": ev.get("data", "GET / HTTP/1.0\r\n\r\n")})
        if "close" in ev:
            return self.client_op({"op": "close", "id": ev["close"]})
        if "rst" in ev:
            return self.client_op({"op": "rst", "id": ev["rst"]})
        if "udp" in ev:
            op = {"op": "udp", "id": ev["udp"], "src": self.src(ev), "dst": vip,
                  "port": ev.get("port", 53), "data": ev.get("data", "query")}
            if "sport" in ev:
                op["sport"] = ev["sport"]
            return self.client_op(op)
        if "ipvsadm" in ev:
            return {"results": [self.sh(d, ["ipvsadm", *shlex.split(ev["ipvsadm"])], check=False)
                                for d in self.directors_of(ev)]}
        if "sysctl" in ev:
            name, value = ev["sysctl"].split("=", 1)
            return {"results": [self.write_sysctl(d, f"net.ipv4.vs.{name.strip()}", value.strip())
                                for d in self.directors_of(ev)]}
        if "exec" in ev:
            return self.sh(ev.get("host", "d1"), ev["exec"], check=False)
        raise ValueError(f"unknown timeline event {ev}")

    def observe(self) -> list[dict]:
        out = []
        for n in range(1, self.ndirectors + 1):
            d = f"d{n}"
            views = VIEWS + (SYNC_VIEWS if self.ndirectors > 1 else [])
            if self.sc.get("observe_conntrack"):
                views = views + [("conntrack -L", ["conntrack", "-L"])]
            for name, argv in views:
                res = self.read(d, name) if argv is None else self.sh(d, argv, check=False)
                res["view"] = name
                out.append(res)
        for h in self.hosts:
            res = self.sh(h, ["ss", "-tuan"], check=False)
            res["view"] = "ss -tuan"
            out.append(res)
        return out

    def run_timeline(self) -> None:
        events = sorted(self.sc.get("timeline", []), key=lambda e: e["t"])
        start = time.time()
        self.record["start"] = start
        done = []
        for ev in events:
            delay = start + ev["t"] - time.time()
            if delay > 0:
                time.sleep(delay)
            t0 = time.time()
            res = self.do(ev)
            done.append({"event": ev, "t0": t0, "t1": time.time(), "result": res})
        self.record["timeline"] = done

    def teardown(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for ns in self.hosts + ["sw"]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def guest_facts() -> dict:
    def out(argv: list[str]) -> str:
        p = subprocess.run(argv, capture_output=True, text=True)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    hz = ""
    for line in Path(f"/boot/config-{platform.release()}").read_text().splitlines():
        if line.startswith("CONFIG_HZ="):
            hz = line.split("=")[1]
    return {"kernel": platform.release(), "kernel_version": platform.version(),
            "ipvsadm": out(["ipvsadm", "-v"]), "tcpdump": out(["tcpdump", "--version"]),
            "iproute2": out(["ip", "-V"]), "python": platform.python_version(),
            "hz": int(hz) if hz else None, "clock": "time.time() (CLOCK_REALTIME) in the guest",
            "cpus": os.cpu_count()}


def main() -> int:
    scenario = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for m in MODULES:
        subprocess.run(["modprobe", m], check=True)
    lab = Lab(scenario, out)
    lab.record["guest"] = guest_facts()
    try:
        lab.teardown()
        t = time.time()
        lab.build()
        lab.configure()
        lab.start_captures()
        lab.record["setup_seconds"] = time.time() - t
        lab.run_timeline()
        lab.stop_captures()
        lab.record["captures"] = lab.captures
    finally:
        lab.teardown()
    (out / "record.json").write_text(json.dumps(lab.record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
