{
  "targets": [
    {
      "target_name": "fdpass",
      "sources": ["addon/fdpass.cc", "addon/posix_io.cc", "addon/poll_wrap.cc", "addon/unix_socket.cc", "addon/inet_socket.cc", "addon/socket_file.cc", "addon/fd_registry.cc", "addon/describe.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra"],
      "xcode_settings": {
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "OTHER_CPLUSPLUSFLAGS": ["-Wall", "-Wextra"]
      }
    }
  ]
}
