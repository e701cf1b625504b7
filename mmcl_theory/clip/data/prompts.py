"""Zero-shot class names and prompt templates: built-in defaults or read from JSON files."""

from __future__ import annotations

from pathlib import Path

from .errors import DataLayoutError
from .facts import IMAGENET_CLASSNAMES
from .text_files import read_json_file

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)
"""Small built-in template set: 'a photo of a {}.' plus the 7-template subset chosen in CLIP's
ImageNet prompt-engineering notebook. The full 80-template ensemble is read from a file."""


def _read_string_list(path: str | Path, default_name: str, what: str) -> list[str]:
    p = Path(path)
    if p.is_dir():
        p = p / default_name
    value = read_json_file(p, what, f"a JSON list of strings (or a folder holding {default_name})")
    if isinstance(value, dict):  # {"imagenet1k": [...]} as in clip-benchmark's files
        if len(value) != 1:
            raise DataLayoutError(f"{what}: {p} holds a dict with keys {sorted(value)[:5]}; expected one list")
        value = next(iter(value.values()))
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataLayoutError(f"{what}: {p} must hold a JSON list of strings")
    return value


def load_classnames(path: str | Path | None = None) -> list[str]:
    """The 1000 ImageNet class names in class-index order: built-in CLIP names, or a JSON list file."""
    if path is None:
        return list(IMAGENET_CLASSNAMES)
    return _read_string_list(path, "imagenet_classes.json", "class names")


def load_templates(path: str | Path | None = None) -> list[str]:
    """Prompt templates with one '{}' each: the built-in set, or a JSON list (e.g. CLIP's 80)."""
    if path is None:
        return list(DEFAULT_TEMPLATES)
    templates = _read_string_list(path, "imagenet_templates.json", "templates")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise DataLayoutError(f"templates: each template needs exactly one '{{}}'; got {bad[:3]}")
    return templates
