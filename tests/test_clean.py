import io

import numpy as np
import pytest
from PIL import Image

from webfg.clean import clean_split, filter_noisy, read_classes, write_class_list
from webfg.io import InputError, read_split_list


def png_bytes(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_tree(root, per_class=6, classes=3):
    for c in range(classes):
        d = root / "train" / f"{c:04d}"
        d.mkdir(parents=True)
        for i in range(per_class):
            (d / f"img {i} ü.png").write_bytes(png_bytes(c * 40 + i))
    for split in ("testa", "testb"):
        (root / split).mkdir()
        for i in range(3):
            (root / split / f"t{i}.png").write_bytes(png_bytes(200 + i))


def removed_rows(out):
    lines = (out / "removed.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "path\treason"
    return dict(line.split("\t", 1) for line in lines[1:])


def test_clean_split_drops_broken_duplicates_and_conflicts(tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    make_tree(root)
    good = png_bytes(0)
    (root / "train/0000/trunc.png").write_bytes(png_bytes(99)[:30])
    (root / "train/0000/html.jpg").write_bytes(b"<html>404</html>")
    (root / "train/0001/dup.png").write_bytes(png_bytes(41))  # same bytes as 0001/img 1 ü.png
    (root / "train/0002/conflict.png").write_bytes(good)  # same bytes as 0000/img 0 ü.png
    stats = clean_split(root, out, val_fraction=0.2, val_min_per_class=1, seed=0, test_splits=["testa", "testb"])

    removed = removed_rows(out)
    assert removed["train/0000/trunc.png"].startswith("undecodable")
    assert removed["train/0000/html.jpg"].startswith("undecodable")
    assert (
        removed["train/0001/img 1 ü.png"] == "duplicate of train/0001/dup.png"
        or removed["train/0001/dup.png"] == "duplicate of train/0001/img 1 ü.png"
    )
    assert removed["train/0000/img 0 ü.png"].startswith("conflicting labels")
    assert removed["train/0002/conflict.png"].startswith("conflicting labels")
    assert len(removed) == 5

    train = read_split_list(out / "train.txt")
    val = read_split_list(out / "val.txt")
    kept = {p for p, _ in train + val}
    assert not kept & set(removed) and not {p for p, _ in train} & {p for p, _ in val}
    assert len(kept) == 18 + 4 - 5
    # stratified: round(0.2 * n) val images per class, the rest in train
    val_counts = np.bincount([y for _, y in val], minlength=3)
    assert val_counts.tolist() == [1, 1, 1]
    assert len(read_split_list(out / "all.txt")) == 22
    assert read_split_list(out / "testa.txt", labelled=False) == ["testa/t0.png", "testa/t1.png", "testa/t2.png"]
    assert stats["num_classes"] == 3 and stats["train"] == len(train)


def test_clean_split_is_deterministic(tmp_path):
    make_tree(tmp_path / "data")
    clean_split(tmp_path / "data", tmp_path / "a", seed=3, val_fraction=0.3)
    clean_split(tmp_path / "data", tmp_path / "b", seed=3, val_fraction=0.3)
    assert (tmp_path / "a/val.txt").read_bytes() == (tmp_path / "b/val.txt").read_bytes()


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda r: (r / "train/0003").mkdir(), r"0003: empty class"),
        (lambda r: (r / "train/cats").mkdir(), r"train: class folders mix integer ids \(0000, ...\) and names \(cats"),
        (lambda r: [p.unlink() for p in (r / "testb").iterdir()], r"testb: test split has no images"),
        (lambda r: (r / "testa/t1.png").write_bytes(b"garbage"), r"t1\.png: unreadable test image"),
    ],
)
def test_clean_split_bad_input_names_the_file(tmp_path, breakage, message):
    root = tmp_path / "data"
    make_tree(root)
    breakage(root)
    with pytest.raises(InputError, match=message):
        clean_split(root, tmp_path / "out", test_splits=["testa", "testb"])
    assert not (tmp_path / "out").exists()


def test_clean_split_checks_num_classes_and_meta_lines(tmp_path):
    root = tmp_path / "data"
    make_tree(root)
    with pytest.raises(InputError, match=r"empty class\(es\) \[3\]"):
        clean_split(root, tmp_path / "out", num_classes=4)
    meta = tmp_path / "all.txt"
    meta.write_text("0000/img 0 ü.png 0\n0001/img 0 ü.png 9\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"all\.txt:2: label 9 out of range"):
        clean_split(root, tmp_path / "out", num_classes=3, meta_all=meta)


def test_filter_noisy_removes_only_confident_disagreements(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("train/a.png 0\ntrain/b.png 1\ntrain/c.png 2\n", encoding="utf-8")
    probs = np.array(
        [
            [0.98, 0.01, 0.01],  # agrees: kept
            [0.90, 0.04, 0.06],  # label 1 at 0.04 < 0.05, class 0 at 0.9: removed
            [0.45, 0.45, 0.10],  # label 2 at 0.10 is not < 0.05: kept
        ]
    )
    rows = ["train/a.png", "train/b.png", "train/c.png"]
    stats = filter_noisy(train, probs, rows, tmp_path / "kept.txt", tmp_path / "rm.tsv")
    assert stats == {"kept": 2, "removed": 1}
    assert read_split_list(tmp_path / "kept.txt") == [("train/a.png", 0), ("train/c.png", 2)]
    assert "train/b.png\timplausible label 1" in (tmp_path / "rm.tsv").read_text()


def test_filter_noisy_matches_rows_in_any_order(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("train/a.png 0\ntrain/b.png 1\ntrain/c.png 2\n", encoding="utf-8")
    # the scoring prediction lists the rows in another order: c, a, b
    probs = np.array([[0.1, 0.1, 0.8], [0.01, 0.01, 0.98], [0.96, 0.02, 0.02]])
    stats = filter_noisy(
        train,
        probs,
        ["train/c.png", "train/a.png", "train/b.png"],
        tmp_path / "kept.txt",
        tmp_path / "rm.tsv",
        max_label_prob=0.05,
        min_top_prob=0.5,
    )
    # a: label 0 at 0.01, class 2 at 0.98 -> removed; b: label 1 at 0.02, class 0 at 0.96 -> removed
    assert stats == {"kept": 1, "removed": 2}
    assert read_split_list(tmp_path / "kept.txt") == [("train/c.png", 2)]


def test_class_folders_named_by_words_get_ids_in_sorted_order(tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    make_tree(root)
    for c, name in enumerate(["zebra", "ant", "moth"]):
        (root / "train" / f"{c:04d}").rename(root / "train" / name)
    clean_split(root, out, val_fraction=0.2, test_splits=["testa"])
    assert write_class_list(root, out / "classes.tsv", num_classes=3) == ["ant", "moth", "zebra"]
    assert read_classes(out / "classes.tsv") == ["ant", "moth", "zebra"]
    labels = {p.split("/")[1]: y for p, y in read_split_list(out / "all.txt")}
    assert labels == {"ant": 0, "moth": 1, "zebra": 2}
    make_tree(tmp_path / "numeric")
    write_class_list(tmp_path / "numeric", tmp_path / "ids/classes.tsv")
    assert read_classes(tmp_path / "ids/classes.tsv") == ["0000", "0001", "0002"]
    with pytest.raises(InputError, match=r"empty class\(es\) \[3\] \(no images\) \(data.num_classes is 4\)"):
        write_class_list(tmp_path / "numeric", tmp_path / "x.tsv", num_classes=4)
    (out / "classes.tsv").write_text("id\tname\n0\tant\n2\tzebra\n")
    with pytest.raises(InputError, match=r"classes.tsv:3: expected '1<TAB><name>'"):
        read_classes(out / "classes.tsv")
