"""Fixtures shared by the test files."""

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny Llama-architecture model saved to disk, loaded like a hub model (built once)."""
    pytest.importorskip("transformers")
    from tpo_core.llm import build_tiny_sums_model

    return build_tiny_sums_model(tmp_path_factory.mktemp("tiny") / "sums", warmup_steps=30)
