"""A throwaway PostgreSQL cluster for the tests: initdb in a temporary folder, served on loopback and a Unix
socket in that folder, always stopped and removed by its fixture.

``initdb`` refuses to run as root, so as root the cluster runs as the ``postgres`` user (``runuser``).
Durability is off (``fsync=off``): the tests stop and start the server, they never pull the power.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from server_harness import free_port

def _pg_bin() -> Path:
    """BACKSPLIT_PG_BIN, else Debian's newest installed PostgreSQL (15 on these machines)."""
    if "BACKSPLIT_PG_BIN" in os.environ:
        return Path(os.environ["BACKSPLIT_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()
PG_USER = "backsplit"


def postgres_missing() -> str | None:
    """Why no cluster can be started here, or None."""
    if not (PG_BIN / "initdb").is_file():
        return f"PostgreSQL is not installed ({PG_BIN}/initdb is missing; apt-get install -y postgresql, as .ci/run does)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: initdb cannot run as the postgres user"
    return None


@dataclass
class PostgresCluster:
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="backsplit-pg-")))
    port: int = 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *args], check=check, capture_output=True, text=True, timeout=60)

    @property
    def data(self) -> Path:
        return self.folder / "cluster"

    def init(self) -> PostgresCluster:
        self.folder.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", PG_USER, "--no-sync")
        self.port = free_port()
        return self

    def start(self) -> PostgresCluster:
        options = (f"-k {self.folder} -c listen_addresses=127.0.0.1 -p {self.port} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "server.log"),
                  "-w", "start")
        return self

    def stop(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database on the cluster; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={PG_USER} dbname=postgres", autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text()[-3000:] if path.exists() else ""
