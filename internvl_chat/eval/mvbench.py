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
from typing import Dict, List, Optional, Sequence

from internvl.errors import DataError

from .framework import Item, Task, read_json
from .items import require_keys, write_json_file

NUM_SEGMENTS = 16
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


class FramePixels:
    """``num_segments`` frames of a clip (``kind`` "video": through ``load_video``; "frame": numbered JPEGs at
    3 fps, first index 1, as upstream reads Episodic Reasoning), one ``<image>`` each."""

    def __init__(self, path: Path, kind: str, bound, num_segments: int, task: str):
        self.path, self.kind, self.bound, self.num_segments, self.task = path, kind, bound, num_segments, task

    def __call__(self, image_size: int, dynamic: bool, max_num: int, use_thumbnail: bool):
        import torch

        from internvl.data.chat_image import frame_indices, load_image, load_video

        per_frame = max_num if dynamic else 1
        if self.kind == "video":
            return load_video(self.path, num_segments=self.num_segments, bound=self.bound, input_size=image_size,
                              max_num=per_frame, use_thumbnail=use_thumbnail)
        max_frame = len(os.listdir(self.path))
        indices = frame_indices(self.bound, 3, max_frame, first_idx=1, num_segments=self.num_segments)
        tiles = [load_image(self.path / f"{i:05d}.jpg", input_size=image_size, max_num=per_frame,
                            use_thumbnail=use_thumbnail) for i in indices]
        return torch.cat(tiles), [len(t) for t in tiles]


def final_result(outputs: Sequence[dict]) -> Dict[str, float]:
    """Accuracy per task and ``Avg`` over all answers, in %."""
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


class MVBench(Task):
    name, upstream, family = "mvbench", "MVBench", "mvbench"
    max_new_tokens, min_new_tokens = 1000, 1
    headline = ("Avg",)
    batchable = False
    instructions = ("upstream's internvl_chat/eval/mvbench/README.md (huggingface-cli download --repo-type dataset "
                    "OpenGVLab/MVBench --local-dir data/MVBench, then unzip its video archives)")

    def __init__(self, num_segments: int = NUM_SEGMENTS):
        self.num_segments = num_segments

    def load(self, data_root: Path) -> list:
        special_tokens = "\n".join(f"Frame{k + 1}: <image>" for k in range(self.num_segments))
        items = []
        for task_type, (json_file, prefix, kind, has_bound) in DATA_LIST.items():
            path = self.need(data_root / "MVBench" / "json" / json_file, f"the {task_type} question file")
            for i, data in enumerate(read_json(path, self.name)):
                where = f"{path} item {i}"
                require_keys(data, ["video", "question", "candidates", "answer"], self.name, where)
                bound = None
                if has_bound:
                    require_keys(data, ["start", "end"], self.name, where)
                    bound = (data["start"], data["end"])
                video = self.need(data_root / "MVBench" / "video" / prefix / data["video"],
                                  "the video" if kind == "video" else "the frame folder")
                question, answer = qa_template(data)
                question = special_tokens + "\n" + PROMPT + "\n" + question + QUESTION_PROMPT
                items.append(Item(len(items), [], question, {"gt": answer, "task_type": task_type},
                                  pixels=FramePixels(video, kind, bound, self.num_segments, self.name)))
        return items

    def record(self, item: Item, answer: str, checkpoint: str) -> dict:
        return {"question": item.question, "pred": answer, "gt": item.meta["gt"], "task_type": item.meta["task_type"]}

    def write_results(self, records: list, out_dir: Path, checkpoint: str, stamp: str) -> Path:
        """``MVBench_<stamp>.json`` (every answer) and ``MVBench_<stamp>_result_final.json`` (the scores)."""
        stem = Path(out_dir) / f"MVBench_{stamp}"
        path = write_json_file(f"{stem}.json", records)
        write_json_file(f"{stem}_result_final.json", final_result(records))
        return path

    def score(self, results: Path, data_root: Path) -> Optional[dict]:
        outputs = read_json(results, self.name)
        if isinstance(outputs, dict):
            raise DataError(f"{self.name}: {results} is a *_result_final.json; score the MVBench_<stamp>.json "
                            "beside it")
        for i, o in enumerate(outputs):
            require_keys(o, ["pred", "gt", "task_type"], self.name, f"{results} item {i}")
        return final_result(outputs)

    def write_synthetic(self, data_root: Path, n: int = 4, frames: int = 8) -> None:
        """``max(1, n // 20)`` questions per MVBench task (the shape's colour) over short H.264 clips of the data
        kit's images (PyAV), numbered JPEG frames for Episodic Reasoning, ``start``/``end`` where upstream reads
        them."""
        from internvl.data.synthetic import COLOURS

        from internvl.data.video import write_shifting_video

        from .framework import save_image, synthetic_samples

        per = max(1, n // len(DATA_LIST))
        colours = list(COLOURS)
        samples = iter(synthetic_samples(per * len(DATA_LIST)))
        root = data_root / "MVBench"
        for task_type, (json_file, prefix, kind, has_bound) in DATA_LIST.items():
            rows = []
            for i in range(per):
                s = next(samples)
                name = f"{json_file[:-5]}_{i}"
                if kind == "frame":
                    for k in range(1, frames + 1):
                        save_image(s.image, root / "video" / prefix / name / f"{k:05d}.jpg")
                else:
                    name += ".mp4"
                    write_shifting_video(root / "video" / prefix / name, s.image, frames)
                row = {"video": name, "question": "What colour is the shape?",
                       "candidates": colours[:3] if s.colour in colours[:3] else colours[1:], "answer": s.colour}
                if has_bound:
                    row.update(start=0.0, end=1.0)
                rows.append(row)
            write_json_file(root / "json" / json_file, rows)


TASKS = [MVBench()]
GROUPS: dict = {}
