#!/usr/bin/env python3
"""Write the seed corpora of the fuzz harnesses into tests/fuzz/corpus/.

The seeds are committed; this script documents how they were made and
regenerates them (python3 tests/fuzz/make_seeds.py). Protobuf seeds are
hand-encoded so no generated Python modules are needed.
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from sluicetest import pb_field  # noqa: E402  (the one hand-made protobuf encoder)


def put(harness, name, data):
    d = os.path.join(HERE, "corpus", harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- smtp server
# byte 0: flags (see fuzz_smtp_server.c), byte 1: piece cap, then the client.
NO_PIPE, DEFER, SPLIT, SMALL_SIZE, SMALL_RCPT, NO_UTF8, FEW_ERR, BYTEWISE = (
    1 << i for i in range(8))

SESSION = (b"EHLO client.test\r\nMAIL FROM:<a@b.test> SIZE=100 BODY=8BITMIME\r\n"
           b"RCPT TO:<x@y.test>\r\nRCPT TO:<bad@y.test>\r\nDATA\r\n"
           b"Subject: hi\r\n\r\nline one\r\n..stuffed\r\n.\r\nQUIT\r\n")
smtp = {
    "basic": bytes([0, 0]) + SESSION,
    "pipelined_deferred": bytes([DEFER | SPLIT, 0]) + SESSION.replace(b"\r\nDATA", b"\r\n\xffDATA"),
    "bytewise": bytes([BYTEWISE | DEFER, 0]) + SESSION,
    "chunk7": bytes([DEFER, 7]) + SESSION,
    "helo_rset_noop": bytes([NO_PIPE, 0]) + (
        b"HELO c\r\nNOOP\r\nMAIL FROM:<>\r\nRSET\r\nHELP\r\nVRFY x\r\nEXPN y\r\n"
        b"BDAT 10 LAST\r\nSTARTTLS\r\nAUTH PLAIN AGVAZg==\r\nQUIT\r\n"),
    "bare_lf_cmd": bytes([0, 0]) + b"EHLO c\nMAIL FROM:<a@b>\r\n",
    "bare_lf_data": bytes([SPLIT, 0]) + (
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\ny\r\n\xff.\r\n"
        b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nnul\x00here\r\n.\r\nQUIT\r\n"),
    "smuggle": bytes([SPLIT | DEFER, 0]) + (
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nbody\n.\n"
        b"MAIL FROM:<evil@x>\r\n\r\n.\r\nQUIT\r\n"),
    "size_limits": bytes([SMALL_SIZE | SMALL_RCPT | FEW_ERR, 0]) + (
        b"EHLO c\r\nMAIL FROM:<a@b> SIZE=999999\r\nMAIL FROM:<a@b> SIZE=10\r\n"
        b"RCPT TO:<1@d>\r\nRCPT TO:<2@d>\r\nRCPT TO:<3@d>\r\nRCPT TO:<4@d>\r\nDATA\r\n"
        + b"A" * 1200 + b"\r\n" + b"B" * 1200 + b"\r\n.\r\nQUIT\r\n"),
    "utf8": bytes([NO_UTF8, 0]) + (
        "EHLO c\r\nMAIL FROM:<jörg@exämple.test> SMTPUTF8\r\n"
        "RCPT TO:<\"quoted local\"@[127.0.0.1]>\r\nDATA\r\nREJECT me\r\n.\r\n"
        "MAIL FROM:<bye@x>\r\nNOOP\r\n").encode(),
    "long_line": bytes([0, 100]) + b"EHLO " + b"c" * 600 + b"\r\nNOOP\r\n",
    "errors": bytes([FEW_ERR, 0]) + b"FOO\r\nBAR\r\nMAIL\r\nRCPT TO:<x>\r\nDATA\r\nNOOP\r\n",
}
for k, v in smtp.items():
    put("fuzz_smtp_server", k, v)

# ---------------------------------------------------------------- smtp reply
replies = {
    "single": "250 2.1.0 Ok\r\n",
    "multi": "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n",
    "enh_multi": "550-5.1.1 The email account that you tried to reach does not exist.\r\n"
                 "550-5.1.1 Please try double-checking the recipient's email\r\n"
                 "550 5.1.1 address for typos. - gsmtp\r\n",
    "pipelined": "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 no\r\n354 go ahead\r\n",
    "bare_lf": "421 4.7.0 Try again later\n",
    "code_only": "250\r\n",
    "mismatch": "250-a\r\n251 b\r\n",
    "partial": "250-first\r\n250 sec",
    "wrong_class": "451 5.1.1 odd\r\n",
}
for k, v in replies.items():
    put("fuzz_smtp_reply", k, v)

# ---------------------------------------------------------------- protobuf
field = pb_field


def s(num, v):
    return field(num, 2, v)


def u(num, v):
    return field(num, 0, v)


def mapentry(num, k, v):
    return field(num, 2, s(1, k) + s(2, v))


def proto_fields(path):
    """name -> (number, type) for the top-level fields of a message."""
    import re
    out = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"\s*(?:repeated\s+)?(map<[^>]+>|[\w.]+)\s+(\w+)\s*=\s*(\d+)", line)
            if m:
                out.setdefault(m.group(2), (int(m.group(3)), m.group(1)))
    return out


PROTO = os.path.join(HERE, "..", "..", "proto", "sluice", "v1")


def encode(path, values):
    fl = proto_fields(os.path.join(PROTO, path))
    out = b""
    for name, v in values.items():
        num, typ = fl[name]
        if typ.startswith("map<"):
            for k, val in v.items():
                out += mapentry(num, k, val)
        elif isinstance(v, list):
            for x in v:
                out += s(num, x) if isinstance(x, (str, bytes)) else u(num, x)
        elif typ in ("double",):
            out += field(num, 1, struct.pack("<d", v))
        elif isinstance(v, (str, bytes)):
            out += s(num, v)
        elif isinstance(v, bool):
            out += u(num, int(v))
        else:
            out += u(num, v)
    return out


job = {"version": 1, "job_id": "01JOBIDJOBIDJOBIDJOBIDJOBI", "tenant": "acme",
       "campaign": "spring", "recipients": ["a@example.test", "b@example.test"],
       "domain": "example.test", "mail_from": "bounce@acme.test",
       "vars": {"first_name": "Ann", "x": "y"}, "meta": {"k": "v", "quote\"": "tab\t"}}
jf = proto_fields(os.path.join(PROTO, "job.proto"))
job = {k: v for k, v in job.items() if k in jf}
job_bytes = encode("job.proto", job)
put("fuzz_job_decode", "job", job_bytes)
put("fuzz_job_decode", "job_v2", encode("job.proto", dict(job, version=2)))
dispatch = encode("dispatch.proto", {"version": 1}) + field(
    proto_fields(os.path.join(PROTO, "dispatch.proto"))["job"][0], 2, job_bytes)
put("fuzz_job_decode", "dispatch", dispatch)
ef = proto_fields(os.path.join(PROTO, "event.proto"))
event = {"version": 1, "type": 3, "job_id": "01JOB", "recipient": "a@example.test",
         "smtp_code": 451, "enhanced_code": "4.7.1", "reply": "try\nlater \"now\"",
         "bounce_class": 6, "rate_per_sec": 12.5, "meta": {"a": "b"},
         "possible_duplicate": True}
event = {k: v for k, v in event.items() if k in ef}
put("fuzz_job_decode", "event", encode("event.proto", event))
put("fuzz_job_decode", "empty", b"")

# ---------------------------------------------------------------- config
with open(os.path.join(HERE, "..", "data", "config", "sluice.yaml"), "rb") as f:
    put("fuzz_config", "sluice_yaml", f.read())
put("fuzz_config", "minimal", "kafka: { bootstrap: 127.0.0.1:9092 }\n")
put("fuzz_config", "anchors", "a: &x { b: 1 }\nc: *x\nkafka:\n  <<: *x\n")
put("fuzz_config", "bad_key", "kafka:\n  bootstrp: x\n")
put("fuzz_config", "flow", "{kafka: {bootstrap: 'h:1'}, retry: {delays: [1m, 2h], expiry: 3d}}\n")
put("fuzz_config", "backoff", "backoff:\n  - { match: \"(a|b)*[\", action: suspend }\n")

# ---------------------------------------------------------------- template
T = ("From: \"{{name}}\" <news@acme.test>\r\nTo: {{ email }}\r\n"
     "Subject: Hello {{name}}, {{subject}}\r\n\r\nDear {{name}},\r\n{{body}}\r\n.\r\n")
put("fuzz_template", "basic", T + "\0\0" + "\x01".join(["Ann", "a@b.test", "news", "text"]))
put("fuzz_template", "inject", T + "\0\0" + "\x01".join(
    ["Ann\r\nBcc: x@evil", "a@b.test\n\nbody", "s\rX-Injected: 1", "a\r\nb\nc\r"]))
put("fuzz_template", "utf8", T + "\0\0" + "\x01".join(
    ["Jörg \"the\" Ünïcode ✓" * 5, "a@b.test", "日本語のサブジェクト" * 4, "\x00nul"]))
put("fuzz_template", "missing", T + "\0\0" + "Ann")
put("fuzz_template", "mime", (
    "From: a@b.test\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"b\"\n"
    "X-Long: {{a}}\n\t{{b}}\n\n--b\nContent-Type: text/plain\n\n{{a}}\n--b--\n")
    + "\0\0" + "\x01".join(["x" * 300, "\t"]))
put("fuzz_template", "bad", "Subject: no from\r\n{{bad name}}\r\n\r\n{{\r\n")
