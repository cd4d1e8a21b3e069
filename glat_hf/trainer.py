"""GlatTrainer: Seq2SeqTrainer with the two-pass glancing loss (paper §3.1-3.2) and its λ schedule."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from functools import partial

import datasets
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler, SequentialSampler
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices
from transformers.trainer_utils import has_length, seed_worker
from transformers.utils import logging

from .ctc import best_ctc_alignment
from .glancing import (
    COUNT_RULES,
    DISTANCES,
    RATIO_SCHEDULES,
    ROUNDINGS,
    SELECTION_STRATEGIES,
    glance_mask,
    glancing_ratio,
    select_glance_positions,
    uniform_mask_positions,
)

logger = logging.get_logger(__name__)

GLANCING_MODES = ("glancing", "uniform", "none")
# max_tokens builds its own shuffled, length-grouped batches: only the strategies that mean "shuffled" fit.
TOKEN_BATCH_STRATEGIES = ("random", "group_by_length")


@dataclass
class ExactResumeSeq2SeqTrainingArguments(Seq2SeqTrainingArguments):
    """Seq2SeqTrainingArguments plus `max_tokens` and `lr_decay_fraction`, read by [`ExactResumeSeq2SeqTrainer`]."""

    max_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Train on batches of at most this many tokens per process, padding counted (fairseq's "
            "--max-tokens): each pair counts max(source length, target length) tokens and a batch holds at most "
            "max_tokens // (its longest pair) pairs, so neither side's padded batch exceeds max_tokens. Batches "
            "are length-grouped and shuffled from (data_seed or seed, epoch). Replaces "
            "per_device_train_batch_size for training (evaluation keeps per_device_eval_batch_size)."
        },
    )
    lr_decay_fraction: float | None = field(
        default=None,
        metadata={
            "help": "With lr_scheduler_type warmup_stable_decay: decay over this fraction of the training steps "
            "(sets lr_scheduler_kwargs' num_decay_steps from the run's length, so a recipe keeps its shape under "
            "--max_steps; transformers takes the decay as a number of steps). Another lr_scheduler_type ignores it, "
            "with a warning, so a command line can change a recipe's schedule."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.lr_decay_fraction is not None:
            self._check_lr_decay_fraction()
            if self.lr_scheduler_type != "warmup_stable_decay":  # a command line that overrides a recipe's schedule
                logger.warning(
                    f"lr_decay_fraction applies to the warmup_stable_decay schedule; the "
                    f"{self.lr_scheduler_type.value!r} schedule does not use it."
                )
                self.lr_decay_fraction = None
        if self.max_tokens is None:
            return
        name = f"{type(self).__name__}.max_tokens"
        if self.max_tokens < 1:
            raise ValueError(f"{name} must be a positive number of tokens, got {self.max_tokens!r}.")
        if self.auto_find_batch_size:
            raise ValueError(f"{name} fixes the batches by tokens; it cannot be combined with auto_find_batch_size.")
        if self.train_sampling_strategy not in TOKEN_BATCH_STRATEGIES:
            raise ValueError(
                f"{name} builds shuffled, length-grouped batches; train_sampling_strategy must be one of "
                f"{TOKEN_BATCH_STRATEGIES} with it, got {self.train_sampling_strategy!r}."
            )
        for option in ("split_batches", "dispatch_batches"):
            if getattr(self.accelerator_config, option, None):
                raise ValueError(
                    f"{name} gives batches of varying sizes, which accelerate cannot split or dispatch across "
                    f"processes: set accelerator_config {option} to False (each process then takes whole batches)."
                )
        default_batch_size = next(f.default for f in fields(self) if f.name == "per_device_train_batch_size")
        if self.per_device_train_batch_size != default_batch_size:
            logger.warning(
                f"{name} is set: training batches are built by tokens and per_device_train_batch_size "
                f"({self.per_device_train_batch_size}) is not used for them."
            )

    def num_decay_steps(self, num_training_steps: int) -> int | None:
        """The steps of warmup_stable_decay's decay in a run of `num_training_steps`: lr_decay_fraction of them,
        else lr_scheduler_kwargs' num_decay_steps (None: neither is set)."""
        if self.lr_decay_fraction is not None:
            return max(1, round(self.lr_decay_fraction * num_training_steps))
        return (self.lr_scheduler_kwargs or {}).get("num_decay_steps")

    def _check_lr_decay_fraction(self):
        name = f"{type(self).__name__}.lr_decay_fraction"
        if not 0.0 < self.lr_decay_fraction <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {self.lr_decay_fraction!r}.")
        if "num_decay_steps" in (self.lr_scheduler_kwargs or {}):
            raise ValueError(f"{name} and lr_scheduler_kwargs' num_decay_steps both set the decay: give one.")


@dataclass
class GlatTrainingArguments(ExactResumeSeq2SeqTrainingArguments):
    """Seq2SeqTrainingArguments plus one flag for each glancing variant of the paper, and `max_tokens`."""

    glancing: str = field(
        default="glancing",
        metadata={"help": "glancing (GLAT) | uniform (Mask-Predict's uniform sampling, Table 7) | none (NAT-base)."},
    )
    glancing_schedule: str = field(
        default="linear",
        metadata={
            "help": "λ over training: linear (anneal start -> end, WMT) | constant (start, IWSLT) | decay (start, "
            "then moved linearly to end over the learning rate's decay phase: warmup_stable_decay's last "
            "lr_decay_fraction of the steps)."
        },
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
    glance_rounding: str = field(
        default="floor",
        metadata={
            "help": "How S = λ·d (or λ·T) becomes a whole number of tokens, for every glance_count rule: floor "
            "(the official code; glances fewer than λ·d) | round (nearest, halves up) | stochastic "
            "(floor(λ·d + u), u ~ U[0, 1) per sentence: λ·d in expectation)."
        },
    )
    glance_distance: str = field(default="hamming", metadata={"help": "d(Y, Ŷ): hamming | levenshtein (Table 6)."})
    glance_selection: str = field(
        default="random", metadata={"help": "random | p_ref | 1-p_ref | most_certain | most_uncertain (Table 5)."}
    )
    glancing_same_dropout: bool = field(
        default=True, metadata={"help": "Both passes draw the same dropout masks (the official code's behaviour)."}
    )
    glance_own_predictions: float = field(
        default=0.0,
        metadata={
            "help": "Share of the sentences whose pass 2 also gets pass 1's own predictions as inputs, at its most "
            "confident positions not glanced (a share u ~ U[0, 1) of them): the state Mask-Predict refinement "
            "decodes from, where the kept words are the model's and some are wrong; the wrong ones are trained "
            "to be corrected. 0: GLAT."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        for name, choices in (
            ("glancing", GLANCING_MODES),
            ("glancing_schedule", RATIO_SCHEDULES),
            ("glance_count", COUNT_RULES),
            ("glance_rounding", ROUNDINGS),
            ("glance_distance", DISTANCES),
            ("glance_selection", SELECTION_STRATEGIES),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"{type(self).__name__}.{name} must be one of {choices}, got {getattr(self, name)!r}."
                )
        for name in ("glancing_ratio_start", "glancing_ratio_end", "glance_own_predictions"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{type(self).__name__}.{name} must be in [0, 1], got {getattr(self, name)!r}.")
        if self.glance_own_predictions and self.glancing == "none":
            raise ValueError(
                f"{type(self).__name__}.glance_own_predictions takes pass 1's predictions, and glancing 'none' "
                "(NAT-base) has no pass 1: use glancing 'glancing' or 'uniform'."
            )
        if self.glancing_schedule == "decay":
            name = f"{type(self).__name__}.glancing_schedule"
            if self.lr_scheduler_type != "warmup_stable_decay" or self.num_decay_steps(self.max_steps) is None:
                raise ValueError(
                    f"{name} 'decay' moves λ over the learning rate's decay phase: it needs "
                    f"lr_scheduler_type warmup_stable_decay with lr_decay_fraction (or num_decay_steps)."
                )
            if self.glancing_anneal_steps is not None:
                raise ValueError(
                    f"{name} 'decay' takes its span from the learning rate's decay phase, not from "
                    f"glancing_anneal_steps: give one."
                )

    def glancing_ratio_at(self, step: int, max_steps: int) -> float:
        """λ at `step`; derived from the step alone, so a resumed run continues the schedule."""
        total, anneal_start = self.glancing_anneal_steps or max_steps, 0
        if self.glancing_schedule == "decay":
            anneal_start = max_steps - self.num_decay_steps(max_steps)
        start, end = self.glancing_ratio_start, self.glancing_ratio_end
        return glancing_ratio(step, total, self.glancing_schedule, start, end, anneal_start)


class GlancingPolicy:
    """What pass 2 sees: GS(Y, Ŷ) of §3.1, called by the model between its two passes.

    Given pass 1's logits, it picks S = λ·d(Y, Ŷ) reference positions (or Mask-Predict's uniform
    sample) and returns them with the reference ids. For CTC the reference is the best CTC alignment
    of the target under pass 1 (a Viterbi path), so glanced positions take the aligned tokens.
    It also keeps the statistics that the trainer logs.
    """

    def __init__(self, args: GlatTrainingArguments, config):
        if config.use_ctc and args.glance_own_predictions:
            raise ValueError(
                f"{type(args).__name__}.glance_own_predictions trains for Mask-Predict refinement, which CTC models "
                "do not decode with: leave it at 0 for use_ctc."
            )
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

    # Eager under torch.compile (`--torch_compile`): it reads λ and appends to its statistics every step, each of
    # which would recompile the model's graph; what it computes between the two passes is small.
    @torch.compiler.disable
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
                rounding=self.args.glance_rounding,
                distance=self.args.glance_distance,
                strategy=self.args.glance_selection,
                reference_probs=reference_probs,
            )
        positions = decoder_mask.sum()
        self.stats["first_pass_accuracy"].append(((predictions == references) & decoder_mask).sum() / positions)
        self.stats["glanced_fraction"].append(glanced.sum() / positions)
        if self.args.glance_own_predictions:
            return self.add_own_predictions(logits, predictions, references, glanced, decoder_mask)
        return glanced, references

    def add_own_predictions(self, logits, predictions, references, glanced, decoder_mask):
        """Mask-Predict's refinement state in training (the idea of Ghazvininejad et al. 2020's SMART): in a share
        `glance_own_predictions` of the sentences, pass 1's most confident predictions at a share u ~ U[0, 1) of the
        positions not glanced become inputs too, as refinement keeps them (`remask_positions`). Returns the
        glanced positions and their input ids; the model trains the positions given a wrong word."""
        open_positions = decoder_mask & ~glanced
        sentences = open_positions.shape[0]
        chosen = torch.rand(sentences, device=logits.device) < self.args.glance_own_predictions
        counts = (torch.rand(sentences, device=logits.device) * open_positions.sum(1)).long() * chosen
        confidence = torch.softmax(logits.float(), -1).amax(-1)
        own = select_glance_positions(counts, open_positions, "most_certain", reference_probs=confidence)
        positions = decoder_mask.sum()
        self.stats["own_prediction_fraction"].append(own.sum() / positions)
        self.stats["own_prediction_wrong_fraction"].append((own & (predictions != references)).sum() / positions)
        return glanced | own, torch.where(own, predictions, references)


class GlancingScheduleCallback(TrainerCallback):
    """Sets λ from `state.global_step` before every step (linear annealing 0.5 -> 0.3, or constant)."""

    def __init__(self, policy: GlancingPolicy):
        self.policy = policy

    def on_step_begin(self, args, state, control, **kwargs):
        self.policy.ratio = args.glancing_ratio_at(state.global_step, state.max_steps)

    on_train_begin = on_step_begin


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' `LengthGroupedSampler` (train_sampling_strategy="group_by_length") with the order of
    epoch e drawn from `seed + e` instead of torch's global generator.

    The stock sampler draws its permutation from the global generator when an epoch starts. A run
    resumed in the middle of epoch e > 0 starts that epoch from another generator state (Trainer
    restores the checkpoint's random state only after skipping the batches already trained), so it
    would train on other batches than the uninterrupted run. Its epoch is set by Trainer and by
    `_SeededEpochCallback`.
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


class TokenBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices holding at most `max_tokens` tokens each, padding counted: a batch of n
    pairs whose longest pair has L tokens costs n·L (fairseq's --max-tokens). `lengths[i]` is the cost of
    pair i, for translation max(source length, target length).

    Epoch e is drawn from `seed + e` alone (so a resumed run sees the uninterrupted run's batches): the
    pairs are sorted by length, equal lengths in a random order, cut greedily into batches, and the
    batches are shuffled. Only pairs of equal length trade places between epochs, so the batch sizes
    and their count are the same every epoch (Trainer reads the count once, as the epoch's length).

    With `num_shards` processes (accelerate gives process p the batches p, p + P, ...), the largest
    batches are halved until the count is a multiple of P, so that every process gets as many
    batches and no pair is repeated to even them out.

    It has no `batch_size`: accelerate then shards it as a sampler of batches of varying sizes.
    """

    def __init__(self, lengths: Sequence[int], max_tokens: int, seed: int, num_shards: int = 1):
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        self.max_tokens = max_tokens
        self.seed = seed
        self.epoch = 0
        if len(self.lengths) and int(self.lengths.max()) > max_tokens:
            index = int(self.lengths.argmax())
            raise ValueError(f"Pair {index} has {int(self.lengths[index])} tokens, more than max_tokens={max_tokens}.")
        self.batch_sizes = self._batch_sizes(sorted(self.lengths.tolist()), max_tokens, num_shards)

    @staticmethod
    def _batch_sizes(sorted_lengths: list[int], max_tokens: int, num_shards: int) -> list[int]:
        sizes, size = [], 0
        for length in sorted_lengths:  # ascending: the pair added is the batch's longest
            if size and (size + 1) * length > max_tokens:
                sizes.append(size)
                size = 0
            size += 1
        if size:
            sizes.append(size)
        while len(sizes) % num_shards and max(sizes) > 1:
            largest = sizes.index(max(sizes))  # halving it keeps both halves within the budget
            sizes[largest : largest + 1] = [sizes[largest] // 2, sizes[largest] - sizes[largest] // 2]
        return sizes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batch_sizes)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        permutation = torch.randperm(len(self.lengths), generator=generator)
        by_length = permutation[torch.sort(self.lengths[permutation], stable=True).indices]
        batches = torch.split(by_length, self.batch_sizes)
        for index in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[index].tolist()


class _SeededEpochCallback(TrainerCallback):
    """Tells the trainer's seeded sampler which epoch begins.

    Trainer calls the sampler's `set_epoch` through accelerate's wrappers, but on several processes
    the epoch a run resumes in is wrapped twice (the skip of the trained batches around the
    per-process shard) and the call no longer reaches the sampler, which would replay epoch 0's
    order. Trainer resumes in epoch global_step // (update steps per epoch); the same holds at the
    start of every epoch of an uninterrupted run.
    """

    def __init__(self, trainer: ExactResumeSeq2SeqTrainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        sampler, steps_per_epoch = self.trainer._seeded_train_sampler, self.trainer._update_steps_per_epoch
        if sampler is not None and steps_per_epoch:
            sampler.set_epoch(state.global_step // steps_per_epoch)


class ExactResumeSeq2SeqTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer whose training order depends only on (data_seed or seed, epoch), so that a run
    resumed from a checkpoint trains on the same batches as the uninterrupted run, also with
    group_by_length (transformers' random sampler is already seeded by epoch) and with token batches.

    - `max_tokens` (in [`ExactResumeSeq2SeqTrainingArguments`]) trains on [`TokenBatchSampler`]
      batches of at most that many tokens instead of per_device_train_batch_size sentences.
    - Evaluation and prediction go through the data in input order, whatever the training sampler,
      so that predictions line up with their inputs and references.

    train.py uses it for the autoregressive baseline; GlatTrainer builds on it.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._seeded_train_sampler = None
        self._update_steps_per_epoch = None
        self.add_callback(_SeededEpochCallback(self))

    @property
    def _data_seed(self) -> int:
        return self.args.data_seed if self.args.data_seed is not None else self.args.seed

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None and getattr(self.args, "lr_decay_fraction", None) is not None:
            # written into the arguments, so that what train.py saves of them records the schedule that ran
            self.args.lr_scheduler_kwargs = {
                **(self.args.lr_scheduler_kwargs or {}),
                "num_decay_steps": self.args.num_decay_steps(num_training_steps),
            }
        return super().create_scheduler(num_training_steps, optimizer)

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            sampler = SeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, self._data_seed)
            self._seeded_train_sampler = sampler
        return sampler

    def _get_eval_sampler(self, eval_dataset):
        """Input order for evaluation and prediction; Trainer would length-group and shuffle them under
        train_sampling_strategy="group_by_length". On several processes accelerate hands each one every
        P-th batch of this order, as it does with Trainer's default."""
        if eval_dataset is None or not has_length(eval_dataset):
            return None
        return SequentialSampler(eval_dataset)

    def get_train_dataloader(self) -> DataLoader:
        self._seeded_train_sampler = None
        if getattr(self.args, "max_tokens", None) is None:
            dataloader = super().get_train_dataloader()
        else:
            dataloader = self._token_batch_dataloader()
        if has_length(dataloader):  # as Trainer counts the update steps of an epoch
            self._update_steps_per_epoch = max(math.ceil(len(dataloader) / self.args.gradient_accumulation_steps), 1)
        return dataloader

    def _token_batch_dataloader(self) -> DataLoader:
        """The training DataLoader of Trainer._get_dataloader, with a TokenBatchSampler as its batch sampler."""
        name = f"{type(self.args).__name__}.max_tokens"
        dataset = self.train_dataset
        if dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        if isinstance(dataset, IterableDataset) or not has_length(dataset):
            raise ValueError(f"{name} needs a training dataset with a length (it sorts the pairs by length).")
        lengths = self._pair_lengths(dataset, name)
        longest = int(lengths.argmax()) if len(lengths) else None
        if longest is not None and int(lengths[longest]) > self.args.max_tokens:
            raise ValueError(
                f"{name} is {self.args.max_tokens}, but training pair {longest} has {int(lengths[longest])} tokens "
                "(the longer of its source and target): raise max_tokens or truncate the pairs to at most that length."
            )
        sampler = TokenBatchSampler(lengths, self.args.max_tokens, self._data_seed, self.accelerator.num_processes)
        logger.info(
            f"{name}={self.args.max_tokens}: {len(sampler)} batches an epoch, "
            f"{len(lengths) / max(len(sampler), 1):.1f} pairs a batch on average."
        )
        data_collator = self.data_collator
        if isinstance(dataset, datasets.Dataset):
            dataset = self._remove_unused_columns(dataset, description="training")
        else:
            data_collator = self._get_collator_with_removed_columns(data_collator, description="training")
        dataloader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers,
            multiprocessing_context=self.args.dataloader_multiprocessing_context,
            prefetch_factor=self.args.dataloader_prefetch_factor,
            in_order=self.args.dataloader_in_order,
            worker_init_fn=partial(
                seed_worker, num_workers=self.args.dataloader_num_workers, rank=self.args.process_index
            ),
        )
        self._seeded_train_sampler = sampler
        return self.accelerator.prepare(dataloader)

    def _pair_lengths(self, dataset, name: str) -> torch.Tensor:
        """max(source length, target length) of every training pair, (N,) long."""
        source_column = (
            self.processing_class.model_input_names[0] if self.processing_class is not None else "input_ids"
        )
        columns = (source_column, "labels")
        if isinstance(dataset, datasets.Dataset):
            missing = [column for column in columns if column not in dataset.column_names]
            if missing:
                raise ValueError(
                    f"{name} needs the tokenized columns {columns}; the training dataset has no {missing}."
                )
            table = dataset.with_format("arrow")
            sides = [
                torch.tensor(pc.list_value_length(table[column]).to_numpy(), dtype=torch.long) for column in columns
            ]
        else:
            rows = [dataset[index] for index in range(len(dataset))]
            missing = [column for column in columns if rows and column not in rows[0]]
            if missing:
                raise ValueError(
                    f"{name} needs the tokenized fields {columns}; the training examples have no {missing}."
                )
            sides = [torch.tensor([len(row[column]) for row in rows], dtype=torch.long) for column in columns]
        return torch.maximum(*sides)


class GlatTrainer(ExactResumeSeq2SeqTrainer):
    """Trains GLAT with the glancing loss; evaluation is the plain (non-glancing) loss and BLEU by generate.

    Use with [`GlatTrainingArguments`]: `glancing="none"` trains NAT-base, `"uniform"` Mask-Predict's
    uniform sampling, and the other arguments select each variant of the paper. Logs carry
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
