"""The corpus folder's `manifest.json`: where each domain's text came from.

For every built domain: its JSONL file and that file's sha256, documents and characters
written, the character budget, how many candidate documents the packages gave, and each
package with its version and the sha256 of every downloaded file. A build updates the
entries of the domains it built and keeps the others, so domains can be built separately.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict

from megatron_dga.files import write_json

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


def manifest_path(output_dir: str) -> str:
    return os.path.join(output_dir, MANIFEST_NAME)


def load_manifest(output_dir: str) -> Dict[str, Any]:
    """The manifest of `output_dir`, or an empty one when there is none yet."""
    path = manifest_path(output_dir)
    if not os.path.exists(path):
        return {"version": MANIFEST_VERSION, "domains": {}}
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (line {e.lineno}): {e.msg}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("domains"), dict):
        raise ValueError(f"{path}: not a corpus manifest (no 'domains' object)")
    if manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{path}: unsupported corpus manifest version {manifest.get('version')!r}")
    return manifest


def save_manifest(output_dir: str, manifest: Dict[str, Any]) -> None:
    """Write atomically, domains sorted by name so that rebuilds diff cleanly."""
    manifest = dict(manifest, domains=dict(sorted(manifest["domains"].items())))
    write_json(manifest_path(output_dir), manifest)


def record_domain(output_dir: str, name: str, entry: Dict[str, Any]) -> None:
    """Set one domain's entry, keeping every other entry as it is on disk."""
    manifest = load_manifest(output_dir)
    manifest["domains"][name] = entry
    save_manifest(output_dir, manifest)
