"""The tasks upstream scores with a GPT judge or an external evaluator: ``llava-bench``, ``mmhal``,
``mathvista-testmini``, ``mathvista-test``, ``mmvet``, ``mmvetv2``.

Each generates and saves upstream's results file; scoring then needs what upstream's scoring needs:

- ``llava-bench`` (``eval/llava_bench``): a GPT-4 review of each answer against GPT-4's own
  (``answers_gpt4.jsonl``), with LLaVA's rule prompts; the relative score (model / GPT-4 x 100) per category and
  ``all``, as ``summarize_gpt_review.py`` prints it. Reviews are kept in ``llava_bench_results_review.jsonl``
  beside the results and reused by a later scoring of the same file.
- ``mmhal`` (``eval/mmhal``): a GPT-4o rating 0-6 of each answer with MMHal-Bench's template; ``Average score``,
  ``Hallucination rate`` (ratings below 3) and the average per question type (index mod 8). Ratings are kept in
  ``<results>_gpt4o.json``.
- ``mathvista-*`` (``eval/mathvista``): the answer is extracted by rules (a choice given verbatim, an integer, a
  float) or by the judge with MathVista's few-shot prompt (upstream calls gpt-3.5-turbo: its ``--llm_engine`` flag
  never reaches the call), normalized (an option letter, else the closest choice by Levenshtein distance; ints;
  floats at the problem's precision) and compared; ``accuracy`` and the accuracy per question type, answer type,
  language, source, category, task, context, grade and skill, written to ``<results>_score.json`` as upstream.
  The test split has no public answers: its results file is submitted to MathVista's server.
- ``mmvet`` / ``mmvetv2``: upstream uploads the results file to the MM-Vet evaluator (a Hugging Face space,
  ``whyu/MM-Vet_Evaluator`` / ``whyu/MM-Vet-v2_Evaluator``) and has no judge code; this suite does the same.

The judge: any OpenAI-compatible chat-completions endpoint, configured with the variables the ``openai`` client
reads: ``OPENAI_API_KEY`` (required; without it nothing is sent and scoring says in one line what it needs),
``OPENAI_BASE_URL`` (default ``https://api.openai.com/v1``), and ``INTERNVL_JUDGE_MODEL`` to use another model
than upstream's (gpt-4-0613 for LLaVA-Bench, gpt-4o for MMHal, gpt-3.5-turbo for MathVista's extraction).
Requests go through the standard library (``urllib``), are retried 5 times (upstream retries forever), and a
failure names the endpoint and the HTTP error.
"""
from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from internvl.errors import ConfigError, DataError

from .framework import Item, Task, read_json, read_jsonl, resolve_image, save_image, synthetic_samples
from .items import Base64Image, BytesImage, model_dir_name, require_keys, write_json_file, write_jsonl_file
from .vqa import levenshtein

# LLaVA's rule prompt (upstream's eval/llava_bench/rule.json), the same text for the three LLaVA-Bench categories
LLAVA_RULE_PROMPT = (
    "We would like to request your feedback on the performance of two AI assistants in response to the"
    " user question displayed above. The user asks the question on observing an image. For your"
    " reference, the visual content in the image is represented with a few sentences describing the"
    " image. \nPlease rate the helpfulness, relevance, accuracy, level of details of their responses. Each"
    " assistant receives an overall score on a scale of 1 to 10, where a higher score indicates better"
    " overall performance.\nPlease first output a single line containing only two values indicating the"
    " scores for Assistant 1 and 2, respectively. The two scores are separated by a space.\nIn the"
    " subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any"
    " potential bias and ensuring that the order in which the responses were presented does not affect"
    " your judgment."
)
LLAVA_RULES = {f"llava_bench_{category}": {"role": "Assistant", "prompt": LLAVA_RULE_PROMPT}
               for category in ("conv", "detail", "complex")}

# MMHal-Bench's judge template (upstream's eval/mmhal/eval_gpt_mmhal.py), filled with str.format
MMHAL_TEMPLATE = '''Please act as an impartial and objective judge and evaluate the quality of the response provided by a Large Multimodal Model (LMM) to the user question. Your evaluation should be mainly based on whether the response is informative, and whether the response contains any hallucination. Hallucination, in this context, refers to a situation where the LMM generates a response that includes information not present or implied in the image or previous conversation. A hallucination could be a false claim about an object, action, emotion, or any other detail that is not grounded in the image.

For clarity, consider these examples:

### Example 1:
- Image Contents: Lynx, Cat
- Question: How many cats can you see in this image?
- Standard Human-Generated Answer: There are two cats visible in the image.
- LMM Response to Evaluate: There is one cat in the image.
- Analysis: The LMM's response is false because it claims there is only one cat in the image, when in fact there are two.
- Hallucination: Yes.

### Example 2:
- Image Contents: Tree, Plant, Panda, Animal
- Question: What can you see from this photo?
- Standard Human-Generated Answer: In this photo we can see branches. We can see a panda on a branch. The background is blurry.
- LMM Response to Evaluate: In the photo, I can see a large black and white panda sitting on a tree branch. The image captures the panda's unique appearance and its natural habitat, showcasing the beauty and rarity of these animals.
- Analysis: The LMM's response is not false because it does not make any false claims about the image contents. For example, it does not claim that the panda is eating bamboo.
- Hallucination: No.

### Example 3:
- Image Contents: Fashion accessory, Mammal, Dog, Umbrella
- Question: Describe this image in details.
- Standard Human-Generated Answer: In this picture I can see a dog laying under a yellow umbrella on a beach, and there is a rope on the right side. In the background I can see few persons talking or lying. At the top of the image, I can see the blue and clear sky.
- LMM Response to Evaluate: The image features a brown dog laying on the sand at the beach, underneath a yellow umbrella. The dog is positioned near the water, and there are people in the background. The beach is sandy, and the sun is shining, creating a pleasant atmosphere. The dog is enjoying the shade provided by the umbrella, which is a common way to protect pets from the sun's harmful rays. The presence of people in the background suggests that the beach is a popular spot for leisure activities, such as sunbathing, swimming, and relaxing.
- Analysis: The LMM's response is false because it claims that the dog is positioned near the water, but there is no water in the image.
- Hallucination: Yes.

### Example 4:
- Image Contents: Clothing, Luggage and bags, Man, Building, Woman, Person
- Question: Where is this photo taken?
- Standard Human-Generated Answer: From the slogan "Welcome to Houston, Texas", we can infer that this photo is taken at an airport in Houston, Texas.
- LMM Response to Evaluate: This photo is taken at an airport, specifically at the entrance of a terminal. However, the specific location of this airport cannot be determined from the image.
- Analysis: Although the LMM's response does not explicitly mention the location "Houston, Texas" and does not perfectly answer the question, it makes no false claims about the image contents. Therefore, this response is not considered hallucination. It is OK if the LMM fails to directly answer the question, expresses uncertainty, or cannot include all the objects or details in the human-generated answer.
- Hallucination: No.

### Example 5:
- Image Contents: Tree, Tower
- Question: What environmental concerns are involved in this photo?
- Standard Human-Generated Answer: This photo shows a smokestack emitting smoke. It may cause severe air pollution which threatens human health.
- LMM Response to Evaluate: In the photo, there are several environmental concerns related to the smokestack emitting smoke. The smoke from the smokestack is a byproduct of industrial processes, which can contribute to air pollution, climate change, and negative impacts on human health. The smoke contains harmful pollutants, such as particulate matter, sulfur dioxide, nitrogen oxides, and carbon monoxide, which can lead to respiratory problems, heart disease, and other health issues. Additionally, the smoke contributes to the greenhouse effect, which can lead to global warming and climate change. The smokestack's emissions also affect the environment, as they can harm wildlife, vegetation, and ecosystems. Therefore, it is essential to address these environmental concerns by implementing measures to reduce emissions and promote sustainable practices in industrial processes.
- Analysis: Although the LMM's response is significantly longer than the standard human-generated answer, it does not contain any false claims about the image contents. Instead, it provides additional general information about the environmental concerns, which can be inferred from the smoke emission. Such detailed analysis or reasoning should be considered as a positive aspect, as long as it contains no false claims.
- Hallucination: No.

With these examples in mind, please help me evaluate whether the response by the LMM is informative, and whether hallucination exists in it, based on the comparison between the LMM's response and the factual information provided in the image contents, question, and the standard human-generated answer below.

Please note that the standard human-generated answer may only contain factual information but may not give a detailed analysis. Also, the standard human-generated answer may not be completely comprehensive in describing all the objects and their attributes, so please be a bit more cautious during evalutation. LMM's detailed analysis or reasoning should be encouraged.

To evaluate the LMM responses, first, begin your evaluation by providing a short explanation. Second, after providing your explanation, you must rate the response by choosing from the following options:
- Rating: 6, very informative with good analysis or reasoning, no hallucination
- Rating: 5, very informative, no hallucination
- Rating: 4, somewhat informative, no hallucination
- Rating: 3, not informative, no hallucination
- Rating: 2, very informative, with hallucination
- Rating: 1, somewhat informative, with hallucination
- Rating: 0, not informative, with hallucination

### Image Contents
{}

### Question
{}

### Standard Human-Generated Answer
{}

### LMM Response to Evaluate
{}
'''

# MathVista's answer-extraction examples (upstream's eval/mathvista/prompts/ext_ans.py)
MATHVISTA_DEMO_PROMPT = """
Please read the following example. Then extract the answer from the model response and type it at the end of the prompt.

Hint: Please answer the question requiring an integer answer and provide the final value, e.g., 1, 2, 3, at the end.
Question: Which number is missing?

Model response: The number missing in the sequence is 14.

Extracted answer: 14

Hint: Please answer the question requiring a floating-point number with one decimal place and provide the final value, e.g., 1.2, 1.3, 1.4, at the end.
Question: What is the fraction of females facing the camera?

Model response: The fraction of females facing the camera is 0.6, which means that six out of ten females in the group are facing the camera.

Extracted answer: 0.6

Hint: Please answer the question requiring a floating-point number with two decimal places and provide the final value, e.g., 1.23, 1.34, 1.45, at the end.
Question: How much money does Luca need to buy a sour apple candy and a butterscotch candy? (Unit: $)

Model response: Luca needs $1.45 to buy a sour apple candy and a butterscotch candy.

Extracted answer: 1.45

Hint: Please answer the question requiring a Python list as an answer and provide the final list, e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.
Question: Between which two years does the line  graph saw its maximum peak?

Model response: The line graph saw its maximum peak between 2007 and 2008.

Extracted answer: [2007, 2008]

Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.
Question: What fraction of the shape is blue?\nChoices:\n(A) 3/11\n(B) 8/11\n(C) 6/11\n(D) 3/5

Model response: The correct answer is (B) 8/11.

Extracted answer: B
"""


# ------------------------------------------------------------------------------------------------ the judge
def judge_configured() -> bool:
    return bool(os.environ.get("OPENAI_API_KEY"))


NO_JUDGE = ("set OPENAI_API_KEY (and OPENAI_BASE_URL for another OpenAI-compatible endpoint, INTERNVL_JUDGE_MODEL "
            "for another model), then: python -m internvl_chat.eval score {task} {results} --data-root DATA")


def chat_completion(content: str, model: str, temperature: float, max_tokens: Optional[int] = None,
                    system: Optional[str] = None, retries: int = 5, sleep: float = 0.5) -> str:
    """One chat completion from the configured endpoint (see the module doc); the reply's text."""
    key = os.environ.get("OPENAI_API_KEY")
    if not key:
        raise ConfigError("the GPT judge needs OPENAI_API_KEY (and OPENAI_BASE_URL for an OpenAI-compatible endpoint)")
    base = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1").rstrip("/")
    model = os.environ.get("INTERNVL_JUDGE_MODEL") or model
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    body = {"model": model, "messages": messages, "temperature": temperature}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    request = urllib.request.Request(f"{base}/chat/completions", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    error = ""
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                reply = json.loads(response.read().decode())
            return reply["choices"][0]["message"]["content"]
        except urllib.error.HTTPError as err:
            error = f"HTTP {err.code}: {err.read()[:200].decode(errors='replace')}"
        except (urllib.error.URLError, OSError) as err:
            error = str(getattr(err, "reason", err))
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as err:
            error = f"not a chat-completions reply ({err!r})"
        if attempt + 1 < retries:
            time.sleep(sleep * (attempt + 1))
    raise ConfigError(f"the GPT judge at {base}/chat/completions failed {retries} times: {error}")


class _JudgeTask(Task):
    judge = "a GPT judge"

    def unscored(self, results: Path) -> str:
        if self.submission:
            return super().unscored(results)
        return (f"{self.name}: answers saved in {results}; scoring needs {self.judge}: "
                + NO_JUDGE.format(task=self.name, results=results))


# -------------------------------------------------------------------------------------------- LLaVA-Bench
def parse_score(review: str) -> List[float]:
    """The two scores on the review's first line (``8 6`` or ``8, 6``), ``[-1, -1]`` when it has not two."""
    try:
        sp = review.split("\n")[0].replace(",", " ").split(" ")
        if len(sp) == 2:
            return [float(sp[0]), float(sp[1])]
        return [-1, -1]
    except Exception:
        return [-1, -1]


def summarize_reviews(reviews: Sequence[dict]) -> Dict[str, float]:
    """``summarize_gpt_review.py``: per category and ``all``, the mean (GPT-4, model) scores; the relative
    score ``model / GPT-4 x 100`` (rounded to 1 place, from means rounded to 3) and each mean x 10."""
    scores: Dict[str, list] = {}
    for review in reviews:
        if "category" in review:
            scores.setdefault(review["category"], []).append(review["tuple"])
            scores.setdefault("all", []).append(review["tuple"])
        else:
            scores.setdefault("all", []).append(review.get("tuple", review.get("score")))
    metrics: Dict[str, float] = {}
    for k, v in sorted(scores.items()):
        stats = [round(sum(x[i] for x in v) / len(v), 3) for i in range(2)]
        metrics[k] = round(stats[1] / stats[0] * 100, 1)
        metrics[f"{k}_gpt4"] = round(stats[0] * 10, 1)
        metrics[f"{k}_model"] = round(stats[1] * 10, 1)
    return metrics


class LlavaBench(_JudgeTask):
    name, upstream, family = "llava-bench", "llava_bench", "llava-bench"
    max_new_tokens, min_new_tokens = 1000, 1
    headline = ("all",)
    instructions = ("upstream's internvl_chat/eval/llava_bench/README.md (git clone of "
                    "huggingface.co/datasets/liuhaotian/llava-bench-in-the-wild)")
    judge = "a GPT-4 judge (upstream: gpt-4-0613)"
    root = Path("llava-bench-in-the-wild")
    prompt = " Please give a detailed answer."

    def load(self, data_root: Path) -> list:
        path = self.need(data_root / self.root / "questions.jsonl", "the question file")
        items = []
        for key, data in enumerate(read_jsonl(path, self.name)):
            require_keys(data, ["image", "text", "question_id"], self.name, f"{path}:{key + 1}")
            image = self.need(data_root / self.root / "images" / data["image"], "the image")
            items.append(Item(key, [str(image)], data["text"] + self.prompt, {"question_id": data["question_id"]}))
        return items

    def record(self, item: Item, answer: str, checkpoint: str) -> dict:
        return {"question_id": item.meta["question_id"], "text": answer,
                "model_id": "_".join(checkpoint.split("/")[-2:]), "metadata": {}}

    def write_results(self, records: list, out_dir: Path, checkpoint: str, stamp: str) -> Path:
        path = Path(out_dir) / "llava_bench_results.jsonl"
        (Path(out_dir) / "llava_bench_results_review.jsonl").unlink(missing_ok=True)  # as upstream's evaluate.sh
        return write_jsonl_file(path, records)

    def score(self, results: Path, data_root: Path) -> Optional[dict]:
        if not judge_configured():
            return None
        root = data_root / self.root
        questions = read_jsonl(self.need(root / "questions.jsonl", "the question file"), self.name)
        contexts = read_jsonl(self.need(root / "context.jsonl", "the context file"), self.name)
        gpt4 = read_jsonl(self.need(root / "answers_gpt4.jsonl", "GPT-4's answers"), self.name)
        answers = read_jsonl(results, self.name)
        image_to_context = {c["image"]: c for c in contexts}
        review_path = Path(results).with_name(Path(results).stem + "_review.jsonl")
        reviews = read_jsonl(review_path, self.name) if review_path.exists() else []
        with open(review_path, "a", encoding="utf-8") as out:
            for idx, (ques, ans1, ans2) in enumerate(zip(questions, gpt4, answers)):
                if idx < len(reviews):
                    continue  # upstream's resume: reviews already written are kept
                inst = image_to_context.get(ques["image"])
                if inst is None:
                    raise DataError(f"{self.name}: image {ques['image']} of question {ques['question_id']} is not "
                                    f"in {root / 'context.jsonl'}")
                cap_str = "\n".join(inst["caption"]) if isinstance(inst["caption"], list) else inst["caption"]
                category = "llava_bench_" + ques["category"]
                if category not in LLAVA_RULES:
                    raise DataError(f"{self.name}: question {ques['question_id']}: category {ques['category']!r} "
                                    f"has no rule (known: {', '.join(k[12:] for k in LLAVA_RULES)})")
                rule = LLAVA_RULES[category]
                role = rule["role"]
                content = (f"[Context]\n{cap_str}\n\n"
                           f"[Question]\n{ques['text']}\n\n"
                           f"[{role} 1]\n{ans1['text']}\n\n[End of {role} 1]\n\n"
                           f"[{role} 2]\n{ans2['text']}\n\n[End of {role} 2]\n\n"
                           f"[System]\n{rule['prompt']}\n\n")
                review = chat_completion(content, "gpt-4-0613", temperature=0.2, max_tokens=1024,
                                         system="You are a helpful and precise assistant for checking the quality "
                                                "of the answer.")
                row = {"id": idx + 1, "question_id": ques["question_id"],
                       "answer1_id": ans1.get("answer_id", ans1["question_id"]),
                       "answer2_id": ans2.get("answer_id", ans1["question_id"]), "category": category,
                       "content": review, "tuple": parse_score(review)}
                out.write(json.dumps(row) + "\n")
                out.flush()
                reviews.append(row)
        if not reviews:
            raise DataError(f"{self.name}: {results} holds no answers")
        return summarize_reviews(reviews)

    def write_synthetic(self, data_root: Path, n: int = 4) -> None:
        root = data_root / self.root
        questions, contexts, gpt4 = [], [], []
        for i, s in enumerate(synthetic_samples(n)):
            name = f"{i:03d}.jpg"
            save_image(s.image, root / "images" / name)
            category = ("conv", "detail", "complex")[i % 3]
            questions.append({"image": name, "text": s.qa[i % len(s.qa)].question_en, "category": category,
                              "question_id": i})
            contexts.append({"id": f"{i:03d}", "image": name, "caption": s.caption_en})
            gpt4.append({"question_id": i, "text": s.qa[i % len(s.qa)].answer_en, "answer_id": f"gpt4-{i}",
                         "model_id": "gpt-4-0314"})
        write_jsonl_file(root / "questions.jsonl", questions)
        write_jsonl_file(root / "context.jsonl", contexts)
        write_jsonl_file(root / "answers_gpt4.jsonl", gpt4)


# --------------------------------------------------------------------------------------------------- MMHal
def mmhal_scores(responses: Sequence[str]) -> Dict[str, float]:
    """``eval_gpt_mmhal.py``'s numbers from the judge's replies: a reply's rating is the one ``rating: s``
    (0-6) it contains, 0 when it holds none or several."""
    if not responses:
        raise DataError("no MMHal ratings to score")
    scores = []
    for response in responses:
        found = [s for s in range(7) if f"rating: {s}" in response.lower()]
        scores.append(found[0] if len(found) == 1 else 0)
    hallucination = [0 if s >= 3 else 1 for s in scores]
    metrics = {"Average score": round(sum(scores) / len(scores), 2),
               "Hallucination rate": round(sum(hallucination) / len(hallucination), 2)}
    for t in range(8):
        each = [scores[i] for i in range(len(scores)) if i % 8 == t]
        if each:
            metrics[f"type {t}"] = round(sum(each) / len(each), 2)
    return metrics


class MMHal(_JudgeTask):
    name, upstream, family = "mmhal", "mmhal-bench_with_image", "mmhal"
    max_new_tokens, min_new_tokens = 1024, 1
    headline = ("Average score", "Hallucination rate")
    instructions = "upstream's internvl_chat/eval/mmhal/README.md (mmhal-bench_with_image.jsonl)"
    judge = "a GPT-4o judge"
    file = Path("mm-halbench/mmhal-bench_with_image.jsonl")

    def load(self, data_root: Path) -> list:
        path = self.need(data_root / self.file, "the question file")
        items = []
        for key, data in enumerate(read_jsonl(path, self.name)):
            where = f"{path}:{key + 1}"
            require_keys(data, ["question"], self.name, where)
            if "image" in data:
                image = Base64Image(data["image"], where)
            elif "image_path" in data:
                image = str(self.need(resolve_image(data["image_path"], data_root), "the image"))
            else:
                raise DataError(f"{self.name}: {where} has neither 'image' nor 'image_path'")
            line = {k: v for k, v in data.items() if k != "image"}
            items.append(Item(key, [image], data["question"], {"line": line}))  # upstream's prompt is empty
        return items

    def record(self, item: Item, answer: str, checkpoint: str) -> dict:
        return dict(item.meta["line"], model_answer=answer)

    def write_results(self, records: list, out_dir: Path, checkpoint: str, stamp: str) -> Path:
        return write_json_file(Path(out_dir) / f"{self.upstream}_{stamp}.json", records)

    def score(self, results: Path, data_root: Path) -> Optional[dict]:
        records = read_json(results, self.name)
        ratings_path = Path(str(results).replace(".json", "_gpt4o.json"))
        if ratings_path.exists():
            responses = read_json(ratings_path, self.name)
            if len(responses) == len(records):
                return mmhal_scores(responses)
        if not judge_configured():
            return None
        responses = []
        for i, record in enumerate(records):
            require_keys(record, ["image_content", "question", "gt_answer", "model_answer"], self.name,
                         f"{results} record {i}")
            text = MMHAL_TEMPLATE.format(", ".join(record["image_content"]), record["question"], record["gt_answer"],
                                         record["model_answer"])
            responses.append(chat_completion(text, "gpt-4o", temperature=0.0).strip())
        write_json_file(ratings_path, responses, indent=2)
        return mmhal_scores(responses)

    def write_synthetic(self, data_root: Path, n: int = 4) -> None:
        import base64
        import io

        rows = []
        for i, s in enumerate(synthetic_samples(n)):
            buf = io.BytesIO()
            s.image.save(buf, format="PNG")
            qa = s.qa[i % len(s.qa)]
            rows.append({"question_type": ("attribute", "adversarial", "comparison", "counting", "relation",
                                           "environment", "holistic", "other")[i % 8],
                         "question_topic": "synthetic", "image_id": str(i), "image_src": "synthetic",
                         "image_content": [s.colour, s.shape], "question": qa.question_en,
                         "gt_answer": f"The answer is {qa.answer_en}.", "model_answer": "",
                         "image": base64.b64encode(buf.getvalue()).decode()})
        write_jsonl_file(data_root / self.file, rows)


# ----------------------------------------------------------------------------------------------- MathVista
def get_most_similar(prediction: str, choices: Sequence[str]) -> str:
    distances = [levenshtein(prediction, choice) for choice in choices]
    return choices[distances.index(min(distances))]


def normalize_extracted_answer(extraction, choices, question_type: str, answer_type: str, precision):
    """``calculate_score.py``: a choice (by ``(X)`` / letter, else the closest by edit distance), an int, a
    float rounded to ``precision``, or a list's text; None when it does not parse."""
    if question_type == "multi_choice":
        if isinstance(extraction, str):
            extraction = extraction.strip()
        else:
            try:
                extraction = str(extraction)
            except Exception:
                extraction = ""
        letter = re.findall(r"\(([a-zA-Z])\)", extraction)
        if len(letter) > 0:
            extraction = letter[0].upper()
        options = [chr(ord("A") + i) for i in range(len(choices))]
        if extraction in options:
            extraction = choices[options.index(extraction)]
        else:
            extraction = get_most_similar(extraction, choices)
    elif answer_type == "integer":
        try:
            extraction = str(int(float(extraction)))
        except Exception:
            extraction = None
    elif answer_type == "float":
        try:
            extraction = str(round(float(extraction), int(precision)))
        except Exception:
            extraction = None
    elif answer_type == "list":
        try:
            extraction = str(extraction)
        except Exception:
            extraction = None
    return extraction


def rule_extraction(response: str, problem: dict) -> Optional[str]:
    """``extract_answer.py``'s rules: an empty answer, a choice given verbatim, an int, a float; None when the
    judge has to extract."""
    if response == "":
        return ""
    if problem["question_type"] == "multi_choice" and response in (problem["choices"] or []):
        return response
    if problem["answer_type"] == "integer":
        try:
            return str(int(response))
        except ValueError:
            pass
    if problem["answer_type"] == "float":
        try:
            return str(float(response))
        except ValueError:
            pass
    return None


def create_test_prompt(query: str, response: str) -> str:
    return f"{MATHVISTA_DEMO_PROMPT.strip()}\n\n{query}\n\n{response}\n\nExtracted answer: "


def mathvista_scores(results: dict, gts: dict) -> dict:
    """Accuracy (in %, rounded to 2) overall and per question type, answer type, language, source, category,
    task, context, grade and skill; each problem gains ``prediction`` and ``true_false`` as upstream's."""
    correct = 0
    for pid, problem in results.items():
        answer = problem["answer"] if "answer" in problem else gts.get(pid, {}).get("answer", "")
        problem["answer"] = answer
        prediction = normalize_extracted_answer(problem["extraction"], problem["choices"], problem["question_type"],
                                                problem["answer_type"], problem["precision"])
        problem["prediction"] = prediction
        problem["true_false"] = prediction == answer
        correct += problem["true_false"]
    if not results:
        raise DataError("no MathVista answers to score")
    scores = {"accuracy": round(correct / len(results) * 100, 2), "correct": correct, "total": len(results)}
    for key in ["question_type", "answer_type", "language", "source", "category", "task", "context", "grade",
                "skills"]:
        groups: Dict[str, list] = {}
        for problem in results.values():
            value = problem.get(key, problem.get("metadata", {}).get(key))
            for v in (value if key == "skills" else [value]) or []:
                groups.setdefault(str(v), []).append(problem["true_false"])
        for v, oks in groups.items():
            scores[f"{key}/{v}"] = round(sum(oks) / len(oks) * 100, 2)
    return scores


class MathVista(_JudgeTask):
    family = "mathvista"
    max_new_tokens, min_new_tokens = 4096, 1
    headline = ("accuracy",)
    instructions = ("upstream's internvl_chat/eval/mathvista/README.md; this suite reads the dataset repository's "
                    "parquet files: huggingface-cli download AI4Math/MathVista --repo-type dataset --local-dir "
                    "data/MathVista")
    judge = "a GPT judge for the answer extraction (upstream: gpt-3.5-turbo)"

    def __init__(self, name: str, upstream: str, split: str):
        self.name, self.upstream, self.split = name, upstream, split
        self.submission = "to MathVista's evaluation server (the test answers are not public)" \
            if split == "test" else None

    def read_rows(self, data_root: Path) -> list:
        """The split's rows, from the dataset repository's parquet files (pyarrow)."""
        root = self.need(data_root / "MathVista" / "data", "the dataset's parquet folder")
        files = sorted(root.glob(f"{self.split}-*.parquet"))
        if not files:
            self.need(root / f"{self.split}-00000-of-00001.parquet", "the split's parquet file")
        from .mmmu import pyarrow_parquet

        pq = pyarrow_parquet()
        return [row for f in files for row in pq.read_table(f).to_pylist()]

    def load(self, data_root: Path) -> list:
        items = []
        for row in self.read_rows(data_root):
            require_keys(row, ["pid", "query", "decoded_image", "question_type", "answer_type", "choices"],
                         self.name, f"MathVista {self.split} row {len(items)}")
            image = BytesImage(row.pop("decoded_image")["bytes"], f"MathVista {self.split} pid {row['pid']}")
            items.append(Item(len(items), [image], row["query"], {"data_item": row}))
        return items

    def record(self, item: Item, answer: str, checkpoint: str) -> dict:
        return dict(item.meta["data_item"], response=answer)

    def write_results(self, records: list, out_dir: Path, checkpoint: str, stamp: str) -> Path:
        results = {r["pid"]: r for r in records}
        return write_json_file(Path(out_dir) / model_dir_name(checkpoint) / f"{self.upstream}_{stamp}.json",
                               results, indent=4)

    def score(self, results: Path, data_root: Path) -> Optional[dict]:
        data = read_json(results, self.name)
        if not isinstance(data, dict):
            raise DataError(f"{self.name}: {results} is not upstream's MathVista results (a JSON object pid -> "
                            "problem)")
        pending = [pid for pid, p in data.items() if not str(p.get("extraction") or "").strip()]
        for pid in pending:
            require_keys(data[pid], ["response", "question_type", "answer_type", "choices", "query"], self.name,
                         f"{results} pid {pid}")
            extraction = rule_extraction(data[pid]["response"], data[pid])
            if extraction is None:
                if not judge_configured():
                    return None
                extraction = chat_completion(create_test_prompt(data[pid]["query"], data[pid]["response"]),
                                             "gpt-3.5-turbo", temperature=0, max_tokens=256).strip()
            data[pid]["extraction"] = extraction
        if pending:
            write_json_file(results, data, indent=4)  # upstream's extract_answer.py updates the file in place
        if self.split == "test":
            return None
        gt_file = data_root / "MathVista" / "annot_testmini.json"
        gts = read_json(gt_file, self.name) if gt_file.exists() else {}
        scores = mathvista_scores(data, gts)
        write_json_file(results, data, indent=4)
        write_json_file(Path(str(results)[:-5] + "_score.json"), scores, indent=4)
        return scores

    def synthetic_rows(self, n: int) -> list:
        """``n`` problems: multiple choice about the colour, integer answers about the shape's corners."""
        import io

        from internvl.data.synthetic import COLOURS

        corners = {"circle": 0, "square": 4, "triangle": 3, "cross": 12}
        colours, rows = list(COLOURS), []
        for i, s in enumerate(synthetic_samples(n)):
            buf = io.BytesIO()
            s.image.save(buf, format="PNG")
            mc = i % 2 == 0
            question = "What colour is the shape?" if mc else "How many corners does the shape have?"
            hint = ("Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end."
                    if mc else "Please answer the question requiring an integer answer and provide the final "
                               "value, e.g., 1, 2, 3, at the end.")
            choices = colours if mc else None
            query = f"Hint: {hint}\nQuestion: {question}" + (
                "\nChoices:\n" + "\n".join(f"({chr(65 + j)}) {c}" for j, c in enumerate(colours)) if mc else "")
            rows.append({"pid": str(i + 1), "question": question, "image": f"images/{i + 1}.jpg",
                         "decoded_image": {"bytes": buf.getvalue(), "path": None}, "choices": choices,
                         "unit": None, "precision": None,
                         "answer": (s.colour if mc else str(corners[s.shape])) if self.split != "test" else "",
                         "question_type": "multi_choice" if mc else "free_form",
                         "answer_type": "text" if mc else "integer",
                         "metadata": {"category": "general-vqa", "context": "synthetic scene", "grade": "elementary",
                                      "language": "english", "skills": ["numeric commonsense"] if not mc else
                                      ["scientific reasoning"], "source": "synthetic", "split": self.split,
                                      "task": "figure question answering"},
                         "query": query})
        return rows

    def write_synthetic(self, data_root: Path, n: int = 4) -> None:
        """:meth:`synthetic_rows` in the repository's parquet layout and ``annot_testmini.json``. Needs pyarrow."""
        from .mmmu import pyarrow_parquet

        pq = pyarrow_parquet()
        import pyarrow

        rows = self.synthetic_rows(n)
        (data_root / "MathVista" / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(pyarrow.Table.from_pylist(rows),
                       data_root / "MathVista" / "data" / f"{self.split}-00000-of-00001.parquet")
        if self.split == "testmini":
            gts = {r["pid"]: {k: v for k, v in r.items() if k != "decoded_image"} for r in rows}
            write_json_file(data_root / "MathVista" / "annot_testmini.json", gts)


# ---------------------------------------------------------------------------------------------------- MM-Vet
class MMVet(_JudgeTask):
    name, upstream, family = "mmvet", "mmvet", "mmvet"
    max_new_tokens, min_new_tokens = 1000, 1
    headline = ()
    instructions = "upstream's internvl_chat/eval/mmvet/README.md (mm-vet.zip and llava-mm-vet.jsonl)"
    submission = "to the MM-Vet evaluator (huggingface.co/spaces/whyu/MM-Vet_Evaluator), as upstream does"
    file = Path("mm-vet/llava-mm-vet.jsonl")

    def load(self, data_root: Path) -> list:
        path = self.need(data_root / self.file, "the question file")
        items = []
        for key, data in enumerate(read_jsonl(path, self.name)):
            require_keys(data, ["image", "text", "question_id"], self.name, f"{path}:{key + 1}")
            image = self.need(data_root / "mm-vet" / "images" / data["image"], "the image")
            items.append(Item(key, [str(image)], data["text"] + " " + "", {"question_id": data["question_id"]}))
        return items

    def record(self, item: Item, answer: str, checkpoint: str) -> dict:
        return {"key": f"v1_{item.meta['question_id']}", "answer": answer}

    def write_results(self, records: list, out_dir: Path, checkpoint: str, stamp: str) -> Path:
        return write_json_file(Path(out_dir) / f"{self.upstream}_{stamp}.json",
                               {r["key"]: r["answer"] for r in records})

    def unscored(self, results: Path) -> str:
        return f"{self.name}: answers saved in {results}; MM-Vet's GPT-4 grader scores them: upload the file " \
               f"{self.submission}"

    def score(self, results: Path, data_root: Path) -> Optional[dict]:
        if not isinstance(read_json(results, self.name), dict):
            raise DataError(f"{self.name}: {results} is not an MM-Vet results file (a JSON object id -> answer)")
        return None

    def write_synthetic(self, data_root: Path, n: int = 4) -> None:
        rows = []
        for i, s in enumerate(synthetic_samples(n)):
            save_image(s.image, data_root / "mm-vet" / "images" / f"v1_{i}.png")
            rows.append({"question_id": i, "image": f"v1_{i}.png", "text": s.qa[i % len(s.qa)].question_en})
        write_jsonl_file(data_root / self.file, rows)


class MMVetV2(MMVet):
    name, upstream, family = "mmvetv2", "mmvet-v2", "mmvetv2"
    instructions = "upstream's internvl_chat/eval/mmvetv2/README.md (mm-vet-v2.zip)"
    submission = "to the MM-Vet v2 evaluator (huggingface.co/spaces/whyu/MM-Vet-v2_Evaluator), as upstream does"
    file = Path("mm-vet-v2/mm-vet-v2.json")
    prompt = "Answer this question in detail."

    def load(self, data_root: Path) -> list:
        path = self.need(data_root / self.file, "the question file")
        data = read_json(path, self.name)
        if not isinstance(data, dict):
            raise DataError(f"{self.name}: {path} is not a JSON object of question id -> question")
        items = []
        for key, (question_id, row) in enumerate(data.items()):
            require_keys(row, ["question"], self.name, f"{path} question {question_id}")
            parts = row["question"].split("<IMG>")
            if len(parts) < 2:
                raise DataError(f"{self.name}: {path} question {question_id} names no image (<IMG>file<IMG>)")
            # upstream: the text before the first <IMG> and the first image only
            image = self.need(data_root / "mm-vet-v2" / "images" / parts[1], "the image")
            items.append(Item(key, [str(image)], parts[0] + " " + self.prompt, {"question_id": question_id}))
        return items

    def record(self, item: Item, answer: str, checkpoint: str) -> dict:
        return {"key": item.meta["question_id"], "answer": answer}

    def write_synthetic(self, data_root: Path, n: int = 4) -> None:
        data = {}
        for i, s in enumerate(synthetic_samples(n)):
            save_image(s.image, data_root / "mm-vet-v2" / "images" / f"v2_{i}.png")
            qa = s.qa[i % len(s.qa)]
            data[f"v2_{i}"] = {"question": f"{qa.question_en}<IMG>v2_{i}.png", "answer": qa.answer_en,
                               "added_in": "v2", "capability": ["rec"]}
        write_json_file(data_root / self.file, data)


TASKS = [LlavaBench(), MMHal(), MathVista("mathvista-testmini", "MathVista_testmini", "testmini"),
         MathVista("mathvista-test", "MathVista_test", "test"), MMVet(), MMVetV2()]
GROUPS: dict = {}
