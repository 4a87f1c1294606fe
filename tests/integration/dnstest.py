"""dnstest - a loopback DNS server for sluice tests (Python stdlib only).

Answers from a table you control, counts the queries it sees per name, and
can be told to fail: everything a resolver test needs and nothing more.

In a Python test:

    import dnstest
    srv = dnstest.DnsServer({
        "example.test":   {"MX": [(10, "mx1.example.test"), (10, "mx2.example.test")],
                           "ttl": 300},
        "mx1.example.test": {"A": ["127.0.0.1"], "AAAA": ["::1"], "ttl": 60},
        "nullmx.test":    {"MX": [(0, ".")]},
        "noemail.test":   {"A": ["127.0.0.1"]},        # MX query: NODATA
        "servfail.test":  "SERVFAIL",                  # also "REFUSED"
        "timeout.test":   "TIMEOUT",                   # never answered
        "*.wild.test":    {"A": ["127.0.0.9"]},        # any name below wild.test
        "alias.test":     {"CNAME": "mx1.example.test"},
    })
    host, port = srv.start()          # 127.0.0.1 and a free port, UDP and TCP
    ... config dns.servers: ["127.0.0.1:%d" % port] ...
    srv.count("example.test", "MX")   # queries seen for that name (and type)
    srv.set("example.test", {...})    # change an answer while running
    srv.stop()                        # or use it as a context manager

Names are matched case-insensitively without the trailing dot. A name that
is not in the table (and matches no "*." entry) is NXDOMAIN; a name in the
table without the asked type is NODATA. Negative answers carry an SOA in the
authority section whose minimum is `neg_ttl` (constructor argument, default
60 s). An entry's "ttl" (default 300) applies to its records; an MX target
"." is the RFC 7505 null MX. UDP answers larger than the client's limit
(512, or its EDNS payload size) are sent truncated so the client retries
over TCP, like a real server.

From another language (the C unit tests), run it as a process:

    python3 dnstest.py --serve --records '{"example.test": {"MX": [[10, "mx.test"]]}}'

It prints "PORT <n>" on the first line of stdout, then reads commands, one
per line, on stdin and answers each with one line: "count NAME [TYPE]" ->
the number; "set NAME JSON" / "del NAME" / "reset" (clear counters) -> "ok";
"quit" or end of input stops it.
"""

import json
import socket
import socketserver
import struct
import sys
import threading

__all__ = ["DnsServer", "TYPES"]

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28, "ANY": 255}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}


def _norm(name):
    return name.lower().rstrip(".")


def _encode_name(name):
    name = _norm(name)
    out = b""
    if name:
        for label in name.split("."):
            raw = label.encode("ascii")
            if not raw or len(raw) > 63:
                raise ValueError("bad label in %r" % name)
            out += bytes([len(raw)]) + raw
    return out + b"\x00"


def _decode_name(buf, off):
    """Return (name, offset after the name); follows compression pointers."""
    labels = []
    end = None
    hops = 0
    while True:
        if off >= len(buf):
            raise ValueError("name runs past the message")
        n = buf[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(buf):
                raise ValueError("truncated pointer")
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | buf[off + 1]
            hops += 1
            if hops > 32:
                raise ValueError("pointer loop")
            continue
        off += 1
        if n == 0:
            break
        labels.append(buf[off:off + n].decode("ascii", "replace"))
        off += n
    return ".".join(labels), (end if end is not None else off)


def _rr(name, rtype, ttl, rdata):
    return _encode_name(name) + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


class DnsServer:
    """A threaded UDP+TCP DNS server answering from a table (see module doc)."""

    def __init__(self, records=None, host="127.0.0.1", neg_ttl=60):
        self.host = host
        self.port = None
        self.neg_ttl = neg_ttl
        self._lock = threading.Lock()
        self._records = {}
        self._counts = {}
        self.queries = []           # (name, type name, "udp"|"tcp"), in order
        self._udp = None
        self._tcp = None
        self._threads = []
        for name, entry in (records or {}).items():
            self.set(name, entry)

    # ---- table -------------------------------------------------------
    def set(self, name, entry):
        """Add or replace the entry for name (dict, "SERVFAIL", "REFUSED",
        "NXDOMAIN" or "TIMEOUT")."""
        with self._lock:
            self._records[_norm(name)] = entry

    def delete(self, name):
        with self._lock:
            self._records.pop(_norm(name), None)

    def count(self, name, qtype=None):
        """Queries seen for name (all types, or one type name like "MX")."""
        name = _norm(name)
        with self._lock:
            if qtype is None:
                return sum(v for (n, _), v in self._counts.items() if n == name)
            return self._counts.get((name, qtype.upper()), 0)

    def reset_counts(self):
        with self._lock:
            self._counts.clear()
            del self.queries[:]

    def _lookup(self, name):
        with self._lock:
            if name in self._records:
                return self._records[name]
            parts = name.split(".")
            for i in range(1, len(parts)):
                wild = "*." + ".".join(parts[i:])
                if wild in self._records:
                    return self._records[wild]
        return None

    def _zone_of(self, name):
        parts = name.split(".")
        return ".".join(parts[-2:]) if len(parts) >= 2 else name

    # ---- protocol ----------------------------------------------------
    def answer(self, query, transport):
        """The response bytes for one query message, or None for no answer."""
        if len(query) < 12:
            return None
        qid, flags, qd, _an, _ns, ar = struct.unpack("!HHHHHH", query[:12])
        if flags & 0x8000 or qd != 1:
            return None
        try:
            qname, off = _decode_name(query, 12)
            qtype, _qclass = struct.unpack("!HH", query[off:off + 4])
        except (ValueError, struct.error):
            return struct.pack("!HHHHHH", qid, 0x8000 | RCODES["FORMERR"], 0, 0, 0, 0)
        question = query[12:off + 4]
        limit = 512
        if ar and transport == "udp":
            # An OPT record right after the question: its class is the
            # client's UDP payload size.
            try:
                oname, ooff = _decode_name(query, off + 4)
                otype, oclass = struct.unpack("!HH", query[ooff:ooff + 4])
                if otype == 41 and oname == "":
                    limit = max(512, oclass)
            except (ValueError, struct.error):
                pass
        name = _norm(qname)
        tname = TYPE_NAMES.get(qtype, str(qtype))
        with self._lock:
            self._counts[(name, tname)] = self._counts.get((name, tname), 0) + 1
            self.queries.append((name, tname, transport))
        entry = self._lookup(name)

        rcode = 0
        answers = []
        authority = []
        if entry is None:
            rcode = RCODES["NXDOMAIN"]
        elif isinstance(entry, str):
            if entry.upper() == "TIMEOUT":
                return None
            rcode = RCODES.get(entry.upper(), RCODES["SERVFAIL"])
        else:
            answers = self._records_for(name, entry, qtype)
        if rcode in (0, RCODES["NXDOMAIN"]) and not answers:
            zone = self._zone_of(name)
            soa = (_encode_name("ns." + zone) + _encode_name("hostmaster." + zone) +
                   struct.pack("!IIIII", 1, 3600, 600, 86400, self.neg_ttl))
            authority.append(_rr(zone, TYPES["SOA"], self.neg_ttl, soa))

        # QR, opcode 0, AA, RD copied, RA.
        rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
        body = b"".join(answers) + b"".join(authority)
        msg = struct.pack("!HHHHHH", qid, rflags, 1, len(answers), len(authority), 0) + question + body
        if transport == "udp" and len(msg) > limit:
            rflags |= 0x0200
            msg = struct.pack("!HHHHHH", qid, rflags, 1, 0, 0, 0) + question
        return msg

    def _records_for(self, name, entry, qtype):
        ttl = int(entry.get("ttl", 300))
        out = []
        cname = entry.get("CNAME")
        if cname and qtype != TYPES["CNAME"]:
            out.append(_rr(name, TYPES["CNAME"], ttl, _encode_name(cname)))
            target = self._lookup(_norm(cname))
            if isinstance(target, dict):
                out.extend(self._records_for(_norm(cname), target, qtype))
            return out
        if qtype in (TYPES["MX"], TYPES["ANY"]):
            for pref, host in entry.get("MX", []):
                out.append(_rr(name, TYPES["MX"], ttl,
                               struct.pack("!H", int(pref)) + _encode_name(host)))
        if qtype in (TYPES["A"], TYPES["ANY"]):
            for ip in entry.get("A", []):
                out.append(_rr(name, TYPES["A"], ttl, socket.inet_pton(socket.AF_INET, ip)))
        if qtype in (TYPES["AAAA"], TYPES["ANY"]):
            for ip in entry.get("AAAA", []):
                out.append(_rr(name, TYPES["AAAA"], ttl, socket.inet_pton(socket.AF_INET6, ip)))
        if qtype in (TYPES["TXT"], TYPES["ANY"]):
            for txt in entry.get("TXT", []):
                raw = txt.encode("utf-8")
                chunks = b"".join(bytes([len(raw[i:i + 255])]) + raw[i:i + 255]
                                  for i in range(0, max(len(raw), 1), 255))
                out.append(_rr(name, TYPES["TXT"], ttl, chunks))
        if qtype == TYPES["CNAME"] and cname:
            out.append(_rr(name, TYPES["CNAME"], ttl, _encode_name(cname)))
        return out

    # ---- servers -----------------------------------------------------
    def start(self):
        """Bind UDP and TCP on the same free port and serve from threads.
        Returns (host, port)."""
        outer = self

        class UDPHandler(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                try:
                    resp = outer.answer(data, "udp")
                except Exception as e:  # never let a bad packet kill the thread
                    sys.stderr.write("dnstest: %r\n" % e)
                    return
                if resp is not None:
                    sock.sendto(resp, self.client_address)

        class TCPHandler(socketserver.BaseRequestHandler):
            def handle(self):
                sock = self.request
                sock.settimeout(10)
                try:
                    while True:
                        hdr = _recv_exact(sock, 2)
                        if not hdr:
                            return
                        (n,) = struct.unpack("!H", hdr)
                        data = _recv_exact(sock, n)
                        if data is None:
                            return
                        resp = outer.answer(data, "tcp")
                        if resp is not None:
                            sock.sendall(struct.pack("!H", len(resp)) + resp)
                except (OSError, ValueError):
                    return

        class UDPServer(socketserver.ThreadingMixIn, socketserver.UDPServer):
            daemon_threads = True

        class TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
            daemon_threads = True
            allow_reuse_address = True

        for _ in range(50):
            udp = UDPServer((self.host, 0), UDPHandler)
            port = udp.server_address[1]
            try:
                tcp = TCPServer((self.host, port), TCPHandler)
            except OSError:
                udp.server_close()
                continue
            break
        else:
            raise RuntimeError("dnstest: no port free for both UDP and TCP")
        self._udp, self._tcp, self.port = udp, tcp, port
        for srv in (udp, tcp):
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                 daemon=True)
            t.start()
            self._threads.append(t)
        return self.host, self.port

    @property
    def address(self):
        """"127.0.0.1:PORT", the form dns.servers takes."""
        return "%s:%d" % (self.host, self.port)

    def stop(self):
        for srv in (self._udp, self._tcp):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        for t in self._threads:
            t.join(5)
        self._udp = self._tcp = None
        self._threads = []

    def __enter__(self):
        if self.port is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _serve_main(argv):
    import argparse

    ap = argparse.ArgumentParser(description="loopback DNS server for tests")
    ap.add_argument("--serve", action="store_true", required=True)
    ap.add_argument("--records", default="{}", help="JSON table, or @file")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--neg-ttl", type=int, default=60)
    args = ap.parse_args(argv)
    text = args.records
    if text.startswith("@"):
        with open(text[1:]) as f:
            text = f.read()
    srv = DnsServer(json.loads(text), host=args.host, neg_ttl=args.neg_ttl)
    _, port = srv.start()
    out = sys.stdout
    out.write("PORT %d\n" % port)
    out.flush()
    for line in sys.stdin:
        words = line.strip().split(None, 2)
        if not words:
            continue
        cmd = words[0]
        if cmd == "quit":
            break
        if cmd == "count" and len(words) >= 2:
            qtype = words[2] if len(words) > 2 else None
            out.write("%d\n" % srv.count(words[1], qtype))
        elif cmd == "set" and len(words) == 3:
            srv.set(words[1], json.loads(words[2]))
            out.write("ok\n")
        elif cmd == "del" and len(words) >= 2:
            srv.delete(words[1])
            out.write("ok\n")
        elif cmd == "reset":
            srv.reset_counts()
            out.write("ok\n")
        else:
            out.write("error unknown command\n")
        out.flush()
    srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(_serve_main(sys.argv[1:]))
