# Locates wolfpack's Debian 12 build dependencies and defines imported targets.
# Every missing dependency fails configure with the Debian package that provides it.
find_package(PkgConfig)

function(wp_require_lib var header lib pkg)
  find_path(${var}_INCLUDE_DIR ${header} PATH_SUFFIXES postgresql)
  find_library(${var}_LIBRARY NAMES ${lib})
  if(NOT ${var}_INCLUDE_DIR OR NOT ${var}_LIBRARY)
    message(FATAL_ERROR "wolfpack: missing ${header} / lib${lib}: install the Debian package '${pkg}' (apt-get install ${pkg})")
  endif()
  add_library(wp::${lib} UNKNOWN IMPORTED GLOBAL)
  set_target_properties(wp::${lib} PROPERTIES IMPORTED_LOCATION "${${var}_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${${var}_INCLUDE_DIR}")
endfunction()

wp_require_lib(WP_UV uv.h uv libuv1-dev)
wp_require_lib(WP_WSLAY wslay/wslay.h wslay libwslay-dev)
wp_require_lib(WP_PQ libpq-fe.h pq libpq-dev)
wp_require_lib(WP_CJSON cjson/cJSON.h cjson libcjson-dev)
wp_require_lib(WP_CURL curl/curl.h curl libcurl4-openssl-dev)
wp_require_lib(WP_MBEDTLS mbedtls/ssl.h mbedtls libmbedtls-dev)
wp_require_lib(WP_MBEDX509 mbedtls/x509_crt.h mbedx509 libmbedtls-dev)
wp_require_lib(WP_MBEDCRYPTO mbedtls/sha256.h mbedcrypto libmbedtls-dev)

# TLS sessions (common/tls.h): OpenSSL by default (AES-GCM with AES-NI/VAES: every tunnel byte
# is decrypted and re-encrypted by wolfpackd), or mbedTLS. Certificates, keys, pins and the
# other crypto stay on mbedTLS either way (PEM files are the same).
set(WP_TLS_BACKEND "openssl" CACHE STRING "TLS library behind common/tls.h: openssl or mbedtls")
set_property(CACHE WP_TLS_BACKEND PROPERTY STRINGS openssl mbedtls)
if(WP_TLS_BACKEND STREQUAL "openssl")
  wp_require_lib(WP_SSL openssl/ssl.h ssl libssl-dev)
  wp_require_lib(WP_LIBCRYPTO openssl/evp.h crypto libssl-dev)
elseif(NOT WP_TLS_BACKEND STREQUAL "mbedtls")
  message(FATAL_ERROR "wolfpack: WP_TLS_BACKEND must be 'openssl' or 'mbedtls', not '${WP_TLS_BACKEND}'")
endif()

# llhttp: Debian's node-llhttp ships the generated C sources; compile them into their
# own static target without the project's warning flags (generated third-party code).
set(WP_LLHTTP_SRC_DIR "/usr/share/llhttp" CACHE PATH "llhttp C sources (node-llhttp)")
set(WP_LLHTTP_INC_DIR "/usr/share/include/llhttp" CACHE PATH "llhttp header (node-llhttp)")
if(NOT EXISTS "${WP_LLHTTP_SRC_DIR}/llhttp.c" OR NOT EXISTS "${WP_LLHTTP_INC_DIR}/llhttp.h")
  message(FATAL_ERROR "wolfpack: llhttp sources not found in ${WP_LLHTTP_SRC_DIR}: install the Debian package 'node-llhttp' (apt-get install node-llhttp)")
endif()
add_library(wp_llhttp STATIC ${WP_LLHTTP_SRC_DIR}/llhttp.c ${WP_LLHTTP_SRC_DIR}/api.c ${WP_LLHTTP_SRC_DIR}/http.c)
target_include_directories(wp_llhttp PUBLIC ${WP_LLHTTP_INC_DIR})
set_target_properties(wp_llhttp PROPERTIES POSITION_INDEPENDENT_CODE ON)
target_compile_options(wp_llhttp PRIVATE -w)
# Strict mode makes llhttp check the CRLF after every chunk (without it, bad chunk
# framing is accepted: a request-smuggling path). PUBLIC: our code must see the same ABI.
target_compile_definitions(wp_llhttp PUBLIC LLHTTP_STRICT_MODE=1)

find_package(Threads REQUIRED)
