"""The reward recipe: a YAML or TOML file naming the reward's components and their weights, validated with pydantic;
errors name the field and, in YAML, the line. Each component kind has its own options (its `Spec`), registered by
name in service.core.components; the combined reward is the weighted sum of the components.

    components:
      - kind: model            # the served bundle (optionally one objective, or normalised)
        weight: 1.0
      - kind: math             # the final answer against the sample's reference, with math-verify
        weight: 1.0
        extract: boxed         # boxed | answer_tag | answer_line | auto
      - kind: format
        weight: 0.2
        pattern: '<think>.*</think>\\s*<answer>.*</answer>'
    budget_seconds: 30         # what one request's verifier work may take in all
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class RecipeError(ValueError):
    """A recipe file that cannot be used; the message names the file, the line (YAML) and the field."""


class ComponentSpec(BaseModel):
    """What every component takes. `on_failure`: the value a sample gets when the component fails on it (a timeout,
    no answer, a sandbox kill, an error); null makes the sample's combined reward null (TRL then leaves it out)."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    name: str | None = Field(None, description="How the component is reported (default: its kind).")
    weight: float = Field(1.0, allow_inf_nan=False)
    on_failure: float | None = Field(0.0, allow_inf_nan=False)

    @property
    def label(self) -> str:
        return self.name or self.kind


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    components: list[ComponentSpec] = Field(min_length=1)
    budget_seconds: float = Field(30.0, gt=0, le=3600, description="One request's verifier work, all of it.")
    source: str = Field("", exclude=True)

    @property
    def needs_model(self) -> bool:
        return any(c.kind == "model" for c in self.components)


def load_recipe(path: str | Path, specs: Mapping[str, type[ComponentSpec]]) -> Recipe:
    """Read and validate a recipe; every component by its own kind's spec. RecipeError names what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{path}: cannot read the recipe: {e}") from None
    lines: dict[tuple[Any, ...], int] = {}
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text)
        else:
            data, lines = _yaml(text)
    except (tomllib.TOMLDecodeError, ValueError) as e:
        raise RecipeError(f"{path}: not valid {'TOML' if path.suffix.lower() == '.toml' else 'YAML'}: {e}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping with a `components` list")
    try:
        recipe = Recipe.model_validate(
            data | {"components": [ComponentSpec.model_construct(kind="_") for _ in data.get("components") or []]}
        )
        components = []
        for i, raw in enumerate(data.get("components", [])):
            spec = specs.get(str(raw.get("kind")) if isinstance(raw, dict) else "")
            if spec is None:
                raise RecipeError(
                    f"{path}{_at(lines, ('components', i, 'kind'))}: components.{i}.kind: unknown kind "
                    f"{raw.get('kind') if isinstance(raw, dict) else raw!r} (known: {', '.join(sorted(specs))})"
                )
            try:
                components.append(spec.model_validate(raw))
            except ValidationError as e:
                raise _named(path, lines, e, ("components", i)) from None
        names = [c.label for c in components]
        if len(set(names)) != len(names):
            raise RecipeError(f"{path}: component names must be distinct (give `name:` to tell two of a kind apart)")
    except ValidationError as e:
        raise _named(path, lines, e, ()) from None
    return recipe.model_copy(update={"components": components, "source": str(path)})


def _named(
    path: Path, lines: Mapping[tuple[Any, ...], int], error: ValidationError, prefix: tuple[Any, ...]
) -> RecipeError:
    first = error.errors()[0]
    loc = (*prefix, *first["loc"])
    where = ".".join(str(p) for p in loc) or "recipe"
    return RecipeError(f"{path}{_at(lines, loc)}: {where}: {first['msg']}")


def _at(lines: Mapping[tuple[Any, ...], int], loc: Sequence[Any]) -> str:
    """':LINE' of the deepest YAML node on the path `loc` (YAML only; TOML gives no positions)."""
    for end in range(len(loc), 0, -1):
        if tuple(loc[:end]) in lines:
            return f":{lines[tuple(loc[:end])]}"
    return ""


def _yaml(text: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """The YAML document, and the line of each node by its path."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(str(e)) from None
    lines: dict[tuple[Any, ...], int] = {}

    def walk(n: Any, path: tuple[Any, ...]) -> None:
        if n is None:
            return
        lines[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                lines[(*path, key.value)] = key.start_mark.line + 1
                walk(value, (*path, key.value))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*path, i))

    walk(node, ())
    return data, lines
