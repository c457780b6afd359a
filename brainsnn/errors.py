"""brainsnn's errors: one base class, one subclass per area.

Every error brainsnn raises on bad input or a bad file is a :class:`BrainsnnError` (a
``ValueError``), so ``except brainsnn.BrainsnnError`` catches them all; the message says what
was wrong and what is expected.
"""
from __future__ import annotations


class BrainsnnError(ValueError):
    """Base class of every error brainsnn raises on bad input, a bad file or a bad setting."""


class ModelError(BrainsnnError):
    """A neuron or synapse model that does not parse, has inconsistent units or is misused."""


class UnsupportedConstructError(ModelError):
    """A legal Brian2 construct that the torch engine cannot translate (named in the message)."""


class DeviceError(BrainsnnError, RuntimeError):
    """A Brian2 or torch device that this machine cannot run (e.g. a GPU where there is none)."""


class EncodingError(BrainsnnError):
    """Input images or rates that cannot be encoded as spikes."""


class STDPError(BrainsnnError):
    """A bad setting or state of an STDP network."""


class ExportError(BrainsnnError):
    """A torch network that cannot be exported to Brian2."""


class NetworkError(BrainsnnError):
    """A bad layer specification or network configuration."""


class ConvSTDPError(BrainsnnError):
    """A bad setting or input of a convolutional STDP layer or stack."""


class PreprocessingError(BrainsnnError):
    """Bad input to, or use of, an input preprocessor."""


class EvaluationError(BrainsnnError):
    """Bad spike counts or labels in label assignment or prediction."""


class TrainingError(BrainsnnError):
    """Bad training data or settings of a gradient-trained classifier."""


class LossError(BrainsnnError):
    """A bad loss name or loss setting."""


class ConversionError(BrainsnnError):
    """A network or setting that ANN-to-SNN conversion cannot handle."""


class EnergyError(BrainsnnError):
    """Bad input to the energy model."""


class DatasetError(BrainsnnError, RuntimeError):
    """A dataset file that is missing or corrupt; the message names it and says where it goes."""


class DownloadError(DatasetError):
    """A dataset download that failed (the message names the URL) or whose checksum is wrong."""


class ResultsError(BrainsnnError):
    """A file that is not a (valid) brainsnn results file, or a record used the wrong way."""


class ExperimentError(BrainsnnError):
    """A protocol option or run set-up that is wrong (bad value, unwritable output, ...)."""


class SilentNetworkWarning(RuntimeWarning):
    """An STDP network produced no spike at all in a whole chunk of images."""
