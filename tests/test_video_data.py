"""The video reader and upstream's MSR-VTT sampling and metrics (internvl.data.video, video_retrieval.metrics):
frame indices against upstream's numpy formula, the decoded frames are the ones asked for, every unusable video
is listed, and recall / dual-softmax re-scoring against values computed by hand on a crafted score matrix."""
import json
import math

import numpy as np
import pytest
import torch

from internvl.data.video import (FrameCountError, VideoDecodeError, check_videos, interval_centres, read_frames,
                                 read_msrvtt, write_msrvtt, write_video)
from internvl.errors import DataError
from video_retrieval.metrics import dual_softmax, recall_at_k, retrieval_metrics

pytest.importorskip("av")


def upstream_frames(length, num_frames):
    """video_retrieval/test_msrvtt.py, as upstream writes it: (indices, whether its assertion holds)."""
    interval = math.ceil(length / num_frames)
    frames_id = np.arange(0, length, interval) + interval // 2
    return frames_id.tolist(), len(frames_id) == num_frames and frames_id[-1] < length


@pytest.mark.parametrize("num_frames", [1, 2, 3, 4, 5, 8, 16, 32])
def test_interval_centres_match_upstream_for_every_length(num_frames):
    passed = failed = 0
    for length in range(1, 400):
        expected, ok = upstream_frames(length, num_frames)
        if ok:
            assert interval_centres(length, num_frames) == expected, (length, num_frames)
            passed += 1
        else:
            with pytest.raises(FrameCountError, match=f"{length} frames, and {num_frames} at interval centres"):
                interval_centres(length, num_frames, "v.mp4")
            failed += 1
    assert passed > 0 and (failed > 0) == (num_frames > 1)


def test_interval_centres_messages_name_the_video_and_what_fits():
    # 10 frames at 4: interval 3 -> 1, 4, 7, 10; 10 is past the end (upstream's assertion fails)
    with pytest.raises(FrameCountError, match=r"clip\.mp4: 10 frames.*\[1, 4, 7, 10\].*2 work for this video"):
        interval_centres(10, 4, "clip.mp4")
    with pytest.raises(FrameCountError, match="16 work for this video"):
        interval_centres(16, 20, "clip.mp4")


def _grey_video(path, n, fps=8):
    from PIL import Image

    frames = [Image.fromarray(np.full((32, 48, 3), 12 * i, np.uint8)) for i in range(n)]
    return write_video(path, frames, fps=fps)


def test_read_frames_decodes_the_frames_asked_for(tmp_path):
    path = _grey_video(tmp_path / "grey.mp4", 20)
    frames = read_frames(path, lambda length, fps: interval_centres(length, 4))  # interval 5: 2, 7, 12, 17
    levels = [float(np.asarray(f)[16, 24].mean()) for f in frames]
    assert levels == pytest.approx([24, 84, 144, 204], abs=3)
    assert [float(np.asarray(f).mean()) for f in read_frames(path, [19, 0])] == pytest.approx([228, 0], abs=3)
    with pytest.raises(FrameCountError, match="grey.mp4: frames \\[20\\]"):
        read_frames(path, [20])


def test_check_videos_lists_every_unusable_video_by_path(tmp_path):
    good = _grey_video(tmp_path / "good.mp4", 16)
    short = _grey_video(tmp_path / "short.mp4", 3)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 200)
    paths = [str(good), str(short), str(broken)]
    assert check_videos(paths[:1], 8) == [16]
    with pytest.raises(VideoDecodeError) as info:
        check_videos(paths, 8, ["meta entry 0", "meta entry 1", "meta entry 2"], listed_in="meta.json")
    message = str(info.value)
    assert message.startswith("2 of 3 videos listed in meta.json cannot be used at 8 frames")
    assert "short.mp4: 3 frames" in message and "(meta entry 1)" in message
    assert "broken.mp4" in message and "good.mp4" not in message
    with pytest.raises(FileNotFoundError, match="(?s)1 of 2 videos are missing.*gone.mp4$"):
        check_videos([str(good), str(tmp_path / "gone.mp4")], 1)


def test_read_msrvtt_and_its_errors(tmp_path):
    root = write_msrvtt(tmp_path / "msrvtt", 3)
    pairs = read_msrvtt(root / "msrvtt_test1k.json", root / "videos/all")
    assert [p.video for p in pairs] == [str(root / f"videos/all/video{i}.mp4") for i in range(3)]
    assert pairs[0].caption.endswith(("moving right", "moving left", "moving up", "moving down"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"video": "a.mp4", "caption": "x"}, {"video": "b.mp4", "caption": ["x", "y"]}]))
    with pytest.raises(DataError, match="bad.json entry 1: expected"):
        read_msrvtt(bad, tmp_path)
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        read_msrvtt(tmp_path / "nothing.json", tmp_path)


# Texts x videos; text i belongs to video i. Column softmaxes (by hand, e = exp):
#   video 0: e^.9, e^.8, e^0 = 2.459603, 2.225541, 1 (sum 5.685144) -> .432642, .391469, .175898
#   video 1: e^.1, e^.7, e^0 = 1.105171, 2.013753, 1 (sum 4.118924) -> .268315, .488903, .242782
# so DSL text 1 -> video 0: .8 * .391469 = .313175 and -> video 1: .7 * .488903 = .342232: DSL ranks video 1 first,
# the raw scores video 0 (.8 > .7).
SCORES = torch.tensor([[0.9, 0.1, 0.0],
                       [0.8, 0.7, 0.0],
                       [0.0, 0.0, 0.5]])


def test_dual_softmax_by_hand():
    rescored = dual_softmax(SCORES)
    assert rescored[1, :2].tolist() == pytest.approx([0.313175, 0.342232], abs=1e-5)
    assert rescored[0, 0].item() == pytest.approx(0.9 * 0.432642, abs=1e-5)


def test_recall_with_and_without_dsl_by_hand():
    plain = retrieval_metrics(SCORES, (1, 2), use_dsl=False)
    # t2v: text 1's best video is 0 -> 2 of 3 at R@1, all at R@2; v2t: every video's best text is its own
    assert plain == pytest.approx({"t2v_retrieval_recall@1": 2 / 3, "v2t_retrieval_recall@1": 1.0,
                                   "t2v_retrieval_recall@2": 1.0, "v2t_retrieval_recall@2": 1.0})
    dsl = retrieval_metrics(SCORES, (1, 2), use_dsl=True)
    # v2t with DSL: each text's row softmaxed over the videos; video 1: text 0 .1 * .242105 vs text 1
    # .7 * .384360 (row 1: e^.8, e^.7, 1 over 5.239294) -> still its own text
    assert dsl == pytest.approx({"t2v_retrieval_recall@1": 1.0, "v2t_retrieval_recall@1": 1.0,
                                 "t2v_retrieval_recall@2": 1.0, "v2t_retrieval_recall@2": 1.0})


def test_v2t_ranks_the_columns():
    # video 0 is every text's best match: t2v R@1 = 1/3 (text 0 only); v2t R@1 = 1 (each video's best text is its own)
    scores = torch.tensor([[0.9, 0.2, 0.1], [0.8, 0.3, 0.2], [0.7, 0.1, 0.4]])
    plain = retrieval_metrics(scores, (1,), use_dsl=False)
    assert plain == pytest.approx({"t2v_retrieval_recall@1": 1 / 3, "v2t_retrieval_recall@1": 1.0})


def test_recall_at_k_counts_positives_and_rejects_k_past_the_candidates():
    positives = torch.tensor([[True, True, False]])
    assert recall_at_k(torch.tensor([[0.1, 0.9, 0.5]]), positives, 2).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="recall@4 needs at least 4 candidates"):
        recall_at_k(torch.zeros(2, 3), torch.eye(2, 3, dtype=torch.bool), 4)


def test_test_msrvtt_help_imports_nothing_heavy():
    import subprocess
    import sys

    probe = ("import runpy, sys\nsys.argv = ['test_msrvtt.py', '--help']\ntry:\n"
             "    runpy.run_module('video_retrieval.test_msrvtt', run_name='__main__')\nexcept SystemExit as e:\n"
             "    assert e.code in (0, None), e.code\n"
             "print('HEAVY:' + ','.join(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--num-frames" in result.stdout and result.stdout.strip().splitlines()[-1] == "HEAVY:", result.stdout[-300:]
