"""MAE pre-training on a few synthetic images: masking, learning, the encoder file that
fine-tuning starts from, and resume after an interrupted epoch. Tiny dims: ~10 s on 2 cores."""

import numpy as np
import pytest
import torch
from PIL import Image

from webfg.cli import main
from webfg.config import MAEConfig, ModelConfig
from webfg.io import InputError
from webfg.mae import MaskedAutoencoder, load_mae_config, pretrain
from webfg.model import Classifier
from webfg.train import load_checkpoint

ARCH = "vit_tiny_r_s16_p8_224"  # the demo's hybrid ViT, shrunk: a 4 x 4 grid of 4-px patches
ARCH_KWARGS = {"img_size": 16, "patch_size": 1, "depth": 1, "embed_dim": 32, "num_heads": 2}
CFG = dict(
    arch=ARCH,
    arch_kwargs=ARCH_KWARGS,
    img_size=16,
    epochs=3,
    batch_size=4,
    base_lr=1.0,
    warmup_epochs=0,
    decoder_dim=16,
    decoder_depth=1,
    decoder_heads=2,
    hflip=0.0,
    crop_scale=[0.8, 1.0],
    mean=[0.5] * 3,
    std=[0.5] * 3,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Horizontal or vertical ramps plus noise: every patch, normalised, shows the same
    ramp, so the visible patches tell the masked ones. A labelled list and an unlabelled
    one, as train + testa."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    labelled, unlabelled = [], []
    yy, xx = np.mgrid[:16, :16]
    for i in range(32):
        vertical = i % 2
        ramp = (xx if vertical else yy) * 14 + rng.normal(0, 8, (16, 16))
        a = np.clip(20 + ramp, 0, 255).astype(np.uint8)
        rel = f"train/{vertical:04d}/{i}.png" if i < 16 else f"testa/{i}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(root / rel)
        (labelled.append(f"{rel} {vertical}") if i < 16 else unlabelled.append(rel))
    (root / "train.txt").write_text("\n".join(labelled) + "\n", encoding="utf-8")
    (root / "testa.txt").write_text("\n".join(unlabelled) + "\n", encoding="utf-8")
    return root


def run(data, out, log=lambda m: None, **over):
    cfg = MAEConfig.from_dict({**CFG, **over})
    return pretrain(cfg, data, data / "train.txt", [data / "testa.txt"], out, threads=2, log=log)


def test_masking_keeps_exactly_the_visible_tokens_per_sample():
    torch.manual_seed(0)
    mae = MaskedAutoencoder(MAEConfig.from_dict({**CFG, "mask_ratio": 0.75}))
    assert mae.grid == (4, 4) and mae.patch == (4, 4) and mae.num_prefix == 1
    keep = mae.random_keep(6, 0.75)
    assert keep.shape == (6, 4)  # int(16 * 0.25)
    assert all(len(set(row.tolist())) == 4 for row in keep)  # no patch twice
    assert len({tuple(sorted(row.tolist())) for row in keep}) > 1  # drawn per sample
    imgs = torch.randn(6, 3, 16, 16)
    latent = mae.encode(imgs, keep)
    assert latent.shape == (6, 1 + 4, 32)  # class token + visible tokens only
    loss, pred, mask = mae(imgs, keep)
    assert pred.shape == (6, 16, 4 * 4 * 3)
    assert mask.sum(1).tolist() == [12.0] * 6 and mask.gather(1, keep).sum() == 0
    # the loss is the masked patches' MSE against per-patch normalised pixels
    target = mae.patchify(imgs)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(-1)
    torch.testing.assert_close(loss, per_patch[mask.bool()].mean())
    # masked pixels never reach the encoder, even through a convolutional stem
    changed = imgs.clone()
    pixel_mask = mask.view(6, 1, 4, 4).repeat_interleave(4, 2).repeat_interleave(4, 3).bool()
    changed[pixel_mask.expand_as(changed)] = 5.0
    torch.testing.assert_close(mae.encode(changed, keep), latent)


def test_config_is_strict():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['mask'\]"):
        MAEConfig.from_dict({**CFG, "mask": 0.5})
    with pytest.raises(ValueError, match="mask_ratio: 1.0 must lie strictly between 0 and 1"):
        MAEConfig.from_dict({**CFG, "mask_ratio": 1})
    with pytest.raises(ValueError, match="needs a timm VisionTransformer"):
        MaskedAutoencoder(MAEConfig.from_dict({**CFG, "arch": "resnet18", "arch_kwargs": {}}))


def test_bad_config_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "m.yaml").write_text("arch: vit_tiny_patch16_224\ndecoder_depth: two\n")
    with pytest.raises(InputError, match=r"m.yaml.decoder_depth: expected int, got 'two'"):
        load_mae_config(tmp_path / "m.yaml")
    with pytest.raises(SystemExit) as e:
        main(
            [
                "pretrain-mae",
                "--config",
                str(tmp_path / "m.yaml"),
                "--root",
                str(tmp_path),
                "--train-list",
                str(tmp_path / "t.txt"),
                "--out",
                str(tmp_path / "e.pth"),
            ]
        )
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("webfg pretrain-mae: error: ") and "decoder_depth" in err


def test_pretraining_lowers_the_loss_and_the_encoder_starts_fine_tuning(data, tmp_path):
    history = []
    meta = run(data, tmp_path / "enc.pth", log=history.append, epochs=6)
    losses = [float(line.split("loss ")[1].split()[0]) for line in history if line.startswith("epoch ")]
    assert len(losses) == 6 and meta["num_images"] == 32
    # predicting each patch's own mean (zero after normalising) scores ~1.0
    assert losses[-1] < 0.8 and losses[-1] < 0.75 * losses[0], losses
    assert not (tmp_path / "enc.state").exists()
    tsv = (tmp_path / "enc.history.tsv").read_text().splitlines()
    assert tsv[0] == "epoch\ttrain_loss\tlr\timages_per_s\tdata_wait" and len(tsv) == 7

    encoder = load_checkpoint(tmp_path / "enc.pth")
    assert all(isinstance(v, torch.Tensor) for v in encoder.values())
    model_cfg = ModelConfig.from_dict(
        {"arch": ARCH, "arch_kwargs": ARCH_KWARGS, "img_size": 16, "pretrained_file": str(tmp_path / "enc.pth")}
    )
    # in timm's key layout: only the classifier head is missing, nothing is left over
    scratch = Classifier(ModelConfig.from_dict({**model_cfg.to_dict(), "pretrained_file": None}), 4, [1] * 4)
    result = scratch.backbone.load_state_dict(encoder, strict=False)
    assert sorted(result.missing_keys) == ["head.bias", "head.weight"] and not result.unexpected_keys
    # and the fine-tuning model built from the file holds exactly the pre-trained weights
    for head in ["linear", "arcface"]:
        model = Classifier(ModelConfig.from_dict({**model_cfg.to_dict(), "head": head}), 4, [1] * 4)
        state = model.backbone.state_dict()
        assert all(torch.equal(state[k], v) for k, v in encoder.items())


def test_interrupted_pretraining_resumes_to_identical_weights(data, tmp_path):
    run(data, tmp_path / "full.pth")

    def crash_in_epoch_2(msg):
        if msg.startswith("epoch 2/"):
            raise KeyboardInterrupt  # killed after epoch 2 trained, before its checkpoint

    with pytest.raises(KeyboardInterrupt):
        run(data, tmp_path / "resumed.pth", log=crash_in_epoch_2)
    assert (tmp_path / "resumed.state/last.pt").exists() and not (tmp_path / "resumed.pth").exists()
    messages = []
    run(data, tmp_path / "resumed.pth", log=messages.append)
    assert any(m.startswith("resumed from") and "at epoch 2 step 0/" in m for m in messages)
    a, b = load_checkpoint(tmp_path / "full.pth"), load_checkpoint(tmp_path / "resumed.pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # another config does not resume from a stale state
    with pytest.raises(KeyboardInterrupt):
        run(data, tmp_path / "other.pth", log=crash_in_epoch_2)
    messages = []
    run(data, tmp_path / "other.pth", log=messages.append, mask_ratio=0.5)
    assert any(m.startswith("ignoring") for m in messages)


@pytest.mark.dag
def test_workflow_switch_orders_pretraining_before_the_vit(tmp_path):
    """config/demo-mae.yaml over config/demo.yaml: one pretrain_mae job, and it feeds the
    ViT's training in every round (Snakemake merges the overlay's nested keys)."""
    import re

    from runner import REPO, run_snakemake

    demo, mae = REPO / "config/demo.yaml", REPO / "config/demo-mae.yaml"
    dag = ["--dag", "dot", "results/a1/train/vit_linear.pt"]
    dot = run_snakemake(tmp_path, *dag, configs=[demo, mae]).stdout
    nodes = {m[1]: m[2].replace("\\n", " ") for m in re.finditer(r'^\s*(\d+)\[label = "([^"]*)"', dot, re.M)}
    edges = set(re.findall(r"^\s*(\d+) -> (\d+)", dot, re.M))
    pre = [n for n, label in nodes.items() if label.startswith("pretrain_mae")]
    assert len(pre) == 1 and "name: vit_mae" in nodes[pre[0]]
    # it feeds the ViT's training in r0 and a1, not the Swin's (which start from scratch)
    fed = sorted(nodes[b] for a, b in edges if a == pre[0])
    assert fed == ["train_model model: vit_linear"] * 2, fed
    assert sum(label == "train_model model: swin_arc" for label in nodes.values()) == 1
    clean = next(n for n, label in nodes.items() if label.startswith("clean_split"))
    assert (clean, pre[0]) in edges  # pre-trains on the cleaned lists
    dot = run_snakemake(tmp_path, *dag, configs=[demo]).stdout
    assert "pretrain_mae" not in dot and "train_model" in dot  # off by default
    # a model naming a pre-training that no entry makes fails at parse time, naming the key
    (tmp_path / "bad.yaml").write_text("models: {vit_linear: {pretrained_file: results/pretrain/vit_ma.pth}}\n")
    proc = run_snakemake(tmp_path, *dag, configs=[demo, mae, tmp_path / "bad.yaml"], check=False)
    assert proc.returncode != 0
    assert "models.vit_linear.pretrained_file: 'results/pretrain/vit_ma.pth' is made by no pretrain entry" in (
        proc.stdout + proc.stderr
    )


# ---- the engine's scale-out and pre-emption, as for fine-tuning (tests/test_train.py)


def mae_cmd(data, tmp_path, out, over: dict, launcher=()):
    import sys

    import yaml

    config = tmp_path / f"{out}.yaml"
    config.write_text(yaml.safe_dump({**CFG, **over}), encoding="utf-8")
    return [
        *(launcher or [sys.executable]),
        "-m",
        "webfg.cli",
        "pretrain-mae",
        "--config",
        str(config),
        "--root",
        str(data),
        "--train-list",
        str(data / "train.txt"),
        "--unlabelled",
        str(data / "testa.txt"),
        "--out",
        str(tmp_path / f"{out}.pth"),
        "--threads",
        "2",
    ]


def test_two_ranks_and_accumulation_match_one_process_with_the_global_batch(data, tmp_path):
    """8 images per update three ways: one process, 2 accumulated micro-batches, 2 DDP ranks
    (gloo). Crops and masks derive from each image's place in the epoch, so all three see
    the same pixels and masks per update: equal weights to rounding."""
    import subprocess
    import sys

    base = {"batch_size": 8, "epochs": 2}
    run(data, tmp_path / "big.pth", **base)
    run(data, tmp_path / "accum.pth", **{**base, "batch_size": 4, "grad_accum": 2})
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    out = subprocess.run(
        mae_cmd(data, tmp_path, "ddp", {**base, "batch_size": 4, "global_batch_size": 8}, torchrun),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 process(es) on cpu (torchrun), batch 4 x 2 x accum 1 = 8" in out.stdout + out.stderr
    run(data, tmp_path / "small.pth", **{**base, "batch_size": 4})  # control: other images per update
    big, accum, ddp, small = (load_checkpoint(tmp_path / f"{n}.pth") for n in ("big", "accum", "ddp", "small"))

    def max_diff(other):
        return max((other[k] - v).abs().max().item() for k, v in big.items() if v.is_floating_point())

    assert max_diff(accum) < 1e-4 and max_diff(ddp) < 1e-4 and max_diff(small) > 1e-2, (
        max_diff(accum),
        max_diff(ddp),
        max_diff(small),
    )


def test_killed_pretraining_resumes_to_identical_weights(data, tmp_path):
    """A saving stop (SIGTERM) and a kill (SIGKILL) mid-epoch, then a clean finish: the encoder
    of one uninterrupted run, bit for bit (a checkpoint every update). Each stop signal's own
    handling is the engine's, tested one by one in tests/test_train.py; here the MAE run
    (encoder, decoder, masks drawn per position) goes through both kinds of stop."""
    import signal

    from test_train import kill_and_resume

    over = {"epochs": 4, "checkpoint_every": 1}
    signals = [(signal.SIGTERM, 143), (signal.SIGKILL, -9)]
    points = kill_and_resume(
        mae_cmd(data, tmp_path, "full", over),
        mae_cmd(data, tmp_path, "killed", over),
        signals,
        tmp_path / "killed.state" / "last.pt",
        epochs=over["epochs"],
    )
    a, b = load_checkpoint(tmp_path / "full.pth"), load_checkpoint(tmp_path / "killed.pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), points


def test_pretraining_does_not_depend_on_loader_workers_and_runs_under_bf16(data, tmp_path):
    run(data, tmp_path / "w0.pth", epochs=1, num_workers=0)
    run(data, tmp_path / "w2.pth", epochs=1, num_workers=2)
    a, b = load_checkpoint(tmp_path / "w0.pth"), load_checkpoint(tmp_path / "w2.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = []
    run(data, tmp_path / "bf16.pth", log=history.append, epochs=2, precision="bf16")
    losses = [float(line.split("loss ")[1].split()[0]) for line in history if line.startswith("epoch ")]
    assert len(losses) == 2 and all(np.isfinite(losses)) and losses[0] < 2.0
