"""Fault scenario: the receiving SMTP server misbehaves.

Jobs are mixed with recipients that make the recording sink fail in every
way it knows (tests/sink/README.md): 451 at RCPT, 550 at RCPT, 421 and a
closed connection mid-session, replies slower than the sender's timeouts,
a connection dropped when the final dot arrives, a final dot never
answered, 554 at the end of DATA. Every job must end in the final event its
fault implies, and a message whose dot went unanswered (or whose connection
died after the dot) is flagged possible_duplicate in its event.
"""

import time
import unittest

from harness import JOBS, Cluster

# local-part prefix -> the final event it must end in. Temporary faults
# repeat on every attempt, so those jobs carry a short expiry and end
# EXPIRED; permanent ones end BOUNCED.
FAULTS = [
    ("tempfail", "EXPIRED"),
    ("permfail", "BOUNCED"),
    ("421", "EXPIRED"),
    ("slow2500x", "EXPIRED"),   # every reply 2.5 s late: past the 1.5 s timeouts
    ("disconnect", "EXPIRED"),
    ("noanswer", "EXPIRED"),
    ("datafail", "BOUNCED"),
]
EVERY = 12  # one job in EVERY carries a fault


def fault_of(i):
    if i % EVERY:
        return None
    return FAULTS[(i // EVERY) % len(FAULTS)]


class SmtpFaultTest(unittest.TestCase):
    def test_smtp_faults_end_correctly(self):
        shaping = ("{ max_message_rate: 100000/s, max_connections: 20, "
                   "max_messages_per_connection: 100, timeouts: { connect: 3s, greeting: 3s, "
                   "ehlo: 3s, mail: 1500ms, rcpt: 1500ms, data: 1500ms, data_block: 3s, "
                   "dot: 1500ms, quit: 1s, idle: 2s } }")
        c = Cluster("smtp", shaping=shaping)
        try:
            c.start_scheduler("sched-1")
            c.start_sender("sender-1")

            def local(i):
                f = fault_of(i)
                return "%s-%d" % (f[0], i) if f else "u%d" % i
            specs = c.job_specs(JOBS, "smtp", local=local)
            expiry = int(time.time() * 1000) + 12000
            for i, s in enumerate(specs):
                if fault_of(i) and fault_of(i)[1] == "EXPIRED":
                    s["expires_at_ms"] = expiry
            ids = [s["job_id"] for s in specs]
            expect = {s["job_id"]: (fault_of(i)[1] if fault_of(i) else "DELIVERED")
                      for i, s in enumerate(specs)}
            c.publish(specs)
            tail = c.wait_final(ids, 240, check_alive=("sched-1", "sender-1"))
            c.wait_quiet()
            r = c.reconcile(ids, "smtp-faults", expect_final=expect.get)
            self.assertEqual(r["lost"], 0, r)
            self.assertEqual(r["phantom"], [], r)
            self.assertEqual(r["wrong"][:10], [], r["line"])
            self.assertEqual(r["duplicates"], 0, r["line"])
            # Every job whose final dot went unanswered was flagged as a
            # possible duplicate in at least one of its events.
            flagged = {e["job_id"] for e in tail.events if e.get("possible_duplicate")}
            noanswer = {s["job_id"] for i, s in enumerate(specs)
                        if fault_of(i) and fault_of(i)[0] == "noanswer"}
            self.assertTrue(noanswer, "the load has noanswer jobs")
            self.assertEqual(noanswer - flagged, set(),
                             "dot timeouts not flagged possible_duplicate")
            # Nothing else is flagged but faults at or after the dot.
            after_dot = {s["job_id"] for i, s in enumerate(specs)
                         if fault_of(i) and fault_of(i)[0] in ("noanswer", "disconnect")}
            self.assertEqual(flagged - after_dot, set(), "possible_duplicate on other jobs")
            c.assert_alive("sched-1", "sender-1")
        finally:
            c.close()


if __name__ == "__main__":
    unittest.main()
