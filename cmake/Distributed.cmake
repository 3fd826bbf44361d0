# c10d backends for src/hylo/train/distributed_{gloo,nccl}.cpp (data-parallel training). The torch wheel's
# libtorch has Gloo (libtorch_cpu.so) and NCCL (libtorch_cuda.so) compiled in, but ProcessGroupGloo.hpp and
# ProcessGroupNCCL.hpp are guarded by USE_C10D_GLOO / USE_C10D_NCCL and include headers the wheel does not
# ship (gloo's; nccl.h and CUDA's for a CPU build). Each backend gets its definitions on its own file only,
# without the shared precompiled header (built without those definitions).
find_path(HYLO_GLOO_INCLUDE_DIR gloo/rendezvous/store.h)
if(HYLO_GLOO_INCLUDE_DIR)
  set_source_files_properties(${PROJECT_SOURCE_DIR}/src/hylo/train/distributed_gloo.cpp PROPERTIES
    COMPILE_DEFINITIONS "USE_C10D_GLOO;HYLO_HAVE_C10D_GLOO=1" SKIP_PRECOMPILE_HEADERS ON)
  if(NOT HYLO_GLOO_INCLUDE_DIR STREQUAL "/usr/include")  # -I/usr/include would break libstdc++'s include_next
    set_property(SOURCE ${PROJECT_SOURCE_DIR}/src/hylo/train/distributed_gloo.cpp APPEND PROPERTY
                 INCLUDE_DIRECTORIES ${HYLO_GLOO_INCLUDE_DIR})
  endif()
  message(STATUS "hylo: Gloo process groups (gloo headers in ${HYLO_GLOO_INCLUDE_DIR})")
else()
  message(WARNING "hylo: no gloo headers (Debian libgloo-dev): CPU data-parallel training is disabled")
endif()
if(HYLO_CUDA)
  execute_process(COMMAND ${HYLO_PYTHON} -c "import nvidia.nccl as n; print(list(n.__path__)[0])"
                  OUTPUT_VARIABLE _nccl_py OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  find_path(HYLO_NCCL_INCLUDE_DIR nccl.h HINTS ${_nccl_py}/include ENV NCCL_INCLUDE_DIR)
  if(HYLO_NCCL_INCLUDE_DIR)
    set_source_files_properties(${PROJECT_SOURCE_DIR}/src/hylo/train/distributed_nccl.cpp PROPERTIES
      COMPILE_DEFINITIONS "USE_C10D_NCCL;HYLO_HAVE_C10D_NCCL=1"
      INCLUDE_DIRECTORIES "${HYLO_NCCL_INCLUDE_DIR};${CUDAToolkit_INCLUDE_DIRS}" SKIP_PRECOMPILE_HEADERS ON)
    message(STATUS "hylo: NCCL process groups (nccl.h in ${HYLO_NCCL_INCLUDE_DIR})")
  else()
    message(WARNING "hylo: HYLO_CUDA=ON but no nccl.h: multi-GPU data-parallel training is disabled")
  endif()
endif()
