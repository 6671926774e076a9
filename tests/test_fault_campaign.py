"""bench/fault_campaign.py: the issue-14 fault campaign covers every defect, and every case passes end to end."""

from __future__ import annotations

import pytest

from bench.fault_campaign import CASES, main, run, table

DEFECTS = range(1, 17)  # issue 14 lists defects 1-16


def test_the_cases_cover_every_defect_of_the_issue():
    covered = {d for case in CASES for d in case.defects}
    assert covered == set(DEFECTS), f"missing: {sorted(set(DEFECTS) - covered)}, unknown: {sorted(covered - set(DEFECTS))}"
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
    assert all(case.defects and case.title and case.expected for case in CASES)


def test_list_and_unknown_names(capsys):
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == [case.name for case in CASES]
    with pytest.raises(SystemExit, match="unknown case"):
        main(["--only", "no-such-case"])


@pytest.mark.slow
def test_every_case_of_the_campaign_passes():
    """The whole campaign, as `python bench/fault_campaign.py` runs it (about 3 minutes on 2 cores)."""
    results = run(CASES, progress=False)
    failed = [r for r in results if not r.passed]
    assert not failed, "\n" + table(failed)


def test_the_readme_section_names_its_command_and_machine(tmp_path):
    from bench.fault_campaign import COMMAND, SECTION, Result, section
    from bench.sections import machine_line, read_section, write_section

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n<!-- {SECTION}:start -->\nold\n<!-- {SECTION}:end -->\nrest\n")
    results = [Result(case, True, "exit 1 in 0.1 s", 0.1) for case in CASES[:2]]
    write_section(readme, SECTION, section(results, 12.0))
    body = read_section(readme, SECTION)
    assert COMMAND in body and machine_line() in body and "2 of 2 cases pass" in body
    assert sum(line.startswith("|") for line in body.splitlines()) == 1 + 1 + 2  # header, rule, two rows
    assert readme.read_text().endswith("rest\n")
