"""Recipes: the user's whole intent in one TOML file.

schema.py   the dataclasses: every key, its type, default, allowed values and help (the one source)
load.py     TOML text -> Recipe: overrides, types, the checks across keys, one RecipeError for them all

r = load_recipe("recipes/smollm2_demo.toml", ["train.lr=2e-4"])
"""

from medkit.recipe.load import (
    is_local_ref,
    load_recipe,
    load_section,
    parse_override,
    parse_recipe_text,
    read_recipe_text,
    recipe_from_dict,
    resolve_package_file,
    resolve_path,
    tomllib,
)
from medkit.recipe.schema import (
    DATA_FORMATS,
    TASKS,
    TEMPLATES,
    DataSection,
    EvalSection,
    ExportSection,
    LoraSection,
    ModelSection,
    QuantSection,
    Recipe,
    TrainSection,
    describe_keys,
)

__all__ = [
    "DATA_FORMATS", "TASKS", "TEMPLATES", "DataSection", "EvalSection", "ExportSection", "LoraSection",
    "ModelSection", "QuantSection", "Recipe", "TrainSection", "describe_keys", "is_local_ref", "load_recipe",
    "load_section", "parse_override", "parse_recipe_text", "read_recipe_text", "recipe_from_dict",
    "resolve_package_file", "resolve_path", "tomllib",
]  # fmt: skip
