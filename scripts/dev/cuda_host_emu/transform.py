"""Copies the gated delta chunk kernels into a host-compilable form for cuda_host_emu (see run.sh): cp.async and
the kernel launch syntax become plain C++ (emu_shim.h), shared memory one block-wide buffer, the CUDA runtime
queries constants. The repository's sources are read, never changed.
  python3 transform.py REPO_ROOT OUT_DIR"""
import re, os, sys
W = os.path.join(sys.argv[1], 'src/hylo/kernels')
D = os.path.join(sys.argv[2], 'src/hylo/kernels')
files = ['common/cuda_check.h', 'common/dtype_io.cuh', 'common/poison.cpp', 'gated_delta/chunk_common.cuh',
         'gated_delta/chunk_forward.h', 'gated_delta/chunk_backward_trace.h', 'gated_delta/gated_delta_cuda.h',
         'gated_delta/gated_delta_chunk.cu', 'gated_delta/gated_delta_chunk_bwd.cu',
         'gated_delta/gated_delta_autograd.cpp']
for f in files:
    s = open(os.path.join(W, f)).read()
    if f.endswith('cuda_check.h'):
        s = s.replace('inline cudaStream_t current_stream() { return at::cuda::getCurrentCUDAStream().stream(); }',
                      'inline cudaStream_t current_stream() { return nullptr; }')
    if f.endswith('chunk_common.cuh'):
        s = re.sub(r'__device__ __forceinline__ void cp_async16\(void\* s, const void\* g, bool valid\) \{.*?\n\}',
                   '__device__ __forceinline__ void cp_async16(void* s, const void* g, bool valid) {\n'
                   '  if (valid) std::memcpy(s, g, 16); else std::memset(s, 0, 16);\n}', s, flags=re.S)
        s = s.replace('__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\\n" ::); }',
                      '__device__ __forceinline__ void cp_async_commit() {}')
        s = s.replace('__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\\n" ::); }',
                      '__device__ __forceinline__ void cp_async_wait_all() {}')
        assert 'asm' not in s, 'asm left in chunk_common'
    s = s.replace('asm volatile("cp.async.wait_group 1;\\n" ::);', '')
    s = re.sub(r'extern __shared__ __align__\(128\) unsigned char smem\[\];', 'unsigned char* smem = emu_smem_buf;', s)
    s = s.replace('__shared__', 'static')
    s = re.sub(r'([\w:]+(?:<[\w, ]*>)?)<<<', r'emu_launch(\1, ', s)
    s = s.replace('>>>(', ')(')
    s = s.replace('const c10::cuda::CUDAGuard guard(q.device());', '')
    s = s.replace('at::cuda::getCurrentDeviceProperties()->multiProcessorCount', '132')
    s = s.replace('return q.is_cuda() && ', 'return ')
    assert '<<<' not in s and 'asm volatile' not in s, f
    os.makedirs(os.path.dirname(os.path.join(D, f)), exist_ok=True)
    out = os.path.join(D, f)
    if out.endswith('.cu'): out = out[:-3] + '_cu.cpp'
    open(out, 'w').write(s)

