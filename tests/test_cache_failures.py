"""cache.describe_failure: BuildKit's cache errors in words, without signed URLs' signatures.

The error texts are BuildKit's own, as tests/test_gha_cache.py saw them from Docker 28.5."""

from __future__ import annotations

from ci import cache


def test_throttling_names_the_429_and_the_timeout() -> None:
    text = cache.describe_failure("error writing layer blob: maximum timeout reached: resource_exhausted")
    assert "HTTP 429" in text and "export timeout" in text and "resource_exhausted" in text


def test_a_server_error_and_an_unreachable_service() -> None:
    assert "HTTP 500" in cache.describe_failure("error writing layer blob: internal")
    refused = 'Post "http://127.0.0.1:9/twirp/x": dial tcp 127.0.0.1:9: connect: connection refused'
    assert cache.describe_failure(refused).startswith("the cache service was unreachable")


def test_a_missing_blob_is_named_and_its_signed_url_loses_the_signature() -> None:
    error = ("failed to copy: GET http://127.0.0.1:1/devstoreaccount1/c/19-96?sv=2021-08-06&sp=r&sig=SECRETSIG\n"
             "RESPONSE 404: 404 The specified blob does not exist.\nERROR CODE: BlobNotFound")
    text = cache.describe_failure(error)
    assert cache.is_missing_blob(error) and "missing (evicted or deleted)" in text
    assert "SECRETSIG" not in text and "sig=" not in text


def test_an_unknown_error_is_kept_as_is() -> None:
    assert cache.describe_failure("something else") == "something else"


def test_signed_blob_urls_lose_their_signature_and_nothing_else() -> None:
    text = ('{"error": "GET https://acct.blob.example/c/sha256:ab?sv=2023&se=2026&sp=r&sig=S3CR3T%3D: BlobNotFound"}\n'
            '{"name": "RUN pip download https://pypi.example/simple/x/?page=2"}\n'
            '{"error": "GET http://127.0.0.1:1/devstoreaccount1/c/k?sp=r&sig=T0P%2F\\n----"}\n')  # JSON-escaped newline
    redacted = cache.redact_signed_urls(text)
    assert "S3CR3T" not in redacted and "https://acct.blob.example/c/sha256:ab?<signature removed>: BlobNotFound" in redacted
    assert "https://pypi.example/simple/x/?page=2" in redacted  # an ordinary query stays
    assert "http://127.0.0.1:1/devstoreaccount1/c/k?<signature removed>\\n----" in redacted and "T0P" not in redacted
