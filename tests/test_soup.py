"""webfg soup: streaming uniform soup of checkpoint files (tiny tensors, ~4 s for the torch import)."""

import os

import pytest
import torch

from webfg.cli import main
from webfg.io import InputError
from webfg.soup import soup_files


def _ckpt(path, w, steps, wrap=False):
    sd = {"w": torch.tensor(w, dtype=torch.float32), "steps": torch.tensor(steps)}
    torch.save({"state_dict": sd, "config": "{}"} if wrap else sd, path)
    return path


def test_soup_is_the_mean_of_floats_and_keeps_the_last_integers(tmp_path):
    paths = [_ckpt(tmp_path / f"e{i}.pt", [1.0 + i, 0.1 * (i + 1)], 10 + i) for i in range(3)]
    out = soup_files(paths, tmp_path / "soup.pt")
    tenths = sum(float(torch.tensor(0.1 * (i + 1), dtype=torch.float32)) for i in range(3)) / 3  # in float64
    assert out["w"].tolist() == [2.0, float(torch.tensor(tenths, dtype=torch.float32))]
    assert out["w"].dtype == torch.float32
    assert out["steps"].item() == 12
    saved = torch.load(tmp_path / "soup.pt", weights_only=True)
    assert torch.equal(saved["w"], out["w"])


def test_soup_command_keeps_the_checkpoint_layout(tmp_path):
    paths = [_ckpt(tmp_path / f"e{i}.pt", [float(i)], i, wrap=True) for i in range(2)]
    main(["soup", *map(str, paths), "--out", str(tmp_path / "s.pt")])
    saved = torch.load(tmp_path / "s.pt", weights_only=True)
    assert saved["config"] == "{}" and saved["state_dict"]["w"].tolist() == [0.5]


def test_soup_names_the_mismatching_file_and_key(tmp_path):
    a = _ckpt(tmp_path / "a.pt", [1.0, 2.0], 1)
    b = _ckpt(tmp_path / "b.pt", [1.0], 1)
    with pytest.raises(InputError, match=r"b\.pt: 'w' is \(1,\)"):
        soup_files([a, b], tmp_path / "s.pt")
    assert not (tmp_path / "s.pt").exists()


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_soup_refuses_pickled_objects(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"w": torch.zeros(1), "evil": RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match=r"evil\.pt: not a loadable webfg checkpoint"):
        soup_files([tmp_path / "evil.pt"], tmp_path / "s.pt")
    assert not (tmp_path / "pwned").exists()
