"""Rehearse a search over several nodes on one machine: SCOOP over ssh to two "hosts"; prints JSON.

It starts its own OpenSSH server on 127.0.0.1 and 127.0.0.2 (a free port, a throwaway host key
and client key in a temporary directory, logins with that key only), writes a hostfile naming
both addresses and an ssh wrapper that uses its own config — the user's ~/.ssh is neither read
nor changed — and runs

    python -m scoop --hostfile HOSTFILE --ssh-executable WRAPPER --external-hostname 127.0.0.3 \\
        gp_losses/main.py --task cls ... --set search.batch=2 --set task.options.iterations=3000

then the same search serially. It checks that the two processes both trained and that the
two runs wrote the same evaluations.jsonl and hall of fame (timings and worker ids aside),
and stops the server. Needs `sshd` (Debian/Ubuntu: `apt install openssh-server`) but no root
(run as root, it creates sshd's /run/sshd if missing).
docs/multi-node.md explains each piece for a real cluster.

`--lose-after S` loses a node: S seconds after the launch, every process of the last host's
login (those whose SSH_CONNECTION names that address) is killed with SIGKILL, as a node that
goes away; the run must still finish, equal to the serial one. `--hosts 3` adds a third host
(127.0.0.4), so that one worker is lost and another goes on.

    python bench/multinode.py [--task cls] [--evaluations 6] [--hosts 2|3] [--lose-after S] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Tuple

ROOT = Path(__file__).resolve().parent.parent
ALL_HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.4")
HOSTS = ALL_HOSTS[:2]
EXTERNAL = "127.0.0.3"
"""The address SCOOP's workers are told to reach the broker at (--external-hostname)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_sshd() -> str:
    found = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
                                          if os.path.exists(p)), None)
    if not found:
        print("bench/multinode.py needs an OpenSSH server binary (sshd) to rehearse ssh logins: "
              "install it (Debian/Ubuntu: apt install openssh-server) and run this again",
              file=sys.stderr)
        sys.exit(2)
    return found


class Server:
    """An sshd of our own on HOSTS, reachable only with the key it generates."""

    def __init__(self, sshd: str, work: Path) -> None:
        self.work, self.port = work, free_port()
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / name)], check=True)
        (work / "authorized_keys").write_text((work / "client_key.pub").read_text())
        os.chmod(work / "authorized_keys", 0o600)
        config = [f"Port {self.port}", *(f"ListenAddress {h}" for h in HOSTS),
                  f"HostKey {work / 'host_key'}", f"AuthorizedKeysFile {work / 'authorized_keys'}",
                  "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
                  "PermitRootLogin prohibit-password", "UsePAM no", "StrictModes no",
                  f"PidFile {work / 'sshd.pid'}", "LogLevel INFO"]
        (work / "sshd_config").write_text("\n".join(config) + "\n")
        client = [f"Host {' '.join(HOSTS)}", f"  Port {self.port}", f"  User {getpass.getuser()}",
                  f"  IdentityFile {work / 'client_key'}", "  IdentitiesOnly yes", "  BatchMode yes",
                  "  StrictHostKeyChecking no", "  UserKnownHostsFile /dev/null", "  LogLevel ERROR"]
        (work / "ssh_config").write_text("\n".join(client) + "\n")
        self.wrapper = work / "ssh"
        self.wrapper.write_text(f"#!/bin/sh\nexec ssh -F {work / 'ssh_config'} \"$@\"\n")
        os.chmod(self.wrapper, 0o755)
        if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):  # sshd run by root wants it
            os.makedirs("/run/sshd", mode=0o755)
            print("created /run/sshd (sshd's privilege separation directory)", file=sys.stderr)
        self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(work / "sshd_config")],
                                     stderr=open(work / "sshd.log", "w"))
        for _ in range(50):
            if all(self.reachable(h) for h in HOSTS):
                return
            time.sleep(0.1)
        self.stop()
        sys.exit(f"sshd did not accept logins on {HOSTS} port {self.port}: {(work / 'sshd.log').read_text()}")

    def reachable(self, host: str) -> bool:
        done = subprocess.run([str(self.wrapper), host, "true"], capture_output=True, timeout=20)
        return done.returncode == 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


LONGER = {"cls": ["task.options.iterations=3000"]}
"""Trainings longer than a rejection job's 0.5-s time box, so that both nodes train: a free
worker takes a waiting training, and 0.2-s trainings may all go to the one that came free first."""


def login_processes(host: str) -> list:
    """The pids of the processes of ssh logins to `host` (SSH_CONNECTION names it as the
    server's address): what a node's loss takes away here."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            environ = (Path("/proc") / name / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        connection = next((e[len(b"SSH_CONNECTION="):] for e in environ if e.startswith(b"SSH_CONNECTION=")), b"")
        parts = connection.decode(errors="replace").split()
        if len(parts) == 4 and parts[2] == host:
            pids.append(int(name))
    return pids


def search(args: argparse.Namespace, out: Path, scoop=(), lose: str = "") -> Tuple[float, str]:
    """One run; with `lose`, that host's login processes are killed args.lose_after s in."""
    sets = ["search.batch=2", "search.compare_baselines=false", "search.plot=false",
            *LONGER.get(args.task, []), *args.set]
    cmd = [sys.executable, *scoop, str(ROOT / "gp_losses" / "main.py"), "--task", args.task,
           "--seed", str(args.seed), "--evaluations", str(args.evaluations), "--out", str(out)]
    cmd += [a for s in sets for a in ("--set", s)]
    print(f"running: {' '.join(cmd)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if lose:
        try:
            proc.wait(timeout=args.lose_after)
        except subprocess.TimeoutExpired:
            killed = login_processes(lose)
            for pid in killed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            print(f"lost node {lose} at {time.perf_counter() - start:.1f} s: killed {len(killed)} "
                  "process(es)", file=sys.stderr, flush=True)
            args.killed = len(killed)
    stdout, stderr = proc.communicate()
    done = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    seconds = time.perf_counter() - start
    state = json.loads((out / "status.json").read_text())["state"] if (out / "status.json").exists() else None
    if state != "finished":  # SCOOP's launcher exits 0 whatever happened
        sys.exit(f"the run in {out} did not finish (state {state}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stderr


def stable(out: Path):
    with open(out / "evaluations.jsonl") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    drop = {"seconds", "worker", "device"}
    return ([{k: v for k, v in r.items() if k not in drop} for r in records],
            json.loads((out / "hall_of_fame.json").read_text())), records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="cls")
    parser.add_argument("--evaluations", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", help="where the two runs go (default: a temporary directory)")
    parser.add_argument("--hosts", type=int, default=2, choices=(2, 3), help="hosts, the origin's included")
    parser.add_argument("--lose-after", type=float, default=0.0, metavar="S",
                        help="kill every process of the last host's login S seconds in (0: never)")
    args = parser.parse_args()
    global HOSTS
    HOSTS = ALL_HOSTS[:args.hosts]
    args.killed = 0
    sshd = find_sshd()
    out = Path(args.out or tempfile.mkdtemp(prefix="gp_losses-multinode-"))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gp_losses-sshd-") as tmp:
        server = Server(sshd, Path(tmp))
        try:
            hostfile = Path(tmp) / "hostfile"
            hostfile.write_text("".join(f"{h} 1\n" for h in HOSTS))
            scoop = ["-m", "scoop", "--hostfile", str(hostfile), "--ssh-executable", str(server.wrapper),
                     "--external-hostname", EXTERNAL]
            nodes, launcher = search(args, out / "nodes", scoop, HOSTS[-1] if args.lose_after else "")
        finally:
            server.stop()
        logins = (Path(tmp) / "sshd.log").read_text().count("Accepted publickey")
    serial, _ = search(args, out / "serial")
    distribution = [line.split("INFO", 1)[1].strip() for line in launcher.splitlines()
                    if "launcher" in line and any(h + ":" in line for h in HOSTS)]
    (nodes_stable, records), (serial_stable, _) = stable(out / "nodes"), stable(out / "serial")
    trained = [r for r in records if "eval" in r and r.get("worker")]
    workers = sorted({r["worker"] for r in trained})
    result = {"machine": {"cores": os.cpu_count(), "python": platform.python_version()},
              "hosts": list(HOSTS), "external_hostname": EXTERNAL, "task": args.task,
              "evaluations": args.evaluations, "seconds": {"nodes": round(nodes, 1), "serial": round(serial, 1)},
              "ssh_logins": logins, "worker_distribution": distribution, "workers_that_trained": workers,
              "trainings_per_worker": {w: sum(r["worker"] == w for r in trained) for w in workers},
              "identical_to_serial": nodes_stable == serial_stable, "out": str(out)}
    if args.lose_after:
        status = json.loads((out / "nodes" / "status.json").read_text())
        lost = [line for line in (out / "nodes" / "scoop.log").read_text().splitlines() if "taken as lost" in line]
        result["lost_node"] = {"host": HOSTS[-1], "after_s": args.lose_after, "processes_killed": args.killed,
                               "state": status["state"], "workers": status.get("workers"), "log": lost}
    print(json.dumps(result, indent=2))
    if len(workers) < 2 or not result["identical_to_serial"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
