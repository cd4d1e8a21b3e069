#!/usr/bin/env python
"""Where GLAT's time goes on ONNX Runtime: the time of each operator type in the first-pass graph.

    glat-export MODEL_DIR --int8
    python training/profile_onnx.py MODEL_DIR --int8 --batch_size 1 --length_beam_size 7

Decodes the first --sentences sentences of --split with `GlatOnnxModel.generate` in batches of --batch_size (in
the order of the file), twice: timed (--repeats passes, the median), then once under ONNX Runtime's profiler
(`SessionOptions.enable_profiling`), whose kernel times are summed by operator type and by node. The profiler
adds work around every node, most for the smallest ones: read its shares rather than its milliseconds, and the
timed pass for the time a batch takes (README, "Speed").

It also counts the multiply-adds of the matrix products that ran (from the shapes the profiler records) and
divides them by the timed pass: the rate the graph reaches. --reference_gemm times one large dynamically quantized
MatMul (1024 x 1024 x 1024) on the same threads, the rate this CPU reaches when nothing but arithmetic is left:
how far a faster graph could go.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from glat_hf.data import column, load_multi30k
from glat_hf.onnx import GlatOnnxModel, quantize_int8
from glat_hf.translation import max_source_tokens


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="A saved GLAT folder with its graphs (glat-export).")
    parser.add_argument("--int8", action="store_true", help="The int8 graphs (glat-export --int8).")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--length_beam_size", type=int, default=1, help="NPD's length candidates (self rerank).")
    parser.add_argument("--sentences", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="Timed passes; the median is reported.")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime's intra-op threads.")
    parser.add_argument("--top", type=int, default=12, help="How many operator types and nodes to list.")
    parser.add_argument("--reference_gemm", action="store_true", help="Also time a 1024^3 int8 MatMul (GMAC/s).")
    parser.add_argument("--data_folder", help="Folder of {split}.{lang}[.gz] files (default: Multi30k).")
    parser.add_argument("--split", default="test_2016_flickr")
    parser.add_argument("--source_lang", default="en")
    args = parser.parse_args(argv)
    if min(args.batch_size, args.length_beam_size, args.sentences, args.repeats, args.threads, args.top) < 1:
        parser.error("--batch_size, --length_beam_size, --sentences, --repeats, --threads and --top must be positive.")
    return args


# the nodes of matrix products: ONNX Runtime fuses quantized MatMuls into the last two; Einsum is the soft copy
MATRIX_PRODUCTS = {
    "MatMul",
    "FusedMatMul",
    "Gemm",
    "Einsum",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
}


def multiply_adds(event: dict) -> int:
    """A matrix product's multiply-adds from its profiled shapes: each output element sums K products, K the first
    input's last dimension (none of these graphs' products transposes its first input; the soft copy's Einsum
    contracts d_model, the first input's last dimension, and broadcasts that input over the candidates)."""
    first, output = (next(iter(event["args"][key][0].values())) for key in ("input_type_shape", "output_type_shape"))
    return int(np.prod(output)) * first[-1]


def reference_gemm_rate(threads: int, size: int = 1024, repeats: int = 7) -> float:
    """GMAC/s of ONNX Runtime's dynamically quantized MatMul (size^3) on `threads` threads, median of `repeats`."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.05, (size, size)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "reference_gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])],
        [weight],
    )
    with tempfile.TemporaryDirectory() as folder:
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), f"{folder}/fp32.onnx")
        quantize_int8(f"{folder}/fp32.onnx", f"{folder}/int8.onnx")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = onnxruntime.InferenceSession(f"{folder}/int8.onnx", options, providers=["CPUExecutionProvider"])
    feeds = {"x": np.random.default_rng(1).normal(size=(size, size)).astype(np.float32)}
    session.run(None, feeds)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        seconds.append(time.perf_counter() - start)
    return size**3 / statistics.median(seconds) / 1e9


def main(argv: list[str] | None = None) -> dict:
    """Print the timed pass and the profiler's tables; return them: timed_ms, profiled_ms, nodes, operators
    ({type: {nodes, ms, share}} over every type), multiply_adds (of the matrix products, a batch), gmac_per_s, and
    reference_gmac_per_s with --reference_gemm."""
    args = parse_args(argv)
    try:
        model = GlatOnnxModel.from_pretrained(args.model, args.int8, args.threads)
    except (OSError, ValueError) as error:  # no model, no graphs, corrupt ones: the message says what to run
        sys.exit(f"profile_onnx.py: error: {error}")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    pairs = load_multi30k([args.split], args.source_lang, folder=args.data_folder)[args.split]
    texts = list(column(pairs, args.source_lang))[: args.sentences]
    limit = dict(truncation=True, max_length=max_source_tokens(model, tokenizer))
    batches = [
        tokenizer(texts[start : start + args.batch_size], return_tensors="pt", padding=True, **limit)
        for start in range(0, len(texts), args.batch_size)
    ]
    batches = [{name: batch[name] for name in ("input_ids", "attention_mask")} for batch in batches]

    def decode(model):
        for batch in batches:
            model.generate(**batch, length_beam_size=args.length_beam_size)

    decode(model)  # warm-up
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        decode(model)
        seconds.append(time.perf_counter() - start)
    timed_ms = 1000 * statistics.median(seconds) / len(batches)

    with tempfile.TemporaryDirectory() as folder:
        profiled = GlatOnnxModel.from_pretrained(args.model, args.int8, args.threads, profile_prefix=f"{folder}/m")
        decode(profiled)
        events = json.loads(Path(profiled.first_pass_session.end_profiling()).read_text())
        profiled.decoder_session.end_profiling()  # unused here (Mask-Predict's): its file goes with the folder
    calls = sum(event["name"] == "model_run" for event in events)
    by_type, nodes_by_type, by_node = Counter(), Counter(), Counter()
    products = 0
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        op_type = event["args"]["op_name"]
        if op_type == "If":  # its branch's nodes are listed too: counting the If would count them twice
            continue
        products += multiply_adds(event) if op_type in MATRIX_PRODUCTS else 0
        by_type[op_type] += event["dur"]
        nodes_by_type[op_type] += 1
        by_node[f"{op_type} {event['name'].removesuffix('_kernel_time')}"] += event["dur"]
    total = sum(by_type.values())
    operators = {
        op_type: dict(nodes=nodes_by_type[op_type] / calls, ms=micros / 1000 / calls, share=micros / total)
        for op_type, micros in by_type.most_common()
    }
    result = dict(timed_ms=timed_ms, profiled_ms=total / 1000 / calls, nodes=sum(nodes_by_type.values()) / calls)
    result.update(multiply_adds=products / calls, gmac_per_s=products / calls / timed_ms / 1e6)

    setting = f"batch size {args.batch_size}, m = {args.length_beam_size}, {args.threads} thread(s)"
    print(f"{args.model} ({'int8' if args.int8 else 'fp32'}), {setting}")
    print(f"timed: {timed_ms:.3f} ms a batch (median of {args.repeats} passes over {len(batches)} batches)")
    print(f"profiled: {result['profiled_ms']:.3f} ms of kernels a batch, {result['nodes']:.0f} nodes a call")
    print(
        f"matrix products: {result['multiply_adds'] / 1e6:.1f} M multiply-adds a batch, "
        f"{result['gmac_per_s']:.1f} GMAC/s over the timed pass"
    )
    if args.reference_gemm:
        result["reference_gmac_per_s"] = reference_gemm_rate(args.threads)
        print(f"reference: a 1024^3 dynamically quantized MatMul, {result['reference_gmac_per_s']:.1f} GMAC/s")
    print("\n| operator | nodes a call | ms a call (profiled) | share |\n|---|---|---|---|")
    for op_type, row in list(operators.items())[: args.top]:
        print(f"| {op_type} | {row['nodes']:.0f} | {row['ms']:.3f} | {100 * row['share']:.1f}% |")
    print("\n| node | ms a call (profiled) | share |\n|---|---|---|")
    for node, micros in by_node.most_common(args.top):
        print(f"| {node} | {micros / 1000 / calls:.3f} | {100 * micros / total:.1f}% |")
    return dict(result, operators=operators)


if __name__ == "__main__":
    main()
