# Runs at install time (install(SCRIPT) in the top-level CMakeLists.txt): installs the systemd
# units with ExecStart= naming the sbin directory of the prefix being installed to.
# The files in systemd/ say /usr/sbin; that stays as it is for the Debian package (prefix /usr).
# file(INSTALL) honours DESTDIR and records the files in install_manifest.txt.
if(IS_ABSOLUTE "${REPLD_UNITS_SBINDIR}")
  set(sbindir "${REPLD_UNITS_SBINDIR}")
else()
  set(sbindir "${CMAKE_INSTALL_PREFIX}/${REPLD_UNITS_SBINDIR}")
endif()
cmake_path(NORMAL_PATH sbindir)
string(REGEX REPLACE "/$" "" sbindir "${sbindir}")

set(units)
foreach(unit repld@.service repld.target)
  file(READ "${REPLD_UNITS_SOURCE_DIR}/${unit}" text)
  string(REPLACE "/usr/sbin/" "${sbindir}/" text "${text}")
  file(WRITE "${REPLD_UNITS_BINARY_DIR}/${unit}" "${text}")
  list(APPEND units "${REPLD_UNITS_BINARY_DIR}/${unit}")
endforeach()
file(INSTALL DESTINATION "${REPLD_UNITS_DESTINATION}" TYPE FILE
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
     FILES ${units})
