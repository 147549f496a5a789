"""JSON Schemas of the published events, generated from ``models.py``.

``make schemas`` (``python -m pipeline.contract.schemas``) writes ``schemas/*.schema.json``;
a test fails when the checked-in files drift from the models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import TypeAdapter

from .models import SCHEMA_MODELS

__all__ = ["render", "write"]

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
CONTRACT_DOC = "docs/contract.md"


def render() -> dict[str, str]:
    """File name -> JSON text for every published schema."""
    out = {}
    for name, model in SCHEMA_MODELS.items():
        schema = TypeAdapter(model).json_schema(by_alias=True, mode="validation")
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                  "$id": f"https://cdiwatch.example/schemas/{name}.schema.json",
                  "title": name,
                  "$comment": f"cdiwatch contract v1, revision 2: see {CONTRACT_DOC} in the cdiwatch repository",
                  **{k: v for k, v in schema.items() if k != "title"}}
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(f"wrote {p}")
