"""Replay with timed control-plane events: a drain and a removal between connections of
one capture, with the configuration given as an ipvsadm rules file; listings compared
whole.  And an --at equal to a packet's own timestamp includes that packet."""

from pyvs.cli import main
from pyvs.core.craft import ACK, PSH, SYN, tcp
from pyvs.core.packet import ip_to_int
from pyvs.drivers.pcap import write_pcap

CLIENT, VIP = ip_to_int("198.51.100.2"), ip_to_int("198.51.100.100")
T0 = 1_700_000_000.0
RULES = """\
# saved by ipvsadm-save -n (the order the realservers were added: rs1, then rs2)
-A -t 198.51.100.100:80 -s rr
-a -t 198.51.100.100:80 -r 192.0.2.11:80 -m -w 1
-a -t 198.51.100.100:80 -r 192.0.2.12:80 -m -w 1
"""


def opened(t: float, cport: int) -> list[tuple[float, bytes]]:
    """A client-side capture of a connection opened and used once (the reply from the VIP)."""
    return [(t, tcp(CLIENT, cport, VIP, 80, SYN, 100)),
            (t + 0.001, tcp(VIP, 80, CLIENT, cport, SYN | ACK, 900, 101)),
            (t + 0.002, tcp(CLIENT, cport, VIP, 80, ACK, 101, 901)),
            (t + 0.003, tcp(CLIENT, cport, VIP, 80, PSH | ACK, 101, 901, b"hello"))]


def replay(tmp_path, capsys, packets, *args: str) -> str:
    write_pcap(tmp_path / "c.pcap", packets)
    (tmp_path / "rules").write_text(RULES)
    assert main(["replay", str(tmp_path / "c.pcap"), "--config", str(tmp_path / "rules"),
                 *args]) == 0
    return capsys.readouterr().out


def test_drain_then_removal_mid_capture(tmp_path, capsys) -> None:
    packets = [p for t, port in ((0, 40000), (2, 40001), (3, 40002), (6, 40003))
               for p in opened(T0 + t, port)]
    (tmp_path / "events").write_text(
        "# drain rs2, then remove rs1\n"
        "1 ipvsadm -e -t 198.51.100.100:80 -r 192.0.2.12:80 -m -w 0\n"
        "5 ipvsadm -d -t 198.51.100.100:80 -r 192.0.2.11:80\n")
    out = replay(tmp_path, capsys, packets, "--events", str(tmp_path / "events"),
                 "--at", "4", "--at", "7", "-c")
    assert out == (
        "# at 4 s\n"
        "IPVS connection entries\n"
        "pro expire state       source             virtual            destination\n"
        "TCP 14:56  ESTABLISHED 198.51.100.2:40000 198.51.100.100:80  192.0.2.12:80\n"
        "TCP 14:58  ESTABLISHED 198.51.100.2:40001 198.51.100.100:80  192.0.2.11:80\n"
        "TCP 14:59  ESTABLISHED 198.51.100.2:40002 198.51.100.100:80  192.0.2.11:80\n"
        "\n"
        "# at 7 s\n"
        "IPVS connection entries\n"
        "pro expire state       source             virtual            destination\n"
        "TCP 14:53  ESTABLISHED 198.51.100.2:40000 198.51.100.100:80  192.0.2.12:80\n"
        "TCP 14:55  ESTABLISHED 198.51.100.2:40001 198.51.100.100:80  192.0.2.11:80\n"
        "TCP 14:56  ESTABLISHED 198.51.100.2:40002 198.51.100.100:80  192.0.2.11:80\n")
    # at 6 s rs1 is gone and rs2 drained: the fourth connection has nowhere to go
    out = replay(tmp_path, capsys, packets, "--events", str(tmp_path / "events"),
                 "--at", "7")
    assert out == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "TCP  198.51.100.100:80 rr\n"
        "  -> 192.0.2.12:80                Masq    0      1          0         \n")


def test_events_on_the_command_line_and_sysctls(tmp_path, capsys) -> None:
    packets = opened(T0, 40000) + opened(T0 + 10, 40001)
    out = replay(tmp_path, capsys, packets, "--event", "5 ipvsadm --set 60 0 0",
                 "--event", "5 sysctl conn_reuse_mode=0", "--at", "10.003", "--timeout")
    assert out == "Timeout (tcp tcpfin udp): 60 120 300\n"


def test_at_a_packets_own_timestamp_includes_it(tmp_path, capsys) -> None:
    # 3189.502 s after the first packet, to the microsecond, as tcpdump prints it
    packets = opened(T0, 40000)[:1] + [(T0 + 3189.502, tcp(CLIENT, 40001, VIP, 80, SYN, 7))]
    out = replay(tmp_path, capsys, packets, "--at", "3189.502", "-c")
    assert "198.51.100.2:40001" in out
    out = replay(tmp_path, capsys, packets, "--at", "3189.501999", "-c")
    assert "198.51.100.2:40001" not in out


def test_a_refused_event_is_one_line(tmp_path, capsys) -> None:
    write_pcap(tmp_path / "c.pcap", opened(T0, 40000))
    (tmp_path / "rules").write_text(RULES)
    rc = main(["replay", str(tmp_path / "c.pcap"), "--config", str(tmp_path / "rules"),
               "--event", "1 ipvsadm -d -t 198.51.100.100:80 -r 192.0.2.99:80", "--at", "2"])
    assert rc == 2
    assert capsys.readouterr().err == "pyvs replay: an event was refused: No such destination\n"
    assert main(["replay", str(tmp_path / "c.pcap"), "--config", str(tmp_path / "rules"),
                 "--event", "9 ipvsadm -C", "--at", "2"]) == 0
    assert capsys.readouterr().err.startswith("pyvs: warning: 1 event after the last --at "
                                              "(2 s) was not applied\npyvs replay: capture: ")
