"""Which commit `make lint`'s buf breaking compares protos/ against, in real git repositories."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from localrun.proto_baseline import NoBaseline, baseline


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def commit(repo: Path, path: str, text: str, message: str) -> str:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    return tmp_path


def test_a_branch_is_checked_against_mains_last_proto_change_where_it_left_main(
    repo: Path,
) -> None:
    protos = commit(repo, "protos/a.proto", "v1", "protos")
    commit(repo, "README.md", "docs", "docs")
    git(repo, "checkout", "-q", "-b", "feature")
    commit(repo, "protos/a.proto", "v2", "change protos")

    assert baseline(repo) == protos


def test_main_after_a_merge_is_checked_against_the_protos_before_it(repo: Path) -> None:
    protos = commit(repo, "protos/a.proto", "v1", "protos")
    git(repo, "checkout", "-q", "-b", "feature")
    commit(repo, "protos/a.proto", "v2", "change protos")
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "-m", "merge", "feature")

    assert baseline(repo) == protos


def test_a_commit_with_the_trailer_accepts_its_break(repo: Path) -> None:
    commit(repo, "protos/a.proto", "v1", "protos")
    git(repo, "checkout", "-q", "-b", "feature")
    accepted = commit(
        repo, "protos/a.proto", "v2", "Rename a field\n\nProto-Breaking-Change: no client yet"
    )
    commit(repo, "protos/a.proto", "v3", "later change")

    assert baseline(repo) == accepted


def test_an_explicit_ref_overrides_and_a_bad_one_is_named(repo: Path) -> None:
    first = commit(repo, "protos/a.proto", "v1", "protos")
    commit(repo, "protos/a.proto", "v2", "more")

    assert baseline(repo, first[:10]) == first
    with pytest.raises(NoBaseline, match="not a commit"):
        baseline(repo, "no-such-ref")


def test_a_shallow_clone_says_how_to_get_the_history(
    repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    commit(repo, "protos/a.proto", "v1", "protos")
    commit(repo, "protos/a.proto", "v2", "more")
    clone = tmp_path_factory.mktemp("shallow") / "clone"
    git(repo.parent, "clone", "-q", "--depth", "1", f"file://{repo}", str(clone))

    with pytest.raises(NoBaseline, match="unshallow"):
        baseline(clone)


def test_outside_git_there_is_nothing_to_compare(tmp_path_factory: pytest.TempPathFactory) -> None:
    with pytest.raises(NoBaseline, match="not a git checkout"):
        baseline(tmp_path_factory.mktemp("tarball"))
