"""IPVS connection-sync messages, byte for byte (``net/netfilter/ipvs/ip_vs_sync.c``).

A master director multicasts its connection entries to backups in UDP datagrams.  This
module is the wire format only: the record model, encoders for protocol versions 1 and 0,
and a decoder that walks a received datagram exactly as ``ip_vs_process_message()`` does.

The decoder never raises.  A datagram the kernel refuses as a whole, or stops reading
part-way, says why in ``Decoded.error``; a record the kernel skips while reading on says
why in ``Decoded.skipped``.  The reasons are the kernel's drop points, named (see
``docs/sync.md``).  All multi-byte fields are big-endian, except v0's sequence data, which
the kernel copies in its own (host, x86: little-endian) byte order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final, NamedTuple

SYNC_PORT: Final = 8848              # IP_VS_SYNC_PORT
SYNC_PROTO_VER: Final = 1

# Connection flags (include/uapi/linux/ip_vs.h)
F_FWD_MASK: Final = 0x0007
F_SYNC: Final = 0x0020
F_HASHED: Final = 0x0040
F_NOOUTPUT: Final = 0x0080
F_INACTIVE: Final = 0x0100
F_OUT_SEQ: Final = 0x0200
F_IN_SEQ: Final = 0x0400
F_SEQ_MASK: Final = 0x0600
F_NO_CPORT: Final = 0x0800
F_TEMPLATE: Final = 0x1000
F_ONE_PACKET: Final = 0x2000
F_NFCT: Final = 0x10000
# what a backup keeps of a v1 record's flags, and what an update may change
BACKUP_MASK: Final = F_FWD_MASK | F_NOOUTPUT | F_INACTIVE | F_SEQ_MASK | F_NO_CPORT | F_TEMPLATE
BACKUP_UPD_MASK: Final = F_INACTIVE | F_SEQ_MASK

# Struct layouts: struct ip_vs_sync_mesg, ip_vs_sync_mesg_v0, ip_vs_sync_v4 / _v6,
# ip_vs_sync_conn_v0 and ip_vs_sync_conn_options (in_seq, out_seq: init_seq, delta,
# previous_delta each).
V1_HEADER: Final = struct.Struct("!BBHBbH")     # reserved, syncid, size, nr_conns, version, spare
V0_HEADER: Final = struct.Struct("!BBH")        # nr_conns, syncid, size
V1_FIXED: Final = struct.Struct("!BBHIHHHHII")  # type, protocol, ver_size, flags, state,
#                                                 cport, vport, dport, fwmark, timeout
V0_CONN: Final = struct.Struct("!BBHHHIIIHH")   # reserved, protocol, cport, vport, dport,
#                                                 caddr, vaddr, daddr, flags, state
SEQ_V1: Final = struct.Struct("!6I")
SEQ_V0: Final = struct.Struct("<6I")            # memcpy of the kernel's host-order struct
V4_RECORD: Final = V1_FIXED.size + 12           # 36
V6_RECORD: Final = V1_FIXED.size + 48           # 72
V0_RECORD: Final = V0_CONN.size                 # 24 (SIMPLE_CONN_SIZE)
V0_RECORD_SEQ: Final = V0_CONN.size + SEQ_V0.size   # 48 (FULL_CONN_SIZE)

STYPE_F_INET6: Final = 1
SVER_SHIFT: Final = 12
SVER_MASK: Final = 0x0FFF
OPT_SEQ_DATA: Final = 1
OPT_PE_DATA: Final = 2
OPT_PE_NAME: Final = 3
OPT_F_PARAM: Final = 1 << 6           # an option the receiver may ignore if unknown
PEDATA_MAXLEN: Final = 255            # IP_VS_PEDATA_MAXLEN
PENAME_MAXLEN: Final = 16             # IP_VS_PENAME_MAXLEN
TEMPLATE_STATES: Final = 2            # IP_VS_CTPL_S_LAST

# The protocols a Debian kernel registers with IPVS and their num_states
# (ip_vs_proto_tcp.c, _udp.c, _sctp.c, _ah_esp.c): a record naming another is skipped,
# one whose state is out of range too.  Templates are not checked.
KERNEL_PROTOCOL_STATES: Final = {6: 11, 17: 1, 132: 14, 50: 1, 51: 1}

# Why a datagram is not read at all (nothing applied)
R_SHORT: Final = "short"                      # under 4 bytes
R_SIZE_MISMATCH: Final = "size-mismatch"      # length differs from the header's size
R_SYNCID: Final = "syncid"                    # another director's syncid
R_BAD_VERSION: Final = "bad-version"          # v1-style header refused, read as empty v0
# Why reading stops part-way (the records before it are applied)
R_TRUNCATED: Final = "truncated-record"       # nr_conns promises a record that is not there
R_OVERRUN: Final = "record-overrun"           # a record's size runs past the datagram
R_RECORD_VERSION: Final = "bad-record-version"
R_BAD_TYPE: Final = "bad-type"                # type neither 0 nor with the IPv6 bit
R_RECORD_SIZE: Final = "bad-record-size"      # size smaller than the fixed part
R_BAD_OPTION: Final = "bad-option"            # option header cut off
R_OPTION_LENGTH: Final = "bad-option-length"  # option of length 0 or past the record
R_SEQ_OPTION: Final = "bad-seq-option"        # sequence option not 24 bytes, or twice
R_PE_DATA: Final = "bad-pe-data"              # PE data option twice
R_PE_NAME: Final = "bad-pe-name"              # PE name over 16 bytes, or twice
R_TRUNCATED_SEQ: Final = "truncated-seq"      # v0: sequence data cut off
# Why one record is skipped (the next is read)
R_MANDATORY_OPTION: Final = "unknown-mandatory-option"
R_PROTOCOL: Final = "unsupported-protocol"
R_STATE: Final = "bad-state"
R_BAD_PE: Final = "bad-pe"                    # PE data without a PE name

SeqData = tuple[int, int, int, int, int, int]   # in: init, delta, prev; out: init, delta, prev


@dataclass(slots=True)
class SyncRecord:
    """One connection or template as a sync record carries it.

    Addresses are integers (32-bit, or 128-bit when ``ipv6``); ``timeout`` is in seconds,
    the entry's full state timeout (v0 carries none: 0).  ``flags`` are as sent, not yet
    masked by a backup."""

    protocol: int
    flags: int
    state: int
    cport: int
    vport: int
    dport: int
    caddr: int
    vaddr: int
    daddr: int
    fwmark: int = 0
    timeout: int = 0
    ipv6: bool = False
    seq: SeqData | None = None
    pe_data: bytes | None = None
    pe_name: bytes | None = None

    @property
    def template(self) -> bool:
        return bool(self.flags & F_TEMPLATE)


@dataclass(slots=True)
class Decoded:
    """What ``ip_vs_process_message()`` makes of one datagram."""

    version: int | None = None        # 1, 0, or None when refused before reading records
    syncid: int | None = None
    nr_conns: int = 0
    records: list[SyncRecord] = field(default_factory=list)   # handed on, in order
    skipped: list[tuple[int, str]] = field(default_factory=list)   # (record index, reason)
    error: str | None = None          # why reading stopped (None: read to nr_conns)


# ---------------------------------------------------------------------------------- encoding
def _addr_bytes(value: int, ipv6: bool) -> bytes:
    return value.to_bytes(16 if ipv6 else 4, "big")


def encode_v1_record(rec: SyncRecord) -> bytes:
    """One v1 record without its trailing pad, laid out as ip_vs_sync_conn() writes it:
    the fixed part, then the SEQ option, then PE data and (only with PE data) PE name.
    The flags go out as given (the master has already dropped IP_VS_CONN_F_HASHED)."""
    if rec.pe_name is not None and rec.pe_data is None:
        raise ValueError("a PE name is sent only with PE data")
    opts = b""
    if rec.seq is not None:
        opts += bytes((OPT_SEQ_DATA, SEQ_V1.size)) + SEQ_V1.pack(*rec.seq)
    if rec.pe_data is not None:
        if not 0 < len(rec.pe_data) <= PEDATA_MAXLEN:
            raise ValueError(f"PE data of {len(rec.pe_data)} bytes (1..{PEDATA_MAXLEN})")
        opts += bytes((OPT_PE_DATA, len(rec.pe_data))) + rec.pe_data
        if rec.pe_name is not None:
            if not 0 < len(rec.pe_name) <= PENAME_MAXLEN:
                raise ValueError(f"PE name of {len(rec.pe_name)} bytes (1..{PENAME_MAXLEN})")
            opts += bytes((OPT_PE_NAME, len(rec.pe_name))) + rec.pe_name
    length = (V6_RECORD if rec.ipv6 else V4_RECORD) + len(opts)
    fixed = V1_FIXED.pack(STYPE_F_INET6 if rec.ipv6 else 0, rec.protocol, length & SVER_MASK,
                          rec.flags, rec.state, rec.cport, rec.vport,
                          rec.dport, rec.fwmark, rec.timeout)
    return (fixed + _addr_bytes(rec.caddr, rec.ipv6) + _addr_bytes(rec.vaddr, rec.ipv6)
            + _addr_bytes(rec.daddr, rec.ipv6) + opts)


def encode_v0_record(rec: SyncRecord) -> bytes:
    """One v0 record (ip_vs_sync_conn_v0()): IPv4 only, 16-bit flags, no timeout or fwmark;
    24 bytes of sequence data follow when the flags carry IP_VS_CONN_F_SEQ_MASK."""
    if rec.ipv6:
        raise ValueError("version 0 carries IPv4 only")
    flags = rec.flags & 0xFFFF         # htons(): v0 flags are 16 bits wide
    out = V0_CONN.pack(0, rec.protocol, rec.cport, rec.vport, rec.dport, rec.caddr, rec.vaddr,
                       rec.daddr, flags, rec.state)
    if flags & F_SEQ_MASK:
        out += SEQ_V0.pack(*(rec.seq or (0,) * 6))
    return out


def encode_message(records: list[SyncRecord], version: int = 1, syncid: int = 0) -> bytes:
    """A whole datagram of these records, as the master builds it (v1: each record after
    the first starts on a 4-byte boundary; the last is not padded)."""
    if version == 0:
        v0 = b"".join(encode_v0_record(r) for r in records)
        return V0_HEADER.pack(len(records) & 0xFF, syncid, V0_HEADER.size + len(v0)) + v0
    body = bytearray()
    for r in records:
        body += bytes((-(V1_HEADER.size + len(body))) & 3) + encode_v1_record(r)
    return V1_HEADER.pack(0, syncid, V1_HEADER.size + len(body), len(records) & 0xFF,
                          SYNC_PROTO_VER, 0) + bytes(body)


# ---------------------------------------------------------------------------------- decoding
def decode(data: bytes, syncid: int = 0) -> Decoded:
    """Walk a received datagram as ip_vs_process_message() does; `syncid` is the backup's
    own (0: accept every syncid)."""
    out = Decoded()
    data = bytes(data)
    n = len(data)
    if n < V0_HEADER.size:
        out.error = R_SHORT
        return out
    if n != (data[2] << 8) | data[3]:
        out.error = R_SIZE_MISMATCH
        return out
    out.syncid = data[1]
    if syncid and data[1] != syncid:
        out.error = R_SYNCID
        return out
    # A v1 header needs all 8 bytes; the kernel would read stale buffer bytes past a
    # shorter datagram, and either way no record fits.
    if n >= V1_HEADER.size and data[0] == 0 and data[5] == SYNC_PROTO_VER and not (
            data[6] | data[7]):
        out.version = 1
        _decode_v1(data, out)
    else:
        out.version = 0
        _decode_v0(data, out)
    return out


def _decode_v1(data: bytes, out: Decoded) -> None:
    n = len(data)
    nr = out.nr_conns = data[4]
    end = V1_HEADER.size
    for index in range(nr):
        p = end
        if p + V4_RECORD > n:
            out.error = R_TRUNCATED
            return
        ver_size = (data[p + 2] << 8) | data[p + 3]
        size = ver_size & SVER_MASK
        end = p + size
        if end > n:
            out.error = R_OVERRUN
            return
        if ver_size >> SVER_SHIFT:
            out.error = R_RECORD_VERSION
            return
        result = _decode_v1_record(data, p, end)
        if isinstance(result, SyncRecord):
            out.records.append(result)
        elif result.stop:
            out.error = result.reason
            return
        else:
            out.skipped.append((index, result.reason))
        end = p + ((size + 3) & ~3)


class _Fault(NamedTuple):
    stop: bool        # the kernel stops reading the datagram (else skips this record)
    reason: str


def _decode_v1_record(data: bytes, p: int, end: int) -> SyncRecord | _Fault:
    """ip_vs_proc_sync_conn(): a record, or why not."""
    kind = data[p]
    ipv6 = bool(kind & STYPE_F_INET6)
    if not ipv6 and kind:
        return _Fault(True, R_BAD_TYPE)
    q = p + (V6_RECORD if ipv6 else V4_RECORD)
    if q > end:
        return _Fault(True, R_RECORD_SIZE)
    options = _v1_options(data, q, end)
    if isinstance(options, _Fault):
        return options
    seq, pe_data, pe_name = options
    _, protocol, _, flags, state, cport, vport, dport, fwmark, timeout = \
        V1_FIXED.unpack_from(data, p)
    width = 16 if ipv6 else 4
    a = p + V1_FIXED.size
    caddr = int.from_bytes(data[a:a + width], "big")
    vaddr = int.from_bytes(data[a + width:a + 2 * width], "big")
    daddr = int.from_bytes(data[a + 2 * width:a + 3 * width], "big")
    if not flags & F_TEMPLATE:
        states = KERNEL_PROTOCOL_STATES.get(protocol)
        if states is None:
            return _Fault(False, R_PROTOCOL)
        if state >= states:
            return _Fault(False, R_STATE)
    if pe_data is not None and pe_name is None:
        return _Fault(False, R_BAD_PE)
    return SyncRecord(protocol, flags, state, cport, vport, dport, caddr, vaddr, daddr, fwmark,
                      timeout, ipv6, seq, pe_data, pe_name)


Options = tuple[SeqData | None, bytes | None, bytes | None]


def _v1_options(data: bytes, q: int, end: int) -> Options | _Fault:
    """The options after a record's fixed part, read in order as the kernel reads them:
    (seq, PE data, PE name), or the first fault."""
    seq: SeqData | None = None
    pe_data: bytes | None = None
    pe_name: bytes | None = None
    while q < end:
        if q + 2 > end:
            return _Fault(True, R_BAD_OPTION)
        ptype, plen = data[q], data[q + 1]
        q += 2
        if not plen or q + plen > end:
            return _Fault(True, R_OPTION_LENGTH)
        opt = ptype & ~OPT_F_PARAM
        if opt == OPT_SEQ_DATA:
            if plen != SEQ_V1.size or seq is not None:
                return _Fault(True, R_SEQ_OPTION)
            seq = SEQ_V1.unpack_from(data, q)
        elif opt == OPT_PE_DATA:
            if pe_data is not None:         # plen is at most 255 = IP_VS_PEDATA_MAXLEN
                return _Fault(True, R_PE_DATA)
            pe_data = data[q:q + plen]
        elif opt == OPT_PE_NAME:
            if plen > PENAME_MAXLEN or pe_name is not None:
                return _Fault(True, R_PE_NAME)
            pe_name = data[q:q + plen]
        elif not ptype & OPT_F_PARAM:
            return _Fault(False, R_MANDATORY_OPTION)
        q += plen
    return seq, pe_data, pe_name


def _decode_v0(data: bytes, out: Decoded) -> None:
    n = len(data)
    nr = out.nr_conns = data[0]
    if not nr and n > V0_HEADER.size:
        out.error = R_BAD_VERSION     # a v1-style header the kernel did not take as v1
        return
    p = V0_HEADER.size
    for index in range(nr):
        if p + V0_RECORD > n:
            out.error = R_TRUNCATED
            return
        (_, protocol, cport, vport, dport, caddr, vaddr, daddr, flags,
         state) = V0_CONN.unpack_from(data, p)
        seq: SeqData | None = None
        if flags & F_SEQ_MASK:
            if p + V0_RECORD_SEQ > n:
                out.error = R_TRUNCATED_SEQ
                return
            seq = SEQ_V0.unpack_from(data, p + V0_RECORD)
            p += V0_RECORD_SEQ
        else:
            p += V0_RECORD
        if not flags & F_TEMPLATE:
            states = KERNEL_PROTOCOL_STATES.get(protocol)
            if states is None:
                out.skipped.append((index, R_PROTOCOL))
                continue
            if state >= states:
                out.skipped.append((index, R_STATE))
                continue
        out.records.append(SyncRecord(protocol, flags, state, cport, vport, dport, caddr,
                                      vaddr, daddr, seq=seq))
