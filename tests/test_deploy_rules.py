"""The deploy's pure rules, as examples: commit order from real git history, key normalising,
digest pins, the report and the Discord message. (The deploy itself: tests/test_deploy.py.)"""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

from ci import deploy, deploy_order, deploy_report
from ci.deploy_order import Relation
from ci.errors import InputError

BOT = "sha256:" + "b" * 64


def git(repo: pathlib.Path, *argv: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", "-C", str(repo), *argv], check=True, capture_output=True, text=True, env=env).stdout.strip()


@pytest.fixture
def repo(tmp_path: pathlib.Path) -> pathlib.Path:
    """main: A -> B -> C; a branch `side` from A: D; an orphan history: E."""
    git(tmp_path, "init", "-q", "-b", "main")
    for name in "ABC":
        git(tmp_path, "commit", "-q", "--allow-empty", "-m", name)
        git(tmp_path, "tag", name)
    git(tmp_path, "checkout", "-q", "-b", "side", "A")
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "D")
    git(tmp_path, "tag", "D")
    git(tmp_path, "checkout", "-q", "--orphan", "other")
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "E")
    git(tmp_path, "tag", "E")
    return tmp_path


def sha(repo: pathlib.Path, name: str) -> str:
    return git(repo, "rev-parse", f"{name}^{{commit}}")


@pytest.mark.parametrize(("deployed", "new", "relation"), [
    (None, "C", Relation.FIRST), ("C", "C", Relation.SAME), ("A", "C", Relation.NEWER), ("C", "A", Relation.OLDER),
    ("C", "D", Relation.DIVERGED), ("C", "E", Relation.DIVERGED),
])
def test_the_order_of_two_commits_comes_from_git_history(repo: pathlib.Path, deployed: str | None, new: str,
                                                         relation: Relation) -> None:
    check = deploy_order.check(repo, sha(repo, deployed) if deployed else None, sha(repo, new))
    assert check.relation is relation
    assert check.allowed == (relation in (Relation.FIRST, Relation.SAME, Relation.NEWER))


def test_a_deployed_commit_missing_from_the_history_cannot_be_ordered(repo: pathlib.Path) -> None:
    check = deploy_order.check(repo, "f" * 40, sha(repo, "C"))
    assert check.relation is Relation.UNKNOWN and not check.allowed
    assert check.reason() == f"{sha(repo, 'C')[:12]} is not comparable with the deployed commit ffffffffffff " \
                             f"(ffffffffffff is not in the history of {repo})"
    assert deploy_order.check(None, "f" * 40, sha(repo, "C")).relation is Relation.UNKNOWN
    assert deploy_order.check(repo, "v1.2", sha(repo, "C")).relation is Relation.UNKNOWN


def test_an_ssh_key_is_normalised_to_lf_with_a_final_newline() -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\ndef\n-----END OPENSSH PRIVATE KEY-----\n"
    assert deploy.normalise_key(key.strip()) == key
    assert deploy.normalise_key(key.replace("\n", "\r\n")) == key
    assert deploy.normalise_key("\n  " + key + "\n\n") == key


def test_digests_name_an_image_and_a_full_sha256() -> None:
    repositories = {"bot": "dimbybot2-bot", "lavalink": "dimbybot2-lavalink"}
    assert deploy.parse_pins([f"bot={BOT}"], repositories) == (deploy.Pin("bot", "dimbybot2-bot", BOT),)
    for bad, message in ((f"web={BOT}", "is not NAME=sha256:... with NAME one of bot, lavalink"),
                         ("bot=sha256:abc", "'sha256:abc' is not sha256:<64 hex>"),
                         (BOT, "is not NAME=sha256:...")):
        with pytest.raises(InputError, match="--digest") as caught:
            deploy.parse_pins([bad], repositories)
        assert message in str(caught.value)
    with pytest.raises(InputError, match="pinned twice"):
        deploy.parse_pins([f"bot={BOT}", f"bot={BOT}"], repositories)


def test_keep_alives_notice_a_dead_link_in_seconds() -> None:
    request = deploy.DeployRequest(host="example.org", user="deploy", tag="t", registry="ghcr.io/o", remote_dir="/srv/bot")
    argv = deploy.ssh_argv(request, pathlib.Path("k"), pathlib.Path("h"))
    assert "ServerAliveInterval=5" in argv and "ServerAliveCountMax=3" in argv and "StrictHostKeyChecking=yes" in argv


def test_the_password_reaches_the_host_unexported_and_on_stdin_only() -> None:
    request = deploy.DeployRequest(host="example.org", user="deploy", tag="t", registry="ghcr.io/o", remote_dir="/srv/bot")
    text = deploy.payload(request, "start", job="j1", password="pa'ss", script="")
    assert "\nDEPLOY_REGISTRY_PASSWORD='pa'\"'\"'ss'\n" in text  # a plain shell variable, not `export`ed
    assert "export DEPLOY_JOB=j1" in text


def result(code: int, **report: str) -> deploy.DeployResult:
    return deploy.DeployResult(code, {k.replace("_", " "): v for k, v in report.items()},
                               {"bot": "healthy", "lavalink": "healthy"}, [], job="20261124T000000Z-abcd")


def test_the_report_says_commit_digests_health_and_rollback() -> None:
    request = deploy.DeployRequest(host="example.org", user="deploy", tag="a" * 40, registry="ghcr.io/o", remote_dir="/srv/bot",
                                   pins=(deploy.Pin("bot", "dimbybot2-bot", BOT),), environment="staging")
    rolled = result(1, result="rolled back", rolled_back="yes, to " + "9" * 40, old_tag="9" * 40, reason="bot unhealthy")
    text = deploy_report.markdown(request, rolled)
    assert text.startswith("## Deploy to staging: ⚠️ failed\n")
    assert f"| bot | `ghcr.io/o/dimbybot2-bot@{BOT}` |" in text and "| rolled back | yes, to 999" in text
    message = deploy_report.discord_message(request, rolled)
    fields = {f["name"]: f["value"] for f in message["embeds"][0]["fields"]}
    assert message["embeds"][0]["title"] == "staging: failed"
    assert fields["rolled back"].startswith("yes, to 999") and fields["reason"] == "bot unhealthy"
    assert message["allowed_mentions"] == {"parse": []}  # a reason text can never ping anyone
    assert deploy_report.to_dict(request, rolled)["digests"] == {"bot": BOT}


def test_a_webhook_url_must_be_https_except_to_a_loopback_stand_in() -> None:
    assert deploy_report.check_webhook_url("https://discord.com/api/webhooks/1/x")
    assert deploy_report.check_webhook_url("http://127.0.0.1:8080/api/webhooks/1/x")
    with pytest.raises(InputError) as caught:
        deploy_report.check_webhook_url("http://discord.example/api/webhooks/1/SECRET")
    assert "SECRET" not in str(caught.value)
