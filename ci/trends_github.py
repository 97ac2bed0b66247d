"""The build reports of a workflow's last runs, straight from GitHub's REST API.

  GET /repos/{repo}/actions/workflows/{workflow}/runs?branch=&status=completed   the runs, newest first
  GET /repos/{repo}/actions/runs/{id}/artifacts?name=build-report               each run's report artifact
  GET {archive_download_url}                                                     302 to blob storage: a zip
  GET /repos/{repo}/actions/cache/usage                                          the repository's cache size
The token goes to the API only: the artifact download is redirected to another host, and the
redirect is followed without the Authorization header (urllib would forward it).
"""

from __future__ import annotations

import dataclasses
import io
import json
import pathlib
import re
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from typing import Any

from .errors import InputError, PipelineError
from .trends import CacheUsage, Collection, Problem, ReportError, RunInfo, read_report, sort_runs

API_URL = "https://api.github.com"
QUOTA_BYTES = 10 * 1000**3  # GitHub's default Actions cache quota per repository (10 GB)
_REPOSITORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$")
_TIMEOUT = 30


@dataclasses.dataclass(frozen=True)
class Source:
    repository: str  # owner/name
    workflow: str  # file name (deploy.yml) or numeric id
    branch: str | None = None
    last: int = 20
    artifact: str = "build-report"
    api_url: str = API_URL
    quota_bytes: int = QUOTA_BYTES

    def validated(self) -> Source:
        if not _REPOSITORY.match(self.repository):
            raise InputError("--github", f"expected OWNER/REPO, got {self.repository!r}")
        if not self.workflow.strip() or "/" in self.workflow:
            raise InputError("--workflow", f"expected a workflow file name such as deploy.yml, got {self.workflow!r}")
        if not 1 <= self.last <= 1000:
            raise InputError("--last", f"must be between 1 and 1000, got {self.last}")
        if urllib.parse.urlsplit(self.api_url).scheme not in ("http", "https"):
            raise InputError("--api-url", f"expected an http(s) URL, got {self.api_url!r}")
        return self


class _KeepRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # surfaces the 3xx as an HTTPError: we follow it ourselves, without the token


class Client:
    """A few GET calls against the REST API, with errors turned into one-line PipelineErrors."""

    def __init__(self, api_url: str, token: str) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token
        self._opener = urllib.request.build_opener(_KeepRedirects)

    def _request(self, url: str, with_token: bool) -> urllib.request.Request:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "dimbybot-ci"}
        if with_token:
            headers["Authorization"] = f"Bearer {self._token}"
        return urllib.request.Request(url, headers=headers)

    def _same_origin(self, url: str) -> bool:
        a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(self.api_url)
        return (a.scheme, a.netloc) == (b.scheme, b.netloc)

    def get(self, url: str, hops: int = 3) -> bytes:
        if not url.startswith(("http://", "https://")):
            url = self.api_url + url
        try:
            with self._opener.open(self._request(url, self._same_origin(url)), timeout=_TIMEOUT) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as error:
            location = error.headers.get("Location") if error.code in (301, 302, 303, 307, 308) else None
            if location and hops > 0:
                return self.get(urllib.parse.urljoin(url, location), hops - 1)
            raise PipelineError(_http_problem(error, urllib.parse.urlsplit(url).path)) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise PipelineError(f"cannot reach {urllib.parse.urlsplit(url).netloc}: {reason}") from None

    def get_json(self, path: str) -> dict[str, Any]:
        try:
            data = json.loads(self.get(path))
        except json.JSONDecodeError:
            raise PipelineError(f"GitHub answered {path} with something that is not JSON") from None
        if not isinstance(data, dict):
            raise PipelineError(f"GitHub answered {path} with a JSON {type(data).__name__}, not an object")
        return data


def _http_problem(error: urllib.error.HTTPError, path: str) -> str:
    if error.code == 401:
        return f"GitHub refused the token (HTTP 401) for {path}: check --token-env"
    if error.code == 403 and error.headers.get("X-RateLimit-Remaining") == "0":
        return f"GitHub's rate limit is exhausted (HTTP 403) until {error.headers.get('X-RateLimit-Reset', '?')} (Unix time)"
    if error.code == 404:
        return f"not found (HTTP 404): {path} (a wrong name, or the token cannot read it)"
    return f"GitHub answered HTTP {error.code} for {path}"


def _runs(client: Client, source: Source) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    page = 1
    while len(runs) < source.last:
        query = {"status": "completed", "per_page": str(min(source.last, 100)), "page": str(page)}
        if source.branch:
            query["branch"] = source.branch
        path = (f"/repos/{source.repository}/actions/workflows/{urllib.parse.quote(source.workflow)}/runs?"
                + urllib.parse.urlencode(query))
        batch = client.get_json(path).get("workflow_runs") or []
        runs.extend(r for r in batch if isinstance(r, dict))
        if len(batch) < min(source.last, 100):
            break
        page += 1
    return runs[:source.last]


def run_info(run: dict[str, Any]) -> RunInfo:
    number = run.get("run_number")
    return RunInfo(source=f"github run {run.get('id')}", commit=run.get("head_sha"), branch=run.get("head_branch"),
                   time=run.get("run_started_at") or run.get("created_at"), workflow=run.get("path") or run.get("name"),
                   run_id=str(run.get("id")), run_number=number if isinstance(number, int) else None, url=run.get("html_url"))


def _report_from_zip(blob: bytes) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            names = [n for n in archive.namelist() if pathlib.PurePosixPath(n).name == "report.json"]
            if not names:
                raise ReportError("missing", f"the artifact holds no report.json ({', '.join(archive.namelist()[:5]) or 'empty'})")
            return archive.read(min(names, key=len))
    except zipfile.BadZipFile:
        raise ReportError("corrupt", "the artifact download is not a zip archive") from None


def fetch(source: Source, token: str, download_dir: pathlib.Path | None = None) -> tuple[Collection, list[CacheUsage]]:
    """The runs (oldest first) and the repository's cache usage. Raises PipelineError when GitHub
    cannot be asked at all; a run without a usable report is a Problem line."""
    client = Client(source.api_url, token)
    found = Collection()
    for raw in _runs(client, source):
        info = run_info(raw)
        label = f"run #{info.run_number or '?'} ({info.commit[:7] if info.commit else '?'}, {raw.get('conclusion') or 'unknown'})"
        try:
            listing = client.get_json(f"/repos/{source.repository}/actions/runs/{info.run_id}/artifacts?"
                                      + urllib.parse.urlencode({"name": source.artifact, "per_page": "10"}))
            artifacts = [a for a in listing.get("artifacts") or [] if isinstance(a, dict) and a.get("name") == source.artifact]
            if not artifacts:
                raise ReportError("missing", f"no {source.artifact!r} artifact")
            artifact = artifacts[0]
            if artifact.get("expired"):
                raise ReportError("missing", f"the {source.artifact!r} artifact has expired")
            text = _report_from_zip(client.get(str(artifact.get("archive_download_url"))))
            if download_dir is not None:
                path = download_dir / str(info.run_id) / "report.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(text)
                info = dataclasses.replace(info, source=str(path))
            run, problems = read_report(text, info.source, info)
        except ReportError as error:
            found.problems.append(Problem(label, error.kind, str(error)))
            continue
        except PipelineError as error:
            found.problems.append(Problem(label, "missing", str(error)))
            continue
        found.runs.append(run)
        found.problems.extend(problems)
    found.runs = sort_runs(found.runs)
    usages = []
    try:
        usage = client.get_json(f"/repos/{source.repository}/actions/cache/usage")
        size = usage.get("active_caches_size_in_bytes")
        if isinstance(size, int):
            usages.append(CacheUsage(f"{source.repository} (all scopes)", size, source.quota_bytes))
    except PipelineError as error:
        found.problems.append(Problem("cache usage", "missing", str(error)))
    return found, usages
