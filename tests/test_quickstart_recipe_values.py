"""A quick start compares the recipe it would replace with its template by values, not by text."""

import pytest
import yaml

from adapt.quickstart import QuickstartError, _refuse_to_lose
from model.resources import templates_dir

TEMPLATE = templates_dir() / "recipes" / "quickstart.yaml"


def refused(recipe_text: str, tmp_path) -> bool:
    recipe = tmp_path / "quickstart.yaml"
    recipe.write_text(recipe_text, encoding="utf-8")
    try:
        _refuse_to_lose(recipe, TEMPLATE, tmp_path / "train")
    except QuickstartError as exc:
        assert "differs from the quickstart template (edited?)" in str(exc)
        return True
    return False


def test_an_older_copy_of_the_template_with_other_comments_or_key_order_is_no_edit(tmp_path):
    # a run folder made by an earlier version of the template was refused as "edited" once its comments changed
    text = TEMPLATE.read_text(encoding="utf-8")
    values = yaml.safe_load(text)
    uncommented = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")) + "\n"
    assert uncommented != text and not refused(uncommented, tmp_path)
    reordered = yaml.safe_dump(dict(reversed(list(values.items()))), sort_keys=False)
    assert not refused("# an older template\n" + reordered, tmp_path)


def test_a_changed_value_is_still_an_edit(tmp_path):
    values = yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))
    for key, value in (("name", "my_run"), ("seed", float(values["seed"])), ("seed", None)):
        edited = {**values, key: value}
        assert refused(yaml.safe_dump(edited, sort_keys=False), tmp_path), (key, value)
    assert refused(yaml.safe_dump({k: v for k, v in values.items() if k != "seed"}), tmp_path)  # a key removed
    assert refused(TEMPLATE.read_text(encoding="utf-8") + "extra: 1\n", tmp_path)  # a key added


@pytest.mark.parametrize("text", ["name: [unclosed\n", "a: &a [*a]\n", "\xff\n", ""])
def test_a_recipe_that_does_not_read_as_the_template_is_refused(tmp_path, text):
    assert refused(text, tmp_path)


def test_the_refusal_names_the_keys_that_differ(tmp_path):
    """It said only "(edited?)": the user had to diff a 150-line file against the template to see what changed."""
    values = yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))
    edited = {**values, "training": {**values["training"], "max_steps": 20}, "extra": 1}
    recipe = tmp_path / "quickstart.yaml"
    recipe.write_text(yaml.safe_dump(edited), encoding="utf-8")
    with pytest.raises(QuickstartError, match=r"\(edited\?\): extra, training\.max_steps differ; .*--force"):
        _refuse_to_lose(recipe, TEMPLATE, tmp_path / "train")
    recipe.write_text("- 1\n", encoding="utf-8")
    with pytest.raises(QuickstartError, match=r"\(edited\?\): it does not read as a recipe; .*--force"):
        _refuse_to_lose(recipe, TEMPLATE, tmp_path / "train")
