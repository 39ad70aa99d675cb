"""Checkpoint conversion: the original's MMCls/MMSelfSup layouts (real MMPretrain tensors in
tests/fixtures/mmpretrain, and layouts rebuilt from random timm models) load into webfg's
timm models with identical tensors and outputs; resampling and key errors behave."""

import re
from pathlib import Path

import pytest
import torch
from timm.layers import resample_abs_pos_embed

from webfg.cli import main as cli_main
from webfg.config import ModelConfig
from webfg.convert import (
    convert_checkpoint,
    detect_layout,
    load_weights,
    read_state_dict,
    timm_to_unfold_order,
    unfold_to_timm_order,
)
from webfg.io import InputError
from webfg.model import Classifier
from webfg.train import load_model

FIX = Path(__file__).parent / "fixtures" / "mmpretrain"

# the fixtures' networks as timm models (see make_fixtures.py)
SWIN_FIX = dict(
    arch="swinv2_tiny_window8_256",
    head="arcface",
    img_size=64,
    arch_kwargs=dict(
        img_size=64,
        patch_size=2,
        embed_dim=8,
        depths=[2, 2, 1, 1],
        num_heads=[1, 1, 2, 4],
        window_size=[8, 8, 8, 4],
        pretrained_window_sizes=[4, 4, 4, 2],
    ),
)
VIT_KW = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
VIT_FIX = dict(
    arch="vit_base_patch16_224",
    head="linear",
    img_size=32,
    logit_adjust_tau=0.0,
    arch_kwargs=dict(VIT_KW, global_pool="avg", fc_norm=True),
)
# smaller Swin-V2 for layouts rebuilt from timm: the original's 192 px window 12 -> 384 px
# windows [24,24,24,12] from pretrained [12,12,12,6], scaled down by 6
SWIN_SRC = dict(
    arch="swinv2_tiny_window8_256",
    head="arcface",
    img_size=64,
    arch_kwargs=dict(img_size=64, embed_dim=24, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], window_size=4),
)
SWIN_DST = dict(
    SWIN_SRC,
    img_size=128,
    arch_kwargs=dict(
        SWIN_SRC["arch_kwargs"], img_size=128, window_size=[8, 8, 8, 4], pretrained_window_sizes=[4, 4, 4, 2]
    ),
)


def build(d, num_classes=5, counts=None, **over):
    cfg = ModelConfig.from_dict({**d, **over})
    torch.manual_seed(0)
    return Classifier(cfg, num_classes, counts if counts is not None else torch.arange(1, num_classes + 1)).eval()


def randomise(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def quiet(*a):
    pass


# ------------------------------------------------------------- the original's layouts, inverted


def timm_to_mmcls_swinv2(model: Classifier) -> dict:
    """A webfg Swin-V2 + ArcFace in MMCls 1.x key layout (what the original's files hold)."""
    last = len(model.backbone.layers) - 1
    rules = [
        (r"^patch_embed\.proj\.", "patch_embed.projection."),
        (r"^layers\.(\d+)\.downsample\.", r"stages.\1.downsample."),
        (r"^layers\.(\d+)\.blocks\.(\d+)\.attn\.", r"stages.\1.blocks.\2.attn.w_msa."),
        (r"^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.", r"stages.\1.blocks.\2.ffn.layers.0.0."),
        (r"^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.", r"stages.\1.blocks.\2.ffn.layers.1."),
        (r"^layers\.(\d+)\.blocks\.(\d+)\.norm", r"stages.\1.blocks.\2.norm"),
        (r"^norm\.", f"norm{last}."),
    ]
    out = {}
    for k, v in model.backbone.state_dict().items():
        for pattern, repl in rules:
            k = re.sub(pattern, repl, k)
        if k.endswith("downsample.reduction.weight"):
            v = timm_to_unfold_order(v)
        out[f"backbone.{k}"] = v.clone()
    out["head.norm_linear.weight"] = model.head.weight.detach().clone()
    out["head.margins"] = model.head.margins.clone()
    return out


def timm_to_mmcls_vit(model: Classifier) -> dict:
    """A webfg ViT (avg token + fc_norm, linear head) in MMCls VisionTransformer layout."""
    rules = [
        (r"^patch_embed\.proj\.", "patch_embed.projection."),
        (r"^blocks\.(\d+)\.norm1\.", r"layers.\1.ln1."),
        (r"^blocks\.(\d+)\.norm2\.", r"layers.\1.ln2."),
        (r"^blocks\.(\d+)\.attn\.", r"layers.\1.attn."),
        (r"^blocks\.(\d+)\.mlp\.fc1\.", r"layers.\1.ffn.layers.0.0."),
        (r"^blocks\.(\d+)\.mlp\.fc2\.", r"layers.\1.ffn.layers.1."),
        (r"^fc_norm\.", "ln2."),
    ]
    out = {}
    for k, v in model.backbone.state_dict().items():
        if k.startswith("head."):
            out[k.replace("head.", "head.fc.")] = v.clone()
            continue
        for pattern, repl in rules:
            k = re.sub(pattern, repl, k)
        out[f"backbone.{k}"] = v.clone()
    return out


def test_unfold_order_is_mmcls_patch_merging():
    """The reorder maps MMCls's nn.Unfold gather onto timm's neighbour concatenation."""
    C, x = 3, torch.randn(1, 3, 4, 4)
    unfold = torch.nn.Unfold(2, stride=2)(x).transpose(1, 2)  # MMCls: (1, 4 patches, 4C)
    xs = x.permute(0, 2, 3, 1)
    timm_cat = xs.reshape(1, 2, 2, 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3).reshape(1, 4, 4 * C)
    w = torch.randn(5, 4 * C)
    assert torch.allclose(unfold @ w.T, timm_cat @ unfold_to_timm_order(w).T, atol=1e-6)
    assert torch.equal(timm_to_unfold_order(unfold_to_timm_order(w)), w)


@pytest.mark.parametrize("family", ["swin", "vit"])
def test_round_trip_from_mmcls_layout_is_exact(tmp_path, family):
    """Random timm model -> MMCls layout file -> webfg convert: every tensor and output identical."""
    if family == "swin":
        src = randomise(build(SWIN_SRC))
        sd, layout = timm_to_mmcls_swinv2(src), "mmcls-swinv2"
        cfg = SWIN_SRC
    else:
        src = randomise(build(VIT_FIX, num_classes=7))
        sd, layout = timm_to_mmcls_vit(src), "mmcls-vit"
        cfg = VIT_FIX
    torch.save({"meta": {"epoch": 20}, "state_dict": sd}, tmp_path / "orig.pth")
    assert detect_layout(read_state_dict(tmp_path / "orig.pth")) == layout
    model = ModelConfig.from_dict(cfg)
    convert_checkpoint(tmp_path / "orig.pth", model, tmp_path / "model.pt", log=quiet)
    got = load_model(tmp_path / "model.pt")
    want = src.state_dict()
    want.pop("class_counts")  # no counts in the original's files: all ones
    for k, v in want.items():
        assert torch.equal(got.state_dict()[k], v), k
    assert torch.equal(got.class_counts, torch.ones(got.class_counts.numel()))
    x = torch.randn(2, 3, cfg["img_size"], cfg["img_size"])
    assert torch.equal(got.predict_logits(x), src.predict_logits(x) if family == "swin" else src(x))


def test_mmpretrain_swinv2_arcface_gives_the_source_logits(tmp_path):
    """Real MMPretrain SwinTransformerV2 (windows 8,8,8,4 from pretrained 4,4,4,2) + the
    original's sub-centre ArcFace head: converted, our model gives the same s·cos logits."""
    ref = torch.load(FIX / "swinv2_arcface.ref.pt", weights_only=True)
    convert_checkpoint(FIX / "swinv2_arcface.pth", ModelConfig.from_dict(SWIN_FIX), tmp_path / "m.pt", log=quiet)
    model = load_model(tmp_path / "m.pt")
    assert torch.allclose(model.predict_logits(ref["x"]), ref["out"], atol=1e-5)
    source = read_state_dict(FIX / "swinv2_arcface.pth")
    assert torch.equal(model.head.margins, source["head.margins"])
    assert torch.equal(model.head.weight, source["head.norm_linear.weight"])


def test_original_arcface_checkpoint_starts_the_next_round():
    """A fine-tuned ArcFace file as pretrained_file: its sub-centres load when the class count
    fits, the margins follow the new training list; another class count starts the head fresh."""
    from webfg.heads import adaptive_margins

    source = read_state_dict(FIX / "swinv2_arcface.pth")
    counts = torch.tensor([50.0, 20, 5, 5, 1])
    model = build(SWIN_FIX, counts=counts, pretrained_file=str(FIX / "swinv2_arcface.pth"))
    assert torch.equal(model.head.weight, source["head.norm_linear.weight"])
    assert torch.equal(model.head.margins, adaptive_margins(counts))
    notes = []
    other = Classifier(ModelConfig.from_dict(SWIN_FIX), 4, torch.ones(4), load_pretrained=False)
    load_weights(other, FIX / "swinv2_arcface.pth", log=notes.append)
    assert "arcface head (weight (15, 64), margins (5,)) does not fit" in "\n".join(notes)
    assert torch.equal(other.backbone.norm.weight, source["backbone.norm3.weight"])


def test_mmpretrain_swinv2_window_mismatch_is_named(tmp_path):
    """The saved coordinate tables reveal a model built without the original's pretrained windows."""
    cfg = dict(
        SWIN_FIX, arch_kwargs={k: v for k, v in SWIN_FIX["arch_kwargs"].items() if k != "pretrained_window_sizes"}
    )
    with pytest.raises(
        InputError,
        match=r"swinv2_arcface\.pth: .*window 8 \(pretrained window 4\), the model uses window 8 \(pretrained window 8\)",
    ):
        convert_checkpoint(FIX / "swinv2_arcface.pth", ModelConfig.from_dict(cfg), tmp_path / "m.pt", log=quiet)
    assert not (tmp_path / "m.pt").exists()


def test_mmpretrain_vit_linear_gives_the_source_logits(tmp_path):
    """Real MMPretrain VisionTransformer as the original fine-tuned it (avg token, ln2, no
    final norm) + LinearClsHead; with --train-list the logit adjustment uses its counts."""
    ref = torch.load(FIX / "vit_linear.ref.pt", weights_only=True)
    convert_checkpoint(FIX / "vit_linear.pth", ModelConfig.from_dict(VIT_FIX), tmp_path / "m.pt", log=quiet)
    assert torch.allclose(load_model(tmp_path / "m.pt").predict_logits(ref["x"]), ref["out"], atol=1e-5)

    labels = [0] * 5 + [1] * 3 + [2, 3, 4, 5, 6]
    (tmp_path / "train.txt").write_text("".join(f"train/{y:04d}/{i}.jpg {y}\n" for i, y in enumerate(labels)))
    cfg = ModelConfig.from_dict(dict(VIT_FIX, logit_adjust_tau=1.0))
    convert_checkpoint(FIX / "vit_linear.pth", cfg, tmp_path / "m2.pt", train_list=tmp_path / "train.txt", log=quiet)
    prior = torch.bincount(torch.tensor(labels)).float() / len(labels)
    assert torch.allclose(load_model(tmp_path / "m2.pt").predict_logits(ref["x"]), ref["out"] - prior.log(), atol=1e-5)


def test_mmselfsup_mae_encoder_starts_training(tmp_path):
    """MMPretrain/MMSelfSup MAE checkpoint (encoder + decoder neck) as pretrained_file: the
    encoder's tokens are reproduced exactly; in the recipe's model (avg pool + fc_norm, twice
    the grid) the decoder and final norm are left out, fc_norm starts fresh, pos_embed resampled."""
    ref = torch.load(FIX / "mae_vit.ref.pt", weights_only=True)
    same = build(
        dict(
            arch="vit_base_patch16_224",
            head="linear",
            img_size=32,
            arch_kwargs=VIT_KW,
            pretrained_file=str(FIX / "mae_vit.pth"),
        )
    )
    assert torch.allclose(same.backbone.forward_features(ref["x"]), ref["out"], atol=1e-5)

    notes = []
    recipe = dict(
        VIT_FIX,
        img_size=64,
        arch_kwargs=dict(VIT_FIX["arch_kwargs"], img_size=64),
        pretrained_file=str(FIX / "mae_vit.pth"),
    )
    cfg = ModelConfig.from_dict(recipe)
    model = Classifier(cfg, 5, torch.ones(5), load_pretrained=False)
    fresh_fc_norm = model.backbone.fc_norm.weight.clone()
    load_weights(model, cfg.pretrained_file, log=notes.append)
    source = read_state_dict(FIX / "mae_vit.pth")
    log = "\n".join(notes)
    assert "left out backbone.norm.weight" in log and "neck.decoder_embed.weight" in log
    assert "fc_norm.weight" in log and "position embedding resampled 4x4 -> 8x8" in log
    assert torch.equal(model.backbone.fc_norm.weight, fresh_fc_norm)
    assert torch.equal(model.backbone.blocks[1].mlp.fc2.weight, source["backbone.layers.1.ffn.layers.1.weight"])
    assert torch.equal(
        model.backbone.pos_embed, resample_abs_pos_embed(source["backbone.pos_embed"], [8, 8], num_prefix_tokens=1)
    )
    assert torch.isfinite(model.predict_logits(torch.randn(2, 3, 64, 64))).all()

    no_cls = build(dict(recipe, arch_kwargs=dict(recipe["arch_kwargs"], class_token=False)))  # config.yaml's ViT-L
    assert torch.equal(no_cls.backbone.pos_embed, model.backbone.pos_embed[:, 1:])
    torch.save({"state_dict": no_cls.state_dict()}, tmp_path / "no_cls.pt")  # and back: a class token is added
    back = build(dict(recipe, pretrained_file=str(tmp_path / "no_cls.pt")))
    assert torch.equal(back.backbone.pos_embed[:, 1:], no_cls.backbone.pos_embed)
    assert torch.equal(back.backbone.pos_embed[:, 0], torch.zeros(1, 32))


def test_swinv2_window_change_keeps_the_position_bias(tmp_path):
    """The 21k 192-px start (window 12) for the 384-px model (windows 24, pretrained 12), scaled
    down: the continuous position-bias MLP carries over, and because the new coordinates are
    normalised by the pretrained window, the bias at every offset the old window had is the same."""
    src = randomise(build(SWIN_SRC))
    sd = timm_to_mmcls_swinv2(src)
    sd.pop("head.norm_linear.weight"), sd.pop("head.margins")  # a backbone-only pre-training file
    torch.save({"state_dict": sd}, tmp_path / "in21k.pth")
    dst = build(SWIN_DST, pretrained_file=str(tmp_path / "in21k.pth"))
    for s_layer, d_layer in zip(src.backbone.layers, dst.backbone.layers):
        s_attn, d_attn = s_layer.blocks[0].attn, d_layer.blocks[0].attn
        assert torch.equal(s_attn.cpb_mlp[0].weight, d_attn.cpb_mlp[0].weight)
        ws, wd = s_attn.window_size[0], d_attn.window_size[0]
        assert wd == 2 * ws
        with torch.no_grad():
            s_bias = s_attn.cpb_mlp(s_attn.relative_coords_table)
            d_bias = d_attn.cpb_mlp(d_attn.relative_coords_table)[:, wd - ws : wd + ws - 1, wd - ws : wd + ws - 1]
        assert torch.allclose(s_bias, d_bias, atol=1e-6)
    out = dst(torch.randn(2, 3, 128, 128))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_timm_and_webfg_files_start_training(tmp_path):
    """timm state dicts (also facebook-MAE style with a decoder) and webfg checkpoints load as
    pretrained_file; a head of another class count starts fresh."""
    src = randomise(build(VIT_FIX, num_classes=7))
    mae = {
        **src.backbone.state_dict(),
        "mask_token": torch.zeros(1, 1, 16),
        "decoder_embed.weight": torch.zeros(16, 32),
    }
    torch.save({"model": mae}, tmp_path / "mae.pth")
    torch.save({"state_dict": src.state_dict(), "config": "{}", "num_classes": 7, "meta": "{}"}, tmp_path / "webfg.pt")
    for name, layout in [("mae.pth", "timm"), ("webfg.pt", "webfg")]:
        assert detect_layout(read_state_dict(tmp_path / name)) == layout
        same = build(VIT_FIX, num_classes=7, pretrained_file=str(tmp_path / name))
        assert torch.equal(same.backbone.head.weight, src.backbone.head.weight)
        other = build(VIT_FIX, num_classes=3, pretrained_file=str(tmp_path / name))
        assert torch.equal(other.backbone.blocks[0].attn.qkv.weight, src.backbone.blocks[0].attn.qkv.weight)
        assert other.backbone.head.weight.shape == (3, 32)


def test_mismatched_files_list_the_keys(tmp_path):
    vit = ModelConfig.from_dict(VIT_FIX)
    with pytest.raises(InputError) as e:  # a ViT file for a Swin model
        convert_checkpoint(
            FIX / "vit_linear.pth", ModelConfig.from_dict(dict(SWIN_FIX, head="linear")), tmp_path / "m.pt", log=quiet
        )
    msg = str(e.value)
    assert msg.startswith(f"{FIX / 'vit_linear.pth'}: does not match swinv2_tiny_window8_256")
    assert "missing: backbone.patch_embed.norm.weight" in msg and "unexpected: backbone.cls_token" in msg
    assert re.search(r"\.\.\. and \d+ more", msg)

    wide = ModelConfig.from_dict(dict(VIT_FIX, arch_kwargs=dict(VIT_FIX["arch_kwargs"], embed_dim=48)))
    with pytest.raises(InputError, match=r"of another shape: backbone\.cls_token \(1, 1, 32\) vs model \(1, 1, 48\)"):
        convert_checkpoint(FIX / "vit_linear.pth", wide, tmp_path / "m.pt", log=quiet)
    with pytest.raises(InputError, match="its head is arcface, the model config says head: linear"):
        convert_checkpoint(
            FIX / "swinv2_arcface.pth",
            ModelConfig.from_dict(dict(SWIN_FIX, head="linear")),
            tmp_path / "m.pt",
            log=quiet,
        )
    with pytest.raises(InputError, match="its head has 7 classes, --num-classes says 9"):
        convert_checkpoint(FIX / "vit_linear.pth", vit, tmp_path / "m.pt", num_classes=9, log=quiet)

    sd = read_state_dict(FIX / "vit_linear.pth")
    del sd["backbone.layers.1.ln2.bias"]
    torch.save(sd, tmp_path / "cut.pth")
    with pytest.raises(InputError, match=r"cut\.pth: .*1 missing: backbone\.blocks\.1\.norm2\.bias"):
        build(VIT_FIX, num_classes=7, pretrained_file=str(tmp_path / "cut.pth"))
    assert not (tmp_path / "m.pt").exists()


class NotATensor:
    pass


def test_unreadable_files_are_named(tmp_path):
    cases = {
        "missing.pth": None,
        "text.pth": b"not a checkpoint",
        "list.pth": [torch.zeros(1)],
        "no_tensors.pth": {"meta": {"epoch": 3}},
        "mixed.pth": {"a.weight": torch.zeros(1), "b": 3},
        "pickled.pth": {"state_dict": {"w": torch.zeros(1)}, "message_hub": NotATensor()},
    }
    for name, obj in cases.items():
        path = tmp_path / name
        if isinstance(obj, bytes):
            path.write_bytes(obj)
        elif obj is not None:
            torch.save(obj, path)
        with pytest.raises(InputError, match=re.escape(str(path))) as e:
            read_state_dict(path)
        if name == "pickled.pth":
            assert "pickled Python objects" in str(e.value)


def test_cli_convert_then_infer(tmp_path, capsys):
    """`webfg convert` from a pipeline config's model entry writes a file `webfg infer` runs."""
    import numpy as np
    import yaml
    from PIL import Image

    from webfg.io import load_predictions

    (tmp_path / "pipe.yaml").write_text(yaml.safe_dump({"models": {"swin": {**SWIN_FIX, "resources": {"gpus": 1}}}}))
    cli_main(
        [
            "convert",
            "--in",
            str(FIX / "swinv2_arcface.pth"),
            "--config",
            str(tmp_path / "pipe.yaml"),
            "--model",
            "swin",
            "--out",
            str(tmp_path / "swin.pt"),
        ]
    )
    assert "5 classes" in capsys.readouterr().out
    root = tmp_path / "data"
    (root / "testb").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(root / "testb" / f"{i}.jpg")
    (tmp_path / "val.txt").write_text("testb/0.jpg 1\n")
    (tmp_path / "testb.txt").write_text("".join(f"testb/{i}.jpg\n" for i in range(3)))
    cli_main(
        [
            "infer",
            "--model",
            str(tmp_path / "swin.pt"),
            "--root",
            str(root),
            "--val-list",
            str(tmp_path / "val.txt"),
            "--out-dir",
            str(tmp_path / "pred"),
            str(tmp_path / "testb.txt"),
        ]
    )
    probs, rows, _ = load_predictions(tmp_path / "pred" / "testb")
    assert probs.shape == (3, 5) and np.allclose(probs.astype(np.float32).sum(1), 1, atol=1e-2)

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli_main(
            [
                "convert",
                "--in",
                str(FIX / "swinv2_arcface.pth"),
                "--config",
                str(tmp_path / "pipe.yaml"),
                "--out",
                str(tmp_path / "x.pt"),
            ]
        )
    assert e.value.code == 2 and "a pipeline config; name the model with --model" in capsys.readouterr().err
