"""The CLI's error boundary: every expected failure becomes one paragraph naming the value and the fix.

`explain(exc)` maps an exception to `(exit_code, message)`: 2 for expected failures (bad config, data,
weights, checkpoint, workdir, disk full), 130 for Ctrl-C, 1 for anything unexpected (a bug: the message
says how to get the traceback). `warn(msg)` reports a recoverable problem (a skipped metrics line, a
checkpoint fallback, a round without uploads) as a `RunWarning`, printed as one `warning:` line.
"""
from __future__ import annotations

import errno
import os
import re
import warnings


class RunError(RuntimeError):
  """An expected failure of a run (workdir, fingerprint, checkpoint, divergence); the message says what
  is wrong and what to do. `exit_code` is what the CLI returns."""
  exit_code = 2


class Interrupted(KeyboardInterrupt):
  """Ctrl-C (SIGINT) stopped the run (still a KeyboardInterrupt for library callers); the message
  names the last complete checkpoint."""
  exit_code = 130


class RunWarning(UserWarning):
  """A recoverable problem the user must hear about (printed as one `warning:` line by the CLI)."""


def warn(msg: str) -> None:
  warnings.warn(msg, RunWarning, stacklevel=2)


def _chain(exc: BaseException):
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    yield exc
    exc = exc.__cause__ or exc.__context__


def _os_message(e: OSError) -> str:
  where = f" {e.filename!r}" if e.filename else ""
  if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
    return (f"no space left writing{where} ({e.strerror or e}): free disk space (or raise the quota / "
            "file-size limit) and rerun the same command to resume from the last checkpoint, or use "
            "another --config.workdir")
  if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
    return (f"cannot write{where} ({e.strerror or e}): choose a writable --config.workdir (or fix the "
            "folder's permissions)")
  if e.errno == errno.ENOENT:
    return f"no such file or folder{where}: check the path in the config or on the command line"
  return (f"{e.strerror or e}{where}: check the path (a --config.workdir must be a folder you can "
          "write to)")


def explain(exc: BaseException) -> tuple[int, str]:
  """`(exit_code, one-paragraph message)` for an exception reaching the CLI."""
  if isinstance(exc, Interrupted):
    return exc.exit_code, str(exc)
  if isinstance(exc, KeyboardInterrupt):
    return 130, "interrupted (Ctrl-C); rerun the same command to resume from the last checkpoint"
  if isinstance(exc, RunError):
    return exc.exit_code, str(exc)
  for e in _chain(exc):  # disk full etc. may arrive wrapped (e.g. by orbax's writer threads)
    if isinstance(e, OSError) and not isinstance(e, FileNotFoundError) and e.errno is not None:
      return 2, _os_message(e)
  for e in _chain(exc):  # tensorstore (orbax) reports OS errors inside a ValueError's text
    code = re.search(r"os_error_code='(\d+)'", str(e))
    if code and int(code.group(1)) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES,
                                       errno.EROFS, errno.EPERM):
      where = re.search(r'(?:Failed writing|local file): "([^"]+)"', str(e))
      n = int(code.group(1))
      return 2, _os_message(OSError(n, os.strerror(n), where.group(1) if where else None))
  if isinstance(exc, FileNotFoundError) and exc.errno is not None and exc.filename:
    return 2, _os_message(exc)
  if isinstance(exc, (ValueError, FileNotFoundError)):  # ConfigError, data, weights, JSON
    return 2, " ".join(str(exc).split("\n"))
  return 1, (f"unexpected {type(exc).__name__}: {str(exc)[:500]}. This is probably a bug; rerun with "
             "--config.debug=True to see the traceback")
