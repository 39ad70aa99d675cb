"""The original's checkpoints at full size, built by MMPretrain's own modules (random weights),
through webfg.convert with config/config.yaml's model entries: the logits of the converted
model against the source's, and the pretrained starts (21k 192-px Swin-V2 into the 384-px
model, the MAE ViT-L encoder into the 448-px fine-tuning model).

Needs MMPretrain importable (mmpretrain 1.2 runs on CPU with mmcv-lite); one image per model,
fp32. `python bench/convert_full_scale.py [--only swin|vit]` (several GB of memory, minutes on CPU).
`--shapes` checks only that every full-size checkpoint's keys and shapes fit (no
initialisation, no forward pass: seconds).
"""

import argparse
import math
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests" / "fixtures" / "mmpretrain"))

import make_fixtures  # noqa: E402  (MMPretrain's modules, randomised as for the test fixtures)

from webfg.convert import convert_checkpoint, model_config  # noqa: E402
from webfg.model import Classifier  # noqa: E402
from webfg.train import load_model  # noqa: E402

CONFIG = REPO / "config" / "config.yaml"
C = 5000


def randomise(module, seed):
    return make_fixtures.randomise(module, seed, scale=0.02, perturb=True)


def compare(name, src_path, model_name, x, want, tmp):
    t0 = time.perf_counter()
    convert_checkpoint(src_path, model_config(CONFIG, model_name), tmp / f"{name}.pt", log=lambda *a: None)
    t_convert = time.perf_counter() - t0
    with torch.no_grad():
        got = load_model(tmp / f"{name}.pt").predict_logits(x)
    diff = (got - want).abs().max().item()
    same_top = bool((got.argmax(1) == want.argmax(1)).all())
    print(
        f"{name}: converted in {t_convert:.1f}s; max |logit diff| {diff:.2e} (logits up to {want.abs().max():.1f}); "
        f"same argmax {same_top}"
    )
    return diff


def start(name, src_path, model_name, tmp):
    cfg = model_config(CONFIG, model_name, pretrained_file=str(src_path))
    notes = []
    t0 = time.perf_counter()
    import webfg.convert as conv

    model = Classifier(cfg, C, torch.ones(C), load_pretrained=False)
    conv.load_weights(model, src_path, log=notes.append)
    print(f"{name}: pretrained start in {time.perf_counter() - t0:.1f}s")
    for n in notes:
        print("   ", n.split(": ", 1)[1][:200])
    return model


def swin(tmp):
    from mmpretrain.models.backbones import SwinTransformerV2

    g = torch.Generator().manual_seed(0)
    # the fine-tuned Swin-V2-L at 384 (windows 24,24,24,12 from 12,12,12,6) + sub-centre ArcFace
    net = randomise(
        SwinTransformerV2(
            arch="large", img_size=384, window_size=[24, 24, 24, 12], pretrained_window_sizes=[12, 12, 12, 6]
        ),
        1,
    )
    sd = {f"backbone.{k}": v for k, v in net.state_dict().items()}
    sd["head.norm_linear.weight"] = torch.randn(3 * C, 1536, generator=g)
    sd["head.margins"] = torch.rand(C, generator=g)
    x = torch.randn(1, 3, 384, 384, generator=g)
    with torch.no_grad():
        feats = net(x)[-1].mean((2, 3))
    want = 30 * F.linear(F.normalize(feats), F.normalize(sd["head.norm_linear.weight"])).view(-1, C, 3).amax(2)
    torch.save({"state_dict": sd}, tmp / "swin-l-384-arc.pth")
    del net, sd
    compare("Swin-V2-L 384 ArcFace", tmp / "swin-l-384-arc.pth", "swinv2_l_arc", x, want, tmp)

    # the ImageNet-21k 192-px window-12 start
    net = randomise(SwinTransformerV2(arch="large", img_size=192, window_size=12), 2)
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in net.state_dict().items()}}, tmp / "swinv2-l-192-w12.pth")
    del net
    model = start("Swin-V2-L 21k 192px w12 -> 384px", tmp / "swinv2-l-192-w12.pth", "swinv2_l_arc", tmp)
    with torch.no_grad():
        out = model.predict_logits(x)
    print(f"    logits finite: {bool(torch.isfinite(out).all())}, shape {tuple(out.shape)}")


def vit(tmp):
    from mmpretrain.models.backbones import VisionTransformer
    from mmpretrain.models.necks import MAEPretrainDecoder
    from mmpretrain.models.selfsup import MAEViT

    g = torch.Generator().manual_seed(0)
    # the fine-tuned ViT-L at 448 (avg token, ln2, no final norm) + LinearClsHead
    net = randomise(
        VisionTransformer(arch="large", img_size=448, patch_size=16, out_type="avg_featmap", final_norm=False), 3
    )
    sd = {f"backbone.{k}": v for k, v in net.state_dict().items()}
    sd["head.fc.weight"], sd["head.fc.bias"] = torch.randn(C, 1024, generator=g) * 0.02, torch.zeros(C)
    x = torch.randn(1, 3, 448, 448, generator=g)
    with torch.no_grad():
        want = F.linear(net(x)[-1], sd["head.fc.weight"], sd["head.fc.bias"])
    torch.save({"state_dict": sd}, tmp / "l-448-ce.pth")
    del net, sd
    # vit_l_ce adjusts logits by -log(prior); without a training list the prior is uniform: + log C
    compare("ViT-L 448 linear", tmp / "l-448-ce.pth", "vit_l_ce", x, want + math.log(C), tmp)

    # the MMSelfSup MAE pre-training checkpoint (224 px, encoder + decoder)
    enc = randomise(MAEViT(arch="large", img_size=224, patch_size=16), 4)
    dec = MAEPretrainDecoder(num_patches=196, patch_size=16, embed_dim=1024)
    sd = {f"backbone.{k}": v for k, v in enc.state_dict().items()}
    sd.update({f"neck.{k}": v for k, v in dec.state_dict().items()})
    torch.save({"state_dict": sd}, tmp / "mae-epoch_1600.pth")
    del enc, dec, sd
    start("MAE ViT-L 224 -> ViT-L 448 ArcFace", tmp / "mae-epoch_1600.pth", "vit_l_arc", tmp)


def shapes():
    """Keys and shapes of the seven full-size files against config.yaml's models, weights
    left uninitialised (torch.nn.init made a no-op: only keys, shapes and buffers matter)."""
    from mmpretrain.models.backbones import SwinTransformerV2, VisionTransformer
    from mmpretrain.models.necks import MAEPretrainDecoder
    from mmpretrain.models.selfsup import MAEViT

    import webfg.convert as conv

    for fn in [
        "kaiming_uniform_",
        "uniform_",
        "normal_",
        "trunc_normal_",
        "constant_",
        "ones_",
        "zeros_",
        "xavier_uniform_",
    ]:
        setattr(torch.nn.init, fn, lambda t, *a, **k: t)
    torch.Tensor.normal_ = torch.Tensor.uniform_ = lambda t, *a, **k: t

    def check(name, sd, layout, model_name, mode):
        model = Classifier(model_config(CONFIG, model_name), C, torch.ones(C), load_pretrained=False)
        c = conv.to_timm(sd, layout, conv.classifier_name(model.backbone))
        notes = []
        c.backbone = conv._adapt_backbone(c.backbone, model.backbone, mode, name, notes)  # full: window tables too
        state, more = conv._assemble(model, c, mode, name)
        values = sum(v.numel() for v in state.values()) / 1e6
        print(
            f"{name} -> {model_name} ({mode}): {len(state)} tensors, {values:.1f} M values fit; "
            f"{len(c.dropped)} left out; notes: {[n[:80] for n in notes + more]}"
        )

    def heads(sd, arcface, width):
        return {
            **sd,
            **(
                {"head.norm_linear.weight": torch.empty(3 * C, width), "head.margins": torch.empty(C)}
                if arcface
                else {"head.fc.weight": torch.empty(C, width), "head.fc.bias": torch.empty(C)}
            ),
        }

    for arch, model_name, width in [("large", "swinv2_l_arc", 1536), ("base", "swinv2_b_arc", 1024)]:
        net = SwinTransformerV2(
            arch=arch, img_size=384, window_size=[24, 24, 24, 12], pretrained_window_sizes=[12, 12, 12, 6]
        )
        sd = {f"backbone.{k}": v for k, v in net.state_dict().items()}
        check(f"swin-{arch[0]}-384-arc", heads(sd, True, width), "mmcls-swinv2", model_name, "full")
        net = SwinTransformerV2(arch=arch, img_size=192, window_size=12)
        sd = {f"backbone.{k}": v for k, v in net.state_dict().items()}
        check(f"swinv2-{arch}-w12-in21k-192px", sd, "mmcls-swinv2", model_name, "pretrained")
    net = VisionTransformer(arch="large", img_size=448, patch_size=16, out_type="avg_featmap", final_norm=False)
    sd = {f"backbone.{k}": v for k, v in net.state_dict().items()}
    check("l-448-ce", heads(sd, False, 1024), "mmcls-vit", "vit_l_ce", "full")
    check("l-448-arc", heads(sd, True, 1024), "mmcls-vit", "vit_l_arc", "full")
    enc, dec = MAEViT(arch="large", img_size=224, patch_size=16), MAEPretrainDecoder(num_patches=196, embed_dim=1024)
    sd = {f"backbone.{k}": v for k, v in enc.state_dict().items()}
    sd.update({f"neck.{k}": v for k, v in dec.state_dict().items()})
    check("mae-vit-l-224 epoch_1600", sd, "mmcls-vit", "vit_l_arc", "pretrained")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--only", choices=["swin", "vit"])
    p.add_argument("--shapes", action="store_true", help="keys and shapes only (seconds)")
    a = p.parse_args()
    import mmpretrain
    import timm

    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, Python "
        f"{platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}, "
        f"mmpretrain {mmpretrain.__version__}"
    )
    if a.shapes:
        return shapes()
    with tempfile.TemporaryDirectory() as d:
        for name, fn in [("swin", swin), ("vit", vit)]:
            if a.only in (None, name):
                fn(Path(d))


if __name__ == "__main__":
    main()
