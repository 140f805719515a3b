"""The words of a failed open (``firmware_host/transport/openerror.py``), checked
against the errno table of Linux and the hints the module documents (tests
written from mutation testing, docs/testing-internals.md)."""

from __future__ import annotations

import errno
import socket

import pytest
import serial

from firmware_host.errors import PortClosed
from firmware_host.transport.openerror import open_failed, open_reason

pytestmark = pytest.mark.timeout(10)

EACCES = "permission denied: add the user to the dialout group (or see docs/service.md for a udev rule)"
ENOENT = "no such port: `firmware-host devices` lists the serial ports of this host"


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (OSError(errno.EACCES, "Permission denied"), EACCES),
        (OSError(errno.EPERM, "Operation not permitted"), EACCES),
        (OSError(errno.ENOENT, "No such file or directory"), ENOENT),
        (OSError(errno.EMFILE, "x"), "too many open files; raise the limit: ulimit -n / LimitNOFILE="),
        (OSError(errno.ENFILE, "x"), "too many open files in the system; raise the limit: ulimit -n / LimitNOFILE="),
        # no hint: the errno alone, in the system's words (not the raiser's)
        (OSError(errno.EBUSY, "whatever was said"), "[Errno 16] Device or resource busy"),
        (OSError(errno.EIO, "x"), "[Errno 5] Input/output error"),
    ],
)
def test_an_errno_gives_its_hint_or_its_own_words(exc, reason):
    assert open_reason(exc) == reason


def test_pyserials_doubled_words_become_one_reason():
    exc = serial.SerialException(
        errno.ENOENT, "could not open port /dev/x: [Errno 2] No such file or directory: '/dev/x'"
    )
    assert open_reason(exc) == ENOENT
    exc = serial.SerialException(errno.EBUSY, "could not open port /dev/x: [Errno 16] Device or resource busy")
    assert open_reason(exc) == "[Errno 16] Device or resource busy"


def test_words_of_the_raisers_own_after_pyserials_prefix_are_kept():
    exc = serial.SerialException(errno.EBUSY, "could not open port /dev/x: held by another test")
    assert open_reason(exc) == "held by another test"
    # without the prefix, the errno's words
    exc = serial.SerialException(errno.EBUSY, "port /dev/x: held by another test")
    assert open_reason(exc) == "[Errno 16] Device or resource busy"


def test_an_error_without_an_errno_is_said_as_it_is():
    assert open_reason(ValueError("bad baudrate")) == "bad baudrate"
    assert open_reason(ValueError()) == "ValueError"
    assert open_reason(OSError("no errno")) == "no errno"
    assert open_reason(OSError()) == "OSError"
    assert open_reason(serial.SerialException("Port is already open.")) == "Port is already open."


def test_an_errno_of_zero_or_below_is_not_looked_up():
    assert open_reason(OSError(0, "nothing")) == "[Errno 0] nothing"
    gai = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert open_reason(gai) == f"[Errno {socket.EAI_NONAME}] Name or service not known"


def test_an_oserror_whose_strerror_is_not_text():
    exc = OSError(errno.EBUSY, "x")
    exc.strerror = None  # type: ignore[assignment]
    assert open_reason(exc) == "[Errno 16] Device or resource busy"


def test_open_failed_names_the_port_once():
    exc = open_failed("/dev/ttyUSB9", OSError(errno.ENOENT, "No such file or directory"))
    assert isinstance(exc, PortClosed)
    assert str(exc) == f"cannot open /dev/ttyUSB9: {ENOENT}"
