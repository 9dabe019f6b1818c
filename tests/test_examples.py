"""The examples run end to end (quick modes), as a user would run them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_train_classifier_digits_quick() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "train_classifier_digits.py"), "--quick"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rates = re.search(r"variants/s: ([\d,]+) batched .* ([\d,]+) one image at a time", proc.stdout)
    assert rates and all(int(r.replace(",", "")) > 0 for r in rates.groups()), proc.stdout
    acc = re.search(r"none ([\d.]+)%, VAEAugment\(p=[\d.]+\) ([\d.]+)%", proc.stdout)
    assert acc, proc.stdout
    assert all(10.0 < float(a) <= 100.0 for a in acc.groups())  # better than chance: it trained


def test_train_classifier_digits_with_onnx_workers(tmp_path: Path) -> None:
    import vaeaug

    model = vaeaug.fit("digits", epochs=2, conditional=True, progress=False)
    model.save(tmp_path / "d.vae")
    vaeaug.export_onnx(model, tmp_path / "d.onnx")
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "train_classifier_digits.py"), "--quick",
                           "--model", str(tmp_path / "d.vae"), "--onnx", str(tmp_path / "d.onnx")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "d.onnx" in proc.stdout  # the transform in the workers is the ONNX one (its repr)
    rate = re.search(r"ONNX backend: ([\d,]+) \(([\d.]+)x torch\)", proc.stdout)
    assert rate and int(rate.group(1).replace(",", "")) > 0, proc.stdout
    assert re.search(r"none ([\d.]+)%, VAEAugment", proc.stdout), proc.stdout


def test_fit_and_sample_example(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "fit_and_sample.py"), "--epochs", "2",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    from PIL import Image

    with Image.open(tmp_path / "digits-preview.png") as im:
        assert im.size[0] > 16 * 8 and im.size[1] > 10 * 8  # 16 columns, one row per class


def test_cluster_scripts_split_the_work_and_make_the_single_process_set(tmp_path: Path) -> None:
    """The Slurm array script and the Kubernetes Indexed Job command, run as their schedulers would
    (one process per index, any order), make the same bytes as one process."""
    import os

    import numpy as np
    import yaml

    import vaeaug

    d = vaeaug.load_builtin("digits")
    x = (d.x[:300, 0].numpy() * 255).round().astype(np.uint8)
    np.savez(tmp_path / "train.npz", x=x, y=d.y[:300].numpy())
    model = vaeaug.fit(x, d.y[:300].numpy(), epochs=1, conditional=True, progress=False)
    vaeaug.export_onnx(model, tmp_path / "model.onnx")
    ref = tmp_path / "ref"
    vaeaug.pregenerate(tmp_path / "train.npz", tmp_path / "model.onnx", ref, variants_per_sample=2, shard_size=200,
                       progress=False)
    files = lambda out: {p.name: p.read_bytes() for p in sorted(out.iterdir())}  # noqa: E731
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MODEL": str(tmp_path / "model.onnx"), "DATA": str(tmp_path / "train.npz"), "OUT": str(tmp_path / "slurm"),
           "VARIANTS": "2", "SHARD_SIZE": "200", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_CPUS_PER_TASK": "1"}
    for task in (2, 0, 1):
        p = subprocess.run(["bash", str(ROOT / "examples" / "cluster" / "slurm_generate.sh")], capture_output=True,
                           text=True, timeout=300, env={**env, "SLURM_ARRAY_TASK_ID": str(task)})
        assert p.returncode == 0, p.stderr
    assert files(tmp_path / "slurm") == files(ref)
    job = yaml.safe_load((ROOT / "examples" / "cluster" / "k8s_generate_job.yaml").read_text())
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == 8
    command = spec["template"]["spec"]["containers"][0]["command"]
    script = command[2].replace("/data/generated", str(tmp_path / "k8s")).replace("/data/", f"{tmp_path}/")
    for index in (7, 0):  # the set is one shard (900 samples < 8192): index 0 writes it, the others have none
        p = subprocess.run([command[0], command[1], script], capture_output=True, text=True, timeout=300,
                           env={**env, "JOB_COMPLETION_INDEX": str(index)})
        assert p.returncode == 0, p.stderr
    ok = subprocess.run([sys.executable, "-m", "vaeaug", "verify", str(tmp_path / "k8s")], capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout
