"""internvl.errors.from_workers and internvl.fileio.append_json_line, the glue the evaluation CLIs share."""
import json

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from internvl.errors import DataError, from_workers
from internvl.fileio import append_json_line


class _Broken(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        if i == 1:
            raise DataError("videos/v1.mp4: cannot decode (moov atom not found)")
        return torch.zeros(1)


def test_an_error_from_a_dataloader_worker_keeps_its_one_line_message():
    """Mutation killed: re-raising the worker's error unchanged (its message starts 'Caught DataError in
    DataLoader worker process 0. Original Traceback ...')."""
    with pytest.raises(DataError) as info, from_workers():
        list(DataLoader(_Broken(), batch_size=1, num_workers=1))
    assert str(info.value) == "videos/v1.mp4: cannot decode (moov atom not found)"
    with pytest.raises(DataError) as info, from_workers():  # raised in this process: untouched
        list(DataLoader(_Broken(), batch_size=1, num_workers=0))
    assert str(info.value) == "videos/v1.mp4: cannot decode (moov atom not found)"


def test_append_json_line_appends_one_line_per_record(tmp_path):
    out = tmp_path / "new" / "results.jsonl"
    append_json_line(out, {"a": 1})
    append_json_line(out, {"b": [2, 3]})
    assert [json.loads(line) for line in out.read_text().splitlines()] == [{"a": 1}, {"b": [2, 3]}]
