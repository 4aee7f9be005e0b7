"""internvl.fileio.read_json: the one checked JSON reader (annotation files, argument files, DeepSpeed configs,
prompt files): a missing file, bad JSON and a wrong top-level type each give one message naming the file."""
import json

import pytest

from internvl.errors import ConfigError, DataError, MissingFileError, UserError
from internvl.fileio import read_json


def test_content_and_each_error_names_the_file(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"a": [1, "二"]}, ensure_ascii=False), encoding="utf-8")
    assert read_json(good, kind=dict) == {"a": [1, "二"]}
    with pytest.raises(MissingFileError, match=r"^annotation file not found: .*nope\.json \(expected a list; "
                                               r"see data/README\.md\)$"):
        read_json(tmp_path / "nope.json", "annotation file", "a list", hint="see data/README.md")
    bad = tmp_path / "bad.json"
    bad.write_text("{'a': 1}")
    with pytest.raises(DataError, match=r"^--deepspeed .*bad\.json is not valid JSON \(.*line 1 column 2.*\); "
                                        r"expected a ZeRO config$"):
        read_json(bad, "--deepspeed", "a ZeRO config")
    bad.write_bytes(b"\xff\xfe[")
    with pytest.raises(DataError, match="is not valid JSON"):
        read_json(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"^arguments file .*bad\.json: expected a JSON object; found a JSON list$"):
        read_json(bad, "arguments file", kind=dict, error=ConfigError)
    bad.write_text('{"x": 1}')
    with pytest.raises(DataError, match=r"expected a COCO list; found an object with keys \['x'\]"):
        read_json(bad, expected="a COCO list", kind=list)
    assert read_json(bad) == {"x": 1}  # no kind: any JSON value
    assert issubclass(DataError, UserError) and issubclass(ConfigError, UserError)
