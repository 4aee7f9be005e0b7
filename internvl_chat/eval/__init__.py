"""InternVL-Chat's benchmark suite: upstream's ``internvl_chat/evaluate.sh`` tasks, scored as upstream scores them.

    GPUS=8 bash evaluate.sh pretrained/InternVL2-2B vqa-textvqa-val,pope,mme --dynamic     # run in internvl_chat/
    python -m internvl_chat.eval run --checkpoint DIR --tasks refcoco --dynamic
    python -m internvl_chat.eval score vqa-textvqa-val results/textvqa_val_240101120000.json --data-root data
    python -m internvl_chat.eval tasks                     # the task names, groups and upstream's others

Modules: :mod:`.framework` (the task interface, the registry, the one evaluation loop: shards over the ranks,
per-rank partial answer files to resume from, gather, results file, scorer, summary table) and one module per
task family, each with its data reader, its synthetic writer, its prompt, its results file and its scorer:
:mod:`.vqa`, :mod:`.pope`, :mod:`.mme`, :mod:`.refcoco`, :mod:`.mmbench` (MMBench / CCBench), :mod:`.multiple_choice`
(ScienceQA, SEED, MMVP), :mod:`.tiny_lvlm`, :mod:`.mmmu`, :mod:`.mvbench`, :mod:`.judge` (LLaVA-Bench, MMHal,
MathVista, MM-Vet: the GPT-judge tasks), :mod:`.qa_custom` (your own held-out data in the fine-tuning format).

Adding a task family (the interface, in full)
---------------------------------------------
1. Write ``internvl_chat/eval/<family>.py`` with module-level ``TASKS`` (a list of :class:`.framework.Task`
   instances) and ``GROUPS`` (``{"group-name": [task names]}``, may be empty). A task sets:

   - ``name`` (upstream's ``evaluate.sh`` name, e.g. ``vqa-textvqa-val``), ``upstream`` (upstream's dataset name,
     the results file prefix, e.g. ``textvqa_val``), ``max_new_tokens``, ``min_new_tokens`` (``None``: not passed),
     ``headline`` (the metric keys the summary table shows), ``batchable`` (False: every question alone);
   - ``load(data_root) -> [Item]``: reads upstream's files under ``data_root`` (missing ones through
     :meth:`.framework.Task.need`, which names the task, the file and the upstream instructions), building each
     question exactly as upstream's script does. ``Item(key, images, question, meta, max_num=None)``: ``key`` is
     the item's index in the set (stable across runs, used to resume), ``images`` absolute paths (``[]``: text
     only; several: write one ``<image>`` each in ``question``; a callable returning a PIL image for an image
     stored inside a data file), ``meta`` whatever ``record`` needs; ``pixels`` (optional): a picklable callable
     ``(image_size, dynamic, max_num, use_thumbnail) -> (tiles, tiles per <image>)`` for input built otherwise
     (MMMU's image rule, video frames), with ``images`` left empty;
   - ``record(item, answer, checkpoint) -> dict``: upstream's per-question entry of the results file
     (post-processing here);
   - ``write_results(records, out_dir, checkpoint, stamp) -> Path``: upstream's results file (default:
     ``<out_dir>/<upstream>_<stamp>.json``, a JSON list of the records);
   - ``score(results_path, data_root) -> dict | None``: upstream's scorer on that file, the metrics under
     upstream's names (``None``: a test split without public answers, ``submission`` says where it goes, or a
     GPT-judge task without a judge; ``unscored(results_path)`` is the one line said then);
   - ``write_synthetic(data_root, n) -> None``: a tiny set in upstream's layout (tests, demo).
   - optional: ``configure(args)`` takes the task's own run flags (``qa-custom``: ``--meta-path``, ``--metric``),
     ``settings()`` what of them changes an answer (part of the resume fingerprint), ``headline_keys(metrics)``
     the summary columns when they depend on the data (default: ``headline``).
2. Add the module's name to :data:`.framework.TASK_MODULES`. ``evaluate.sh``, ``run``, ``score``, the summary and
   the not-implemented message pick it up from there; task modules import torch only inside functions.

Generation (:func:`.framework.evaluate`): single-image questions of a task go through ``model.batch_chat`` in
batches of ``--batch-size`` (greedy answers equal one at a time, upstream's batch size 1), the others through
``model.chat`` one by one; ``num_beams`` is forced to 1 with ``--dynamic``, as upstream.
"""
