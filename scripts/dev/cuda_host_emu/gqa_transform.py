"""Copies the paged GQA decode kernel (src/hylo/kernels/gqa_decode) into a host-compilable form for cuda_host_emu
(see run_gqa.sh): the launch syntax becomes emu_launch (emu_shim.h), __shared__ arrays block-wide statics, device
queries constants, the is_cuda() operand checks pass for CPU tensors (the "device" memory is host memory). The
repository's sources are read, never changed.
  python3 gqa_transform.py REPO_ROOT OUT_DIR"""
import os, re, sys
src = os.path.join(sys.argv[1], 'src/hylo/kernels')
dst = os.path.join(sys.argv[2], 'src/hylo/kernels')
# Device intrinsics the kernel uses that emu_shim.h lacks (host forms).
prelude = '''#include <algorithm>
#include <cstring>
using std::max;
using std::min;
template <class T> inline T __ldg(const T* p) { return *p; }
inline float __uint_as_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
'''
for f in ['common/cuda_check.h', 'common/dtype_io.cuh', 'common/poison.cpp', 'gqa_decode/gqa_decode.h',
          'gqa_decode/gqa_decode.cu']:
    s = open(os.path.join(src, f)).read()
    if f.endswith('cuda_check.h'):
        s = s.replace('inline cudaStream_t current_stream() { return at::cuda::getCurrentCUDAStream().stream(); }',
                      'inline cudaStream_t current_stream() { return nullptr; }')
    if f.endswith('gqa_decode.cu'):
        s = s.replace('namespace hylo::kernels {', prelude + 'namespace hylo::kernels {', 1)
        s = s.replace('__shared__', 'static')
        s = re.sub(r'C10_CUDA_CHECK\(cudaOccupancyMaxActiveBlocksPerMultiprocessor\(&n, kernel, kThreads, 0\)\);',
                   'n = 2;', s)
        s = s.replace('at::cuda::getCurrentDeviceProperties()->multiProcessorCount', '132')
        s = s.replace('c10::cuda::CUDAGuard guard(q.device());', '')
        s = re.sub(r'(\w+)\.is_cuda\(\)', 'true', s)
        s = re.sub(r'(gqa_decode_\w+_kernel(?:<T, D, RB>)?)\s*<<<', r'emu_launch(\1, ', s)
        s = s.replace('>>>(', ')(')
        assert '<<<' not in s and 'asm' not in s and 'cudaOccupancy' not in s, f
    os.makedirs(os.path.dirname(os.path.join(dst, f)), exist_ok=True)
    out = os.path.join(dst, f)
    if out.endswith('.cu'):
        out = out[:-3] + '_cu.cpp'
    open(out, 'w').write(s)
