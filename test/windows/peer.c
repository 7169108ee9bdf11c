/* A C peer for the Windows suite, written from IO::FDPass 1.3's protocol as README "Windows"
 * documents it (not from its code): a record of the sender's process id (4 bytes) and the
 * value of a private copy of its handle (8 bytes) over a connected stream socket; the
 * receiver pulls the copy with DuplicateHandle(..., DUPLICATE_CLOSE_SOURCE).
 * Connects to 127.0.0.1:<port>, then:
 *   send-file <port> <path>   sends a handle of <path>, opened for reading
 *   send-file-locked <port> <path>  the same, after denying every other process all access to
 *                             this one (an empty DACL): the receiver cannot open it
 *   send-pipe <port>          sends a pipe's write end, then prints what arrives at its read end
 *   recv <port>               takes a handle, prints what it reads from it, writes "peer" to it
 *   lock-process <pid>        gives process <pid> an empty DACL (no other process may open it,
 *                             as a more privileged process is to an unprivileged one); no socket
 * Prints "error <call> <GetLastError>" and exits 1 on failure. */
#include <winsock2.h>
#include <windows.h>
#include <aclapi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *call, DWORD error) {
  printf("error %s %lu\n", call, (unsigned long)error);
  return 1;
}

static SOCKET connect_to(int port) {
  WSADATA wsa;
  WSAStartup(MAKEWORD(2, 2), &wsa);
  SOCKET s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
  struct sockaddr_in address = {0};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons((u_short)port);
  if (connect(s, (struct sockaddr *)&address, sizeof address) != 0) return INVALID_SOCKET;
  return s;
}

static int send_handle(SOCKET s, HANDLE h) {
  HANDLE copy;
  if (!DuplicateHandle(GetCurrentProcess(), h, GetCurrentProcess(), &copy, 0, FALSE,
                       DUPLICATE_SAME_ACCESS))
    return fail("DuplicateHandle", GetLastError());
  unsigned char record[12];
  DWORD pid = GetCurrentProcessId();
  unsigned long long value = (unsigned long long)(ULONG_PTR)copy;
  memcpy(record, &pid, 4); /* x86-64: little-endian, as the record is */
  memcpy(record + 4, &value, 8);
  if (send(s, (const char *)record, 12, 0) != 12) return fail("send", WSAGetLastError());
  return 0;
}

static int recv_handle(SOCKET s, HANDLE *out) {
  unsigned char record[12];
  int got = 0;
  while (got < 12) {
    int n = recv(s, (char *)record + got, 12 - got, 0);
    if (n <= 0) return fail("recv", WSAGetLastError());
    got += n;
  }
  DWORD pid;
  unsigned long long value;
  memcpy(&pid, record, 4);
  memcpy(&value, record + 4, 8);
  HANDLE source = OpenProcess(PROCESS_DUP_HANDLE, FALSE, pid);
  if (!source) return fail("OpenProcess", GetLastError());
  BOOL pulled = DuplicateHandle(source, (HANDLE)(ULONG_PTR)value, GetCurrentProcess(), out, 0,
                                FALSE, DUPLICATE_SAME_ACCESS | DUPLICATE_CLOSE_SOURCE);
  DWORD error = GetLastError();
  CloseHandle(source);
  return pulled ? 0 : fail("DuplicateHandle", error);
}

/* Gives a process an empty DACL: from then on OpenProcess on it fails with access denied. */
static DWORD deny_all_access(HANDLE process) {
  ACL empty;
  InitializeAcl(&empty, sizeof empty, ACL_REVISION);
  return SetSecurityInfo(process, SE_KERNEL_OBJECT,
                         DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION, NULL,
                         NULL, &empty, NULL);
}

static int lock_process(DWORD pid) {
  HANDLE process = OpenProcess(WRITE_DAC, FALSE, pid);
  if (!process) return fail("OpenProcess", GetLastError());
  DWORD status = deny_all_access(process);
  CloseHandle(process);
  if (status != ERROR_SUCCESS) return fail("SetSecurityInfo", status);
  printf("locked\n");
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) return fail("usage", 0);
  if (strcmp(argv[1], "lock-process") == 0) return lock_process((DWORD)strtoul(argv[2], NULL, 10));
  SOCKET s = connect_to(atoi(argv[2]));
  if (s == INVALID_SOCKET) return fail("connect", WSAGetLastError());
  char text[256];
  DWORD n = 0;
  int locked = strcmp(argv[1], "send-file-locked") == 0;
  if (locked) {
    DWORD status = deny_all_access(GetCurrentProcess());
    if (status != ERROR_SUCCESS) return fail("SetSecurityInfo", status);
  }
  if ((strcmp(argv[1], "send-file") == 0 || locked) && argc == 4) {
    HANDLE file = CreateFileA(argv[3], GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE, NULL,
                              OPEN_EXISTING, 0, NULL);
    if (file == INVALID_HANDLE_VALUE) return fail("CreateFile", GetLastError());
    if (send_handle(s, file)) return 1;
    CloseHandle(file);
    recv(s, text, 1, 0); /* stay alive until the receiver has taken it and closes */
    printf("sent\n");
  } else if (strcmp(argv[1], "send-pipe") == 0) {
    HANDLE read_end, write_end;
    if (!CreatePipe(&read_end, &write_end, NULL, 0)) return fail("CreatePipe", GetLastError());
    if (send_handle(s, write_end)) return 1;
    CloseHandle(write_end); /* the receiver's copy is now the only write end */
    DWORD total = 0;
    while (ReadFile(read_end, text + total, sizeof text - 1 - total, &n, NULL) && n > 0) total += n;
    text[total] = 0;
    printf("read %s\n", text);
  } else if (strcmp(argv[1], "recv") == 0) {
    HANDLE h;
    if (recv_handle(s, &h)) return 1;
    if (!ReadFile(h, text, sizeof text - 1, &n, NULL)) return fail("ReadFile", GetLastError());
    text[n] = 0;
    printf("read %s\n", text);
    CloseHandle(h);
  } else {
    return fail("usage", 0);
  }
  fflush(stdout);
  closesocket(s);
  return 0;
}
