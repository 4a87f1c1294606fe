"""Fault scenario: hostile input on the jobs topic.

Malformed and truncated protobuf, a schema version from the future, jobs
far over the size limits, CR/LF/NUL in every address and header field,
and template variables carrying CRLF, published between ordinary jobs on
the same partitions. Each hostile record goes to the DLQ or is rejected
with a reason; nothing crashes; the ordinary jobs after them are all
delivered (no partition stalls); no injected header or recipient reaches
the wire.
"""

import os
import unittest

from harness import JOBS, Cluster

EVIL = "evil@evil.test"
INJECT = "\r\nBcc: " + EVIL + "\r\nX-Injected: yes"
TEMPLATE = ("From: Sender <sender@example.net>\r\nTo: {{to}}\r\nSubject: {{subject}}\r\n"
            "\r\nHello {{name}}\r\n")


def hostile(domains):
    """(spec, kind) pairs. Specs with a job_id must end REJECTED or
    BOUNCED with a reason; the others (no decodable id) must reach the DLQ."""
    out = []
    dom = "d0.test"
    good_raw = "From: sender@example.net\r\nTo: x@d0.test\r\nSubject: hostile\r\n\r\nbody\r\n"
    # Not a protobuf, truncated, from the future.
    out.append(({"payload_hex": "ffff" + "00" * 7 + "74686973206973206e6f74", "key": dom},
                "dlq"))
    out.append(({"job_id": "h-trunc", "to": ["t@d0.test"], "domain": dom, "raw": good_raw,
                 "truncate": 9}, "dlq"))
    out.append(({"job_id": "h-version", "to": ["v@d0.test"], "domain": dom, "raw": good_raw,
                 "version": 99}, "rejected"))
    # Over scheduler.max_job_bytes (256k here) but within Kafka's limit
    # (the size budget: 256k + 80k for a producer with this config).
    out.append(({"job_id": "h-big", "to": ["b@d1.test"], "domain": "d1.test", "raw": good_raw,
                 "raw_pad": 300 * 1024}, "rejected"))
    # CR, LF and NUL in every address field.
    for n, bad in enumerate(["\r\n", "\r", "\n", "\u0000", "\r\nRCPT TO:<" + EVIL + ">"]):
        d = "d%d.test" % (n % domains)
        out.append(({"job_id": "h-rcpt-%d" % n, "to": ["u%sx@%s" % (bad, d)], "domain": d,
                     "raw": good_raw}, "rejected"))
        out.append(({"job_id": "h-from-%d" % n, "to": ["ok%d@%s" % (n, d)], "domain": d,
                     "from": "s%sx@example.net" % bad, "raw": good_raw}, "rejected"))
        # (A NUL ends a C string: "d3.test\0" is sent as "d3.test", valid.)
        out.append(({"job_id": "h-dom-%d" % n, "to": ["ok%d@%s" % (n, d)],
                     "domain": d + bad, "key": d, "raw": good_raw},
                    "any" if bad == "\u0000" else "rejected"))
        # Header fields of the raw message itself: bare CR / LF / NUL. A
        # raw message is the producer's own text, so a line it adds is its
        # own header (normalised to CRLF), not an injection; it must still
        # end with a final event, and NUL must never reach the wire.
        raw = ("From: sender@example.net\r\nTo: h%d@%s\r\nSubject: a%sX-Raw-Line: yes\r\n\r\n"
               "body\r\n" % (n, d, bad))
        out.append(({"job_id": "h-hdr-%d" % n, "to": ["h%d@%s" % (n, d)], "domain": d,
                     "raw": raw}, "any"))
        # Template variables carrying CRLF (and CR, LF, NUL) into headers.
        out.append(({"job_id": "h-var-%d" % n, "to": ["v%d@%s" % (n, d)], "domain": d,
                     "template_id": "fault-t1",
                     "vars": {"subject": "hi" + bad + "X-Injected: yes", "name": "n",
                              "to": "v%d@%s" % (n, d)}},
                    "any" if bad == "\u0000" else "rejected"))
        out.append(({"job_id": "h-varto-%d" % n, "to": ["w%d@%s" % (n, d)], "domain": d,
                     "template_id": "fault-t1",
                     "vars": {"subject": "s", "name": "n", "to": "w%d@%s%s" % (n, d, INJECT)}},
                    "rejected"))
    # Tenant, campaign and meta with CRLF: carried as data, never as headers.
    out.append(({"job_id": "h-meta", "to": ["m@d2.test"], "domain": "d2.test", "raw": good_raw,
                 "tenant": "t" + INJECT, "campaign": "c" + INJECT,
                 "meta": {"k" + INJECT: "v" + INJECT}}, "any"))
    return out


class HostileTest(unittest.TestCase):
    def test_hostile_input(self):
        c = Cluster("hostile", store=True, extra_yaml="scheduler: { max_job_bytes: 256k }\n")
        try:
            c.start_scheduler("sched-1")
            c.start_sender("sender-1")
            c.publish([{"template": {"id": "fault-t1", "body": TEMPLATE}}])
            n_good = max(200, JOBS // 4)
            before = c.job_specs(n_good // 2, "pre")
            after = c.job_specs(n_good - n_good // 2, "post")
            bad = hostile(c.domains)
            c.publish(before)
            c.publish([s for s, _ in bad])
            c.publish(after)
            # A 10 MB job: Kafka refuses it at the producer with a reason;
            # the producer tool does not crash and says so.
            r = c.publish([{"job_id": "h-10mb", "to": ["x@d3.test"], "domain": "d3.test",
                            "raw": "Subject: big\r\n\r\n", "raw_pad": 10 * 1024 * 1024}],
                          expect_ok=False)
            self.assertEqual(r.returncode, 1, r)
            self.assertIn(b"failed=1", r.stdout)

            good = [s["job_id"] for s in before + after]
            with_id = [s["job_id"] for s, k in bad if "job_id" in s and k != "dlq"]
            c.wait_final(good + with_id, 90, check_alive=("sched-1", "sender-1"))
            c.wait_quiet()
            rep = c.reconcile(good + with_id, "hostile-input",
                              expect_final=lambda j: "DELIVERED" if j in set(good) else None)
            self.assertEqual(rep["lost"], 0, rep)
            # Every ordinary job, before and after the hostile ones, delivered.
            wrong_good = [w for w in rep["wrong"] if w[0] in set(good)]
            self.assertEqual(wrong_good, [], "ordinary jobs not delivered (a stalled partition?)")
            tail = c.follow_events()
            for spec, kind in bad:
                jid = spec.get("job_id")
                if kind == "dlq" or not jid:
                    continue
                evs = tail.finals[jid]
                t = evs[0]["type"]
                if kind == "rejected":
                    self.assertIn(t, ("REJECTED", "BOUNCED"), (jid, evs[0]))
                    self.assertTrue(evs[0].get("reason") or evs[0].get("reply"),
                                    "%s ended %s without a reason" % (jid, t))
            # The DLQ holds every record that could not be decoded, with a
            # reason header.
            dlq = c.dump("dlq")
            self.assertGreaterEqual(len(dlq), 3, dlq)
            for rec in dlq:
                self.assertTrue(rec.get("headers", {}).get("reason"), rec)
            # No injection on the wire: no injected recipient, no injected
            # header line in any message the sink accepted.
            for m in c.sink.messages():
                self.assertNotIn(EVIL, " ".join(m["rcpt"]), m)
                with open(os.path.join(c.sink.dir, m["file"]), "rb") as f:
                    body = f.read()
                head = body.split(b"\r\n\r\n", 1)[0]
                for line in head.split(b"\r\n"):
                    self.assertFalse(line.lower().startswith(b"x-injected:"), (m, head))
                    self.assertFalse(line.lower().startswith(b"bcc:"), (m, head))
            c.assert_alive("sched-1", "sender-1")
        finally:
            c.close()


if __name__ == "__main__":
    unittest.main()
