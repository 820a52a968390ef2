"""The README's Python examples run: each ```python block is executed with the tensors its
comments describe, so an example that names something it never defines (or an API that
moved) fails here instead of in a reader's session."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks() -> list[str]:
    return BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_readme_has_python_examples():
    assert python_blocks(), "the README's losses-alone example went missing"


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_a_readme_example_runs(index):
    generator = torch.Generator().manual_seed(index)
    labels = torch.zeros(200, dtype=torch.long)
    labels[:6] = 1
    labels[6:9] = -1
    inputs = {
        "logits": torch.randn(200, generator=generator, requires_grad=True),
        "labels": labels,
        "loc_errors": torch.rand(6, generator=generator, requires_grad=True),
    }
    namespace = dict(inputs)
    exec(compile(python_blocks()[index], f"README.md python block {index}", "exec"), namespace)
    # Whatever it computes reaches the inputs that take a gradient.
    assert inputs["logits"].grad is not None and torch.isfinite(inputs["logits"].grad).all()
    assert inputs["loc_errors"].grad is not None
