"""The SFT checkpoint shipped in the package (mempo_verl/tiny/sft_checkpoint): current, loadable, the world's."""

from mempo_verl.tiny import data


def test_shipped_checkpoint_is_that_of_the_current_code():
    # a change to the tokenizer, model shape, SFT data or recipe makes it stale: rerun
    # `python -m mempo_verl.tiny.data ship-sft` (the recipe would otherwise train ~25 min on first use)
    provenance = data.shipped_sft_provenance()
    assert provenance is not None, f"no provenance.json in {data.SHIPPED_SFT_DIR}"
    assert provenance["key"] == data.sft_run_key(), "stale: run python -m mempo_verl.tiny.data ship-sft"
    assert data.tiny_world_sft_model() == str(data.SHIPPED_SFT_DIR)
    # other settings never get the shipped checkpoint
    assert data.sft_run_key(("optim.lr=1e-3",)) != provenance["key"]
    assert provenance["steps"] >= 100 and 0 < provenance["final_loss"] < 1.0


def test_shipped_checkpoint_loads_in_fp32_with_the_worlds_tokenizer(model_cache):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mempo_verl.tiny import tiny_world_model_dir

    folder = data.SHIPPED_SFT_DIR
    assert sorted(p.name for p in folder.iterdir()) == sorted([*data.SHIPPED_FILES, "provenance.json"])
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.dtype == torch.float32 and all(torch.isfinite(p).all() for p in model.parameters())
    # verl saves the tokenizer as transformers loaded it (Qwen2Tokenizer, which brings Qwen's pre-tokenizer), so the
    # files differ from the world's; what it encodes must not
    from mempo_verl.envs.synthetic import make_synthetic_rows, oracle_turns

    shipped, world = (
        AutoTokenizer.from_pretrained(folder),
        AutoTokenizer.from_pretrained(tiny_world_model_dir(model_cache)),
    )
    assert shipped.get_vocab() == world.get_vocab() and shipped.chat_template == world.chat_template
    row = make_synthetic_rows(1, objectives=2, hops=1, seed=11, split="test", prompt=data.PROMPT, names="pool")[0]
    texts = [*oracle_turns(row), *(f"{d['key']}: {d['text']}" for d in row["extra_info"]["documents"]), "Beyoncé 東京"]
    assert [shipped.encode(t) for t in texts] == [world.encode(t) for t in texts]
