#!/usr/bin/env python3
"""sluice-api throughput against the dev broker: recipients per second
injected over HTTPS with keep-alive, each request answered only after Kafka
acknowledged every job.

  python3 bench/api.py [BIN_DIR]          (default build/bin)

Four shapes, each the best of ROUNDS (default 3): large requests of 10,000
recipients (template id, one substitution each), sequential one-recipient
requests on one kept-alive connection (latency-bound: every answer waits
for its Kafka ack), the same with an Idempotency-Key (a new key, then the
same request replayed), and one-recipient requests over SESSIONS
(default 16) kept-alive connections at once, and one-click unsubscribes
(RFC 8058: POST /u/TOKEN, answered once Kafka acknowledged the
UNSUBSCRIBED event) on one connection. Then, in the same run against the same
broker, sluice-submit takes N (default 5000) one-recipient messages of
1 KB over SESSIONS STARTTLS + AUTH sessions (bench/submit_load.py), every
250 also waiting for Kafka's ack: the same work per recipient by the two
doors into sluice."""

import base64
import hashlib
import hmac
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1
                      else os.path.join(HERE, "..", "build", "bin"))
os.environ["SLUICE_BIN"] = BIN
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from sluicetest import (Proc, free_port, make_cert, start_devbroker, wait_for,  # noqa: E402
                       write_file)

ROUNDS = int(os.environ.get("ROUNDS", "3"))
SESSIONS = int(os.environ.get("SESSIONS", "16"))
N = int(os.environ.get("N", "5000"))
KEY = "sk_bench_0123456789abcdef0123456789abcdef0123"
TOKEN_KEY = b"bench-token-key-0123456789abcdef"


def unsub_token(fields):
    """common/token.c's format: lowercase unpadded base32 of the fields
    (tenant, recipient, campaign, list, job id) and the first 10 bytes of
    HMAC-SHA256(key, "unsub" NUL payload)."""
    payload = "\x1f".join(fields).encode()
    tag = hmac.new(TOKEN_KEY, b"unsub\0" + payload, hashlib.sha256).digest()[:10]
    return base64.b32encode(payload + tag).decode().lower().rstrip("=")


def main():
    with tempfile.TemporaryDirectory(prefix="sluice-bench-api-") as tmp:
        broker, bootstrap = start_devbroker(tmp)
        api = None
        try:
            cert, key = make_cert(tmp)
            h = subprocess.run([os.path.join(BIN, "sluice-api"), "--hash-key"], input=KEY + "\n",
                               capture_output=True, text=True, check=True).stdout.strip()
            keys = write_file(tmp, "keys", "%s tenant=bench domains=example.net\n" % h)
            tkey = write_file(tmp, "token.key", TOKEN_KEY.decode() + "\n")
            port = free_port()
            cfg = write_file(tmp, "sluice.yaml",
                             "kafka:\n  bootstrap: %s\napi:\n  listen: 127.0.0.1:%d\n"
                             "  cert: %s\n  key: %s\n  keys: %s\ntokens:\n  secret_file: %s\n"
                             % (bootstrap, port, cert, key, keys, tkey))
            api = Proc("sluice-api", ["-c", cfg], tmpdir=tmp)
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE

            def connect():
                try:
                    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
                    c.connect()
                    return c
                except OSError:
                    return None

            conn = wait_for(connect, 20, "sluice-api listening")
            hdrs = {"Authorization": "Bearer " + KEY, "Content-Type": "application/json"}

            def post(rcpts, conn=conn, key=None):
                body = {"sender": "news@example.net", "template_id": "welcome",
                        "recipients": [{"address": a, "substitutions": {"n": str(i)}}
                                       for i, a in enumerate(rcpts)]}
                h = dict(hdrs, **{"Idempotency-Key": key}) if key else hdrs
                conn.request("POST", "/v1/messages", body=json.dumps(body).encode(), headers=h)
                r = conn.getresponse()
                answer = r.read()
                assert r.status == 202, (r.status, answer)
                return answer

            big = ["user%d@d%d.example.com" % (i, i % 100) for i in range(10000)]
            best = None
            for _ in range(ROUNDS):
                t = time.monotonic()
                for _ in range(5):
                    post(big)
                dt = time.monotonic() - t
                best = dt if best is None else min(best, dt)
            print("10,000-recipient requests: %.0f recipients/s (5 requests in %.2f s, best of %d)"
                  % (50000 / best, best, ROUNDS))
            best = None
            for _ in range(ROUNDS):
                t = time.monotonic()
                for i in range(500):
                    post(["one%d@example.com" % i])
                dt = time.monotonic() - t
                best = dt if best is None else min(best, dt)
            print("1-recipient requests, one keep-alive connection: %.0f requests/s "
                  "(%.2f ms each, best of %d)" % (500 / best, best * 2, ROUNDS))

            # Idempotency-Key: a new key (the jobs, then the key's record,
            # each acknowledged) against the same request again (answered
            # from the record after one watermark query; nothing published).
            best_new = best_again = None
            for rnd in range(ROUNDS):
                keys = ["bench-%d-%d" % (rnd, i) for i in range(200)]
                t = time.monotonic()
                first = [post(["k%d@example.com" % i], key=k) for i, k in enumerate(keys)]
                t_new = (time.monotonic() - t) / len(keys)
                t = time.monotonic()
                again = [post(["k%d@example.com" % i], key=k) for i, k in enumerate(keys)]
                t_again = (time.monotonic() - t) / len(keys)
                named = [json.loads(a)["recipients"] for a in first]
                assert all(n and n[0].get("job_id") for n in named), named[:1]
                assert [json.loads(a)["recipients"] for a in again] == named, \
                    "a replay named other jobs"
                best_new = t_new if best_new is None else min(best_new, t_new)
                best_again = t_again if best_again is None else min(best_again, t_again)
            print("1-recipient requests with an Idempotency-Key, one connection: new key "
                  "%.2f ms each, the same request again %.2f ms each (200 of each, best of %d)"
                  % (best_new * 1000, best_again * 1000, ROUNDS))

            # One-click unsubscribes: each POST answered once its
            # UNSUBSCRIBED event is acknowledged.
            best = None
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            for rnd in range(ROUNDS):
                toks = [unsub_token(["bench", "r%d-%d@example.com" % (rnd, i), "winter", "news",
                                     "job-%d-%d" % (rnd, i)]) for i in range(200)]
                t = time.monotonic()
                for tok in toks:
                    conn.request("POST", "/u/" + tok, body=b"List-Unsubscribe=One-Click",
                                 headers=form)
                    r = conn.getresponse()
                    answer = r.read()
                    assert r.status == 200, (r.status, answer)
                dt = (time.monotonic() - t) / len(toks)
                best = dt if best is None else min(best, dt)
            print("one-click unsubscribes (POST /u/TOKEN), one connection: %.2f ms each "
                  "(200, best of %d)" % (best * 1000, ROUNDS))
            conn.close()

            # N one-recipient requests over SESSIONS connections at once.
            conns = [connect() for _ in range(SESSIONS)]
            best = None
            for _ in range(ROUNDS):
                errors = []

                def run(c, k):
                    try:
                        for i in range(k, N, SESSIONS):
                            post(["c%d@d%d.example.com" % (i, i % 100)], conn=c)
                    except Exception as e:  # reported below, not swallowed
                        errors.append(e)

                ths = [threading.Thread(target=run, args=(c, k)) for k, c in enumerate(conns)]
                t = time.monotonic()
                for th in ths:
                    th.start()
                for th in ths:
                    th.join()
                dt = time.monotonic() - t
                if errors:
                    raise errors[0]
                best = dt if best is None else min(best, dt)
            for c in conns:
                c.close()
            print("1-recipient requests, %d keep-alive connections: %.0f recipients/s "
                  "(%d in %.2f s, best of %d)" % (SESSIONS, N / best, N, best, ROUNDS))

            # sluice-submit beside it: same broker, same run.
            pw = subprocess.run([os.path.join(BIN, "sluice-submit"), "--hash-password"],
                                input="bench-pw\n", capture_output=True, text=True,
                                check=True).stdout.strip()
            users = write_file(tmp, "users", "bench:%s domains=example.net\n" % pw)
            sport = free_port()
            scfg = write_file(tmp, "submit.yaml", "kafka:\n  bootstrap: %s\nsubmit:\n"
                              "  listen: [\"127.0.0.1:%d starttls\"]\n  cert: %s\n  key: %s\n"
                              "  users: %s\n" % (bootstrap, sport, cert, key, users))
            submit = Proc("sluice-submit", ["-c", scfg, "--hostname", "submit.bench"], tmpdir=tmp)
            try:
                def listening():
                    try:
                        socket.create_connection(("127.0.0.1", sport), 1).close()
                        return True
                    except OSError:
                        return False

                wait_for(listening, 20, "sluice-submit listening")
                best = None
                for _ in range(ROUNDS):
                    out = subprocess.run(
                        [sys.executable, os.path.join(HERE, "submit_load.py"), "--port",
                         str(sport), "--starttls", "--user", "bench", "--password", "bench-pw",
                         "-n", str(N), "-s", str(SESSIONS), "--from", "news@example.net",
                         "--to", "x@example.com"], capture_output=True, text=True, check=True)
                    st = json.loads(out.stdout.strip().splitlines()[-1])
                    assert st["accepted"] == N, st
                    best = st if best is None or st["seconds"] < best["seconds"] else best
                print("sluice-submit, %d STARTTLS+AUTH sessions, 1 KB messages: %.0f "
                      "recipients/s (%d in %.2f s, best of %d)"
                      % (SESSIONS, best["messages_per_second"], N, best["seconds"], ROUNDS))
            finally:
                submit.stop()
        finally:
            if api:
                api.stop()
            broker.stop()


if __name__ == "__main__":
    main()
