#!/usr/bin/env python3
"""The compose deployment, run for real: deploy/docker-compose.yml under Podman.

What a user of deploy/ does, from the host, with the published ports:

1. builds the image from deploy/Dockerfile: its `prebuilt` target, which is the
   published image's runtime stage with the binaries cargo already built here
   (the debug ones `cargo test` built; `--release` for release ones), since no
   registry serves the Rust builder image in CI;
2. `compose run --rm --no-deps core-queue qsctl init` on a fresh volume, then
   `compose up -d` of every module, and waits for every health check to pass;
3. checks each container: PID 1 is `qsctl up MODULE`, run as the unprivileged
   quicksilver user, who owns the data volume;
4. adds a user with `qsctl user add` in the core-queue container, submits a
   message on the published submission port (STARTTLS, AUTH) and reads it over
   the published IMAP port (STARTTLS), both checked against the stack's
   certificate;
5. sends SIGHUP to smtp-server's and imap-server's containers three times each
   (the documented restart without downtime) while two clients send and read
   in a loop: no operation may fail, every accepted message arrives once, no
   container is restarted by the engine, every module is healthy after;
6. `compose stop` (every PID 1 exits 0 on SIGTERM, well before the engine's
   time-out), `compose down`, `compose up -d` again: the mail is still there;
7. removes the containers, the volume, the network and the image whatever
   happened, and fails if a module logged an error.

The base image (debian:bookworm-slim) is used as it is when the engine has it.
Otherwise it is made with `debootstrap --variant=minbase bookworm` and cached
as a tarball in target/container-base/, imported for the run and removed after.

Needs podman and podman-compose. Without them the test is skipped, except in
CI (QS_CI=1), where it fails. Run it with `python3 .ci/test-compose.py`
(`--release` for release binaries; QS_TEST_PREBUILT=1 uses the binaries in
target/ without running cargo).
"""
import argparse
import imaplib
import json
import os
import pathlib
import secrets
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from email.message import EmailMessage

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
MODULES = ["core-queue", "smtp-server", "smtp-relay", "pop-client",
           "pop3-server", "imap-server", "list-server"]
BINARIES = ["qsctl"] + MODULES
BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
BASE_TARBALL = TARGET / "container-base" / "debian-bookworm-minbase.tar"
DOMAIN = "example.test"
USER = f"alice@{DOMAIN}"
# The host side of every published port, each a free loopback port.
PUBLISHED = ["SMTP", "SUBMISSION", "SUBMISSIONS", "IMAP", "IMAPS", "POP3",
             "POP3S", "WEB"]
# How long the stack may take to come up and pass its health checks.
HEALTHY_WITHIN = 90
# Restarts without downtime of each listening module under load.
RESTARTS = 3


class Failed(Exception):
    """A step of the test went wrong; the message says which and why."""


def log(text):
    print(f"[compose test {time.monotonic() - START:6.1f} s] {text}", flush=True)


def run(args, *, input=None, check=True, timeout=300):
    """Runs a command; its output is returned, and shown when it fails."""
    done = subprocess.run(args, input=input, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    if check and done.returncode != 0:
        raise Failed(f"{' '.join(map(str, args))} exited {done.returncode}:\n"
                     f"{done.stdout}{done.stderr}")
    return done


def engine_present():
    """podman and podman-compose, or why the test cannot run."""
    missing = [tool for tool in ("podman", "podman-compose") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (apt-get install podman podman-compose)"
    return None


class Stack:
    """One compose project of deploy/docker-compose.yml, named for this run."""

    def __init__(self, image, ports):
        self.project = f"qscomposetest{os.getpid()}"
        self.image = image
        self.ports = ports
        self.env = dict(os.environ, QS_IMAGE=image)
        for name, port in ports.items():
            self.env[f"QS_PUBLISH_{name}"] = f"127.0.0.1:{port}"

    def compose(self, *args, input=None, check=True, timeout=300):
        command = ["podman-compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        done = subprocess.run(command, input=input, capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT, env=self.env)
        if check and done.returncode != 0:
            raise Failed(f"{' '.join(command)} exited {done.returncode}:\n"
                         f"{done.stdout}{done.stderr}")
        return done

    def container(self, module):
        return f"{self.project}_{module}_1"

    def inspect(self, module):
        out = run(["podman", "inspect", self.container(module)]).stdout
        return json.loads(out)[0]

    def exec(self, module, *command, input=None):
        """A command in `module`'s running container, through compose."""
        done = self.compose("exec", "-T", module, *command, input=input)
        # podman-compose 1.0.3 exits 0 whatever the command did: it prints
        # podman's exit code.
        if "exit code: 0" not in done.stdout.splitlines():
            raise Failed(f"compose exec {module} {' '.join(command)} failed:\n"
                         f"{done.stdout}{done.stderr}")
        return done.stdout

    def logs(self, module):
        done = run(["podman", "logs", self.container(module)], check=False)
        return done.stdout + done.stderr

    def wait_healthy(self):
        """Every module's health check passes. Podman runs the checks on their
        interval through systemd timers; where there is no systemd they are run
        here with `podman healthcheck run`, which records the result the same way."""
        deadline = time.monotonic() + HEALTHY_WITHIN
        pending = set(MODULES)
        while pending:
            for module in sorted(pending):
                state = self.inspect(module)["State"]
                if not state.get("Running"):
                    raise Failed(f"{module} is not running: {state.get('Status')}\n"
                                 f"{self.logs(module)}")
                if state.get("Health", {}).get("Status") == "healthy":
                    pending.discard(module)
                    continue
                run(["podman", "healthcheck", "run", self.container(module)], check=False)
                if self.inspect(module)["State"].get("Health", {}).get("Status") == "healthy":
                    pending.discard(module)
            if pending:
                if time.monotonic() > deadline:
                    raise Failed(f"not healthy within {HEALTHY_WITHIN} s: {sorted(pending)}\n" +
                                 "\n".join(self.logs(m) for m in sorted(pending)))
                time.sleep(1)

    def remove(self):
        """Containers, volume and network of this project, whatever state they are in."""
        self.compose("down", "-v", "-t", "40", check=False)
        # podman-compose 1.0.3's down leaves the network.
        for kind, name in self.leftovers():
            run(["podman", kind, "rm", "-f", name], check=False)

    def leftovers(self):
        """(kind, name) of everything the engine still has of this project."""
        label = f"label=io.podman.compose.project={self.project}"
        found = []
        for kind in ("container", "volume", "network"):
            listing = ["podman", kind, "ls", "-q", "--filter", label]
            if kind == "container":
                listing.insert(3, "-a")
            found += [(kind, name) for name in run(listing, check=False).stdout.split()]
        return found


def free_ports(count):
    """Loopback ports the OS has free right now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def build_binaries(release):
    """The binaries for the image; with QS_TEST_PREBUILT=1 (as for the
    integration tests) those in target/ as they are."""
    profile = ["--release"] if release else []
    if os.environ.get("QS_TEST_PREBUILT") != "1":
        log(f"cargo build --workspace --bins {' '.join(profile)}")
        run(["cargo", "build", "--quiet", "--workspace", "--bins", *profile], timeout=3600)
    folder = TARGET / ("release" if release else "debug")
    for binary in BINARIES:
        if not (folder / binary).is_file():
            raise Failed(f"{folder / binary} was not built")
    return folder


def base_image():
    """Makes sure the engine has the Dockerfile's base image; True when this
    run imported it (and removes it again)."""
    if run(["podman", "image", "exists", BASE_IMAGE], check=False).returncode == 0:
        return False
    if not BASE_TARBALL.exists():
        if shutil.which("debootstrap") is None or os.geteuid() != 0:
            log(f"{BASE_IMAGE} will be pulled (no debootstrap as root to make it)")
            return False
        log(f"debootstrap --variant=minbase bookworm, cached in {BASE_TARBALL}")
        BASE_TARBALL.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=BASE_TARBALL.parent) as tree:
            root = pathlib.Path(tree) / "root"
            run(["debootstrap", "--variant=minbase", "bookworm", str(root),
                 "http://deb.debian.org/debian"], timeout=1200)
            # What the registry's slim image leaves out too.
            for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (root / cache).glob("*"):
                    if entry.is_file():
                        entry.unlink()
            partial = BASE_TARBALL.with_suffix(".tar.partial")
            run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."])
            partial.rename(BASE_TARBALL)
    log(f"importing {BASE_IMAGE} from {BASE_TARBALL}")
    run(["podman", "import", str(BASE_TARBALL), BASE_IMAGE])
    return True


def build_image(binaries, image):
    """deploy/Dockerfile's `prebuilt` target, from a context folder holding the
    binaries as bin/ and the files the runtime stage copies."""
    context = TARGET / "compose-test" / "context"
    shutil.rmtree(context, ignore_errors=True)
    (context / "bin").mkdir(parents=True)
    (context / "deploy").mkdir()
    for binary in BINARIES:
        try:
            os.link(binaries / binary, context / "bin" / binary)
        except OSError:
            shutil.copy2(binaries / binary, context / "bin" / binary)
    shutil.copy2(ROOT / "deploy" / "quicksilver.docker.toml", context / "deploy")
    log(f"podman build --target prebuilt -t {image}")
    run(["podman", "build", "--quiet", "--target", "prebuilt", "-f",
         str(ROOT / "deploy" / "Dockerfile"), "-t", image, str(context)], timeout=1200)
    shutil.rmtree(context, ignore_errors=True)


def tls_context(stack):
    """Trusts exactly the stack's certificate (made by qsctl init); its name is
    the config's hostname, not the loopback address we connect to."""
    pem = stack.exec("core-queue", "cat", "/var/lib/quicksilver/tls/cert.pem")
    pem = pem[pem.index("-----BEGIN"):pem.rindex("-----") + 5] + "\n"
    context = ssl.create_default_context(cadata=pem)
    context.check_hostname = False
    return context


def submit(stack, tls, password, subject, body):
    """One message from the user to the user on the published submission port."""
    message = EmailMessage()
    message["From"] = USER
    message["To"] = USER
    message["Subject"] = subject
    message.set_content(body)
    with smtplib.SMTP("127.0.0.1", stack.ports["SUBMISSION"], timeout=30) as smtp:
        smtp.starttls(context=tls)
        smtp.login(USER, password)
        smtp.send_message(message)


def imap_session(stack, tls, password):
    imap = imaplib.IMAP4("127.0.0.1", stack.ports["IMAP"], timeout=30)
    imap.starttls(ssl_context=tls)
    imap.login(USER, password)
    return imap


def inbox_subjects(stack, tls, password):
    """The subjects of every message in the user's INBOX, over the published IMAP port."""
    imap = imap_session(stack, tls, password)
    try:
        status, exists = imap.select("INBOX", readonly=True)
        if status != "OK":
            raise Failed("SELECT INBOX failed")
        if int(exists[0]) == 0:
            return []
        status, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        if status != "OK":
            raise Failed("FETCH failed")
        subjects = []
        for item in data:
            if isinstance(item, tuple):
                header = item[1].decode()
                subjects.append(header.split(":", 1)[1].strip())
        return subjects
    finally:
        imap.logout()


def wait_for_subjects(stack, tls, password, wanted, within=60):
    deadline = time.monotonic() + within
    while True:
        subjects = inbox_subjects(stack, tls, password)
        missing = [s for s in wanted if s not in subjects]
        if not missing:
            return subjects
        if time.monotonic() > deadline:
            raise Failed(f"{len(missing)} messages not in the INBOX within {within} s: {missing[:5]}")
        time.sleep(0.5)


def check_containers(stack, uid):
    """PID 1 of each container is `qsctl up MODULE`, run by the quicksilver user."""
    for module in MODULES:
        out = stack.exec(module, "sh", "-c",
                         "tr '\\0' ' ' < /proc/1/cmdline; echo; stat -c %u /proc/1; "
                         "stat -c %u /var/lib/quicksilver/mail")
        lines = [line.strip() for line in out.splitlines()]
        if f"qsctl up {module}" not in lines:
            raise Failed(f"{module}: PID 1 is not `qsctl up {module}`:\n{out}")
        if lines.count(uid) < 2:
            raise Failed(f"{module}: PID 1 or the data volume is not the quicksilver user's ({uid}):\n{out}")


class ClientLoop:
    """Sends (SMTP) or reads (IMAP) over and over on fresh connections until
    stopped, counting operations and keeping every failure."""

    def __init__(self, name, operation):
        self.name = name
        self.operation = operation
        self.done = 0
        self.failures = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stopping.is_set():
            try:
                self.operation(self.done)
                self.done += 1
            except Exception as e:  # every failure counts, whatever it is
                self.failures.append(f"{self.name} #{self.done}: {e!r}")
                self.done += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(60)


def restart_under_load(stack, tls, password):
    """SIGHUP to smtp-server and imap-server while clients send and read."""
    sent = []
    started = {m: stack.inspect(m)["State"]["StartedAt"] for m in MODULES}

    def send(n):
        subject = f"loop {n} {secrets.token_hex(4)}"
        submit(stack, tls, password, subject, f"message {n} of the client loop\n")
        sent.append(subject)

    def read(_):
        imap = imap_session(stack, tls, password)
        try:
            status, _ = imap.select("INBOX", readonly=True)
            if status != "OK":
                raise Failed("SELECT INBOX failed")
            status, _ = imap.search(None, "ALL")
            if status != "OK":
                raise Failed("SEARCH failed")
        finally:
            imap.logout()

    with ClientLoop("smtp", send) as smtp_loop, ClientLoop("imap", read) as imap_loop:
        for round in range(RESTARTS):
            for module in ("smtp-server", "imap-server"):
                before = stack.logs(module).count("handed over to pid")
                run(["podman", "kill", "--signal", "HUP", stack.container(module)])
                deadline = time.monotonic() + 30
                while stack.logs(module).count("handed over to pid") <= before:
                    if time.monotonic() > deadline:
                        raise Failed(f"{module} did not hand over within 30 s:\n{stack.logs(module)}")
                    time.sleep(0.2)
                log(f"{module} restarted ({round + 1} of {RESTARTS}); "
                    f"{smtp_loop.done} sent, {imap_loop.done} read so far")
            time.sleep(1)
    failures = smtp_loop.failures + imap_loop.failures
    log(f"clients during the restarts: {smtp_loop.done} messages sent, "
        f"{imap_loop.done} IMAP sessions, {len(failures)} failed")
    if failures:
        raise Failed("client operations failed during the restarts:\n" + "\n".join(failures))
    if smtp_loop.done == 0 or imap_loop.done == 0:
        raise Failed("a client loop did nothing during the restarts")
    for module in MODULES:
        state = stack.inspect(module)
        if state["State"]["StartedAt"] != started[module] or state.get("RestartCount", 0):
            raise Failed(f"the engine restarted {module}'s container during a restart without downtime")
    wait_for_subjects(stack, tls, password, sent)
    return sent


def stop_cleanly(stack):
    """`compose stop`: every PID 1 exits 0 on SIGTERM, long before the time-out."""
    began = time.monotonic()
    stack.compose("stop", "-t", "40")
    took = time.monotonic() - began
    for module in MODULES:
        state = stack.inspect(module)["State"]
        if state.get("Running") or state.get("ExitCode") != 0:
            raise Failed(f"{module} did not stop cleanly on SIGTERM: {state.get('Status')}, "
                         f"exit code {state.get('ExitCode')}\n{stack.logs(module)}")
    log(f"compose stop took {took:.1f} s")
    if took > 35:
        raise Failed(f"compose stop took {took:.0f} s: a module ignored SIGTERM until the time-out")


def logged_errors(stack):
    errors = []
    for module in MODULES:
        for line in stack.logs(module).splitlines():
            if " ERROR " in line or "panicked" in line:
                errors.append(f"{module}: {line}")
    return errors


def test(stack):
    stack.remove()
    log("compose run --rm --no-deps core-queue qsctl init (a fresh volume)")
    init = stack.compose("run", "--rm", "--no-deps", "-T", "core-queue",
                         "qsctl", "init", "--domain", DOMAIN)
    if f"added the user postmaster@{DOMAIN}" not in init.stdout:
        raise Failed(f"qsctl init did not make the postmaster:\n{init.stdout}{init.stderr}")

    log("compose up -d: every module")
    stack.compose("up", "-d", "--no-build")
    stack.wait_healthy()
    log("every module is healthy")
    uid = next(line for line in stack.exec("core-queue", "id", "-u").splitlines()
               if line.strip().isdigit()).strip()
    if uid == "0":
        raise Failed("the modules run as root")
    check_containers(stack, uid)

    password = secrets.token_urlsafe(18)
    log(f"qsctl user add {USER} in the core-queue container")
    stack.exec("core-queue", "qsctl", "user", "add", USER, "--password-stdin",
               input=password + "\n")
    if USER not in stack.exec("core-queue", "qsctl", "user", "list"):
        raise Failed(f"{USER} is not in `qsctl user list`")
    tls = tls_context(stack)

    first = f"first message {secrets.token_hex(4)}"
    log("submitting on the published submission port, reading on the published IMAP port")
    submit(stack, tls, password, first, "kept across compose down and up\n")
    wait_for_subjects(stack, tls, password, [first])

    sent = restart_under_load(stack, tls, password)
    stack.wait_healthy()

    stop_cleanly(stack)
    errors = logged_errors(stack)
    log("compose down, compose up -d (the same volume)")
    stack.compose("down", "-t", "40")
    if any(kind == "container" for kind, _ in stack.leftovers()):
        raise Failed(f"compose down left containers: {stack.leftovers()}")
    stack.compose("up", "-d", "--no-build")
    stack.wait_healthy()
    subjects = wait_for_subjects(stack, tls, password, [first] + sent)
    for subject in [first] + sent:
        if subjects.count(subject) != 1:
            raise Failed(f"{subject!r} is in the INBOX {subjects.count(subject)} times")
    log(f"after down and up: all {len(sent) + 1} messages in the INBOX, each once")
    errors += logged_errors(stack)
    if errors:
        raise Failed("modules logged errors:\n" + "\n".join(errors))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", action="store_true",
                        help="put the release binaries in the image (default: debug, as `cargo test` builds)")
    args = parser.parse_args()
    why = engine_present()
    if why:
        if os.environ.get("QS_CI") == "1":
            print(f"FAILED: {why}: .ci/setup installs them for this test", file=sys.stderr)
            return 1
        print(f"SKIPPED: the compose deployment test needs a container engine: {why}")
        return 0
    image = f"localhost/quicksilver:composetest{os.getpid()}"
    stack = Stack(image, dict(zip(PUBLISHED, free_ports(len(PUBLISHED)))))
    imported = False
    failure = None
    try:
        binaries = build_binaries(args.release)
        imported = base_image()
        build_image(binaries, image)
        test(stack)
    except Failed as e:
        failure = str(e)
        for module in MODULES:
            if run(["podman", "container", "exists", stack.container(module)],
                   check=False).returncode == 0:
                print(f"--- {module}'s log\n{stack.logs(module)[-4000:]}", file=sys.stderr)
    finally:
        stack.remove()
        run(["podman", "rmi", "-f", image], check=False)
        if imported:
            run(["podman", "rmi", BASE_IMAGE], check=False)
    left = stack.leftovers()
    if left and not failure:
        failure = f"left behind: {left}"
    if failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    log("passed; containers, volume, network and image removed")
    return 0


START = time.monotonic()
if __name__ == "__main__":
    sys.exit(main())
