"""The kernel lab's peers, run inside the guest's namespaces (Python 3 standard library only).

    python3 peers.py server NAME      a realserver: TCP 80/443 HTTP-ish, TCP 7 echo/hold,
                                      UDP 53/7 echo; each reply names the realserver
    python3 peers.py client           the client: one JSON command per stdin line, one JSON
                                      answer per stdout line (see Client)

The HTTP-ish server answers every request that starts with ``GET``.  A request for
``/close`` is answered and then the server closes first (its FIN before the client's); any
other request is answered and the server waits for the client to close.  Other data is
echoed.  A client's FIN is answered by the server's close.
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import struct
import sys
import time

TCP_PORTS = (80, 443, 7)
UDP_PORTS = (53, 7)


def serve(name: str) -> None:
    sel = selectors.DefaultSelector()
    for port in TCP_PORTS:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(64)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, "listen")
    for port in UDP_PORTS:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("0.0.0.0", port))
        u.setblocking(False)
        sel.register(u, selectors.EVENT_READ, "udp")
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if key.data == "listen":
                try:
                    c, _ = s.accept()
                except OSError:
                    continue
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ, "conn")
            elif key.data == "udp":
                try:
                    data, peer = s.recvfrom(2048)
                except OSError:
                    continue
                s.sendto(f"{name} ".encode() + data, peer)
            else:
                try:
                    data = s.recv(4096)
                except OSError:                     # RST from the client
                    data = b""
                if not data:
                    sel.unregister(s)
                    s.close()
                elif data.startswith(b"GET"):
                    body = f"{name}\n".encode()
                    s.sendall(b"HTTP/1.0 200 OK\r\nServer: %s\r\nContent-Length: %d\r\n\r\n%s"
                              % (name.encode(), len(body), body))
                    if data.split(b" ")[1:2] == [b"/close"]:
                        sel.unregister(s)
                        s.close()
                else:
                    s.sendall(data)


class Client:
    """Commands (JSON objects, one per line; every answer has ok, t0, t1 = time.time()
    before and after, and error on failure):

    {"op": "connect", "id": ID, "src": ADDR, "dst": ADDR, "port": N, "sport": N?,
     "wait": true}        TCP connect; wait=false sends the SYN and returns at once
    {"op": "send", "id": ID, "data": TEXT}     send, then read the answer (up to 2 s)
    {"op": "close", "id": ID}                  close (FIN), or release a socket the
                                                server already closed
    {"op": "rst", "id": ID}                    close with SO_LINGER 0: an RST
    {"op": "udp", "id": ID, "src": ADDR, "dst": ADDR, "port": N, "sport": N?,
     "data": TEXT}        send a datagram from the ID's socket, wait up to 1 s for a reply
    """

    def __init__(self) -> None:
        self.socks: dict[str, socket.socket] = {}

    def run(self) -> None:
        for line in sys.stdin:
            cmd = json.loads(line)
            t0 = time.time()
            try:
                out = getattr(self, "op_" + cmd["op"])(cmd)
                ans = {"ok": True, **out}
            except OSError as exc:
                ans = {"ok": False, "error": errno.errorcode.get(exc.errno or 0, str(exc))}
            ans.update(t0=t0, t1=time.time())
            print(json.dumps(ans), flush=True)

    def _tcp(self, cmd: dict) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((cmd["src"], cmd.get("sport", 0)))
        self.socks[cmd["id"]] = s
        return s

    def op_connect(self, cmd: dict) -> dict:
        s = self._tcp(cmd)
        if cmd.get("wait", True):
            s.settimeout(3.0)
            s.connect((cmd["dst"], cmd["port"]))
        else:
            s.setblocking(False)
            err = s.connect_ex((cmd["dst"], cmd["port"]))
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, os.strerror(err))
        return {"sport": s.getsockname()[1]}

    def op_send(self, cmd: dict) -> dict:
        s = self.socks[cmd["id"]]
        s.settimeout(2.0)
        s.sendall(cmd["data"].encode())
        try:
            reply = s.recv(4096)
        except TimeoutError:
            return {"reply": None}
        return {"reply": reply.decode(errors="replace")}

    def op_close(self, cmd: dict) -> dict:
        self.socks.pop(cmd["id"]).close()
        return {}

    def op_rst(self, cmd: dict) -> dict:
        s = self.socks.pop(cmd["id"])
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        return {}

    def op_udp(self, cmd: dict) -> dict:
        s = self.socks.get(cmd["id"])
        if s is None:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((cmd["src"], cmd.get("sport", 0)))
            self.socks[cmd["id"]] = s
        s.settimeout(1.0)
        s.sendto(cmd["data"].encode(), (cmd["dst"], cmd["port"]))
        try:
            reply = s.recv(2048)
        except TimeoutError:
            return {"sport": s.getsockname()[1], "reply": None}
        return {"sport": s.getsockname()[1], "reply": reply.decode(errors="replace")}


if __name__ == "__main__":
    if sys.argv[1:2] == ["server"]:
        serve(sys.argv[2])
    else:
        Client().run()
