"""Flip-TTA inference: one model, several splits → per-split probability matrices (SPEC C).

The val split is predicted first; its accuracy is the model's measured accuracy
and goes into every prediction's JSON, where the ensemble weights read it.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from webfg.data import ImageList, eval_transform
from webfg.io import save_predictions
from webfg.progress import progress


@torch.no_grad()
def predict_probs(model, root, relpaths, batch_size: int = 256, log=print, workers: int | None = None) -> np.ndarray:
    """Class probabilities (N, C) float32; with ``tta_flip`` the mean of the image's
    and its horizontal mirror's probabilities. Runs on the model's device, under the
    config's autocast precision (probabilities are computed from fp32 logits), with
    ``workers`` loader processes (None: the config's, else derived from the CPUs)."""
    from webfg.engine import autocast, loader_workers, make_loader, resolve_precision

    model.eval()
    device = next(model.parameters()).device
    amp_dtype = resolve_precision(model.cfg.precision, device)
    if workers is None:
        workers = loader_workers(model.cfg.num_workers, None, device)
    loader = make_loader(ImageList(root, list(relpaths), eval_transform(model.cfg)), batch_size, workers, device)
    if model.cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    out, t0 = [], time.time()
    for x, _ in progress(loader, desc="infer", unit="batch"):
        x = x.to(device, non_blocking=True)
        if model.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            probs = model.predict_logits(x).softmax(1)
            if model.cfg.tta_flip:
                probs = 0.5 * (probs + model.predict_logits(x.flip(3)).softmax(1))
        out.append(probs.float().cpu().numpy())
    n = len(loader.dataset)
    log(f"  {n} images in {time.time() - t0:.1f}s ({n / max(time.time() - t0, 1e-9):.0f} img/s)")
    return np.concatenate(out) if out else np.zeros((0, model.class_counts.numel()), np.float32)


def infer_splits(model_path, root, val_list, splits: dict, model_name: str = "", threads=None, log=print) -> float:
    """Predict ``val_list`` and every ``splits[name] = (relpaths, out_stem)``; return val accuracy.

    ``val_list`` is ``[(relpath, label)]``; its prediction is also written when
    ``splits`` holds a ``"val"`` entry with relpaths None.
    """
    from webfg.engine import loader_workers
    from webfg.train import load_model

    if threads:
        torch.set_num_threads(threads)
    model = load_model(model_path)
    if torch.cuda.is_available():
        model = model.cuda()
    device = next(model.parameters()).device
    workers = loader_workers(model.cfg.num_workers, threads, device)
    log(f"val: {model_path} ({device.type}, {workers} loader workers)")
    val_probs = predict_probs(model, root, [p for p, _ in val_list], log=log, workers=workers)
    val_labels = np.array([y for _, y in val_list])
    val_accuracy = float((val_probs.argmax(1) == val_labels).mean()) if len(val_list) else float("nan")
    log(f"  val accuracy {val_accuracy:.4f}")
    for split, (relpaths, stem) in splits.items():
        meta = {"model": model_name, "split": split, "val_accuracy": val_accuracy, "checkpoint": str(model_path)}
        if relpaths is None:  # the val split itself
            save_predictions(stem, val_probs, [p for p, _ in val_list], meta)
            continue
        log(f"{split}: {len(relpaths)} images")
        save_predictions(stem, predict_probs(model, root, relpaths, log=log, workers=workers), relpaths, meta)
    return val_accuracy


def infer_lists(
    model_path, root, val_list, lists, out_dir, with_val: bool = True, model_name: str = "", threads=None, log=print
) -> float:
    """The inference stage (the rules and ``webfg infer`` both call it): predict the labelled
    ``val_list`` and each image list, written as ``<out_dir>/<list stem>`` (.npy, .rows.txt,
    .json), val too when ``with_val``. A list named ``train`` (the cleaned training list,
    scored for the noise filter) is labelled: its paths are predicted."""
    from pathlib import Path

    from webfg.io import read_split_list

    out_dir = Path(out_dir)
    splits = {"val": (None, out_dir / "val")} if with_val else {}
    for listing in lists:
        name = Path(listing).stem
        rows = read_split_list(listing, labelled=name == "train")
        splits[name] = ([r[0] for r in rows] if name == "train" else rows, out_dir / name)
    return infer_splits(model_path, root, read_split_list(val_list), splits, model_name, threads, log)
