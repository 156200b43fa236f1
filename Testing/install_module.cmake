# Installs the scripted module the way Slicer's slicerMacroBuildScriptedModule does (through CTK's
# ctkMacroCompilePythonScript): every file in its SCRIPTS and RESOURCES lists, by its path relative to the module
# folder, copied into DESTINATION and nothing else. Run from the module folder, evaluating its real CMakeLists.txt:
#
#   cmake -DDESTINATION=/tmp/qt-scripted-modules -P Testing/install_module.cmake
cmake_minimum_required(VERSION 3.20)

function(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS;WITH_SUBDIR" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  foreach(file IN LISTS MY_SCRIPTS MY_RESOURCES)
    if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${file})
      message(FATAL_ERROR "slicerMacroBuildScriptedModule given nonexistent file '${file}'")
    endif()
    get_filename_component(subdir ${file} DIRECTORY)
    file(COPY ${CMAKE_CURRENT_SOURCE_DIR}/${file} DESTINATION ${DESTINATION}/${subdir})
  endforeach()
endfunction()

include(${CMAKE_CURRENT_SOURCE_DIR}/CMakeLists.txt)
