"""The training loop on a few synthetic images: it learns, it is deterministic, and a run
interrupted after an epoch resumes to the same weights as an uninterrupted one."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from webfg.config import ModelConfig
from webfg.infer import infer_splits
from webfg.io import InputError, load_predictions
from webfg.train import load_checkpoint, load_model, train

CFG = dict(
    arch="vit_tiny_r_s16_p8_224",
    arch_kwargs={"img_size": 16, "patch_size": 2, "depth": 1, "embed_dim": 32, "num_heads": 2},
    img_size=16,
    epochs=3,
    batch_size=16,
    base_lr=0.1,
    warmup_epochs=0,
    hflip=0.0,
    crop_scale=[0.8, 1.0],
    test_crop_pct=1.0,
    mixup_alpha=0.0,
    cutmix_alpha=0.0,
    randaugment="rand-m9-mstd0.5-inc1",
    mean=[0.5] * 3,
    std=[0.5] * 3,
    soup_last=2,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two classes that differ by where the bright band is: learnable in a few steps."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    lines = {"train": [], "val": []}
    for c in range(2):
        (root / "train" / f"{c:04d}").mkdir(parents=True)
        for i in range(40):
            a = (rng.random((16, 16)) * 60).astype(np.uint8)
            a[c * 8 : (c + 1) * 8] += 150
            rel = f"train/{c:04d}/im {i}.png"
            Image.fromarray(a).save(root / rel)
            lines["val" if i % 4 == 0 else "train"].append(f"{rel} {c}")
    for split, ls in lines.items():
        (root / f"{split}.txt").write_text("\n".join(ls) + "\n", encoding="utf-8")
    return root


def run(data, out, head="linear", log=lambda m: None, **over):
    if head == "arcface":  # the margin head needs more steps on this tiny set
        over = {"epochs": 6, "batch_size": 4, "base_lr": 0.4, **over}
    cfg = ModelConfig.from_dict({**CFG, "head": head, **over})
    return train(cfg, data, data / "train.txt", data / "val.txt", 2, out, threads=2, log=log)


@pytest.mark.parametrize("head", ["linear", "arcface"])
def test_training_learns_and_is_deterministic(data, tmp_path, head):
    meta = run(data, tmp_path / "a.pt", head)
    run(data, tmp_path / "b.pt", head)
    assert meta["val_accuracy"] >= 0.9  # chance is 0.5
    a, b = (load_checkpoint(tmp_path / f"{n}.pt")["state_dict"] for n in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "a.state").exists()  # resumable state removed once final
    history = (tmp_path / "a.history.tsv").read_text().splitlines()
    epochs = ModelConfig.from_dict({**CFG, "head": head}).epochs if head == "linear" else 6
    assert (
        history[0] == "epoch\ttrain_loss\tval_accuracy\thead_lr\timages_per_s\tdata_wait" and len(history) == 1 + epochs
    )


def test_interrupted_run_resumes_to_identical_weights(data, tmp_path):
    run(data, tmp_path / "full.pt")

    def crash_in_epoch_3(msg):
        if msg.startswith("epoch 3/"):
            raise KeyboardInterrupt  # killed after epoch 3 trained, before its checkpoint

    with pytest.raises(KeyboardInterrupt):
        run(data, tmp_path / "resumed.pt", log=crash_in_epoch_3)
    assert (tmp_path / "resumed.state/last.pt").exists() and not (tmp_path / "resumed.pt").exists()
    messages = []
    run(data, tmp_path / "resumed.pt", log=messages.append)
    assert any(m.startswith("resumed from") and "at epoch 3 step 0/" in m for m in messages)
    a = load_checkpoint(tmp_path / "full.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "resumed.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_state_of_another_config_is_not_resumed(data, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(
            data,
            tmp_path / "m.pt",
            log=lambda m: (_ for _ in ()).throw(KeyboardInterrupt) if m.startswith("epoch 2/") else None,
        )
    messages = []
    run(data, tmp_path / "m.pt", log=messages.append, base_lr=0.05)
    assert any("belongs to another config" in m for m in messages)
    assert not any(m.startswith("resumed") for m in messages)


def test_inference_writes_probabilities_with_val_accuracy(data, tmp_path):
    run(data, tmp_path / "m.pt", "arcface", tta_flip=True)
    from webfg.io import read_split_list

    val = read_split_list(data / "val.txt")
    rows = [p for p, _ in read_split_list(data / "train.txt")][:10]
    acc = infer_splits(
        tmp_path / "m.pt",
        data,
        val,
        {"val": (None, tmp_path / "val"), "train": (rows, tmp_path / "train")},
        log=lambda m: None,
    )
    probs, got_rows, meta = load_predictions(tmp_path / "train")  # a split's rows lie under its folder
    assert probs.shape == (10, 2) and got_rows == rows and probs.dtype == np.float16
    np.testing.assert_allclose(probs.astype(np.float32).sum(1), 1.0, atol=2e-3)
    assert meta["val_accuracy"] == acc >= 0.9
    # the val prediction's argmax reproduces the measured accuracy
    vprobs, _, _ = load_predictions(tmp_path / "val")
    assert np.mean(vprobs.argmax(1) == np.array([y for _, y in val])) == pytest.approx(acc)


class NotATensor:
    """Any class: torch.save pickles it, torch.load(weights_only=True) must refuse it."""


def test_loading_a_pickled_object_checkpoint_is_refused(tmp_path):
    torch.save({"x": NotATensor()}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match=r"evil\.pt: not a loadable webfg checkpoint"):
        load_model(tmp_path / "evil.pt")


# ---- scale-out: accumulation, DDP (gloo, 2 processes), pre-emption, bad files

EXACT = dict(
    randaugment=None,
    color_jitter=0.0,
    random_erasing=0.0,
    crop_scale=[1.0, 1.0],
    drop_path=0.0,
    epochs=2,
    label_smoothing=0.0,
    mixup_alpha=0.0,
    cutmix_alpha=0.0,
    soup_last=1,
)


def write_yaml(path, cfg: dict):
    import yaml

    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def train_cmd(data, tmp_path, out, cfg: dict, launcher=()):
    config = write_yaml(tmp_path / f"{out}.yaml", {**CFG, **cfg})
    return [
        *launcher,
        "-m",
        "webfg.cli",
        "train",
        "--config",
        str(config),
        "--root",
        str(data),
        "--train-list",
        str(data / "train.txt"),
        "--val-list",
        str(data / "val.txt"),
        "--num-classes",
        "2",
        "--out",
        str(tmp_path / f"{out}.pt"),
        "--threads",
        "2",
    ]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks_like_srun(cmd, port):
    """Two processes with the variables srun sets for a 2-task step (no Slurm needed)."""
    import os
    import subprocess
    import sys

    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "SLURM_JOB_ID": "4242",
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank),
            "SLURM_STEP_NUM_TASKS": "2",
            "SLURM_STEP_TASKS_PER_NODE": "2",
            "SLURM_STEP_NODELIST": "localhost",
            "MASTER_PORT": str(port),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, *cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    return outs[0]


def test_accumulation_and_two_ranks_match_one_big_batch(data, tmp_path):
    """16 images per update three ways: one batch, 2 accumulated micro-batches, 2 DDP ranks.

    Without random augmentation the three see the same images per update, so the weights
    agree to rounding; torchrun and srun-style launches give bit-identical weights."""
    import subprocess
    import sys

    base = {**EXACT, "head": "linear", "batch_size": 16}
    run(data, tmp_path / "big.pt", **base)
    run(data, tmp_path / "accum.pt", **{**base, "batch_size": 8, "grad_accum": 2})
    two = {**base, "batch_size": 8, "global_batch_size": 16}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    out = subprocess.run(train_cmd(data, tmp_path, "ddp", two, torchrun), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 process(es) on cpu (torchrun), batch 8 x 2 x accum 1 = 16" in out.stdout
    log = run_two_ranks_like_srun(train_cmd(data, tmp_path, "srun", two), free_port())
    assert "2 process(es) on cpu (srun)" in log

    run(data, tmp_path / "small.pt", **{**base, "batch_size": 8})  # control: other images per update
    big, accum, ddp, srun, small = (
        load_checkpoint(tmp_path / f"{n}.pt") for n in ("big", "accum", "ddp", "srun", "small")
    )
    assert json.loads(ddp["meta"])["world_size"] == 2 and json.loads(ddp["meta"])["effective_batch"] == 16
    assert json.loads(big["meta"])["val_accuracy"] >= 0.9

    def max_diff(other):
        return max(
            (other["state_dict"][k] - v).abs().max().item()
            for k, v in big["state_dict"].items()
            if v.is_floating_point()
        )

    # rounding only (AdamW amplifies it a little in near-zero gradients); other batches differ by far more
    assert max_diff(accum) < 1e-4 and max_diff(ddp) < 1e-4 and max_diff(small) > 1e-2, (
        max_diff(accum),
        max_diff(ddp),
        max_diff(small),
    )
    assert all(torch.equal(ddp["state_dict"][k], srun["state_dict"][k]) for k in ddp["state_dict"])


KILL_SEED_ENV = "WEBFG_KILL_SEED"  # set it to replay a failure's kill points


def kill_and_resume(full_cmd, cmd, signals, state, epochs):
    """Run ``full_cmd`` uninterrupted, then start ``cmd`` again and again, sending each signal
    after a random number of the run's checkpoints (one per update: ``checkpoint_every: 1``)
    have been written, check each exit status, and finish the run. Counting updates, not
    seconds, keeps every stop inside training on a machine of any speed: together the stops
    take at most half of the run's updates. The kill points' seed is printed (and taken from
    $WEBFG_KILL_SEED when set), so a failure can be replayed."""
    import os
    import random
    import re
    import subprocess
    import threading
    import time

    full = subprocess.run(full_cmd, capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stdout[-2000:] + full.stderr[-2000:]
    seed = int(os.environ.get(KILL_SEED_ENV) or random.SystemRandom().randrange(2**31))
    print(f"kill points: {KILL_SEED_ENV}={seed}")
    rng = random.Random(seed)
    points = [f"{KILL_SEED_ENV}={seed}"]

    def inode():
        try:
            return os.stat(state).st_ino  # each checkpoint is a new file renamed over last.pt
        except FileNotFoundError:
            return None

    for sig, code in signals:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        while "params" not in (line := proc.stdout.readline()):  # signal handlers are installed
            assert line, "trainer exited before starting"
            lines.append(line)
        total = epochs * int(re.search(r"(\d+) updates/epoch", line).group(1))
        reader = threading.Thread(target=lambda p=proc, out=lines: out.extend(p.stdout), daemon=True)
        reader.start()  # keep the pipe drained while waiting
        updates = rng.randint(1, max(1, total // (2 * len(signals))))
        seen, last = 0, inode()
        while seen < updates and proc.poll() is None:
            if (now := inode()) != last:
                seen, last = seen + 1, now
            time.sleep(0.001)
        proc.send_signal(sig)
        proc.wait(timeout=120)
        reader.join(timeout=30)
        rest = "".join(lines)
        points.append((sig.name, f"after {updates} of {total} updates"))
        assert proc.returncode == code, (points, rest[-2000:])
        if code > 0:
            assert f"{sig.name}: saved" in rest, (points, rest[-2000:])
        assert state.exists(), (points, "no resumable state left after this stop", rest[-2000:])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "resumed from" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    return points


STOP_SIGNALS = (("SIGTERM", 143), ("SIGUSR1", 75), ("SIGINT", 130), ("SIGKILL", -9))


def test_killed_at_random_points_resumes_to_identical_weights(data, tmp_path):
    """SIGTERM, SIGUSR1, SIGINT (Ctrl-C) and SIGKILL at random moments, then a clean finish:
    same weights as one uninterrupted run (checkpoint every update; all randomness derives
    from the position). The first three save before exiting."""
    import signal
    import sys

    cfg = {
        "head": "linear",
        "epochs": 3,
        "batch_size": 4,
        "checkpoint_every": 1,
        "mixup_alpha": 0.0,
        "cutmix_alpha": 0.0,
    }
    cmd = [sys.executable, *train_cmd(data, tmp_path, "killed", cfg)]
    points = kill_and_resume(
        [sys.executable, *train_cmd(data, tmp_path, "full", cfg)],
        cmd,
        [(getattr(signal, n), c) for n, c in STOP_SIGNALS],
        tmp_path / "killed.state" / "last.pt",
        epochs=cfg["epochs"],
    )
    a = load_checkpoint(tmp_path / "full.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "killed.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a), points


def test_weights_do_not_depend_on_the_number_of_loader_workers(data, tmp_path):
    """Augmentation is a function of (sample, seed): 0 and 2 loader processes, same weights."""
    cfg = {"head": "arcface", "epochs": 2, "hflip": 0.5}
    messages = []
    run(data, tmp_path / "w0.pt", num_workers=0, **cfg)
    run(data, tmp_path / "w2.pt", num_workers=2, log=messages.append, **cfg)
    assert any("loader workers 2" in m for m in messages)
    a = load_checkpoint(tmp_path / "w0.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "w2.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_loader_workers_follow_the_job_unless_set():
    from webfg.engine import loader_workers

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert loader_workers(None, 8, gpu) == 7 and loader_workers(None, 1, gpu) == 1  # one CPU drives the GPU
    assert loader_workers(None, 8, cpu) == 0  # the CPU demo: the model needs the cores
    assert loader_workers(3, 8, gpu) == 3 and loader_workers(0, 8, gpu) == 0  # the config wins


def test_bad_image_met_in_training_is_skipped(data, tmp_path, capfd):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(data, root)
    bad = root / "train/0000/im 1.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated after clean_split would have run
    meta = run(root, tmp_path / "m.pt", epochs=2)
    assert meta["val_accuracy"] >= 0.9
    assert "skipping unreadable training image" in capfd.readouterr().err


def test_bf16_autocast_learns(data, tmp_path):
    meta = run(data, tmp_path / "m.pt", precision="bf16")
    assert meta["val_accuracy"] >= 0.9


def test_fp16_with_the_grad_scaler_learns_and_eql_sees_unscaled_gradients(data, tmp_path, monkeypatch):
    """fp16 runs the GradScaler (loss x 2^16 at the start); SoftmaxEQL's statistics stay
    those of the unscaled loss: of the order of the fp32 run's, not 65,536 times larger."""
    from webfg.heads import SoftmaxEQL

    seen = {}
    collect = SoftmaxEQL._collect

    def spy(self, grad, one_hot):
        collect(self, grad, one_hot)
        seen["pos"] = self.pos_grad.sum().item()
        seen.setdefault("scales", set()).add(None if self.loss_scale is None else float(self.loss_scale))

    monkeypatch.setattr(SoftmaxEQL, "_collect", spy)
    run(data, tmp_path / "fp32.pt", "arcface", epochs=2)
    fp32 = seen.pop("pos")
    assert seen.pop("scales") == {None}
    meta = run(data, tmp_path / "fp16.pt", "arcface", precision="fp16")
    assert meta["val_accuracy"] >= 0.9 and 2.0**16 in seen["scales"]
    assert 0 < seen["pos"] < 10 * fp32 * 3, (seen["pos"], fp32)  # 3x the epochs; scaled it would be ~65,536x


def test_bad_scale_out_settings_fail_before_training(data, tmp_path):
    import os
    import subprocess
    import sys

    with pytest.raises(ValueError, match="global_batch_size: 20 is not a multiple of batch_size 16"):
        ModelConfig.from_dict({**CFG, "global_batch_size": 20})
    with pytest.raises(InputError, match=r"pretrained_file .*nowhere\.pth: no such file"):
        run(data, tmp_path / "m.pt", pretrained_file=str(tmp_path / "nowhere.pth"))
    # two processes whose global batch 48 is not a multiple of 16 x 2
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "no-such-host.invalid", "MASTER_PORT": "1"}
    out = subprocess.run(
        [sys.executable, *train_cmd(data, tmp_path, "x", {})], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and "master address 'no-such-host.invalid' does not resolve" in out.stderr
    out = subprocess.run(
        [sys.executable, *train_cmd(data, tmp_path, "y", {"global_batch_size": 48})],
        env={**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        out.returncode == 2 and "global_batch_size: 48 is not a multiple of batch_size 16 x world size 2" in out.stderr
    )


def test_seed_rngs_gives_the_streams_of_the_global_seeders():
    """The fast seeding (CPU generator only) must keep every random stream of the demo."""
    import random

    from webfg.data import seed_rngs

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    expected = draws()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    assert draws() != expected
    seed_rngs(7)
    assert draws() == expected


def test_gpu_smoke_benchmark_skips_in_one_line_without_a_gpu(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: run `make gpu-smoke` instead")
    script = Path(__file__).resolve().parents[1] / "bench/gpu_smoke.py"
    out = subprocess.run(
        [sys.executable, str(script), "--results", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.startswith("gpu_smoke: skipped: no CUDA GPU") and out.stdout.count("\n") == 1
    assert not list(tmp_path.iterdir())  # nothing written
