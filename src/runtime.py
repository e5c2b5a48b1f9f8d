"""Process-level runtime setup shared by every entry point."""
import os


def cap_onednn_isa():
    """Cap oneDNN at AVX2 unless the user chose an ISA.

    On AVX-512 CPUs MindSpore's oneDNN picks a reference convolution kernel that is about 100x
    slower (106 s vs 1 s per ResNet50-FPN train step measured); AVX2 kernels are fast. Must run
    before the first convolution. Harmless on GPU runs and on CPUs without AVX-512.
    """
    if "ONEDNN_MAX_CPU_ISA" not in os.environ and "DNNL_MAX_CPU_ISA" not in os.environ:
        os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"
