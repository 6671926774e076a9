"""The training loss: chunked cross-entropy at supervised positions only, and packed rows that keep samples apart."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import model
import model.loss
from adapt.data.dataset import collate
from adapt.train import TrainingError, _check_packable, sample_losses
from model.loss import supervised_token_losses
from model.processor import IGNORE_INDEX


def test_chunked_loss_equals_the_full_logits_loss_with_its_gradients():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(3, 12, 16, requires_grad=True)
    labels = torch.randint(0, 50, (3, 12))
    labels[:, :4] = IGNORE_INDEX
    labels[1, 7:] = IGNORE_INDEX
    full = F.cross_entropy(head(hidden)[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=IGNORE_INDEX,
                           reduction="none")
    want_grads = torch.autograd.grad(full.sum(), [hidden, head.weight])
    # several recomputed chunks, one plain chunk, and every position projected at once (small logits)
    for chunk, full_bytes in ((3, 0), (1024, 0), (1024, None)):
        got = supervised_token_losses(hidden, head, labels, chunk=chunk, full_logits_bytes=full_bytes)
        assert got.shape == full.shape and torch.equal(got == 0, labels[:, 1:] == IGNORE_INDEX)
        torch.testing.assert_close(got, full, rtol=1e-6, atol=1e-6)
        for g, w in zip(torch.autograd.grad(got.sum(), [hidden, head.weight]), want_grads):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_an_all_ignored_batch_gives_zero_losses_that_backward_either_way():
    """A batch with no supervised label (answers cut off): zeros, no NaN, and a graph to backward through in the
    chunked way too (it returned a constant, and `loss.backward()` failed: "does not require grad")."""
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(2, 6, 16, requires_grad=True)
    labels = torch.full((2, 6), IGNORE_INDEX)
    for full_bytes in (None, 0):
        got = supervised_token_losses(hidden, head, labels, full_logits_bytes=full_bytes)
        assert got.shape == (2, 5) and torch.equal(got, torch.zeros(2, 5))
        grads = torch.autograd.grad(got.sum() / 1, [hidden, head.weight])
        assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)


def test_chunked_loss_takes_each_softmax_over_contiguous_classes(monkeypatch):
    """CUDA's softmax over a strided class dimension (its "spatial" kernel) took half the GPU time of an InternVL2-1B
    training step on an H200: every chunk hands cross-entropy (positions, vocab) logits, the classes contiguous."""
    seen, real = [], F.cross_entropy

    def spy(logits, target, *args, **kwargs):
        seen.append((logits.dim(), logits.shape[-1], logits.stride(-1)))
        return real(logits, target, *args, **kwargs)

    monkeypatch.setattr(F, "cross_entropy", spy)
    torch.manual_seed(0)
    labels = torch.randint(0, 50, (2, 9))
    supervised_token_losses(torch.randn(2, 9, 16), torch.nn.Linear(16, 50, bias=False), labels, chunk=4,
                            full_logits_bytes=0)
    assert len(seen) == 4 and all(shape == (2, 50, 1) for shape in seen)  # 16 positions, chunks of 4


@pytest.fixture(params=["chunked", "all-positions"])
def loss_way(request, monkeypatch):
    """pocket-tiny's logits are small, so its loss projects every position; 0 bytes forces the chunked way."""
    if request.param == "chunked":
        monkeypatch.setattr(model.loss, "FULL_LOGITS_BYTES", 0)
    return request.param


@pytest.fixture(scope="module")
def tiny():
    vlm, processor = model.load("pocket-tiny-scratch")
    return vlm.eval(), processor


@pytest.fixture(params=["sdpa", "per-span"])
def attention(request, tiny):
    """transformers' SDPA with its packed mask, or model.packed_attention's causal SDPA per sample span (what
    adapt train switches to with training.packing); the model is switched back after the test."""
    from model.packed_attention import NAME, use_packed_attention

    lm = tiny[0].language_model
    if request.param == "per-span":
        assert use_packed_attention(lm) and lm.config._attn_implementation == NAME
    yield request.param
    lm.set_attn_implementation("sdpa")


def encode(processor, question: str, answer: str, size: tuple[int, int]):
    conversation = [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]
    image = Image.new("RGB", size, (40, 120, 200))
    return processor(conversation, [image], add_generation_prompt=False, with_labels=True)


def test_model_token_losses_equal_cross_entropy_of_its_logits(tiny, loss_way):
    vlm, processor = tiny
    batch = collate([{"encoded": encode(processor, "What colour?", "blue", (64, 64)), "source": "a"},
                     {"encoded": encode(processor, "Describe the scene in detail.", "a blue square", (900, 300)),
                      "source": "b"}], processor)
    labels = batch["labels"]
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    with torch.no_grad():
        logits = vlm(**inputs).logits
        out = vlm(**inputs, labels=labels, loss_only=True)
        own = vlm(**inputs, labels=labels)  # without loss_only: the LLM's own output, logits and loss
    want = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), labels[:, 1:], ignore_index=IGNORE_INDEX,
                           reduction="none")
    torch.testing.assert_close(out.token_losses, want, rtol=1e-5, atol=1e-5)
    if loss_way == "all-positions":  # exactly the causal LM's own per-position loss: earlier runs replay bit for bit
        assert torch.equal(out.token_losses, want)
    assert out.logits is None  # the loss is all a training step needs
    assert out.loss.item() == pytest.approx(want.sum().item() / int((labels[:, 1:] != IGNORE_INDEX).sum()), rel=1e-5)
    assert torch.equal(own.logits, logits) and own.loss.item() == pytest.approx(out.loss.item(), rel=1e-5)


def per_sample_losses(vlm, processor, items: list[dict], pack_to: int | None, only: str = ""):
    """The collated batch (padded, or packed into rows of `pack_to`), each sample's (loss sum, supervised tokens)
    by its source number (``s<k>``), and the gradients of the parameters whose names hold `only`."""
    batch = collate(items, processor, pack_to=pack_to)
    segments, sources = batch.pop("segments"), batch.pop("sources")
    batch.pop("n_dropped")
    vlm.zero_grad()
    sums, counts = sample_losses(vlm(**batch, loss_only=True).token_losses, batch["labels"], segments)
    sums.sum().backward()
    grads = torch.cat([p.grad.flatten() for n, p in vlm.named_parameters() if p.grad is not None and only in n])
    return batch, {int(s[1:]): (sums[j].item(), int(counts[j])) for j, s in enumerate(sources)}, grads


def test_packed_rows_give_each_sample_the_loss_and_gradient_it_has_alone(tiny, loss_way, attention):
    vlm, processor = tiny
    items = [{"encoded": encode(processor, q, a, size), "source": f"s{k}"} for k, (q, a, size) in enumerate([
        ("What colour is it?", "blue", (64, 64)),
        ("Where is the square? Answer with the corner.", "top left corner of the image", (900, 300)),
        ("Count the shapes.", "three", (300, 300)),
        ("Is it round?", "no", (128, 256)),
    ])]
    lengths = [len(item["encoded"].input_ids) for item in items]

    padded, want, want_grads = per_sample_losses(vlm, processor, items, None)
    # room for all but the shortest in one row
    packed, got, got_grads = per_sample_losses(vlm, processor, items, sum(lengths) - min(lengths))
    assert "attention_mask" not in packed and packed["input_ids"].shape[0] == 2 < padded["input_ids"].shape[0]
    assert int((packed["labels"] != IGNORE_INDEX).sum()) == int((padded["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert got.keys() == want.keys() == set(range(4))
    for k in want:
        assert got[k][1] == want[k][1] > 0
        assert got[k][0] == pytest.approx(want[k][0], rel=1e-5), k
    torch.testing.assert_close(got_grads, want_grads, rtol=1e-4, atol=1e-6)


def test_per_span_attention_cuts_packed_rows_and_leaves_everything_else_to_sdpa(tiny, monkeypatch):
    """Packed rows: one causal SDPA call per sample span (no row-long mask); padded batches and generation: the
    very SDPA call transformers makes, so their outputs are bit-identical to SDPA's."""
    import model.packed_attention as packed
    from model.packed_attention import use_packed_attention

    vlm, processor = tiny
    lm = vlm.language_model
    items = [{"encoded": encode(processor, q, "an answer", size), "source": "s"} for q, size in
             [("What colour is it?", (64, 64)), ("Where is the square?", (900, 300)), ("Count.", (300, 300))]]
    calls: list[tuple[int, bool]] = []
    sdpa = packed.sdpa_attention_forward

    def spy(module, query, key, value, attention_mask, *args, **kwargs):
        calls.append((query.shape[2], attention_mask is None))
        return sdpa(module, query, key, value, attention_mask, *args, **kwargs)

    monkeypatch.setattr(packed, "sdpa_attention_forward", spy)

    def run(pack_to):
        batch = collate(items, processor, pack_to=pack_to)
        for key in ("segments", "sources", "n_dropped"):
            batch.pop(key)
        with torch.no_grad():
            return batch, vlm(**batch, loss_only=True).token_losses

    padded, want = run(None)
    packed_batch, _ = run(10_000)  # all three in one row
    assert calls == []  # still SDPA: nothing goes through the per-span function
    assert use_packed_attention(lm)
    try:
        _, got = run(None)
        assert torch.equal(got, want) and {mask for _, mask in calls} == {False}  # the padding mask, as SDPA
        calls.clear()
        run(10_000)
        lengths = [len(item["encoded"].input_ids) for item in items]
        layers = lm.config.num_hidden_layers
        assert packed_batch["input_ids"].shape[0] == 1
        assert sorted(calls) == sorted([(n, True) for n in lengths] * layers)  # a call per span, no mask
        calls.clear()
        ids = padded["input_ids"][:2]
        with torch.no_grad():
            new = vlm.generate(ids, padded["pixel_values"][: sum(items[k]["encoded"].num_tiles[0] for k in (0, 1))],
                               attention_mask=padded["attention_mask"][:2], max_new_tokens=4, do_sample=False)
        assert calls and all(not mask or q == 1 for q, mask in calls)  # prompt with its mask, then one token each
    finally:
        lm.set_attn_implementation("sdpa")
    with torch.no_grad():
        plain = vlm.generate(ids, padded["pixel_values"][: sum(items[k]["encoded"].num_tiles[0] for k in (0, 1))],
                             attention_mask=padded["attention_mask"][:2], max_new_tokens=4, do_sample=False)
    assert torch.equal(new, plain)


def test_per_span_attention_keeps_a_sliding_window_mask():
    """A packed row whose mask is more than packed-causal (here a 3-token sliding window) is left to SDPA with
    that mask: cutting it into spans would attend past the window."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from model.packed_attention import use_packed_attention

    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True, sliding_window=3,
                         max_window_layers=0, attn_implementation="sdpa")
    torch.manual_seed(0)
    lm = Qwen2ForCausalLM(config).eval()
    ids = torch.randint(0, 64, (1, 14))
    positions = torch.cat([torch.arange(8), torch.arange(6)])[None]
    with torch.no_grad():
        want = lm(input_ids=ids, position_ids=positions, use_cache=False).logits
        assert use_packed_attention(lm)
        got = lm(input_ids=ids, position_ids=positions, use_cache=False).logits
    assert torch.equal(got, want)


def test_packing_needs_a_language_model_from_transformers(tiny):
    vlm, _ = tiny
    _check_packable(vlm)

    class RemoteLM(torch.nn.Module):
        pass

    RemoteLM.__module__ = "transformers_modules.internlm2.modeling_internlm2"
    vlm.language_model, original = RemoteLM(), vlm.language_model
    try:
        with pytest.raises(TrainingError, match="training.packing"):
            _check_packable(vlm)
    finally:
        vlm.language_model = original


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_packed_rows_without_loss_only_attend_within_each_sample(tiny, mode):
    """The logits path (no ``loss_only``) of a packed row: transformers builds the packed mask only without a KV
    cache, and a causal LM makes one by default (``use_cache``, in train mode too), so each sample saw the ones
    before it in its row. Each sample's logits and the LM's own loss now equal those of the sample alone."""
    vlm, processor = tiny
    items = [{"encoded": encode(processor, q, a, size), "source": f"s{k}"} for k, (q, a, size) in enumerate([
        ("What colour is it?", "blue", (64, 64)), ("Where is the square?", "top left corner", (900, 300))])]
    packed, padded = (collate(items, processor, pack_to=pack_to) for pack_to in (10_000, None))
    assert packed["input_ids"].shape[0] == 1
    vlm.train(mode == "train")
    try:
        with torch.no_grad():
            got = vlm(input_ids=packed["input_ids"], pixel_values=packed["pixel_values"],
                      position_ids=packed["position_ids"], labels=packed["labels"])
            want = vlm(input_ids=padded["input_ids"], pixel_values=padded["pixel_values"],
                       attention_mask=padded["attention_mask"]).logits
            loss = vlm(**{k: packed[k] for k in ("input_ids", "pixel_values", "position_ids", "labels")},
                       loss_only=True).loss
    finally:
        vlm.eval()
    for k, source in enumerate(packed["sources"]):  # segment k of the packed row holds sample `source`
        sample = int(source[1:])
        torch.testing.assert_close(got.logits[0, packed["segments"][0] == k],
                                   want[sample, padded["segments"][sample] == sample], rtol=1e-5, atol=1e-5)
    assert got.loss.item() == pytest.approx(loss.item(), rel=1e-5)
    with pytest.raises(ValueError, match="cannot use a KV cache"):
        vlm(input_ids=packed["input_ids"], pixel_values=packed["pixel_values"], position_ids=packed["position_ids"],
            use_cache=True)


def test_packed_rows_with_lora_on_an_eager_lm_give_each_sample_its_own_loss_and_gradient():
    """Eager attention keeps packed samples apart through transformers' mask alone, and LoRA wraps the LM's
    Linears (peft around the whole model): the LoRA gradients of a packed batch equal the padded batch's."""
    from adapt.parts import PartSetting, apply_parts

    vlm, processor = model.load("pocket-tiny-scratch")
    vlm.language_model.set_attn_implementation("eager")
    torch.manual_seed(0)
    lora = apply_parts(vlm, {"llm": PartSetting(mode="lora", r=4, alpha=8, dropout=0.0)}).eval()
    for name, param in lora.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: a LoRA that changes nothing would hide a wrong mask
            torch.nn.init.normal_(param, std=0.1)
    items = [{"encoded": encode(processor, q, a, size), "source": f"s{k}"} for k, (q, a, size) in enumerate([
        ("What colour is it?", "blue", (64, 64)), ("Where is the square?", "top left corner", (900, 300)),
        ("Count the shapes.", "three", (300, 300))])]

    padded, want, want_grads = per_sample_losses(lora, processor, items, None, only="lora_")
    packed, got, got_grads = per_sample_losses(lora, processor, items, 10_000, only="lora_")
    assert vlm.language_model.config._attn_implementation == "eager" and packed["input_ids"].shape[0] == 1
    assert got.keys() == want.keys() == {0, 1, 2}
    for k in want:
        assert got[k][1] == want[k][1] > 0 and got[k][0] == pytest.approx(want[k][0], rel=1e-5), k
    assert want_grads.abs().max() > 0
    torch.testing.assert_close(got_grads, want_grads, rtol=1e-4, atol=1e-6)
