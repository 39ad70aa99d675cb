"""Uniform model soup, streaming: one checkpoint in memory at a time, a float64 accumulator.

The one soup of webfg: the trainer's soup of its last epochs and ``webfg soup`` over
checkpoint files both call ``soup``. For large models (ViT-L: 1.2 GB a checkpoint) and
many files it sums them one by one, in the order given, so memory is two checkpoints'
worth whatever their number, and the result does not depend on float32 rounding.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import torch

from webfg.checkpoint import load_checkpoint, save_torch
from webfg.io import InputError


def _state_dict(ckpt, path) -> dict:
    """A raw state dict, or the ``state_dict`` of a webfg / MMClassification checkpoint."""
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(f"{path}: expected a state dict of tensors (or a checkpoint with one under 'state_dict')")
    return sd


def _load(source):
    """(checkpoint, its state dict, a name for messages) of a path or an in-memory state dict."""
    if isinstance(source, dict):
        return source, _state_dict(source, "state dict"), "state dict"
    ckpt = load_checkpoint(source)
    return ckpt, _state_dict(ckpt, source), str(source)


def soup(sources: Iterable, log=lambda msg: None, return_first: bool = False):
    """Element-wise mean of the floating tensors of ``sources`` (paths or state dicts).

    Non-floating tensors (counters, integer buffers) come from the last one. Every source
    must have the same keys, shapes and dtypes as the first (the error names the file and
    the key). Only the running float64 sum and one loaded checkpoint are in memory.
    """
    first = shapes = total = last = None
    count = 0
    for source in sources:
        ckpt, sd, name = _load(source)
        if shapes is None:
            first, first_name = (ckpt if return_first else None), name
            shapes = {k: (v.shape, v.dtype) for k, v in sd.items()}
            total = {k: v.double() for k, v in sd.items() if v.is_floating_point()}
            log(f"{name}: {len(sd)} tensors")
        else:
            if sd.keys() != shapes.keys():
                diff = sorted(set(sd) ^ set(shapes))
                raise InputError(f"{name}: keys differ from {first_name} (e.g. {diff[0]!r})")
            for key, value in sd.items():
                if (value.shape, value.dtype) != shapes[key]:
                    raise InputError(
                        f"{name}: {key!r} is {tuple(value.shape)} {value.dtype}, "
                        f"{first_name} has {tuple(shapes[key][0])} {shapes[key][1]}"
                    )
                if key in total:
                    total[key] += value.double()
            log(f"{name}: added")
        last, count = {k: v for k, v in sd.items() if k not in total}, count + 1  # the floats are summed
    if not count:
        raise InputError("soup of zero checkpoints")
    souped = {k: (total[k] / count).to(shapes[k][1]) if k in total else last[k].clone() for k in shapes}
    return (souped, first) if return_first else souped


def soup_files(paths: Sequence[str | os.PathLike], out_path, log=print) -> dict:
    """Write the soup of checkpoint files to ``out_path``, in the first file's layout: a raw
    state dict, or its other entries with ``state_dict`` replaced."""
    if not paths:
        raise InputError("soup of zero checkpoints")
    souped, first = soup(paths, log=log, return_first=True)
    save_torch({**first, "state_dict": souped} if "state_dict" in first else souped, out_path)
    return souped
