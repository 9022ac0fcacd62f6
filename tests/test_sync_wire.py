"""Sync messages on the wire: the kernel's struct layouts, round trips, hostile input, tshark."""

import shutil
import socket
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.core.craft import ipv4
from pyvs.core.packet import ip_to_int
from pyvs.core.syncmsg import (
    F_INACTIVE,
    F_NOOUTPUT,
    F_SEQ_MASK,
    F_TEMPLATE,
    SYNC_PORT,
    SyncRecord,
    decode,
    encode_message,
    encode_v0_record,
    encode_v1_record,
)
from pyvs.drivers.pcap import write_pcap

TCP, UDP = 6, 17
DR = 3


def a4(text):
    return socket.inet_aton(text)


def a6(text):
    return socket.inet_pton(socket.AF_INET6, text)


def u8(v):
    return struct.pack("!B", v)


def u16(v):
    return struct.pack("!H", v)


def u32(v):
    return struct.pack("!I", v)


# struct ip_vs_sync_mesg / ip_vs_sync_mesg_v0, written field by field
def v1_header(syncid, size, nr_conns):
    return u8(0) + u8(syncid) + u16(size) + u8(nr_conns) + struct.pack("!b", 1) + u16(0)


def v0_header(nr_conns, syncid, size):
    return u8(nr_conns) + u8(syncid) + u16(size)


# struct ip_vs_sync_v4 / ip_vs_sync_v6: type, protocol, ver_size, flags, state, cport,
# vport, dport, fwmark, timeout, caddr, vaddr, daddr
def sync_v4(protocol, size, flags, state, cport, vport, dport, fwmark, timeout, c, v, d,
            type_=0, version=0):
    return (u8(type_) + u8(protocol) + u16(version << 12 | size) + u32(flags) + u16(state)
            + u16(cport) + u16(vport) + u16(dport) + u32(fwmark) + u32(timeout)
            + a4(c) + a4(v) + a4(d))


def sync_v6(protocol, size, flags, state, cport, vport, dport, fwmark, timeout, c, v, d):
    return (u8(1) + u8(protocol) + u16(size) + u32(flags) + u16(state) + u16(cport)
            + u16(vport) + u16(dport) + u32(fwmark) + u32(timeout) + a6(c) + a6(v) + a6(d))


# struct ip_vs_sync_conn_v0
def conn_v0(protocol, cport, vport, dport, c, v, d, flags, state):
    return (u8(0) + u8(protocol) + u16(cport) + u16(vport) + u16(dport) + a4(c) + a4(v)
            + a4(d) + u16(flags) + u16(state))


def seq_option(*values):
    """IPVS_OPT_SEQ_DATA: type 1, length 24, in_seq and out_seq in network order."""
    return u8(1) + u8(24) + b"".join(u32(x) for x in values)


ip = ip_to_int
ES, FW = 1, 4


def rec(**kw):
    base = dict(protocol=TCP, flags=DR | F_NOOUTPUT, state=ES, cport=40000, vport=80,
                dport=80, caddr=ip("10.0.0.5"), vaddr=ip("10.0.0.100"),
                daddr=ip("192.168.10.1"), fwmark=0, timeout=900)
    base.update(kw)
    return SyncRecord(**base)


def test_v1_message_of_two_records_with_padding_decodes_field_by_field():
    r1 = sync_v4(TCP, 36 + 26, DR | F_NOOUTPUT | 0x600, ES, 40000, 80, 80, 0, 900,
                 "10.0.0.5", "10.0.0.100", "192.168.10.1") + seq_option(1, 2, 3, 4, 5, 6)
    r2 = sync_v4(UDP, 36, DR | F_INACTIVE, 0, 5353, 53, 53, 7, 300,
                 "10.0.0.6", "10.0.0.100", "192.168.10.2")
    body = r1 + b"\0\0" + r2                         # 62 bytes, padded to 64
    data = v1_header(9, 8 + len(body), 2) + body
    d = decode(data)
    assert (d.version, d.syncid, d.nr_conns, d.error, d.skipped) == (1, 9, 2, None, [])
    assert d.records == [
        rec(flags=DR | F_NOOUTPUT | 0x600, seq=(1, 2, 3, 4, 5, 6)),
        SyncRecord(UDP, DR | F_INACTIVE, 0, 5353, 53, 53, ip("10.0.0.6"), ip("10.0.0.100"),
                   ip("192.168.10.2"), 7, 300)]
    assert encode_message(d.records, 1, 9) == data


def test_v1_ipv6_record():
    body = sync_v6(TCP, 72, DR, FW, 1, 443, 443, 0, 120, "2001:db8::5", "2001:db8::100",
                   "2001:db8:1::1")
    d = decode(v1_header(0, 8 + 72, 1) + body)
    (r,) = d.records
    assert r.ipv6 and r.caddr == int.from_bytes(a6("2001:db8::5"), "big")
    assert r.daddr == int.from_bytes(a6("2001:db8:1::1"), "big") and r.timeout == 120
    assert encode_v1_record(r) == body


def test_v0_message_with_and_without_sequence_data():
    seq_host = struct.pack("<6I", 10, 20, 30, 40, 50, 60)   # memcpy of host-order ip_vs_seq
    r1 = conn_v0(TCP, 40000, 80, 80, "10.0.0.5", "10.0.0.100", "192.168.10.1",
                 DR | F_NOOUTPUT | F_INACTIVE, FW)
    r2 = conn_v0(TCP, 40001, 21, 21, "10.0.0.5", "10.0.0.100", "192.168.10.1",
                 0x400, ES) + seq_host
    data = v0_header(2, 4, 4 + len(r1) + len(r2)) + r1 + r2
    d = decode(data)
    assert (d.version, d.syncid, d.error) == (0, 4, None)
    assert d.records == [
        rec(flags=DR | F_NOOUTPUT | F_INACTIVE, state=FW, timeout=0),
        rec(flags=0x400, cport=40001, vport=21, dport=21, timeout=0,
            seq=(10, 20, 30, 40, 50, 60))]
    assert encode_message(d.records, 0, 4) == data


def test_v1_record_version_and_size_fields_follow_the_kernel_masks():
    """Top 4 bits of ver_size are the version (must be 0), the low 12 the size: a size
    using bit 12 is read as version 1 and drops the rest."""
    r = sync_v4(TCP, 36, DR, ES, 1, 80, 80, 0, 900, "10.0.0.5", "10.0.0.100", "10.1.1.1",
                version=1)
    assert decode(v1_header(0, 44, 1) + r).error == "bad-record-version"


# --------------------------------------------------------------------- refusals, by place
GOOD = sync_v4(TCP, 36, DR, ES, 40000, 80, 80, 0, 900, "10.0.0.5", "10.0.0.100",
               "192.168.10.1")


def v1(*records, nr=None):
    body = b""
    for r in records:
        body += b"\0" * (-(8 + len(body)) & 3) + r
    return v1_header(0, 8 + len(body), len(records) if nr is None else nr) + body


def with_option(opt, size_extra=0):
    return (sync_v4(TCP, 36 + len(opt) + size_extra, DR, ES, 40000, 80, 80, 0, 900,
                    "10.0.0.7", "10.0.0.100", "192.168.10.1") + opt)


REFUSED = [
    # (datagram, error, records applied before it, skipped)
    (b"\0\0\0", "short", 0, []),
    (v1(GOOD)[:-1], "size-mismatch", 0, []),
    (v1(GOOD) + b"\0", "size-mismatch", 0, []),
    (v1(GOOD, nr=2), "truncated-record", 1, []),
    (v1(GOOD, GOOD[:2] + u16(40) + GOOD[4:]), "record-overrun", 1, []),
    (v1(GOOD, b"\x02" + GOOD[1:]), "bad-type", 1, []),
    (v1(GOOD, GOOD[:2] + u16(20) + GOOD[4:]), "bad-record-size", 1, []),
    (v1(b"\x01" + GOOD[1:]), "bad-record-size", 0, []),       # IPv6 type, IPv4 size
    (v1(with_option(b"\x41", 0)), "bad-option", 0, []),
    (v1(with_option(b"\x01\x00")), "bad-option-length", 0, []),
    (v1(with_option(b"\x01\x20" + bytes(24))), "bad-option-length", 0, []),
    (v1(with_option(b"\x01\x10" + bytes(16))), "bad-seq-option", 0, []),
    (v1(with_option(seq_option(*range(6)) + seq_option(*range(6)))), "bad-seq-option", 0, []),
    (v1(with_option(b"\x02\x01a\x02\x01b")), "bad-pe-data", 0, []),
    (v1(with_option(b"\x03\x11" + b"x" * 17)), "bad-pe-name", 0, []),
    (v1_header(0, 8, 0)[:4] + b"\0\x02\0\0", "bad-version", 0, []),   # version 2: v0, 0 conns
    (v1_header(0, 8, 0)[:6] + b"\0\1", "bad-version", 0, []),          # spare not zero
    (v0_header(2, 0, 28) + conn_v0(TCP, 1, 80, 80, "10.0.0.5", "10.0.0.100", "10.1.1.1",
                                   DR, ES), "truncated-record", 1, []),
    (v0_header(1, 0, 28) + conn_v0(TCP, 1, 80, 80, "10.0.0.5", "10.0.0.100", "10.1.1.1",
                                   F_SEQ_MASK, ES), "truncated-seq", 0, []),
]


@pytest.mark.parametrize("data,error,applied,skipped", REFUSED)
def test_refusals_happen_where_the_kernel_stops(data, error, applied, skipped):
    d = decode(data)
    assert (d.error, len(d.records), d.skipped) == (error, applied, skipped)


SKIPPED = [
    (with_option(b"\x05\x02ab"), "unknown-mandatory-option"),
    (sync_v4(99, 36, DR, 0, 1, 80, 80, 0, 9, "10.0.0.5", "10.0.0.100", "10.1.1.1"),
     "unsupported-protocol"),
    (sync_v4(TCP, 36, DR, 11, 1, 80, 80, 0, 9, "10.0.0.5", "10.0.0.100", "10.1.1.1"),
     "bad-state"),
    (sync_v4(UDP, 36, DR, 1, 1, 80, 80, 0, 9, "10.0.0.5", "10.0.0.100", "10.1.1.1"),
     "bad-state"),
    (with_option(b"\x02\x03abc"), "bad-pe"),          # PE data without a PE name
]


@pytest.mark.parametrize("record,reason", SKIPPED)
def test_records_the_kernel_skips_and_reads_on(record, reason):
    d = decode(v1(record, GOOD))
    assert (d.error, d.skipped, len(d.records)) == (None, [(0, reason)], 1)


def test_optional_unknown_options_are_ignored_and_known_ones_may_carry_the_bit():
    r = with_option(b"\x45\x02ab" + b"\x41\x18" + bytes(range(24)))
    (got,) = decode(v1(r)).records
    assert got.seq == struct.unpack("!6I", bytes(range(24)))


def test_templates_skip_the_protocol_and_state_checks():
    r = sync_v4(0, 36, F_TEMPLATE | DR, 7, 0, 0, 0, 5, 360, "10.0.0.5", "0.0.0.5", "10.1.1.1")
    (got,) = decode(v1(r)).records
    assert (got.protocol, got.state, got.fwmark) == (0, 7, 5)


def test_v0_skips_unknown_protocol_and_bad_state_per_record():
    rs = [conn_v0(47, 1, 80, 80, "10.0.0.5", "10.0.0.100", "10.1.1.1", DR, 0),
          conn_v0(TCP, 2, 80, 80, "10.0.0.5", "10.0.0.100", "10.1.1.1", DR, 12),
          conn_v0(TCP, 3, 80, 80, "10.0.0.5", "10.0.0.100", "10.1.1.1", DR, 1)]
    d = decode(v0_header(3, 0, 4 + 72) + b"".join(rs))
    assert d.skipped == [(0, "unsupported-protocol"), (1, "bad-state")]
    assert [r.cport for r in d.records] == [3]


def test_syncid_filter_only_when_the_backup_has_one():
    data = v1(GOOD)
    assert decode(data, syncid=0).records and decode(data[:1] + b"\x07" + data[2:],
                                                     syncid=0).records
    assert decode(data[:1] + b"\x07" + data[2:], syncid=8).error == "syncid"
    assert decode(data[:1] + b"\x08" + data[2:], syncid=8).error is None


# --------------------------------------------------------------------- properties
addr4 = st.integers(0, 2**32 - 1)
port = st.integers(0, 65535)
seqs = st.none() | st.tuples(*[st.integers(0, 2**32 - 1)] * 6)


@st.composite
def records(draw, v0=False):
    template = draw(st.booleans())
    protocol = draw(st.sampled_from([0, 6, 17, 132]) if template else
                    st.sampled_from([6, 17, 132, 50, 51]))
    states = {6: 11, 17: 1, 132: 14, 50: 1, 51: 1}
    state = draw(st.integers(0, 65535) if template else st.integers(0, states[protocol] - 1))
    ipv6 = False if v0 else draw(st.booleans())
    addr = st.integers(0, 2**128 - 1) if ipv6 else addr4
    flags = draw(st.integers(0, 0xFFFF) if v0 else st.integers(0, 2**32 - 1))
    flags = (flags | F_TEMPLATE) if template else (flags & ~F_TEMPLATE)
    seq = draw(seqs)
    if v0:
        seq = seq if flags & F_SEQ_MASK else None
        if flags & F_SEQ_MASK and seq is None:
            seq = (0,) * 6
    pe_data = None if v0 else draw(st.none() | st.binary(min_size=1, max_size=255))
    pe_name = (draw(st.none() | st.binary(min_size=1, max_size=16))
               if pe_data is not None else None)
    if pe_data is not None and pe_name is None:
        pe_name = b"sip"               # PE data alone is skipped by the receiver
    return SyncRecord(protocol, flags, state, draw(port), draw(port), draw(port), draw(addr),
                      draw(addr), draw(addr), 0 if v0 else draw(addr4),
                      0 if v0 else draw(addr4), ipv6, seq, pe_data, pe_name)


@settings(max_examples=80, deadline=None)
@given(st.lists(records(), max_size=12), st.integers(0, 255))
def test_v1_round_trip(recs, syncid):
    d = decode(encode_message(recs, 1, syncid))
    assert (d.version, d.syncid, d.error, d.skipped) == (1, syncid, None, [])
    assert d.records == recs


@settings(max_examples=80, deadline=None)
@given(st.lists(records(v0=True), min_size=1, max_size=12), st.integers(0, 255))
def test_v0_round_trip(recs, syncid):
    d = decode(encode_message(recs, 0, syncid))
    assert (d.version, d.syncid, d.error, d.skipped) == (0, syncid, None, [])
    assert d.records == recs


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 255))
def test_random_bytes_never_raise(data, syncid):
    decode(data, syncid)
    # and with a size field that matches, so the records get read
    if len(data) >= 4:
        fixed = data[:2] + struct.pack("!H", len(data) & 0xFFFF) + data[4:]
        decode(fixed, syncid)
        decode(b"\0" + fixed[1:5] + b"\x01\0\0" + fixed[8:], syncid)


@settings(max_examples=150, deadline=None)
@given(st.lists(records(), min_size=1, max_size=4), st.data())
def test_corrupted_messages_never_raise(recs, data):
    msg = bytearray(encode_message(recs))
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(msg) - 1))
        msg[i] = data.draw(st.integers(0, 255))
    msg[2:4] = struct.pack("!H", len(msg))
    d = decode(bytes(msg))
    assert len(d.records) + len(d.skipped) <= d.nr_conns


# --------------------------------------------------------------------- Wireshark's dissector
TSHARK = shutil.which("tshark")


def multicast(payload, src="192.168.1.1"):
    """IPv4/UDP to 224.0.0.81:8848, TTL 1, as the master's socket sends it (UDP checksum 0:
    optional for IPv4)."""
    segment = struct.pack("!HHHH", 36000, SYNC_PORT, 8 + len(payload), 0) + payload
    return ipv4(ip(src), ip("224.0.0.81"), UDP, segment, ttl=1)


@pytest.mark.skipif(TSHARK is None, reason="needs tshark (apt-get install tshark)")
def test_tshark_reads_the_same_header_and_addresses(tmp_path):
    """Wireshark's ipvs dissector as a cross-check of header fields and plain records (it
    steps over v1 records by a fixed size, so no options here)."""
    v1_recs = [rec(), rec(protocol=UDP, state=0, cport=5353, vport=53, dport=53,
                          caddr=ip("10.0.0.6"), daddr=ip("192.168.10.2"), fwmark=7, timeout=300),
               rec(flags=F_TEMPLATE | F_INACTIVE | DR | F_NOOUTPUT, cport=0, state=1,
                   caddr=ip("10.0.0.7"), timeout=360)]
    v0_recs = [rec(timeout=0, seq=(1, 2, 3, 4, 5, 6), flags=0x600 | DR)]
    messages = [encode_message(v1_recs, 1, 7), encode_message(v0_recs, 0, 9)]
    path = tmp_path / "sync.pcap"
    write_pcap(path, [(1.0 + i, multicast(m)) for i, m in enumerate(messages)])
    fields = ["ipvs.syncid", "ipvs.conncount", "ipvs.size", "ipvs.version", "ipvs.caddr",
              "ipvs.vaddr", "ipvs.daddr", "ipvs.cport", "ipvs.dport", "ipvs.timeout",
              "ipvs.fwmark", "ipvs.in_seq.initial"]
    cmd = [TSHARK, "-r", str(path), "-T", "fields", "-E", "separator=|"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [
        f"7|3|{len(messages[0])}|1|10.0.0.5,10.0.0.6,10.0.0.7|10.0.0.100,10.0.0.100,10.0.0.100"
        "|192.168.10.1,192.168.10.2,192.168.10.1|40000,5353,0|80,53,80|900,300,360"
        "|0x00000000,0x00000007,0x00000000|",
        f"9|1|{len(messages[1])}||10.0.0.5|10.0.0.100|192.168.10.1|40000|80|||"
        # the dissector reads v0 sequence data in network order; the kernel copies it in
        # host order, so 1 reads as 0x01000000
        "0x01000000",
    ]


def test_encoders_refuse_what_the_wire_cannot_carry():
    with pytest.raises(ValueError):
        encode_v0_record(rec(ipv6=True))
    with pytest.raises(ValueError):
        encode_v1_record(rec(pe_name=b"sip"))
    with pytest.raises(ValueError):
        encode_v1_record(rec(pe_data=b"x", pe_name=b"y" * 17))
