"""Train one joint BPE tokenizer for both languages, with GLAT's special tokens at fixed ids.

Source and target share a vocabulary so that the decoder's soft copy can attend over source
embeddings that live in the same space as the target embeddings, and so that the model, the
autoregressive teacher and the baseline can all use one tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
MASK_TOKEN = "<mask>"
LENGTH_TOKEN = "<length>"  # prepended to the source; its encoder state predicts the target length
BLANK_TOKEN = "<blank>"  # the CTC blank of the CTC variant

# Order is the id: GlatConfig's defaults (pad_token_id=0, eos_token_id=2, ...) rely on it.
SPECIAL_TOKENS = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, MASK_TOKEN, LENGTH_TOKEN, BLANK_TOKEN]
SPECIAL_TOKEN_IDS = {token: token_id for token_id, token in enumerate(SPECIAL_TOKENS)}
PAD_ID, BOS_ID, EOS_ID, UNK_ID, MASK_ID, LENGTH_ID, BLANK_ID = range(len(SPECIAL_TOKENS))

# Tokens beyond the specials that a vocabulary needs to be of any use; below this the BPE
# would hold little more than the specials and a handful of characters.
MIN_REGULAR_TOKENS = 32


def _checked_texts(texts: Iterable[str], counter: list[int]) -> Iterator[str]:
    """Yield the texts once (a generator is consumed only once), counting them and checking types."""
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"train_tokenizer: text number {index} is {type(text).__name__}, expected str")
        counter[0] += 1
        yield text


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 8000,
    min_frequency: int = 2,
    model_max_length: int = 256,
    show_progress: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a joint BPE over source and target sentences and wrap it as a transformers tokenizer.

    `texts` is any iterable of sentences (both languages mixed); it is read once, so a generator
    works. Every encoded sequence ends in `</s>` (also labels from `tok(src, text_target=tgt)`),
    and Metaspace pre-tokenization makes `decode` give back detokenized text.
    """
    minimum = len(SPECIAL_TOKENS) + MIN_REGULAR_TOKENS
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: it must be at least {minimum} "
            f"({len(SPECIAL_TOKENS)} special tokens + {MIN_REGULAR_TOKENS})"
        )

    backend = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,  # added first, so they take ids 0..6 in this order
        show_progress=show_progress,
    )
    counter = [0]
    backend.train_from_iterator(_checked_texts(texts, counter), trainer=trainer)
    if counter[0] == 0:
        raise ValueError("train_tokenizer: no texts given (the iterable was empty)")

    for token, expected_id in SPECIAL_TOKEN_IDS.items():
        if backend.token_to_id(token) != expected_id:  # a guard against a change in tokenizers
            raise RuntimeError(f"special token {token} got id {backend.token_to_id(token)}, expected {expected_id}")

    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS_TOKEN}",
        pair=f"$A {EOS_TOKEN} $B:1 {EOS_TOKEN}:1",
        special_tokens=[(EOS_TOKEN, EOS_ID)],
    )

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        mask_token=MASK_TOKEN,
        extra_special_tokens={"blank_token": BLANK_TOKEN, "length_token": LENGTH_TOKEN},
        padding_side="right",
        model_max_length=model_max_length,
        # The Metaspace decoder already gives detokenized text; the legacy clean-up would
        # also glue " ." and " 's" that belong to the sentence.
        clean_up_tokenization_spaces=False,
    )


def tokenize_translations(
    dataset,
    tokenizer,
    source_lang: str,
    target_lang: str,
    max_source_length: int,
    max_target_length: int,
    num_proc: int | None = None,
):
    """Token ids of a {"translation": {src, tgt}} dataset for Seq2SeqTrainer: `input_ids`, `attention_mask`
    and `labels` (ending in `</s>`; DataCollatorForSeq2Seq pads them with -100), truncated to the limits."""

    def encode(batch):
        pairs = batch["translation"]
        inputs = tokenizer([pair[source_lang] for pair in pairs], max_length=max_source_length, truncation=True)
        labels = tokenizer(
            text_target=[pair[target_lang] for pair in pairs], max_length=max_target_length, truncation=True
        )
        return dict(inputs, labels=labels["input_ids"])

    return dataset.map(encode, batched=True, num_proc=num_proc, remove_columns=dataset.column_names, desc="Tokenizing")
