"""A griffe extension for the docs build: vaeaug's docstrings as mkdocstrings should read them.

Two rewrites, made on the docstring text before mkdocstrings parses it (the source files are
unchanged):

- ``Example:`` becomes ``Examples:``, the Google-style section griffe knows, so doctests render
  as code (under ``Example:`` they would be read as Markdown);
- Sphinx roles (``:func:`vaeaug.fit```, ``:class:`~vaeaug.data.TensorData```, ``:meth:`encode```...)
  become cross-references to the API reference. A name is resolved in the docstring's own scope
  (so ``:meth:`encode``` in ``VAE`` points at ``vaeaug.model.vae.VAE.encode``); a target that no
  page documents is shown as code, not as a broken link.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj|const):`(~?)([\w.]+)(\(\))?`")
_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


def _resolve(obj: griffe.Object, name: str) -> str:
    """The full path of ``name`` as seen from ``obj``'s scope (the name itself if unknown)."""
    if name.startswith("vaeaug."):
        return name
    head, _, rest = name.partition(".")
    scope: griffe.Object | None = obj if obj.is_class or obj.is_module else obj.parent
    while scope is not None:
        try:
            path = scope.resolve(head)
        except Exception:  # noqa: BLE001 (griffe raises several kinds for an unknown name)
            path = None
        if path:
            return f"{path}.{rest}" if rest else path
        scope = scope.parent
    return name


def _rewrite(obj: griffe.Object, text: str) -> str:
    text = _EXAMPLE.sub(r"\1Examples:", text)

    def link(m: re.Match[str]) -> str:
        short, name, call = m.group(1), m.group(2), m.group(3) or ""
        shown = (name.rsplit(".", 1)[-1] if short else name) + call
        target = _resolve(obj, name)
        return f'<autoref identifier="{html.escape(target)}" optional><code>{html.escape(shown)}</code></autoref>'

    return _ROLE.sub(link, text)


class SphinxRoles(griffe.Extension):
    """Rewrite ``Example:`` sections and Sphinx roles in every docstring of the loaded package."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _rewrite(obj, obj.docstring.value)
