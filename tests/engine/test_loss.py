import pytest
import torch
import torch.nn.functional as F
from tiny import ARCHS, make_model
from torch.testing import assert_close

from solo_cli.engine.loss import causal_lm_loss, fast_path


@pytest.mark.parametrize("arch", ARCHS)
def test_loss_on_trained_positions_equals_the_full_logits_loss(arch):
    model = make_model(arch)
    ids = torch.randint(3, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :4] = -100  # a masked prompt
    labels[1, 7:] = -100  # padding
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    loss, count = causal_lm_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels}, label_smoothing=0.1)
    logits = model(ids, attention_mask=mask).logits[:, :-1]
    expected = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, label_smoothing=0.1
    )
    assert count == int((labels[:, 1:] != -100).sum())
    assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_vocabulary_projection_runs_only_on_trained_positions():
    model = make_model("llama")
    rows = []
    model.lm_head.register_forward_hook(lambda m, a, o: rows.append(a[0].shape))
    ids = torch.randint(3, 300, (2, 10))
    labels = torch.full_like(ids, -100)
    labels[:, 8:] = ids[:, 8:]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    causal_lm_loss(model, batch)  # the first batch also proves the shortcut against a full forward
    rows.clear()
    causal_lm_loss(model, batch)
    assert rows == [torch.Size([4, 32])]  # 2 rows x 2 trained targets, not 2 x 9 positions


@pytest.mark.parametrize("arch", ARCHS)
def test_loss_equals_the_models_own_loss(arch):
    """The model's own ``labels=`` loss is the reference, whatever it does between body and logits."""
    model = make_model(arch)
    ids = torch.randint(3, 300, (2, 9), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    loss, _ = causal_lm_loss(model, batch)
    assert_close(loss, model(input_ids=ids, labels=ids).loss, rtol=1e-5, atol=1e-5)


def test_granite_logits_scaling_falls_back_to_the_full_forward():
    """Granite divides its logits by logits_scaling: head(body(x)) is 8x off, so the shortcut is refused.

    Before the check, solo's loss on this model was several times the model's own."""
    model = make_model("granite")
    ids = torch.randint(3, 300, (2, 9), generator=torch.Generator().manual_seed(2))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    assert fast_path(model, batch) is None
    assert fast_path(make_model("llama"), batch) is not None
    loss, _ = causal_lm_loss(model, batch)
    assert_close(loss, model(input_ids=ids, labels=ids).loss, rtol=1e-5, atol=1e-5)


def test_the_shortcut_check_leaves_training_mode_and_rng_alone():
    model = make_model("llama")
    model.train()
    ids = torch.randint(3, 300, (2, 9))
    torch.manual_seed(5)
    fast_path(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    after = torch.rand(1)
    torch.manual_seed(5)
    assert model.training and torch.equal(after, torch.rand(1))
