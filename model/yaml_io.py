"""YAML as pocket-adapt reads it: safe, with duplicate keys and alias bombs refused.

Recipes (`adapt.recipe`) and chat templates (`model.chat`) are read through `load_yaml`, so a file means the same
to every reader: ``yaml.safe_load`` would keep the last of two ``sep:`` keys silently and expand a "billion laughs"
document until memory ran out.
"""

from __future__ import annotations

from typing import Any

import yaml

from model.errors import PocketAdaptError

__all__ = ["MAX_YAML_VALUES", "YAMLContentError", "load_yaml", "yaml_error_text"]


class YAMLContentError(PocketAdaptError, ValueError):
    """Well-formed YAML that no settings file holds: aliases expanding past `MAX_YAML_VALUES`, or nesting too deep."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys (a second ``training:`` block would silently win). Merge keys
    (``lora: {<<: *shared, r: 4}``) work as in YAML 1.1: the mapping's own keys win over the merged ones."""


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:  # the mapping's own keys; merged ones may repeat them
        if key_node.tag == _MERGE_TAG:
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, str) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
        if isinstance(key, str):
            seen[key] = key_node.start_mark.line
    loader.flatten_mapping(node)  # merge keys in (SafeConstructor.construct_mapping does this too, after our scan)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


# A recipe holds a few hundred values; past this, aliases are multiplying the document (a "billion
# laughs"), and expanding it would hang every verb that reads the file.
MAX_YAML_VALUES = 100_000


def load_yaml(text: str, where: str) -> tuple[Any, yaml.Node | None]:
    """The document in `text` and its composed root node (None for an empty document; for key line numbers).
    Duplicate keys are a ``yaml.YAMLError`` (as YAML syntax errors are), aliases expanding past `MAX_YAML_VALUES`
    or a document nested too deeply a `YAMLContentError` naming `where`."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_expansion(node, where)
        return loader.construct_document(node), node
    except RecursionError:
        raise YAMLContentError(f"{where}: the YAML is nested too deeply to be a settings file") from None
    finally:
        loader.dispose()


def yaml_error_text(exc: yaml.YAMLError) -> str:
    """A YAML syntax error in one line: where (line, column) and the problem, for a message that names the file
    first (PyYAML's own text runs over several lines and names the file ``<unicode string>``)."""
    mark = getattr(exc, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    if "'\\t'" in problem:  # an editor's tab indent: PyYAML names the character, not the rule
        problem += ": YAML takes no tab there (indentation, or after a colon): replace it with spaces"
    return f"malformed YAML{at}: {problem}{f' ({context})' if context else ''}"


def _check_expansion(root: yaml.Node, where: str) -> None:
    """Refuse a document whose aliases expand past `MAX_YAML_VALUES` values, or refer to themselves.

    Counts on the composed node graph, where an alias is a shared node: each node is sized once, so
    the check costs the size of the text, not of the expansion.
    """
    sizes: dict[int, int] = {}
    busy: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in busy:
            mark = node.start_mark
            raise YAMLContentError(f"{where}: the YAML alias at line {mark.line + 1} refers to a value that contains it")
        busy.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_YAML_VALUES:
                raise YAMLContentError(
                    f"{where}: YAML aliases expand to more than {MAX_YAML_VALUES:,} values (a recipe holds a few "
                    "hundred); write the values out instead of nesting aliases (*name) inside anchors (&name)")
        busy.discard(key)
        sizes[key] = total
        return total

    size(root)
