"""Post-processing at the challenge's scale, measured side by side in one run.

Prints, with the hardware and versions:
  * float16 -> float32 conversion speed of numpy, a lookup table and torch;
  * the streaming ensemble's wall time vs the cold sequential-read floor of the same
    files, vs a memory-mapped chunked sum (the previous implementation) and vs an
    original-style implementation (one pickle per model, a dict of per-file arrays),
    each in its own process with its peak RSS, page cache dropped before each;
  * top-1 accuracy of argmax / greedy at its best K / the balancing methods on a
    balanced and on an i.i.d. uniform test prior, and the time and peak RSS of
    ``webfg redistribute`` on the ensemble.

    python bench/bench_postprocess.py                       # small: 17 x 9,000 x 500, ~2 min
    flock /tmp/webfg-torch.lock python bench/bench_postprocess.py --scale full --workdir /work/synth
        # 17 x 90,000 x 5,000 (15.3 GB of float16; the work dir is deleted afterwards unless --keep)
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from synth import BLOCK, Synth  # noqa: E402

SCALES = {"tiny": (17, 1800, 100), "small": (17, 9000, 500), "full": (17, 90000, 5000)}


def hardware() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem = next((int(line.split()[1]) // 1024 ** 2 for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    import torch

    return (f"{cpu}, {os.cpu_count()} cores, {mem} GiB RAM; Python {platform.python_version()}, "
            f"numpy {np.__version__}, torch {torch.__version__}, {platform.platform()}")


def evict(paths) -> str:
    """Drop the page cache of ``paths``: /proc/sys/vm/drop_caches when writable, else
    posix_fadvise(DONTNEED) per file (drops clean cached pages without privileges)."""
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            os.sync()
            f.write("3\n")
        return "drop_caches"
    except OSError:
        pass
    os.sync()
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    return "posix_fadvise DONTNEED (drop_caches not permitted)"


def measured(step: str, *args) -> tuple[float, float, str]:
    """Run ``step`` of this script in a fresh process: (wall s, peak RSS GiB, its stdout)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--step", step, *map(str, args)], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    status = proc.wait()
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"step {step} failed ({status})")
    *lines, peak = out.strip().splitlines()
    return wall, int(peak) / 1024 ** 2, "\n".join(lines)


def peak_rss_kib() -> int:
    """This process's peak RSS (VmHWM; ru_maxrss would include the parent's at fork)."""
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))


# ------------------------------------------------------------------ steps (own process)


def step_read(*paths):
    """Sequential read of every file into one 16 MB buffer: the floor."""
    buf = bytearray(16 << 20)
    total = 0
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    print(total)


def step_ensemble(out, *stems):
    from webfg.postprocess import ensemble_predictions

    ensemble_predictions(stems, [1.0] * len(stems), out)


def step_memmap(out, *stems):
    """The previous implementation: np.load(mmap_mode='r') and a chunked float32 sum."""
    from numpy.lib.format import open_memmap

    mats = [np.load(f"{s}.npy", mmap_mode="r") for s in stems]
    n, c = mats[0].shape
    res = open_memmap(out, mode="w+", dtype=np.float16, shape=(n, c))
    for start in range(0, n, 8192):
        total = np.zeros((min(8192, n - start), c), np.float32)
        for m in mats:
            total += m[start:start + 8192].astype(np.float32) / len(mats)
        res[start:start + 8192] = total
    res.flush()


def step_original(*pkls):
    """tools/emsemble.py's way: load each model's pickle, sum per-file arrays in a dict
    (unpickled with webfg's restricted loader: same work, never runs code)."""
    from webfg.safe_pickle import load_data_pickle

    data_dict = {}
    for pkl in pkls:
        data = load_data_pickle(Path(pkl).read_bytes(), pkl)
        for item in data:
            if item["filename"] in data_dict:
                data_dict[item["filename"]] += item["scores"] / len(pkls)
            else:
                data_dict[item["filename"]] = item["scores"] / len(pkls)
        del data
    result = [(f, int(np.argmax(s)), s) for f, s in data_dict.items()]
    print(len(result))


def step_redistribute(stem, method):
    from webfg.cli import main

    main(["redistribute", stem, "--method", method, "--k", "16", "--out", f"{stem}.{method}.tsv",
          "--counts", f"{stem}.{method}.counts.tsv"])


# ------------------------------------------------------------------------- driver


def conversion_speeds(c: int) -> dict[str, float]:
    import torch

    torch.set_num_threads(1)
    x = np.random.default_rng(0).random((BLOCK, c)).astype(np.float16)
    out = np.empty(x.shape, np.float32)
    lut = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
    ways = {
        "numpy astype": lambda: x.astype(np.float32),
        "numpy copyto (preallocated)": lambda: np.copyto(out, x),
        "lookup table np.take": lambda: np.take(lut, x.view(np.uint16), out=out),
        "torch copy_ (preallocated)": lambda: torch.from_numpy(out).copy_(torch.from_numpy(x)),
    }
    speeds = {}
    for name, f in ways.items():
        f()
        t0 = time.perf_counter()
        for _ in range(5):
            f()
        speeds[name] = x.size * 5 / (time.perf_counter() - t0) / 1e9
    assert np.array_equal(out, x.astype(np.float32))
    torch.set_num_threads(os.cpu_count())
    return speeds


def in_memory_ensemble(synth: Synth, labels: np.ndarray) -> np.ndarray:
    ens = np.empty((synth.n, synth.c), np.float16)
    buf = np.empty((BLOCK, synth.c), np.float16)
    for start in range(0, synth.n, BLOCK):
        y = labels[start:start + BLOCK]
        total = np.zeros((y.size, synth.c), np.float32)
        for m in range(synth.m):
            total += synth.block(m, start, y, buf)[: y.size]
        ens[start:start + y.size] = total / synth.m
    return ens


def accuracies(ens: np.ndarray, labels: np.ndarray) -> list[tuple[str, float, float]]:
    from webfg.postprocess import predicted_labels, redistribute_balanced, redistribute_greedy

    per_class = ens.shape[0] / ens.shape[1]
    rows = []
    t0 = time.perf_counter()
    rows.append(("argmax", float((predicted_labels(ens) == labels).mean()), time.perf_counter() - t0))
    greedy = []
    for k in range(max(1, int(per_class) - 6), int(per_class) + 1):
        t0 = time.perf_counter()
        greedy.append((float((redistribute_greedy(ens, k) == labels).mean()), k, time.perf_counter() - t0))
    acc, k, sec = max(greedy)
    rows.append((f"greedy best K={k} (of {greedy[0][1]}..{greedy[-1][1]})", acc, sec))
    for method, strength in [("prior", 1.0), ("prior", 0.5), ("transport", 1.0)]:
        t0 = time.perf_counter()
        labels_m = redistribute_balanced(ens, method, strength)
        rows.append((f"{method} strength {strength}", float((labels_m == labels).mean()), time.perf_counter() - t0))
    return rows


def redistribute_times(stem) -> None:
    print(f"\n{'webfg redistribute on ' + Path(stem).name:34s} {'wall s':>8s} {'peak RSS GiB':>13s}")
    for method in ["greedy", "prior", "transport"]:
        wall, rss, _ = measured("redistribute", stem, method)
        print(f"{method:34s} {wall:8.1f} {rss:13.2f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n")[-1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=sorted(SCALES), default="small")
    p.add_argument("--workdir", default="/tmp/webfg-bench-post")
    p.add_argument("--legacy-models", type=int, help="models in the original-style run (default: all; "
                   "its time is scaled to all models, it is linear in M)")
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    p.add_argument("--redistribute-only", action="store_true",
                   help="time and peak RSS of `webfg redistribute` on one generated model at this scale, nothing else")
    p.add_argument("--step", help=argparse.SUPPRESS)
    a, rest = p.parse_known_args()
    if a.step:
        globals()[f"step_{a.step}"](*rest)
        print(peak_rss_kib())
        return

    m, n, c = SCALES[a.scale]
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    print(f"hardware: {hardware()}")
    print(f"scale: {m} models x {n} rows x {c} classes (float16 on disk: {m * n * c * 2 / 1e9:.1f} GB) in {work}")
    for name, speed in conversion_speeds(c).items():
        print(f"float16->float32 {name:30s} {speed:6.2f} Gelem/s (1 thread)")

    if a.redistribute_only:
        stem = Synth(1, n, c, seed=0).write(work / "models", "balanced", log=lambda msg: None)[0]
        redistribute_times(stem)
        if not a.keep:
            shutil.rmtree(work)
        return
    synth = Synth(m, n, c, seed=0)
    t0 = time.perf_counter()
    stems = synth.write(work / "models", "balanced", log=lambda msg: None)
    single = [float(json.load(open(f"{s}.json"))["val_accuracy"]) for s in stems]
    print(f"generated in {time.perf_counter() - t0:.0f} s; single models top-1 {min(single):.3f}-{max(single):.3f} "
          f"(mean {np.mean(single):.3f})")
    npys = [f"{s}.npy" for s in stems]

    how = evict(npys)
    floor, floor_rss, _ = measured("read", *npys)
    print(f"\npage cache dropped with {how}")
    print(f"{'ensemble of ' + str(m):34s} {'wall s':>8s} {'x floor':>8s} {'peak RSS GiB':>13s}")
    print(f"{'cold sequential read (floor)':34s} {floor:8.1f} {1.0:8.2f} {floor_rss:13.2f}")
    evict(npys)
    ours, ours_rss, _ = measured("ensemble", work / "ens", *stems)
    print(f"{'webfg streaming ensemble':34s} {ours:8.1f} {ours / floor:8.2f} {ours_rss:13.2f}")
    evict(npys)
    mm, mm_rss, _ = measured("memmap", work / "ens_memmap.npy", *stems)
    print(f"{'memmap chunked sum (previous)':34s} {mm:8.1f} {mm / floor:8.2f} {mm_rss:13.2f}")
    (work / "ens_memmap.npy").unlink()

    lm = min(a.legacy_models or m, m)
    pkls = []
    for s in stems[:lm]:
        probs = np.load(f"{s}.npy", mmap_mode="r")
        names = [f"{i:06d}.jpg" for i in range(n)]
        data = [{"filename": f, "scores": np.array(probs[i], dtype=np.float32)} for i, f in enumerate(names)]
        path = work / f"{s.name}.pkl"
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=4)
        pkls.append(path)
        del data
    evict(pkls)
    orig, orig_rss, _ = measured("original", *pkls)
    scaled = orig * m / lm
    note = f" ({lm} models measured, time x{m}/{lm})" if lm < m else ""
    print(f"{'original-style (pickles + dict)':34s} {scaled:8.1f} {scaled / floor:8.2f} {orig_rss:13.2f}{note}")
    print(f"streaming ensemble is {scaled / ours:.1f}x faster than original-style, cold")
    for pkl in pkls:
        pkl.unlink()

    print(f"\n{'top-1 accuracy':44s} {'balanced':>9s} {'iid':>9s} {'s (bal.)':>9s}")
    bal_labels = synth.labels("balanced")
    from webfg.io import load_predictions

    ens_bal = np.array(load_predictions(work / "ens")[0])
    bal = accuracies(ens_bal, bal_labels)
    del ens_bal
    iid_labels = synth.labels("iid")
    iid = accuracies(in_memory_ensemble(synth, iid_labels), iid_labels)
    for (name, acc_b, sec), (_, acc_i, _) in zip(bal, iid):
        print(f"{name:44s} {acc_b:9.4f} {acc_i:9.4f} {sec:9.1f}")

    redistribute_times(work / "ens")
    if not a.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
