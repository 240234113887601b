# Bakes version, git commit and build time into a generated header (wp_version.h).
# The commit is read at configure time, and re-read on every build by a custom target.
set(WP_VERSION_IN ${CMAKE_CURRENT_LIST_DIR}/wp_version.h.in)
set(WP_VERSION_OUT ${CMAKE_BINARY_DIR}/generated/wp_version.h)
add_custom_target(wp_version_header
  COMMAND ${CMAKE_COMMAND} -DSRC=${CMAKE_SOURCE_DIR} -DIN=${WP_VERSION_IN} -DOUT=${WP_VERSION_OUT}
          -DVERSION=${PROJECT_VERSION} -P ${CMAKE_CURRENT_LIST_DIR}/WolfpackGenVersion.cmake
  BYPRODUCTS ${WP_VERSION_OUT}
  COMMENT "wolfpack version header")
