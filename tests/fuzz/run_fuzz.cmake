# run_fuzz.cmake — runs one libFuzzer target (ctest fuzz.<x>) for a bounded time on a
# scratch copy of its seed corpus, so new corpus entries never land in the source tree.
#   cmake -DFUZZER=<binary> -DSEEDS=<corpus dir> -DWORK=<scratch dir> -P run_fuzz.cmake
# Crashing inputs are kept in <scratch dir>/artifacts/. WP_FUZZ_SECONDS (env) overrides 20.
if(NOT FUZZER OR NOT SEEDS OR NOT WORK)
  message(FATAL_ERROR "run_fuzz.cmake: FUZZER, SEEDS and WORK are required")
endif()
set(seconds 20)
if(DEFINED ENV{WP_FUZZ_SECONDS})
  set(seconds $ENV{WP_FUZZ_SECONDS})
endif()
file(REMOVE_RECURSE ${WORK}/corpus)
file(MAKE_DIRECTORY ${WORK}/corpus ${WORK}/artifacts)
file(GLOB seeds ${SEEDS}/*)
if(NOT seeds)
  message(FATAL_ERROR "run_fuzz.cmake: no seed files in ${SEEDS}")
endif()
file(COPY ${seeds} DESTINATION ${WORK}/corpus)
execute_process(
  COMMAND ${FUZZER} -max_total_time=${seconds} -rss_limit_mb=2048
          -artifact_prefix=${WORK}/artifacts/ ${WORK}/corpus
  WORKING_DIRECTORY ${WORK}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${FUZZER} failed (${rc}); the crashing input is in ${WORK}/artifacts/")
endif()
