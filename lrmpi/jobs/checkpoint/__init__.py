"""The HDF5 checkpoint: the only code that knows its file, dataset and attribute
names (schema), how to write it crash-safely (atomic, writer, rank_files), check it
(checksum), read it (reader, probe), pack it (pack), guard the output (output) and
what lrmpi may delete (owned). See schema.py for the layout."""
from lrmpi.jobs.checkpoint.atomic import atomic_h5
from lrmpi.jobs.checkpoint.pack import pack
from lrmpi.jobs.checkpoint.reader import Checkpoint
from lrmpi.jobs.checkpoint.schema import FORMAT_VERSION, H5_ERRORS, KINDS, STATUSES
from lrmpi.jobs.checkpoint.writer import CheckpointWriter

__all__ = ["FORMAT_VERSION", "H5_ERRORS", "KINDS", "STATUSES", "Checkpoint",
           "CheckpointWriter", "atomic_h5", "pack"]
