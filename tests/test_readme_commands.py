"""Commands the README shows, checked against what they print."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adapt.cli import main
from adapt.recipe import list_recipe_templates
from model.resources import templates_dir


def test_recipe_descriptions_are_whole_sentences():
    """`adapt recipes` lists each template's opening sentence, never one cut at the comment's line break."""
    templates = list_recipe_templates()
    for name, description in templates.items():
        assert description.endswith("."), (name, description)
    assert templates["driving_pocket-tiny_full"].endswith("nuScenes grounding / region samples, 20 % general replay.")
    assert templates["medical_pocket-tiny_full"].endswith("VQA-RAD, SLAKE and PMC-VQA, with 20 % general replay.")


def test_recipe_description_reads_one_sentence_of_a_wrapped_comment(tmp_path, monkeypatch, capsys):
    import adapt.recipe as recipe_module

    (tmp_path / "wrapped.yaml").write_text("\n# First part of a sentence\n#   that goes on. Second sentence.\n#\n"
                                           "# Other paragraph.\nname: wrapped\n", encoding="utf-8")
    (tmp_path / "bare.yaml").write_text("name: bare\n", encoding="utf-8")
    monkeypatch.setattr(recipe_module, "_recipe_templates_dir", lambda: tmp_path)
    assert list_recipe_templates() == {"bare": "", "wrapped": "First part of a sentence that goes on."}
    assert main(["recipes"]) == 0
    assert "First part of a sentence that goes on." in capsys.readouterr().out


def test_templates_dir_holds_the_recipes_listed():
    assert sorted(p.stem for p in (templates_dir() / "recipes").glob("*.yaml")) == sorted(list_recipe_templates())


@pytest.mark.parametrize("field", ["remote_sensing", "medical"])
def test_readme_synthesizes_the_quick_starts_size(field, monkeypatch):
    """README's `adapt synthesize FIELD` is the data the field's quick start (and its table) is made from: the same
    n."""
    import domains.base
    from adapt import quickstart

    asked: dict = {}

    class Stop(Exception):
        pass

    class Plugin:
        def synthesize(self, out, **options):
            asked.update(options)
            raise Stop

    monkeypatch.setattr(quickstart, "prepare_general", lambda *a, **k: None)
    monkeypatch.setattr(domains.base, "get_domain", lambda name: Plugin())
    with pytest.raises(Stop):
        quickstart.FIELDS[field][1](Path("unused") / "data", progress=False)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    command = re.search(rf"^adapt synthesize {field} --out raw(.*?)#", readme, re.MULTILINE).group(1)
    assert f"--option n={asked['n']}" in command, (command, asked)


def test_readme_driving_commands_make_the_quick_starts_data(monkeypatch):
    """README's and the driving template's synthesize / DriveLM convert commands pass the driving quick start's scene
    and frame counts and val_fraction, so they hold out the samples the driving table quotes (drivelm 156)."""
    import domains.base
    from adapt import quickstart

    calls: dict = {}

    class Plugin:
        def synthesize(self, out, **options):
            calls["synthesize"] = options
            return {"drivelm": Path("raw/drivelm"), "nuscenes": Path("raw/nuscenes")}

        def convert(self, dataset, src, out, **options):
            calls.setdefault(dataset, options)

    monkeypatch.setattr(quickstart, "prepare_general", lambda *a, **k: None)
    monkeypatch.setattr(domains.base, "get_domain", lambda name: Plugin())
    quickstart.FIELDS["driving"][1](Path("unused") / "data", progress=False)
    root = Path(__file__).resolve().parents[1]
    template = templates_dir() / "recipes" / "driving_pocket-tiny_full.yaml"
    for where, text in (("README.md", (root / "README.md").read_text(encoding="utf-8")),
                        (template.name, re.sub(r"^#", "", template.read_text(encoding="utf-8"), flags=re.MULTILINE))):
        synthesize = re.search(r"^\s*adapt synthesize driving --out raw(.*?)#", text, re.MULTILINE).group(1)
        for key in ("n_scenes", "n_frames"):
            assert f"--option {key}={calls['synthesize'][key]}" in synthesize, (where, synthesize)
        convert = re.search(r"^\s*adapt convert driving drivelm +--src raw/drivelm(.*?\\\n.*?)#", text,
                            re.MULTILINE).group(1)
        for key in ("view_mode", "val_fraction"):
            assert f"--option {key}={calls['drivelm'][key]}" in convert, (where, convert)
