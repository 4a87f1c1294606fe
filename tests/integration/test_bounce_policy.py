"""Bounces as the large receivers send them (issue #18), end to end.

A dev broker (one partition, so the scheduler's feedback stage reads the
events in the order they were published), the real sluice-scheduler and
sluice-sender deliver to a sluice-testsink whose rules answer RCPT with each
large provider's own bad-mailbox wording, and with block, policy, rate and
quota replies. A bad mailbox is bounced hard as invalid-recipient, lands in
the suppressions topic, and the next job to it stops at the scheduler's
suppression check (SUPPRESSED); a block, policy, rate or quota reply bounces
soft and never suppresses: the next job to that address is sent again.
"""

import os
import tempfile
import unittest

from sluicetest import Proc, bin_path, start_sink, wait_for
from sluicetest import dump_topic, read_first_line, sched_tool, write_file

TENANT = "acme"
FINAL = {"DELIVERED", "BOUNCED", "EXPIRED", "SUPPRESSED", "REJECTED", "CANCELLED"}

# The bad-mailbox reply of each provider, as its servers send it at RCPT.
BAD = {
    "gmail": "550 5.1.1 The email account that you tried to reach does not exist. Please try "
             "double-checking the recipient's email address for typos or unnecessary spaces. "
             "https://support.google.com/mail/?p=NoSuchUser a1si123 - gsmtp",
    "yahoo": "554 delivery error: dd This user doesn't have a yahoo.com account "
             "(bad-yahoo@x.test) [0] - mta1234.mail.ne1.yahoo.com",
    "m365": "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP "
            "address lookup",
    "outlook": "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302). "
               "[AM4PEPF00027A6C.eurprd04.prod.outlook.com]",
    "exchange": "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",
    "exim": "550 Unrouteable address",
    "icloud": "550 5.1.1 <bad-icloud@x.test>: user does not exist",
    "gmx": "550 Requested action not taken: mailbox unavailable",
    "orange": "550 5.1.1 Adresse d au moins un destinataire invalide. Invalid recipient. "
              "OFR_416 [416]",
    "comcast": "550 5.1.1 <bad-comcast@x.test> Not our Customer",
    "postfix": "550 5.1.1 <bad-postfix@x.test>: Recipient address rejected: User unknown in "
               "local recipient table",
}

# Replies that must never suppress the address (all 5xx: a bounce, no retry).
KEEP = {
    "spamhaus": "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using "
                "zen.spamhaus.org",
    "yahoo-rate": "553 5.7.2 [TSS09] All messages from 127.0.0.1 will be permanently "
                  "deferred; Retrying will NOT succeed.",
    "gmail-auth": "550 5.7.26 This mail has been blocked because the sender is "
                  "unauthenticated. Gmail requires all senders to authenticate with either "
                  "SPF or DKIM.",
    "quota": "552 5.2.2 The recipient's inbox is out of storage space and inactive.",
    "sender": "550 5.1.0 <bounces@example.net>: Sender address rejected: User unknown in "
              "local recipient table",
    "gmx-dns": "550 Requested action not taken: mailbox unavailable invalid DNS MX or "
               "A/AAAA resource record",
}


def addr(kind, name):
    return "%s-%s@x.test" % (kind, name)


class TestBouncePolicy(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="sluice-bounce-policy-")
        self.tmp = self._tmp.name
        rules = os.path.join(self.tmp, "sink.rules")
        with open(rules, "w") as f:
            for kind, table in (("bad", BAD), ("keep", KEEP)):
                for name, reply in table.items():
                    code, text = reply.split(" ", 1)
                    f.write("%s rcpt %s %s\n" % (addr(kind, name), code, text))
        self.sink = start_sink(self.tmp, ["--rules", rules])
        self.addCleanup(self.sink.stop)
        pre = write_file(self.tmp, "broker.yaml", self.base("127.0.0.1:1"))
        port_file = os.path.join(self.tmp, "broker.port")
        self.broker = Proc("sluice-devbroker", ["-c", pre, "--port-file", port_file],
                           tmpdir=self.tmp)
        self.addCleanup(self.broker.stop)
        bootstrap = wait_for(lambda: read_first_line(port_file), 20, "devbroker port file")
        self.cfg = write_file(self.tmp, "sluice.yaml", self.base(bootstrap))
        self.procs = []

    def tearDown(self):
        for p in reversed(self.procs):
            p.stop(30)
        self._tmp.cleanup()

    def base(self, bootstrap):
        return ("kafka:\n  bootstrap: \"%s\"\n  topic_prefix: bp.\n  partitions: 1\n"
                "  session_timeout_ms: 6000\n  heartbeat_interval_ms: 1000\n"
                "  commit_interval_ms: 200\n"
                "routes:\n  \"*\": %s\n"
                "pools:\n  default:\n    - { ip: 127.0.0.1, ehlo: localhost }\n"
                "shaping:\n  default: { max_message_rate: 10000/s, max_connections: 10 }\n"
                "retry: { delays: [1m, 5m], expiry: 1h }\n"
                "sender:\n  instance_id: sender-bp\n"
                % (bootstrap, self.sink.address))

    def produce(self, to, job):
        sched_tool("produce", "-c", self.cfg, "--to", to, "--tenant", TENANT, "--id", job)

    def events(self, job_ids):
        """The events of these jobs, once each has a final one."""
        def got():
            ev = {}
            for rec in dump_topic(self.cfg, "events"):
                e = rec.get("event", {})
                if e.get("job_id") in job_ids and e.get("type") in FINAL:
                    ev[e["job_id"]] = e
            return ev if len(ev) == len(job_ids) else None
        return wait_for(got, 40, "final events of %s\n%s" % (
            sorted(job_ids), "".join(p.output()[-3000:] for p in self.procs)), interval=0.3)

    def suppressed(self):
        return {s["key"] for s in dump_topic(self.cfg, "suppressions")}

    def test_bad_mailboxes_suppress_blocks_never(self):
        for name in ("scheduler", "sender"):
            self.procs.append(Proc("sluice-" + name, ["-c", self.cfg], tmpdir=self.tmp))

        # The soft ones first: with one partition, once a later hard bounce
        # is in the suppressions topic the feedback stage has read these.
        for name in KEEP:
            self.produce(addr("keep", name), "k1-" + name)
        ev = self.events({"k1-%s-0" % n for n in KEEP})
        for name in KEEP:
            e = ev["k1-%s-0" % name]
            self.assertEqual(e["type"], "BOUNCED", e)
            self.assertFalse(e.get("bounce_hard", False), e)
            self.assertNotEqual(e.get("bounce_class"), "invalid-recipient", e)

        for name in BAD:
            self.produce(addr("bad", name), "b1-" + name)
        ev = self.events({"b1-%s-0" % n for n in BAD})
        for name in BAD:
            e = ev["b1-%s-0" % name]
            self.assertEqual(e["type"], "BOUNCED", e)
            self.assertTrue(e.get("bounce_hard"), e)
            self.assertEqual(e.get("bounce_class"), "invalid-recipient", e)

        want = {"%s/%s" % (TENANT, addr("bad", n)) for n in BAD}
        sup = wait_for(lambda: (lambda s: s if want <= s else None)(self.suppressed()), 30,
                       "every bad mailbox suppressed")
        self.assertFalse({"%s/%s" % (TENANT, addr("keep", n)) for n in KEEP} & sup, sup)

        # The next job to each: a bad mailbox stops at the suppression
        # check, the others are attempted again.
        for name in BAD:
            self.produce(addr("bad", name), "b2-" + name)
        for name in KEEP:
            self.produce(addr("keep", name), "k2-" + name)
        ev = self.events({"b2-%s-0" % n for n in BAD} | {"k2-%s-0" % n for n in KEEP})
        for name in BAD:
            self.assertEqual(ev["b2-%s-0" % name]["type"], "SUPPRESSED", ev["b2-%s-0" % name])
        for name in KEEP:
            self.assertEqual(ev["k2-%s-0" % name]["type"], "BOUNCED", ev["k2-%s-0" % name])
        self.assertEqual(self.sink.messages(), [])  # every RCPT was refused
        for p in reversed(self.procs):
            self.assertEqual(p.stop(30), 0, p.output()[-3000:])


if __name__ == "__main__":
    unittest.main()
