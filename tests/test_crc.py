"""CRC attachment and checking of TS 38.212 §5.1."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airan.backend import probe_cupy
from airan.core.errors import FieldError
from airan.ran.phy.crc import (
    POLYNOMIALS,
    crc_attach,
    crc_check,
    crc_length,
    crc_parity,
    generator_int,
)

POLYS = list(POLYNOMIALS)


def long_division(bits: npt.NDArray[np.uint8], poly: str) -> list[int]:
    """Reference: remainder of a(D) D^L by g(D), by bitwise long division."""
    g = generator_int(poly)
    length = crc_length(poly)
    r = 0
    for b in [*bits.tolist(), *([0] * length)]:
        r = (r << 1) | int(b)
        if r >> length:
            r ^= g
    return [(r >> (length - 1 - i)) & 1 for i in range(length)]


def test_generator_polynomials_are_those_of_the_spec() -> None:
    # TS 38.212 §5.1, e.g. gCRC24A = D^24+D^23+D^18+D^17+D^14+D^11+D^10+D^7+D^6+D^5+D^4+D^3+D+1
    assert generator_int("24A") == 0x1864CFB
    assert generator_int("24B") == 0x1800063
    assert generator_int("24C") == 0x1B2B117
    assert generator_int("16") == 0x11021
    assert generator_int("11") == 0xE21
    assert generator_int("6") == 0x61
    assert [crc_length(p) for p in POLYS] == [24, 24, 24, 16, 11, 6]


@pytest.mark.parametrize("poly", POLYS)
@pytest.mark.parametrize("n", [1, 7, 24, 100, 1000, 16384, 16385, 40_000])
def test_parity_matches_long_division(poly: str, n: int) -> None:
    rng = np.random.default_rng(n)
    bits = rng.integers(0, 2, (2, 3, n), dtype=np.uint8)
    parity = crc_parity(bits, poly)
    assert parity.shape == (2, 3, crc_length(poly))
    assert parity.dtype == np.uint8
    want = np.array([long_division(b, poly) for b in bits.reshape(-1, n)])
    np.testing.assert_array_equal(parity.reshape(-1, crc_length(poly)), want)


def test_catalogue_check_values() -> None:
    # CRC of ASCII "123456789", init 0, no reflection (CRC RevEng catalogue:
    # CRC-24/LTE-A, CRC-24/LTE-B, CRC-16/XMODEM).
    bits = np.unpackbits(np.frombuffer(b"123456789", dtype=np.uint8))
    for poly, check in (("24A", 0xCDE703), ("24B", 0x23EF52), ("16", 0x31C3)):
        p = crc_parity(bits, poly)
        assert int("".join(map(str, p.tolist())), 2) == check, poly


@pytest.mark.parametrize("poly", POLYS)
def test_attach_then_check(poly: str) -> None:
    bits = np.random.default_rng(5).integers(0, 2, (4, 333), dtype=np.uint8)
    block = crc_attach(bits, poly)
    assert block.shape == (4, 333 + crc_length(poly))
    np.testing.assert_array_equal(block[:, :333], bits)
    assert crc_check(block, poly).all()
    # The whole block is divisible by g(D): its own parity is zero.
    assert not crc_parity(block, poly).any()


@settings(max_examples=60, deadline=None)
@given(
    poly=st.sampled_from(POLYS),
    data=st.lists(st.integers(0, 1), min_size=1, max_size=300),
    flip=st.integers(min_value=0),
)
def test_any_single_bit_error_is_detected(poly: str, data: list[int], flip: int) -> None:
    block = crc_attach(np.asarray(data, dtype=np.uint8), poly)
    assert bool(crc_check(block, poly))
    bad = block.copy()
    bad[flip % bad.size] ^= 1
    assert not bool(crc_check(bad, poly))


def test_batch_check_flags_only_the_corrupted_block() -> None:
    block = crc_attach(np.random.default_rng(2).integers(0, 2, (5, 64), dtype=np.uint8), "24B")
    block[3, 10] ^= 1
    np.testing.assert_array_equal(crc_check(block, "24B"), [True, True, True, False, True])


def test_bad_input() -> None:
    with pytest.raises(FieldError) as e:
        crc_parity(np.zeros(8, np.uint8), "24D")
    assert e.value.field == "crc.poly"
    with pytest.raises(FieldError) as e:
        crc_check(np.zeros(10, np.uint8), "16")
    assert e.value.field == "crc.block"
    with pytest.raises(FieldError) as e:
        crc_parity(np.uint8(1), "16")
    assert e.value.field == "crc.bits"


@pytest.mark.gpu
def test_cupy_matches_numpy() -> None:
    if probe_cupy() is None:
        pytest.skip("no usable CUDA device")
    import cupy as cp

    bits = np.random.default_rng(9).integers(0, 2, (6, 4000), dtype=np.uint8)
    for poly in POLYS:
        got = crc_attach(cp.asarray(bits), poly)
        assert isinstance(got, cp.ndarray)
        np.testing.assert_array_equal(cp.asnumpy(got), crc_attach(bits, poly))
        assert bool(crc_check(got, poly).all())
