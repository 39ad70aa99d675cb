"""Uniform model soup of checkpoint files, streaming: one checkpoint in memory at a time.

``webfg.train.soup`` averages state dicts already in memory (the last epochs of one
run). For large models (ViT-L: 1.2 GB a checkpoint) and many files, this sums them one
by one into a float64 accumulator, in the order given, so memory is two checkpoints'
worth whatever their number and the result does not depend on float32 rounding.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

from webfg.io import InputError, atomic_path
from webfg.train import load_checkpoint


def _state_dict(ckpt, path) -> dict:
    """A raw state dict, or the ``state_dict`` of a webfg / MMClassification checkpoint."""
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(f"{path}: expected a state dict of tensors (or a checkpoint with one under 'state_dict')")
    return sd


def soup_files(paths: Sequence[str | os.PathLike], out_path, log=print) -> dict:
    """Write the element-wise mean of the checkpoints' floating tensors to ``out_path``.

    Non-floating tensors (counters, buffers of integers) come from the last file, as in
    ``webfg.train.soup``. Every file must have the same keys and shapes as the first (the
    error names the file and the key). The output keeps the first file's layout: a raw
    state dict, or its other entries with ``state_dict`` replaced.
    """
    if not paths:
        raise InputError("soup of zero checkpoints")
    first = load_checkpoint(paths[0])
    sd = _state_dict(first, paths[0])
    shapes = {k: (v.shape, v.dtype) for k, v in sd.items()}
    total = {k: v.double() for k, v in sd.items() if v.is_floating_point()}
    last = sd
    log(f"{paths[0]}: {len(sd)} tensors")
    for path in paths[1:]:
        sd = _state_dict(load_checkpoint(path), path)
        if sd.keys() != shapes.keys():
            diff = sorted(set(sd) ^ set(shapes))
            raise InputError(f"{path}: keys differ from {paths[0]} (e.g. {diff[0]!r})")
        for key, value in sd.items():
            if (value.shape, value.dtype) != shapes[key]:
                raise InputError(f"{path}: {key!r} is {tuple(value.shape)} {value.dtype}, "
                                 f"{paths[0]} has {tuple(shapes[key][0])} {shapes[key][1]}")
            if key in total:
                total[key] += value.double()
        last = sd
        log(f"{path}: added")
    souped = {k: (total[k] / len(paths)).to(shapes[k][1]) if k in total else last[k].clone() for k in shapes}
    out = {**first, "state_dict": souped} if "state_dict" in first else souped
    with atomic_path(out_path) as tmp:
        torch.save(out, tmp)
    return souped
