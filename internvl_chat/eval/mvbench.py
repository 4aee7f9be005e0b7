"""MVBench (20 video multiple-choice tasks), as upstream's ``eval/mvbench/evaluate_mvbench.py``.

Data: ``data/MVBench/json/<task>.json`` (each a list of ``{video, question, candidates, answer[, start, end]}``)
and the videos under ``data/MVBench/video/<source>/`` (``huggingface-cli download --repo-type dataset
OpenGVLab/MVBench --local-dir data/MVBench`` and unzip the video archives, as upstream's README says).
Frames: ``--num_segments`` (16 in upstream's evaluate.sh) frames, one from the middle of each of equal segments of
the clip or of its ``[start, end]`` seconds for the four tasks that give them, through the fine-tuning data's video
reader (``internvl.data.chat_image.load_video`` / ``frame_indices``); Episodic Reasoning reads numbered JPEG frames
at 3 fps. Each frame is one tile (``--dynamic`` tiles it up to ``--max-num``, default 1).
Prompt: ``Frame1: <image>\\n...Frame16: <image>\\n`` + the instruction + ``Question: ..\\nOptions:\\n(A) ..`` +
``\\nOnly give the best option.``; 1000 new tokens.
Results: ``MVBench_<stamp>.json`` (``question, pred, gt, task_type`` per answer; upstream writes only rank 0's
answers there, this suite all of them) and ``MVBench_<stamp>_result_final.json`` (accuracy per task and ``Avg``,
in %). Score: upstream's ``check_ans`` (the answer's first word against the right ``(X)``; an empty answer counts
as right there, and so here).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from internvl.data.chat_image import frame_indices, load_image, load_video
from internvl.errors import DataError, MissingFileError
from .items import Item, need_file, read_json, require_keys, time_prefix, write_json

TASKS = ("mvbench",)
SOURCE = ("download OpenGVLab/MVBench (huggingface-cli download --repo-type dataset OpenGVLab/MVBench --local-dir "
          "data/MVBench) and unzip its video archives, as upstream's eval/mvbench/README.md says")
NUM_SEGMENTS, MAX_NEW_TOKENS, MIN_NEW_TOKENS = 16, 1000, 1
PROMPT = ("Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement "
          "of objects, and the action and pose of persons. Based on your observations, select the best option that "
          "accurately addresses the question.\n")
QUESTION_PROMPT = "\nOnly give the best option."
# task -> (json file, video folder under data/MVBench/video, reader, has start/end)
DATA_LIST = {
    "Action Sequence": ("action_sequence.json", "star/Charades_v1_480/", "video", True),
    "Action Prediction": ("action_prediction.json", "star/Charades_v1_480/", "video", True),
    "Action Antonym": ("action_antonym.json", "ssv2_video/", "video", False),
    "Fine-grained Action": ("fine_grained_action.json", "Moments_in_Time_Raw/videos/", "video", False),
    "Unexpected Action": ("unexpected_action.json", "FunQA_test/test/", "video", False),
    "Object Existence": ("object_existence.json", "clevrer/video_validation/", "video", False),
    "Object Interaction": ("object_interaction.json", "star/Charades_v1_480/", "video", True),
    "Object Shuffle": ("object_shuffle.json", "perception/videos/", "video", False),
    "Moving Direction": ("moving_direction.json", "clevrer/video_validation/", "video", False),
    "Action Localization": ("action_localization.json", "sta/sta_video/", "video", True),
    "Scene Transition": ("scene_transition.json", "scene_qa/video/", "video", False),
    "Action Count": ("action_count.json", "perception/videos/", "video", False),
    "Moving Count": ("moving_count.json", "clevrer/video_validation/", "video", False),
    "Moving Attribute": ("moving_attribute.json", "clevrer/video_validation/", "video", False),
    "State Change": ("state_change.json", "perception/videos/", "video", False),
    "Fine-grained Pose": ("fine_grained_pose.json", "nturgbd/", "video", False),
    "Character Order": ("character_order.json", "perception/videos/", "video", False),
    "Egocentric Navigation": ("egocentric_navigation.json", "vlnqa/", "video", False),
    "Episodic Reasoning": ("episodic_reasoning.json", "tvqa/frames_fps3_hq/", "frame", True),
    "Counterfactual Inference": ("counterfactual_inference.json", "clevrer/video_validation/", "video", False),
}


def qa_template(data: dict):
    """Upstream's question block and the right answer as ``(X) text``."""
    question = f"Question: {data['question']}\n"
    question += "Options:\n"
    answer = data["answer"]
    answer_idx = -1
    for idx, c in enumerate(data["candidates"]):
        question += f"({chr(ord('A') + idx)}) {c}\n"
        if c == answer:
            answer_idx = idx
    question = question.rstrip()
    answer = f"({chr(ord('A') + answer_idx)}) {answer}"
    return question, answer


def check_ans(pred: str, gt: str) -> bool:
    """Upstream's check: the answer's first word (dots removed) inside the right option's ``(x)``, or that
    ``(x)`` inside the answer's first word."""
    pred = pred.replace("Answer: ", "")
    pred_list = pred.lower().split(" ")
    pred_option = pred_list[0]
    gt_option = gt.lower().split(" ")[0]
    if pred_option.replace(".", "") in gt_option:
        return True
    return gt_option in pred_option


def _frames_pixels(path: Path, bound, num_segments: int):
    def build(input_size: int, dynamic: bool, max_num: int, use_thumbnail: bool):
        if not path.is_dir():
            raise MissingFileError(f"mvbench: frame folder {path} not found; {SOURCE}")
        max_frame = len(os.listdir(path))
        indices = frame_indices(bound, 3, max_frame, first_idx=1, num_segments=num_segments)
        tiles = [load_image(path / f"{i:05d}.jpg", input_size=input_size, max_num=max_num if dynamic else 1,
                            use_thumbnail=use_thumbnail) for i in indices]
        return torch.cat(tiles), [len(t) for t in tiles]
    return build


def _video_pixels(path: Path, bound, num_segments: int):
    def build(input_size: int, dynamic: bool, max_num: int, use_thumbnail: bool):
        return load_video(path, num_segments=num_segments, bound=bound, input_size=input_size,
                          max_num=max_num if dynamic else 1, use_thumbnail=use_thumbnail)
    return build


def load_items(task: str, data_root: os.PathLike, num_segments: int = NUM_SEGMENTS) -> List[Item]:
    root = Path(data_root) / "MVBench"
    items = []
    for task_type, (json_file, prefix, kind, has_bound) in DATA_LIST.items():
        path = need_file(data_root, f"MVBench/json/{json_file}", task, SOURCE)
        for i, data in enumerate(read_json(path)):
            require_keys(data, ["video", "question", "candidates", "answer"], f"{path}: item {i}")
            bound = None
            if has_bound:
                require_keys(data, ["start", "end"], f"{path}: item {i}")
                bound = (data["start"], data["end"])
            video = root / "video" / prefix / data["video"]
            special_tokens = "\n".join(f"Frame{k + 1}: <image>" for k in range(num_segments))
            question, answer = qa_template(data)
            question = special_tokens + "\n" + PROMPT + "\n" + question + QUESTION_PROMPT
            build = (_frames_pixels if kind == "frame" else _video_pixels)(video, bound, num_segments)
            items.append(Item(key=f"{task_type}/{i}", question=question, pixels=build,
                              record={"gt": answer, "task_type": task_type},
                              max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=MIN_NEW_TOKENS))
    return items


def final_result(outputs: Sequence[dict]) -> Dict[str, float]:
    if not outputs:
        raise DataError("no MVBench answers to score")
    acc: Dict[str, List[int]] = {}
    correct = 0
    for item in outputs:
        ok = check_ans(item["pred"], item["gt"])
        acc.setdefault(item["task_type"], [0, 0])
        acc[item["task_type"]][1] += 1
        acc[item["task_type"]][0] += ok
        correct += ok
    res = {k: v[0] / v[1] * 100 for k, v in acc.items()}
    res["Avg"] = correct / len(outputs) * 100
    return res


def finish(task: str, items: Sequence[Item], answers: Sequence[str], out_dir: os.PathLike,
           data_root: os.PathLike) -> Path:
    outputs = [{"question": it.question, "pred": a, "gt": it.record["gt"], "task_type": it.record["task_type"]}
               for it, a in zip(items, answers)]
    stem = Path(out_dir) / f"MVBench_{time_prefix()}"
    path = write_json(outputs, f"{stem}.json")
    write_json(final_result(outputs), f"{stem}_result_final.json")
    return path


def score(task: str, results_file: os.PathLike, data_root: Optional[os.PathLike] = None) -> Dict[str, Any]:
    outputs = read_json(results_file)
    if isinstance(outputs, dict):
        raise DataError(f"{results_file}: this is a *_result_final.json; score the MVBench_<stamp>.json beside it")
    for i, o in enumerate(outputs):
        require_keys(o, ["pred", "gt", "task_type"], f"{results_file}: item {i}")
    return final_result(outputs)


def write_synthetic(data_root: os.PathLike, n: int = 1, kit=None, frames: int = 8,
                    tasks: Sequence[str] = tuple(DATA_LIST)) -> Path:
    """``n`` questions for each MVBench task (the shape's colour) over short clips of the data kit's images
    (H.264 via PyAV), numbered JPEG frames for Episodic Reasoning; ``start``/``end`` where upstream reads them."""
    import json

    from internvl.data.synthetic import COLOURS, SyntheticImages, save_jpeg
    from internvl_chat.chat_data.chat_jsonl import _write_video

    kit = kit or SyntheticImages(image_size=64)
    root = Path(data_root) / "MVBench"
    (root / "json").mkdir(parents=True, exist_ok=True)
    colours = list(COLOURS)
    index = 0
    for task_type in tasks:
        json_file, prefix, kind, has_bound = DATA_LIST[task_type]
        rows = []
        for i in range(n):
            s = kit.sample(index)
            index += 1
            name = f"{json_file[:-5]}_{i}"
            if kind == "frame":
                for k in range(1, frames + 1):
                    save_jpeg(s.image, root / "video" / prefix / name / f"{k:05d}.jpg")
            else:
                name += ".mp4"
                video = root / "video" / prefix / name
                if not video.exists():
                    _write_video(video, s.image, frames)
            row = {"video": name, "question": "What colour is the shape?", "candidates": colours[:3] if
                   s.colour in colours[:3] else colours[1:], "answer": s.colour}
            if has_bound:
                row.update(start=0.0, end=1.0)
            rows.append(row)
        with open(root / "json" / json_file, "w") as f:
            json.dump(rows, f)
    return root
