"""Post-processing measured side by side in one run (issue 14), with hardware and versions.

1. Ensemble of M members (``webfg ensemble --power 25``, a fresh process each run: imports
   included) against the read floor (``cat``-like sequential read of the same files) cold
   (files evicted with posix_fadvise DONTNEED before the run) and warm (page cache), and
   against the original's method (tools/emsemble.py: one pickle per model, a dict of
   per-file float32 arrays summed in RAM), cold, in the same run; wall time and peak RSS.
2. Redistribution top-1 on synthetic worlds whose members have their own errors
   (architecture families sharing noise, private noise, per-model training-prior bias of
   varying strength; bench/synth.py): argmax, greedy at its best K (an oracle: K chosen
   on the test labels), prior, transport and map, on exactly balanced, i.i.d.-uniform and
   lognormal-0.15 test labels, two seeds; then wall time and peak RSS of
   ``webfg redistribute`` on the ensemble of part 1.
3. ``power: auto``: the power chosen on a val split (drawn from the training prior) and
   the test top-1 of p = 0, p = 25 and the choice, on the benchmark world and a 2-model
   world with spread accuracies.

    python bench/bench_postprocess.py --scale small          # 17 x 9,000 x 500, minutes
    python bench/bench_postprocess.py --scale full --workdir /work/synth
        # 17 x 90,000 x 5,000 (15.3 GB of float16; deleted afterwards unless --keep)
"""

from __future__ import annotations

import argparse
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

SCALES = {"tiny": (17, 1800, 100), "small": (17, 9000, 500), "mid": (17, 18000, 5000), "full": (17, 90000, 5000)}


def hardware() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem = next((int(line.split()[1]) // 1024**2 for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    cores = len(os.sched_getaffinity(0))
    return (
        f"{cpu}, {cores} cores, {mem} GiB RAM; Python {platform.python_version()}, numpy {np.__version__}, "
        f"{platform.platform()}"
    )


def evict(paths) -> None:
    """Drop the page cache of ``paths`` (posix_fadvise DONTNEED after a sync)."""
    os.sync()
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def measured(step: str, *args) -> tuple[float, float, str]:
    """Run ``step`` of this script in a fresh process: (wall s, peak RSS GiB, its stdout)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--step", step, *map(str, args)], stdout=subprocess.PIPE, text=True
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"step {step} failed ({proc.returncode})")
    *lines, peak = proc.stdout.strip().splitlines()
    return wall, int(peak) / 1024**2, "\n".join(lines)


def peak_rss_kib() -> int:
    """This process's peak RSS (VmHWM)."""
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
    from webfg.cli import main

    main(["ensemble", *stems, "--power", "25", "--out", out])
    print("torch imported" if "torch" in sys.modules else "torch not imported")


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


def step_redistribute(stem, method, k, train_list):
    from webfg.cli import main

    main(
        [
            "redistribute",
            stem,
            "--method",
            method,
            "--k",
            k,
            "--train-list",
            train_list,
            "--out",
            f"{stem}.{method}.tsv",
            "--counts",
            f"{stem}.{method}.counts.tsv",
        ]
    )


# ------------------------------------------------------------------------- parts


def part_ensemble(m, n, c, work: Path, legacy_models: int | None) -> Path:
    synth = Synth(m, n, c, seed=0)
    t0 = time.perf_counter()
    stems = synth.write(work / "models", "balanced", log=lambda msg: None)
    npys = [f"{s}.npy" for s in stems]
    size = sum(os.path.getsize(p) for p in npys)
    print(
        f"\n1. ensemble of {m} x {n} rows x {c} classes float16 ({size / 1e9:.2f} GB; generated in "
        f"{time.perf_counter() - t0:.0f} s)"
    )
    rows = []
    evict(npys)
    floor_cold, rss, _ = measured("read", *npys)
    rows.append(("read floor, cold", floor_cold, rss))
    floor_warm, rss, _ = measured("read", *npys)
    rows.append(("read floor, warm", floor_warm, rss))
    evict(npys)
    cold, rss_cold, note = measured("ensemble", work / "ens", *stems)
    rows.append(("webfg ensemble --power 25, cold", cold, rss_cold))
    warm, rss_warm, _ = measured("ensemble", work / "ens", *stems)
    rows.append(("webfg ensemble --power 25, warm", warm, rss_warm))

    lm = min(legacy_models or m, m)
    pkls = []
    for s in stems[:lm]:
        probs = np.load(f"{s}.npy", mmap_mode="r")
        data = [{"filename": f"{i:06d}.jpg", "scores": np.array(probs[i], dtype=np.float32)} for i in range(n)]
        path = work / f"{Path(s).name}.pkl"
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=4)
        pkls.append(path)
        del data
    evict(pkls)
    orig, orig_rss, _ = measured("original", *pkls)
    orig *= m / lm
    scaled = f" ({lm} of {m} models measured, time x {m}/{lm})" if lm < m else ""
    rows.append((f"original (pickles + dict), cold{scaled}", orig, orig_rss))
    for pkl in pkls:
        pkl.unlink()
    print(f"{'':52s} {'wall s':>8s} {'peak RSS GiB':>13s}")
    for name, wall, rss in rows:
        print(f"{name:52s} {wall:8.2f} {rss:13.2f}")
    print(
        f"cold: {cold / floor_cold:.2f}x the cold read floor; warm: {warm:.1f} s ({warm / floor_warm:.1f}x the "
        f"warm floor); {orig / cold:.1f}x faster than the original, both cold; {note}"
    )
    return work / "ens", synth


def ensemble_in_memory(synth: Synth, labels: np.ndarray) -> np.ndarray:
    ens = np.empty((synth.n, synth.c), np.float32)
    buf = np.empty((BLOCK, synth.c), np.float16)
    for start in range(0, synth.n, BLOCK):
        y = labels[start : start + BLOCK]
        total = np.zeros((y.size, synth.c), np.float32)
        for model in range(synth.m):
            total += synth.block(model, start, y, buf)[: y.size]
        ens[start : start + y.size] = total / synth.m
    return ens


def part_redistribution(m, n, c, seeds=(0, 1)):
    from webfg.postprocess import predicted_labels, redistribute_balanced, redistribute_greedy, redistribute_map

    per_class = n / c
    print(
        f"\n2. redistribution top-1 (%), {m} members x {n} rows x {c} classes, plain-mean ensemble in float32; "
        "methods as points over argmax"
    )
    header = f"{'test labels':10s} {'seed':>4s} {'argmax':>7s} {'greedy best K':>14s} {'prior':>7s} {'transport':>9s} {'map':>7s}"
    print(header)
    times: dict[str, list[float]] = {}
    for prior in ("balanced", "iid", "lognormal"):
        for seed in seeds:
            synth = Synth(m, n, c, seed=seed)
            labels = synth.labels(prior)
            ens = ensemble_in_memory(synth, labels)
            res = {}

            def timed(name, fn):
                t0 = time.perf_counter()
                out = fn()
                times.setdefault(name, []).append(time.perf_counter() - t0)
                return 100 * float((out == labels).mean())

            base = timed("argmax", lambda: predicted_labels(ens))
            greedy = [
                (timed("greedy", lambda: redistribute_greedy(ens, k)), k)
                for k in range(max(1, int(per_class) - 6), int(per_class) + 1)
            ]
            res["greedy"] = max(greedy)
            res["prior"] = timed("prior", lambda: redistribute_balanced(ens, "prior"))
            res["transport"] = timed("transport", lambda: redistribute_balanced(ens, "transport"))
            res["map"] = timed("map", lambda: redistribute_map(ens, synth.train_counts))
            g, k = res["greedy"]
            print(
                f"{prior:10s} {seed:4d} {base:7.2f} {g - base:+9.2f} K={k:<2d} {res['prior'] - base:+7.2f} "
                f"{res['transport'] - base:+9.2f} {res['map'] - base:+7.2f}",
                flush=True,
            )
    print("method wall s at this scale (in process): " + ", ".join(f"{k} {np.mean(v):.2f}" for k, v in times.items()))


def part_redistribute_command(stem: Path, synth: Synth, work: Path):
    from webfg.io import write_split_list

    train = work / "train.txt"
    write_split_list(
        train, [(f"train/{i}.jpg", int(y)) for i, y in enumerate(np.repeat(np.arange(synth.c), synth.train_counts))]
    )
    k = max(1, synth.n // synth.c - 2)
    print(f"\n{'webfg redistribute on the ensemble of part 1':52s} {'wall s':>8s} {'peak RSS GiB':>13s}")
    for method in ["greedy", "map", "prior", "transport"]:
        wall, rss, _ = measured("redistribute", stem, method, k, train)
        print(f"{method + (f' (k {k})' if method == 'greedy' else ''):52s} {wall:8.2f} {rss:13.2f}")


def part_power(m, n, c, work: Path):
    from webfg.io import write_split_list
    from webfg.postprocess import POWER_GRID, choose_power, member_accuracies

    print("\n3. power auto: test top-1 (%) of p = 0, p = 25 and the power chosen on val")
    worlds = [
        ("benchmark world", Synth(m, n, c, seed=0)),
        ("2 models, spread accuracies", Synth(2, n, c, seed=0, skill=[1.0, 0.3])),
    ]
    for name, synth in worlds:
        folder = work / "power" / name.split()[0]
        stems = synth.write(folder, "balanced", log=lambda msg: None, val_rows=n // 2)
        labels = np.loadtxt(folder / "labels.txt", dtype=np.int64)
        write_split_list(folder / "test.txt", [(f"testb/{i:06d}.jpg", int(y)) for i, y in enumerate(labels)])
        accs = member_accuracies(stems)
        chosen, val_table = choose_power([f"{s}.val" for s in stems], folder / "val.txt", accs)
        plain, _ = choose_power([f"{s}.val" for s in stems], folder / "val.txt", accs, balanced=False)
        _, test_table = choose_power(stems, folder / "test.txt", accs, balanced=False)
        test = dict(test_table)
        best_fixed = max(test[0.0], test[25.0])
        print(
            f"{name}: member val accuracy {min(accs):.3f}-{max(accs):.3f}; val (mean per-class recall) picks "
            f"p = {chosen:g} (plain val accuracy would pick {plain:g}); test "
            f"p=0 {100 * test[0.0]:.2f}, p=25 {100 * test[25.0]:.2f}, auto {100 * test[chosen]:.2f} "
            f"({100 * (test[chosen] - best_fixed):+.2f} vs the better of the two)"
        )
        print(
            "    val mean per-class recall by power: "
            + ", ".join(f"{p:g}: {100 * a:.2f}" for p, a in val_table)
            + f" (grid {list(POWER_GRID)})"
        )


def main():
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n")[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scale", choices=sorted(SCALES), default="small", help="ensemble files of part 1")
    p.add_argument("--world", choices=sorted(SCALES), default="small", help="worlds of parts 2 and 3")
    p.add_argument("--workdir", default="/tmp/webfg-bench-post")
    p.add_argument(
        "--legacy-models",
        type=int,
        help="models in the original's run (default: all; its time is scaled to all models, it is linear in M)",
    )
    p.add_argument("--parts", default="123")
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    p.add_argument("--step", help=argparse.SUPPRESS)
    a, rest = p.parse_known_args()
    if a.step:
        globals()[f"step_{a.step}"](*rest)
        print(peak_rss_kib())
        return
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    print(f"hardware: {hardware()}")
    try:
        if "1" in a.parts:
            stem, synth = part_ensemble(*SCALES[a.scale], work, a.legacy_models)
            part_redistribute_command(stem, synth, work)
            shutil.rmtree(work / "models")
        if "2" in a.parts:
            part_redistribution(*SCALES[a.world])
        if "3" in a.parts:
            part_power(*SCALES[a.world], work)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
