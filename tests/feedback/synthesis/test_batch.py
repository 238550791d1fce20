"""The batch entry point as a job runs it: `main` with a generator from the registry, into a real workspace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feedback.datasets.yolo_import import import_yolo
from feedback.scenes import write_yolo_dataset
from feedback.synthesis.batch import main
from store.settings import Settings, Workspace
from tests.feedback.synthesis.tiny_models import gligen_pipe


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "ws"
    ws = Workspace(Settings(workspace=root, fsync=False))
    import_yolo(ws, write_yolo_dataset(tmp_path / "train", range(3), width=160, height=120), "train", progress=False)
    gligen_pipe(sample_size=32).save_pretrained(tmp_path / "gligen")  # 64 px images: boxes pass the 8 px floor
    for key, value in {"GLIGEN_MODEL": str(tmp_path / "gligen"), "DIFFUSION_ALLOW_CPU": "1", "DIFFUSION_STEPS": "2",
                       "DIFFUSION_BATCH_SIZE": "2", "FSYNC": "0"}.items():
        monkeypatch.setenv(f"EDGELOOP_{key}", value)
    return root


def test_a_job_generates_stores_and_reports(workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "reports" / "job.json"
    rc = main(["--class", "no_helmet", "--generator", "gligen", "--n", "3", "--seed", "7",
               "--workspace", str(workspace), "--out", str(out)])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and printed == json.loads(out.read_text())
    [run] = printed["runs"]
    assert printed["generator"] == "gligen" and printed["failed"] == {}
    assert run["requested"] == 3 and run["kept"] + sum(run["rejected"].values()) == 3 and run["kept"] > 0
    ws = Workspace(Settings(workspace=workspace))
    with ws.catalog.connect() as con:
        stored = con.execute("SELECT sha256 FROM images WHERE origin = 'synthetic'").fetchall()
    assert sorted(s for (s,) in stored) == sorted(run["kept_images"])


def test_a_job_that_cannot_start_says_why(workspace: Path, capsys: pytest.CaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["--class", "hat", "--generator", "gligen", "--n", "1", "--workspace", str(workspace)]) == 2
    assert "'hat' is not one of the catalog's classes" in capsys.readouterr().err
    assert main(["--class", "no_helmet", "--generator", "dalle", "--n", "1", "--workspace", str(workspace)]) == 2
    assert "unknown generator 'dalle'" in capsys.readouterr().err
    import torch

    monkeypatch.setenv("EDGELOOP_DIFFUSION_ALLOW_CPU", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--class", "no_helmet", "--generator", "gligen", "--n", "1", "--workspace", str(workspace)]) == 2
    assert "this generator needs a GPU; use swap/paste or a cloud one" in capsys.readouterr().err
