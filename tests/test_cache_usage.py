"""cache_usage.analyse: usage per BuildKit scope and what is safe to prune (plain data, no service)."""

from __future__ import annotations

import datetime

from ci.cache_usage import CacheEntry, analyse, ref_hash

NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.UTC)
OLD = "2026-11-20T12:00:00Z"
MAIN = ref_hash("refs/heads/main")


def entry(id_: int, key: str, size: int, created: str = OLD, ref: str = "refs/heads/main") -> CacheEntry:
    return CacheEntry(id=id_, key=key, ref=ref, size=size, created_at=created, last_accessed_at=created)


def blob(id_: int, digest: str, size: int, created: str = OLD) -> CacheEntry:
    return entry(id_, f"buildkit-blob-1-sha256:{digest * 64}", size, created)


def test_a_superseded_index_and_the_blobs_only_it_listed_are_prunable_the_current_ones_are_not() -> None:
    entries = [blob(1, "a", 100), blob(2, "b", 200), blob(3, "c", 300),
               entry(4, f"index-dimbybot2-bot-1-{MAIN}#1", 10), entry(5, f"index-dimbybot2-bot-1-{MAIN}#2", 11)]
    usage = analyse(entries, {5: {"sha256:" + "a" * 64, "sha256:" + "c" * 64}}, quota_bytes=10_000, now=NOW)
    assert {e.id: why for e, why in usage.prunable} == {
        2: "blob no current index references", 4: "superseded index of scope dimbybot2-bot (generation 1)"}
    (scope,) = usage.scopes
    assert (scope.scope, scope.bytes, scope.current_indexes) == ("dimbybot2-bot", 100 + 300 + 10 + 11, [f"index-dimbybot2-bot-1-{MAIN}#2"])


def test_an_index_the_token_cannot_read_keeps_every_blob() -> None:
    pr = ref_hash("refs/pull/7/merge")
    entries = [blob(1, "a", 100), entry(2, f"index-dimbybot2-bot-1-{pr}#1", 10, ref="refs/pull/7/merge")]
    usage = analyse(entries, {2: None}, now=NOW)
    assert usage.prunable == [] and usage.scopes[0].unreadable == [f"index-dimbybot2-bot-1-{pr}#1"]


def test_entries_younger_than_min_age_are_kept_a_build_may_be_exporting() -> None:
    fresh = (NOW - datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    usage = analyse([blob(1, "a", 100, created=fresh)], {}, now=NOW, min_age_seconds=3600)
    assert usage.prunable == []


def test_a_scope_over_its_share_of_the_quota_gets_the_min_mode_advice() -> None:
    entries = [blob(1, "a", 800), blob(2, "b", 50), entry(3, f"index-dimbybot2-bot-1-{MAIN}#1", 10),
               entry(4, f"index-dimbybot2-lavalink-1-{MAIN}#1", 10)]
    usage = analyse(entries, {3: {"sha256:" + "a" * 64}, 4: {"sha256:" + "b" * 64}}, quota_bytes=1000, now=NOW)
    assert len(usage.recommendations) == 1 and "scope dimbybot2-bot" in usage.recommendations[0]
    assert "--cache-mode=min" in usage.recommendations[0]
