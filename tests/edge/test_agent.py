"""The agent's frame loop survives a disk that refuses hard examples: detection goes on, the loss is counted.

The full disk is real: RLIMIT_FSIZE in a child process makes every write past a few KiB fail with EFBIG.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from feedback.scenes import write_yolo_dataset

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys
    from pathlib import Path
    from edge.agent import Agent, AgentConfig
    from edge.detectors.base import load_detector
    from edge.sources import ImageFolderSource
    from edge.triggers import TriggerConfig

    model, images, spool, limit = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    detector = load_detector(model)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    # Every frame is a hard example (random rate 1, no budget): each one tries the spool.
    triggers = TriggerConfig(random_rate=1.0, budget_per_hour=1e9, budget_burst=1000, dedup_memory=0)
    config = AgentConfig(server="http://127.0.0.1:9", token="t", device="cam", spool_dir=spool, triggers=triggers)
    agent = Agent(config, detector, ImageFolderSource(images))
    status = agent.run()
    agent.close(drain_timeout_s=0)
    print(json.dumps({k: status[k] for k in ("frames", "spooled", "spool_write_errors", "last_spool_error")}))
    """
)


def test_a_full_disk_costs_hard_examples_not_frames(tmp_path: Path, scene_onnx: Path) -> None:
    images = write_yolo_dataset(tmp_path / "frames", range(6)) / "images"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    result = subprocess.run(
        [sys.executable, str(script), str(scene_onnx), str(images), str(tmp_path / "spool"), str(4096)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    status = json.loads(result.stdout.strip().splitlines()[-1])
    assert status["frames"] == 6  # the loop went on through every refusal
    assert status["spooled"] == 0 and status["spool_write_errors"] == 6
    assert "could not store" in status["last_spool_error"] and os.strerror(27) in status["last_spool_error"]
