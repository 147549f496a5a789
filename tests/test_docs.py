"""The repository stands alone and its docs stay true (issues 7 and 11).

- no file of the repository refers to the project folder beside it;
- every setting is in the README's configuration table;
- the contract the schemas point to exists.
"""

from __future__ import annotations

import subprocess

from pipeline.settings import Settings
from support import ROOT

SECRET_FILES = {"kafka_sasl_password_file", "http_token_file"}
# The folder that sat beside the first checkouts, spelled so that this file
# does not name it itself.
OUTSIDE = ("../" + "shared", "/work/" + "shared")


# What is not part of the repository when the tree is not a git checkout (CI
# tests a plain copy): the environment, caches and generated output.
NOT_SOURCE = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "build", "data", "secrets"}


def tracked_files() -> list[str]:
    """The repository's files: git's list in a checkout, else every file of the copy."""
    if (ROOT / ".git").exists():
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return [line for line in out.splitlines() if line]
    files = []
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts
        if any(p in NOT_SOURCE or p.endswith(".egg-info") for p in parts) or parts[:2] == ("bench", "out"):
            continue
        if path.is_file():
            files.append(str(path.relative_to(ROOT)))
    return files


def test_nothing_refers_outside_the_repository():
    for name in tracked_files():
        path = ROOT / name
        if path.suffix in (".png", ".jsonl") or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        assert not any(o in text for o in OUTSIDE), name


def test_every_setting_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name in Settings.fields:
        variable = "CDI_" + name.upper()
        if name in SECRET_FILES:
            continue  # documented next to the secret they hold
        assert variable in readme, variable


def test_the_schemas_point_to_the_contract_in_the_repository():
    assert (ROOT / "docs" / "contract.md").is_file()
    for schema in (ROOT / "schemas").glob("*.schema.json"):
        assert "docs/contract.md" in schema.read_text(), schema.name
