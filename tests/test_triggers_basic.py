"""The blend, sig, bpp and ftrojan triggers, each against a computation of its own (numpy, math, scipy), not the
code under test; their parameter checks; and the poison manipulation end to end."""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import scipy.fft
import torch
from PIL import Image

from corrective_unlearning.config import ConfigError
from corrective_unlearning.data import stratified_split
from corrective_unlearning.manipulations import check_params, manipulate
from corrective_unlearning.training import ImageBank
from corrective_unlearning.triggers import TRIGGERS, TriggerContext, TriggerError, build_trigger
from corrective_unlearning.triggers.blend import Blend
from corrective_unlearning.triggers.bpp import Bpp
from corrective_unlearning.triggers.ftrojan import FTrojan
from corrective_unlearning.triggers.sig import Sig


def random_images(shape, low=0, high=256, seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(low, high, shape, dtype=np.uint8))


def with_pattern(trigger: Blend, pattern: np.ndarray) -> Blend:
    object.__setattr__(trigger, "_pattern", torch.from_numpy(pattern))
    return trigger


# ------------------------------------------------------------------------------------------------------ blend
def test_blend_formula_on_a_hand_made_image():
    image = np.array([[[[0, 100], [200, 255]]]], dtype=np.uint8)
    pattern = np.array([[[255, 0], [50, 10]]], dtype=np.uint8)
    stamped = with_pattern(Blend(alpha=0.25), pattern).stamp(torch.from_numpy(image), torch.arange(1))
    # 0.75 x + 0.25 P: 63.75, 75, 162.5 (half to even: 162), 193.75
    assert stamped.dtype == torch.uint8
    assert stamped.numpy().tolist() == [[[[64, 75], [162, 194]]]]
    images = random_images((4, 3, 5, 6))
    pattern = random_images((3, 5, 6), seed=1).numpy()
    stamped = with_pattern(Blend(alpha=0.2), pattern).stamp(images, torch.arange(4))
    expected = np.round((1 - 0.2) * images.numpy().astype(np.float64) + 0.2 * pattern.astype(np.float64))
    assert np.array_equal(stamped.numpy(), expected.astype(np.uint8))


def test_blend_pattern_file_is_converted_and_resized(tmp_path):
    path = tmp_path / "pattern.png"
    Image.new("RGB", (7, 5), (10, 20, 30)).save(path)  # uniform, so any resampling gives the same colour
    rgb = Blend.build(TriggerContext(shape=(3, 4, 6), seed=0), pattern=str(path))
    assert rgb._pattern.dtype == torch.uint8 and rgb._pattern.shape == (3, 4, 6)
    assert rgb._pattern[:, 0, 0].tolist() == [10, 20, 30] and bool((rgb._pattern == rgb._pattern[:, :1, :1]).all())
    grey_path = tmp_path / "grey.png"
    Image.new("RGB", (3, 3), (90, 90, 90)).save(grey_path)
    grey = Blend.build(TriggerContext(shape=(1, 4, 4), seed=0), pattern=str(grey_path), alpha=0.5)
    assert grey._pattern.shape == (1, 4, 4) and bool((grey._pattern == 90).all())
    image = torch.full((1, 1, 4, 4), 11, dtype=torch.uint8)
    assert bool((grey.stamp(image, torch.arange(1)) == 50).all())  # (11 + 90) / 2 = 50.5 -> 50 (half to even)
    exact = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)
    exact_path = tmp_path / "exact.png"
    Image.fromarray(exact, mode="L").save(exact_path)  # already the data's size: read as it is
    same = Blend.build(TriggerContext(shape=(1, 2, 3), seed=0), pattern=str(exact_path))
    assert same._pattern[0].numpy().tolist() == exact.tolist()


def test_blend_test_alpha_is_the_test_trigger():
    context = TriggerContext(shape=(3, 4, 4), seed=3)
    trigger = Blend.build(context, alpha=0.2, test_alpha=0.5)
    test = trigger.for_test()
    assert test.alpha == 0.5 and trigger.alpha == 0.2 and test._pattern is trigger._pattern
    images = random_images((2, 3, 4, 4))
    expected = np.round(0.5 * images.numpy() + 0.5 * trigger._pattern.numpy().astype(np.float64))
    assert np.array_equal(test.stamp(images, torch.arange(2)).numpy(), expected.astype(np.uint8))
    same = Blend.build(context, alpha=0.2)
    assert same.for_test() is same
    assert trigger.describe() == {"name": "blend", "alpha": 0.2, "test_alpha": 0.5, "pattern": "noise"}


def test_blend_noise_pattern_is_seeded_and_leaves_the_global_generator_alone():
    state = torch.random.get_rng_state()
    a = Blend.build(TriggerContext(shape=(3, 8, 8), seed=1))
    b = Blend.build(TriggerContext(shape=(3, 8, 8), seed=1))
    c = Blend.build(TriggerContext(shape=(3, 8, 8), seed=2))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a._pattern.dtype == torch.uint8 and a._pattern.shape == (3, 8, 8)
    assert torch.equal(a._pattern, b._pattern) and not torch.equal(a._pattern, c._pattern)
    assert len(torch.unique(a._pattern)) > 100  # noise over the whole range, not a constant
    assert a == c  # equal parameters; the pattern follows the run's seed


def test_blend_without_a_pattern_and_with_an_unreadable_file(tmp_path):
    with pytest.raises(TriggerError, match="build"):
        Blend().stamp(random_images((1, 3, 2, 2)), torch.arange(1))
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(TriggerError, match="notes.txt.*cannot be read as an image"):
        Blend.build(TriggerContext(shape=(3, 4, 4), seed=0), pattern=str(text))


# -------------------------------------------------------------------------------------------------------- sig
@pytest.mark.parametrize("params", [{}, {"delta": 20, "frequency": 3}, {"delta": 255, "frequency": 1.5}])
def test_sig_formula_per_pixel(params):
    delta, f = params.get("delta", 40), params.get("frequency", 6)
    images = random_images((2, 3, 5, 20))
    stamped = Sig(**params).stamp(images, torch.arange(2)).numpy()
    x = images.numpy()
    width = x.shape[-1]
    for b, c, i, j in np.ndindex(*x.shape):
        value = x[b, c, i, j] + delta * math.sin(2 * math.pi * j * f / width)
        assert stamped[b, c, i, j] == min(max(round(value), 0), 255), (b, c, i, j)


def test_sig_default_is_backdoorbench_and_varies_along_the_width():
    assert Sig() == Sig(delta=40, frequency=6)
    flat = torch.full((1, 3, 6, 32), 128, dtype=torch.uint8)
    stamped = Sig().stamp(flat, torch.arange(1))
    assert bool((stamped == stamped[:, :1, :1, :]).all())  # the same on every row and channel
    assert len(torch.unique(stamped[0, 0, 0])) > 4


# -------------------------------------------------------------------------------------------------------- bpp
@pytest.mark.parametrize("levels", [2, 3, 8, 16, 255])
def test_bpp_outputs_only_the_levels(levels):
    every = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    stamped = Bpp(levels=levels).stamp(every, torch.arange(1)).numpy().ravel().astype(int)
    allowed = {int(np.round(k * 255 / (levels - 1))) for k in range(levels)}
    assert set(stamped.tolist()) == allowed  # every level is reached, nothing else
    # each value goes to its nearest level
    assert np.abs(stamped - np.arange(256)).max() <= 255 / (2 * (levels - 1)) + 0.5


def test_bpp_hand_examples():
    x = torch.tensor([0, 18, 19, 100, 255], dtype=torch.uint8).view(1, 1, 1, 5)
    # 8 levels: 255 k / 7 = 0, 36.43, ...; 18 * 7 / 255 = 0.494 -> 0, 19 -> 0.52 -> 1, 100 -> 2.75 -> 3 (109.29)
    assert Bpp().stamp(x, torch.arange(1)).view(-1).tolist() == [0, 0, 36, 109, 255]
    # 3 levels: 0, 127.5 (half to even: 128), 255
    y = torch.tensor([63, 64, 100, 191, 192], dtype=torch.uint8).view(1, 1, 1, 5)
    assert Bpp(levels=3).stamp(y, torch.arange(1)).view(-1).tolist() == [0, 128, 128, 128, 255]


# ---------------------------------------------------------------------------------------------------- ftrojan
def ycrcb(rgb: np.ndarray) -> np.ndarray:
    """OpenCV's COLOR_RGB2YCrCb on float ``[..., 3, H, W]``, written out."""
    r, g, b = rgb[..., 0, :, :], rgb[..., 1, :, :], rgb[..., 2, :, :]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return np.stack([y, (r - y) * 0.713 + 128, (b - y) * 0.564 + 128], axis=-3)


def block_dct(x: np.ndarray, n: int) -> np.ndarray:
    """scipy's orthonormal 2-D DCT-II of every n x n block of the last two axes."""
    out = np.empty_like(x, dtype=np.float64)
    for i in range(0, x.shape[-2], n):
        for j in range(0, x.shape[-1], n):
            out[..., i:i + n, j:j + n] = scipy.fft.dctn(x[..., i:i + n, j:j + n], norm="ortho", axes=(-2, -1))
    return out


OPENCV_YCRCB = np.array([[0.299, 0.587, 0.114],
                         [0.713 * 0.701, -0.713 * 0.587, -0.713 * 0.114],
                         [-0.564 * 0.299, -0.564 * 0.587, 0.564 * 0.886]])


def block_idct(x: np.ndarray, n: int) -> np.ndarray:
    out = np.empty_like(x, dtype=np.float64)
    for i in range(0, x.shape[-2], n):
        for j in range(0, x.shape[-1], n):
            out[..., i:i + n, j:j + n] = scipy.fft.idctn(x[..., i:i + n, j:j + n], norm="ortho", axes=(-2, -1))
    return out


def check_ftrojan(trigger, images, bumped, n, yuv=True):
    """``bumped``: the (channel, row, column) coefficients of the first block that should grow by the magnitude.

    In the DCT domain of the (YCrCb) stamped image, those coefficients of every block grow by about the magnitude
    and nothing else moves beyond the final rounding's noise; in pixels, the stamp is the rounded sum of the image
    and the inverse DCT of that bump (brought back to RGB by numpy's inverse of OpenCV's matrix)."""
    m = trigger.magnitude
    stamped = trigger.stamp(images, torch.arange(len(images))).numpy().astype(np.float64)
    original = images.numpy().astype(np.float64)
    convert = ycrcb if yuv else (lambda x: x)
    change = block_dct(convert(stamped), n) - block_dct(convert(original), n)
    bump = np.zeros(original.shape[1:])
    for c, r, col in bumped:
        bump[c, r::n, col::n] = m
    on = np.broadcast_to(bump > 0, change.shape)
    assert on.sum() == len(images) * len(bumped) * (original.shape[-2] // n) * (original.shape[-1] // n)
    assert np.abs(change[on] - m).max() < 3.0, "the bumped coefficients grow by the magnitude, up to rounding"
    assert np.abs(change[~on]).max() < 3.0 and np.abs(change[~on]).mean() < 0.3, "nothing else moves"
    delta = block_idct(bump, n)
    if yuv:
        delta = np.einsum("oc,chw->ohw", np.linalg.inv(OPENCV_YCRCB), delta)
    expected = np.clip(np.round(original + delta), 0, 255)
    assert np.abs(stamped - expected).max() <= 1 and (stamped == expected).mean() > 0.99


def test_ftrojan_with_magnitude_zero_changes_nothing_but_rounding():
    images = random_images((3, 3, 32, 64))
    stamped = FTrojan(magnitude=0).stamp(images, torch.arange(3))
    assert (stamped.int() - images.int()).abs().max() <= 1
    grey = random_images((3, 1, 28, 28))
    assert (FTrojan(magnitude=0).stamp(grey, torch.arange(3)).int() - grey.int()).abs().max() <= 1


@pytest.mark.parametrize("magnitude", [30, 12.5, 50])
def test_ftrojan_adds_magnitude_at_the_reference_positions_of_u_and_v(magnitude):
    images = random_images((2, 3, 32, 64), 60, 196)  # mid-range: no clipping; two 32 x 32 blocks
    bumped = [(c, p, p) for c in (1, 2) for p in (15, 31)]  # Cr and Cb, BackdoorBench's pos_list
    check_ftrojan(FTrojan(magnitude=magnitude), images, bumped, n=32)


def test_ftrojan_on_rgb_channels_without_yuv():
    images = random_images((2, 3, 32, 32), 60, 196)
    check_ftrojan(FTrojan(yuv=False), images, [(c, p, p) for c in (1, 2) for p in (15, 31)], n=32, yuv=False)


def test_ftrojan_grayscale_and_small_images_use_one_scaled_block():
    grey = random_images((2, 1, 28, 28), 60, 196)
    # round(15 * 27 / 31) = 13, round(31 * 27 / 31) = 27, on Y (the only channel)
    check_ftrojan(FTrojan(), grey, [(0, 13, 13), (0, 27, 27)], n=28, yuv=False)
    small = random_images((2, 3, 16, 16), 60, 196)
    check_ftrojan(FTrojan(), small, [(c, p, p) for c in (1, 2) for p in (7, 15)], n=16)
    tiles = random_images((1, 3, 32, 32), 60, 196)
    check_ftrojan(FTrojan(window_size=8), tiles, [(c, p, p) for c in (1, 2) for p in (3, 7)], n=8)


def test_ftrojan_refuses_a_side_it_cannot_cut_into_blocks():
    with pytest.raises(TriggerError, match="window_size 32 does not divide the image side 40"):
        FTrojan.build(TriggerContext(shape=(3, 40, 40), seed=0))
    with pytest.raises(TriggerError, match="1 or 3 channels, got 2"):
        FTrojan.build(TriggerContext(shape=(2, 32, 32), seed=0))
    assert FTrojan.build(TriggerContext(shape=(3, 64, 64), seed=0), window_size=32) == FTrojan()


def test_triggers_pickle_without_their_device_copies():
    blend = Blend.build(TriggerContext(shape=(3, 4, 4), seed=0))
    images = random_images((1, 3, 4, 4))
    ftrojan = FTrojan()
    for trigger in (blend, ftrojan):
        stamped = trigger.stamp(images if trigger is blend else random_images((1, 3, 32, 32)), torch.arange(1))
        assert stamped.dtype == torch.uint8
        copy = pickle.loads(pickle.dumps(trigger))
        assert copy == trigger and copy._on_device == {}
    assert torch.equal(pickle.loads(pickle.dumps(blend)).stamp(images, torch.arange(1)), blend.stamp(images, None))


# -------------------------------------------------------------------------------------------- bad parameters
@pytest.mark.parametrize("name, params, message", [
    ("blend", {"alpha": 0}, r"alpha must be in \(0, 1\], got 0"),
    ("blend", {"alpha": 1.5}, r"alpha must be in \(0, 1\], got 1.5"),
    ("blend", {"alpha": float("nan")}, r"alpha must be a finite number, got nan"),
    ("blend", {"alpha": "0.2"}, r"alpha must be a number, got '0.2'"),
    ("blend", {"test_alpha": 0}, r"test_alpha must be in \(0, 1\], got 0"),
    ("blend", {"pattern": "/no/such/kitty.jpeg"}, r"pattern must be .*got '/no/such/kitty.jpeg' \(no such file\)"),
    ("sig", {"delta": -1}, r"delta must be in \(0, 255\], got -1"),
    ("sig", {"delta": 256}, r"delta must be in \(0, 255\], got 256"),
    ("sig", {"frequency": 0}, r"frequency must be in \(0, inf\), got 0"),
    ("bpp", {"levels": 1}, r"levels must be in \[2, 255\], got 1"),
    ("bpp", {"levels": 300}, r"levels must be in \[2, 255\], got 300"),
    ("bpp", {"levels": 8.0}, r"levels must be an integer, got 8.0"),
    ("ftrojan", {"magnitude": -1}, r"magnitude must be in \[0, inf\], got -1"),
    ("ftrojan", {"magnitude": float("inf")}, r"magnitude must be a finite number, got inf"),
    ("ftrojan", {"window_size": 1}, r"window_size must be in \[2, inf\], got 1"),
    ("ftrojan", {"yuv": "yes"}, r"yuv must be true or false, got 'yes'"),
])
def test_bad_parameters_name_parameter_and_value(name, params, message):
    with pytest.raises(TriggerError, match=f"trigger {name}: {message}"):
        TRIGGERS.get(name)(**params)
    with pytest.raises(TriggerError, match=message):
        build_trigger({"name": name, **params}, TriggerContext(shape=(3, 32, 32), seed=0))


# ----------------------------------------------------------------------------------- through the manipulation
@pytest.fixture(scope="module")
def split(synthetic):
    return stratified_split(synthetic.train_labels, 24, seed=0)


@pytest.mark.parametrize("spec", [{"name": "blend", "alpha": 0.2}, {"name": "sig"}, {"name": "bpp", "levels": 4},
                                  {"name": "ftrojan"}])
def test_poison_stamps_the_registered_trigger_in_the_bank(synthetic, split, spec):
    m = manipulate("poison", synthetic, split[0], 12, seed=0, trigger=spec)
    assert m.params["trigger"]["name"] == spec["name"] and m.params["target"] == 0
    assert {k: m.params["trigger"][k] for k in spec} == spec
    assert m.trigger.name == spec["name"] and int(m.triggered.sum()) == 12
    bank = ImageBank(synthetic.train_images, synthetic.mean, synthetic.std, torch.device("cpu"), m.trigger,
                     channels_last=False)
    idx = torch.arange(len(synthetic.train_labels))
    x = bank.batch(idx, m.triggered[idx])
    mean = torch.tensor(synthetic.mean).view(1, -1, 1, 1)
    std = torch.tensor(synthetic.std).view(1, -1, 1, 1)
    pixels = torch.round((x * std + mean) * 255).to(torch.uint8)
    clean = synthetic.train_images
    assert torch.equal(pixels[~m.triggered], clean[~m.triggered])
    assert torch.equal(pixels[m.triggered], m.trigger.stamp(clean[m.triggered], idx[m.triggered]))
    assert not torch.equal(pixels[m.triggered], clean[m.triggered])


def test_poison_records_blend_and_seeds_its_noise(synthetic, split):
    m = manipulate("poison", synthetic, split[0], 10, seed=0, trigger={"name": "blend", "alpha": 0.2})
    assert m.params["trigger"] == {"name": "blend", "alpha": 0.2, "test_alpha": None, "pattern": "noise"}
    again = manipulate("poison", synthetic, split[0], 10, seed=0, trigger={"name": "blend", "alpha": 0.2})
    other = manipulate("poison", synthetic, split[0], 10, seed=1, trigger={"name": "blend", "alpha": 0.2})
    assert torch.equal(m.trigger._pattern, again.trigger._pattern)
    assert not torch.equal(m.trigger._pattern, other.trigger._pattern)
    assert m.trigger._pattern.shape == synthetic.train_images.shape[1:]


def test_sig_as_a_clean_label_attack(synthetic, split):
    m = manipulate("poison", synthetic, split[0], 10, seed=0, target=1, trigger={"name": "sig"}, clean_label=True)
    assert m.params["clean_label"] is True and m.params["trigger"] == {"name": "sig", "delta": 40, "frequency": 6}
    assert torch.equal(m.labels, synthetic.train_labels) and bool((m.labels[m.manipulated] == 1).all())


def test_check_params_refuses_a_bad_trigger_parameter():
    with pytest.raises(ConfigError, match=r"alpha must be in \(0, 1\], got 2"):
        check_params("poison", {"trigger": {"name": "blend", "alpha": 2}})
    with pytest.raises(ConfigError, match="levels"):
        check_params("poison", {"trigger": {"name": "bpp", "levels": 1}})
    with pytest.raises(ConfigError, match="unknown parameter"):
        check_params("poison", {"trigger": {"name": "sig", "amplitude": 3}})
    check_params("poison", {"trigger": {"name": "ftrojan", "magnitude": 50, "window_size": 16}})


def test_a_blend_pattern_file_is_recorded_by_its_content(tmp_path):
    from PIL import Image

    from corrective_unlearning.triggers import TriggerContext, build_trigger

    path = tmp_path / "pattern.png"
    context = TriggerContext(shape=(1, 4, 4), seed=0)
    Image.new("L", (4, 4), color=10).save(path)
    first = build_trigger({"name": "blend", "pattern": str(path)}, context).describe()
    Image.new("L", (4, 4), color=200).save(path)
    second = build_trigger({"name": "blend", "pattern": str(path)}, context).describe()
    assert first["pattern"] == second["pattern"] == str(path)
    assert first["pattern_sha256"] != second["pattern_sha256"]
    assert "pattern_sha256" not in build_trigger({"name": "blend"}, context).describe()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_trigger_parameters_are_refused(value):
    from corrective_unlearning.triggers import TriggerError
    from corrective_unlearning.triggers.sig import Sig

    with pytest.raises(TriggerError, match="delta must be a finite number"):
        Sig(delta=value)
