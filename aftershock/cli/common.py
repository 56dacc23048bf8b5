"""What every command group shares: the program name, error handling (``aftershock: error: <message>``,
exit status 2, no traceback), argument types, flags generated from the config dataclasses, and small
helpers of the build/search commands."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import gzip
import os
import sys
import zlib
from pathlib import Path

from aftershock.errors import AftershockError, FormatError

PROG = "aftershock"
USER_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def _field_type(f: dataclasses.Field):
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    base = t.replace(" ", "").split("|")[0]  # "int | None" -> int
    return _TYPES.get(base, str)


def config_fields(cls, names=None, exclude=()) -> list[dataclasses.Field]:
    """The fields of dataclass ``cls`` (all, or ``names`` in that order), minus ``exclude``."""
    fs = {f.name: f for f in dataclasses.fields(cls)}
    picked = [fs[n] for n in names] if names is not None else list(fs.values())
    return [f for f in picked if f.name not in exclude]


def add_config_flags(group, cls, names=None, exclude=(), defaults: bool = False) -> list[str]:
    """Add one ``--field-name`` flag per field of config dataclass ``cls`` (type, default, help and choices
    from one source: the dataclass and its module's ``FIELD_HELP`` / ``FIELD_CHOICES``). With ``defaults``
    False a flag that is not given is None (the dataclass default applies); returns the field names."""
    module = sys.modules[cls.__module__]
    helps, choices = getattr(module, "FIELD_HELP", {}), getattr(module, "FIELD_CHOICES", {})
    added = []
    for f in config_fields(cls, names, exclude):
        default = f.default if f.default is not dataclasses.MISSING else None
        text = helps.get(f.name, f.name.replace("_", " "))
        if defaults:
            text = f"{text} (default %(default)s)"
        elif default is not None:
            text = f"{text} (default {default})"
        group.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=_field_type(f),
                           choices=choices.get(f.name), default=default if defaults else None,
                           metavar=None if f.name in choices else f.name.upper(), help=text)
        added.append(f.name)
    return added


def given(args, names) -> dict:
    """The flags among ``names`` that were given (not None)."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def check_trec_id(value: str, what: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise FormatError(f"{what} {value!r} is empty or contains whitespace, which a TREC run cannot hold; "
                          "fix the id file")
    return value


def vocab_arg(path):
    from aftershock.index import Vocabulary

    if path is None:
        return None
    if not Path(path).exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    return Vocabulary.from_file(path)


def guess_format(path: str, fmt: str | None) -> str:
    if fmt:
        return fmt
    from aftershock.index.formats import guess_format as guess

    return guess(path)


def close_bars() -> None:
    """Close every open progress bar (each ends its line), so what is printed next starts on a line of its own
    instead of after a half-drawn bar."""
    tqdm = sys.modules.get("tqdm.std")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ()) or ()):
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - a bar that cannot close must not hide the error itself
            pass


def error(msg: str) -> int:
    """Print ``aftershock: error: msg`` on stderr (on a line of its own); returns the exit status 2."""
    close_bars()
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return 2


def exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def guarded(call) -> int:
    """Run ``call()`` and turn user errors into exit statuses: `AftershockError` and missing files -> 2 with
    one ``aftershock: error:`` line, argparse's SystemExit -> its code, Ctrl-C -> 130, a closed pipe -> 141."""
    try:
        return int(call() or 0)
    except SystemExit as e:  # argparse errors (2), --help (0), a suite's own exit
        return exit_code(e.code)
    except AftershockError as e:
        return error(str(e))
    except BrokenPipeError:
        return _broken_pipe()
    except OSError as e:  # missing/unreadable files, a full disk, a bad gzip stream, ...
        return error(os_error_message(e))
    except (UnicodeError, EOFError, zlib.error) as e:
        return error(f"a file could not be decoded ({type(e).__name__}: {e}); check that it is UTF-8 text or a "
                     "valid gzip file")
    except MemoryError:
        return error("out of memory; lower the batch size, k or --threads, or use a machine with more memory")
    except KeyboardInterrupt:
        close_bars()
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _broken_pipe() -> int:
    """stdout closed early (e.g. `aftershock demo | head`): stop quietly with 141."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return 141


def os_error_message(e: OSError) -> str:
    """One line for an OSError, with the fix where there is an obvious one."""
    where = f"{e.filename}: " if e.filename else ""
    text = e.strerror or str(e) or type(e).__name__
    if isinstance(e, gzip.BadGzipFile):
        return f"{text or e}: the file is not valid gzip; re-create it or drop the .gz suffix"
    if e.errno == errno.ENOSPC:
        return f"{where}no space left on device; free space or write to another disk (nothing was replaced)"
    if e.errno == errno.EDQUOT:
        return f"{where}disk quota exceeded; free space or write elsewhere"
    if isinstance(e, PermissionError):
        return f"{where}permission denied; check the file's permissions or choose another path"
    if e.errno == errno.EROFS:
        return f"{where}read-only file system; write to another path"
    return f"{where}{text}"
