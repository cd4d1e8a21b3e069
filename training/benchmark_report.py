#!/usr/bin/env python
"""Tables and figures of the rows that training/benchmark.py writes (its --output JSON).

    python training/benchmark_report.py results/benchmark_cpu.json                             # the tables
    python training/benchmark_report.py results/benchmark_cpu.json --figures results/figures   # and the figures

--figures writes speedup.png (speed-up over AR greedy at both batch sizes), speedup_vs_ct2.png (over CTranslate2's int8
AR greedy, with benchmark.py --ctranslate2) and, when the rows have BLEU (trained models), bleu_vs_speedup.png (paper
Figure 3) and bleu_by_length.png (Figure 4).
"""

import argparse
import json
import math
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

MARKERS = "osD^v"  # one a variant
CT2 = "speedup_vs_ct2_int8_greedy"  # with benchmark.py --ctranslate2
SYSTEM_WIDTH = 32  # the longest system name of benchmark.py, "GLAT NPD m=7 + 4 it. + AR rerank"


def engine(row: dict) -> str:
    """What ran the row; rows from before benchmark.py recorded it: transformers for AR, torch for GLAT."""
    return row.get("engine") or ("transformers" if row["system"].startswith("AR") else "torch")


def engines(row: dict) -> str:
    """The engine, and the reranker's where another engine's AR model reranks: "onnxruntime+ctranslate2"."""
    own, reranker = engine(row), row.get("reranker_engine")
    return own if reranker in (None, own) or (own, reranker) == ("torch", "transformers") else f"{own}+{reranker}"


def name(row: dict) -> str:
    """The system, with its engine where that is not its own (CTranslate2's AR, ONNX Runtime's GLAT)."""
    return row["system"] if engine(row) in ("torch", "transformers") else f"{row['system']} ({engine(row)})"


def decode_table(decode: list[dict]) -> list[str]:
    """One line a system, engine and variant: both batch sizes side by side, memory, length and quality."""
    by_system = {}
    for row in decode:
        by_system.setdefault((row["system"], engines(row), row["variant"]), {})[row["batch_size"]] = row
    big = max(row["batch_size"] for row in decode)
    single, batched = (next(row for row in decode if row["batch_size"] == size) for size in (1, big))
    threads = f" ({batched['threads']} threads)" if batched.get("threads") else ""
    sentences = f"batch size 1 on {single['num_sentences']} sentences, {big} on {batched['num_sentences']}"
    lines = [f"Decoding on {batched['device']}{threads}: {sentences}", ""]
    ct2 = CT2 in single  # xct2i8: the speed-up over CTranslate2's int8 AR greedy
    ratios = f"{'xgreedy':>7} {'xbeam4':>7}" + (f" {'xct2i8':>7}" if ct2 else "")
    title = (
        f"{'system':<{SYSTEM_WIDTH}} {'engine':<23} {'variant':<7} | {'b=1 ms':>8} {ratios} | "
        f"{f'b={big} sent/s':>12} {ratios} | {'mem MB b1/b' + str(big):>16} | {'tokens':>6} {'BLEU':>6} {'rep %':>6}"
    )
    lines += [title, "-" * len(title)]
    for (system, system_engine, variant), sizes in by_system.items():
        one, many = sizes[1], sizes[big]
        bleu = "-" if one["bleu"] is None else f"{one['bleu']:.2f}"
        rep = "-" if one["repetition_ratio"] is None else f"{100 * one['repetition_ratio']:.2f}"
        memory = f"{one['peak_mem_mb']:.0f}/{many['peak_mem_mb']:.0f}"
        speed = [f"{row['speedup_vs_ar_greedy']:7.2f} {row['speedup_vs_ar_beam']:7.2f}" for row in (one, many)]
        speed = [text + (f" {row[CT2]:7.2f}" if ct2 else "") for text, row in zip(speed, (one, many))]
        lines.append(
            f"{system:<{SYSTEM_WIDTH}} {system_engine:<23} {variant:<7} | {one['latency_ms']:8.2f} {speed[0]} | "
            f"{many['sentences_per_s']:12.1f} {speed[1]} | {memory:>16} | {many['output_tokens']:6.1f} {bleu:>6} "
            f"{rep:>6}"
        )
    return lines


def training_table(train: list[dict]) -> list[str]:
    """One line a model and variant (fp32; bf16 autocast): ms per step, target tokens/s, the ratio to the NAT step."""
    batch = f"{train[0]['batch_size']} sentence pairs, {train[0]['target_tokens']} target tokens"
    lines = [f"Training cost: one step (forward, backward, AdamW) on {batch}", ""]
    lines.append(f"{'step':<30} {'variant':<7} | {'ms/step':>9} {'tokens/s':>10} {'x NAT':>7}")
    for row in train:
        speed = f"{row['step_ms']:9.1f} {row['tokens_per_s']:10.0f} {row['ratio_vs_nat']:7.2f}"
        lines.append(f"{row['system']:<30} {row.get('variant', 'fp32'):<7} | {speed}")
    return lines


def save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def label(row: dict) -> str:
    return f"{name(row)} [{row['variant']}]"


def speedup_figure(decode: list[dict], path: Path, field="speedup_vs_ar_greedy", baseline="AR greedy") -> Path:
    """Horizontal bars: each system's speed-up over `baseline`, at batch size 1 and at the larger batch size."""
    labels = list(dict.fromkeys(label(row) for row in decode))
    speedups = {(label(row), row["batch_size"]): row[field] for row in decode}
    figure = Figure(figsize=(8, 0.35 * len(labels) + 1.5))
    ax = figure.subplots()
    positions = range(len(labels))
    for offset, size in ((-0.2, 1), (0.2, max(row["batch_size"] for row in decode))):
        widths = [speedups[(label, size)] for label in labels]
        ax.barh([p + offset for p in positions], widths, height=0.4, label=f"batch size {size}")
    ax.set_yticks(list(positions), labels)
    ax.invert_yaxis()
    ax.axvline(1.0, color="gray", linewidth=0.8)
    ax.set_xlabel(f"speed-up over {baseline} (same batch size)")
    ax.legend()
    return save(figure, path)


def bleu_vs_speedup_figure(with_bleu: list[dict], path: Path) -> Path:
    """Paper Figure 3: BLEU against speed-up at batch size 1; one colour a system, one marker a variant."""
    systems = list(dict.fromkeys(name(row) for row in with_bleu))
    variants = list(dict.fromkeys(row["variant"] for row in with_bleu))
    colours = matplotlib.colormaps["tab20"]
    figure = Figure(figsize=(8, 5.5))
    ax = figure.subplots()
    for row in (r for r in with_bleu if r["batch_size"] == 1):
        point = (row["speedup_vs_ar_greedy"], row["bleu"])
        marker = MARKERS[variants.index(row["variant"]) % len(MARKERS)]
        ax.scatter(*point, color=colours(systems.index(name(row)) % 20), marker=marker, s=30)
        if row["variant"] == variants[0]:  # names written once, at the first variant
            ax.annotate(name(row), point, fontsize=7, xytext=(4, 3), textcoords="offset points")
    for index, variant in enumerate(variants):
        ax.scatter([], [], color="gray", marker=MARKERS[index % len(MARKERS)], label=variant)
    ax.legend(title="variant", fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
    ax.xaxis.set_minor_formatter(FuncFormatter(minor_tick))
    ax.set_xlabel("speed-up over AR greedy, batch size 1 (log scale)")
    ax.set_ylabel("BLEU")
    ax.set_title("BLEU against speed-up (paper Figure 3)")
    return save(figure, path)


def minor_tick(value: float, _) -> str:
    """The labels 2x and 5x (0.2x, 20x, ...) between the powers of ten of a log axis."""
    return f"{value:g}x" if round(value / 10 ** math.floor(math.log10(value))) in (2, 5) else ""


def bleu_by_length_figure(with_bleu: list[dict], path: Path) -> Path:
    """Paper Figure 4: BLEU by source-length bucket, one line a system (first variant, batch size 1)."""
    figure = Figure(figsize=(7, 5))
    ax = figure.subplots()
    for row in (r for r in with_bleu if r["batch_size"] == 1 and r["variant"] == with_bleu[0]["variant"]):
        points = [(i, bucket["bleu"]) for i, bucket in enumerate(row["bleu_by_length"]) if bucket["bleu"] is not None]
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=name(row))
    names = [f"{bucket['bucket']}\n({bucket['count']})" for bucket in with_bleu[0]["bleu_by_length"]]
    ax.set_xticks(range(len(names)), names)
    ax.set_xlabel("source length in words (sentences)")
    ax.set_ylabel("BLEU")
    ax.set_title("BLEU by source length (paper Figure 4)")
    ax.legend(fontsize=7)
    return save(figure, path)


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", help="The JSON file of benchmark.py --output.")
    parser.add_argument("--figures", help="Write the PNG figures to this folder.")
    args = parser.parse_args(argv)
    rows = json.loads(Path(args.rows).read_text())
    decode = [row for row in rows if row["kind"] == "decode"]
    train = [row for row in rows if row["kind"] == "train"]
    lines = decode_table(decode) + (["", *training_table(train)] if train else [])
    print("\n".join(lines))
    if not args.figures:
        return []
    folder = Path(args.figures)
    folder.mkdir(parents=True, exist_ok=True)
    written = [speedup_figure(decode, folder / "speedup.png")]
    if all(CT2 in row for row in decode):
        written.append(speedup_figure(decode, folder / "speedup_vs_ct2.png", CT2, "CTranslate2 int8 AR greedy"))
    with_bleu = [row for row in decode if row["bleu"] is not None]
    if with_bleu:
        written.append(bleu_vs_speedup_figure(with_bleu, folder / "bleu_vs_speedup.png"))
        written.append(bleu_by_length_figure(with_bleu, folder / "bleu_by_length.png"))
    print("\n".join(f"Figure written to {path}" for path in written))
    return written


if __name__ == "__main__":
    main()
