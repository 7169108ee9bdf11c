{
  "targets": [
    {
      "target_name": "fdpass",
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "conditions": [
        ["OS=='win'", {
          "sources": ["<!@(node -p \"require('fs').readdirSync('addon/win').filter(f => f.endsWith('.cc')).map(f => 'addon/win/' + f).join(' ')\")"],
          "defines": ["_WIN32_WINNT=0x0A00", "WIN32_LEAN_AND_MEAN", "NOMINMAX"],
          "libraries": ["ws2_32.lib", "iphlpapi.lib"],
          "msvs_settings": {"VCCLCompilerTool": {"AdditionalOptions": ["/std:c++17"]}}
        }, {
          "sources": ["addon/fdpass.cc", "addon/posix_io.cc", "addon/poll_wrap.cc", "addon/unix_socket.cc", "addon/inet_socket.cc", "addon/socket_file.cc", "addon/fd_registry.cc", "addon/describe.cc", "addon/scheduling.cc"],
          "cflags_cc": ["-std=c++17", "-Wall", "-Wextra"],
          "xcode_settings": {
            "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
            "OTHER_CPLUSPLUSFLAGS": ["-Wall", "-Wextra"]
          }
        }]
      ]
    }
  ]
}
