"""The torch device a torch-engine object runs on, checked against this machine."""

import torch

from brainsnn.errors import DeviceError


def torch_device(device, option: str = "device") -> torch.device:
    """``device`` ("cpu", "cuda", "cuda:N" or a ``torch.device``) as a ``torch.device``.

    Raises :class:`~brainsnn.errors.DeviceError` where the name is not a torch device, or names
    a CUDA GPU that torch does not find on this machine; ``option`` is the name the message
    gives (a keyword argument, or a command-line option such as ``--torch-device``).
    """
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise DeviceError(f"{option} {device!r} is not a torch device; expected 'cpu', 'cuda' "
                          f"or 'cuda:N'") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{option} {str(device)!r} was asked for, but torch finds no CUDA "
                              "GPU on this machine; use 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"{option} {str(device)!r} was asked for, but torch finds "
                              f"{torch.cuda.device_count()} CUDA GPU(s) on this machine "
                              f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return device
