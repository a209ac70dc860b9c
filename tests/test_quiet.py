"""aimass.quiet: a dependency's own logging and warnings are silenced inside one call and only there."""

from __future__ import annotations

import logging
import warnings

import pytest

from aimass.quiet import silenced


def test_silenced_logger_and_warnings_inside_only(capfd: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("aimass-test-dependency")
    handler = logging.StreamHandler()  # writes to this process's stderr, as torch's loggers do
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with silenced(loggers=("aimass-test-dependency",), categories=(FutureWarning,)):
            logging.getLogger("aimass-test-dependency.child").warning("torchvision is not installed")
            warnings.warn("deprecated inside", FutureWarning, stacklevel=1)
            logger.error("a real failure still shows")
        assert logger.level == logging.NOTSET  # put back as it was
        logger.warning("outside the call: shown")
        with pytest.warns(FutureWarning, match="outside"):
            warnings.warn("outside", FutureWarning, stacklevel=1)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    err = capfd.readouterr().err
    assert "torchvision" not in err
    assert "deprecated inside" not in err
    assert "a real failure still shows" in err
    assert "outside the call: shown" in err


def test_silenced_never_lowers_a_level_the_user_raised() -> None:
    logger = logging.getLogger("aimass-test-quiet-critical")
    logger.setLevel(logging.CRITICAL)
    try:
        with silenced(loggers=("aimass-test-quiet-critical",)):
            assert logger.level == logging.CRITICAL
        assert logger.level == logging.CRITICAL
    finally:
        logger.setLevel(logging.NOTSET)


def test_silenced_restores_on_error() -> None:
    with pytest.raises(RuntimeError), silenced(loggers=("aimass-test-quiet-error",), messages=("x",)):
        raise RuntimeError("boom")
    assert logging.getLogger("aimass-test-quiet-error").level == logging.NOTSET
    with pytest.warns(UserWarning, match="x marks"):
        warnings.warn("x marks the spot", UserWarning, stacklevel=1)
