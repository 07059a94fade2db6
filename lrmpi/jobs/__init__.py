"""Jobs: what `lrmpi matmul` and `lrmpi infer` run on every rank — inputs, the HDF5
checkpoint, deadlines and signals, SLURM."""
