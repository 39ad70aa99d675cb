"""``webfg status``: where a run stands, read from results/ and Snakemake's own state.

Nothing is started and no DAG is built (that takes torch-free seconds, but a running
Snakemake holds the lock): a job's output is *done* when it exists and is not marked
incomplete, *running* when Snakemake marked it incomplete while a Snakemake process
holds the directory's locks, *interrupted* when marked without locks (the next run
redoes it; training resumes from its checkpoint), *pending* otherwise. Whether a done
output is outdated by a config or code change is for ``snakemake -n`` to say.

The two marker formats are Snakemake's own, not a public interface (its API offers no
read-only query that does not build the DAG and take the lock): a test runs the installed
Snakemake and checks that both are read back, so an upgrade that changes them fails there.
"""

from __future__ import annotations

import os
import re
from base64 import urlsafe_b64decode
from pathlib import Path

from webfg.layout import Layout

DONE, RUNNING, INTERRUPTED, PENDING = "done", "running", "interrupted", "pending"


def incomplete_outputs(workdir: Path) -> set[str]:
    """Output paths Snakemake marked incomplete (.snakemake/incomplete/<urlsafe b64 of the path>,
    split into '@'-prefixed folders when longer than a file name may be)."""
    base = workdir / ".snakemake" / "incomplete"
    found = set()
    for dirpath, _, filenames in os.walk(base):
        rel = Path(dirpath).relative_to(base).parts
        for name in filenames:
            if name == "migration_underway":
                continue
            encoded = "".join(p.removeprefix("@") for p in rel) + name
            try:
                found.add(urlsafe_b64decode(encoded).decode())
            except ValueError:
                continue  # not a marker of this format
    return found


def locked_outputs(workdir: Path) -> set[str]:
    """Outputs locked by a Snakemake process on this directory (.snakemake/locks/N.output.lock)."""
    locked = set()
    for lock in (workdir / ".snakemake" / "locks").glob("*.output.lock"):
        locked.update(line.strip() for line in lock.read_text(encoding="utf-8").splitlines() if line.strip())
    return locked


def last_epoch(state_dir: Path) -> int:
    """The last finished epoch of a training job, from its resumable checkpoints."""
    epochs = [int(m.group(1)) for p in state_dir.glob("epoch_*.pt") if (m := re.fullmatch(r"epoch_(\d+)\.pt", p.name))]
    return max(epochs, default=0)


PROGRESS_LINE = re.compile(r".*\S+/s elapsed \d")


def last_progress(log: Path, tail_bytes: int = 8192) -> str:
    """The newest progress report (``epoch 3/8: 450/1000 45% ... ETA 0:44``) in a job's log,
    '' when there is none yet. webfg.progress writes one every 30 s into a log file."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - tail_bytes))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in re.split(r"[\r\n]", tail) if PROGRESS_LINE.match(line)]
    return lines[-1] if lines else ""


def collect_status(config: dict, workdir=".") -> dict:
    """Per round and model: training and inference state; per round: its ensembles; the final stages."""
    workdir, layout = Path(workdir), Layout()  # layout paths are relative to the run's directory
    incomplete, locked = incomplete_outputs(workdir), locked_outputs(workdir)

    def state(rel: str) -> str:
        if rel in incomplete:
            return RUNNING if locked else INTERRUPTED
        return DONE if (workdir / rel).exists() else PENDING

    def states(rels: list[str]) -> str:
        found = [state(r) for r in rels]
        for s in (RUNNING, INTERRUPTED, PENDING):  # the least finished wins, running first
            if s in found:
                if s == PENDING and DONE in found:
                    return f"partial ({found.count(DONE)}/{len(found)})"
                return s
        return DONE

    splits = config["data"].get("test_splits", ["testa", "testb"])
    rounds = []
    for rnd, spec in config["rounds"].items():
        models = []
        for model in spec["models"]:
            train = state(layout.model(rnd, model))
            epochs = config["models"][model].get("epochs", 30)
            done_epochs = last_epoch(workdir / layout.state_dir(rnd, model))
            if train != DONE and done_epochs:
                train += f" (epoch {done_epochs}/{epochs})"
            infer = states([layout.prediction(rnd, model, s, ".npy") for s in ["val", *splits]])
            entry = {"model": model, "train": train, "infer": infer}
            for stage, state_of_stage in (("train", train), ("infer", infer)):
                if state_of_stage.startswith(RUNNING):
                    entry["progress"] = last_progress(workdir / layout.job_log(rnd, stage, model))
            models.append(entry)
        ensemble = states([layout.ensemble(rnd, s, ".npy") for s in splits])
        rounds.append({"round": rnd, "models": models, "ensemble": ensemble})
    final = {
        "clean": state(layout.train_list),
        "final ensemble": state(layout.final_ensemble + ".npy"),
        "submission": state(layout.submit_zip),
    }
    if config["data"].get("answers"):
        final["summary"] = state(layout.summary_tsv)
    return {"rounds": rounds, "final": final, "snakemake_running": bool(locked), "incomplete": sorted(incomplete)}


def running_lines(status: dict) -> list[str]:
    """One line per running training or inference job: ``r0/swin_arc train: epoch 3/8: ... ETA 0:44``."""
    lines = []
    for r in status["rounds"]:
        for m in r["models"]:
            for stage in ("train", "infer"):
                if m[stage].startswith(RUNNING):
                    lines.append(f"{r['round']}/{m['model']} {stage}: {m.get('progress') or 'started'}")
    return lines


def format_status(status: dict) -> str:
    rows = [("round", "model", "train", "infer", "round ensemble")]
    for r in status["rounds"]:
        for i, m in enumerate(r["models"]):
            rows.append(
                (r["round"] if i == 0 else "", m["model"], m["train"], m["infer"], r["ensemble"] if i == 0 else "")
            )
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    running = running_lines(status)
    if running:
        lines += ["", "running:", *("  " + line for line in running)]
    lines.append("")
    lines += [f"{name}: {value}" for name, value in status["final"].items()]
    lines.append(
        "snakemake: "
        + (
            "a run holds this directory's locks (running, or stale after a crash: snakemake --unlock)"
            if status["snakemake_running"]
            else "not running here"
        )
    )
    return "\n".join(lines)
