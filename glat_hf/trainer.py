"""GlatTrainer: Seq2SeqTrainer with the two-pass glancing loss (paper §3.1-3.2) and its λ schedule."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from .ctc import best_ctc_alignment
from .glancing import (
    COUNT_RULES,
    DISTANCES,
    RATIO_SCHEDULES,
    SELECTION_STRATEGIES,
    glance_mask,
    glancing_ratio,
    uniform_mask_positions,
)

GLANCING_MODES = ("glancing", "uniform", "none")


@dataclass
class GlatTrainingArguments(Seq2SeqTrainingArguments):
    """Seq2SeqTrainingArguments plus one flag for each glancing variant of the paper."""

    glancing: str = field(
        default="glancing",
        metadata={"help": "glancing (GLAT) | uniform (Mask-Predict's uniform sampling, Table 7) | none (NAT-base)."},
    )
    glancing_schedule: str = field(
        default="linear", metadata={"help": "λ over training: linear (anneal start -> end, WMT) | constant (start, IWSLT)."}
    )
    glancing_ratio_start: float = field(default=0.5, metadata={"help": "λ at step 0 (paper: 0.5)."})
    glancing_ratio_end: float = field(default=0.3, metadata={"help": "λ at the end of annealing (paper: 0.3)."})
    glancing_anneal_steps: int | None = field(
        default=None, metadata={"help": "Steps over which λ anneals (default: the whole training)."}
    )
    glance_count: str = field(
        default="adaptive",
        metadata={"help": "S = λ·d (adaptive, eq. 2) | λ·T (fixed) | λ·T with λ annealed (decreasing); Tables 3-4."},
    )
    glance_distance: str = field(default="hamming", metadata={"help": "d(Y, Ŷ): hamming | levenshtein (Table 6)."})
    glance_selection: str = field(
        default="random", metadata={"help": "random | p_ref | 1-p_ref | most_certain | most_uncertain (Table 5)."}
    )
    glancing_same_dropout: bool = field(
        default=True, metadata={"help": "Both passes draw the same dropout masks (the official code's behaviour)."}
    )

    def __post_init__(self):
        super().__post_init__()
        for name, choices in (
            ("glancing", GLANCING_MODES),
            ("glancing_schedule", RATIO_SCHEDULES),
            ("glance_count", COUNT_RULES),
            ("glance_distance", DISTANCES),
            ("glance_selection", SELECTION_STRATEGIES),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"--{name} must be one of {choices}, got {getattr(self, name)!r}.")
        for name in ("glancing_ratio_start", "glancing_ratio_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name} must be in [0, 1], got {getattr(self, name)!r}.")

    def glancing_ratio_at(self, step: int, max_steps: int) -> float:
        """λ at `step`; derived from the step alone, so a resumed run continues the schedule."""
        total = self.glancing_anneal_steps or max_steps
        return glancing_ratio(step, total, self.glancing_schedule, self.glancing_ratio_start, self.glancing_ratio_end)


class GlancingPolicy:
    """What pass 2 sees: GS(Y, Ŷ) of §3.1, called by the model between its two passes.

    Given pass 1's logits, it picks S = λ·d(Y, Ŷ) reference positions (or Mask-Predict's uniform
    sample) and returns them with the reference ids. For CTC the reference is the best CTC alignment
    of the target under pass 1 (a Viterbi path), so glanced positions take the aligned tokens.
    It also keeps the statistics that the trainer logs.
    """

    def __init__(self, args: GlatTrainingArguments, config):
        self.args = args
        self.ratio = args.glancing_ratio_start
        self.use_ctc = config.use_ctc
        self.blank_token_id = config.blank_token_id
        self.pad_token_id = config.pad_token_id
        self.stats = defaultdict(list)

    def references(self, logits, labels, decoder_mask):
        if not self.use_ctc:
            return labels.masked_fill(~decoder_mask, self.pad_token_id)
        target_mask = (labels != -100) & (labels != self.pad_token_id)
        return best_ctc_alignment(
            torch.log_softmax(logits.float(), dim=-1),
            labels.masked_fill(~target_mask, self.pad_token_id),
            decoder_mask.sum(1),
            target_mask.sum(1),
            self.blank_token_id,
        )

    def __call__(self, logits, labels, decoder_mask):
        references = self.references(logits, labels, decoder_mask)
        predictions = logits.argmax(-1)
        if self.args.glancing == "uniform":
            glanced = uniform_mask_positions(decoder_mask)
        else:
            reference_probs = None
            if self.args.glance_selection != "random":
                reference_probs = torch.softmax(logits.float(), -1).gather(-1, references[..., None])[..., 0]
            glanced, _ = glance_mask(
                predictions,
                references,
                decoder_mask,
                self.ratio,
                rule=self.args.glance_count,
                distance=self.args.glance_distance,
                strategy=self.args.glance_selection,
                reference_probs=reference_probs,
            )
        positions = decoder_mask.sum()
        self.stats["first_pass_accuracy"].append(((predictions == references) & decoder_mask).sum() / positions)
        self.stats["glanced_fraction"].append(glanced.sum() / positions)
        return glanced, references


class GlancingScheduleCallback(TrainerCallback):
    """Sets λ from `state.global_step` before every step (linear annealing 0.5 -> 0.3, or constant)."""

    def __init__(self, policy: GlancingPolicy):
        self.policy = policy

    def on_step_begin(self, args, state, control, **kwargs):
        self.policy.ratio = args.glancing_ratio_at(state.global_step, state.max_steps)

    on_train_begin = on_step_begin


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' `LengthGroupedSampler` (--train_sampling_strategy group_by_length) with the order of
    epoch e drawn from `seed + e` instead of torch's global generator.

    The stock sampler draws its permutation from the global generator when an epoch starts. A run
    resumed in the middle of epoch e > 0 starts that epoch from another generator state (Trainer
    restores the checkpoint's random state only after skipping the batches already trained), so it
    would train on other batches than the uninterrupted run. Trainer calls `set_epoch` every epoch.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class ExactResumeSeq2SeqTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer whose training order depends only on (data_seed or seed, epoch), so that a run
    resumed from a checkpoint trains on the same batches as the uninterrupted run, also with
    group_by_length (transformers' random sampler is already seeded by epoch). train.py uses it for
    the autoregressive baseline; GlatTrainer builds on it."""

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return SeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed)
        return sampler


class GlatTrainer(ExactResumeSeq2SeqTrainer):
    """Trains GLAT with the glancing loss; evaluation is the plain (non-glancing) loss and BLEU by generate.

    Use with [`GlatTrainingArguments`]: `--glancing none` trains NAT-base, `uniform` Mask-Predict's
    uniform sampling, and the other flags select each variant of the paper. Logs carry
    `glancing_ratio` (λ), `glanced_fraction`, `first_pass_accuracy` and `length_accuracy`.
    """

    loss_is_scaled_for_ga = False  # the model's loss is a per-batch mean

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, GlatTrainingArguments):
            raise TypeError("GlatTrainer needs GlatTrainingArguments (they carry the glancing flags).")
        self.glancing = None
        if self.args.glancing != "none":
            self.glancing = GlancingPolicy(self.args, self.accelerator.unwrap_model(self.model).config)
            self.add_callback(GlancingScheduleCallback(self.glancing))
        self._length_accuracy = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        glance_fn = self.glancing if model.training else None
        outputs = model(**inputs, glance_fn=glance_fn, same_dropout=self.args.glancing_same_dropout)
        if model.training and outputs.length_logits is not None:
            target_lengths = outputs.decoder_mask.sum(1)
            self._length_accuracy.append((outputs.length_logits.argmax(-1) == target_lengths).float().mean().detach())
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def _mean_over_processes(self, values: list[torch.Tensor]) -> float:
        """The mean of a statistic over this logging interval and over every process (each logs at the same step)."""
        mean = torch.stack(values).float().mean().to(self.args.device)
        return round(self.accelerator.reduce(mean, reduction="mean").item(), 4)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:  # a training log: add the glancing statistics since the last one
            if self.glancing is not None:
                logs["glancing_ratio"] = self.glancing.ratio
                for name, values in sorted(self.glancing.stats.items()):
                    logs[name] = self._mean_over_processes(values)
                self.glancing.stats.clear()
            if self._length_accuracy:
                logs["length_accuracy"] = self._mean_over_processes(self._length_accuracy)
                self._length_accuracy.clear()
        super().log(logs, *args, **kwargs)
