"""Subject catalogs: the three layouts, and every bad input named before anything is trained."""

from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa
import pytest

from rtb import catalog
from rtb.personalization.subjects import Subject, read_subjects, write_subjects
from tests.fixtures.tiny_t2i import domain_subjects


@pytest.fixture(scope="module")
def subjects():
    return domain_subjects(count=2)


def _webdataset(subjects, uri):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for s in subjects:
            for data, name in zip(s.images, s.names):
                key = name.rsplit(".", 1)[0]
                meta = json.dumps({"subject": s.subject_id, "class_word": s.class_word}).encode()
                for member, payload in ((f"{key}.png", data), (f"{key}.json", meta)):
                    info = tarfile.TarInfo(member)
                    info.size = len(payload)
                    archive.addfile(info, io.BytesIO(payload))
    catalog.put_bytes(f"{uri}/shard-000.tar", buffer.getvalue())
    return uri


@pytest.mark.parametrize("layout", ["parquet", "folders", "webdataset"])
def test_every_layout_reads_back_the_same_subjects(subjects, tmp_path, layout):
    uri = str(tmp_path / layout)
    if layout == "webdataset":
        _webdataset(subjects, uri)
    else:
        write_subjects(subjects, uri, layout)
    back = read_subjects(uri)
    assert [(s.subject_id, s.class_word) for s in back] == [("alice", "fish"), ("bob", "tree"), ("carol", "car")]
    for original, read in zip(subjects, back):
        assert read.sha256s() == original.sha256s()
    assert back[0].tensor(32).shape == (2, 3, 32, 32)


def test_reads_from_an_fsspec_uri(subjects):
    uri = "memory://persguard-subjects"
    write_subjects(subjects, uri, "parquet")
    assert len(read_subjects(uri)) == 3


def test_a_subject_with_no_images_is_named(subjects, tmp_path):
    write_subjects(subjects, str(tmp_path), "folders")
    catalog.put_bytes(str(tmp_path / "dave" / "class.txt"), b"dog")
    with pytest.raises(ValueError, match="subject 'dave' .* has no images"):
        read_subjects(str(tmp_path))


def test_an_undecodable_image_is_named(subjects, tmp_path):
    broken = Subject("erin", "cat", (b"not a picture",), ("erin-0.png",))
    write_subjects([*subjects, broken], str(tmp_path), "parquet")
    with pytest.raises(ValueError, match="subject 'erin' image 'erin-0.png' does not decode"):
        read_subjects(str(tmp_path))


def test_a_missing_class_word_is_named(subjects, tmp_path):
    write_subjects(subjects, str(tmp_path / "folders"), "folders")
    (tmp_path / "folders" / "bob" / "class.txt").unlink()
    with pytest.raises(ValueError, match="subject 'bob' .* has no class word"):
        read_subjects(str(tmp_path / "folders"))
    table = pa.table({"subject": ["x"], "class_word": [""], "image": [subjects[0].images[0]]})
    catalog.write_table(table, str(tmp_path / "parquet" / "part-0.parquet"))
    with pytest.raises(ValueError, match="subject 'x' .* has no class word"):
        read_subjects(str(tmp_path / "parquet"))


def test_an_empty_or_missing_catalog_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot tell the subject catalog layout"):
        read_subjects(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="does not exist"):
        read_subjects(str(tmp_path / "nowhere"))
