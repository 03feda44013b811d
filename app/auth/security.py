"""Password hashing, random tokens and their stored hashes."""

import hashlib
import hmac
import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# argon2id with argon2-cffi's current defaults (RFC 9106 "low memory" profile). When those
# defaults change, hashes made with the old ones are upgraded at the next successful login.
_hasher = PasswordHasher()

API_TOKEN_PREFIX = "rl_"


@cache
def _unknown_user_hash() -> str:
    # Made on first use, not at import: hashing costs a fraction of a second of CPU.
    return _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def verify_unknown_user(password: str) -> bool:
    """Spends a password check's time on a login whose email has no account, so that the response
    time does not tell which emails have accounts. Always False."""
    verify_password(_unknown_user_hash(), password)
    return False


def password_needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other (older) argon2 parameters than the current ones."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


def new_token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """Tokens are high-entropy random strings, so a fast hash is enough (unlike passwords)."""
    return hashlib.sha256(token.encode()).hexdigest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
