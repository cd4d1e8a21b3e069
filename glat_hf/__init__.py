"""glat-hf: GLAT, the Glancing Transformer for non-autoregressive translation, as a Hugging Face model.

Importing the package registers the "glat" model type with AutoConfig / AutoModelForSeq2SeqLM and
the "glat-translation" pipeline task.
"""

from transformers import AutoConfig, AutoModelForSeq2SeqLM
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_glat import GlatConfig
from .modeling_glat import GlatForConditionalGeneration, GlatModel, GlatPreTrainedModel
from .pipeline_glat import GlatTranslationPipeline
from .tokenization import train_tokenizer
from .trainer import GlatTrainer, GlatTrainingArguments

AutoConfig.register("glat", GlatConfig, exist_ok=True)
AutoModelForSeq2SeqLM.register(GlatConfig, GlatForConditionalGeneration, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline(
    "glat-translation", pipeline_class=GlatTranslationPipeline, pt_model=AutoModelForSeq2SeqLM
)
# save_pretrained copies these code files and writes auto_map, so that a saved folder also loads
# with trust_remote_code=True where glat_hf is not installed.
GlatConfig.register_for_auto_class()
GlatForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")

__all__ = [
    "GlatConfig",
    "GlatForConditionalGeneration",
    "GlatModel",
    "GlatPreTrainedModel",
    "GlatTrainer",
    "GlatTrainingArguments",
    "GlatTranslationPipeline",
    "train_tokenizer",
]
