"""End to end: a tiny InternVL-C/G trained a few steps on synthetic video frames retrieves its own held-out
synthetic videos far above chance, through upstream's entry point (video_retrieval/test_msrvtt.py, both modes)
and through the clip_benchmark CLI (msrvtt, kinetics400); the two entry points give the same recall for the
same model, frames and transform."""
import json
import random

import pytest
import torch
import torch.nn.functional as F

from internvl.data.synthetic import SyntheticImages
from internvl.data.video import synthetic_video, write_msrvtt
from internvl.datakit import train_sentencepiece
from internvl.datakit.checkpoints import write_tiny_internvl_cg
from internvl.models.internvl_cg import InternVLModel
from internvl.models.processing_internvl_cg import build_cg_tokenizer, image_transform

pytest.importorskip("av")

KIT = SyntheticImages(num_classes=16, image_size=64)
NUM_VIDEOS = 24  # held out; chance: R@1 = 1/24, R@5 = 5/24


def _clip_loss(a, b, scale):
    logits = scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t()
    labels = torch.arange(len(a))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def _train(directory, steps=150, batch=48, num_videos=256):
    """Contrastive steps on (one random frame of a synthetic video, its caption), both modes' losses."""
    torch.manual_seed(0)
    model = InternVLModel.from_pretrained(directory).train()
    tokenizer, transform = build_cg_tokenizer(directory, task="retrieval"), image_transform(model.config)
    videos = [synthetic_video(KIT, 1000 + i, 8) for i in range(num_videos)]
    pixels = torch.stack([torch.stack([transform(f) for f in frames]) for frames, _, _ in videos])
    ids = tokenizer.tokenize([caption for _, caption, _ in videos]).input_ids
    ids = ids[:, :int((ids > 0).sum(1).max())]
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    pick = random.Random(0)
    for _ in range(steps):
        index = pick.sample(range(num_videos), batch)
        frames = pixels[index, [pick.randrange(8) for _ in index]]
        texts = model.encode_text(ids[index])
        scale = model.logit_scale.exp()
        loss = _clip_loss(model.encode_image(frames, mode="InternVL-C"), texts, scale) + \
            _clip_loss(model.encode_image(frames, mode="InternVL-G"), texts, scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    directory = write_tiny_internvl_cg(root / "InternVL-14B-224px", qllama={"num_hidden_layers": 2, "vocab_size": 1000})
    train_sentencepiece(directory, vocab_size=1000)
    _train(directory)
    msrvtt = write_msrvtt(root / "msrvtt", NUM_VIDEOS, kit=KIT)  # samples 0..23: never seen in training
    return root, directory, msrvtt


def _test_msrvtt(msrvtt, directory, output, *flags):
    from video_retrieval.test_msrvtt import main

    assert main(["--video-root", str(msrvtt / "videos/all"), "--metadata", str(msrvtt / "msrvtt_test1k.json"),
                 "--pretrained", str(directory), "--num-frames", "4", "--num-workers", "0", "--quiet",
                 "--output", str(output), *flags]) == 0
    return json.loads(output.read_text().splitlines()[-1])["metrics"]


def test_trained_model_retrieves_its_videos_through_test_msrvtt_and_clip_benchmark(trained, tmp_path):
    root, directory, msrvtt = trained
    out = tmp_path / "msrvtt.jsonl"
    for mode in ("InternVL-C", "InternVL-G"):
        metrics = _test_msrvtt(msrvtt, directory, out, "--mode", mode)
        for key in ("t2v_retrieval_recall@1", "v2t_retrieval_recall@1", "t2v_retrieval_recall@1_no_dsl"):
            assert metrics[key] > 3.5 / NUM_VIDEOS, (mode, key, metrics)  # chance: 1/24
        for key in ("t2v_retrieval_recall@5", "v2t_retrieval_recall@5"):
            assert metrics[key] >= 0.6, (mode, key, metrics)  # chance: 5/24
    plain = {k[:-len("_no_dsl")]: v for k, v in metrics.items() if k.endswith("_no_dsl")}

    from internvl_clip_benchmark.cli import main

    result = tmp_path / "clip_benchmark.jsonl"
    assert main(["eval", "--model_type", "internvl", "--model", "internvl_g_classification_hf", "--pretrained",
                 str(directory), "--dataset", "msrvtt", "--dataset_root", str(msrvtt), "--num_frames", "4",
                 "--output", str(result), "--num_workers", "0", "--no_amp", "--quiet"]) == 0
    laion = json.loads(result.read_text())["metrics"]
    # LAION's names: image_retrieval = text -> video, text_retrieval = video -> text; same recall without DSL
    for k in (1, 5, 10):
        assert laion[f"image_retrieval_recall@{k}"] == pytest.approx(plain[f"t2v_retrieval_recall@{k}"], abs=1e-6)
        assert laion[f"text_retrieval_recall@{k}"] == pytest.approx(plain[f"v2t_retrieval_recall@{k}"], abs=1e-6)


def test_trained_model_classifies_kinetics_layouts_and_reuses_frame_features(trained, tmp_path):
    from internvl_clip_benchmark.cli import main
    from internvl_clip_benchmark.datasets.video import write_kinetics
    from internvl_clip_benchmark.evaluate import Session

    root, directory, _ = trained
    folders = write_kinetics(tmp_path / "k400", 32, kit=KIT, start=100)  # 16 classes, 2 videos each
    listed = write_kinetics(tmp_path / "k700", 32, kit=KIT, start=100, layout="csv")  # the same videos, Kinetics' CSV
    templates = tmp_path / "templates.json"
    templates.write_text(json.dumps({"kinetics400": ["a {c}"], "kinetics700": ["a {c}"]}))
    other = tmp_path / "other_templates.json"
    other.write_text(json.dumps({"kinetics700": ["a {c}", "a video of a {c}"]}))
    output, cache = tmp_path / "result.jsonl", tmp_path / "cache"
    common = ["eval", "--model_type", "internvl", "--model", "internvl_c_classification_hf", "--pretrained",
              str(directory), "--split", "val", "--num_frames", "4", "--output", str(output), "--num_workers", "0",
              "--no_amp", "--quiet", "--feature_cache_dir", str(cache)]
    main([*common, "--dataset", "kinetics400", "--dataset_root", str(folders), "--custom_template_file", str(templates)])
    session = Session(str(cache), verbose=False)
    main([*common, "--dataset", "kinetics700", "--dataset_root", str(listed), "--custom_template_file", str(templates)],
         session=session)
    main([*common, "--dataset", "kinetics700", "--dataset_root", str(listed), "--custom_template_file", str(other)],
         session=session)
    main([*common, "--dataset", "kinetics700", "--dataset_root", str(listed), "--custom_template_file", str(other),
          "--num_frames", "2"], session=session)
    assert session.store.stats == {"computed": 2, "memory": 1, "disk": 0}  # 4 frames once, then 2 frames
    results = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["dataset"] for r in results] == ["kinetics400"] + ["kinetics700"] * 3
    folder_run, csv_run = results[0]["metrics"], results[1]["metrics"]
    assert folder_run["acc1"] >= 0.25 and folder_run["acc5"] >= 0.6, folder_run  # chance: 1/16, 5/16
    assert csv_run == pytest.approx(folder_run)  # the same videos and classes in the other layout


def test_test_msrvtt_errors_name_the_flag_and_the_file(tmp_path):
    from internvl.errors import CheckpointError, ConfigError
    from video_retrieval.test_msrvtt import main

    msrvtt = write_msrvtt(tmp_path / "msrvtt", 10, kit=KIT)
    flags = ["--video-root", str(msrvtt / "videos/all"), "--metadata", str(msrvtt / "msrvtt_test1k.json"), "--quiet"]
    with pytest.raises(ConfigError, match="--model internvl_g_retrieval_hf computes InternVL-G features but --mode"):
        main([*flags, "--model", "internvl_g_retrieval_hf", "--mode", "InternVL-C"])
    pth = tmp_path / "internvl_c_13b_224px.pth"
    pth.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a Hugging Face directory.*clip_benchmark CLI's msrvtt"):
        main([*flags, "--pretrained", str(pth)])
    with pytest.raises(FileNotFoundError, match="--pretrained .*nowhere does not exist"):
        main([*flags, "--pretrained", str(tmp_path / "nowhere")])
    with pytest.raises(ConfigError, match="recall@10 needs at least that many videos; .* lists 5"):
        short = tmp_path / "short.json"
        short.write_text(json.dumps(json.loads((msrvtt / "msrvtt_test1k.json").read_text())[:5]))
        main(["--video-root", str(msrvtt / "videos/all"), "--metadata", str(short)])
