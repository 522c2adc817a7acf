"""Finding a record's data: the files it names, a copy passed in, or KeypointWorld files made again."""

import json

import pytest

from evaluation.checks import file_sha256
from evaluation.data.keypointworld import describe, parse_description, write_dataset
from evaluation.record_files import locate


@pytest.mark.parametrize("n, seed, offcentre", [(60, 424242, False), (3, 7, True), (1, 0, False)])
def test_description_round_trip(n, seed, offcentre):
    assert parse_description(describe(n, seed, offcentre)) == (n, seed, offcentre)


@pytest.mark.parametrize("text", [None, "", "KeypointWorld, 60 images", "MP-100 split1", "KeypointWorld, 6 images, seed 1, other"])
def test_other_descriptions_are_not_parsed(text):
    assert parse_description(text) is None


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 3-image KeypointWorld file and the record fields a run on it keeps."""
    folder = tmp_path_factory.mktemp("kw")
    path = write_dataset(folder, 3, 7, offcentre=True)
    record = {"benchmark": "keypointworld", "annotations": str(path), "images": str(folder / "images"),
              "annotations_sha256": file_sha256(path),
              "annotations_description": json.loads(path.read_text())["info"]["description"]}
    return folder, path, record


def test_the_named_files_are_used_when_there(small, tmp_path):
    folder, path, record = small
    files = locate(record, cache=tmp_path)
    assert (files.annotations, files.images, files.regenerated) == (path, folder / "images", False)
    assert not (tmp_path / "keypointworld").exists()


def test_keypointworld_files_are_made_again_with_the_same_hash(small, tmp_path):
    _, path, record = small
    gone = {**record, "annotations": "/nowhere/annotations.json", "images": "/nowhere/images"}
    files = locate(gone, cache=tmp_path)
    # the default world (v2) has its own cache folder
    assert files.regenerated and files.annotations == tmp_path / "keypointworld-v2" / "n3-seed7-offcentre" / "annotations.json"
    assert file_sha256(files.annotations) == record["annotations_sha256"]
    assert sorted(p.name for p in files.images.iterdir()) == [f"kw_7_{i:06d}.jpg" for i in range(3)]
    made = files.annotations.stat().st_mtime_ns
    assert locate(gone, cache=tmp_path).annotations.stat().st_mtime_ns == made  # made once, then reused


def test_a_changed_file_is_not_taken_for_the_record_s(small, tmp_path):
    _, path, record = small
    changed = tmp_path / "changed.json"
    changed.write_text(path.read_text() + " ")
    with pytest.raises(ValueError, match="is not the annotation file"):
        locate(record, annotations=changed)
    with pytest.raises(ValueError, match="differs from the file the record was scored on"):
        locate({**record, "annotations": str(changed), "annotations_sha256": "0" * 64}, cache=tmp_path)


def test_other_records_say_what_to_pass(tmp_path):
    record = {"benchmark": "mp100", "annotations": "/data/mp100/mp100_split1_test.json", "annotations_sha256": "ab"}
    with pytest.raises(ValueError, match="mp100_split1_test.json is not here.*--annotations, --images"):
        locate(record, cache=tmp_path)
    with pytest.raises(ValueError, match="is not here"):
        locate(record, annotations=tmp_path / "missing.json")
