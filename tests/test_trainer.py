"""The glancing trainer: the two passes, the policy, the schedule, and that glancing training learns."""

import pytest
import torch
from datasets import Dataset
from helpers import read_pairs, small_config, tiny_model, tokenizer_for
from transformers import DataCollatorForSeq2Seq

from glat_hf import GlatForConditionalGeneration, GlatTrainer, GlatTrainingArguments
from glat_hf.ctc import ctc_collapse
from glat_hf.trainer import GlancingPolicy

SOURCE = torch.tensor([[7, 8, 9, 10, 2], [11, 12, 2, 0, 0]])
LABELS = torch.tensor([[20, 21, 22, 23, 2, -100], [24, 25, 26, 27, 28, 2]])


def no_glance(captured):
    def glance_fn(logits, labels, decoder_mask):
        captured.append(logits.clone())
        return torch.zeros_like(decoder_mask), labels.masked_fill(~decoder_mask, 0)

    return glance_fn


@pytest.mark.parametrize("same_dropout", [True, False])
def test_both_passes_draw_the_same_dropout_masks_unless_told_not_to(same_dropout):
    model = tiny_model(dropout=0.3, attention_dropout=0.2).train()
    first = []
    out = model(SOURCE, labels=LABELS, glance_fn=no_glance(first), same_dropout=same_dropout)
    # Nothing glanced: pass 2 sees pass 1's input, so its logits differ only through dropout.
    assert torch.allclose(out.logits, first[0], atol=1e-5) == same_dropout


def test_two_pass_forward_trains_encoder_and_decoder():
    model = tiny_model().train()
    args = GlatTrainingArguments(output_dir="unused", report_to=[], glancing_schedule="constant")
    out = model(SOURCE, labels=LABELS, glance_fn=GlancingPolicy(args, model.config))
    out.loss.backward()
    assert model.model.encoder.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert model.model.decoder.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_policy_glances_lambda_times_hamming_positions():
    model = tiny_model()
    args = GlatTrainingArguments(output_dir="unused", report_to=[], glancing_ratio_start=0.5)
    policy = GlancingPolicy(args, model.config)
    decoder_mask = LABELS != -100
    logits = torch.full((2, 6, 60), -5.0)
    logits[..., 3] = 5.0  # pass 1 predicts token 3 everywhere: every real position is wrong
    glanced, references = policy(logits, LABELS, decoder_mask)
    assert glanced.sum(1).tolist() == [2, 3]  # floor(0.5 * 5), floor(0.5 * 6)
    assert not glanced[~decoder_mask].any()
    assert torch.equal(references[decoder_mask], LABELS[decoder_mask])
    assert float(policy.stats["glanced_fraction"][0]) == pytest.approx(5 / 11)


@pytest.mark.parametrize("rounding, expected", [("floor", [2, 3]), ("round", [3, 3])])
def test_policy_rounds_the_glance_count_as_told(rounding, expected):
    model = tiny_model()
    args = GlatTrainingArguments(output_dir="unused", report_to=[], glancing_ratio_start=0.5, glance_rounding=rounding)
    logits = torch.full((2, 6, 60), -5.0)
    logits[..., 3] = 5.0  # every real position wrong: λ·d = 0.5 x [5, 6]
    glanced, _ = GlancingPolicy(args, model.config)(logits, LABELS, LABELS != -100)
    assert glanced.sum(1).tolist() == expected


def test_policy_with_stochastic_rounding_glances_lambda_d_on_average():
    model = tiny_model()
    args = GlatTrainingArguments(
        output_dir="unused", report_to=[], glancing_ratio_start=0.5, glance_rounding="stochastic"
    )
    policy = GlancingPolicy(args, model.config)
    logits = torch.full((2, 6, 60), -5.0)
    logits[..., 3] = 5.0
    counts = torch.stack([policy(logits, LABELS, LABELS != -100)[0].sum(1) for _ in range(2000)]).float()
    assert counts[:, 1].eq(3).all()  # 0.5 x 6 is whole
    assert counts[:, 0].mean().item() == pytest.approx(2.5, abs=0.05)


def test_ctc_policy_glances_the_best_alignment():
    model = tiny_model(use_ctc=True)
    args = GlatTrainingArguments(output_dir="unused", report_to=[], glancing_ratio_start=1.0)
    policy = GlancingPolicy(args, model.config)
    labels = torch.tensor([[20, 21, 2]])
    decoder_mask = torch.ones(1, 8, dtype=torch.bool)
    glanced, aligned = policy(torch.randn(1, 8, 60), labels, decoder_mask)
    assert ctc_collapse(aligned, blank_id=6, pad_id=0).tolist() == [[20, 21, 2]]


def test_own_predictions_are_pass_1s_most_confident_words_among_those_not_glanced():
    torch.manual_seed(0)
    model = tiny_model()
    args = GlatTrainingArguments(
        output_dir="unused", report_to=[], glancing_ratio_start=0.5, glance_own_predictions=1.0
    )
    policy = GlancingPolicy(args, model.config)
    decoder_mask = LABELS != -100
    logits = torch.full((2, 6, 60), -5.0)
    logits[..., 3] = torch.arange(6.0)  # pass 1 predicts token 3 everywhere, surer at later positions
    counts = []
    for _ in range(300):
        glanced, words = policy(logits, LABELS, decoder_mask)
        own = glanced & (words == 3)
        referenced = glanced & ~own
        assert referenced.sum(1).tolist() == [2, 3]  # floor(λ·d) reference words, as without the option
        assert torch.equal(words[referenced], LABELS[referenced])
        assert not glanced[~decoder_mask].any()
        for row in range(2):  # the most confident (latest) of the positions not glanced by reference
            open_positions = (decoder_mask[row] & ~referenced[row]).nonzero().flatten()
            taken = own[row].nonzero().flatten()
            assert torch.equal(taken, open_positions[len(open_positions) - len(taken) :])
        counts.append(own.sum(1))
    counts = torch.stack(counts).float()
    # a share u ~ U[0, 1) of the 3 open positions of each sentence: 0, 1 or 2 of them, 1 on average
    assert set(counts.flatten().tolist()) == {0.0, 1.0, 2.0}
    assert counts.mean().item() == pytest.approx(1.0, abs=0.15)
    assert float(policy.stats["own_prediction_wrong_fraction"][0]) == float(policy.stats["own_prediction_fraction"][0])


def test_own_predictions_go_to_a_share_of_the_sentences():
    torch.manual_seed(0)
    model = tiny_model()
    args = GlatTrainingArguments(output_dir="unused", report_to=[], glance_own_predictions=0.25)
    policy = GlancingPolicy(args, model.config)
    labels = torch.arange(10, 40).repeat(400, 1)  # 400 sentences of 30 words, pass 1 wrong everywhere
    logits = torch.full((400, 30, 60), -5.0)
    logits[..., 3] = 5.0
    glanced, words = policy(logits, labels, torch.ones_like(labels, dtype=torch.bool))
    with_own = (glanced & (words == 3)).any(1).float().mean().item()
    assert with_own == pytest.approx(0.25 * (1 - 1 / 15), abs=0.06)  # u·15 open positions rounds to 0 for 1/15


@pytest.mark.parametrize(
    "options, config, message",
    [
        ({"glance_own_predictions": 0.5, "glancing": "none"}, {}, "has no pass 1"),
        ({"glance_own_predictions": 0.5}, {"use_ctc": True}, "leave it at 0 for use_ctc"),
    ],
)
def test_own_predictions_need_a_first_pass_and_a_refining_model(options, config, message):
    with pytest.raises(ValueError, match=message):
        args = GlatTrainingArguments(output_dir="unused", report_to=[], **options)
        GlancingPolicy(args, tiny_model(**config).config)


@pytest.mark.parametrize(
    "name, value",
    [
        ("glance_selection", "best"),
        ("glance_rounding", "ceil"),
        ("glancing_ratio_end", 1.5),
        ("glance_own_predictions", -0.1),
    ],
)
def test_bad_argument_names_itself_as_an_argument_of_the_library(name, value):
    with pytest.raises(ValueError, match=rf"^GlatTrainingArguments\.{name} must be"):
        GlatTrainingArguments(output_dir="unused", report_to=[], **{name: value})


@pytest.mark.parametrize(
    "options, message",
    [
        ({"lr_decay_fraction": 0.0}, r"must be in \(0, 1\]"),
        ({"lr_decay_fraction": 1.5}, r"must be in \(0, 1\]"),
        (
            {"lr_decay_fraction": 0.2, "lr_scheduler_kwargs": {"num_decay_steps": 3}},
            "num_decay_steps both set the decay",
        ),
    ],
)
def test_a_bad_decay_fraction_names_the_problem(options, message):
    options = {"lr_scheduler_type": "warmup_stable_decay", **options}
    with pytest.raises(ValueError, match=rf"^GlatTrainingArguments\.lr_decay_fraction .*{message}"):
        GlatTrainingArguments(output_dir="unused", report_to=[], use_cpu=True, **options)


def test_a_decay_fraction_leaves_another_schedule_alone():
    """A recipe's fraction must not break a command line that picks another schedule."""
    args = GlatTrainingArguments(
        output_dir="unused", report_to=[], use_cpu=True, lr_scheduler_type="linear", lr_decay_fraction=0.2
    )
    assert args.lr_decay_fraction is None and args.lr_scheduler_kwargs in (None, {})


@pytest.mark.parametrize("max_steps, decay_steps", [(12, 3), (40, 10)])
def test_the_decay_fraction_scales_the_warmup_stable_decay_schedule_with_the_run(max_steps, decay_steps, tmp_path):
    args = GlatTrainingArguments(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        max_steps=max_steps,
        warmup_steps=2,
        learning_rate=1.0,
        lr_scheduler_type="warmup_stable_decay",
        lr_scheduler_kwargs={"decay_type": "linear"},
        lr_decay_fraction=0.25,
        glancing_schedule="decay",
        glancing_ratio_start=0.5,
        glancing_ratio_end=0.1,
    )
    trainer = GlatTrainer(model=tiny_model(), args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=max_steps)
    rates = []
    for _ in range(max_steps):
        rates.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    decay_start = max_steps - decay_steps  # the last step at the full rate
    assert rates[:2] == [0.0, 0.5]  # warm-up
    assert rates[2 : decay_start + 1] == [1.0] * (decay_start - 1)
    assert all(later < earlier for earlier, later in zip(rates[decay_start:], rates[decay_start + 1 :]))
    assert trainer.lr_scheduler.get_last_lr()[0] == 0.0
    assert args.lr_scheduler_kwargs == {"decay_type": "linear", "num_decay_steps": decay_steps}
    # glancing_schedule "decay": λ is held while the rate is, and falls with it to glancing_ratio_end
    ratios = [args.glancing_ratio_at(step, max_steps) for step in range(max_steps + 1)]
    assert ratios[: decay_start + 1] == [0.5] * (decay_start + 1)
    assert all(later < earlier for earlier, later in zip(ratios[decay_start:], ratios[decay_start + 1 :]))
    assert ratios[-1] == pytest.approx(0.1)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"lr_scheduler_type": "linear"}, "needs lr_scheduler_type warmup_stable_decay"),
        ({"lr_scheduler_type": "linear", "lr_scheduler_kwargs": {"num_decay_steps": 5}}, "needs lr_scheduler_type"),
        ({}, "needs lr_scheduler_type warmup_stable_decay with lr_decay_fraction"),
        ({"lr_decay_fraction": 0.2, "glancing_anneal_steps": 100}, "not from glancing_anneal_steps"),
    ],
)
def test_lambda_annealed_with_the_rate_needs_a_decay_phase(options, message):
    options = {"lr_scheduler_type": "warmup_stable_decay", **options}
    with pytest.raises(ValueError, match=rf"^GlatTrainingArguments\.glancing_schedule 'decay' .*{message}"):
        GlatTrainingArguments(output_dir="unused", report_to=[], use_cpu=True, glancing_schedule="decay", **options)


def test_glancing_training_learns_and_glances_less_as_the_first_pass_improves(multi30k_dir, tmp_path):
    torch.manual_seed(0)
    sources, targets = read_pairs(multi30k_dir, count=64)
    tokenizer = tokenizer_for(sources + targets, vocab_size=600)
    dataset = Dataset.from_dict({"source": sources, "target": targets}).map(
        lambda batch: tokenizer(batch["source"], text_target=batch["target"]),
        batched=True,
        remove_columns=["source", "target"],
    )
    config = small_config(len(tokenizer))
    args = GlatTrainingArguments(
        output_dir=str(tmp_path),
        max_steps=200,
        per_device_train_batch_size=64,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        logging_steps=20,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        glancing_schedule="constant",
        glancing_ratio_start=0.5,
        seed=0,
    )
    trainer = GlatTrainer(
        model=GlatForConditionalGeneration(config),
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
        processing_class=tokenizer,
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "glanced_fraction" in entry]
    first, last = logs[0], logs[-1]
    print(
        {
            key: (first[key], last[key])
            for key in ("loss", "glanced_fraction", "first_pass_accuracy", "length_accuracy")
        }
    )
    assert all(entry["glancing_ratio"] == 0.5 for entry in logs)
    assert last["loss"] < first["loss"] / 2
    assert last["first_pass_accuracy"] > first["first_pass_accuracy"] + 0.3
    assert last["glanced_fraction"] < first["glanced_fraction"] / 2
