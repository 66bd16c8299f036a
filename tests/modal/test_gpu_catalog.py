"""Modal's GPU list and the project's GPU catalog name the same GPUs."""

from components import catalog
from components.modal_app.spec import MODAL_GPU_MAX_COUNT


def test_every_gpu_a_stack_can_name_is_a_modal_gpu_and_no_other() -> None:
    assert set(MODAL_GPU_MAX_COUNT) == set(catalog.GPUS)
