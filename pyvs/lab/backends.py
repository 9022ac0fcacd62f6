"""The lab realservers' services, so the classic LVS examples can be reproduced by hand:

  80  HTTP/1.0 that names the realserver ("rs1\\n"), closing after each response
  23  a telnet-like line echo that holds the connection (SO_KEEPALIVE on, as telnetd)
  21  an ftp-like control channel: PASV opens a data port (30000-30999), RETR sends
      100 KB on it and the server closes the data connection, QUIT closes
   9  discard (RFC 863), for bulk transfers (bench/live.py)
8080  answers its name and closes at once, for connection-rate runs (bench/live.py)

    python -m pyvs.lab.backends --name rs1
"""

from __future__ import annotations

import argparse
import http.server
import socket
import socketserver
import threading


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    name = ""                       # the realserver's name, for the greetings


def http_server(name: str, port: int = 80) -> _Server:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"{name}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass
    return _Server(("", port), Handler)


class _Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        name = getattr(self.server, "name", "")
        self.wfile.write(f"{name} echo: type lines, 'exit' to leave\r\n".encode())
        for line in self.rfile:
            if line.strip() == b"exit":
                self.wfile.write(b"logout\r\n")
                return
            self.wfile.write(line)


class _Ftp(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(f"220 {getattr(self.server, 'name', '')} ftp-like\r\n".encode())
        data: socket.socket | None = None
        for line in self.rfile:
            cmd = line.strip().upper().split(b" ")[0]
            if cmd == b"PASV":
                data = socket.socket()
                data.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                for port in range(30000, 31000):
                    try:
                        data.bind(("", port))
                        break
                    except OSError:
                        continue
                data.listen(1)
                host = self.request.getsockname()[0].replace(".", ",")
                port = data.getsockname()[1]
                self.wfile.write(f"227 Entering Passive Mode ({host},{port >> 8},"
                                 f"{port & 255})\r\n".encode())
            elif cmd == b"RETR" and data is not None:
                self.wfile.write(b"150 sending 100000 bytes\r\n")
                data.settimeout(30)
                conn, _ = data.accept()
                conn.sendall(b"x" * 100_000)
                conn.close()
                data.close()
                data = None
                self.wfile.write(b"226 done\r\n")
            elif cmd == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"200 ok\r\n")


def _discard(port: int = 9) -> None:
    class Discard(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            while self.request.recv(1 << 16):
                pass
    _Server(("", port), Discard).serve_forever()


def _hello(name: str, port: int = 8080) -> None:
    """One thread, accept/send/close: fast enough not to be what a rate run measures."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", port))
    s.listen(1024)
    body = f"{name}\n".encode()
    while True:
        conn, _ = s.accept()
        try:
            conn.sendall(body)
        except OSError:
            pass
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description="the pyvs lab's realserver services")
    ap.add_argument("--name", required=True)
    args = ap.parse_args()
    servers = [http_server(args.name)]
    for port, handler in ((23, _Echo), (21, _Ftp)):
        s = _Server(("", port), handler)
        s.name = args.name
        servers.append(s)
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    threading.Thread(target=_discard, daemon=True).start()
    threading.Thread(target=_hello, args=(args.name,), daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
