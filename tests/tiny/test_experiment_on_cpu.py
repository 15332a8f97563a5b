"""The learning experiment's report: its Markdown table and curves from a results record (the runs themselves are
the e2e tiny-world fixture's business and the README's)."""

import pytest

from mempo_verl.eval.metrics import ExampleMetrics
from mempo_verl.eval.records import EvalRecord, RecordStore
from mempo_verl.tiny import data
from mempo_verl.tiny.experiment import paired_flips, plot, table


def _eval(all_em: float, em: float) -> dict[str, dict[str, float]]:
    return {str(k): {"all_em": all_em, "em": em, "pt": 100.0 + k} for k in data.EVAL_OBJECTIVES}


def _sampled(k1: float, k2: float) -> dict[str, dict[str, float]]:
    return {"1": {"all_em": k1, "em": k1}, "2": {"all_em": k2, "em": k2}}


def _results() -> dict:
    runs = [
        {"seed": 0, "alpha": 1.0, "curves": {"mempo/reward_T/mean": [[1, 0.0], [2, 0.5]]}, "eval": _eval(10.0, 20.0),
         "eval_sampled": _sampled(50.0, 30.0), "flips_sampled": {"up": 30, "down": 10, "p": 0.0022}},
        {"seed": 1, "alpha": 1.0, "curves": {"mempo/reward_T/mean": [[1, 0.25]]}, "eval": _eval(30.0, 40.0),
         "eval_sampled": _sampled(60.0, 40.0), "flips_sampled": {"up": 45, "down": 5, "p": 1e-9}},
        {"seed": 0, "alpha": 0.5, "curves": {}, "eval": _eval(5.0, 6.0), "eval_sampled": _sampled(20.0, 10.0),
         "flips_sampled": {"up": 2, "down": 32, "p": 0.5}},
    ]  # fmt: skip
    return {"sft": _eval(1.0, 2.0), "sft_sampled": _sampled(40.0, 20.0), "sampled_worlds": 100, "alphas": [1.0, 0.5],
            "overrides": [], "steps": 2, "runs": runs}  # fmt: skip


def test_table_has_a_row_per_run_and_a_mean_per_alpha_with_several_seeds():
    text = table(_results())
    greedy, sampled = text.split("\n\nSampled")
    lines = greedy.splitlines()[2:]
    ks = len(data.EVAL_OBJECTIVES)
    assert lines[0].startswith("| model | R^T k=1 |") and lines[1] == "|" + "---|" * (1 + 2 * ks)
    assert lines[2] == "| SFT | " + " | ".join(["1.0"] * ks + ["2.0"] * ks) + " |"
    assert lines[3].startswith("| alpha=1 seed 0 | 10.0 |") and lines[5].startswith("| alpha=0.5 seed 0 | 5.0 |")
    # alpha = 1 over seeds 0 and 1: (10 + 30) / 2 = 20 all-EM, (20 + 40) / 2 = 30 EM; alpha 0.5 has one seed, no mean
    assert lines[6] == "| alpha=1 mean of 2 | " + " | ".join(["20.0"] * ks + ["30.0"] * ks) + " |"
    assert len(lines) == 7
    assert sampled.startswith(" (temperature 1, 100 held-out worlds per k):")
    rows = sampled.splitlines()[3:]
    # by hand: SFT (40 + 20) / 2 = 30; seed 0 (50 + 30) / 2 = 40, +10; seed 1 50, +20; alpha 0.5 15, -15
    assert rows[0] == "|---|---|---|---|---|---|---|"
    assert rows[1] == "| SFT | 40.0 | 20.0 | 30.0 |  |  |  |"
    assert rows[2] == "| alpha=1 seed 0 | 50.0 | 30.0 | 40.0 | +10.0 | 30 / 10 | 0.002 |"
    assert rows[3] == "| alpha=1 seed 1 | 60.0 | 40.0 | 50.0 | +20.0 | 45 / 5 | 1e-09 |"
    assert rows[4] == "| alpha=0.5 seed 0 | 20.0 | 10.0 | 15.0 | -15.0 | 2 / 32 | 0.500 |"
    # mean change (10 + 20) / 2 = 15, sample std sqrt((25 + 25) / 1) = 7.07
    assert rows[5] == "| alpha=1 mean of 2 | | | 45.0 | +15.0 (seed std 7.1) | | |"
    assert len(rows) == 6


def _write_run(folder, right: dict[str, bool]) -> None:
    store = RecordStore(folder / "traces.jsonl")
    for example_id, all_em in right.items():
        metrics = ExampleMetrics(
            em=(float(all_em),), f1=(float(all_em),), all_em=all_em, final_answer="x", format_valid=True,
            termination="answer", num_turns=2, total_tokens=10, peak_tokens=5, memory_tokens=(3,), env_failures=0,
            memory_truncations=0,
        )  # fmt: skip
        store.append(EvalRecord(f"memory|{example_id}", "memory", "d", 1, example_id, "ok", 0, metrics))


def test_paired_flips_counts_the_worlds_each_side_won_and_the_exact_sign_test(tmp_path):
    (base := tmp_path / "sft").mkdir()
    (run := tmp_path / "run").mkdir()
    # worlds a-e both right or both wrong except: b, c, d won by the run, e lost; f only in the run (not shared)
    _write_run(base, {"a": True, "b": False, "c": False, "d": False, "e": True, "g": False})
    _write_run(run, {"a": True, "b": True, "c": True, "d": True, "e": False, "f": True, "g": False})
    flips = paired_flips(run, base)
    # 4 discordant worlds, 3 / 1: P(X <= 1 | n = 4, 1/2) = (1 + 4) / 16, two-sided 10 / 16
    assert (flips["up"], flips["down"]) == (3, 1)
    assert flips["p"] == pytest.approx(10 / 16)
    assert paired_flips(base, base) == {"up": 0, "down": 0, "p": 1.0}


def test_plot_writes_a_png_for_any_alphas(tmp_path):
    path = tmp_path / "curves.png"
    plot(_results(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
