"""InternVL-G caption evaluation: metrics on hand-made cases, the upstream result line, the readers on the
data kit's files, bad input, rank sharding, and internvl_g/evaluate.sh end to end with a tiny model."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cg_helpers import write_tiny_internvl_cg
from PIL import Image

from internvl.data.caption_benchmarks import (BENCHMARKS, CaptionDataset, load_image_list, reference_captions,
                                        write_coco_karpathy, write_flickr30k_karpathy, write_nocaps)
from internvl.eval.caption_metrics import (METRICS, JavaNotFoundError, check_java, load_coco_references,
                                        score_captions, summary_line)
from internvl.datakit import SyntheticImages
from internvl.errors import ConfigError
from internvl.models.processing_internvl_cg import image_transform
from internvl.train.distributed import shard_indices
from internvl.data.transforms import ImageDecodeError
from internvl_g.evaluate_caption import parse_args

REPO = Path(__file__).resolve().parents[1]
KIT = SyntheticImages(num_classes=4, image_size=32)
# Upstream internvl_g/README.md, "Expected results" of COCO Karpathy test, verbatim.
PUBLISHED_COCO_LINE = ("['coco', 'English caption:', 10.5974, dict_items([('Bleu_1', 0.7876323287981284), "
                       "('Bleu_2', 0.6353512494727918), ('Bleu_3', 0.49108984183589743), "
                       "('Bleu_4', 0.37062736733849205), ('METEOR', 0.30106315496945923), "
                       "('ROUGE_L', 0.5898249189475652), ('CIDEr', 1.281844384075423)])]")


# --------------------------------------------------------------------------- metrics
def test_identical_captions_score_perfectly():
    refs = {1: ["A red circle on a noisy background."], 2: ["a blue square in the top left"],
            3: ["There is a green cross in the center of the picture."]}
    predictions = {k: v[0] for k, v in refs.items()}
    # Line breaks of any kind are folded: they must not shift captions between the tokenizer's lines.
    predictions[2] = "a blue\rsquare in the\u2028top  left\n"
    scores = score_captions(refs, predictions)
    assert list(scores) == list(METRICS) and all(type(v) is float for v in scores.values())
    for name in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L"):
        assert scores[name] == pytest.approx(1.0, abs=1e-6), name
    assert scores["METEOR"] > 0.95  # METEOR's fragmentation penalty keeps it just below 1
    assert scores["CIDEr"] > 1.0


def test_bleu_1_and_rouge_l_match_a_hand_computation():
    """Hypothesis 'a green circle on a background' (6 tokens, after the PTB tokenizer lowercases and drops the
    final period) against two references of 7 tokens: 5 of 6 unigrams match ('green' does not; 'a' twice is
    clipped by the first reference's two 'a's), brevity penalty exp(1 - 7/6).
    ROUGE-L: the LCS with the first reference is 'a circle on a background' (5): P = 5/6, R = 5/7, beta 1.2."""
    refs = {7: ["A red circle on a noisy background.", "a red circle in the top left"]}
    scores = score_captions(refs, {7: "A green circle on a background."})
    assert scores["Bleu_1"] == pytest.approx(5 / 6 * math.exp(1 - 7 / 6), rel=1e-6)
    p, r, beta = 5 / 6, 5 / 7, 1.2
    assert scores["ROUGE_L"] == pytest.approx((1 + beta ** 2) * p * r / (r + beta ** 2 * p), rel=1e-6)
    assert 0 < scores["Bleu_4"] < scores["Bleu_1"]


def test_summary_line_reproduces_the_published_line():
    published = {"Bleu_1": 0.7876323287981284, "Bleu_2": 0.6353512494727918, "Bleu_3": 0.49108984183589743,
                 "Bleu_4": 0.37062736733849205, "METEOR": 0.30106315496945923, "ROUGE_L": 0.5898249189475652,
                 "CIDEr": 1.281844384075423}
    assert summary_line("coco", "English caption:", 10.5974, published) == PUBLISHED_COCO_LINE


def test_scoring_needs_references_for_every_captioned_image():
    with pytest.raises(KeyError, match=r"no reference captions.*\[2\]"):
        score_captions({1: ["a red circle"]}, {1: "a red circle", 2: "a blue square"})


# --------------------------------------------------------------------------- java
def _fake_java(tmp_path: Path, script: str) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").write_text("#!/bin/sh\n" + script)
    (bin_dir / "java").chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


def test_check_java_reports_missing_failing_and_hanging_java(tmp_path, monkeypatch):
    assert "version" in check_java()  # the real one, needed by the metric tests above
    monkeypatch.setenv("PATH", str(tmp_path))  # no java at all
    with pytest.raises(JavaNotFoundError, match="no `java` on the PATH.*install"):
        check_java()
    monkeypatch.setenv("PATH", _fake_java(tmp_path, "sleep 30\n")["PATH"])
    with pytest.raises(JavaNotFoundError, match="did not answer within 0.5 s"):
        check_java(timeout=0.5)
    (tmp_path / "bin" / "java").write_text("#!/bin/sh\necho 'Unable to locate a Java Runtime' >&2\nexit 1\n")
    with pytest.raises(JavaNotFoundError, match="exit 1.*Unable to locate"):
        check_java()


# --------------------------------------------------------------------------- readers and bad input
@pytest.fixture(scope="module")
def caption_data(tmp_path_factory) -> Path:
    """A data root with all three benchmarks (different index blocks, so ids differ between them)."""
    root = tmp_path_factory.mktemp("data")
    write_coco_karpathy(root / "coco", 5, KIT, start=100)
    write_flickr30k_karpathy(root / "flickr30k", 4, KIT, start=200)
    write_nocaps(root / "nocaps", 3, KIT, start=300)
    return root


@pytest.mark.parametrize("name, ids", [("coco", range(100, 105)), ("flickr30k", range(200, 204)),
                                       ("nocaps", range(300, 303))])
def test_readers_take_the_data_kit_files_as_upstream_does(caption_data, name, ids):
    spec = BENCHMARKS[name]
    items = load_image_list(caption_data / spec.image_list, caption_data / spec.image_root, spec.list_format)
    assert [item.image_id for item in items] == list(ids)
    for item in items:
        with Image.open(item.path) as image:  # the very file the writer drew for this id
            assert image.tobytes() == Image.open(_jpeg_roundtrip(KIT.sample(item.image_id).image)).tobytes()
    references = load_coco_references(caption_data / spec.references)
    assert set(references) == set(ids)
    per_image = 10 if name == "nocaps" else 5
    assert all(references[i] == reference_captions(KIT.sample(i), per_image) for i in ids)
    pixels, image_id = CaptionDataset(items, image_transform(28))[1]
    assert pixels.shape == (3, 28, 28) and image_id == ids[1]


def _jpeg_roundtrip(image):
    import io
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, subsampling=0)
    buffer.seek(0)
    return buffer


def test_annotation_files_in_the_wrong_format_say_what_was_expected(tmp_path, caption_data):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(ValueError, match=r"expected the COCO Karpathy test format: a JSON list of \{'image'"):
        load_image_list(bad, tmp_path, "karpathy")
    bad.write_text(json.dumps([{"image": "val2014/COCO_val2014_000000000001.png", "caption": []}]))
    with pytest.raises(ValueError, match=r"entry 0 of .*bad.json.*cannot read an image id"):
        load_image_list(bad, tmp_path, "karpathy")
    bad.write_text(json.dumps([{"file": "x.jpg"}]))
    with pytest.raises(ValueError, match="has no string 'image'"):
        load_image_list(bad, tmp_path, "karpathy")
    bad.write_text(json.dumps([{"image": "a_1.jpg"}]))
    with pytest.raises(ValueError, match=r"expected a COCO-format caption file.*'images'.*found a JSON list"):
        load_image_list(bad, tmp_path, "coco")
    bad.write_text(json.dumps({"images": [{"id": "7", "file_name": "x.jpg"}]}))
    with pytest.raises(ValueError, match=r"images\[0\] of .*needs an integer 'id'"):
        load_image_list(bad, tmp_path, "coco")
    bad.write_text("[{'image': ")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_image_list(bad, tmp_path, "karpathy")
    bad.write_text(json.dumps([{"image_id": 1, "caption": "x"}]))
    with pytest.raises(ValueError, match=r"expected a COCO-format caption file.*'annotations'.*found a JSON list"):
        load_coco_references(bad)
    bad.write_text(json.dumps({"images": [{"id": 1}], "annotations": [{"image_id": 1, "text": "x"}]}))
    with pytest.raises(ValueError, match=r"annotations\[0\].*string 'caption'"):
        load_coco_references(bad)
    with pytest.raises(FileNotFoundError, match="annotation file not found: .*nope.json"):
        load_image_list(tmp_path / "nope.json", tmp_path, "coco")


def test_missing_duplicate_and_undecodable_images_name_the_file_and_entry(tmp_path):
    root = write_flickr30k_karpathy(tmp_path / "flickr30k", 3, KIT)
    listing = root / "flickr30k_test_karpathy.json"
    content = json.loads(listing.read_text())
    (root / "Images" / "000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)1 of 3 images .* missing.*Images/000001.jpg \(images\[1\] of"):
        load_image_list(listing, root, "coco")
    Image.new("RGB", (8, 8)).save(root / "Images" / "000001.jpg")
    (root / "Images" / "000002.jpg").write_bytes(b"not a jpeg")
    items = load_image_list(listing, root, "coco")
    dataset = CaptionDataset(items, image_transform(28))
    with pytest.raises(ImageDecodeError, match=r"cannot decode image .*000002.jpg.*\(images\[2\] of .*'id': 2"):
        dataset[2]
    items[0].path.unlink()  # deleted after the check: the loader still names it
    with pytest.raises(FileNotFoundError, match=r"000000.jpg \(images\[0\] of"):
        dataset[0]
    content["images"][2]["id"] = 0
    listing.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"image id 0 is listed twice: images\[0\].*images\[2\]"):
        load_image_list(listing, root, "coco")


def test_command_line_is_validated():
    args = parse_args(["--checkpoint", "x"])
    assert (args.datasets, args.prompt, args.num_beams, args.min_new_tokens, args.max_new_tokens) == \
        (["coco", "flickr30k", "nocaps"], "English caption:", 5, 8, 30)
    for bad in (["--datasets", "coco,vqa"], ["--batch-size", "0"], ["--min-new-tokens", "40"]):
        with pytest.raises(SystemExit):
            parse_args(["--checkpoint", "x", *bad])


# --------------------------------------------------------------------------- sharding
def _upstream_inference_sampler(total, world_size, rank):
    """Upstream's InferenceSampler._get_local_indices, restated."""
    sizes = [total // world_size + int(r < total % world_size) for r in range(world_size)]
    return range(sum(sizes[:rank]), min(sum(sizes[:rank + 1]), total))


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_shards_cover_every_image_once_in_order(world_size):
    for total in range(0, 30):
        shards = [shard_indices(total, world_size, rank) for rank in range(world_size)]
        assert [i for shard in shards for i in shard] == list(range(total))  # disjoint, complete, list order
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
        assert shards == [_upstream_inference_sampler(total, world_size, r) for r in range(world_size)]
    with pytest.raises(ValueError):
        shard_indices(10, 2, 2)


# --------------------------------------------------------------------------- end to end with a tiny model
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return write_tiny_internvl_cg(tmp_path_factory.mktemp("ckpt") / "tiny-internvl")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "PARTITION", "GPUS")}
    # One intra-op thread: a tiny model gains nothing from more, and on a busy machine it is much faster.
    env.update(PYTHON=sys.executable, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **extra)
    return env


@pytest.fixture(scope="module")
def evaluate_sh_run(tiny_checkpoint, caption_data, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("results")
    run = subprocess.run(["bash", str(REPO / "internvl_g" / "evaluate.sh"), str(tiny_checkpoint), "caption",
                          "--batch-size", "2", "--num-workers", "0"],
                         cwd=tmp_path_factory.mktemp("cwd"), capture_output=True, text=True, timeout=300,
                         env=_env(GPUS="0", DATA_ROOT=str(caption_data), OUT_DIR=str(out_dir)))
    assert run.returncode == 0, run.stderr[-3000:]
    return run, out_dir


_NUMBER = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"
_LINE = re.compile(rf"\['(\w+)', 'English caption:', ({_NUMBER}), dict_items\(\[" +
                   ", ".join(rf"\('{m}', ({_NUMBER})\)" for m in METRICS) + r"\]\)\]")


def test_evaluate_sh_captions_and_scores_every_benchmark(evaluate_sh_run, caption_data):
    run, out_dir = evaluate_sh_run
    assert "launch: single CPU process: GPUS=0" in run.stderr
    assert "coco captions" in run.stderr  # the progress bar
    # the result lines (transformers 4.51 imports DeepSpeed, which prints "[date] [WARNING] ..." lines to stdout)
    lines = [_LINE.fullmatch(line) for line in run.stdout.splitlines() if line.startswith("['")]
    assert all(lines) and [m[1] for m in lines] == ["coco", "flickr30k", "nocaps"] * 2  # each, then the summary
    for match in lines[:3]:
        name = match[1]
        spec = BENCHMARKS[name]
        items = load_image_list(caption_data / spec.image_list, caption_data / spec.image_root, spec.list_format)
        (captions_file,) = out_dir.glob(f"{name}_" + "[0-9]" * 12 + ".json")
        captions = json.loads(captions_file.read_text())
        assert [c["image_id"] for c in captions] == [item.image_id for item in items]  # every image once, in order
        assert all(isinstance(c["caption"], str) and c["caption"] for c in captions)
        report = json.loads(captions_file.with_name(captions_file.stem + "_scores.json").read_text())
        assert report["scores"] == {m: float(v) for m, v in zip(METRICS, match.groups()[2:])}
        assert report["average_length"] == float(match[2]) == \
            sum(len(c["caption"].split()) for c in captions) / len(captions)
        assert report["generation"]["num_beams"] == 5 and report["generation"]["min_new_tokens"] == 8
        # The scores are those of these captions against this benchmark's references.
        references = load_coco_references(caption_data / spec.references)
        assert score_captions(references, {c["image_id"]: c["caption"] for c in captions}) == report["scores"]


def test_two_cpu_ranks_write_the_captions_of_one(evaluate_sh_run, tiny_checkpoint, caption_data, tmp_path):
    """GPUS=2 without a GPU: two gloo processes caption contiguous shards; rank 0 gathers them in list order
    and writes the same file, with the same scores, as one process."""
    _, single_dir = evaluate_sh_run
    out_dir = tmp_path / "two"
    run = subprocess.run(["bash", str(REPO / "internvl_g" / "evaluate.sh"), str(tiny_checkpoint), "caption-coco",
                          "--batch-size", "2", "--num-workers", "0"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env=_env(GPUS="2", CUDA_VISIBLE_DEVICES="", MASTER_PORT=_free_port(),
                                               DATA_ROOT=str(caption_data), OUT_DIR=str(out_dir)))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "torchrun on the CPU: 2 processes (gloo)" in run.stderr
    (two,) = out_dir.glob("coco_" + "[0-9]" * 12 + ".json")
    (one,) = single_dir.glob("coco_" + "[0-9]" * 12 + ".json")
    assert json.loads(two.read_text()) == json.loads(one.read_text())
    scores = [json.loads(f.with_name(f.stem + "_scores.json").read_text()) for f in (two, one)]
    assert scores[0]["scores"] == scores[1]["scores"] and scores[0]["world_size"] == 2


def _free_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_cli_captions_are_the_models_beam_search_captions(evaluate_sh_run, tiny_checkpoint, caption_data):
    """What the CLI wrote equals InternVLModel.generate called by hand, one image at a time, with the
    published settings (prompt without EOS, beam 5, 8..30 new tokens)."""
    from internvl.models.internvl_cg import InternVLModel
    from internvl.models.processing_internvl_cg import build_cg_tokenizer, image_transform
    from internvl.data.transforms import open_image

    _, out_dir = evaluate_sh_run
    model = InternVLModel.from_pretrained(tiny_checkpoint, torch_dtype=torch.float32).eval()
    tokenizer = build_cg_tokenizer(tiny_checkpoint, task="caption")
    prompt = tokenizer.tokenize(["English caption:"])
    assert prompt.input_ids[0, 0] == tokenizer.bos_token_id and tokenizer.eos_token_id not in prompt.input_ids[0]
    (captions_file,) = out_dir.glob("nocaps_" + "[0-9]" * 12 + ".json")
    written = {c["image_id"]: c["caption"] for c in json.loads(captions_file.read_text())}
    spec = BENCHMARKS["nocaps"]
    transform = image_transform(model.config, task="caption")
    for item in load_image_list(caption_data / spec.image_list, caption_data / spec.image_root, spec.list_format):
        with torch.inference_mode():
            tokens = model.generate(pixel_values=transform(open_image(item.path))[None], input_ids=prompt.input_ids,
                                    attention_mask=prompt.attention_mask, num_beams=5, min_new_tokens=8,
                                    max_new_tokens=30)
        assert tokenizer.batch_decode(tokens, skip_special_tokens=True)[0] == written[item.image_id]


def test_batched_generation_equals_one_image_at_a_time(tiny_checkpoint, caption_data):
    from internvl.models.internvl_cg import InternVLModel
    from internvl.models.processing_internvl_cg import build_cg_tokenizer
    from internvl_g.evaluate_caption import collate_batch, generate_captions

    model = InternVLModel.from_pretrained(tiny_checkpoint, torch_dtype=torch.float32).eval()
    tokenizer = build_cg_tokenizer(tiny_checkpoint, task="caption")
    spec = BENCHMARKS["coco"]
    dataset = CaptionDataset(load_image_list(caption_data / spec.image_list, caption_data / spec.image_root,
                                             spec.list_format), image_transform(model.config))
    generation = dict(num_beams=5, min_new_tokens=8, max_new_tokens=30, do_sample=False)
    results = {}
    for batch_size in (1, 4):
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate_batch)
        results[batch_size] = generate_captions(model, tokenizer, loader, "English caption:", generation,
                                                torch.device("cpu"), torch.float32, progress=False)
    assert [i for i, _ in results[1]] == list(range(100, 105))
    assert results[4] == results[1]


def test_bad_checkpoint_and_missing_java_fail_before_generation(tiny_checkpoint, caption_data, tmp_path, monkeypatch):
    import shutil

    from internvl_g import evaluate_caption

    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_checkpoint, no_tokenizer, ignore=shutil.ignore_patterns("tokenizer*"))
    argv = ["--checkpoint", str(no_tokenizer), "--datasets", "coco", "--data-root", str(caption_data),
            "--out-dir", str(tmp_path / "out")]
    with pytest.raises(FileNotFoundError, match=r"no-tokenizer has no LLaMA tokenizer: expected tokenizer.model"):
        evaluate_caption.main(argv)
    with pytest.raises(FileNotFoundError, match="checkpoint directory not found: .*nowhere"):
        evaluate_caption.main(["--checkpoint", str(tmp_path / "nowhere"), *argv[2:]])
    with pytest.raises(ConfigError, match="unsupported dtype 'int8'"):
        evaluate_caption.main(["--checkpoint", str(tiny_checkpoint), *argv[2:], "--dtype", "int8"])
    monkeypatch.setenv("PATH", str(tmp_path))  # no java: refused up front, before the model loads
    with pytest.raises(JavaNotFoundError, match="no `java` on the PATH"):
        evaluate_caption.main(["--checkpoint", str(tiny_checkpoint), *argv[2:]])
    assert not list((tmp_path / "out").glob("*.json"))  # nothing written but the log
