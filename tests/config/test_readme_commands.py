"""The README's examples compose: every `alrp-lab run` line of its bash blocks, and every
config key its prose names, exist in `conf/` today (a renamed key or group fails here, not
in a reader's shell)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from alrp_lab.config.compose import compose_config
from alrp_lab.resources import conf_dir

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "sweeps/README.md", "docs/notes.md")
GROUPS = (
    "assigner",
    "backbone",
    "box_error",
    "data",
    "detector",
    "logger",
    "loss",
    "pretrain",
    "train",
)
# File names that look like dotted keys (`box_error.py`, `train.log`).
FILE_SUFFIXES = {"py", "log", "yaml", "json", "jsonl", "csv", "png", "md", "pt", "txt"}


def _run_lines(text: str) -> list[str]:
    """Each `alrp-lab run` command of the bash blocks, continuation lines joined."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        rows = block.splitlines()
        i = 0
        while i < len(rows):
            line = rows[i]
            while line.rstrip().endswith("\\") and i + 1 < len(rows):
                i += 1
                line = line.rstrip()[:-1] + " " + rows[i].strip()
            i += 1
            if line.startswith("alrp-lab run"):
                lines.append(line)
    return lines


def _overrides(line: str) -> list[str]:
    """The overrides of one command line, a multirun's sweeps at their first value (the
    others differ in values only) and the `...` that stands for an earlier line's
    overrides left out."""
    args = [a for a in shlex.split(line, comments=True)[2:] if a not in ("-m", "...")]
    return [
        f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
        if o.is_sweep_override()
        else o.input_line
        for o in OverridesParser.create().parse_overrides(args)
    ]


README_JOBS = [_overrides(line) for line in _run_lines((ROOT / "README.md").read_text())]


def test_the_readme_has_run_examples_to_check():
    # Guards the parser: the examples block holds more than twenty run lines.
    assert len(README_JOBS) > 20
    assert ["loss.self_balance=false", "loss.wr=1"] in README_JOBS  # from `-m ... wr=1,2,5`


@pytest.mark.parametrize("overrides", README_JOBS, ids=" ".join)
def test_each_readme_run_example_composes_and_validates(overrides):
    compose_config(overrides)


@pytest.fixture(scope="module")
def known_keys() -> set[str]:
    """Every dotted key of every choice of every group (`loss.alpha` comes from
    `loss=focal`, `loss.zero_target` from `loss=alrp`). Group files have no defaults
    lists (checked), so each file is its choice's whole node."""
    known: set[str] = set()

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            known.add(f"{prefix}.{key}")
            if isinstance(value, dict):
                walk(value, f"{prefix}.{key}")

    for group in GROUPS:
        for choice in sorted((conf_dir() / group).glob("*.yaml")):
            node = yaml.safe_load(choice.read_text()) or {}
            assert "defaults" not in node, f"{choice}: read it through Hydra's compose"
            walk(node, group)
    return known


def test_every_config_key_the_docs_name_exists(known_keys):
    groups = "|".join(GROUPS)
    pattern = re.compile(rf"(?<![\w./-])((?:{groups})\.[a-z_][a-z0-9_.]*[a-z0-9_])")
    missing = sorted(
        f"{name}: {key}"
        for name in DOCS
        for key in set(pattern.findall((ROOT / name).read_text()))
        if key not in known_keys and key.rsplit(".", 1)[1] not in FILE_SUFFIXES
    )
    assert not missing, "docs name config keys that conf/ does not have:\n" + "\n".join(missing)


def test_the_key_check_would_see_a_misspelt_key(known_keys):
    assert "loss.sb_period" in known_keys and "train.channels_last" in known_keys
    assert "loss.alpha" in known_keys  # a key of one choice only (loss=focal)
    assert "loss.sb_perod" not in known_keys
