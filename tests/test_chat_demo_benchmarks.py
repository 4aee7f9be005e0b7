"""make demo-benchmarks: the base and the fine-tuned checkpoint of make demo in one summary table, two rows, every
task's column filled (make demo's own run is replaced by two tiny checkpoints in its layout, so this stays quick)."""
import json
from pathlib import Path

from internvl.datakit.checkpoints import write_tiny_internvl_chat
from internvl_chat import demo_benchmarks
from internvl_chat.chat_data.chat_jsonl import write_synthetic_chat_data

REPO = Path(__file__).resolve().parents[1]


def test_the_table_has_the_base_and_the_fine_tuned_row(tmp_path, capsys):
    out = tmp_path / "demo"
    write_tiny_internvl_chat(out / demo_benchmarks.BASE, llm="internlm2", seed=0)
    write_tiny_internvl_chat(out / demo_benchmarks.TUNED, llm="internlm2", seed=1)  # stands in for the fine-tune
    meta = write_synthetic_chat_data(out / demo_benchmarks.VAL_META.parent, 3, start=1000, name="val")
    assert meta == (out / demo_benchmarks.VAL_META).resolve()
    table = demo_benchmarks.main(["--out", str(out), "--tasks", "vqa-textvqa-val,pope", "-n", "2"])
    printed = capsys.readouterr().out
    assert "reusing make demo's checkpoints" in printed and table in printed
    header, rule, *rows = table.strip().splitlines()
    assert header == "| checkpoint | vqa-textvqa-val | pope | qa-custom val anls |" and rule == "|---|---|---|---|"
    assert [row.split(" | ")[0] for row in rows] == [f"| {out / demo_benchmarks.BASE}", f"| {out / demo_benchmarks.TUNED}"]
    for row in rows:
        assert all(cell.strip() for cell in row.strip("|").split("|"))  # every column has a number
    runs = json.loads((out / "benchmarks/results/summary.json").read_text())["runs"]
    assert [(r["checkpoint"], r["task"]) for r in runs] == [
        (str(out / c), t) for c in (demo_benchmarks.BASE, demo_benchmarks.TUNED)
        for t in ("vqa-textvqa-val", "pope", "qa-custom")]
    # a second run starts a fresh table: its tasks only, still two rows
    table = demo_benchmarks.main(["--out", str(out), "--tasks", "pope", "-n", "2"])
    lines = table.strip().splitlines()
    assert lines[0] == "| checkpoint | pope | qa-custom val anls |" and len(lines) == 4


def test_make_demo_benchmarks_runs_the_module_on_demo_out():
    text = (REPO / "Makefile").read_text()
    assert "demo-benchmarks: $(STAMP)\n\t$(PY) -m internvl_chat.demo_benchmarks --out '$(DEMO_OUT)/internvl_chat'" in text
    assert "demo-benchmarks" in text.split(".PHONY:")[1].splitlines()[0]
