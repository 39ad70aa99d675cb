"""The demo dataset: layout, fault key, determinism, atomicity, safe unpickling.

Uses the tiny preset (about a second to build) and checks values against the
answer key and the source images, not only that files exist.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webfg import demo
from webfg.io import InputError, read_split_list
from webfg.safe_pickle import load_numpy_pickle

SPEC = demo.TINY
NUM_CLASSES = 6
NAME_RE = re.compile(r"^(?:[0-9a-f]{8}|img [0-9a-f]{8} [^/]+)\.(?:png|jpg)$")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    demo.build_demo(out, SPEC, seed=0)
    return out


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for rel in _files(root):
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return h.hexdigest()


def _faults(root: Path) -> list[dict]:
    with open(root / "answers" / "faults.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for r in rows:
        r["true_label"], r["given_label"] = int(r["true_label"]), int(r["given_label"])
    return rows


def _spec(root: Path) -> dict:
    return json.loads((root / "answers" / "spec.json").read_text(encoding="utf-8"))


def _decodes(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:
        return False


def _source_pixels_by_label(spec_json: dict) -> dict[int, set[bytes]]:
    """webfg class id -> the 28×28 source images of that class, as bytes."""
    by_class = {}
    for c in spec_json["classes"]:
        data = demo.load_source(c["source"])
        by_class[c["id"]] = {img.tobytes() for img in data.images[data.labels == c["source_label"]]}
    return by_class


def _inner_pixels(path: Path) -> bytes:
    with Image.open(path) as im:
        arr = np.asarray(im)
    assert arr.shape == (32, 32) and not arr[:2].any() and not arr[-2:].any()
    assert not arr[:, :2].any() and not arr[:, -2:].any(), f"{path}: border is not black"
    return arr[2:30, 2:30].tobytes()


# --------------------------------------------------------------------------- layout


def test_layout_and_counts_follow_the_preset(tree):
    assert sorted(p.name for p in (tree / "train").iterdir()) == [f"{c:04d}" for c in range(NUM_CLASSES)]
    assert sorted(p.name for p in tree.iterdir()) == ["answers", "testa", "testb", "train"]
    for split in ("testa", "testb"):
        assert all(p.is_file() for p in (tree / split).iterdir()), f"{split} must be flat"
    assert not list(tree.parent.glob("demo.tmp-*")), "temporary folder left behind"

    info = _spec(tree)
    assert info["seed"] == 0 and info["preset"] == "tiny" and info["num_classes"] == NUM_CLASSES
    assert [c["id"] for c in info["classes"]] == list(range(NUM_CLASSES))
    assert [c["source"] for c in info["classes"]] == ["fashion_mnist"] * 3 + ["mnist_5k"] * 3
    assert info["params"] == demo.spec_params(SPEC)
    counts = info["counts"]
    assert counts["labelled_per_class"] == [40] * NUM_CLASSES
    assert counts["testa_per_class"] == counts["testb_per_class"] == [30] * NUM_CLASSES
    assert counts["fault_rows"] == {
        "truncated": 2,
        "undecodable": 1,
        "duplicate": 2,
        "conflict": 2,
        "label_noise": round(0.05 * 240),
    }
    on_disk = [len(list((tree / "train" / f"{c:04d}").iterdir())) for c in range(NUM_CLASSES)]
    assert counts["train_files_per_class"] == on_disk
    assert counts["train_files"] == sum(on_disk)


def test_train_counts_are_explained_by_the_fault_key(tree):
    rows = _faults(tree)
    expected = list(_spec(tree)["counts"]["labelled_per_class"])
    for r in rows:
        if r["kind"] == "label_noise":
            expected[r["true_label"]] -= 1
            expected[r["given_label"]] += 1
        elif r["kind"] in ("duplicate", "truncated", "undecodable"):
            expected[r["given_label"]] += 1
        elif r["kind"] == "conflict" and r["given_label"] != r["true_label"]:
            expected[r["given_label"]] += 1  # the copy; the original is one of the labelled
    actual = [len(list((tree / "train" / f"{c:04d}").iterdir())) for c in range(NUM_CLASSES)]
    assert actual == expected
    for r in rows:
        assert r["path"].startswith(f"train/{r['given_label']:04d}/") and (tree / r["path"]).is_file()
        assert 0 <= r["given_label"] < NUM_CLASSES
        assert (r["true_label"] == -1) == (r["kind"] == "undecodable")


def test_broken_files_fail_to_decode_and_all_others_are_32px(tree):
    broken = {r["path"] for r in _faults(tree) if r["kind"] in ("truncated", "undecodable")}
    assert len(broken) == 3
    for rel in _files(tree):
        if rel.startswith("answers/"):
            continue
        path = tree / rel
        if rel in broken:
            assert not _decodes(path), f"{rel} should not decode"
            continue
        with Image.open(path) as im:
            im.load()
            assert im.size == (32, 32) and im.mode == "L", rel
            assert im.format == ("PNG" if rel.endswith(".png") else "JPEG"), rel


def test_truncated_files_are_half_of_a_real_image(tree):
    for r in _faults(tree):
        data = (tree / r["path"]).read_bytes()
        if r["kind"] == "truncated":
            assert data[:8] == b"\x89PNG\r\n\x1a\n" or data[:2] == b"\xff\xd8"
        elif r["kind"] == "undecodable":
            assert data.startswith(b"<!DOCTYPE html>")


def test_duplicates_and_conflicts_are_byte_copies(tree):
    rows = _faults(tree)
    digest = {
        rel: hashlib.sha256((tree / rel).read_bytes()).hexdigest() for rel in _files(tree) if rel.startswith("train/")
    }
    holders = Counter(digest.values())
    for r in (r for r in rows if r["kind"] == "duplicate"):
        twins = [p for p, d in digest.items() if d == digest[r["path"]] and p != r["path"]]
        assert len(twins) == 1 and twins[0].rsplit("/", 1)[0] == r["path"].rsplit("/", 1)[0]
    conflicts = [r for r in rows if r["kind"] == "conflict"]
    by_digest: dict[str, list[dict]] = {}
    for r in conflicts:
        by_digest.setdefault(digest[r["path"]], []).append(r)
    assert len(by_digest) == SPEC.conflict_pairs
    for pair in by_digest.values():
        assert len(pair) == 2 and holders[digest[pair[0]["path"]]] == 2
        assert pair[0]["true_label"] == pair[1]["true_label"]
        assert pair[0]["given_label"] != pair[1]["given_label"]
        assert sorted(r["given_label"] == r["true_label"] for r in pair) == [False, True]
    # Apart from the injected copies, every train file is unique.
    injected = sum(1 for r in rows if r["kind"] == "duplicate") + SPEC.conflict_pairs
    assert len(digest) - len(holders) == injected


def test_labels_in_key_match_the_source_images(tree):
    """Every lossless (PNG) image is a real source image of the class the key says."""
    by_label = _source_pixels_by_label(_spec(tree))
    true_of = {r["path"]: r["true_label"] for r in _faults(tree) if r["kind"] in ("label_noise", "conflict")}
    broken = {r["path"] for r in _faults(tree) if r["kind"] in ("truncated", "undecodable")}
    checked = Counter()
    for split in ("testa", "testb"):
        for rel, label in read_split_list(tree / "answers" / f"{split}.txt", num_classes=NUM_CLASSES):
            if rel.endswith(".png"):
                assert _inner_pixels(tree / rel) in by_label[label], rel
                checked[split] += 1
    for rel in _files(tree):
        if rel.startswith("train/") and rel.endswith(".png") and rel not in broken:
            label = true_of.get(rel, int(rel.split("/")[1]))
            assert _inner_pixels(tree / rel) in by_label[label], rel
            checked["train"] += 1
    assert min(checked.values()) > 100


def test_label_noise_moves_samples_to_other_folders(tree):
    noisy = [r for r in _faults(tree) if r["kind"] == "label_noise"]
    assert len(noisy) == 12
    assert all(r["true_label"] != r["given_label"] for r in noisy)


def test_noisy_labels_come_from_the_same_source_half_the_time():
    source_of = ["fashion"] * 10 + ["animal"] * 10 + ["digits"] * 10
    rng = np.random.default_rng(0)
    true = rng.integers(0, 30, size=4000).tolist()
    noisy = [demo._noisy_label(rng, t, source_of, 0.5) for t in true]
    assert all(n != t and 0 <= n < 30 for n, t in zip(noisy, true))
    same = np.mean([source_of[n] == source_of[t] for n, t in zip(noisy, true)])
    assert 0.45 < same < 0.55


def test_splits_are_disjoint_and_answers_cover_the_test_folders(tree):
    pixels = {}
    for split in ("train", "testa", "testb"):
        pixels[split] = {_inner_pixels(p) for p in (tree / split).rglob("*.png") if _decodes(p)}
    assert not (pixels["train"] & pixels["testa"]) and not (pixels["train"] & pixels["testb"])
    assert not (pixels["testa"] & pixels["testb"])
    for split in ("testa", "testb"):
        key = read_split_list(tree / "answers" / f"{split}.txt", num_classes=NUM_CLASSES)
        assert sorted(rel for rel, _ in key) == [f for f in _files(tree) if f.startswith(f"{split}/")]
        assert Counter(label for _, label in key) == {c: 30 for c in range(NUM_CLASSES)}


def test_file_names_are_random_ids_with_some_odd_ones(tree):
    names = {
        split: [Path(f).name for f in _files(tree) if f.startswith(f"{split}/")]
        for split in ("train", "testa", "testb")
    }
    for split, split_names in names.items():
        assert all(NAME_RE.match(n) for n in split_names), split
        odd = [n for n in split_names if " " in n]
        assert odd and any(not n.isascii() for n in odd), f"{split} needs names with spaces and non-ASCII"
        jpg = sum(n.endswith(".jpg") for n in split_names) / len(split_names)
        assert 0.1 < jpg < 0.3, f"{split}: JPEG share {jpg:.2f}"


# --------------------------------------------------------------------------- build behaviour


def test_same_seed_gives_identical_tree_and_cli_works(tree, tmp_path):
    again = tmp_path / "again"
    assert demo.main(["--out", str(again), "--preset", "tiny", "--seed", "0"]) == 0
    assert _files(again) == _files(tree)
    assert _tree_digest(again) == _tree_digest(tree)
    other = tmp_path / "other"
    demo.build_demo(other, SPEC, seed=1)
    assert _tree_digest(other) != _tree_digest(tree)


def test_existing_output_is_reused_or_refused(tree, tmp_path):
    before = _tree_digest(tree)
    assert demo.build_demo(tree, SPEC, seed=0) == _spec(tree)
    assert _tree_digest(tree) == before
    with pytest.raises(FileExistsError, match="remove it"):
        demo.build_demo(tree, SPEC, seed=3)
    with pytest.raises(SystemExit) as exc:
        demo.main(["--out", str(tree), "--preset", "full"])
    assert exc.value.code == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a webfg demo tree"):
        demo.build_demo(foreign, SPEC)
    assert _tree_digest(tree) == before


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(demo, "write_json", explode)  # fails after all images are written
    with pytest.raises(RuntimeError, match="disk full"):
        demo.build_demo(tmp_path / "demo", SPEC)
    assert list(tmp_path.iterdir()) == []


def test_missing_sources_say_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "FASHION_DIR", tmp_path / "nowhere")
    with pytest.raises(demo.DemoSourceError, match="apt-get install dataset-fashion-mnist"):
        demo.load_fashion_mnist()
    with pytest.raises(demo.DemoSourceError, match="pip install --no-deps animal-mnist==0.4"):
        demo._package_dir("no_such_package_webfg", "pip install --no-deps animal-mnist==0.4")


# --------------------------------------------------------------------------- restricted unpickler


class _RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_RunsShell(marker))
    with pytest.raises(InputError, match=r"evil\.pkl.*(posix|os)\.system"):
        load_numpy_pickle(payload, "evil.pkl")
    assert not marker.exists()
    # Hidden next to a valid array in the same pickle.
    wrapped = pickle.dumps({"data": np.zeros(3), "x": _RunsShell(marker)})
    with pytest.raises(InputError, match="refusing"):
        load_numpy_pickle(wrapped, "evil.pkl")
    assert not marker.exists()
    with pytest.raises(InputError, match="builtins.eval"):
        load_numpy_pickle(b"cbuiltins\neval\n(S'1+1'\ntR.", "evil.pkl")


def test_plain_arrays_unpickle_and_other_objects_do_not(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for protocol in (3, 4, 5):
        out = load_numpy_pickle(pickle.dumps(arr, protocol=protocol), "ok.pkl")
        assert out.dtype == np.uint8 and np.array_equal(out, arr)
    with pytest.raises(InputError, match="numeric numpy array"):
        load_numpy_pickle(pickle.dumps([1, 2, 3]), "list.pkl")
    with pytest.raises(InputError, match="garbage.pkl"):
        load_numpy_pickle(b"\x80\x04not a pickle", "garbage.pkl")


def test_animal_source_reads_through_the_restricted_unpickler():
    data = demo.load_source("animal_mnist")
    assert data.images.shape[1:] == (28, 28) and data.images.dtype == np.uint8
    assert sorted(Counter(data.labels.tolist())) == list(range(10))
    assert len(data.images) + data.exact_duplicates_dropped == 10_000
