"""sluicetest - shared helpers for sluice integration tests.

Small and stable on purpose: every tests/integration/test_*.py may import it.

    bin_path(name)        path of a built binary, from $SLUICE_BIN
    free_port()           a TCP port on 127.0.0.1 that was free a moment ago
    wait_for(pred, timeout, what)
                          poll pred() until truthy (returned) or raise
                          AssertionError naming `what`
    Proc(name_or_path, args, tmpdir=None, env=None)
                          a started binary; stdout/stderr go to files in a
                          temp dir (.stdout_path/.stderr_path, .output());
                          .stop() sends SIGTERM, waits, then SIGKILLs;
                          usable as a context manager
    start_sink(tmpdir, extra_args=())
                          start sluice-testsink on an ephemeral port; the
                          returned Sink has .host .port .log_path .dir .proc
                          and .messages() (the parsed JSON log lines)
    read_complete(path)   a file's text once it ends in a newline, else None
    write_file(d, name, text)
                          write d/name, return its path
    run_sluice(*args, env=None, env_extra=None, timeout=60, input=None)
                          run the sluice command (SLUICE_CONFIG unset)
    start_devbroker(tmpdir, args=(), cfg=None, control=False)
                          start sluice-devbroker; returns (proc, bootstrap);
                          control=True: its fault-injection address is in
                          tmpdir/broker.control (devbroker_control())
    wait_listening(proc, port, what)
                          wait until proc accepts TCP connections on port,
                          failing at once with its output if it exits
    pipeline_yaml(bootstrap, sink_address, routes="", retry="[1s, 5s]")
                          the config text a private pipeline starts from
    Pipeline(case, tmpdir, config="", control=False)
                          a private pipeline: dev broker, a sink every
                          domain routes to, a config; .start(name, *args)
                          runs a role (stopped at cleanup), .start_roles()
                          the scheduler and the sender, .logs() their output
    case_tmpdir(case, prefix)
                          a temporary directory removed at case's cleanup
    make_cert(d)          a self-signed P-256 certificate for localhost in d;
                          returns (cert_path, key_path)
    http_ready(port)      True when http://127.0.0.1:port/readyz answers 200
    accept_in_thread(sock, on_conn)
                          a daemon thread calling on_conn(conn) for each
                          connection sock accepts, until sock is closed
    pb_varint(n), pb_field(num, wire, payload)
                          protobuf encoded by hand (wire 0 varint, 1 fixed64
                          bytes, 2 length-delimited), so a test can put any
                          byte anywhere
"""

import collections
import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

__all__ = ["bin_path", "free_port", "wait_for", "Proc", "Sink", "start_sink", "read_complete", "write_file", "run_sluice",
           "start_devbroker", "devbroker_control", "wait_listening", "pipeline_yaml", "Pipeline",
           "case_tmpdir", "make_cert", "http_ready", "accept_in_thread", "pb_varint", "pb_field"]


def bin_path(name):
    """Absolute path of binary `name` in $SLUICE_BIN (the build's bin dir)."""
    bindir = os.environ.get("SLUICE_BIN")
    if not bindir:
        here = os.path.dirname(os.path.abspath(__file__))
        bindir = os.path.join(here, "..", "..", "build", "bin")
    path = os.path.join(bindir, name)
    if not os.path.exists(path):
        raise AssertionError("binary %s not found (set SLUICE_BIN)" % path)
    return os.path.abspath(path)


_recent_ports = collections.deque(maxlen=256)


def free_port(host="127.0.0.1"):
    """A port that the kernel just reported free on host. Racy by nature;
    prefer letting a binary bind port 0 and report its port when it can.
    Never one of the last ports it returned: on a busy machine the kernel
    hands the same free port out again at once, and a test asking for
    three ports must get three."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _recent_ports:
            break
    _recent_ports.append(port)
    return port


def wait_for(predicate, timeout=10.0, what="condition", interval=0.02):
    """Poll predicate() until it returns something truthy, which is returned.
    Raise AssertionError("timed out after Ns waiting for <what>") otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


class Proc:
    """A running binary whose output is captured to files.

    name_or_path: a binary name looked up with bin_path(), or a path.
    tmpdir: where stdout/stderr files go (a fresh temp dir if None).
    """

    def __init__(self, name_or_path, args=(), tmpdir=None, env=None, cwd=None):
        if os.sep in name_or_path:
            self.path = name_or_path
        else:
            self.path = bin_path(name_or_path)
        self.name = os.path.basename(self.path)
        self._own_tmp = None
        if tmpdir is None:
            self._own_tmp = tempfile.TemporaryDirectory(prefix="sluice-%s-" % self.name)
            tmpdir = self._own_tmp.name
        self.tmpdir = tmpdir
        stamp = "%s.%d" % (self.name, int(time.monotonic() * 1000) % 10**9)
        self.stdout_path = os.path.join(tmpdir, stamp + ".stdout")
        self.stderr_path = os.path.join(tmpdir, stamp + ".stderr")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.args = [self.path] + [str(a) for a in args]
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.popen = subprocess.Popen(self.args, stdout=self._out, stderr=self._err,
                                      stdin=subprocess.DEVNULL, env=full_env, cwd=cwd)
        self.returncode = None

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def stdout(self):
        with open(self.stdout_path, "r", errors="replace") as f:
            return f.read()

    def stderr(self):
        with open(self.stderr_path, "r", errors="replace") as f:
            return f.read()

    def output(self):
        """stdout and stderr, labelled, for assertion messages."""
        return "--- %s stdout ---\n%s--- %s stderr ---\n%s" % (
            self.name, self.stdout(), self.name, self.stderr())

    def send_signal(self, sig):
        if self.alive():
            self.popen.send_signal(sig)

    def wait(self, timeout=10.0):
        self.returncode = self.popen.wait(timeout=timeout)
        return self.returncode

    def stop(self, timeout=10.0, sig=signal.SIGTERM):
        """SIGTERM (or sig), wait up to timeout, then SIGKILL. Returns the exit
        status (negative for a signal, as subprocess reports it)."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self.returncode = self.popen.returncode
        for f in (self._out, self._err):
            if not f.closed:
                f.close()
        return self.returncode

    def kill(self):
        return self.stop(timeout=0.001, sig=signal.SIGKILL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        if self._own_tmp is not None:
            self._own_tmp.cleanup()
        return False


class Sink:
    """A running sluice-testsink (see tests/sink/README.md)."""

    def __init__(self, proc, host, port, log_path, msg_dir):
        self.proc = proc
        self.host = host
        self.port = port
        self.log_path = log_path
        self.dir = msg_dir

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def messages(self):
        """The accepted messages so far: one dict per JSON log line
        (from, rcpt, message_id, size, tls, peer, local)."""
        out = []
        try:
            with open(self.log_path, "r") as f:
                for line in f:
                    if line.endswith("\n"):
                        out.append(json.loads(line))
        except FileNotFoundError:
            pass
        return out

    def wait_messages(self, n, timeout=10.0):
        """Wait until at least n messages are logged; return them."""
        return wait_for(lambda: (lambda m: m if len(m) >= n else None)(self.messages()),
                        timeout, "%d messages at sink %s" % (n, self.address))

    def stop(self, timeout=10.0):
        return self.proc.stop(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def start_sink(tmpdir, extra_args=(), host="127.0.0.1", store=True, timeout=10.0, port=0):
    """Start sluice-testsink on host:port (0: any free port) and wait until
    it reports its port. With store=True messages are also written to
    tmpdir/sink-msgs."""
    os.makedirs(tmpdir, exist_ok=True)
    tag = "%d" % (int(time.monotonic() * 1e6) % 10**9)
    port_file = os.path.join(tmpdir, "sink-%s.port" % tag)
    log_path = os.path.join(tmpdir, "sink-%s.jsonl" % tag)
    msg_dir = None
    args = ["--listen", "%s:%d" % (host, port), "--port-file", port_file, "--log", log_path]
    if store:
        msg_dir = os.path.join(tmpdir, "sink-%s-msgs" % tag)
        os.makedirs(msg_dir, exist_ok=True)
        args += ["--dir", msg_dir]
    args += list(extra_args)
    proc = Proc("sluice-testsink", args, tmpdir=tmpdir)

    def port_ready():
        if not proc.alive():
            raise AssertionError("sluice-testsink exited early\n" + proc.output())
        try:
            with open(port_file) as f:
                text = f.read()
        except FileNotFoundError:
            return None
        return int(text) if text.endswith("\n") else None

    port = wait_for(port_ready, timeout, "sluice-testsink port file")
    return Sink(proc, host, port, log_path, msg_dir)


def write_file(d, name, text, mode="w"):
    """Write text to d/name; returns the path."""
    path = os.path.join(d, name)
    with open(path, mode) as f:
        f.write(text)
    return path


def case_tmpdir(case, prefix="sluice-"):
    """A temporary directory for one test, removed at its cleanup."""
    tmp = tempfile.TemporaryDirectory(prefix=prefix)
    case.addCleanup(tmp.cleanup)
    return tmp.name


def make_cert(d):
    """A self-signed P-256 certificate for localhost in d: (cert, key)."""
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost",
                    "-days", "2", "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def http_ready(port, host="127.0.0.1"):
    """True when the role's metrics listener answers /readyz with 200."""
    try:
        with urllib.request.urlopen("http://%s:%d/readyz" % (host, port), timeout=2) as r:
            return r.status == 200
    except (OSError, http.client.HTTPException):
        return False


def accept_in_thread(sock, on_conn):
    """Call on_conn(conn) for each connection sock accepts, in a daemon
    thread that ends when sock is closed."""
    def loop():
        while True:
            try:
                c, _ = sock.accept()
            except OSError:
                return
            on_conn(c)
    threading.Thread(target=loop, daemon=True).start()


def pb_varint(n):
    """n as a protobuf base-128 varint."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_field(num, wire, payload):
    """Field num with wire type 0 (int), 1 (8 bytes) or 2 (str or bytes)."""
    key = pb_varint((num << 3) | wire)
    if wire == 0:
        return key + pb_varint(payload)
    if wire == 1:
        return key + payload
    if wire == 2:
        if isinstance(payload, str):
            payload = payload.encode()
        return key + pb_varint(len(payload)) + payload
    raise ValueError(wire)


def run_sluice(*args, env=None, env_extra=None, timeout=60, input=None, binary=False):
    """Run `sluice ARGS` (each str()'d) and return the CompletedProcess.
    env: its environment; by default this one without SLUICE_CONFIG, so
    that only -c chooses the config, plus env_extra. binary=True keeps
    stdout as bytes (CRLF intact)."""
    if env is None:
        env = dict(os.environ)
        env.pop("SLUICE_CONFIG", None)
        env.update(env_extra or {})
    return subprocess.run([bin_path("sluice")] + [str(a) for a in args], capture_output=True,
                          text=not binary, timeout=timeout, input=input, env=env)


def read_complete(path):
    """The file's text once it ends with a newline (written whole), else None."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    return text if text.endswith("\n") else None


def read_first_line(path):
    """The first line of a file written whole (read_complete), else None."""
    text = read_complete(path)
    return text.splitlines()[0].strip() if text else None


def sched_tool(*args, timeout=60):
    """Run the test tool sched_tool (tests/tools) with args; its stdout.
    An exit other than 0 fails the test with its output."""
    r = subprocess.run([bin_path("sched_tool")] + [str(a) for a in args], capture_output=True,
                       text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError("sched_tool %s: exit %d\n%s%s" % (args[0], r.returncode, r.stdout,
                                                              r.stderr))
    return r.stdout


def dump_topic(cfg, topic, timeout_ms=2000):
    """Every record of a topic (the name after the config's prefix), from
    the beginning, as the JSON objects sched_tool dump prints."""
    out = sched_tool("dump", "-c", cfg, "--topic", topic, "--count", 0, "--timeout", timeout_ms,
                     timeout=60 + timeout_ms / 1000)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def start_devbroker(tmpdir, args=(), cfg=None, control=False, env=None, timeout=20.0):
    """Start sluice-devbroker (config cfg, further args) and wait for its
    port file; return (proc, bootstrap). With control=True its
    fault-injection address is written to tmpdir/broker.control first."""
    port_file = os.path.join(tmpdir, "broker.port")
    argv = ["--port-file", port_file]
    if cfg:
        argv = ["-c", cfg] + argv
    if control:
        argv += ["--control-file", os.path.join(tmpdir, "broker.control")]
    proc = Proc("sluice-devbroker", argv + list(args), tmpdir=tmpdir, env=env)

    def ready():
        if not proc.alive():
            raise AssertionError("sluice-devbroker exited early\n" + proc.output())
        return read_complete(port_file)

    try:
        text = wait_for(ready, timeout, "devbroker port file")
    except BaseException:
        proc.stop()
        raise
    return proc, text.splitlines()[0].strip()


def devbroker_control(tmpdir, command):
    """One command to the control socket of the dev broker started in tmpdir
    with control=True; returns its answer line."""
    host, port = read_complete(os.path.join(tmpdir, "broker.control")).split()[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(command.encode() + b"\n")
        return s.makefile().readline().strip()


def wait_listening(proc, port, what, timeout=15.0, host="127.0.0.1"):
    """Wait until proc accepts TCP connections on host:port; fail at once,
    with its output, if it exits first."""
    def listening():
        if not proc.alive():
            raise AssertionError("%s exited early\n%s" % (what, proc.output()))
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_for(listening, timeout, "%s listening" % what)


def pipeline_yaml(bootstrap, sink_address, routes="", retry="[1s, 5s]"):
    """The config every private pipeline starts from: the broker, quick
    consumer-group timings, `routes` (YAML lines, indented two spaces) then
    the catch-all route to the sink, a default pool on 127.0.0.1, retries
    `retry` with an hour's expiry. Further sections are appended to it."""
    return ("kafka:\n"
            "  bootstrap: \"%s\"\n"
            "  session_timeout_ms: 6000\n"
            "  heartbeat_interval_ms: 1000\n"
            "  commit_interval_ms: 200\n"
            "routes:\n%s"
            "  \"*\": %s\n"
            "pools:\n"
            "  default:\n"
            "    - { ip: 127.0.0.1, ehlo: localhost }\n"
            "retry: { delays: %s, expiry: 1h }\n"
            % (bootstrap, routes, sink_address, retry))


class Pipeline:
    """A private sluice pipeline for one test: a dev broker, a sluice-testsink
    that every domain routes to ("*"), and a config (self.cfg) with the
    broker, quick consumer-group timings, the route, a default pool on
    127.0.0.1 and short retries; `config` (YAML sections) is appended, so
    a door (api:, submit:) or further keys go there.

    start(name, *args) runs a binary with "-c CFG" and args and stops it at
    the case's cleanup; start_roles() starts sluice-scheduler and
    sluice-sender; logs() is the tail of every started process's output,
    for a failure message."""

    def __init__(self, case, tmpdir, config="", control=False):
        self.case = case
        self.tmp = tmpdir
        self.procs = []
        self.broker, self.bootstrap = start_devbroker(tmpdir, control=control)
        case.addCleanup(self.broker.stop)
        self.sink = start_sink(tmpdir)
        case.addCleanup(self.sink.stop)
        self.cfg = os.path.join(tmpdir, "sluice.yaml")
        with open(self.cfg, "w") as f:
            f.write(pipeline_yaml(self.bootstrap, self.sink.address) + config)

    def start(self, name, *args):
        p = Proc(name, ["-c", self.cfg] + list(args), tmpdir=self.tmp)
        self.case.addCleanup(p.stop, 20)
        self.procs.append(p)
        return p

    def start_roles(self):
        self.start("sluice-scheduler")
        self.start("sluice-sender")

    def logs(self):
        return "".join("\n---\n" + p.output()[-3000:] for p in self.procs)
