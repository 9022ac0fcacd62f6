"""Replay: where a capture was taken must not change the table it gives.

One HTTP/1.0 exchange, written as four captures: the client's, and `tcpdump -i any` on
the director in NAT (each packet before and after the rewrite) and in DR (each client
packet twice, received and forwarded unchanged but for the TTL)."""

import json

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import CookedLinux, Ether
from scapy.utils import wrpcap

from pyvs.cli import main

CLIENT, VIP, RS = "198.51.100.2", "198.51.100.100", "192.0.2.11"
PACKET_HOST, PACKET_OUTGOING = 0, 4

# (seconds, from client?, flags, payload): client <-> VIP as the client sees it
EXCHANGE = [
    (0.000, True, "S", b""), (0.001, False, "SA", b""), (0.002, True, "A", b""),
    (0.003, True, "PA", b"GET / HTTP/1.0\r\n\r\n"), (0.010, False, "PA", b"x" * 300),
    (0.011, False, "FA", b""), (0.012, True, "A", b""), (0.013, True, "FA", b""),
    (0.014, False, "A", b""),
]


def packet(src, sport, dst, dport, flags, payload, ident, ttl=64):
    return IP(src=src, dst=dst, id=ident, ttl=ttl) / TCP(
        sport=sport, dport=dport, flags=flags, seq=1000 + ident, ack=5000 + ident,
        window=502) / payload


def captures():
    """{name: frames}, each frame with its capture time."""
    out = {"client": [], "nat-director": [], "dr-director": []}

    def add(name, t, frame):
        frame.time = 1700000000 + t
        out[name].append(frame)

    for i, (t, from_client, flags, payload) in enumerate(EXCHANGE):
        if from_client:
            p = packet(CLIENT, 40000, VIP, 80, flags, payload, i)
            add("client", t, Ether() / p)
            add("nat-director", t, CookedLinux(pkttype=PACKET_HOST, proto=0x800) / p)
            add("nat-director", t + 5e-5, CookedLinux(pkttype=PACKET_OUTGOING, proto=0x800)
                / packet(CLIENT, 40000, RS, 80, flags, payload, i, ttl=63))
            add("dr-director", t, CookedLinux(pkttype=PACKET_HOST, proto=0x800) / p)
            add("dr-director", t + 5e-5, CookedLinux(pkttype=PACKET_OUTGOING, proto=0x800)
                / packet(CLIENT, 40000, VIP, 80, flags, payload, i, ttl=63))
        else:
            p = packet(VIP, 80, CLIENT, 40000, flags, payload, i)
            add("client", t, Ether() / p)
            add("nat-director", t - 5e-5, CookedLinux(pkttype=PACKET_HOST, proto=0x800)
                / packet(RS, 80, CLIENT, 40000, flags, payload, i))
            add("nat-director", t, CookedLinux(pkttype=PACKET_OUTGOING, proto=0x800)
                / packet(VIP, 80, CLIENT, 40000, flags, payload, i, ttl=63))
    return out


def table(tmp_path, capsys, mode, frames, at):
    cfg = tmp_path / f"{mode}.yaml"
    forward = {"nat": "masq", "dr": "route"}[mode]
    cfg.write_text(f"services:\n  - {{protocol: tcp, address: '{VIP}:80', scheduler: rr,\n"
                   f"      realservers: [{{address: '{RS}:80', forward: {forward}}}]}}\n")
    path = tmp_path / "capture.pcap"
    wrpcap(str(path), frames)
    argv = ["replay", str(path), "--config", str(cfg), "--json"]
    for t in at:
        argv += ["--at", str(t)]
    assert main(argv) == 0
    snaps = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for snap in snaps:
        snap.pop("replay")
    return snaps


AT = [0.0025, 0.0125, 2.5, 200]     # counters show as of the last 2 s estimator tick


@pytest.mark.parametrize("mode, outpkts, state", [("nat", 4, "TIME_WAIT"),
                                                  ("dr", 0, "FIN_WAIT")])
def test_director_side_capture_gives_the_client_side_table(tmp_path, capsys, mode, outpkts,
                                                           state):
    """NAT: the rewritten copies are skipped; DR: each forwarded copy is counted once."""
    caps = captures()
    client = table(tmp_path, capsys, mode, caps["client"], AT)
    director = table(tmp_path, capsys, mode, caps[f"{mode}-director"], AT)
    assert director == client
    dest = client[2]["services"][0]["dests"][0]
    assert (dest["stats"]["inpkts"], dest["stats"]["outpkts"]) == (5, outpkts)
    assert client[2]["connections"][0]["state"] == state


def test_a_repeat_after_the_copy_window_is_a_packet_of_its_own(tmp_path, capsys):
    """A SYN retransmitted byte for byte (IP ID 0, no timestamps) 1 s later counts; the
    same SYN 5 ms later is taken for a capture's second copy."""
    syn = packet(CLIENT, 40000, VIP, 80, "S", b"", 0)
    frames = []
    for t in (0.0, 0.005, 1.0):
        frame = Ether() / syn
        frame.time = 1700000000 + t
        frames.append(frame)
    snap = table(tmp_path, capsys, "dr", frames, [2.5])[0]
    assert snap["services"][0]["dests"][0]["stats"]["inpkts"] == 2
