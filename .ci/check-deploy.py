#!/usr/bin/env python3
"""Checks deploy/ as far as a machine without a Docker engine allows.

- docker-compose.yml: parsed and validated against the Compose specification
  (the compose-spec models), with unknown keys refused; every module has a
  service running its binary, a healthcheck through `qsctl health`, and
  `restart: unless-stopped`; modules that use the queue wait for core-queue.
- Dockerfile: parsed with Docker's own parser (the `dockerfile` package) and
  linted: multi-stage, pinned base images, apt lists removed, the binaries
  copied from the build stage, an unprivileged USER in the final stage; the
  `prebuilt` stage CI runs (.ci/test-compose.py) and the final stage share one
  runtime stage and add nothing but the binaries.
- systemd units: every module has one, with the hardening the README promises.

Prints one line per problem and exits 1 if there is any.
"""
import configparser
import pathlib
import sys

import compose_spec
import dockerfile
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
MODULES = ["core-queue", "smtp-server", "smtp-relay", "pop-client",
           "pop3-server", "imap-server", "list-server"]
USES_QUEUE = {"smtp-server", "smtp-relay", "pop-client", "list-server"}
problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


def check_compose():
    path = DEPLOY / "docker-compose.yml"
    data = yaml.safe_load(path.read_text())
    try:
        spec = compose_spec.ComposeSpecification.model_validate(data)
    except Exception as e:  # the validator's message says what is wrong
        problem(path.name, f"not a valid compose file: {e}")
        return
    known = set()
    for name, field in compose_spec.Service.model_fields.items():
        known.add(field.alias or name)
    services = data.get("services", {})
    for name, service in services.items():
        for key in service:
            if key not in known and not key.startswith("x-") and key != "<<":
                problem(path.name, f"service {name}: unknown key {key}")
    for module in MODULES:
        s = spec.services.get(module)
        if s is None:
            problem(path.name, f"no service for {module}")
            continue
        command = s.command if isinstance(s.command, list) else [s.command]
        # `qsctl up MODULE` as PID 1 survives a restart without downtime.
        if command[:3] != ["qsctl", "up", module]:
            problem(path.name, f"{module}: command {s.command} is not `qsctl up {module}`")
        test = list(getattr(s.healthcheck, "test", None) or [])
        if test[:4] != ["CMD", "qsctl", "health", module]:
            problem(path.name, f"{module}: healthcheck is not `qsctl health {module}`")
        if s.restart != "unless-stopped":
            problem(path.name, f"{module}: restart is {s.restart}, not unless-stopped")
        volumes = [str(v) for v in (services[module].get("volumes") or [])]
        if not any("/var/lib/quicksilver" in v for v in volumes):
            problem(path.name, f"{module}: the data volume is not mounted")
        sysctls = services[module].get("sysctls")
        if sysctls is not None and not isinstance(sysctls, list):
            # It passes their names without values to podman, which refuses them.
            problem(path.name, f"{module}: sysctls is a mapping; podman-compose 1.0.3 reads only a list")
        if module in USES_QUEUE:
            depends = services[module].get("depends_on") or {}
            if "core-queue" not in depends:
                problem(path.name, f"{module}: does not wait for core-queue")
    for module, binary in [(m, m) for m in MODULES]:
        if not (ROOT / "crates" / module).is_dir():
            # A module not written yet: its service is ready for when it is.
            print(f"note: {module} has a service but no crate yet")


def check_dockerfile():
    path = DEPLOY / "Dockerfile"
    commands = dockerfile.parse_file(str(path))
    # Each stage: its name, what it is built FROM, its instructions.
    stages = []
    for c in commands:
        if c.cmd == "FROM":
            name = c.value[2] if len(c.value) == 3 and c.value[1].upper() == "AS" else None
            stages.append({"name": name, "from": c.value[0], "body": []})
        elif stages:
            stages[-1]["body"].append(c)
    if len(stages) < 2:
        problem(path.name, "not a multi-stage build")
        return
    by_name = {s["name"]: s for s in stages if s["name"]}
    for s in stages:
        image = s["from"]
        if image not in by_name and (":" not in image or image.endswith(":latest")):
            problem(path.name, f"base image {image} is not pinned to a version")

    def chain(stage):
        """The stage and the stages it is built on, the stage itself last."""
        found = [stage]
        while found[0]["from"] in by_name:
            found.insert(0, by_name[found[0]["from"]])
        return found

    def effective(stage, instruction):
        values = [c.value for s in chain(stage) for c in s["body"] if c.cmd == instruction]
        return values[-1] if values else None

    final = stages[-1]
    user = effective(final, "USER")
    if not user or user[0] in ("root", "0"):
        problem(path.name, "the final stage runs as root")
    if not any(c.cmd == "COPY" and any(f.startswith("--from=") for f in c.flags)
               for c in final["body"]):
        problem(path.name, "the final stage does not copy the binaries from the build stage")
    # CI builds `--target prebuilt` (binaries from the host): it must be the
    # final stage but for where the binaries come from.
    prebuilt = by_name.get("prebuilt")
    if prebuilt is None:
        problem(path.name, "no `prebuilt` stage (the image CI runs)")
    else:
        if prebuilt["from"] != final["from"]:
            problem(path.name, "`prebuilt` and the final stage are not built on the same stage")
        for s in (prebuilt, final):
            for c in s["body"]:
                if c.cmd != "COPY" or c.value[-1] != "/usr/local/bin/":
                    problem(path.name, f"stage {s['name']}: {c.original} is more than the binaries; "
                            "it belongs in the shared runtime stage")
    for instruction in ("USER", "WORKDIR", "VOLUME", "CMD"):
        if effective(final, instruction) is None:
            problem(path.name, f"the final stage has no {instruction}")
    for c in commands:
        if c.cmd == "RUN" and "apt-get install" in c.value[0]:
            if "--no-install-recommends" not in c.value[0]:
                problem(path.name, "apt-get install without --no-install-recommends")
            if "rm -rf /var/lib/apt/lists" not in c.value[0]:
                problem(path.name, "apt lists are not removed in the same layer")
        if c.cmd == "ADD":
            problem(path.name, "ADD used where COPY would do")
    if not (ROOT / ".dockerignore").exists():
        problem(".dockerignore", "missing: the build context would include target/")


def check_systemd():
    wanted = ["NoNewPrivileges", "ProtectSystem", "ReadWritePaths", "PrivateTmp",
              "User", "ExecReload"]
    for module in MODULES:
        path = DEPLOY / "systemd" / f"quicksilver-{module}.service"
        if not path.exists():
            problem(path.name, "missing")
            continue
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str
        unit.read_string(path.read_text())
        service = unit["Service"] if unit.has_section("Service") else {}
        for key in wanted:
            if key not in service:
                problem(path.name, f"no {key}")
        if service.get("User") in (None, "root"):
            problem(path.name, "runs as root")
        if service.get("ProtectSystem") != "strict":
            problem(path.name, "ProtectSystem is not strict")
        if not service.get("ExecStart", "").endswith(module):
            problem(path.name, f"ExecStart does not run {module}")
        # The new process of a restart without downtime tells systemd it is
        # the main process now (READY=1, MAINPID=).
        if service.get("Type") != "notify" or service.get("NotifyAccess") != "all":
            problem(path.name, "not Type=notify with NotifyAccess=all")
        if "-HUP" not in service.get("ExecReload", ""):
            problem(path.name, "ExecReload does not send SIGHUP")
    target = DEPLOY / "systemd" / "quicksilver.target"
    text = target.read_text() if target.exists() else ""
    for module in MODULES:
        if f"quicksilver-{module}.service" not in text:
            problem(target.name, f"does not pull in quicksilver-{module}.service")


check_compose()
check_dockerfile()
check_systemd()
for p in problems:
    print(p)
if problems:
    sys.exit(1)
print("deploy/: compose file, Dockerfile and systemd units are valid")
