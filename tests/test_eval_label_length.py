"""`adapt eval --model LABEL=SOURCE`: a label too long for the file names it makes under --out is refused before
loading (it ended in 'File name too long' with a traceback once the model had been scored)."""

from adapt.cli import MAX_LABEL_BYTES, main


def test_a_label_too_long_for_a_file_name_is_refused_before_loading(tmp_path, capsys):
    main(["init", "quickstart", str(tmp_path)])
    capsys.readouterr()
    for label, refused in (("a" * 300, True), ("é" * 101, True), ("a" * MAX_LABEL_BYTES, False)):
        rc = main(["eval", str(tmp_path / "quickstart.yaml"), "--model", f"{label}=no/such/model", "--out",
                   str(tmp_path / "out"), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 1 and "Traceback" not in err
        assert ("at most 200 bytes" in err) == refused, err
        assert not (tmp_path / "out").exists()
    assert len(f"predictions_{'a' * MAX_LABEL_BYTES}-q4_k_m.jsonl".encode()) <= 255
