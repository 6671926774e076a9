"""Burned-in text redaction: exactly the masked pixels change, the ultrasound-region and modality-mask rules, off by
default in the converters and the demo hook, and what happens to the BurnedInAnnotation flag (it stays YES; the
report and the records say what was blacked out)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.deps import require

require("pydicom")
require("dicomanonymizer", "the PS3.15 Annex E table")
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from domains.base import DomainError
from domains.medical import read_upload
from domains.medical.convert import BURNED_IN_REDACTED, BURNED_IN_WARNING, convert_dicom_qa
from domains.medical.dicom import dicom_to_rgb, load_series, read_dicom
from domains.medical.redact import MIN_BAND_PX, REDACTION_MASKS, redact_burned_in, redaction_regions
from domains.medical.synthetic import generate

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def header(modality: str, rows: int = 100, columns: int = 120, flag: str | None = "YES") -> Dataset:
    ds = Dataset()
    ds.Modality, ds.Rows, ds.Columns = modality, rows, columns
    if flag is not None:
        ds.BurnedInAnnotation = flag
    return ds


def noisy(rows: int = 100, columns: int = 120, channels: int | None = 3) -> np.ndarray:
    shape = (rows, columns) if channels is None else (rows, columns, channels)
    return np.random.default_rng(0).integers(1, 256, size=shape, dtype=np.uint8)  # no zero: black shows the mask


def mask_of(boxes, rows: int, columns: int) -> np.ndarray:
    mask = np.zeros((rows, columns), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        mask[y1:y2, x1:x2] = True
    return mask


def assert_exactly_masked(before: np.ndarray, after: np.ndarray, mask: np.ndarray) -> None:
    assert after.shape == before.shape and after.dtype == before.dtype
    assert (after[mask] == 0).all()
    assert np.array_equal(after[~mask], before[~mask])


def test_ultrasound_mask_changes_exactly_the_top_band():
    ds = header("US")
    image = noisy()
    done = redact_burned_in(image, ds)
    assert done.rule == "mask US" and done.regions == ((0, 0, 120, 16),)  # 12 % of 100 rows < one line: 16
    assert_exactly_masked(image, done.image, mask_of(done.regions, 100, 120))
    assert image.min() > 0  # the input is not changed
    tall = header("US", rows=500)
    assert redaction_regions(tall, 120, 500) == (((0, 0, 120, 60),), "mask US")  # 12 % of 500 rows


def test_other_modalities_get_top_and_bottom_bands_and_pil_images_work():
    ds = header("CT", rows=200, columns=160)
    picture = Image.fromarray(noisy(200, 160), mode="RGB")
    done = redact_burned_in(picture, ds)
    assert isinstance(done.image, Image.Image) and done.image.mode == "RGB" and done.image.size == (160, 200)
    assert done.rule == "mask *" and done.regions == ((0, 0, 160, 20), (0, 180, 160, 200))
    assert_exactly_masked(np.asarray(picture), np.asarray(done.image), mask_of(done.regions, 200, 160))
    grey = noisy(200, 160, channels=None).astype(np.uint16) * 7  # a 2-D array of another dtype
    assert_exactly_masked(grey, redact_burned_in(grey, ds).image, mask_of(done.regions, 200, 160))
    assert set(REDACTION_MASKS) == {"US", "*"} and MIN_BAND_PX == 16


def test_ultrasound_regions_keep_only_the_image_data():
    ds = header("US")
    region = Dataset()
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 10, 20
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = 89, 79  # inclusive
    doppler = Dataset()
    doppler.RegionLocationMinX0, doppler.RegionLocationMinY0 = 95, 85
    doppler.RegionLocationMaxX1, doppler.RegionLocationMaxY1 = 109, 94
    ds.SequenceOfUltrasoundRegions = Sequence([region, doppler])
    image = noisy()
    done = redact_burned_in(image, ds)
    assert done.rule == "ultrasound regions"
    keep = np.zeros((100, 120), dtype=bool)
    keep[20:80, 10:90] = keep[85:95, 95:110] = True
    assert np.array_equal(mask_of(done.regions, 100, 120), ~keep)
    covered = sum((x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in done.regions)
    assert covered == (~keep).sum()  # the boxes do not overlap
    assert_exactly_masked(image, done.image, ~keep)
    # a render at half size: the regions scale with it
    half = redact_burned_in(noisy(50, 60), ds)
    assert mask_of(half.regions, 50, 60)[10:40, 5:45].sum() == 0 and mask_of(half.regions, 50, 60)[:10].all()



@pytest.mark.parametrize(("mode", "back"), [("1", "1"), ("L", "L"), ("LA", "LA"), ("RGBA", "RGBA"), ("I;16", "I;16"),
                                            ("F", "F"), ("P", "RGB"), ("PA", "RGB"), ("CMYK", "RGB")])
def test_pil_modes_come_back_as_documented(mode, back):
    """The docs promised the same mode back, but 1-bit and LA images came back as RGB; they keep their mode now, and
    palette / other colour modes come back as RGB (as the docs now say), their boxes black."""
    picture = Image.fromarray(noisy(100, 120), mode="RGB").convert(mode)
    done = redact_burned_in(picture, header("US"))
    assert isinstance(done.image, Image.Image) and done.image.mode == back and done.image.size == (120, 100)
    mask = mask_of(done.regions, 100, 120)
    assert (np.asarray(done.image.convert("L"))[mask] == 0).all()
    assert np.array_equal(np.asarray(done.image)[~mask], np.asarray(picture.convert(back))[~mask])
    if back != mode:
        assert "palette" in " ".join(redact_burned_in.__doc__.split())

@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_redacted_boxes_of_an_image_with_alpha_are_opaque(mode):
    """fill=0 went into the alpha channel too: the black box was fully transparent, so whatever lay beneath (the
    burned-in text of another layer, a viewer's background) showed through once composited. The box is opaque now."""
    picture = Image.fromarray(noisy(100, 120, 4), mode="RGBA").convert(mode)
    done = redact_burned_in(picture, header("US"))
    pixels, mask = np.asarray(done.image), mask_of(done.regions, 100, 120)
    assert mask.any() and (pixels[mask][:, :-1] == 0).all()
    assert (pixels[mask][:, -1] == 255).all()  # opaque black
    assert np.array_equal(pixels[~mask], np.asarray(picture)[~mask])
    white = Image.new(mode, picture.size, 255)
    shown = np.asarray(Image.alpha_composite(white.convert("RGBA"), done.image.convert("RGBA")))
    assert (shown[mask][:, :3] == 0).all()  # composited over white, the box is still black


def test_regions_given_and_bad_regions():
    ds = header("MR")
    image = noisy()
    done = redact_burned_in(image, ds, regions=[(5, 5, 25, 15), [100, 90, 500, 500]])
    assert done.rule == "regions given" and done.regions == ((5, 5, 25, 15), (100, 90, 120, 100))
    assert_exactly_masked(image, done.image, mask_of(done.regions, 100, 120))
    with pytest.raises(DomainError, match="not four finite numbers"):
        redact_burned_in(image, ds, regions=[(1, 2, 3)])
    for bad in (float("inf"), float("nan")):  # inf raised a raw OverflowError
        with pytest.raises(DomainError, match="not four finite numbers"):
            redact_burned_in(image, ds, regions=[(0, 0, bad, 10)])
    with pytest.raises(DomainError, match="empty inside the 120 x 100 image"):
        redact_burned_in(image, ds, regions=[(30, 30, 30, 40)])


@pytest.mark.parametrize("bad", [5, 2.5, True, "0,0,10,10", {"x1": 0}, [0, 0, 10, 10]])
def test_regions_not_a_list_of_boxes_are_refused_naming_the_shape(bad):
    """A number (a YAML option ``regions=5``) raised a raw TypeError, and text or a mapping was iterated by
    character / key; a flat box too is now refused naming the option and the shape expected."""
    with pytest.raises(DomainError, match=r"regions must be a list of pixel boxes \[\[x1, y1, x2, y2\], \.\.\.\]"):
        redaction_regions(header("MR"), 120, 100, bad)


@pytest.mark.parametrize("empty", [[], (), iter([])])
def test_an_empty_regions_list_is_refused_not_a_silent_no_op(empty):
    """regions=[] on a file flagged BurnedInAnnotation YES blacked out nothing (rule "regions given", no boxes);
    it is refused, pointing at regions=None for the automatic rule, and the image is never returned unredacted."""
    with pytest.raises(DomainError, match=r"empty list, which would redact nothing.*regions=None"):
        redact_burned_in(noisy(), header("US"), regions=empty)
    with pytest.raises(DomainError, match="empty list"):
        redaction_regions(header("MR"), 120, 100, empty)



def test_a_fill_that_the_pixels_cannot_hold_is_refused():
    """fill=300 on 8-bit pixels crashed with numpy's bare OverflowError and fill=1.5 was cut to 1; both are refused
    naming the fill and the pixels' range, and a fill that fits is written as given."""
    ds, image = header("US"), noisy()
    for fill in (300, -1, 1.5, "black"):
        with pytest.raises(DomainError, match="fill"):
            redact_burned_in(image, ds, fill=fill)
    done = redact_burned_in(image, ds, fill=255)
    assert (done.image[mask_of(done.regions, 100, 120)] == 255).all()
    assert (redact_burned_in(image.astype(np.float32), ds, fill=-1.5).image[0] == -1.5).all()  # floats hold any

def test_only_files_that_declare_burned_in_text_are_redacted():
    image = noisy()
    for flag in ("NO", None, "yes-ish"):
        done = redact_burned_in(image, header("US", flag=flag))
        assert done.image is image and done.regions == () and done.rule == "not flagged"
    assert redact_burned_in(image, header("US", flag="NO"), only_flagged=False).regions == ((0, 0, 120, 16),)
    assert redact_burned_in(image, header("US", flag="yes")).regions  # the flag is read case-insensitively


# --------------------------------------------------------------------------------------------- converters, demo
@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("raw")
    generate("dicom_qa", out / "dicom_qa", n=4, seed=3)
    return out / "dicom_qa"


def records(report) -> list[dict]:
    return [json.loads(line) for path in report.outputs.values() for line in path.read_text().splitlines()]


def test_converter_redaction_is_off_by_default_and_blacks_out_the_burned_in_initials(raw, tmp_path):
    plain = convert_dicom_qa(raw, tmp_path / "plain")
    assert set(plain.warnings) == {BURNED_IN_WARNING}
    assert not any("redacted" in r["meta"] for r in records(plain))
    redacted = convert_dicom_qa(raw, tmp_path / "redacted", redact_burned_in=True)
    assert set(redacted.warnings) == {BURNED_IN_REDACTED} and redacted.written == plain.written
    first_boxes = [r["meta"].get("redacted") for r in records(redacted)]
    assert any(first_boxes)
    assert "blacked out by the mask * rule: [0, 0, 64, 16], [0, 48, 64, 64]" in redacted.table()
    by_id = {r["id"]: r for r in records(redacted)}
    touched = 0
    for rec in records(plain):
        other = by_id[rec["id"]]
        images = rec["image"] if isinstance(rec["image"], list) else [rec["image"]]
        others = other["image"] if isinstance(other["image"], list) else [other["image"]]
        boxes = other["meta"].get("redacted")
        for k, (a, b) in enumerate(zip(images, others)):
            before = np.asarray(Image.open(tmp_path / "plain" / a))
            after = np.asarray(Image.open(tmp_path / "redacted" / b))
            if boxes and boxes[k]:
                touched += 1
                assert b.endswith("_redacted.png")
                mask = mask_of(boxes[k], *before.shape[:2])
                assert (after[mask] == 0).all() and np.array_equal(after[~mask], before[~mask])
                assert (before[:12, :20] > 200).any() and not (after[:12, :20] > 200).any()  # the initials: gone
            else:
                assert np.array_equal(before, after) and not b.endswith("_redacted.png")
    assert touched > 0
    # the source files are not modified: their flag still says YES
    flagged = [p for p in raw.rglob("*.dcm") if read_dicom(p, header_only=True).BurnedInAnnotation == "YES"]
    assert flagged
    # the second run reuses the redacted PNGs and still reports the boxes
    again = convert_dicom_qa(raw, tmp_path / "redacted", redact_burned_in=True)
    assert [r["meta"].get("redacted") for r in records(again)] == first_boxes
    with pytest.raises(DomainError, match="choose one"):
        convert_dicom_qa(raw, tmp_path / "both", skip_burned_in=True, redact_burned_in=True)


def test_demo_hook_redacts_on_request_only(raw):
    series_dir = next(p for p in sorted((raw / "series").iterdir())
                      if read_dicom(next(p.glob("*.dcm")), header_only=True).BurnedInAnnotation == "YES")
    files = sorted(series_dir.glob("*.dcm"))
    shown = read_upload(files, slices=[0, 5])
    assert "redacted" not in shown and any("burned-in" in w for w in shown["warnings"])
    hidden = read_upload(files, slices=[0, 5], redact_burned_in=True)
    assert [r["rule"] for r in hidden["redacted"]] == ["mask *", "mask *"]
    assert any("blacked out" in w for w in hidden["warnings"])
    assert not any("blacked out" in w for w in shown["warnings"])
    series = load_series(files)
    for k, image, plain, info in zip([0, 5], hidden["images"], shown["images"], hidden["redacted"]):
        before = np.asarray(dicom_to_rgb(series.slices[k][0], frame=series.slices[k][1]))
        assert np.array_equal(np.asarray(plain), before)  # off by default: the pixels as they are
        mask = mask_of(info["regions"], *before.shape[:2])
        assert_exactly_masked(before, np.asarray(image), mask)
    unflagged = next(p for p in sorted((raw / "series").iterdir()) if p != series_dir)
    assert read_upload(sorted(unflagged.glob("*.dcm")), redact_burned_in=True)["redacted"] == [None]


def test_module_notes_name_the_rules():
    import domains.medical.redact as redact

    notes = " ".join(redact.__doc__.split())
    for phrase in ("SequenceOfUltrasoundRegions", "REDACTION_MASKS", "a redacted file keeps BurnedInAnnotation ``YES``",
                   "off by default"):
        assert phrase in notes, phrase


def test_classification_converter_redacts_too(raw, tmp_path):
    import shutil

    from domains.medical.convert import convert_classification

    flagged = [p for p in sorted(raw.rglob("*.dcm")) if read_dicom(p, header_only=True).BurnedInAnnotation == "YES"]
    unflagged = [p for p in sorted(raw.rglob("*.dcm")) if read_dicom(p, header_only=True).BurnedInAnnotation == "NO"]
    for name, files in (("lesion", flagged[:2]), ("normal", unflagged[:2])):
        (tmp_path / "src" / name).mkdir(parents=True)
        for p in files:
            shutil.copy(p, tmp_path / "src" / name / p.name)
    report = convert_classification(tmp_path / "src", tmp_path / "out", redact_burned_in=True)
    recs = records(report)
    assert len(recs) == 4 and set(report.warnings) == {BURNED_IN_REDACTED}
    for rec in recs:
        if rec["meta"]["label"] == "lesion":
            assert rec["meta"]["redacted"] == [[[0, 0, 64, 16], [0, 48, 64, 64]]]
            assert not (np.asarray(Image.open(tmp_path / "out" / rec["image"]))[:16] != 0).any()
        else:
            assert "redacted" not in rec["meta"]
