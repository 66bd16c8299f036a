"""Reading a declared Modal function back, offline, from the SDK's own objects.

`Function.info()` is public. Image layers and mounted files have no public accessor in
Modal 1.6, so this renders each image layer's Dockerfile with the SDK's own builder
function and lists each mount's files with the SDK's own file selection (the files
`modal deploy` would upload). Kept in this one helper so a Modal upgrade breaks one place.
"""

from __future__ import annotations

import inspect
from pathlib import Path, PurePosixPath

import modal
from modal._image import LATEST_IMAGE_BUILDER_VERSION, _Image
from modal._utils.async_utils import synchronizer
from modal.mount import NonLocalMountError, _Mount, _select_files


def _raw(obj):
    return synchronizer._translate_in(obj)


def image_of(function: modal.Function) -> _Image:
    return _raw(function)._spec.image


def dockerfile_commands(function: modal.Function) -> list[str]:
    """The function image's Dockerfile commands, base layer first (`FROM base` lines dropped)."""
    commands: list[str] = []

    def walk(obj) -> None:
        if not isinstance(obj, _Image):
            return
        closure = inspect.getclosurevars(obj._load).nonlocals
        for base in (closure.get("base_images") or {}).values():
            walk(base)
        if "base_image" in closure:  # an `add_local_*` layer on top of an image
            walk(closure["base_image"])
        if "split_image" in closure:  # from_registry(add_python=...) on current builders
            walk(closure["split_image"])
        build = closure.get("dockerfile_function")
        if build is not None:
            commands.extend(c for c in build(LATEST_IMAGE_BUILDER_VERSION).commands if c != "FROM base")

    walk(image_of(function))
    return commands


def mounted_files(function: modal.Function) -> dict[str, Path]:
    """Local files the container gets at start: the function's own package and `add_local_*`."""
    files: dict[str, Path] = {}

    def walk(obj) -> None:
        if isinstance(obj, _Mount):
            try:
                entries = list(obj.entries)
            except NonLocalMountError:  # Modal's own client package
                return
            for local, remote in _select_files(entries):
                files[str(PurePosixPath(remote))] = Path(local)
        elif isinstance(obj, _Image) or hasattr(obj, "_spec"):
            for dep in obj._deps() if obj._deps else ():
                walk(dep)

    walk(_raw(function))
    return files
