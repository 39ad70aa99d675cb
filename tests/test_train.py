"""The training loop on a few synthetic images: it learns, it is deterministic, and a run
interrupted after an epoch resumes to the same weights as an uninterrupted one."""

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
    img_size=16, epochs=3, batch_size=16, base_lr=0.1, warmup_epochs=0, hflip=0.0, crop_scale=[0.8, 1.0],
    test_crop_pct=1.0, mixup_alpha=0.0, cutmix_alpha=0.0, randaugment="rand-m9-mstd0.5-inc1",
    mean=[0.5] * 3, std=[0.5] * 3, soup_last=2,
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
            a[c * 8:(c + 1) * 8] += 150
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
    assert history[0].startswith("epoch\ttrain_loss\tval_accuracy") and len(history) == 1 + epochs


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
    assert any(m.startswith("resumed from") and m.endswith("after epoch 2") for m in messages)
    a = load_checkpoint(tmp_path / "full.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "resumed.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_state_of_another_config_is_not_resumed(data, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(data, tmp_path / "m.pt", log=lambda m: (_ for _ in ()).throw(KeyboardInterrupt) if m.startswith("epoch 2/") else None)
    messages = []
    run(data, tmp_path / "m.pt", log=messages.append, base_lr=0.05)
    assert any("belongs to another config" in m for m in messages)
    assert not any(m.startswith("resumed") for m in messages)


def test_inference_writes_probabilities_with_val_accuracy(data, tmp_path):
    run(data, tmp_path / "m.pt", "arcface", tta_flip=True)
    from webfg.io import read_split_list

    val = read_split_list(data / "val.txt")
    rows = [p for p, _ in read_split_list(data / "train.txt")][:10]
    acc = infer_splits(tmp_path / "m.pt", data, val, {"val": (None, tmp_path / "val"), "x": (rows, tmp_path / "x")},
                       log=lambda m: None)
    probs, got_rows, meta = load_predictions(tmp_path / "x")
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
