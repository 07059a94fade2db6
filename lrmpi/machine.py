"""What this machine is: its CPU model (printed by `lrmpi info` and beside every
benchmark figure, because the CPU behind these machines varies)."""
import platform


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
