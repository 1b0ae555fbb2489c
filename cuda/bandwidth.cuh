// The GPU's memory copy bandwidth, the roofline that mamba-bench compares decode traffic to.
//
// This header needs no CUDA headers: the library's generic code (src/bench/) includes it when
// the CUDA backend is built (MAMBA_HAVE_CUDA).
#pragma once

namespace mamba {

// Device-to-device copy bandwidth of CUDA device `device`, in GB/s (1e9 bytes per second),
// counting the bytes read plus the bytes written (2 x the bytes copied), like the CPU probe.
// Two 1 GiB device buffers; one untimed copy, then 10 copies timed together with CUDA events
// on one stream. Throws mamba::Error when the device is missing or the buffers do not fit.
double cuda_copy_bandwidth(int device);

}  // namespace mamba
