"""Neural networks: models, the ONNX importer and layered inference (MPI-free)."""
