#!/usr/bin/env python
"""Decoding speed and quality of GLAT against the autoregressive baseline, and the cost of a training step.

    python training/benchmark.py --quick                                  # < 1 min on 2 CPU cores: small random models
    python training/benchmark.py --output bench.json --figures figures    # random multi30k-preset models: speed only
    python training/benchmark.py --glat_model outputs/multi30k_en_de_glat --ctc_model outputs/multi30k_en_de_glat_ctc \
        --ar_model outputs/multi30k_en_de_ar --nat_model outputs/multi30k_en_de_nat --output bench.json --figures figures
    python training/benchmark.py --device cuda --compile ...             # on a GPU; --int8 (CPU) / --compile add variants

Systems (paper Table 1, Figure 3): AR greedy and AR beam 4 (transformers' MarianMTModel.generate); GLAT in one
pass; GLAT + NPD with m = 3 and 7 candidates, ranked by GLAT's own mean log-probability or by the AR model; GLAT+CTC;
Mask-Predict refinement with 4 and 10 iterations (length beam 1); NAT-base in one pass (with --nat_model).

How it measures, the same way for every system, in one process, so that the ratios compare like with like:
- latency_ms at batch size 1: the first --latency_sentences test sentences, one at a time, in order: the time of a
  pass over them (time.perf_counter, torch.cuda.synchronize on GPU) divided by their number; the median over
  --repeats passes. Within a pass the systems take turns sentence by sentence (batch by batch at the larger batch
  size), so a slow spell of a shared machine hits all alike: in blocks of one system at a time, two systems of the
  same cost (GLAT and NAT) differed by 20%.
- batch size --batch_size (64): all --num_sentences sentences sorted by source length (longest first) and cut into
  batches; every system decodes the same batches. latency_ms is the mean time per batch and sentences_per_s the
  sentences over the time of the pass (median over the repeats).
- speedup_vs_ar_greedy / speedup_vs_ar_beam: the AR row's latency_ms divided by this row's, at the same batch size
  and variant (at the batch size the batches are the same, so this is also the ratio of throughputs).
- peak_mem_mb, in untimed passes before the timed ones (at batch size 1 over the first 10 latency sentences): on GPU,
  torch.cuda.max_memory_allocated minus the memory allocated before the pass (the weights of every loaded model stay
  resident and are not counted); on CPU, the peak resident set size of the process during the pass (VmHWM, reset
  through /proc/self/clear_refs) minus the resident size before it, after glibc's malloc_trim has handed free heap
  pages back: everything the pass touches (tensors, allocator and BLAS workspaces), not torch tensors alone.
- output_tokens: the mean number of tokens (special tokens left out) of a translation in the batch pass, over the
  row's sentences. An AR model pays a decoder step per token: a few outputs that loop to the length limit weigh on
  its latency, and a length predictor that predicts short translations makes GLAT look faster.
- bleu (sacreBLEU), repetition_ratio (paper Table 2) and bleu_by_length (Figure 4, source words): on the outputs of
  the untimed batch pass, for the systems whose models were all loaded from folders (trained ones); null otherwise.
  --predictions writes those translations, one file per system and variant.
- variants: fp32 always; --int8 adds "int8" (every nn.Linear of every model, the AR one included, dynamically
  quantised; its BLEU shows the cost); --bf16 adds "bf16" (every model cast to bfloat16); --compile adds "compile"
  (GLAT's stacks compiled, AR eager). Speed-ups are taken within a variant.
- warm-up: --warmup sentences at batch size 1 and the first batch, untimed, before the memory pass and again
  before the timed passes (torch.compile compiles there).
Random models (no folder given) have the sizes of --preset (or of a loaded model): an untrained length predictor
predicts arbitrary lengths and an untrained AR model rarely stops, so, for realistic lengths, a random GLAT's
length predictor is set to the mean reference length and a random AR model generates exactly the reference length
(the longest reference of the batch). Training cost: tokens/s of a training step (forward, backward, AdamW) of GLAT
(two decoder passes with the trainer's glancing policy), NAT (one pass) and AR, same sizes, on the same batch of
training pairs, the steps of the three taking turns; ratio_vs_nat = step time / NAT step time.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_name, "1")  # a benchmark never downloads; set before transformers is imported

import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from glat_hf import GlatForConditionalGeneration, GlatTrainingArguments, train_tokenizer  # noqa: E402
from glat_hf.configuration_glat import PRESETS  # noqa: E402
from glat_hf.data import data_dir, load_parallel_folder  # noqa: E402
from glat_hf.metrics import bleu_by_length, corpus_bleu, decode_ids, repetition_ratio  # noqa: E402
from glat_hf.trainer import GlancingPolicy  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import DataTrainingArguments, ModelArguments, build_model  # noqa: E402  (training/train.py)

SIZE_FIELDS = ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
               "encoder_ffn_dim", "decoder_ffn_dim")  # fmt: skip
QUICK_SIZES = "d_model=64,encoder_layers=1,decoder_layers=1,encoder_attention_heads=2,decoder_attention_heads=2," \
              "encoder_ffn_dim=128,decoder_ffn_dim=128"  # fmt: skip
# Full run / --quick defaults of the flags that --quick changes.
DEFAULTS = {
    "num_sentences": (1000, 64), "latency_sentences": (100, 8), "repeats": (3, 1), "warmup": (2, 1),
    "train_steps": (5, 2), "train_batch_size": (64, 16), "vocab_size": (8000, 1000), "tokenizer_pairs": (None, 3000),
}  # fmt: skip
AR_GREEDY, AR_BEAM = "AR greedy", "AR beam 4"


# ------------------------------------------------------------------------------------------ arguments
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    models = parser.add_argument_group("models (a folder = a trained model; none = random models of --preset)")
    models.add_argument("--glat_model", help="A trained GLAT folder.")
    models.add_argument("--ctc_model", help="A trained GLAT+CTC folder.")
    models.add_argument("--ar_model", help="A trained MarianMTModel folder: the AR baseline and the NPD reranker.")
    models.add_argument("--nat_model", help="A trained NAT-base folder (adds the NAT row: repetition comparison).")
    models.add_argument("--tokenizer", help="Tokenizer folder (default: the first model folder's, else a BPE trained on "
                                            "--train_split).")
    models.add_argument("--preset", default="multi30k", choices=sorted(PRESETS), help="Sizes of random models.")
    models.add_argument("--config_overrides", help='Sizes of random models, e.g. "d_model=128,encoder_layers=2".')
    models.add_argument("--vocab_size", type=int, help="BPE vocabulary trained for random models (8000; quick 1000).")
    models.add_argument("--seed", type=int, default=0)
    data = parser.add_argument_group("data")
    data.add_argument("--data_folder", help="Folder of {split}.{lang}[.gz] files (default $GLAT_DATA_DIR/multi30k).")
    data.add_argument("--split", default="test_2016_flickr", help="Sentences to decode.")
    data.add_argument("--train_split", default="train", help="Pairs for the training-cost batch and the tokenizer.")
    data.add_argument("--source_lang", default="en")
    data.add_argument("--target_lang", default="de")
    data.add_argument("--num_sentences", type=int, help="Sentences decoded in batches, BLEU on them (1000; quick 64).")
    data.add_argument("--latency_sentences", type=int, help="The first N of them timed at batch size 1 (100; quick 8).")
    data.add_argument("--length_buckets", default="5,10,15,20,25",
                      help="Upper bounds of the source-length buckets (words) of BLEU by length; Multi30k is short.")
    timing = parser.add_argument_group("timing")
    timing.add_argument("--device", default="cpu", help="cpu or cuda.")
    timing.add_argument("--batch_size", type=int, default=64, help="Batch size of the throughput measurement.")
    timing.add_argument("--repeats", type=int, help="Timed passes per system (3; quick 1).")
    timing.add_argument("--warmup", type=int, help="Warm-up sentences at batch size 1 (2; quick 1).")
    timing.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice).")
    timing.add_argument("--int8", action="store_true",
                        help="CPU: add an int8 variant of every system (torch.ao dynamic quantisation of nn.Linear).")
    timing.add_argument("--bf16", action="store_true",
                        help="Add a bfloat16 variant of every system (CPUs with AVX512-BF16 or AMX, GPUs).")
    timing.add_argument("--compile", action="store_true",
                        help="Add a variant with GLAT's encoder and decoder under torch.compile (AR stays eager).")
    timing.add_argument("--no_training_cost", action="store_true", help="Skip the training-step measurement.")
    timing.add_argument("--train_steps", type=int, help="Timed training steps of each model (5; quick 2).")
    timing.add_argument("--train_batch_size", type=int, help="Sentence pairs of the training batch (64; quick 16).")
    timing.add_argument("--profile", action="store_true", help="Print a torch.profiler table of GLAT generate at batch 1 and B.")
    out = parser.add_argument_group("output")
    out.add_argument("--output", help="Write the rows as a JSON list to this file.")
    out.add_argument("--figures", help="Write PNG figures to this folder.")
    out.add_argument("--predictions", help="Write each system's translations (batch pass, in sentence order) to "
                                           "FOLDER/<system>.<variant>.txt.")
    parser.add_argument("--quick", action="store_true",
                        help="Small random models (d_model 64, 1+1 layers), 64 sentences, 1 repeat: under a minute on CPU.")
    parser.add_argument("--tokenizer_pairs", type=int, help=argparse.SUPPRESS)  # pairs to train a tokenizer on
    args = parser.parse_args(argv)
    for name, (full, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.quick and args.config_overrides is None and not any(
        (args.glat_model, args.ctc_model, args.ar_model, args.nat_model)
    ):
        args.config_overrides = QUICK_SIZES
    args.latency_sentences = min(args.latency_sentences, args.num_sentences)
    if args.int8 and args.device != "cpu":
        parser.error("--int8 (dynamic quantisation) runs on CPU only.")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no GPU.")
    for name in ("num_sentences", "latency_sentences", "batch_size", "repeats", "train_steps", "train_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1.")
    return args


# ----------------------------------------------------------------------------------------------- data
def sentences(folder: Path, split: str, src: str, tgt: str, count: int | None) -> tuple[list[str], list[str]]:
    pairs = load_parallel_folder(folder, src, tgt, splits=[split])[split]
    if count is not None:
        pairs = pairs.select(range(min(count, len(pairs))))
    flat = pairs.flatten()
    return list(flat[f"translation.{src}"]), list(flat[f"translation.{tgt}"])


@dataclass
class Batch:
    """Tokenized sentences on the device; `indices` into the sentence list; `target_length` for random AR models."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    indices: list[int]
    target_length: int


def make_batches(tokenizer, texts, order, batch_size, target_lengths, max_source, device) -> list[Batch]:
    batches = []
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        encoded = tokenizer([texts[i] for i in indices], return_tensors="pt", padding=True, truncation=True,
                            max_length=max_source)  # fmt: skip
        batches.append(Batch(encoded["input_ids"].to(device), encoded["attention_mask"].to(device), indices,
                             max(target_lengths[i] for i in indices)))  # fmt: skip
    return batches


# --------------------------------------------------------------------------------------------- models
@dataclass
class Models:
    """The models of one variant; `trained` names those loaded from a folder."""

    glat: GlatForConditionalGeneration
    ctc: GlatForConditionalGeneration
    ar: nn.Module
    nat: GlatForConditionalGeneration | None
    trained: set = field(default_factory=set)


def load_folder(path: str, kind: str):
    model = AutoModelForSeq2SeqLM.from_pretrained(path)
    is_glat = isinstance(model, GlatForConditionalGeneration)
    expected = {"ar": not is_glat, "ctc": is_glat and model.config.use_ctc}.get(kind, is_glat and not model.config.use_ctc)
    if not expected:
        use_ctc = getattr(model.config, "use_ctc", None)
        raise ValueError(f"--{kind}_model {path} holds a {type(model).__name__} (use_ctc={use_ctc}), not a {kind} model.")
    return model


def size_overrides(config) -> str:
    return ",".join(f"{name}={getattr(config, name)}" for name in SIZE_FIELDS)


def build_models(args, tokenizer, folders: dict, mean_target_length: int) -> Models:
    """Load the given folders; build the others at random with train.py's build_model (same sizes, same tokenizer)."""
    loaded = {kind: load_folder(path, kind) for kind, path in folders.items() if path}
    for kind, model in loaded.items():
        if model.get_input_embeddings().weight.shape[0] != len(tokenizer):
            raise ValueError(f"--{kind}_model has another vocabulary than the tokenizer ({len(tokenizer)} tokens).")
    overrides = ",".join(filter(None, [size_overrides(next(iter(loaded.values())).config) if loaded else None,
                                       args.config_overrides]))  # fmt: skip
    data_args = DataTrainingArguments(source_lang=args.source_lang, target_lang=args.target_lang)
    torch.manual_seed(args.seed)

    def random(kind):
        model_args = ModelArguments(model_type="ar" if kind == "ar" else "glat", preset=args.preset,
                                    config_overrides=overrides or None, use_ctc=kind == "ctc")  # fmt: skip
        model = build_model(model_args, data_args, tokenizer)
        if kind == "glat":  # predict the mean reference length for every sentence (see the module docstring)
            with torch.no_grad():
                model.length_head.weight.zero_()
                classes = torch.arange(model.length_head.bias.numel(), dtype=torch.float32)
                # an offset head's classes are target - source lengths: there, predict "as long as the source"
                centre = model.config.max_position_embeddings - 1 if model.config.predict_length_offset else mean_target_length
                model.length_head.bias.copy_(-(classes - centre).abs())
        return model

    models = {kind: loaded.get(kind) or random(kind) for kind in ("glat", "ctc", "ar")}
    models["nat"] = loaded.get("nat")
    for model in models.values():
        if model is not None:
            model.to(args.device).eval()
    return Models(**models, trained=set(loaded))


def quantized(models: Models) -> Models:
    """int8 dynamic quantisation of every nn.Linear (weights int8, activations quantised on the fly; CPU)."""
    def convert(model):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice (torchao is the successor)
            return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)

    return Models(*(None if m is None else convert(m) for m in (models.glat, models.ctc, models.ar, models.nat)),
                  trained=models.trained)  # fmt: skip


def bfloat16(models: Models) -> Models:
    """Every model in bfloat16: half the bytes of fp32 to stream per decoder pass, and bf16 matrix units where the
    hardware has them. GLAT's length choice and the rankings are computed from the same bf16 logits."""
    return Models(*(None if m is None else copy.deepcopy(m).to(torch.bfloat16)
                    for m in (models.glat, models.ctc, models.ar, models.nat)), trained=models.trained)  # fmt: skip


def compiled(models: Models, device: str) -> Models:
    """torch.compile GLAT's encoder and decoder stacks (dynamic shapes; on CPU with inductor's freezing, which
    prepacks the weights for oneDNN). The AR model stays eager: transformers' generate grows its key/value cache
    every step, which recompiles until dynamo gives up, so its rows in this variant time eager AR again. (Its static
    cache with a CompileConfig, transformers' own compiled path, was no faster than eager AR on the 2-core CPU, and
    failed under inductor's freezing with an index error.)"""
    import torch._inductor.config as inductor_config

    if device == "cpu":
        inductor_config.freezing = True

    def convert(model):
        if model is None:
            return None
        model = copy.deepcopy(model)
        model.model.encoder = torch.compile(model.model.encoder, dynamic=True)
        model.model.decoder = torch.compile(model.model.decoder, dynamic=True)
        return model

    return Models(convert(models.glat), convert(models.ctc), models.ar, convert(models.nat), trained=models.trained)


# -------------------------------------------------------------------------------------------- systems
@dataclass
class System:
    name: str
    family: str  # which model decodes: ar, glat, ctc or nat
    kwargs: dict
    uses: tuple  # the models whose training decides whether BLEU means anything


def systems(models: Models) -> list[System]:
    rows = [
        System(AR_GREEDY, "ar", {"num_beams": 1}, ("ar",)),
        System(AR_BEAM, "ar", {"num_beams": 4}, ("ar",)),
        System("GLAT", "glat", {}, ("glat",)),
        System("GLAT NPD m=3", "glat", {"length_beam_size": 3}, ("glat",)),
        System("GLAT NPD m=7", "glat", {"length_beam_size": 7}, ("glat",)),
        System("GLAT NPD m=3 + AR rerank", "glat", {"length_beam_size": 3, "reranker": "ar"}, ("glat", "ar")),
        System("GLAT NPD m=7 + AR rerank", "glat", {"length_beam_size": 7, "reranker": "ar"}, ("glat", "ar")),
        System("GLAT+CTC", "ctc", {}, ("ctc",)),
        System("GLAT Mask-Predict 4 it.", "glat", {"num_iterations": 4}, ("glat",)),
        System("GLAT Mask-Predict 10 it.", "glat", {"num_iterations": 10}, ("glat",)),
    ]
    if models.nat is not None:
        rows.append(System("NAT", "nat", {}, ("nat",)))
    return rows


def decoder_fn(system: System, models: Models):
    """A function Batch -> generated ids for one system."""
    model = getattr(models, system.family)
    if system.family == "ar":
        random_ar = "ar" not in models.trained

        def decode(batch: Batch):
            # A random AR model generates exactly the batch's longest reference length (module docstring).
            lengths = dict(min_new_tokens=batch.target_length, max_new_tokens=batch.target_length) if random_ar else {}
            return model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, do_sample=False,
                                  **lengths, **system.kwargs)  # fmt: skip

        return decode
    kwargs = dict(system.kwargs)
    if "reranker" in kwargs:
        kwargs["reranker"] = getattr(models, kwargs["reranker"])

    def decode(batch: Batch):
        return model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kwargs)

    return decode


def slug(name: str) -> str:
    """A file name for a system: "GLAT NPD m=7 + AR rerank" -> "glat_npd_m7_ar_rerank"."""
    return "_".join("".join(c if c.isalnum() else " " for c in name.lower().replace("=", "")).split())


# ------------------------------------------------------------------------------------- time and memory
def synchronize(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_pass(decode, batches: list[Batch], device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            decode(batch)
    synchronize(device)
    return time.perf_counter() - start


class CpuMemory:
    """Peak resident memory of the process over a block, minus the resident memory before it (Linux; see docstring).

    glibc's malloc_trim(0) first hands every free heap page back to the system, so that memory the
    block reuses from earlier allocations is counted again when it is touched; then VmHWM is reset
    through /proc/self/clear_refs. Elsewhere: the growth of ru_maxrss, which only sees a new peak.
    """

    def __init__(self):
        self.exact = os.path.exists("/proc/self/clear_refs")
        try:
            self.malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            self.malloc_trim = None

    @staticmethod
    def _status(field_name: str) -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"no {field_name} in /proc/self/status")

    def __enter__(self):
        if self.malloc_trim is not None:
            self.malloc_trim(0)
        if self.exact:
            try:
                with open("/proc/self/clear_refs", "w") as refs:
                    refs.write("5")  # reset VmHWM to the current RSS
                self.before = self._status("VmRSS")
                return self
            except OSError:
                self.exact = False
        self.before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(self, *exc):
        peak = self._status("VmHWM") if self.exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.peak_mb = max(peak - self.before, 0) / 2**20


def peak_memory(decode, batches: list[Batch], device: str, cpu_memory: CpuMemory) -> tuple[float, list[torch.Tensor]]:
    """(peak MiB, outputs) of one untimed pass over `batches` (what peak_mem_mb measures: module docstring)."""
    outputs = []
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        with torch.inference_mode():
            outputs = [decode(batch) for batch in batches]
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20, [ids.cpu() for ids in outputs]
    with cpu_memory, torch.inference_mode():
        outputs = [decode(batch) for batch in batches]
    return cpu_memory.peak_mb, outputs


# ------------------------------------------------------------------------------------------- decoding
def benchmark_decoding(args, variants, tokenizer, sources, references, target_lengths, max_source) -> list[dict]:
    device = args.device
    order = sorted(range(len(sources)), key=lambda i: -len(tokenizer(sources[i])["input_ids"]))
    batched = make_batches(tokenizer, sources, order, args.batch_size, target_lengths, max_source, device)
    single = make_batches(tokenizer, sources, list(range(args.latency_sentences)), 1, target_lengths, max_source, device)
    warm = single[: args.warmup] + batched[:1]
    memory_single = single[: min(len(single), 10)]
    buckets = [int(x) for x in args.length_buckets.split(",")]
    special_ids = set(tokenizer.all_special_ids)
    cpu_memory = CpuMemory()
    if args.predictions:
        Path(args.predictions).mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads() if device == "cpu" else None

    runs = []  # (variant, system, decode)
    for variant, models in variants:
        runs += [(variant, system, decoder_fn(system, models), models) for system in systems(models)]

    # Untimed: warm-up, peak memory, and the outputs for BLEU.
    rows = {}
    for variant, system, decode, models in runs:
        print(f"  [{variant}] {system.name}: warm-up, memory, outputs", flush=True)
        timed_pass(decode, warm, device)
        mem_single, _ = peak_memory(decode, memory_single, device, cpu_memory)
        mem_batched, outputs = peak_memory(decode, batched, device, cpu_memory)
        quality = {"trained": all(kind in models.trained for kind in system.uses), "bleu": None,
                   "repetition_ratio": None, "bleu_by_length": None}  # fmt: skip
        hypotheses, tokens = [""] * len(sources), [[]] * len(sources)  # back in the order of the sentences
        for batch, ids in zip(batched, outputs):
            for index, text, row in zip(batch.indices, decode_ids(tokenizer, ids.cpu()), ids.cpu().tolist()):
                hypotheses[index] = text
                tokens[index] = [t for t in row if t not in special_ids]
        if args.predictions:
            path = Path(args.predictions) / f"{slug(system.name)}.{variant}.txt"
            path.write_text("".join(text.replace("\n", " ") + "\n" for text in hypotheses), encoding="utf-8")
        if quality["trained"]:
            quality.update(
                bleu=corpus_bleu(hypotheses, references)["score"],
                repetition_ratio=repetition_ratio(tokens),
                bleu_by_length=bleu_by_length(sources, hypotheses, references, buckets),
            )
        base = dict(kind="decode", system=system.name, variant=variant, device=device, threads=threads)
        rows[(variant, system.name, 1)] = dict(base, batch_size=1, num_sentences=len(single), peak_mem_mb=mem_single,
                                               output_tokens=mean_length(tokens[: len(single)]), **quality)  # fmt: skip
        rows[(variant, system.name, args.batch_size)] = dict(
            base, batch_size=args.batch_size, num_sentences=len(sources), num_batches=len(batched), peak_mem_mb=mem_batched,
            output_tokens=mean_length(tokens), **quality,
        )  # fmt: skip

    # Timed: the systems take turns batch by batch (sentence by sentence at batch size 1), so that the slow spells
    # of a shared machine, which last seconds, fall on every system alike.
    for variant, system, decode, _ in runs:
        timed_pass(decode, warm, device)
    times = {key: [] for key in rows}
    for repeat in range(args.repeats):
        print(f"  timing, repeat {repeat + 1}/{args.repeats}", flush=True)
        for batch_size, batches in ((1, single), (args.batch_size, batched)):
            totals = [0.0] * len(runs)
            for batch in batches:
                for index, (_, _, decode, _) in enumerate(runs):
                    totals[index] += timed_pass(decode, [batch], device)
            for (variant, system, _, _), total in zip(runs, totals):
                times[(variant, system.name, batch_size)].append(total)
    for key, row in rows.items():
        seconds = statistics.median(times[key])
        batches = len(single) if row["batch_size"] == 1 else len(batched)
        row.update(latency_ms=1000 * seconds / batches, sentences_per_s=row["num_sentences"] / seconds,
                   latency_runs_ms=[1000 * t / batches for t in times[key]])  # fmt: skip
    for (variant, _, batch_size), row in rows.items():
        for field_name, baseline in (("speedup_vs_ar_greedy", AR_GREEDY), ("speedup_vs_ar_beam", AR_BEAM)):
            row[field_name] = rows[(variant, baseline, batch_size)]["latency_ms"] / row["latency_ms"]
    return list(rows.values())


def mean_length(token_lists: list[list[int]]) -> float:
    """Mean tokens per translation: what the AR model pays one decoder step for, and GLAT does not."""
    return sum(map(len, token_lists)) / len(token_lists)


# -------------------------------------------------------------------------------------- training cost
def benchmark_training(args, models: Models, tokenizer, train_sources, train_targets, max_source) -> list[dict]:
    """Tokens/s of a GLAT step (two passes), a NAT step and an AR step on one batch of real sentence pairs."""
    device = args.device
    encoded = tokenizer(train_sources, return_tensors="pt", padding=True, truncation=True, max_length=max_source)
    max_target = min(models.glat.config.max_target_length, models.glat.config.max_position_embeddings)
    labels = tokenizer(text_target=train_targets, return_tensors="pt", padding=True, truncation=True,
                       max_length=max_target)["input_ids"]  # fmt: skip
    labels = labels.masked_fill(labels == tokenizer.pad_token_id, -100)
    batch = dict(input_ids=encoded["input_ids"].to(device), attention_mask=encoded["attention_mask"].to(device),
                 labels=labels.to(device))  # fmt: skip
    target_tokens = int((labels != -100).sum())
    with tempfile.TemporaryDirectory() as scratch:
        training_args = GlatTrainingArguments(output_dir=scratch, report_to="none", use_cpu=device == "cpu")
    glat = copy.deepcopy(models.glat).train()
    policy = GlancingPolicy(training_args, glat.config)  # λ = 0.5, the start of the paper's schedule
    steps = {
        "GLAT training step (2 passes)": (glat, dict(glance_fn=policy, same_dropout=True)),
        "NAT training step": (copy.deepcopy(models.glat).train(), {}),
        "AR training step": (copy.deepcopy(models.ar).train(), {}),
    }
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, (model, _) in steps.items()}

    def step(name):
        model, extra = steps[name]
        optimizers[name].zero_grad(set_to_none=True)
        model(**batch, **extra).loss.backward()
        optimizers[name].step()

    times = {name: [] for name in steps}
    for index in range(args.warmup + args.train_steps):  # the three take turns
        for name in steps:
            synchronize(device)
            start = time.perf_counter()
            step(name)
            synchronize(device)
            if index >= args.warmup:
                times[name].append(time.perf_counter() - start)
    nat = statistics.median(times["NAT training step"])
    rows = []
    for name, values in times.items():
        seconds = statistics.median(values)
        rows.append(dict(kind="train", system=name, variant="fp32", device=device, batch_size=len(train_sources),
                         target_tokens=target_tokens, step_ms=1000 * seconds, tokens_per_s=target_tokens / seconds,
                         ratio_vs_nat=seconds / nat, step_runs_ms=[1000 * t for t in values]))  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------------- report
def print_tables(rows: list[dict], args, header: str):
    decode = [row for row in rows if row["kind"] == "decode"]
    by_system = {}
    for row in decode:
        by_system.setdefault((row["variant"], row["system"]), {})[row["batch_size"]] = row
    big = args.batch_size
    lines = [header, ""]
    title = (f"{'system':<28} {'variant':<7} | {'b=1 ms':>8} {'xgreedy':>7} {'xbeam4':>7} | {f'b={big} sent/s':>12} "
             f"{'xgreedy':>7} {'xbeam4':>7} | {'mem MB b1/b' + str(big):>16} | {'tokens':>6} {'BLEU':>6} {'rep %':>6}")  # fmt: skip
    lines += [title, "-" * len(title)]
    for (variant, name), sizes in by_system.items():
        one, many = sizes[1], sizes[big]
        bleu = "-" if one["bleu"] is None else f"{one['bleu']:.2f}"
        rep = "-" if one["repetition_ratio"] is None else f"{100 * one['repetition_ratio']:.2f}"
        memory = f"{one['peak_mem_mb']:.0f}/{many['peak_mem_mb']:.0f}"
        lines.append(
            f"{name:<28} {variant:<7} | {one['latency_ms']:8.2f} {one['speedup_vs_ar_greedy']:7.2f} "
            f"{one['speedup_vs_ar_beam']:7.2f} | {many['sentences_per_s']:12.1f} {many['speedup_vs_ar_greedy']:7.2f} "
            f"{many['speedup_vs_ar_beam']:7.2f} | {memory:>16} | {many['output_tokens']:6.1f} {bleu:>6} {rep:>6}"
        )
    train = [row for row in rows if row["kind"] == "train"]
    if train:
        lines += ["", f"Training cost: one step (forward, backward, AdamW) on {train[0]['batch_size']} sentence pairs, "
                      f"{train[0]['target_tokens']} target tokens", ""]  # fmt: skip
        lines.append(f"{'step':<30} | {'ms/step':>9} {'tokens/s':>10} {'x NAT':>7}")
        for row in train:
            lines.append(f"{row['system']:<30} | {row['step_ms']:9.1f} {row['tokens_per_s']:10.0f} {row['ratio_vs_nat']:7.2f}")
    print("\n".join(lines), flush=True)


def write_figures(rows: list[dict], folder: str, batch_size: int) -> list[Path]:
    """speedup.png (always); with BLEU: bleu_vs_speedup.png (paper Figure 3), bleu_by_length.png (Figure 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    decode = [row for row in rows if row["kind"] == "decode"]
    labels = list(dict.fromkeys(f"{row['system']} [{row['variant']}]" for row in decode))
    written = []

    def speedup(label, size):
        return next(r["speedup_vs_ar_greedy"] for r in decode
                    if f"{r['system']} [{r['variant']}]" == label and r["batch_size"] == size)  # fmt: skip

    fig, ax = plt.subplots(figsize=(8, 0.35 * len(labels) + 1.5))
    positions = range(len(labels))
    for offset, size in ((-0.2, 1), (0.2, batch_size)):
        ax.barh([p + offset for p in positions], [speedup(label, size) for label in labels], height=0.4,
                label=f"batch size {size}")  # fmt: skip
    ax.set_yticks(list(positions), labels)
    ax.invert_yaxis()
    ax.axvline(1.0, color="gray", linewidth=0.8)
    ax.set_xlabel("speed-up over AR greedy (same batch size)")
    ax.legend()
    fig.tight_layout()
    written.append(folder / "speedup.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    with_bleu = [row for row in decode if row["bleu"] is not None]
    if with_bleu:
        # One colour per system, one marker per variant; names written once, at the first variant (fp32).
        system_names = list(dict.fromkeys(row["system"] for row in with_bleu))
        variant_names = list(dict.fromkeys(row["variant"] for row in with_bleu))
        colours = plt.get_cmap("tab20")
        fig, ax = plt.subplots(figsize=(8, 5.5))
        for row in (r for r in with_bleu if r["batch_size"] == 1):
            ax.scatter(row["speedup_vs_ar_greedy"], row["bleu"], color=colours(system_names.index(row["system"]) % 20),
                       marker="osD^v"[variant_names.index(row["variant"]) % 5], s=30)  # fmt: skip
            if row["variant"] == variant_names[0]:
                ax.annotate(row["system"], (row["speedup_vs_ar_greedy"], row["bleu"]), fontsize=7, xytext=(4, 3),
                            textcoords="offset points")  # fmt: skip
        for index, variant in enumerate(variant_names):
            ax.scatter([], [], color="gray", marker="osD^v"[index % 5], label=variant)
        ax.legend(title="variant", fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
        ax.xaxis.set_minor_formatter(FuncFormatter(
            lambda value, _: f"{value:g}x" if round(value / 10 ** math.floor(math.log10(value))) in (2, 5) else ""))
        ax.set_xlabel("speed-up over AR greedy, batch size 1 (log scale)")
        ax.set_ylabel("BLEU")
        ax.set_title("BLEU against speed-up (paper Figure 3)")
        fig.tight_layout()
        written.append(folder / "bleu_vs_speedup.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(7, 5))
        for row in (r for r in with_bleu if r["batch_size"] == 1 and r["variant"] == variant_names[0]):
            buckets = row["bleu_by_length"]
            points = [(i, b["bleu"]) for i, b in enumerate(buckets) if b["bleu"] is not None]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=row["system"])
        names = [f"{b['bucket']}\n({b['count']})" for b in with_bleu[0]["bleu_by_length"]]
        ax.set_xticks(range(len(names)), names)
        ax.set_xlabel("source length in words (sentences)")
        ax.set_ylabel("BLEU")
        ax.set_title("BLEU by source length (paper Figure 4)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(folder / "bleu_by_length.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written


def profile_generate(models: Models, single: list[Batch], batched: list[Batch], device: str):
    """torch.profiler tables of GLAT generate at batch size 1 (10 sentences) and on the first batch."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    sort = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    for name, batches in (("batch size 1", single[:10]), (f"batch size {batched[0].input_ids.shape[0]}", batched[:1])):
        with torch.inference_mode():
            for batch in batches[:2]:
                models.glat.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            with profile(activities=activities) as prof:
                for batch in batches:
                    models.glat.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
                synchronize(device)
        print(f"\nProfile of GLAT generate, {name}:\n{prof.key_averages().table(sort_by=sort, row_limit=15)}", flush=True)


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    hf_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    folder = Path(args.data_folder) if args.data_folder else data_dir() / "multi30k"
    sources, references = sentences(folder, args.split, args.source_lang, args.target_lang, args.num_sentences)
    folders = {"glat": args.glat_model, "ctc": args.ctc_model, "ar": args.ar_model, "nat": args.nat_model}
    tokenizer_folder = args.tokenizer or next(
        (path for path in folders.values() if path and (Path(path) / "tokenizer.json").is_file()), None
    )
    train_sources = train_targets = []
    if not (tokenizer_folder and args.no_training_cost):  # the training split is needed
        count = args.train_batch_size if tokenizer_folder else args.tokenizer_pairs  # None: all of it
        train_sources, train_targets = sentences(folder, args.train_split, args.source_lang, args.target_lang,
                                                 None if count is None else max(count, args.train_batch_size))  # fmt: skip
    if tokenizer_folder:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    else:
        tokenizer = train_tokenizer(chain(train_sources, train_targets), vocab_size=args.vocab_size)
    train_sources, train_targets = train_sources[: args.train_batch_size], train_targets[: args.train_batch_size]
    target_lengths = [len(ids) for ids in tokenizer(text_target=references)["input_ids"]]
    mean_target_length = round(sum(target_lengths) / len(target_lengths))
    base = build_models(args, tokenizer, folders, mean_target_length)
    glat_family = [m for m in (base.glat, base.ctc, base.nat) if m is not None]
    max_source = min(min(m.config.max_position_embeddings - 1 for m in glat_family),
                     base.ctc.config.max_position_embeddings // base.ctc.config.upsample_ratio,
                     getattr(base.ar.config, "max_position_embeddings", 10**6))  # fmt: skip

    variants = [("fp32", base)]
    if args.int8:
        variants.append(("int8", quantized(base)))
    if args.bf16:
        variants.append(("bf16", bfloat16(base)))
    if args.compile:
        variants.append(("compile", compiled(base, args.device)))

    glat_params = sum(p.numel() for p in base.glat.parameters()) / 1e6
    ar_params = sum(p.numel() for p in base.ar.parameters()) / 1e6
    trained = ", ".join(sorted(base.trained)) or "none (random models: speed only)"
    header = (
        f"Decoding {len(sources)} sentences of {args.split} ({args.source_lang}->{args.target_lang}), batch size 1 on the "
        f"first {args.latency_sentences}; device {args.device}"
        + (f" ({torch.get_num_threads()} torch threads)" if args.device == "cpu" else "")
        + f"; GLAT {glat_params:.1f}M / AR {ar_params:.1f}M parameters, vocabulary {len(tokenizer)}; trained: {trained}; "
        f"median of {args.repeats} timed pass(es); torch {torch.__version__}"
    )
    print(header, flush=True)

    if args.profile:
        order = sorted(range(len(sources)), key=lambda i: -len(tokenizer(sources[i])["input_ids"]))
        profile_generate(
            base,
            make_batches(tokenizer, sources, list(range(args.latency_sentences)), 1, target_lengths, max_source, args.device),
            make_batches(tokenizer, sources, order, args.batch_size, target_lengths, max_source, args.device),
            args.device,
        )

    rows = benchmark_decoding(args, variants, tokenizer, sources, references, target_lengths, max_source)
    if not args.no_training_cost:
        print("  training cost", flush=True)
        rows += benchmark_training(args, base, tokenizer, train_sources, train_targets, max_source)

    print()
    print_tables(rows, args, header)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(rows, indent=2))
        print(f"\nRows written to {args.output}")
    if args.figures:
        for path in write_figures(rows, args.figures, args.batch_size):
            print(f"Figure written to {path}")
    print(f"Benchmark took {time.perf_counter() - started:.0f} s")
    return rows


if __name__ == "__main__":
    main()
