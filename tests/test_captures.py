"""Captures as an operator brings them: rotated files, snaplen-cut packets, pcapng with
several interfaces and sections, a DR director's `tcpdump -i any` with offloaded checksums,
and every malformed file answered with one line (file, byte offset, what is wrong)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyvs.cli import main
from pyvs.core.craft import ACK, FIN, PSH, SYN, tcp, udp
from pyvs.core.packet import ip_to_int
from pyvs.drivers import pcap as reader
from pyvs.drivers.pcap import CaptureError, read_captures
from tests import capfiles as cf

ROOT = Path(__file__).resolve().parent.parent
CLIENT, VIP = ip_to_int("198.51.100.2"), ip_to_int("198.51.100.100")
T0 = 1_700_000_000 * cf.NS
MS = 1_000_000


def config(tmp_path: Path, forward: str) -> str:
    path = tmp_path / f"{forward}.yaml"
    path.write_text("services:\n  - {protocol: tcp, address: '198.51.100.100:80', "
                    "scheduler: rr,\n      realservers: [{address: '192.0.2.11:80', forward: "
                    f"{forward}}}, {{address: '192.0.2.12:80', forward: {forward}}}]}}\n"
                    "  - {protocol: udp, address: '198.51.100.100:53', scheduler: rr,\n"
                    f"      realservers: [{{address: '192.0.2.11:53', forward: {forward}}}]}}\n")
    return str(path)


def http(t_ns: int, cport: int, isn: int, body: int = 300, close: bool = True
         ) -> list[tuple[int, bytes, bool]]:
    """One HTTP/1.0 exchange, client side: (ns, packet, from the client?).  Each side's IP
    IDs count up per segment, as a Linux socket's do."""
    c, s = isn, 5_000_000 + isn
    req = b"GET / HTTP/1.0\r\n\r\n"
    resp = b"x" * body
    ids = {True: 100, False: 200}
    steps = [(0, True, SYN, c, 0, b""), (1, False, SYN | ACK, s, c + 1, b""),
             (2, True, ACK, c + 1, s + 1, b""), (3, True, PSH | ACK, c + 1, s + 1, req),
             (5, False, PSH | ACK, s + 1, c + 1 + len(req), resp)]
    if close:
        steps += [(6, True, FIN | ACK, c + 1 + len(req), s + 1 + body, b""),
                  (7, False, FIN | ACK, s + 1 + body, c + 2 + len(req), b""),
                  (8, True, ACK, c + 2 + len(req), s + 2 + body, b"")]
    out = []
    for ms, from_client, flags, seq, ack, payload in steps:
        ids[from_client] += 1
        if from_client:
            pkt = tcp(CLIENT, cport, VIP, 80, flags, seq, ack, payload, ident=ids[True])
        else:
            pkt = tcp(VIP, 80, CLIENT, cport, flags, seq, ack, payload, ident=ids[False])
        out.append((t_ns + ms * MS, pkt, from_client))
    return out


def traffic(n: int = 6, body: int = 300) -> list[tuple[int, bytes, bool]]:
    pkts = []
    for i in range(n):
        pkts += http(T0 + i * 700 * MS, 40000 + i, 1000 * (i + 1), body)
    pkts += http(T0 + n * 700 * MS, 41000, 99_000, body, close=False)     # held open
    return sorted(pkts, key=lambda p: p[0])


def replay(capsys, captures: list[Path], cfg: str, *flags: str) -> tuple[list[dict], str]:
    assert main(["replay", *map(str, captures), "--config", cfg, "--json", *flags]) == 0
    out, err = capsys.readouterr()
    return [json.loads(line) for line in out.splitlines()], err


def tables(snaps: list[dict]) -> list[dict]:
    """The listings without the replay's own summary."""
    return [{k: v for k, v in s.items() if k != "replay"} for s in snaps]


def refused(capsys, path: Path, cfg: str) -> str:
    assert main(["replay", str(path), "--config", cfg]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    return err.rstrip("\n")


# ---------------------------------------------------------------- malformed captures
def test_dev_zero_is_refused_at_once(tmp_path):
    """Read until MemoryError before; now the first four bytes decide."""
    r = subprocess.run([sys.executable, "-m", "pyvs.cli", "replay", "/dev/zero", "--config",
                        config(tmp_path, "route")], capture_output=True, text=True,
                       timeout=30, cwd=ROOT)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.splitlines()[-1] == "/dev/zero: not a pcap or pcapng file"


def _syn_frame() -> bytes:
    return cf.eth(tcp(CLIENT, 40000, VIP, 80, SYN, 1))


MALFORMED = {
    # the three pcapng files a hostile tester found (tracebacks before)
    "idb-empty-body": ([cf.shb(), cf.block(1, b"")], "byte 28: interface description block "
                       "of 12 bytes: shorter than its 20-byte minimum"),
    "epb-4-bytes": ([cf.shb(), cf.idb(1), cf.block(6, b"\0" * 4)], "byte 48: enhanced packet "
                    "block of 16 bytes: shorter than its 32-byte minimum"),
    "tsresol-without-value": (
        [cf.shb(), cf.block(1, b"\x01\x00\x00\x00\xff\xff\x00\x00" + b"\x09\x00\x01\x00")],
        "byte 28: interface description block: option 9 at byte 44 runs past the block's end"),
    "tsresol-empty": ([cf.shb(), cf.block(1, b"\x01\0\0\0\0\0\0\0" + cf.option(9, b""))],
                      "byte 28: interface description block: if_tsresol without its value"),
    "length-not-multiple-of-4": ([cf.shb(), b"\x01\0\0\0\x0e\0\0\0" + b"\0" * 6],
                                 "byte 28: block of type 0x1 has a bad length 14"),
    "trailing-length-differs": ([cf.shb(), cf.block(1, b"\x01\0\0\0\0\0\0\0")[:-4]
                                 + b"\x18\0\0\0"], "byte 28: block of type 0x1: its trailing "
                                "length differs from its leading length"),
    "huge-block": ([cf.shb(), b"\x06\0\0\0\xfc\xff\xff\xff" + b"\0" * 8],
                   "byte 28: block of type 0x6 claims 4294967292 bytes"),
    "cut-short": ([cf.shb(), cf.idb(1), cf.epb(0, 5, _syn_frame())[:40]],
                  "byte 48: cut short in a block of type 0x6"),
    "undeclared-interface": ([cf.shb(), cf.idb(1), cf.epb(3, 5, _syn_frame())],
                             "byte 48: packet for interface 3, which no interface description"),
    "caplen-past-block": ([cf.shb(), cf.idb(1), cf.block(6, b"\0" * 12 + b"\xff\0\0\0"
                                                         + b"\0" * 8)],
                          "byte 48: packet block: 255 captured bytes do not fit"),
    "simple-packet-block": ([cf.shb(), cf.idb(1), cf.block(3, b"\0" * 8)],
                            "byte 48: a simple packet block has no timestamp"),
    "no-byte-order-magic": ([cf.shb()[:8] + b"\0\0\0\0" + cf.shb()[12:]],
                            "byte 0: section header block without the byte-order magic"),
    "pcapng-version-2": ([cf.shb()[:12] + b"\x02\0" + cf.shb()[14:]],
                         "byte 0: pcapng version 2"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_pcapng_gives_one_line(tmp_path, capsys, name):
    blocks, message = MALFORMED[name]
    path = cf.pcapng(tmp_path / f"{name}.pcapng", blocks)
    assert refused(capsys, path, config(tmp_path, "route")).startswith(f"{path}: {message}")


def test_malformed_pcap_gives_one_line(tmp_path, capsys):
    cfg = config(tmp_path, "route")
    good = cf.pcap(tmp_path / "good.pcap", [(T0, _syn_frame())], cf.ETH).read_bytes()
    cases = {
        "empty": (b"", "an empty file"),
        "header-cut": (good[:20], "byte 20: cut short in the 24-byte pcap file header"),
        "version-3": (good[:4] + b"\x03\0" + good[6:], "byte 4: pcap version 3"),
        "record-header-cut": (good[:30], "byte 24: cut short in a packet record header"),
        "packet-cut": (good[:-5], "byte 24: cut short in the middle of a packet"),
        "huge-caplen": (good[:32] + b"\xff\xff\xff\x7f" + good[36:],
                        "byte 24: a packet record of 2147483647 bytes"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.pcap"
        path.write_bytes(data)
        assert refused(capsys, path, cfg) == f"{path}: {message}" or refused(
            capsys, path, cfg).startswith(f"{path}: {message}"), name


def test_timestamps_going_backwards_are_named_not_blamed_on_at(tmp_path, capsys):
    syn = tcp(CLIENT, 40000, VIP, 80, SYN, 1)
    path = cf.pcap(tmp_path / "back.pcap", [(T0 + 10 * cf.NS, syn), (T0 + 11 * cf.NS, syn),
                                            (T0, syn)])
    assert refused(capsys, path, config(tmp_path, "route")) == (
        f"{path}: byte 136: packet 3 is 11.000000 s earlier than the packet before it: the "
        "timestamps go backwards (order the capture by time, e.g. with reordercap)")


def test_a_little_out_of_order_is_fed_in_file_order(tmp_path, capsys):
    """tcpdump -i any on several CPUs: microseconds out of order, fed as the file has it."""
    pkts = traffic(2)
    swapped = [(ns, p) for ns, p, _ in pkts]
    swapped[1], swapped[2] = (swapped[1][0], swapped[2][1]), (swapped[1][0] - 300_000,
                                                             swapped[1][1])
    snaps, err = replay(capsys, [cf.pcap(tmp_path / "r.pcap", swapped, nano=True)],
                        config(tmp_path, "masq"))
    assert snaps[-1]["replay"]["reordered"] == 1
    assert snaps[-1]["replay"]["reordered_max"] == pytest.approx(0.0003)
    assert "1 packets out of time order (up to 0.300 ms)" in err


def test_an_idle_span_of_years_and_a_far_at_are_instant(tmp_path):
    """One packet 3e9 s after the first: the estimator and the table skip idle time, and
    sampling for --plot jumps over it once the table is empty."""
    syn = tcp(CLIENT, 40000, VIP, 80, SYN, 1)
    start = 1000 * cf.NS                 # pcap's seconds are 32 bits: 1970 + 3e9 s fits
    path = cf.pcap(tmp_path / "far.pcap", [(start, syn),
                                           (start + 3_000_000_000 * cf.NS, syn)])
    cfg = config(tmp_path, "route")
    for extra in ([], ["--at", "10000000"], ["--plot", str(tmp_path / "far.png")]):
        r = subprocess.run([sys.executable, "-m", "pyvs.cli", "replay", str(path), "--config",
                            cfg, "--stats", *extra], capture_output=True, text=True,
                           timeout=60, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        assert "TCP  198.51.100.100:80" in r.stdout
    assert (tmp_path / "far.png").stat().st_size > 0


# ---------------------------------------------------------------- what the reader reads
def test_rotated_files_equal_the_single_file(tmp_path, capsys):
    """tcpdump -C/-G: the pieces, named in any order, replay as the one file."""
    pkts = [(ns, cf.eth(p)) for ns, p, _ in traffic(8)]
    cfg = config(tmp_path, "masq")
    whole, _ = replay(capsys, [cf.pcap(tmp_path / "all.pcap", pkts, cf.ETH)], cfg, "--stats",
                      "--at", "1", "--at", "7")
    cuts = [0, 9, 10, 31, len(pkts)]
    parts = [cf.pcap(tmp_path / f"part{i}.pcap", pkts[a:b], cf.ETH)
             for i, (a, b) in enumerate(zip(cuts, cuts[1:]))]
    rotated, _ = replay(capsys, parts[::-1], cfg, "--stats", "--at", "1", "--at", "7")
    assert tables(rotated) == tables(whole)
    assert rotated[-1]["replay"]["packets"] == whole[-1]["replay"]["packets"] == len(pkts)


def test_pcapng_interfaces_sections_and_resolutions_read_as_pcap(tmp_path):
    """Two sections (the second big-endian); interfaces with Ethernet in microseconds,
    cooked v2 in nanoseconds, raw IP in 2^-20 s with an if_tsoffset: the same packets at
    the same nanoseconds as a nanosecond pcap."""
    pkts = [(ns, p) for ns, p, _ in traffic(3)]
    plain = list(read_captures([cf.pcap(tmp_path / "plain.pcap", pkts, nano=True)]))
    half = len(pkts) // 2
    blocks = [cf.shb(), cf.idb(cf.ETH), cf.idb(cf.SLL2, tsresol=9)]
    for i, (ns, p) in enumerate(pkts[:half]):
        if i % 2:
            blocks.append(cf.epb(1, ns, cf.sll2(p)))
        else:
            blocks.append(cf.epb(0, ns // 1000, cf.eth(p)))
    offset = T0 // cf.NS
    blocks += [cf.shb(">"), cf.idb(cf.RAW, tsresol=0x80 | 30, tsoffset=offset, endian=">"),
               cf.idb(cf.SLL, tsresol=9, endian=">")]
    exact = []
    for i, (ns, p) in enumerate(pkts[half:]):
        if i % 2:
            blocks.append(cf.epb(1, ns, cf.sll(p), endian=">"))
            exact.append(ns)
        else:
            ticks = ((ns - offset * cf.NS) << 30) // cf.NS
            blocks.append(cf.epb(0, ticks, p, endian=">"))
            exact.append((ticks * cf.NS >> 30) + offset * cf.NS)
    got = list(read_captures([cf.pcapng(tmp_path / "multi.pcapng", blocks)]))
    assert [p for _, p in got] == [p for _, p in plain]
    assert [t for t, _ in got[:half]] == [t for t, _ in plain[:half]]
    assert [t for t, _ in got[half:]] == exact
    assert all(abs(a - b) < 1000 for a, b in zip(exact, [t for t, _ in plain[half:]]))


def test_block_boundaries_anywhere_give_the_same_packets(tmp_path, monkeypatch):
    """Read by blocks: a record or pcapng block split across reads of any size."""
    pkts = [(ns, cf.vlan(p) if i % 3 else cf.eth(p)) for i, (ns, p, _) in enumerate(traffic(4))]
    files = [cf.pcap(tmp_path / "b.pcap", pkts, cf.ETH),
             cf.pcapng(tmp_path / "b.pcapng", [cf.shb(), cf.idb(cf.ETH)]
                       + [cf.epb(0, ns // 1000, f) for ns, f in pkts])]
    for path in files:
        want = list(read_captures([path]))
        assert len(want) == len(pkts)
        for size in (1, 7, 64, 333):
            monkeypatch.setattr(reader, "BLOCK", size)
            assert list(read_captures([path])) == want, (path, size)


def test_snaplen_cut_packets_give_the_full_capture_s_byte_counters(tmp_path, capsys):
    """tcpdump -s 96: the engine counts each packet by its IP total length, as the kernel
    does; the listing equals the full capture's, counters and all."""
    pkts = [(ns, cf.eth(p)) for ns, p, _ in traffic(5, body=1400)]
    cfg = config(tmp_path, "masq")
    flags = ("--stats", "--exact", "--at", "3", "--at", "9")
    full, _ = replay(capsys, [cf.pcap(tmp_path / "full.pcap", pkts, cf.ETH)], cfg, *flags)
    cut, err = replay(capsys, [cf.pcap(tmp_path / "cut.pcap", pkts, cf.ETH, snaplen=96)],
                      cfg, *flags)
    assert tables(cut) == tables(full)
    assert full[-1]["services"][0]["stats"]["inbytes"] > 0
    assert full[-1]["services"][0]["stats"]["outbytes"] > 6 * 1400
    assert cut[-1]["replay"]["truncated"] == 6
    assert "6 packets cut by the snaplen: counted by their IP total length" in err


def test_a_snaplen_cutting_the_tcp_flags_leaves_established_alone(tmp_path, capsys):
    """Zero-padded, a cut ACK would have no flags and move ESTABLISHED to CLOSE; it is
    skipped and counted instead."""
    held = http(T0, 41000, 7000, close=False)
    frames = [(ns, p) for ns, p, _ in held]
    ack = tcp(CLIENT, 41000, VIP, 80, ACK, 7000 + 19, 5_007_301, ident=999)
    path = cf.pcap(tmp_path / "x.pcap", [*frames, (T0 + 9 * MS, ack[:33])])
    snaps, err = replay(capsys, [path], config(tmp_path, "route"), "-c")
    assert [c["state"] for c in snaps[0]["connections"]] == ["ESTABLISHED"]
    assert snaps[0]["replay"]["ignored"][
        "cut by the snaplen inside the TCP/UDP header"] == 1


# ---------------------------------------------------------------- the copy rule
def test_dr_director_any_capture_with_partial_checksums_counts_each_packet_once(
        tmp_path, capsys):
    """tcpdump -i any on a DR director: the received copy carries a partial checksum
    (CHECKSUM_PARTIAL), the forwarded copy the full one and TTL - 1.  InPkts must be the
    client capture's, not twice it."""
    pkts = traffic(3)
    client = [(ns, cf.eth(p)) for ns, p, _ in pkts]
    director = []
    for ns, p, from_client in pkts:
        if from_client:
            director.append((ns, cf.sll(cf.with_tcp_check(p, 0x1234), cf.PACKET_HOST)))
            director.append((ns + 40_000, cf.sll(cf.forwarded(p), cf.PACKET_OUTGOING)))
    cfg = config(tmp_path, "route")
    flags = ("--stats", "--exact", "--at", "5")
    want, _ = replay(capsys, [cf.pcap(tmp_path / "c.pcap", client, cf.ETH)], cfg, *flags)
    got, err = replay(capsys, [cf.pcap(tmp_path / "d.pcap", director, cf.SLL)], cfg, *flags)
    assert tables(got) == tables(want)
    inpkts = sum(1 for _, _, c in pkts if c)
    assert got[0]["services"][0]["stats"]["inpkts"] == inpkts
    assert got[0]["replay"]["copies"] == inpkts
    assert got[0]["replay"]["capture_point"].startswith("director side, DR/TUN")
    assert "capture point: director side, DR/TUN" in err


def test_a_retransmission_is_a_packet_not_a_copy(tmp_path, capsys):
    """Within the window but with a new IP ID (Linux numbers every segment of a socket):
    counted.  Identical within 100 ms: a copy.  Identical 200 ms later: counted."""
    syn = tcp(CLIENT, 40000, VIP, 80, SYN, 1, ident=1)
    again = tcp(CLIENT, 40000, VIP, 80, SYN, 1, ident=2)
    path = cf.pcap(tmp_path / "rtx.pcap", [(T0, syn), (T0 + 2 * MS, again),
                                           (T0 + 5 * MS, again), (T0 + 205 * MS, again)])
    snaps, _ = replay(capsys, [path], config(tmp_path, "route"), "--stats", "--at", "3")
    assert snaps[0]["services"][0]["stats"]["inpkts"] == 3
    assert snaps[0]["replay"]["copies"] == 1


def test_udp_datagrams_with_the_same_ip_id_are_told_apart_by_payload(tmp_path, capsys):
    """An unconnected UDP socket sends IP ID 0 with DF: two queries of one length within
    100 ms differ only in their payload."""
    a = udp(CLIENT, 5353, VIP, 53, b"\x12\x34query")
    b = udp(CLIENT, 5353, VIP, 53, b"\x56\x78query")
    path = cf.pcap(tmp_path / "udp.pcap", [(T0, a), (T0 + 1 * MS, b), (T0 + 2 * MS, b)])
    snaps, _ = replay(capsys, [path], config(tmp_path, "route"), "--stats", "--at", "3")
    assert snaps[0]["services"][1]["stats"]["inpkts"] == 2


# ---------------------------------------------------------------- property
VALID: dict[str, bytes] = {}


def _valid() -> dict[str, bytes]:
    if not VALID:
        with tempfile.TemporaryDirectory() as d:
            pkts = [(ns, p) for ns, p, _ in traffic(2)]
            VALID["pcap"] = cf.pcap(Path(d) / "a.pcap", [(ns, cf.eth(p)) for ns, p in pkts],
                                    cf.ETH).read_bytes()
            VALID["pcapng"] = cf.pcapng(Path(d) / "a.pcapng", [
                cf.shb(), cf.idb(cf.ETH), cf.idb(cf.SLL2, tsresol=9)]
                + [cf.epb(i % 2, ns // 1000 if i % 2 == 0 else ns,
                          cf.eth(p) if i % 2 == 0 else cf.sll2(p))
                   for i, (ns, p) in enumerate(pkts)]).read_bytes()
    return VALID


def _read_only_fails_cleanly(data: bytes) -> None:
    with tempfile.NamedTemporaryFile(suffix=".cap") as f:
        f.write(data)
        f.flush()
        try:
            for _ in read_captures([f.name]):
                pass
        except CaptureError as exc:
            text = str(exc)
            assert text.startswith(f"{f.name}: ") and "\n" not in text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["pcap", "pcapng"]), st.data())
def test_truncated_or_corrupted_captures_fail_only_with_the_one_line_error(kind, data):
    valid = _valid()[kind]
    cut = data.draw(st.integers(0, len(valid)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)),
                               max_size=4))
    buf = bytearray(valid[:cut])
    for at, value in flips:
        if at < len(buf):
            buf[at] = value
    _read_only_fails_cleanly(bytes(buf))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b"", b"\xd4\xc3\xb2\xa1", b"\x0a\x0d\x0d\x0a",
                                                 b"\x4d\x3c\xb2\xa1\x02\x00"]))
def test_random_bytes_fail_only_with_the_one_line_error(tail, head):
    _read_only_fails_cleanly(head + tail)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=80), max_size=12))
def test_random_packets_in_a_valid_capture_replay_without_error(payloads):
    """Whatever the frames hold, the replay classifies or ignores each one."""
    from pyvs.config import load
    from pyvs.drivers.replay import Replay
    with tempfile.TemporaryDirectory() as d:
        cfg = load(config(Path(d), "masq"))
        syn = tcp(CLIENT, 40000, VIP, 80, SYN, 1)
        frames = [(T0, syn)] + [(T0 + (i + 1) * MS, b"\x45" + p[1:] if p else p)
                                for i, p in enumerate(payloads)]
        path = cf.pcap(Path(d) / "r.pcap", frames)
        rp = Replay(cfg.build(0.0))
        marks = list(rp.run(read_captures([str(path)]), None))
        assert [m.what for m in marks] == ["end"]


def test_negative_timestamps_replay_as_any_others(tmp_path, capsys):
    """pcapng's if_tsoffset is signed: a capture whose times fall before 1970 (a clock
    never set, an offset the wrong way) reads and replays to the same tables."""
    pkts = [(ns, p) for ns, p, _ in traffic(3)]
    cfg = config(tmp_path, "masq")
    offset = -2 * (T0 // cf.NS)                   # every timestamp about -T0
    blocks = [cf.shb(), cf.idb(cf.RAW, tsresol=9, tsoffset=offset)]
    blocks += [cf.epb(0, ns, p) for ns, p in pkts]
    path = cf.pcapng(tmp_path / "neg.pcapng", blocks)
    assert next(read_captures([path]))[0] < 0
    neg, _ = replay(capsys, [path], cfg, "--stats", "--at", "1", "--at", "4")
    whole, _ = replay(capsys, [cf.pcap(tmp_path / "pos.pcap", pkts, nano=True)], cfg,
                      "--stats", "--at", "1", "--at", "4")
    assert tables(neg) == tables(whole) and neg[-1]["replay"]["packets"] == len(pkts)
