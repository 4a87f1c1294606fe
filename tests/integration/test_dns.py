"""Integration tests for dnstest.py, the loopback DNS server other tests
rely on: each answer kind, the failure modes, TCP and truncation, the query
counter, runtime changes, and the --serve child-process mode used by the C
unit tests (tests/unit/test_dns.c exercises the resolver itself against
it). A small stdlib DNS client asks the questions."""

import json
import os
import random
import socket
import struct
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import dnstest  # noqa: E402
from sluicetest import wait_for  # noqa: E402

T = dnstest.TYPES


def build_query(name, qtype, edns=None):
    qid = random.randint(0, 0xFFFF)
    msg = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1 if edns else 0)
    msg += dnstest._encode_name(name) + struct.pack("!HH", qtype, 1)
    if edns:
        msg += b"\x00" + struct.pack("!HHIH", 41, edns, 0, 0)
    return qid, msg


def parse_reply(buf):
    qid, flags, qd, an, ns, _ar = struct.unpack("!HHHHHH", buf[:12])
    off = 12
    for _ in range(qd):
        _, off = dnstest._decode_name(buf, off)
        off += 4
    rrs = []
    for i in range(an + ns):
        name, off = dnstest._decode_name(buf, off)
        rtype, _cls, ttl, rdlen = struct.unpack("!HHIH", buf[off:off + 10])
        off += 10
        rd = buf[off:off + rdlen]
        if rtype == T["MX"]:
            host, _ = dnstest._decode_name(buf, off + 2)
            data = (struct.unpack("!H", rd[:2])[0], host)
        elif rtype == T["A"]:
            data = socket.inet_ntop(socket.AF_INET, rd)
        elif rtype == T["AAAA"]:
            data = socket.inet_ntop(socket.AF_INET6, rd)
        elif rtype == T["CNAME"]:
            data, _ = dnstest._decode_name(buf, off)
        elif rtype == T["SOA"]:
            _, p = dnstest._decode_name(buf, off)
            _, p = dnstest._decode_name(buf, p)
            data = struct.unpack("!IIIII", buf[p:p + 20])
        else:
            data = rd
        off += rdlen
        rrs.append(("an" if i < an else "ns", name, rtype, ttl, data))
    return {"id": qid, "rcode": flags & 0xF, "tc": bool(flags & 0x0200),
            "aa": bool(flags & 0x0400), "rrs": rrs}


def ask_udp(port, name, qtype, timeout=2.0, edns=None):
    qid, msg = build_query(name, qtype, edns)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(msg, ("127.0.0.1", port))
        try:
            data, _ = s.recvfrom(65535)
        except socket.timeout:
            return None
    r = parse_reply(data)
    assert r["id"] == qid
    return r


def ask_tcp(port, name, qtype):
    qid, msg = build_query(name, qtype)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(struct.pack("!H", len(msg)) + msg)
        hdr = dnstest._recv_exact(s, 2)
        data = dnstest._recv_exact(s, struct.unpack("!H", hdr)[0])
    r = parse_reply(data)
    assert r["id"] == qid
    return r


RECORDS = {
    "example.test": {"MX": [(10, "mx1.example.test"), (20, "mx2.example.test")], "ttl": 300},
    "mx1.example.test": {"A": ["127.0.0.1"], "AAAA": ["::1"], "ttl": 60},
    "nullmx.test": {"MX": [(0, ".")]},
    "noemail.test": {"A": ["127.0.0.3"]},
    "servfail.test": "SERVFAIL",
    "refused.test": "REFUSED",
    "timeout.test": "TIMEOUT",
    "*.wild.test": {"A": ["127.0.0.9"]},
    "alias.test": {"CNAME": "mx1.example.test"},
    "big.test": {"MX": [(i, "mx%02d.a-long-host-name-to-fill-the-packet.test" % i)
                        for i in range(40)]},
}


class DnsServerTest(unittest.TestCase):
    def setUp(self):
        self.srv = dnstest.DnsServer(RECORDS, neg_ttl=30)
        _, self.port = self.srv.start()
        self.addCleanup(self.srv.stop)

    def test_mx_answer_and_ttl(self):
        r = ask_udp(self.port, "Example.TEST.", T["MX"])
        self.assertEqual(r["rcode"], 0)
        self.assertTrue(r["aa"])
        mx = [(rr[4], rr[3]) for rr in r["rrs"] if rr[2] == T["MX"]]
        self.assertEqual(mx, [((10, "mx1.example.test"), 300), ((20, "mx2.example.test"), 300)])

    def test_null_mx(self):
        r = ask_udp(self.port, "nullmx.test", T["MX"])
        self.assertEqual(r["rcode"], 0)
        self.assertEqual([rr[4] for rr in r["rrs"]], [(0, "")])

    def test_addresses(self):
        a = ask_udp(self.port, "mx1.example.test", T["A"])
        self.assertEqual([rr[4] for rr in a["rrs"]], ["127.0.0.1"])
        self.assertEqual(a["rrs"][0][3], 60)
        aaaa = ask_udp(self.port, "mx1.example.test", T["AAAA"])
        self.assertEqual([rr[4] for rr in aaaa["rrs"]], ["::1"])

    def test_cname_is_followed(self):
        r = ask_udp(self.port, "alias.test", T["A"])
        self.assertEqual([(rr[2], rr[4]) for rr in r["rrs"]],
                         [(T["CNAME"], "mx1.example.test"), (T["A"], "127.0.0.1")])

    def test_wildcard(self):
        r = ask_udp(self.port, "anything.below.wild.test", T["A"])
        self.assertEqual([rr[4] for rr in r["rrs"]], ["127.0.0.9"])

    def test_negative_answers_carry_soa(self):
        nx = ask_udp(self.port, "nope.test", T["MX"])
        self.assertEqual(nx["rcode"], 3)
        soa = [rr for rr in nx["rrs"] if rr[0] == "ns" and rr[2] == T["SOA"]]
        self.assertEqual(len(soa), 1)
        self.assertEqual(soa[0][4][4], 30)  # minimum = neg_ttl
        nodata = ask_udp(self.port, "noemail.test", T["MX"])
        self.assertEqual(nodata["rcode"], 0)
        self.assertEqual([rr[0] for rr in nodata["rrs"]], ["ns"])

    def test_failures(self):
        self.assertEqual(ask_udp(self.port, "servfail.test", T["MX"])["rcode"], 2)
        self.assertEqual(ask_udp(self.port, "refused.test", T["A"])["rcode"], 5)
        self.assertIsNone(ask_udp(self.port, "timeout.test", T["MX"], timeout=0.3))
        self.assertEqual(self.srv.count("timeout.test", "MX"), 1)

    def test_truncation_and_tcp(self):
        r = ask_udp(self.port, "big.test", T["MX"])
        self.assertTrue(r["tc"])
        self.assertEqual(r["rrs"], [])
        big = ask_udp(self.port, "big.test", T["MX"], edns=4096)
        self.assertFalse(big["tc"])
        self.assertEqual(len(big["rrs"]), 40)
        t = ask_tcp(self.port, "big.test", T["MX"])
        self.assertFalse(t["tc"])
        self.assertEqual(len(t["rrs"]), 40)
        self.assertEqual([q[2] for q in self.srv.queries], ["udp", "udp", "tcp"])

    def test_counter_and_changes(self):
        self.assertEqual(self.srv.count("example.test"), 0)
        ask_udp(self.port, "example.test", T["MX"])
        ask_udp(self.port, "EXAMPLE.test", T["MX"])
        ask_udp(self.port, "example.test", T["A"])
        self.assertEqual(self.srv.count("example.test", "MX"), 2)
        self.assertEqual(self.srv.count("example.test"), 3)
        self.srv.set("example.test", {"MX": [(5, "other.test")], "ttl": 7})
        r = ask_udp(self.port, "example.test", T["MX"])
        self.assertEqual([(rr[4], rr[3]) for rr in r["rrs"]], [((5, "other.test"), 7)])
        self.srv.delete("example.test")
        self.assertEqual(ask_udp(self.port, "example.test", T["MX"])["rcode"], 3)
        self.srv.reset_counts()
        self.assertEqual(self.srv.count("example.test"), 0)

    def test_garbage_does_not_kill_it(self):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\x00\x01garbage", ("127.0.0.1", self.port))
            s.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c", ("127.0.0.1", self.port))
        self.assertEqual(ask_udp(self.port, "example.test", T["MX"])["rcode"], 0)

    def test_concurrent_clients(self):
        import threading
        errors = []

        def worker():
            try:
                for _ in range(20):
                    r = ask_udp(self.port, "mx1.example.test", T["A"])
                    if r is None or r["rcode"] != 0:
                        errors.append(r)
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(self.srv.count("mx1.example.test", "A"), 160)


class ServeModeTest(unittest.TestCase):
    def test_child_process_protocol(self):
        recs = json.dumps({"x.test": {"MX": [[10, "mx.x.test"]]}})
        p = subprocess.Popen([sys.executable, os.path.join(HERE, "dnstest.py"), "--serve",
                              "--records", recs],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

        def cleanup():
            if p.poll() is None:
                p.kill()
            p.wait(10)
            p.stdin.close()
            p.stdout.close()
        self.addCleanup(cleanup)
        line = p.stdout.readline()
        self.assertTrue(line.startswith("PORT "), line)
        port = int(line.split()[1])

        def cmd(text):
            p.stdin.write(text + "\n")
            p.stdin.flush()
            return p.stdout.readline().strip()

        r = ask_udp(port, "x.test", T["MX"])
        self.assertEqual(r["rrs"][0][4], (10, "mx.x.test"))
        self.assertEqual(cmd("count x.test MX"), "1")
        self.assertEqual(cmd("count x.test"), "1")
        self.assertEqual(cmd('set y.test {"A": ["127.0.0.7"]}'), "ok")
        self.assertEqual(ask_udp(port, "y.test", T["A"])["rrs"][0][4], "127.0.0.7")
        self.assertEqual(cmd("reset"), "ok")
        self.assertEqual(cmd("count x.test"), "0")
        self.assertEqual(cmd("bogus"), "error unknown command")
        p.stdin.write("quit\n")
        p.stdin.flush()
        wait_for(lambda: p.poll() is not None, 10, "dnstest.py to exit")
        self.assertEqual(p.returncode, 0)


if __name__ == "__main__":
    unittest.main()
