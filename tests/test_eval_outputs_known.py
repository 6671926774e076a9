"""Every file `adapt eval` writes into <output.dir>/eval is one `adapt.checkpointing.EVAL_OUTPUTS` knows, so a quick
start or `adapt train` never takes the report for files of the user's (the list was kept by hand, apart from the
writers, and a new report file would have made a quick start refuse its own folder)."""

from __future__ import annotations

import fnmatch
import shutil

from adapt.checkpointing import EVAL_DIR, EVAL_OUTPUTS, not_run_outputs
from adapt.cli import main
from domains.general.world import generate_general, generate_landcover
from model.resources import templates_dir


def test_every_file_eval_writes_is_known_as_evals(tmp_path, capsys):
    out = tmp_path / "qs"
    generate_general(out / "data" / "general", n_train=2, n_test=2, answer_style="label", progress=False)
    generate_landcover(out / "data" / "landcover", n_train=2, n_test=2, answer_style="label", progress=False)
    shutil.copyfile(templates_dir() / "recipes" / "quickstart.yaml", out / "quickstart.yaml")
    assert main(["eval", str(out / "quickstart.yaml"), "--no-progress", "eval.max_new_tokens=2"]) == 0
    # the report printed scrolls away: the last line says where eval.md is kept
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"report: {out / 'train' / EVAL_DIR / 'eval.md'} ")
    written = sorted(p.name for p in (out / "train" / EVAL_DIR).iterdir())
    assert {"eval.md", "eval.json", "comparison.png", "predictions_base.jsonl", "skips.md"} <= set(written)
    assert [n for n in written if not any(fnmatch.fnmatchcase(n, pattern) for pattern in EVAL_OUTPUTS)] == []
    assert not_run_outputs(out / "train") == []
