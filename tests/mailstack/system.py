"""Commands, files and templates: what every part of the stack writes and runs."""

import os
import pathlib
import string
import subprocess
import sys

TEMPLATES = pathlib.Path(__file__).parent / "templates"


class StackError(RuntimeError):
    pass


def say(message):
    print("mailstack: " + message, file=sys.stderr, flush=True)


def run(cmd, check=True, env=None, timeout=600, log=None):
    """Run a short command; never lets it write to our stdout/stderr."""
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=env, timeout=timeout, text=True)
    if log:
        with open(log, "a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n{res.stdout}")
    if check and res.returncode != 0:
        raise StackError(f"command failed (rc={res.returncode}): {' '.join(cmd)}\n{res.stdout[-4000:]}")
    return res


def write_file(path, content, mode=0o644, uid=None, gid=None):
    """Write atomically if content differs.  Returns True if it changed."""
    data = content.encode() if isinstance(content, str) else content
    try:
        with open(path, "rb") as fh:
            same = fh.read() == data
    except OSError:
        same = False
    if not same:
        tmp = f"{path}.tmp.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    os.chmod(path, mode)
    if uid is not None or gid is not None:
        os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
    return not same


def make_dir(path, mode=0o755, uid=None, gid=None):
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    if uid is not None or gid is not None:
        os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)


class ConfigTemplate(string.Template):
    """``{{name}}`` placeholders.  ``$`` means something in Postfix, Dovecot and
    rspamd configuration alike (``$myhostname``, ``$mail_plugins``,
    ``$CONFDIR``); ``{{`` means nothing in any of them, so the templates need
    no escaping.  A ``{{`` that does not open a placeholder is an error."""

    pattern = r"""
        \{\{(?:
            (?P<named>[a-z_][a-z0-9_]*)\}\}
          | (?P<escaped>(?!))
          | (?P<braced>(?!))
          | (?P<invalid>)
        )"""


def render_file(path, values):
    """The template file at path filled with values; KeyError names a
    placeholder without a value."""
    return ConfigTemplate(pathlib.Path(path).read_text()).substitute(values)


def render(template, **values):
    """A template of the stack's (a path under templates/) filled with values."""
    return render_file(TEMPLATES / template, values)
