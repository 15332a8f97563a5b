"""The learning experiment's report: its Markdown table and curves from a results record (the runs themselves are
the e2e tiny-world fixture's business and the README's)."""

from mempo_verl.tiny import data
from mempo_verl.tiny.experiment import plot, table


def _eval(all_em: float, em: float) -> dict[str, dict[str, float]]:
    return {str(k): {"all_em": all_em, "em": em, "pt": 100.0 + k} for k in data.EVAL_OBJECTIVES}


def _results() -> dict:
    runs = [
        {"seed": 0, "alpha": 1.0, "curves": {"mempo/reward_T/mean": [[1, 0.0], [2, 0.5]]}, "eval": _eval(10.0, 20.0)},
        {"seed": 1, "alpha": 1.0, "curves": {"mempo/reward_T/mean": [[1, 0.25]]}, "eval": _eval(30.0, 40.0)},
        {"seed": 0, "alpha": 0.5, "curves": {}, "eval": _eval(5.0, 6.0)},
    ]
    return {"sft": _eval(1.0, 2.0), "alphas": [1.0, 0.5], "overrides": [], "steps": 2, "runs": runs}


def test_table_has_a_row_per_run_and_a_mean_per_alpha_with_several_seeds():
    lines = table(_results()).splitlines()
    ks = len(data.EVAL_OBJECTIVES)
    assert lines[0].startswith("| model | R^T k=1 |") and lines[1] == "|" + "---|" * (1 + 2 * ks)
    assert lines[2] == "| SFT | " + " | ".join(["1.0"] * ks + ["2.0"] * ks) + " |"
    assert lines[3].startswith("| alpha=1 seed 0 | 10.0 |") and lines[5].startswith("| alpha=0.5 seed 0 | 5.0 |")
    # alpha = 1 over seeds 0 and 1: (10 + 30) / 2 = 20 all-EM, (20 + 40) / 2 = 30 EM; alpha 0.5 has one seed, no mean
    assert lines[6] == "| alpha=1 mean of 2 | " + " | ".join(["20.0"] * ks + ["30.0"] * ks) + " |"
    assert len(lines) == 7


def test_plot_writes_a_png_for_any_alphas(tmp_path):
    path = tmp_path / "curves.png"
    plot(_results(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
