"""MPI: the owned communicator, the wire format, partitions, the scheduler, root and
workers. The only package that imports mpi4py."""
