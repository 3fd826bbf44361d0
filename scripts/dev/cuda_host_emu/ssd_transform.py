"""Copies the SSD kernels (src/hylo/kernels/ssd) into a host-compilable form for cuda_host_emu (see ssd_run.sh):
the kernel launch syntax becomes plain C++ (emu_shim.h), dynamic shared memory one block-wide buffer, the device
guard, stream and device checks go. The repository's sources are read, never changed.
  python3 ssd_transform.py REPO_ROOT OUT_DIR"""
import os, re, sys
W = os.path.join(sys.argv[1], 'src/hylo/kernels')
D = os.path.join(sys.argv[2], 'src/hylo/kernels')
files = ['common/cuda_check.h', 'common/dtype_io.cuh', 'common/poison.cpp', 'ssd/ssd_cuda.h', 'ssd/ssd_inputs.cuh',
         'ssd/ssd_chunk_common.cuh', 'ssd/ssd_step.cu', 'ssd/ssd_chunk.cu', 'ssd/ssd_chunk_bwd.cu',
         'ssd/ssd_autograd.cpp']
for f in files:
    s = open(os.path.join(W, f)).read()
    if f.endswith('cuda_check.h'):
        s = s.replace('inline cudaStream_t current_stream() { return at::cuda::getCurrentCUDAStream().stream(); }',
                      'inline cudaStream_t current_stream() { return nullptr; }')
    if f.endswith('ssd_inputs.cuh'):  # the emulation runs on CPU tensors
        s = s.replace('!t->is_cuda() || ', '').replace('state.is_cuda() && ', '')
        assert 'is_cuda' not in s, f
    s = s.replace('extern __shared__ float smem[];', 'float* smem = reinterpret_cast<float*>(emu_smem_buf);')
    s = s.replace('const c10::cuda::CUDAGuard guard(x.device());', '')
    s = re.sub(r'([\w:]+(?:<[\w, ]*>)?)<<<', r'emu_launch(\1, ', s)
    s = s.replace('>>>(', ')(')
    assert '<<<' not in s and '__shared__' not in s, f
    out = os.path.join(D, f)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    if out.endswith('.cu'): out = out[:-3] + '_cu.cpp'
    open(out, 'w').write(s)
