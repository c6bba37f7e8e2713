"""`--model` as a Hugging Face hub id: resolved through huggingface_hub's snapshot cache (here a local cache laid
out as the hub writes it, so no network is needed), and a clear error when it cannot be fetched."""

import shutil

import pytest

from jaxmodels_interop.teacher import TeacherError
from jaxmodels_interop.teacher_load import resolve_model_dir

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(tmp_path, model_dir, repo_id="acme/tiny-teacher"):
    """A huggingface_hub cache holding model_dir's files as snapshot COMMIT of repo_id, with refs/main."""
    repo = tmp_path / "hub" / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(model_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return tmp_path / "hub"


def test_hub_id_resolves_to_the_cached_snapshot(teacher_dir, tmp_path):
    cache = hub_cache(tmp_path, teacher_dir)
    path = resolve_model_dir("acme/tiny-teacher", cache_dir=cache)
    assert path == cache / "models--acme--tiny-teacher" / "snapshots" / COMMIT
    assert (path / "config.json").read_bytes() == (teacher_dir / "config.json").read_bytes()
    assert resolve_model_dir(str(teacher_dir)) == teacher_dir  # a local directory is taken as it is


def test_unreachable_hub_id_and_missing_paths_are_clear_errors(tmp_path, monkeypatch):
    import huggingface_hub

    def offline(**kw):
        raise huggingface_hub.errors.LocalEntryNotFoundError("cannot reach the hub and nothing is cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(TeacherError, match=r"--model acme/absent: not a local directory, and the Hugging Face hub "
                                           r"snapshot could not be fetched \(LocalEntryNotFoundError.*--hf-token"):
        resolve_model_dir("acme/absent", "hf_x", cache_dir=tmp_path)
    with pytest.raises(TeacherError, match="--model .*/no/such/dir: no such directory"):
        resolve_model_dir(str(tmp_path / "no" / "such" / "dir"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(TeacherError, match="no such directory"):
        resolve_model_dir(str(tmp_path / "file.txt"))
