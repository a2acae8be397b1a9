# WriteVersion.cmake: run at every build (cmake -P, target pmoe_version) to
# write generated/pmoe_version.h with the source tree's commit, so that
# `pmoe --version` names the code it was built from. "+changes" marks a tree
# whose tracked files differ from that commit (docs/ aside: the reproduction
# writes there). The header is rewritten only when its text changes, so an
# unchanged commit recompiles nothing.
#   -DSOURCE_DIR=... -DOUT=... -DVERSION=...
find_package(Git QUIET)
set(commit "unknown")
if(GIT_FOUND)
  execute_process(COMMAND ${GIT_EXECUTABLE} -C ${SOURCE_DIR} rev-parse --short=12 HEAD
    OUTPUT_VARIABLE head OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
  if(rc EQUAL 0 AND head)
    set(commit "${head}")
    execute_process(COMMAND ${GIT_EXECUTABLE} -C ${SOURCE_DIR} status --porcelain
        --untracked-files=no -- . ":(exclude)docs"
      OUTPUT_VARIABLE changes OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(changes)
      string(APPEND commit "+changes")
    endif()
  endif()
endif()
set(text "/* pmoe_version.h: written at build time by cmake/WriteVersion.cmake. */
#define PMOE_VERSION \"${VERSION}\"
#define PMOE_GIT_COMMIT \"${commit}\"
")
set(old "")
if(EXISTS ${OUT})
  file(READ ${OUT} old)
endif()
if(NOT old STREQUAL text)
  file(WRITE ${OUT} "${text}")
endif()
