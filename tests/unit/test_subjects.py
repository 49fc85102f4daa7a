"""GDPR subjects: one address in all its spellings, matched exactly, hashed with every key."""

from __future__ import annotations

import base64

import pytest

from jobs.subjects import SubjectHasher, SubjectMatcher, addresses_in, normalise_subject

KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()


@pytest.mark.parametrize(
    "spelling",
    [
        "ada@example.com",
        "ADA@EXAMPLE.COM",
        "Ada <Ada@Example.com>",
        '"Lovelace, Ada" <ada@example.com>',
        " ada@example.com ",
    ],
)
def test_every_spelling_of_an_address_has_one_canonical_form(spelling: str) -> None:
    assert normalise_subject(spelling) == "ada@example.com"


def test_an_idna_domain_and_its_unicode_form_are_one_subject() -> None:
    assert (
        normalise_subject("User@xn--mnchen-3ya.de")
        == normalise_subject("user@MÜNCHEN.de")
        == "user@münchen.de"
    )


@pytest.mark.parametrize("text", ["ada", "ada@", "@example.com", "a b@example.com"])
def test_a_non_address_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not an e-mail address"):
        normalise_subject(text)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Hello ada@example.com.", True),
        ("<ADA@Example.COM>", True),
        ('{"to": ["Ada <ada@example.com>"]}', True),
        ("bada@example.com", False),
        ("ada@example.com.evil", False),
        ("ada@example.community", False),
        ("ada.b@example.com", False),
    ],
)
def test_the_matcher_finds_the_address_but_never_inside_a_longer_one(text: str, found: bool) -> None:
    assert SubjectMatcher("ada@example.com").found_in(text) is found


def test_the_matcher_finds_idna_unicode_and_json_escaped_spellings() -> None:
    matcher = SubjectMatcher("user@münchen.de")

    assert matcher.found_in("to user@xn--mnchen-3ya.de")
    assert matcher.found_in('{"to":"user@m\\u00fcnchen.de"}')  # Dramatiq's JSON body escapes it
    assert matcher.found_in({"context": {"deep": ["USER@MÜNCHEN.DE"]}})
    assert matcher.redact("a user@xn--mnchen-3ya.de b") == "a [erased] b"


def test_addresses_in_a_payload_are_found_in_any_string_field() -> None:
    payload = {
        "to": ["Ada <Ada@Example.com>"],
        "context": {"note": "cc bob@b.org, or user@xn--mnchen-3ya.de."},
        "params": {"email_to": ["carol@c.net"]},
        "sleep": 1,
    }

    assert addresses_in(payload) == {"ada@example.com", "bob@b.org", "user@münchen.de", "carol@c.net"}
    assert addresses_in({"report": "jobs_summary", "params": {}}) == set()


def test_hashes_are_keyed_written_with_the_current_key_and_looked_up_with_every_key() -> None:
    old = SubjectHasher.from_keys(f"a:{KEY_A}")
    rotated = SubjectHasher.from_keys(f"b:{KEY_B},a:{KEY_A}")
    assert old is not None
    assert rotated is not None

    (stored,) = old.payload_hashes({"to": "Ada <ADA@example.com>"}) or []

    assert stored in rotated.lookup_hashes("ada@example.com")  # a rotation keeps old rows findable
    assert rotated.payload_hashes({"to": "ada@example.com"}) != [stored]
    assert b"ada" not in stored
    assert len(stored) == 32
    assert SubjectHasher.from_keys(None) is None
    assert old.payload_hashes({"sleep": 1}) is None
    assert KEY_A not in repr(old)
