# Stands in for Slicer_EXTENSION_GENERATE_CONFIG: the catalogue metadata the extension declares, as JSON.
set(_metadata "{")
foreach(_name EXTENSION_NAME EXTENSION_HOMEPAGE EXTENSION_CATEGORY EXTENSION_CONTRIBUTORS EXTENSION_DESCRIPTION
              EXTENSION_ICONURL EXTENSION_SCREENSHOTURLS EXTENSION_DEPENDS)
  string(REPLACE "\\" "\\\\" _value "${${_name}}")
  string(REPLACE "\"" "\\\"" _value "${_value}")
  string(APPEND _metadata "\"${_name}\": \"${_value}\", ")
endforeach()
string(APPEND _metadata "\"CMAKE_MINIMUM_REQUIRED_VERSION\": \"${CMAKE_MINIMUM_REQUIRED_VERSION}\"}")
file(WRITE "${CMAKE_BINARY_DIR}/extension-metadata.json" "${_metadata}\n")
