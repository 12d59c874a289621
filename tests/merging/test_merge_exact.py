"""`solo merge` is exact by default (a lower --rank is the deliberate, lossy choice) and keeps the base it was trained over."""

import dataclasses

from support import info_for, make_adapter, perturb, run
from torch.testing import assert_close

from solo_cli import load_adapter, save_adapter
from solo_cli.engine.models import load_model
from solo_cli.inference.load import load_for_inference
from solo_cli.merging.combine import merge_adapters

PLAN = [(0, 3), (1, 3)]


def saved(tmp_path, name, model, seed, training=None):
    adapter = perturb(make_adapter(model, "schedule", plan=PLAN, rank=3, seed=seed), scale=0.3)
    info = info_for(model, adapter)
    info = dataclasses.replace(info, training=info.training | (training or {}))
    return save_adapter(tmp_path / f"{name}.safetensors", adapter, info), adapter


def test_the_default_rank_makes_a_weighted_merge_exact(tmp_path, tiny_model_dir):
    model = load_model(tiny_model_dir).model
    (a_path, a), (b_path, b) = saved(tmp_path, "a", model, 0), saved(tmp_path, "b", model, 1)
    result = merge_adapters([a_path, b_path], [0.7, 0.3])
    assert result.adapter.config.rank == 6 == result.exact_rank  # 3 + 3: no direction of either map is dropped
    for key in ("0_3", "1_3"):
        expected = 0.7 * a.connections[key].delta_weight() + 0.3 * b.connections[key].delta_weight()
        assert_close(result.adapter.connections[key].delta_weight(), expected, rtol=1e-5, atol=1e-6)
    assert max(result.errors.values()) < 1e-6


def test_the_cli_says_a_default_merge_is_exact_and_a_lower_rank_is_lossy_with_its_errors(tmp_path, tiny_model_dir):
    model = load_model(tiny_model_dir).model
    (a_path, _), (b_path, _) = saved(tmp_path, "a", model, 0), saved(tmp_path, "b", model, 1)
    code, lines = run("merge", a_path, b_path, "--weights", "0.7,0.3", "-o", tmp_path / "exact.safetensors")
    assert code == 0, lines
    assert "rank 6" in lines[0] and lines[0].endswith("exact)") and len(lines) == 1
    code, lines = run("merge", a_path, b_path, "--weights", "0.7,0.3", "--rank", 3, "-o", tmp_path / "lossy.safetensors")
    assert code == 0, lines
    assert "rank 3" in lines[0] and "lossy: rank 6 is exact" in lines[0]
    errors = [float(line.rsplit(" ", 1)[1]) for line in lines[1:]]
    assert len(errors) == 2 and all(e > 1e-3 for e in errors), lines


def test_a_merge_carries_the_base_quantization_and_dtype_its_inputs_were_trained_over(tmp_path, tiny_model_dir):
    model = load_model(tiny_model_dir).model
    nf4 = {"quantize": "nf4", "dtype": "float32"}
    a_path, _ = saved(tmp_path, "a", model, 0, nf4)
    b_path, _ = saved(tmp_path, "b", model, 1, nf4)
    c_path, _ = saved(tmp_path, "c", model, 2, {"quantize": "none", "dtype": "bfloat16"})
    both = merge_adapters([a_path, b_path], [0.5, 0.5]).info.training
    assert (both["quantize"], both["dtype"]) == ("nf4", "float32")
    mixed = merge_adapters([a_path, c_path], [0.5, 0.5]).info.training
    assert (mixed["quantize"], mixed["dtype"]) == ("mixed", "mixed")
    ignored = merge_adapters([a_path, c_path], [1.0, 0.0]).info.training  # weight 0: c contributes nothing
    assert (ignored["quantize"], ignored["dtype"]) == ("nf4", "float32")
    # attached to the full-precision base, the merge of nf4-trained adapters says so
    out = tmp_path / "merged.safetensors"
    assert run("merge", a_path, b_path, "-o", out)[0] == 0
    assert load_adapter(out)[1].training["quantize"] == "nf4"
    target = load_for_inference(str(tiny_model_dir), str(out))
    target.handle.detach()
    assert any("trained over the base quantized to nf4" in note for note in target.notes), target.notes
    assert run("merge", a_path, c_path, "-o", tmp_path / "mixed.safetensors")[0] == 0
    target = load_for_inference(str(tiny_model_dir), str(tmp_path / "mixed.safetensors"))
    target.handle.detach()
    assert any("differently quantized bases" in note for note in target.notes), target.notes
