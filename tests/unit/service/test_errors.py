"""service.errors: the one place scratch paths in an error become what a client is shown."""

from __future__ import annotations

from service.errors import ErrorCode, PreannotateError, error_with_paths_shown, with_paths_shown


def test_scratch_paths_become_the_urls_shown_longer_paths_first() -> None:
    shown = {"/scratch/a/clip.mp4": "https://media.example.com/clip.mp4", "/scratch/a": "https://media.example.com"}
    text = "/scratch/a/clip.mp4: truncated; see /scratch/a"
    assert (
        with_paths_shown(text, shown) == "https://media.example.com/clip.mp4: truncated; see https://media.example.com"
    )


def test_an_error_naming_no_scratch_path_is_returned_as_it_is() -> None:
    error = PreannotateError(ErrorCode.CORRUPT_MEDIA, "clip.mp4: truncated", retry_after_s=3)
    assert error_with_paths_shown(error, {"/scratch/x.mp4": "https://h/x.mp4"}) is error
    renamed = error_with_paths_shown(
        PreannotateError(ErrorCode.FETCH_FAILED, "/scratch/x.mp4: gone", retry_after_s=3), {"/scratch/x.mp4": "u"}
    )
    assert (renamed.code, renamed.message, renamed.retry_after_s) == (ErrorCode.FETCH_FAILED, "u: gone", 3)
