"""sluice-sender delivering over STARTTLS to a real Postfix.

A private, throwaway Postfix (its own config directory, queue and maillog
under a temp dir, no chroot, its own port) receives with
smtpd_tls_security_level=may and a self-signed certificate, and discards
what it accepts for pf.test. sluice-sender delivers one message with
tls: required. The event must say DELIVERED with TLSv1.2/1.3, and Postfix's
maillog must show the TLS connection and sluice's EHLO name.

Needs root (Postfix's master runs as root and drops to the postfix user)
and Postfix installed; skipped otherwise.
"""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import unittest

from sluicetest import free_port, wait_for
from test_sender import SenderEnv, dispatch

HAVE_POSTFIX = os.path.exists("/usr/sbin/postfix") and os.path.exists("/etc/postfix/master.cf")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
POSTFIX_HEAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "postfix",
                            "main.cf.head")


class PrivatePostfix:
    def __init__(self, root, port):
        self.root, self.port = root, port
        self.conf = os.path.join(root, "conf")
        self.maillog = os.path.join(root, "maillog")
        for d in ("conf", "queue", "data"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        shutil.chown(os.path.join(root, "data"), "postfix")
        cert, key = os.path.join(root, "cert.pem"), os.path.join(root, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=postfix.test",
                        "-days", "2", "-keyout", key, "-out", cert],
                       check=True, capture_output=True, timeout=60)
        os.chmod(key, 0o600)
        with open(POSTFIX_HEAD) as f:
            head = f.read().replace("@ROOT@", root)
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(head + """myhostname = postfix.test
relay_domains = pf.test
relay_recipient_maps =
transport_maps = inline:{{ pf.test=discard: }}
smtpd_helo_required = yes
smtpd_helo_restrictions = check_helo_access inline:{{ {{mta1.example.net = WARN sluice-helo}} }}
maillog_file_prefixes = {r}
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_loglevel = 1
""".format(r=root, cert=cert, key=key))
        # Our own listener port, and no chroot (the queue is no chroot jail).
        with open("/etc/postfix/master.cf") as f:
            lines = f.read().splitlines()
        out = []
        for line in lines:
            line = re.sub(r"^smtp(\s+)inet", r"%d\1inet" % port, line)
            line = re.sub(r"^([a-z0-9]+\s+[a-z-]+\s+[-yn]\s+[-yn]\s+)[-yn]", r"\1n", line)
            out.append(line)
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write("\n".join(out) + "\n")
        subprocess.run(["postfix", "-c", self.conf, "set-permissions"], capture_output=True,
                       timeout=60)
        r = subprocess.run(["postfix", "-c", self.conf, "start"], capture_output=True,
                           text=True, timeout=60)
        # Postfix writes why it did not start to its maillog, not to stderr.
        self.start_error = None if r.returncode == 0 else \
            "postfix start: exit %d %s %s\n%s" % (r.returncode, r.stdout, r.stderr, self.log())

    def log(self):
        try:
            with open(self.maillog, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self):
        subprocess.run(["postfix", "-c", self.conf, "stop"], capture_output=True, timeout=60)
        # "postfix stop" only signals the master: wait until it let go of
        # the port before the temp dir goes.
        try:
            wait_for(lambda: not self.listening(), 15, "Postfix to stop", interval=0.2)
        except AssertionError:
            pass


# Postfix's daemons drop to the postfix user, who must be able to reach the
# queue: not possible in build roots whose / is closed to others (mode 700).
ROOT_OPEN = bool(os.stat("/").st_mode & 0o001)


@unittest.skipUnless(IS_ROOT and HAVE_POSTFIX and ROOT_OPEN,
                     "needs root, Postfix, and a / that other users can traverse")
class TestSenderPostfixTls(unittest.TestCase):
    def test_starttls_delivery_to_postfix(self):
        tmpd = tempfile.TemporaryDirectory(prefix="sluice-postfix-", ignore_cleanup_errors=True)
        tmp = tmpd.name
        os.chmod(tmp, 0o755)  # Postfix's daemons run as the postfix user
        # free_port() only finds a port that was free: a test running
        # beside this one may bind it before Postfix's master does. Such a
        # start is retried on another port; any other failure is reported.
        errors = []
        for attempt in range(3):
            port = free_port()
            pf = PrivatePostfix(os.path.join(tmp, "pf%d" % attempt), port)
            if pf.start_error is None:
                break
            errors.append(pf.start_error)
            pf.stop()
            if "in use" not in pf.start_error:
                break
        if pf.start_error is not None:
            tmpd.cleanup()
            self.fail("\n".join(errors))
        e = None
        try:
            wait_for(pf.listening, 30, "Postfix listening on %d" % port, interval=0.2)
            e = SenderEnv(tmp)
            e.publish([dispatch("pf-1", ["user@pf.test"], "127.0.0.1:%d" % port,
                                site="postfix", tls="required")])
            e.start_sender()
            ev = e.events(1)[0]
            self.assertEqual(ev["type"], "DELIVERED", e.sender.output() + pf.log())
            self.assertIn(ev["tls_protocol"], ("TLSv1.2", "TLSv1.3"), ev)
            self.assertTrue(ev["tls_cipher"], ev)
            self.assertIn("queued as", ev["reply"])

            def logged():
                log = pf.log()
                return log if ("TLS connection established from" in log and
                               "helo=<mta1.example.net>" in log and
                               "status=sent" in log) else None
            log = wait_for(logged, 20, "Postfix maillog lines", interval=0.2)
            tls_lines = [ln for ln in log.splitlines()
                         if "TLS connection established from" in ln]
            self.assertTrue(any("127.0.0.1" in ln and ev["tls_protocol"] in ln
                                for ln in tls_lines), tls_lines)
            # The EHLO name sluice gave, seen by Postfix on the TLS session.
            helo = [ln for ln in log.splitlines() if "sluice-helo" in ln]
            self.assertTrue(helo and "helo=<mta1.example.net>" in helo[0], log)
            self.assertIn("<user@pf.test>", log)
        finally:
            if e:
                e.stop()
            pf.stop()
            tmpd.cleanup()


if __name__ == "__main__":
    unittest.main()
