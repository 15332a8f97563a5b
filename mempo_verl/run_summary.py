"""The closing summary of a training run: what changed from the first step to the last, where the results are.

``python -m mempo_verl.main`` prints it after verl's trainer exits, from the metrics verl's ``file`` logger wrote
(``VERL_FILE_LOGGER_PATH``; the entry point points it at ``<trainer.default_local_dir>/metrics.jsonl``)::

    == MemPO run: 10 steps (1 -> 10) ==
    R^T (train sessions)        0.281 -> 0.469
    held-out R^T (validation)   0.250 -> 0.406    val-core/mempo_synthetic/reward/mean@1
    P[ans | mem]                0.112 -> 0.201
    TT / PT per episode         402 / 151 tokens (last step)
    checkpoint                  checkpoints/mempo_verl/tiny_cpu/global_step_10 (Hugging Face weights: actor/huggingface)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

TRAIN_KEYS: tuple[tuple[str, str], ...] = (
    ("R^T (train sessions)", "mempo/reward_T/mean"),
    ("P[ans | mem]", "mempo/p_ans_mem/mean"),
    ("R^M", "mempo/reward_M/mean"),
    ("turns per episode", "mempo/turns/mean"),
    ("format valid", "mempo/format_valid/rate"),
)
"""(label, metric) rows of the summary: first logged value -> last."""


PROGRESS_KEYS: tuple[tuple[str, str], ...] = (
    ("R^T", "mempo/reward_T/mean"),
    ("P[ans|mem]", "mempo/p_ans_mem/mean"),
    ("turns", "mempo/turns/mean"),
    ("loss", "train/loss"),
    ("held-out R^T", "val-core/"),
    ("s", "timing_s/step"),
)
"""(label, metric or metric prefix) of the one-line progress a quiet console shows per logged step."""


_NUMPY_SCALAR = re.compile(r"^np\.\w+\((.*)\)$")


def _number(text: str | None) -> float:
    """A logged value as a float: verl prints validation metrics as numpy reprs, ``np.float64(0.59375)``."""
    match = _NUMPY_SCALAR.match(text.strip()) if isinstance(text, str) else None
    return float(match.group(1) if match else text)


def progress_line(line: str, prefix: str = "") -> str | None:
    """verl's console logger line ``step:N - key:value - ...`` as one short line; None for any other line.

    ``progress_line("step:3 - mempo/reward_T/mean:0.5 - timing_s/step:12.3")`` -> ``"step 3: R^T 0.500, s 12.3"``.
    """
    # a progress bar may share the line: it redraws with carriage returns, so the logger's text follows one
    at = line.find("step:")
    if at < 0 or (at > 0 and line[at - 1] not in "\r] "):
        return None
    fields = dict(part.split(":", 1) for part in line[at:].strip().split(" - ") if ":" in part)
    shown = []
    for label, key in PROGRESS_KEYS:
        value = next(
            (
                v
                for k, v in fields.items()
                if k == key or (key.endswith("/") and k.startswith(key) and "/reward/mean" in k)
            ),
            None,
        )
        try:
            number = _number(value)
            shown.append(f"{label} {number:.3g}" if label == "s" else f"{label} {number:.3f}")
        except (TypeError, ValueError):
            continue
    return f"{prefix}step {fields['step'].strip()}: " + ", ".join(shown)


def read_metrics(path: str | Path) -> dict[int, dict[str, Any]]:
    """verl's file-logger JSONL (``{"step": n, "data": {...}}`` per line) -> {step: merged metrics}."""
    steps: dict[int, dict[str, Any]] = {}
    path = Path(path)
    if not path.exists():
        return steps
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash
        steps.setdefault(int(record["step"]), {}).update(record.get("data") or {})
    return steps


def _series(steps: dict[int, dict[str, Any]], key: str) -> list[tuple[int, float]]:
    return [(s, float(m[key])) for s, m in sorted(steps.items()) if isinstance(m.get(key), (int, float))]


def summary_text(steps: dict[int, dict[str, Any]], checkpoint_dir: str | Path) -> str:
    """The summary of ``read_metrics`` output; ``checkpoint_dir`` is ``trainer.default_local_dir``."""
    train_steps = sorted(s for s, m in steps.items() if "mempo/reward_T/mean" in m or "actor/pg_loss" in m)
    if not train_steps:
        return f"== MemPO run: no training step logged (checkpoints: {checkpoint_dir}) =="
    count = f"{len(train_steps)} step{'' if len(train_steps) == 1 else 's'}"
    lines = [f"== MemPO run: {count} ({train_steps[0]} -> {train_steps[-1]}) =="]
    for label, key in TRAIN_KEYS:
        series = _series(steps, key)
        if series:
            lines.append(f"{label:<28}{series[0][1]:.3f} -> {series[-1][1]:.3f}")
    for key in sorted({k for m in steps.values() for k in m if k.startswith("val-core/") and "/reward/mean" in k}):
        series = _series(steps, key)
        before, after = series[0], series[-1]
        lines.append(
            f"{'held-out R^T (validation)':<28}{before[1]:.3f} -> {after[1]:.3f}    {key} (steps "
            f"{before[0]} -> {after[0]})"
        )
    last = steps[train_steps[-1]]
    if "mempo/tokens_total/mean" in last and "mempo/tokens_peak/mean" in last:
        tt, pt = last["mempo/tokens_total/mean"], last["mempo/tokens_peak/mean"]
        lines.append(f"{'TT / PT per episode':<28}{tt:.0f} / {pt:.0f} tokens (last step)")
    saved = sorted(Path(checkpoint_dir).glob("global_step_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    if saved:
        hf = saved[-1] / "actor" / "huggingface"
        weights = f" (Hugging Face folder: {hf})" if (hf / "config.json").exists() else ""
        lines.append(f"{'checkpoint':<28}{saved[-1]}{weights}")
        if weights:  # what to run next: the same agent loop on held-out tasks (README "Evaluation")
            lines.append(f"{'evaluate it':<28}mempo-eval --model {hf} --data <eval sets> (README 'Evaluation')")
            lines.append(f"{'':<28}the tiny world's held-out sets: bash examples/eval/time_tiny_cpu.sh {hf}")
    return "\n".join(lines)
