"""The method docs say what the code and the method YAMLs do: every `key: value` in a family table's defaults column
is the value `configs/methods/<name>.yaml` sets (or the strategy's default where the YAML leaves the key out), every
registered strategy has a description for `robustlearn methods`, and the docs' relative links resolve."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

import robustlearn.strategies  # noqa: F401  (registers every built-in strategy)
from robustlearn.registry import STRATEGIES
from tests.conftest import CONFIGS, ROOT

DOCS = ROOT / "docs"
PAIR = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*): ([^`]*)`")


def table_defaults() -> list[tuple[str, str, str, object]]:
    """(page, strategy, key, documented value) for every `key: value` in the last column of a family table row whose
    second column names a registered strategy with a method YAML."""
    out = []
    for page in sorted((DOCS / "methods").glob("*.md")):
        for line in page.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 3:
                continue
            name = re.fullmatch(r"`([a-z0-9_]+)`", cells[1])
            if not name or name.group(1) not in STRATEGIES.names():
                continue
            if not (CONFIGS / "methods" / f"{name.group(1)}.yaml").is_file():
                continue
            for key, text in PAIR.findall(cells[-1]):
                out.append((page.name, name.group(1), key, yaml.safe_load(text)))
    return out


def yaml_value(strategy: str, key: str):
    data = yaml.safe_load((CONFIGS / "methods" / f"{strategy}.yaml").read_text())
    entry = next((s for s in data.get("strategies") or [] if s.get("name") == strategy), {})
    if key in entry:
        return entry[key]
    fields = {f.name: f for f in dataclasses.fields(STRATEGIES.get(strategy).Params)}
    if key not in fields:
        return "(no such parameter)"
    f = fields[key]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


DEFAULTS = table_defaults()


def test_the_family_tables_are_found():
    assert len({s for _, s, _, _ in DEFAULTS}) >= 20


@pytest.mark.parametrize("page, strategy, key, documented", DEFAULTS,
                         ids=[f"{s}.{k}" for _, s, k, _ in DEFAULTS])
def test_documented_defaults_are_what_the_method_yaml_runs(page, strategy, key, documented):
    actual = yaml_value(strategy, key)
    if isinstance(documented, (int, float)) and isinstance(actual, (int, float)):
        assert documented == pytest.approx(actual), f"docs/methods/{page}: {strategy}.{key}"
    else:
        assert documented == actual, f"docs/methods/{page}: {strategy}.{key} is {actual!r} in the YAML"


BUILT_IN = [n for n in STRATEGIES.names() if STRATEGIES.get(n).__module__.startswith("robustlearn.")]


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_strategy_has_a_description(name):
    doc = (STRATEGIES.get(name).__doc__ or "").strip()
    assert doc and not doc.startswith(name + "("), f"{name} has no docstring for `robustlearn methods`"


def test_relative_links_in_the_docs_resolve():
    broken = []
    for page in [*DOCS.rglob("*.md"), ROOT / "README.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_strategy_class_is_importable_from_the_package(name):
    import robustlearn.strategies as package

    cls = STRATEGIES.get(name)
    assert getattr(package, cls.__name__) is cls and cls.__name__ in dir(package)
