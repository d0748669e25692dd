"""Shared pieces of the sweep tests: a cheap sweep config over the shipped lab models, reading
a study back, and a throw-away PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SKILLGRAFT = str(Path(sys.executable).with_name("skillgraft"))
GRAFT = {"kind": "graft", "target": "lab:cp", "vectors": [{"base": "lab:base", "skilled": "lab:skilled"}],
         "exclude": ["embed_tokens", "lm_head"], "output": "out"}


def write_sweep(path: Path, **changes) -> Path:
    """One parameter (the vector's scale), held-out B accuracy on 40 items: about a second a trial."""
    config = {"kind": "sweep", "base": GRAFT,
              "space": {"vectors.0.scale": {"type": "float", "low": 0.0, "high": 2.0, "step": 0.05}},
              "objectives": [{"measure": "lab_skill_b", "options": {"n": 40}}], "n_trials": 4, "heartbeat": 1}
    config.update(changes)
    path.write_text(yaml.safe_dump(config))
    return path


def trials(out: Path, storage: str | None = None, name: str | None = None):
    import optuna

    url = storage or f"sqlite:///{out / 'study.db'}"
    return optuna.load_study(study_name=name or out.name, storage=url).trials


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Postgres:
    """A PostgreSQL cluster under a temp folder on 127.0.0.1 (initdb + pg_ctl; as the `postgres`
    user when run as root). `.url` is set, or `.reason` says why there is none."""

    def __init__(self):
        self.url, self.reason, self.root = None, None, None
        if os.environ.get("SKILLGRAFT_TEST_POSTGRES"):
            self.url = os.environ["SKILLGRAFT_TEST_POSTGRES"]
            return
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            self.reason = "PostgreSQL is not installed (apt-get install -y postgresql)"
            return
        self.bin = bins[-1].parent
        self.root = Path(tempfile.mkdtemp(prefix="skillgraft-pg-"))
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.root, "postgres")
        try:
            self._run("initdb", "-D", str(self.root / "data"), "-A", "trust", "-U", "sweep", "--no-sync")
            self._run("pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "log"), "-w", "-o",
                      f"-h 127.0.0.1 -p {self.port} -k {self.root}", "start")
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "sweep", "sweep")
            self.url = f"postgresql://sweep@127.0.0.1:{self.port}/sweep"
        except (subprocess.CalledProcessError, OSError) as exc:
            self.reason = f"could not start a PostgreSQL server: {exc}"
            self.stop()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *args], check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        if self.root is None:
            return
        if (self.root / "data" / "postmaster.pid").exists():
            subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate",
                            "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


def wait_for(predicate, timeout: float, step: float = 0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None
