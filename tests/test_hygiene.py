"""The workflow reads as a catalog workflow: lint-clean, snakefmt-formatted, every rule
logged, heavy rules benchmarked, every config key documented. ~15 s, no jobs run."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from webfg.config import ModelConfig

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HEAVY = {"train_model", "infer_probs", "score_train", "clean_split", "filter_noisy"}


@pytest.mark.dag
@pytest.mark.parametrize("config", ["tiny", "demo", "config"])
def test_snakemake_lint_reports_nothing(tmp_path, config):
    proc = subprocess.run(
        [
            str(BIN / "snakemake"),
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(tmp_path),
            "--lint",
            "--configfile",
            str(REPO / f"config/{config}.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Lints for" not in out and "in a good condition" in out, out[-4000:]


def rulegraph_of_dot(text: str) -> tuple[set[str], set[tuple[str, str]]]:
    """Rule names and (from, to) edges of Snakemake's --rulegraph (dot source)."""
    names = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', text, re.M))
    edges = {(names[a], names[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", text, re.M)}
    return set(names.values()), edges


def rulegraph_of_svg(text: str) -> tuple[set[str], set[tuple[str, str]]]:
    """The same, read back from the picture dot drew (node titles are the dot ids)."""
    names = dict(re.findall(r'class="node">\s*<title>(\d+)</title>.*?<text[^>]*>(\w+)</text>', text, re.S))
    edges = {(names[a], names[b]) for a, b in re.findall(r'class="edge">\s*<title>(\d+)&#45;&gt;(\d+)</title>', text)}
    return set(names.values()), edges


@pytest.mark.dag
def test_committed_rulegraph_matches_the_workflow(tmp_path):
    """docs/rulegraph.svg (the README's picture, `make dag`) shows today's rules and edges."""
    proc = subprocess.run(
        [
            str(BIN / "snakemake"),
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(tmp_path),
            "--rulegraph",
            "--configfile",
            str(REPO / "config/demo.yaml"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rules, edges = rulegraph_of_dot(proc.stdout)
    drawn_rules, drawn_edges = rulegraph_of_svg((REPO / "docs/rulegraph.svg").read_text(encoding="utf-8"))
    assert len(rules) >= 15 and len(edges) >= len(rules) - 1
    assert (drawn_rules, drawn_edges) == (rules, edges), (
        f"docs/rulegraph.svg is stale (`make dag` redraws it): missing rules {sorted(rules - drawn_rules)}, "
        f"extra rules {sorted(drawn_rules - rules)}, missing edges {sorted(edges - drawn_edges)}, "
        f"extra edges {sorted(drawn_edges - edges)}"
    )


def test_snakefmt_check_passes():
    files = [REPO / "Snakefile", REPO / "workflow/Snakefile", *sorted((REPO / "workflow/rules").glob("*.smk"))]
    proc = subprocess.run([str(BIN / "snakefmt"), "--check", *map(str, files)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_python_is_ruff_clean_and_formatted():
    """Lint and format as configured in pyproject.toml ([tool.ruff]); fix with
    `ruff check --fix . && ruff format .`."""
    for args in (["check", "--no-cache", "."], ["format", "--check", "--no-cache", "."]):
        proc = subprocess.run([str(BIN / "ruff"), *args], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def rule_blocks():
    """(rule name, body) of every named rule in workflow/rules/."""
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")):
        text = smk.read_text()
        for m in re.finditer(r"^( *)rule (\w+):\n((?:\1 +.*\n|\s*\n)*)", text, re.M):
            yield m.group(2), m.group(3)


def test_every_rule_logs_and_heavy_rules_are_benchmarked():
    rules = dict(rule_blocks())
    assert HEAVY <= set(rules) and len(rules) >= 15
    for name, body in rules.items():
        if not re.search(r"^\s+(shell|script|run|wrapper|notebook):", body, re.M):
            continue  # a target rule (input only) runs nothing to log
        assert re.search(r"^\s+log:", body, re.M), f"rule {name} has no log:"
        if name in HEAVY:
            assert re.search(r"^\s+benchmark:", body, re.M), f"heavy rule {name} has no benchmark:"


def test_config_readme_documents_every_key():
    readme = (REPO / "config/README.md").read_text()
    documented = set()
    for span in re.findall(r"`([^`]+)`", readme):
        documented.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", span))
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())

    def keys(node):
        for key, child in node.get("properties", {}).items():
            yield key
            yield from keys(child)
        if isinstance(node.get("additionalProperties"), dict):
            yield from keys(node["additionalProperties"])

    missing = sorted(
        {k for k in keys(schema) if k not in documented}
        | {f.name for f in dataclasses.fields(ModelConfig) if f.name not in documented}
    )
    assert not missing, f"config/README.md does not document {missing}"
