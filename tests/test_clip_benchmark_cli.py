"""clip_benchmark end to end through the CLI: every model name on both tasks, feature reuse and the on-disk cache,
LAION's metrics on a hand-computed case, JSON-lines results and `build`, the three entry points and the scripts,
and every bad input as one error line."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from internvl.cli import run_main
from internvl.datakit import SyntheticImages
from internvl.datakit.checkpoints import write_tiny_internvl_cg
from internvl.models.processing_internvl_cg import image_transform
from internvl.data.retrieval import write_flickr30k
from internvl_clip_benchmark.cli import main
from internvl_clip_benchmark.datasets import build_dataset
from internvl_clip_benchmark.datasets.webdataset import write_wds_classification
from internvl_clip_benchmark.demo import XTD_LANGUAGES, write_demo
from internvl_clip_benchmark.evaluate import Session, classification_metrics, topk_accuracy
from internvl_clip_benchmark.features import FeatureDataset, FeatureModel
from internvl_clip_benchmark.models import MODELS, load_internvl

REPO = Path(__file__).resolve().parents[1]
KIT = SyntheticImages(num_classes=4, image_size=64)
XTD8 = list(XTD_LANGUAGES)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The README's try-out layout: tiny checkpoints in pretrained/, synthetic datasets in data/."""
    return write_demo(tmp_path_factory.mktemp("demo"), images=12)


@pytest.fixture(scope="module")
def pretrained(demo):
    return demo / "pretrained"


@pytest.fixture(scope="module")
def data(demo):
    return demo / "data"


def _source(pretrained, name):
    return pretrained / ("internvl_c_13b_224px.pth" if MODELS[name].source == "pth" else "InternVL-14B-224px")


def _eval(pretrained, data, output, name, dataset, *flags, session=None):
    roots = {"imagenet1k": "imagenet-1k", "flickr30k": "flickr30k", "multilingual_mscoco_captions": "mscoco_captions"}
    argv = ["eval", "--model_type", "internvl", "--model", name, "--pretrained", str(_source(pretrained, name)),
            "--dataset", dataset, "--dataset_root", str(data / roots[dataset]), "--output", str(output),
            "--num_workers", "0", "--batch_size", "8", "--no_amp", "--quiet", *flags]
    if dataset == "imagenet1k":
        argv += ["--custom_classname_file", str(data / "imagenet-1k" / "classnames.json")]
    return main(argv, session=session)


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_name_runs_both_tasks_through_the_cli(pretrained, data, tmp_path, name):
    output = tmp_path / "result.json"
    _eval(pretrained, data, output, name, "imagenet1k", "--task", "zeroshot_classification")
    _eval(pretrained, data, output, name, "flickr30k", "--task", "zeroshot_retrieval", "--language", "en", "cn")
    classification, *retrieval = _lines(output)  # appended, one line per run
    assert classification["task"] == "zeroshot_classification" and classification["model"] == name
    assert set(classification["metrics"]) == {"acc1", "mean_per_class_recall"}  # 4 classes: no acc5, not a NaN
    assert [r["language"] for r in retrieval] == ["en", "cn"]
    assert set(retrieval[0]["metrics"]) == {f"{kind}_retrieval_recall@{k}" for kind in ("image", "text")
                                            for k in (1, 5, 10)}  # upstream's default recall_k for internvl
    assert all(0 <= v <= 1 for r in retrieval for v in r["metrics"].values())


def test_feature_reuse_across_languages_gives_clip_benchmarks_image_path_numbers(pretrained, data, tmp_path):
    """XTD in 8 languages: one model load, the images encoded once, and each language's numbers are those
    of CLIP Benchmark's own loop over the images."""
    from clip_benchmark.datasets.builder import get_dataset_collate_fn
    from clip_benchmark.metrics import zeroshot_retrieval

    session = Session(verbose=False)
    output = tmp_path / "xtd.json"
    _eval(pretrained, data, output, "internvl_g_retrieval_hf", "multilingual_mscoco_captions", "--language", *XTD8,
          session=session)
    assert session.loads == 1 and session.store.stats == {"computed": 1, "memory": 7, "disk": 0}
    results = _lines(output)
    assert [r["language"] for r in results] == XTD8
    # Two models in one command (CLIP Benchmark's --model list): each gets its own features.
    both = tmp_path / "both.json"
    _eval(pretrained, data, both, "internvl_c_retrieval_hf", "multilingual_mscoco_captions", "--model",
          "internvl_c_retrieval_hf", "internvl_g_retrieval_hf", "--language", "en", session=session)
    assert session.loads == 3 and session.store.stats["computed"] == 3
    assert _lines(both)[1]["metrics"] == results[0]["metrics"]
    model, transform, tokenizer = load_internvl("internvl_g_retrieval_hf", pretrained / "InternVL-14B-224px")
    for result in (results[0], results[5]):
        dataset = build_dataset("multilingual_mscoco_captions", root=str(data / "mscoco_captions"), transform=transform,
                                language=result["language"], task="zeroshot_retrieval")
        loader = torch.utils.data.DataLoader(dataset, batch_size=8, collate_fn=get_dataset_collate_fn(
            "multilingual_mscoco_captions"))
        reference = zeroshot_retrieval.evaluate(model, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])
        assert result["metrics"] == pytest.approx(reference, abs=1e-6)
    # Classification, the same way: the stored features give the numbers of the loop over the images.
    output = tmp_path / "imagenet.json"
    _eval(pretrained, data, output, "internvl_c_classification_hf", "imagenet1k", session=session)
    model, transform, tokenizer = load_internvl("internvl_c_classification_hf", pretrained / "InternVL-14B-224px")
    dataset = build_dataset("imagenet1k", root=str(data / "imagenet-1k"), transform=transform,
                            task="zeroshot_classification",
                            custom_classname_file=str(data / "imagenet-1k" / "classnames.json"))
    reference = classification_metrics(model, torch.utils.data.DataLoader(dataset, batch_size=8), tokenizer,
                                       dataset.classes, dataset.templates, "cpu", amp=False)
    assert _lines(output)[0]["metrics"] == pytest.approx(reference, abs=1e-6)


def test_feature_cache_on_disk_is_reused_and_invalidated(pretrained, data, tmp_path, monkeypatch):
    cache = tmp_path / "features"
    directory = write_tiny_internvl_cg(tmp_path / "ckpt", seed=1)
    flags = ("--feature_cache_dir", str(cache), "--task", "zeroshot_retrieval")

    def run(name, *extra, cached=True):
        session = Session(cache if cached else None, verbose=False)
        output = tmp_path / f"out{len(list(tmp_path.glob('out*')))}.json"
        main(["eval", "--model_type", "internvl", "--model", name, "--pretrained", str(directory), "--dataset",
              "flickr30k", "--dataset_root", str(data / "flickr30k"), "--output", str(output), "--num_workers", "0",
              "--no_amp", "--quiet", *flags, *extra], session=session)
        return _lines(output)[0]["metrics"], session.store.stats

    first, stats = run("internvl_g_retrieval_hf")
    assert stats["computed"] == 1 and len(list(cache.glob("*.pt"))) == 1
    again, stats = run("internvl_g_retrieval_hf", "--language", "cn")
    assert stats == {"computed": 0, "memory": 0, "disk": 1}
    assert again == run("internvl_g_retrieval_hf", "--language", "cn", cached=False)[0]  # identical metrics
    assert first == run("internvl_g_retrieval_hf", cached=False)[0]
    # Retrained weights at the same path: a new key, never the stale features.
    write_tiny_internvl_cg(tmp_path / "ckpt2", seed=2)
    for f in ("model.safetensors", "config.json"):
        os.replace(tmp_path / "ckpt2" / f, directory / f)
    retrained, stats = run("internvl_g_retrieval_hf")
    assert stats["computed"] == 1 and len(list(cache.glob("*.pt"))) == 2
    assert retrained == run("internvl_g_retrieval_hf", cached=False)[0] != first
    # Another transform of the same weights, model name and images (here: 70 px instead of 56): another entry.
    import internvl.models.processing_internvl_cg

    monkeypatch.setattr(internvl.models.processing_internvl_cg, "image_transform", lambda config, task: image_transform(70, task))
    resized, stats = run("internvl_g_retrieval_hf")
    assert stats["computed"] == 1 and len(list(cache.glob("*.pt"))) == 3
    assert resized == run("internvl_g_retrieval_hf", cached=False)[0] != retrained
    memo = json.loads((cache / "fingerprints.json").read_text())
    assert str(directory / "model.safetensors") in memo


def test_recall_at_k_on_a_hand_computed_similarity_matrix():
    from clip_benchmark.datasets.builder import image_captions_collate_fn
    from clip_benchmark.metrics import zeroshot_retrieval

    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    texts = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [0.6, 0.8], "d": [0.8, 0.6], "e": [-1.0, 0.0]}
    captions = [["a", "b"], ["c"], ["d", "e"]]

    class Words(torch.nn.Module):
        def encode_text(self, ids):
            return torch.tensor([list(texts.values())[i] for i in ids.tolist()])

    tokenizer = lambda batch: torch.tensor([list(texts).index(t) for t in batch])  # noqa: E731
    loader = torch.utils.data.DataLoader(FeatureDataset(images, captions), batch_size=2,
                                         collate_fn=image_captions_collate_fn)
    metrics = zeroshot_retrieval.evaluate(FeatureModel(Words()), loader, tokenizer, "cpu", amp=False,
                                          recall_k_list=[1, 2, 3])
    # text -> image: a, d first; c, e second; b third. image -> text: image 0 finds a first; image 1 finds c
    # second (after b); image 2 finds d second (after c).
    assert metrics == pytest.approx({"image_retrieval_recall@1": 2 / 5, "image_retrieval_recall@2": 4 / 5,
                                     "image_retrieval_recall@3": 1.0, "text_retrieval_recall@1": 1 / 3,
                                     "text_retrieval_recall@2": 1.0, "text_retrieval_recall@3": 1.0})
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.0, 0.4, 0.6]])
    target = torch.tensor([1, 1, 2, 0])
    assert (topk_accuracy(logits, target, 1), topk_accuracy(logits, target, 2)) == (0.5, 0.75)


def test_json_lines_skip_existing_and_build(pretrained, data, tmp_path):
    output = tmp_path / "result.json"
    for _ in range(2):
        _eval(pretrained, data, output, "internvl_c_retrieval_hf", "flickr30k", "--language", "en", "cn",
              "--skip_existing")
    assert [r["language"] for r in _lines(output)] == ["en", "cn"]
    laion = tmp_path / "laion.json"  # CLIP Benchmark's own format: one JSON document
    laion.write_text(json.dumps({"dataset": "cifar10", "model": "ViT-B-32", "pretrained": "openai",
                                 "task": "zeroshot_classification", "metrics": {"acc1": 0.9}, "language": "en"},
                                indent=2))
    table = tmp_path / "benchmark.csv"
    assert main(["build", str(output), str(laion), "--output", str(table)]) == 0
    rows = list(csv.DictReader(table.open()))
    assert [(r["dataset"], r["language"]) for r in rows] == [("flickr30k", "en"), ("flickr30k", "cn"), ("cifar10", "en")]
    assert rows[2]["acc1"] == "0.9" and rows[0]["image_retrieval_recall@5"]


def test_webdataset_shards_run_through_clip_benchmarks_loop(pretrained, tmp_path):
    root = write_wds_classification(tmp_path / "wds_synthetic", 12, kit=KIT)
    assert sorted(p.name for p in root.iterdir()) == ["classnames.txt", "test", "zeroshot_classification_templates.txt"]
    output = tmp_path / "wds.json"
    main(["eval", "--model_type", "internvl", "--model", "internvl_c_classification_hf", "--pretrained",
          str(pretrained / "InternVL-14B-224px"), "--dataset", "wds/synthetic", "--dataset_root", str(root),
          "--output", str(output), "--num_workers", "0", "--batch_size", "4", "--no_amp", "--quiet"])
    (result,) = _lines(output)
    assert result["dataset"] == "wds/synthetic" and set(result["metrics"]) == {"acc1", "mean_per_class_recall"}


@pytest.mark.parametrize("case, message", [
    ("model", "error: --model 'internvl_c' is not an InternVL model name; with --model_type internvl use one of: "
              "internvl_c_classification, internvl_c_retrieval,"),
    ("format", "error: --model internvl_c_retrieval reads the PyTorch file internvl_c_13b_224px.pth, but --pretrained "),
    ("root", "error: --dataset_root "),
    ("language", "error: --language pl is not available for flickr30k; it has: en, cn, zh"),
    ("line", "flickr30k_test_karpathy.txt:4: malformed line 'no separator here'"),
    ("image", "cannot decode image "),
])
def test_bad_input_is_one_error_line(pretrained, tmp_path, capsys, case, message):
    root = write_flickr30k(tmp_path / "flickr30k", 10, kit=KIT)
    captions = root / "flickr30k_test_karpathy.txt"
    args = {"model": "internvl_c_retrieval", "pretrained": str(pretrained / "internvl_c_13b_224px.pth"),
            "root": str(root), "language": "en"}
    if case == "model":
        args["model"] = "internvl_c"
    elif case == "format":
        args["pretrained"] = str(pretrained / "InternVL-14B-224px")
    elif case == "root":
        args["root"] = str(tmp_path / "missing")
    elif case == "language":
        args["language"] = "pl"
    elif case == "line":
        lines = captions.read_text().splitlines()
        captions.write_text("\n".join(lines[:3] + ["no separator here"] + lines[3:]) + "\n")
    else:
        (root / "Images" / "000003.jpg").write_bytes(b"\xff\xd8 truncated")
    status = run_main(main, ["eval", "--model_type", "internvl", "--model", args["model"], "--pretrained",
                             args["pretrained"], "--dataset", "flickr30k", "--dataset_root", args["root"], "--language",
                             args["language"], "--output", str(tmp_path / "r.json"), "--num_workers", "0", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    if case == "image":
        assert str(root / "Images" / "000003.jpg") in err[0]


def test_console_script_and_module_entry_points(capsys, monkeypatch):
    import runpy
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["clip_benchmark"] == "internvl_clip_benchmark.cli:console_main"
    from internvl_clip_benchmark.cli import console_main

    monkeypatch.setattr(sys, "argv", ["clip_benchmark", "eval", "--model_type", "internvl", "--model", "x"])
    assert console_main() == 1
    assert "error: --model 'x' is not an InternVL model name" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["internvl_clip_benchmark", "eval", "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("internvl_clip_benchmark", run_name="__main__")
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "internvl" in out.split("--model_type")[1]
    assert "--feature_cache_dir" in out and "1 5 10" in out


def test_upstream_script_from_the_subproject_folder(pretrained, data, tmp_path):
    """test_internvl_c_xtd.sh runs clip_benchmark/clip_benchmark/cli.py through shell/launch.sh, here with
    upstream's PYTHONPATH=$(pwd) from clip_benchmark/: our folders must not shadow LAION's clip_benchmark."""
    output = tmp_path / "result.json"
    folder = REPO / "clip_benchmark"
    env = {**os.environ, "GPUS": "0", "DATA": str(data), "MODEL": str(pretrained / "internvl_c_13b_224px.pth"),
           "OUTPUT": str(output), "PYTHON": sys.executable, "PYTHONPATH": str(folder)}
    run = subprocess.run(["bash", "test_internvl_c_xtd.sh", "--num_workers", "0", "--quiet"], env=env,
                         capture_output=True, text=True, cwd=folder)
    assert run.returncode == 0, run.stderr[-2000:]
    assert [r["language"] for r in _lines(output)] == XTD8


def _subcommand(parser, name):
    import argparse

    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


def test_the_parser_has_every_flag_of_clip_benchmarks_own_cli(monkeypatch):
    """The CLI wraps CLIP Benchmark with its own parser: every option of LAION's get_parser_args is here with
    the same destination, arity, type, action and default (recall_k: resolved per model type)."""
    from clip_benchmark import cli as laion_cli

    from internvl_clip_benchmark.cli import build_parser

    monkeypatch.setattr(sys, "argv", ["clip_benchmark"])  # LAION's get_parser_args parses sys.argv
    laion, _ = laion_cli.get_parser_args()
    ours = build_parser()
    for command, argv in (("eval", ["eval"]), ("build", ["build", "r.json"])):
        theirs = {o: a for a in _subcommand(laion, command)._actions for o in a.option_strings}
        mine = {o: a for a in _subcommand(ours, command)._actions for o in a.option_strings}
        missing = sorted(set(theirs) - set(mine))
        assert not missing, f"{command}: CLIP Benchmark's {missing} missing"
        for option, action in theirs.items():
            got = mine[option]
            assert (type(got), got.dest, got.nargs, got.type, got.const) == \
                (type(action), action.dest, action.nargs, action.type, action.const), option
            assert set(action.choices or ()) <= set(got.choices or ()), option
        expected, parsed = vars(laion.parse_args(argv)), vars(ours.parse_args(argv))
        expected.pop("recall_k", None), parsed.pop("recall_k", None)
        assert {k: parsed[k] for k in expected} == expected
    assert "internvl" in _subcommand(ours, "eval")._option_string_actions["--model_type"].choices


def test_runs_are_expanded_as_clip_benchmark_does_and_nothing_of_it_is_patched(pretrained, data, tmp_path, monkeypatch):
    import random
    from itertools import product

    from clip_benchmark import cli as laion_cli
    from clip_benchmark.datasets.builder import dataset_collection

    import internvl_clip_benchmark.evaluate as evaluate
    from internvl_clip_benchmark.cli import build_parser, expand_runs

    args = build_parser().parse_args(["eval", "--dataset", "retrieval", "cifar10", "--model", "a", "b", "--pretrained",
                                      "p", "--language", "en", "cn", "--quiet"])
    runs = [(r.model, r.pretrained, r.dataset, r.language) for r in expand_runs(args)]
    datasets = dataset_collection["retrieval"] + ["cifar10"]
    assert runs == [(m, "p", d, lang) for m, d, lang in product("ab", datasets, ("en", "cn"))]
    # --distributed: LAION's shuffle with --seed, every world-size-th run for this rank
    args.distributed = True
    shares = []
    for rank in (0, 1, 2):
        monkeypatch.setenv("RANK", str(rank)), monkeypatch.setenv("LOCAL_RANK", "0"), monkeypatch.setenv("WORLD_SIZE", "3")
        shares.append([(r.model, r.dataset, r.language) for r in expand_runs(args)])
    expected = list(product(product("a b".split(), ["p"]), datasets, ("en", "cn")))
    random.seed(0)
    random.shuffle(expected)
    assert shares == [[(m, d, lang) for (m, _), d, lang in expected[rank::3]] for rank in range(3)]
    # A run: LAION's module functions and sys.argv are left as they are.
    originals, argv, seen = (laion_cli.run, laion_cli.build_dataset, laion_cli.main_eval), list(sys.argv), []
    real_run = evaluate.run

    def spy(run_args, session):
        seen.append((laion_cli.run, laion_cli.build_dataset, laion_cli.main_eval) == originals and sys.argv == argv)
        return real_run(run_args, session)

    monkeypatch.setattr(evaluate, "run", spy)
    _eval(pretrained, data, tmp_path / "r.json", "internvl_c_retrieval_hf", "flickr30k", "--language", "en", "cn")
    assert seen == [True, True] and len(_lines(tmp_path / "r.json")) == 2


def _classifier_run(pretrained, data, tmp_path, *flags, session=None):
    output = tmp_path / f"clf{len(list(tmp_path.glob('clf*')))}.json"
    argv = ["eval", "--model_type", "internvl", "--model", "internvl_c_classification_hf", "--pretrained",
            str(pretrained / "InternVL-14B-224px"), "--dataset", "imagenet1k", "--dataset_root",
            str(data / "imagenet-1k"), "--custom_classname_file", str(data / "imagenet-1k" / "classnames.json"),
            "--output", str(output), "--num_workers", "0", "--batch_size", "8", "--quiet", *flags]
    main(argv, session=session)
    return _lines(output)[0]["metrics"]


def test_the_cpu_computes_in_float32_unless_cpu_amp_is_asked(pretrained, data, tmp_path):
    """Upstream autocasts with torch.cuda.amp.autocast, which does nothing on the CPU: without --no_amp the
    CPU classifier is the float32 one; --cpu_amp gives CLIP Benchmark's bfloat16 autocast."""
    from clip_benchmark.metrics.zeroshot_classification import zero_shot_classifier

    model, transform, tokenizer = load_internvl("internvl_c_classification_hf", pretrained / "InternVL-14B-224px")
    dataset = build_dataset("imagenet1k", root=str(data / "imagenet-1k"), transform=transform,
                            task="zeroshot_classification",
                            custom_classname_file=str(data / "imagenet-1k" / "classnames.json"))
    with torch.no_grad():
        float32 = zero_shot_classifier(model, tokenizer, dataset.classes, dataset.templates, "cpu", amp=False)
    saved = {}
    for name, flags in (("default", ()), ("no_amp", ("--no_amp",)), ("cpu_amp", ("--cpu_amp",))):
        saved[name] = tmp_path / f"{name}.pt"
        _classifier_run(pretrained, data, tmp_path, "--save_clf", str(saved[name]), *flags)
        saved[name] = torch.load(saved[name])
    torch.testing.assert_close(saved["default"], float32, rtol=0, atol=1e-6)
    torch.testing.assert_close(saved["no_amp"], float32, rtol=0, atol=1e-6)
    difference = (saved["cpu_amp"].float() - float32).abs().max().item()
    assert 1e-4 < difference < 5e-2  # bfloat16 keeps 8 bits of mantissa


def test_zero_shot_classifiers_are_cached_by_weights_names_templates_and_language(pretrained, data, tmp_path,
                                                                                 monkeypatch):
    from internvl_clip_benchmark.models import InternVLForBenchmark

    calls = []
    encode_text = InternVLForBenchmark.encode_text
    monkeypatch.setattr(InternVLForBenchmark, "encode_text", lambda self, text: calls.append(len(text)) or
                        encode_text(self, text))
    cache = tmp_path / "cache"

    def run(*flags, session=None):
        calls.clear()
        session = session or Session(cache, verbose=False)
        metrics = _classifier_run(pretrained, data, tmp_path, "--feature_cache_dir", str(cache), *flags,
                                  session=session)
        return metrics, len(calls), dict(session.classifiers.stats)

    first, text_calls, stats = run()
    assert text_calls > 0 and stats == {"computed": 1, "memory": 0, "disk": 0}
    again, text_calls, stats = run()  # a second command: read from the disk, the text tower never runs
    assert text_calls == 0 and stats == {"computed": 0, "memory": 0, "disk": 1} and again == first
    session = Session(cache, verbose=False)
    run(session=session)
    assert run(session=session)[1:] == (0, {"computed": 0, "memory": 1, "disk": 1})  # same command: in memory
    templates = tmp_path / "templates.json"
    templates.write_text(json.dumps({"imagenet1k": ["a photo of a {c}.", "a drawing of a {c}."]}))
    other, text_calls, stats = run("--custom_template_file", str(templates))
    assert text_calls > 0 and stats["computed"] == 1  # another template list: a miss
    assert run("--custom_template_file", str(templates))[1] == 0
    assert len(list(cache.glob("*.pt"))) == 3  # the image features and two classifiers
    # ImageNet-Sketch (CLIP Benchmark gives it ImageNet's class names and templates): the same classifier.
    names = json.loads((data / "imagenet-1k" / "classnames.json").read_text())["imagenet1k"]
    classnames = tmp_path / "classnames.json"
    classnames.write_text(json.dumps({"imagenet1k": names, "imagenet_sketch": names}))
    calls.clear()
    session = Session(cache, verbose=False)
    main(["eval", "--model_type", "internvl", "--model", "internvl_c_classification_hf", "--pretrained",
          str(pretrained / "InternVL-14B-224px"), "--dataset", "imagenet_sketch", "--dataset_root",
          str(data / "imagenet-1k" / "val"), "--custom_classname_file", str(classnames), "--output",
          str(tmp_path / "sketch.json"), "--num_workers", "0", "--quiet", "--feature_cache_dir", str(cache)],
         session=session)
    assert len(calls) == 0 and session.classifiers.stats == {"computed": 0, "memory": 0, "disk": 1}
    assert _lines(tmp_path / "sketch.json")[0]["metrics"] == first  # the same images, as ImageFolder
