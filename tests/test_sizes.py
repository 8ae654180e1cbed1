import pytest

from kinema.sizes import (
    aspect_buckets,
    closest_bucket,
    latent_shape,
    max_frames_for_budget,
    nearest_valid_size,
    parse_aspect_ratio,
    size_for_budget,
    token_count,
    validate_size,
)


@pytest.mark.parametrize(
    "size", [(512, 512, 49), (384, 672, 49), (16, 16, 1), (1024, 1024, 9), (768, 1360, 21)]
)
def test_validate_size_accepts_valid(size):
    validate_size(*size)


def test_validate_size_names_rules_and_nearest_values():
    with pytest.raises(ValueError) as err:
        validate_size(500, 513, 50)
    msg = str(err.value)
    assert "height=500 is not a multiple of 16 (nearest valid: 496 or 512)" in msg
    assert "width=513 is not a multiple of 16 (nearest valid: 512 or 528)" in msg
    assert "frames=50 is not of the form 4k+1 (nearest valid: 49 or 53)" in msg
    assert "496x512" in msg


def test_validate_size_single_rule_and_types():
    with pytest.raises(ValueError, match="frames=48 .* 45 or 49"):
        validate_size(512, 512, 48)
    with pytest.raises(ValueError, match="positive integer"):
        validate_size(0, 512, 49)
    with pytest.raises(ValueError, match="positive integer"):
        validate_size(512.0, 512, 49)


def test_nearest_valid_size():
    assert nearest_valid_size(500, 513, 50) == (496, 512, 49)
    assert nearest_valid_size(520, 8, 3) == (528, 16, 5)  # ties round up, never below the minimum
    assert nearest_valid_size(512, 512, 49) == (512, 512, 49)


def test_latent_shape_and_tokens():
    assert latent_shape(512, 512, 49) == (16, 13, 64, 64)
    assert latent_shape(384, 672, 1) == (16, 1, 48, 84)
    assert token_count(512, 512, 49) == 13312  # 13 latent frames x 32 x 32
    assert token_count(256, 256, 49) == 3328
    assert token_count(1024, 1024, 49) == 53248
    assert token_count(768, 768, 21) == 13824
    with pytest.raises(ValueError, match="4k\\+1"):
        latent_shape(512, 512, 48)
    with pytest.raises(ValueError, match="multiples of 8"):
        latent_shape(500, 512, 49)
    with pytest.raises(ValueError, match="multiples of 16"):
        token_count(520, 512, 49)


def test_budget_table_from_the_v51_report():
    # Equal-budget table: 13312 tokens -> 512x512x49, 768x768x21, 1024x1024x9.
    assert max_frames_for_budget(512, 512, 13312) == 49
    assert max_frames_for_budget(768, 768, 13312) == 21
    assert max_frames_for_budget(1024, 1024, 13312) == 9
    assert max_frames_for_budget(256, 256, 3328) == 49
    assert max_frames_for_budget(1024, 1024, 53248) == 49
    assert size_for_budget(13312, 1.0) == (512, 512, 49)
    assert size_for_budget(3328, "1:1") == (256, 256, 49)
    assert size_for_budget(53248, 1) == (1024, 1024, 49)


def test_max_frames_rounding_and_caps():
    assert max_frames_for_budget(768, 768, 13312, rounding="floor") == 17
    assert token_count(768, 768, 17) <= 13312 < token_count(768, 768, 21)
    assert max_frames_for_budget(256, 256, 13312) == 205
    assert max_frames_for_budget(256, 256, 13312, max_frames=50) == 49
    with pytest.raises(ValueError, match="more than the budget"):
        max_frames_for_budget(1024, 1024, 1000)
    with pytest.raises(ValueError, match="rounding"):
        max_frames_for_budget(512, 512, 13312, rounding="up")


def test_size_for_budget_aspects_and_frames():
    assert size_for_budget(13312, "16:9") == (384, 672, 49)  # = EasyAnimate's 512-bucket for 1.75
    assert size_for_budget(13312, "9:16") == (672, 384, 49)
    assert size_for_budget(13312, 1.0, frames=9) == (1056, 1056, 9)
    assert size_for_budget(13312, 1.0, frames=21) == (752, 752, 21)  # 768 would be 13824 tokens
    with pytest.raises(ValueError, match="4k\\+1"):
        size_for_budget(13312, 1.0, frames=20)


@pytest.mark.parametrize("budget", [3328, 5000, 13312, 20000, 53248])
@pytest.mark.parametrize("aspect", ["1:1", "16:9", "9:16", "4:3", "21:9", 2.5])
def test_size_for_budget_never_exceeds_and_keeps_aspect(budget, aspect):
    h, w, f = size_for_budget(budget, aspect)
    assert h % 16 == 0 and w % 16 == 0 and f == 49
    assert token_count(h, w, f) <= budget
    assert abs((w / h) / parse_aspect_ratio(aspect) - 1) < 0.06


def test_parse_aspect_ratio():
    assert parse_aspect_ratio("16:9") == pytest.approx(16 / 9)
    assert parse_aspect_ratio("4/3") == pytest.approx(4 / 3)
    assert parse_aspect_ratio("1.5") == 1.5
    for bad in ("wide", "16:0", -1, "0"):
        with pytest.raises(ValueError):
            parse_aspect_ratio(bad)


def test_aspect_buckets_reproduce_reference_entries():
    b = aspect_buckets(512, 32)
    # Entries of EasyAnimate's ASPECT_RATIO_512 table (key = h / w).
    expected = {
        0.25: (256, 1024),
        0.33: (288, 864),
        0.57: (384, 672),
        0.88: (480, 544),
        1.0: (512, 512),
        1.13: (544, 480),
        1.75: (672, 384),
        2.0: (704, 352),
        4.0: (1024, 256),
    }
    for key, size in expected.items():
        assert b[key] == size
    assert len(b) == 33


@pytest.mark.parametrize("base, step", [(512, 16), (512, 32), (768, 16), (1024, 64)])
def test_aspect_buckets_properties(base, step):
    b = aspect_buckets(base, step)
    assert b[1.0] == (base, base)
    for key, (h, w) in b.items():
        assert h % step == 0 and w % step == 0
        assert h * w <= base * base
        assert key == round(h / w, 2)
        assert 0.25 <= key <= 4.0
    assert list(b) == sorted(b)


def test_closest_bucket():
    b = aspect_buckets(512, 32)
    assert closest_bucket(720, 1280, b) == (0.57, (384, 672))
    assert closest_bucket(1280, 720, b) == (1.75, (672, 384))
    assert closest_bucket(300, 300, b) == (1.0, (512, 512))
    assert closest_bucket(100, 10000, b) == (0.25, (256, 1024))
    key, (h, w) = closest_bucket(1080, 1920)  # default buckets: base 512, step 16
    assert h % 16 == 0 and w % 16 == 0 and abs(h / w - 1080 / 1920) < 0.02
