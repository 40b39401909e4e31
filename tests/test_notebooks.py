"""The notebooks run end to end with their tiny settings, so they never rot; they are kept without outputs.

Each notebook is executed by nbclient on the ``python3`` kernel, from ``notebooks/`` as Jupyter would,
with ``UNSUP3D_NOTEBOOK_SMALL=1`` and a scratch ``UNSUP3D_NOTEBOOK_WORKDIR``; a cell that raises fails
the test with its traceback.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from tests.callbacks.wandb_env import isolate_wandb
from tests.conftest import REPO_ROOT

nbclient = pytest.importorskip("nbclient", reason="nbclient is in the [dev] extra")

NOTEBOOKS = REPO_ROOT / "notebooks"
NAMES = ["01_quickstart.ipynb", "02_tracking.ipynb", "03_your_own_data.ipynb"]
CELL_TIMEOUT = 300  # seconds; a cell takes at most ~20 s here, more only on a badly overloaded machine


def execute(name: str, workdir: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> nbformat.NotebookNode:
    """Run a notebook (the kernel inherits this environment) and return it with its outputs."""
    isolate_wandb(monkeypatch, workdir / "wandb-home")  # the recipes log to W&B offline
    settings = {
        "UNSUP3D_NOTEBOOK_SMALL": "1",
        "UNSUP3D_CPU_THREADS": "1",
        "UNSUP3D_NOTEBOOK_WORKDIR": str(workdir),
        **env,
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()
    return nb


def printed(nb: nbformat.NotebookNode) -> str:
    """Everything the code cells printed to stdout or returned as text."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and out.name == "stdout":
                parts.append(out.text)
            elif out.output_type == "execute_result":
                parts.append(out.data.get("text/plain", ""))
    return "\n".join(parts)


def images(nb: nbformat.NotebookNode) -> int:
    """Number of PNG pictures the notebook showed."""
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


def percent(text: str, pattern: str) -> float:
    match = re.search(pattern, text)
    assert match, f"no line matching {pattern!r} in the notebook's output:\n{text[-2000:]}"
    return float(match.group(1))


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_clean(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), f"{name} has outputs"
    assert "UNSUP3D_NOTEBOOK_SMALL" in code[0].source, f"{name}: the first code cell must be the parameters"


def test_quickstart_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = execute("01_quickstart.ipynb", tmp_path, monkeypatch)
    text = printed(nb)
    assert 0 <= percent(text, r"mIoU\s+([\d.]+)") <= 100  # the validation table of the SVC run
    assert 0 <= percent(text, r"this room: mIoU ([\d.]+) %") <= 100
    assert re.search(r"cluster\s+\d+ -> \w+", text)
    assert (tmp_path / "outputs" / "quickstart" / "svc" / "checkpoints" / "last.ckpt").is_file()
    assert images(nb) == 1


def test_tracking_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kitti_seq_dir: Path) -> None:
    nb = execute("02_tracking.ipynb", tmp_path, monkeypatch, UNSUP3D_KITTI_SEQ=str(kitti_seq_dir))
    text = printed(nb)
    assert "3 scans of" in text and "3 labelled" in text
    assert 0 < percent(text, r"share_ge3\s+([\d.]+)") <= 1
    assert 0.5 < percent(text, r"pair_purity\s+([\d.]+)") <= 1  # tracks link clusters of one class
    assert images(nb) == 3


def test_your_own_data_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = execute("03_your_own_data.ipynb", tmp_path, monkeypatch)
    text = printed(nb)
    assert 0 <= percent(text, r"mIoU\s+([\d.]+)") <= 100
    scenes = tmp_path / "scenes"
    assert sorted(p.name for p in (scenes / "train").iterdir()) == ["room_a", "room_b", "room_c"]
    assert (scenes / "val" / "room_d" / "superpoint.npy").is_file()  # added by prepare_data
    assert images(nb) == 2
