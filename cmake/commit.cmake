# Writes OUT (a C header defining HY_COMMIT) from `git` in SRC, at every
# build, touching the file only when the id changes (so only what includes
# it is rebuilt). A tree with uncommitted changes to tracked files is
# "<id>+dirty": reports and checkpoints then say they do not come from
# exactly that commit.
# GIVEN (cmake -DHYDRA_COMMIT=<id>) names the commit of a tree whose git
# metadata is missing or is not the tree's own (a source archive, a copy of
# the files): it is recorded as given, and git is not asked.
if(GIVEN)
  set(id "${GIVEN}")
else()
  execute_process(COMMAND git rev-parse --short=12 HEAD WORKING_DIRECTORY ${SRC}
                  OUTPUT_VARIABLE id OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0 OR NOT id)
    set(id unknown)
  else()
    execute_process(COMMAND git diff --quiet HEAD -- WORKING_DIRECTORY ${SRC}
                    RESULT_VARIABLE dirty ERROR_QUIET)
    if(NOT dirty EQUAL 0)
      set(id "${id}+dirty")
    endif()
  endif()
endif()
set(text "// Generated at build time by cmake/commit.cmake.\n#define HY_COMMIT \"${id}\"\n")
if(EXISTS ${OUT})
  file(READ ${OUT} old)
endif()
if(NOT "${old}" STREQUAL "${text}")
  file(WRITE ${OUT} "${text}")
endif()
