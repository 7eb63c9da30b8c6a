"""The notebooks in notebooks/ run end to end with small parameters, so they cannot rot.

Each notebook is executed with ``NOTEBOOK_SMALL=1`` through nbclient on the
``python3`` kernel of this interpreter (ipykernel's own spec, which starts
``sys.executable``), against the real local broker. The executed copy must hold no
error output and at least one image (each notebook draws its figures inline). Nothing
is written back to the committed notebooks; the executed copy is saved under pytest's
tmp_path for inspection.

03-failure-modes stops and starts the broker itself (in a ``finally``); the ``broker``
fixture starts it again at teardown anyway, in case the kernel died mid-outage.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipper.testing import LocalKafka, kafka_local_script

# jupyter_core warns (DeprecationWarning, an error under this suite's filterwarnings)
# unless the platformdirs layout is chosen before it is imported.
os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

pytestmark = [pytest.mark.kafka, pytest.mark.ray]

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.fixture
def broker(kafka: LocalKafka) -> Iterator[LocalKafka]:
    """The local broker; started again at teardown whatever the notebook did to it."""
    try:
        yield kafka
    finally:
        subprocess.run([str(kafka_local_script()), "start"], check=True, capture_output=True)


@pytest.fixture
def small_env(monkeypatch: pytest.MonkeyPatch, ray_session: None) -> None:
    """The kernel inherits this environment: small parameters, the session's Ray to
    join (as a notebook on a cluster joins RAY_ADDRESS; it saves a Ray start per
    notebook), and jupyter's platformdirs (no deprecation warning)."""
    import ray

    monkeypatch.setenv("NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("RAY_ADDRESS", ray.get_runtime_context().gcs_address)


def run_notebook(name: str, timeout: int, out_dir: Path) -> Any:
    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    # The kernel must run this interpreter (the project's venv), whatever python3 kernel
    # spec the machine may have installed elsewhere.
    client.km = client.create_kernel_manager()
    spec = client.km.kernel_spec
    assert spec is not None
    if "ipykernel" in " ".join(spec.argv):
        spec.argv[0] = sys.executable
    started = time.monotonic()
    try:
        client.execute()
    finally:
        nbformat.write(nb, out_dir / name)
        print(f"{name}: {time.monotonic() - started:.1f} s, executed copy in {out_dir / name}")
    return nb


def check_outputs(nb: Any) -> None:
    errors, images = [], 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                errors.append(f"cell {i}: {out.ename}: {out.evalue}")
            if "image/png" in out.get("data", {}):
                images += 1
    assert not errors, "\n".join(errors)
    assert images >= 1, "the notebook produced no image output"


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("small_env")
def test_quickstart(broker: LocalKafka, tmp_path: Path) -> None:
    check_outputs(run_notebook("01-quickstart.ipynb", 300, tmp_path))


@pytest.mark.timeout(900)
@pytest.mark.usefixtures("small_env")
def test_tuning(broker: LocalKafka, tmp_path: Path) -> None:
    check_outputs(run_notebook("02-tuning.ipynb", 400, tmp_path))


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.usefixtures("small_env")
def test_failure_modes(broker: LocalKafka, tmp_path: Path) -> None:
    check_outputs(run_notebook("03-failure-modes.ipynb", 400, tmp_path))
    status = subprocess.run(
        [str(kafka_local_script()), "status"], capture_output=True, text=True, check=False
    )
    assert status.returncode == 0, f"the notebook left the broker down:\n{status.stdout}"


def test_notebooks_are_committed_with_outputs() -> None:
    """The committed notebooks carry their executed outputs and plots."""
    paths = sorted(NOTEBOOKS.glob("0*.ipynb"))
    assert [p.name for p in paths] == [
        "01-quickstart.ipynb",
        "02-tuning.ipynb",
        "03-failure-modes.ipynb",
    ]
    for path in paths:
        check_outputs(nbformat.read(path, as_version=4))
