"""Reading ultralytics' export metadata: names, input size, task; literals only, never code."""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnxruntime as ort
import pytest

from edge.detectors.metadata import (
    CLASS_THRESHOLDS_KEY,
    file_sha256,
    parse_metadata,
    parse_names,
    thresholds_metadata,
)


def test_reads_what_ultralytics_writes_into_an_onnx_export(random_onnx: Path):
    raw = ort.InferenceSession(str(random_onnx), providers=["CPUExecutionProvider"]).get_modelmeta()
    meta = parse_metadata(raw.custom_metadata_map)
    assert len(meta.names) == 80 and meta.names[0] == "0" and meta.names[79] == "79"
    assert meta.imgsz == (320, 320)
    assert meta.stride == 32
    assert meta.task == "detect"
    assert meta.end2end is False
    assert meta.model_version is None


def test_onnx_strings_and_json_values_parse_alike():
    as_onnx = {"names": "{0: 'helmet', 1: 'no_helmet'}", "imgsz": "[384, 640]", "stride": "32", "end2end": "True"}
    as_json = {"names": {"0": "helmet", "1": "no_helmet"}, "imgsz": [384, 640], "stride": 32, "end2end": True}
    assert parse_metadata(as_onnx) == parse_metadata(as_json)
    assert parse_metadata(as_onnx).imgsz == (384, 640) and parse_metadata(as_onnx).end2end is True
    assert parse_metadata({"imgsz": "320"}).imgsz == (320, 320)
    assert parse_names(["a", "b"]) == {0: "a", 1: "b"}


def test_model_version_can_be_stamped_into_the_metadata():
    assert parse_metadata({"model_version": "ppe-2026-11-21"}).model_version == "ppe-2026-11-21"


def test_missing_metadata_is_empty_not_an_error():
    meta = parse_metadata({})
    assert meta.names == {} and meta.imgsz is None and meta.task is None


def test_code_in_the_metadata_is_never_run(tmp_path: Path):
    marker = tmp_path / "ran"
    with pytest.raises(ValueError, match="neither a dict nor a list"):
        parse_names(f"__import__('pathlib').Path({str(marker)!r}).touch()")
    assert not marker.exists()
    with pytest.raises(ValueError):
        parse_metadata({"imgsz": "__import__('os').getpid()"})


def test_file_sha256(tmp_path: Path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"x" * 3_000_000)  # more than one read chunk
    assert file_sha256(path) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


# -- per-class thresholds (DESIGN decision 9) -------------------------------------------------------

PPE_NAMES = "{0: 'helmet', 1: 'no_helmet', 2: 'no_wear', 3: 'wear'}"


def test_class_thresholds_are_read_by_name_into_class_ids():
    stamped = thresholds_metadata({"no_helmet": 0.08, "helmet": 0.3})
    assert set(stamped) == {CLASS_THRESHOLDS_KEY} and CLASS_THRESHOLDS_KEY == "class_thresholds"
    meta = parse_metadata({"names": PPE_NAMES, **stamped})
    assert meta.thresholds == {1: 0.08, 0: 0.3}
    # A TensorRT sidecar may hold the value as the JSON object itself rather than a string of it.
    assert parse_metadata({"names": {"0": "helmet", "1": "no_helmet"}, CLASS_THRESHOLDS_KEY: {"helmet": 0.3}}).thresholds == {0: 0.3}


def test_a_model_without_class_thresholds_has_none():
    assert parse_metadata({"names": PPE_NAMES}).thresholds == {}
    assert parse_metadata({}).thresholds == {}


@pytest.mark.parametrize(("value", "named"), [
    ("helmet=0.3", "'helmet=0.3'"),  # not JSON
    ('[0.3, 0.1]', r"'\[0.3, 0.1\]'"),  # JSON, but not an object
    ('{"nohelmet": 0.3}', "'nohelmet'"),  # a name that is not a class of the model
    ('{"helmet": 1.0}', "1.0"),
    ('{"helmet": 0}', "= 0 "),
    ('{"helmet": -0.2}', "-0.2"),
    ('{"helmet": "0.3"}', "'0.3'"),  # a string is not a number
    ('{"helmet": true}', "True"),
    ('{"helmet": NaN}', "nan"),
])
def test_malformed_class_thresholds_are_refused_naming_the_bad_value(value: str, named: str):
    with pytest.raises(ValueError, match=named):
        parse_metadata({"names": PPE_NAMES, CLASS_THRESHOLDS_KEY: value})


def test_stamping_refuses_a_threshold_outside_the_open_unit_interval():
    for bad in (0.0, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"helmet.*is not a confidence in \(0, 1\)"):
            thresholds_metadata({"helmet": bad})
