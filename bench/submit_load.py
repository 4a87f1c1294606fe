#!/usr/bin/env python3
"""SMTP submission load client for bench/submit.sh.

Session set-up (connect, STARTTLS, AUTH: an argon2id check each) is done
for all sessions first and reported apart as setup_seconds; the clock for
messages/s starts when the last session is ready, as for a client that
keeps its sessions open.

Sends N messages of about SIZE octets over S concurrent sessions to one
SMTP server and prints one JSON line: messages accepted (250 after DATA),
refused, seconds, messages/s. Each session does EHLO, optionally STARTTLS
and AUTH PLAIN, then MAIL/RCPT/DATA pipelined (the server must offer
PIPELINING) and the message, waits for the final reply and starts the next
message on the same session. smtp-source cannot do TLS or AUTH, hence this.

  submit_load.py --port P [--starttls --user U --password PW] [-n N] [-s S]
                 [--size 1024 | --message FILE] [--from a@x] [--to b@y]

--message sends FILE (a whole message, headers and body) each time instead
of the generated one; --from "" is the null sender (bounces).
"""
import argparse
import asyncio
import base64
import json
import ssl
import sys
import time


async def reply(r):
    """Read one (multi-line) SMTP reply; return (code, text)."""
    lines = []
    while True:
        line = await r.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        lines.append(line.decode("latin-1").rstrip("\r\n"))
        if len(line) < 4 or line[3:4] != b"-":
            return int(lines[-1][:3]), "\n".join(lines)


async def expect(r, codes, what):
    code, text = await reply(r)
    if code not in codes:
        raise RuntimeError("%s: %s" % (what, text))
    return text


async def session(a, idx, budget, stats, body, ready, go):
    r, w = await asyncio.open_connection(a.host, a.port)
    await expect(r, (220,), "banner")
    w.write(b"EHLO load.test\r\n")
    ehlo = await expect(r, (250,), "EHLO")
    if a.starttls:
        w.write(b"STARTTLS\r\n")
        await expect(r, (220,), "STARTTLS")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        await w.start_tls(ctx)
        w.write(b"EHLO load.test\r\n")
        ehlo = await expect(r, (250,), "EHLO after TLS")
    if a.user:
        tok = base64.b64encode(b"\0" + a.user.encode() + b"\0" + a.password.encode())
        w.write(b"AUTH PLAIN " + tok + b"\r\n")
        await expect(r, (235,), "AUTH")
    if "PIPELINING" not in ehlo.upper():
        raise RuntimeError("server does not offer PIPELINING")
    ready()
    await go.wait()
    rcpt = a.rcpt.replace("{i}", str(idx))
    while budget[0] > 0:
        budget[0] -= 1
        n = budget[0]
        to = rcpt.replace("{n}", str(n)).replace("{d}", str(n % 1000))
        w.write(("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (a.sender, to)).encode())
        await expect(r, (250,), "MAIL")
        await expect(r, (250,), "RCPT")
        await expect(r, (354,), "DATA")
        w.write(body)
        code, text = await reply(r)
        if code == 250:
            stats["accepted"] += 1
        else:
            stats["refused"] += 1
            if stats["refused"] <= 3:
                print("refused: " + text, file=sys.stderr)
    w.write(b"QUIT\r\n")
    try:
        await reply(r)
    except ConnectionError:
        pass
    w.close()


def make_body(a):
    if a.message:
        with open(a.message, newline="") as f:
            lines = f.read().replace("\r\n", "\n").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        text = "".join(("." + l if l.startswith(".") else l) + "\r\n" for l in lines)
        return (text + ".\r\n").encode()
    head = "From: <%s>\r\nTo: undisclosed-recipients:;\r\nSubject: load test\r\n\r\n" % a.sender
    line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n"
    text = head
    while len(text) + len(line) <= a.size:
        text += line
    text += "x" * max(0, a.size - len(text) - 2) + "\r\n"
    return (text + ".\r\n").encode()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--starttls", action="store_true")
    p.add_argument("--user")
    p.add_argument("--password", default="")
    p.add_argument("-n", type=int, default=10000)
    p.add_argument("-s", type=int, default=16)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--message", help="send this file as every message")
    p.add_argument("--from", dest="sender", default="bench@example.net")
    p.add_argument("--to", dest="rcpt", default="user@example.com",
                   help="recipient; {i} becomes the session number (0..S-1), {n} the "
                        "message number, {d} the message number mod 1000")
    a = p.parse_args()
    body = make_body(a)
    budget, stats = [a.n], {"accepted": 0, "refused": 0}
    go, n_ready, t = asyncio.Event(), [0], {"start": time.monotonic()}

    def ready():  # the last session set up starts the clock and every session
        n_ready[0] += 1
        if n_ready[0] == a.s:
            t["go"] = time.monotonic()
            go.set()

    await asyncio.gather(*(session(a, i, budget, stats, body, ready, go) for i in range(a.s)))
    secs = time.monotonic() - t["go"]
    stats.update(seconds=round(secs, 3), messages_per_second=round(stats["accepted"] / secs, 1),
                 setup_seconds=round(t["go"] - t["start"], 3), sessions=a.s, size=len(body) - 3)
    print(json.dumps(stats))


if __name__ == "__main__":
    asyncio.run(main())
