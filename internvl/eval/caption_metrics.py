"""Caption metrics the way the COCO caption evaluation computes them (pycocoevalcap).

Captions and references are lowercased and split by Stanford's PTB tokenizer, punctuation dropped,
then scored with BLEU-1..4 (corpus level, "closest" reference length), METEOR 1.5, ROUGE-L and
CIDEr-D, exactly the scorers ``pycocoevalcap.eval.COCOEvalCap`` runs, minus SPICE: upstream
InternVL-G reports these seven numbers, and SPICE would download Stanford CoreNLP at run time.

The PTB tokenizer and METEOR are Java programs shipped inside pycocoevalcap; ``check_java()``
fails fast, with what to install, when no working ``java`` is on the PATH (instead of a hang or
a ``float('')`` deep inside METEOR). METEOR's JVM takes seconds to load its paraphrase table, so one
is started per process and reused by every ``score_captions`` call::

    from internvl.eval.caption_metrics import check_java, load_coco_references, score_captions
    check_java()
    refs = load_coco_references("data/coco/annotations/coco_karpathy_test_gt.json")
    scores = score_captions(refs, {391895: "a man riding a motorcycle on a dirt road"})
    # {'Bleu_1': ..., 'Bleu_2': ..., 'Bleu_3': ..., 'Bleu_4': ..., 'METEOR': ..., 'ROUGE_L': ..., 'CIDEr': ...}
"""
from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import UserError
from ..fileio import read_json

__all__ = ["METRICS", "JavaNotFoundError", "check_java", "load_coco_references", "score_captions",
           "average_length", "summary_line", "print_summaries"]

METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
JAVA_HELP = ("pycocoevalcap's PTB tokenizer and METEOR run on Java 8 or newer; install a JRE "
             "(Debian/Ubuntu: apt-get install default-jre; conda: conda install -c conda-forge openjdk) "
             "and make sure `java -version` works in this environment")


class JavaNotFoundError(UserError, RuntimeError):
    """No working ``java`` for the caption metrics. The message says what to install."""


def check_java(timeout: float = 30.0) -> str:
    """Run ``java -version`` (bounded by ``timeout`` seconds) and return its version line.

    Raises JavaNotFoundError when java is missing, fails, or does not answer in time (a stub
    launcher that waits for a GUI installer would otherwise hang the evaluation at scoring time)."""
    try:
        done = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise JavaNotFoundError(f"no `java` on the PATH. {JAVA_HELP}") from None
    except subprocess.TimeoutExpired:
        raise JavaNotFoundError(f"`java -version` did not answer within {timeout:g} s. {JAVA_HELP}") from None
    output = (done.stderr or done.stdout).strip()  # java prints its version on stderr
    if done.returncode != 0:
        raise JavaNotFoundError(f"`java -version` failed (exit {done.returncode}): {output[-500:]}. {JAVA_HELP}")
    return output.splitlines()[0] if output else "java"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_coco_references(path: str | os.PathLike) -> dict[int, list[str]]:
    """Reference captions per image id from a COCO-format caption file (``images`` with ``id``,
    ``annotations`` with ``image_id`` and ``caption``), as ``pycocotools.COCO`` reads it."""
    path = Path(path)
    expected = ("a COCO-format caption file: a JSON object with 'images' (a list of {'id': int, ...}) and "
                "'annotations' (a list of {'image_id': int, 'caption': str, ...})")
    content = read_json(path, "caption reference file", expected)
    if not isinstance(content, dict) or not isinstance(content.get("images"), list) \
            or not isinstance(content.get("annotations"), list):
        found = sorted(content) if isinstance(content, dict) else f"a JSON {type(content).__name__}"
        raise ValueError(f"{path}: expected {expected}; found {found}")
    references: dict[int, list[str]] = {}
    for i, image in enumerate(content["images"]):
        if not isinstance(image, dict) or not _is_int(image.get("id")):
            raise ValueError(f"{path}: images[{i}] = {image!r} has no integer 'id'; expected {expected}")
        references[image["id"]] = []
    for i, annotation in enumerate(content["annotations"]):
        if not isinstance(annotation, dict) or not _is_int(annotation.get("image_id")) \
                or not isinstance(annotation.get("caption"), str):
            raise ValueError(f"{path}: annotations[{i}] = {annotation!r} needs an integer 'image_id' and a "
                             f"string 'caption'; expected {expected}")
        if annotation["image_id"] not in references:
            raise ValueError(f"{path}: annotations[{i}] refers to image_id {annotation['image_id']}, "
                             f"which is not in 'images'")
        references[annotation["image_id"]].append(annotation["caption"])
    return references


def _ptb_tokenize(captions: Mapping[int, list[str]]) -> dict[int, list[str]]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    try:
        tokenized = PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
    except PermissionError as e:  # it writes its input file beside its jar, inside site-packages
        raise PermissionError(f"pycocoevalcap's PTB tokenizer writes a temporary file next to its jar and "
                              f"cannot: {e}. Install pycocoevalcap where this user can write (e.g. a venv)") from e
    # The wrapper pairs output lines with captions by position and drops what is missing: check.
    for key, value in captions.items():
        if len(tokenized.get(key, ())) != len(value):
            raise RuntimeError(f"the PTB tokenizer (Java) returned no tokens for some captions of image {key}; "
                               f"run `java -version` and check pycocoevalcap's tokenizer/ folder")
    return tokenized


_meteor_scorer = None  # one METEOR JVM per process: starting one (its paraphrase table) takes seconds


def _close_meteor() -> None:
    global _meteor_scorer
    meteor, _meteor_scorer = _meteor_scorer, None
    if meteor is None:
        return
    # compute_score holds its lock when it raises, and Meteor.__del__ takes that lock: release it,
    # or garbage collection would wait forever.
    if meteor.lock.locked():
        meteor.lock.release()
    with contextlib.suppress(OSError):
        meteor.meteor_p.stdin.close()
    meteor.meteor_p.kill()
    meteor.meteor_p.wait()


def _meteor(references: dict[int, list[str]], predictions: dict[int, list[str]]) -> float:
    global _meteor_scorer
    if _meteor_scorer is None or _meteor_scorer.meteor_p.poll() is not None:
        from pycocoevalcap.meteor.meteor import Meteor

        _close_meteor()
        _meteor_scorer = Meteor()
    process = _meteor_scorer.meteor_p
    try:
        score, _ = _meteor_scorer.compute_score(references, predictions)
    except (ValueError, OSError) as e:  # the JVM died: its replies are empty lines or a broken pipe
        process.kill()
        detail = process.stderr.read().decode(errors="replace").strip()[-1000:]
        _close_meteor()
        raise RuntimeError(f"METEOR (java -jar meteor-1.5.jar, needs about 2 GB of heap) failed: {e}; "
                           f"its stderr: {detail or '(empty)'}") from e
    return score


atexit.register(_close_meteor)


def score_captions(references: Mapping[int, list[str]], predictions: Mapping[int, str]) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr of ``predictions`` (one caption per image id) against
    ``references`` (several captions per image id), over the predicted images, as COCOEvalCap does.

    Every predicted image needs at least one reference. Scores are plain floats, ordered as ``METRICS``."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if not predictions:
        raise ValueError("no captions to score")
    missing = [image_id for image_id in predictions if not references.get(image_id)]
    if missing:
        raise KeyError(f"{len(missing)} captioned image(s) have no reference captions, e.g. image id "
                       f"{missing[:5]}; the image list and the reference file do not match")
    # The tokenizer reads one caption per line: fold every kind of line break (\r, \x1c, \u2028, ...)
    # and whitespace run into one space, so no caption spills into the next one's line.
    refs = _ptb_tokenize({image_id: [" ".join(c.split()) for c in references[image_id]] for image_id in predictions})
    preds = _ptb_tokenize({image_id: [" ".join(caption.split())] for image_id, caption in predictions.items()})
    bleu, _ = Bleu(4).compute_score(refs, preds, verbose=0)
    scores = dict(zip(METRICS[:4], bleu))
    scores["METEOR"] = _meteor(refs, preds)
    scores["ROUGE_L"], _ = Rouge().compute_score(refs, preds)
    scores["CIDEr"], _ = Cider().compute_score(refs, preds)
    # numpy scalars would print as np.float64(...) and break the upstream summary line.
    return {name: float(scores[name]) for name in METRICS}


def average_length(captions) -> float:
    """Mean number of whitespace-separated words per caption, as upstream reports it."""
    captions = list(captions)
    return sum(len(c.split()) for c in captions) / len(captions)


def summary_line(dataset: str, prompt: str, avg_length: float, scores: Mapping[str, float]) -> str:
    """The upstream result line: ``['coco', 'English caption:', 10.5974, dict_items([('Bleu_1', ...), ...])]``."""
    return str([dataset, prompt, avg_length, dict(scores).items()])


def print_summaries(summaries: Sequence[tuple], is_main: bool = True) -> None:
    """After a run over several datasets, their upstream result lines again, together (the main process only)."""
    if is_main and len(summaries) > 1:
        for summary in summaries:
            print(summary_line(*summary), flush=True)
