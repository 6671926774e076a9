"""The commands a recipe template's comments give make the data its quick start makes."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from adapt.quickstart import FIELDS
from model.resources import templates_dir

RECIPES = sorted((templates_dir() / "recipes").glob("*.yaml"))


def _commands(path, verb: str) -> list[list[str]]:
    """The `adapt VERB ...` command lines in the template's comments, as argument lists (comment tails dropped)."""
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(rf"#\s+(adapt {verb} .*)", line)
        if match:
            found.append(shlex.split(match.group(1).split("  #")[0]))
    return found


def _pocket_tiny(path) -> bool:
    return (yaml.safe_load(path.read_text(encoding="utf-8")).get("model") or {}).get("source") == "pocket-tiny"


WITH_GENERAL = [p for p in RECIPES if _pocket_tiny(p) and _commands(p, "synthesize general")]


@pytest.mark.parametrize("path", WITH_GENERAL, ids=lambda p: p.stem)
def test_general_replay_data_is_made_in_the_style_pocket_tiny_was_pretrained_on(path):
    """medical_pocket-tiny_full.yaml said `adapt synthesize general --out data/general`: letter answers (A-D), where
    pocket-tiny was pre-trained on, and `adapt quickstart --field medical` makes, label answers."""
    for argv in _commands(path, "synthesize general"):
        options = [argv[i + 1] for i, a in enumerate(argv) if a == "--option"]
        assert "answer_style=label" in options, f"{path.name}: {shlex.join(argv)}"


def test_every_domain_field_template_is_checked():
    fields = {f"{template}.yaml" for field, (template, _) in FIELDS.items() if field != "landcover"}
    assert fields <= {p.name for p in WITH_GENERAL}


def test_the_driving_template_keeps_drivelm_val_scenes_out_of_nuscenes_training():
    """driving_pocket-tiny_full.yaml converted nuScenes without `held_out`: DriveLM's val scenes are nuScenes
    training scenes, so the recipe trained on the very camera pictures whose DriveLM questions it scores (the quick
    start and the README pass held_out=data/driving/drivelm_val.jsonl)."""
    path = templates_dir() / "recipes" / "driving_pocket-tiny_full.yaml"
    text = path.read_text(encoding="utf-8").replace("\\\n#", " ")  # a command continued on the next comment line
    lines = [re.sub(r"\s+", " ", line.split("  #")[0]) for line in text.splitlines()
             if "adapt convert driving nuscenes" in line]
    assert lines and all("--option held_out=data/driving/drivelm_val.jsonl" in line for line in lines), lines
