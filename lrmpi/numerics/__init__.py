"""Numerics: digit planes, schedules, exact accumulation, bounds, the kernel dispatch.

Pure and MPI-free: everything here runs in one process and is tested serially.
"""
