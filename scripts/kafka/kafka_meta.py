#!/usr/bin/env python3
"""kafka_meta - ask a Kafka broker for its cluster metadata, without a client.

Speaks one Metadata request (version 4, the lowest Kafka 4.x serves) over a
plain socket and decodes the answer: the brokers the cluster knows and,
for each topic, each partition's leader, replicas and in-sync replicas.
scripts/kafka.sh waits with it until every broker of a fresh cluster is in
the metadata (a JVM tool would cost seconds of CPU per question); the fault
harness reads partition leaders with it.

    python3 kafka_meta.py brokers HOST:PORT[,HOST:PORT...]   # "1 2 3"
    python3 kafka_meta.py leaders HOST:PORT[,...] TOPIC      # "0 1\\n1 3\\n..."

As a module: metadata(bootstrap, topics=None, timeout=2.0) returns
{"brokers": {id: (host, port)}, "controller": id,
 "topics": {name: {partition: {"leader": id, "replicas": [...], "isr": [...]}}}}
and raises OSError when no broker of the list answers.
"""

import socket
import struct
import sys


class _Reader:
    def __init__(self, data):
        self.d, self.o = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.o)
        self.o += struct.calcsize(fmt)
        return v[0]

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.d[self.o:self.o + n].decode()
        self.o += n
        return s

    def array(self, item):
        n = self.take(">i")
        return [item() for _ in range(max(n, 0))]


def _request(topics):
    client = b"sluice-kafka-meta"
    body = struct.pack(">hhih", 3, 4, 1, len(client)) + client
    if topics is None:
        body += struct.pack(">i", -1)
    else:
        body += struct.pack(">i", len(topics))
        for t in topics:
            tb = t.encode()
            body += struct.pack(">h", len(tb)) + tb
    body += b"\x00"  # allow_auto_topic_creation: false
    return struct.pack(">i", len(body)) + body


def _recv(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed by the broker")
        buf += chunk
    return buf


def _decode(data):
    r = _Reader(data)
    r.take(">i")  # correlation id
    r.take(">i")  # throttle time
    brokers = {}
    for _ in range(r.take(">i")):
        node = r.take(">i")
        host = r.string()
        port = r.take(">i")
        r.string()  # rack
        brokers[node] = (host, port)
    r.string()  # cluster id
    controller = r.take(">i")
    topics = {}
    for _ in range(r.take(">i")):
        terr = r.take(">h")
        name = r.string()
        r.take(">b")  # is_internal
        parts = {}
        for _ in range(r.take(">i")):
            perr = r.take(">h")
            idx = r.take(">i")
            leader = r.take(">i")
            replicas = r.array(lambda: r.take(">i"))
            isr = r.array(lambda: r.take(">i"))
            parts[idx] = {"error": perr, "leader": leader, "replicas": replicas, "isr": isr}
        topics[name] = {"error": terr, "partitions": parts}
    return {"brokers": brokers, "controller": controller, "topics": topics}


def metadata(bootstrap, topics=None, timeout=2.0):
    last = None
    for hp in bootstrap.split(","):
        host, port = hp.rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=timeout) as s:
                s.sendall(_request(topics))
                size = struct.unpack(">i", _recv(s, 4))[0]
                return _decode(_recv(s, size))
        except (OSError, struct.error) as e:
            last = e
    raise OSError("no broker of %s answered: %s" % (bootstrap, last))


def main(argv):
    if len(argv) < 3 or argv[1] not in ("brokers", "leaders"):
        sys.stderr.write(__doc__)
        return 2
    try:
        if argv[1] == "brokers":
            md = metadata(argv[2])
            print(" ".join(str(b) for b in sorted(md["brokers"])))
        else:
            if len(argv) != 4:
                sys.stderr.write(__doc__)
                return 2
            md = metadata(argv[2], [argv[3]])
            t = md["topics"].get(argv[3])
            if not t or t["error"]:
                sys.stderr.write("kafka_meta: topic %s: error %s\n"
                                 % (argv[3], t and t["error"]))
                return 1
            for p, v in sorted(t["partitions"].items()):
                print(p, v["leader"])
    except OSError as e:
        sys.stderr.write("kafka_meta: %s\n" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
