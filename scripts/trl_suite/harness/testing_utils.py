"""The helpers TRL's tests/test_dpo_trainer.py imports from its tests/testing_utils.py, written for this harness.

TRL's own file also imports names that trl 1.16.0 no longer has (`is_joblib_available`, ...), so it is not copied:
these are the markers and the base class the DPO tests use, with the same meaning.
"""

import pytest
import torch
from transformers import is_bitsandbytes_available
from transformers.utils import is_kernels_available, is_peft_available, is_vision_available
from trl.import_utils import is_liger_kernel_available


require_bitsandbytes = pytest.mark.skipif(not is_bitsandbytes_available(), reason="test requires bitsandbytes")
require_kernels = pytest.mark.skipif(not is_kernels_available(), reason="test requires kernels")
require_liger_kernel = pytest.mark.skipif(not is_liger_kernel_available(), reason="test requires liger-kernel")
require_peft = pytest.mark.skipif(not is_peft_available(), reason="test requires peft")
require_vision = pytest.mark.skipif(not is_vision_available(), reason="test requires vision")


def is_ampere_or_newer(device_index: int = 0) -> bool:
    """Whether the GPU has compute capability >= 8.0 (FlashAttention's requirement); False without CUDA."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability(device_index) >= (8, 0)


class TrlTestCase:
    """Each test gets a fresh temporary output directory as `self.tmp_dir`."""

    @pytest.fixture(autouse=True)
    def set_tmp_dir(self, tmp_path):
        self.tmp_dir = str(tmp_path)
