"""Regenerate the sample captures shipped in samples/ (deterministic; run from the repo root).

http-nat-client.pcap: a client-side capture against configs/nat.yaml's VIP: three HTTP/1.0
fetches (client closes) and one connection held open, as a client's tcpdump would see them.
"""

from pyvs.core.craft import ACK, FIN, PSH, SYN, tcp
from pyvs.core.packet import ip_to_int
from pyvs.drivers.pcap import write_pcap

CLIENT = ip_to_int("198.51.100.2")
VIP = ip_to_int("198.51.100.100")
T0 = 1_700_000_000.0


def http10(t: float, cport: int, isn: int) -> list[tuple[float, bytes]]:
    """Handshake, GET, response, client-first close: a classic HTTP/1.0 exchange."""
    c, s = isn, 1_000_000 + isn
    req, resp = b"GET / HTTP/1.0\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\nrs\n"
    return [
        (t, tcp(CLIENT, cport, VIP, 80, SYN, c)),
        (t + 0.001, tcp(VIP, 80, CLIENT, cport, SYN | ACK, s, c + 1)),
        (t + 0.002, tcp(CLIENT, cport, VIP, 80, ACK, c + 1, s + 1)),
        (t + 0.003, tcp(CLIENT, cport, VIP, 80, PSH | ACK, c + 1, s + 1, req)),
        (t + 0.005, tcp(VIP, 80, CLIENT, cport, PSH | ACK, s + 1, c + 1 + len(req), resp)),
        (t + 0.006, tcp(CLIENT, cport, VIP, 80, FIN | ACK, c + 1 + len(req), s + 1 + len(resp))),
        (t + 0.007, tcp(VIP, 80, CLIENT, cport, FIN | ACK, s + 1 + len(resp), c + 2 + len(req))),
        (t + 0.008, tcp(CLIENT, cport, VIP, 80, ACK, c + 2 + len(req), s + 2 + len(resp))),
    ]


def held(t: float, cport: int, isn: int) -> list[tuple[float, bytes]]:
    c, s = isn, 2_000_000 + isn
    return [
        (t, tcp(CLIENT, cport, VIP, 80, SYN, c)),
        (t + 0.001, tcp(VIP, 80, CLIENT, cport, SYN | ACK, s, c + 1)),
        (t + 0.002, tcp(CLIENT, cport, VIP, 80, ACK, c + 1, s + 1)),
    ]


def main() -> None:
    packets = []
    for i in range(3):
        packets += http10(T0 + i, 40000 + i, 1000 * (i + 1))
    packets += held(T0 + 3.5, 40010, 9000)
    packets.sort(key=lambda p: p[0])
    write_pcap("samples/http-nat-client.pcap", packets)


if __name__ == "__main__":
    main()
