"""Fixtures shared by the test files."""

import os

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny Llama-architecture model saved to disk, loaded like a hub model (built once)."""
    pytest.importorskip("transformers")
    from tpo_core.llm import build_tiny_sums_model

    return build_tiny_sums_model(tmp_path_factory.mktemp("tiny") / "sums", warmup_steps=30)


# The notebooks' automatic runs (nbval here, and the browser tests' kernels, which inherit the
# environment) take notebook 06's two-step CPU size; a student's run takes the full one.
os.environ.setdefault("TPO_SHORT", "1")
