"""The HDF5 checkpoint: the only code that knows its file, dataset and attribute
names (schema), how to write it crash-safely (writer), read it (reader) and guard
the output (output). See schema.py for the layout."""
from lrmpi.jobs.checkpoint.reader import Checkpoint, pack, probe
from lrmpi.jobs.checkpoint.schema import FORMAT_VERSION, H5_ERRORS, KINDS, STATUSES
from lrmpi.jobs.checkpoint.writer import CheckpointWriter, atomic_h5

__all__ = ["FORMAT_VERSION", "H5_ERRORS", "KINDS", "STATUSES", "Checkpoint",
           "CheckpointWriter", "atomic_h5", "pack", "probe"]
