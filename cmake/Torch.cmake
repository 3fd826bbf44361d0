# Finds libtorch inside the torch==2.11.0 wheel of the project's venv (scripts/env.sh) unless Torch_DIR or
# CMAKE_PREFIX_PATH already point at one (the GPU machine's system torch). Exposes hylo_torch_deps.
# HYLO_PYTHON is also the interpreter the oracle tests run under.
if(NOT HYLO_PYTHON)
  # HYLO_VENV comes from scripts/env.sh (the one place that names the venv); the Makefile sources it.
  if(DEFINED ENV{HYLO_VENV} AND EXISTS "$ENV{HYLO_VENV}/bin/python")
    set(HYLO_PYTHON "$ENV{HYLO_VENV}/bin/python")
  else()
    set(HYLO_PYTHON python3)
  endif()
endif()
# STRING, not FILEPATH: CMake would turn a bare `-DHYLO_PYTHON=python3` into <source dir>/python3.
set(HYLO_PYTHON ${HYLO_PYTHON} CACHE STRING "Python with torch and the test oracles")
if(NOT Torch_DIR)
  execute_process(COMMAND ${HYLO_PYTHON} -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
                  OUTPUT_VARIABLE _torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "hylo: cannot locate libtorch with ${HYLO_PYTHON}; run `make setup`, then configure with "
                        "scripts/env.sh sourced (the Makefile does both), or pass -DHYLO_PYTHON=<python with torch>")
  endif()
  list(APPEND CMAKE_PREFIX_PATH ${_torch_prefix})
endif()
# The wheel's libtorch is CUDA-enabled, so Caffe2's CMake config looks for the CUDA toolkit. Naming the
# target architecture keeps it from probing for a GPU (there is none on the build machine).
if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(ENV{TORCH_CUDA_ARCH_LIST} "9.0a")
endif()
find_package(Torch REQUIRED)
add_library(hylo_torch_deps INTERFACE)
# libstdc++ goes first: the wheel's libtorch.so exports its own unversioned copies of std::filesystem, and a
# reference the static linker binds to those resolves to libtorch's copy at run time, which crashes
# (remove_all jumped to address 0). Seen first, libstdc++'s versioned symbols win.
target_link_libraries(hylo_torch_deps INTERFACE stdc++ ${TORCH_LIBRARIES})
# TORCH_CXX_FLAGS carries _GLIBCXX_USE_CXX11_ABI; applying it everywhere keeps std::string ABI consistent.
separate_arguments(_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
target_compile_options(hylo_torch_deps INTERFACE ${_torch_flags})
