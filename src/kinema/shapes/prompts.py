"""Multilingual ShapesWorld prompts (en, zh, ja, ko): generation from a SceneSpec and parsing back.

Generation and parsing share one vocabulary table per language, so every phrase the generator
can emit is one the parser recognises. Parsing is phrase spotting rather than a grammar:
camera and background phrases are found and removed first (they reuse direction words), then
every "colour + shape" noun phrase starts an object whose motion is read from the text up to
the next noun phrase.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np

from .spec import DIRECTIONS, STATIC, ObjectSpec, SceneSpec

LANGUAGES: tuple[str, ...] = ("en", "zh", "ja", "ko")


@dataclass
class _Lang:
    """Vocabulary and templates of one language. First entries of each list are the most common."""

    colors: dict[str, list[str]]
    shapes: dict[str, list[str]]
    directions: dict[str, list[str]]
    parse_directions: dict[str, list[str]]  # extra variants accepted but never generated
    paths: dict[str, list[str]]
    path_regex: dict[str, str]
    static_regex: str
    # Each style: (motion final, motion connective, static final, static connective).
    styles: list[tuple[str, str, str, str]]
    joins: list[tuple[str, str]]  # (form of the first clause: "final"/"conn", separator)
    backgrounds: dict[str, list[str]]
    bg_templates: list[str]  # "{bg}" = background word; "{s}" = sentence
    bg_regex: str  # with {words}
    cameras: dict[str, list[str]]
    cam_templates: list[str]  # "{s}", "{cam}"
    captions: list[str]  # image captions, "{nps}"
    caption_bg: list[str]
    end: str = ""
    np_regex: str = ""


# ------------------------------------------------------------------------------------------------
# English
# ------------------------------------------------------------------------------------------------
_EN = _Lang(
    colors={
        "red": ["red"],
        "orange": ["orange"],
        "yellow": ["yellow"],
        "green": ["green"],
        "cyan": ["cyan", "turquoise"],
        "blue": ["blue"],
        "purple": ["purple", "violet"],
        "white": ["white"],
    },
    shapes={
        "circle": ["circle", "disk"],
        "square": ["square"],
        "triangle": ["triangle"],
        "diamond": ["diamond", "rhombus"],
        "star": ["star"],
    },
    directions={
        "right": ["from left to right", "to the right", "rightward"],
        "left": ["from right to left", "to the left", "leftward"],
        "up": ["from bottom to top", "upward", "up"],
        "down": ["from top to bottom", "downward", "down"],
        "up_right": [
            "from the bottom left to the top right",
            "diagonally up and to the right",
            "toward the top right",
        ],
        "up_left": [
            "from the bottom right to the top left",
            "diagonally up and to the left",
            "toward the top left",
        ],
        "down_right": [
            "from the top left to the bottom right",
            "diagonally down and to the right",
            "toward the bottom right",
        ],
        "down_left": [
            "from the top right to the bottom left",
            "diagonally down and to the left",
            "toward the bottom left",
        ],
    },
    parse_directions={
        "right": ["towards the right", "right"],
        "left": ["towards the left", "left"],
        "up": ["upwards"],
        "down": ["downwards"],
        "up_right": ["up and to the right", "to the upper right", "towards the top right"],
        "up_left": ["up and to the left", "to the upper left", "towards the top left"],
        "down_right": ["down and to the right", "to the lower right", "towards the bottom right"],
        "down_left": ["down and to the left", "to the lower left", "towards the bottom left"],
    },
    paths={"arc": [" along an arc", " in an arc"], "wave": [" in a wavy line", " along a wavy path"]},
    path_regex={"arc": r"\barc", "wave": r"\bwav(?:y|e|ing)"},
    static_regex=r"\b(?:still|in place|not moving|stationary)\b",
    styles=[
        ("{np} moves {dir}{path}", "", "{np} stays still", ""),
        ("{np} slides {dir}{path}", "", "{np} stays in place", ""),
        ("{np} travels {dir}{path}", "", "{np} remains still", ""),
        ("{np} is moving {dir}{path}", "", "{np} is standing still", ""),
        ("{np} moving {dir}{path}", "", "{np} standing still", ""),
    ],
    joins=[("final", " and "), ("final", ", while ")],
    backgrounds={
        "plain": ["plain", "solid-colored"],
        "stripes": ["striped"],
        "checker": ["checkered", "checkerboard"],
        "noise": ["mottled", "blotchy"],
    },
    bg_templates=["On a {bg} background, {s}", "{s} on a {bg} background", "{s} against a {bg} background"],
    bg_regex=r"\b(?P<bg>{words}) background\b",
    cameras={
        "static": ["the camera stays still", "the camera is static"],
        "pan_left": ["the camera pans left", "the camera moves to the left"],
        "pan_right": ["the camera pans right", "the camera moves to the right"],
        "pan_up": ["the camera pans up", "the camera moves up"],
        "pan_down": ["the camera pans down", "the camera moves down"],
        "zoom_in": ["the camera zooms in", "the camera pushes in"],
        "zoom_out": ["the camera zooms out", "the camera pulls back"],
    },
    cam_templates=["{s}, as {cam}", "{s}. {Cam}", "{s} while {cam}"],
    captions=["{nps}", "a picture of {nps}", "an image of {nps}"],
    caption_bg=["{s} on a {bg} background"],
    end=".",
    np_regex=r"\b(?:(?:a|an|the|one)\s+)?(?P<color>{colors})\s+(?P<shape>{shapes})s?\b",
)

# ------------------------------------------------------------------------------------------------
# Chinese (simplified)
# ------------------------------------------------------------------------------------------------
_ZH = _Lang(
    colors={
        "red": ["红色"],
        "orange": ["橙色"],
        "yellow": ["黄色"],
        "green": ["绿色"],
        "cyan": ["青色"],
        "blue": ["蓝色"],
        "purple": ["紫色"],
        "white": ["白色"],
    },
    shapes={
        "circle": ["圆形", "圆", "圆圈"],
        "square": ["正方形", "方块"],
        "triangle": ["三角形"],
        "diamond": ["菱形"],
        "star": ["星星", "五角星"],
    },
    directions={
        "right": ["从左向右", "从左往右", "向右"],
        "left": ["从右向左", "从右往左", "向左"],
        "up": ["从下向上", "从下往上", "向上"],
        "down": ["从上向下", "从上往下", "向下"],
        "up_right": ["从左下向右上", "向右上方", "朝右上方"],
        "up_left": ["从右下向左上", "向左上方", "朝左上方"],
        "down_right": ["从左上向右下", "向右下方", "朝右下方"],
        "down_left": ["从右上向左下", "向左下方", "朝左下方"],
    },
    parse_directions={
        "right": ["往右", "朝右"],
        "left": ["往左", "朝左"],
        "up": ["往上", "朝上"],
        "down": ["往下", "朝下"],
        "up_right": ["往右上方", "向右上"],
        "up_left": ["往左上方", "向左上"],
        "down_right": ["往右下方", "向右下"],
        "down_left": ["往左下方", "向左下"],
    },
    paths={"arc": ["沿着弧线", "沿弧线"], "wave": ["沿着波浪线", "呈波浪形"]},
    path_regex={"arc": "弧", "wave": "波浪"},
    static_regex="静止|停在原地|一动不动|不动",
    styles=[
        ("{np}{path}{dir}移动", "", "{np}静止不动", ""),
        ("{np}{path}{dir}滑动", "", "{np}停在原地", ""),
        ("{np}正在{path}{dir}移动", "", "{np}一动不动", ""),
        ("{np}{path}{dir}缓缓移动", "", "{np}保持不动", ""),
    ],
    joins=[("final", "，"), ("final", "，同时"), ("final", "；")],
    backgrounds={"plain": ["纯色"], "stripes": ["条纹"], "checker": ["棋盘格"], "noise": ["斑驳"]},
    bg_templates=["在{bg}背景上，{s}", "{s}，背景是{bg}的"],
    bg_regex="(?P<bg>{words})",
    cameras={
        "static": ["镜头固定不动", "镜头保持静止"],
        "pan_left": ["镜头向左平移", "镜头缓缓向左移动"],
        "pan_right": ["镜头向右平移", "镜头缓缓向右移动"],
        "pan_up": ["镜头向上平移", "镜头缓缓向上移动"],
        "pan_down": ["镜头向下平移", "镜头缓缓向下移动"],
        "zoom_in": ["镜头推近", "镜头缓缓拉近"],
        "zoom_out": ["镜头拉远", "镜头缓缓后拉"],
    },
    cam_templates=["{s}，{cam}", "{s}，同时{cam}"],
    captions=["{nps}", "画面中有{nps}", "一张有{nps}的图片"],
    caption_bg=["{s}，背景是{bg}的"],
    end="。",
    np_regex="(?:一个|一只|一颗)?(?P<color>{colors})的?(?P<shape>{shapes})",
)

# ------------------------------------------------------------------------------------------------
# Japanese
# ------------------------------------------------------------------------------------------------
_JA = _Lang(
    colors={
        "red": ["赤い", "赤色の"],
        "orange": ["オレンジ色の", "橙色の"],
        "yellow": ["黄色い", "黄色の"],
        "green": ["緑の", "緑色の"],
        "cyan": ["水色の", "シアンの"],
        "blue": ["青い", "青色の"],
        "purple": ["紫の", "紫色の"],
        "white": ["白い", "白色の"],
    },
    shapes={
        "circle": ["円", "丸"],
        "square": ["正方形", "四角"],
        "triangle": ["三角形"],
        "diamond": ["ひし形", "菱形"],
        "star": ["星", "星形"],
    },
    directions={
        "right": ["左から右へ", "左から右に", "右へ"],
        "left": ["右から左へ", "右から左に", "左へ"],
        "up": ["下から上へ", "上へ", "上に"],
        "down": ["上から下へ", "下へ", "下に"],
        "up_right": ["左下から右上へ", "右上へ", "右斜め上へ"],
        "up_left": ["右下から左上へ", "左上へ", "左斜め上へ"],
        "down_right": ["左上から右下へ", "右下へ", "右斜め下へ"],
        "down_left": ["右上から左下へ", "左下へ", "左斜め下へ"],
    },
    parse_directions={
        "right": ["右に"],
        "left": ["左に"],
        "up_right": ["右上に"],
        "up_left": ["左上に"],
        "down_right": ["右下に"],
        "down_left": ["左下に"],
    },
    paths={"arc": ["弧を描いて", "弧を描きながら"], "wave": ["波打つように", "くねくねと"]},
    path_regex={"arc": "弧", "wave": "波|くねくね"},
    static_regex="止まって|止まった|静止|じっと|動かない",
    styles=[
        ("{np}が{path}{dir}動く", "{np}が{path}{dir}動き", "{np}が止まっている", "{np}が止まっていて"),
        ("{np}が{path}{dir}移動する", "{np}が{path}{dir}移動し", "{np}が静止している", "{np}が静止していて"),
        (
            "{np}が{path}{dir}滑るように動く",
            "{np}が{path}{dir}滑るように動き",
            "{np}がじっとしている",
            "{np}がじっとしていて",
        ),
        (
            "{np}は{path}{dir}動いている",
            "{np}は{path}{dir}動いていて",
            "{np}は止まったままだ",
            "{np}は止まったままで",
        ),
    ],
    joins=[("conn", "、"), ("final", "。")],
    backgrounds={
        "plain": ["無地", "単色"],
        "stripes": ["縞模様", "ストライプ"],
        "checker": ["市松模様", "チェック柄"],
        "noise": ["まだら模様"],
    },
    bg_templates=["{bg}の背景の上で、{s}", "{bg}の背景で、{s}"],
    bg_regex="(?P<bg>{words})の背景",
    cameras={
        "static": ["カメラは固定されている", "カメラは動かない"],
        "pan_left": ["カメラが左にパンする", "カメラが左へ移動する"],
        "pan_right": ["カメラが右にパンする", "カメラが右へ移動する"],
        "pan_up": ["カメラが上にパンする", "カメラが上へ移動する"],
        "pan_down": ["カメラが下にパンする", "カメラが下へ移動する"],
        "zoom_in": ["カメラがズームインする", "カメラが寄っていく"],
        "zoom_out": ["カメラがズームアウトする", "カメラが引いていく"],
    },
    cam_templates=["{s}。{cam}"],
    captions=["{nps}", "{nps}の画像", "{nps}が描かれた絵"],
    caption_bg=["{bg}の背景の上の{s}"],
    end="。",
    np_regex="(?P<color>{colors})(?P<shape>{shapes})",
)

# ------------------------------------------------------------------------------------------------
# Korean
# ------------------------------------------------------------------------------------------------
_KO = _Lang(
    colors={
        "red": ["빨간", "빨간색"],
        "orange": ["주황색"],
        "yellow": ["노란", "노란색"],
        "green": ["초록색", "녹색"],
        "cyan": ["하늘색", "청록색"],
        "blue": ["파란", "파란색"],
        "purple": ["보라색"],
        "white": ["하얀", "흰색"],
    },
    shapes={
        "circle": ["원", "동그라미"],
        "square": ["정사각형", "네모"],
        "triangle": ["삼각형", "세모"],
        "diamond": ["마름모"],
        "star": ["별"],
    },
    directions={
        "right": ["왼쪽에서 오른쪽으로", "오른쪽으로"],
        "left": ["오른쪽에서 왼쪽으로", "왼쪽으로"],
        "up": ["아래에서 위로", "위쪽으로", "위로"],
        "down": ["위에서 아래로", "아래쪽으로", "아래로"],
        "up_right": ["왼쪽 아래에서 오른쪽 위로", "오른쪽 위로", "오른쪽 위 대각선 방향으로"],
        "up_left": ["오른쪽 아래에서 왼쪽 위로", "왼쪽 위로", "왼쪽 위 대각선 방향으로"],
        "down_right": ["왼쪽 위에서 오른쪽 아래로", "오른쪽 아래로", "오른쪽 아래 대각선 방향으로"],
        "down_left": ["오른쪽 위에서 왼쪽 아래로", "왼쪽 아래로", "왼쪽 아래 대각선 방향으로"],
    },
    parse_directions={},
    paths={"arc": ["호를 그리며 "], "wave": ["물결치듯 ", "구불구불하게 "]},
    path_regex={"arc": "호를", "wave": "물결|구불구불"},
    static_regex="가만히|멈춰|움직이지 않",
    styles=[
        (
            "{np}{ga} {path}{dir} 움직인다",
            "{np}{ga} {path}{dir} 움직이고",
            "{np}{ga} 가만히 있다",
            "{np}{ga} 가만히 있고",
        ),
        (
            "{np}{ga} {path}{dir} 이동한다",
            "{np}{ga} {path}{dir} 이동하고",
            "{np}{ga} 제자리에 멈춰 있다",
            "{np}{ga} 제자리에 멈춰 있고",
        ),
        (
            "{np}{ga} {path}{dir} 미끄러지듯 움직인다",
            "{np}{ga} {path}{dir} 미끄러지듯 움직이고",
            "{np}{ga} 움직이지 않는다",
            "{np}{ga} 움직이지 않고",
        ),
        (
            "{np}{ga} {path}{dir} 천천히 이동한다",
            "{np}{ga} {path}{dir} 천천히 이동하고",
            "{np}{ga} 가만히 머물러 있다",
            "{np}{ga} 가만히 머물러 있고",
        ),
    ],
    joins=[("conn", ", "), ("conn", " "), ("final", ". ")],
    backgrounds={
        "plain": ["단색"],
        "stripes": ["줄무늬"],
        "checker": ["체크무늬", "바둑판무늬"],
        "noise": ["얼룩덜룩한", "얼룩무늬"],
    },
    bg_templates=["{bg} 배경 위에서 {s}", "{bg} 배경에서 {s}"],
    bg_regex="(?P<bg>{words}) 배경",
    cameras={
        "static": ["카메라는 고정되어 있다", "카메라는 움직이지 않는다"],
        "pan_left": ["카메라가 왼쪽으로 이동한다", "카메라가 왼쪽으로 패닝한다"],
        "pan_right": ["카메라가 오른쪽으로 이동한다", "카메라가 오른쪽으로 패닝한다"],
        "pan_up": ["카메라가 위로 이동한다", "카메라가 위쪽으로 패닝한다"],
        "pan_down": ["카메라가 아래로 이동한다", "카메라가 아래쪽으로 패닝한다"],
        "zoom_in": ["카메라가 줌인한다", "카메라가 가까이 다가간다"],
        "zoom_out": ["카메라가 줌아웃한다", "카메라가 뒤로 물러난다"],
    },
    cam_templates=["{s}. {cam}"],
    captions=["{nps}", "{nps}{ga} 있는 그림", "{nps}{ga} 그려진 이미지"],
    caption_bg=["{bg} 배경 위의 {s}"],
    end=".",
    np_regex="(?P<color>{colors})\\s*(?P<shape>{shapes})",
)

_LANGS: dict[str, _Lang] = {"en": _EN, "zh": _ZH, "ja": _JA, "ko": _KO}


# ------------------------------------------------------------------------------------------------
# Generation
# ------------------------------------------------------------------------------------------------
def _has_batchim(word: str) -> bool:
    """True if the last Hangul syllable ends in a consonant (selects 이/가, 과/와)."""
    code = ord(word[-1]) - 0xAC00
    return 0 <= code < 11172 and code % 28 != 0


def _pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


def _noun_phrase(lang: str, L: _Lang, ob: ObjectSpec, rng: np.random.Generator) -> tuple[str, str]:
    """(noun phrase, shape word) for one object."""
    color = _pick(rng, L.colors[ob.color])
    shape = _pick(rng, L.shapes[ob.shape])
    if lang == "en":
        art = "an" if color[0] in "aeiou" else "a"
        return f"{art} {color} {shape}", shape
    if lang == "zh":
        form = int(rng.integers(3))
        if form == 2 and len(shape) == 1:
            form = 0  # "红色圆" reads oddly; a bare one-character noun needs 的
        np_ = [f"一个{color}的{shape}", f"{color}的{shape}", f"{color}{shape}"][form]
        return np_, shape
    if lang == "ja":
        return f"{color}{shape}", shape
    return f"{color} {shape}", shape


def _clause(lang: str, L: _Lang, ob: ObjectSpec, style: tuple, final: bool, rng: np.random.Generator) -> str:
    np_, shape = _noun_phrase(lang, L, ob, rng)
    ga = ("이" if _has_batchim(shape) else "가") if lang == "ko" else ""
    mf, mc, sf, sc = style
    if ob.direction in DIRECTIONS:
        tpl = mf if (final or not mc) else mc
        path = _pick(rng, L.paths[ob.path]) if ob.path != "straight" else ""
        return tpl.format(np=np_, ga=ga, dir=_pick(rng, L.directions[ob.direction]), path=path)
    tpl = sf if (final or not sc) else sc
    return tpl.format(np=np_, ga=ga)


def _connector(template: str) -> str:
    """The word joining "{s}" and "{cam}" in a camera template ("while", "同时"); "" if none."""
    word = template.split("{s}")[1].split("{")[0].strip(" ,.，。")
    return word or "\0"


def _caption(lang: str, L: _Lang, spec: SceneSpec, rng: np.random.Generator) -> str:
    parts = [_noun_phrase(lang, L, ob, rng) for ob in spec.objects]
    if lang == "en":
        nps = " and ".join(p for p, _ in parts)
    elif lang == "zh":
        nps = "和".join(p for p, _ in parts)
    elif lang == "ja":
        nps = "と".join(p for p, _ in parts)
    else:
        nps = parts[0][0]
        for (p, _), (_, prev_shape) in zip(parts[1:], parts[:-1]):
            nps += ("과 " if _has_batchim(prev_shape) else "와 ") + p
    last_shape = parts[-1][1]
    ga = ("이" if _has_batchim(last_shape) else "가") if lang == "ko" else ""
    return _pick(rng, L.captions).format(nps=nps, ga=ga)


def make_prompt(
    spec: SceneSpec,
    lang: str = "en",
    rng: np.random.Generator | int | None = None,
    mention_background: bool = False,
    mention_camera: bool = False,
) -> str:
    """One natural-language prompt for ``spec`` in ``lang`` (phrasing drawn from ``rng``).

    Objects whose direction is None produce an image caption ("a red circle"). Background and
    camera are mentioned only when requested and set in the spec.
    """
    if lang not in _LANGS:
        raise ValueError(f"unsupported language {lang!r}; expected one of {LANGUAGES}")
    L = _LANGS[lang]
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    image = all(o.direction is None for o in spec.objects)
    bg = _pick(rng, L.backgrounds[spec.background]) if mention_background and spec.background else None
    if image:
        s = _caption(lang, L, spec, rng)
        if bg:
            s = _pick(rng, L.caption_bg).format(s=s, bg=bg)
    else:
        style = _pick(rng, L.styles)
        form, sep = _pick(rng, L.joins)
        clauses = [
            _clause(lang, L, ob, style, final=(i == len(spec.objects) - 1 or form == "final"), rng=rng)
            for i, ob in enumerate(spec.objects)
        ]
        s = sep.join(clauses)
        if bg:
            # With two clauses a trailing "on a ... background" would attach to the second object only.
            templates = L.bg_templates if len(clauses) == 1 else L.bg_templates[:1]
            s = _pick(rng, templates).format(s=s, bg=bg)
        if mention_camera and spec.camera:
            cam = _pick(rng, L.cameras[spec.camera])
            # Avoid repeating a conjunction already used to join the objects (e.g. 同时 ... 同时).
            templates = [t for t in L.cam_templates if _connector(t) not in s] or L.cam_templates[:1]
            s = _pick(rng, templates).format(s=s, cam=cam, Cam=cam[0].upper() + cam[1:])
    if lang == "en":
        s = s[0].upper() + s[1:]
    return s + (_pick(rng, ["", L.end]) if lang == "en" else L.end)


def make_prompts(
    spec: SceneSpec,
    rng: np.random.Generator | int | None = None,
    n_per_lang: int = 3,
    langs: tuple[str, ...] = LANGUAGES,
    mention_background: bool = False,
    mention_camera: bool = False,
) -> dict[str, list[str]]:
    """Up to ``n_per_lang`` distinct phrasings per language."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    out: dict[str, list[str]] = {}
    for lang in langs:
        seen: list[str] = []
        for _ in range(n_per_lang * 6):
            p = make_prompt(spec, lang, rng, mention_background, mention_camera)
            if p not in seen:
                seen.append(p)
            if len(seen) == n_per_lang:
                break
        out[lang] = seen
    return out


# ------------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------------
def _alternation(table: dict[str, list[str]]) -> tuple[str, dict[str, str]]:
    """Regex alternation (longest first, so "从左下向右上" wins over "从左向右") and phrase -> key."""
    lookup = {v: k for k, vs in table.items() for v in vs}
    alt = "|".join(re.escape(v.strip()) for v in sorted(lookup, key=len, reverse=True))
    return alt, {k.strip(): v for k, v in lookup.items()}


@dataclass
class _Parser:
    np_re: re.Pattern
    colors: dict[str, str]
    shapes: dict[str, str]
    dir_re: re.Pattern
    dirs: dict[str, str]
    cam_re: re.Pattern
    cams: dict[str, str]
    bg_re: re.Pattern
    bgs: dict[str, str]
    path_res: dict[str, re.Pattern]
    static_re: re.Pattern


def _build_parser(lang: str) -> _Parser:
    L = _LANGS[lang]
    wb = r"\b" if lang == "en" else ""
    color_alt, colors = _alternation(L.colors)
    shape_alt, shapes = _alternation(L.shapes)
    dir_table = {d: L.directions[d] + L.parse_directions.get(d, []) for d in DIRECTIONS}
    dir_alt, dirs = _alternation(dir_table)
    cam_alt, cams = _alternation(L.cameras)
    bg_alt, bgs = _alternation(L.backgrounds)
    return _Parser(
        np_re=re.compile(L.np_regex.format(colors=color_alt, shapes=shape_alt)),
        colors=colors,
        shapes=shapes,
        dir_re=re.compile(f"{wb}(?:{dir_alt}){wb}"),
        dirs=dirs,
        cam_re=re.compile(f"{wb}(?:{cam_alt}){wb}"),
        cams=cams,
        bg_re=re.compile(L.bg_regex.format(words=bg_alt)),
        bgs=bgs,
        path_res={k: re.compile(v) for k, v in L.path_regex.items()},
        static_re=re.compile(L.static_regex),
    )


_PARSERS: dict[str, _Parser] = {}


def detect_language(text: str) -> str:
    """Language code by script: Hangul -> ko, kana -> ja, Han -> zh, otherwise en."""
    if re.search("[\uac00-\ud7a3]", text):
        return "ko"
    if re.search("[\u3040-\u30ff]", text):
        return "ja"
    if re.search("[\u4e00-\u9fff]", text):
        return "zh"
    return "en"


def parse_prompt(text: str, lang: str | None = None) -> SceneSpec:
    """Invert ``make_prompt``: read objects (colour, shape, direction, path), background and camera.

    Unmentioned fields are None (object direction None = no motion stated). Raises ValueError
    when no "colour + shape" object can be found.
    """
    norm = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()
    lang = lang or detect_language(norm)
    if lang not in _LANGS:
        raise ValueError(f"unsupported language {lang!r}; expected one of {LANGUAGES}")
    if lang == "en":
        norm = norm.lower()
    p = _PARSERS.get(lang) or _PARSERS.setdefault(lang, _build_parser(lang))

    cams = [p.cams[m.group(0)] for m in p.cam_re.finditer(norm)]
    if len(set(cams)) > 1:
        raise ValueError(f"conflicting camera motions {sorted(set(cams))} in prompt {text!r}")
    norm = p.cam_re.sub(" | ", norm)
    bgs = [p.bgs[m.group("bg")] for m in p.bg_re.finditer(norm)]
    if len(set(bgs)) > 1:
        raise ValueError(f"conflicting backgrounds {sorted(set(bgs))} in prompt {text!r}")
    norm = p.bg_re.sub(" | ", norm)

    nps = list(p.np_re.finditer(norm))
    if not nps:
        raise ValueError(
            f"cannot parse ShapesWorld prompt {text!r} ({lang}): no '<color> <shape>' object found; "
            "known colors/shapes are listed in kinema.shapes.spec"
        )
    objects = []
    for i, m in enumerate(nps):
        seg = norm[m.end() : nps[i + 1].start() if i + 1 < len(nps) else len(norm)]
        dm = p.dir_re.search(seg)
        direction, path = None, "straight"
        if dm:
            direction = p.dirs[dm.group(0)]
            for name, rx in p.path_res.items():
                if rx.search(seg):
                    path = name
        elif p.static_re.search(seg):
            direction = STATIC
        objects.append(ObjectSpec(p.colors[m.group("color")], p.shapes[m.group("shape")], direction, path))
    return SceneSpec(tuple(objects), background=bgs[0] if bgs else None, camera=cams[0] if cams else None)
