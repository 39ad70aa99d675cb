"""The bad-input corpus (issue 13): meta lists, folder layouts, images, configs, pickles and
checkpoints, each handed to the entry points that read it.

Every case ends one of three ways, and the test says which:
- ``Err``: one line naming the file (and line or key), no traceback, nothing written;
- ``Ok``: normal processing, with the values checked (drops recorded with their reason
  in removed.tsv are ``Ok`` cases that name the dropped path and reason).

Entry points: the ``webfg`` command in-process (exit status 2 and one line on stderr),
and the workflow's rule scripts as Snakemake runs them (``workflow/scripts/*.py`` with a
``snakemake`` object, one forked process per case from a single runner process, so the
whole table costs one interpreter start); ``test_snakemake_*`` (dag) run real Snakemake to
prove the wiring (the one line on the terminal, no outputs, no class list).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from runner import REPO, run_snakemake

from webfg.cli import main
from webfg.io import InputError, read_split_list, read_yaml

CLASSES = ("0000", "0001", "0002")


# ------------------------------------------------------------------ building blocks


def png(value: int, size=(8, 8), mode="L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full(size[::-1], value, np.uint8)).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(value: int, exif_orientation: int | None = None, size=(16, 8)) -> bytes:
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[:, : size[0] // 2] = value  # left half bright: orientation is visible
    im = Image.fromarray(arr)
    buf = io.BytesIO()
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        im.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    else:
        im.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def png16(value: int, size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full(size[::-1], value, np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def make_tree(root: Path, per_class: int = 4) -> Path:
    """3 classes x ``per_class`` distinct PNGs; testa and testb with 2 images each."""
    for c, name in enumerate(CLASSES):
        (root / "train" / name).mkdir(parents=True)
        for i in range(per_class):
            (root / "train" / name / f"{i}.png").write_bytes(png(c * 60 + i))
    for split in ("testa", "testb"):
        (root / split).mkdir()
        for i in range(2):
            (root / split / f"t{i}.png").write_bytes(png(230 + i + (split == "testb") * 10))
    return root


META = "".join(f"{name}/{i}.png {c}\n" for c, name in enumerate(CLASSES) for i in range(4))


@dataclass
class Err:
    """One line naming the file, line or key: ``pattern`` (a regex) must match it."""

    pattern: str


@dataclass
class Ok:
    """Normal processing. ``removed``: {path: reason regex}, exactly the rows of removed.tsv;
    ``samples``/``classes``: what all.txt and the class list hold; ``check``: more checks."""

    removed: dict[str, str] = field(default_factory=dict)
    samples: int | None = None
    labels: dict[str, int] = field(default_factory=dict)
    classes: list[str] | None = None
    check: Callable | None = None


@dataclass
class TreeCase:
    id: str
    build: Callable[[Path], None]  # mutates the base tree (root); may write root/meta.txt
    expect: Err | Ok
    meta: bool = False  # --meta-all root/meta.txt
    num_classes: int | None = None
    splits: tuple = ("testa", "testb")


def meta_case(id, text: str | bytes, expect, num_classes=None, build=None):
    def write(root):
        if build:
            build(root)
        data = text.encode("utf-8") if isinstance(text, str) else text
        (root / "meta.txt").write_bytes(data)

    return TreeCase(id, write, expect, meta=True, num_classes=num_classes)


def line(n):  # "meta.txt:<n>:" in an error
    return rf"meta\.txt:{n}: "


def _symlink_out(rel):
    def build(root):
        outside = root.parent / "outside.png"
        outside.write_bytes(png(77))
        target = root / rel
        target.unlink(missing_ok=True)
        target.symlink_to(outside)

    return build


def _write(rel, data):
    def build(root):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)

    return build


def _both(*builds):
    def build(root):
        for b in builds:
            b(root)

    return build


def _all_of_class(name, data):
    def build(root):
        for f in (root / "train" / name).iterdir():
            f.write_bytes(data)

    return build


def _labels_ok(expected):
    def check(out, root):
        assert {p: y for p, y in read_split_list(out / "all.txt") if p in expected} == expected

    return check


# ------------------------------------------------------------------ the meta-list corpus

META_CASES = [
    meta_case("meta-valid", META, Ok(samples=12, classes=list(CLASSES))),
    meta_case("meta-bom", "\ufeff" + META, Ok(samples=12, labels={"train/0000/0.png": 0})),
    meta_case("meta-crlf", META.replace("\n", "\r\n"), Ok(samples=12)),
    meta_case("meta-trailing-spaces", META.replace("\n", "   \n"), Ok(samples=12)),
    meta_case("meta-trailing-tab", META.replace("\n", "\t\n"), Ok(samples=12)),
    meta_case("meta-tab-separator", META.replace(" ", "\t"), Ok(samples=12, labels={"train/0002/3.png": 2})),
    meta_case("meta-blank-lines", META.replace("\n", "\n\n"), Ok(samples=12)),
    meta_case("meta-no-final-newline", META.rstrip("\n"), Ok(samples=12)),
    meta_case(
        "meta-leading-zero-label",
        META.replace(".png 1\n", ".png 0001\n"),
        Ok(samples=12, labels={"train/0001/0.png": 1}),
    ),
    meta_case(
        "meta-path-with-spaces",
        META + "0001/a b ü.png 1\n",
        Ok(samples=13, labels={"train/0001/a b ü.png": 1}),
        build=_write("train/0001/a b ü.png", png(99)),
    ),
    meta_case(
        "meta-missing-file-dropped",
        META + "0001/gone.png 1\n",
        Ok(samples=13, removed={"train/0001/gone.png": "unreadable: No such file or directory"}),
    ),
    meta_case(
        "meta-folder-listed-dropped",
        META + "0001 1\n",
        Ok(samples=13, removed={"train/0001": "unreadable: Is a directory"}),
    ),
    meta_case(
        "meta-symlink-out-dropped",
        META,
        Ok(samples=12, removed={"train/0002/1.png": "links out of the data root"}),
        build=_symlink_out("train/0002/1.png"),
    ),
    meta_case("meta-empty", "", Err(r"meta\.txt: no samples \(empty list\)")),
    meta_case("meta-only-blank-lines", "\n \n\t\n", Err(r"meta\.txt: no samples")),
    meta_case("meta-nul-byte", META.replace("0000/1.png", "0000/1\0.png"), Err(line(2) + "NUL byte")),
    meta_case("meta-escape-char", META.replace("0000/2.png", "0000/\x1b2.png"), Err(line(3) + "control character")),
    meta_case(
        "meta-label-word", META.replace("0000/1.png 0", "0000/1.png x"), Err(line(2) + "label 'x' is not an integer")
    ),
    meta_case("meta-label-float", META.replace("0000/1.png 0", "0000/1.png 1.0"), Err(line(2) + "label '1.0' is not")),
    meta_case("meta-label-underscore", META.replace("0000/1.png 0", "0000/1.png 1_0"), Err(line(2) + "label '1_0'")),
    meta_case("meta-label-arabic-digit", META.replace("0000/1.png 0", "0000/1.png ٣"), Err(line(2) + "label '٣'")),
    meta_case(
        "meta-label-negative", META.replace("0000/1.png 0", "0000/1.png -1"), Err(line(2) + r"label -1 out of range")
    ),
    meta_case("meta-no-label", META.replace("0000/1.png 0", "0000/1.png"), Err(line(2) + "expected '<path> <label>'")),
    meta_case("meta-label-only", META.replace("0000/1.png 0", " 0"), Err(line(2) + "expected '<path> <label>'")),
    meta_case(
        "meta-23-digit-label",
        META.replace("0002/3.png 2", "0002/3.png 12345678901234567890123"),
        Err(r"meta\.txt: .*empty class\(es\) \[.*the largest id 12345678901234567890123 \(.*meta\.txt:12\)"),
    ),
    meta_case("meta-label-over-num-classes", META, Err(line(9) + r"label 2 out of range \[0, 2\)"), num_classes=2),
    meta_case(
        "meta-fewer-classes-than-num-classes",
        META,
        Err(r"empty class\(es\) \[3\].*data.num_classes is 4"),
        num_classes=4,
    ),
    meta_case(
        "meta-gap-in-labels",
        META.replace(".png 1\n", ".png 3\n"),
        Err(r"empty class\(es\) \[1\] \(no images\); the largest id 3 \(.*meta\.txt:5\) implies 4 classes"),
    ),
    meta_case(
        "meta-absolute-path",
        META.replace("0000/1.png", "/etc/passwd"),
        Err(line(2) + "path '/etc/passwd' must be relative"),
    ),
    meta_case(
        "meta-dotdot-path",
        META.replace("0000/1.png", "../../x.png"),
        Err(line(2) + "path '../../x.png' must be relative to the data root"),
    ),
    meta_case(
        "meta-backslash-path",
        META.replace("0000/1.png", "0000\\1.png"),
        Err(line(2) + r"path '0000\\\\1.png' must be relative"),
    ),
    meta_case(
        "meta-repeated-path",
        META + "0000/0.png 1\n",
        Err(line(13) + r"0000/0\.png is listed again \(first at line 1\)"),
    ),
    meta_case(
        "meta-latin1", META.encode() + "0001/caf\xe9.png 1\n".encode("latin-1"), Err(r"meta\.txt: not UTF-8 text")
    ),
    meta_case("meta-binary", png(3), Err(r"meta\.txt: not UTF-8 text|meta\.txt:1: (NUL|control)")),
    meta_case(
        "meta-class-all-missing",
        "".join(line for line in META.splitlines(True) if not line.startswith("0002"))
        + "".join(f"0002/x{i}.png 2\n" for i in range(3)),
        Err(r"class 2 \(0002\): all 3 image\(s\) removed \(train/0002/x0\.png: unreadable: No such file"),
    ),
    TreeCase("meta-is-a-folder", lambda r: (r / "meta.txt").mkdir(), Err(r"meta\.txt: is a folder"), meta=True),
    TreeCase("meta-not-found", lambda r: None, Err(r"meta\.txt: list file not found"), meta=True),
]


# ------------------------------------------------------------------ the layout corpus


def _mkdir(rel):
    return lambda root: (root / rel).mkdir(parents=True)


def _rename(a, b):
    return lambda root: (root / a).rename(root / b)


def _rmtree_files(rel):
    def build(root):
        for f in (root / rel).iterdir():
            f.unlink()

    return build


def _check_exif_upright(out, root):
    from webfg.images import open_rgb

    arr = np.asarray(open_rgb(root / "train/0001/rotated.jpg"))
    assert arr.shape == (16, 8, 3)  # orientation 6: stored 16x8, shown 8 wide and 16 high
    assert arr[:4].mean() > 150 and arr[-4:].mean() < 50  # the bright half is on top


def _check_16bit(out, root):
    from webfg.images import open_rgb

    assert np.asarray(open_rgb(root / "train/0001/deep.png"))[0, 0].tolist() == [100, 100, 100]


LAYOUT_CASES = [
    TreeCase(
        "tree-valid",
        lambda r: None,
        Ok(
            samples=12,
            classes=list(CLASSES),
            check=lambda out, root: (out / "testb.txt").read_text() == "testb/t0.png\ntestb/t1.png\n",
        ),
    ),
    TreeCase(
        "tree-file-directly-in-train",
        _write("train/stray.jpg", png(5)),
        Ok(samples=12, removed={"train/stray.jpg": r"directly in train/, not in a class folder: no label"}),
    ),
    TreeCase(
        "tree-nested-folder-in-class",
        _write("train/0001/more/x.png", png(90)),
        Ok(
            samples=12,
            removed={"train/0001/more/x.png": r"in sub-folder train/0001/more/: images belong directly in train/0001/"},
        ),
    ),
    TreeCase(
        "tree-deeply-nested",
        _write("train/0001/a/b/c/y.png", png(91)),
        Ok(samples=12, removed={"train/0001/a/b/c/y.png": r"in sub-folder train/0001/a/"}),
    ),
    TreeCase(
        "tree-hidden-file-in-class",
        _write("train/0000/.x.png", png(92)),
        Ok(samples=12, removed={"train/0000/.x.png": "hidden file, not read"}),
    ),
    TreeCase(
        "tree-ds-store-in-train",
        _write("train/.DS_Store", b"\0\0\0\1Bud1"),
        Ok(samples=12, removed={"train/.DS_Store": "hidden file, not read"}),
    ),
    TreeCase(
        "tree-hidden-folder-in-train",
        _write("train/.ipynb_checkpoints/a.png", png(93)),
        Ok(samples=12, removed={"train/.ipynb_checkpoints/": "hidden folder, not read"}),
    ),
    TreeCase(
        "tree-thumbs-db-beside-images",
        _write("train/0002/Thumbs.db", b"\xd0\xcf\x11\xe0" + bytes(60)),
        Ok(samples=12, removed={"train/0002/Thumbs.db": r"Windows thumbnail cache \(Thumbs.db\), not an image"}),
    ),
    TreeCase(
        "tree-thumbs-db-only-class",
        _both(_rmtree_files("train/0002"), _write("train/0002/Thumbs.db", bytes(64))),
        Err(r"train/0002: empty class \(no image files; not read: train/0002/Thumbs.db"),
    ),
    TreeCase(
        "tree-class-all-html",
        _all_of_class("0002", b"<!DOCTYPE html><html>404</html>"),
        Err(r"class 2 \(0002\): all 4 image\(s\) removed \(train/0002/0\.png: undecodable: HTML, not an image"),
    ),
    TreeCase(
        "tree-class-all-conflicting",
        lambda r: [(r / "train/0002" / f"{i}.png").write_bytes(png(i)) for i in range(4)],
        Err(r"class 2 \(0002\): all 4 image\(s\) removed \(train/0002/0\.png: conflicting labels"),
    ),
    TreeCase(
        "tree-symlink-out-of-root",
        _symlink_out("train/0001/2.png"),
        Ok(samples=12, removed={"train/0001/2.png": r"links out of the data root \(to .*outside\.png\): not used"}),
    ),
    TreeCase(
        "tree-symlink-inside-root",
        lambda r: (r / "train/0001/link.png").symlink_to(r / "testa/t0.png"),
        Ok(samples=13, labels={"train/0001/link.png": 1}),
    ),
    TreeCase(
        "tree-class-folder-linked-out",
        lambda r: (
            (r / "train/0002").rename(r.parent / "elsewhere"),
            (r / "train/0002").symlink_to(r.parent / "elsewhere"),
        ),
        Err(r"class 2 \(0002\): all 4 image\(s\) removed \(train/0002/0\.png: links out of the data root"),
    ),
    TreeCase(
        "tree-broken-symlink",
        lambda r: (r / "train/0000/dangling.png").symlink_to(r / "nowhere.png"),
        Ok(samples=12, removed={"train/0000/dangling.png": "not a regular file"}),
    ),
    TreeCase("tree-empty-class-folder", _mkdir("train/0003"), Err(r"train/0003: empty class \(no image files\)")),
    TreeCase(
        "tree-class-only-subfolder",
        _both(_rmtree_files("train/0002"), _write("train/0002/sub/a.png", png(1))),
        Err(r"train/0002: empty class \(no image files; not read: train/0002/sub/a\.png"),
    ),
    TreeCase("tree-ids-and-names", _mkdir("train/cats"), Err(r"train: class folders mix integer ids")),
    TreeCase(
        "tree-gap-in-ids",
        _rename("train/0001", "train/0005"),
        Err(r"train: 3 empty class\(es\) \[1, 3, 4\] \(no images\); the largest id 5 \(.*train/0005\)"),
    ),
    TreeCase(
        "tree-23-digit-id",
        _rename("train/0002", "train/12345678901234567890123"),
        Err(r"train: .*empty class\(es\) \[2, 3, .*the largest id 12345678901234567890123"),
    ),
    TreeCase("tree-same-id-twice", _write("train/01/x.png", png(7)), Err(r"class folders 0001 and 01 are both id 1")),
    TreeCase(
        "tree-word-names",
        lambda r: [(r / "train" / c).rename(r / "train" / n) for c, n in zip(CLASSES, ["zebra", "ant", "moth"])],
        Ok(samples=12, classes=["ant", "moth", "zebra"], labels={"train/zebra/0.png": 2, "train/ant/0.png": 0}),
    ),
    TreeCase("tree-no-train", _rename("train", "images"), Err(r"train: no train/ folder")),
    TreeCase(
        "tree-train-only-files",
        lambda r: [_rename(f"train/{c}", f"c{c}")(r) for c in CLASSES] + [_write("train/a.png", png(1))(r)],
        Err(r"train: no class folders"),
    ),
    TreeCase(
        "tree-newline-in-name",
        _write("train/0001/bad\nname.png", png(94)),
        Ok(samples=12, removed={"'train/0001/bad\\nname.png'": "line break"}),
    ),
    TreeCase(
        "tree-backslash-in-name",
        _write("train/0001/bad\\name.png", png(95)),
        Ok(samples=12, removed={"'train/0001/bad\\\\name.png'": "backslash"}),
    ),
    TreeCase(
        "tree-non-utf8-name",
        lambda r: (r / "train/0001").joinpath(os.fsdecode(b"caf\xe9.png")).write_bytes(png(96)),
        Ok(samples=12, removed={"'train/0001/caf\\udce9.png'": "not UTF-8"}),
    ),
    TreeCase(
        "tree-num-classes-too-many",
        lambda r: None,
        Err(r"empty class\(es\) \[3\].*data.num_classes is 4"),
        num_classes=4,
    ),
    TreeCase(
        "tree-num-classes-too-few", lambda r: None, Err(r"train/0002: class id 2 out of range \[0, 2\)"), num_classes=2
    ),
    TreeCase(
        "tree-testb-missing",
        lambda r: [f.unlink() for f in (r / "testb").iterdir()] and (r / "testb").rmdir(),
        Err(r"testb: test split folder not found"),
    ),
    TreeCase("tree-testb-empty", _rmtree_files("testb"), Err(r"testb: test split has no images")),
    TreeCase(
        "tree-test-image-html",
        _write("testa/t1.png", b"<html><body>gone</body></html>"),
        Err(r"testa/t1\.png: unreadable test image \(HTML, not an image"),
    ),
    TreeCase(
        "tree-test-image-truncated",
        _write("testa/t1.png", png(3)[:40]),
        Err(r"testa/t1\.png: unreadable test image \(truncated or damaged PNG"),
    ),
    TreeCase(
        "tree-test-subfolder",
        _write("testa/sub/x.png", png(97)),
        Ok(samples=12, removed={"testa/sub/x.png": "test split testa is one flat folder; not predicted"}),
    ),
    TreeCase(
        "tree-test-symlink-out",
        lambda r: (
            (r / "testa/t9.png").symlink_to(Path(r).parent / "o.png") or (Path(r).parent / "o.png").write_bytes(png(1))
        ),
        Err(r"testa/t9\.png: links out of the data root"),
    ),
    TreeCase(
        "tree-truncated-png",
        _write("train/0000/cut.png", png(98, size=(32, 32))[:60]),
        Ok(samples=13, removed={"train/0000/cut.png": r"undecodable: truncated PNG: the file ends at byte 60"}),
    ),
    TreeCase(
        "tree-truncated-jpeg",
        _write("train/0000/cut.jpg", jpeg(200)[:300]),
        Ok(samples=13, removed={"train/0000/cut.jpg": r"undecodable: truncated (or damaged )?JPEG.* at byte 300"}),
    ),
    TreeCase(
        "tree-empty-file",
        _write("train/0000/zero.png", b""),
        Ok(samples=13, removed={"train/0000/zero.png": r"undecodable: empty file \(0 bytes\)"}),
    ),
    TreeCase(
        "tree-text-file",
        _write("train/0000/notes.txt", b"shot on my phone\n"),
        Ok(
            samples=13,
            removed={
                "train/0000/notes.txt": r"undecodable: text, not an image \(17 bytes, starts 'shot on my phone'\)"
            },
        ),
    ),
    TreeCase(
        "tree-random-bytes",
        _write("train/0000/blob.jpg", bytes(range(200, 256)) * 3),
        Ok(
            samples=13,
            removed={"train/0000/blob.jpg": r"undecodable: not an image \(unknown format, 168 bytes starting c8 c9"},
        ),
    ),
    TreeCase(
        "tree-duplicate-same-class",
        _write("train/0000/copy.png", png(0)),
        Ok(samples=13, removed={"train/0000/copy.png": "duplicate of train/0000/0.png"}),
    ),
    TreeCase(
        "tree-16bit-png",
        _write("train/0001/deep.png", png16(100 * 257)),
        Ok(samples=13, labels={"train/0001/deep.png": 1}, check=_check_16bit),
    ),
    TreeCase(
        "tree-exif-rotated-jpeg",
        _write("train/0001/rotated.jpg", jpeg(255, exif_orientation=6)),
        Ok(samples=13, labels={"train/0001/rotated.jpg": 1}, check=_check_exif_upright),
    ),
    TreeCase(
        "tree-cmyk-jpeg",
        lambda r: Image.new("CMYK", (8, 8), (0, 50, 100, 0)).save(r / "train/0002/cmyk.jpg"),
        Ok(samples=13, labels={"train/0002/cmyk.jpg": 2}),
    ),
    TreeCase(
        "tree-palette-png-transparency",
        _write("train/0002/pal.png", png(33, mode="P")),
        Ok(samples=13, labels={"train/0002/pal.png": 2}),
    ),
    TreeCase("tree-grey-alpha-png", _write("train/0002/la.png", png(34, mode="LA")), Ok(samples=13)),
    TreeCase("tree-one-bit-png", _write("train/0002/bw.png", png(255, mode="1")), Ok(samples=13)),
    TreeCase("tree-gif", lambda r: Image.new("P", (8, 8), 3).save(r / "train/0002/a.gif"), Ok(samples=13)),
    TreeCase("tree-webp", lambda r: Image.new("RGB", (8, 8), (1, 2, 3)).save(r / "train/0002/a.webp"), Ok(samples=13)),
    TreeCase(
        "tree-unicode-names",
        _write("train/0001/日本 ö.png", png(150)),
        Ok(samples=13, labels={"train/0001/日本 ö.png": 1}),
    ),
    TreeCase(
        "tree-name-trailing-space",
        _write("train/0001/end .png ", png(151)),
        Ok(samples=13, labels={"train/0001/end .png ": 1}),
    ),
    TreeCase(
        "tree-one-test-split",
        lambda r: None,
        Ok(samples=12, check=lambda out, root: not (out / "testb.txt").exists()),
        splits=("testa",),
    ),
]

TREE_CASES = META_CASES + LAYOUT_CASES


def build_case(case: TreeCase, base: Path) -> tuple[Path, list[str]]:
    """The case's data root under ``base``, and its clean-split arguments."""
    root = make_tree(base / "data")
    case.build(root)
    args = [str(root), "--splits", *case.splits]
    if case.meta:
        args += ["--meta-all", str(root / "meta.txt")]
    if case.num_classes is not None:
        args += ["--num-classes", str(case.num_classes)]
    return root, args


def check_outcome(case: TreeCase, rc: int, stderr: str, out: Path, root: Path, classes: list[str] | None = None):
    written = sorted(p.name for p in out.rglob("*")) if out.exists() else []
    if isinstance(case.expect, Err):
        assert rc != 0, f"{case.id}: accepted, expected an error"
        assert "Traceback" not in stderr, stderr
        lines = [ln for ln in stderr.splitlines() if "error:" in ln]
        assert len(lines) == 1 and re.search(case.expect.pattern, lines[0]), stderr
        assert written == [], f"{case.id}: wrote {written}"
        return
    assert rc == 0, f"{case.id}: refused valid input: {stderr}"
    removed = dict(ln.split("\t", 1) for ln in (out / "removed.tsv").read_text(encoding="utf-8").splitlines()[1:])
    assert set(removed) == set(case.expect.removed), removed
    for path, reason in case.expect.removed.items():
        assert re.search(reason, removed[path]), (path, removed[path])
        assert "0x" not in removed[path]
    samples = read_split_list(out / "all.txt")
    if case.expect.samples is not None:
        assert len(samples) == case.expect.samples
    by_path = dict(samples)
    for path, label in case.expect.labels.items():
        assert by_path[path] == label
    kept = read_split_list(out / "train.txt") + read_split_list(out / "val.txt")
    assert not {p for p, _ in kept} & set(removed)  # a drop is never trained on
    assert len(kept) + len([p for p in removed if p in by_path]) == len(samples)
    if classes is not None and case.expect.classes is not None:
        assert classes == case.expect.classes
    if case.expect.check:
        assert case.expect.check(out, root) is not False


@pytest.mark.parametrize("case", TREE_CASES, ids=lambda c: c.id)
def test_clean_split_command(case, tmp_path, capsys):
    root, args = build_case(case, tmp_path)
    out = tmp_path / "out"
    try:
        main(["clean-split", *args, "--out", str(out)])
        rc = 0
    except SystemExit as e:
        rc = e.code
    stderr = capsys.readouterr().err
    if isinstance(case.expect, Err):
        assert rc == 2
    check_outcome(case, rc, "\n".join(ln for ln in stderr.splitlines() if "clean_split: decode" not in ln), out, root)


# ------------------------------------------------------------------ rule scripts, as Snakemake runs them

RUNNER = r"""
import json, os, runpy, sys, traceback
jobs = json.load(open(sys.argv[1]))

class Named(list):
    def __init__(self, items):
        super().__init__(v for _, v in items)
        for k, v in items:
            if k:
                setattr(self, k, v)

class Snakemake:
    def __init__(self, d):
        self.rule, self.threads = d["rule"], 1
        for part in ("input", "output", "log", "params", "wildcards"):
            setattr(self, part, Named(d.get(part, [])))

results = []
for job in jobs:
    term = job["cwd"] + "/" + job["rule"] + ".terminal"
    pid = os.fork()
    if pid == 0:
        os.chdir(job["cwd"])
        sys.stderr = open(term, "w")
        try:
            runpy.run_path(job["script"], init_globals={"snakemake": Snakemake(job)}, run_name="__main__")
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            sys.excepthook(*sys.exc_info())  # what the interpreter does with an uncaught exception
            code = 1
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    results.append(os.waitstatus_to_exitcode(status))
json.dump(results, open(sys.argv[2], "w"))
"""


def run_rule_scripts(jobs: list[dict], tmp: Path) -> list[int]:
    """Run workflow scripts like Snakemake's ``script:`` (a ``snakemake`` object, run as
    __main__), each in a forked child of one runner process; returns the exit statuses."""
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(tmp / "jobs.json"), str(tmp / "rc.json")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads((tmp / "rc.json").read_text())


def clean_jobs(case: TreeCase, root: Path, cwd: Path) -> list[dict]:
    params = [
        ("root", str(root)),
        ("num_classes", case.num_classes),
        ("meta_all", str(root / "meta.txt") if case.meta else None),
        ("splits", list(case.splits)),
        ("val_fraction", 0.1),
        ("val_min_per_class", 1),
        ("seed", 0),
    ]
    outputs = [(k, f"results/clean/{k}.txt") for k in ("all", "train", "val")]
    outputs += [("removed", "results/clean/removed.tsv"), ("stats", "results/clean/stats.json")]
    clean = {
        "rule": "clean_split",
        "cwd": str(cwd),
        "script": str(REPO / "workflow/scripts/clean_split.py"),
        "params": params,
        "output": outputs,
        "log": [(None, str(cwd / "clean_split.log"))],
    }
    classes = {
        "rule": "class_list",
        "cwd": str(cwd),
        "script": str(REPO / "workflow/scripts/class_list.py"),
        "params": params[:3],
        "input": [(None, "results/clean/stats.json")],
        "output": [(None, "results/clean/classes.tsv")],
        "log": [(None, str(cwd / "class_list.log"))],
    }
    return [clean, classes]


@pytest.fixture(scope="module")
def rule_runs(tmp_path_factory):
    """Every tree case through the clean_split rule script, then (as the DAG orders it, only
    when clean_split succeeded) the class_list script: one runner process for all."""
    base = tmp_path_factory.mktemp("rules")
    jobs, where = [], {}
    for case in TREE_CASES:
        cwd = base / case.id
        cwd.mkdir()
        root, _ = build_case(case, cwd)
        where[case.id] = (len(jobs), cwd, root)
        jobs += clean_jobs(case, root, cwd)
    # class_list must not run after a failed clean_split: run the clean jobs first
    rcs = run_rule_scripts(jobs[0::2], base)
    (base / "second").mkdir()
    rcs2 = iter(run_rule_scripts([jobs[2 * i + 1] for i, rc in enumerate(rcs) if rc == 0], base / "second"))
    results = {}
    for i, case in enumerate(TREE_CASES):
        _, cwd, root = where[case.id]
        rc_class = next(rcs2) if rcs[i] == 0 else None
        results[case.id] = (rcs[i], rc_class, cwd, root)
    return results


@pytest.mark.parametrize("case", TREE_CASES, ids=lambda c: c.id)
def test_clean_split_and_class_list_rules(case, rule_runs):
    rc, rc_class, cwd, root = rule_runs[case.id]
    terminal = (cwd / "clean_split.terminal").read_text()
    log = (cwd / "clean_split.log").read_text()
    assert "Traceback" not in log + terminal, log
    classes = None
    if rc == 0:
        assert rc_class == 0, (cwd / "class_list.log").read_text()
        lines = (cwd / "results/clean/classes.tsv").read_text().splitlines()
        classes = [ln.split("\t")[1] for ln in lines[1:]]
    else:
        # the one line, in the log and on the terminal, prefixed with the rule
        assert terminal.startswith("clean_split: error: ") and terminal.count("\n") == 1, terminal
        assert terminal.strip() in log
    stderr = terminal if rc else ""
    check_outcome(case, rc, stderr, cwd / "results/clean", root, classes)


def test_rule_script_keeps_tracebacks_for_bugs(tmp_path):
    """A real bug (not an InputError) still shows its traceback, in the log."""
    script = tmp_path / "buggy.py"
    script.write_text("from webfg.io import rule_script\n\nrule_script(snakemake)\n{}['missing']\n")
    job = {"rule": "buggy", "cwd": str(tmp_path), "script": str(script), "log": [(None, str(tmp_path / "b.log"))]}
    assert run_rule_scripts([job], tmp_path) == [1]
    log = (tmp_path / "b.log").read_text()
    assert "Traceback" in log and "KeyError: 'missing'" in log


# ------------------------------------------------------------------ images: the one decoder


def _decode_cases():
    from webfg.images import decode_error  # noqa: F401

    truncated_png = png(9, size=(64, 64))
    return [
        ("empty", b"", r"^empty file \(0 bytes\)$"),
        ("html", b"  <!DOCTYPE html><html><body>404</body></html>", r"^HTML, not an image \(\d+ bytes"),
        ("html-upper", b"<HTML><HEAD></HEAD></HTML>", r"^HTML, not an image"),
        ("json-text", b'{"error": "not found"}', r"^text, not an image \(22 bytes, starts '\{\"error\""),
        ("utf8-text", "Grüße\n".encode(), r"^text, not an image"),
        ("zeros", bytes(100), r"^not an image \(unknown format, 100 bytes starting 00 00"),
        (
            "png-header-only",
            truncated_png[:33],
            r"^truncated or damaged PNG: its header does not parse \(the file ends at byte 33\)$",
        ),
        ("png-truncated", truncated_png[: len(truncated_png) // 2], r"^truncated (or damaged )?PNG.* at byte \d+"),
        ("jpeg-truncated", jpeg(120)[:200], r"^truncated (or damaged )?JPEG.* at byte 200"),
        (
            "jpeg-cut-in-data",
            _noise_jpeg()[:6000],
            r"^truncated JPEG: the file ends at byte \d+ before the image data does$",
        ),
        ("jpeg-header-only", jpeg(120)[:20], r"^(truncated|broken)"),
        ("gif-truncated", _gif()[:30], r"^(truncated|broken)"),
        ("ok-png", png(5), None),
        ("ok-jpeg", jpeg(5), None),
        ("ok-png16", png16(40000), None),
    ]


def _noise_jpeg():
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(buf, format="JPEG")
    assert len(buf.getvalue()) > 9000
    return buf.getvalue()


def _gif():
    buf = io.BytesIO()
    Image.new("P", (32, 32), 5).save(buf, format="GIF")
    return buf.getvalue()


@pytest.mark.parametrize("name, data, pattern", _decode_cases(), ids=[c[0] for c in _decode_cases()])
def test_decode_reasons_say_what_the_file_is(name, data, pattern):
    from webfg.images import decode_error

    reason = decode_error(data)
    if pattern is None:
        assert reason is None
    else:
        assert re.search(pattern, reason), reason
        assert "0x" not in reason and "\n" not in reason and "\t" not in reason
        assert decode_error(data) == reason  # the same on every run


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "LA", "1", "CMYK", "I;16"])
def test_open_rgb_matches_convert_where_convert_is_right(mode, tmp_path):
    """Without an orientation tag and at 8 bits, the pixels are exactly convert('RGB')'s
    (the demo decodes as before); 16-bit grey is scaled, not clipped to white."""
    from webfg.images import open_rgb

    rng = np.random.default_rng(0)
    if mode == "I;16":
        arr = rng.integers(0, 65536, (6, 5), dtype=np.uint16)
        Image.fromarray(arr).save(tmp_path / "x.png")
        got = np.asarray(open_rgb(tmp_path / "x.png"))
        assert got.shape == (6, 5, 3) and np.array_equal(got[..., 0], np.rint(arr / 257).astype(np.uint8))
        assert np.asarray(Image.open(tmp_path / "x.png").convert("RGB")).mean() > got.mean()  # convert clips
        return
    im = Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    im.save(path)
    with Image.open(path) as ref:
        expected = np.asarray(ref.convert("RGB"))
    assert np.array_equal(np.asarray(open_rgb(path)), expected)


@pytest.mark.parametrize("orientation, top_left_bright", [(1, True), (3, False), (6, True), (8, False)])
def test_exif_orientation_is_applied(orientation, top_left_bright, tmp_path):
    from webfg.images import open_rgb

    (tmp_path / "x.jpg").write_bytes(jpeg(255, exif_orientation=orientation))
    arr = np.asarray(open_rgb(tmp_path / "x.jpg"))
    assert arr.shape == ((8, 16, 3) if orientation in (1, 3) else (16, 8, 3))
    assert (arr[0, 0].mean() > 128) == top_left_bright


def test_training_and_inference_read_through_the_same_decoder(tmp_path):
    """data.ImageList (training, inference and MAE) sees the EXIF-upright, 16-bit-scaled image."""
    from webfg.data import ImageList

    (tmp_path / "r.jpg").write_bytes(jpeg(255, exif_orientation=6))
    (tmp_path / "d.png").write_bytes(png16(100 * 257))
    ds = ImageList(tmp_path, ["r.jpg", ("d.png", 3)])
    img, label = ds[0]
    assert img.size == (8, 16) and label == -1
    img, label = ds[1]
    assert np.asarray(img)[0, 0].tolist() == [100, 100, 100] and label == 3


def test_init_probe_uses_the_decoder(tmp_path):
    from webfg.init import inspect_dataset

    root = make_tree(tmp_path / "d")
    (root / "train/0001/deep.png").write_bytes(png16(50000))
    (root / "train/0001/Thumbs.db").write_bytes(bytes(64))
    report = inspect_dataset(root)
    assert report.class_counts == [4, 5, 4]  # the 16-bit PNG counts, Thumbs.db does not
    assert any("Thumbs.db" in w and "not an image" in w for w in report.warnings)


# ------------------------------------------------------------------ webfg init messages


def _init_case(tmp_path, build, allow_broken=False):
    from webfg.init import inspect_dataset

    root = make_tree(tmp_path / "d")
    build(root)
    return inspect_dataset(root, allow_broken_train=allow_broken)


def test_init_counts_and_names_every_unreadable_image(tmp_path):
    def build(root):
        for i in range(8):
            (root / f"train/000{i % 3}/bad{i}.png").write_bytes(b"<html>" + bytes([i]))

    with pytest.raises(InputError) as e:
        _init_case(tmp_path, build)
    msg = str(e.value)
    assert "8 of 20 decoded training image(s) unreadable" in msg and "and 3 more" in msg
    assert msg.count("bad") == 5 and "0x" not in msg
    report = _init_case(tmp_path / "again", build, allow_broken=True)
    assert report.num_train == 12  # the 8 broken files are not training images


def test_init_warns_when_a_test_split_is_missing_and_names_what_it_found(tmp_path):
    def build(root):
        for f in (root / "testb").iterdir():
            f.unlink()
        (root / "testb").rmdir()

    report = _init_case(tmp_path, build)
    assert any("found 1 test split folder (testa)" in w and "testb" in w for w in report.warnings)
    assert "warning: found 1 test split folder (testa)" in report.summary()


def test_init_refuses_a_thumbs_db_only_class(tmp_path):
    def build(root):
        for f in (root / "train/0002").iterdir():
            f.unlink()
        (root / "train/0002/Thumbs.db").write_bytes(bytes(64))

    with pytest.raises(InputError, match=r"1 empty class folder\(s\): \['0002'\].*Thumbs.db"):
        _init_case(tmp_path, build)


def test_init_refuses_a_class_with_no_readable_image(tmp_path):
    def build(root):
        for f in (root / "train/0002").iterdir():
            f.write_bytes(b"<html>")

    with pytest.raises(InputError, match=r"class folder\(s\) \['0002'\] hold no readable image"):
        _init_case(tmp_path, build, allow_broken=True)


def test_init_warns_about_loose_and_nested_files(tmp_path):
    def build(root):
        (root / "train/loose.png").write_bytes(png(1))
        (root / "train/0001/sub").mkdir()
        (root / "train/0001/sub/x.png").write_bytes(png(2))

    report = _init_case(tmp_path, build)
    text = " ".join(report.warnings)
    assert "1 file(s) directly in train/ have no class (e.g. loose.png)" in text
    assert "train/0001/sub/x.png" in text and report.class_counts == [4, 4, 4]


# ------------------------------------------------------------------ configs

BASE_CONFIG = (REPO / "config/tiny.yaml").read_text()


def _dup(after: str, extra: str):
    assert after in BASE_CONFIG
    return BASE_CONFIG.replace(after, after + extra, 1)


CONFIG_CASES = [
    ("config-valid", BASE_CONFIG, None),
    ("config-bom", "\ufeff" + BASE_CONFIG, None),
    ("config-crlf", BASE_CONFIG.replace("\n", "\r\n"), None),
    ("config-merge-key-override", "base: &b {epochs: 2, lr: 1}\nm:\n  <<: *b\n  epochs: 3\n", None),
    (
        "config-dup-top-level",
        BASE_CONFIG + "clean:\n  val_fraction: 0.5\n",
        r":\d+: duplicate key 'clean' \(first at line \d+\)",
    ),
    (
        "config-dup-nested",
        _dup("  val_fraction: 0.1\n", "  val_fraction: 0.3\n"),
        r":\d+: duplicate key 'val_fraction' \(first at line \d+\)",
    ),
    (
        "config-dup-flow",
        BASE_CONFIG.replace("demo: {build: true,", "demo: {build: true, build: false,"),
        r"duplicate key 'build'",
    ),
    (
        "config-dup-round",
        "rounds:\n  r0: {models: [a]}\n  a1: {models: [a]}\n  r0: {models: [b]}\n",
        r":4: duplicate key 'r0' \(first at line 2\)",
    ),
    (
        "config-dup-threshold",
        "pseudo:\n  threshold: 0.4\n  from: r0\n  threshold: 0.5\n",
        r":4: duplicate key 'threshold' \(first at line 2\)",
    ),
    ("config-tab-indent", "data:\n\troot: x\n", r":2: not valid YAML"),
    ("config-unclosed-bracket", "data: [a, b\n", r":2: not valid YAML"),
    ("config-bad-indent", "data:\n  root: x\n   num_classes: 3\n", r":3: not valid YAML"),
    ("config-latin1", b"data:\n  root: caf\xe9\n", r"not UTF-8 text"),
    ("config-python-tag", "data: !!python/object/apply:os.system ['touch pwned']\n", r":1: not valid YAML"),
]


@pytest.mark.parametrize("name, text, pattern", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_yaml_reader(name, text, pattern, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    if pattern is None:
        import yaml

        assert read_yaml(path) == yaml.safe_load(path.read_bytes().decode("utf-8-sig"))
        return
    with pytest.raises(InputError, match=re.escape(str(path)) + ("" if pattern.startswith(":") else ".*") + pattern):
        read_yaml(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "name, text, pattern", [c for c in CONFIG_CASES if c[2]], ids=[c[0] for c in CONFIG_CASES if c[2]]
)
def test_status_command_names_the_config_line(name, text, pattern, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(SystemExit) as e:
        main(["status", "--configfile", str(path), "-d", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and re.search(pattern, err), err


MODEL_CASES = [
    ("model-valid", {"arch": "resnet18"}, None),
    ("model-valid-pretrained-tag", {"arch": "vit_tiny_patch16_224.augreg_in21k"}, None),
    (
        "model-unknown-arch",
        {"arch": "swinv2_tiny_windw8_256"},
        r"models\.m\.arch: 'swinv2_tiny_windw8_256' is not a timm model .*close matches: swinv2_tiny_window8_256",
    ),
    ("model-nonsense-arch", {"arch": "zzzz"}, r"models\.m\.arch: 'zzzz' is not a timm model .*timm\.list_models"),
    ("model-missing-arch", {"epochs": 3}, r"models\.m: missing key\(s\) \['arch'\]"),
    ("model-unknown-key", {"arch": "resnet18", "epoch": 3}, r"models\.m: unknown key\(s\) \['epoch'\]"),
    ("model-wrong-type", {"arch": "resnet18", "epochs": "ten"}, r"models\.m\.epochs: expected int, got 'ten'"),
    ("model-bool-for-int", {"arch": "resnet18", "epochs": True}, r"models\.m\.epochs: expected int"),
    ("model-bad-head", {"arch": "resnet18", "head": "cosface"}, r"models\.m\.head: 'cosface' is not one of"),
    ("model-zero-epochs", {"arch": "resnet18", "epochs": 0}, r"models\.m\.epochs: must be at least 1"),
    ("model-short-tuple", {"arch": "resnet18", "crop_scale": [0.5]}, r"models\.m\.crop_scale: expected a list of 2"),
    ("model-not-a-mapping", ["arch", "resnet18"], r"models\.m: expected a mapping"),
]


@pytest.mark.parametrize("name, entry, pattern", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_model_entries_are_checked_with_their_key(name, entry, pattern):
    from webfg.config import ModelConfig, check_arch

    if pattern is None:
        cfg = ModelConfig.from_dict(entry, where="models.m")
        check_arch(cfg.arch, "models.m")
        assert cfg.arch == entry["arch"]
        return
    with pytest.raises(InputError, match=pattern):
        check_arch(ModelConfig.from_dict(entry, where="models.m").arch, "models.m")


def test_convert_command_refuses_a_duplicate_key(tmp_path, capsys):
    cfg = tmp_path / "m.yaml"
    cfg.write_text("arch: resnet18\nhead: linear\narch: resnet50\n")
    with pytest.raises(SystemExit) as e:
        main(["convert", "--in", str(tmp_path / "x.pth"), "--config", str(cfg), "--out", str(tmp_path / "o.pt")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "m.yaml:3: duplicate key 'arch' (first at line 1)" in err and "Traceback" not in err
    assert not (tmp_path / "o.pt").exists()


# ------------------------------------------------------------------ pickles (import-legacy)


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


class RunsEval:
    def __reduce__(self):
        return (eval, ("open('pwned', 'w')",))


GOOD_ROWS = [
    {"filename": "a.jpg", "scores": np.array([0.75, 0.25], np.float32)},
    {"filename": "b.jpg", "scores": np.array([0.125, 0.875], np.float32)},
]

PICKLE_CASES = [
    ("pkl-valid-list", pickle.dumps(GOOD_ROWS), None),
    ("pkl-valid-protocol2", pickle.dumps(GOOD_ROWS, protocol=2), None),
    (
        "pkl-valid-columns",
        pickle.dumps({"filename": ["a.jpg", "b.jpg"], "scores": np.array([[0.75, 0.25], [0.125, 0.875]])}),
        None,
    ),
    ("pkl-valid-dict", pickle.dumps({"a.jpg": np.array([0.75, 0.25]), "b.jpg": np.array([0.125, 0.875])}), None),
    (
        "pkl-os-system",
        pickle.dumps([{"filename": "a.jpg", "scores": RunsCode()}]),
        r"refusing to unpickle (posix|os)\.system",
    ),
    ("pkl-eval", pickle.dumps(RunsEval()), r"refusing to unpickle builtins\.eval"),
    ("pkl-truncated", pickle.dumps(GOOD_ROWS)[:25], r"not a readable pickle"),
    ("pkl-empty", b"", r"not a readable pickle"),
    ("pkl-text", b"filename,scores\na.jpg,0.5\n", r"not a readable pickle"),
    ("pkl-nan", pickle.dumps([{"filename": "a.jpg", "scores": np.array([np.nan, 1.0])}]), r"NaN, inf or negative"),
    ("pkl-logits", pickle.dumps([{"filename": "a.jpg", "scores": np.array([2.0, 3.0])}]), r"does not sum"),
    ("pkl-ragged", pickle.dumps([GOOD_ROWS[0], {"filename": "b.jpg", "scores": np.ones(3) / 3}]), r"different lengths"),
    ("pkl-no-filename", pickle.dumps([{"name": "a.jpg", "scores": np.ones(2) / 2}]), r"no 'filename' key"),
    ("pkl-duplicate-name", pickle.dumps([GOOD_ROWS[0], GOOD_ROWS[0]]), r"a file name appears twice"),
    (
        "pkl-object-array",
        pickle.dumps([{"filename": "a.jpg", "scores": np.array([object()], dtype=object)}]),
        r"object array|refusing",
    ),
    ("pkl-wrong-shape", pickle.dumps({"something": 1}), r"expected a list of"),
]


@pytest.mark.parametrize("name, data, pattern", PICKLE_CASES, ids=[c[0] for c in PICKLE_CASES])
def test_import_legacy_command(name, data, pattern, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m-7500.pkl").write_bytes(data)
    out = tmp_path / "legacy"
    try:
        main(["import-legacy", str(tmp_path / "m-7500.pkl"), "--out-dir", str(out)])
        rc = 0
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()
    if pattern is None:
        from webfg.io import load_predictions

        probs, rows, meta = load_predictions(out / "m-7500")
        assert rc == 0 and rows == ["testb/a.jpg", "testb/b.jpg"] and meta["val_accuracy"] == 0.75
        assert probs.tolist() == [[0.75, 0.25], [0.125, 0.875]]
    else:
        assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
        assert re.search(r"m-7500\.pkl: .*" + pattern, err), err
        assert not out.exists() or list(out.iterdir()) == []


def test_legacy_import_rule_script(tmp_path):
    """The same pickles through the legacy_import rule script: one line or a prediction."""
    jobs = []
    for name, data, _ in PICKLE_CASES:
        cwd = tmp_path / name
        cwd.mkdir()
        (cwd / "m-7500.pkl").write_bytes(data)
        jobs.append(
            {
                "rule": "legacy_import",
                "cwd": str(cwd),
                "script": str(REPO / "workflow/scripts/legacy_import.py"),
                "input": [(None, "m-7500.pkl")],
                "params": [("split", "testb")],
                "output": [(None, "out/m.npy"), (None, "out/m.rows.txt"), (None, "out/m.json")],
                "log": [(None, str(cwd / "log.txt"))],
            }
        )
    rcs = run_rule_scripts(jobs, tmp_path)
    for (name, _, pattern), rc in zip(PICKLE_CASES, rcs):
        cwd = tmp_path / name
        terminal, log = (cwd / "legacy_import.terminal").read_text(), (cwd / "log.txt").read_text()
        assert "Traceback" not in log + terminal and not (cwd / "pwned").exists(), (name, log)
        if pattern is None:
            assert rc == 0 and (cwd / "out/m.rows.txt").read_text() == "testb/a.jpg\ntestb/b.jpg\n", (name, log)
        else:
            assert rc == 1 and re.fullmatch(r"legacy_import: error: m-7500\.pkl: .*\n", terminal), (name, terminal)
            assert re.search(pattern, terminal) and terminal.strip() in log, (name, terminal)
            assert not (cwd / "out").exists() or list((cwd / "out").iterdir()) == []


# ------------------------------------------------------------------ checkpoints (soup)


def _ckpts(tmp_path):
    import torch

    good = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(7)}
    return {
        "a.pth": good,
        "b.pth": {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(8)},
        "keys.pth": {"v": torch.tensor([1.0, 3.0]), "n": torch.tensor(7)},
        "shape.pth": {"w": torch.tensor([1.0, 3.0, 4.0]), "n": torch.tensor(7)},
        "evil.pth": RunsCode(),
        "notensors.pth": {"w": [1.0, 3.0]},
    }


SOUP_CASES = [
    ("soup-valid", ["a.pth", "b.pth"], None),
    ("soup-state-dict-wrapper", ["wrapped.pth", "wrapped.pth"], None),
    ("soup-keys-differ", ["a.pth", "keys.pth"], r"keys\.pth: keys differ from .*a\.pth"),
    ("soup-shape-differs", ["a.pth", "shape.pth"], r"shape\.pth: 'w' is \(3,\) torch\.float32"),
    (
        "soup-hostile-pickle",
        ["a.pth", "evil.pth"],
        r"evil\.pth: not a loadable webfg checkpoint \(it holds Python "
        r"objects besides tensors and plain containers, which are never unpickled\)$",
    ),
    ("soup-no-tensors", ["notensors.pth"], r"notensors\.pth: expected a state dict of tensors"),
    ("soup-text-file", ["text.pth"], r"text\.pth: not a loadable webfg checkpoint"),
    ("soup-empty-file", ["empty.pth"], r"empty\.pth: not a loadable webfg checkpoint"),
    ("soup-missing-file", ["missing.pth"], r"missing\.pth: not a loadable webfg checkpoint"),
    ("soup-truncated", ["a.pth", "cut.pth"], r"cut\.pth: not a loadable webfg checkpoint"),
]


@pytest.mark.parametrize(
    "name, files, pattern", SOUP_CASES, ids=[c.values[0] if hasattr(c, "marks") else c[0] for c in SOUP_CASES]
)
def test_soup_command(name, files, pattern, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    for fname, obj in _ckpts(tmp_path).items():
        torch.save(obj, tmp_path / fname)
    torch.save({"state_dict": {"w": torch.tensor([2.0])}, "meta": {"epoch": 3}}, tmp_path / "wrapped.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint\n")
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "a.pth").read_bytes()[:100])
    out = tmp_path / "soup.pth"
    try:
        main(["soup", *[str(tmp_path / f) for f in files], "--out", str(out)])
        rc = 0
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()
    if pattern is None:
        soup = torch.load(out, weights_only=True)
        if name == "soup-valid":
            assert rc == 0 and soup["w"].tolist() == [2.0, 4.0] and soup["n"].item() == 8
        else:
            assert soup["state_dict"]["w"].tolist() == [2.0] and soup["meta"] == {"epoch": 3}
        assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # the umask's mode, not 0600
    else:
        assert not out.exists() and not list(tmp_path.glob(".soup*"))
        assert rc == 2 and "Traceback" not in err and re.search(pattern, err), err
        assert err.count("\n") == 1, err


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_outputs_follow_the_umask(mask, tmp_path):
    from webfg.io import write_text

    old = os.umask(mask)
    try:
        write_text(tmp_path / "x.txt", "x\n")
    finally:
        os.umask(old)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o666 & ~mask


# ------------------------------------------------------------------ real Snakemake: the wiring


def _snakemake(workdir: Path, config: Path, *targets: str) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, *targets, configs=[config], cores=1, check=False)


def _tiny_config(tmp_path: Path, root: Path, **replace) -> Path:
    text = BASE_CONFIG.replace("root: data/tiny", f"root: {root}").replace("build: true", "build: false")
    text = text.replace("answers: data/tiny/answers", "answers: null")
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.mark.dag
def test_snakemake_input_error_is_one_line_on_the_terminal_and_nothing_is_written(tmp_path):
    root = make_tree(tmp_path / "data")
    (root / "meta.txt").write_text(META.replace("0001/2.png 1", "0001/2.png one"))
    config = _tiny_config(
        tmp_path,
        root,
        **{"test_splits: [testa, testb]": f"test_splits: [testa, testb]\n  meta_all: {root / 'meta.txt'}"},
    )
    proc = _snakemake(tmp_path, config, "results/clean/classes.tsv")
    assert proc.returncode != 0
    terminal = proc.stdout + proc.stderr
    assert f"clean_split: error: {root / 'meta.txt'}:7: label 'one' is not an integer" in terminal
    assert "Traceback" not in terminal
    assert [p for p in tmp_path.glob("results/**/*") if p.is_file()] == []
    assert (tmp_path / "logs/clean/clean_split.log").read_text().count("\n") == 1


@pytest.mark.dag
def test_snakemake_records_layout_drops_and_writes_the_class_list(tmp_path):
    root = make_tree(tmp_path / "data")
    (root / "train/stray.png").write_bytes(png(1))
    (root / "train/0001/sub").mkdir()
    (root / "train/0001/sub/x.png").write_bytes(png(2))
    proc = _snakemake(
        tmp_path, _tiny_config(tmp_path, root, **{"num_classes: 6": "num_classes: 3"}), "results/clean/classes.tsv"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    removed = (tmp_path / "results/clean/removed.tsv").read_text()
    assert "train/stray.png\tdirectly in train/" in removed and "train/0001/sub/x.png\tin sub-folder" in removed
    assert (tmp_path / "results/clean/classes.tsv").read_text() == "id\tname\n0\t0000\n1\t0001\n2\t0002\n"
    assert (tmp_path / "results/clean/train.txt").stat().st_mode & 0o777 == 0o666 & ~_umask()


@pytest.mark.dag
@pytest.mark.parametrize(
    "replace, message",
    [
        (
            {"  val_fraction: 0.1\n": "  val_fraction: 0.1\n  val_fraction: 0.5\n"},
            r"config .*config\.yaml:\d+: duplicate key 'val_fraction' \(first at line \d+\)",
        ),
        (
            {"arch: vit_tiny_r_s16_p8_224": "arch: vit_tiny_r_s16_p8_2244"},
            r"config models\.vit_linear\.arch: 'vit_tiny_r_s16_p8_2244' is not a timm model .*close matches: vit_tiny_r_s16_p8_224",
        ),
    ],
)
def test_snakemake_refuses_bad_configs_at_parse_time(tmp_path, replace, message):
    root = make_tree(tmp_path / "data")
    proc = _snakemake(tmp_path, _tiny_config(tmp_path, root, **replace), "-n")
    terminal = proc.stdout + proc.stderr
    assert proc.returncode != 0 and re.search(message, terminal), terminal[-2000:]
    assert "Traceback" not in terminal


@pytest.mark.parametrize("loader", ["webfg.train:load_model_config", "webfg.mae:load_mae_config"])
def test_model_and_pretrain_entries_are_read_like_the_config(loader, tmp_path):
    """`webfg train --config` and `webfg pretrain-mae --config` read YAML as the workflow
    does: a duplicate key names its line instead of letting the last value win."""
    import importlib

    module, name = loader.split(":")
    load = getattr(importlib.import_module(module), name)
    path = tmp_path / "m.yaml"
    path.write_text("arch: vit_tiny_patch16_224\nepochs: 2\nepochs: 30\n", encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(str(path)) + r":3: duplicate key 'epochs' \(first at line 2\)"):
        load(path)
    path.write_text("arch: vit_tiny_patch16_224\nepochs: 2\n", encoding="utf-8")
    assert load(path).epochs == 2
