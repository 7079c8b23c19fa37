"""Resampling on the embedder's device, for the GPU embed path (``embedder.resample_on_device``).

On a GPU host the decode threads, not the model, cap end-to-end throughput, and soxr's
resampling is about half of a decode thread's work (BENCHMARKS.md, issue #5). A
:class:`DeviceResampler` moves that step to the GPU: the thread decodes at the file's own rate,
and the windowed-sinc resampler of `julius <https://github.com/adefossez/julius>`_
(``ResampleFrac``: the ratio reduced by its gcd, one conv1d with a kernel per output phase) runs
on the device. Its output has soxr's length, and below 16 kHz it differs from soxr's "HQ" by
more than 90 dB (tested on the sample catalogue's tracks); the top of the band differs more,
where the two filters roll off at different points.

The query path and the CPU path keep soxr: one file's vectors from the two paths agree to
float rounding of the inputs, not bit for bit.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from soundalike.errors import ParameterError


def resampled_length(n: int, orig_sr: int, new_sr: int) -> int:
    """Samples soxr makes of ``n`` at ``orig_sr`` Hz resampled to ``new_sr``: n·new/orig rounded half up.

    >>> resampled_length(1000, 44100, 48000), resampled_length(1000, 22050, 48000)
    (1088, 2177)
    """
    return (2 * n * new_sr + orig_sr) // (2 * orig_sr)


class DeviceResampler:
    """``resample(wave, orig_sr, new_sr) -> wave`` on a torch device; safe to call from threads.

    Parameters
    ----------
    device : str or torch.device
        Where the convolution runs (``"cuda"`` in the embed stage; ``"cpu"`` works too).
    """

    def __init__(self, device: str | torch.device):
        self.device = torch.device(device)
        self._filters: dict[tuple[int, int], torch.nn.Module] = {}
        self._lock = threading.Lock()

    def __call__(self, wave: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
        """Mono float32 ``wave`` [n] at ``orig_sr`` Hz resampled to ``new_sr`` Hz, float32 on the host."""
        if wave.ndim != 1:
            raise ParameterError(f"wave must be mono with shape (n,), got {wave.shape}")
        if orig_sr <= 0 or new_sr <= 0:
            raise ParameterError(f"sample rates must be positive, got {orig_sr} and {new_sr}")
        if orig_sr == new_sr:
            return np.asarray(wave, dtype=np.float32)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)).to(self.device)
            y = self._filter(orig_sr, new_sr)(x, output_length=resampled_length(wave.shape[0], orig_sr, new_sr))
            return y.cpu().numpy()

    def _filter(self, orig_sr: int, new_sr: int) -> torch.nn.Module:
        key = (int(orig_sr), int(new_sr))
        with self._lock:  # the kernel is built once per rate pair, by one thread
            if key not in self._filters:
                import julius

                self._filters[key] = julius.ResampleFrac(*key).to(self.device)
            return self._filters[key]
