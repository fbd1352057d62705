# cpp-httplib as the imported target PkgConfig::CPP_HTTPLIB, with or without pkg-config.
#
# Debian's cpp-httplib is a compiled library whose pkg-config Cflags carry feature macros
# (CPPHTTPLIB_OPENSSL_SUPPORT, ...) that change class layouts, so they must be used exactly
# as the library was built with them:
#  - pkg-config present: pkg_check_modules(IMPORTED_TARGET), as before.
#  - no pkg-config (an offline GPU machine with carried dependencies, perf/gpu_check.sh):
#    httplib.h and libcpp-httplib are found with find_path/find_library (CMAKE_PREFIX_PATH,
#    CPP_HTTPLIB_INCLUDE_DIR / CPP_HTTPLIB_LIBRARY), and the -D flags are read from the
#    Cflags line of cpp-httplib.pc (CPP_HTTPLIB_PC, else found like the library). A missing
#    header, library or .pc is a configure error naming it.
# Included once from the top-level CMakeLists.txt; the target is visible in every folder.
if(TARGET PkgConfig::CPP_HTTPLIB)
  return()
endif()
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(CPP_HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
  return()
endif()
find_path(CPP_HTTPLIB_INCLUDE_DIR httplib.h)
find_library(CPP_HTTPLIB_LIBRARY cpp-httplib)
find_file(CPP_HTTPLIB_PC cpp-httplib.pc
  PATH_SUFFIXES lib/${CMAKE_LIBRARY_ARCHITECTURE}/pkgconfig lib/pkgconfig share/pkgconfig)
foreach(_pf_var CPP_HTTPLIB_INCLUDE_DIR CPP_HTTPLIB_LIBRARY CPP_HTTPLIB_PC)
  if(NOT ${_pf_var})
    message(FATAL_ERROR "cpp-httplib not found without pkg-config: ${_pf_var} is unset "
                        "(install libcpp-httplib-dev, or pass -D${_pf_var}=...)")
  endif()
endforeach()
file(STRINGS "${CPP_HTTPLIB_PC}" _pf_cflags REGEX "^Cflags:")
string(REGEX MATCHALL "-D[A-Za-z0-9_=]+" _pf_defs "${_pf_cflags}")
list(TRANSFORM _pf_defs REPLACE "^-D" "")
add_library(PkgConfig::CPP_HTTPLIB INTERFACE IMPORTED)
target_include_directories(PkgConfig::CPP_HTTPLIB INTERFACE "${CPP_HTTPLIB_INCLUDE_DIR}")
target_link_libraries(PkgConfig::CPP_HTTPLIB INTERFACE "${CPP_HTTPLIB_LIBRARY}")
target_compile_definitions(PkgConfig::CPP_HTTPLIB INTERFACE ${_pf_defs})
message(STATUS "cpp-httplib without pkg-config: ${CPP_HTTPLIB_LIBRARY}, ${CPP_HTTPLIB_INCLUDE_DIR}, "
               "definitions from ${CPP_HTTPLIB_PC}: ${_pf_defs}")
