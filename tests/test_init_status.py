"""webfg init (inspect a dataset, write a commented config that validates) and webfg status."""

import io
import os
import subprocess
import time
from base64 import urlsafe_b64encode
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from runner import REPO, SNAKEMAKE, run_snakemake

from webfg.cli import main
from webfg.init import GPU_TIER_IMAGES, build_config, check_config_text, init, inspect_dataset
from webfg.io import InputError
from webfg.status import collect_status, format_status, incomplete_outputs, locked_outputs


def png(value: int, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full(size[::-1], value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_dataset(root: Path, classes=("0000", "0001", "0002"), per_class=12, tests=("testa", "testb"), n_test=30):
    for c, name in enumerate(classes):
        (root / "train" / name).mkdir(parents=True)
        for i in range(per_class):
            (root / "train" / name / f"{i}.png").write_bytes(png(c * 50 + i))
    for split in tests:
        (root / split).mkdir()
        for i in range(n_test):
            (root / split / f"{i}.png").write_bytes(png(200 + i % 50, size=(64, 48)))
    return root


def test_inspect_reports_classes_counts_splits_and_sizes(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=12)
    (root / "train/0001/extra.png").write_bytes(png(1))
    report = inspect_dataset(root)
    assert report.class_names == ["0000", "0001", "0002"] and report.class_counts == [12, 13, 12]
    assert report.test_counts == {"testa": 30, "testb": 30}
    assert report.checked == 37 + 60 and (40, 30) in report.sizes and (64, 48) in report.sizes
    text = report.summary()
    assert "classes: 3 (integer ids)" in text and "train images: 37" in text and "testb (30 images)" in text


def test_init_writes_a_config_that_validates_with_a_comment_on_every_key(tmp_path):
    root = make_dataset(tmp_path / "d", classes=("zebra", "ant", "moth"))
    out = tmp_path / "cfg.yaml"
    config = init(root, out, log=lambda *_: None)
    text = out.read_text()
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert " # " in line, f"key without a comment: {line!r}"
    assert config == yaml.safe_load(text)
    assert config["data"]["num_classes"] == 3 and config["data"]["test_splits"] == ["testa", "testb"]
    assert list(config["rounds"]) == ["r0", "a1", "b1"]
    recipe = yaml.safe_load((REPO / "config/config.yaml").read_text())
    selection = {k: v for k, v in recipe["rounds"]["a1"]["pseudo"].items() if k not in ("from", "splits")}
    assert config["rounds"]["b1"]["pseudo"] == {"from": "a1", "splits": ["testa", "testb"], **selection}
    assert config["final"]["redistribute"] == recipe["final"]["redistribute"]
    assert config["clean"]["noise_filter"] == recipe["clean"]["noise_filter"]
    assert all(m["resources"]["gpus"] == 0 for m in config["models"].values())  # 36 images: CPU tier
    assert "0=ant, 1=moth, 2=zebra" in inspect_dataset(root).summary()


@pytest.mark.dag
def test_init_config_runs_as_a_snakemake_dry_run(tmp_path):
    root = make_dataset(tmp_path / "data/mine")
    cwd = os.getcwd()
    os.chdir(tmp_path)  # data.root is written as given, relative to where snakemake runs
    try:
        init("data/mine", "mine.yaml", log=lambda *_: None)
    finally:
        os.chdir(cwd)
    assert root.is_dir()
    proc = run_snakemake(tmp_path, "-n", configs=[tmp_path / "mine.yaml"], cores=None, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "train_model" in proc.stdout and "zip_submission" in proc.stdout


def test_large_data_gets_gpu_models_and_resources(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=2, n_test=3)
    report = inspect_dataset(root)
    report.class_counts = [GPU_TIER_IMAGES] * 3  # 60k images: the size decides, not the pixels
    config = check_config_text(build_config(report, "d", pretrained_dir=tmp_path / "none"))
    assert set(config["models"]) == {"swinv2_b_arc", "vit_l_ce"}
    assert all(m["resources"]["gpus"] == 4 for m in config["models"].values())
    assert all(m["pretrained_file"] is None for m in config["models"].values())  # no checkpoint there
    assert config["clean"]["val_fraction"] == 0.02


def test_init_writes_the_checkouts_recipes_not_a_copy(tmp_path):
    """Model entries come from config/config.yaml (GPU tier) and config/demo.yaml (CPU tier):
    only resources, checkpoints and the CPU tier's size and flips are init's own."""
    root = make_dataset(tmp_path / "d", per_class=2, n_test=3)
    report = inspect_dataset(root)
    cpu = check_config_text(build_config(report, "d"))
    report.class_counts = [GPU_TIER_IMAGES] * 3
    gpu = check_config_text(build_config(report, "d", pretrained_dir=tmp_path / "none"))
    for written, recipe_file, own in (
        (gpu, "config/config.yaml", {"resources", "pretrained_file"}),
        (cpu, "config/demo.yaml", {"resources", "img_size", "arch_kwargs", "hflip", "tta_flip"}),
    ):
        recipe = yaml.safe_load((REPO / recipe_file).read_text())["models"]
        for name, entry in written["models"].items():
            assert {k: v for k, v in entry.items() if k not in own} == {
                k: v for k, v in recipe[name].items() if k not in own
            }, name
    vit = yaml.safe_load((REPO / "config/config.yaml").read_text())["models"]["vit_l_ce"]
    assert gpu["models"]["vit_l_ce"]["arch_kwargs"] == vit["arch_kwargs"]  # class token kept, as the recipe
    assert cpu["models"]["swin_arc"]["arch_kwargs"]["img_size"] == cpu["models"]["swin_arc"]["img_size"]


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda r: (r / "train").rename(r / "images"), r"no train/ folder \(found \['images/', 'testa/', 'testb/'\]\)"),
        (lambda r: [p.unlink() for p in (r / "train/0001").iterdir()], r"1 empty class folder\(s\): \['0001'\]"),
        (
            lambda r: (r / "train/0002").rename(r / "train/0005"),
            r"ids must be 0..C-1 without gaps; missing \[2, 3, 4\]",
        ),
        (
            lambda r: (r / "train/0000/3.png").write_bytes(b"<html>"),
            r"1 of 36 decoded training image\(s\) unreadable: "
            r"train/0000/3.png.*--allow-broken",
        ),
        (lambda r: (r / "testb/1.png").write_bytes(png(1)[:40]), r"1 unreadable test image\(s\).*testb/1.png"),
        (
            lambda r: [(r / s).rename(r.parent / s) for s in ("testa", "testb")],
            r"no test split folder next to train/ \(found \['train/'\]\)",
        ),
    ],
)
def test_init_bad_input_says_what_it_found_and_writes_nothing(tmp_path, breakage, message):
    root = make_dataset(tmp_path / "d")
    breakage(root)
    out = tmp_path / "cfg.yaml"
    with pytest.raises(InputError, match=message) as e:
        init(root, out, log=lambda *_: None)
    assert "expected" in str(e.value) or "nothing written" in str(e.value)
    assert not out.exists() and list(tmp_path.glob("*.tmp")) == [] and list(tmp_path.glob(".*")) == []


def test_init_cli_refuses_to_overwrite(tmp_path, capsys):
    root = make_dataset(tmp_path / "d")
    out = tmp_path / "cfg.yaml"
    out.write_text("mine\n")
    with pytest.raises(SystemExit) as e:
        main(["init", str(root), "--out", str(out)])
    assert e.value.code == 2 and "exists; pass --force" in capsys.readouterr().err
    assert out.read_text() == "mine\n"
    main(["init", str(root), "--out", str(out), "--force"])
    assert "classes: 3" in capsys.readouterr().out and yaml.safe_load(out.read_text())["data"]["num_classes"] == 3


def mark_incomplete(workdir: Path, rel: str):
    d = workdir / ".snakemake/incomplete"
    d.mkdir(parents=True, exist_ok=True)
    (d / urlsafe_b64encode(rel.encode()).decode()).write_text('{"external_jobid": null}')


def test_status_reads_results_and_snakemakes_markers(tmp_path):
    config = yaml.safe_load((REPO / "config/tiny.yaml").read_text())
    for rel in [
        "results/clean/train.txt",
        "results/r0/train/swin_arc.pt",
        "results/r0/train/vit_linear.pt",
        *[f"results/r0/infer/swin_arc/{s}.npy" for s in ("val", "testa", "testb")],
        "results/r0/infer/vit_linear/val.npy",
        "results/a1/train/vit_linear.pt",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    state = tmp_path / "results/a1/train/swin_arc.state"
    state.mkdir(parents=True)
    (state / "epoch_0001.pt").write_bytes(b"")
    mark_incomplete(tmp_path, "results/a1/train/swin_arc.pt")
    mark_incomplete(tmp_path, "results/a1/train/vit_linear.pt")  # exists but unfinished
    status = collect_status(config, tmp_path)
    r0, a1, b1 = status["rounds"]
    assert r0["models"] == [
        {"model": "swin_arc", "train": "done", "infer": "done"},
        {"model": "vit_linear", "train": "done", "infer": "partial (1/3)"},
    ]
    assert r0["ensemble"] == "pending"
    assert a1["models"][0]["train"] == "interrupted (epoch 1/2)" and a1["models"][1]["train"] == "interrupted"
    assert b1["models"][0]["train"] == "pending"
    assert status["final"] == {
        "clean": "done",
        "final ensemble": "pending",
        "submission": "pending",
        "summary": "pending",
    }
    (tmp_path / ".snakemake/locks").mkdir()
    (tmp_path / ".snakemake/locks/0.output.lock").write_text("results/a1/train/swin_arc.pt\n")
    log = tmp_path / "logs/a1/train/swin_arc.log"
    log.parent.mkdir(parents=True)
    log.write_text(
        "train: 160 images, 2 epochs\nepoch 1/2: 5/5 100% 40.1 img/s elapsed 0:04\n"
        "epoch 1: loss 1.61, val accuracy 0.3000\nepoch 2/2: 3/5 60% 38.2 img/s elapsed 0:02 ETA 0:01\n"
    )
    status = collect_status(config, tmp_path)
    assert status["rounds"][1]["models"][0]["train"] == "running (epoch 1/2)" and status["snakemake_running"]
    table = format_status(status)
    assert "a1     swin_arc    running (epoch 1/2)" in table and "a run holds this directory's locks" in table
    assert "running:\n  a1/swin_arc train: epoch 2/2: 3/5 60% 38.2 img/s elapsed 0:02 ETA 0:01\n" in table


def test_status_watch_prints_the_running_jobs_progress(tmp_path, capsys, monkeypatch):
    config = yaml.safe_load((REPO / "config/tiny.yaml").read_text())
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    mark_incomplete(tmp_path, "results/r0/infer/vit_linear/testa.npy")
    (tmp_path / ".snakemake/locks").mkdir()
    (tmp_path / ".snakemake/locks/0.output.lock").write_text("results/r0/infer/vit_linear/testa.npy\n")
    (tmp_path / "logs/r0/infer").mkdir(parents=True)
    (tmp_path / "logs/r0/infer/vit_linear.log").write_text("infer testa: 64/96 67% 120 img/s elapsed 0:01 ETA 0:00\r")
    ticks = iter(range(2))

    def sleep(_):  # two reports, then the Ctrl-C that ends --watch
        if next(ticks):
            raise KeyboardInterrupt

    monkeypatch.setattr("time.sleep", sleep)
    main(["status", "--configfile", str(tmp_path / "tiny.yaml"), "-d", str(tmp_path), "--watch", "30", "--running"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(
        line.endswith("] r0/vit_linear infer: infer testa: 64/96 67% 120 img/s elapsed 0:01 ETA 0:00") for line in lines
    )


@pytest.mark.dag
def test_status_decodes_the_markers_of_the_installed_snakemake(tmp_path):
    """webfg status reads Snakemake's .snakemake/incomplete and locks/ files, which are not a public
    interface: this pins their format against the Snakemake that is installed, with a real run
    (a short and a longer-than-a-file-name output path) caught while its job runs."""
    long_rel = "results/r0/train/" + "d" * 200 + "/" + "m" * 200 + ".pt"  # its base64 is longer than a file name
    outputs = ["results/r0/train/m.pt", long_rel]
    (tmp_path / "Snakefile").write_text(
        "rule hold:\n"
        f"    output: {outputs!r}\n"
        '    shell: "touch started; while [ ! -e release ]; do sleep 0.2; done; touch {output}"\n'
    )
    proc = subprocess.Popen(
        [str(SNAKEMAKE), "-s", "Snakefile", "--cores", "1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
            time.sleep(0.2)
        assert incomplete_outputs(tmp_path) == set(outputs)
        assert set(outputs) <= locked_outputs(tmp_path)
    finally:
        (tmp_path / "release").touch()
        proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read()
    assert incomplete_outputs(tmp_path) == set() and locked_outputs(tmp_path) == set()


def test_status_cli_names_a_bad_config(tmp_path, capsys):
    (tmp_path / "x.yaml").write_text("a: 1\n")
    with pytest.raises(SystemExit) as e:
        main(["status", "--configfile", str(tmp_path / "x.yaml"), "-d", str(tmp_path)])
    assert e.value.code == 2 and "x.yaml: not a webfg config" in capsys.readouterr().err
