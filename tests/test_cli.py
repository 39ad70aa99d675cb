import numpy as np
import pytest

from webfg.cli import main
from webfg.io import read_split_list, save_predictions


def test_pseudo_and_ensemble_commands(tmp_path):
    rows = ["testa/a.jpg", "testa/b.jpg"]
    save_predictions(tmp_path / "m-7000", np.array([[0.75, 0.25], [0.5, 0.5]]), rows, {"val_accuracy": 0.7})
    save_predictions(tmp_path / "n-7000", np.array([[0.75, 0.25], [0.25, 0.75]]), rows, {"val_accuracy": 0.7})
    main(
        [
            "ensemble",
            str(tmp_path / "m-7000"),
            str(tmp_path / "n-7000"),
            "--out",
            str(tmp_path / "ens"),
            "--accuracy-from-name",
        ]
    )
    main(["pseudo", str(tmp_path / "ens"), "--threshold", "0.6", "--out", str(tmp_path / "p.txt")])
    # row b averages to [0.375, 0.625]: kept as class 1; row a [0.75, 0.25]: class 0
    assert read_split_list(tmp_path / "p.txt") == [("testa/a.jpg", 0), ("testa/b.jpg", 1)]


def test_bad_input_is_one_line_and_exit_status(tmp_path, capsys):
    (tmp_path / "data/train/0000").mkdir(parents=True)
    with pytest.raises(SystemExit) as e:
        main(["clean-split", str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("webfg clean-split: error:") and "0000: empty class" in err
    assert len(err.strip().splitlines()) == 1
