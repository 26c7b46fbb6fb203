"""The stack's users: addresses, passwords and their files, Maildirs.

Each user's password is in DIR/secrets/<user>.password (what the plugin is
given with --smtp-password-file); the first passwords ever made are kept in
initial-passwords.json, so that reset() can undo set().
"""

import json
import os
import secrets

from .config import DOMAIN, USERS
from .system import write_file


def local_part(user):
    """"probe", "Probe@example.test" -> "probe"."""
    return user.split("@", 1)[0].lower()


def address(user):
    return f"{local_part(user)}@{DOMAIN}"


class Accounts:
    def __init__(self, secrets_dir, mail_dir):
        self.secrets_dir = secrets_dir
        self.mail_dir = mail_dir
        self.initial_passwords = os.path.join(secrets_dir, "initial-passwords.json")

    def password_file(self, user):
        return os.path.join(self.secrets_dir, f"{local_part(user)}.password")

    def password(self, user):
        with open(self.password_file(user)) as fh:
            return fh.read()

    def mailbox_path(self, user):
        """The user's Maildir (may not exist before the first delivery)."""
        return os.path.join(self.mail_dir, DOMAIN, local_part(user), "Maildir")

    def ensure(self):
        """A random password for every user that has none yet."""
        try:
            with open(self.initial_passwords) as fh:
                initial = json.load(fh)
        except (OSError, ValueError):
            initial = {}
        for user in USERS:
            if user not in initial:
                initial[user] = secrets.token_urlsafe(18)
        write_file(self.initial_passwords, json.dumps(initial, indent=1, sort_keys=True), 0o600)
        for user in USERS:
            if not os.path.exists(self.password_file(user)):
                write_file(self.password_file(user), initial[user], 0o600)

    def set(self, user, password):
        """Change a user's password file (Dovecot's passwd-file is the caller's)."""
        if any(c in password for c in ":\n\r\0"):
            raise ValueError("password must not contain ':' or line breaks")
        name = local_part(user)
        if name not in USERS:
            raise KeyError(user)
        write_file(self.password_file(name), password, 0o600)

    def reset(self):
        """Every user back to the first password made for it."""
        with open(self.initial_passwords) as fh:
            initial = json.load(fh)
        for user in USERS:
            write_file(self.password_file(user), initial[user], 0o600)
