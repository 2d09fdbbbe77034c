"""Prompt templates that turn a class name into the text CLIP encodes."""

from __future__ import annotations

from collections.abc import Sequence

# One placeholder form everywhere: run configs, bundles and the library (docs/design.md §3 writes it this way).
PLACEHOLDER = "{class}"
DEFAULT_TEMPLATES: tuple[str, ...] = ("a picture of a {class}",)


def class_display_name(class_name: str) -> str:
    """Folder-style names (``basal_cell-carcinoma``) read better to CLIP as words."""
    return class_name.replace("_", " ").replace("-", " ").strip()


def render_prompts(class_name: str, templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[str]:
    """Every template filled with the class name; several templates are averaged downstream."""
    if not templates:
        raise ValueError("at least one prompt template is required")
    for template in templates:
        if template.count(PLACEHOLDER) != 1:
            raise ValueError(f"prompt template {template!r} must contain exactly one {PLACEHOLDER!r} placeholder")
    name = class_display_name(class_name)
    return [template.replace(PLACEHOLDER, name) for template in templates]
