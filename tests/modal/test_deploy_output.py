"""Modal's build output around a deploy (components/modal_output.py), through Modal's own objects.

A failed image build is modelled as Modal 1.6.4's `_image_await_build_result` and `_Image._load`
produce it (modal/_image.py): the server's `ImageJoinStreaming` log entries go to
`OutputManager.get().put_streaming_log(TaskLogs)`, then `ImageBuildError("Image build for <id>
failed.\\nView the build logs: ...")` is raised. Pulumi's dynamic provider host reports a failed
call as `traceback.format_exc()` (pulumi/dynamic/__main__.py, `_abort_with_traceback`).
"""

from __future__ import annotations

import asyncio
import io
import sys
import traceback

import pytest
from modal._output.manager import OutputManager
from modal.exception import ImageBuildError
from modal_proto import api_pb2

from components.modal_output import with_modal_output

PIP_ERROR = "ERROR: No matching distribution found for vllm==9.9.9"


async def failing_build(image_id: str = "im-123") -> None:
    out = OutputManager.get()
    for line in ("Building image im-123\n", "=> Step 1: RUN python -m pip install vllm==9.9.9\n", PIP_ERROR + "\n"):
        await out.put_streaming_log(api_pb2.TaskLogs(data=line, file_descriptor=api_pb2.FILE_DESCRIPTOR_STDERR))
    out.flush_lines()
    msg = f"Image build for {image_id} failed.\nView the build logs:\n  modal image logs {image_id}"
    raise ImageBuildError(msg, image_id)


def test_a_failed_build_says_why_in_the_error_pulumi_reports():
    echo = io.StringIO()
    with pytest.raises(ImageBuildError) as caught:  # the type is kept
        asyncio.run(with_modal_output(failing_build(), echo=echo))
    reported = "".join(traceback.format_exception(caught.value))
    assert "Image build for im-123 failed." in reported
    assert PIP_ERROR in reported  # the reason, not only "failed"
    assert PIP_ERROR in echo.getvalue()  # and the log went to the provider's stderr as it came


def test_output_is_restored_after_the_deploy_and_a_success_carries_no_note():
    before = (OutputManager.get(), sys.stdout, sys.stderr)

    async def deployed() -> str:
        await OutputManager.get().put_streaming_log(
            api_pb2.TaskLogs(data="Built image im-9\n", file_descriptor=api_pb2.FILE_DESCRIPTOR_STDOUT)
        )
        return "ap-1"

    echo = io.StringIO()
    assert asyncio.run(with_modal_output(deployed(), echo=echo)) == "ap-1"
    assert "Built image im-9" in echo.getvalue()
    assert (OutputManager.get(), sys.stdout, sys.stderr) == before
    with pytest.raises(ImageBuildError):
        asyncio.run(with_modal_output(failing_build(), echo=io.StringIO()))
    assert (OutputManager.get(), sys.stdout, sys.stderr) == before
