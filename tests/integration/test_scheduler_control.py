"""Integration tests of campaign and site control (the control topic, written
here by `sluice campaign` / `sluice site`) against a live backlog in shape:
a real dev broker, the real scheduler, jobs produced with sched_tool, the
dispatch and events topics read back. A Dispatch is what a sender would
deliver: after a cancel no job of the campaign is dispatched any more and
every job not dispatched gets exactly one CANCELLED event; a suspension
stops dispatching and holds the jobs in Kafka (retry topics), not in shape;
resume finishes the campaign; a control written while no scheduler ran is
honoured from the first job."""

import json
import os
import subprocess
import tempfile
import unittest

from sluicetest import (Proc, sched_tool, bin_path, case_tmpdir, free_port, pipeline_yaml, start_devbroker,
                        start_sink, wait_for)
from test_scheduler import SchedCase


class ControlCase(SchedCase):
    # A short first retry delay: held jobs come back (and are held again,
    # or go after a resume) every 2 s.
    retry = "retry: { delays: [2s, 30s], expiry: 72h }"

    def sluice(self, *args):
        r = subprocess.run([bin_path("sluice")] + [str(a) for a in args],
                           capture_output=True, text=True, timeout=60)
        return r

    def control(self, *args):
        r = self.sluice(*args[:1], "-c", self.cfg, *args[1:])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r.stdout

    def dispatched(self, prefix):
        """Dispatch records per job id of the jobs whose id starts with prefix."""
        out = {}
        for r in self.dump("dispatch", 0, 1500):
            if r["job_id"].startswith(prefix):
                out.setdefault(r["job_id"], []).append(r)
        return out

    def events(self, kind, prefix):
        out = {}
        for e in self.dump("events", 0, 1500):
            ev = e.get("event")
            if ev and ev["type"] == kind and ev["job_id"].startswith(prefix):
                out.setdefault(ev["job_id"], []).append(ev)
        return out

    def metric(self, line_start):
        for line in self.metrics().splitlines():
            if line.startswith(line_start + " "):
                return float(line.split()[-1])
        return 0.0


class TestCampaignCancel(ControlCase):
    def test_cancel_live_backlog(self):
        self.start_scheduler()
        # google: 5/s. 40 jobs are a backlog of several seconds in shape.
        self.produce("--to", "a@gmail.com", "--count", 40, "--id", "c",
                     "--tenant", "acme", "--campaign", "spring")
        self.produce("--to", "b@gmail.com", "--count", 5, "--id", "o",
                     "--tenant", "acme", "--campaign", "autumn")
        wait_for(lambda: len(self.dispatched("c-")) >= 3, 30, "the backlog started")
        out = self.control("campaign", "--tenant", "acme", "--reason", "wrong list",
                           "cancel", "spring")
        self.assertIn("acme/spring: cancelled", out)

        def accounted():
            d, c = self.dispatched("c-"), self.events("CANCELLED", "c-")
            return (d, c) if len(set(d) | set(c)) == 40 else None

        disp, canc = wait_for(accounted, 30, "every job dispatched or cancelled")
        self.assertFalse(set(disp) & set(canc), "a job both dispatched and cancelled")
        self.assertGreater(len(canc), 10, "the cancel came late: nothing was left to cancel")
        for jid, evs in canc.items():
            self.assertEqual(len(evs), 1, (jid, evs))
            self.assertEqual(evs[0]["stage"], "shape")
            self.assertIn("campaign acme/spring cancelled (cli: wrong list)", evs[0]["reason"])
            self.assertEqual(evs[0]["campaign"], "spring")
        for jid, recs in disp.items():
            self.assertEqual(len(recs), 1, jid)
        # Another campaign of the tenant goes on.
        wait_for(lambda: len(self.dispatched("o-")) == 5, 30, "the other campaign dispatched")
        # Jobs of the campaign that arrive later are cancelled too, and no
        # further one is dispatched.
        n_disp = len(disp)
        self.produce("--to", "a@gmail.com", "--count", 4, "--id", "late",
                     "--tenant", "acme", "--campaign", "spring")
        late = wait_for(lambda: (lambda c: len(c) == 4 and c)(self.events("CANCELLED", "late-")),
                        30, "the late jobs cancelled")
        self.assertEqual(sorted(late), ["late-%d" % i for i in range(4)])
        self.assertEqual(self.dispatched("late-"), {})
        self.assertEqual(len(self.dispatched("c-")), n_disp)
        self.assertEqual(self.metric("sluice_shape_cancelled_total"), len(canc) + 4)
        # show: the state in force and the counts from the events.
        st = json.loads(self.control("campaign", "--tenant", "acme", "--json", "show", "spring"))
        self.assertEqual(st["state"], "cancelled")
        self.assertEqual(st["reason"], "wrong list")
        self.assertEqual(st["events"]["cancelled"], len(canc) + 4)


class TestCampaignSuspend(ControlCase):
    def test_suspend_holds_in_kafka_and_resume_finishes(self):
        self.start_scheduler()
        self.produce("--to", "a@gmail.com", "--count", 30, "--id", "s",
                     "--tenant", "acme", "--campaign", "spring")
        wait_for(lambda: len(self.dispatched("s-")) >= 3, 30, "the backlog started")
        self.control("campaign", "--tenant", "acme", "suspend", "spring")
        held = 'sluice_shape_parked_total{site="google",reason="held"}'
        # Nothing of it stays in shape: it waits on the retry topic.
        wait_for(lambda: self.metric("sluice_shape_buffered") == 0 and self.metric(held) > 0,
                 30, "the campaign's jobs parked")
        n_disp = len(self.dispatched("s-"))
        self.assertLess(n_disp, 30)
        first_round = self.metric(held)
        # They come back from the retry topic and are held again, with
        # nothing more dispatched.
        wait_for(lambda: self.metric(held) >= first_round + (30 - n_disp), 30,
                 "the held jobs came back and were held again")
        self.assertEqual(len(self.dispatched("s-")), n_disp)
        st = json.loads(self.control("campaign", "--tenant", "acme", "--json", "show", "spring"))
        self.assertEqual(st["state"], "suspended")
        self.control("campaign", "--tenant", "acme", "resume", "spring")
        done = wait_for(lambda: (lambda d: len(d) == 30 and d)(self.dispatched("s-")), 60,
                        "every job dispatched after the resume")
        for jid, recs in done.items():
            self.assertEqual(len(recs), 1, jid)
        self.assertEqual(self.events("CANCELLED", "s-"), {})


class TestSitePurge(ControlCase):
    def test_purge_cancels_what_waits_and_lets_new_jobs_go(self):
        self.start_scheduler()
        self.produce("--to", "a@gmail.com", "--count", 40, "--id", "p", "--campaign", "x")
        wait_for(lambda: len(self.dispatched("p-")) >= 3, 30, "the backlog started")
        out = self.control("site", "--reason", "blocked list", "purge", "google")
        self.assertIn("google: purged", out)

        def accounted():
            d, c = self.dispatched("p-"), self.events("CANCELLED", "p-")
            return (d, c) if len(set(d) | set(c)) == 40 else None

        disp, canc = wait_for(accounted, 30, "every job dispatched or purged")
        self.assertFalse(set(disp) & set(canc))
        self.assertGreater(len(canc), 10)
        for jid, evs in canc.items():
            self.assertEqual(len(evs), 1, (jid, evs))
            self.assertIn("site google purged (cli: blocked list)", evs[0]["reason"])
        # Jobs created after the purge go as usual.
        self.produce("--to", "a@gmail.com", "--count", 3, "--id", "new", "--campaign", "x")
        wait_for(lambda: len(self.dispatched("new-")) == 3, 30, "new jobs dispatched")
        self.assertEqual(self.events("CANCELLED", "new-"), {})
        self.assertEqual(len(self.dispatched("p-")), len(disp))


class TestSiteSuspendBeforeStart(ControlCase):
    def test_site_suspension_written_while_no_scheduler_ran(self):
        # Written before the scheduler starts: it reads the control topic
        # from the beginning and holds from the first job.
        self.control("site", "--reason", "blocking us", "suspend", "google")
        self.start_scheduler()
        self.produce("--to", "a@gmail.com", "--count", 5, "--id", "g")
        self.produce("--to", "a@foo.test", "--count", 2, "--id", "t")
        held = 'sluice_shape_parked_total{site="google",reason="held"}'
        wait_for(lambda: self.metric(held) >= 5, 30, "the site's jobs held")
        wait_for(lambda: len(self.dispatched("t-")) == 2, 30, "another site goes on")
        self.assertEqual(self.dispatched("g-"), {})
        self.assertIn("sluice_control_in_force{scope=\"site\",action=\"suspend\"} 1",
                      self.metrics())
        st = json.loads(self.control("site", "--json", "show", "google"))
        self.assertEqual(st["state"], "suspended")
        self.assertEqual(st["reason"], "blocking us")
        self.control("site", "resume", "google")
        wait_for(lambda: len(self.dispatched("g-")) == 5, 60, "the site's jobs after resume")


class TestCancelCatchesDeferredJobs(unittest.TestCase):
    """A job the receiver deferred waits on a retry topic, out of shape's
    sight; when it comes due it goes through jobs, classify and shape again,
    and shape judges it by the controls in force then. The whole pipeline
    runs: dev broker, scheduler, sender and a sink that greylists (450 to a
    recipient's first attempt, 250 after), so a retry that were not
    cancelled would be delivered, as the other campaign's is."""

    def setUp(self):
        self.tmp = case_tmpdir(self, "sluice-ctl-retry-")
        broker, bootstrap = start_devbroker(self.tmp)
        self.addCleanup(broker.stop)
        self.sink = start_sink(self.tmp, ["--greylist"])
        self.addCleanup(self.sink.stop)
        self.cfg = os.path.join(self.tmp, "sluice.yaml")
        with open(self.cfg, "w") as f:
            f.write(pipeline_yaml(bootstrap, self.sink.address, retry="[5s, 30s]"))
        self.procs = []
        for name in ("sluice-scheduler", "sluice-sender"):
            p = Proc(name, ["-c", self.cfg], tmpdir=self.tmp)
            self.addCleanup(p.stop, 20)
            self.procs.append(p)

    def logs(self):
        return "".join("\n---\n" + p.output()[-3000:] for p in self.procs)

    def tool(self, *args):
        return sched_tool(*args)

    def events(self):
        out = {}
        for line in self.tool("dump", "-c", self.cfg, "--topic", "events", "--count", 0,
                              "--timeout", 1500).splitlines():
            ev = json.loads(line).get("event")
            if ev:
                out.setdefault((ev["job_id"], ev["type"]), []).append(ev)
        return out

    def test_cancel_reaches_a_deferred_job_when_its_retry_comes_due(self):
        self.tool("produce", "-c", self.cfg, "--to", "ann@spring.test", "--id", "c",
                  "--tenant", "acme", "--campaign", "spring")
        self.tool("produce", "-c", self.cfg, "--to", "bob@autumn.test", "--id", "o",
                  "--tenant", "acme", "--campaign", "autumn")
        try:
            wait_for(lambda: ("c-0", "DEFERRED") in self.events()
                     and ("o-0", "DEFERRED") in self.events(), 30, "both jobs deferred")
        except AssertionError as e:
            raise AssertionError("%s%s" % (e, self.logs()))
        ev = self.events()
        # Cancelled while it waits on the retry topic (due 5 s after).
        self.assertNotIn(("c-0", "CANCELLED"), ev)
        r = subprocess.run([bin_path("sluice"), "campaign", "-c", self.cfg, "--tenant", "acme",
                            "--reason", "wrong list", "cancel", "spring"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # The other campaign's retry is delivered: retries do come due.
        got = self.sink.wait_messages(1, 40)
        self.assertEqual([m["rcpt"] for m in got], [["bob@autumn.test"]])
        ev = wait_for(lambda: (lambda e: e if ("c-0", "CANCELLED") in e else None)(self.events()),
                      30, "the deferred job cancelled")
        canc = ev[("c-0", "CANCELLED")]
        self.assertEqual(len(canc), 1, canc)
        self.assertEqual(canc[0]["stage"], "shape")
        self.assertIn("campaign acme/spring cancelled", canc[0]["reason"])
        self.assertNotIn(("c-0", "DELIVERED"), ev)
        self.assertEqual(len(ev[("c-0", "DEFERRED")]), 1)
        self.assertEqual([m["rcpt"] for m in self.sink.messages()], [["bob@autumn.test"]])

    def test_site_purge_reaches_a_deferred_job(self):
        self.tool("produce", "-c", self.cfg, "--to", "ann@spring.test", "--id", "p")
        try:
            ev = wait_for(lambda: (lambda e: e if ("p-0", "DEFERRED") in e else None)(
                self.events()), 30, "the job deferred")
        except AssertionError as e:
            raise AssertionError("%s%s" % (e, self.logs()))
        site = ev[("p-0", "DEFERRED")][0]["site"]
        r = subprocess.run([bin_path("sluice"), "site", "-c", self.cfg, "--reason", "bad list",
                            "purge", site], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        ev = wait_for(lambda: (lambda e: e if ("p-0", "CANCELLED") in e else None)(self.events()),
                      30, "the deferred job purged")
        self.assertEqual(len(ev[("p-0", "CANCELLED")]), 1)
        self.assertIn("site %s purged" % site, ev[("p-0", "CANCELLED")][0]["reason"])
        # A job created after the purge is deferred, then delivered.
        self.tool("produce", "-c", self.cfg, "--to", "ann@spring.test", "--id", "n")
        got = self.sink.wait_messages(1, 40)
        self.assertEqual([m["rcpt"] for m in got], [["ann@spring.test"]])
        ev = self.events()
        self.assertNotIn(("p-0", "DELIVERED"), ev)
        self.assertIn(("n-0", "DELIVERED"), ev)


class TestControlCommandLine(unittest.TestCase):
    """Bad usage fails at once with exit 2, before Kafka is touched."""

    def run_sluice(self, *args):
        env = dict(os.environ)
        env.pop("SLUICE_CONFIG", None)
        return subprocess.run([bin_path("sluice")] + list(args), capture_output=True, text=True,
                              timeout=30, env=env)

    def test_bad_usage_exits_2(self):
        for args in (["site", "cancel", "google"],          # sites are suspended or purged
                     ["campaign", "purge", "spring"],       # campaigns are cancelled
                     ["campaign", "stop", "spring"],
                     ["campaign", "suspend"],
                     ["campaign", "suspend", "a/b"],        # a '/' would change the key
                     ["site", "--tenant", "acme", "suspend", "google"],
                     ["campaign", "--reason", "x\ny", "suspend", "spring"]):
            with self.subTest(args=args):
                r = self.run_sluice(*args)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertTrue(r.stderr.strip())

    def test_no_kafka_is_a_quick_clear_failure(self):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = os.path.join(tmp, "sluice.yaml")
            with open(cfg, "w") as f:
                f.write("kafka:\n  bootstrap: 127.0.0.1:%d\n" % free_port())
            r = self.run_sluice("campaign", "-c", cfg, "suspend", "spring")
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn("cannot reach Kafka", r.stderr)


if __name__ == "__main__":
    unittest.main()
