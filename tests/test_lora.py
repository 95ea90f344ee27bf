"""LoRA and LoKr adapters (issue 10): every case of the parity-lora kit through the public API,
alpha/r at full strength, peer files, several adapters summed, several adapters in one batch,
weight 0 = the base model bit for bit, and clear errors for bad adapter files."""

from __future__ import annotations

import copy
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cantata.models.acestep import map_key, official_key
from cantata.models.adapters import AdapterError, load_adapter, use_adapters
from cantata.pipeline.latents import seeded_noise
from cantata.pipeline.request import GenerationRequest
from cantata.pipeline.sampler import sample
from parity import LORA_KIT, errors

KIT = LORA_KIT.folder
ADAPTERS = KIT / "adapters"
manifest = LORA_KIT.manifest
kit_inputs = LORA_KIT.inputs
kit_outputs = LORA_KIT.outputs
assert_kit = LORA_KIT.assert_matches


def assert_close(ours: torch.Tensor, ref: torch.Tensor, tol: float = 1e-5) -> None:
    rel, max_rel, _ = errors(ref.numpy(), ours.numpy())
    assert rel <= tol and max_rel <= tol, f"rel L2 {rel:.3e}, max-abs-rel {max_rel:.3e}"


@pytest.fixture(scope="module")
def xl(pipelines):
    return pipelines("xl-sft").dit.transformer


@pytest.fixture(scope="module")
def adapters(xl):
    """The kit's XL adapters, loaded once."""
    return {name: load_adapter(ADAPTERS / name, xl)
            for name in ("xl-sft_lora_a", "xl-sft_lora_b", "xl-sft_lokr", "xl-sft_lokr_full")}


def dit_inputs(case: str) -> list[torch.Tensor]:
    source = manifest[case].get("inputs_case", case)
    t = lambda name: torch.from_numpy(kit_inputs[f"{source}/{name}"])  # noqa: E731
    return [t("hidden_states"), t("timestep"), t("timestep"), t("encoder_hidden_states"), t("context_latents")]


@torch.no_grad()
def forward(transformer, args, adapters=(), rows=None) -> torch.Tensor:
    with use_adapters(transformer, adapters, rows=rows):
        return transformer(*args).sample


def official_selection(case: str, transformer) -> list:
    """What is acting after the case's official calls: the active adapters at their scales
    (one PEFT adapter at most; toggled-off, unloaded and inactive ones are absent)."""
    return [(load_adapter(KIT / a["path"], transformer), a["scale"]) for a in manifest[case]["adapters"] if a["active"]]


# -- the kit ---------------------------------------------------------------------------------

DIT_CASES = [c for c, m in manifest.items() if m["kind"] == "dit"]
SAMPLE_CASES = [c for c, m in manifest.items() if m["kind"] == "sample"]


@pytest.mark.parametrize("case", DIT_CASES)
def test_dit_case(case, pipelines):
    transformer = pipelines(manifest[case]["variant"]).dit.transformer
    v = forward(transformer, dit_inputs(case), official_selection(case, transformer))
    assert_kit(f"{case}/velocity", v)


@pytest.mark.parametrize("case", SAMPLE_CASES)
def test_sampling_case(case, pipelines):
    """Strings and seed in, final latents out, with the case's adapter acting on the DiT."""
    m = manifest[case]
    pipe = pipelines(m["variant"])
    prep = pipe.prepare(GenerationRequest(
        caption=m["caption"], lyrics=m["lyrics"], language=m["vocal_language"], duration=m["duration_s"],
        bpm=m["bpm"], keyscale=m["keyscale"], timesignature=int(m["timesignature"]), seeds=[m["seed"]],
        steps=m["infer_steps"], shift=m["shift"], guidance_scale=m["guidance_scale"],
        cfg_interval=tuple(m["cfg_interval"]), dcw=m["dcw"]["dcw_enabled"]))
    assert_kit(f"{case}/encoder_hidden_states", prep.plan.phases[0].cond)
    assert_kit(f"{case}/context_latents", prep.plan.phases[0].context)
    assert torch.equal(prep.plan.timesteps, torch.from_numpy(kit_inputs[f"{case}/timesteps"]))
    noise = seeded_noise(prep.seeds, prep.frames, 64, pipe.device, pipe.dtype)
    assert torch.equal(noise, torch.from_numpy(kit_inputs[f"{case}/noise"]))
    with use_adapters(pipe.dit.transformer, official_selection(case, pipe.dit.transformer)):
        latents = sample(pipe.dit.transformer, noise, noise, prep.plan)
    assert_kit(f"{case}/target_latents", latents)


def test_weight_zero_and_no_adapter_are_the_base_model_bit_for_bit(xl, adapters):
    args = dit_inputs("xl-sft/dit_base")
    base = forward(xl, args)
    assert torch.equal(forward(xl, args, []), base)
    assert torch.equal(forward(xl, args, [(a, 0.0) for a in adapters.values()]), base)
    assert torch.equal(forward(xl, args, rows=[[], [(adapters["xl-sft_lokr"], 0)]]), base)
    assert not any(m._forward_hooks for m in xl.modules() if m is not xl)  # nothing left behind


def test_official_alpha_over_r_plays_at_full_strength(xl):
    """Adapter A has r 4, lora_alpha 8. Read with its adapter_config.json it plays at alpha/r = 2
    (the official result); its weights file alone -- what diffusers 0.42 and ComfyUI read --
    carries no alpha and plays at half strength, 6.6e-2 off, unless given weight 2."""
    args = dit_inputs("xl-sft/dit_base")
    official = kit_outputs["xl-sft/dit_lora_a/velocity"]
    assert_kit("xl-sft/dit_lora_a/velocity", forward(xl, args, [(load_adapter(ADAPTERS / "xl-sft_lora_a", xl), 1.0)]))
    weights_only = load_adapter(ADAPTERS / "xl-sft_lora_a" / "adapter_model.safetensors", xl)
    assert errors(official, forward(xl, args, [(weights_only, 1.0)]))[0] > 5e-2
    assert_kit("xl-sft/dit_lora_a/velocity", forward(xl, args, [(weights_only, 2.0)]))


# -- several adapters -------------------------------------------------------------------------


def _official_delta(name: str) -> dict[str, torch.Tensor]:
    """ΔW per official weight key, straight from the kit's files by lora.md §3 (merged form)."""
    out = {}
    folder = ADAPTERS / name
    if (folder / "adapter_config.json").is_file():
        config = json.loads((folder / "adapter_config.json").read_text())
        with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
            for key in f.keys():
                if ".lora_A." in key:
                    module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
                    up = f.get_tensor(key.replace("lora_A", "lora_B"))
                    out[f"decoder.{module}.weight"] = config["lora_alpha"] / config["r"] * up @ f.get_tensor(key)
        return out
    with safe_open(str(folder / "lokr_weights.safetensors"), "pt") as f:
        config = json.loads(f.metadata()["lokr_config"])
        modules = {k.split(".")[0] for k in f.keys()}
        for module in modules:
            get = lambda t: f.get_tensor(f"{module}.{t}")  # noqa: E731
            names = set(k.split(".")[1] for k in f.keys() if k.startswith(module + "."))
            w1 = get("lokr_w1")
            full = "lokr_w2" in names
            w2 = get("lokr_w2") if full else get("lokr_w2_a") @ get("lokr_w2_b")
            c = 1.0 if full else config["linear_alpha"] / config["linear_dim"]
            out[module] = (w1, w2, c)
    return out


def _merged(transformer, parts: list[tuple[str, float]]):
    """A copy of the transformer with `W + Σ w·ΔW` written into its weights."""
    merged = copy.deepcopy(transformer)
    params = dict(merged.named_parameters())
    flattened = {official_key("transformer", key).removeprefix("decoder.").removesuffix(".weight").replace(".", "_"): key
                 for key in params if key.endswith(".weight")}
    with torch.no_grad():
        for name, weight in parts:
            for key, delta in _official_delta(name).items():
                if isinstance(delta, tuple):  # LoKr: module name is lycoris_<flattened path>
                    w1, w2, c = delta
                    ours = flattened[key.removeprefix("lycoris_")]
                    lifted = w1.reshape(*w1.shape, *[1] * (w2.ndim - 2))
                    delta = c * torch.kron(lifted, w2).reshape(params[ours].shape)
                else:
                    ours = map_key(key)[1]
                params[ours].add_(weight * delta)
    return merged


def test_several_adapters_are_summed_with_their_weights(xl, adapters):
    """`y = W x + Σ wᵢ ΔWᵢ x`: equal, within fp32 rounding, to the weights merged by hand."""
    args = dit_inputs("xl-sft/dit_base")
    mix = [("xl-sft_lora_a", 0.7), ("xl-sft_lora_b", -0.5), ("xl-sft_lokr", 0.4)]
    ours = forward(xl, args, [(adapters[n], w) for n, w in mix])
    with torch.no_grad():
        reference = _merged(xl, mix)(*args).sample
    assert_close(ours, reference)
    assert errors(forward(xl, args).numpy(), ours.numpy())[0] > 1e-2  # the mix does act


def test_one_batch_with_different_adapters_equals_each_solo_run(xl, adapters):
    """Three items in one DiT batch -- LoRA A; LoKr + LoRA B summed; no adapter -- each equal to
    its run alone, and the item without an adapter bit-identical to its base batch row."""
    x, t, _, enc, ctx = dit_inputs("xl-sft/dit_base")
    order = torch.tensor([0, 1, 0])
    t3 = t[order] * torch.tensor([1.0, 1.0, 0.5])  # the third item: the first one's inputs at another t
    batch = [x[order], t3, t3, enc[order], ctx[order]]
    rows = [[(adapters["xl-sft_lora_a"], 1.0)],
            [(adapters["xl-sft_lokr"], 0.6), (adapters["xl-sft_lora_b"], 0.5)],
            []]
    together = forward(xl, batch, rows=rows)
    for i, selection in enumerate(rows):
        alone = forward(xl, [a[i:i + 1] for a in batch], selection)
        assert_close(together[i:i + 1], alone)
    assert torch.equal(together[2], forward(xl, batch)[2])


def test_guided_sampling_batch_with_different_adapters_equals_each_solo_run(pipelines, adapters):
    """Through the sampler with APG guidance, whose DiT batch is `cat([cond, uncond])` (6 rows
    for 3 items): each item's final latents equal its solo run within 1e-5."""
    pipe = pipelines("xl-sft")
    tr = pipe.dit.transformer
    seeds = [11, 12, 13]
    rows = [[(adapters["xl-sft_lora_a"], 0.8)], [], [(adapters["xl-sft_lokr_full"], 1.0)]]

    def run(item_seeds, **selection):
        prep = pipe.prepare(GenerationRequest(caption="dusty boom bap", duration=4.0, seeds=item_seeds, steps=4))
        assert prep.plan.guidance is not None
        noise = seeded_noise(prep.seeds, prep.frames, 64, pipe.device, pipe.dtype)
        with use_adapters(tr, **selection):
            return sample(tr, noise, noise, prep.plan)

    sizes = []
    probe = tr.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[0]))
    try:
        together = run(seeds, rows=rows)
    finally:
        probe.remove()
    assert 6 in sizes  # the cond and uncond halves shared one forward
    for i, (seed, selection) in enumerate(zip(seeds, rows)):
        assert_close(together[i:i + 1], run([seed], adapters=selection))


# -- peer files ---------------------------------------------------------------------------


def _tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def _lora_a_as(style: str) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    """Adapter A rewritten in a peer's single-file style, alpha carried the way that peer does."""
    tensors, _ = _tensors(ADAPTERS / "xl-sft_lora_a" / "adapter_model.safetensors")
    out, metadata = {}, None
    for key, value in tensors.items():
        module = key.removeprefix("base_model.model.").rsplit(".lora_", 1)[0]
        role = "A" if ".lora_A." in key else "B"
        if style == "kohya":
            name = "lora_unet_decoder_" + module.replace(".", "_")
            out[f"{name}.lora_{'down' if role == 'A' else 'up'}.weight"] = value
            out[f"{name}.alpha"] = torch.tensor(8.0)
        elif style == "comfyui":
            out[f"diffusion_model.decoder.{module}.lora.{'down' if role == 'A' else 'up'}.weight"] = value
            out[f"diffusion_model.decoder.{module}.alpha"] = torch.tensor(8.0)
        elif style == "diffusers":
            ours = map_key(f"decoder.{module}.weight")[1].removesuffix(".weight")
            out[f"transformer.{ours}.lora_{role}.weight"] = value
            metadata = {"lora_adapter_metadata": json.dumps({"transformer.r": 4, "transformer.lora_alpha": 8})}
    return out, metadata


@pytest.mark.parametrize("style", ["kohya", "comfyui", "diffusers"])
def test_peer_lora_files_with_their_alpha(style, xl, tmp_path):
    tensors, metadata = _lora_a_as(style)
    path = tmp_path / f"a_{style}.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    assert_kit("xl-sft/dit_lora_a/velocity", forward(xl, dit_inputs("xl-sft/dit_base"), [(load_adapter(path, xl), 1.0)]))


@pytest.mark.parametrize("name,case", [("xl-sft_lokr", "xl-sft/dit_lokr"), ("xl-sft_lokr_full", "xl-sft/dit_lokr_full")])
@pytest.mark.parametrize("keep_config", [True, False], ids=["renamed", "no-lokr_config"])
def test_lokr_as_a_single_file(name, case, keep_config, xl, tmp_path):
    """A LoKr file under another name is recognised by its lokr_config; without one (another
    LyCORIS trainer) its alpha tensors give the same scale, 1 when both factors are full."""
    tensors, metadata = _tensors(ADAPTERS / name / "lokr_weights.safetensors")
    path = tmp_path / "my_style.safetensors"
    save_file(tensors, str(path), metadata=metadata if keep_config else None)
    assert_kit(f"{case}/velocity", forward(xl, dit_inputs(case), [(load_adapter(path, xl), 1.0)]))


# -- bad adapters --------------------------------------------------------------------------


def _copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(ADAPTERS / name, target)
    for f in target.iterdir():
        f.chmod(0o644)
    return target


def _rewrite(path: Path, edit) -> None:
    tensors, metadata = _tensors(path)
    edit(tensors)
    save_file(tensors, str(path), metadata=metadata)


def _lora_weights(d: Path) -> Path:
    return d / "adapter_model.safetensors"


def _lokr_weights(d: Path) -> Path:
    return d / "lokr_weights.safetensors"


A_Q = "base_model.model.layers.0.self_attn.q_proj"


def _edit_config(d: Path, **changes) -> None:
    config = json.loads((d / "adapter_config.json").read_text())
    config.update(changes)
    (d / "adapter_config.json").write_text(json.dumps(config))


BAD = {
    "unknown tensor": ("xl-sft_lora_a", lambda d: _rewrite(_lora_weights(d), lambda t: t.update(
        {f"{A_Q}.lora_magnitude_vector": torch.ones(128)})), f"unknown key '{A_Q}.lora_magnitude_vector'"),
    "no such module": ("xl-sft_lora_a", lambda d: _rewrite(_lora_weights(d), lambda t: t.update(
        {"base_model.model.layers.9.self_attn.q_proj.lora_A.weight": torch.ones(4, 96)})),
        "'base_model.model.layers.9.self_attn.q_proj.lora_A.weight' names no adaptable module"),
    "module not targeted": ("xl-sft_lora_b", lambda d: _rewrite(_lora_weights(d), lambda t: t.update(
        {"base_model.model.layers.0.cross_attn.q_proj.lora_A.weight": torch.ones(8, 96),
         "base_model.model.layers.0.cross_attn.q_proj.lora_B.weight": torch.ones(128, 8)})),
        "'base_model.model.layers.0.cross_attn.q_proj.lora_A.weight' is not used"),
    "lora_B missing": ("xl-sft_lora_a", lambda d: _rewrite(_lora_weights(d), lambda t: t.pop(f"{A_Q}.lora_B.weight")),
                       f"{A_Q}.lora_A.weight has no matching lora_B"),
    "rank differs from config": ("xl-sft_lora_a", lambda d: _edit_config(d, r=8), "has rank 4, adapter_config.json says r=8"),
    "DoRA": ("xl-sft_lora_a", lambda d: _edit_config(d, use_dora=True), "use_dora=True is not supported"),
    "no config or weights": ("xl-sft_lora_a", lambda d: [f.unlink() for f in d.iterdir()],
                             "expected a PEFT LoRA directory containing adapter_config.json"),
    "config is not JSON": ("xl-sft_lora_a", lambda d: (d / "adapter_config.json").write_text("{r: 4"), "not valid JSON"),
    "weights not safetensors": ("xl-sft_lora_a", lambda d: _lora_weights(d).write_bytes(b"\x00" * 64),
                                "not a readable safetensors file"),
    "LoKr Tucker": ("xl-sft_lokr", lambda d: _rewrite(_lokr_weights(d), lambda t: t.update(
        {"lycoris_proj_in_1.lokr_t2": torch.ones(4, 4, 2)})), "lycoris_proj_in_1.lokr_t2: Tucker"),
    "LoKr factor missing": ("xl-sft_lokr", lambda d: _rewrite(_lokr_weights(d), lambda t: t.pop(
        "lycoris_layers_0_mlp_up_proj.lokr_w2_b")), "no complete lokr_w2 factor"),
    "LoKr unknown module": ("xl-sft_lokr", lambda d: _rewrite(_lokr_weights(d), lambda t: t.update(
        {"lycoris_proj_out_1.lokr_w1": torch.ones(8, 8)})), "'lycoris_proj_out_1.lokr_w1' names no adaptable module"),
}


@pytest.mark.parametrize("what", list(BAD))
def test_bad_adapter_files_are_refused_naming_the_key(what, xl, tmp_path):
    name, damage, message = BAD[what]
    folder = _copy(name, tmp_path)
    damage(folder)
    with pytest.raises(AdapterError) as info:
        load_adapter(folder, xl)
    assert message in str(info.value)


def test_adapter_for_another_base_model(pipelines):
    """The XL adapter on the 2B DiT: the first mis-shaped key is named."""
    turbo = pipelines("2b-turbo").dit.transformer
    with pytest.raises(AdapterError, match=r"lora_A\.weight has shape \(4, 96\), expected \[rank, 64\]"):
        load_adapter(ADAPTERS / "xl-sft_lora_a", turbo)
    with pytest.raises(AdapterError, match="kron of factors"):
        load_adapter(ADAPTERS / "xl-sft_lokr", turbo)


def test_adapter_loaded_for_one_model_is_refused_on_another(pipelines, adapters):
    turbo = pipelines("2b-turbo").dit.transformer
    with pytest.raises(AdapterError, match="does not fit this model"):
        forward(turbo, dit_inputs("2b-turbo/dit_base"), [(adapters["xl-sft_lora_a"], 1.0)])


class _Boom:
    def __reduce__(self):
        return (Path.touch, (Path(_Boom.marker),))


def test_pickles_are_never_loaded(xl, tmp_path):
    """A PEFT directory whose weights come only as adapter_model.bin (a pickle, which can run
    code when loaded) is refused without opening it; so is a lone .pt file."""
    folder = _copy("xl-sft_lora_a", tmp_path)
    _lora_weights(folder).unlink()
    _Boom.marker = str(tmp_path / "executed")
    (folder / "adapter_model.bin").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(AdapterError, match="adapter_model.bin is a pickle and is never loaded"):
        load_adapter(folder, xl)
    with pytest.raises(AdapterError, match="only .safetensors adapter files are read"):
        load_adapter(folder / "adapter_model.bin", xl)
    assert not (tmp_path / "executed").exists()


def test_missing_path(xl, tmp_path):
    with pytest.raises(AdapterError, match="no such file or directory"):
        load_adapter(tmp_path / "nope", xl)
