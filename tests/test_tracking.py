"""MLflow tracking on the default SQLite store: processes that open a fresh store together
(two studies launched at once on new storage) must all get a working store."""
from __future__ import annotations

import subprocess
import sys

from sweep.tracking import client_for

OPEN_STORE = """
import sys
from sweep.tracking import client_for
client = client_for(f"sqlite:///{sys.argv[1]}/mlflow.db")
client.create_experiment(sys.argv[2])
"""


def test_simultaneous_first_use_of_a_sqlite_store(tmp_path):
    for round_ in range(2):  # without the lock, every round failed in one of the two processes
        store = tmp_path / f"round{round_}"
        store.mkdir()
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_STORE, str(store), name], stderr=subprocess.PIPE,
                                  text=True) for name in ("a", "b")]
        errors = [proc.communicate(timeout=300)[1] for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], errors
        names = {e.name for e in client_for(f"sqlite:///{store}/mlflow.db").search_experiments()}
        assert {"a", "b"} <= names
