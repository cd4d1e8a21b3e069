#!/usr/bin/env python
"""Decoding speed and quality of GLAT against the autoregressive baseline, and the cost of a training step.

    python training/benchmark.py --quick --output bench.json     # < 1 min on 2 CPU cores: small random models
    python training/benchmark.py --glat_model DIR --ctc_model DIR --ar_model DIR [--nat_model DIR] --output bench.json
    python training/benchmark_report.py bench.json --figures figures    # the tables and figures of those rows

Systems: AR greedy and beam 4, GLAT, GLAT + NPD (m = 3, 7; ranked by GLAT or by AR), GLAT+CTC, Mask-Predict (4, 10
iterations; 4 on each NPD m = 7 candidate, then AR rerank), NAT (--nat_model), at batch size 1 and --batch_size,
taking turns. No folders: random models of --preset, speed only. --int8 / --bf16 / --compile add variants,
--ctranslate2 CTranslate2's AR rows, --onnxruntime GLAT's rows on ONNX Runtime (fp32, int8). Method: README, "Speed".
"""

import argparse
import ast
import copy
import json
import statistics
import time
import warnings
from dataclasses import dataclass
from functools import partial
from itertools import chain
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from glat_hf import GlatConfig, GlatForConditionalGeneration, GlatTrainingArguments, train_tokenizer
from glat_hf.baseline import marian_baseline, marian_baseline_config
from glat_hf.configuration_glat import PRESETS, preset_sizes
from glat_hf.data import column, load_multi30k
from glat_hf.measurement import CpuMemory, timed
from glat_hf.metrics import bleu_by_length, corpus_bleu, repetition_ratio
from glat_hf.trainer import GlancingPolicy
from glat_hf.translation import check_vocabulary, max_source_tokens, resolve_device, translate

SIZE_FIELDS = tuple(preset_sizes("multi30k"))  # d_model, layers, heads, ffn_dim, dropout: what random models copy
QUICK_SIZES = dict(d_model=64, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=128, decoder_ffn_dim=128)
QUICK_SIZES.update(encoder_attention_heads=2, decoder_attention_heads=2)  # the random models of --quick
LIMITS = dict(max_position_embeddings=256, max_target_length=128)  # of random models: train.py's defaults
QUICK_DEFAULTS = dict(num_sentences=64, latency_sentences=8, repeats=1, warmup=1, train_steps=2, train_batch_size=16)
QUICK_DEFAULTS.update(vocab_size=1000, tokenizer_pairs=3000)
AR_GREEDY, AR_BEAM = "AR greedy", "AR beam 4"
SYSTEMS = [  # name, the model that decodes, generate arguments ("reranker": the model that ranks)
    (AR_GREEDY, "ar", {"num_beams": 1, "do_sample": False}),
    (AR_BEAM, "ar", {"num_beams": 4, "do_sample": False}),
    ("GLAT", "glat", {}),
    ("GLAT NPD m=3", "glat", {"length_beam_size": 3}),  # ranked as the model's generation config says
    ("GLAT NPD m=7", "glat", {"length_beam_size": 7}),
    ("GLAT NPD m=3 + AR rerank", "glat", {"length_beam_size": 3, "reranker": "ar"}),
    ("GLAT NPD m=7 + AR rerank", "glat", {"length_beam_size": 7, "reranker": "ar"}),
    ("GLAT+CTC", "ctc", {}),
    ("GLAT Mask-Predict 4 it.", "glat", {"num_iterations": 4}),
    ("GLAT Mask-Predict 10 it.", "glat", {"num_iterations": 10}),
    ("GLAT NPD m=7 + 4 it. + AR rerank", "glat", {"length_beam_size": 7, "reranker": "ar", "num_iterations": 4}),
    ("NAT", "nat", {}),  # with --nat_model
]


# ------------------------------------------------------------------------------------------ arguments
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    models = parser.add_argument_group("models (a folder = a trained model; none = random models of --preset)")
    models.add_argument("--glat_model", help="A trained GLAT folder.")
    models.add_argument("--ctc_model", help="A trained GLAT+CTC folder.")
    models.add_argument("--ar_model", help="A trained MarianMTModel folder: the AR baseline and the NPD reranker.")
    models.add_argument("--nat_model", help="A trained NAT-base folder (adds the NAT row: repetition comparison).")
    models.add_argument("--tokenizer", help="Tokenizer folder (default: a model's, else a BPE of --train_split).")
    models.add_argument("--preset", default="multi30k", choices=sorted(PRESETS), help="Sizes of random models.")
    models.add_argument("--config_overrides", help='Sizes of random models, e.g. "d_model=128,encoder_layers=2".')
    models.add_argument("--vocab_size", type=int, default=8000, help="BPE vocabulary of random models (quick 1000).")
    models.add_argument("--seed", type=int, default=0)
    data = parser.add_argument_group("data")
    data.add_argument("--data_folder", help="Folder of {split}.{lang}[.gz] files (default: Multi30k).")
    data.add_argument("--split", default="test_2016_flickr", help="Sentences to decode.")
    data.add_argument("--train_split", default="train", help="Pairs for the training-cost batch and the tokenizer.")
    data.add_argument("--source_lang", default="en")
    data.add_argument("--target_lang", default="de")
    data.add_argument("--num_sentences", type=int, default=1000, help="Sentences decoded in batches (quick 64).")
    data.add_argument("--latency_sentences", type=int, default=100, help="The first N at batch size 1 (quick 8).")
    data.add_argument("--length_buckets", default="5,10,15,20,25", help="Source-length buckets of BLEU by length.")
    timing = parser.add_argument_group("timing")
    timing.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto.")
    timing.add_argument("--batch_size", type=int, default=64, help="Batch size of the throughput measurement.")
    timing.add_argument("--repeats", type=int, default=3, help="Timed passes per system (quick 1).")
    timing.add_argument("--warmup", type=int, default=2, help="Warm-up sentences at batch size 1 (quick 1).")
    timing.add_argument("--turn_sentences", type=int, default=50, help="Sentences a system decodes in one turn.")
    timing.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice).")
    timing.add_argument("--engine_threads", help='Each engine at its best, e.g. "ctranslate2=1,onnxruntime=2".')
    timing.add_argument("--int8", action="store_true", help="CPU: add an int8 variant (dynamic quantisation).")
    timing.add_argument("--bf16", action="store_true", help="Add a bfloat16 variant (AVX512-BF16 or AMX CPUs, GPUs).")
    timing.add_argument("--compile", action="store_true", help="Add a variant with GLAT's stacks under torch.compile.")
    timing.add_argument("--ctranslate2", action="store_true", help="Add CTranslate2's AR rows (extra bench).")
    timing.add_argument("--onnxruntime", action="store_true", help="Add GLAT's rows on ONNX Runtime (extra onnx).")
    timing.add_argument("--no_training_cost", action="store_true", help="Skip the training-step measurement.")
    timing.add_argument("--train_steps", type=int, default=5, help="Timed training steps of each model (quick 2).")
    timing.add_argument("--train_batch_size", type=int, default=64, help="Pairs of the training batch (quick 16).")
    out = parser.add_argument_group("output")
    out.add_argument("--output", help="Write the rows as a JSON list to this file (benchmark_report.py reads it).")
    out.add_argument("--predictions", help="Write the translations BLEU scores to FOLDER/<system>.<variant>.txt.")
    parser.add_argument("--quick", action="store_true", help="Small random models, 64 sentences: < 1 min on CPU.")
    parser.add_argument("--tokenizer_pairs", type=int, help=argparse.SUPPRESS)  # pairs to train a tokenizer on
    if parser.parse_args(argv).quick:  # --quick changes the defaults; flags given still win
        parser.set_defaults(**QUICK_DEFAULTS)
    args = parser.parse_args(argv)
    args.latency_sentences = min(args.latency_sentences, args.num_sentences)
    try:
        args.device = resolve_device(args.device)
        args.overrides = config_fields(args.config_overrides)
        args.engine_threads = config_fields(args.engine_threads, "--engine_threads")
    except ValueError as error:
        parser.error(str(error))
    for engine, count in args.engine_threads.items():
        if engine not in ("ctranslate2", "onnxruntime") or not isinstance(count, int) or count < 1:
            parser.error(f"--engine_threads: {engine}={count} is not ctranslate2=N or onnxruntime=N with N >= 1")
    if (args.int8 or args.onnxruntime) and args.device.type != "cpu":
        parser.error("--int8 (dynamic quantisation) and --onnxruntime run on CPU only.")
    counts = ("num_sentences", "latency_sentences", "batch_size", "repeats", "turn_sentences")
    for name in (*counts, "train_steps", "train_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1.")
    return args


def config_fields(text: str | None, flag: str = "--config_overrides") -> dict:
    """ "d_model=128,dropout=0.3" as {"d_model": 128, "dropout": 0.3}: Python literals as such, others as text."""
    fields = {}
    for item in filter(None, (text or "").split(",")):
        name, equals, value = item.partition("=")
        if not equals:
            raise ValueError(f"{flag}: {item!r} is not name=value")
        try:
            fields[name.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            fields[name.strip()] = value.strip()
    return fields


# ----------------------------------------------------------------------------------------------- data
def sentences(args, split: str, count: int | None) -> tuple[list[str], list[str]]:
    """The first `count` pairs of a split (all with None): --data_folder's, else Multi30k's (GLAT_DATA_DIR or Hub)."""
    pairs = load_multi30k([split], args.source_lang, args.target_lang, folder=args.data_folder)[split]
    pairs = pairs if count is None else pairs.select(range(min(count, len(pairs))))
    return list(column(pairs, args.source_lang)), list(column(pairs, args.target_lang))


@dataclass
class Batch:
    """Tokenized sentences on the device; `indices` into the sentence list; `target_length` for random AR models."""

    inputs: dict[str, torch.Tensor]  # input_ids, attention_mask
    indices: list[int]
    target_length: int


def tensors(tokenizer, texts: list[str], max_length: int, device, target=False) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask of `texts` (as labels with `target`), padded, cut to `max_length`, on `device`."""
    text = {"text_target" if target else "text": texts}
    encoded = tokenizer(**text, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
    return {name: encoded[name].to(device) for name in ("input_ids", "attention_mask")}


def make_batches(tokenizer, texts, order, batch_size, target_lengths, max_source, device) -> list[Batch]:
    """The sentences `order` names, cut into batches of `batch_size` in that order: what the timed passes decode."""
    chunks = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    inputs = [tensors(tokenizer, [texts[i] for i in chunk], max_source, device) for chunk in chunks]
    return [Batch(x, chunk, max(target_lengths[i] for i in chunk)) for x, chunk in zip(inputs, chunks)]


# --------------------------------------------------------------------------------------------- models
def load_folder(path: str, kind: str, tokenizer):
    model = AutoModelForSeq2SeqLM.from_pretrained(path)
    is_glat = isinstance(model, GlatForConditionalGeneration)
    if (kind == "ar") == is_glat or (is_glat and model.config.use_ctc != (kind == "ctc")):
        found = f"{type(model).__name__} (use_ctc={getattr(model.config, 'use_ctc', None)})"
        raise ValueError(f"--{kind}_model {path} holds a {found}, not a {kind} model.")
    check_vocabulary(model, tokenizer, f"--{kind}_model")
    return model


def build_models(args, tokenizer, folders: dict) -> dict[str, nn.Module]:
    """The models by kind (glat, ctc, ar, nat): the folders given, and random glat, ctc and ar models for the others,
    of the sizes of a loaded model (else of --preset)."""
    models = {kind: load_folder(path, kind, tokenizer) for kind, path in folders.items() if path}
    sizes = preset_sizes(args.preset)
    if models:
        sizes.update({name: getattr(next(iter(models.values())).config, name) for name in SIZE_FIELDS})
    elif args.quick:
        sizes.update(QUICK_SIZES)
    sizes.update(args.overrides)
    torch.manual_seed(args.seed)
    glat_fields = dict(sizes, **LIMITS, vocab_size=len(tokenizer), predict_length_offset=True)
    for kind in ("glat", "ctc"):
        if kind not in models:
            config = GlatConfig.from_preset(args.preset, **glat_fields, use_ctc=kind == "ctc")
            models[kind] = GlatForConditionalGeneration(config)
    if not args.glat_model:  # predict the offset 0, "as long as the source", for every sentence
        head = models["glat"].length_head  # its classes: the offsets -longest source .. 0 .. +max_target_length
        offsets = torch.arange(head.bias.numel()) - (head.bias.numel() - LIMITS["max_target_length"] - 1)
        with torch.no_grad():
            head.weight.zero_()
            head.bias.copy_(-offsets.abs())
    if "ar" not in models:
        config = marian_baseline_config(args.preset, tokenizer, LIMITS["max_position_embeddings"])
        config.update(sizes)
        models["ar"] = marian_baseline(config, LIMITS["max_target_length"])
    return {kind: model.to(args.device).eval() for kind, model in models.items()}


def variants(args, base: dict[str, nn.Module], tokenizer) -> list[tuple[str, dict[str, nn.Module]]]:
    """fp32, and the variants the flags ask for, each of its own copies of the models (README, "Speed")."""

    def converted(convert, kinds=("glat", "ctc", "ar", "nat")):
        return {kind: convert(copy.deepcopy(model)) if kind in kinds else model for kind, model in base.items()}

    def compiled(model):
        model.model.encoder = torch.compile(model.model.encoder, dynamic=True)
        model.model.decoder = torch.compile(model.model.decoder, dynamic=True)
        return model

    result = [("fp32", base)]
    if args.int8:
        quantize = torch.ao.quantization.quantize_dynamic
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice (torchao is the successor)
            result.append(("int8", converted(partial(quantize, qconfig_spec={nn.Linear}, dtype=torch.qint8))))
    if args.bf16:
        result.append(("bf16", converted(lambda model: model.to(torch.bfloat16))))
    if args.compile:  # the AR model stays eager: generate's growing cache recompiles until dynamo gives up
        import torch._inductor.config as inductor_config

        inductor_config.freezing = args.device.type == "cpu"  # prepacks the weights for oneDNN
        result.append(("compile", converted(compiled, kinds=("glat", "ctc", "nat"))))
    translators = {}  # the AR model only, converted (README, "Speed")
    if args.ctranslate2:
        from glat_hf.ctranslate2_baseline import converted_translators

        translators = converted_translators(base["ar"], tokenizer, engine_threads(args, "ctranslate2"))
        result += [(variant, {"ar": ct2}) for variant, ct2 in translators.items()]
    if args.onnxruntime:  # the GLAT models exported; CTranslate2's AR model of the variant reranks, else PyTorch's
        from glat_hf.onnx import exported_models

        threads = engine_threads(args, "onnxruntime")
        graphs = {kind: exported_models(model, threads) for kind, model in base.items() if kind != "ar"}
        for variant in ("fp32", "int8"):
            reranker = {"reranker": translators[variant]} if translators else {}
            result.append((variant, {kind: pair[variant] for kind, pair in graphs.items()} | reranker))
    return result


def engine_threads(args, engine: str) -> int | None:
    """An engine's intra-op threads on CPU: its --engine_threads, else torch's (--threads); None on a GPU."""
    return args.engine_threads.get(engine, torch.get_num_threads()) if args.device.type == "cpu" else None


@dataclass
class Run:
    """One system in one variant: the model that decodes, its generate arguments, whether BLEU means anything."""

    system: str
    variant: str
    model: nn.Module
    kwargs: dict
    trained: bool
    random_ar: bool  # generates exactly the batch's longest reference length (README, "Speed")
    engine: str  # what runs it: torch (GLAT's own code), transformers (generate), ctranslate2, onnxruntime

    def decode(self, batch: Batch) -> torch.Tensor:
        length = batch.target_length
        lengths = dict(min_new_tokens=length, max_new_tokens=length) if self.random_ar else {}
        return self.model.generate(**batch.inputs, **self.kwargs, **lengths)


def runs(variant: str, models: dict[str, nn.Module], trained: set[str], base: dict[str, nn.Module]) -> list[Run]:
    """The systems of SYSTEMS whose model is there, in one variant; `trained` names the models loaded from folders.
    The AR model that reranks: the variant's "reranker" (ONNX Runtime's: CTranslate2's), its "ar", else `base`'s."""
    result = []
    for name, kind, kwargs in SYSTEMS:
        if kind in models:
            model, uses_trained = models[kind], {kind, kwargs.get("reranker", kind)} <= trained
            reranker = models.get("reranker", models.get("ar", base["ar"]))  # SYSTEMS' rerankers are all "ar"
            kwargs = {key: reranker if key == "reranker" else value for key, value in kwargs.items()}
            engine = getattr(model, "engine", "transformers" if kind == "ar" else "torch")  # CTranslate2Translator's
            result.append(Run(name, variant, model, kwargs, uses_trained, kind == "ar" and not uses_trained, engine))
    return result


def slug(name: str) -> str:
    """A file name for a system: "GLAT NPD m=7 + AR rerank" -> "glat_npd_m7_ar_rerank"."""
    return "_".join("".join(c if c.isalnum() else " " for c in name.lower().replace("=", "")).split())


# ------------------------------------------------------------------------------------- time and memory
def timed_pass(decode, batches: list[Batch], device: torch.device) -> float:
    with torch.inference_mode():
        return timed(lambda: [decode(batch) for batch in batches], device)


def peak_memory(run: Run, batches: list[Batch], device, cpu_memory: CpuMemory) -> tuple[float, list[torch.Tensor]]:
    """(peak MiB, outputs on the CPU) of one untimed pass over `batches` (README, "Speed")."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        with torch.inference_mode():
            outputs = [run.decode(batch) for batch in batches]
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20, [ids.cpu() for ids in outputs]
    with cpu_memory, torch.inference_mode():
        outputs = [run.decode(batch) for batch in batches]
    return cpu_memory.peak_mb, outputs


# ------------------------------------------------------------------------------------------- decoding
def quality(args, run: Run, tokenizer, sources, references, tokens, max_source) -> dict:
    """BLEU of the library's batched translations, repetition of the batch pass's tokens: trained systems only."""
    if not run.trained:
        return dict(bleu=None, repetition_ratio=None, bleu_by_length=None)
    limit = dict(max_source_length=max_source)  # the sources cut as in the timed batches
    hypotheses = translate(run.model, tokenizer, sources, batch_size=args.batch_size, **limit, **run.kwargs)
    if args.predictions:
        engine = "" if run.engine in ("torch", "transformers") else f".{run.engine}"
        path = Path(args.predictions) / f"{slug(run.system)}.{run.variant}{engine}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(text + "\n" for text in hypotheses), encoding="utf-8")
    by_length = bleu_by_length(sources, hypotheses, references, [int(x) for x in args.length_buckets.split(",")])
    bleu = corpus_bleu(hypotheses, references)["score"]
    return dict(bleu=bleu, repetition_ratio=repetition_ratio(tokens), bleu_by_length=by_length)


def benchmark_decoding(args, all_runs, tokenizer, sources, references, single, batched, max_source) -> list[dict]:
    device, special_ids, rows = args.device, set(tokenizer.all_special_ids), {}
    warm, cpu_memory = single[: args.warmup] + batched[:1], CpuMemory()

    for run in all_runs:  # untimed: warm-up, peak memory, output lengths, quality
        print(f"  [{run.engine} {run.variant}] {run.system}: warm-up, memory, quality", flush=True)
        timed_pass(run.decode, warm, device)
        mem_single, _ = peak_memory(run, single[:10], device, cpu_memory)
        mem_batched, outputs = peak_memory(run, batched, device, cpu_memory)
        tokens = [[]] * len(sources)  # back in the order of the sentences
        for batch, ids in zip(batched, outputs):
            for index, row in zip(batch.indices, ids.tolist()):
                tokens[index] = [t for t in row if t not in special_ids]
        scores = dict(trained=run.trained, **quality(args, run, tokenizer, sources, references, tokens, max_source))
        base = dict(kind="decode", system=run.system, engine=run.engine, variant=run.variant, device=str(device))
        base.update(threads=engine_threads(args, run.engine), turn_sentences=args.turn_sentences)
        if "reranker" in run.kwargs:  # the AR model that ranks NPD's candidates
            base["reranker_engine"] = getattr(run.kwargs["reranker"], "engine", "transformers")
        elif "length_beam_size" in run.kwargs:  # NPD ranked by GLAT: its generation config's length prior
            base["length_prior_weight"] = getattr(run.model.generation_config, "length_prior_weight", 0.0)
        one = dict(batch_size=1, num_sentences=len(single), peak_mem_mb=mem_single)
        many = dict(batch_size=args.batch_size, num_sentences=len(sources), num_batches=len(batched))
        for sizes in (one, dict(many, peak_mem_mb=mem_batched)):
            row_tokens = tokens[: sizes["num_sentences"]]  # what the AR model pays a decoder step for, GLAT not
            output_tokens = sum(map(len, row_tokens)) / len(row_tokens)
            key = (run.engine, run.variant, run.system, sizes["batch_size"])
            rows[key] = dict(base, **sizes, output_tokens=output_tokens, **scores)

    # Timed: the systems take turns every --turn_sentences sentences (at least one batch): a shared machine's slow
    # spells, which last seconds, fall on all alike, and each decodes a run of sentences back to back, as a deployed
    # one does: every switch of engines costs the next sentences a few ms (README, "How the benchmark works").
    for run in all_runs:
        timed_pass(run.decode, warm, device)
    times = {key: [] for key in rows}
    for repeat in range(args.repeats):
        print(f"  timing, repeat {repeat + 1}/{args.repeats}", flush=True)
        for batch_size, batches in ((1, single), (args.batch_size, batched)):
            totals, turn = [0.0] * len(all_runs), max(1, args.turn_sentences // batch_size)
            for start in range(0, len(batches), turn):
                for index, run in enumerate(all_runs):
                    totals[index] += timed_pass(run.decode, batches[start : start + turn], device)
            for run, total in zip(all_runs, totals):
                times[(run.engine, run.variant, run.system, batch_size)].append(total)
    for key, row in rows.items():
        seconds, batches = statistics.median(times[key]), len(single) if row["batch_size"] == 1 else len(batched)
        row.update(latency_ms=1000 * seconds / batches, sentences_per_s=row["num_sentences"] / seconds)
        row["latency_runs_ms"] = [1000 * t / batches for t in times[key]]
    for (_, variant, _, size), row in rows.items():  # without --int8, CTranslate2's int8 is held to transformers' fp32
        ar = variant if ("transformers", variant, AR_GREEDY, size) in rows else "fp32"
        for field_name, baseline in (("speedup_vs_ar_greedy", AR_GREEDY), ("speedup_vs_ar_beam", AR_BEAM)):
            row[field_name] = rows[("transformers", ar, baseline, size)]["latency_ms"] / row["latency_ms"]
        if ct2 := rows.get(("ctranslate2", "int8", AR_GREEDY, size)):
            row["speedup_vs_ct2_int8_greedy"] = ct2["latency_ms"] / row["latency_ms"]
    return list(rows.values())


# -------------------------------------------------------------------------------------- training cost
def benchmark_training(args, models, tokenizer, train_pairs, max_source) -> list[dict]:
    """Tokens/s of a GLAT step (two passes), a NAT and an AR step on one batch of pairs (fp32, --bf16, --compile)."""
    device = args.device
    train_sources, train_targets = (texts[: args.train_batch_size] for texts in train_pairs)
    batch = tensors(tokenizer, train_sources, max_source, device)
    labels = tensors(tokenizer, train_targets, models["glat"].config.max_target_length, device, target=True)
    batch["labels"] = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, -100)
    target_tokens = int(labels["attention_mask"].sum())
    training_args = GlatTrainingArguments(output_dir="unused", report_to="none", use_cpu=device.type == "cpu")
    glat = copy.deepcopy(models["glat"]).train()
    policy = GlancingPolicy(training_args, glat.config)  # λ = 0.5, the start of the paper's schedule
    steps = {
        "GLAT training step (2 passes)": (glat, dict(glance_fn=policy, same_dropout=True)),
        "NAT training step": (copy.deepcopy(models["glat"]).train(), {}),
        "AR training step": (copy.deepcopy(models["ar"]).train(), {}),
    }
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, (model, _) in steps.items()}
    compiled = {name: torch.compile(model) for name, (model, _) in steps.items()} if args.compile else {}

    def step(name, variant):
        model, extra = compiled[name] if variant == "compile" else steps[name][0], steps[name][1]
        optimizers[name].zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant == "bf16"):
            loss = model(**batch, **extra).loss
        loss.backward()
        optimizers[name].step()

    variants = ["fp32"] + ["bf16"] * args.bf16 + ["compile"] * args.compile
    times = {(name, variant): [] for variant in variants for name in steps}
    for _ in range(args.warmup + args.train_steps):  # all take turns
        for name, variant in times:
            times[name, variant].append(timed(partial(step, name, variant), device))
    rows = []
    for (name, variant), values in times.items():
        nat_key = ("NAT training step", variant)
        seconds, nat = (statistics.median(times[key][args.warmup :]) for key in ((name, variant), nat_key))
        base = dict(variant=variant, device=str(device), batch_size=len(train_sources), target_tokens=target_tokens)
        measured = dict(step_ms=1000 * seconds, tokens_per_s=target_tokens / seconds, ratio_vs_nat=seconds / nat)
        runs = [1000 * t for t in values[args.warmup :]]  # without the warm-up steps
        rows.append(dict(kind="train", system=name, **base, **measured, step_runs_ms=runs))
    return rows


def summary(row: dict) -> str:
    """One line of a row; benchmark_report.py prints the tables and draws the figures."""
    if row["kind"] == "train":
        speed = f"{row['tokens_per_s']:.0f} tokens/s, {row['ratio_vs_nat']:.2f} x NAT"
        return f"  [{row['variant']}] {row['system']}: {speed}"
    bleu = "" if row["bleu"] is None else f", BLEU {row['bleu']:.2f}"
    speed = f"{row['latency_ms']:.2f} ms, {row['speedup_vs_ar_greedy']:.2f} x AR greedy"
    return f"  [{row['engine']} {row['variant']}] {row['system']}, batch size {row['batch_size']}: {speed}{bleu}"


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    hf_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    sources, references = sentences(args, args.split, args.num_sentences)
    folders = {"glat": args.glat_model, "ctc": args.ctc_model, "ar": args.ar_model, "nat": args.nat_model}
    with_tokenizer = [path for path in folders.values() if path and (Path(path) / "tokenizer.json").is_file()]
    tokenizer_folder = args.tokenizer or next(iter(with_tokenizer), None)
    train_pairs = ([], [])
    if not (tokenizer_folder and args.no_training_cost):  # the training split is needed
        count = args.train_batch_size if tokenizer_folder else args.tokenizer_pairs  # None: all of it
        count = count and max(count, args.train_batch_size)
        train_pairs = sentences(args, args.train_split, count)
    if tokenizer_folder:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    else:
        tokenizer = train_tokenizer(chain(*train_pairs), vocab_size=args.vocab_size)
    base = build_models(args, tokenizer, folders)
    max_source = min(max_source_tokens(model, tokenizer) for model in base.values())

    # The batches of the timed passes: the first sentences one by one, and all of them sorted by length.
    target_lengths = [len(ids) for ids in tokenizer(text_target=references)["input_ids"]]
    order = sorted(range(len(sources)), key=lambda i: -len(tokenizer(sources[i])["input_ids"]))
    batch_args = (target_lengths, max_source, args.device)
    single = make_batches(tokenizer, sources, list(range(args.latency_sentences)), 1, *batch_args)
    batched = make_batches(tokenizer, sources, order, args.batch_size, *batch_args)

    trained = {kind for kind, path in folders.items() if path}
    millions = {kind: sum(p.numel() for p in base[kind].parameters()) / 1e6 for kind in ("glat", "ar")}
    threads = f" ({torch.get_num_threads()} torch threads)" if args.device.type == "cpu" else ""
    print(
        f"{len(sources)} sentences of {args.split} ({args.latency_sentences} at batch size 1), {args.repeats} timed "
        f"pass(es); {args.device}{threads}, torch {torch.__version__}; GLAT {millions['glat']:.1f}M / AR "
        f"{millions['ar']:.1f}M parameters; trained: {', '.join(sorted(trained)) or 'none (random: speed only)'}"
    )

    all_runs = [
        run for variant, models in variants(args, base, tokenizer) for run in runs(variant, models, trained, base)
    ]
    rows = benchmark_decoding(args, all_runs, tokenizer, sources, references, single, batched, max_source)
    if not args.no_training_cost:
        print("  training cost", flush=True)
        rows += benchmark_training(args, base, tokenizer, train_pairs, max_source)
    print("\n".join(map(summary, rows)))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(rows, indent=2))
        print(f"Rows written to {args.output}; tables and figures: python training/benchmark_report.py {args.output}")
    print(f"Benchmark took {time.perf_counter() - started:.0f} s")
    return rows


if __name__ == "__main__":
    main()
